//! Unit tests of alerts: content, routing, bodies and signatures of every webhook format, and
//! the dispatcher's folding, against in-process notifiers where no network is needed.

use std::path::Path;
use std::sync::Mutex;

use chrono::{TimeZone, Utc};

use super::dispatch::deliver;
use super::webhook::{self, Format, check_answer, dingtalk_sign, feishu_sign};
use super::*;
use crate::event::Attempt;
use crate::settings::Settings;
use crate::store::{CommitRecord, NewEvent};

const CONFIG: &str = r#"
repo: {url: /tmp/none}
state_dir: /tmp/state
listen: 127.0.0.1:7070
alerts_throttle: 1m
envs:
  prod: {engine: local, alerts: [oncall]}
  dev: {engine: local}
alerts:
  oncall:
    webhook: {url: "http://127.0.0.1:9/hook", format: json}
  chat:
    webhook: {url: "http://127.0.0.1:9/chat", format: slack}
    on: [failed, deployed]
"#;

fn settings() -> Settings {
    crate::settings::parse("config.yaml", CONFIG.as_bytes(), Path::new("/tmp")).unwrap()
}

fn sample() -> Alert {
    Alert {
        job: Some("clicks".into()),
        env: Some("prod".into()),
        engine: Some("local".into()),
        event: EventKind::Failed,
        time: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
        commit: Some(AlertCommit {
            id: "0123456789abcdef0123456789abcdef01234567".into(),
            short: "01234567".into(),
            author: "Ann Operator <ann@example.com>".into(),
            subject: "raise parallelism".into(),
        }),
        run_id: Some(17),
        engine_job_id: Some("4242".into()),
        attempt: Some((2, 5)),
        reason: "exit code 3; last lines:\nboom: topic missing".into(),
        link: status_link("127.0.0.1:7070".parse().unwrap(), Some("team/clicks")),
        repeats: 0,
        repeats_since: None,
        jobs: 0,
        event_id: 9,
    }
}

#[test]
fn subject_and_text_carry_every_fact() {
    let a = sample();
    assert_eq!(a.subject(), "[jobkeeper] prod/clicks failed (attempt 2/5)");
    let t = a.text();
    for want in [
        "job:        clicks",
        "env:        prod",
        "engine:     local",
        "event:      failed",
        "time:       2023-11-14 22:13:20.000 UTC",
        "commit:     01234567 raise parallelism (Ann Operator <ann@example.com>)",
        "engine job: 4242 (run 17)",
        "attempt:    2/5",
        "status:     http://127.0.0.1:7070/jobs/team/clicks",
        "reason:\nexit code 3; last lines:\nboom: topic missing\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let mut folded = a.clone();
    folded.repeats = 3;
    folded.repeats_since = Some(Utc.timestamp_millis_opt(1_700_000_001_000).unwrap());
    assert_eq!(
        folded.subject(),
        "[jobkeeper] prod/clicks failed (attempt 2/5), 3 more times since 2023-11-14 22:13:21 UTC"
    );
}

#[tokio::test]
async fn a_failed_runs_alert_names_the_attempt_that_started_it() {
    let s = settings();
    let store = Store::in_memory().unwrap();
    let run = store
        .insert_run(
            "j",
            Default::default(),
            "h",
            (crate::engine::EngineKind::Local, "dev"),
            Path::new("/tmp"),
        )
        .await
        .unwrap();
    let restarted = NewEvent {
        job: Some("j"),
        run_id: Some(run),
        attempt: Some(Attempt { n: 2, of: 3 }),
        ..NewEvent::new(EventKind::Restarted, "resubmitted (attempt 2/3)")
    };
    store.event(&restarted).await.unwrap();
    let failed = NewEvent {
        job: Some("j"),
        run_id: Some(run),
        ..NewEvent::new(EventKind::Failed, "exit 1")
    };
    let id = store.event(&failed).await.unwrap();
    let ev = store.events(Some("j"), 1).await.unwrap().remove(0);
    assert_eq!(ev.id, id);
    let (alert, _) = alert_for(&s, &store, &ev).await.expect("an alert");
    assert_eq!(alert.attempt, Some((2, 3)));
    let started = NewEvent {
        job: Some("j"),
        ..NewEvent::new(EventKind::Started, "run submitted")
    };
    store.event(&started).await.unwrap();
    let ev = store.events(Some("j"), 1).await.unwrap().remove(0);
    assert!(
        alert_for(&s, &store, &ev).await.is_none(),
        "started is no alert"
    );
}

#[test]
fn status_links() {
    assert_eq!(
        status_link("[::1]:7070".parse().unwrap(), None),
        "http://[::1]:7070/"
    );
    assert!(!status_link("0.0.0.0:7070".parse().unwrap(), None).contains("0.0.0.0"));
    assert_eq!(
        status_link("127.0.0.1:7070".parse().unwrap(), Some("team a/clicks")),
        "http://127.0.0.1:7070/jobs/team%20a/clicks"
    );
}

#[tokio::test]
async fn alert_links_start_with_external_url() {
    let mut s = settings();
    assert_eq!(
        job_link(&s, Some("team/clicks")),
        status_link(s.listen, Some("team/clicks"))
    );
    s.external_url = Some("https://jobkeeper.ops.example.com".into());
    assert_eq!(
        job_link(&s, Some("team/clicks")),
        "https://jobkeeper.ops.example.com/jobs/team/clicks"
    );
    assert_eq!(job_link(&s, None), "https://jobkeeper.ops.example.com/");
    let store = Store::in_memory().unwrap();
    store
        .event(&NewEvent::new(EventKind::RepoUnreachable, "down"))
        .await
        .unwrap();
    let ev = store.events(None, 1).await.unwrap().remove(0);
    let (alert, _) = alert_for(&s, &store, &ev).await.expect("an alert");
    assert_eq!(alert.link, "https://jobkeeper.ops.example.com/");
    s.external_url = Some("https://ops.example.com/jobkeeper/".into());
    assert_eq!(
        job_link(&s, Some("web")),
        "https://ops.example.com/jobkeeper/jobs/web"
    );
}

#[tokio::test]
async fn routing_uses_the_job_then_the_env_then_the_on_filter() {
    let s = settings();
    let store = Store::in_memory().unwrap();
    let commit = CommitRecord {
        id: "c1".into(),
        author: "Ann <a@x>".into(),
        subject: "s".into(),
    };
    let mut updates = Vec::new();
    for (name, env, alerts) in [
        ("p", "prod", None),
        ("d", "dev", None),
        ("own", "dev", Some("chat")),
    ] {
        let mut yaml = format!("env: {env}\nparams:\n  command: [\"true\"]\n");
        if let Some(a) = alerts {
            yaml.push_str(&format!("alerts: [{a}]\n"));
        }
        let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
        updates.push(crate::store::DesiredUpdate::Spec {
            name: name.into(),
            path: format!("jobs/{name}.yaml"),
            spec: serde_json::to_string(&spec).unwrap(),
            hash: "h".into(),
        });
    }
    store.apply_commit(&commit, &updates, &[]).await.unwrap();
    let ev = |job: Option<&str>, kind: &str| {
        let id = store
            .blocking()
            .event(&NewEvent {
                job,
                commit_id: Some("c1"),
                ..NewEvent::new(EventKind::parse(kind).unwrap(), "why")
            })
            .unwrap();
        store
            .blocking()
            .events(None, 1)
            .unwrap()
            .into_iter()
            .find(|e| e.id == id)
            .unwrap()
    };
    let chans = async |job: Option<&str>, kind: &str| {
        alert_for(&s, &store, &ev(job, kind)).await.map(|(_, c)| c)
    };
    assert_eq!(
        chans(Some("p"), "failed").await,
        Some(vec!["oncall".to_string()])
    );
    assert_eq!(
        chans(Some("p"), "deployed").await,
        None,
        "info events only when listed"
    );
    assert_eq!(
        chans(Some("d"), "failed").await,
        None,
        "dev has no channels"
    );
    assert_eq!(
        chans(Some("own"), "failed").await,
        Some(vec!["chat".to_string()])
    );
    assert_eq!(
        chans(Some("own"), "deployed").await,
        Some(vec!["chat".to_string()])
    );
    assert_eq!(
        chans(Some("own"), "gave_up").await,
        None,
        "chat's on: leaves it out"
    );
    assert_eq!(chans(Some("p"), "planned").await, None);
    assert_eq!(
        chans(None, "repo_unreachable").await,
        Some(vec!["oncall".to_string()]),
        "daemon-wide: every channel that wants it"
    );
    assert_eq!(
        chans(Some("never-valid"), "invalid").await,
        Some(vec!["oncall".to_string()]),
        "a job with no known spec: every channel that wants the event"
    );
    let (a, _) = alert_for(&s, &store, &ev(Some("p"), "failed"))
        .await
        .unwrap();
    assert_eq!(a.env.as_deref(), Some("prod"));
    assert_eq!(a.engine.as_deref(), Some("local"));
    let c = a.commit.unwrap();
    assert_eq!((c.author.as_str(), c.subject.as_str()), ("Ann <a@x>", "s"));
}

fn notifier(format: &str, secret: Option<&str>) -> webhook::WebhookNotifier {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = secret.map(|s| {
        let p = dir.path().join("secret");
        std::fs::write(&p, format!("{s}\n")).unwrap();
        p
    });
    webhook::WebhookNotifier::new(&crate::settings::WebhookSettings {
        url: "https://robot.example.com/send?access_token=abc".into(),
        format: format.into(),
        secret_file,
    })
    .unwrap()
}

// Signature vectors computed independently with Python's hmac:
//   base64(hmac.new(b"SEC0123456789abcdef", b"1700000000123\nSEC0123456789abcdef", sha256))
//   base64(hmac.new(b"1700000000\nSEC0123456789abcdef", b"", sha256))
const SECRET: &str = "SEC0123456789abcdef";
const DINGTALK_SIGN: &str = "V9VP5gL2WDsEZvZQHnbd9k4n+p56ibcLMh+WKMZRQas=";
const FEISHU_SIGN: &str = "PiO7POLlSx/DM2qf8Dy/XCWeJK3exVnevp5G99LEN2M=";

#[test]
fn signatures_match_independent_vectors() {
    assert_eq!(dingtalk_sign(1_700_000_000_123, SECRET), DINGTALK_SIGN);
    assert_eq!(feishu_sign(1_700_000_000, SECRET), FEISHU_SIGN);
}

#[test]
fn dingtalk_body_is_markdown_and_signed_in_the_query() {
    let (url, body) = notifier("dingtalk", Some(SECRET)).request(&sample(), 1_700_000_000_123);
    assert_eq!(
        url.as_str(),
        "https://robot.example.com/send?access_token=abc&timestamp=1700000000123\
         &sign=V9VP5gL2WDsEZvZQHnbd9k4n%2Bp56ibcLMh%2BWKMZRQas%3D"
    );
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(
        body["markdown"]["title"],
        "[jobkeeper] prod/clicks failed (attempt 2/5)"
    );
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.starts_with("### [jobkeeper] prod/clicks failed (attempt 2/5)\n"));
    assert!(
        text.contains("- **commit**: 01234567 raise parallelism"),
        "{text}"
    );
    assert!(text.contains("```\nexit code 3; last lines:\nboom: topic missing\n```"));
    let (url, _) = notifier("dingtalk", None).request(&sample(), 1);
    assert_eq!(
        url.query(),
        Some("access_token=abc"),
        "unsigned without a secret"
    );
}

#[test]
fn feishu_body_is_text_and_signed_in_the_body() {
    let (url, body) = notifier("feishu", Some(SECRET)).request(&sample(), 1_700_000_000_999);
    assert_eq!(url.query(), Some("access_token=abc"));
    assert_eq!(body["msg_type"], "text");
    assert_eq!(body["timestamp"], "1700000000");
    assert_eq!(body["sign"], FEISHU_SIGN);
    assert_eq!(body["content"]["text"], sample().text());
}

#[test]
fn slack_wecom_and_json_bodies() {
    let (_, slack) = notifier("slack", None).request(&sample(), 0);
    assert_eq!(slack, serde_json::json!({"text": sample().text()}));
    let (_, wecom) = notifier("wecom", None).request(&sample(), 0);
    assert_eq!(wecom["msgtype"], "markdown");
    assert_eq!(wecom["markdown"]["content"], sample().markdown());
    let (_, j) = notifier("json", Some("ignored")).request(&sample(), 0);
    assert_eq!(j["job"], "clicks");
    assert_eq!(j["event"], "failed");
    assert_eq!(j["attempt"], serde_json::json!([2, 5]));
    assert_eq!(j["engine_job_id"], "4242");
    assert_eq!(j["commit"]["short"], "01234567");
    assert_eq!(j["reason"], "exit code 3; last lines:\nboom: topic missing");
    assert!(j.get("sign").is_none() && j.get("params").is_none());
}

#[test]
fn robot_error_codes_are_failures() {
    assert!(check_answer(Format::Slack, 200, "ok").is_ok());
    assert!(check_answer(Format::Slack, 200, "invalid_token").is_err());
    assert!(check_answer(Format::DingTalk, 200, r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
    let e = check_answer(
        Format::DingTalk,
        200,
        r#"{"errcode":310000,"errmsg":"sign not match"}"#,
    )
    .unwrap_err();
    assert!(
        e.contains("errcode 310000") && e.contains("sign not match"),
        "{e}"
    );
    assert!(check_answer(Format::WeCom, 200, r#"{"errcode":93000}"#).is_err());
    assert!(check_answer(Format::Feishu, 200, r#"{"code":0,"msg":"success"}"#).is_ok());
    assert!(check_answer(Format::Feishu, 200, r#"{"StatusCode":0}"#).is_ok());
    assert!(
        check_answer(
            Format::Feishu,
            200,
            r#"{"code":19021,"msg":"sign match fail"}"#
        )
        .is_err()
    );
    assert!(check_answer(Format::Json, 204, "").is_ok());
    assert!(
        check_answer(Format::Json, 500, "oops")
            .unwrap_err()
            .contains("HTTP 500")
    );
}

/// Records what it is asked to send (an in-process notifier: the dispatcher's folding and
/// claims are what is tested here; real SMTP and HTTP are in tests/alerts.rs).
struct Recorder(Arc<Mutex<Vec<Alert>>>);

#[async_trait]
impl Notifier for Recorder {
    async fn send(&self, alert: &Alert) -> Result<Delivery, AlertError> {
        self.0.lock().unwrap().push(alert.clone());
        Ok(Delivery {
            answer: "ok".into(),
        })
    }
}

/// A dispatcher with a 300 ms throttle whose `oncall` channel records what it is sent.
fn recording_dispatcher(
    store: &Store,
) -> (
    Dispatcher,
    Arc<Mutex<Vec<Alert>>>,
    Arc<AlertCounters>,
    CancellationToken,
) {
    let mut s = settings();
    s.alerts_throttle = Duration::from_millis(300);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (tx, trx) = mpsc::channel(16);
    let counters = Arc::new(AlertCounters::default());
    let cancel = CancellationToken::new();
    tokio::spawn(deliver(
        "oncall/webhook".into(),
        Arc::new(Recorder(sent.clone())),
        trx,
        store.clone(),
        counters.clone(),
        AlerterOptions::default(),
        cancel.clone(),
    ));
    let d = Dispatcher {
        batches: Default::default(),
        batch_due: HashMap::new(),
        channels: Some(s.alerts.clone()),
        settings: Live::new(s),
        store: store.clone(),
        targets: HashMap::from([(
            "oncall".to_string(),
            vec![("oncall/webhook".to_string(), tx)],
        )]),
        counters: counters.clone(),
        first_new: 0,
        keys: HashMap::new(),
        opts: AlerterOptions::default(),
        cancel: cancel.clone(),
    };
    (d, sent, counters, cancel)
}

/// Repeats of a job's alert were still sent 30 s after its file was removed.
#[tokio::test]
async fn folded_repeats_of_a_removed_job_are_dropped() {
    let store = Store::in_memory().unwrap();
    let commit = |id: &str| CommitRecord {
        id: id.into(),
        author: "Ann <a@x>".into(),
        subject: "s".into(),
    };
    let yaml = "env: prod\nparams:\n  command: [\"true\"]\n";
    let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
    let update = crate::store::DesiredUpdate::Spec {
        name: "p".into(),
        path: "jobs/p.yaml".into(),
        spec: serde_json::to_string(&spec).unwrap(),
        hash: "h".into(),
    };
    store
        .apply_commit(&commit("c1"), &[update], &[])
        .await
        .unwrap();
    let (mut d, sent, _, cancel) = recording_dispatcher(&store);
    for i in 0..3 {
        let id = store
            .event(&NewEvent {
                job: Some("p"),
                commit_id: Some("c1"),
                ..NewEvent::new(EventKind::Failed, &format!("exit {i}"))
            })
            .await
            .unwrap();
        let ev = store.events(Some("p"), 5).await.unwrap();
        d.on_event(ev.iter().find(|e| e.id == id).unwrap()).await;
    }
    let removed = crate::store::DesiredUpdate::Removed { name: "p".into() };
    store
        .apply_commit(&commit("c2"), &[removed], &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    d.flush_due().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the first alert: {sent:#?}");
    assert_eq!(sent[0].reason, "exit 0");
    cancel.cancel();
}

#[tokio::test]
async fn repeats_within_the_throttle_fold_into_one_later_alert() {
    let store = Store::in_memory().unwrap();
    let (mut d, sent, counters, cancel) = recording_dispatcher(&store);
    let failed = |msg: &str| {
        let id = store
            .blocking()
            .event(&NewEvent::new(EventKind::RepoUnreachable, msg))
            .unwrap();
        store
            .blocking()
            .events(None, 1)
            .unwrap()
            .into_iter()
            .find(|e| e.id == id)
            .unwrap()
    };
    let first = failed("first");
    d.on_event(&first).await;
    d.on_event(&first).await; // the same event twice is claimed once
    for i in 0..3 {
        d.on_event(&failed(&format!("again {i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        sent.lock().unwrap().len(),
        1,
        "repeats wait for the throttle"
    );
    assert_eq!(counters.folded.load(Ordering::Relaxed), 3);
    d.flush_due().await;
    assert_eq!(sent.lock().unwrap().len(), 1, "not due yet");
    tokio::time::sleep(Duration::from_millis(350)).await;
    d.flush_due().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].reason, "first");
    assert_eq!(sent[1].reason, "again 2");
    assert_eq!(sent[1].repeats, 3);
    assert!(
        sent[1].title().contains("3 more times since"),
        "{}",
        sent[1].title()
    );
    assert_eq!(store.alerts_sent(10).await.unwrap().len(), 2);
    cancel.cancel();
}

#[tokio::test]
async fn a_reload_changing_the_channels_and_throttle_applies_at_the_next_event() {
    let live = Live::new(settings());
    let cancel = CancellationToken::new();
    let mut d = Dispatcher {
        batches: Default::default(),
        batch_due: HashMap::new(),
        settings: live.clone(),
        store: Store::in_memory().unwrap(),
        targets: HashMap::new(),
        channels: None,
        counters: Arc::new(AlertCounters::default()),
        first_new: i64::MAX,
        keys: HashMap::new(),
        opts: AlerterOptions::default(),
        cancel: cancel.clone(),
    };
    d.refresh_targets();
    let mut names: Vec<&String> = d.targets.keys().collect();
    names.sort();
    assert_eq!(names, ["chat", "oncall"]);
    assert_eq!(d.throttle_ms(), 60_000);

    let mut next = settings();
    next.alerts.remove("chat");
    next.alerts_throttle = Duration::from_secs(5);
    live.replace(next);
    let ev = EventRow {
        id: 1,
        time: 0,
        job: None,
        run_id: None,
        kind: EventKind::RepoUnreachable,
        attempt: None,
        message: "down".into(),
        commit_id: None,
        author: None,
        subject: None,
    };
    d.on_event(&ev).await; // older than the alerter: not alerted, but the targets follow the config
    assert_eq!(d.targets.keys().collect::<Vec<_>>(), ["oncall"]);
    assert_eq!(d.throttle_ms(), 5_000);
    cancel.cancel();
}

#[test]
fn a_long_reason_is_cut_to_each_services_byte_limit_keeping_its_end() {
    // 4,000 characters of Chinese (the clip every alert gets) are 12,000 bytes: over WeCom's
    // 4,096-byte markdown limit (errcode 40058 before). A reason of 42,000 bytes is over every
    // service's limit.
    let mut alert = sample();
    alert.reason = format!("{}\nCaused by: 主题不存在", "错误".repeat(7000));
    for format in [
        Format::WeCom,
        Format::DingTalk,
        Format::Feishu,
        Format::Slack,
    ] {
        let n = notifier(format_word(format), Some("s3cr3t"));
        let (_, body) = n.request(&alert, 1_700_000_000_000);
        let max = format.max_bytes().unwrap();
        let size = match format {
            Format::WeCom => body["markdown"]["content"].as_str().unwrap().len(),
            Format::DingTalk => {
                body["markdown"]["text"].as_str().unwrap().len()
                    + body["markdown"]["title"].as_str().unwrap().len()
            }
            Format::Slack => body["text"].as_str().unwrap().len(),
            _ => body.to_string().len(),
        };
        assert!(size <= max, "{format:?}: {size} bytes > {max}");
        let text = body.to_string();
        assert!(
            text.contains("Caused by: 主题不存在"),
            "{format:?} keeps the end"
        );
        assert!(text.contains("clicks"), "{format:?} keeps the facts");
    }
    // A reason that fits is left whole.
    let short = sample();
    let (_, body) = notifier("wecom", None).request(&short, 0);
    assert!(
        body["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("exit code 3; last lines:\nboom: topic missing")
    );
}

fn format_word(f: Format) -> &'static str {
    match f {
        Format::WeCom => "wecom",
        Format::DingTalk => "dingtalk",
        Format::Feishu => "feishu",
        Format::Slack => "slack",
        Format::Json => "json",
    }
}

/// Header injection: a commit subject, author and reason holding CR/LF and header lines (all
/// written by whoever pushes) end up in the body, never as headers of the mail.
#[test]
fn line_breaks_in_what_a_commit_says_never_make_mail_headers() {
    let notifier = super::email::EmailNotifier::new(&crate::settings::EmailSettings {
        smtp: "smtp://127.0.0.1:2525".into(),
        starttls: false,
        user: None,
        password_file: None,
        from: "jobkeeper@example.com".into(),
        to: vec!["oncall@example.com".into()],
    })
    .unwrap();
    let mut a = sample();
    let commit = a.commit.as_mut().unwrap();
    commit.subject = "fix\r\nBcc: thief@evil.example\r\nX-Injected: 1".into();
    commit.author = "Eve\r\nCc: thief@evil.example <eve@example.com>".into();
    a.reason = "boom\r\n\r\nSubject: forged\nBcc: thief@evil.example".into();
    let raw = String::from_utf8(notifier.message(&a).unwrap().formatted()).unwrap();
    let (headers, body) = raw.split_once("\r\n\r\n").unwrap();
    for forged in ["Bcc:", "Cc:", "X-Injected", "forged", "thief"] {
        assert!(
            !headers.contains(forged),
            "{forged:?} in the headers:\n{headers}"
        );
    }
    assert_eq!(headers.matches("\r\nSubject:").count(), 1, "{headers}");
    assert!(headers.contains("To: oncall@example.com"), "{headers}");
    assert!(
        body.contains("thief"),
        "the text is kept in the body:\n{body}"
    );
}
