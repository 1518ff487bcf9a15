//! Many teams in one config repo: folder `_defaults.yaml` and envs open by folder, end to end.
//! The daemon runs in-process against real git repos with real child processes; `plan`,
//! `show` and `validate` are the real binary. The golden files of defaults errors are in
//! `tests/defaults_errors/<case>/` (a `jobs/` tree, maybe a `config.yaml`, and `expected`, the
//! exact output of `jobkeeper validate`); `JOBKEEPER_BLESS=1` rewrites them from the binary.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs the binary in `cwd`, at most 60 s: (exit code, stdout, stderr).
fn jobkeeper(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(args)
        .current_dir(cwd)
        .env_remove("JOBKEEPER_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("jobkeeper {args:?} took over 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p| std::fs::read_to_string(p).unwrap();
    let (stdout, stderr) = (read(&o), read(&e));
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// A service job running `sleep SECS` with no env (it comes from the defaults).
fn bare_sleeper(secs: u32) -> String {
    format!("params:\n  command: [\"sleep\", \"{secs}\"]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defaults_change_redeploys_exactly_the_jobs_whose_merged_file_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/_defaults.yaml", "env: dev\n")
        .write(
            "jobs/team/_defaults.yaml",
            "params: {environment: {LEVEL: \"1\"}}\nrestart: {attempts: 5}\n",
        )
        .write("jobs/team/a.yaml", &bare_sleeper(300))
        // b sets LEVEL itself: the team's LEVEL never reaches it.
        .write(
            "jobs/team/b.yaml",
            "params:\n  command: [\"sleep\", \"301\"]\n  environment: {LEVEL: \"9\"}\n",
        )
        .write("jobs/other/c.yaml", &bare_sleeper(302));
    git.commit_push("three jobs, env from the top defaults");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let (a, b, c) = (
        d.running_pid("team/a").await,
        d.running_pid("team/b").await,
        d.running_pid("other/c").await,
    );
    let env_of = |pid: u32| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let has_level = |pid: u32, v: &str| {
        env_of(pid)
            .split(|b| *b == 0)
            .any(|kv| kv == format!("LEVEL={v}").as_bytes())
    };
    assert!(has_level(a, "1"), "a inherits the team's environment");
    assert!(has_level(b, "9"));
    let spec = d.job("team/a").unwrap().desired.unwrap();
    assert_eq!((spec.env.as_str(), spec.restart.attempts), ("dev", Some(5)));

    git.write(
        "jobs/team/_defaults.yaml",
        "params: {environment: {LEVEL: \"2\"}}\nrestart: {attempts: 5}\n",
    );
    let c2 = git.commit_push("team level 2");
    wait_for("the commit applied", Duration::from_secs(15), || {
        d.store.applied_commit().unwrap() == Some(c2.clone())
    })
    .await;
    wait_for("a redeployed", Duration::from_secs(15), || !alive(a)).await;
    let a2 = d.running_pid("team/a").await;
    assert!(has_level(a2, "2"));
    let planned: Vec<_> = d
        .events("team/a")
        .into_iter()
        .filter(|e| e.kind == "planned" && e.commit_id.as_deref() == Some(c2.as_str()))
        .collect();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert!(
        planned[0]
            .message
            .contains("redeploy: defaults changed: `jobs/team/_defaults.yaml`"),
        "{}",
        planned[0].message
    );
    // b's merged file is the same, c is not below the team: neither is planned nor touched.
    for (job, pid) in [("team/b", b), ("other/c", c)] {
        assert!(alive(pid), "{job} untouched");
        assert_eq!(d.runs(job).len(), 1, "{job}");
        assert!(
            !d.events(job)
                .iter()
                .any(|e| e.commit_id.as_deref() == Some(c2.as_str())),
            "{job} has no event of the defaults commit"
        );
    }

    // A defaults file that breaks its jobs: each is invalid at the defaults file's place,
    // naming it, and keeps its running version.
    git.write(
        "jobs/team/_defaults.yaml",
        "params: {environment: {LEVEL: \"2\"}}\nrestart: {attempts: many}\n",
    );
    let c3 = git.commit_push("break the team defaults");
    wait_for("the broken commit applied", Duration::from_secs(15), || {
        d.store.applied_commit().unwrap() == Some(c3.clone())
    })
    .await;
    for (job, pid) in [("team/a", a2), ("team/b", b)] {
        let row = d.job(job).unwrap();
        let invalid = row.invalid.unwrap_or_default();
        assert!(
            invalid.contains(&format!(
                "jobs/team/_defaults.yaml:2:21: job `{job}`: `restart.attempts`"
            )),
            "{invalid}"
        );
        assert!(alive(pid), "{job}'s previous version keeps running");
        assert_eq!(row.state.to_string(), "running");
    }
    assert!(alive(c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outside_an_envs_folders_is_refused_and_its_previous_version_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/ads/clicks.yaml", &sleeper(310)).write(
        "jobs/payments/ledger.yaml",
        "env: prod\nparams: {command: [\"sleep\", \"311\"]}\n",
    );
    git.commit_push("ads on dev, payments on prod");
    let text = config_with(tmp.path(), &git.bare.display().to_string(), "1s", "").replace(
        "envs:\n",
        "envs:\n  prod: {engine: local, folders: [\"payments/**\", \"risk/*\"]}\n",
    );
    let d = start(tmp.path(), &text).await;
    let clicks = d.running_pid("ads/clicks").await;
    d.running_pid("payments/ledger").await;

    git.write(
        "jobs/ads/clicks.yaml",
        "env: prod\nparams: {command: [\"sleep\", \"312\"]}\n",
    );
    let c2 = git.commit_push("ads onto prod");
    wait_for("ads/clicks refused", Duration::from_secs(15), || {
        d.job("ads/clicks").unwrap().invalid.is_some()
    })
    .await;
    let row = d.job("ads/clicks").unwrap();
    let invalid = row.invalid.unwrap();
    assert!(
        invalid.contains("jobs/ads/clicks.yaml:1:6: env `prod` is not open to `ads/clicks`"),
        "{invalid}"
    );
    assert_eq!(d.store.applied_commit().unwrap(), Some(c2));
    assert!(alive(clicks), "the previous version keeps running");
    assert_eq!(d.runs("ads/clicks").len(), 1);
    assert!(d.has_event("ads/clicks", "invalid"));
}

/// A repo with a top defaults file and a team's, and two commits: the second changes one
/// value of the team's defaults.
fn defaults_repo(root: &Path) -> Git {
    let git = Git::new(root, "config");
    git.write("jobs/_defaults.yaml", "env: dev\nrestart: {attempts: 3}\n")
        .write(
            "jobs/team/_defaults.yaml",
            "params:\n  environment: {LEVEL: \"1\"}\nalerts: [ops]\n",
        )
        .write("jobs/team/a.yaml", &bare_sleeper(1))
        .write(
            "jobs/team/b.yaml",
            "params:\n  command: [sleep, \"2\"]\n  environment: {LEVEL: \"9\"}\n",
        )
        .write("jobs/other.yaml", &bare_sleeper(3));
    git.commit("first");
    git.write(
        "jobs/team/_defaults.yaml",
        "params:\n  environment: {LEVEL: \"2\"}\nalerts: [ops]\n",
    );
    git.commit("team level 2");
    git
}

#[test]
fn plan_lists_exactly_the_jobs_a_defaults_change_reaches_with_the_file_as_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let git = defaults_repo(tmp.path());
    let (code, out, err) = jobkeeper(&git.work, &["plan", "--from", "HEAD~1", "--to", "HEAD"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "redeploy  team/a  (jobs/team/a.yaml)\n          - defaults changed: \
         `jobs/team/_defaults.yaml`\n          - params.environment changed\nplan: 1 redeploy\n"
    );
    let (_, json, _) = jobkeeper(
        &git.work,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let jobs: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["team/a"], "{json}");
    let a = &v["items"][0];
    assert_eq!(a["action"], "redeploy");
    assert_eq!(
        a["reasons"][0],
        "defaults changed: `jobs/team/_defaults.yaml`"
    );

    // The top defaults changed under every job; `other` and `team/b` too, `team/a` twice.
    git.write("jobs/_defaults.yaml", "env: dev\nrestart: {attempts: 4}\n");
    git.commit("more attempts for all");
    let (_, json, _) = jobkeeper(
        &git.work,
        &[
            "plan", "--from", "HEAD~2", "--to", "HEAD", "--format", "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let items: Vec<(String, String, Vec<String>)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["action"].as_str().unwrap().to_string(),
                j["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(items.len(), 3, "{json}");
    assert_eq!(items[0].0, "other");
    assert_eq!(items[0].1, "in-place");
    assert_eq!(items[0].2[0], "defaults changed: `jobs/_defaults.yaml`");
    assert_eq!(items[1].0, "team/a");
    assert_eq!(
        &items[1].2[..2],
        [
            "defaults changed: `jobs/_defaults.yaml`",
            "defaults changed: `jobs/team/_defaults.yaml`"
        ]
    );
    assert_eq!(items[2].0, "team/b");
    assert_eq!(items[2].1, "in-place");
}

/// The jobs of `plan --format json` of the last commit: (job, action, reasons).
fn planned_jobs(work: &Path) -> Vec<(String, String, Vec<String>)> {
    let (code, json, err) = jobkeeper(
        work,
        &[
            "plan", "--from", "HEAD~1", "--to", "HEAD", "--format", "json",
        ],
    );
    assert_eq!(code, 0, "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["action"].as_str().unwrap().to_string(),
                j["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn plan_of_a_defaults_value_every_job_overrides_redeploys_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/_defaults.yaml",
        "env: dev\nparams:\n  environment: {LEVEL: \"1\"}\n",
    );
    for (job, level) in [("a", "7"), ("team/b", "8"), ("team/deep/c", "9")] {
        git.write(
            &format!("jobs/{job}.yaml"),
            &format!("params:\n  command: [sleep, \"1\"]\n  environment: {{LEVEL: \"{level}\"}}\n"),
        );
    }
    git.commit("first");
    git.write(
        "jobs/_defaults.yaml",
        "env: dev\nparams:\n  environment: {LEVEL: \"2\"}\n",
    );
    git.commit("level 2, which every job overrides");
    assert_eq!(planned_jobs(&git.work), []);
    let (code, out, err) = jobkeeper(&git.work, &["plan", "--from", "HEAD~1", "--to", "HEAD"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("redeploy"), "{out}");
}

#[test]
fn plan_of_a_defaults_value_a_nearer_defaults_file_overrides_leaves_the_jobs_below_it() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/_defaults.yaml",
        "env: dev\nparams:\n  environment: {LEVEL: \"1\"}\n",
    )
    .write(
        "jobs/team/_defaults.yaml",
        "params:\n  environment: {LEVEL: \"team\"}\n",
    )
    .write("jobs/team/a.yaml", &bare_sleeper(1))
    .write("jobs/team/deep/b.yaml", &bare_sleeper(2))
    .write("jobs/top.yaml", &bare_sleeper(3));
    git.commit("first");
    git.write(
        "jobs/_defaults.yaml",
        "env: dev\nparams:\n  environment: {LEVEL: \"2\"}\n",
    );
    git.commit("level 2 for all but the team");
    assert_eq!(
        planned_jobs(&git.work),
        [(
            "top".to_string(),
            "redeploy".to_string(),
            vec![
                "defaults changed: `jobs/_defaults.yaml`".to_string(),
                "params.environment changed".to_string()
            ]
        )]
    );
    // The team's file stops overriding it: its jobs take the top value, naming their file.
    git.write("jobs/team/_defaults.yaml", "alerts: [ops]\n");
    git.commit("the team takes the top level");
    let planned = planned_jobs(&git.work);
    let jobs: Vec<(&str, &str, &str)> = planned
        .iter()
        .map(|(j, a, r)| (j.as_str(), a.as_str(), r[0].as_str()))
        .collect();
    let team = "defaults changed: `jobs/team/_defaults.yaml`";
    assert_eq!(
        jobs,
        [
            ("team/a", "redeploy", team),
            ("team/deep/b", "redeploy", team)
        ]
    );
}

#[test]
fn show_prints_the_merged_file_with_each_values_source() {
    let tmp = tempfile::tempdir().unwrap();
    let git = defaults_repo(tmp.path());
    let (code, out, err) = jobkeeper(&git.work, &["show", "team/a", "--repo", "."]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let body: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "# jobs/team/a.yaml merged over jobs/team/_defaults.yaml, jobs/_defaults.yaml (nearest first)",
            "env: dev                                         # jobs/_defaults.yaml:1",
            "restart:",
            "  attempts: 3                                    # jobs/_defaults.yaml:2",
            "params:",
            "  environment:",
            "    LEVEL: \"2\"                                   # jobs/team/_defaults.yaml:2",
            "  command: [sleep, \"1\"]                          # jobs/team/a.yaml:2",
            "alerts: [ops]                                    # jobs/team/_defaults.yaml:3",
        ],
        "{out}"
    );
    let (_, old, _) = jobkeeper(&git.work, &["show", "team/a", "--rev", "HEAD~1"]);
    assert!(old.contains("LEVEL: \"1\""), "{old}");
    let (code, _, err) = jobkeeper(&git.work, &["show", "team/zz"]);
    assert_eq!(code, 1);
    assert!(err.contains("no job `team/zz` at `HEAD`"), "{err}");
}

/// Every case of `tests/defaults_errors/`: `jobkeeper validate jobs` (with `--config
/// config.yaml` when the case has one) prints exactly `expected` and exits 1.
#[test]
fn every_bad_defaults_tree_is_refused_by_validate_with_its_expected_errors() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/defaults_errors");
    let bless = std::env::var_os("JOBKEEPER_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "the corpus is there");
    let mut failures = Vec::new();
    for case in cases {
        let mut args = vec!["validate", "jobs"];
        if case.join("config.yaml").exists() {
            args.extend(["--config", "config.yaml"]);
        }
        let (code, out, _) = jobkeeper(&case, &args);
        let exp = case.join("expected");
        if bless {
            std::fs::write(&exp, &out).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&exp).unwrap_or_default();
        if code != 1 || out != want {
            failures.push(format!(
                "{}: exit {code}\n--- expected ---\n{want}--- actual ---\n{out}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// POSTs `path` with bearer `token`: (status, JSON body).
async fn post(d: &Daemon, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("http://{}{path}", d.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let body = r.text().await.unwrap();
    (code, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_restarts_only_below_its_folders_and_never_syncs_the_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/payments/ledger.yaml", &sleeper(320))
        .write("jobs/ads/clicks.yaml", &sleeper(321));
    git.commit_push("two teams");
    std::fs::write(root.join("token-all"), "all-jobs-secret\n").unwrap();
    std::fs::write(root.join("token-payments"), "payments-secret\n").unwrap();
    let extra = format!(
        "api_token_file: {}\napi_tokens:\n  - {{file: {}, folders: [\"payments/**\"]}}\n",
        root.join("token-all").display(),
        root.join("token-payments").display()
    );
    let d = start(root, &config(root, &git, &extra)).await;
    let ledger = d.running_pid("payments/ledger").await;
    let clicks = d.running_pid("ads/clicks").await;

    // Inside its folders: restarted, and the audit event names the token's file, not its value.
    let (code, body) = post(
        &d,
        "/api/v1/jobs/payments%2Fledger/restart",
        "payments-secret",
    )
    .await;
    assert!((200..300).contains(&code), "{code} {body}");
    wait_for("ledger restarted", Duration::from_secs(15), || {
        !alive(ledger)
    })
    .await;
    d.running_pid("payments/ledger").await;
    let asked = d
        .events("payments/ledger")
        .into_iter()
        .find(|e| e.kind == "restart_requested")
        .expect("restart_requested event");
    assert!(
        asked.message.contains("with token `token-payments`"),
        "{}",
        asked.message
    );
    assert!(!asked.message.contains("payments-secret"));

    // Outside its folders: 403 with a message; the job is not touched.
    let (code, body) = post(&d, "/api/v1/jobs/ads%2Fclicks/restart", "payments-secret").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["error"].as_str().unwrap(),
        "token `token-payments` may restart only the jobs matching `payments/**`; `ads/clicks` \
         is not among them"
    );
    // The whole-repo sync: 403 too.
    let (code, body) = post(&d, "/api/v1/sync", "payments-secret").await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("may not call the whole-repo `sync`"),
        "{body}"
    );
    // A token nobody configured: 401; the all-jobs token may do both.
    assert_eq!(post(&d, "/api/v1/sync", "guess").await.0, 401);
    let (code, _) = post(&d, "/api/v1/jobs/ads%2Fclicks/restart", "all-jobs-secret").await;
    assert!((200..300).contains(&code));
    wait_for(
        "clicks restarted by the all-jobs token",
        Duration::from_secs(15),
        || !alive(clicks),
    )
    .await;
    let (code, _) = post(&d, "/api/v1/sync", "all-jobs-secret").await;
    assert_eq!(code, 202);
    wait_for("the sync audited", Duration::from_secs(10), || {
        events_of(&d.store, "api_sync")
            .iter()
            .any(|e| e.message.contains("with token `token-all`"))
    })
    .await;
    assert!(
        d.events("ads/clicks")
            .iter()
            .filter(|e| e.kind == "restart_requested")
            .all(|e| e.message.contains("with token `token-all`")),
        "the refused request left no restart event"
    );
}
