//! The spark engine on a cluster whose worker stands in for another host, against real Apache
//! Spark 4.3.0 standalone clusters each test starts for itself (`scripts/spark.sh` on free
//! ports, stopped on drop, whatever happens).
//!
//! The worker runs in its own mount namespace with an empty tmpfs over the test's folder
//! (`SPARK_HIDE`, needs root and unshare(1)): it cannot see the daemon's state folder, so every
//! jar it runs was fetched over HTTP from the daemon. Its network is the host's, so it reaches
//! the daemon on 127.0.0.1.
//!
//! Covered: a scheduled job runs and finishes with the jar fetched over HTTP, and the jar URL
//! refuses a wrong token and any listing; the master killed (SIGKILL) while a service driver
//! runs and started again, without and with FILESYSTEM recovery, leaves exactly one driver of
//! the job alive and running; the daemon binary killed between the master's answer to a create
//! and the store's write of the driver id never runs the job twice. A background thread counts
//! the driver processes of the cluster every 50 ms during each test: never more than one.
//!
//! The tests of this file run one at a time (each starts a cluster of two JVMs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(240);

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spark.sh")
}

/// A Spark cluster of the test's own, its worker blind to `hidden`.
struct Cluster {
    dir: tempfile::TempDir,
    master_port: u16,
    rest: String,
    ui: String,
    master: String,
    jars: String,
}

impl Cluster {
    fn start(hidden: &Path, recovery: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("jobkeeper-spark-hosts.")
            .tempdir()
            .unwrap();
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut cmd = Command::new(script());
        cmd.arg("start")
            .arg(dir.path())
            .args(ports.map(|p| p.to_string()))
            .env("SPARK_HIDE", hidden);
        if recovery {
            cmd.env("SPARK_RECOVERY", "filesystem");
        }
        let out = cmd.output().unwrap();
        let cluster = Cluster {
            master_port: ports[0],
            rest: format!("http://127.0.0.1:{}", ports[1]),
            ui: format!("http://127.0.0.1:{}", ports[2]),
            master: format!("spark://127.0.0.1:{}", ports[0]),
            jars: std::env::var("JOBKEEPER_SPARK_JARS").unwrap_or_else(|_| {
                let out = Command::new(script()).arg("jars").output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }),
            dir,
        };
        assert!(
            out.status.success(),
            "scripts/spark.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn script(&self, what: &str) {
        let out = Command::new(script())
            .arg(what)
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/spark.sh {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn worker_pid(&self) -> u32 {
        let f = self
            .dir
            .path()
            .join("pid/spark-jobkeeper-test-org.apache.spark.deploy.worker.Worker-1.pid");
        std::fs::read_to_string(f).unwrap().trim().parse().unwrap()
    }

    /// The driver processes of this cluster alive now.
    fn drivers(&self) -> Vec<u32> {
        driver_processes(self.master_port)
    }

    /// A driver's stderr, as its worker wrote it.
    fn stderr(&self, driver: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("work").join(driver).join("stderr"))
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The worker kills its drivers on the way out.
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// The JVMs running a driver of the master on `port` (their launch command names it).
fn driver_processes(port: u16) -> Vec<u32> {
    let master = format!("-Dspark.master=spark://127.0.0.1:{port} ");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = cmdline(pid) + " ";
        if cmd.contains("org.apache.spark.deploy.worker.DriverWrapper")
            && cmd.contains(&master)
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Counts the cluster's driver processes every 50 ms until dropped; keeps the highest count.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(port: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    max.fetch_max(driver_processes(port).len(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn get_json(url: &str) -> Value {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A driver's state from the REST server (`None` when it does not know it).
async fn driver_state(c: &Cluster, id: &str) -> Option<String> {
    let s = get_json(&format!("{}/v1/submissions/status/{id}", c.rest)).await;
    s["driverState"].as_str().map(str::to_string)
}

/// A driver's state from the REST server, asked until it answers (a master just restarted on a
/// loaded machine can take longer than one request's timeout); `None` when it does not know it.
async fn answered_state(c: &Cluster, id: &str) -> Option<String> {
    let start = Instant::now();
    loop {
        let s = get_json(&format!("{}/v1/submissions/status/{id}", c.rest)).await;
        if !s.is_null() || start.elapsed() > LIMIT {
            return s["driverState"].as_str().map(str::to_string);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A config repo with the spark-totals project, and a daemon config whose `spark` env is on
/// `c` at REST URL `rest`; `extra` is appended.
fn setup(root: &Path, c: &Cluster, rest: &str, extra: &str) -> (Git, String) {
    let git = Git::new(root, "config");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/spark-totals");
    for f in ["build.sh", "src/example/Totals.java"] {
        git.write(
            &format!("projects/spark-totals/{f}"),
            &std::fs::read_to_string(src.join(f)).unwrap(),
        );
    }
    let extra = format!(
        "  spark: {{engine: spark, spark: {{url: \"{rest}\", master: \"{}\", ui: \"{}\"}}}}\nhealth: {{interval: 1s}}\n{extra}",
        c.master, c.ui
    );
    let cfg = config(root, &git, &extra);
    (git, cfg)
}

/// A spark-totals job file: `args`, then `extra` fields.
fn totals(c: &Cluster, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "project:\n  repo: .\n  dir: projects/spark-totals\n  build: sh build.sh \"{}\"\n  artifact: out/spark-totals.jar\n\
         env: spark\nparams:\n  main_class: example.Totals\n  args: [{}]\n\
         \x20 conf: {{spark.driver.memory: 512m, spark.executor.memory: 512m, spark.cores.max: \"1\", spark.driver.cores: \"1\"}}\n{extra}",
        c.jars,
        args.join(", ")
    )
}

/// Waits for the job's only live run to be a RUNNING driver not in `not`; (run id, driver id).
async fn running(d: &Daemon, c: &Cluster, name: &str, not: &[String]) -> (i64, String) {
    let start = Instant::now();
    loop {
        if let [run] = d.live_runs(name).as_slice() {
            let id = engine_id(run);
            if !id.is_empty()
                && !not.contains(&id)
                && driver_state(c, &id).await.as_deref() == Some("RUNNING")
            {
                return (run.id, id);
            }
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting for {name}'s driver RUNNING; events: {:#?}",
            d.events(name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The worker sees an empty folder where the test keeps the daemon's state.
fn assert_blind(c: &Cluster, hidden: &Path) {
    let seen = PathBuf::from(format!("/proc/{}/root", c.worker_pid())).join(
        hidden
            .strip_prefix("/")
            .expect("an absolute temporary folder"),
    );
    let names: Vec<_> = std::fs::read_dir(&seen)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(names.is_empty(), "the worker sees {names:?} in {seen:?}");
    assert!(std::fs::read_dir(hidden).unwrap().next().is_some());
}

/// The jar URL a driver was given (`-Dspark.jars=...` of its launch command).
fn jar_url(stderr: &str) -> String {
    let at = stderr
        .find("-Dspark.jars=")
        .unwrap_or_else(|| panic!("no spark.jars in the launch command: {stderr}"));
    stderr[at + "-Dspark.jars=".len()..]
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_blind_to_the_state_folder_runs_a_scheduled_job_with_the_jar_over_http() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::start(tmp.path(), false);
    let (git, cfg) = setup(tmp.path(), &c, &c.rest, "");
    git.write(
        "jobs/reports/totals.yaml",
        &totals(&c, &["--n", "5000"], "schedule: \"*/15 * * * * *\"\n"),
    );
    git.commit_push("a scheduled spark job");
    let d = start(tmp.path(), &cfg).await;
    assert_blind(&c, tmp.path());
    wait_for("a succeeded run", LIMIT, || {
        d.runs("reports/totals")
            .iter()
            .any(|r| r.state == "succeeded")
    })
    .await;
    let runs = d.runs("reports/totals");
    let done = runs.iter().find(|r| r.state == "succeeded").unwrap();
    let id = engine_id(done);
    assert_eq!(driver_state(&c, &id).await.as_deref(), Some("FINISHED"));
    assert_blind(&c, tmp.path());

    // The driver was given the daemon's URL of the jar, and fetched it from there.
    let stderr = c.stderr(&id);
    let url = jar_url(&stderr);
    let prefix = format!("http://{}/artifacts/", d.addr);
    assert!(url.starts_with(&prefix), "{url}");
    let job = d.job("reports/totals").unwrap();
    let artifact = job.artifact.unwrap();
    let jar = std::fs::read(&artifact.path).unwrap();
    let fetched = c.dir.path().join("work").join(&id).join("spark-totals.jar");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        jar,
        "the worker's copy is the jar"
    );
    let rest: Vec<&str> = url[prefix.len()..].split('/').collect();
    let [digest, token, name] = rest[..] else {
        panic!("{url}")
    };
    assert_eq!(
        (digest, name),
        (artifact.digest.as_str(), "spark-totals.jar")
    );
    assert_eq!(token.len(), 64);

    // The URL serves the jar; a wrong token and every listing get the same 404.
    let http = reqwest::Client::new();
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), jar.as_slice());
    let mut wrong = token.to_string();
    wrong.replace_range(..1, if token.starts_with('0') { "1" } else { "0" });
    let base = format!("http://{}", d.addr);
    for path in [
        format!("/artifacts/{digest}/{wrong}/{name}"),
        format!("/artifacts/{digest}/{}/{name}", "0".repeat(64)),
        format!("/artifacts/{digest}//{name}"),
        format!("/artifacts/{digest}/{token}/"),
        format!("/artifacts/{digest}/{token}"),
        format!("/artifacts/{digest}/"),
        format!("/artifacts/{digest}"),
        "/artifacts/".to_string(),
        "/artifacts".to_string(),
        format!("/artifacts/..%2F..%2Fartifact.key/{token}/{name}"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(digest) && !body.contains("spark-totals"),
            "{path}: {body}"
        );
    }
}

/// A service driver runs; the master is killed with SIGKILL and started again (with
/// `recovery`, from its FILESYSTEM state). Exactly one driver of the job is alive afterwards
/// and it runs; never two at once.
async fn master_restart(recovery: bool) {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::start(tmp.path(), recovery);
    let (git, cfg) = setup(tmp.path(), &c, &c.rest, "");
    git.write(
        "jobs/stream.yaml",
        &totals(&c, &["--n", "100", "--sleep", "900"], ""),
    );
    git.commit_push("a long spark driver");
    let d = start(tmp.path(), &cfg).await;
    let (run, id) = running(&d, &c, "stream", &[]).await;
    wait_for("its driver process", LIMIT, || c.drivers().len() == 1).await;
    let sampler = Sampler::start(c.master_port);

    c.script("kill-master");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.drivers().len(), 1, "the driver outlives its master");
    c.script("master");

    if recovery {
        // The master reads the driver back; jobkeeper keeps it.
        wait_for("the master back with its workers", LIMIT, || {
            Command::new("curl")
                .args(["-s", "-m", "5"])
                .arg(format!("{}/json/", c.ui))
                .output()
                .is_ok_and(|o| {
                    let t = String::from_utf8_lossy(&o.stdout);
                    t.contains("\"status\" : \"ALIVE\"") && t.contains("\"aliveworkers\" : 1")
                })
        })
        .await;
        tokio::time::sleep(Duration::from_secs(15)).await; // sweeps after the worker is back
        assert_eq!(answered_state(&c, &id).await.as_deref(), Some("RUNNING"));
        let runs = d.runs("stream");
        assert_eq!(runs.len(), 1, "nothing submitted again: {runs:#?}");
        assert_eq!((runs[0].id, runs[0].state.as_str()), (run, "running"));
    } else {
        // The master forgot the driver and kills it once its worker registers again; only
        // then is the job submitted again.
        let (run2, id2) = running(&d, &c, "stream", std::slice::from_ref(&id)).await;
        assert_ne!(run, run2);
        assert_eq!(answered_state(&c, &id).await, None, "forgotten");
        let first = d.runs("stream").into_iter().find(|r| r.id == run).unwrap();
        assert_ne!(first.state, "running", "{first:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(answered_state(&c, &id2).await.as_deref(), Some("RUNNING"));
        assert_eq!(d.live_runs("stream").len(), 1);
    }
    wait_for("exactly one driver process", LIMIT, || {
        c.drivers().len() == 1
    })
    .await;
    assert_eq!(d.job("stream").unwrap().state, "running");
    assert_eq!(
        sampler.max(),
        1,
        "never two drivers of the job at once; events: {:#?}",
        d.events("stream")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_without_recovery_leaves_one_driver_of_a_service_job() {
    master_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_with_filesystem_recovery_keeps_the_driver() {
    master_restart(true).await;
}

/// An HTTP proxy in front of the master's REST server that forwards everything; while
/// `hold` is set, it forwards a create, notes the driver id the master answered, and never
/// answers the daemon.
struct Proxy {
    target: String,
    hold: AtomicBool,
    created: Mutex<Vec<String>>,
    http: reqwest::Client,
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 10 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.target))
        .body(body);
    if let Some(ct) = parts.headers.get("content-type") {
        out = out.header("content-type", ct.clone());
    }
    let Ok(resp) = out.send().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    if path.ends_with("/v1/submissions/create") && p.hold.load(Ordering::SeqCst) {
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(id) = answer["submissionId"].as_str() {
            p.created.lock().unwrap().push(id.to_string());
        }
        std::future::pending::<()>().await;
    }
    (status, bytes).into_response()
}

fn spawn_daemon(cfg: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Kills the daemon child on drop.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn sigkill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.sigkill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_a_create_and_its_record_never_runs_the_job_twice() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::start(tmp.path(), false);
    let proxy = Arc::new(Proxy {
        target: c.rest.clone(),
        hold: AtomicBool::new(true),
        created: Mutex::new(Vec::new()),
        http: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (git, cfg) = setup(tmp.path(), &c, &proxy_url, "");
    // The daemon binary on a fixed port: the driver's executors fetch the jar from the same
    // URL after the restart.
    let cfg = cfg.replace(
        "listen: 127.0.0.1:0",
        &format!("listen: 127.0.0.1:{}", free_port()),
    );
    let cfg_path = tmp.path().join("config.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let log = tmp.path().join("daemon.log");
    git.write(
        "jobs/lost.yaml",
        &totals(&c, &["--n", "100", "--sleep", "900"], ""),
    );
    git.commit_push("a long spark driver");
    let sampler = Sampler::start(c.master_port);
    let mut daemon = KillOnDrop(Some(spawn_daemon(&cfg_path, &log)));

    // The master made the driver; the daemon waits for the answer the proxy holds.
    let mut created = None;
    wait_for("a create", LIMIT, || {
        created = proxy.created.lock().unwrap().first().cloned();
        created.is_some()
    })
    .await;
    let created = created.unwrap();
    // Killed once the worker launched it (the jar fetched from the daemon), well before the
    // daemon's request times out.
    let launched = Instant::now();
    while !c.stderr(&created).contains("Launch Command")
        && launched.elapsed() < Duration::from_secs(7)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let was_launched = c.stderr(&created).contains("Launch Command");
    daemon.sigkill();
    proxy.hold.store(false, Ordering::SeqCst);
    let db = tmp.path().join("state/jobkeeper.db");
    let store = jobkeeper::store::Blocking::open(&db).unwrap();
    let runs = store.runs("lost", 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        engine_id(&runs[0]),
        "",
        "killed before the id was recorded: {runs:#?}"
    );
    assert_blind(&c, tmp.path());

    let _daemon = KillOnDrop(Some(spawn_daemon(&cfg_path, &log)));
    let mut live = String::new();
    wait_for("the job's run with a RUNNING driver", LIMIT, || {
        let runs = store.runs("lost", 10).unwrap_or_default();
        live = runs
            .iter()
            .find(|r| r.state == "running")
            .map(engine_id)
            .unwrap_or_default();
        !live.is_empty()
            && Command::new("curl")
                .args(["-s", "-m", "5"])
                .arg(format!("{}/v1/submissions/status/{live}", c.rest))
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"RUNNING\""))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // a few health sweeps
    let runs = store.runs("lost", 10).unwrap();
    if was_launched {
        // The driver launched before the kill is the run, found by its token.
        let events = store.events(Some("lost"), 50).unwrap();
        assert_eq!(live, created, "{runs:#?}\n{events:#?}");
        assert_eq!(
            runs.len(),
            1,
            "nothing submitted again: {runs:#?}\n{events:#?}"
        );
    } else {
        println!("the driver was not launched within 7 s of its create: it could not be adopted");
    }
    wait_for("exactly one driver process", LIMIT, || {
        c.drivers().len() == 1
    })
    .await;
    assert_eq!(
        sampler.max(),
        1,
        "never two drivers at once: {runs:#?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
