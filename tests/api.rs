//! End-to-end tests of the HTTP API, git webhooks, `/metrics`, the status page (in headless
//! Chromium) and the `status`, `sync`, `restart` and `logs` commands, against the daemon running
//! in-process on a free loopback port with real git repos.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, Git, GitDaemon, config, config_with, metric, start, wait_for};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const TOKEN: &str = "t0ken-for-tests";
const HOOK_SECRET: &str = "hook-secret-for-tests";
const SECRET_VALUE: &str = "hunter2-very-secret";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(d: &Daemon, path: &str) -> String {
    format!("http://{}{path}", d.addr)
}

async fn get(d: &Daemon, path: &str) -> (u16, String) {
    let r = client().get(url(d, path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(d: &Daemon, path: &str) -> (u16, Value) {
    let (code, body) = get(d, path).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

async fn post(d: &Daemon, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().post(url(d, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    let body = r.text().await.unwrap();
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Secrets and the config's extra lines: API token, webhook secret, secrets folder.
fn secrets(root: &Path) -> String {
    std::fs::write(root.join("api_token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(root.join("webhook_secret"), HOOK_SECRET).unwrap();
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    std::fs::write(root.join("secrets/pw"), SECRET_VALUE).unwrap();
    format!(
        "api_token_file: {}\nwebhook_secret_file: {}\nsecrets_dir: {}\n",
        root.join("api_token").display(),
        root.join("webhook_secret").display(),
        root.join("secrets").display()
    )
}

const SUBJECT: &str = "<script>window.pwned=1</script> add jobs";

/// Three running jobs (one in a folder, one printing a secret) under a commit whose subject holds
/// markup.
async fn fleet(root: &Path) -> (Git, Daemon) {
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/team-a/clicks.yaml", &common::sleeper(600))
        .write(
            "jobs/talker.yaml",
            "env: dev\nparams:\n  command: [sh, -c, \"for i in 1 2 3; do echo line $i; done; echo password ${secret:pw}; exec sleep 600\"]\n",
        );
    git.commit_push(SUBJECT);
    let extra = secrets(root);
    let d = start(root, &config(root, &git, &extra)).await;
    for job in ["web", "team-a/clicks", "talker"] {
        d.running_pid(job).await;
    }
    wait_for("ready", Duration::from_secs(10), || {
        d.store.applied_commit().unwrap().is_some()
    })
    .await;
    (git, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_job_logs_sync_restart_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (_git, mut d) = fleet(tmp.path()).await;

    assert_eq!(get(&d, "/healthz").await.0, 200);
    assert_eq!(get(&d, "/readyz").await.0, 200);

    // The list.
    let (code, v) = get_json(&d, "/api/v1/jobs").await;
    assert_eq!(code, 200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["applied_commit"]["subject"], SUBJECT);
    let names: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["talker", "team-a/clicks", "web"]);
    let web = &v["jobs"][2];
    assert_eq!(web["state"], "running");
    assert_eq!(web["env"], "dev");
    assert_eq!(web["engine"], "local");
    assert_eq!(web["restarts"], 0);
    assert_eq!(web["commit"]["author"], "Ann Operator <ann@example.com>");
    assert_eq!(web["commit"]["short"].as_str().unwrap().len(), 8);
    assert_eq!(web["last_event"]["kind"], "deployed");

    // One job, its name URL-encoded.
    let (code, v) = get_json(&d, "/api/v1/jobs/team-a%2Fclicks").await;
    assert_eq!(code, 200);
    assert_eq!(v["name"], "team-a/clicks");
    assert_eq!(v["runs"][0]["state"], "running");
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deployed", "planned"], "latest first");
    let (code, v) = get_json(&d, "/api/v1/jobs/nope").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (404, Some("no job named `nope`"))
    );
    let (code, _) = get_json(&d, "/api/v1/nothing-here").await;
    assert_eq!(code, 404);

    // Logs: the latest run by default, secrets masked, tail bounded.
    let mut log = String::new();
    for _ in 0..250 {
        log = get(&d, "/api/v1/jobs/talker/logs").await.1;
        if log.contains("password") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log, "line 1\nline 2\nline 3\npassword ***\n");
    let run = d.runs("talker")[0].id;
    let (code, tail) = get(&d, &format!("/api/v1/jobs/talker/logs?run={run}&tail=2")).await;
    assert_eq!((code, tail.as_str()), (200, "line 3\npassword ***\n"));
    for (path, want) in [
        ("/api/v1/jobs/talker/logs?run=99999", 404),
        ("/api/v1/jobs/talker/logs?run=abc", 400),
        ("/api/v1/jobs/talker/logs?tail=x", 400),
        ("/api/v1/jobs/talker/logs?build=latest", 404),
        ("/api/v1/jobs/talker/logs?build=first", 400),
        ("/api/v1/jobs/nope/logs", 404),
    ] {
        assert_eq!(get(&d, path).await.0, want, "{path}");
    }
    let web_run = d.runs("web")[0].id;
    assert_eq!(
        get(&d, &format!("/api/v1/jobs/talker/logs?run={web_run}"))
            .await
            .0,
        404,
        "a run of another job"
    );
    for (_, v) in [
        get_json(&d, "/api/v1/jobs").await,
        get_json(&d, "/api/v1/jobs/talker").await,
    ] {
        assert!(
            !v.to_string().contains(SECRET_VALUE),
            "no secret in the API"
        );
    }

    // POSTs need the token.
    for token in [None, Some("wrong"), Some("")] {
        let (code, v) = post(&d, "/api/v1/sync", token).await;
        assert_eq!(code, 401, "{token:?}");
        assert!(v["error"].is_string());
        assert_eq!(post(&d, "/api/v1/jobs/web/restart", token).await.0, 401);
    }
    assert!(
        !d.store
            .events(None, 100)
            .unwrap()
            .iter()
            .any(|e| e.kind == "api_sync")
    );
    let (code, v) = post(&d, "/api/v1/sync", Some(TOKEN)).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("sync requested")));
    let synced = d.store.events(None, 100).unwrap();
    let ev = synced.iter().find(|e| e.kind == "api_sync").unwrap();
    assert!(ev.message.contains("127.0.0.1"), "{}", ev.message);

    // Restart: audited, a new run.
    assert_eq!(
        post(&d, "/api/v1/jobs/nope/restart", Some(TOKEN)).await.0,
        404
    );
    let before = d.running_pid("team-a/clicks").await;
    let (code, v) = post(&d, "/api/v1/jobs/team-a%2Fclicks/restart", Some(TOKEN)).await;
    assert_eq!((code, v["job"].as_str()), (202, Some("team-a/clicks")));
    wait_for("a new run", Duration::from_secs(20), || {
        let live = d.live_runs("team-a/clicks");
        live.len() == 1 && common::pid_of(&live[0]) != before
    })
    .await;
    assert!(!common::alive(before) || common::cmdline(before).is_empty());
    // An operator's restart is a start of its own: not a restart after a failure, so it is
    // not counted in `restarts` (the trial saw it counted).
    let events = d.events("team-a/clicks");
    assert_eq!(events[0].kind, "started");
    assert!(
        events[0]
            .message
            .contains("restart asked for by the API from 127.0.0.1")
    );
    assert!(events.iter().any(|e| e.kind == "restart_requested"));
    assert!(!events.iter().any(|e| e.kind == "restarted"), "{events:#?}");
    let (_, v) = get_json(&d, "/api/v1/jobs/team-a%2Fclicks").await;
    assert_eq!(v["restarts"], 0);

    // A push payload as large as GitHub sends (a 2,048-commit push is 2.2 MB) is read. (One over
    // 25 MiB is refused before anything reads it: tests/security.rs, with a length and chunked.)
    let mut push = br#"{"ref":"refs/heads/main","commits":["#.to_vec();
    while push.len() < 2_300_000 {
        push.extend_from_slice(
            br#"{"id":"0123456789abcdef0123456789abcdef01234567","message":"m"},"#,
        );
    }
    push.extend_from_slice(br#"{"id":"x"}]}"#);
    let r = client()
        .post(url(&d, "/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sign(&push))
        .body(push)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        202,
        "a push to the config branch: fetch"
    );

    // /metrics is valid Prometheus text.
    let r = client().get(url(&d, "/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    promtool_check(&text).await;
    for line in [
        "jobkeeper_jobs{state=\"running\"} 3",
        "jobkeeper_jobs{state=\"failed\"} 0",
        "jobkeeper_alerts_sent_total 0",
        "jobkeeper_alerts_failed_total 0",
        "jobkeeper_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    // The operator's restart above is not a restart after a failure.
    assert!(
        !text.contains("jobkeeper_restarts_total{job=\"team-a/clicks\"}"),
        "{text}"
    );
    let applied = d.store.applied_commit().unwrap().unwrap();
    assert!(text.contains(&format!(
        "jobkeeper_applied_commit_info{{commit=\"{applied}\"}} 1"
    )));
    assert!(metric(&text, "jobkeeper_git_fetches_total{result=\"ok\"}") >= 1.0);
    assert!(metric(&text, "jobkeeper_reconcile_duration_seconds_count") >= 1.0);
    assert!(!text.contains(TOKEN) && !text.contains(SECRET_VALUE));
    d.stop().await;
}

/// `promtool check metrics` on `text`; fails when promtool is missing.
async fn promtool_check(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed to check /metrics ({e}); install Debian's `prometheus` package (scripts/test.sh does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool answers within 30 s")
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_clears_gave_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write(
        "jobs/crash.yaml",
        "env: dev\nparams:\n  command: [sh, -c, \"exit 3\"]\nrestart: {attempts: 1, window: 1h, backoff: 0s}\n",
    );
    git.commit_push("a job that always fails");
    let extra = format!("{}health: {{interval: 200ms}}\n", secrets(root));
    let mut d = start(root, &config(root, &git, &extra)).await;
    wait_for("gave_up", Duration::from_secs(20), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("crash").len();
    d.sweeps_pass(3, Duration::from_secs(20)).await;
    assert_eq!(
        d.runs("crash").len(),
        runs,
        "no more restarts after gave_up"
    );
    assert_eq!(
        post(&d, "/api/v1/jobs/crash/restart", Some(TOKEN)).await.0,
        202
    );
    wait_for(
        "gave up again after one more restart",
        Duration::from_secs(20),
        || {
            d.runs("crash").len() >= runs + 2
                && d.job("crash").is_some_and(|j| j.state == "gave_up")
        },
    )
    .await;
    let events = d.events("crash");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "started" && e.message.contains("restart asked for by"))
    );
    assert_eq!(events.iter().filter(|e| e.kind == "gave_up").count(), 2);
    // One restart after a failure before each gave_up; the operator's restart is not one.
    assert_eq!(d.store.restart_counts().unwrap().get("crash"), Some(&2));
    d.stop().await;
}

/// A GitHub `push` event as GitHub sends it (fields trimmed to the usual set).
fn github_push(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "repository": {
            "id": 123456, "node_id": "R_kgDOexample", "name": "jobs", "full_name": "ops/jobs",
            "private": true, "owner": {"name": "ops", "login": "ops", "id": 42},
            "html_url": "https://github.com/ops/jobs", "default_branch": "main",
            "clone_url": "https://github.com/ops/jobs.git", "ssh_url": "git@github.com:ops/jobs.git"
        },
        "pusher": {"name": "ann", "email": "ann@example.com"},
        "sender": {"login": "ann", "id": 7, "type": "User"},
        "created": false, "deleted": false, "forced": false, "base_ref": null,
        "compare": format!("https://github.com/ops/jobs/compare/{before}...{after}"),
        "commits": [{
            "id": after, "tree_id": "0000000000000000000000000000000000000000", "distinct": true,
            "message": "add a job", "timestamp": "2026-11-25T10:00:00+08:00",
            "url": format!("https://github.com/ops/jobs/commit/{after}"),
            "author": {"name": "Ann Operator", "email": "ann@example.com", "username": "ann"},
            "committer": {"name": "Ann Operator", "email": "ann@example.com", "username": "ann"},
            "added": ["jobs/new.yaml"], "removed": [], "modified": []
        }],
        "head_commit": {"id": after, "message": "add a job"}
    }))
    .unwrap()
}

/// A GitLab `Push Hook` (or `Tag Push Hook`) body as GitLab sends it.
fn gitlab_push(kind: &str, git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object_kind": kind, "event_name": kind,
        "before": before, "after": after, "ref": git_ref, "ref_protected": true,
        "checkout_sha": after, "message": null,
        "user_id": 4, "user_name": "Ann Operator", "user_username": "ann",
        "user_email": "", "user_avatar": "https://gitlab.example.com/uploads/avatar.png",
        "project_id": 15,
        "project": {
            "id": 15, "name": "jobs", "description": "", "web_url": "https://gitlab.example.com/ops/jobs",
            "git_ssh_url": "git@gitlab.example.com:ops/jobs.git",
            "git_http_url": "https://gitlab.example.com/ops/jobs.git",
            "namespace": "ops", "visibility_level": 0, "path_with_namespace": "ops/jobs",
            "default_branch": "main"
        },
        "commits": [{
            "id": after, "message": "add a job\n", "title": "add a job",
            "timestamp": "2026-11-25T10:00:00+08:00",
            "url": format!("https://gitlab.example.com/ops/jobs/-/commit/{after}"),
            "author": {"name": "Ann Operator", "email": "[REDACTED]"},
            "added": ["jobs/new.yaml"], "modified": [], "removed": []
        }],
        "total_commits_count": 1,
        "push_options": {},
        "repository": {
            "name": "jobs", "url": "git@gitlab.example.com:ops/jobs.git", "description": "",
            "homepage": "https://gitlab.example.com/ops/jobs",
            "git_http_url": "https://gitlab.example.com/ops/jobs.git",
            "git_ssh_url": "git@gitlab.example.com:ops/jobs.git", "visibility_level": 0
        }
    }))
    .unwrap()
}

async fn hook(d: &Daemon, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = client()
        .post(url(d, path))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.body(body).send().await.unwrap();
    let code = r.status().as_u16();
    let body = r.text().await.unwrap();
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn github(d: &Daemon, event: &str, body: Vec<u8>) -> (u16, Value) {
    let headers = [
        ("X-GitHub-Event", event.to_string()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        ),
        ("X-Hub-Signature-256", sign(&body)),
        ("User-Agent", "GitHub-Hookshot/044aadd".into()),
    ];
    hook(d, "/hooks/github", &headers, body).await
}

async fn gitlab(d: &Daemon, event: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
    let headers = [
        ("X-Gitlab-Event", event.to_string()),
        ("X-Gitlab-Token", token.to_string()),
        ("X-Gitlab-Instance", "https://gitlab.example.com".into()),
    ];
    hook(d, "/hooks/gitlab", &headers, body).await
}

async fn fetches(d: &Daemon) -> f64 {
    metric(
        &get(d, "/metrics").await.1,
        "jobkeeper_git_fetches_total{result=\"ok\"}",
    )
}

async fn wait_applied(d: &Daemon, commit: &str, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        d.store.applied_commit().unwrap().as_deref() == Some(commit)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_trigger_one_fetch_and_are_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &common::sleeper(600));
    let first = git.commit_push("first");
    let gd = GitDaemon::start(root).await;
    let extra = secrets(root);
    let repo_url = format!("git://127.0.0.1:{}/config.git", gd.port);
    let mut d = start(root, &config_with(root, &repo_url, "1h", &extra)).await;
    wait_applied(&d, &first, "the first commit").await;

    // A push the daemon does not know of yet: only a webhook makes it fetch (poll: 1h).
    git.write("jobs/b.yaml", &common::sleeper(600));
    let second = git.commit_push("add b");
    let push = github_push("refs/heads/main", &first, &second);

    // Refused: no signature, a wrong one, a signature over another body.
    let (code, _) = hook(
        &d,
        "/hooks/github",
        &[("X-GitHub-Event", "push".into())],
        push.clone(),
    )
    .await;
    assert_eq!(code, 401);
    let bad = [
        ("X-GitHub-Event", "push".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
    ];
    assert_eq!(hook(&d, "/hooks/github", &bad, push.clone()).await.0, 401);
    let other = [
        ("X-GitHub-Event", "push".to_string()),
        ("X-Hub-Signature-256", sign(b"{}")),
    ];
    assert_eq!(hook(&d, "/hooks/github", &other, push.clone()).await.0, 401);
    // Acknowledged and ignored: ping, other branches, tags.
    let ping =
        serde_json::to_vec(&json!({"zen": "Keep it logically awesome.", "hook_id": 1})).unwrap();
    let (code, v) = github(&d, "ping", ping).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ignored")));
    let (code, v) = github(&d, "push", github_push("refs/heads/dev", &first, &second)).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ignored")));
    let (code, _) = github(&d, "push", github_push("refs/tags/v1", &first, &second)).await;
    assert_eq!(code, 200);
    // Signed but not JSON.
    assert_eq!(github(&d, "push", b"not json".to_vec()).await.0, 400);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        d.store.applied_commit().unwrap().as_deref(),
        Some(first.as_str())
    );

    // A real push event: fetched and applied at once.
    let (code, v) = github(&d, "push", push).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("fetch")));
    wait_applied(&d, &second, "the pushed commit after the GitHub hook").await;
    d.running_pid("b").await;

    // GitLab: the token, then a push hook.
    git.write("jobs/c.yaml", &common::sleeper(600));
    let third = git.commit_push("add c");
    let body = gitlab_push("push", "refs/heads/main", &second, &third);
    assert_eq!(gitlab(&d, "Push Hook", "wrong", body.clone()).await.0, 401);
    let (code, _) = hook(
        &d,
        "/hooks/gitlab",
        &[("X-Gitlab-Event", "Push Hook".into())],
        body.clone(),
    )
    .await;
    assert_eq!(code, 401);
    let tag = gitlab_push("tag_push", "refs/tags/v1", &second, &third);
    let (code, v) = gitlab(&d, "Tag Push Hook", HOOK_SECRET, tag.clone()).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ignored")));
    let (code, v) = gitlab(&d, "Push Hook", HOOK_SECRET, tag).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ignored")));
    let (code, _) = gitlab(&d, "Push Hook", HOOK_SECRET, b"{".to_vec()).await;
    assert_eq!(code, 400);
    let (code, v) = gitlab(&d, "Push Hook", HOOK_SECRET, body).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("fetch")));
    wait_applied(&d, &third, "the pushed commit after the GitLab hook").await;

    // A burst of 20 hooks for one push: the commit is applied once, with few fetches.
    git.write("jobs/d.yaml", &common::sleeper(600));
    let fourth = git.commit_push("add d");
    let before = fetches(&d).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (github_body, gitlab_body) = (
            github_push("refs/heads/main", &third, &fourth),
            gitlab_push("push", "refs/heads/main", &third, &fourth),
        );
        let target = url(&d, "");
        tasks.push(tokio::spawn(async move {
            let req = if i % 2 == 0 {
                client()
                    .post(format!("{target}/hooks/github"))
                    .header("X-GitHub-Event", "push")
                    .header("X-Hub-Signature-256", sign(&github_body))
                    .body(github_body)
            } else {
                client()
                    .post(format!("{target}/hooks/gitlab"))
                    .header("X-Gitlab-Event", "Push Hook")
                    .header("X-Gitlab-Token", HOOK_SECRET)
                    .body(gitlab_body)
            };
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert!(codes.iter().all(|c| *c == 202), "{codes:?}");
    wait_applied(&d, &fourth, "the commit after a burst of hooks").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = fetches(&d).await - before;
    assert!(
        (1.0..=5.0).contains(&n),
        "{n} fetches for a burst of 20 hooks"
    );
    let planned = d
        .store
        .events(Some("d"), 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "planned")
        .count();
    assert_eq!(planned, 1, "the commit is applied once");
    let text = get(&d, "/metrics").await.1;
    assert!(metric(&text, "jobkeeper_fetch_triggers_total{trigger=\"webhook\"}") >= 3.0);
    assert!(
        metric(
            &text,
            "jobkeeper_webhooks_total{source=\"github\",outcome=\"unauthorized\"}"
        ) >= 3.0
    );

    d.stop().await;
    drop(gd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_refused_without_a_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/a.yaml", &common::sleeper(600));
    git.commit_push("first");
    let mut d = start(root, &config(root, &git, "")).await;
    let (code, v) = post(&d, "/api/v1/sync", Some("anything")).await;
    assert_eq!(code, 401);
    assert!(
        v["error"].as_str().unwrap().contains("api_token_file"),
        "{v}"
    );
    let (code, v) = github(&d, "push", github_push("refs/heads/main", "a", "b")).await;
    assert_eq!(code, 401);
    assert!(
        v["error"].as_str().unwrap().contains("webhook_secret_file"),
        "{v}"
    );
    d.stop().await;
}

/// Runs chromium headless with `args` then `url`, bounded; fails clearly when it is missing.
async fn chromium(profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let child = cmd.output();
    match tokio::time::timeout(Duration::from_secs(90), child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!(
            "cannot run chromium ({e}): the status page test needs Debian's `chromium` package; scripts/test.sh installs it"
        ),
        Err(_) => panic!("chromium did not finish within 90 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (_git, mut d) = fleet(tmp.path()).await;
    let (code, html) = get(&d, "/").await;
    assert_eq!(code, 200);
    assert!(html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert!(html.contains("<script src=\"/static/page.js\" defer></script>"));

    let page = url(&d, "/");
    let out = chromium(&tmp.path().join("profile-dom"), &["--dump-dom"], &page).await;
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    for job in ["web", "team-a/clicks", "talker"] {
        assert!(
            dom.contains(&format!("data-job=\"{job}\"")),
            "{job} in the DOM:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "the subject stays text:\n{dom}"
    );
    assert!(dom.contains("Recent events"));

    // The job page: the params that run, a secret as written and never its value (the log
    // tail below it is masked too), at a raw slash as at `%2F`.
    let (code, talker) = get(&d, "/jobs/talker").await;
    assert_eq!(code, 200);
    assert!(talker.contains("<dl id=\"params\">"), "{talker}");
    assert!(talker.contains("echo password ${secret:pw}"), "{talker}");
    assert!(!talker.contains(SECRET_VALUE), "{talker}");
    let (code, raw) = get(&d, "/jobs/team-a/clicks").await;
    assert_eq!(code, 200, "{raw}");
    assert!(raw.contains("<h1>team-a/clicks</h1>"));
    assert_eq!(get(&d, "/jobs/team-a%2Fclicks").await.0, 200);
    assert!(
        raw.contains("<td data-label=\"Cluster\"><div>dev · local</div></td>"),
        "each run's cluster: {raw}"
    );

    // A phone-sized screenshot, for people to look at (JOBKEEPER_SCREENSHOT keeps it).
    let png = std::env::var_os("JOBKEEPER_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("status.png"));
    let shot = format!("--screenshot={}", png.display());
    let out = chromium(
        &tmp.path().join("profile-shot"),
        &[&shot, "--window-size=390,844", "--hide-scrollbars"],
        &page,
    )
    .await;
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
        "a real PNG"
    );
    d.stop().await;
}

async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"));
    cmd.args(args)
        .env_remove("JOBKEEPER_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the command ends within 30 s")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_status_sync_restart_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_git, mut d) = fleet(root).await;
    let base = url(&d, "");
    let u = base.as_str();

    let (code, out, err) = cli(&["status", "--url", u], &[]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("applied commit "), "{out}");
    assert!(lines[1].starts_with("JOB"), "{out}");
    for h in [
        "STATE",
        "ENV",
        "ENGINE",
        "RUNNING",
        "RESTARTS",
        "LAST EVENT",
    ] {
        assert!(lines[1].contains(h), "{out}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("team-a/clicks")
            && l.contains("running")
            && l.contains("local")),
        "{out}"
    );

    let (code, out, _) = cli(&["status", "--url", u, "--json"], &[]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3);

    // The URL and token from the daemon config: its `listen` is port 0 here, so --url wins.
    let (code, _, err) = cli(&["sync", "--url", u], &[]).await;
    assert_eq!(code, 1, "no token");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = cli(&["sync", "--url", u], &[("JOBKEEPER_TOKEN", TOKEN)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sync requested"));

    let token_file = root.join("api_token").display().to_string();
    let before = d.running_pid("web").await;
    let (code, out, err) = cli(
        &["restart", "web", "--url", u, "--token-file", &token_file],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restart of `web` requested"));
    wait_for("web restarted", Duration::from_secs(20), || {
        d.live_runs("web")
            .first()
            .is_some_and(|r| common::pid_of(r) != before)
    })
    .await;
    let (code, _, err) = cli(
        &["restart", "nope", "--url", u, "--token-file", &token_file],
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("no job named `nope`"),
        "{err}"
    );

    let (code, out, _) = cli(&["logs", "talker", "--url", u, "--tail", "1"], &[]).await;
    assert_eq!((code, out.as_str()), (0, "password ***\n"));
    let (code, _, err) = cli(&["logs", "talker", "--url", u, "--build"], &[]).await;
    assert_eq!(code, 1, "{err}");

    // A closed port: exit 3.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dead = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["status", "--url", &dead],
        vec!["sync", "--url", &dead],
        vec!["restart", "web", "--url", &dead],
        vec!["logs", "web", "--url", &dead],
    ] {
        let (code, _, err) = cli(&args, &[("JOBKEEPER_TOKEN", TOKEN)]).await;
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("cannot reach the jobkeeper daemon"), "{err}");
    }
    d.stop().await;
}

/// `status --env` and `--folder` list only the jobs asked for (in the table and in `--json`),
/// and each row names the author of the commit that last changed the job's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_filters_by_env_and_folder_and_names_each_jobs_author() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/team-a/clicks.yaml", &common::sleeper(600))
        .write(
            "jobs/team-a/report.yaml",
            &common::sleeper(600).replace("env: dev", "env: batch"),
        );
    let first = git.commit_push("three jobs");
    let extra = format!("  batch: {{engine: local}}\n{}", secrets(root));
    let mut d = start(root, &config(root, &git, &extra)).await;
    wait_for("the first commit applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(first.as_str())
    })
    .await;
    git.write(
        "jobs/team-a/report.yaml",
        &common::sleeper(601).replace("env: dev", "env: batch"),
    );
    git.git(&["add", "-A"]);
    git.git(&[
        "commit",
        "-q",
        "--author",
        "Bob Builder <bob@example.com>",
        "-m",
        "report: longer",
    ]);
    git.push();
    let second = git.git(&["rev-parse", "HEAD"]);
    wait_for("the second commit applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(second.as_str())
    })
    .await;
    for job in ["web", "team-a/clicks", "team-a/report"] {
        d.running_pid(job).await;
    }
    let base = url(&d, "");
    let u = base.as_str();
    let jobs_of = |out: &str| -> Vec<(String, String)> {
        let lines: Vec<&str> = out.lines().collect();
        let header = lines[1];
        let at = header.find("AUTHOR").expect("an AUTHOR column");
        let end = header.find("RESTARTS").unwrap();
        lines[2..]
            .iter()
            .map(|l| {
                let name = l.split_whitespace().next().unwrap().to_string();
                (name, l[at..end].trim().to_string())
            })
            .collect()
    };
    let (code, out, err) = cli(&["status", "--url", u], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        jobs_of(&out),
        [
            ("team-a/clicks".to_string(), "Ann Operator".to_string()),
            ("team-a/report".to_string(), "Bob Builder".to_string()),
            ("web".to_string(), "Ann Operator".to_string()),
        ],
        "{out}"
    );
    let (code, out, err) = cli(&["status", "--url", u, "--env", "batch"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        jobs_of(&out),
        [("team-a/report".to_string(), "Bob Builder".to_string())],
        "{out}"
    );
    let (code, out, err) = cli(&["status", "--url", u, "--folder", "team-a"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = jobs_of(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["team-a/clicks", "team-a/report"], "{out}");
    let (code, out, err) = cli(
        &[
            "status", "--url", u, "--folder", "team-a", "--env", "dev", "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a/clicks"], "{out}");
    let (code, out, err) = cli(&["status", "--url", u, "--env", "nowhere"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("(no jobs)\n"), "{out}");
    d.stop().await;
}

/// A push of two commits by two authors, each changing another job's file: each job's AUTHOR
/// (in `status` and in the API) is the author of the newest commit that changed its file, not
/// the tip's; a job neither changed keeps its own; and what the job's run records names its
/// own commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_two_commits_names_each_jobs_own_author() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/clicks.yaml", &common::sleeper(600))
        .write("jobs/report.yaml", &common::sleeper(600));
    let first = git.commit_push("three jobs");
    let extra = secrets(root);
    let mut d = start(root, &config(root, &git, &extra)).await;
    wait_for("the first commit applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(first.as_str())
    })
    .await;
    let commit_as = |author: &str, msg: &str| {
        git.git(&["add", "-A"]);
        git.git(&["commit", "-q", "--author", author, "-m", msg]);
        git.git(&["rev-parse", "HEAD"])
    };
    git.write("jobs/clicks.yaml", &common::sleeper(601));
    let carol = commit_as("Carol Coder <carol@example.com>", "clicks: longer");
    git.write("jobs/report.yaml", &common::sleeper(602));
    let bob = commit_as("Bob Builder <bob@example.com>", "report: longer");
    git.push();
    wait_for("the two commits applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(bob.as_str())
    })
    .await;
    for job in ["web", "clicks", "report"] {
        d.running_pid(job).await;
    }
    let base = url(&d, "");
    let (code, out, err) = cli(&["status", "--url", &base], &[]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines[1].find("AUTHOR").expect("an AUTHOR column");
    let end = lines[1].find("RESTARTS").unwrap();
    let authors: Vec<(&str, &str)> = lines[2..5]
        .iter()
        .map(|l| (l.split_whitespace().next().unwrap(), l[at..end].trim()))
        .collect();
    assert_eq!(
        authors,
        [
            ("clicks", "Carol Coder"),
            ("report", "Bob Builder"),
            ("web", "Ann Operator"),
        ],
        "{out}"
    );
    let (code, v) = get_json(&d, "/api/v1/jobs/clicks").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["commit"]["id"], carol.as_str(), "{v}");
    assert_eq!(v["commit"]["subject"], "clicks: longer", "{v}");
    wait_for(
        "clicks' new run under its own commit",
        Duration::from_secs(20),
        || {
            d.store
                .runs("clicks", 1)
                .unwrap()
                .first()
                .and_then(|r| r.commit_id.clone())
                == Some(carol.clone())
        },
    )
    .await;
    d.stop().await;
}

/// The status page and `/metrics` keep their counts over every job between requests; a change
/// shows on the next request at once: a file made invalid (a condition: the problems view and
/// its count), then a job suspended (the state counts), each asked for the moment the store
/// holds it, after the unchanged page was asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_change_at_once_though_it_keeps_its_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/clicks.yaml", &common::sleeper(600));
    git.commit_push("two jobs");
    let extra = secrets(root);
    let mut d = start(root, &config(root, &git, &extra)).await;
    for job in ["web", "clicks"] {
        d.running_pid(job).await;
    }
    let problems = |page: &str| page.contains("id=\"problems\"");
    for _ in 0..2 {
        let (code, page) = get(&d, "/").await;
        assert_eq!(code, 200);
        assert!(
            page.contains("<b>2</b> jobs") && page.contains(">2 running</a>"),
            "{page}"
        );
        assert!(!problems(&page), "{page}");
        let (_, m) = get(&d, "/metrics").await;
        assert!(
            m.contains("jobkeeper_job_problems{problem=\"invalid\"} 0"),
            "{m}"
        );
    }
    git.write("jobs/clicks.yaml", "env: [dev\n");
    let broken = git.commit_push("clicks: broken");
    wait_for("the broken file recorded", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(broken.as_str())
    })
    .await;
    let (_, page) = get(&d, "/").await;
    assert!(problems(&page), "the invalid file shows at once: {page}");
    assert!(
        page.contains("href=\"/?state=invalid\">1 invalid</a>"),
        "{page}"
    );
    assert!(page.contains("id=\"problem-jobs\""), "{page}");
    let (_, m) = get(&d, "/metrics").await;
    assert!(
        m.contains("jobkeeper_job_problems{problem=\"invalid\"} 1"),
        "{m}"
    );
    git.write(
        "jobs/web.yaml",
        &format!("{}suspend: true\n", common::sleeper(600)),
    );
    git.commit_push("web: suspended");
    wait_for(
        "web suspended in the store",
        Duration::from_secs(20),
        || {
            d.store.job("web").unwrap().map(|j| j.state)
                == Some(jobkeeper::store::JobState::Suspended)
        },
    )
    .await;
    let (_, page) = get(&d, "/").await;
    assert!(
        page.contains(">1 suspended</a>") && page.contains(">1 running</a>"),
        "the suspended job shows at once: {page}"
    );
    d.stop().await;
}

/// A refresh of the status page with its tag is answered 304 while nothing changed (the page
/// kept, no job read) and with the changed page and another tag at once after a change: an
/// event written by another connection to the store's file (as another process would), then a
/// job suspended by a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refresh_is_304_until_a_change_then_its_tag_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/clicks.yaml", &common::sleeper(600));
    git.commit_push("two jobs");
    let extra = secrets(root);
    let mut d = start(root, &config(root, &git, &extra)).await;
    for job in ["web", "clicks"] {
        d.running_pid(job).await;
    }
    let ask = |tag: Option<String>| {
        let d = &d;
        async move {
            let mut req = client().get(url(d, "/"));
            if let Some(tag) = tag {
                req = req.header("If-None-Match", tag);
            }
            let r = req.send().await.unwrap();
            let code = r.status().as_u16();
            let tag = r.headers()["etag"].to_str().unwrap().to_string();
            (code, tag, r.text().await.unwrap())
        }
    };
    let (code, first, page) = ask(None).await;
    assert_eq!(code, 200);
    assert!(page.contains(">2 running</a>"), "{page}");
    for _ in 0..2 {
        let (code, tag, body) = ask(Some(first.clone())).await;
        assert_eq!(
            (code, tag.as_str(), body.as_str()),
            (304, first.as_str(), "")
        );
    }

    // A write by another connection to the store's file.
    d.store
        .event(&jobkeeper::store::NewEvent::new(
            jobkeeper::event::EventKind::Test,
            "written-by-another-process",
        ))
        .unwrap();
    let (code, second, page) = ask(Some(first.clone())).await;
    assert_eq!(code, 200, "the page changed");
    assert_ne!(second, first);
    assert!(page.contains("written-by-another-process"), "{page}");
    let (code, _, _) = ask(Some(second.clone())).await;
    assert_eq!(code, 304);

    // A job suspended by a commit.
    git.write(
        "jobs/web.yaml",
        &format!("{}suspend: true\n", common::sleeper(600)),
    );
    git.commit_push("web: suspended");
    wait_for(
        "web suspended in the store",
        Duration::from_secs(20),
        || {
            d.store.job("web").unwrap().map(|j| j.state)
                == Some(jobkeeper::store::JobState::Suspended)
        },
    )
    .await;
    let (code, third, page) = ask(Some(second.clone())).await;
    assert_eq!(code, 200, "the suspended job shows at once");
    assert_ne!(third, second);
    assert!(page.contains(">1 suspended</a>"), "{page}");
    d.stop().await;
}

/// `logs --build` names the build it shows: its key, project repo and commit, and whether it
/// succeeded; a second job of the same build, served from the cache, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_build_names_the_build_it_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = Git::new(root, "project");
    project.write("README", "a project\n");
    let built = project.commit_push("a project");
    let git = Git::new(root, "config");
    let job = format!(
        "project: {{repo: {}, build: \"echo compiling; echo v1 > app.txt\", artifact: app.txt}}\n\
         env: dev\nparams: {{command: [sh, -c, \"cat {{artifact}}; exec sleep 600\"]}}\n",
        project.bare.display()
    );
    git.write("jobs/app.yaml", &job);
    git.commit_push("app");
    let extra = secrets(root);
    let mut d = start(root, &config(root, &git, &extra)).await;
    d.running_pid("app").await;
    let base = url(&d, "");
    let (code, out, err) = cli(&["logs", "app", "--url", &base, "--build"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("==== build ")
            && first.contains(&format!(
                "of {} at commit {}: succeeded, log written ",
                project.bare.display(),
                &built[..12]
            ))
            && !first.contains("from the build cache"),
        "{out}"
    );
    assert!(out.contains("compiling\n"), "{out}");
    // Another job of the same project and build: its artifact comes from the cache.
    git.write("jobs/copy.yaml", &job);
    git.commit_push("copy");
    d.running_pid("copy").await;
    let (code, out, err) = cli(&["logs", "copy", "--url", &base, "--build"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().next().unwrap_or_default();
    assert!(
        line.contains(": succeeded, log written ")
            && line.ends_with("(from the build cache: no build ran for the latest deploy) ===="),
        "{out}"
    );
    d.stop().await;
}

/// How many jobs `GET /api/v1/jobs?{query}` lists.
async fn listed(d: &Daemon, query: &str) -> usize {
    let (code, v) = get_json(d, &format!("/api/v1/jobs?{query}")).await;
    assert_eq!(code, 200, "{v}");
    v["jobs"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_agree_with_lists_and_an_unreadable_row_is_marked_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &common::sleeper(600))
        .write("jobs/gone.yaml", &common::sleeper(601));
    git.commit_push("two jobs");
    let extra = secrets(root);
    let mut d = start(root, &config(root, &git, &extra)).await;
    let pid = d.running_pid("web").await;
    d.running_pid("gone").await;
    git.remove("jobs/gone.yaml");
    git.commit_push("remove gone");
    wait_for("gone stopped", Duration::from_secs(20), || {
        d.job("gone").is_some_and(|j| j.state == "stopped")
    })
    .await;

    // The count of a state is the length of that state's list; a removed job is in neither.
    let (code, text) = get(&d, "/metrics").await;
    assert_eq!(code, 200);
    for state in ["running", "stopped"] {
        let counted = metric(&text, &format!("jobkeeper_jobs{{state=\"{state}\"}}"));
        assert_eq!(
            counted as usize,
            listed(&d, &format!("state={state}")).await,
            "{state}"
        );
    }
    assert_eq!(listed(&d, "state=stopped").await, 0);
    assert_eq!(listed(&d, "state=stopped&removed=1").await, 1);

    // A row the store cannot read is listed as unreadable with the error, neither a missing
    // job nor an error for every job; it is counted apart from the states.
    let db = rusqlite::Connection::open(d.state_dir.join("jobkeeper.db")).unwrap();
    db.execute("UPDATE jobs SET state = 'sleeping' WHERE name = 'web'", [])
        .unwrap();
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/web",
        "/metrics",
        "/jobs/web",
        "/",
    ] {
        let (code, body) = get(&d, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        if path != "/metrics" {
            assert!(body.contains("unknown state `sleeping`"), "{path}: {body}");
        }
    }
    let (_, text) = get(&d, "/metrics").await;
    assert_eq!(metric(&text, "jobkeeper_jobs_unreadable"), 1.0, "{text}");
    assert_eq!(
        metric(&text, "jobkeeper_jobs{state=\"running\"}"),
        0.0,
        "{text}"
    );
    assert!(common::alive(pid), "the job runs on");
    db.execute("UPDATE jobs SET state = 'running' WHERE name = 'web'", [])
        .unwrap();
    assert_eq!(get(&d, "/api/v1/jobs/web").await.0, 200);
    d.stop().await;
}

/// Without `ha` the daemon is the only one and leads: `GET /leaderz` answers 200 naming this
/// host and saying why, and `/metrics` has `jobkeeper_leader 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderz_is_200_and_jobkeeper_leader_1_on_a_daemon_without_ha() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/web.yaml", &common::sleeper(600));
    git.commit_push("one job");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    d.running_pid("web").await;
    let (code, body) = get(&d, "/leaderz").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with(&format!(
            "leader: {} (no `ha` configured: this daemon is the only one and always leads), since ",
            host.trim()
        )),
        "{body}"
    );
    let (code, metrics) = get(&d, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l == "jobkeeper_leader 1"),
        "{metrics}"
    );
}
