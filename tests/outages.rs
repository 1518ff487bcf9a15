//! Outages end to end, with real components: the config repo served by `git daemon` (stopped and
//! started again, the repository moved away and back) or by a local path (moved away and back);
//! a Flink env whose cluster does not answer; SMTP and webhook endpoints that refuse connections;
//! the state folder on a small tmpfs filled by a build. Alerts go to a real HTTP listener.
//!
//! A Flink cluster stopped and started again (recovery, no duplicate submission on the cluster)
//! is covered by `tests/flink.rs` (`a_cluster_outage_is_one_alert_no_failure_and_no_duplicate_submission`).

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use receivers::{HttpReceiver, free_port};

/// A webhook channel (json) getting `on` events, with a short throttle so two outages a few
/// seconds apart are two alerts.
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

async fn failed_fetches(d: &Daemon) -> f64 {
    metric(
        &d.get("/metrics").await.1,
        "jobkeeper_git_fetches_total{result=\"failed\"}",
    )
}

/// Waits until `n` more fetches failed than `from`.
async fn more_failed_fetches(d: &Daemon, from: f64, n: f64) {
    let limit = Duration::from_secs(40);
    let start = Instant::now();
    while failed_fetches(d).await < from + n {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {n} failed fetches: {}\n{:#?}",
            d.get("/metrics").await.1,
            d.store.events(None, 20).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_applied(d: &Daemon, commit: &str, what: &str) {
    // Fetches back off while the repo is gone (doubling from `poll`), so recovery may take a
    // few intervals.
    wait_for(what, Duration::from_secs(60), || {
        d.store.applied_commit().unwrap().as_deref() == Some(commit)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_config_repo_outage_is_one_alert_running_jobs_stay_and_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    let c1 = git.commit_push("add a");
    let mut gd = GitDaemon::start(root).await;
    let hook = HttpReceiver::start().await;
    let extra = hook_channel(&hook.url(), "repo_unreachable");
    let mut d = start(
        root,
        &config_with(root, &gd.url("config.git"), "1s", &extra),
    )
    .await;
    wait_applied(&d, &c1, "the first commit").await;
    let pid = d.running_pid("a").await;

    // Outage 1: the server is gone (connection refused). One event and one alert, however
    // many fetches fail; the running job is left alone.
    let before = failed_fetches(&d).await;
    gd.stop();
    more_failed_fetches(&d, before, 3.0).await;
    assert_eq!(events_of(&d.store, "repo_unreachable").len(), 1);
    wait_for("the alert", Duration::from_secs(10), || {
        alerts_of(&hook, "repo_unreachable").len() == 1
    })
    .await;
    let alert = &alerts_of(&hook, "repo_unreachable")[0];
    assert!(alert["job"].is_null(), "{alert}");
    let reason = alert["reason"].as_str().unwrap();
    assert!(
        reason.contains(&gd.url("config.git")) && reason.contains("cannot fetch"),
        "{reason}"
    );
    // A commit pushed during the outage.
    git.write("jobs/b.yaml", &sleeper(600));
    let c2 = git.commit_push("add b while the server is down");
    more_failed_fetches(&d, before, 4.0).await;
    assert_eq!(d.runs("a").len(), 1, "a was not restarted");
    assert_eq!(d.running_pid("a").await, pid);
    assert!(d.job("b").is_none(), "nothing of c2 is known yet");
    assert_eq!(d.get("/healthz").await.0, 200);

    // Back: the commit pushed meanwhile is applied, a still runs as it was.
    gd.resume().await;
    wait_applied(&d, &c2, "the commit pushed during the outage").await;
    d.running_pid("b").await;
    assert_eq!(d.running_pid("a").await, pid);
    assert_eq!(events_of(&d.store, "repo_reachable").len(), 1);

    // Outage 2: the server answers, but the repository is gone (moved away).
    let away = root.join("config.git.away");
    std::fs::rename(&git.bare, &away).unwrap();
    wait_for(
        "the second repo_unreachable",
        Duration::from_secs(20),
        || events_of(&d.store, "repo_unreachable").len() == 2,
    )
    .await;
    let before = failed_fetches(&d).await;
    // A commit pushed to the repository where it now is.
    git.write("jobs/a.yaml", &sleeper(601));
    let c3 = git.commit("change a while the repository is away");
    git.git(&["push", "-q", away.to_str().unwrap(), "HEAD:main"]);
    more_failed_fetches(&d, before, 2.0).await;
    assert_eq!(events_of(&d.store, "repo_unreachable").len(), 2);
    assert_eq!(d.running_pid("a").await, pid, "a untouched during outage 2");
    std::fs::rename(&away, &git.bare).unwrap();
    wait_applied(&d, &c3, "the commit made during outage 2").await;
    wait_for("a redeployed", Duration::from_secs(20), || {
        let live = d.live_runs("a");
        live.len() == 1 && pid_of(&live[0]) != pid
    })
    .await;
    assert!(cmdline(d.running_pid("a").await).contains("601"));
    assert_eq!(events_of(&d.store, "repo_reachable").len(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alerts_of(&hook, "repo_unreachable").len(),
        2,
        "one alert per outage"
    );
    let sent = d.store.alerts_sent(100).unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|s| s.status == "sent"), "{sent:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_config_repo_moved_away_and_back_is_one_alert_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &sleeper(600));
    let c1 = git.commit_push("add a");
    let hook = HttpReceiver::start().await;
    let extra = hook_channel(&hook.url(), "repo_unreachable");
    let mut d = start(root, &config(root, &git, &extra)).await;
    wait_applied(&d, &c1, "the first commit").await;
    let pid = d.running_pid("a").await;

    let away = root.join("config.git.away");
    std::fs::rename(&git.bare, &away).unwrap();
    let before = failed_fetches(&d).await;
    more_failed_fetches(&d, before, 3.0).await;
    assert_eq!(events_of(&d.store, "repo_unreachable").len(), 1);
    git.write("jobs/b.yaml", &sleeper(600));
    let c2 = git.commit("add b while the repository is away");
    git.git(&["push", "-q", away.to_str().unwrap(), "HEAD:main"]);
    assert_eq!(d.running_pid("a").await, pid);
    assert_eq!(d.runs("a").len(), 1);

    std::fs::rename(&away, &git.bare).unwrap();
    wait_applied(&d, &c2, "the commit made while the repository was away").await;
    d.running_pid("b").await;
    assert_eq!(d.running_pid("a").await, pid);
    wait_for("the alert", Duration::from_secs(10), || {
        alerts_of(&hook, "repo_unreachable").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alerts_of(&hook, "repo_unreachable").len(), 1);
    assert_eq!(events_of(&d.store, "repo_unreachable").len(), 1);
    assert_eq!(events_of(&d.store, "repo_reachable").len(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flink_cluster_that_does_not_answer_is_waited_for_with_one_alert_and_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A project holding a jar (its content does not matter: nothing will take it).
    let project = Git::new(root, "project");
    project.write("app.jar", "not really a jar\n");
    project.commit_push("a jar");
    let git = Git::new(root, "config");
    git.write(
        "jobs/stream.yaml",
        &format!(
            "project: {{repo: {}, artifact: app.jar}}\nenv: prod\nparams: {{main_class: com.example.Main}}\n",
            project.bare.display()
        ),
    )
    .write("jobs/local.yaml", &sleeper(600));
    git.commit_push("a flink job and a local one");
    let hook = HttpReceiver::start().await;
    // Nothing listens on the cluster's port: every call is refused.
    let dead = free_port();
    let extra = format!(
        "  prod: {{engine: flink, flink: {{url: \"http://127.0.0.1:{dead}\"}}}}\nhealth: {{interval: 1s}}\n{}",
        hook_channel(
            &hook.url(),
            "engine_unreachable, failed, deploy_failed, gave_up"
        )
    );
    let mut d = start(root, &config(root, &git, &extra)).await;
    let local_pid = d.running_pid("local").await;
    wait_for("engine_unreachable", Duration::from_secs(20), || {
        !events_of(&d.store, "engine_unreachable").is_empty()
    })
    .await;
    // Several retries and health sweeps later: still waiting, with one run recorded (the one
    // whose id was chosen before the submit), no failure, one event and one alert.
    d.sweeps_pass(6, Duration::from_secs(30)).await;
    let job = d.job("stream").unwrap();
    assert_eq!(job.state, "deploying", "{job:?}");
    let runs = d.runs("stream");
    assert_eq!(runs.len(), 1, "no second submission: {runs:?}");
    for kind in ["failed", "deploy_failed", "gave_up", "restarted"] {
        assert!(
            !d.has_event("stream", kind),
            "{kind}: {:#?}",
            d.events("stream")
        );
    }
    assert_eq!(events_of(&d.store, "engine_unreachable").len(), 1);
    wait_for("the alert", Duration::from_secs(10), || {
        !alerts_of(&hook, "engine_unreachable").is_empty()
    })
    .await;
    let received = hook.received();
    assert_eq!(received.len(), 1, "one alert in all: {received:?}");
    let alert = received[0].json();
    assert!(
        alert["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead}")),
        "{alert}"
    );
    // The local engine is not affected.
    assert_eq!(d.running_pid("local").await, local_pid);
    assert_eq!(d.get("/healthz").await.0, 200);
    d.stop().await;
}

/// A service job that fails at once.
const FAILING: &str = "env: dev\nalerts: [oncall]\nparams:\n  command: [sh, -c, \"echo 'no such topic' >&2; exit 3\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_smtp_and_webhook_connections_are_retried_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/clicks.yaml", FAILING)
        .write("jobs/ok.yaml", &sleeper(600));
    git.commit_push("add clicks and ok");
    // Nothing listens on either port (connection refused); the webhook's comes up later.
    let (smtp_port, hook_port) = (free_port(), free_port());
    let extra = format!(
        "alerts_throttle: 1h\nalerts:\n  oncall:\n    email: {{smtp: \"smtp://127.0.0.1:{smtp_port}\", \
         starttls: false, from: jobkeeper@example.com, to: [oncall@example.com]}}\n    webhook: \
         {{url: \"http://127.0.0.1:{hook_port}/hook\", format: json}}\n    on: [failed]\n"
    );
    let mut d = start(root, &config(root, &git, &extra)).await;
    let ok_pid = d.running_pid("ok").await;
    wait_for("the first failure", Duration::from_secs(10), || {
        d.has_event("clicks", "failed")
    })
    .await;
    let failed_at = Instant::now();
    let text = d.get("/metrics").await.1;
    assert_eq!(metric(&text, "jobkeeper_alerts_sent_total"), 0.0);

    // While every try fails: the restart policy runs on time, the API answers at once, a new
    // commit applies.
    wait_for("gave up on time", Duration::from_secs(12), || {
        d.has_event("clicks", "gave_up")
    })
    .await;
    let t = Instant::now();
    assert_eq!(d.get("/healthz").await.0, 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    git.write("jobs/more.yaml", &sleeper(600));
    let c2 = git.commit_push("add more");
    wait_for("c2 applied", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap() == Some(c2.clone())
    })
    .await;
    d.running_pid("more").await;

    // The webhook comes up while its alert is still being retried (tries after 0, 1, 3, 7 and
    // 15 s): delivered late. SMTP never does: given up after 5 tries.
    let hook_up = failed_at + Duration::from_secs(4);
    tokio::time::sleep_until(hook_up.into()).await;
    let hook = HttpReceiver::start_on(hook_port).await;
    let t = Instant::now();
    while alerts_of(&hook, "failed").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no late webhook: {:#?} {:#?}",
            d.store.alerts_sent(10).unwrap(),
            hook.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for("the email given up", Duration::from_secs(30), || {
        d.store
            .alerts_sent(10)
            .unwrap()
            .iter()
            .any(|r| r.target == "oncall/email" && r.status == "failed")
    })
    .await;
    let rows = d.store.alerts_sent(10).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let email = rows.iter().find(|r| r.target == "oncall/email").unwrap();
    assert_eq!((email.status.as_str(), email.attempts), ("failed", 5));
    assert!(
        email.answer.contains("onnection refused"),
        "{}",
        email.answer
    );
    let web = rows.iter().find(|r| r.target == "oncall/webhook").unwrap();
    assert_eq!(web.status, "sent", "{web:?}");
    assert!((2..=5).contains(&web.attempts), "{web:?}");
    let text = d.get("/metrics").await.1;
    assert_eq!(metric(&text, "jobkeeper_alerts_sent_total"), 1.0, "{text}");
    assert_eq!(metric(&text, "jobkeeper_alerts_failed_total"), 1.0);
    let tries = metric(&text, "jobkeeper_alert_tries_failed_total");
    assert_eq!(tries, (5 + web.attempts - 1) as f64, "{text}");
    assert_eq!(alerts_of(&hook, "failed").len(), 1);
    assert_eq!(d.running_pid("ok").await, ok_pid);
    assert_eq!(d.get("/healthz").await.0, 200);
    d.stop().await;
}

/// A tmpfs mounted for the test; unmounted on drop (lazily if something still holds it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "jobkeeper-test",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A job with a project whose build command is `build`.
fn built_job(project: &Path, build: &str) -> String {
    format!(
        "project: {{repo: {}, build: \"{build}\", artifact: app.txt}}\nenv: dev\n\
         params: {{command: [sh, -c, \"cat {{artifact}}; exec sleep 600\"]}}\n",
        project.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_fills_the_state_disk_fails_clearly_and_the_daemon_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The whole state folder (store, mirrors, builds, artifacts, logs) on a 16 MiB disk.
    let _disk = Tmpfs::mount(&root.join("state"), "16m").unwrap_or_else(|e| {
        panic!("cannot mount a tmpfs for the state folder ({e}); this test needs root")
    });
    let project = Git::new(root, "project");
    project.write("README", "a project\n");
    project.commit_push("a project");
    let git = Git::new(root, "config");
    git.write(
        "jobs/app.yaml",
        &built_job(&project.bare, "echo one > app.txt"),
    )
    .write("jobs/other.yaml", &sleeper(600));
    git.commit_push("app one");
    let mut d = start(root, &config(root, &git, "")).await;
    let pid = d.running_pid("app").await;
    let other = d.running_pid("other").await;

    // The new build writes until the disk is full.
    git.write(
        "jobs/app.yaml",
        &built_job(
            &project.bare,
            "echo two > app.txt && head -c 100000000 /dev/zero > filler.bin",
        ),
    );
    let c2 = git.commit_push("app two, whose build fills the disk");
    wait_for("build_failed", Duration::from_secs(30), || {
        d.has_event("app", "build_failed")
    })
    .await;
    let ev = d
        .events("app")
        .into_iter()
        .find(|e| e.kind == "build_failed")
        .unwrap();
    assert!(
        ev.message.contains("No space left on device"),
        "{}",
        ev.message
    );
    assert_eq!(ev.commit_id.as_deref(), Some(c2.as_str()));
    let (code, log) = d.get("/api/v1/jobs/app/logs?build=latest").await;
    assert_eq!(code, 200);
    assert!(log.contains("No space left on device"), "{log}");
    // The running version and the other job are untouched; the daemon answers.
    assert_eq!(d.running_pid("app").await, pid);
    assert_eq!(d.runs("app").len(), 1);
    assert_eq!(d.running_pid("other").await, other);
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_eq!(d.get("/readyz").await.0, 200);
    // The failed build's checkout is gone: the space is free again.
    let avail = nix::sys::statvfs::statvfs(&d.state_dir).unwrap();
    let free = avail.blocks_available() * avail.fragment_size();
    assert!(free > 8 * 1024 * 1024, "{free} bytes free after the build");

    // A fixed build applies: the new version replaces the old one.
    git.write(
        "jobs/app.yaml",
        &built_job(&project.bare, "echo three > app.txt"),
    );
    let c3 = git.commit_push("app three");
    wait_for("c3 running", Duration::from_secs(30), || {
        d.store.applied_commit().unwrap() == Some(c3.clone())
            && d.live_runs("app")
                .first()
                .is_some_and(|r| pid_of(r) != pid && alive(pid_of(r)))
    })
    .await;
    assert!(
        !alive(pid) || cmdline(pid).is_empty(),
        "the old run stopped"
    );
    let run = d.live_runs("app")[0].id;
    wait_for("the new run's output", Duration::from_secs(10), || {
        std::fs::read_to_string(d.state_dir.join(format!("logs/app/{run}.log")))
            .is_ok_and(|l| l.contains("three"))
    })
    .await;
    assert_eq!(d.running_pid("other").await, other);
    let conn = rusqlite::Connection::open(d.state_dir.join("jobkeeper.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    d.stop().await;
}
