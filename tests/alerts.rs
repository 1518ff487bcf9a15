//! Alerts end to end: the daemon in-process with real git repos and child processes, a real
//! SMTP server (aiosmtpd) and a real HTTP webhook receiver; `jobkeeper test-alert` as a binary.

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::time::Duration;

use common::*;
use jobkeeper::alert::{Alerter, AlerterOptions};
use jobkeeper::event::EventKind;
use jobkeeper::store::{NewEvent, Store};
use receivers::{HttpReceiver, SmtpSink, free_port};
use tokio_util::sync::CancellationToken;

/// A service job that fails at once, saying why on stderr.
const FAILING: &str = "env: dev\nalerts: [oncall]\nparams:\n  command: [\"sh\", \"-c\", \
                       \"echo 'topic clicks missing' >&2; exit 3\"]\n";

fn alerts_config(throttle: &str, smtp: &str, hook: &str, on: &str) -> String {
    format!(
        "alerts_throttle: {throttle}\nalerts:\n  oncall:\n    email: {{smtp: \"{smtp}\", starttls: false, \
         from: jobkeeper@example.com, to: [oncall@example.com]}}\n    webhook: {{url: \"{hook}\", \
         format: json}}\n    on: [{on}]\n"
    )
}

fn webhooks_of(r: &HttpReceiver, event: &str) -> Vec<serde_json::Value> {
    r.received()
        .iter()
        .map(|x| x.json())
        .filter(|j| j["event"] == event)
        .collect()
}

fn mails_of(s: &SmtpSink, what: &str) -> Vec<String> {
    s.messages()
        .into_iter()
        .filter(|m| m.contains(what))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_alerts_once_by_email_and_webhook_then_folds_its_crash_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(&tmp.path().join("mail"));
    let hook = HttpReceiver::start().await;
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/clicks.yaml", FAILING);
    let c1 = git.commit_push("add clicks");
    let extra = alerts_config("10s", &smtp.url(), &hook.url(), "failed, gave_up, invalid");
    let mut d = start(tmp.path(), &config(tmp.path(), &git, &extra)).await;

    // The first failure: one email and one webhook, naming the job, the commit and the reason.
    wait_for("the first alerts", Duration::from_secs(15), || {
        !webhooks_of(&hook, "failed").is_empty() && !mails_of(&smtp, "clicks failed").is_empty()
    })
    .await;
    let j = &webhooks_of(&hook, "failed")[0];
    assert_eq!(j["job"], "clicks");
    assert_eq!(j["env"], "dev");
    assert_eq!(j["engine"], "local");
    assert_eq!(j["commit"]["id"], c1.as_str());
    assert_eq!(j["commit"]["short"], &c1[..8]);
    assert_eq!(j["commit"]["author"], "Ann Operator <ann@example.com>");
    assert_eq!(j["commit"]["subject"], "add clicks");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("topic clicks missing"),
        "{j}"
    );
    assert!(
        j["engine_job_id"]
            .as_str()
            .is_some_and(|p| p.parse::<u32>().is_ok()),
        "{j}"
    );
    assert!(j["link"].as_str().unwrap().ends_with("/jobs/clicks"));
    let mail = &mails_of(&smtp, "clicks failed")[0];
    assert!(
        mail.contains("Subject: [jobkeeper] dev/clicks failed"),
        "{mail}"
    );
    assert!(mail.contains("X-Envelope-To: oncall@example.com"));
    assert!(
        mail.contains(&format!("commit:     {} add clicks", &c1[..8])),
        "{mail}"
    );
    assert!(mail.contains("topic clicks missing"), "{mail}");

    // The crash loop (4 failures, then gave_up) is folded: the repeats come as one later
    // alert with their count, not one alert each.
    wait_for("gave_up alerted", Duration::from_secs(20), || {
        !webhooks_of(&hook, "gave_up").is_empty()
    })
    .await;
    wait_for("the folded alert", Duration::from_secs(15), || {
        webhooks_of(&hook, "failed").len() >= 2
    })
    .await;
    let failed_events = d
        .events("clicks")
        .iter()
        .filter(|e| e.kind == "failed")
        .count();
    assert!(failed_events >= 3, "a crash loop: {failed_events} failures");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed = webhooks_of(&hook, "failed");
    assert_eq!(
        failed.len(),
        2,
        "one alert, then one folded alert: {failed:?}"
    );
    assert_eq!(failed[1]["repeats"], (failed_events - 1) as u64);
    assert_eq!(
        failed[1]["attempt"],
        serde_json::json!([3, 3]),
        "{}",
        failed[1]
    );
    let folded = mails_of(&smtp, "clicks failed");
    assert_eq!(folded.len(), 2);
    assert!(
        folded[1].contains(&format!("{} more times since", failed_events - 1)),
        "{}",
        folded[1]
    );

    // An invalid job file: an `invalid` alert with path:line:column.
    git.write(
        "jobs/bad.yaml",
        "env: dev\nparams: {command: [\"true\"]}\nrestrat: {}\n",
    );
    let c2 = git.commit_push("add a broken job");
    wait_for("the invalid alerts", Duration::from_secs(15), || {
        !webhooks_of(&hook, "invalid").is_empty() && !mails_of(&smtp, "bad invalid").is_empty()
    })
    .await;
    let inv = &webhooks_of(&hook, "invalid")[0];
    assert_eq!(inv["job"], "bad");
    assert_eq!(inv["commit"]["id"], c2.as_str());
    assert!(
        inv["reason"]
            .as_str()
            .unwrap()
            .contains("jobs/bad.yaml:3:1: unknown field `restrat`"),
        "{inv}"
    );
    assert!(mails_of(&smtp, "bad invalid")[0].contains("jobs/bad.yaml:3:1"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_resends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(&tmp.path().join("mail"));
    let hook = HttpReceiver::start().await;
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/clicks.yaml", FAILING);
    git.commit_push("add clicks");
    let alerts = alerts_config("1h", &smtp.url(), &hook.url(), "failed");
    let cfg = config(
        tmp.path(),
        &git,
        &format!("{alerts}health: {{interval: 300ms}}\n"),
    );
    let mut d = start(tmp.path(), &cfg).await;
    wait_for("the first alerts", Duration::from_secs(15), || {
        webhooks_of(&hook, "failed").len() == 1 && smtp.messages().len() == 1
    })
    .await;
    wait_for("gave up", Duration::from_secs(20), || {
        d.has_event("clicks", "gave_up")
    })
    .await;
    d.stop().await;
    let failures = |store: &jobkeeper::store::Blocking| {
        store
            .events(Some("clicks"), 1000)
            .unwrap()
            .iter()
            .filter(|e| e.kind == "failed")
            .count()
    };
    let before = failures(&d.store);
    drop(d);

    // Started again: the job stays `gave_up` (that survives a restart), and nothing recorded
    // before the restart is sent again.
    let d = start(tmp.path(), &cfg).await;
    wait_for("ready", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap().is_some()
    })
    .await;
    // Sweeps past the policy's longest backoff: a restart had its chance.
    d.sweeps_pass(8, Duration::from_secs(30)).await;
    assert_eq!(
        failures(&d.store),
        before,
        "a job that gave up is not restarted by a daemon restart"
    );
    assert_eq!(d.job("clicks").unwrap().state, "gave_up");
    assert_eq!(webhooks_of(&hook, "failed").len(), 1, "nothing re-sent");
    assert_eq!(smtp.messages().len(), 1, "nothing re-sent");
    let sent = d.store.alerts_sent(100).unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|s| s.status == "sent"), "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_channels_are_retried_and_never_slow_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    hook.answer(&[(500, "internal error")]);
    let dead = format!("smtp://127.0.0.1:{}", free_port());
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/clicks.yaml", FAILING)
        .write("jobs/ok.yaml", &sleeper(300));
    git.commit_push("add clicks and ok");
    let extra = alerts_config("1h", &dead, &hook.url(), "failed, gave_up");
    let mut d = start(tmp.path(), &config(tmp.path(), &git, &extra)).await;
    let started = std::time::Instant::now();

    // The restart policy runs on time (1 s, 2 s, 2 s backoffs: gave_up after ~5 s) although
    // every alert fails, and the API answers at once.
    wait_for("gave up on time", Duration::from_secs(12), || {
        d.has_event("clicks", "gave_up")
    })
    .await;
    let t = std::time::Instant::now();
    assert_eq!(d.get("/healthz").await.0, 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    d.running_pid("ok").await;
    // The 500s are retried.
    wait_for("retries", Duration::from_secs(10), || {
        hook.received()
            .iter()
            .filter(|r| r.json()["event"] == "failed")
            .count()
            >= 3
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    // A new commit still applies promptly.
    git.write("jobs/ok.yaml", &sleeper(301));
    let c2 = git.commit_push("change ok");
    wait_for("c2 applied", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap() == Some(c2.clone())
    })
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tries_and_sent_alerts_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start().await;
    hook.answer(&[(500, "down"), (500, "down"), (200, "ok")]);
    let dead = format!("smtp://127.0.0.1:{}", free_port());
    let cfg = format!(
        "repo: {{url: /nowhere}}\nstate_dir: {}\n{}",
        tmp.path().display(),
        alerts_config("1h", &dead, &hook.url(), "repo_unreachable")
    );
    let settings = jobkeeper::settings::parse("c.yaml", cfg.as_bytes(), tmp.path()).unwrap();
    let store = Store::in_memory().unwrap();
    let cancel = CancellationToken::new();
    let alerter = Alerter::spawn_with(
        jobkeeper::settings::Live::new(settings),
        store.clone(),
        cancel.clone(),
        AlerterOptions {
            tries: 4,
            backoff: Duration::from_millis(50),
            ..AlerterOptions::default()
        },
    )
    .await
    .attach(&store);
    store
        .event(&NewEvent::new(
            EventKind::RepoUnreachable,
            "fetch: connection refused",
        ))
        .await
        .unwrap();
    wait_for("both deliveries ended", Duration::from_secs(10), || {
        let s = alerter.stats();
        s.sent + s.failed == 2
    })
    .await;
    let s = alerter.stats();
    assert_eq!((s.sent, s.failed), (1, 1), "{s:?}");
    assert_eq!(s.failed_tries, 2 + 4, "{s:?}");
    assert_eq!(hook.received().len(), 3);
    let rows = store.alerts_sent(10).await.unwrap();
    let email = rows.iter().find(|r| r.target == "oncall/email").unwrap();
    assert_eq!((email.status.as_str(), email.attempts), ("failed", 4));
    assert!(
        email.answer.contains("onnection refused"),
        "{}",
        email.answer
    );
    let web = rows.iter().find(|r| r.target == "oncall/webhook").unwrap();
    assert_eq!((web.status.as_str(), web.attempts), ("sent", 3));
    assert_eq!(web.answer, "HTTP 200: ok");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_alert_says_what_the_far_end_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(&tmp.path().join("mail"));
    let hook = HttpReceiver::start().await;
    let dead_port = free_port();
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "repo: {{url: /nowhere}}\nstate_dir: state\nalerts:\n  mail:\n    email: {{smtp: \"{}\", starttls: false, \
             from: jobkeeper@example.com, to: [a@example.com]}}\n  hook:\n    webhook: {{url: \
             \"{}\", format: slack}}\n  dead:\n    email: {{smtp: \"smtp://127.0.0.1:{dead_port}\", \
             from: jobkeeper@example.com, to: [a@example.com]}}\n",
            smtp.url(),
            hook.url()
        ),
    )
    .unwrap();
    let run = |channel: &'static str| {
        let cfg = cfg.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
                .args(["test-alert", channel, "--config"])
                .arg(&cfg)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(30), out)
                .await
                .expect("test-alert ends")
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (code, out, _) = run("mail").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("mail/email: sent: 250 2.0.0 Ok: queued as sink-1"),
        "{out}"
    );
    assert!(smtp.messages()[0].contains("Subject: [jobkeeper] test"));

    let (code, out, _) = run("hook").await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "hook/webhook: sent: HTTP 200: ok\n")
    );
    assert!(
        hook.received()[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("this channel works")
    );

    hook.answer(&[(200, "invalid_token")]);
    let (code, out, _) = run("hook").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("hook/webhook: failed: webhook: HTTP 200 but not `ok`: invalid_token"),
        "{out}"
    );

    let (code, out, _) = run("dead").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("dead/email: failed: smtp: "), "{out}");

    let (code, _, err) = run("nope").await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "error: unknown alert channel `nope`; known channels: dead, hook, mail\n"
    );
}
