//! Health beyond "running" on a real Flink 2.3.0 cluster (`JOBKEEPER_FLINK_URL`,
//! `JOBKEEPER_FLINK_LIB`, as for tests/flink.rs): a job that Flink's own fixed-delay restart
//! strategy restarts every few seconds is RUNNING most of the time, and is `unhealthy` by its
//! restart figure within `health.restarts.window`; it is then restarted by jobkeeper under the
//! job's restart policy (a `restarted` event, a new run). A new version that fails before
//! `ready_within` is rolled back to the previous one, restored from the savepoint its upgrade took
//! (read back from Flink's checkpoint statistics); one that fails after `ready_within` is
//! restarted, not rolled back. A job whose checkpoints stop completing is `unhealthy` once its
//! latest completed checkpoint is older than `health.checkpoint_age`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::flink::*;
use common::*;

fn setup(root: &Path, url: &str) -> (Git, String) {
    counter_repo(root, url, "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_flink_restarts_again_and_again_is_unhealthy_then_restarted() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    git.write(
        "jobs/flaky.yaml",
        &format!(
            "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
             artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
             args: [\"--mode\", \"fail\", \"--failAfter\", \"20\", \"--rate\", \"20\"]\n  parallelism: 1\n  \
             conf: {{execution.checkpointing.interval: \"500ms\", restart-strategy.type: fixed-delay, \
             restart-strategy.fixed-delay.attempts: \"100000\", restart-strategy.fixed-delay.delay: \"500ms\"}}\n\
             health: {{restarts: {{count: 2, window: 5m}}}}\n\
             restart: {{attempts: 5, window: 1h, backoff: 1s, max_backoff: 1s}}\n"
        ),
    );
    git.commit_push("a job Flink restarts every second or so");
    let d = start(tmp.path(), &cfg).await;
    wait_for("unhealthy", Duration::from_secs(150), || {
        d.has_event("flaky", "unhealthy")
    })
    .await;
    let event = d
        .events("flaky")
        .into_iter()
        .find(|e| e.kind == "unhealthy")
        .unwrap();
    assert!(
        event.message.contains("restarted") && event.message.contains("within 5m"),
        "{event:?}"
    );
    assert!(
        event.message.contains("failing on purpose"),
        "the event carries Flink's root exception: {event:?}"
    );
    wait_for("a restart by jobkeeper", Duration::from_secs(60), || {
        d.has_event("flaky", "restarted") && d.runs("flaky").len() >= 2
    })
    .await;
    let runs = d.runs("flaky");
    let first = runs.last().unwrap();
    assert_eq!(first.state, "failed", "{runs:#?}");
    assert!(
        first
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("unhealthy"),
        "{runs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_outside_jobkeeper_is_drift_and_the_job_runs_again() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    git.write(
        "jobs/steady.yaml",
        &format!(
            "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
             artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
             args: [\"--rate\", \"20\"]\n  parallelism: 1\n  \
             conf: {{execution.checkpointing.interval: \"500ms\"}}\n\
             restart: {{attempts: 3, window: 1h, backoff: 1s, max_backoff: 1s}}\n"
        ),
    );
    git.commit_push("a steady job");
    let d = start(tmp.path(), &cfg).await;
    let mut first = None;
    wait_for("running", Duration::from_secs(120), || {
        first = d.live_runs("steady").first().map(engine_id);
        first.is_some() && d.job("steady").is_some_and(|j| j.state == "running")
    })
    .await;
    let first = first.unwrap();
    let client = reqwest::Client::new();
    let answer = client
        .patch(format!("{url}/jobs/{first}?mode=cancel"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    wait_for("drift and a new run", Duration::from_secs(60), || {
        d.has_event("steady", "drift")
            && d.live_runs("steady")
                .first()
                .is_some_and(|r| engine_id(r) != first)
    })
    .await;
    let drift = d
        .events("steady")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap();
    assert!(
        drift.message.contains("canceled outside jobkeeper"),
        "{drift:?}"
    );
    assert!(
        !d.has_event("steady", "failed"),
        "{:#?}",
        d.events("steady")
    );
}

/// A service job of the flink-counter project with `args`, Flink `conf` entries and more fields.
fn counter(lib: &str, args: &str, conf: &str, extra: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
         artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
         args: [{args}]\n  parallelism: 1\n  \
         conf: {{execution.checkpointing.interval: \"500ms\"{conf}}}\n\
         restart: {{attempts: 3, window: 1h, backoff: 1s, max_backoff: 1s}}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_fails_before_ready_within_is_rolled_back_from_the_upgrade_savepoint() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let guard = "rollback: true\nready_within: 2m\n";
    git.write(
        "jobs/app.yaml",
        &counter(&lib, "\"--tag\", \"v1\"", "", guard),
    );
    git.commit_push("v1");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &url, "app", &[]).await;
    let v1_hash = d.job("app").unwrap().applied_hash.unwrap();

    // v2 throws after 40 records (about 2 s at 20/s) and Flink does not restart it: it fails.
    git.write(
        "jobs/app.yaml",
        &counter(
            &lib,
            "\"--tag\", \"v2\", \"--mode\", \"fail\", \"--failAfter\", \"40\", \"--rate\", \"20\"",
            ", restart-strategy.type: none",
            guard,
        ),
    );
    let bad = git.commit_push("v2 fails after a few seconds");
    wait_for("rolled_back", Duration::from_secs(120), || {
        d.has_event("app", "rolled_back")
    })
    .await;
    let event = d
        .events("app")
        .into_iter()
        .find(|e| e.kind == "rolled_back")
        .unwrap();
    assert!(
        event.message.contains(&bad[..8]),
        "the event names the bad commit: {event:?}"
    );
    let sps = d.store.savepoints("app", 10).unwrap();
    let upgrade = sps
        .iter()
        .find(|s| s.kind == "savepoint" && s.run_id == Some(run1))
        .unwrap_or_else(|| panic!("the upgrade stopped v1 with a savepoint: {sps:?}"));
    let row = d.job("app").unwrap();
    assert_eq!(
        row.applied_hash.as_deref(),
        Some(v1_hash.as_str()),
        "{row:?}"
    );
    let v2_hash = row.desired_hash.clone().unwrap();
    assert_ne!(v2_hash, v1_hash);
    let v2_runs: Vec<_> = d
        .runs("app")
        .into_iter()
        .filter(|r| r.spec_hash == v2_hash)
        .collect();
    assert_eq!(v2_runs.len(), 1, "{v2_runs:#?}");
    let jid2 = engine_id(&v2_runs[0]);
    let (run3, jid3) = running(&d, &url, "app", &[jid1.clone(), jid2]).await;
    assert!(run3 > run1);
    assert_eq!(
        d.runs("app")
            .into_iter()
            .find(|r| r.id == run3)
            .unwrap()
            .spec_hash,
        v1_hash
    );
    let restored = restored_from(&url, &jid3).await;
    assert_eq!(
        restored["external_path"].as_str(),
        Some(upgrade.location.as_str()),
        "v1 runs again from the savepoint taken when v2 replaced it: {restored}"
    );
    assert_eq!(d.job("app").unwrap().state, "rolled_back");

    // v2 is not submitted again before a new commit.
    d.sweeps_pass(5, FLINK_LIMIT).await;
    let v2_runs = d
        .runs("app")
        .into_iter()
        .filter(|r| r.spec_hash == v2_hash)
        .count();
    assert_eq!(v2_runs, 1, "{:#?}", d.runs("app"));
    assert_eq!(flink_state(&url, &jid3).await.as_deref(), Some("RUNNING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_fails_after_ready_within_is_restarted_not_rolled_back() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let guard = "rollback: true\nready_within: 3s\n";
    git.write(
        "jobs/app.yaml",
        &counter(&lib, "\"--tag\", \"v1\"", "", guard),
    );
    git.commit_push("v1");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &url, "app", &[]).await;

    // v2 runs well for about 15 s (300 records at 20/s), well past ready_within, then fails.
    git.write(
        "jobs/app.yaml",
        &counter(
            &lib,
            "\"--tag\", \"v2\", \"--mode\", \"fail\", \"--failAfter\", \"300\", \"--rate\", \"20\"",
            ", restart-strategy.type: none",
            guard,
        ),
    );
    git.commit_push("v2 fails late");
    let (run2, jid2) = running(&d, &url, "app", std::slice::from_ref(&jid1)).await;
    let v2_hash = d
        .runs("app")
        .into_iter()
        .find(|r| r.id == run2)
        .unwrap()
        .spec_hash;
    let start = std::time::Instant::now();
    while !(d.has_event("app", "restarted")
        && d.runs("app")
            .iter()
            .filter(|r| r.spec_hash == v2_hash)
            .count()
            >= 2)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for v2 restarted: {:#?} {:#?}",
            d.events("app"),
            d.runs("app")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        flink_state(&url, &jid2).await.as_deref(),
        Some("FAILED"),
        "v2's first run failed in Flink"
    );
    assert!(!d.has_event("app", "rolled_back"), "{:#?}", d.events("app"));
    let row = d.job("app").unwrap();
    assert_eq!(
        row.applied_hash.as_deref(),
        Some(v2_hash.as_str()),
        "{row:?}"
    );
    assert_ne!(row.state, "rolled_back", "{row:?}");
    assert_eq!(d.store.versions("app").unwrap().refused_hash, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_checkpoints_stop_completing_is_unhealthy_then_restarted() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    // After 200 records (about 10 s at 20/s) each checkpoint takes 3 s, past its 1 s timeout; Flink
    // tolerates the failed checkpoints, so the job stays RUNNING with no checkpoint completing.
    // (Flink's REST metrics lag by up to `metrics.fetcher.update-interval`, 10 s by default, so
    // checkpoint_age is set well above it.)
    git.write(
        "jobs/stale.yaml",
        &counter(
            &lib,
            "\"--stallAfter\", \"200\", \"--rate\", \"20\"",
            ", execution.checkpointing.timeout: \"1s\", \
             execution.checkpointing.tolerable-failed-checkpoints: \"100000\"",
            "health: {checkpoint_age: 15s}\n",
        ),
    );
    git.commit_push("a job whose checkpoints stop completing");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &url, "stale", &[]).await;
    let start = std::time::Instant::now();
    while !d.has_event("stale", "unhealthy") {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for unhealthy: {:#?}",
            d.events("stale")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let event = d
        .events("stale")
        .into_iter()
        .find(|e| e.kind == "unhealthy")
        .unwrap();
    assert!(
        event.message.contains("latest completed checkpoint")
            && event
                .message
                .contains("more than health.checkpoint_age 15s"),
        "{event:?}"
    );
    let stats = rest(&url, &format!("/jobs/{jid1}/checkpoints")).await;
    assert!(
        stats["counts"]["completed"].as_i64().unwrap_or(0) > 0
            && stats["counts"]["failed"].as_i64().unwrap_or(0) > 0,
        "checkpoints completed, then failed: {stats}"
    );
    wait_for("a restart by jobkeeper", Duration::from_secs(60), || {
        d.has_event("stale", "restarted") && d.runs("stale").len() >= 2
    })
    .await;
    let runs = d.runs("stale");
    let first = runs.iter().find(|r| r.id == run1).unwrap();
    assert!(
        first
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("unhealthy"),
        "{runs:#?}"
    );
}

/// Flink serves its job metrics refreshed only every `metrics.fetcher.update-interval` (10 s by
/// default), so the sweep's "latest checkpoint" can be seconds old. A job that checkpoints every
/// 500 ms under a `checkpoint_age` of 3 s would look stalled between two refreshes; the daemon
/// confirms with the fresh checkpoint stats before it calls a job unhealthy, so it never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_age_below_flinks_metric_refresh_raises_no_false_unhealthy() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    git.write(
        "jobs/fresh.yaml",
        &counter(
            &lib,
            "\"--rate\", \"20\"",
            "",
            "health: {checkpoint_age: 3s}\n",
        ),
    );
    git.commit_push("a job checkpointing every 500 ms, checked against 3 s");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid) = running(&d, &url, "fresh", &[]).await;
    // Two and a half of Flink's metric refreshes, a sweep every second.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        !d.has_event("fresh", "unhealthy"),
        "a job checkpointing every 500 ms was called unhealthy: {:#?}",
        d.events("fresh")
    );
    assert_eq!(flink_state(&url, &jid).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.runs("fresh").len(), 1, "never restarted");
}
