//! Faults of the config repo end to end, with real components (a bare repo and its clone, the
//! daemon, a webhook listener and an SMTP sink): a branch deleted and pushed again, commits
//! libgit2 cannot parse, a commit that removes every job (`git mv jobs jobz`) held until a
//! trailer allows it, and one commit with 2,000 invalid files alerted once.

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::time::Duration;

use common::*;
use receivers::{HttpReceiver, SmtpSink};

/// A webhook channel (json) getting `on` events.
fn hook_channel(url: &str, on: &str) -> String {
    format!(
        "alerts_throttle: 1s\nalerts:\n  oncall:\n    webhook: {{url: \"{url}\", format: json}}\n    on: [{on}]\n"
    )
}

fn alerts_of(r: &HttpReceiver, event: &str) -> Vec<serde_json::Value> {
    r.received()
        .iter()
        .map(|x| x.json())
        .filter(|j| j["event"] == event)
        .collect()
}

async fn wait_applied(d: &Daemon, commit: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        d.store.applied_commit().unwrap().as_deref() == Some(commit)
    })
    .await;
}

async fn failed_fetches(d: &Daemon) -> f64 {
    metric(
        &d.get("/metrics").await.1,
        "jobkeeper_git_fetches_total{result=\"failed\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_config_branch_is_one_repo_unreachable_alert_naming_it_and_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    let c1 = git.commit_push("add a");
    let hook = HttpReceiver::start().await;
    let mut d = start(
        root,
        &config(root, &git, &hook_channel(&hook.url(), "repo_unreachable")),
    )
    .await;
    wait_applied(&d, &c1, "the first commit").await;
    let pid = d.running_pid("a").await;

    git_in(&git.bare, &["update-ref", "-d", "refs/heads/main"]);
    let before = failed_fetches(&d).await;
    wait_for("three failed fetches", Duration::from_secs(40), || {
        futures_lite_block(failed_fetches(&d)) >= before + 3.0
    })
    .await;
    let events = events_of(&d.store, "repo_unreachable");
    assert_eq!(events.len(), 1, "one event per outage: {events:#?}");
    assert!(
        events[0].message.contains("branch `main`"),
        "{}",
        events[0].message
    );
    wait_for("the alert", Duration::from_secs(10), || {
        alerts_of(&hook, "repo_unreachable").len() == 1
    })
    .await;
    let alert = &alerts_of(&hook, "repo_unreachable")[0];
    assert!(
        alert["reason"].as_str().unwrap().contains("branch `main`"),
        "{alert}"
    );
    assert_eq!(d.running_pid("a").await, pid, "what runs keeps running");

    git.write("jobs/b.yaml", &sleeper(600));
    let c2 = git.commit_push("add b: the branch is back");
    wait_applied(&d, &c2, "the commit that brought the branch back").await;
    d.running_pid("b").await;
    assert_eq!(events_of(&d.store, "repo_reachable").len(), 1);
    assert_eq!(events_of(&d.store, "repo_unreachable").len(), 1);
    assert_eq!(alerts_of(&hook, "repo_unreachable").len(), 1);
    d.stop().await;
}

/// Blocks on a future from inside a `wait_for` condition (the daemon's runtime has another
/// worker thread).
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Commits what is staged as a commit whose author has no e-mail (git accepts it; libgit2
/// does not parse it); returns its id.
fn commit_without_email(git: &Git, subject: &str) -> String {
    git.git(&["add", "-A"]);
    let tree = git.git(&["write-tree"]);
    let parent = git.git(&["rev-parse", "HEAD"]);
    let raw = format!(
        "tree {tree}\nparent {parent}\nauthor Nobody 1700000000 +0000\n\
         committer Ann Operator <ann@example.com> 1700000000 +0000\n\n{subject}\n"
    );
    let file = git.work.join(".git").join("raw-commit");
    std::fs::write(&file, raw).unwrap();
    let id = git.git(&[
        "hash-object",
        "--literally",
        "-t",
        "commit",
        "-w",
        file.to_str().unwrap(),
    ]);
    git.git(&["reset", "-q", "--soft", &id]);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_an_author_without_email_is_named_and_every_later_commit_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    let c1 = git.commit_push("add a");
    let mut d = start(root, &config(root, &git, "")).await;
    wait_applied(&d, &c1, "the first commit").await;

    git.write("jobs/b.yaml", &sleeper(600));
    let bad = commit_without_email(&git, "add b, author without e-mail");
    git.write("jobs/c.yaml", &sleeper(600));
    let c3 = git.commit_push("add c after it");
    wait_applied(&d, &c3, "the good commit after the malformed one").await;
    d.running_pid("b").await;
    d.running_pid("c").await;
    let events = events_of(&d.store, "commit_malformed");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.commit_id.as_deref(), Some(bad.as_str()));
    assert!(e.message.contains(&bad[..8]), "{}", e.message);
    assert!(
        e.message.contains("failed to parse signature"),
        "{}",
        e.message
    );
    assert!(events_of(&d.store, "repo_unreachable").is_empty());

    // The malformed commit as the tip: applied, its author kept as written.
    git.write("jobs/d.yaml", &sleeper(600));
    let bad2 = commit_without_email(&git, "add d as the tip");
    git.push();
    wait_applied(&d, &bad2, "the malformed tip").await;
    d.running_pid("d").await;
    let commit = d.store.commit(&bad2).unwrap().unwrap();
    assert_eq!(commit.author, "Nobody 1700000000 +0000");
    assert_eq!(commit.subject, "add d as the tip");
    assert_eq!(events_of(&d.store, "commit_malformed").len(), 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_jobs_folder_away_is_held_until_a_trailer_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    for j in ["a", "b", "c", "d"] {
        git.write(&format!("jobs/{j}.yaml"), &sleeper(600));
    }
    let c1 = git.commit_push("four jobs");
    let hook = HttpReceiver::start().await;
    let mut d = start(
        root,
        &config(root, &git, &hook_channel(&hook.url(), "commit_held")),
    )
    .await;
    wait_applied(&d, &c1, "the first commit").await;
    let mut pids = Vec::new();
    for j in ["a", "b", "c", "d"] {
        pids.push(d.running_pid(j).await);
    }

    git.git(&["mv", "jobs", "jobz"]);
    let c2 = git.commit_push("git mv jobs jobz");
    wait_for("the commit_held event", Duration::from_secs(30), || {
        !events_of(&d.store, "commit_held").is_empty()
    })
    .await;
    let held = &events_of(&d.store, "commit_held")[0];
    assert_eq!(held.commit_id.as_deref(), Some(c2.as_str()));
    assert!(held.message.contains(&c2[..8]), "{}", held.message);
    assert!(
        held.message.contains("removes 4 of 4 jobs"),
        "{}",
        held.message
    );
    wait_for("the alert", Duration::from_secs(10), || {
        alerts_of(&hook, "commit_held").len() == 1
    })
    .await;
    assert_eq!(
        d.store.applied_commit().unwrap().as_deref(),
        Some(c1.as_str())
    );
    for (j, pid) in ["a", "b", "c", "d"].iter().zip(&pids) {
        assert_eq!(d.running_pid(j).await, *pid, "{j} keeps running");
    }
    // `plan` says what the daemon does with it.
    let ctx = jobkeeper::spec::Context {
        settings: None,
        files: None,
    };
    let max = jobkeeper::settings::MaxRemovals::default();
    let p = jobkeeper::changes::plan_between(&git.work, &c1, &c2, "jobs", ctx, max).unwrap();
    let text = jobkeeper::plan::render_text(&p);
    assert!(
        text.contains("held: removes 4 of 4 jobs, more than max_removals (50%)"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&jobkeeper::plan::render_json(&p, &c1, &c2)).unwrap();
    assert_eq!(json["held"], true, "{json}");
    let md = jobkeeper::plan::render_markdown(&p, &c1, &c2);
    assert!(md.contains("held: removes 4 of 4 jobs"), "{md}");

    git.git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "retire the old folder",
        "-m",
        "Jobkeeper-Allow-Removals: jobs move to jobz and are retired",
    ]);
    let c3 = git.git(&["rev-parse", "HEAD"]);
    git.push();
    wait_applied(&d, &c3, "the commit with the trailer").await;
    wait_for("every job stopped", Duration::from_secs(30), || {
        ["a", "b", "c", "d"]
            .iter()
            .all(|j| d.live_runs(j).is_empty())
    })
    .await;
    assert_eq!(
        events_of(&d.store, "commit_held").len(),
        1,
        "one event per held tip"
    );
    assert_eq!(alerts_of(&hook, "commit_held").len(), 1);
    let p = jobkeeper::changes::plan_between(&git.work, &c1, &c3, "jobs", ctx, max).unwrap();
    let text = jobkeeper::plan::render_text(&p);
    assert!(
        text.contains(&format!("allowed by commit {}", &c3[..8])),
        "{text}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_invalid_files_in_one_commit_are_one_alert_and_an_event_each() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    let c1 = git.commit_push("add a");
    let hook = HttpReceiver::start().await;
    let sink = SmtpSink::start(&root.join("mail"));
    let extra = format!(
        "alerts_throttle: 1s\nalerts:\n  oncall:\n    email: {{smtp: \"{}\", starttls: false, \
         from: jobkeeper@example.com, to: [oncall@example.com]}}\n    webhook: {{url: \"{}\", \
         format: json}}\n    on: [invalid]\n",
        sink.url(),
        hook.url()
    );
    let mut d = start(root, &config(root, &git, &extra)).await;
    wait_applied(&d, &c1, "the first commit").await;

    for i in 0..2000 {
        git.write(&format!("jobs/bad-{i:04}.yaml"), "env: dev\nparams: [\n");
    }
    let c2 = git.commit_push("2,000 invalid files");
    wait_applied(&d, &c2, "the commit of invalid files").await;
    assert_eq!(
        events_of(&d.store, "invalid").len(),
        2000,
        "an event per job"
    );
    // A later commit with one invalid file: its alert comes after the folded one.
    git.write("jobs/late.yaml", "env: dev\nparams: [\n");
    let c3 = git.commit_push("one more invalid file");
    wait_applied(&d, &c3, "the later commit").await;
    wait_for("both webhook alerts", Duration::from_secs(30), || {
        alerts_of(&hook, "invalid")
            .iter()
            .any(|a| a["job"] == "late")
    })
    .await;
    wait_for("both mails", Duration::from_secs(30), || {
        sink.messages().iter().any(|m| m.contains("late invalid"))
    })
    .await;
    let alerts = alerts_of(&hook, "invalid");
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let folded = &alerts[0];
    assert_eq!(folded["jobs"], 2000, "{folded}");
    let reason = folded["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2000 job files are invalid in commit"),
        "{reason}"
    );
    assert!(reason.contains("- bad-0000: "), "{reason}");
    assert!(reason.contains("… and 1950 more"), "{reason}");
    let mails = sink.messages();
    assert_eq!(mails.len(), 2, "one mail per commit");
    assert!(mails[0].contains("2000 jobs invalid"), "{}", mails[0]);
    d.stop().await;
}
