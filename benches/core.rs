//! Benchmarks of the main path (`cargo bench --bench core`), each against a baseline measured in
//! the same run where one exists. Prints a markdown table for docs/BENCHMARKS.md.
//!
//! - push → local job running: p50/p99 over N pushes, the daemon in-process;
//! - `jobkeeper plan` for a one-file change in a 10,000-job repo vs `git diff-tree -r`;
//! - `jobkeeper plan` for one value changed in a `_defaults.yaml` above 5,000 jobs vs
//!   `git diff-tree -r` (`BENCH_DEFAULTS_JOBS`);
//! - cold start over 10,000 suspended jobs: time to `/readyz` 200 and peak RSS, first start
//!   (empty state) and restart (state present);
//! - kill → restarted on the local engine with backoff 0: p50/p99;
//! - CPU used by the daemon (health sweep included) with 1,000 running local jobs at a 1 s
//!   `health.interval`, against the same daemon with no jobs.
//!
//! - `GET /api/v1/jobs`, `GET /metrics` and `GET /` with 10,000 suspended jobs: p50/p99;
//! - the status page with 800 and 10,000 jobs: `GET /` (first page), an unchanged refresh
//!   (304), a search and the first page built afresh after a write (one the page does not
//!   show, and one changing a job it shows), against the JSON API's first page of the same run;
//! - git webhook received → fetch started, and → commit applied, with the config repo served by
//!   `git daemon` (not watched) and `poll: 1h`: p50/p99;
//! - flink (needs a cluster: `JOBKEEPER_FLINK_URL`, `JOBKEEPER_FLINK_LIB`; skipped with a note
//!   when unset): commit → job RUNNING (build excluded), failure → resubmitted → RUNNING with a
//!   1 s `health.interval`, savepoint upgrade end to end; the same for a SQL job (warm runner);
//! - adopt (the flink cluster; its task slots must hold 2N + 1 one-slot jobs): `jobkeeper
//!   import` over N jobs started outside jobkeeper against one `GET /jobs/overview`, one commit
//!   adopting N against one submitting N, and the health loop's requests per sweep with no job,
//!   N unmanaged and N adopted ([`adopt`]);
//! - flink-health (the flink cluster): unhealthy detection latency against `health.interval`,
//!   and REST requests per health sweep for 1, 20 and 100 jobs, the last against answers
//!   recorded from the cluster ([`flink_health`]);
//! - spark (needs a cluster: `JOBKEEPER_SPARK_URL`, `_MASTER`, `_UI`, `_JARS`; skipped with a
//!   note when unset): commit → driver RUNNING against the same create sent straight to the
//!   REST server, and schedule tick → driver RUNNING.
//!
//! - `jobkeeper validate --config` of 1,000 SQL job files against 1,000 jar job files;
//! - a fleet of 2,000 running local jobs and a commit changing 500 of them: commit → every new
//!   run up, p50/p99 over 5 commits.
//!
//! Environment: `BENCH_PUSHES` (default 30), `BENCH_JOBS` (default 10000), `BENCH_FLINK`
//! and `BENCH_SPARK` (default 10), `BENCH_FLEET` (default 2000), `BENCH_ONLY` (`push`, `plan`,
//! `plan-defaults`,
//! `prune`, `start`, `restart`, `health`, `api`, `page`, `hook`, `fleet`, `flink`, `flink-rollback`,
//! `flink-move`, `adopt`, `flink-health`, `spark`, `validate`: run one),
//! `BENCH_SQL_JOBS` (default 1000), `BENCH_ADOPT` (default 20), `BENCH_HEALTH_JOBS` (default 5
//! per kind and interval).

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobkeeper::store::Blocking;
use tokio_util::sync::CancellationToken;

#[path = "core/adopt.rs"]
mod adopt;
#[path = "core/counting.rs"]
mod counting;
#[path = "core/fleet.rs"]
mod fleet;
#[path = "core/flink_health.rs"]
mod flink_health;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `p50 … · p99 …` of sorted samples.
fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "p50 {} · p99 {}",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99))
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A bare config repo with `jobs` job files made by `job(i)`, written with `git fast-import`.
fn make_repo(root: &Path, jobs: usize, job: impl Fn(usize) -> String) -> (PathBuf, PathBuf) {
    let bare = root.join("config.git");
    let work = root.join("config");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let mut fi = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&bare)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = fi.stdin.as_mut().unwrap();
        let mut buf = Vec::new();
        let msg = "many jobs";
        write!(buf, "commit refs/heads/main\ncommitter Bench <bench@example.com> 1700000000 +0000\ndata {}\n{msg}\n", msg.len()).unwrap();
        for i in 0..jobs {
            let body = job(i);
            write!(
                buf,
                "M 100644 inline jobs/team-{}/job-{i:05}.yaml\ndata {}\n{body}\n",
                i % 50,
                body.len()
            )
            .unwrap();
        }
        stdin.write_all(&buf).unwrap();
    }
    assert!(fi.wait().unwrap().success());
    git(
        root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    (bare, work)
}

fn config(root: &Path, bare: &Path, listen: &str) -> PathBuf {
    let mut text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: {listen}\n\
         envs:\n  dev: {{engine: local}}\n",
        bare.display(),
        root.join("state").display()
    );
    if let Some(url) = postgres_schema(root) {
        text.push_str(&format!(
            "store:\n  postgres: {{url: \"{url}\", tls: disable, pool: 8}}\n"
        ));
    }
    let p = root.join("config.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `BENCH_STORE=postgres`: the daemon's store in a new schema of `JOBKEEPER_TEST_POSTGRES_URL`
/// (one per `root`), for the benches that compare the backends (`start`, `fleet`); its URL.
fn postgres_schema(root: &Path) -> Option<String> {
    if std::env::var("BENCH_STORE").ok().as_deref() != Some("postgres") {
        return None;
    }
    let url = std::env::var("JOBKEEPER_TEST_POSTGRES_URL")
        .expect("BENCH_STORE=postgres needs JOBKEEPER_TEST_POSTGRES_URL");
    let schema = format!(
        "bench_{:x}",
        root.to_string_lossy()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    );
    let (admin, s) = (url.clone(), schema.clone());
    bench_rt().block_on(async move {
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
            .await
            .unwrap();
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

/// The runtime the bench's own Postgres calls run their I/O on.
fn bench_rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The store the daemon under `root` writes: its SQLite file, or (`BENCH_STORE=postgres`) its
/// Postgres schema; `None` until it can be opened.
fn daemon_store(root: &Path) -> Option<Blocking> {
    match postgres_schema(root) {
        Some(url) => Blocking::open_postgres(
            &jobkeeper::store::postgres::Target {
                url,
                password: None,
                tls: jobkeeper::store::postgres::TlsMode::Disable,
                pool: 2,
            },
            bench_rt().handle().clone(),
        )
        .ok(),
        None => Blocking::open(&root.join("state/jobkeeper.db")).ok(),
    }
}

/// `sqlite` or `postgres`, for the rows of the benches that compare them.
fn backend() -> &'static str {
    match std::env::var("BENCH_STORE").ok().as_deref() {
        Some("postgres") => "postgres",
        _ => "sqlite",
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type DaemonTask = tokio::task::JoinHandle<Result<(), jobkeeper::daemon::DaemonError>>;

/// The daemon in-process on a free port, once its store exists.
async fn start_in_process(
    root: &Path,
    settings: jobkeeper::settings::Settings,
) -> (CancellationToken, DaemonTask, Blocking) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(jobkeeper::daemon::run(settings, listener, cancel.clone()));
    let db = root.join("state/jobkeeper.db");
    while !db.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (cancel, daemon, Blocking::open(&db).unwrap())
}

fn bench_push(pushes: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (bare, work) = make_repo(root, 1, |_| {
        "env: dev\nparams: {command: [sleep, \"1000\"]}".into()
    });
    let cfg = config(root, &bare, "127.0.0.1:0");
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    let rt = runtime();
    let job = "team-0/job-00000";
    let path = work.join("jobs/team-0/job-00000.yaml");
    let (samples, with_push) = rt.block_on(async {
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let live_pid = |store: &Blocking| -> Option<(i64, u32)> {
            let runs = store.runs(job, 1).ok()?;
            let r = runs.first().filter(|r| r.state == "running")?;
            let pid = r.handle.as_ref()?.engine_id.parse().ok()?;
            alive(pid).then_some((r.id, pid))
        };
        let wait_new = |store: &Blocking, after: i64| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some((id, _)) = live_pid(store).filter(|(id, _)| *id > after) {
                    return id;
                }
                assert!(Instant::now() < deadline, "job did not start");
                std::thread::sleep(Duration::from_micros(500));
            }
        };
        let mut last = wait_new(&store, 0);
        let mut samples = Vec::new();
        let mut with_push = Vec::new();
        for i in 0..pushes {
            std::fs::write(
                &path,
                format!("env: dev\nparams: {{command: [sleep, \"{}\"]}}\n", 2000 + i),
            )
            .unwrap();
            git(&work, &["commit", "-qam", "change"]);
            let t0 = Instant::now();
            git(&work, &["push", "-q", "origin", "main"]);
            let pushed = Instant::now();
            last = tokio::task::block_in_place(|| wait_new(&store, last));
            samples.push(pushed.elapsed());
            with_push.push(t0.elapsed());
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        (samples, with_push)
    });
    let mut s = samples;
    s.sort();
    let mut w = with_push;
    w.sort();
    vec![
        format!(
            "| push → local job running (from `git push` returning), {pushes} pushes | {} | p50 ≤ 100 ms |",
            p50_p99(&s)
        ),
        format!(
            "| same, including the `git push` command itself | {} | |",
            p50_p99(&w)
        ),
    ]
}

fn time_cmd(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.code().is_some());
    t.elapsed()
}

fn bench_plan(jobs: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (_bare, work) = make_repo(tmp.path(), jobs, |i| {
        format!("env: dev\nparams: {{command: [sleep, \"{i}\"]}}\nrestart: {{attempts: 3}}")
    });
    std::fs::write(
        work.join("jobs/team-7/job-00007.yaml"),
        "env: dev\nparams: {command: [sleep, \"8\"]}\n",
    )
    .unwrap();
    git(&work, &["commit", "-qam", "one change"]);
    let runs = 30;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jobkeeper"));
        c.args([
            "plan",
            "--repo",
            work.to_str().unwrap(),
            "--from",
            "HEAD~1",
            "--to",
            "HEAD",
        ]);
        ours.push(time_cmd(c));
        let mut g = Command::new("git");
        g.args(["diff-tree", "-r", "HEAD~1", "HEAD"])
            .current_dir(&work);
        base.push(time_cmd(g));
    }
    ours.sort();
    base.sort();
    let (o, b) = (percentile(&ours, 0.5), percentile(&base, 0.5));
    vec![format!(
        "| `jobkeeper plan` one-file change, {jobs}-job repo vs `git diff-tree -r` (medians of {runs}) | {} vs {} = **{:.2}×** | ≤ 2× |",
        ms(o),
        ms(b),
        o.as_secs_f64() / b.as_secs_f64()
    )]
}

/// `jobkeeper plan` of a commit changing one value of a `_defaults.yaml` above `jobs` job
/// files (every one of them inherits it, so every one is redeployed) vs `git diff-tree -r`
/// of the same two commits: medians of 30 runs each, interleaved.
fn bench_plan_defaults(jobs: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (_bare, work) = make_repo(tmp.path(), jobs, |i| {
        format!("params: {{command: [sleep, \"{i}\"]}}\nrestart: {{attempts: 3}}")
    });
    std::fs::write(
        work.join("jobs/_defaults.yaml"),
        "env: dev\nparams: {environment: {LEVEL: \"1\"}}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "defaults"]);
    std::fs::write(
        work.join("jobs/_defaults.yaml"),
        "env: dev\nparams: {environment: {LEVEL: \"2\"}}\n",
    )
    .unwrap();
    git(&work, &["commit", "-qam", "one value of the defaults"]);
    let plan = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jobkeeper"));
        c.args([
            "plan",
            "--repo",
            work.to_str().unwrap(),
            "--from",
            "HEAD~1",
            "--to",
            "HEAD",
            "--format",
            "json",
        ]);
        c
    };
    let out = plan().output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), jobs, "every job below the defaults is planned");
    assert!(items.iter().all(|i| i["action"] == "redeploy"));
    let runs = 30;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(time_cmd(plan()));
        let mut g = Command::new("git");
        g.args(["diff-tree", "-r", "HEAD~1", "HEAD"])
            .current_dir(&work);
        base.push(time_cmd(g));
    }
    ours.sort();
    base.sort();
    let (o, b) = (percentile(&ours, 0.5), percentile(&base, 0.5));
    vec![format!(
        "| `jobkeeper plan` one value of a `_defaults.yaml` above {jobs} jobs (all redeployed) vs `git diff-tree -r` (medians of {runs}) | {} vs {} = **{:.2}×** | ≤ 2× |",
        ms(o),
        ms(b),
        o.as_secs_f64() / b.as_secs_f64()
    )]
}

/// `jobkeeper validate --config` of `n` SQL job files (inline `sql`, four statements with a var)
/// against `n` jar job files on the same flink env: medians of `runs` runs of each.
fn bench_validate(n: usize, runs: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(
        root.join("config.yaml"),
        "repo: {url: ./config-repo}\nstate_dir: state\ntimezone: UTC\nenvs:\n  prod:\n    \
         engine: flink\n    flink: {url: \"http://127.0.0.1:9\"}\n    vars: {KAFKA: \"kafka:9092\"}\n",
    )
    .unwrap();
    for kind in ["sql", "jar"] {
        std::fs::create_dir_all(root.join(kind)).unwrap();
    }
    for i in 0..n {
        let sql = format!(
            "env: prod\nparams: {{parallelism: 2}}\nsql: |\n  SET 'pipeline.max-parallelism' = '128';\n  \
             CREATE TABLE clicks_{i} (user_id BIGINT, url STRING, ts TIMESTAMP(3)) WITH (\n    \
             'connector' = 'kafka', 'topic' = 'clicks-{i}', -- the topic; of job {i}\n    \
             'properties.bootstrap.servers' = '${{var:KAFKA}}', 'format' = 'json');\n  \
             CREATE TABLE totals_{i} (user_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');\n  \
             INSERT INTO totals_{i} SELECT user_id, COUNT(*) FROM clicks_{i} /* per user; */ GROUP BY user_id;\n"
        );
        std::fs::write(root.join(format!("sql/job-{i:05}.yaml")), sql).unwrap();
        let jar = format!(
            "project: {{repo: https://git.example.com/data/clicks.git, build: mvn -q package, artifact: target/clicks.jar}}\n\
             env: prod\nparams:\n  main_class: com.example.Clicks{i}\n  args: [--topic, clicks-{i}, --brokers, \"${{var:KAFKA}}\"]\n  parallelism: 2\n"
        );
        std::fs::write(root.join(format!("jar/job-{i:05}.yaml")), jar).unwrap();
    }
    for dir in ["sql", "jar"] {
        let out = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["validate", dir, "--config", "config.yaml"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut sql, mut jar) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (dir, out) in [("sql", &mut sql), ("jar", &mut jar)] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_jobkeeper"));
            c.args(["validate", dir, "--config", "config.yaml"])
                .current_dir(root);
            out.push(time_cmd(c));
        }
    }
    sql.sort();
    jar.sort();
    let (s, j) = (percentile(&sql, 0.5), percentile(&jar, 0.5));
    vec![format!(
        "| `jobkeeper validate --config` of {n} SQL job files vs {n} jar job files (medians of {runs}) | {} vs {} = **{:.2}×** | ≤ 2× |",
        ms(s),
        ms(j),
        s.as_secs_f64() / j.as_secs_f64()
    )]
}

/// A `/proc/<pid>/status` figure in kB (`VmHWM`: the peak resident set; `RssAnon`, `RssFile`:
/// the resident set's anonymous memory and mapped files now), or a count (`Threads`).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn ready(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

fn bench_start(jobs: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _work) = make_repo(tmp.path(), jobs, |i| {
        format!("env: dev\nsuspend: true\nparams: {{command: [sleep, \"{i}\"]}}")
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(tmp.path(), &bare, &format!("127.0.0.1:{port}"));
    // `BENCH_DAEMON`: another build's binary, to compare in the same sitting.
    let daemon =
        std::env::var("BENCH_DAEMON").unwrap_or_else(|_| env!("CARGO_BIN_EXE_jobkeeper").into());
    let mut out = Vec::new();
    for label in [
        "first start (empty state: fetch, parse, store)",
        "restart (state present)",
    ] {
        let t = Instant::now();
        let mut child = Command::new(&daemon)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The most threads seen while starting (blocking threads each hold a stack).
        let mut threads = 0;
        while !ready(port) {
            assert!(t.elapsed() < Duration::from_secs(120), "not ready");
            threads = threads.max(status_kb(child.id(), "Threads"));
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = t.elapsed();
        let at_ready = status_kb(child.id(), "VmHWM") as f64 / 1024.0;
        // Ready comes before every job's actor has taken over its job: the start goes on until
        // every job is recorded suspended and the daemon is idle (under 10% of a core over
        // 300 ms); the peak is read then.
        let settled = settle(child.id(), port, jobs, &mut threads).map(|d| d + took);
        let mb = |field| status_kb(child.id(), field) as f64 / 1024.0;
        let (rss, anon, file) = (mb("VmHWM"), mb("RssAnon"), mb("RssFile"));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        out.push(format!(
            "| cold start over {jobs} suspended jobs, {label} ({}) | ready in {} (peak RSS then {at_ready:.1} MB) · settled in {} · peak RSS {rss:.1} MB (then {anon:.1} MB anonymous, {file:.1} MB mapped files; at most {threads} threads) | ≤ 1 s, ≤ 64 MB |",
            backend(),
            ms(took),
            settled.map_or("(not within 120 s)".to_string(), ms),
        ));
    }
    out
}

/// Waits until `/metrics` counts `jobs` suspended jobs and process `pid` used under 10% of a
/// core over the last 300 ms; how long that took (`None`: not within 120 s). `threads` keeps
/// the most threads seen.
fn settle(pid: u32, port: u16, jobs: usize, threads: &mut u64) -> Option<Duration> {
    let t = Instant::now();
    let want = format!("jobkeeper_jobs{{state=\"suspended\"}} {jobs}");
    let ticks = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                // utime and stime: fields 14 and 15, the 12th and 13th after the name.
                Some(f.get(10)? + f.get(11)?)
            })
            .unwrap_or(0)
    };
    let mut window = std::collections::VecDeque::new();
    while t.elapsed() < Duration::from_secs(120) {
        *threads = (*threads).max(status_kb(pid, "Threads"));
        window.push_back(ticks());
        if window.len() > 7 {
            window.pop_front();
        }
        // Clock ticks are 10 ms: at most 3 over 300 ms.
        let idle = window.len() == 7 && window.back()? - window.front()? < 3;
        if idle {
            let (code, body) = http(port, "GET", "/metrics", &[], b"");
            if code == 200 && String::from_utf8_lossy(&body).lines().any(|l| l == want) {
                return Some(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn live_pid(store: &Blocking, job: &str) -> Option<(i64, u32)> {
    let runs = store.runs(job, 1).ok()?;
    let r = runs.first().filter(|r| r.state == "running")?;
    let pid = r.handle.as_ref()?.engine_id.parse().ok()?;
    alive(pid).then_some((r.id, pid))
}

fn bench_restart(kills: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (bare, _work) = make_repo(root, 1, |_| {
        "env: dev\nparams: {command: [sleep, \"1000\"]}\nrestart: {attempts: 100000, backoff: 0s, max_backoff: 0s}".into()
    });
    let cfg = config(root, &bare, "127.0.0.1:0");
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    let rt = runtime();
    let job = "team-0/job-00000";
    let samples = rt.block_on(async {
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let mut samples = Vec::new();
        for _ in 0..kills + 1 {
            let deadline = Instant::now() + Duration::from_secs(20);
            let (id, pid) = loop {
                if let Some(x) = live_pid(&store, job) {
                    break x;
                }
                assert!(Instant::now() < deadline, "job did not start");
                tokio::time::sleep(Duration::from_micros(500)).await;
            };
            if samples.len() + 1 > kills {
                break;
            }
            let t = Instant::now();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            loop {
                if live_pid(&store, job).is_some_and(|(new, _)| new > id) {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(20), "not restarted");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            samples.push(t.elapsed());
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        samples
    });
    let mut s = samples;
    s.sort();
    vec![format!(
        "| kill -9 → restarted and running, local engine, backoff 0 ({} kills; includes `kill`) | {} | p99 ≤ 200 ms |",
        s.len(),
        p50_p99(&s)
    )]
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn bench_health(jobs: usize, secs: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut baseline = 0.0;
    for n in [0, jobs] {
        let tmp = tempfile::tempdir().unwrap();
        let (bare, _work) = make_repo(tmp.path(), n.max(1), |i| {
            if n == 0 {
                "env: dev\nsuspend: true\nparams: {command: [sleep, \"100000\"]}".into()
            } else {
                format!(
                    "env: dev\nparams: {{command: [sleep, \"{}\"]}}",
                    100_000 + i
                )
            }
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = config(tmp.path(), &bare, &format!("127.0.0.1:{port}"));
        let text = std::fs::read_to_string(&cfg).unwrap() + "health: {interval: 1s}\n";
        std::fs::write(&cfg, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = tmp.path().join("state/jobkeeper.db");
        let t = Instant::now();
        while !db.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let store = Blocking::open(&db).unwrap();
        let want = n;
        while store
            .live_runs()
            .map(|r| r.iter().filter(|r| r.state == "running").count())
            .unwrap_or(0)
            < want
        {
            assert!(t.elapsed() < Duration::from_secs(120), "jobs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
        let hz = 100.0; // USER_HZ
        let before = cpu_ticks(child.id());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let used = (cpu_ticks(child.id()) - before) as f64 / hz;
        let pct = 100.0 * used / t0.elapsed().as_secs_f64();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        if n == 0 {
            baseline = pct;
        } else {
            out.push(format!(
                "| daemon CPU with {n} running local jobs, `health.interval` 1s, over {secs} s (same daemon with no jobs: {baseline:.2}%) | {pct:.2}% of a core | ≤ 2% |"
            ));
        }
    }
    out
}

/// A commit on `main` of `bare` changing `files` (path, content), written with `git fast-import`.
fn fast_commit(bare: &Path, msg: &str, files: &[(String, String)]) {
    let parent = git(bare, &["rev-parse", "refs/heads/main"]);
    let mut fi = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(bare)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut buf = Vec::new();
        write!(buf, "commit refs/heads/main\ncommitter Bench <bench@example.com> 1700000001 +0000\ndata {}\n{msg}\nfrom {parent}\n", msg.len()).unwrap();
        for (path, body) in files {
            write!(buf, "M 100644 inline {path}\ndata {}\n{body}\n", body.len()).unwrap();
        }
        fi.stdin.as_mut().unwrap().write_all(&buf).unwrap();
    }
    assert!(fi.wait().unwrap().success());
}

/// `jobs` running local jobs, then one commit changing a quarter of them: time from the commit
/// landing in the bare repo (watched) to every changed job's new run up, over `samples` commits.
fn bench_fleet(jobs: usize, samples: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let marker = |version: usize, i: usize| 1_000_000 * version + i;
    let body = |version: usize, i: usize| {
        format!(
            "env: dev\nparams: {{command: [sleep, \"{}\"]}}",
            marker(version, i)
        )
    };
    let (bare, _work) = make_repo(tmp.path(), jobs, |i| body(1, i));
    let port = free_port();
    let cfg = config(tmp.path(), &bare, &format!("127.0.0.1:{port}"));
    let daemon = spawn_daemon(&cfg, port);
    let store = daemon_store(tmp.path()).expect("the daemon's store opens");
    let running = |store: &Blocking| {
        store
            .live_runs()
            .map(|r| r.iter().filter(|r| r.state == "running").count())
            .unwrap_or(0)
    };
    let t = Instant::now();
    while running(&store) < jobs {
        assert!(t.elapsed() < Duration::from_secs(300), "jobs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_up = t.elapsed();
    let changed: Vec<usize> = (0..jobs).filter(|i| i % 4 == 0).collect();
    let mut times = Vec::new();
    // `GET /api/v1/jobs` (its first page) asked every 50 ms while the commits are applied: the
    // API must not wait behind the store's writers.
    let asking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let api = {
        let asking = asking.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while asking.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let (code, _) = http(port, "GET", "/api/v1/jobs", &[], b"");
                if code == 200 {
                    took.push(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            took
        })
    };
    for version in 2..2 + samples {
        let files: Vec<(String, String)> = changed
            .iter()
            .map(|&i| {
                (
                    format!("jobs/team-{}/job-{i:05}.yaml", i % 50),
                    body(version, i),
                )
            })
            .collect();
        let t = Instant::now();
        fast_commit(&bare, &format!("version {version}"), &files);
        let up = |store: &Blocking| {
            let Ok(runs) = store.live_runs() else {
                return 0;
            };
            runs.iter()
                .filter(|r| r.state == "running")
                .filter(|r| {
                    r.job
                        .rsplit_once("job-")
                        .and_then(|(_, n)| n.parse::<usize>().ok())
                        .is_some_and(|i| i % 4 == 0)
                })
                .filter_map(|r| r.handle.as_ref()?.engine_id.parse::<u32>().ok())
                .filter(|pid| {
                    // `sleep <marker>`: the marker's millions are the version.
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        String::from_utf8_lossy(&c)
                            .split('\0')
                            .nth(1)
                            .and_then(|a| a.parse::<usize>().ok())
                            .is_some_and(|m| m / 1_000_000 == version)
                    })
                })
                .count()
        };
        while up(&store) < changed.len() {
            assert!(t.elapsed() < Duration::from_secs(300), "no convergence");
            std::thread::sleep(Duration::from_millis(20));
        }
        times.push(t.elapsed());
    }
    asking.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut api_took = api.join().unwrap();
    api_took.sort();
    let hwm = status_kb(daemon.id(), "VmHWM");
    stop_daemon(daemon);
    times.sort();
    vec![
        format!(
            "| `GET /api/v1/jobs` (first page) every 50 ms during those commits ({} requests; {}) | {} | ≤ 50 ms p99 |",
            api_took.len(),
            backend(),
            p50_p99(&api_took)
        ),
        format!(
            "| {jobs} running local jobs, one commit changing {} of them: commit → every new run up ({samples} commits; {}) | {} | |",
            changed.len(),
            backend(),
            p50_p99(&times)
        ),
        format!(
            "| same: {jobs} jobs from an empty state to all running; daemon peak RSS ({}) | {:.1} s · {:.1} MB | |",
            backend(),
            all_up.as_secs_f64(),
            hwm as f64 / 1024.0
        ),
    ]
}

/// One HTTP/1.1 request over a new loopback connection: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let code = std::str::from_utf8(&buf[..12.min(buf.len())])
        .ok()
        .and_then(|h| h.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    (code, buf[split..].to_vec())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon binary on `cfg`, once `/readyz` answers 200.
fn spawn_daemon(cfg: &Path, port: u16) -> std::process::Child {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !ready(port) {
        assert!(t.elapsed() < Duration::from_secs(120), "not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn stop_daemon(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `GET /api/v1/jobs` (whole, paged and filtered), `/metrics` and `/` (whole and filtered)
/// over a daemon with `jobs` suspended jobs.
fn bench_api(jobs: usize, samples: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _work) = make_repo(tmp.path(), jobs, |i| {
        format!("env: dev\nsuspend: true\nparams: {{command: [sleep, \"{i}\"]}}")
    });
    let port = free_port();
    let cfg = config(tmp.path(), &bare, &format!("127.0.0.1:{port}"));
    let child = spawn_daemon(&cfg, port);
    // Every job has reached its state (suspended) before anything is timed.
    let want = format!("jobkeeper_jobs{{state=\"suspended\"}} {jobs}\n");
    let t = Instant::now();
    while !String::from_utf8_lossy(&http(port, "GET", "/metrics", &[], b"").1).contains(&want) {
        assert!(t.elapsed() < Duration::from_secs(120), "jobs not suspended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Vec::new();
    for (path, what) in [
        (
            "/api/v1/jobs?limit=10000",
            "`GET /api/v1/jobs?limit=10000` (every job, as before paging)",
        ),
        (
            "/api/v1/jobs",
            "`GET /api/v1/jobs` (its first page: 1000 jobs)",
        ),
        (
            "/api/v1/jobs?folder=team-7",
            "`GET /api/v1/jobs?folder=team-7` (200 jobs)",
        ),
        (
            "/api/v1/jobs?state=suspended&limit=100",
            "`GET /api/v1/jobs?state=suspended&limit=100`",
        ),
        ("/metrics", "`GET /metrics`"),
        ("/", "`GET /` (status page, its first 1000 jobs)"),
        (
            "/?folder=team-7&state=suspended",
            "`GET /?folder=team-7&state=suspended` (200 jobs)",
        ),
    ] {
        let mut times = Vec::with_capacity(samples);
        let mut size = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let (code, body) = http(port, "GET", path, &[], b"");
            times.push(t.elapsed());
            assert_eq!(code, 200, "{path}");
            size = body.len();
        }
        times.sort();
        out.push(format!(
            "| {what} with {jobs} jobs ({:.0} KB), {samples} requests | {} | ≤ 50 ms |",
            size as f64 / 1024.0,
            p50_p99(&times)
        ));
    }
    stop_daemon(child);
    out
}

/// Retention over a store of `jobs` jobs × `runs` runs (all older than the age): one pass
/// deleting all but the latest 100 runs of each job and their events, while another thread
/// writes a job's state every millisecond as reconcile does; the longest such write is the
/// stall the pass causes, compared with the same writes without a pass.
/// The status page (`GET /`, its first page) with `jobs` suspended jobs: the full page, a
/// refresh that finds nothing changed (`If-None-Match` → 304), a search by name, each with the
/// JSON API's first page of the same run as the baseline.
fn bench_page(jobs: usize, samples: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _work) = make_repo(tmp.path(), jobs, |i| {
        format!("env: dev\nsuspend: true\nparams: {{command: [sleep, \"{i}\"]}}")
    });
    let port = free_port();
    let cfg = config(tmp.path(), &bare, &format!("127.0.0.1:{port}"));
    let child = spawn_daemon(&cfg, port);
    let want = format!("jobkeeper_jobs{{state=\"suspended\"}} {jobs}\n");
    let t = Instant::now();
    while !String::from_utf8_lossy(&http(port, "GET", "/metrics", &[], b"").1).contains(&want) {
        assert!(t.elapsed() < Duration::from_secs(120), "jobs not suspended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let page = String::from_utf8(http(port, "GET", "/", &[], b"").1).unwrap();
    let tag = jobkeeper::http::page::etag(&page);
    let time = |path: &str, headers: &[(&str, &str)], code: u16| {
        let mut times = Vec::with_capacity(samples);
        let mut size = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let (got, body) = http(port, "GET", path, headers, b"");
            times.push(t.elapsed());
            assert_eq!(got, code, "{path}");
            size = body.len();
        }
        times.sort();
        (times, size)
    };
    let (base, base_size) = time("/api/v1/jobs", &[], 200);
    let base_p50 = percentile(&base, 0.5).as_secs_f64();
    let mut out = vec![format!(
        "| `GET /api/v1/jobs` (its first page, the baseline) with {jobs} jobs ({:.0} KB), {samples} requests | {} | |",
        base_size as f64 / 1024.0,
        p50_p99(&base)
    )];
    for (path, headers, code, what, goal) in [
        ("/", vec![], 200, "`GET /` (its first page)", "p50 ≤ 20 ms"),
        (
            "/",
            vec![("If-None-Match", tag.as_str())],
            304,
            "`GET /` refreshed, unchanged (`If-None-Match` → 304)",
            "",
        ),
        (
            "/?q=team-7",
            vec![],
            200,
            "`GET /?q=team-7` (search by name)",
            "",
        ),
    ] {
        let (times, size) = time(path, &headers, code);
        let p50 = percentile(&times, 0.5).as_secs_f64();
        out.push(format!(
            "| {what} with {jobs} jobs ({:.0} KB), {samples} requests | {} ({:.2}× the baseline) | {goal} |",
            size as f64 / 1024.0,
            p50_p99(&times),
            p50 / base_p50
        ));
    }
    // The page built afresh: before each request another connection writes the store's file,
    // so no kept page holds. First a job's `updated_at`, which the page does not show; then
    // the reason of the first job shown, which the page must show at once (checked on every
    // answer): what a daemon's own events and health checks do between two looks.
    let db = rusqlite::Connection::open(tmp.path().join("state/jobkeeper.db")).unwrap();
    for (write, shows, what) in [
        (
            "UPDATE jobs SET updated_at = updated_at + 1 WHERE name = (SELECT min(name) FROM jobs)",
            false,
            "after a write to the store (built afresh)",
        ),
        (
            "UPDATE jobs SET reason = 'bench write ' || (updated_at + 1), updated_at = updated_at + 1 \
             WHERE name = (SELECT min(name) FROM jobs)",
            true,
            "after a write changing one job shown (its reason)",
        ),
    ] {
        let mut times = Vec::with_capacity(samples);
        let mut size = 0;
        for _ in 0..samples {
            db.execute(write, []).unwrap();
            let t = Instant::now();
            let (got, body) = http(port, "GET", "/", &[], b"");
            times.push(t.elapsed());
            assert_eq!(got, 200);
            if shows {
                let reason: String = db
                    .query_row("SELECT reason FROM jobs ORDER BY name LIMIT 1", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let body = String::from_utf8_lossy(&body);
                assert!(body.contains(&reason), "the page shows the write: {reason}");
            }
            size = body.len();
        }
        times.sort();
        out.push(format!(
            "| `GET /` (its first page) {what} with {jobs} jobs ({:.0} KB), {samples} requests | {} ({:.2}× the baseline) | p50 ≤ 20 ms |",
            size as f64 / 1024.0,
            p50_p99(&times),
            percentile(&times, 0.5).as_secs_f64() / base_p50
        ));
    }
    stop_daemon(child);
    out
}

fn bench_prune(jobs: usize, runs: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("jobkeeper.db");
    let store = Blocking::open(&db).unwrap();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut job = tx
                .prepare("INSERT INTO jobs (name, path, state, updated_at) VALUES (?1, ?2, 'succeeded', 0)")
                .unwrap();
            let mut run = tx
                .prepare(
                    "INSERT INTO runs (job, commit_id, spec_hash, engine, env, state, log_path, started_at, ended_at)
                     VALUES (?1, 'c', 'h', 'local', 'dev', 'succeeded', '', ?2, ?2)",
                )
                .unwrap();
            let mut event = tx
                .prepare("INSERT INTO events (time, job, kind, message) VALUES (?1, ?2, 'succeeded', 'run finished with exit 0')")
                .unwrap();
            for j in 0..jobs {
                let name = format!("team-{}/job-{j:05}", j % 10);
                job.execute(rusqlite::params![name, format!("jobs/{name}.yaml")])
                    .unwrap();
                for r in 0..runs {
                    run.execute(rusqlite::params![name, r as i64]).unwrap();
                    event.execute(rusqlite::params![r as i64, name]).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let before = size(&db);
    let writes = |stop: &std::sync::atomic::AtomicBool| {
        let mut worst = Duration::ZERO;
        let mut times = Vec::new();
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let name = format!("team-{}/job-{i:05}", i % 10);
            let t = Instant::now();
            store
                .set_state(&name, jobkeeper::store::JobState::Succeeded, None)
                .unwrap();
            let took = t.elapsed();
            worst = worst.max(took);
            times.push(took);
            i = (i + 1) % jobs;
            std::thread::sleep(Duration::from_millis(1));
        }
        times.sort();
        (worst, times)
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let r = jobkeeper::settings::Retention {
        runs: 100,
        age: Duration::from_secs(1),
    };
    // Baseline: the same writes for a second, no pass.
    let (quiet_worst, quiet) = std::thread::scope(|s| {
        let h = s.spawn(|| writes(&stop));
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap()
    });
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let (took, pruned, (worst, busy)) = std::thread::scope(|s| {
        let h = s.spawn(|| writes(&stop));
        let t = Instant::now();
        let pruned = jobkeeper::retention::prune(
            &store.clone().into(),
            tmp.path(),
            &r,
            std::thread::yield_now,
        )
        .unwrap();
        let took = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (took, pruned, h.join().unwrap())
    });
    let t = Instant::now();
    let again = jobkeeper::retention::prune(
        &store.clone().into(),
        tmp.path(),
        &r,
        std::thread::yield_now,
    )
    .unwrap();
    let idle = t.elapsed();
    vec![
        format!(
            "| retention pass over {jobs} jobs × {runs} runs and events ({before:.0} MB store): deletes {} runs and {} events | {:.1} s | |",
            pruned.runs,
            pruned.events,
            took.as_secs_f64()
        ),
        format!(
            "| same: a job's state write (as reconcile makes) every ms during the pass, {} writes | p50 {} · p99 {} · max {}, {} over 100 ms (without a pass: p50 {} · max {}; max ratio {:.1}×) | no stall over 100 ms |",
            busy.len(),
            ms(percentile(&busy, 0.5)),
            ms(percentile(&busy, 0.99)),
            ms(worst),
            busy.iter()
                .filter(|t| **t > Duration::from_millis(100))
                .count(),
            ms(percentile(&quiet, 0.5)),
            ms(quiet_worst),
            worst.as_secs_f64() / quiet_worst.as_secs_f64().max(1e-9)
        ),
        format!(
            "| same: the next pass, nothing left to delete ({} runs) | {} | |",
            again.runs,
            ms(idle)
        ),
    ]
}

/// The value of one sample line of a metrics text.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A signed GitHub push webhook → the daemon's fetch started (its webhook-triggered fetch
/// counter moved) and → the pushed commit applied.
fn bench_hook(samples: usize) -> Vec<String> {
    use hmac::Mac;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (bare, work) = make_repo(root, 1, |_| {
        "env: dev\nsuspend: true\nparams: {command: [sleep, \"1\"]}".into()
    });
    let git_port = free_port();
    // Its own process group: `git daemon` runs `git-daemon` as a child (which forks one process
    // per connection), so the whole group is killed at the end.
    let mut git_daemon = Command::new("git")
        .process_group(0)
        .arg("daemon")
        .arg("--reuseaddr")
        .arg(format!("--base-path={}", root.display()))
        .arg("--export-all")
        .arg(format!("--port={git_port}"))
        .arg("--listen=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", git_port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = bare;
    let secret = "bench-secret";
    std::fs::write(root.join("hook_secret"), secret).unwrap();
    let port = free_port();
    let cfg = root.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "repo: {{url: \"git://127.0.0.1:{git_port}/config.git\", branch: main, path: jobs, poll: 1h}}\n\
             state_dir: {}\nlisten: 127.0.0.1:{port}\nwebhook_secret_file: {}\nenvs:\n  dev: {{engine: local}}\n",
            root.join("state").display(),
            root.join("hook_secret").display()
        ),
    )
    .unwrap();
    let child = spawn_daemon(&cfg, port);
    let metrics =
        || String::from_utf8_lossy(&http(port, "GET", "/metrics", &[], b"").1).into_owned();
    let trigger = "jobkeeper_fetch_triggers_total{trigger=\"webhook\"}";
    let (mut started, mut applied) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let file = work.join("jobs/team-0/job-00000.yaml");
        std::fs::write(
            &file,
            format!(
                "env: dev\nsuspend: true\nparams: {{command: [sleep, \"{}\"]}}\n",
                i + 2
            ),
        )
        .unwrap();
        git(&work, &["commit", "-qam", &format!("change {i}")]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        let body = format!(
            "{{\"ref\":\"refs/heads/main\",\"before\":\"0\",\"after\":\"{commit}\",\"commits\":[]}}"
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let before = metric_value(&metrics(), trigger);
        let applied_line = format!("jobkeeper_applied_commit_info{{commit=\"{commit}\"}} 1");
        let t = Instant::now();
        let (code, _) = http(
            port,
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sig),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(code, 202);
        let mut seen_start = None;
        loop {
            let text = metrics();
            if seen_start.is_none() && metric_value(&text, trigger) > before {
                seen_start = Some(t.elapsed());
            }
            if text.contains(&applied_line) {
                let done = t.elapsed();
                started.push(seen_start.unwrap_or(done));
                applied.push(done);
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "commit not applied");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop_daemon(child);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(git_daemon.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = git_daemon.wait();
    started.sort();
    applied.sort();
    vec![
        format!(
            "| GitHub push webhook → fetch started (from sending the POST), {samples} pushes | {} | ≤ 50 ms |",
            p50_p99(&started)
        ),
        format!(
            "| same → pushed commit applied (fetch over `git://`, diff, store) | {} | |",
            p50_p99(&applied)
        ),
    ]
}

/// Flink state of each job the cluster knows (`DEPLOYING` for a RUNNING job whose tasks are
/// not all running yet).
async fn flink_jobs(http: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let Ok(resp) = http.get(format!("{url}/jobs/overview")).send().await else {
        return Vec::new();
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| {
            let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
            // RUNNING only once every task runs (the job turns RUNNING while they deploy).
            let all = j["tasks"]["running"] == j["tasks"]["total"];
            let state = if s("state") == "RUNNING" && !all {
                "DEPLOYING".into()
            } else {
                s("state")
            };
            (s("jid"), state)
        })
        .collect()
}

/// A copy of `example-repo/projects/<name>` (its `build.sh` and Java source) committed to a
/// repo of its own under `root/project`.
fn example_project(root: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-repo/projects")
        .join(name);
    let project = root.join("project");
    std::fs::create_dir_all(project.join("src/example")).unwrap();
    std::fs::copy(src.join("build.sh"), project.join("build.sh")).unwrap();
    for entry in std::fs::read_dir(src.join("src/example")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            project.join("src/example").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    git(&project, &["init", "-q", "-b", "main"]);
    git(&project, &["add", "-A"]);
    git(&project, &["commit", "-qm", "project"]);
    project
}

/// On a real Flink cluster: commit → RUNNING (artifact already built), external cancel →
/// resubmitted → RUNNING, and a savepoint upgrade, each `n` times.
/// A SQL job for the flink bench: datagen → per-key count → blackhole; an upgrade (`tag`
/// `u…`) changes a connector option.
fn sql_bench_job(tag: &str) -> String {
    let rate = if tag.starts_with('u') { 6 } else { 5 };
    format!(
        "env: flink\nrestart: {{attempts: 1000, window: 1h, backoff: 0s, max_backoff: 0s}}\n\
         params:\n  parallelism: 1\n  conf: {{execution.checkpointing.interval: \"1s\"}}\nsql: |\n  \
         CREATE TABLE clicks (user_id INT, url STRING) WITH ('connector' = 'datagen',\n    \
         'rows-per-second' = '{rate}', 'fields.user_id.min' = '1', 'fields.user_id.max' = '9');\n  \
         CREATE TABLE totals (user_id INT, n BIGINT) WITH ('connector' = 'blackhole');\n  \
         INSERT INTO totals SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;\n"
    )
}

/// The flink part: the flink-counter jar job, or (`sql`) a SQL job run by the SQL runner.
fn bench_flink(url: &str, lib: &str, n: usize, sql: bool) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The project in a repo of its own, so config commits do not change its build key.
    let project = example_project(root, "flink-counter");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    let job = |tag: &str| {
        if sql {
            return sql_bench_job(tag);
        }
        format!(
            "project: {{repo: {}, branch: main, build: sh build.sh \"{lib}\", artifact: out/flink-counter.jar}}\n\
             env: flink\nrestart: {{attempts: 1000, window: 1h, backoff: 0s, max_backoff: 0s}}\n\
             params:\n  main_class: example.Counter\n  args: [\"--tag\", \"{tag}\"]\n  parallelism: 1\n\
             \x20 conf: {{execution.checkpointing.interval: \"1s\"}}\n",
            project.display()
        )
    };
    let text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         health: {{interval: 1s}}\nenvs:\n  flink: {{engine: flink, flink: {{url: \"{url}\"}}}}\n",
        bare.display(),
        root.join("state").display()
    );
    let cfg = root.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    let path = work.join("jobs/counter.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let push = |msg: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
    };
    let rt = runtime();
    let (deploy, restart, upgrade) = rt.block_on(async {
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let http = reqwest::Client::new();
        // The job id of the live run, once RUNNING on the cluster and not in `old`.
        let running = |store: Blocking, old: Vec<String>| {
            let http = http.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let live = store.runs("counter", 1).unwrap_or_default();
                    if let Some(jid) = live
                        .first()
                        .filter(|r| r.state == "running")
                        .and_then(|r| r.handle.as_ref())
                        .map(|h| h.engine_id.clone())
                        .filter(|j| !old.contains(j))
                        && flink_jobs(&http, url)
                            .await
                            .iter()
                            .any(|(id, st)| *id == jid && st == "RUNNING")
                    {
                        return jid;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "flink job did not start: {:#?}",
                        store.events(Some("counter"), 10).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // Warm-up: the one build, and the jar upload.
        std::fs::write(&path, job("warm-up")).unwrap();
        push("warm-up");
        let mut jid = running(store.clone(), vec![]).await;
        let (mut deploy, mut restart, mut upgrade) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            // Removal (stop with savepoint), then a fresh deploy of the built artifact.
            std::fs::remove_file(&path).unwrap();
            push("remove");
            let deadline = Instant::now() + Duration::from_secs(60);
            while store
                .job("counter")
                .unwrap()
                .is_none_or(|j| j.state != "stopped")
            {
                assert!(Instant::now() < deadline, "job did not stop");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            std::fs::write(&path, job(&format!("d{i}"))).unwrap();
            let t0 = Instant::now();
            push("deploy");
            jid = running(store.clone(), vec![jid]).await;
            deploy.push(t0.elapsed());

            // A failure seen by the health sweep: cancelled outside jobkeeper.
            let t0 = Instant::now();
            http.patch(format!("{url}/jobs/{jid}?mode=cancel"))
                .send()
                .await
                .unwrap();
            jid = running(store.clone(), vec![jid]).await;
            restart.push(t0.elapsed());

            // A savepoint upgrade: new args, stop with savepoint, start from it.
            std::fs::write(&path, job(&format!("u{i}"))).unwrap();
            let t0 = Instant::now();
            push("upgrade");
            jid = running(store.clone(), vec![jid]).await;
            upgrade.push(t0.elapsed());
        }
        std::fs::remove_file(&path).unwrap();
        push("remove");
        let deadline = Instant::now() + Duration::from_secs(60);
        while store
            .job("counter")
            .unwrap()
            .is_none_or(|j| j.state != "stopped")
        {
            if Instant::now() > deadline {
                let _ = http
                    .patch(format!("{url}/jobs/{jid}?mode=cancel"))
                    .send()
                    .await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        (deploy, restart, upgrade)
    });
    let row = |what: &str, mut v: Vec<Duration>, goal: &str| {
        v.sort();
        format!(
            "| {what}, {} times | p50 {} · max {} | {goal} |",
            v.len(),
            ms(percentile(&v, 0.5)),
            ms(*v.last().unwrap())
        )
    };
    if sql {
        return vec![
            row(
                "flink SQL: commit → job and all its tasks RUNNING (runner built, jar uploaded)",
                deploy,
                "",
            ),
            row(
                "flink SQL: job cancelled outside jobkeeper → resubmitted → RUNNING",
                restart,
                "≤ 5 s",
            ),
            row(
                "flink SQL: commit changing a connector option → stop with savepoint → new run RUNNING from it",
                upgrade,
                "",
            ),
        ];
    }
    vec![
        row(
            "flink: commit → job and all its tasks RUNNING (artifact built, jar uploaded)",
            deploy,
            "",
        ),
        row(
            "flink: job cancelled outside jobkeeper → resubmitted → RUNNING, `health.interval` 1s, backoff 0",
            restart,
            "≤ 5 s",
        ),
        row(
            "flink: commit changing args → stop with savepoint → new run RUNNING from it",
            upgrade,
            "",
        ),
    ]
}

/// Rollback on a real Flink cluster: a commit deploys a version that fails about a second after
/// it starts (`rollback: true`): the time from Flink's FAILED of the bad job to the previous
/// version RUNNING again from the upgrade's savepoint. Baseline in the same run, on the same job:
/// a savepoint upgrade (commit → new version RUNNING), which is also how each sample starts.
fn bench_flink_rollback(url: &str, lib: &str, n: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = example_project(root, "flink-counter");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    let job = |tag: &str, bad: bool| {
        let (args, conf) = if bad {
            (
                format!("\"--tag\", \"{tag}\", \"--mode\", \"fail\", \"--failAfter\", \"20\""),
                ", restart-strategy.type: none",
            )
        } else {
            (format!("\"--tag\", \"{tag}\""), "")
        };
        format!(
            "project: {{repo: {}, branch: main, build: sh build.sh \"{lib}\", artifact: out/flink-counter.jar}}\n\
             env: flink\nrollback: true\nready_within: 10m\n\
             restart: {{attempts: 1000, window: 1h, backoff: 0s, max_backoff: 0s}}\n\
             params:\n  main_class: example.Counter\n  args: [{args}]\n  parallelism: 1\n\
             \x20 conf: {{execution.checkpointing.interval: \"1s\"{conf}}}\n",
            project.display()
        )
    };
    let text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         health: {{interval: 1s}}\nenvs:\n  flink: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\n",
        bare.display(),
        root.join("state").display(),
        root.join("savepoints").display()
    );
    let cfg = root.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    let path = work.join("jobs/counter.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let push = |msg: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
    };
    let rt = runtime();
    let (upgrade, rollback) = rt.block_on(async {
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let http = reqwest::Client::new();
        // The job id of the live run, once RUNNING on the cluster and not in `old`.
        let running = |store: Blocking, old: Vec<String>| {
            let http = http.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let live = store.runs("counter", 1).unwrap_or_default();
                    if let Some(jid) = live
                        .first()
                        .filter(|r| r.state == "running")
                        .and_then(|r| r.handle.as_ref())
                        .map(|h| h.engine_id.clone())
                        .filter(|j| !old.contains(j))
                        && flink_jobs(&http, url)
                            .await
                            .iter()
                            .any(|(id, st)| *id == jid && st == "RUNNING")
                    {
                        return jid;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "flink job did not start: {:#?}",
                        store.events(Some("counter"), 10).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        std::fs::write(&path, job("warm-up", false)).unwrap();
        push("warm-up");
        let mut jid = running(store.clone(), vec![]).await;
        let (mut upgrade, mut rollback) = (Vec::new(), Vec::new());
        for i in 0..n {
            std::fs::write(&path, job(&format!("g{i}"), false)).unwrap();
            let t0 = Instant::now();
            push("good");
            jid = running(store.clone(), vec![jid]).await;
            upgrade.push(t0.elapsed());

            std::fs::write(&path, job(&format!("b{i}"), true)).unwrap();
            push("bad");
            // The bad job: the first one on the cluster after the good one, until Flink FAILED it.
            let deadline = Instant::now() + Duration::from_secs(120);
            let (bad, t0) = loop {
                let live = store.runs("counter", 1).unwrap_or_default();
                let candidate = live
                    .first()
                    .and_then(|r| r.handle.as_ref())
                    .map(|h| h.engine_id.clone())
                    .filter(|j| *j != jid);
                if let Some(b) = candidate
                    && flink_jobs(&http, url)
                        .await
                        .iter()
                        .any(|(id, st)| *id == b && st == "FAILED")
                {
                    break (b, Instant::now());
                }
                assert!(Instant::now() < deadline, "the bad version did not fail");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            jid = running(store.clone(), vec![jid, bad]).await;
            rollback.push(t0.elapsed());
        }
        std::fs::remove_file(&path).unwrap();
        push("remove");
        let deadline = Instant::now() + Duration::from_secs(60);
        while store
            .job("counter")
            .unwrap()
            .is_none_or(|j| j.state != "stopped")
        {
            if Instant::now() > deadline {
                let _ = http
                    .patch(format!("{url}/jobs/{jid}?mode=cancel"))
                    .send()
                    .await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        (upgrade, rollback)
    });
    let mut upgrade = upgrade;
    let mut rollback = rollback;
    upgrade.sort();
    rollback.sort();
    let (u50, r50) = (percentile(&upgrade, 0.5), percentile(&rollback, 0.5));
    vec![
        format!(
            "| flink: commit changing args → stop with savepoint → new run RUNNING from it (baseline), {} times | p50 {} · max {} | |",
            upgrade.len(),
            ms(u50),
            ms(*upgrade.last().unwrap())
        ),
        format!(
            "| flink: new version FAILED in Flink → previous version RUNNING again from the upgrade's savepoint, `health.interval` 1s, {} times | p50 {} · max {} ({:.2}× the upgrade's p50) | |",
            rollback.len(),
            ms(r50),
            ms(*rollback.last().unwrap()),
            r50.as_secs_f64() / u50.as_secs_f64().max(1e-9)
        ),
    ]
}

/// A move from one Flink cluster to another (`old` → `new`, a commit changing `env`): stop with
/// a savepoint on `old`, submit on `new` from it, until all its tasks run. The baseline, in the
/// same run and on the same job, is a savepoint upgrade within `old` (a commit changing `args`).
/// Each of the `n` samples adds a job on `old` (not timed), upgrades it, moves it, removes it.
fn bench_flink_move(old: &str, new: &str, lib: &str, n: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = example_project(root, "flink-counter");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    let job = |env: &str, tag: &str| {
        format!(
            "project: {{repo: {}, branch: main, build: sh build.sh \"{lib}\", artifact: out/flink-counter.jar}}\n\
             env: {env}\nparams:\n  main_class: example.Counter\n  args: [\"--tag\", \"{tag}\"]\n  parallelism: 1\n\
             \x20 conf: {{execution.checkpointing.interval: \"1s\"}}\n",
            project.display()
        )
    };
    let text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         health: {{interval: 1s}}\nenvs:\n  old: {{engine: flink, flink: {{url: \"{old}\"}}}}\n\
         \x20 new: {{engine: flink, flink: {{url: \"{new}\"}}}}\n",
        bare.display(),
        root.join("state").display()
    );
    let cfg = root.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let push = |msg: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
    };
    let rt = runtime();
    let (upgrade, moved) = rt.block_on(async {
        let (cancel, daemon, store) = start_in_process(root, settings).await;
        let http = reqwest::Client::new();
        // The job id of the live run once all its tasks run on `url`, and not one of `not`.
        let running = |name: String, url: &'static str, not: Vec<String>| {
            let (http, store) = (http.clone(), store.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let live = store.runs(&name, 1).unwrap_or_default();
                    if let Some(jid) = live
                        .first()
                        .filter(|r| r.state == "running")
                        .and_then(|r| r.handle.as_ref())
                        .map(|h| h.engine_id.clone())
                        .filter(|j| !not.contains(j))
                        && flink_jobs(&http, url)
                            .await
                            .iter()
                            .any(|(id, st)| *id == jid && st == "RUNNING")
                    {
                        return jid;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "flink job did not start on {url}: {:#?}",
                        store.events(Some(&name), 10).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (old, new): (&'static str, &'static str) =
            (Box::leak(old.into()), Box::leak(new.into()));
        let stopped = |name: String| {
            let store = store.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while store
                    .job(&name)
                    .unwrap()
                    .is_none_or(|j| j.state != "stopped")
                {
                    assert!(Instant::now() < deadline, "job did not stop");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (mut upgrade, mut moved) = (Vec::new(), Vec::new());
        // A job per sample: a job added again would start from its removal's savepoint.
        for i in 0..n {
            let name = format!("mover{i}");
            let path = work.join(format!("jobs/{name}.yaml"));
            std::fs::write(&path, job("old", &format!("a{i}"))).unwrap();
            push("add on old");
            let jid = running(name.clone(), old, vec![]).await;

            std::fs::write(&path, job("old", &format!("b{i}"))).unwrap();
            let t0 = Instant::now();
            push("upgrade on old");
            let jid = running(name.clone(), old, vec![jid]).await;
            upgrade.push(t0.elapsed());

            std::fs::write(&path, job("new", &format!("b{i}"))).unwrap();
            let t0 = Instant::now();
            push("move to new");
            running(name.clone(), new, vec![jid]).await;
            moved.push(t0.elapsed());

            std::fs::remove_file(&path).unwrap();
            push("remove");
            stopped(name).await;
        }
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        (upgrade, moved)
    });
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (percentile(&v, 0.5), *v.last().unwrap(), v.len())
    };
    let (up50, upmax, k) = stats(upgrade);
    let (mv50, mvmax, _) = stats(moved);
    vec![
        format!(
            "| flink move: commit changing `env` → stop with savepoint on {old} → RUNNING on {new} from it, {k} times | p50 {} · max {} · {:.2}× the baseline | |",
            ms(mv50),
            ms(mvmax),
            mv50.as_secs_f64() / up50.as_secs_f64()
        ),
        format!(
            "| baseline: commit changing `args` → savepoint upgrade within {old}, {k} times | p50 {} · max {} | |",
            ms(up50),
            ms(upmax)
        ),
    ]
}

/// Spark cluster addresses for the spark bench.
struct SparkCluster {
    rest: String,
    master: String,
    ui: String,
    jars: String,
}

/// A driver's state from the REST server (empty when unknown).
async fn spark_state(http: &reqwest::Client, rest: &str, id: &str) -> String {
    let url = format!("{rest}/v1/submissions/status/{id}");
    match http.get(url).send().await {
        Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["driverState"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(_) => String::new(),
    }
}

/// Waits (≤ 120 s) until driver `id` is RUNNING; returns when it was first seen so.
async fn spark_running(http: &reqwest::Client, rest: &str, id: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if spark_state(http, rest, id).await == "RUNNING" {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "driver {id} did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A create's time to driver RUNNING and to driver launched.
type Fetch = (Duration, Duration);

/// Waits (≤ 120 s) until driver `id` was launched by its worker (the first line of its stderr,
/// written once the worker has its jar, is the launch command); returns when it was first seen.
async fn spark_launched(http: &reqwest::Client, worker_ui: &str, id: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    let url = format!("{worker_ui}/log/?driverId={id}&logType=stderr&offset=0&byteLength=64");
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.text()
                .await
                .unwrap_or_default()
                .contains("Launch Command")
        {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "driver {id} was not launched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The driver id of the newest run of `job` not in `old`, once recorded.
async fn spark_new_driver(store: &Blocking, job: &str, old: &[String]) -> (i64, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = store
            .runs(job, 1)
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|r| {
                let id = r.handle.as_ref()?.engine_id.clone();
                (!id.is_empty() && !old.contains(&id)).then_some((r.id, id))
            });
        if let Some(f) = found {
            return f;
        }
        assert!(Instant::now() < deadline, "no new driver for {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bench_spark(c: &SparkCluster, n: usize) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The project in a repo of its own, so config commits do not change its build key.
    let project = example_project(root, "spark-totals");
    let (bare, work) = make_repo(root, 0, |_| String::new());
    let conf = "{spark.driver.memory: 512m, spark.executor.memory: 512m, spark.cores.max: \"1\"}";
    let job = |args: &str, schedule: &str| {
        format!(
            "project: {{repo: {}, branch: main, build: sh build.sh \"{}\", artifact: out/spark-totals.jar}}\n\
             env: spark\n{schedule}params:\n  main_class: example.Totals\n  args: [{args}]\n  conf: {conf}\n",
            project.display(),
            c.jars
        )
    };
    let text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         health: {{interval: 1s}}\nenvs:\n  spark: {{engine: spark, spark: {{url: \"{}\", master: \"{}\", ui: \"{}\"}}}}\n",
        bare.display(),
        root.join("state").display(),
        c.rest,
        c.master,
        c.ui
    );
    let cfg = root.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    let settings = jobkeeper::settings::load(&cfg).unwrap();
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    let push = |msg: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
    };
    let rt = runtime();
    let (direct, deploy, tick, fetch) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let daemon_url = format!("http://{}", listener.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let daemon = tokio::spawn(jobkeeper::daemon::run(settings, listener, cancel.clone()));
        let db = root.join("state/jobkeeper.db");
        while !db.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = Blocking::open(&db).unwrap();
        let http = reqwest::Client::new();
        let view: serde_json::Value = http
            .get(format!("{}/json/", c.ui))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let worker_ui = view["workers"][0]["webuiaddress"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        let kill = |id: String| {
            let http = http.clone();
            async move {
                let _ = http
                    .post(format!("{}/v1/submissions/kill/{id}", c.rest))
                    .send()
                    .await;
            }
        };
        let path = work.join("jobs/totals.yaml");
        // Warm-up: the one build, and a first driver.
        std::fs::write(&path, job("\"--sleep\", \"600\"", "")).unwrap();
        push("warm-up");
        let (_, mut id) = spark_new_driver(&store, "totals", &[]).await;
        spark_running(&http, &c.rest, &id).await;
        // The job's jar, as the daemon serves it (published by the warm-up's submit) and as a
        // file the worker reads.
        let artifact = store.job("totals").unwrap().unwrap().artifact.unwrap();
        // The installation's key, as the daemon recorded it in the store.
        let key = store.artifact_key(&[0; 32]).unwrap();
        let shelf = jobkeeper::engine::spark::artifacts::Shelf::new(&root.join("state"), key);
        let served = shelf.url(&daemon_url, &artifact.digest, "spark-totals.jar");
        let file = format!("file://{}", artifact.path.display());
        let stopped = |store: Blocking| async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while store
                .job("totals")
                .unwrap()
                .is_none_or(|j| j.state != "stopped")
            {
                assert!(Instant::now() < deadline, "job did not stop");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (mut direct, mut deploy, mut tick) = (Vec::new(), Vec::new(), Vec::new());
        let mut fetch: (Vec<Fetch>, Vec<Fetch>) = Default::default();
        for i in 0..n {
            std::fs::remove_file(&path).unwrap();
            push("remove");
            stopped(store.clone()).await;

            // The same create sent straight to the REST server, the jar as a file (the
            // baseline) and over HTTP from the daemon, one after the other: → RUNNING (the
            // master placed it), → launched (its worker has the jar and started it).
            for (jar, to) in [(&file, &mut fetch.0), (&served, &mut fetch.1)] {
                let body = serde_json::json!({
                    "action": "CreateSubmissionRequest",
                    "appResource": jar,
                    "mainClass": "example.Totals",
                    "appArgs": ["--sleep", "600"],
                    "clientSparkVersion": "4.3.0",
                    "environmentVariables": {},
                    "sparkProperties": {
                        "spark.master": c.master, "spark.submit.deployMode": "cluster",
                        "spark.jars": jar, "spark.app.name": "baseline",
                        "spark.driver.memory": "512m", "spark.executor.memory": "512m", "spark.cores.max": "1"
                    }
                });
                let t0 = Instant::now();
                let answer: serde_json::Value = http
                    .post(format!("{}/v1/submissions/create", c.rest))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let base_id = answer["submissionId"].as_str().unwrap().to_string();
                let running = spark_running(&http, &c.rest, &base_id).await - t0;
                let launched = spark_launched(&http, &worker_ui, &base_id).await - t0;
                if std::ptr::eq(jar, &file) {
                    direct.push(running);
                }
                to.push((running, launched));
                kill(base_id).await;
            }

            // commit → driver RUNNING (artifact cached).
            std::fs::write(&path, job(&format!("\"--sleep\", \"600\", \"--n\", \"{i}\""), "")).unwrap();
            let t0 = Instant::now();
            push("deploy");
            let (_, new) = spark_new_driver(&store, "totals", std::slice::from_ref(&id)).await;
            id = new;
            deploy.push(spark_running(&http, &c.rest, &id).await - t0);
        }
        std::fs::remove_file(&path).unwrap();
        push("remove");
        stopped(store.clone()).await;

        // Schedule tick → driver RUNNING: every 10 s, overlap allowed.
        std::fs::write(
            &path,
            job("\"--n\", \"10\"", "schedule: \"*/10 * * * * *\"\noverlap: allow\n"),
        )
        .unwrap();
        push("scheduled");
        let mut seen = vec![id.clone()];
        for _ in 0..n {
            let (_, new) = spark_new_driver(&store, "totals", &seen).await;
            let at = spark_running(&http, &c.rest, &new).await;
            // The tick: the last whole 10 s of wall-clock time before the driver ran (the
            // latency is well under 10 s).
            let ran = std::time::SystemTime::now() - at.elapsed();
            let ran_ms = ran
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let since_tick = Duration::from_millis((ran_ms % 10_000) as u64);
            tick.push(since_tick);
            seen.push(new);
        }
        std::fs::remove_file(&path).unwrap();
        push("remove");
        stopped(store.clone()).await;
        cancel.cancel();
        daemon.await.unwrap().unwrap();
        (direct, deploy, tick, fetch)
    });
    let mut direct = direct;
    let mut deploy = deploy;
    let mut tick = tick;
    direct.sort();
    deploy.sort();
    tick.sort();
    let ratio = percentile(&deploy, 0.5).as_secs_f64() / percentile(&direct, 0.5).as_secs_f64();
    let p50 = |v: &[Fetch], launched: bool| {
        let mut d: Vec<Duration> = v.iter().map(|p| if launched { p.1 } else { p.0 }).collect();
        d.sort();
        percentile(&d, 0.5)
    };
    let (file_run, file_launch) = (p50(&fetch.0, false), p50(&fetch.0, true));
    let (http_run, http_launch) = (p50(&fetch.1, false), p50(&fetch.1, true));
    vec![
        format!(
            "| spark: create with the jar over HTTP from the daemon → driver RUNNING · → launched (worker has the jar), {} times | p50 {} ({:.2}× the file) · p50 {} ({:.2}× the file) | |",
            fetch.1.len(),
            ms(http_run),
            http_run.as_secs_f64() / file_run.as_secs_f64(),
            ms(http_launch),
            http_launch.as_secs_f64() / file_launch.as_secs_f64()
        ),
        format!(
            "| spark baseline: the same create with the jar as a `file://` path → driver RUNNING · → launched, {} times | p50 {} · p50 {} | |",
            fetch.0.len(),
            ms(file_run),
            ms(file_launch)
        ),
        format!(
            "| spark: commit → driver RUNNING (artifact built), {} times | p50 {} · max {} · {ratio:.2}× the baseline | |",
            deploy.len(),
            ms(percentile(&deploy, 0.5)),
            ms(*deploy.last().unwrap())
        ),
        format!(
            "| spark baseline: the same create sent straight to the REST server → driver RUNNING, {} times | p50 {} · max {} | |",
            direct.len(),
            ms(percentile(&direct, 0.5)),
            ms(*direct.last().unwrap())
        ),
        format!(
            "| spark: schedule tick (`*/10` seconds) → driver RUNNING, {} ticks | p50 {} · max {} | |",
            tick.len(),
            ms(percentile(&tick, 0.5)),
            ms(*tick.last().unwrap())
        ),
    ]
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a small smoke run keeps it working.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let only = std::env::var("BENCH_ONLY").ok();
    let want = |k: &str| only.as_deref().is_none_or(|o| o == k);
    let pushes = std::env::var("BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 3 } else { 30 });
    let jobs = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 200 } else { 10_000 });
    let mut rows = Vec::new();
    if want("push") {
        rows.extend(bench_push(pushes));
    }
    if want("plan") {
        rows.extend(bench_plan(jobs));
    }
    if want("plan-defaults") {
        let n = std::env::var("BENCH_DEFAULTS_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 200 } else { 5000 });
        rows.extend(bench_plan_defaults(n));
    }
    if want("start") {
        rows.extend(bench_start(jobs));
    }
    if want("validate") {
        let n = std::env::var("BENCH_SQL_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 50 } else { 1000 });
        rows.extend(bench_validate(n, if smoke { 2 } else { 20 }));
    }
    if want("restart") {
        rows.extend(bench_restart(pushes));
    }
    if want("health") {
        let running = std::env::var("BENCH_RUNNING")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 20 } else { 1000 });
        rows.extend(bench_health(running, if smoke { 2 } else { 30 }));
    }
    if want("api") {
        rows.extend(bench_api(jobs, if smoke { 3 } else { 30 }));
    }
    if want("page") {
        for n in [800, jobs] {
            rows.extend(bench_page(n, if smoke { 3 } else { 30 }));
        }
    }
    if want("prune") {
        let runs = if smoke { 20 } else { 200 };
        rows.extend(bench_prune(if smoke { 100 } else { jobs }, runs));
    }
    if want("hook") {
        rows.extend(bench_hook(pushes));
    }
    if want("fleet") {
        let fleet = std::env::var("BENCH_FLEET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 40 } else { 2000 });
        rows.extend(bench_fleet(fleet, if smoke { 1 } else { 5 }));
    }
    if want("flink") {
        match (
            std::env::var("JOBKEEPER_FLINK_URL"),
            std::env::var("JOBKEEPER_FLINK_LIB"),
        ) {
            (Ok(url), Ok(lib)) => {
                let n = std::env::var("BENCH_FLINK")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 1 } else { 10 });
                rows.extend(bench_flink(&url, &lib, n, false));
                rows.extend(bench_flink(&url, &lib, n, true));
            }
            _ if only.as_deref() == Some("flink") && !smoke => {
                panic!(
                    "BENCH_ONLY=flink needs JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB (see docs/BENCHMARKS.md)"
                )
            }
            _ => println!(
                "note: flink bench skipped: JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB are not set"
            ),
        }
    }
    if want("flink-rollback") {
        match (
            std::env::var("JOBKEEPER_FLINK_URL"),
            std::env::var("JOBKEEPER_FLINK_LIB"),
        ) {
            (Ok(url), Ok(lib)) => {
                let n = std::env::var("BENCH_FLINK")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 1 } else { 10 });
                rows.extend(bench_flink_rollback(&url, &lib, n));
            }
            _ if only.as_deref() == Some("flink-rollback") && !smoke => panic!(
                "BENCH_ONLY=flink-rollback needs JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB (see docs/BENCHMARKS.md)"
            ),
            _ => println!(
                "note: flink rollback bench skipped: JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB are not set"
            ),
        }
    }
    if want("adopt") {
        match (
            std::env::var("JOBKEEPER_FLINK_URL"),
            std::env::var("JOBKEEPER_FLINK_LIB"),
        ) {
            (Ok(url), Ok(lib)) => {
                let n = std::env::var("BENCH_ADOPT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 2 } else { 20 });
                let window = Duration::from_secs(if smoke { 4 } else { 10 });
                rows.extend(adopt::bench_adopt(
                    &url,
                    &lib,
                    n,
                    if smoke { 1 } else { 5 },
                    window,
                ));
            }
            _ if only.as_deref() == Some("adopt") && !smoke => panic!(
                "BENCH_ONLY=adopt needs JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB (see docs/BENCHMARKS.md)"
            ),
            _ => println!(
                "note: adopt bench skipped: JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB are not set"
            ),
        }
    }
    if want("flink-health") {
        match (
            std::env::var("JOBKEEPER_FLINK_URL"),
            std::env::var("JOBKEEPER_FLINK_LIB"),
        ) {
            (Ok(url), Ok(lib)) => {
                // The smoke run counts requests only: a latency sample waits out a 15 s
                // checkpoint age.
                let k = std::env::var("BENCH_HEALTH_JOBS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 0 } else { 5 });
                if smoke {
                    println!("note: flink-health smoke run: requests per sweep only, no latency");
                }
                let sizes = if smoke { (2, 5) } else { (20, 100) };
                let window = Duration::from_secs(if smoke { 4 } else { 10 });
                rows.extend(flink_health::bench_flink_health(
                    &url,
                    &lib,
                    k,
                    &[1, 2, 5],
                    sizes,
                    window,
                ));
            }
            _ if only.as_deref() == Some("flink-health") && !smoke => panic!(
                "BENCH_ONLY=flink-health needs JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB (see docs/BENCHMARKS.md)"
            ),
            _ => println!(
                "note: flink-health bench skipped: JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB are not set"
            ),
        }
    }
    if want("flink-move") {
        let var = |k: &str| std::env::var(k).ok();
        match (
            var("JOBKEEPER_FLINK_1_20_URL"),
            var("JOBKEEPER_FLINK_1_20_LIB"),
            var("JOBKEEPER_FLINK_URL"),
        ) {
            (Some(old), Some(lib), Some(new)) => {
                let n = var("BENCH_FLINK")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 1 } else { 10 });
                rows.extend(bench_flink_move(&old, &new, &lib, n));
            }
            _ if only.as_deref() == Some("flink-move") && !smoke => panic!(
                "BENCH_ONLY=flink-move needs JOBKEEPER_FLINK_1_20_URL, JOBKEEPER_FLINK_1_20_LIB and JOBKEEPER_FLINK_URL (see docs/BENCHMARKS.md)"
            ),
            _ => println!(
                "note: flink move bench skipped: JOBKEEPER_FLINK_1_20_URL, _1_20_LIB and JOBKEEPER_FLINK_URL are not set"
            ),
        }
    }
    if want("spark") {
        let var = |k: &str| std::env::var(k).ok();
        match (
            var("JOBKEEPER_SPARK_URL"),
            var("JOBKEEPER_SPARK_MASTER"),
            var("JOBKEEPER_SPARK_UI"),
            var("JOBKEEPER_SPARK_JARS"),
        ) {
            (Some(rest), Some(master), Some(ui), Some(jars)) => {
                let n = var("BENCH_SPARK")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if smoke { 1 } else { 10 });
                let c = SparkCluster {
                    rest,
                    master,
                    ui,
                    jars,
                };
                rows.extend(bench_spark(&c, n));
            }
            _ if only.as_deref() == Some("spark") && !smoke => panic!(
                "BENCH_ONLY=spark needs JOBKEEPER_SPARK_URL, _MASTER, _UI and _JARS (see docs/BENCHMARKS.md)"
            ),
            _ => println!(
                "note: spark bench skipped: JOBKEEPER_SPARK_URL, _MASTER, _UI and _JARS are not set"
            ),
        }
    }
    println!("| what | measured | goal |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
