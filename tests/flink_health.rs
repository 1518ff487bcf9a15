//! Health beyond "running" on a real Flink 2.3.0 cluster (`JOBKEEPER_FLINK_URL`,
//! `JOBKEEPER_FLINK_LIB`, as for tests/flink.rs): a job that Flink's own fixed-delay restart
//! strategy restarts every few seconds is RUNNING most of the time, and is `unhealthy` by its
//! restart figure within `health.restarts.window`; it is then restarted by jobkeeper under the
//! job's restart policy (a `restarted` event, a new run).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs a running Flink 2.3.0 cluster (see tests/flink.rs)"
        )
    })
}

fn setup(root: &Path, url: &str) -> (Git, String) {
    let git = Git::new(root, "config");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/flink-counter");
    git.write(
        "projects/flink-counter/build.sh",
        &std::fs::read_to_string(src.join("build.sh")).unwrap(),
    );
    git.write(
        "projects/flink-counter/src/example/Counter.java",
        &std::fs::read_to_string(src.join("src/example/Counter.java")).unwrap(),
    );
    let extra = format!(
        "  flink: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\nhealth: {{interval: 1s}}\n",
        root.join("savepoints").display()
    );
    let cfg = config(root, &git, &extra);
    (git, cfg)
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
