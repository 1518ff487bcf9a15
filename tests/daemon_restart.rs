//! The daemon binary killed with SIGKILL or stopped with SIGTERM, then started again: no job
//! ever runs twice, and no stale run keeps running (SPEC reconcile rule 7).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use jobkeeper::store::Blocking;

/// The daemon config (on a free port) and the daemon's log path, under `root`.
fn write_config(root: &std::path::Path, git: &Git) -> (std::path::PathBuf, std::path::PathBuf) {
    let port = free_port();
    let cfg =
        config(root, git, "").replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let cfg_path = root.join("config.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();
    (cfg_path, root.join("daemon.log"))
}

/// The store of the daemon under `root`, once it exists.
async fn open_store(root: &std::path::Path) -> Blocking {
    let db = root.join("state/jobkeeper.db");
    wait_for("store", Duration::from_secs(20), || db.exists()).await;
    Blocking::open(&db).unwrap()
}

fn spawn_daemon(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_stops_the_orphan_and_runs_the_job_once() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/svc.yaml", &sleeper(311));
    git.commit_push("svc");
    let (cfg_path, log) = write_config(tmp.path(), &git);
    let mut daemon = spawn_daemon(&cfg_path, &log);
    let store = open_store(tmp.path()).await;
    let live = |store: &Blocking| -> Vec<u32> {
        store
            .runs("svc", 50)
            .unwrap()
            .iter()
            .filter(|r| r.state == "running")
            .map(pid_of)
            .collect()
    };
    let mut first = 0;
    wait_for("svc running", Duration::from_secs(20), || {
        let l = live(&store);
        first = l.first().copied().unwrap_or(0);
        l.len() == 1 && alive(first)
    })
    .await;

    daemon.kill().unwrap(); // SIGKILL: no chance to stop its children
    daemon.wait().unwrap();
    assert!(
        alive(first),
        "the orphan survives the daemon in its own process group"
    );

    let mut daemon = spawn_daemon(&cfg_path, &log);
    wait_for("orphan stopped", Duration::from_secs(20), || !alive(first)).await;
    let mut second = 0;
    wait_for("svc running again", Duration::from_secs(20), || {
        let l = live(&store);
        second = l.first().copied().unwrap_or(0);
        l.len() == 1 && second != first && alive(second)
    })
    .await;
    // A while later there is still exactly one run, and one `sleep 311` process of ours.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live(&store), vec![second]);
    let runs = store.runs("svc", 50).unwrap();
    assert_eq!(runs.len(), 2, "one run per daemon life: {runs:?}");
    assert!(
        runs[1]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("pid and start time"),
        "{runs:?}"
    );

    // SIGTERM: graceful, exit 0, the run stopped with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "exit 0 after SIGTERM: {status:?}; log: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!alive(second));
    assert_eq!(store.integrity_check().unwrap(), "ok");

    // Started again on the same commit: nothing is applied twice, the job runs once.
    let mut daemon = spawn_daemon(&cfg_path, &log);
    let mut third = 0;
    wait_for("svc running a third time", Duration::from_secs(20), || {
        let l = live(&store);
        third = l.first().copied().unwrap_or(0);
        l.len() == 1 && third != second && alive(third)
    })
    .await;
    let planned = store
        .events(Some("svc"), 100)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "planned")
        .count();
    assert_eq!(planned, 1, "the same commit is planned once");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // Clean up the orphan this test made on purpose.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(third as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A service job whose processes ignore SIGTERM (the shell's ignored disposition is inherited
/// by `sleep`), with a marker in its argv.
fn stubborn(marker: &str) -> String {
    format!(
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"trap '' TERM; sleep 600; echo {marker}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_a_stubborn_run_is_stopping_stops_it_at_its_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/stubborn.yaml", &stubborn("v1"));
    git.commit_push("v1");
    let (cfg_path, log) = write_config(tmp.path(), &git);
    let mut daemon = spawn_daemon(&cfg_path, &log);
    let store = open_store(tmp.path()).await;
    let mut first = 0;
    wait_for("v1 running", Duration::from_secs(20), || {
        let runs = store.runs("stubborn", 10).unwrap();
        first = runs
            .iter()
            .find(|r| r.state == "running")
            .map(pid_of)
            .unwrap_or(0);
        first != 0 && alive(first)
    })
    .await;

    // A new version: the daemon sends v1 SIGTERM, which it ignores, and waits out its grace
    // period (10 s) before SIGKILL; the daemon is killed inside it.
    git.write("jobs/stubborn.yaml", &stubborn("v2"));
    git.commit_push("v2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(first), "v1 ignores SIGTERM");
    let first_run = store.runs("stubborn", 10).unwrap().last().unwrap().clone();
    assert_eq!(
        first_run.state, "running",
        "a run is not recorded ended while its process lives: {first_run:?}"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(alive(first), "v1 outlives the killed daemon");

    // The next daemon finds v1 by its recorded pid, stops it (SIGKILL after the grace period),
    // then runs v2 alone.
    let mut daemon = spawn_daemon(&cfg_path, &log);
    wait_for("v1 stopped", Duration::from_secs(40), || !alive(first)).await;
    let mut second = 0;
    wait_for("v2 running", Duration::from_secs(40), || {
        let runs = store.runs("stubborn", 10).unwrap();
        let live: Vec<_> = runs.iter().filter(|r| r.state == "running").collect();
        second = live.first().map(|r| pid_of(r)).unwrap_or(0);
        live.len() == 1 && second != first && alive(second) && cmdline(second).contains("v2")
    })
    .await;
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(second as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A second daemon on the same state folder (and so, in practice, the same port) said only that
/// it could not listen; it names the daemon holding the folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_folder_names_the_first_before_trying_its_port() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/svc.yaml", &sleeper(313));
    git.commit_push("svc");
    let (cfg_path, log) = write_config(tmp.path(), &git);
    let mut first = spawn_daemon(&cfg_path, &log);
    let store = open_store(tmp.path()).await;
    wait_for("svc running", Duration::from_secs(20), || {
        store
            .runs("svc", 1)
            .unwrap()
            .first()
            .is_some_and(|r| r.state == "running")
    })
    .await;
    let second = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg_path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains(&format!("another jobkeeper daemon (pid {})", first.id())),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
}

/// A local run recorded live by another node (a store shared with, or moved from, another
/// host) names a process of that host: this node never adopts, stops or signals a pid of its
/// own that happens to match. The run is ended with why, and the job runs again here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_of_another_node_is_never_adopted_or_stopped_here() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/svc.yaml", &sleeper(600));
    git.commit_push("svc");
    let cfg = config(tmp.path(), &git, "");
    let mut d = start(tmp.path(), &cfg).await;
    d.running_pid("svc").await;
    d.stop().await;

    // A process of this host with the same pid and start time as the run's record says: as if
    // the other host's pid had been recycled here. The store says the run is still live there.
    let mut here = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = here.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = after_comm.split(' ').nth(19).unwrap().parse().unwrap();
    let run = d.runs("svc").remove(0);
    let db = rusqlite::Connection::open(tmp.path().join("state/jobkeeper.db")).unwrap();
    db.execute(
        "UPDATE runs SET state = 'running', ended_at = NULL, node = 'other-host', handle = ?2
         WHERE id = ?1",
        rusqlite::params![
            run.id,
            format!(
                r#"{{"run_id":{},"engine_id":"{pid}","start_ticks":{ticks}}}"#,
                run.id
            )
        ],
    )
    .unwrap();
    drop(db);

    let mut d = start(tmp.path(), &cfg).await;
    wait_for(
        "the other node's run ended",
        Duration::from_secs(20),
        || {
            d.runs("svc")
                .iter()
                .any(|r| r.id == run.id && r.state != "running")
        },
    )
    .await;
    let new_pid = d.running_pid("svc").await;
    assert_ne!(new_pid, pid, "a run of its own here");
    let old = d.runs("svc").into_iter().find(|r| r.id == run.id).unwrap();
    assert_eq!(old.state, "stopped", "{old:?}");
    assert!(
        old.reason
            .as_deref()
            .is_some_and(|r| r.contains("a local run of node `other-host`")),
        "{old:?}"
    );
    assert!(
        here.try_wait().unwrap().is_none(),
        "the process with the other node's pid was not signalled"
    );
    d.stop().await;
    here.kill().unwrap();
    let _ = here.wait();
}
