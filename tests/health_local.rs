//! The health loop end to end on the local engine: restarts with backoff, giving up, cron
//! schedules with each overlap policy, timeouts, and daemon restarts — with real processes.

mod common;

use std::time::Duration;

use common::*;

fn job(command: &str, extra: &str) -> String {
    format!("env: dev\nparams:\n  command: {command}\n{extra}")
}

fn kinds(d: &Daemon, name: &str) -> Vec<String> {
    let mut k: Vec<String> = d
        .events(name)
        .into_iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    k.reverse();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_exits_3_runs_attempts_plus_one_times_then_gives_up_until_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let restart = "restart: {attempts: 3, window: 1h, backoff: 100ms, max_backoff: 200ms}\n";
    git.write(
        "jobs/crash.yaml",
        &job(r#"["sh", "-c", "echo boom; exit 3"]"#, restart),
    );
    git.commit_push("a crashing job");
    let health = "health: {interval: 200ms}\n";
    let d = start(tmp.path(), &config(tmp.path(), &git, health)).await;
    wait_for("gave_up", Duration::from_secs(20), || {
        d.job("crash").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    // Later sweeps, past the policy's longest backoff: no restart.
    d.sweeps_pass(3, Duration::from_secs(20)).await;
    let runs = d.runs("crash");
    assert_eq!(runs.len(), 4, "the first run and 3 restarts: {runs:#?}");
    assert!(runs.iter().all(|r| r.state == "failed"));
    assert!(
        runs[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("exited with code 3"),
        "{:?}",
        runs[0].reason
    );
    assert!(
        runs[0].reason.as_deref().unwrap().contains("boom"),
        "the reason has the log's last lines"
    );
    let k = kinds(&d, "crash");
    assert_eq!(k.iter().filter(|k| *k == "restarted").count(), 3, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "gave_up").count(), 1, "{k:?}");
    let restarted: Vec<String> = d
        .events("crash")
        .into_iter()
        .filter(|e| e.kind == "restarted")
        .map(|e| e.message)
        .collect();
    assert!(
        restarted.iter().any(|m| m.contains("attempt 3/3")),
        "{restarted:?}"
    );

    // A new commit that changes the job clears gave_up.
    git.write("jobs/crash.yaml", &job(r#"["sleep", "341"]"#, restart));
    git.commit_push("fix the crash");
    let pid = d.running_pid("crash").await;
    assert!(cmdline(pid).contains("sleep 341"));
    assert_eq!(d.job("crash").unwrap().state, "running");
}

/// A batch job that gave up is not started at its cron times any more (it used to start at every
/// tick and raise `gave_up` again each time) until a new commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_that_gave_up_waits_for_a_commit_instead_of_running_at_every_tick() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let every_second =
        "schedule: \"* * * * * *\"\nrestart: {attempts: 1, window: 1h, backoff: 100ms}\n";
    git.write(
        "jobs/nightly.yaml",
        &job(r#"["sh", "-c", "exit 4"]"#, every_second),
    );
    // A job on the same cron times that succeeds: its runs mark the ticks that passed.
    git.write(
        "jobs/ticker.yaml",
        &job(r#"["true"]"#, "schedule: \"* * * * * *\"\n"),
    );
    git.commit_push("a failing batch job");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    wait_for("gave_up", Duration::from_secs(20), || {
        d.job("nightly").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("nightly").len();
    // Three more cron times pass: the ticker ran at each.
    let ticks = d.runs("ticker").len();
    wait_for("three more ticks", Duration::from_secs(20), || {
        d.runs("ticker").len() >= ticks + 3
    })
    .await;
    assert_eq!(d.runs("nightly").len(), runs, "no run after gave_up");
    let k = kinds(&d, "nightly");
    assert_eq!(k.iter().filter(|k| *k == "gave_up").count(), 1, "{k:?}");
    assert_eq!(d.job("nightly").unwrap().state, "gave_up");

    // A new commit schedules it again.
    git.write(
        "jobs/nightly.yaml",
        &job(r#"["sh", "-c", "exit 0"]"#, every_second),
    );
    git.commit_push("fix the batch job");
    wait_for("a run after the fix", Duration::from_secs(20), || {
        d.runs("nightly").iter().any(|r| r.state == "succeeded")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_job_is_back_after_its_backoff_and_exit_0_is_restarted_too() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/svc.yaml",
        &job(
            r#"["sleep", "342"]"#,
            "restart: {backoff: 300ms, max_backoff: 1s}\n",
        ),
    );
    git.write(
        "jobs/oneshot.yaml",
        &job(
            r#"["sh", "-c", "sleep 0.2"]"#,
            "restart: {attempts: 2, backoff: 100ms}\n",
        ),
    );
    git.commit_push("jobs");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid = d.running_pid("svc").await;
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("svc in backoff", Duration::from_secs(5), || {
        d.job("svc")
            .is_some_and(|j| j.state == "backoff" || j.state == "running")
            && !alive(pid)
    })
    .await;
    let new = d.running_pid("svc").await;
    assert_ne!(new, pid);
    assert!(
        killed.elapsed() >= Duration::from_millis(300),
        "not before the backoff"
    );
    let failed = d
        .events("svc")
        .into_iter()
        .find(|e| e.kind == "failed")
        .unwrap();
    assert!(failed.message.contains("SIGKILL"), "{}", failed.message);
    // Up again for a while: `recovered`.
    wait_for("recovered", Duration::from_secs(15), || {
        d.has_event("svc", "recovered")
    })
    .await;
    assert!(alive(new));

    // A service job that exits 0 is a failure to stay up: restarted, then gave_up.
    wait_for("oneshot gave up", Duration::from_secs(15), || {
        d.job("oneshot").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    let runs = d.runs("oneshot");
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(
        runs[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("must always run")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seconds_schedule_runs_on_time_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/tick.yaml",
        &job(r#"["true"]"#, "schedule: \"*/2 * * * * *\"\n"),
    );
    git.commit_push("tick");
    let d = start(tmp.path(), &config(tmp.path(), &git, "timezone: UTC\n")).await;
    wait_for("3 runs", Duration::from_secs(12), || {
        d.runs("tick")
            .iter()
            .filter(|r| r.state == "succeeded")
            .count()
            >= 3
    })
    .await;
    for r in d.runs("tick").iter().filter(|r| r.state == "succeeded") {
        let ms = r.started_at % 2000;
        assert!(
            ms < 300,
            "run {} started {ms} ms after its even second",
            r.id
        );
    }
    assert_eq!(d.job("tick").unwrap().state, "succeeded");
    assert!(kinds(&d, "tick").contains(&"succeeded".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_forbid_replace_allow_and_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let slow = r#"["sleep", "2.5"]"#;
    git.write(
        "jobs/forbid.yaml",
        &job(slow, "schedule: \"* * * * * *\"\noverlap: forbid\n"),
    );
    git.write(
        "jobs/replace.yaml",
        &job(slow, "schedule: \"* * * * * *\"\noverlap: replace\n"),
    );
    git.write(
        "jobs/allow.yaml",
        &job(slow, "schedule: \"* * * * * *\"\noverlap: allow\n"),
    );
    git.write(
        "jobs/slow.yaml",
        &job(
            r#"["sleep", "30"]"#,
            "schedule: \"*/3 * * * * *\"\ntimeout: 500ms\nrestart: {attempts: 0}\n",
        ),
    );
    git.commit_push("overlap policies");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let mut max_allow = 0;
    let mut max_forbid = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        max_allow = max_allow.max(d.live_runs("allow").len());
        max_forbid = max_forbid.max(d.live_runs("forbid").len());
        assert!(d.live_runs("replace").len() <= 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(max_allow >= 2, "allow: runs overlap ({max_allow})");
    assert_eq!(max_forbid, 1, "forbid: never two at once");
    assert!(kinds(&d, "forbid").contains(&"skipped".to_string()));
    let replaced = d
        .runs("replace")
        .into_iter()
        .filter(|r| r.state == "stopped")
        .count();
    assert!(replaced >= 2, "replace: earlier runs stopped");
    let slow = d.runs("slow");
    let timed_out = slow
        .iter()
        .find(|r| r.state == "failed")
        .expect("a timed-out run");
    assert!(
        timed_out
            .reason
            .as_deref()
            .unwrap()
            .contains("timed out after 500ms"),
        "{timed_out:?}"
    );
    assert!(timed_out.ended_at.unwrap() - timed_out.started_at < 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_and_keeps_history_and_resume_starts_again() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/s.yaml", &job(r#"["sleep", "343"]"#, ""));
    git.commit_push("s");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    let pid = d.running_pid("s").await;
    git.write(
        "jobs/s.yaml",
        &job(r#"["sleep", "343"]"#, "suspend: true\n"),
    );
    git.commit_push("suspend s");
    wait_for("suspended", Duration::from_secs(10), || {
        !alive(pid) && d.job("s").unwrap().state == "suspended"
    })
    .await;
    assert_eq!(d.runs("s").len(), 1);
    git.write(
        "jobs/s.yaml",
        &job(r#"["sleep", "343"]"#, "suspend: false\n"),
    );
    git.commit_push("resume s");
    let again = d.running_pid("s").await;
    assert_ne!(again, pid);
    assert_eq!(d.runs("s").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_neither_replays_old_ticks_nor_duplicates_live_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    // New Year's midnight: long past, never replayed.
    git.write(
        "jobs/yearly.yaml",
        &job(r#"["true"]"#, "schedule: \"0 0 1 1 *\"\n"),
    );
    git.write(
        "jobs/tick.yaml",
        &job(r#"["sleep", "1"]"#, "schedule: \"*/2 * * * * *\"\n"),
    );
    git.commit_push("schedules");
    let cfg = config(tmp.path(), &git, "");
    let mut d = start(tmp.path(), &cfg).await;
    wait_for("a tick", Duration::from_secs(6), || {
        !d.runs("tick").is_empty()
    })
    .await;
    d.stop().await;
    let mut d = start(tmp.path(), &cfg).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        d.runs("yearly").is_empty(),
        "a tick from long ago is not replayed"
    );
    let runs = d.runs("tick");
    let mut starts: Vec<i64> = runs.iter().map(|r| r.started_at / 2000).collect();
    starts.sort();
    let n = starts.len();
    starts.dedup();
    let ev: Vec<(i64, String, String)> = d
        .events("tick")
        .into_iter()
        .map(|e| (e.time, e.kind.as_str().to_string(), e.message))
        .collect();
    assert_eq!(
        starts.len(),
        n,
        "at most one run per tick: {runs:#?} {ev:#?}"
    );
    assert!(d.live_runs("tick").len() <= 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_commit_to_a_job_that_gave_up_starts_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    let cmd = r#"["sh", "-c", "exit 3"]"#;
    git.write(
        "jobs/c.yaml",
        &job(cmd, "restart: {attempts: 1, backoff: 100ms}\n"),
    );
    git.commit_push("crashes");
    let d = start(tmp.path(), &config(tmp.path(), &git, "")).await;
    wait_for("gave_up", Duration::from_secs(15), || {
        d.job("c").is_some_and(|j| j.state == "gave_up")
    })
    .await;
    assert_eq!(d.runs("c").len(), 2);
    // Only the restart policy changes (in place): gave_up is cleared and the job runs again.
    git.write(
        "jobs/c.yaml",
        &job(cmd, "restart: {attempts: 2, backoff: 100ms}\n"),
    );
    git.commit_push("more attempts");
    wait_for(
        "runs again, then gives up again",
        Duration::from_secs(15),
        || d.runs("c").len() == 5 && d.job("c").is_some_and(|j| j.state == "gave_up"),
    )
    .await;
}
