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
