//! Operating a fleet day to day, end to end on the local engine with real git repos and pushes:
//! what runs now (the API, `status` and the page), retention, and the page of one job.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

async fn job_json(d: &Daemon, name: &str) -> Value {
    let (code, body) = d
        .get(&format!("/api/v1/jobs/{}", name.replace('/', "%2F")))
        .await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn list_json(d: &Daemon) -> Value {
    let (code, body) = d.get("/api/v1/jobs").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn listed<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

fn status(d: &Daemon) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["status", "--url", &format!("http://{}", d.addr)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_runs_names_the_config_and_project_commits_of_the_live_run() {
    let tmp = tempfile::tempdir().unwrap();
    let project = Git::new(tmp.path(), "app");
    project.write("run.sh", "exec sleep 341\n");
    let p1 = project.commit_push("v1");
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/followed.yaml",
        &format!(
            "project:\n  repo: {}\n  build: cp run.sh app.sh\n  artifact: app.sh\n  follow: true\n\
             env: dev\nparams:\n  command: [\"sh\", \"{{artifact}}\"]\n",
            project.bare.display()
        ),
    );
    git.write("jobs/steady.yaml", &sleeper(342));
    let c1 = git.commit_push("two jobs");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let followed = d.running_pid("followed").await;
    d.running_pid("steady").await;

    let v = job_json(&d, "followed").await;
    assert_eq!(v["running"]["config_commit"], c1.as_str(), "{v}");
    assert_eq!(v["running"]["project_commit"], p1.as_str(), "{v}");
    assert!(
        v["running"]["since"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );
    assert_eq!(v["runs"][0]["project_commit"], &p1[..8], "{v}");

    // A commit that changes only a comment of `steady` and adds a job: `steady`'s file commit
    // moves on, what runs does not.
    git.write(
        "jobs/steady.yaml",
        &format!("# owned by ops\n{}", sleeper(342)),
    );
    git.write("jobs/other.yaml", &sleeper(343));
    let c2 = git.commit_push("a comment, and another job");
    wait_for("c2 applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(c2.as_str())
    })
    .await;
    d.running_pid("other").await;
    let list = list_json(&d).await;
    let steady = listed(&list, "steady");
    assert_eq!(steady["commit"]["id"], c2.as_str(), "{steady}");
    assert_eq!(steady["running"]["config_commit"], c1.as_str(), "{steady}");
    assert_eq!(steady["running"]["project_commit"], Value::Null, "{steady}");
    assert_eq!(
        listed(&list, "other")["running"]["config_commit"],
        c2.as_str()
    );

    // The followed branch moves: the new run is built from the new project commit and still
    // deployed by the first config commit.
    project.write("run.sh", "exec sleep 344\n");
    let p2 = project.commit_push("v2");
    wait_for("followed redeployed", Duration::from_secs(30), || {
        !alive(followed)
    })
    .await;
    d.running_pid("followed").await;
    let v = job_json(&d, "followed").await;
    assert_eq!(v["running"]["config_commit"], c1.as_str(), "{v}");
    assert_eq!(v["running"]["project_commit"], p2.as_str(), "{v}");

    // `status` and the page say the same.
    let out = status(&d);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    assert!(
        line("followed").contains(&format!("{} (project {})", &c1[..8], &p2[..8])),
        "{out}"
    );
    assert!(line("steady").contains(&c1[..8]), "{out}");
    assert!(!line("steady").contains(&c2[..8]), "{out}");
    let (code, page) = d.get("/").await;
    assert_eq!(code, 200);
    let row = |name: &str| {
        let start = page.find(&format!("<tr id=\"{name}\"")).unwrap();
        let end = start + page[start..].find("</tr>").unwrap();
        page[start..end].to_string()
    };
    let followed_row = row("followed");
    assert!(followed_row.contains(&c1[..8]), "{followed_row}");
    assert!(followed_row.contains(&p2[..8]), "{followed_row}");
    let steady_row = row("steady");
    assert!(
        steady_row.contains(&c1[..8]) && !steady_row.contains(&c2[..8]),
        "{steady_row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_a_job_every_second_to_its_latest_runs_and_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/tick.yaml",
        "env: dev\nschedule: \"* * * * * *\"\nparams:\n  command: [\"echo\", \"tick\"]\n",
    );
    git.write("jobs/steady.yaml", &sleeper(351));
    git.commit_push("a job every second");
    let d = start(
        tmp.path(),
        &config(tmp.path(), &git, "retention: {runs: 3, age: 2s}\n"),
    )
    .await;
    let steady = d.running_pid("steady").await;
    let first = {
        let mut first = None;
        wait_for("the first tick", Duration::from_secs(10), || {
            first = d.runs("tick").last().map(|r| (r.id, r.log_path.clone()));
            first.is_some()
        })
        .await;
        first.unwrap()
    };
    wait_for("the first tick's log", Duration::from_secs(5), || {
        std::path::Path::new(&first.1).exists()
    })
    .await;
    // Twelve ticks later, the first run and its log are gone, and what is kept is the latest
    // runs: those of the last two seconds (the age) and the pass interval.
    wait_for("twelve ticks", Duration::from_secs(30), || {
        d.runs("tick").first().is_some_and(|r| r.id >= first.0 + 12)
    })
    .await;
    wait_for("the first run deleted", Duration::from_secs(5), || {
        d.store.run(first.0).unwrap().is_none()
    })
    .await;
    assert!(!std::path::Path::new(&first.1).exists(), "its log goes too");
    let kept = d.runs("tick");
    assert!(kept.len() <= 6, "{} runs kept", kept.len());
    let logs = std::fs::read_dir(d.state_dir.join("logs/tick"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(logs <= 7, "{logs} log files kept");
    // Events older than the age go; the job's latest stays, and the service job keeps its run
    // (a live run is never deleted) and its latest event.
    wait_for("old events deleted", Duration::from_secs(5), || {
        d.events("tick").len() <= 12
    })
    .await;
    assert!(alive(steady));
    assert_eq!(d.live_runs("steady").len(), 1);
    assert!(!d.events("steady").is_empty());
    let list = list_json(&d).await;
    assert!(listed(&list, "steady")["last_event"].is_object());

    let (_, metrics) = d.get("/metrics").await;
    assert!(metric(&metrics, "jobkeeper_state_bytes") > 0.0, "{metrics}");
    assert!(
        metrics.contains("jobkeeper_pruned_total{what=\"runs\"}"),
        "{metrics}"
    );
}

/// Runs chromium headless with `args` then `url`, bounded.
async fn chromium(profile: &std::path::Path, args: &[&str], url: &str) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(90), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run chromium ({e}): the page tests need Debian's `chromium`"),
        Err(_) => panic!("chromium did not finish within 90 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_filters_and_pages_and_each_job_has_its_page() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    // 1,000 jobs in ten folders, suspended (nothing to run), and a few that do run.
    for i in 0..1000 {
        git.write(
            &format!("jobs/team-{}/heartbeat-{i:04}.yaml", i % 10),
            &format!("env: dev\nsuspend: true\nparams: {{command: [sleep, \"{i}\"]}}\n"),
        );
    }
    git.write(
        "jobs/ticker.yaml",
        "env: dev\nschedule: \"*/2 * * * * *\"\nparams:\n  command: [\"sh\", \"-c\", \"echo tick-ok\"]\n",
    );
    git.write(
        "jobs/svc.yaml",
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"echo started-svc; exec sleep 361\"]\n",
    );
    git.write("jobs/gone.yaml", &sleeper(362));
    git.commit_push("a thousand jobs");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    d.running_pid("svc").await;
    wait_for("every job suspended", Duration::from_secs(120), || {
        d.store
            .job_state_counts()
            .unwrap()
            .iter()
            .any(|(s, n)| s.as_str() == "suspended" && *n == 1000)
    })
    .await;
    git.remove("jobs/gone.yaml");
    git.write("jobs/svc.yaml", "env: dev\nparams: [not, a, mapping\n");
    let c2 = git.commit_push("remove gone, break svc");
    wait_for("c2 applied", Duration::from_secs(20), || {
        d.store.applied_commit().unwrap().as_deref() == Some(c2.as_str())
    })
    .await;
    wait_for("ticker ran", Duration::from_secs(10), || {
        d.runs("ticker").iter().any(|r| r.state == "succeeded")
    })
    .await;

    // The API pages and filters.
    let d = &d;
    let get = |path: String| async move {
        let (code, body) = d.get(&path).await;
        (
            code,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
        )
    };
    let (_, v) = get("/api/v1/jobs?limit=400".into()).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 400);
    let next = v["next"].as_str().unwrap().to_string();
    let (_, v2) = get(format!("/api/v1/jobs?limit=400&after={next}")).await;
    assert!(v2["jobs"][0]["name"].as_str().unwrap() > next.as_str());
    let (_, all) = get("/api/v1/jobs?limit=10000".into()).await;
    let names: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 1002, "removed jobs are hidden by default");
    assert!(!names.contains(&"gone"));
    assert_eq!(all["next"], Value::Null);
    let (_, v) = get("/api/v1/jobs?removed=1&limit=10000".into()).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1003);
    let (_, v) = get("/api/v1/jobs?folder=team-3".into()).await;
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 100);
    assert!(
        jobs.iter()
            .all(|j| j["name"].as_str().unwrap().starts_with("team-3/"))
    );
    let (_, v) = get("/api/v1/jobs?state=running&engine=local&env=dev".into()).await;
    let running: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["svc"], "{v}");
    let (_, v) = get("/api/v1/jobs?engine=flink".into()).await;
    assert!(v["jobs"].as_array().unwrap().is_empty());
    for bad in ["state=sleepy", "limit=0", "limit=lots", "removed=maybe"] {
        let (code, v) = get(format!("/api/v1/jobs?{bad}")).await;
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().contains('`'), "{bad}: {v}");
    }

    // The page: filters in a form that needs no script, removed jobs hidden, links per job.
    let (code, page) = d.get("/?folder=team-3&state=suspended").await;
    assert_eq!(code, 200);
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert!(page.contains("<form class=\"filters\" method=\"get\""));
    assert_eq!(page.matches("<tr id=\"team-3/").count(), 100);
    assert!(!page.contains("<tr id=\"team-4/"));
    assert!(page.contains("href=\"/jobs/team-3/heartbeat-0003\""));
    let (_, page) = d.get("/?limit=100").await;
    assert!(!page.contains("<tr id=\"gone\""));
    assert!(
        page.contains("id=\"next\" href=\"?limit=100&amp;after=team-0%2Fheartbeat-0980\""),
        "paging link"
    );
    assert!(page.contains(" UTC</time>"), "times carry their zone");
    let (code, _) = d.get("/?state=sleepy").await;
    assert_eq!(code, 400);

    // The page of one job.
    let (code, svc) = d.get("/jobs/svc").await;
    assert_eq!(code, 200, "{svc}");
    assert!(
        svc.contains("<span class=\"state s-running\">running</span>"),
        "{svc}"
    );
    assert!(svc.contains("<dt>uptime</dt>"), "{svc}");
    assert!(
        svc.contains("svc.yaml:3:1: invalid YAML"),
        "errors at path:line:column: {svc}"
    );
    assert!(svc.contains("started-svc"), "the log tail: {svc}");
    let (_, ticker) = d.get("/jobs/ticker").await;
    assert!(ticker.contains("next run <time datetime=\"20"), "{ticker}");
    assert!(
        ticker.contains(
            "<dt>command</dt><dd><code>sh</code> <code>-c</code> <code>echo tick-ok</code>"
        ),
        "the params that run: {ticker}"
    );
    assert!(ticker.contains("tick-ok"), "{ticker}");
    assert!(ticker.contains("class=\"sq r-succeeded\""), "{ticker}");
    assert!(ticker.contains("<table id=\"runs\">"));
    let (code, _) = d.get("/jobs/team-3%2Fheartbeat-0003").await;
    assert_eq!(code, 200);
    let (code, raw) = d.get("/jobs/team-3/heartbeat-0003").await;
    assert_eq!(code, 200, "a raw slash names the job too: {raw}");
    assert!(raw.contains("<h1>team-3/heartbeat-0003</h1>"), "{raw}");
    let (code, body) = d.get("/jobs/nope").await;
    assert_eq!(code, 404, "{body}");

    // Both pages in a real browser, at phone and desktop widths, with 1,000 jobs: screenshots
    // kept in JOBKEEPER_SCREENSHOT_DIR when set.
    let shots = std::env::var_os("JOBKEEPER_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    for (page, file) in [("/", "list"), ("/jobs/svc", "job")] {
        let url = format!("http://{}{page}", d.addr);
        let out = chromium(
            &tmp.path().join(format!("p-dom-{file}")),
            &["--dump-dom"],
            &url,
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dom = String::from_utf8_lossy(&out.stdout);
        assert!(dom.contains("jobkeeper"), "{dom}");
        for (w, h, size) in [(390, 844, "phone"), (1280, 900, "desktop")] {
            let png = shots.join(format!("{file}-{size}.png"));
            let shot = format!("--screenshot={}", png.display());
            let window = format!("--window-size={w},{h}");
            let out = chromium(
                &tmp.path().join(format!("p-{file}-{size}")),
                &[&shot, &window, "--hide-scrollbars"],
                &url,
            )
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bytes = std::fs::read(&png).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
                "{}",
                png.display()
            );
        }
    }
}

/// `(job, action, reasons)` the daemon recorded for a commit (its `planned` and `invalid`
/// events).
fn daemon_plan(d: &Daemon, commit: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = d
        .store
        .events(None, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.commit_id.as_deref() == Some(commit))
        .filter_map(|e| match e.kind.as_str() {
            "planned" => {
                let (action, reasons) = e.message.split_once(": ").unwrap();
                Some((e.job?, action.to_string(), reasons.to_string()))
            }
            "invalid" => Some((e.job?, "invalid".into(), String::new())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// The same, from `jobkeeper plan --format json`.
fn cli_plan(repo: &std::path::Path, from: &str, to: &str) -> Vec<(String, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args([
            "plan",
            "--repo",
            repo.to_str().unwrap(),
            "--from",
            from,
            "--to",
            to,
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut items: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let action = i["action"].as_str().unwrap().to_string();
            let reasons = if action == "invalid" {
                String::new()
            } else {
                let r: Vec<&str> = i["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                r.join("; ")
            };
            (i["job"].as_str().unwrap().to_string(), action, reasons)
        })
        .collect();
    items.sort();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_the_daemon_agree_on_the_same_commit_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(371));
    git.write("jobs/b.yaml", &sleeper(372));
    let c1 = git.commit_push("a and b");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let applied = |c: String| {
        let d = &d;
        async move {
            wait_for("the commit applied", Duration::from_secs(20), || {
                d.store.applied_commit().unwrap().as_deref() == Some(c.as_str())
            })
            .await;
        }
    };
    applied(c1.clone()).await;
    // a breaks, b changes, c is new.
    git.write("jobs/a.yaml", "env: dev\nparams: [broken\n");
    git.write("jobs/b.yaml", &sleeper(373));
    git.write("jobs/c.yaml", &sleeper(374));
    let c2 = git.commit_push("break a, change b, add c");
    applied(c2.clone()).await;
    // a is mended as it was (the daemon still holds that version: unchanged), b goes.
    git.write("jobs/a.yaml", &sleeper(371));
    git.remove("jobs/b.yaml");
    let c3 = git.commit_push("mend a, remove b");
    applied(c3.clone()).await;

    let work = &git.work;
    let empty = jobkeeper::changes::EMPTY_TREE;
    for (from, to) in [(empty, c1.as_str()), (&c1, &c2), (&c2, &c3)] {
        let daemon = daemon_plan(&d, to);
        assert!(!daemon.is_empty(), "{to}");
        assert_eq!(cli_plan(work, from, to), daemon, "{from}..{to}");
    }
    let third = daemon_plan(&d, &c3);
    assert!(
        third.iter().any(|(j, a, _)| j == "a" && a == "unchanged"),
        "{third:?}"
    );
}
