//! The daemon with its state in a real PostgreSQL 15 (`JOBKEEPER_TEST_POSTGRES_URL`;
//! scripts/test.sh starts one): jobs run and their history outlives the daemon, a Postgres that
//! does not answer at start is tried again while `/readyz` says why, and `migrate-store` moves a
//! running installation off SQLite with no restart of its Flink job (real Flink 2.3.0).
//!
//! Each test gets its own schema of the server's `jobkeeper` database. Assertions read the
//! daemon's API; only the migration tests open the store themselves (two opens at once, and a
//! schema from a newer jobkeeper).

mod common;
#[path = "support/tcp_proxy.rs"]
mod tcp_proxy;

use std::path::Path;
use std::time::{Duration, Instant};

use common::flink::*;
use common::*;
use serde_json::Value;
use tcp_proxy::{Mode, TcpProxy};
use tokio_util::sync::CancellationToken;

/// The test server's URL; a clear panic when it is not given.
fn pg_url() -> String {
    std::env::var("JOBKEEPER_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "JOBKEEPER_TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server. Run \
             scripts/test.sh, or: export JOBKEEPER_TEST_POSTGRES_URL=$(scripts/postgres.sh start \
             /tmp/jk-pg)"
        )
    })
}

/// A new empty schema named after the test; the URL of a store in it, through `host:port`
/// when given (a proxy), else the server's own address.
async fn schema(name: &str, via: Option<u16>) -> String {
    let url = pg_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let schema = format!("{name}_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let url = match via {
        Some(port) => {
            let cfg: tokio_postgres::Config = url.parse().unwrap();
            let port_now = cfg.get_ports()[0];
            url.replace(&format!(":{port_now}/"), &format!(":{port}/"))
        }
        None => url,
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// The `store:` lines of a daemon config for `url`.
fn store_block(url: &str) -> String {
    format!("store:\n  postgres:\n    url: \"{url}\"\n    tls: disable\n    pool: 4\n")
}

/// A daemon run in-process on a Postgres store; read through its API.
struct PgDaemon {
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), jobkeeper::daemon::DaemonError>>>,
    addr: std::net::SocketAddr,
}

impl PgDaemon {
    async fn start(root: &Path, config_text: &str) -> PgDaemon {
        let path = root.join("config.yaml");
        std::fs::write(&path, config_text).unwrap();
        let settings = jobkeeper::settings::load(&path)
            .unwrap_or_else(|d| panic!("config: {}", jobkeeper::diag::render(&d)));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(jobkeeper::daemon::run(settings, listener, cancel.clone()));
        PgDaemon {
            cancel,
            handle: Some(handle),
            addr,
        }
    }

    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("daemon stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// `GET /api/v1/jobs/{name}` as JSON (`Null` until the job is known).
    async fn job(&self, name: &str) -> Value {
        let (code, body) = self.get(&format!("/api/v1/jobs/{name}")).await;
        if code != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// Waits until job `name` has a running run; its JSON.
    async fn running(&self, name: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(name).await;
            if j["state"] == "running"
                && j["runs"].as_array().is_some_and(|r| {
                    r.first()
                        .is_some_and(|r| r["state"] == "running" && r["engine_id"].is_string())
                })
            {
                return j;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {name} running on the Postgres store: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_postgres_runs_a_job_and_its_history_outlives_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let url = schema("outlives", None).await;
    let git = Git::new(root, "config");
    git.write("jobs/sleeper.yaml", &sleeper(600));
    git.commit_push("a sleeper");
    let cfg = config(root, &git, &store_block(&url));
    let mut d = PgDaemon::start(root, &cfg).await;
    let first = d.running("sleeper", Duration::from_secs(30)).await;
    let run1 = first["runs"][0]["id"].as_i64().unwrap();
    let (code, body) = d.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    d.stop().await;

    // A second daemon on the same database: the first run's history is there, the job runs
    // again under a later run id.
    let mut d = PgDaemon::start(root, &cfg).await;
    let again = d.running("sleeper", Duration::from_secs(30)).await;
    let runs = again["runs"].as_array().unwrap();
    let run2 = runs[0]["id"].as_i64().unwrap();
    assert!(run2 > run1, "run ids continue: {again:#}");
    assert!(
        runs.iter()
            .any(|r| r["id"].as_i64() == Some(run1) && r["state"] != "running"),
        "the first daemon's run is kept, ended: {again:#}"
    );
    let (_, metrics) = d.get("/metrics").await;
    assert!(metric(&metrics, "jobkeeper_store_write_errors_total") == 0.0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_does_not_answer_at_start_is_tried_again_while_readyz_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let upstream = {
        let cfg: tokio_postgres::Config = pg_url().parse().unwrap();
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            other => panic!("a TCP host, not {other:?}"),
        };
        format!("{host}:{}", cfg.get_ports()[0])
    };
    // Nothing answers at first: the proxy cuts every connection.
    let proxy = TcpProxy::start(0, upstream, Mode::Cut).await;
    let url = schema("retried", Some(proxy.port)).await;
    let git = Git::new(root, "config");
    git.write("jobs/sleeper.yaml", &sleeper(600));
    git.commit_push("a sleeper");
    let mut d = PgDaemon::start(root, &config(root, &git, &store_block(&url))).await;
    let start = Instant::now();
    loop {
        let (code, body) = d.get("/readyz").await;
        if code == 503 && body.contains("cannot be reached") {
            assert!(body.contains("trying again in"), "{body}");
            assert!(!body.contains("password"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "readyz never said why: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = d.get("/healthz").await;
    assert_eq!(code, 200, "the process is alive while it waits: {body}");
    assert!(
        d.handle.as_ref().is_some_and(|h| !h.is_finished()),
        "the daemon waits, it does not exit"
    );
    // A stop while it waits is a clean stop (SIGTERM under systemd: not a failed unit).
    let other = tempfile::tempdir().unwrap();
    let git2 = Git::new(other.path(), "config");
    git2.write("jobs/sleeper.yaml", &sleeper(600));
    git2.commit_push("a sleeper");
    let mut waiting = PgDaemon::start(
        other.path(),
        &config(other.path(), &git2, &store_block(&url)),
    )
    .await;
    let start = Instant::now();
    while waiting.get("/readyz").await.0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(30), "never waited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waiting.stop().await;

    // The database answers: the daemon opens the store and runs the job.
    proxy.set(Mode::Pass);
    d.running("sleeper", Duration::from_secs(60)).await;
    let (code, body) = d.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    d.stop().await;
}

/// `migrate-store` with `config`, `--from state`: its exit code, stdout and stderr.
fn migrate_store(config: &Path, state: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["migrate-store", "--config"])
        .arg(config)
        .arg("--from")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_running_installation_and_its_flink_job_is_not_restarted() {
    let url = need("JOBKEEPER_FLINK_URL");
    let lib = need("JOBKEEPER_FLINK_LIB");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (git, cfg) = counter_repo(root, &url, "", "");
    git.write(
        "jobs/counter.yaml",
        &format!(
            "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
             artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
             args: [\"--tag\", \"pg\"]\n  parallelism: 1\n"
        ),
    );
    git.commit_push("a counter on flink");
    let _cleanup = CancelJobsNamed(url.clone(), "counter".into());

    // On SQLite first.
    let mut d = start(root, &cfg).await;
    let (run_id, jid) = running(&d, &url, "counter", &[]).await;
    let start_time = rest(&url, &format!("/jobs/{jid}")).await["start-time"].clone();
    d.stop().await;
    assert_eq!(
        flink_state(&url, &jid).await.as_deref(),
        Some("RUNNING"),
        "a cluster job outlives the daemon"
    );

    // Copied into Postgres.
    let pg = schema("moved", None).await;
    let moved = root.join("moved.yaml");
    std::fs::write(&moved, format!("{cfg}{}", store_block(&pg))).unwrap();
    let (code, out, err) = migrate_store(&moved, &root.join("state"));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("jobs") && out.contains("runs"), "{out}");

    // A daemon on the copy adopts the same Flink job: same run, same job id, never restarted.
    let mut d = PgDaemon::start(root, &format!("{cfg}{}", store_block(&pg))).await;
    let j = d.running("counter", FLINK_LIMIT).await;
    assert_eq!(j["runs"][0]["id"].as_i64(), Some(run_id), "{j:#}");
    assert_eq!(
        j["runs"][0]["engine_id"].as_str(),
        Some(jid.as_str()),
        "{j:#}"
    );
    // A few health sweeps later it is still that job, started when it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = d.job("counter").await;
    assert_eq!(
        j["runs"][0]["engine_id"].as_str(),
        Some(jid.as_str()),
        "{j:#}"
    );
    assert_eq!(
        rest(&url, &format!("/jobs/{jid}")).await["start-time"],
        start_time
    );
    assert_eq!(
        j["runs"].as_array().map(Vec::len),
        Some(1),
        "no run was started after the move: {j:#}"
    );
    d.stop().await;

    // A second copy into the same (now used) store is refused.
    let (code, out, err) = migrate_store(&moved, &root.join("state"));
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("already holds 1 jobs"), "{err}");
}

/// Cancels, on drop, the RUNNING jobs on cluster `.0` whose name contains `.1`.
struct CancelJobsNamed(String, String);

impl Drop for CancelJobsNamed {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("{}/jobs/overview", self.0))
            .output()
        else {
            return;
        };
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for j in v["jobs"].as_array().into_iter().flatten() {
            if j["state"] == "RUNNING" && j["name"].as_str().is_some_and(|n| n.contains(&self.1)) {
                let _ = std::process::Command::new("curl")
                    .args(["-s", "-m", "5", "-o", "/dev/null", "-X", "PATCH"])
                    .arg(format!(
                        "{}/jobs/{}?mode=cancel",
                        self.0,
                        j["jid"].as_str().unwrap_or("")
                    ))
                    .status();
            }
        }
    }
}

/// The `kind`s and messages of the store events in `schema_url`'s schema, in order.
async fn store_events(schema_url: &str) -> Vec<(String, String)> {
    let Ok((client, conn)) = tokio_postgres::connect(schema_url, tokio_postgres::NoTls).await
    else {
        return Vec::new();
    };
    tokio::spawn(conn);
    client
        .query(
            "SELECT kind, message FROM events WHERE kind LIKE 'store_%' ORDER BY id",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// A daemon under `root` whose store (a new schema named `name`) is reached through a proxy
/// the test controls, running one sleeper job; with the store's direct URL (for the test's
/// own reads, which no outage of the proxy touches).
async fn behind_a_proxy(root: &Path, name: &str) -> (TcpProxy, String, PgDaemon) {
    let cfg: tokio_postgres::Config = pg_url().parse().unwrap();
    let port = cfg.get_ports()[0];
    let proxy = TcpProxy::start(0, format!("127.0.0.1:{port}"), Mode::Pass).await;
    let url = schema(name, Some(proxy.port)).await;
    let direct = url.replace(&format!(":{}/", proxy.port), &format!(":{port}/"));
    let git = Git::new(root, "config");
    git.write("jobs/sleeper.yaml", &sleeper(600));
    git.commit_push("a sleeper");
    let extra = format!("health: {{interval: 1s}}\n{}", store_block(&url));
    let d = PgDaemon::start(root, &config(root, &git, &extra)).await;
    (proxy, direct, d)
}

/// The store events once an outage's episode is recorded (at least two), within 60 s.
async fn episode(direct: &str) -> Vec<(String, String)> {
    let start = Instant::now();
    loop {
        let events = store_events(direct).await;
        if events.len() >= 2 {
            return events;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no store events after the outage: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_stops_no_job_and_is_one_store_unreachable_then_store_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, direct, mut d) = behind_a_proxy(dir.path(), "outage").await;
    let j = d.running("sleeper", Duration::from_secs(30)).await;
    let pid: u32 = j["runs"][0]["engine_id"].as_str().unwrap().parse().unwrap();
    let run = j["runs"][0]["id"].as_i64().unwrap();

    // The link is cut: store calls fail (GET /metrics, which reads the store, answers 500).
    proxy.set(Mode::Cut);
    let start = Instant::now();
    loop {
        let (code, _) = d.get("/metrics").await;
        if code == 500 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the outage was never seen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few health sweeps on a store that does not answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(alive(pid), "the job keeps running through the outage");
    assert!(
        store_events(&direct).await.is_empty(),
        "nothing recorded while down"
    );

    proxy.set(Mode::Pass);
    let events = episode(&direct).await;
    assert_eq!(events[0].0, "store_unreachable", "{events:?}");
    assert!(events[0].1.contains("did not answer from"), "{events:?}");
    assert_eq!(events[1].0, "store_reachable", "{events:?}");
    assert_eq!(events.len(), 2, "one episode: {events:?}");
    let j = d.running("sleeper", Duration::from_secs(30)).await;
    assert_eq!(
        j["runs"][0]["id"].as_i64(),
        Some(run),
        "the same run: {j:#}"
    );
    assert!(alive(pid));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_link_to_postgres_fails_calls_in_time_and_stops_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, direct, mut d) = behind_a_proxy(dir.path(), "frozen").await;
    let j = d.running("sleeper", Duration::from_secs(30)).await;
    let pid: u32 = j["runs"][0]["engine_id"].as_str().unwrap().parse().unwrap();

    // Bytes held both ways: connections stay open, nothing answers. A call waits at most the
    // store's 15 s statement limit, then fails (its connection dropped).
    proxy.set(Mode::Freeze);
    let frozen = Instant::now();
    let (code, _) = d.get("/metrics").await;
    let waited = frozen.elapsed();
    assert_eq!(code, 500, "a store read on a frozen link fails");
    assert!(
        waited < Duration::from_secs(40),
        "the call failed in time: {waited:?}"
    );
    assert!(alive(pid), "the job keeps running while the link is frozen");
    assert!(
        d.handle.as_ref().is_some_and(|h| !h.is_finished()),
        "the daemon runs on"
    );

    proxy.set(Mode::Pass);
    let events = episode(&direct).await;
    assert_eq!(events[0].0, "store_unreachable", "{events:?}");
    // The first call to fail is one waiting on a frozen connection ("did not answer within"),
    // or, on a busy machine, one that found every connection held by such calls ("stayed
    // busy"): both say the link stopped answering.
    assert!(
        events[0].1.contains("did not answer within") || events[0].1.contains("stayed busy"),
        "{events:?}"
    );
    assert_eq!(events[1].0, "store_reachable", "{events:?}");
    d.running("sleeper", Duration::from_secs(30)).await;
    assert!(alive(pid));
    d.stop().await;
}

/// A store target for `url` (a schema's URL from [`schema`]), with no TLS.
fn target(url: &str) -> jobkeeper::store::postgres::Target {
    jobkeeper::store::postgres::Target {
        url: url.to_string(),
        password: None,
        tls: jobkeeper::store::postgres::TlsMode::Disable,
        pool: 2,
    }
}

/// The schema version recorded in `url`'s schema.
async fn schema_version(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT version FROM jobkeeper_schema", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one schema version row");
    rows[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_opening_one_empty_postgres_at_once_migrate_it_once() {
    // Both opens connect, then migrate at the same moment. Without the advisory lock the second
    // migration fails ("relation ... already exists" or a duplicate key in the catalog) or
    // records the version twice. The opens here call the store directly: a daemon retries a
    // failed open, which would hide the race.
    let mut latest = None;
    for round in 0..10 {
        let url = schema(&format!("migrate_once_{round}"), None).await;
        let t = target(&url);
        let (a, b) = tokio::join!(
            jobkeeper::store::Store::open_postgres(&t),
            jobkeeper::store::Store::open_postgres(&t)
        );
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("round {round}, first open: {e}")),
            b.unwrap_or_else(|e| panic!("round {round}, second open: {e}")),
        );
        let version = schema_version(&url).await;
        assert_eq!(*latest.get_or_insert(version), version, "round {round}");
        // Both work on the one schema: what one writes, the other reads.
        let kind = jobkeeper::event::EventKind::RepoReachable;
        a.event(&jobkeeper::store::NewEvent::new(kind, "from a"))
            .await
            .unwrap();
        let seen = b.events(None, 10).await.unwrap();
        assert!(seen.iter().any(|e| e.message == "from a"), "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_refuses_a_postgres_schema_newer_than_it_knows_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let url = schema("too_new", None).await;
    drop(
        jobkeeper::store::Store::open_postgres(&target(&url))
            .await
            .unwrap(),
    );
    let known = schema_version(&url).await;
    let newer = known + 1;
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .execute("UPDATE jobkeeper_schema SET version = $1", &[&newer])
            .await
            .unwrap();
    }
    let git = Git::new(root, "config");
    git.write("jobs/sleeper.yaml", &sleeper(600));
    git.commit_push("a sleeper");
    let mut d = PgDaemon::start(root, &config(root, &git, &store_block(&url))).await;
    // Refused at once, not tried again with a backoff.
    let ended = tokio::time::timeout(Duration::from_secs(30), d.handle.take().unwrap())
        .await
        .expect("the daemon refuses the store within 30 s")
        .unwrap();
    let err = ended.expect_err("a schema newer than the daemon knows is refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {newer}"))
            && text.contains(&format!("({known})"))
            && text.contains("upgrade jobkeeper"),
        "the error names both versions: {text}"
    );
    assert_eq!(
        schema_version(&url).await,
        newer,
        "the schema is left as it was"
    );
}
