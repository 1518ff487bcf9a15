//! The flink engine end to end against real Apache Flink session clusters, 2.3.0 and 1.20.3,
//! with a small stateful job (example-repo/projects/flink-counter) built from its Java source by
//! the daemon against the lib folder of the cluster under test.
//!
//! `scripts/test.sh` starts both clusters with `scripts/flink.sh` and exports
//! `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB` (2.3.0), `JOBKEEPER_FLINK_1_20_URL` and
//! `JOBKEEPER_FLINK_1_20_LIB` (1.20.3); without them these tests fail (they do not skip). Each
//! test that is not about one version is a function of the [`Cluster`] under test, run once per
//! version by [`on_each_version!`]. The outage test starts and stops a cluster of its own. Every
//! test cancels the Flink jobs it started, even when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

/// A Flink cluster under test.
#[derive(Debug, Clone)]
struct Cluster {
    /// Its REST URL.
    url: String,
    /// Its `lib/` folder, to build jobs against.
    lib: String,
    /// Its Flink version, as `scripts/flink.sh` takes it.
    version: &'static str,
}

impl Cluster {
    /// The Flink 2.3.0 cluster of scripts/test.sh.
    fn v2_3() -> Cluster {
        Cluster {
            url: need("JOBKEEPER_FLINK_URL"),
            lib: need("JOBKEEPER_FLINK_LIB"),
            version: "2.3.0",
        }
    }

    /// The Flink 1.20.3 cluster of scripts/test.sh.
    fn v1_20() -> Cluster {
        Cluster {
            url: need("JOBKEEPER_FLINK_1_20_URL"),
            lib: need("JOBKEEPER_FLINK_1_20_LIB"),
            version: "1.20.3",
        }
    }
}

/// Runs the test function `$name(&Cluster)` once per Flink version, as `$name::flink_2_3` and
/// `$name::flink_1_20`.
macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_2_3() {
                super::$name(&super::Cluster::v2_3()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_1_20() {
                super::$name(&super::Cluster::v1_20()).await
            }
        }
    };
}

/// Cancels, on drop, every Flink job the test's store (under `root`) knows.
fn cleanup(url: &str, root: &Path) -> StopRunsOnDrop {
    StopRunsOnDrop {
        db: root.join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    }
}

/// A config repo holding the flink-counter project (copied from example-repo) and a daemon
/// config with a `flink` env on `url`.
fn setup(root: &Path, url: &str) -> (Git, String) {
    counter_repo(root, url, "", "")
}

/// A flink-counter job file, built against `lib`.
fn counter(lib: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{}\"\n  artifact: out/flink-counter.jar\n\
         env: flink\nparams:\n  main_class: example.Counter\n  args: [{}]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"500ms\"}}\n{extra}",
        lib,
        args.join(", ")
    )
}

on_each_version!(
    deploy_then_a_savepoint_upgrade_restores_the_new_run_and_removal_keeps_a_savepoint
);
async fn deploy_then_a_savepoint_upgrade_restores_the_new_run_and_removal_keeps_a_savepoint(
    c: &Cluster,
) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write("jobs/counter.yaml", &counter(&c.lib, &["--tag", "v1"], ""));
    git.commit_push("a flink job");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &url, "counter", &[]).await;
    assert_eq!(d.job("counter").unwrap().state, "running");
    // The submission identifies itself to Flink: the job and the run in its job config.
    let config = rest(&url, &format!("/jobs/{jid1}/config")).await;
    let user = &config["execution-config"]["user-config"];
    assert_eq!(user["jobkeeper.job"], "counter", "{config}");
    assert_eq!(user["jobkeeper.run"], run1.to_string(), "{config}");

    // Change the args: stop with a savepoint, start the new version from it.
    git.write("jobs/counter.yaml", &counter(&c.lib, &["--tag", "v2"], ""));
    git.commit_push("new args");
    let (run2, jid2) = running(&d, &url, "counter", std::slice::from_ref(&jid1)).await;
    assert_ne!(run1, run2);
    assert_eq!(flink_state(&url, &jid1).await.as_deref(), Some("FINISHED"));
    let sps = d.store.savepoints("counter", 10).unwrap();
    assert_eq!(sps.len(), 1, "{sps:?}");
    assert_eq!(
        (sps[0].kind.as_str(), sps[0].run_id),
        ("savepoint", Some(run1))
    );
    // The savepoint history is in the API.
    let (code, body) = d.get("/api/v1/jobs/counter").await;
    assert_eq!(code, 200);
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        job["savepoints"][0]["location"],
        sps[0].location.as_str(),
        "{body}"
    );
    let restored = restored_from(&url, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str()),
        "{restored}"
    );
    assert!(
        d.events("counter")
            .iter()
            .any(|e| e.kind == "stopped" && e.message.contains(&sps[0].location)),
        "the upgrade's stop names its savepoint"
    );

    // Removal: stopped with a savepoint, history kept.
    git.remove("jobs/counter.yaml");
    git.commit_push("remove it");
    wait_for("counter stopped", LIMIT, || {
        d.job("counter").is_some_and(|j| j.state == "stopped")
    })
    .await;
    assert_eq!(flink_state(&url, &jid2).await.as_deref(), Some("FINISHED"));
    let sps = d.store.savepoints("counter", 10).unwrap();
    assert_eq!(sps.len(), 2, "{sps:?}");
    assert_eq!(
        (sps[0].kind.as_str(), sps[0].run_id),
        ("savepoint", Some(run2))
    );
    assert!(d.live_runs("counter").is_empty());
}

on_each_version!(suspend_stops_with_a_savepoint_and_resuming_starts_from_it);
async fn suspend_stops_with_a_savepoint_and_resuming_starts_from_it(c: &Cluster) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write("jobs/pause.yaml", &counter(&c.lib, &["--tag", "p"], ""));
    git.commit_push("a flink job");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &url, "pause", &[]).await;

    git.write(
        "jobs/pause.yaml",
        &counter(&c.lib, &["--tag", "p"], "suspend: true\n"),
    );
    git.commit_push("suspend it");
    wait_for("suspended", LIMIT, || {
        d.job("pause").is_some_and(|j| j.state == "suspended")
    })
    .await;
    assert_eq!(flink_state(&url, &jid1).await.as_deref(), Some("FINISHED"));
    let sps = d.store.savepoints("pause", 10).unwrap();
    assert_eq!(sps.len(), 1, "{sps:?}");
    assert_eq!(
        (sps[0].kind.as_str(), sps[0].run_id),
        ("savepoint", Some(run1))
    );

    git.write("jobs/pause.yaml", &counter(&c.lib, &["--tag", "p"], ""));
    git.commit_push("resume it");
    let (_, jid2) = running(&d, &url, "pause", std::slice::from_ref(&jid1)).await;
    let restored = restored_from(&url, &jid2).await;
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str()),
        "{restored}"
    );
}

/// The trial's finding on Flink: restart attempts started again at 1 after a daemon restart
/// (RESTARTS reached 6 against `attempts: 3`). The attempts spent before it stay spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_attempts_spent_before_a_daemon_restart_stay_spent_on_flink() {
    let c = Cluster::v2_3();
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    let restart = "restart: {attempts: 2, window: 1h, backoff: 1s, max_backoff: 1s}\n";
    git.write(
        "jobs/crash.yaml",
        &counter(
            &c.lib,
            &["--mode", "fail", "--failAfter", "60", "--rate", "20"],
            restart,
        ),
    );
    git.commit_push("a job that throws");
    let attempts = |d: &Daemon| -> Vec<(u32, u32)> {
        let mut a: Vec<(u32, u32)> = d
            .events("crash")
            .iter()
            .filter(|e| e.kind == "restarted")
            .filter_map(|e| e.attempt.map(|a| (a.n, a.of)))
            .collect();
        a.reverse();
        a
    };
    let mut d = start(tmp.path(), &cfg).await;
    wait_for("the first restart", LIMIT, || !attempts(&d).is_empty()).await;
    d.stop().await;

    // The next daemon adopts the restarted run; when it fails, one attempt is left, not two.
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", Duration::from_secs(150), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    assert_eq!(attempts(&d), [(1, 2), (2, 2)], "{:#?}", d.events("crash"));
    let runs = d.runs("crash");
    assert_eq!(runs.len(), 3, "the first run and 2 restarts: {runs:#?}");
    assert_eq!(d.store.restart_counts().unwrap().get("crash"), Some(&2));
}

on_each_version!(a_failing_job_restarts_from_its_checkpoint_then_gives_up_with_the_flink_reason);
async fn a_failing_job_restarts_from_its_checkpoint_then_gives_up_with_the_flink_reason(
    c: &Cluster,
) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    let restart = "restart: {attempts: 2, window: 1h, backoff: 1s, max_backoff: 1s}\n";
    git.write(
        "jobs/crash.yaml",
        &counter(
            &c.lib,
            &["--mode", "fail", "--failAfter", "60", "--rate", "20"],
            restart,
        ),
    );
    git.commit_push("a job that throws");
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", Duration::from_secs(150), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("crash");
    assert_eq!(runs.len(), 3, "the first run and 2 restarts: {runs:#?}");
    assert!(runs.iter().all(|r| r.state == "failed"), "{runs:#?}");
    let reason = runs[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Caused by:") && reason.contains("failing on purpose after 60 records"),
        "{reason}"
    );
    // Shown on one line (the pages, a log line), the reason still names the exception and its
    // root cause: never "FAILED:" with nothing after it.
    let first = reason.lines().next().unwrap_or_default();
    assert!(
        first.contains("FAILED: org.apache.flink.runtime.JobException"),
        "{reason}"
    );
    let (_, page) = d.get("/jobs/crash").await;
    assert!(
        page.contains("failing on purpose after 60 records"),
        "the job page shows the root cause: {page}"
    );
    let gave_up = d
        .events("crash")
        .into_iter()
        .find(|e| e.kind == "gave_up")
        .unwrap();
    assert!(
        gave_up.message.contains("failing on purpose")
            && gave_up.message.contains("Caused by:")
            && gave_up.message.contains("JobException"),
        "{gave_up:?}"
    );

    // Each restart started from the checkpoint the failed run left.
    let cps = d.store.savepoints("crash", 10).unwrap();
    assert_eq!(cps.len(), 3, "one checkpoint per failed run: {cps:#?}");
    assert!(cps.iter().all(|c| c.kind == "checkpoint"));
    let first_cp = cps
        .iter()
        .find(|c| c.run_id == Some(runs[2].id))
        .unwrap()
        .location
        .clone();
    let restored = restored_from(&url, &engine_id(&runs[1])).await;
    // (Flink counts a checkpoint given as `savepointPath` as a savepoint: the path tells.)
    assert_eq!(
        restored["external_path"].as_str(),
        Some(first_cp.as_str()),
        "{restored}"
    );
}

/// How many checkpoints of job `jid` completed (`counts.completed` of its checkpoint stats).
async fn completed_checkpoints(url: &str, jid: &str) -> u64 {
    rest(url, &format!("/jobs/{jid}/checkpoints")).await["counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until job `jid` completed `n` checkpoints, then cancels it as Flink's UI does
/// (`PATCH /jobs/{id}?mode=cancel`).
async fn cancel_after_checkpoints(url: &str, jid: &str, n: u64) {
    poll_until(&format!("{n} checkpoints of {jid}"), async || {
        completed_checkpoints(url, jid).await >= n
    })
    .await;
    let answer = http()
        .patch(format!("{url}/jobs/{jid}?mode=cancel"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
}

/// The newest event of `kind` of `job` about run `run`, once recorded.
async fn event_of(d: &Daemon, job: &str, kind: &str, run: i64) -> jobkeeper::store::EventRow {
    let find = || {
        d.events(job)
            .into_iter()
            .find(|e| e.kind == kind && e.run_id == Some(run))
    };
    wait_for(&format!("a {kind} event of {job} run {run}"), LIMIT, || {
        find().is_some()
    })
    .await;
    find().unwrap()
}

on_each_version!(a_job_cancelled_in_flink_s_ui_comes_back_from_its_newest_checkpoint);
async fn a_job_cancelled_in_flink_s_ui_comes_back_from_its_newest_checkpoint(c: &Cluster) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    let restart = "restart: {attempts: 5, window: 1h, backoff: 1s, max_backoff: 1s}\n";
    git.write(
        "jobs/keeper.yaml",
        &counter(&c.lib, &["--tag", "k1"], restart),
    );
    // The same job telling Flink to delete its checkpoints when cancelled (`params.conf` wins).
    let deleting = counter(&c.lib, &["--tag", "d1"], restart).replace(
        "conf: {",
        "conf: {execution.checkpointing.externalized-checkpoint-retention: DELETE_ON_CANCELLATION, ",
    );
    git.write("jobs/deleter.yaml", &deleting);
    git.commit_push("two flink jobs");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &url, "keeper", &[]).await;
    let (drun1, djid1) = running(&d, &url, "deleter", &[]).await;
    let started = event_of(&d, "keeper", "deployed", run1).await;
    assert!(
        started
            .message
            .contains("started with no state: its first run"),
        "{started:?}"
    );

    // A job never upgraded, cancelled in Flink's UI after some checkpoints: it comes back from
    // its newest checkpoint, and says so.
    cancel_after_checkpoints(&url, &jid1, 3).await;
    let (run2, jid2) = running(&d, &url, "keeper", std::slice::from_ref(&jid1)).await;
    let restored = restored_from(&url, &jid2).await;
    let path = restored["external_path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(path.contains(&jid1) && path.contains("/chk-"), "{restored}");
    let chk = path.rsplit('/').next().unwrap().to_string();
    let restarted = event_of(&d, "keeper", "restarted", run2).await;
    assert!(
        restarted
            .message
            .contains(&format!("restored from {chk}, ")),
        "{restarted:?}"
    );
    assert!(
        !d.has_event("keeper", "started_empty"),
        "{:#?}",
        d.events("keeper")
    );

    // Upgraded (a savepoint), then cancelled after newer checkpoints: the newer checkpoint wins
    // over the older savepoint.
    git.write(
        "jobs/keeper.yaml",
        &counter(&c.lib, &["--tag", "k2"], restart),
    );
    git.commit_push("new args");
    let (run3, jid3) = running(&d, &url, "keeper", std::slice::from_ref(&jid2)).await;
    let sp = d.store.savepoints("keeper", 1).unwrap().remove(0);
    assert_eq!((sp.kind.as_str(), sp.run_id), ("savepoint", Some(run2)));
    let sp_name = sp
        .location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let deployed = event_of(&d, "keeper", "deployed", run3).await;
    assert!(
        deployed
            .message
            .contains(&format!("restored from {sp_name}, ")),
        "{deployed:?}"
    );
    cancel_after_checkpoints(&url, &jid3, 3).await;
    let (run4, jid4) = running(&d, &url, "keeper", std::slice::from_ref(&jid3)).await;
    let restored = restored_from(&url, &jid4).await;
    let path = restored["external_path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        path.contains(&jid3) && path.contains("/chk-"),
        "the newest checkpoint, not the savepoint {}: {restored}",
        sp.location
    );
    let restarted = event_of(&d, "keeper", "restarted", run4).await;
    assert!(
        restarted.message.contains("restored from chk-"),
        "{restarted:?}"
    );

    // The job whose file asks Flink to delete its checkpoints on cancellation starts empty:
    // `started_empty` says why.
    cancel_after_checkpoints(&url, &djid1, 2).await;
    let (drun2, _) = running(&d, &url, "deleter", std::slice::from_ref(&djid1)).await;
    let empty = event_of(&d, "deleter", "started_empty", drun2).await;
    assert!(
        empty
            .message
            .contains("its checkpoints were deleted with it"),
        "{empty:?}"
    );
    let restarted = event_of(&d, "deleter", "restarted", drun2).await;
    assert!(
        restarted.message.contains("started with no state"),
        "{restarted:?}"
    );
    let _ = drun1;
}

on_each_version!(a_run_the_cluster_refuses_is_deploy_failed_with_its_error_text);
async fn a_run_the_cluster_refuses_is_deploy_failed_with_its_error_text(c: &Cluster) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write(
        "jobs/bad.yaml",
        &counter(&c.lib, &["--mode", "explode"], ""),
    );
    git.commit_push("main() throws");
    let d = start(tmp.path(), &cfg).await;
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("bad", "deploy_failed")
    })
    .await;
    let e = d
        .events("bad")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(e.message.contains("--mode must be run or fail"), "{e:?}");
    let overview = rest(&url, "/jobs/overview").await;
    let ours = d.runs("bad").iter().map(engine_id).collect::<Vec<_>>();
    assert!(
        !overview["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| ours.iter().any(|o| j["jid"] == o.as_str())),
        "a refused run creates no job"
    );
}

on_each_version!(a_daemon_restart_adopts_the_running_job_and_submits_nothing);
async fn a_daemon_restart_adopts_the_running_job_and_submits_nothing(c: &Cluster) {
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write("jobs/adopt.yaml", &counter(&c.lib, &["--tag", "adopt"], ""));
    git.commit_push("a flink job");
    let mut d = start(tmp.path(), &cfg).await;
    let (run, jid) = running(&d, &url, "adopt", &[]).await;
    d.stop().await;
    assert_eq!(
        flink_state(&url, &jid).await.as_deref(),
        Some("RUNNING"),
        "a daemon stop leaves cluster jobs running"
    );

    let d = start(tmp.path(), &cfg).await;
    wait_for("adopted", LIMIT, || d.has_event("adopt", "adopted")).await;
    d.sweeps_pass(3, LIMIT).await;
    let runs = d.runs("adopt");
    assert_eq!(runs.len(), 1, "no new run: {runs:#?}");
    assert_eq!((runs[0].id, runs[0].state.as_str()), (run, "running"));
    assert_eq!(flink_state(&url, &jid).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.job("adopt").unwrap().state, "running");

    // The adopted run is the job's live run: a change upgrades it with a savepoint.
    git.write(
        "jobs/adopt.yaml",
        &counter(&c.lib, &["--tag", "adopt2"], ""),
    );
    git.commit_push("new args");
    let (_, jid2) = running(&d, &url, "adopt", std::slice::from_ref(&jid)).await;
    assert_eq!(flink_state(&url, &jid).await.as_deref(), Some("FINISHED"));
    assert_eq!(restored_from(&url, &jid2).await["is_savepoint"], true);
}

/// `jobkeeper logs` of a failed Flink run prints the daemon's submit lines, then the job's
/// state, root cause and exception history from the cluster; once the cluster forgot the job
/// (a cluster of the test's own, keeping ended jobs 5 s: `jobstore.expiration-time`), it says
/// the engine no longer has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_flink_run_show_its_root_cause_and_history_then_say_when_flink_forgot_it() {
    let lib = need("JOBKEEPER_FLINK_LIB");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(["start", dir.to_str().unwrap(), &port.to_string(), "2.3.0"])
        .env("FLINK_EXTRA_CONF", "jobstore.expiration-time: 5")
        .output()
        .unwrap();
    let _stop = StopCluster(dir.clone());
    assert!(
        out.status.success(),
        "flink.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("http://127.0.0.1:{port}");
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    let restart = "restart: {attempts: 0, window: 1h, backoff: 1s, max_backoff: 1s}\n";
    git.write(
        "jobs/crash.yaml",
        &counter(
            &lib,
            &["--mode", "fail", "--failAfter", "40", "--rate", "20"],
            restart,
        ),
    );
    git.commit_push("a job that throws");
    let d = start(tmp.path(), &cfg).await;
    wait_for("gave_up", Duration::from_secs(150), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let jid = engine_id(&d.runs("crash")[0]);
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
    assert!(
        text.contains(&format!(
            "==== flink job {jid} on {url} ====\nstate: FAILED\n"
        )) && text.contains(
            "root cause: java.lang.IllegalStateException: failing on purpose after 40 records"
        ) && text.contains("exception history, newest first (")
            && text.contains("Caused by: java.lang.IllegalStateException: failing on purpose"),
        "{text}"
    );
    // Flink forgets the ended job 5 s after it ended.
    let start_wait = std::time::Instant::now();
    while reqwest::get(format!("{url}/jobs/{jid}"))
        .await
        .unwrap()
        .status()
        != 404
    {
        assert!(start_wait.elapsed() < LIMIT, "flink still has job {jid}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = logs();
    assert!(
        text.contains(&format!(
            "==== the engine no longer has this run's output: flink cluster {url} no longer has \
             job {jid}: it forgets a job `jobstore.expiration-time` after it ends"
        )),
        "{text}"
    );
}

/// Starts (or stops) a cluster of this test's own with scripts/flink.sh.
fn own_cluster(action: &str, dir: &Path, port: u16, version: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .arg(dir)
        .arg(port.to_string())
        .arg(version)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flink.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct StopCluster(PathBuf);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.0)
            .output();
    }
}

async fn overview_jobs(url: &str) -> Vec<(String, String, String)> {
    rest(url, "/jobs/overview").await["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| {
            let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
            (s("jid"), s("name"), s("state"))
        })
        .collect()
}

on_each_version!(a_cluster_outage_is_one_alert_no_failure_and_no_duplicate_submission);
async fn a_cluster_outage_is_one_alert_no_failure_and_no_duplicate_submission(c: &Cluster) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cluster = tmp.path().join("cluster");
    own_cluster("start", &cluster, port, c.version);
    let _stop = StopCluster(cluster.clone());
    let (git, cfg) = setup(tmp.path(), &url);
    git.write("jobs/svc.yaml", &counter(&c.lib, &["--tag", "before"], ""));
    git.commit_push("a flink job");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "svc", &[]).await;

    own_cluster("stop", &cluster, port, c.version);
    let unreachable = || {
        d.store
            .events(None, 500)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "engine_unreachable")
            .count()
    };
    wait_for("engine_unreachable", LIMIT, || unreachable() == 1).await;
    let cluster_row = |body: String| {
        let v: Value = serde_json::from_str(&body).unwrap();
        v["clusters"][0].clone()
    };
    let row = cluster_row(d.get("/api/v1/clusters").await.1);
    assert_eq!(row["reachable"], false, "{row}");
    // A change while the cluster is down waits for it: nothing is stopped or started.
    git.write("jobs/svc.yaml", &counter(&c.lib, &["--tag", "after"], ""));
    git.commit_push("new args while the cluster is down");
    wait_for("the change applied", LIMIT, || {
        d.job("svc").and_then(|j| j.desired_commit) == Some(git.git(&["rev-parse", "HEAD"]))
    })
    .await;
    d.sweeps_pass(4, LIMIT).await;
    assert_eq!(unreachable(), 1, "one engine_unreachable per outage");
    assert!(!d.has_event("svc", "failed"), "{:#?}", d.events("svc"));
    assert!(!d.has_event("svc", "gave_up"));

    own_cluster("start", &cluster, port, c.version);
    let (_, jid2) = running(&d, &url, "svc", std::slice::from_ref(&jid1)).await;
    d.sweeps_pass(3, LIMIT).await;
    let jobs = overview_jobs(&url).await;
    assert_eq!(jobs.len(), 1, "submitted once after the outage: {jobs:?}");
    assert_eq!(jobs[0].0, jid2);
    assert_eq!(jobs[0].1, "flink-counter after");
    assert_eq!(d.live_runs("svc").len(), 1);
    assert_eq!(unreachable(), 1);
    let reachable = d
        .store
        .events(None, 500)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "engine_reachable")
        .count();
    assert_eq!(reachable, 1);
    // The version is read again after the outage.
    let row = cluster_row(d.get("/api/v1/clusters").await.1);
    assert_eq!(
        (row["version"].as_str(), &row["reachable"]),
        (Some(c.version), &Value::Bool(true)),
        "{row}"
    );
}

/// A config repo like [`setup`]'s with two flink envs, `old` on `old_url` and `new` on `new_url`.
fn setup_two(root: &Path, old_url: &str, new_url: &str) -> (Git, String) {
    let (git, _) = setup(root, old_url);
    let sp = root.join("savepoints");
    let env = |name: &str, url: &str| {
        format!(
            "  {name}: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\n",
            sp.display()
        )
    };
    let extra = format!(
        "{}{}health: {{interval: 1s}}\n",
        env("old", old_url),
        env("new", new_url)
    );
    let cfg = config(root, &git, &extra);
    (git, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_env_moves_a_stateful_job_from_1_20_to_2_3_through_a_savepoint() {
    let (old, new) = (Cluster::v1_20(), Cluster::v2_3());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup_two(tmp.path(), &old.url, &new.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    // One jar for both: built against 1.20's lib, it runs on 2.3.
    let job = |env: &str| {
        counter(&old.lib, &["--tag", "move"], "").replace("env: flink\n", &format!("env: {env}\n"))
    };
    git.write("jobs/mover.yaml", &job("old"));
    git.commit_push("a flink job on 1.20");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &old.url, "mover", &[]).await;
    // The version of each cluster is in the list of clusters and with the job.
    let (code, body) = d.get("/api/v1/clusters").await;
    assert_eq!(code, 200, "{body}");
    let clusters: Value = serde_json::from_str(&body).unwrap();
    let version_of = |url: &str| {
        clusters["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["url"] == url)
            .map(|c| c["version"].clone())
    };
    assert_eq!(version_of(&old.url), Some(Value::from("1.20.3")), "{body}");
    assert_eq!(version_of(&new.url), Some(Value::from("2.3.0")), "{body}");
    let (_, body) = d.get("/api/v1/jobs/mover").await;
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["version"], "1.20.3", "{body}");
    let (_, page) = d.get("/").await;
    assert!(
        page.contains("id=\"clusters\"") && page.contains("flink 1.20.3"),
        "the page shows the clusters and the job's version: {page}"
    );

    git.write("jobs/mover.yaml", &job("new"));
    git.commit_push("move it to 2.3");
    // `plan` names the versions with the daemon config, the envs without it.
    let cfg_path = tmp.path().join("jobkeeper.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let plan = |with_config: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"));
        cmd.arg("plan").arg("--repo").arg(&git.work);
        cmd.args(["--from", "HEAD~1", "--to", "HEAD"]);
        if with_config {
            cmd.arg("--config").arg(&cfg_path);
        }
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    let text = plan(true);
    assert!(text.contains("moves from flink 1.20.3 to 2.3.0"), "{text}");
    let text = plan(false);
    assert!(text.contains("moves from env `old` to env `new`"), "{text}");
    let (_, jid2) = running(&d, &new.url, "mover", &[]).await;
    assert_ne!(jid1, jid2);
    let on_old = flink_state(&old.url, &jid1).await;
    assert_eq!(
        on_old.as_deref(),
        Some("FINISHED"),
        "stopped on 1.20 with a savepoint"
    );
    assert_eq!(
        named(&[&old.url], "flink-counter move", "RUNNING").await,
        0,
        "nothing of it runs on 1.20"
    );
    assert_restored_from_the_savepoint_of(&d, "mover", run1, &new.url, &jid2).await;
    let (_, body) = d.get("/api/v1/jobs/mover").await;
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["version"], "2.3.0", "{body}");
}

/// A cluster below 1.19 cannot be started with scripts/flink.sh (1.18 reads `flink-conf.yaml`,
/// not `config.yaml`), so this one is an HTTP listener answering `GET /config` as Flink 1.18.1
/// does, and `/jobs/overview` with no jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_older_than_1_19_is_refused_at_start_naming_its_version() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/config",
            get(|| async { axum::Json(serde_json::json!({"flink-version": "1.18.1"})) }),
        )
        .route(
            "/jobs/overview",
            get(|| async { axum::Json(serde_json::json!({"jobs": []})) }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let tmp = tempfile::tempdir().unwrap();
    let (_git, cfg) = setup(tmp.path(), &url);
    let path = tmp.path().join("config.yaml");
    std::fs::write(&path, &cfg).unwrap();
    let settings = jobkeeper::settings::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = jobkeeper::daemon::run(settings, listener, cancel.clone());
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the start is refused at once")
        .expect_err("a 1.18 cluster is refused");
    let text = err.to_string();
    assert!(
        text.contains("env flink") && text.contains("Flink 1.18.1") && text.contains("1.19"),
        "{text}"
    );
    server.abort();
}

/// A stateful move from 2.3 to 1.20: Flink 1.20 cannot read a savepoint taken on 2.3. `plan`
/// and `validate` with the daemon config refuse it before the merge; the daemon refuses it
/// before stopping anything, and the job keeps running where it is, on its first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_move_to_an_older_flink_is_refused_by_plan_validate_and_the_daemon_before_anything_stops()
 {
    let (old, new) = (Cluster::v2_3(), Cluster::v1_20());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup_two(tmp.path(), &old.url, &new.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    let job = |env: &str, extra: &str| {
        counter(&old.lib, &["--tag", "down"], extra)
            .replace("env: flink\n", &format!("env: {env}\n"))
    };
    git.write("jobs/down.yaml", &job("old", ""));
    git.commit_push("a flink job on 2.3");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &old.url, "down", &[]).await;
    let cfg_path = tmp.path().join("cli.yaml");
    std::fs::write(
        &cfg_path,
        cfg.replace("listen: 127.0.0.1:0", &format!("listen: {}", d.addr)),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let cfg_arg = cfg_path.to_str().unwrap();
    let work = git.work.to_str().unwrap().to_string();
    let jobs = git.work.join("jobs");
    let want = "Flink 1.20.3 cannot read a savepoint taken on 2.3.0; move with `upgrade: \
                stateless` or to a cluster at 2.3.0 or newer";

    // Before the merge: the file moved in the work tree (validate), the commit (plan).
    git.write("jobs/down.yaml", &job("new", ""));
    let (code, text) = cli(&["validate", jobs.to_str().unwrap(), "--config", cfg_arg]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(want), "{text}");
    let (code, text) = cli(&["validate", jobs.to_str().unwrap()]);
    assert_eq!(
        code,
        Some(0),
        "without the daemon config nothing is asked: {text}"
    );
    git.commit_push("move it to 1.20");
    let plan_args = ["plan", "--repo", &work, "--from", "HEAD~1", "--to", "HEAD"];
    let (code, text) = cli(&[&plan_args[..], &["--config", cfg_arg]].concat());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("refused: {want}")), "{text}");
    let (code, text) = cli(&plan_args);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("could not check that the new cluster can read the savepoint"),
        "{text}"
    );

    // The daemon refuses it before stopping anything.
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("down", "deploy_failed")
    })
    .await;
    let failed = d
        .events("down")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        failed.message.contains(want) && failed.message.contains("before stopping anything"),
        "{failed:?}"
    );
    assert_eq!(
        flink_state(&old.url, &jid1).await.as_deref(),
        Some("RUNNING")
    );
    let live = d.live_runs("down");
    assert_eq!(live.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run1]);
    assert!(
        d.store.savepoints("down", 10).unwrap().is_empty(),
        "no savepoint: nothing stopped"
    );
    assert_eq!(named(&[&new.url], "flink-counter down", "RUNNING").await, 0);
    assert!(!d.has_event("down", "stopped"), "{:#?}", d.events("down"));

    // `upgrade: stateless` moves it: no savepoint to read.
    git.write("jobs/down.yaml", &job("new", "upgrade: stateless\n"));
    git.commit_push("move it to 1.20 without its state");
    let (_, jid2) = running(&d, &new.url, "down", &[]).await;
    assert_ne!(jid1, jid2);
}

/// Makes the flink-counter project of `git` a jar for 1.x only: its main() then uses
/// `org.apache.flink.api.java.utils.ParameterTool`, which 2.x removed.
fn only_for_1x(git: &Git) {
    let src = "projects/flink-counter/src/example/Counter.java";
    let text = std::fs::read_to_string(git.work.join(src)).unwrap();
    let text = text.replacen(
        "long rate = 20;",
        "org.apache.flink.api.java.utils.ParameterTool.fromArgs(args);\n        long rate = 20;",
        1,
    );
    git.write(src, &text);
}

/// A move from 1.20 to 2.3 (one Flink 2.3 can read the savepoint of) of a job 2.3 cannot run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_the_new_cluster_refuses_starts_the_job_again_on_the_old_one_from_its_savepoint() {
    let (old, new) = (Cluster::v1_20(), Cluster::v2_3());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup_two(tmp.path(), &old.url, &new.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    only_for_1x(&git);
    let job = |env: &str| {
        counter(&old.lib, &["--tag", "stay"], "").replace("env: flink\n", &format!("env: {env}\n"))
    };
    git.write("jobs/stayer.yaml", &job("old"));
    git.commit_push("a 1.x-only job on 1.20");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &old.url, "stayer", &[]).await;

    git.write("jobs/stayer.yaml", &job("new"));
    git.commit_push("move it to 2.3, which cannot run it");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("stayer", "deploy_failed")
    })
    .await;
    let (_, jid2) = running(&d, &old.url, "stayer", std::slice::from_ref(&jid1)).await;
    let failed = d
        .events("stayer")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(failed.message.contains("ParameterTool"), "{failed:?}");
    // Starting it again where it ran is a start of its own, not a restart after a failure.
    let events = d.events("stayer");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "started"
                && e.message.contains("started again after the failed deploy")),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.kind == "restarted"), "{events:#?}");
    let sps = d.store.savepoints("stayer", 10).unwrap();
    assert_eq!(
        (sps[0].kind.as_str(), sps[0].run_id),
        ("savepoint", Some(run1)),
        "{sps:?}"
    );
    let restored = restored_from(&old.url, &jid2).await;
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str()),
        "started again on 1.20 from the savepoint its move took: {restored}"
    );
    assert!(
        overview_jobs(&new.url)
            .await
            .iter()
            .all(|(_, name, _)| name != "flink-counter stay"),
        "nothing of it on 2.3"
    );
}

/// The savepoint a run's stop took, and that the job's run on `url` with id `jid` was restored
/// from it.
async fn assert_restored_from_the_savepoint_of(
    d: &Daemon,
    job: &str,
    run: i64,
    url: &str,
    jid: &str,
) {
    let sps = d.store.savepoints(job, 10).unwrap();
    assert_eq!(
        (sps[0].kind.as_str(), sps[0].run_id),
        ("savepoint", Some(run)),
        "{sps:?}"
    );
    let restored = restored_from(url, jid).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str()),
        "restored from the savepoint taken on the former cluster: {restored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restarted_with_a_new_flink_url_moves_the_envs_jobs_from_1_20_to_2_3() {
    let (old, new) = (Cluster::v1_20(), Cluster::v2_3());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &old.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    git.write(
        "jobs/urlmover.yaml",
        &counter(&old.lib, &["--tag", "url-move"], ""),
    );
    git.commit_push("a flink job on the env's cluster (1.20)");
    let mut d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &old.url, "urlmover", &[]).await;
    d.stop().await;
    assert_eq!(
        flink_state(&old.url, &jid1).await.as_deref(),
        Some("RUNNING"),
        "a daemon stop leaves cluster jobs running"
    );

    // The env's cluster is now the 2.3 one: the job moves, it is not submitted twice.
    let d = start(tmp.path(), &cfg.replace(&old.url, &new.url)).await;
    let (_, jid2) = running(&d, &new.url, "urlmover", &[]).await;
    assert_ne!(jid1, jid2);
    assert_eq!(
        flink_state(&old.url, &jid1).await.as_deref(),
        Some("FINISHED"),
        "stopped with a savepoint on the former cluster"
    );
    assert_eq!(
        named(&[&old.url], "flink-counter url-move", "RUNNING").await,
        0,
        "nothing of it runs on 1.20"
    );
    assert_restored_from_the_savepoint_of(&d, "urlmover", run1, &new.url, &jid2).await;
    let moved_event = || {
        d.events("urlmover")
            .into_iter()
            .find(|e| e.kind == "deployed" && e.message.contains("moved from"))
    };
    wait_for("the move's deployed event", LIMIT, || {
        moved_event().is_some()
    })
    .await;
    let moved = moved_event().unwrap();
    assert!(
        moved.message.contains(&old.url) && moved.message.contains(&new.url),
        "{moved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_flink_url_whose_cluster_refuses_the_job_leaves_it_on_the_former_one() {
    let (old, new) = (Cluster::v1_20(), Cluster::v2_3());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &old.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    only_for_1x(&git);
    git.write(
        "jobs/urlstayer.yaml",
        &counter(&old.lib, &["--tag", "url-stay"], ""),
    );
    git.commit_push("a 1.x-only job on 1.20");
    let d = start_reloadable(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &old.url, "urlstayer", &[]).await;

    let msg = reload(&d, tmp.path(), &cfg.replace(&old.url, &new.url)).await;
    assert!(msg.contains("the cluster of env `flink` changed"), "{msg}");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("urlstayer", "deploy_failed")
    })
    .await;
    let (_, jid2) = running(&d, &old.url, "urlstayer", std::slice::from_ref(&jid1)).await;
    let failed = d
        .events("urlstayer")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        failed.message.contains("refused the job moved from")
            && failed.message.contains("ParameterTool"),
        "{failed:?}"
    );
    assert_restored_from_the_savepoint_of(&d, "urlstayer", run1, &old.url, &jid2).await;
    assert_eq!(
        named(&[&new.url], "flink-counter url-stay", "RUNNING").await,
        0,
        "nothing of it runs on 2.3"
    );
    // It stays on 1.20: the move is not tried again and again.
    d.sweeps_pass(4, LIMIT).await;
    let refusals = d
        .events("urlstayer")
        .iter()
        .filter(|e| e.kind == "deploy_failed")
        .count();
    assert_eq!(refusals, 1, "{:#?}", d.events("urlstayer"));
    assert_eq!(d.live_runs("urlstayer").len(), 1);
    let row = d.store.job("urlstayer").unwrap().unwrap();
    assert_eq!(row.state.as_str(), "running");
    // The condition says so, typed, and where the job runs.
    let (_, body) = d.get("/api/v1/jobs/urlstayer").await;
    let j: Value = serde_json::from_str(&body).unwrap();
    let c = &j["conditions"][0];
    assert_eq!(
        (c["kind"].as_str(), c["moved"].as_bool()),
        (Some("deploy_failed"), Some(true)),
        "{j}"
    );
    assert_eq!(c["runs_elsewhere"]["cluster"], old.url.as_str(), "{j}");
    assert_eq!(j["running"]["cluster"], old.url.as_str(), "{j}");
    assert_eq!(j["version"], "1.20.3", "{j}");
    assert_eq!(
        j["place"],
        format!(
            "runs on flink at {} (1.20.3); the file asks for flink at {} (2.3.0): the move was \
             refused",
            old.url, new.url
        ),
        "{j}"
    );
}

/// The daemon binary, killed with SIGKILL on drop.
struct Binary(std::process::Child);

impl Binary {
    fn start(cfg: &Path, log: &Path) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Binary(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The live runs of `job` in the store at `db` (the daemon binary's store).
fn live_of(db: &Path, job: &str) -> Vec<jobkeeper::store::RunRow> {
    jobkeeper::store::Blocking::open(db)
        .and_then(|s| s.live_runs())
        .map(|runs| runs.into_iter().filter(|r| r.job == job).collect())
        .unwrap_or_default()
}

/// Jobs named `name` in each state, over both clusters.
async fn named(urls: &[&str], name: &str, state: &str) -> usize {
    let mut n = 0;
    for url in urls {
        n += overview_jobs(url)
            .await
            .iter()
            .filter(|(_, nm, st)| nm == name && st == state)
            .count();
    }
    n
}

/// Polls every 20 ms until `cond` holds (at most [`LIMIT`]).
async fn poll_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The crash harness's case for a move: the daemon binary is killed with SIGKILL in the middle
/// of moving a stateful job from 1.20 to 2.3, once just as the job leaves RUNNING on 1.20 (its
/// savepoint taken or being taken, nothing recorded yet) and once just as it appears on 2.3
/// (submitted, its handle maybe not recorded). Started again, the daemon converges each time to
/// exactly one RUNNING job on 2.3, restored from the savepoint its stop took on 1.20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_move_converges_with_one_job_restored_from_its_savepoint() {
    let (old, new) = (Cluster::v1_20(), Cluster::v2_3());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup_two(tmp.path(), &old.url, &new.url);
    let _cleanup_old = cleanup(&old.url, tmp.path());
    let _cleanup_new = cleanup(&new.url, tmp.path());
    let cfg_path = tmp.path().join("jobkeeper.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (db, log) = (
        tmp.path().join("state/jobkeeper.db"),
        tmp.path().join("daemon.log"),
    );
    let job = |tag: &str, env: &str| {
        counter(&old.lib, &["--tag", tag], "").replace("env: flink\n", &format!("env: {env}\n"))
    };
    git.write("jobs/first.yaml", &job("kill-a", "old"));
    git.write("jobs/second.yaml", &job("kill-b", "old"));
    git.commit_push("two flink jobs on 1.20");
    let mut daemon = Binary::start(&cfg_path, &log);
    let urls = [old.url.as_str(), new.url.as_str()];
    for file in ["first", "second"] {
        poll_until(file, async || match live_of(&db, file).as_slice() {
            [run] => flink_state(&old.url, &engine_id(run)).await.as_deref() == Some("RUNNING"),
            _ => false,
        })
        .await;
    }

    let cases = [
        ("first", "flink-counter kill-a", "leaves RUNNING on 1.20"),
        ("second", "flink-counter kill-b", "appears on 2.3"),
    ];
    for (file, name, when) in cases {
        let [run] = live_of(&db, file).try_into().unwrap();
        let jid1 = engine_id(&run);
        git.write(&format!("jobs/{file}.yaml"), &job(&name[14..], "new"));
        git.commit_push(&format!("move {file} to 2.3"));
        if when.starts_with("leaves") {
            poll_until(when, async || {
                flink_state(&old.url, &jid1).await.as_deref() != Some("RUNNING")
            })
            .await;
        } else {
            poll_until(when, async || {
                overview_jobs(&new.url)
                    .await
                    .iter()
                    .any(|(_, n, _)| n == name)
            })
            .await;
        }
        daemon.kill();
        daemon = Binary::start(&cfg_path, &log);
        poll_until("the move to finish", async || {
            let live = live_of(&db, file);
            live.len() == 1
                && flink_state(&new.url, &engine_id(&live[0])).await.as_deref() == Some("RUNNING")
        })
        .await;
        let [moved] = live_of(&db, file).try_into().unwrap();
        let jid2 = engine_id(&moved);
        assert_eq!(
            (
                named(&urls, name, "RUNNING").await,
                flink_state(&old.url, &jid1).await.as_deref()
            ),
            (1, Some("FINISHED")),
            "killed as the job {when}: one RUNNING job, on 2.3; see {}",
            log.display()
        );
        let stop = rest(&old.url, &format!("/jobs/{jid1}/checkpoints")).await;
        let savepoint = stop["latest"]["savepoint"]["external_path"].clone();
        assert!(
            savepoint.is_string(),
            "the stop on 1.20 took a savepoint: {stop}"
        );
        let restored = restored_from(&new.url, &jid2).await;
        assert_eq!(
            restored["external_path"], savepoint,
            "killed as the job {when}: restored from the savepoint of its stop: {restored}"
        );
    }
}

/// The trial's refused move, end to end: `counter` runs on env `flink` (2.3.0) and its file
/// moves it to env `flink-1-20` (1.20.3), which cannot read a 2.3 savepoint. The move is
/// refused and the job keeps running on 2.3.0; the API, `status` and the page say where it
/// runs (env `flink`, version 2.3.0, its cluster) and, in one phrase, that the file asks for
/// `flink-1-20` and the move was refused. Reverting the env to `flink` clears `deploy_failed`
/// at once, and after a daemon restart. Before, they showed env `flink-1-20` and version 1.20.3
/// while the job ran on 2.3.0, and `running (deploy failed)` for good after the revert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_move_shows_where_the_job_runs_and_a_revert_of_the_env_clears_it() {
    let (v2, v1) = (Cluster::v2_3(), Cluster::v1_20());
    let tmp = tempfile::tempdir().unwrap();
    let (git, _) = setup(tmp.path(), &v2.url);
    let sp = tmp.path().join("savepoints");
    let env = |name: &str, url: &str| {
        format!(
            "  {name}: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\n",
            sp.display()
        )
    };
    let extra = format!(
        "{}{}health: {{interval: 1s}}\n",
        env("flink", &v2.url),
        env("flink-1-20", &v1.url)
    );
    let cfg = config(tmp.path(), &git, &extra);
    let _cleanup_2 = cleanup(&v2.url, tmp.path());
    let _cleanup_1 = cleanup(&v1.url, tmp.path());
    git.write("jobs/counter.yaml", &counter(&v2.lib, &["--tag", "c"], ""));
    git.commit_push("counter on flink 2.3");
    let mut d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &v2.url, "counter", &[]).await;
    let view = async |d: &Daemon| -> Value {
        let (code, body) = d.get("/api/v1/jobs/counter").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let status = |d: &Daemon| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["status", "--url", &format!("http://{}", d.addr)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    git.write(
        "jobs/counter.yaml",
        &counter(&v2.lib, &["--tag", "c"], "").replace("env: flink\n", "env: flink-1-20\n"),
    );
    let moved = git.commit_push("move counter to the 1.20 cluster");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("counter", "deploy_failed")
    })
    .await;
    assert_eq!(
        flink_state(&v2.url, &jid1).await.as_deref(),
        Some("RUNNING")
    );
    let j = view(&d).await;
    let phrase = "runs on flink (2.3.0); the file asks for flink-1-20: the move was refused";
    assert_eq!(
        (
            j["state"].as_str(),
            j["env"].as_str(),
            j["version"].as_str(),
            j["desired_env"].as_str()
        ),
        (
            Some("running"),
            Some("flink"),
            Some("2.3.0"),
            Some("flink-1-20")
        ),
        "{j}"
    );
    assert_eq!(j["running"]["run_id"], run1, "{j}");
    assert_eq!(j["running"]["env"], "flink", "{j}");
    assert_eq!(j["running"]["version"], "2.3.0", "{j}");
    assert_eq!(j["running"]["cluster"], v2.url.as_str(), "{j}");
    assert_eq!(j["place"], phrase, "{j}");
    assert_eq!(j["conditions"][0]["kind"], "deploy_failed", "{j}");
    assert_eq!(j["conditions"][0]["commit"], moved.as_str(), "{j}");
    assert_eq!(j["conditions"][0]["runs_elsewhere"]["env"], "flink", "{j}");
    let table = status(&d);
    assert!(
        table.contains("running (deploy failed)") && table.contains(phrase),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("counter ")).unwrap();
    assert!(
        row.contains(" flink ") && row.contains("flink 2.3.0") && !row.contains("1-20"),
        "{row}"
    );
    let (_, page) = d.get("/jobs/counter").await;
    assert!(page.contains(phrase), "{page}");

    // The env reverted to `flink`: nothing to do, and nothing wrong any more.
    git.git(&["revert", "--no-edit", "HEAD"]);
    git.push();
    let revert = git.git(&["rev-parse", "HEAD"]).trim().to_string();
    let store = d.store.clone();
    wait_for("the revert applied", LIMIT, || {
        store.applied_commit().unwrap().as_deref() == Some(revert.as_str())
    })
    .await;
    let j = view(&d).await;
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["conditions"], serde_json::json!([]), "{j}");
    assert_eq!(j["place"], Value::Null, "{j}");
    let table = status(&d);
    assert!(!table.contains("deploy failed"), "{table}");
    assert_eq!(d.live_runs("counter").len(), 1);
    assert_eq!(d.live_runs("counter")[0].id, run1, "nothing was restarted");

    d.stop().await;
    let d = start(tmp.path(), &cfg).await;
    let (run, jid) = running(&d, &v2.url, "counter", &[]).await;
    assert_eq!((run, jid.as_str()), (run1, jid1.as_str()), "adopted");
    let table = status(&d);
    assert!(!table.contains("deploy failed"), "{table}");
    assert_eq!(view(&d).await["conditions"], serde_json::json!([]));
}

/// A repeated submit of one run (a daemon that submitted it, then lost or never saw the answer,
/// or a former leader whose submit arrives late) names the same Flink job id; the cluster answers
/// 400 `Duplicate…SubmissionException` and the engine tracks the existing job: one Flink job, the
/// second submit answered with the first's handle. Jar jobs and SQL jobs (the runner's
/// `executeSql` takes the fixed id too), while the job runs and after it was cancelled.
async fn a_second_submit_of_a_run_tracks_its_job_and_starts_no_other(c: &Cluster) {
    use jobkeeper::engine::flink::{FlinkEngine, FlinkSettings};
    use jobkeeper::engine::{Engine, SubmitRequest};
    let tmp = tempfile::tempdir().unwrap();
    let settings = FlinkSettings {
        url: c.url.clone(),
        savepoint_dir: None,
        sql_runner: None,
    };
    // A salt of this test's own: its job ids are new to the cluster.
    let salt = tmp.path().display().to_string();
    let engine = FlinkEngine::new(&settings, &salt).unwrap();
    let counter = build_counter_jar(tmp.path(), &c.lib);
    let runner = build_sql_runner(tmp.path());
    let sql = "CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5');\n\
               CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole');\n\
               INSERT INTO snk SELECT n FROM src;\n";
    let statements = jobkeeper::spec::split_sql(sql).unwrap();
    let jar_params = jobkeeper::spec::Params {
        main_class: Some("example.Counter".into()),
        args: vec!["--tag".into(), "dup".into()],
        parallelism: Some(1),
        ..Default::default()
    };
    let sql_params = jobkeeper::spec::Params {
        main_class: Some(jobkeeper::build::sql_runner::ENTRY_CLASS.into()),
        args: jobkeeper::build::sql_runner::args("dup-sql", &statements),
        parallelism: Some(1),
        ..Default::default()
    };
    for (job, jar, params) in [
        ("dup-jar", counter, jar_params),
        ("dup-sql", runner, sql_params),
    ] {
        let request = || SubmitRequest {
            job: job.to_string(),
            run_id: 7,
            params: params.clone(),
            artifact: Some(jar.clone()),
            checkout: None,
            log_path: tmp.path().join(format!("{job}.log")),
            digest: None,
            restore: None,
            secrets: Vec::new(),
        };
        let first = engine.submit(request()).await.unwrap();
        let jid = first.engine_id.clone();
        let _cancel = CancelOnDrop(c.url.clone(), jid.clone());
        poll_until("the first submit's job RUNNING", async || {
            flink_state(&c.url, &jid).await.as_deref() == Some("RUNNING")
        })
        .await;
        let second = engine.submit(request()).await;
        assert_eq!(
            second.as_ref().ok(),
            Some(&first),
            "{job}: a repeated submit of the running run tracks its job: {second:?}"
        );
        let log = std::fs::read_to_string(tmp.path().join(format!("{job}.log"))).unwrap();
        assert!(
            log.contains(&format!("already has job {jid} of this run")),
            "{log}"
        );
        http()
            .patch(format!("{}/jobs/{jid}?mode=cancel", c.url))
            .send()
            .await
            .unwrap();
        poll_until("the job CANCELED", async || {
            flink_state(&c.url, &jid).await.as_deref() == Some("CANCELED")
        })
        .await;
        let third = engine.submit(request()).await;
        assert_eq!(
            third.as_ref().ok(),
            Some(&first),
            "{job}: a repeated submit of the cancelled run tracks its ended job: {third:?}"
        );
        let named: Vec<_> = overview_jobs(&c.url)
            .await
            .into_iter()
            .filter(|(id, _, _)| *id == jid)
            .collect();
        assert_eq!(named.len(), 1, "{job}: one Flink job: {named:?}");
        let statuses = engine.status(std::slice::from_ref(&first)).await.unwrap();
        assert!(
            matches!(
                statuses[0],
                jobkeeper::engine::RunStatus::CancelledOutside(_)
            ),
            "{job}: the tracked run is the cancelled job: {statuses:?}"
        );
    }
}
on_each_version!(a_second_submit_of_a_run_tracks_its_job_and_starts_no_other);

/// Cancels a Flink job on drop (the test's own, even when it fails).
struct CancelOnDrop(String, String);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let url = format!("{}/jobs/{}?mode=cancel", self.0, self.1);
        let _ = std::process::Command::new("curl")
            .args(["-s", "-m", "5", "-X", "PATCH", &url])
            .output();
    }
}

/// The SQL runner jar, built under `root/runner` from the source the daemon embeds.
fn build_sql_runner(root: &Path) -> PathBuf {
    let dir = root.join("runner");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("JobkeeperSqlRunner.java"),
        jobkeeper::build::sql_runner::SOURCE,
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "mkdir -p classes && javac --release 8 -Xlint:-options -d classes \
             JobkeeperSqlRunner.java && jar cf runner.jar -C classes .",
        )
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("runner.jar")
}

/// A run whose submit the store still records as under way (no job id: the daemon stopped
/// between the submit and its record, or a leader lost its turn there) is looked up by its
/// job id when a daemon starts, and tracked: the same run, one Flink job. A late submit of
/// that run (a former daemon's, sent with the same installation salt) is answered
/// `Duplicate…` and changes nothing: no second job, no failed or new run.
async fn a_run_left_submitting_is_tracked_and_its_late_repeat_starts_nothing(c: &Cluster) {
    use jobkeeper::engine::flink::{FlinkEngine, FlinkSettings};
    use jobkeeper::engine::{Engine, SubmitRequest};
    let url = c.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write("jobs/late.yaml", &counter(&c.lib, &["--tag", "late"], ""));
    git.commit_push("a flink job");
    let mut d = start(tmp.path(), &cfg).await;
    let (run, jid) = running(&d, &url, "late", &[]).await;
    d.stop().await;
    // The store as a daemon stopped mid-submit leaves it: the run live, no job id recorded.
    let db = rusqlite::Connection::open(tmp.path().join("state/jobkeeper.db")).unwrap();
    db.execute("UPDATE runs SET handle = NULL WHERE id = ?1", [run])
        .unwrap();
    drop(db);

    let d = start(tmp.path(), &cfg).await;
    d.sweeps_pass(2, LIMIT).await;
    let runs = d.runs("late");
    assert_eq!(runs.len(), 1, "no new run: {runs:#?}");
    assert_eq!((runs[0].id, runs[0].state.as_str()), (run, "running"));
    assert_eq!(engine_id(&runs[0]), jid, "tracked by its job id");

    // The late repeat of the run's submit, with this installation's salt.
    let job = d.job("late").unwrap();
    let settings = FlinkSettings {
        url: url.clone(),
        savepoint_dir: None,
        sql_runner: None,
    };
    let former = FlinkEngine::new(&settings, &d.state_dir.display().to_string()).unwrap();
    let repeat = former
        .submit(SubmitRequest {
            job: "late".into(),
            run_id: run,
            params: job.applied.clone().unwrap().params,
            artifact: Some(job.artifact.clone().unwrap().path),
            checkout: None,
            log_path: tmp.path().join("late-repeat.log"),
            digest: None,
            restore: None,
            secrets: Vec::new(),
        })
        .await;
    assert_eq!(
        repeat.as_ref().map(|h| h.engine_id.as_str()).ok(),
        Some(jid.as_str()),
        "the repeat is the run's job: {repeat:?}"
    );
    d.sweeps_pass(2, LIMIT).await;
    let named: Vec<_> = overview_jobs(&url)
        .await
        .into_iter()
        .filter(|(_, name, state)| name.ends_with(" late") && state == "RUNNING")
        .collect();
    assert_eq!(named.len(), 1, "one Flink job: {named:?}");
    assert_eq!(flink_state(&url, &jid).await.as_deref(), Some("RUNNING"));
    let runs = d.runs("late");
    assert_eq!(runs.len(), 1, "no new run: {runs:#?}");
    assert_eq!((runs[0].id, runs[0].state.as_str()), (run, "running"));
    assert!(!d.has_event("late", "failed") && !d.has_event("late", "deploy_failed"));
}
on_each_version!(a_run_left_submitting_is_tracked_and_its_late_repeat_starts_nothing);
