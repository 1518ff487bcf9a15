//! Host faults end to end, with real components: the state folder on a small tmpfs filled to
//! the last byte while a job runs, and the real daemon binary whose file descriptors are used
//! up (its limit lowered under the ones it holds, with `prlimit`). In both, the job's process is
//! killed: the job waits on the host (one `host_fault` alert to a real webhook listener naming
//! the resource), never `deploy_failed` or `gave_up`, is not shown running while nothing runs,
//! and runs again once the resource is back, with no restart of the daemon and no commit.
//!
//! Both need root (a tmpfs mount, `prlimit` on a process): they fail when not run as root.

mod common;
#[path = "support/receivers.rs"]
mod receivers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use receivers::{HttpReceiver, free_port};

/// One json webhook getting every alert but the info ones (the default `on:`), `host_fault`
/// among them.
fn hook_channel(url: &str) -> String {
    format!("alerts:\n  oncall:\n    webhook: {{url: \"{url}\", format: json}}\n")
}

fn alerts_of(r: &HttpReceiver, event: &str) -> Vec<serde_json::Value> {
    r.received()
        .iter()
        .map(|x| x.json())
        .filter(|j| j["event"] == event)
        .collect()
}

fn need_root(what: &str) {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0"),
        "this test needs root ({what}); run it as root"
    );
}

/// A tmpfs mounted for the test; unmounted on drop (lazily if something still holds it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "jobkeeper-test",
            ])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes `path` until the disk is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial page, byte by byte.
    while f.write(&[0u8]).is_ok_and(|k| k == 1) {
        n += 1;
    }
    n
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

async fn job_json(d: &Daemon, name: &str) -> serde_json::Value {
    let (code, body) = d.get(&format!("/api/v1/jobs/{name}")).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_makes_a_killed_job_wait_on_the_host_and_it_runs_again_once_freed() {
    need_root("a tmpfs mount for the state folder");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let _disk = Tmpfs::mount(&root.join("state"), "16m");
    let hook = HttpReceiver::start().await;
    let git = Git::new(root, "config");
    git.write("jobs/app.yaml", &sleeper(600));
    git.commit_push("app");
    let d = start(root, &config(root, &git, &hook_channel(&hook.url()))).await;
    let pid = d.running_pid("app").await;
    let state_dir = d.state_dir.clone();

    // The write-ahead log is emptied into the database, so the store's next writes need new
    // space; then the disk is filled to its last byte.
    let conn = rusqlite::Connection::open(state_dir.join("jobkeeper.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let filler = state_dir.join("filler.bin");
    let filled = fill(&filler);
    assert!(filled > 1024 * 1024, "{filled} bytes filled");
    kill(pid);

    // One host_fault alert naming the disk of the state folder.
    let disk = format!("the disk of {}", state_dir.display());
    let start = std::time::Instant::now();
    while alerts_of(&hook, "host_fault").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no host_fault alert: {}\n{:?}\n{}",
            job_json(&d, "app").await,
            hook.received()
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>(),
            d.get("/metrics").await.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fault = &alerts_of(&hook, "host_fault")[0];
    let reason = fault["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&disk), "{fault}");
    // Not shown running while nothing runs: waiting on the host, naming the disk.
    let job = job_json(&d, "app").await;
    assert_ne!(job["state"], "running", "{job}");
    assert!(job["running"].is_null(), "{job}");
    let shown = job["reason"].as_str().unwrap_or_default();
    assert!(
        shown.contains("waiting on the host") && shown.contains(&disk),
        "{job}"
    );
    let killed = job["runs"][0].clone();
    assert_ne!(killed["state"], "running", "{job}");
    // Well past the restart policy (3 attempts, 1 s backoff): the store keeps refusing, the
    // job keeps waiting, and nothing was given up or refused.
    let errors = |text: &str| metric(text, "jobkeeper_store_write_errors_total");
    let from = errors(&d.get("/metrics").await.1);
    let start = std::time::Instant::now();
    while errors(&d.get("/metrics").await.1) < from + 3.0 || start.elapsed().as_secs() < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writes stopped failing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = job_json(&d, "app").await;
    assert!(
        job["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting on the host")),
        "{job}"
    );
    for kind in ["gave_up", "deploy_failed"] {
        assert!(alerts_of(&hook, kind).is_empty(), "a {kind} alert");
    }
    assert_eq!(alerts_of(&hook, "host_fault").len(), 1, "one per episode");

    // Space is freed: the job runs again by itself, and the killed run's end is recorded.
    std::fs::remove_file(&filler).unwrap();
    wait_for("app running again", Duration::from_secs(40), || {
        d.live_runs("app")
            .first()
            .is_some_and(|r| pid_of(r) != pid && alive(pid_of(r)))
    })
    .await;
    let runs = d.runs("app");
    assert_eq!(d.live_runs("app").len(), 1, "{runs:#?}");
    let first = runs.iter().find(|r| pid_of(r) == pid).unwrap();
    assert_eq!(first.state, "failed", "{first:?}");
    wait_for("the job shown running", Duration::from_secs(10), || {
        d.job("app").is_some_and(|j| j.state == "running")
    })
    .await;
    let job = job_json(&d, "app").await;
    assert_eq!(job["state"], "running", "{job}");
    assert!(job["reason"].is_null(), "{job}");
    for kind in ["gave_up", "deploy_failed"] {
        assert!(!d.has_event("app", kind), "a {kind} event");
        assert!(alerts_of(&hook, kind).is_empty(), "a {kind} alert");
    }
    wait_for("host_recovered", Duration::from_secs(10), || {
        !events_of(&d.store, "host_recovered").is_empty()
    })
    .await;
    assert!(
        events_of(&d.store, "host_recovered")[0]
            .message
            .contains(&disk)
    );
    assert_eq!(alerts_of(&hook, "host_fault").len(), 1);
    drop(d);
}

/// The `jobkeeper` binary running `run --config`, its log in a file.
struct Binary {
    child: Child,
    port: u16,
    err: PathBuf,
}

impl Binary {
    fn start(root: &Path, config_text: &str, nofile: &str) -> Binary {
        let port = free_port();
        let cfg = root.join("config.yaml");
        std::fs::write(
            &cfg,
            config_text.replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}")),
        )
        .unwrap();
        let err = root.join("daemon.err");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Binary { child, port, err }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The soft and hard limits of open files of `pid`.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let ok = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --pid {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_file_descriptors_make_a_killed_job_wait_on_the_host_not_give_up() {
    need_root("prlimit on the daemon's process");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hook = HttpReceiver::start().await;
    let git = Git::new(root, "config");
    git.write("jobs/app.yaml", &sleeper(600));
    git.commit_push("app");
    let text = config(root, &git, &hook_channel(&hook.url()));
    let bin = Binary::start(root, &text, "256:4096");
    let daemon = bin.child.id();
    let store_path = root.join("state/jobkeeper.db");
    wait_for("the store", Duration::from_secs(20), || store_path.exists()).await;
    let store = jobkeeper::store::Blocking::open(&store_path).unwrap();
    let live = |store: &jobkeeper::store::Blocking| -> Vec<jobkeeper::store::RunRow> {
        store
            .runs("app", 50)
            .unwrap()
            .into_iter()
            .filter(|r| r.state == "running")
            .collect()
    };
    wait_for("app running", Duration::from_secs(20), || {
        live(&store).first().is_some_and(|r| alive(pid_of(r)))
    })
    .await;
    let pid = pid_of(&live(&store)[0]);
    // The daemon raised its soft limit to the hard one at start.
    let raised = nofile_of(daemon);

    // Its descriptors are used up: the limit is lowered under the ones it holds.
    set_nofile(daemon, 8, 4096);
    kill(pid);
    let tries = |log: &str| log.matches("waiting on the host: ").count();
    let start = std::time::Instant::now();
    while tries(&bin.log()) < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the job is not waiting on the host: {:?}\n{}",
            store.job("app").unwrap(),
            bin.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several tries later (past the restart policy's 3 attempts at 1-2 s): waiting, not given up.
    let row = store.job("app").unwrap().unwrap();
    assert_eq!(row.state, "pending", "{row:?}\n{}", bin.log());
    let reason = row.reason.clone().unwrap_or_default();
    assert!(reason.contains("out of file descriptors"), "{reason}");
    let kinds: Vec<String> = store
        .events(None, 100)
        .unwrap()
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert!(
        !kinds.iter().any(|k| k == "gave_up" || k == "deploy_failed"),
        "{kinds:?}"
    );
    let faults = events_of(&store, "host_fault");
    assert_eq!(faults.len(), 1, "{kinds:?}");
    assert!(faults[0].message.contains("file descriptors"), "{faults:?}");
    assert!(
        live(&store).iter().all(|r| pid_of(r) != pid),
        "the killed run is not running"
    );

    // Descriptors are back: the job runs again, and the alert, held back while no socket
    // could be opened, is delivered.
    set_nofile(daemon, 4096, 4096);
    wait_for("app running again", Duration::from_secs(40), || {
        live(&store)
            .first()
            .is_some_and(|r| pid_of(r) != pid && alive(pid_of(r)))
    })
    .await;
    wait_for("the host_fault alert", Duration::from_secs(40), || {
        !alerts_of(&hook, "host_fault").is_empty()
    })
    .await;
    let alert = &alerts_of(&hook, "host_fault")[0];
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.contains("file descriptors")),
        "{alert}"
    );
    let job = store.job("app").unwrap().unwrap();
    assert_eq!(job.state, "running", "{job:?}");
    // The episode ends once the start that waited went through: just after the run is live.
    wait_for("the host_recovered event", Duration::from_secs(10), || {
        !events_of(&store, "host_recovered").is_empty()
    })
    .await;
    for kind in ["gave_up", "deploy_failed"] {
        assert!(events_of(&store, kind).is_empty(), "a {kind} event");
        assert!(alerts_of(&hook, kind).is_empty(), "a {kind} alert");
    }
    let (code, _) = http_get(([127, 0, 0, 1], bin.port).into(), "/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(raised, (4096, 4096), "started under 256:4096");
}
