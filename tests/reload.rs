//! SIGHUP reloads against the daemon running in-process (`daemon::run_with` with its config
//! file): after a reload to a new `secrets_dir` the HTTP API still masks a running job's log
//! with the values it was given (never the new folder's) and takes the new API token; a flink env's new URL is taken at once (its jobs move there, see tests/flink.rs), and
//! an env that changes its engine kind waits for a restart.
//!
//! A SIGHUP reaches every daemon of the process, so the tests here run one at a time.

mod common;

use std::time::Duration;

use common::{Daemon, Git, config, reload, start_reloadable};

/// One test at a time: a SIGHUP reaches every daemon of the process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn get(d: &Daemon, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{}{path}", d.addr))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post_sync(d: &Daemon, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/api/v1/sync", d.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The log of `job` once it has a line with `marker`.
async fn log_with(d: &Daemon, job: &str, marker: &str) -> String {
    let mut log = String::new();
    for _ in 0..500 {
        log = get(d, &format!("/api/v1/jobs/{job}/logs")).await.1;
        if log.contains(marker) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no `{marker}` in the log of {job}: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_reload_logs_stay_masked_with_the_values_runs_were_given_and_the_new_token_is_taken()
 {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (dir, value) in [
        ("old-secrets", "old-value-1234"),
        ("new-secrets", "new-value-5678"),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join("pw"), value).unwrap();
    }
    std::fs::write(root.join("old-token"), "old-token-abc\n").unwrap();
    std::fs::write(root.join("new-token"), "new-token-xyz\n").unwrap();
    let git = Git::new(root, "config");
    // The job prints the secret it was given (from the old folder) and the new folder's value.
    git.write(
        "jobs/talker.yaml",
        "env: dev\nparams:\n  command: [sh, -c, \"echo given ${secret:pw}; echo other new-value-5678; exec sleep 600\"]\n",
    );
    git.commit_push("a job printing a secret");
    let extra = |secrets: &str, token: &str| {
        format!(
            "secrets_dir: {}\napi_token_file: {}\n",
            root.join(secrets).display(),
            root.join(token).display()
        )
    };
    let before = config(root, &git, &extra("old-secrets", "old-token"));
    let mut d = start_reloadable(root, &before).await;
    d.running_pid("talker").await;

    let log = log_with(&d, "talker", "other").await;
    assert_eq!(log, "given ***\nother new-value-5678\n");
    assert_eq!(post_sync(&d, "old-token-abc").await, 202);
    assert_eq!(post_sync(&d, "new-token-xyz").await, 401);

    let msg = reload(
        &d,
        root,
        &config(root, &git, &extra("new-secrets", "new-token")),
    )
    .await;
    assert!(
        msg.ends_with("reloaded"),
        "nothing waits for a restart: {msg}"
    );
    // The run was given the old value: its log is masked with it, whatever the folder says now.
    let log = log_with(&d, "talker", "other").await;
    assert_eq!(
        log, "given ***\nother new-value-5678\n",
        "masked with the value the run was given"
    );
    assert_eq!(post_sync(&d, "new-token-xyz").await, 202);
    assert_eq!(post_sync(&d, "old-token-abc").await, 401);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_moves_a_flink_envs_jobs_to_its_new_url_and_a_changed_engine_kind_waits_for_a_restart()
 {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &common::sleeper(600));
    git.commit_push("a");
    let cluster = |port: u16| {
        config(root, &git, "").replace(
            "envs:\n",
            &format!(
                "envs:\n  stream: {{engine: flink, flink: {{url: \"http://127.0.0.1:{port}\"}}}}\n"
            ),
        )
    };
    let (old, new) = (common::free_port(), common::free_port());
    let mut d = start_reloadable(root, &cluster(old)).await;
    let pid = d.running_pid("a").await;

    let msg = reload(&d, root, &cluster(new)).await;
    assert!(
        msg.ends_with(
            "the cluster of env `stream` changed: its jobs move to the new cluster through a savepoint"
        ),
        "{msg}"
    );
    let (_, body) = get(&d, "/api/v1/clusters").await;
    assert!(
        body.contains(&format!("http://127.0.0.1:{new}")) && !body.contains(&format!(":{old}\"")),
        "the env names its new cluster at once: {body}"
    );
    // A flink env made local needs a restart: until then it keeps its cluster.
    let local = cluster(new).replace(
        &format!("stream: {{engine: flink, flink: {{url: \"http://127.0.0.1:{new}\"}}}}"),
        "stream: {engine: local}",
    );
    let msg = reload(&d, root, &local).await;
    assert!(
        msg.contains("the engine of env `stream` changed: restart the daemon to use it"),
        "{msg}"
    );
    assert_eq!(
        d.running_pid("a").await,
        pid,
        "jobs of other envs untouched by the reloads"
    );
    d.stop().await;
}
