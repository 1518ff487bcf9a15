//! SQL jobs end to end against real Apache Flink session clusters (2.3.0, and 1.20.3 for the
//! tests run on each version): the daemon builds the SQL runner from its source (with the host's
//! JDK), submits the statements through `/jars/{id}/run` as one Flink job with the job's
//! parallelism and conf, upgrades through savepoints, redeploys when only the `.sql` file
//! changed, reports a statement Flink refuses at its place in the job file (a secret in it
//! masked everywhere), gives Flink's reason when the new SQL's state no longer matches, and puts
//! a project's UDF jar on the job's classpath.
//!
//! Needs `JOBKEEPER_FLINK_URL`, `JOBKEEPER_FLINK_LIB` and `JOBKEEPER_FLINK_1_20_URL` as
//! tests/flink.rs does (scripts/test.sh exports them). Every test cancels the Flink jobs it
//! started, even when it fails.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// Flink's name and state of a job (`None` when the cluster does not know it).
async fn flink_job(url: &str, jid: &str) -> Option<(String, String)> {
    let o = rest(url, "/jobs/overview").await;
    o["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["jid"] == jid)
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["state"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// A config repo and a daemon config with a `flink` env on `url`.
fn setup(root: &Path, url: &str) -> (Git, String, StopRunsOnDrop) {
    let git = Git::new(root, "config");
    let extra = format!(
        "  flink: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\nhealth: {{interval: 1s}}\n",
        root.join("savepoints").display()
    );
    let cfg = config(root, &git, &extra);
    let cleanup = StopRunsOnDrop {
        db: root.join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    (git, cfg, cleanup)
}

/// datagen → blackhole at `rate` rows per second, reading from `source`.
fn clicks_sql(rate: u32, source: &str) -> String {
    format!(
        "-- clicks; counted per user\n\
         CREATE TABLE clicks (user_id INT, url STRING) WITH (\n  'connector' = 'datagen',\n  \
         'rows-per-second' = '{rate}',\n  'fields.user_id.min' = '1',\n  'fields.user_id.max' = '9'\n);\n\
         CREATE TABLE totals (user_id INT, n BIGINT) WITH ('connector' = 'blackhole');\n\
         INSERT INTO totals SELECT user_id, COUNT(*) FROM {source} GROUP BY user_id;\n"
    )
}

/// A SQL job file with `sql` as its `sql_file` or inline.
fn sql_job(body: &str) -> String {
    format!(
        "env: flink\n{body}params:\n  parallelism: 1\n  conf: {{execution.checkpointing.interval: \"500ms\"}}\n"
    )
}

/// The inline form of `sql`.
fn inline(sql: &str) -> String {
    let indented: String = sql.lines().map(|l| format!("  {l}\n")).collect();
    format!("sql: |\n{indented}")
}

/// Runs the test function `$name(url)` once per Flink version, as `$name::flink_2_3` (on
/// `JOBKEEPER_FLINK_URL`) and `$name::flink_1_20` (on `JOBKEEPER_FLINK_1_20_URL`).
macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_2_3() {
                $name(&need("JOBKEEPER_FLINK_URL")).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_1_20() {
                $name(&need("JOBKEEPER_FLINK_1_20_URL")).await
            }
        }
    };
}

/// [`clicks_sql`] with a second INSERT, of the raw clicks into a table of their own.
fn two_inserts(rate: u32) -> String {
    format!(
        "{}CREATE TABLE raw_clicks (user_id INT, url STRING) WITH ('connector' = 'blackhole');\n\
         INSERT INTO raw_clicks SELECT user_id, url FROM clicks;\n",
        clicks_sql(rate, "clicks")
    )
}

/// The job file of the `sql_file` test: parallelism 2, checkpoints every 700 ms.
const TWO_INSERTS_JOB: &str = "env: flink\nsql_file: clicks.sql\nparams:\n  parallelism: 2\n  \
conf: {execution.checkpointing.interval: \"700ms\"}\n";

/// Checks on the cluster that the Flink job `jid` is the whole SQL job: the only live job
/// named `clicks`, both INSERTs' sinks in it, every vertex at `params.parallelism`, and
/// `params.conf`'s checkpoint interval in force.
async fn one_job_with_params(url: &str, jid: &str) {
    let overview = rest(url, "/jobs/overview").await;
    let live: Vec<&Value> = overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == "clicks" && j["state"] == "RUNNING")
        .collect();
    assert_eq!(live.len(), 1, "one Flink job runs both INSERTs: {overview}");
    assert_eq!(live[0]["jid"], jid);
    let job = rest(url, &format!("/jobs/{jid}")).await;
    let vertices = job["vertices"].as_array().unwrap();
    let names: Vec<&str> = vertices.iter().filter_map(|v| v["name"].as_str()).collect();
    // A sink is a vertex's operator `<table>[<id>]: Writer` (Flink 1.20 and 2.3 alike).
    let mut sinks: Vec<&str> = names
        .iter()
        .filter_map(|n| n.rsplit(" -> ").next())
        .filter(|op| op.ends_with("]: Writer"))
        .filter_map(|op| op.split('[').next())
        .collect();
    sinks.sort_unstable();
    assert_eq!(
        sinks,
        ["raw_clicks", "totals"],
        "both sinks in the job: {names:#?}"
    );
    for v in vertices {
        assert_eq!(v["parallelism"], 2, "params.parallelism: {v}");
    }
    let checkpoints = rest(url, &format!("/jobs/{jid}/checkpoints/config")).await;
    assert_eq!(checkpoints["interval"], 700, "params.conf: {checkpoints}");
}

on_each_version!(
    a_sql_file_job_runs_and_a_change_to_its_sql_file_alone_upgrades_it_from_a_savepoint
);

async fn a_sql_file_job_runs_and_a_change_to_its_sql_file_alone_upgrades_it_from_a_savepoint(
    url: &str,
) {
    let url = url.to_string();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &url);
    git.write("jobs/clicks.sql", &two_inserts(5));
    git.write("jobs/clicks.yaml", TWO_INSERTS_JOB);
    git.commit_push("a SQL job");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "clicks", &[]).await;
    let (name, _) = flink_job(&url, &jid1).await.unwrap();
    assert_eq!(name, "clicks", "the Flink job is named after the job");
    one_job_with_params(&url, &jid1).await;

    // Only the .sql file changes (a connector option): the job is upgraded through a savepoint.
    git.write("jobs/clicks.sql", &two_inserts(7));
    let before = git.git(&["rev-parse", "HEAD"]).trim().to_string();
    let after = git.commit_push("faster clicks");
    let (_, jid2) = running(&d, &url, "clicks", std::slice::from_ref(&jid1)).await;
    assert_eq!(
        flink_job(&url, &jid1).await.map(|j| j.1).as_deref(),
        Some("FINISHED")
    );
    let restored = restored_from(&url, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    one_job_with_params(&url, &jid2).await;
    wait_for("deployed: sql_file changed", LIMIT, || {
        d.events("clicks")
            .iter()
            .any(|e| e.kind == "deployed" && e.message.starts_with("sql_file changed"))
    })
    .await;

    // `plan` says the same for the same two commits.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["plan", "--repo"])
        .arg(&git.work)
        .args(["--from", &before, "--to", &after])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("clicks") && text.contains("sql_file changed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A secret's value, shaped to be a part of a table name.
const SECRET: &str = "Zebra_quartz_7f3a91_do_not_leak";

/// Everything the daemons of this test binary log, debug lines included, for a search for a
/// secret: the records the binary prints, captured in-process.
fn daemon_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        buf
    })
    .clone()
}

/// A writer appending to a shared buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_flink_refuses_is_deploy_failed_at_its_place_and_the_running_version_stays() {
    let url = need("JOBKEEPER_FLINK_URL");
    let log = daemon_log();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &url);
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("pw"), format!("{SECRET}\n")).unwrap();
    let cfg = format!("secrets_dir: {}\n{cfg}", secrets.display());
    git.write(
        "jobs/inline.yaml",
        &sql_job(&inline(&clicks_sql(5, "clicks"))),
    );
    git.commit_push("an inline SQL job");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "inline", &[]).await;

    // A missing table, named with a secret: Flink's message quotes the name.
    git.write(
        "jobs/inline.yaml",
        &sql_job(&inline(&clicks_sql(5, "nope_${secret:pw}"))),
    );
    git.commit_push("a missing table");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("inline", "deploy_failed")
    })
    .await;
    let e = d
        .events("inline")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(e.message.contains("Object 'nope_***' not found"), "{e:?}");
    // The INSERT is file line 11, indented 2; `nope` is at its column 50.
    assert!(
        e.message.contains("jobs/inline.yaml:11:52: "),
        "placed in the job file: {e:?}"
    );
    // The previous version runs again, from the savepoint of its stop.
    let (_, jid2) = running(&d, &url, "inline", std::slice::from_ref(&jid1)).await;
    assert_eq!(restored_from(&url, &jid2).await["is_savepoint"], true);

    // The secret is in none of: the API's job (its events), the job page, each run's log
    // (served and on disk), the daemon's log.
    let mut seen = Vec::new();
    for path in ["/api/v1/jobs/inline", "/jobs/inline"] {
        let (code, body) = d.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        seen.push((path.to_string(), body));
    }
    let (_, api) = d.get("/api/v1/jobs/inline").await;
    assert!(api.contains("Object 'nope_***' not found"), "{api}");
    for run in d.runs("inline") {
        let path = format!("/api/v1/jobs/inline/logs?run={}", run.id);
        let (code, body) = d.get(&path).await;
        assert_eq!(code, 200, "{path}: {body}");
        seen.push((path, body));
        let file = std::fs::read_to_string(&run.log_path).unwrap_or_default();
        seen.push((run.log_path.clone(), file));
    }
    let refused = seen
        .iter()
        .any(|(_, text)| text.contains("refused the job"));
    assert!(refused, "a run log holds Flink's refusal: {seen:#?}");
    let daemon = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        daemon.contains("Object 'nope_***' not found"),
        "the daemon's log was captured: {daemon}"
    );
    seen.push(("the daemon's log".into(), daemon));
    for (place, text) in &seen {
        assert!(!text.contains(SECRET), "the secret is in {place}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_job_calls_a_udf_from_its_project_jar() {
    let url = need("JOBKEEPER_FLINK_URL");
    let lib = need("JOBKEEPER_FLINK_LIB");
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &url);
    git.write(
        "projects/udf/src/example/Shout.java",
        "package example;\n\
         public class Shout extends org.apache.flink.table.functions.ScalarFunction {\n  \
         public String eval(String s) { return s == null ? null : s.toUpperCase() + \"!\"; }\n}\n",
    );
    let sql = "CREATE FUNCTION shout AS 'example.Shout';\n\
               CREATE TABLE words (w STRING) WITH ('connector' = 'datagen', 'rows-per-second' = '5');\n\
               CREATE TABLE loud (w STRING) WITH ('connector' = 'blackhole');\n\
               INSERT INTO loud SELECT shout(w) FROM words;\n";
    let job = format!(
        "project:\n  repo: .\n  dir: projects/udf\n  build: mkdir -p out/classes && javac --release 17 -cp \"{lib}/*\" -d out/classes src/example/Shout.java && jar cf out/udf.jar -C out/classes .\n  artifact: out/udf.jar\n{}",
        sql_job(&inline(sql))
    );
    git.write("jobs/udf.yaml", &job);
    git.commit_push("a SQL job with a UDF");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid) = running(&d, &url, "udf", &[]).await;
    // Still running a moment later: the function was found and runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        flink_job(&url, &jid).await.map(|j| j.1).as_deref(),
        Some("RUNNING"),
        "{:#?}",
        d.events("udf")
    );
}

on_each_version!(
    sql_whose_state_no_longer_matches_is_deploy_failed_and_the_previous_version_resumes
);

async fn sql_whose_state_no_longer_matches_is_deploy_failed_and_the_previous_version_resumes(
    url: &str,
) {
    let url = url.to_string();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg, _cleanup) = setup(tmp.path(), &url);
    git.write(
        "jobs/state.yaml",
        &sql_job(&inline(&clicks_sql(5, "clicks"))),
    );
    git.commit_push("v1");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "state", &[]).await;

    // Grouped by another key, same operators: Flink takes the job, then cannot read the keyed
    // state of the savepoint back and fails it while it starts. (A change of operators is
    // refused by the run request itself, the same way as a refused statement.)
    let v2 = clicks_sql(5, "clicks").replace(
        "SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id",
        "SELECT CAST(COUNT(DISTINCT url) AS INT), MAX(user_id) FROM clicks WHERE user_id > 2 GROUP BY url",
    );
    git.write("jobs/state.yaml", &sql_job(&inline(&v2)));
    git.commit_push("v2: another key");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("state", "deploy_failed")
    })
    .await;
    let e = d
        .events("state")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(e.message.contains("could not start from"), "{e:?}");
    // Flink's reason, read from the failed job's execution result.
    assert!(
        e.message.contains("StateMigrationException"),
        "Flink's reason: {e:?}"
    );
    // v1 runs again, from the savepoint its stop took; nothing was retried or given up.
    let (_, jid3) = running(&d, &url, "state", std::slice::from_ref(&jid1)).await;
    let restored = restored_from(&url, &jid3).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    let sps = d.store.savepoints("state", 10).unwrap();
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps.last().unwrap().location.as_str()),
        "{restored} {sps:?}"
    );
    d.sweeps_pass(3, LIMIT).await;
    assert!(!d.has_event("state", "gave_up"), "{:#?}", d.events("state"));
    let runs = d.runs("state");
    assert_eq!(runs.len(), 3, "v1, the refused v2, v1 again: {runs:#?}");
}
