//! A Flink job's state over its life, end to end against the real Flink 2.3.0 and 1.20.3
//! session clusters of `scripts/test.sh` (`JOBKEEPER_FLINK_URL`, `JOBKEEPER_FLINK_1_20_URL` and
//! their `_LIB` folders; without them these tests fail, they do not skip): operators'
//! savepoints (`jobkeeper savepoint`), the listing (`jobkeeper savepoints`, the API, the job
//! page), retention disposing of savepoints past `keep` (checked on the savepoint folder on
//! disk), a `restore` commit (checked through Flink's checkpoint statistics), periodic
//! savepoints across a daemon restart, and a failing one raising `savepoint_failed`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "savepoint-test-token";

/// A config repo with the flink-counter project, a daemon config with a `flink` env on `url`
/// whose savepoints go to `root/savepoints`, and an API token.
fn setup(root: &Path, url: &str) -> (Git, String) {
    setup_with(root, url, "")
}

/// [`setup`] with more fields in the `flink` env (`, savepoints: {...}`).
fn setup_with(root: &Path, url: &str, env_extra: &str) -> (Git, String) {
    std::fs::write(root.join("api_token"), format!("{TOKEN}\n")).unwrap();
    let token = format!("api_token_file: {}\n", root.join("api_token").display());
    counter_repo(root, url, env_extra, &token)
}

/// A flink-counter job file built against `lib`, with `extra` lines.
fn counter(lib: &str, tag: &str, extra: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n\
         env: flink\nparams:\n  main_class: example.Counter\n  args: [\"--tag\", \"{tag}\"]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"500ms\"}}\n{extra}"
    )
}

/// Cancels, on drop, every Flink job the test's store knows.
fn cleanup(url: &str, root: &Path) -> StopRunsOnDrop {
    StopRunsOnDrop {
        db: root.join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    }
}

/// The folder of a `file:` savepoint location.
fn folder(location: &str) -> PathBuf {
    let rest = location.strip_prefix("file:").unwrap();
    PathBuf::from(rest.strip_prefix("//").unwrap_or(rest))
}

/// Runs the `jobkeeper` binary; its exit code and stdout.
fn jobkeeper(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(args)
        .env("JOBKEEPER_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// `POST /api/v1/jobs/{job}/savepoint` with the token: the status and body.
async fn take_savepoint(d: &Daemon, job: &str) -> (u16, Value) {
    let r = http()
        .post(format!("http://{}/api/v1/jobs/{job}/savepoint", d.addr))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// The job's savepoint listing from the API.
async fn listing(d: &Daemon, job: &str) -> Value {
    let (code, body) = d.get(&format!("/api/v1/jobs/{job}/savepoints")).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The listed entry at `location`.
fn entry<'a>(list: &'a Value, location: &str) -> &'a Value {
    list["savepoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["location"] == location)
        .unwrap_or_else(|| panic!("{location} not listed: {list}"))
}

macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_2_3() {
                super::$name(&need("JOBKEEPER_FLINK_URL"), &need("JOBKEEPER_FLINK_LIB")).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flink_1_20() {
                super::$name(
                    &need("JOBKEEPER_FLINK_1_20_URL"),
                    &need("JOBKEEPER_FLINK_1_20_LIB"),
                )
                .await
            }

            use super::need;
        }
    };
}

on_each_version!(savepoints_are_taken_listed_restored_from_by_commit_and_disposed_of_past_keep);
async fn savepoints_are_taken_listed_restored_from_by_commit_and_disposed_of_past_keep(
    url: &str,
    lib: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), url);
    let _cleanup = cleanup(url, tmp.path());
    // `rollback: true`: the version before the restore commit is a rollback version, whose
    // savepoint (its upgrade's stop) is never disposed of.
    let keep = "savepoints: {keep: {count: 2, age: 1s}}\nrollback: true\nready_within: 1h\n";
    git.write("jobs/counter.yaml", &counter(lib, "v1", keep));
    git.commit_push("a flink job keeping two savepoints");
    let mut d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, url, "counter", &[]).await;
    let daemon_url = format!("http://{}", d.addr);

    // An operator's savepoint: the CLI prints where it is, and the folder is there.
    let (code, out) = tokio::task::spawn_blocking({
        let u = daemon_url.clone();
        move || jobkeeper(&["savepoint", "counter", "--url", &u])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let s1 = out.trim().to_string();
    assert!(folder(&s1).join("_metadata").is_file(), "{s1}");
    assert_eq!(flink_state(url, &jid1).await.as_deref(), Some("RUNNING"));
    assert!(
        d.events("counter")
            .iter()
            .any(|e| e.kind == "savepoint_taken" && e.message.contains(&s1)),
        "audited with who asked"
    );

    // A commit naming it: plan says so, and the new run starts from exactly that path.
    git.write(
        "jobs/counter.yaml",
        &counter(lib, "v1", &format!("{keep}restore: \"{s1}\"\n")),
    );
    git.commit_push("restore from the operator's savepoint");
    let work = git.work.display().to_string();
    let (code, plan) = jobkeeper(&["plan", "--repo", &work, "--from", "HEAD~1", "--to", "HEAD"]);
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains(&format!("restore from {s1}")), "{plan}");
    let (run2, jid2) = running(&d, url, "counter", std::slice::from_ref(&jid1)).await;
    let restored = restored_from(url, &jid2).await;
    assert_eq!(
        restored["external_path"].as_str(),
        Some(s1.as_str()),
        "{restored}"
    );
    // The upgrade's stop kept the state the job had, too.
    let list = listing(&d, "counter").await;
    let upgrade = list["savepoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cause"] == "upgrade" && s["run_id"] == run1)
        .unwrap_or_else(|| panic!("no upgrade savepoint of run {run1}: {list}"))["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(list["started_from"].as_str(), Some(s1.as_str()), "{list}");
    assert_eq!(entry(&list, &s1)["current"], true, "{list}");

    // Three more: past `keep` (two), the oldest unprotected one goes; the one the run started
    // from and the one a rollback would start from stay.
    let mut taken = Vec::new();
    for _ in 0..3 {
        let (code, body) = take_savepoint(&d, "counter").await;
        assert_eq!(code, 200, "{body}");
        taken.push(body["location"].as_str().unwrap().to_string());
    }
    let s2 = taken[0].clone();
    let disposed = |d: &Daemon, loc: &str| {
        d.store
            .savepoint_history("counter", 50)
            .unwrap()
            .iter()
            .any(|s| s.location == loc && s.disposed_at.is_some())
    };
    wait_for(
        "the oldest unprotected savepoint disposed of",
        LIMIT,
        || disposed(&d, &s2),
    )
    .await;
    assert!(!folder(&s2).exists(), "Flink deleted its folder: {s2}");
    let list = listing(&d, "counter").await;
    assert!(entry(&list, &s2)["disposed_at"].is_i64(), "{list}");
    for kept in [&s1, &upgrade, &taken[1], &taken[2]] {
        assert!(
            entry(&list, kept)["disposed_at"].is_null(),
            "{kept}: {list}"
        );
        assert!(folder(kept).join("_metadata").is_file(), "{kept}");
    }
    let (code, table) = tokio::task::spawn_blocking({
        let u = daemon_url.clone();
        move || jobkeeper(&["savepoints", "counter", "--url", &u])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{table}");
    let line = |loc: &str| {
        table
            .lines()
            .find(|l| l.ends_with(loc))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(&s1).contains("current run's start"), "{table}");
    assert!(line(&s2).contains("disposed"), "{table}");
    assert!(line(&taken[2]).contains("manual"), "{table}");
    let (_, page) = d.get("/jobs/counter").await;
    assert!(page.contains("disposed of") && page.contains("the current run started from it"));
    let (code, json) = tokio::task::spawn_blocking({
        let u = daemon_url.clone();
        move || jobkeeper(&["savepoints", "counter", "--json", "--url", &u])
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap()["job"],
        "counter"
    );

    // A daemon restart adopts the run: nothing is restored again.
    d.stop().await;
    let d = start(tmp.path(), &cfg).await;
    wait_for("the run adopted", LIMIT, || {
        d.has_event("counter", "adopted")
    })
    .await;
    let live = d.live_runs("counter");
    assert_eq!(live.iter().map(|r| r.id).collect::<Vec<_>>(), [run2]);
    assert_eq!(flink_state(url, &jid2).await.as_deref(), Some("RUNNING"));

    // Another change with `restore` left in place: it starts from its own stop's savepoint.
    git.write(
        "jobs/counter.yaml",
        &counter(lib, "v2", &format!("{keep}restore: \"{s1}\"\n")),
    );
    git.commit_push("new args, restore left in place");
    let (_, jid3) = running(&d, url, "counter", &[jid1.clone(), jid2.clone()]).await;
    let restored = restored_from(url, &jid3).await;
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert_ne!(path, s1, "{restored}");
    assert!(path.contains("/savepoints/savepoint-"), "{restored}");
}

/// Periodic savepoints, asked for by the env (the job file sets none): taken on schedule while
/// the job runs, once across a daemon restart (the next is due after the newest the store
/// holds, not at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_savepoint_is_taken_once_across_a_daemon_restart() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup_with(tmp.path(), &url, ", savepoints: {every: 4s}");
    let _cleanup = cleanup(&url, tmp.path());
    git.write("jobs/tick.yaml", &counter(&lib, "t", ""));
    git.commit_push("periodic savepoints");
    let mut d = start(tmp.path(), &cfg).await;
    let (run, _) = running(&d, &url, "tick", &[]).await;
    let periodic = |d: &Daemon| -> Vec<i64> {
        let mut t: Vec<i64> = d
            .store
            .savepoint_history("tick", 50)
            .unwrap()
            .into_iter()
            .filter(|s| s.cause == Some(jobkeeper::store::SavepointCause::Periodic))
            .map(|s| s.time)
            .collect();
        t.sort_unstable();
        t
    };
    wait_for("a periodic savepoint", LIMIT, || !periodic(&d).is_empty()).await;
    d.stop().await;
    let first = periodic(&d)[0];

    let d = start(tmp.path(), &cfg).await;
    wait_for("the run adopted", LIMIT, || d.has_event("tick", "adopted")).await;
    wait_for("the next periodic savepoint", LIMIT, || {
        periodic(&d).len() >= 2
    })
    .await;
    let times = periodic(&d);
    assert!(
        times[1] - first >= 3_500,
        "the restart took one again {} ms after the last: {times:?}",
        times[1] - first
    );
    assert_eq!(d.live_runs("tick")[0].id, run, "the job kept running");
}

/// A periodic savepoint that fails raises `savepoint_failed` and the job keeps running: the
/// savepoint folder is a regular file, where Flink cannot make a savepoint's folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_periodic_savepoint_raises_savepoint_failed_and_the_job_keeps_running() {
    let (url, lib) = (
        need("JOBKEEPER_FLINK_1_20_URL"),
        need("JOBKEEPER_FLINK_1_20_LIB"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    std::fs::write(tmp.path().join("savepoints"), "not a folder").unwrap();
    git.write(
        "jobs/broken.yaml",
        &counter(&lib, "b", "savepoints: {every: 2s}\n"),
    );
    git.commit_push("periodic savepoints that cannot be written");
    let d = start(tmp.path(), &cfg).await;
    let (run, jid) = running(&d, &url, "broken", &[]).await;
    wait_for("savepoint_failed", LIMIT, || {
        d.has_event("broken", "savepoint_failed")
    })
    .await;
    let e = d
        .events("broken")
        .into_iter()
        .find(|e| e.kind == "savepoint_failed")
        .unwrap();
    assert!(
        e.message.starts_with("periodic savepoint failed"),
        "{}",
        e.message
    );
    assert_eq!(flink_state(&url, &jid).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.live_runs("broken")[0].id, run);
    assert_eq!(d.job("broken").unwrap().state, "running");
}

/// Completed checkpoints of a Flink job.
async fn completed_checkpoints(url: &str, jid: &str) -> u64 {
    rest(url, &format!("/jobs/{jid}/checkpoints")).await["counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
}

// `upgrade: last-state`: an upgrade cancels the job keeping its retained checkpoints and the
// new run starts from the latest (Flink's checkpoint statistics name the old job's `chk-N`); with
// no checkpoint younger than `max_checkpoint_age`, a savepoint is taken instead.
on_each_version!(
    a_last_state_upgrade_starts_from_the_latest_checkpoint_or_a_savepoint_when_it_is_too_old
);
async fn a_last_state_upgrade_starts_from_the_latest_checkpoint_or_a_savepoint_when_it_is_too_old(
    url: &str,
    lib: &str,
) {
    let (url, lib) = (url.to_string(), lib.to_string());
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = cleanup(&url, tmp.path());
    git.write(
        "jobs/fast.yaml",
        &counter(&lib, "v1", "upgrade: last-state\n"),
    );
    git.commit_push("a last-state job");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "fast", &[]).await;
    wait_for_checkpoints(&url, &jid1).await;

    git.write(
        "jobs/fast.yaml",
        &counter(&lib, "v2", "upgrade: last-state\n"),
    );
    git.commit_push("new args");
    let (_, jid2) = running(&d, &url, "fast", std::slice::from_ref(&jid1)).await;
    assert_eq!(flink_state(&url, &jid1).await.as_deref(), Some("CANCELED"));
    // Flink counts any path a run is submitted from as a savepoint restore (`is_savepoint`):
    // the path says it was the old job's checkpoint.
    let restored = restored_from(&url, &jid2).await;
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert!(path.contains(&format!("{jid1}/chk-")), "{restored}");
    assert!(
        d.events("fast").iter().any(|e| e.kind == "stopped"
            && e.message.contains("upgrade: last-state")
            && e.message.contains(path)),
        "the stop says which checkpoint the new run starts from"
    );

    // No checkpoint is that young: a savepoint.
    wait_for_checkpoints(&url, &jid2).await;
    git.write(
        "jobs/fast.yaml",
        &counter(&lib, "v3", "upgrade: last-state\nmax_checkpoint_age: 1ms\n"),
    );
    git.commit_push("new args, checkpoints never young enough");
    let (_, jid3) = running(&d, &url, "fast", &[jid1.clone(), jid2.clone()]).await;
    assert_eq!(flink_state(&url, &jid2).await.as_deref(), Some("FINISHED"));
    let restored = restored_from(&url, &jid3).await;
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert!(path.contains("/savepoints/savepoint-"), "{restored}");
}

/// Waits until a job has completed two checkpoints.
async fn wait_for_checkpoints(url: &str, jid: &str) {
    let t0 = std::time::Instant::now();
    while completed_checkpoints(url, jid).await < 2 {
        assert!(t0.elapsed() < LIMIT, "no checkpoints of {jid}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cluster that took a job's savepoints is gone (nothing listens at its URL): savepoints
/// past `keep` that are `file:` folders on this host are deleted here and marked disposed of;
/// one elsewhere (`s3://`) cannot be, and its disposal is recorded as failed, counted and tried
/// again at later passes, blocking nothing. Needs no Flink: the cluster is a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_cluster_gone_local_savepoints_are_deleted_and_others_retried() {
    use jobkeeper::store::{NewSavepoint, SavepointCause, SavepointKind};
    let tmp = tempfile::tempdir().unwrap();
    let gone = format!("http://127.0.0.1:{}", free_port());
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/.keep", "");
    git.commit_push("no jobs");
    let extra = format!(
        "  flink: {{engine: flink, flink: {{url: \"{gone}\"}}}}\n\
         savepoints: {{keep: {{count: 1, age: 1s}}}}\n"
    );
    let cfg = config(tmp.path(), &git, &extra);
    let d = start(tmp.path(), &cfg).await;
    let old = jobkeeper::store::now_ms() - 60_000;
    let mut local = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("savepoints/savepoint-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("_metadata"), b"x").unwrap();
        local.push(format!("file:{}", dir.display()));
    }
    let add = |loc: &str, time: i64| {
        let new = NewSavepoint {
            run_id: None,
            kind: SavepointKind::Savepoint,
            cause: SavepointCause::Periodic,
            cluster: Some(&gone),
            time: Some(time),
        };
        d.store.add_savepoint_by("old-job", loc, new).unwrap();
    };
    add("s3://bucket/savepoints/savepoint-s3", old - 1);
    for (i, loc) in local.iter().enumerate() {
        add(loc, old + i as i64);
    }
    let row = |loc: &str| {
        d.store
            .savepoint_history("old-job", 10)
            .unwrap()
            .into_iter()
            .find(|s| s.location == loc)
            .unwrap()
    };
    wait_for("the two older local savepoints disposed of", LIMIT, || {
        row(&local[0]).disposed_at.is_some() && row(&local[1]).disposed_at.is_some()
    })
    .await;
    assert!(!folder(&local[0]).exists() && !folder(&local[1]).exists());
    assert!(
        folder(&local[2]).join("_metadata").is_file(),
        "the newest is kept"
    );
    assert!(row(&local[2]).disposed_at.is_none());
    wait_for("the s3 disposal tried again", LIMIT, || {
        row("s3://bucket/savepoints/savepoint-s3").dispose_failures >= 2
    })
    .await;
    let s3 = row("s3://bucket/savepoints/savepoint-s3");
    assert!(s3.disposed_at.is_none());
    assert!(
        s3.dispose_error
            .as_deref()
            .unwrap_or_default()
            .contains("does not answer"),
        "{s3:?}"
    );
    let (_, metrics) = d.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "jobkeeper_savepoint_disposals_total{result=\"disposed\"}"
        ) >= 2.0
    );
    assert!(
        metric(
            &metrics,
            "jobkeeper_savepoint_disposals_total{result=\"failed\"}"
        ) >= 2.0
    );
    assert_eq!(d.get("/healthz").await.0, 200);
}

/// What `jobkeeper savepoint` and `savepoints` answer for jobs that cannot have one: a local
/// job (409, exit 1, no `savepoint_failed`), an unknown job (404, exit 1), no token (401), a
/// daemon that does not answer (exit 3). Needs no Flink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_commands_refuse_what_cannot_have_a_savepoint() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    std::fs::write(tmp.path().join("api_token"), format!("{TOKEN}\n")).unwrap();
    git.write("jobs/sleepy.yaml", &sleeper(600));
    git.commit_push("a local job");
    let extra = format!(
        "api_token_file: {}\n",
        tmp.path().join("api_token").display()
    );
    let cfg = config(tmp.path(), &git, &extra);
    let mut d = start(tmp.path(), &cfg).await;
    wait_for("sleepy running", LIMIT, || {
        d.job("sleepy").is_some_and(|j| j.state == "running")
    })
    .await;
    let (code, body) = take_savepoint(&d, "sleepy").await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("takes no savepoints"),
        "{body}"
    );
    assert!(!d.has_event("sleepy", "savepoint_failed"));
    let (code, _) = take_savepoint(&d, "nope").await;
    assert_eq!(code, 404);
    let r = http()
        .post(format!("http://{}/api/v1/jobs/sleepy/savepoint", d.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let list = listing(&d, "sleepy").await;
    assert_eq!(list["savepoints"], serde_json::json!([]), "{list}");
    let (code, _) = d.get("/api/v1/jobs/nope/savepoints").await;
    assert_eq!(code, 404);
    let url = format!("http://{}", d.addr);
    let (code, out) = tokio::task::spawn_blocking({
        let u = url.clone();
        move || jobkeeper(&["savepoint", "sleepy", "--url", &u])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("takes no savepoints"), "{out}");
    let (code, out) = tokio::task::spawn_blocking({
        let u = url.clone();
        move || jobkeeper(&["savepoints", "sleepy", "--url", &u])
    })
    .await
    .unwrap();
    assert_eq!(
        (code, out.as_str()),
        (0, "job `sleepy` has no savepoints\n")
    );
    d.stop().await;
    let (code, _) =
        tokio::task::spawn_blocking(move || jobkeeper(&["savepoints", "sleepy", "--url", &url]))
            .await
            .unwrap();
    assert_eq!(code, 3);
}
