//! The spark engine end to end against a real Apache Spark 4.3.0 standalone cluster (a master
//! with its REST submission server and one worker), with a small batch job
//! (example-repo/projects/spark-totals) built from its Java source by the daemon.
//!
//! `scripts/test.sh` starts the cluster with `scripts/spark.sh` and exports
//! `JOBKEEPER_SPARK_URL` (REST, 6066), `JOBKEEPER_SPARK_MASTER` (`spark://`),
//! `JOBKEEPER_SPARK_UI` (the master's web UI) and `JOBKEEPER_SPARK_JARS`; without them these
//! tests fail (they do not skip). Every test kills the drivers it started, even when it fails.

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::path::Path;
use std::time::Duration;

use common::*;
use jobkeeper::store::RunState;
use receivers::HttpReceiver;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: the spark tests need a running Spark cluster. Run scripts/test.sh, \
             or: scripts/spark.sh start /tmp/jk-spark 17077 16066 18080 18091 && export \
             JOBKEEPER_SPARK_URL=http://127.0.0.1:16066 JOBKEEPER_SPARK_MASTER=spark://127.0.0.1:17077 \
             JOBKEEPER_SPARK_UI=http://127.0.0.1:18080 JOBKEEPER_SPARK_JARS=$(scripts/spark.sh jars)"
        )
    })
}

struct Cluster {
    rest: String,
    master: String,
    ui: String,
    jars: String,
}

fn cluster() -> Cluster {
    Cluster {
        rest: need("JOBKEEPER_SPARK_URL"),
        master: need("JOBKEEPER_SPARK_MASTER"),
        ui: need("JOBKEEPER_SPARK_UI"),
        jars: need("JOBKEEPER_SPARK_JARS"),
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

/// A driver's state, from the REST server (`None` when it does not know it).
async fn driver_state(c: &Cluster, id: &str) -> Option<String> {
    let s = get_json(&format!("{}/v1/submissions/status/{id}", c.rest)).await;
    s["driverState"].as_str().map(str::to_string)
}

/// A config repo holding the spark-totals project (copied from example-repo) and a daemon
/// config with a `spark` env on the test cluster; `extra` is appended to the config.
fn setup(root: &Path, c: &Cluster, extra: &str) -> (Git, String, StopRunsOnDrop) {
    let git = Git::new(root, "config");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/spark-totals");
    for f in ["build.sh", "src/example/Totals.java"] {
        git.write(
            &format!("projects/spark-totals/{f}"),
            &std::fs::read_to_string(src.join(f)).unwrap(),
        );
    }
    let extra = format!(
        "  spark: {{engine: spark, spark: {{url: \"{}\", master: \"{}\", ui: \"{}\"}}}}\nhealth: {{interval: 1s}}\n{extra}",
        c.rest, c.master, c.ui
    );
    let cfg = config(root, &git, &extra);
    // Kills, on drop, every driver the test's store knows (the test may have failed).
    let cleanup = StopRunsOnDrop {
        db: root.join("state/jobkeeper.db"),
        method: "POST",
        url: format!("{}/v1/submissions/kill/{{id}}", c.rest),
    };
    (git, cfg, cleanup)
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

/// Waits for the job's only live run to be a RUNNING driver (and not one of `not`); returns
/// (run id, driver id).
async fn running(d: &Daemon, c: &Cluster, name: &str, not: &[String]) -> (i64, String) {
    let start = std::time::Instant::now();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_runs_on_its_ticks_and_succeeds() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    git.write(
        "jobs/reports/totals.yaml",
        &totals(&c, &["--n", "5000"], "schedule: \"*/15 * * * * *\"\n"),
    );
    git.commit_push("a scheduled spark job");
    let d = start(tmp.path(), &cfg).await;
    wait_for("a succeeded run", LIMIT, || {
        d.runs("reports/totals")
            .iter()
            .any(|r| r.state == "succeeded")
    })
    .await;
    let runs = d.runs("reports/totals");
    let done = runs.iter().find(|r| r.state == "succeeded").unwrap();
    let id = engine_id(done);
    assert!(id.starts_with("driver-"), "{done:?}");
    assert_eq!(driver_state(&c, &id).await.as_deref(), Some("FINISHED"));
    assert!(d.has_event("reports/totals", "succeeded"));
    // Scheduled runs only: each started on a tick, none while another was live (forbid).
    assert!(
        d.events("reports/totals")
            .iter()
            .filter(|e| e.kind == "started")
            .all(|e| e.message.contains("scheduled")),
        "{:#?}",
        d.events("reports/totals")
    );
    let job = d.job("reports/totals").unwrap();
    assert!(
        ["succeeded", "running", "pending"].contains(&job.state.as_str()),
        "{job:?}"
    );
    // The run's log names the driver.
    let (code, log) = d
        .get(&format!(
            "/api/v1/jobs/reports%2Ftotals/logs?run={}",
            done.id
        ))
        .await;
    assert_eq!(code, 200);
    assert!(log.contains(&id), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_alerted_with_the_driver_exception_then_gives_up() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    let alerts = format!(
        "alerts:\n  oncall:\n    webhook: {{url: \"{}\", format: json}}\n    on: [failed, gave_up]\n",
        hook.url()
    );
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, &alerts);
    git.write(
        "jobs/crash.yaml",
        &totals(
            &c,
            &["--n", "100", "--fail"],
            "alerts: [oncall]\nrestart: {attempts: 1, window: 1h, backoff: 1s, max_backoff: 1s}\n",
        ),
    );
    git.commit_push("a spark job that throws");
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", Duration::from_secs(180), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("crash");
    assert_eq!(runs.len(), 2, "the first run and 1 retry: {runs:#?}");
    assert!(runs.iter().all(|r| r.state == "failed"), "{runs:#?}");
    for run in &runs {
        let id = engine_id(run);
        assert_eq!(driver_state(&c, &id).await.as_deref(), Some("FAILED"));
        let reason = run.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&format!("spark driver {id} FAILED"))
                && reason
                    .contains("Caused by: java.lang.IllegalStateException: failing on purpose"),
            "the reason carries the driver's exception from its stderr: {reason}"
        );
    }
    wait_for("the alerts", Duration::from_secs(20), || {
        let got: Vec<Value> = hook.received().iter().map(|r| r.json()).collect();
        got.iter().any(|j| j["event"] == "failed") && got.iter().any(|j| j["event"] == "gave_up")
    })
    .await;
    let failed: Vec<Value> = hook
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|j| j["event"] == "failed")
        .collect();
    let text = failed[0].to_string();
    assert!(
        text.contains("crash") && text.contains("failing on purpose") && text.contains("spark"),
        "{text}"
    );
}

/// `jobkeeper logs` of a failed Spark run prints the driver's stderr, read from its worker's
/// UI, with its exception; once the worker no longer has the driver's work folder (deleted as
/// `spark.worker.cleanup` deletes it: the folder the worker itself names), it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_spark_run_show_the_driver_stderr_then_say_when_the_worker_lost_it() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    git.write(
        "jobs/crash.yaml",
        &totals(
            &c,
            &["--n", "100", "--fail"],
            "restart: {attempts: 0, window: 1h, backoff: 1s, max_backoff: 1s}\n",
        ),
    );
    git.commit_push("a spark job that throws");
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", Duration::from_secs(180), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let id = engine_id(&d.runs("crash")[0]);
    let logs = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["logs", "crash", "--url", &format!("http://{}", d.addr)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = logs();
    let worker = get_json(&format!("{}/json/", c.ui)).await["workers"][0]["webuiaddress"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(
        text.contains(&format!(
            "==== spark driver {id} stderr, from worker {worker} ====\n"
        )) && text.contains("java.lang.IllegalStateException: failing on purpose"),
        "{text}"
    );
    // The worker names the driver's stderr file in its log page's first line.
    let page = reqwest::get(format!(
        "{worker}/log/?driverId={id}&logType=stderr&byteLength=1"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let file = page
        .lines()
        .next()
        .and_then(|l| l.split(" of ").last())
        .map(|f| f.trim_end_matches(" ====").to_string())
        .unwrap();
    let folder = Path::new(&file).parent().unwrap();
    assert!(folder.ends_with(&id), "{page}");
    std::fs::remove_dir_all(folder).unwrap();
    let text = logs();
    assert!(
        text.contains(&format!(
            "==== the engine no longer has this run's output: spark worker {worker} no longer \
             has the work folder of driver {id}"
        )),
        "{text}"
    );
}

/// Waits until the worker launched driver `id`'s JVM: its stderr starts with `Launch Command`,
/// which the worker writes after it fetched the jar (from the daemon, over HTTP). A daemon
/// stopped before that leaves the worker nothing to fetch from, and the driver fails.
async fn launched(c: &Cluster, id: &str) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let master: serde_json::Value = match http.get(format!("{}/json/", c.ui)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        for w in master["workers"].as_array().into_iter().flatten() {
            let Some(ui) = w["webuiaddress"].as_str() else {
                continue;
            };
            let log = http
                .get(format!("{ui}/log/"))
                .query(&[("driverId", id), ("logType", "stderr"), ("offset", "0")])
                .send()
                .await;
            if let Ok(r) = log
                && r.text().await.is_ok_and(|t| t.contains("Launch Command"))
            {
                return;
            }
        }
        assert!(
            start.elapsed() < LIMIT,
            "driver {id} not launched: {master}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_the_driver_and_removal_kills_it() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    // A service job (no schedule) that stays up.
    git.write(
        "jobs/stream.yaml",
        &totals(&c, &["--n", "100", "--sleep", "600"], ""),
    );
    git.commit_push("a long spark driver");
    let mut d = start(tmp.path(), &cfg).await;
    let (run, id) = running(&d, &c, "stream", &[]).await;
    launched(&c, &id).await;
    d.stop().await;
    assert_eq!(
        driver_state(&c, &id).await.as_deref(),
        Some("RUNNING"),
        "a daemon stop leaves drivers running"
    );

    // Started again at the same address: the driver's executors fetch its jar from there.
    let mut d = start_at(tmp.path(), &cfg, d.addr.port()).await;
    wait_for("adopted", LIMIT, || d.has_event("stream", "adopted")).await;
    d.sweeps_pass(3, LIMIT).await;
    let runs = d.runs("stream");
    assert_eq!(runs.len(), 1, "no new run: {runs:#?}");
    assert_eq!((runs[0].id, runs[0].state.as_str()), (run, "running"));
    assert_eq!(driver_state(&c, &id).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.job("stream").unwrap().state, "running");

    // A driver killed outside jobkeeper: failed, resubmitted as a new driver.
    let killed = reqwest::Client::new()
        .post(format!("{}/v1/submissions/kill/{id}", c.rest))
        .send()
        .await
        .unwrap();
    assert!(killed.status().is_success());
    let (run2, id2) = running(&d, &c, "stream", std::slice::from_ref(&id)).await;
    assert_ne!(run, run2);
    let first = d.runs("stream").into_iter().find(|r| r.id == run).unwrap();
    assert_eq!(first.state, "failed");
    assert!(
        first
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("KILLED outside jobkeeper")),
        "{first:?}"
    );

    // Removal: the driver is killed, the job stopped, its history kept.
    git.remove("jobs/stream.yaml");
    git.commit_push("remove it");
    wait_for("stream stopped", LIMIT, || {
        d.job("stream").is_some_and(|j| j.state == "stopped")
    })
    .await;
    assert_eq!(driver_state(&c, &id2).await.as_deref(), Some("KILLED"));
    assert!(d.live_runs("stream").is_empty());
    assert_eq!(d.runs("stream").len(), 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_driver_is_deploy_failed_and_an_unreachable_master_is_waiting() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    // A second env on a closed port: the master is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let extra = format!(
        "  down: {{engine: spark, spark: {{url: \"{down}\", master: \"spark://127.0.0.1:1\"}}}}\n"
    );
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    let cfg = cfg.replace(
        "health:",
        &format!("{}health:", extra.trim_start_matches('\n')),
    );
    // No main class: refused before anything reaches the cluster.
    git.write(
        "jobs/nomain.yaml",
        &totals(&c, &[], "").replace("  main_class: example.Totals\n", ""),
    );
    git.write(
        "jobs/waiting.yaml",
        &totals(&c, &["--sleep", "600"], "").replace("env: spark", "env: down"),
    );
    git.commit_push("a refused job and one on a master that is down");
    let d = start(tmp.path(), &cfg).await;
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("nomain", "deploy_failed")
    })
    .await;
    let ev = d
        .events("nomain")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(ev.message.contains("params.main_class"), "{ev:?}");
    wait_for("engine_unreachable", LIMIT, || {
        d.store
            .events(None, 100)
            .unwrap_or_default()
            .iter()
            .any(|e| e.kind == "engine_unreachable")
    })
    .await;
    d.sweeps_pass(4, LIMIT).await;
    let job = d.job("waiting").unwrap();
    assert_eq!(job.state, "deploying", "{job:?}");
    assert!(
        !d.has_event("waiting", "deploy_failed") && !d.has_event("waiting", "gave_up"),
        "an unreachable master is waiting, not a failure: {:#?}",
        d.events("waiting")
    );
    let unreachable = d
        .store
        .events(None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "engine_unreachable")
        .count();
    assert_eq!(unreachable, 1, "one alert per outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_whose_id_a_crashed_daemon_never_recorded_is_adopted_not_doubled() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    git.write(
        "jobs/lost.yaml",
        &totals(&c, &["--n", "100", "--sleep", "600"], ""),
    );
    git.commit_push("a long spark driver");
    let mut d = start(tmp.path(), &cfg).await;
    let (first, first_id) = running(&d, &c, "lost", &[]).await;
    d.stop().await;

    // What a daemon killed between the master's answer to a create and the store's write of
    // the submission id leaves: a run recorded without a handle, and a driver of its jar
    // running on the cluster that no run records.
    let http = reqwest::Client::new();
    http.post(format!("{}/v1/submissions/kill/{first_id}", c.rest))
        .send()
        .await
        .unwrap();
    d.store
        .finish_run(first, RunState::Stopped, Some("test: replaced"))
        .unwrap();
    let job = d.job("lost").unwrap();
    let jar = job.artifact.unwrap().path.to_string_lossy().into_owned();
    let lost_run = d
        .store
        .insert_run(
            "lost",
            jobkeeper::store::RunOrigin {
                config_commit: job.desired_commit.as_deref(),
                ..Default::default()
            },
            job.applied_hash.as_deref().unwrap(),
            (jobkeeper::engine::EngineKind::Spark, "spark"),
            &d.state_dir.join("logs/lost"),
        )
        .unwrap();
    let jar = format!("file://{jar}");
    // The create the lost run sent carried its token; another daemon's driver of the same jar
    // and main class, started at the same time, carries another.
    let token =
        jobkeeper::engine::cluster::run_token(&d.state_dir.display().to_string(), "lost", lost_run);
    let create = |token: String| {
        let (http, jar, c) = (http.clone(), jar.clone(), &c);
        async move {
            let body = serde_json::json!({
                "action": "CreateSubmissionRequest", "appResource": jar, "mainClass": "example.Totals",
                "appArgs": ["--n", "100", "--sleep", "600"], "clientSparkVersion": "4.3.0",
                "environmentVariables": {},
                "sparkProperties": {"spark.master": c.master, "spark.submit.deployMode": "cluster",
                    "spark.jars": jar, "spark.app.name": "lost", "spark.driver.memory": "512m",
                    "spark.executor.memory": "512m", "spark.cores.max": "1",
                    "spark.jobkeeper.run": token}
            });
            let made: Value = http
                .post(format!("{}/v1/submissions/create", c.rest))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            made["submissionId"].as_str().unwrap().to_string()
        }
    };
    let other = create("0123456789abcdef0123456789abcdef".into()).await;
    let _kill_other = KillOnDrop(c.rest.clone(), other.clone());
    let orphan = create(token).await;
    let _kill_orphan = KillOnDrop(c.rest.clone(), orphan.clone());
    for id in [&orphan, &other] {
        wait_for("the orphan drivers running", LIMIT, || {
            std::process::Command::new("curl")
                .args(["-s", "-m", "5"])
                .arg(format!("{}/v1/submissions/status/{id}", c.rest))
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"RUNNING\""))
        })
        .await;
    }

    let d = start_at(tmp.path(), &cfg, d.addr.port()).await;
    let (run, id) = running(&d, &c, "lost", std::slice::from_ref(&first_id)).await;
    assert_eq!(
        (run, id.as_str()),
        (lost_run, orphan.as_str()),
        "the unrecorded driver is the job's run"
    );
    d.sweeps_pass(3, LIMIT).await;
    let runs = d.runs("lost");
    assert_eq!(runs.len(), 2, "nothing submitted again: {runs:#?}");
    assert_eq!(driver_state(&c, &orphan).await.as_deref(), Some("RUNNING"));
    assert_eq!(
        driver_state(&c, &other).await.as_deref(),
        Some("RUNNING"),
        "another daemon's driver is left alone"
    );
    git.remove("jobs/lost.yaml");
    git.commit_push("remove it");
    wait_for("lost stopped", LIMIT, || {
        d.job("lost").is_some_and(|j| j.state == "stopped")
    })
    .await;
    assert_eq!(driver_state(&c, &orphan).await.as_deref(), Some("KILLED"));
    assert_eq!(driver_state(&c, &other).await.as_deref(), Some("RUNNING"));
}

/// Kills one driver on drop.
struct KillOnDrop(String, String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-X", "POST"])
            .arg(format!("{}/v1/submissions/kill/{}", self.0, self.1))
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_master_ui_each_driver_is_asked_about_by_id() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    let cfg = cfg.replace(&format!(", ui: \"{}\"", c.ui), "");
    assert!(!cfg.contains("ui:"), "{cfg}");
    git.write(
        "jobs/once.yaml",
        &totals(
            &c,
            &["--n", "100", "--fail"],
            "restart: {attempts: 0, window: 1h, backoff: 1s, max_backoff: 1s}\n",
        ),
    );
    git.commit_push("a failing job on an env without the master UI");
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", LIMIT, || {
        d.job("once").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("once");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let id = engine_id(&runs[0]);
    assert_eq!(driver_state(&c, &id).await.as_deref(), Some("FAILED"));
    assert_eq!(
        runs[0].reason.as_deref(),
        Some(
            format!(
                "spark driver {id} FAILED (set `spark.ui` to read the driver's stderr from its worker)"
            )
            .as_str()
        )
    );
}

/// The unmanaged drivers the daemon lists (driver ids).
async fn unmanaged_ids(d: &Daemon) -> Vec<String> {
    let (code, body) = d.get("/api/v1/unmanaged").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["engine_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_started_outside_is_listed_imported_and_adopted_as_it_runs() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    // A driver submitted by another platform, from a jar of its own.
    let outside = tmp.path().join("outside");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/spark-totals");
    std::fs::create_dir_all(outside.join("src/example")).unwrap();
    for f in ["build.sh", "src/example/Totals.java"] {
        std::fs::copy(src.join(f), outside.join(f)).unwrap();
    }
    let built = std::process::Command::new("sh")
        .arg("build.sh")
        .arg(&c.jars)
        .current_dir(&outside)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let jar = format!("file://{}", outside.join("out/spark-totals.jar").display());
    let body = serde_json::json!({
        "action": "CreateSubmissionRequest", "appResource": jar, "mainClass": "example.Totals",
        "appArgs": ["--n", "100", "--sleep", "600"], "clientSparkVersion": "4.3.0",
        "environmentVariables": {},
        "sparkProperties": {"spark.master": c.master, "spark.submit.deployMode": "cluster",
            "spark.jars": jar, "spark.app.name": "outside-totals", "spark.driver.memory": "512m",
            // Spark writes these unescaped in the launch command, and redacts the secret.
            "spark.driver.extraJavaOptions": "-Dimport.a=1 -Dimport.b=\"x y\"",
            "spark.hadoop.fs.s3a.secret.key": "s3cr3t",
            "spark.executor.memory": "512m", "spark.cores.max": "1"}
    });
    let made: Value = reqwest::Client::new()
        .post(format!("{}/v1/submissions/create", c.rest))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["submissionId"].as_str().unwrap().to_string();
    let _kill = KillOnDrop(c.rest.clone(), id.clone());
    wait_for("the outside driver running", LIMIT, || {
        std::process::Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("{}/v1/submissions/status/{id}", c.rest))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"RUNNING\""))
    })
    .await;

    git.commit_push("the project, no jobs yet");
    let d = start(tmp.path(), &cfg).await;
    let start_wait = std::time::Instant::now();
    while !unmanaged_ids(&d).await.contains(&id) {
        assert!(
            start_wait.elapsed() < LIMIT,
            "{id} never listed as unmanaged"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // import: main class, args and conf from the master and the driver's launch command.
    let out = tmp.path().join("imported");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["import", "--env", "spark", "--config"])
        .arg(tmp.path().join("config.yaml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let found: Vec<std::path::PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(&id))
        .collect();
    let [file] = found.as_slice() else {
        panic!("one file adopts {id}: {found:?}\n{stdout}");
    };
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(&format!("adopt: \"{id}\"\nenv: \"spark\"\n")),
        "{text}"
    );
    assert!(
        text.contains("  main_class: \"example.Totals\"\n"),
        "{text}"
    );
    assert!(
        text.contains("  args: [\"--n\", \"100\", \"--sleep\", \"600\"]\n"),
        "{text}"
    );
    assert!(
        text.contains("    \"spark.app.name\": \"outside-totals\"\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "    \"spark.driver.extraJavaOptions\": \"-Dimport.a=1 -Dimport.b=\\\"x y\\\"\"\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("spark.master"),
        "the engine's own properties are left out"
    );
    assert!(
        !text.contains("s3cr3t") && !text.contains("(redacted)"),
        "{text}"
    );
    assert!(
        text.contains(
            "# TODO check conf `spark.hadoop.fs.s3a.secret.key`: Spark redacted its value"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# The cluster runs it from the jar \"{jar}\": `project.artifact`"
        )),
        "{text}"
    );
    assert!(
        text.contains("no engine records where a jar was built from"),
        "{text}"
    );

    // Completed and committed: the driver is the job's run, nothing submitted.
    let done: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("# TODO"))
        .map(|l| format!("{l}\n"))
        .collect();
    let project = format!(
        "project:\n  repo: .\n  dir: projects/spark-totals\n  build: sh build.sh \"{}\"\n  artifact: out/spark-totals.jar\n",
        c.jars
    );
    git.write("jobs/totals.yaml", &format!("{project}{done}"));
    git.commit_push("take over the outside driver");
    wait_for("adopted", LIMIT, || d.has_event("totals", "adopted")).await;
    d.sweeps_pass(3, LIMIT).await;
    let runs = d.runs("totals");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (engine_id(&runs[0]), runs[0].state.as_str()),
        (id.clone(), "running")
    );
    assert_eq!(driver_state(&c, &id).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.job("totals").unwrap().state, "running");
    let start_wait = std::time::Instant::now();
    while unmanaged_ids(&d).await.contains(&id) {
        assert!(
            start_wait.elapsed() < LIMIT,
            "{id} still listed as unmanaged"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A driver of this installation's job that is not the job's live run (what a create that
/// arrives late leaves: a former leader's, or one sent just before its run was given up) is
/// killed by the sweep with a `stray_killed` event naming it; the job's live driver runs on, and
/// a driver naming the same job and run with another installation's token is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_kills_a_driver_of_a_run_that_is_not_its_jobs_live_run() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &c, "");
    git.write(
        "jobs/stray.yaml",
        &totals(&c, &["--n", "100", "--sleep", "600"], ""),
    );
    git.commit_push("a long spark driver");
    let d = start(tmp.path(), &cfg).await;
    let (live_run, live_id) = running(&d, &c, "stray", &[]).await;

    // An earlier run of the job, given up while its create was on its way.
    let job = d.job("stray").unwrap();
    let jar = format!("file://{}", job.artifact.unwrap().path.to_string_lossy());
    let old_run = d
        .store
        .insert_run(
            "stray",
            jobkeeper::store::RunOrigin::default(),
            job.applied_hash.as_deref().unwrap(),
            (jobkeeper::engine::EngineKind::Spark, "spark"),
            &d.state_dir.join("logs/stray"),
        )
        .unwrap();
    d.store
        .finish_run(old_run, RunState::Stopped, Some("test: given up"))
        .unwrap();
    let http = reqwest::Client::new();
    let create = |salt: String| {
        let (http, jar, c) = (http.clone(), jar.clone(), &c);
        async move {
            let token = jobkeeper::engine::cluster::run_token(&salt, "stray", old_run);
            let body = serde_json::json!({
                "action": "CreateSubmissionRequest", "appResource": jar, "mainClass": "example.Totals",
                "appArgs": ["--n", "100", "--sleep", "600"], "clientSparkVersion": "4.3.0",
                "environmentVariables": {},
                "sparkProperties": {"spark.master": c.master, "spark.submit.deployMode": "cluster",
                    "spark.jars": jar, "spark.app.name": "stray", "spark.driver.memory": "512m",
                    "spark.executor.memory": "512m", "spark.cores.max": "1",
                    "spark.jobkeeper.run": token, "spark.jobkeeper.job": "stray",
                    "spark.jobkeeper.run_id": old_run.to_string()}
            });
            let made: Value = http
                .post(format!("{}/v1/submissions/create", c.rest))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            made["submissionId"].as_str().unwrap().to_string()
        }
    };
    // Another installation's driver naming the same job and run: its token is not ours.
    let foreign = create("/srv/another-jobkeeper".into()).await;
    let _kill_foreign = KillOnDrop(c.rest.clone(), foreign.clone());
    wait_for("the other installation's driver running", LIMIT, || {
        std::process::Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("{}/v1/submissions/status/{foreign}", c.rest))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"RUNNING\""))
    })
    .await;
    let late = create(d.state_dir.display().to_string()).await;
    let _kill_late = KillOnDrop(c.rest.clone(), late.clone());

    wait_for("stray_killed", LIMIT, || {
        d.has_event("stray", "stray_killed")
    })
    .await;
    let event = d
        .events("stray")
        .into_iter()
        .find(|e| e.kind == "stray_killed")
        .unwrap();
    assert_eq!(event.run_id, Some(old_run), "{event:?}");
    assert!(
        event.message.contains(&format!("spark {late} on "))
            && event.message.contains(&format!("run {old_run} is stopped")),
        "{event:?}"
    );
    wait_for("the late driver killed", LIMIT, || {
        std::process::Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("{}/v1/submissions/status/{late}", c.rest))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"KILLED\""))
    })
    .await;
    d.sweeps_pass(2, LIMIT).await;
    assert_eq!(
        driver_state(&c, &foreign).await.as_deref(),
        Some("RUNNING"),
        "another installation's driver is left alone"
    );
    assert_eq!(driver_state(&c, &live_id).await.as_deref(), Some("RUNNING"));
    let live = d.live_runs("stray");
    assert_eq!(
        live.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![live_run],
        "the live run is untouched"
    );
    assert_eq!(
        d.events("stray")
            .iter()
            .filter(|e| e.kind == "stray_killed")
            .count(),
        1,
        "one kill, one event"
    );
}
