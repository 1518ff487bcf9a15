//! Safety valves, end to end against the real daemon: `status` prints nothing a terminal would
//! act on, no job name makes another job's run-log path, one unreadable job row is listed as
//! such while every other row is served, and a local run's descendants that leave its process
//! group still end with it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// A service job whose process is `sh` running `script`.
fn shell_job(script: &str) -> String {
    format!(
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", {}]\n",
        serde_json::to_string(script).unwrap()
    )
}

/// Runs the real `jobkeeper status --url` against `d`; its stdout.
fn status(d: &Daemon) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["status", "--url", &format!("http://{}", d.addr)])
        .env_remove("JOBKEEPER_TOKEN")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The byte offsets where the columns of `line` start (runs of two spaces end a cell).
fn column_starts(line: &str) -> Vec<usize> {
    let chars: Vec<char> = line.chars().collect();
    let mut starts = vec![0];
    for i in 2..chars.len() {
        if chars[i] != ' ' && chars[i - 1] == ' ' && chars[i - 2] == ' ' {
            starts.push(i);
        }
    }
    starts
}

/// `status` printed a commit subject's raw carriage return and escape sequences: the
/// terminal ran them (a subject can clear the line and rewrite what was printed before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_strips_control_characters_from_what_the_daemon_sends() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/app.yaml", &sleeper(300))
        .write("jobs/team-a/other.yaml", &sleeper(300));
    git.git(&["add", "-A"]);
    let subject = "deploy\r\x1b[2K\x1b]0;owned\x07\x1b[31mLGTM\u{202e}olleh\x08!";
    git.git(&["commit", "-q", "--cleanup=verbatim", "-m", subject]);
    git.push();
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    d.running_pid("app").await;
    d.running_pid("team-a/other").await;

    let out = status(&d);
    let bad: Vec<char> = out
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in:\n{out:?}");
    let first = out.lines().next().unwrap();
    assert!(first.contains("LGTM"), "{first}");
    assert!(first.contains("deploy"), "{first}");
    // The table stays aligned: every row's columns start where the header's do.
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().position(|l| l.starts_with("JOB")).unwrap();
    let starts = column_starts(lines[header]);
    for row in &lines[header + 1..] {
        let row_starts = column_starts(row);
        assert_eq!(
            &row_starts[..starts.len().min(row_starts.len())],
            &starts[..starts.len().min(row_starts.len())],
            "misaligned:\n{out}"
        );
    }
}

/// Job `victim/3.log` had the log folder `logs/victim/3.log/`, the path of job `victim`'s run
/// 3: that run could not open its log and failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_named_like_another_jobs_run_log_runs_and_restarts_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/victim.yaml", &sleeper(300));
    git.commit_push("victim");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let victim = d.running_pid("victim").await;
    let first = d.live_runs("victim")[0].id;
    // The next two runs: the new job's first, then victim's restart.
    let next = first + 2;
    let squatter = format!("victim/{next}.log");
    git.write(&format!("jobs/{squatter}.yaml"), &sleeper(300));
    git.commit_push("squatter");
    let squatter_pid = d.running_pid(&squatter).await;
    assert_eq!(d.live_runs(&squatter)[0].id, first + 1);

    // victim's process dies: its restart is run `next`, the one the squatter's name spells.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("victim restarted", Duration::from_secs(20), || {
        d.runs("victim")
            .iter()
            .any(|r| r.id > first && r.state != "starting")
    })
    .await;
    let restarted = d.runs("victim").into_iter().find(|r| r.id > first).unwrap();
    assert_eq!(
        restarted.id, next,
        "the test needs victim's restart to be run {next}"
    );
    assert_eq!(
        restarted.state, "running",
        "victim's run {next}: {:?}",
        restarted.reason
    );
    let pid = d.running_pid("victim").await;
    assert!(std::path::Path::new(&restarted.log_path).is_file());
    assert_ne!(pid, victim);

    // The squatter restarts fine too, and each job's log is its own.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(squatter_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the squatter restarted", Duration::from_secs(20), || {
        d.live_runs(&squatter)
            .first()
            .is_some_and(|r| pid_of(r) != squatter_pid && pid_of(r) != 0)
    })
    .await;
    let logs: Vec<String> = d
        .runs("victim")
        .into_iter()
        .chain(d.runs(&squatter))
        .map(|r| r.log_path)
        .collect();
    for (i, a) in logs.iter().enumerate() {
        for b in &logs[i + 1..] {
            assert!(
                !std::path::Path::new(a).starts_with(b) && !std::path::Path::new(b).starts_with(a),
                "{a} and {b} collide"
            );
        }
    }
    assert!(!d.has_event("victim", "gave_up") && !d.has_event("victim", "deploy_failed"));
    assert_eq!(d.job("victim").unwrap().state.as_str(), "running");
}

/// One job row whose spec is not JSON made `GET /api/v1/jobs`, the status page and the job's
/// page answer 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_job_row_is_marked_and_the_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    for job in ["a", "b", "c"] {
        git.write(&format!("jobs/{job}.yaml"), &sleeper(300));
    }
    git.commit_push("three jobs");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    for job in ["a", "b", "c"] {
        d.running_pid(job).await;
    }
    let db = rusqlite::Connection::open(d.state_dir.join("jobkeeper.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE jobs SET desired = '{\"env\": \"dev\", broken', applied = 'not json' \
         WHERE name = 'b'",
        [],
    )
    .unwrap();

    let (code, body) = d.get("/api/v1/jobs").await;
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jobs = list["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for j in jobs {
        let unreadable = j["unreadable"].as_str();
        if j["name"] == "b" {
            let why = unreadable.expect("b is marked unreadable");
            assert!(why.contains("desired") && why.contains("applied"), "{why}");
            assert_eq!(j["state"], "running");
        } else {
            assert_eq!(unreadable, None, "{j}");
            assert_eq!(j["state"], "running");
            assert_eq!(j["env"], "dev");
        }
    }

    let (code, page) = d.get("/").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("unreadable: "), "{page}");
    assert!(page.contains("href=\"/jobs/a\"") && page.contains("href=\"/jobs/c\""));

    let (code, body) = d.get("/api/v1/jobs/b").await;
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        detail["unreadable"]
            .as_str()
            .is_some_and(|w| w.contains("desired")),
        "{detail}"
    );
    assert!(!detail["runs"].as_array().unwrap().is_empty(), "{detail}");
    let (code, page) = d.get("/jobs/b").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"unreadable\""), "{page}");
    let (code, _) = d.get("/jobs/a").await;
    assert_eq!(code, 200);

    let (code, metrics) = d.get("/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    assert_eq!(
        metric(&metrics, "jobkeeper_jobs_unreadable"),
        1.0,
        "{metrics}"
    );

    let out = status(&d);
    assert!(out.contains("b    running (unreadable)"), "{out}");
    assert!(out.contains("unreadable: b: "), "{out}");
}

/// Kills the listed pids when the test ends, whatever happened (an escaped process on a build
/// without cgroups would otherwise live on).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The pid a job's run wrote into `file`, once it did.
async fn pid_in(file: &std::path::Path) -> u32 {
    let mut pid = 0;
    wait_for(
        &format!("{}", file.display()),
        Duration::from_secs(20),
        || {
            pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            pid != 0
        },
    )
    .await;
    pid
}

/// A child that left its run's process group with `setsid` outlived the run: removing or
/// suspending the job, or the run's own end, signalled only the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_local_run_started_in_a_new_session_ends_with_the_run() {
    assert!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
        "this test needs root, to make cgroups"
    );
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let escaper = |name: &str| {
        let file = tmp.path().join(format!("{name}.escaped"));
        let script = format!(
            // The child writes its pid only once it is in its own session, so the test
            // never reads the pid of a child that has not left the group yet.
            "rm -f {0}; setsid sh -c 'echo $$ > {0}.tmp && mv {0}.tmp {0}; exec sleep 1000' & exec sleep 1000",
            file.display()
        );
        (shell_job(&script), file)
    };
    let (removed_job, removed_file) = escaper("removed");
    let (suspended_job, suspended_file) = escaper("suspended");
    let (killed_job, killed_file) = escaper("killed");
    git.write("jobs/removed.yaml", &removed_job)
        .write("jobs/suspended.yaml", &suspended_job)
        .write("jobs/killed.yaml", &killed_job);
    git.commit_push("three jobs that leave their process group");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let mut escaped = Vec::new();
    for (job, file) in [
        ("removed", &removed_file),
        ("suspended", &suspended_file),
        ("killed", &killed_file),
    ] {
        let leader = d.running_pid(job).await;
        let pid = pid_in(file).await;
        let pgrp = jobkeeper::proc::stat(pid).unwrap().pgrp;
        assert_ne!(pgrp, leader, "{job}'s child left the run's process group");
        escaped.push((job, leader, pid));
    }
    let _cleanup = KillOnDrop(escaped.iter().map(|(_, _, p)| *p).collect());

    // Removed from the repo, and suspended: the run is stopped.
    git.remove("jobs/removed.yaml");
    git.write(
        "jobs/suspended.yaml",
        &format!("{suspended_job}suspend: true\n"),
    );
    git.commit_push("remove one, suspend one");
    // The leader of the third dies: the run ends by itself and is restarted.
    let killed_leader = escaped[2].1;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed_leader as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    wait_for("removed stopped", Duration::from_secs(20), || {
        d.job("removed").unwrap().state.as_str() == "stopped"
    })
    .await;
    wait_for("suspended suspended", Duration::from_secs(20), || {
        d.job("suspended").unwrap().state.as_str() == "suspended"
    })
    .await;
    wait_for("killed restarted", Duration::from_secs(20), || {
        d.live_runs("killed")
            .first()
            .is_some_and(|r| pid_of(r) != 0 && pid_of(r) != killed_leader)
    })
    .await;
    for (job, leader, pid) in &escaped {
        wait_for(
            &format!("{job}'s escaped child {pid} gone"),
            Duration::from_secs(10),
            || !alive(*pid),
        )
        .await;
        assert!(!alive(*leader), "{job}'s leader {leader}");
    }
    // The restarted run has its own escaped child, in its own cgroup.
    let old = escaped[2].2;
    let mut again = 0;
    wait_for("the restarted run's child", Duration::from_secs(20), || {
        again = std::fs::read_to_string(&killed_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        again != 0 && again != old && alive(again)
    })
    .await;
    let cgroup = std::fs::read_to_string(format!("/proc/{again}/cgroup")).unwrap();
    assert!(cgroup.contains("/jobkeeper-runs/"), "{cgroup}");
    let mut d = d;
    d.stop().await;
    wait_for(
        "the daemon's stop ended it",
        Duration::from_secs(10),
        || !alive(again),
    )
    .await;
}
