//! What jobkeeper shows of a job's problems, end to end on the local engine with real
//! processes, a real git repo and the real daemon: each condition is derived from what runs and
//! what the latest file asks, shows in the API (`conditions`, `problem`, `?problem=true`,
//! `?state=`), `status` (`--problems`, `--state`), the list page and
//! `jobkeeper_job_problems`, stays while its cause holds (a later event does not hide it, nor
//! does a daemon restart), and clears the moment its cause is gone (a `git revert` of a refused
//! or rolled back version, a fixed file). The refused move between Flink versions is in
//! `tests/flink.rs` (it needs two clusters).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// A service job that prints `tag` then runs `rest` (a shell snippet).
fn job(tag: &str, rest: &str, extra: &str) -> String {
    format!(
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"echo {tag}; {rest}\"]\n\
         restart: {{attempts: 3, window: 1h, backoff: 200ms, max_backoff: 200ms}}\n{extra}"
    )
}

/// The API's view of job `name` in the list.
async fn listed(d: &Daemon, query: &str) -> Vec<Value> {
    let (code, body) = d.get(&format!("/api/v1/jobs{query}")).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["jobs"].as_array().unwrap().clone()
}

async fn view(d: &Daemon, name: &str) -> Value {
    listed(d, "")
        .await
        .into_iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn kinds(job: &Value) -> Vec<String> {
    job["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `jobkeeper status` against `d`, with `args`.
fn status(d: &Daemon, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["status", "--url", &format!("http://{}", d.addr)])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The `jobkeeper_job_problems{problem=...}` figure.
async fn problems_metric(d: &Daemon, problem: &str) -> f64 {
    let (_, text) = d.get("/metrics").await;
    metric(
        &text,
        &format!("jobkeeper_job_problems{{problem=\"{problem}\"}}"),
    )
}

/// Waits until the daemon applied config commit `commit`.
async fn applied(d: &Daemon, commit: &str) {
    let store = d.store.clone();
    wait_for("the commit applied", LIMIT, || {
        store.applied_commit().unwrap().as_deref() == Some(commit)
    })
    .await;
}

/// The trial's `git revert` of a bad `--mode bogus` commit, on the local engine: a version its
/// engine refuses leaves the previous one running with `deploy_failed`; reverting the commit
/// asks again for what runs, which clears it at once, across a daemon restart too. Before, the
/// job showed `running (deploy failed)` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_revert_of_a_refused_version_clears_deploy_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", ""));
    git.commit_push("v1");
    let cfg = config(tmp.path(), &git, "");
    let mut d = start(tmp.path(), &cfg).await;
    d.running_pid("app").await;

    // The engine refuses the new version: its program does not exist.
    git.write(
        "jobs/app.yaml",
        "env: dev\nparams:\n  command: [\"/nonexistent/app\", \"--mode\", \"bogus\"]\n",
    );
    let bad = git.commit_push("run it with --mode bogus");
    wait_for("deploy_failed", LIMIT, || {
        d.has_event("app", "deploy_failed")
    })
    .await;
    // v1 runs again (the run stopped for the upgrade may still be recorded live for a moment
    // after its process ended: it is not the one looked for).
    wait_for("v1 running again", LIMIT, || {
        let live = d.live_runs("app");
        live.len() == 1 && cmdline(pid_of(&live[0])).contains("sleep 61")
    })
    .await;
    let j = view(&d, "app").await;
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(kinds(&j), ["deploy_failed"], "{j}");
    assert_eq!(j["problem"], true, "{j}");
    assert_eq!(j["conditions"][0]["commit"], bad.as_str(), "{j}");
    let problems = listed(&d, "?problem=true").await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(listed(&d, "?state=deploy_failed").await.len(), 1);
    assert_eq!(problems_metric(&d, "deploy_failed").await, 1.0);
    let table = status(&d, &[]);
    assert!(table.contains("running (deploy failed)"), "{table}");
    assert!(status(&d, &["--problems"]).contains("app"), "{table}");

    // `git revert`: the file asks for what runs again.
    git.git(&["revert", "--no-edit", "HEAD"]);
    git.push();
    let revert = git.git(&["rev-parse", "HEAD"]).trim().to_string();
    applied(&d, &revert).await;
    let j = view(&d, "app").await;
    assert_eq!(
        (j["state"].as_str(), kinds(&j)),
        (Some("running"), vec![]),
        "{j}"
    );
    assert_eq!(j["problem"], false, "{j}");
    assert!(listed(&d, "?problem=true").await.is_empty());
    assert_eq!(problems_metric(&d, "deploy_failed").await, 0.0);
    let table = status(&d, &[]);
    assert!(
        !table.contains("deploy failed") && table.contains("running"),
        "{table}"
    );

    // And after a daemon restart.
    d.stop().await;
    let d = start(tmp.path(), &cfg).await;
    d.running_pid("app").await;
    let table = status(&d, &[]);
    assert!(!table.contains("deploy failed"), "{table}");
    assert!(kinds(&view(&d, "app").await).is_empty());
}

/// A rolled back version, then a `git revert` of it: the job shows `running`, not
/// `rolled_back`, at once. Before, it stayed `rolled_back` until another commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_revert_of_a_rolled_back_version_shows_running() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let guard = "rollback: true\nready_within: 1m\n";
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", guard));
    git.commit_push("v1");
    let cfg = config(tmp.path(), &git, "");
    let d = start(tmp.path(), &cfg).await;
    d.running_pid("app").await;
    git.write("jobs/app.yaml", &job("v2", "sleep 1; exit 4", guard));
    let bad = git.commit_push("v2 fails after a second");
    wait_for("rolled_back", LIMIT, || d.has_event("app", "rolled_back")).await;
    d.running_pid("app").await;
    let j = view(&d, "app").await;
    assert_eq!(j["state"], "rolled_back", "{j}");
    assert_eq!(kinds(&j), ["rolled_back"], "{j}");
    assert_eq!(j["conditions"][0]["bad_commit"], bad.as_str(), "{j}");

    git.git(&["revert", "--no-edit", "HEAD"]);
    git.push();
    let revert = git.git(&["rev-parse", "HEAD"]).trim().to_string();
    applied(&d, &revert).await;
    let j = view(&d, "app").await;
    assert_eq!(
        (j["state"].as_str(), kinds(&j)),
        (Some("running"), vec![]),
        "{j}"
    );
    let table = status(&d, &[]);
    assert!(!table.contains("rolled_back"), "{table}");
    // The store agrees once the job's actor saw the revert.
    wait_for("the row running", LIMIT, || {
        d.job("app").is_some_and(|r| r.state == "running")
    })
    .await;
}

/// A job whose latest file is invalid keeps running its last valid version, and is listed by
/// `?state=invalid`, `?problem=true`, `status --problems` and `status --state invalid`, marked
/// on the list page, counted in `jobkeeper_job_problems{problem="invalid"}`, through later
/// events; fixing the file clears it. Before, only its last event said so, and the next event
/// hid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_latest_file_is_listed_marked_and_counted_until_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", ""));
    git.write("jobs/other.yaml", &job("o1", "exec sleep 62", ""));
    git.commit_push("v1");
    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let extra = format!("api_token_file: {}\n", token.display());
    let cfg = config(tmp.path(), &git, &extra);
    let d = start(tmp.path(), &cfg).await;
    d.running_pid("app").await;
    d.running_pid("other").await;

    git.write("jobs/app.yaml", "env: dev\nparams: {command: [sh]\n");
    let broken = git.commit_push("a broken file");
    applied(&d, &broken).await;
    let j = view(&d, "app").await;
    assert_eq!(j["state"], "running", "its last valid version runs: {j}");
    assert_eq!(kinds(&j), ["invalid"], "{j}");
    assert!(
        j["conditions"][0]["problems"]
            .as_str()
            .unwrap()
            .contains("jobs/app.yaml:"),
        "{j}"
    );
    let names = |jobs: Vec<Value>| -> Vec<String> {
        jobs.iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(listed(&d, "?state=invalid").await), ["app"]);
    assert_eq!(names(listed(&d, "?problem=1").await), ["app"]);
    assert_eq!(names(listed(&d, "?state=running").await), ["app", "other"]);
    assert_eq!(problems_metric(&d, "invalid").await, 1.0);
    let only = status(&d, &["--problems"]);
    assert!(only.contains("app") && !only.contains("other"), "{only}");
    let only = status(&d, &["--state", "invalid"]);
    assert!(
        only.contains("running (invalid file)") && !only.contains("other"),
        "{only}"
    );
    let (_, page) = d.get("/").await;
    assert!(
        page.contains("<tr id=\"app\" data-job=\"app\" class=\"problem\"")
            && page.contains("<tr id=\"other\" data-job=\"other\"><td"),
        "{page}"
    );

    // A later event of the job (an operator's restart: `restart_requested`, then `started`)
    // does not hide the invalid file.
    let started = |d: &Daemon| {
        d.events("app")
            .iter()
            .filter(|e| e.kind == "started")
            .count()
    };
    let before = started(&d);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["restart", "app", "--url", &format!("http://{}", d.addr)])
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the restart", LIMIT, || {
        d.has_event("app", "restart_requested") && started(&d) > before
    })
    .await;
    let j = view(&d, "app").await;
    assert_eq!(j["last_event"]["kind"], "started", "{j}");
    assert_eq!(kinds(&j), ["invalid"], "{j}");
    assert!(status(&d, &[]).contains("app: invalid: "));

    // Fixed: cleared.
    git.write("jobs/app.yaml", &job("v1", "exec sleep 61", ""));
    let fixed = git.commit_push("fixed");
    applied(&d, &fixed).await;
    assert!(kinds(&view(&d, "app").await).is_empty());
    assert!(listed(&d, "?state=invalid").await.is_empty());
    assert_eq!(problems_metric(&d, "invalid").await, 0.0);
}
