//! The daemon under systemd: the unit file verifies, and a test playing systemd receives READY,
//! STATUS, periodic WATCHDOG (stopping while the health sweep's loop is stuck, going on while
//! only the store's write lock is held) and STOPPING over a real
//! `NOTIFY_SOCKET`, and sees local runs get SIGTERM before the daemon exits 0.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/jobkeeper.service"
    ))
    .unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit.replace("/usr/bin/jobkeeper", env!("CARGO_BIN_EXE_jobkeeper"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobkeeper.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze runs (Debian's systemd package; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("jobkeeper.service"),
        "warnings about the unit: {stderr}"
    );
}

/// Messages received on the socket until `limit`, or until `stop` says so.
fn receive(
    sock: &UnixDatagram,
    limit: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = stop(&msg);
            got.push(msg);
            if done {
                break;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_a_graceful_stop_under_a_notify_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write(
        "jobs/svc.yaml",
        "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done\"]\n",
    );
    git.commit_push("svc");
    let cfg = tmp.path().join("config.yaml");
    let extra = "health: {interval: 200ms}\n";
    std::fs::write(&cfg, config(tmp.path(), &git, extra)).unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let got = receive(&sock, Duration::from_secs(20), |m| m.starts_with("READY=1"));
    assert!(
        got.last()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=")),
        "{got:?}"
    );
    // Watchdog pings every half interval; the status line says what the daemon does.
    let mut pings = 0;
    let got = receive(&sock, Duration::from_secs(8), |m| {
        pings += usize::from(m == "WATCHDOG=1");
        m.starts_with("STATUS=applied ") && m.contains("1 running") && pings >= 3
    });
    assert!(pings >= 3, "{got:?}");
    assert!(
        got.iter()
            .any(|m| m.starts_with("STATUS=applied ") && m.contains("1 jobs: 1 running")),
        "{got:?}"
    );

    // The store locked by another process and a commit pushed: the daemon's write of it waits
    // on the lock, on a blocking thread. The pings do not wait on the store: they go on.
    let db = rusqlite::Connection::open(tmp.path().join("state/jobkeeper.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    git.write("jobs/other.yaml", &common::sleeper(600));
    git.commit_push("another job, while the store is locked");
    let mut pings = 0;
    let locked = receive(&sock, Duration::from_secs(4), |m| {
        pings += usize::from(m == "WATCHDOG=1");
        pings >= 5
    });
    assert!(
        pings >= 5,
        "pings while a store write waits on the lock: {locked:?}"
    );
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);

    // A frozen process (what a stuck runtime looks like to systemd) sends none, and pings
    // again once it runs.
    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let _ = receive(&sock, Duration::from_millis(300), |_| false); // pings sent before the stop
    let stuck = receive(&sock, Duration::from_millis(1500), |_| false);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        !stuck.iter().any(|m| m == "WATCHDOG=1"),
        "pings while the process is stopped: {stuck:?}"
    );
    let again = receive(&sock, Duration::from_secs(10), |m| m == "WATCHDOG=1");
    assert!(
        again.iter().any(|m| m == "WATCHDOG=1"),
        "pings again once it runs: {again:?}"
    );

    // SIGTERM: STOPPING=1, the run gets SIGTERM from the daemon, exit 0.
    let store = jobkeeper::store::Blocking::open(&tmp.path().join("state/jobkeeper.db")).unwrap();
    let run = store.runs("svc", 1).unwrap().remove(0);
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let got = receive(&sock, Duration::from_secs(10), |m| {
        m.starts_with("STOPPING=1")
    });
    assert!(got.iter().any(|m| m.starts_with("STOPPING=1")), "{got:?}");
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "within the unit's stop timeout"
    );
    let log = std::fs::read_to_string(&run.log_path).unwrap();
    assert!(
        log.contains("got TERM"),
        "the run was stopped with SIGTERM first: {log}"
    );
    assert!(!alive(pid_of(&run)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_refuses_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let git = Git::new(tmp.path(), "config");
    git.write("jobs/a.yaml", &sleeper(351));
    git.commit_push("a");
    let cfg = tmp.path().join("config.yaml");
    let text = config(tmp.path(), &git, "");
    std::fs::write(&cfg, &text).unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hup = |pid: u32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    receive(&sock, Duration::from_secs(20), |m| m.starts_with("READY=1"));
    let db = tmp.path().join("state/jobkeeper.db");
    let store = jobkeeper::store::Blocking::open(&db).unwrap();
    let running = |store: &jobkeeper::store::Blocking, job: &str| {
        store
            .runs(job, 5)
            .unwrap()
            .iter()
            .filter(|r| r.state == "running")
            .map(pid_of)
            .collect::<Vec<_>>()
    };
    let mut pid_a = 0;
    wait_for("a running", Duration::from_secs(20), || {
        pid_a = running(&store, "a").first().copied().unwrap_or(0);
        pid_a != 0
    })
    .await;

    // A good config adds the env `prod`: after the reload a job in `prod` is valid and runs.
    std::fs::write(
        &cfg,
        text.replace("envs:\n", "envs:\n  prod: {engine: local}\n"),
    )
    .unwrap();
    hup(daemon.id());
    let got = receive(&sock, Duration::from_secs(10), |m| m.starts_with("READY=1"));
    assert!(
        got.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{got:?}"
    );
    assert!(got.last().unwrap().contains("reloaded"), "{got:?}");
    git.write(
        "jobs/p.yaml",
        &sleeper(352).replace("env: dev", "env: prod"),
    );
    git.commit_push("a job in prod");
    wait_for("p running", Duration::from_secs(20), || {
        !running(&store, "p").is_empty()
    })
    .await;

    // A bad config is refused: the running config and jobs stay.
    std::fs::write(&cfg, "repo: {url: 42}\nstate_dir: [x]\n").unwrap();
    hup(daemon.id());
    let got = receive(&sock, Duration::from_secs(10), |m| m.starts_with("READY=1"));
    assert!(got.last().unwrap().contains("refused"), "{got:?}");
    let refused = store
        .events(None, 50)
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "config_reload_refused")
        .unwrap();
    assert!(
        refused.message.contains("config.yaml:1:"),
        "{}",
        refused.message
    );
    assert_eq!(
        running(&store, "a"),
        vec![pid_a],
        "jobs untouched by a refused reload"
    );
    git.write(
        "jobs/q.yaml",
        &sleeper(353).replace("env: dev", "env: prod"),
    );
    git.commit_push("another job in prod, under the kept config");
    wait_for("q running", Duration::from_secs(20), || {
        !running(&store, "q").is_empty()
    })
    .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn under_journald_lines_have_a_priority_prefix_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("journal.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    // A config whose repo does not exist: the daemon logs a warning and keeps going.
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "repo: {{url: {}/nope.git}}\nstate_dir: {}/state\nlisten: 127.0.0.1:0\nenvs: {{dev: {{engine: local}}}}\n",
            tmp.path().display(),
            tmp.path().display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        text = std::fs::read_to_string(&log_path).unwrap();
        // Other warnings (no inotify on a missing path) may come first.
        if text
            .lines()
            .any(|l| l.starts_with("<4>") && l.contains("unreachable"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        text.lines().next().is_some_and(|l| l.starts_with("<6>")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("unreachable")),
        "{text}"
    );
    // After `<N>` comes the target, not a timestamp; no ANSI colours.
    assert!(
        text.lines().all(|l| !l
            .get(3..4)
            .is_some_and(|c| c.chars().all(|c| c.is_ascii_digit()))),
        "no timestamps: {text}"
    );
    assert!(!text.contains('\u{1b}'), "no colours: {text}");
}
