//! Rollback of a bad new version on the local engine, end to end with real processes and a
//! real git repo: a version deployed by a commit that fails before `ready_within` is rolled
//! back to the previous one, which runs again; the bad one is not started again until a new
//! commit, not even after a daemon restart. A version that outlived `ready_within`, and a new
//! job (nothing to go back to), follow the restart policy as before.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A service job that prints `tag` then runs `rest` (a shell snippet).
fn job(tag: &str, rest: &str, extra: &str) -> String {
    format!(
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"echo {tag}; {rest}\"]\n\
         restart: {{attempts: 3, window: 1h, backoff: 200ms, max_backoff: 200ms}}\n{extra}"
    )
}

fn runs_of(d: &Daemon, name: &str, hash: &str) -> usize {
    d.runs(name).iter().filter(|r| r.spec_hash == hash).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_fails_before_ready_within_is_rolled_back_until_a_new_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let guard = "rollback: true\nready_within: 1m\n";
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", guard));
    let v1 = git.commit_push("v1");
    let cfg = config(tmp.path(), &git, "health: {interval: 300ms}\n");
    let mut d = start(tmp.path(), &cfg).await;
    let v1_pid = d.running_pid("app").await;
    let v1_hash = d.job("app").unwrap().applied_hash.unwrap();

    git.write("jobs/app.yaml", &job("v2", "sleep 1; exit 4", guard));
    let bad = git.commit_push("v2 fails after a second");
    wait_for("rolled_back", LIMIT, || d.has_event("app", "rolled_back")).await;
    let event = d
        .events("app")
        .into_iter()
        .find(|e| e.kind == "rolled_back")
        .unwrap();
    assert!(
        event.message.contains(&bad[..8]) && event.message.contains("exited with code 4"),
        "the event names the bad commit and why: {event:?}"
    );
    let pid = d.running_pid("app").await;
    assert_ne!(
        pid, v1_pid,
        "v1 was stopped by the upgrade and started again"
    );
    assert!(cmdline(pid).contains("sleep 61"), "{}", cmdline(pid));
    let row = d.job("app").unwrap();
    assert_eq!(row.state, "rolled_back", "{row:?}");
    assert_eq!(row.applied_hash.as_deref(), Some(v1_hash.as_str()));
    let v2_hash = row.desired_hash.clone().unwrap();
    let versions = d.store.versions("app").unwrap();
    assert_eq!(versions.refused_hash.as_deref(), Some(v2_hash.as_str()));
    assert_eq!(versions.refused_commit.as_deref(), Some(bad.as_str()));
    let (code, body) = d.get("/api/v1/jobs/app").await;
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["state"], "rolled_back", "{detail}");
    assert_eq!(
        detail["versions"]["running_hash"],
        v1_hash.as_str(),
        "{detail}"
    );
    assert_eq!(
        detail["versions"]["refused_commit"],
        bad.as_str(),
        "{detail}"
    );

    // The bad version is not tried again: not by the restart policy, not after a daemon restart.
    // Sweeps past the policy's longest backoff (2 s) mark that its chance came and went.
    d.sweeps_pass(8, Duration::from_secs(30)).await;
    assert_eq!(runs_of(&d, "app", &v2_hash), 1, "{:#?}", d.runs("app"));
    d.stop().await;
    let d = start(tmp.path(), &cfg).await;
    let pid = d.running_pid("app").await;
    assert!(cmdline(pid).contains("sleep 61"), "{}", cmdline(pid));
    d.sweeps_pass(8, Duration::from_secs(30)).await;
    assert_eq!(runs_of(&d, "app", &v2_hash), 1, "{:#?}", d.runs("app"));
    assert_eq!(d.job("app").unwrap().state, "rolled_back");

    // `plan` with the daemon's config warns that the change re-applies the refused version, and
    // does not for another one.
    let cfg_path = tmp.path().join("plan-config.yaml");
    std::fs::write(
        &cfg_path,
        cfg.replace("listen: 127.0.0.1:0", &format!("listen: {}", d.addr)),
    )
    .unwrap();
    let plan = |to: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["plan", "--repo"])
            .arg(&git.work)
            .args(["--from", &v1, "--to", to, "--config"])
            .arg(&cfg_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = plan(&bad);
    assert!(
        text.contains("warning: this version was rolled back")
            && text.contains(&bad[..8])
            && text.contains("exited with code 4"),
        "{text}"
    );
    git.write("jobs/app.yaml", &job("v2b", "exec sleep 62", guard));
    let other = git.commit("another version, not pushed");
    let text = plan(&other);
    assert!(!text.contains("rolled back"), "{text}");
    git.git(&["reset", "-q", "--hard", &bad]);

    // `status` and the status page show the refused commit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["status", "--url", &format!("http://{}", d.addr)])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains(&format!("rolled_back (refused {})", &bad[..8])),
        "{out:?}"
    );
    let (code, page) = d.get("/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains(&format!("refused: commit <code>{}</code>", &bad[..8])),
        "{page}"
    );

    // A new commit is deployed, and the job is no longer rolled back.
    git.write("jobs/app.yaml", &job("v3", "exec sleep 63", guard));
    git.commit_push("v3");
    wait_for("v3 running", LIMIT, || {
        d.live_runs("app")
            .first()
            .is_some_and(|r| cmdline(pid_of(r)).contains("sleep 63"))
    })
    .await;
    wait_for("state running", LIMIT, || {
        d.job("app").is_some_and(|j| j.state == "running")
    })
    .await;
    assert_eq!(d.store.versions("app").unwrap().refused_hash, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_ran_past_ready_within_is_restarted_not_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let guard = "rollback: true\nready_within: 1s\n";
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", guard));
    git.commit_push("v1");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    d.running_pid("app").await;
    git.write("jobs/app.yaml", &job("v2", "sleep 2; exit 4", guard));
    git.commit_push("v2 fails after two seconds");
    wait_for("a restart of v2", LIMIT, || d.has_event("app", "restarted")).await;
    let v2_hash = d.job("app").unwrap().desired_hash.unwrap();
    assert_eq!(d.job("app").unwrap().applied_hash, Some(v2_hash.clone()));
    assert!(!d.has_event("app", "rolled_back"), "{:#?}", d.events("app"));
    wait_for("v2 run twice", LIMIT, || runs_of(&d, "app", &v2_hash) >= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_job_that_fails_has_nothing_to_roll_back_to_and_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let extra = "rollback: true\nready_within: 1m\n";
    let file = job("v1", "exit 4", extra).replace("attempts: 3", "attempts: 1");
    git.write("jobs/app.yaml", &file);
    git.commit_push("a new job that fails");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    wait_for("gave_up", LIMIT, || {
        d.job("app").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    assert!(!d.has_event("app", "rolled_back"), "{:#?}", d.events("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_defaults_from_the_env() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", ""));
    git.commit_push("v1");
    let cfg = config(tmp.path(), &git, "").replace(
        "dev: {engine: local,",
        "dev: {engine: local, rollback: true, ready_within: 1m,",
    );
    let d = start(tmp.path(), &cfg).await;
    d.running_pid("app").await;
    git.write("jobs/app.yaml", &job("v2", "exit 4", ""));
    git.commit_push("v2");
    wait_for("rolled_back", LIMIT, || d.has_event("app", "rolled_back")).await;
    let pid = d.running_pid("app").await;
    assert!(cmdline(pid).contains("sleep 61"), "{}", cmdline(pid));
}
