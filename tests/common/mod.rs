//! Helpers for end-to-end tests: real git repos (bare + work tree) with real commits and pushes,
//! the daemon run in-process on a free loopback port, and bounded waits.
#![allow(dead_code)]

pub mod flink;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jobkeeper::store::{Blocking, EventRow, JobRow, RunRow};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A bare repo and a work tree cloned from it.
pub struct Git {
    pub bare: PathBuf,
    pub work: PathBuf,
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann Operator")
        .env("GIT_AUTHOR_EMAIL", "ann@example.com")
        .env("GIT_COMMITTER_NAME", "Ann Operator")
        .env("GIT_COMMITTER_EMAIL", "ann@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Git {
    /// A new bare repo `name.git` under `root` and its clone `name`.
    pub fn new(root: &Path, name: &str) -> Git {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(name);
        std::fs::create_dir_all(&bare).unwrap();
        git_in(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git_in(
            root,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        git_in(&work, &["checkout", "-q", "-b", "main"]);
        Git { bare, work }
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.work, args)
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.work.join(rel)).unwrap();
        self
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn push(&self) {
        self.git(&["push", "-q", "origin", "HEAD:main"]);
    }

    pub fn force_push(&self) {
        self.git(&["push", "-q", "--force", "origin", "HEAD:main"]);
    }

    /// Commits and pushes; returns the commit id.
    pub fn commit_push(&self, msg: &str) -> String {
        let id = self.commit(msg);
        self.push();
        id
    }
}

/// A daemon running in-process.
pub struct Daemon {
    pub cancel: CancellationToken,
    pub handle: Option<JoinHandle<Result<(), jobkeeper::daemon::DaemonError>>>,
    pub state_dir: PathBuf,
    pub addr: std::net::SocketAddr,
    pub store: Blocking,
}

/// A daemon config for tests: the bare repo as config repo, state under `root/state`.
pub fn config(root: &Path, git: &Git, extra: &str) -> String {
    config_with(root, &git.bare.display().to_string(), "1s", extra)
}

/// [`config`] with any repo URL and poll interval.
pub fn config_with(root: &Path, url: &str, poll: &str, extra: &str) -> String {
    format!(
        "repo:\n  url: {url}\n  branch: main\n  path: jobs\n  poll: {poll}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         restart: {{attempts: 3, window: 1h, backoff: 1s, max_backoff: 2s}}\n\
         envs:\n  dev: {{engine: local, vars: {{WHO: world}}}}\n{extra}",
        root.join("state").display()
    )
}

pub async fn start(root: &Path, config_text: &str) -> Daemon {
    start_at(root, config_text, 0).await
}

/// [`start`] on loopback port `port` (0: a free one). A restart on the port of the daemon it
/// replaces keeps the URLs that daemon handed out (spark jars) working, as with a fixed `listen`.
pub async fn start_at(root: &Path, config_text: &str, port: u16) -> Daemon {
    let path = root.join("config.yaml");
    std::fs::write(&path, config_text).unwrap();
    let settings = jobkeeper::settings::load(&path).unwrap_or_else(|d| {
        panic!("config: {}", jobkeeper::diag::render(&d));
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state_dir = settings.state_dir.clone();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(jobkeeper::daemon::run(settings, listener, cancel.clone()));
    let db = state_dir.join("jobkeeper.db");
    // The daemon may still be setting the store up (WAL mode, migrations): retry briefly.
    let mut store = None;
    wait_for("the store", Duration::from_secs(10), || {
        store = db.exists().then(|| Blocking::open(&db).ok()).flatten();
        store.is_some()
    })
    .await;
    let store = store.unwrap();
    Daemon {
        cancel,
        handle: Some(handle),
        state_dir,
        addr,
        store,
    }
}

impl Daemon {
    /// Graceful stop: local runs are stopped with the daemon.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("daemon stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }

    pub fn job(&self, name: &str) -> Option<JobRow> {
        self.store.job(name).unwrap()
    }

    pub fn runs(&self, name: &str) -> Vec<RunRow> {
        self.store.runs(name, 100).unwrap()
    }

    pub fn live_runs(&self, name: &str) -> Vec<RunRow> {
        self.runs(name)
            .into_iter()
            .filter(|r| r.state == "running")
            .collect()
    }

    pub fn events(&self, name: &str) -> Vec<EventRow> {
        self.store.events(Some(name), 100).unwrap()
    }

    pub fn has_event(&self, name: &str, kind: &str) -> bool {
        self.events(name).iter().any(|e| e.kind == kind)
    }

    /// Waits until the job has exactly one live run whose process runs, and returns its pid.
    pub async fn running_pid(&self, name: &str) -> u32 {
        let mut pid = 0;
        wait_for(&format!("{name} running"), Duration::from_secs(20), || {
            let live = self.live_runs(name);
            if live.len() == 1 {
                pid = pid_of(&live[0]);
                // Not a process that ended and waits to be reaped (its run not recorded ended
                // yet): a zombie has no command line.
                pid != 0 && alive(pid) && !cmdline(pid).is_empty()
            } else {
                false
            }
        })
        .await;
        pid
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// Health sweeps done so far (`jobkeeper_health_sweeps_total`).
    pub async fn sweeps(&self) -> u64 {
        let (code, text) = self.get("/metrics").await;
        assert_eq!(code, 200, "{text}");
        metric(&text, "jobkeeper_health_sweeps_total") as u64
    }

    /// Waits until `n` more health sweeps are done (at most `limit`): the positive marker a
    /// "nothing happened" check waits for, instead of a fixed sleep. Each sweep asked every
    /// engine about every live run and handed what it said to the jobs, so what the check
    /// guards against (a restart, a second run, a drift) had its chance to show.
    pub async fn sweeps_pass(&self, n: u64, limit: Duration) {
        let start = Instant::now();
        let from = self.sweeps().await;
        while self.sweeps().await < from + n {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {n} health sweeps"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn pid_of(run: &RunRow) -> u32 {
    run.handle
        .as_ref()
        .and_then(|h| h.engine_id.parse().ok())
        .unwrap_or(0)
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 GET over loopback.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A service job running `sleep SECS`.
pub fn sleeper(secs: u32) -> String {
    format!("env: dev\nparams:\n  command: [\"sleep\", \"{secs}\"]\n")
}

/// `git daemon` serving the folders below `base` over `git://127.0.0.1:<port>/`; a repo fetched
/// this way is not watched, so only webhooks and polls make the daemon fetch. Killed on drop.
pub struct GitDaemon {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    base: PathBuf,
}

impl GitDaemon {
    /// Starts it on a free port.
    pub async fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut d = GitDaemon {
            child: None,
            port,
            base: base.to_path_buf(),
        };
        d.resume().await;
        d
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops serving (connections are refused until [`GitDaemon::resume`]). `git daemon`
    /// runs `git-daemon` as its child, which forks one process per connection: the whole
    /// process group is killed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Serves again on the same port.
    pub async fn resume(&mut self) {
        self.stop();
        use std::os::unix::process::CommandExt as _;
        let child = Command::new("git")
            .process_group(0)
            .arg("daemon")
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", self.base.display()))
            .arg("--export-all")
            .arg(format!("--port={}", self.port))
            .arg("--listen=127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon runs");
        self.child = Some(child);
        let port = self.port;
        wait_for("git daemon", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of the sample `name{labels}` in a Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Every event of the daemon (all jobs and none) of this kind.
pub fn events_of(store: &Blocking, kind: &str) -> Vec<EventRow> {
    store
        .events(None, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// A free loopback TCP port (bound and released; the caller binds it again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The engine id (cluster job or driver id) in a run's recorded handle; empty when none.
pub fn engine_id(run: &RunRow) -> String {
    run.handle
        .as_ref()
        .map(|h| h.engine_id.clone())
        .unwrap_or_default()
}

/// On drop, sends an HTTP `method` request to `url` (its `{id}` replaced by the engine id) for
/// every run the store at `db` records: the cluster jobs or drivers a test started are stopped
/// even when it fails.
pub struct StopRunsOnDrop {
    pub db: PathBuf,
    pub method: &'static str,
    pub url: String,
}

impl Drop for StopRunsOnDrop {
    fn drop(&mut self) {
        let Ok(store) = Blocking::open(&self.db) else {
            return;
        };
        for job in store.jobs().unwrap_or_default() {
            for run in store.runs(&job.name, 100).unwrap_or_default() {
                let id = engine_id(&run);
                if !id.is_empty() {
                    let _ = Command::new("curl")
                        .args(["-s", "-m", "5", "-o", "/dev/null", "-X", self.method])
                        .arg(self.url.replace("{id}", &id))
                        .status();
                }
            }
        }
    }
}

/// Starts the daemon in-process with `config.yaml` under `root` as its reloadable config.
pub async fn start_reloadable(root: &Path, config_text: &str) -> Daemon {
    let path = root.join("config.yaml");
    std::fs::write(&path, config_text).unwrap();
    let settings = jobkeeper::settings::load(&path)
        .unwrap_or_else(|d| panic!("config: {}", jobkeeper::diag::render(&d)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state_dir = settings.state_dir.clone();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(jobkeeper::daemon::run_with(
        settings,
        listener,
        cancel.clone(),
        Some(path),
    ));
    let db = state_dir.join("jobkeeper.db");
    let mut store = None;
    wait_for("the store", Duration::from_secs(10), || {
        store = db
            .exists()
            .then(|| jobkeeper::store::Blocking::open(&db).ok())
            .flatten();
        store.is_some()
    })
    .await;
    Daemon {
        cancel,
        handle: Some(handle),
        state_dir,
        addr,
        store: store.unwrap(),
    }
}

/// Writes `text` as the config and sends SIGHUP until a reload event newer than the last one
/// is recorded (the daemon may not listen for SIGHUP yet right after it starts); returns its
/// message.
pub async fn reload(d: &Daemon, root: &Path, text: &str) -> String {
    // While this test runs, a SIGHUP never takes the default action (ending the process).
    let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    std::fs::write(root.join("config.yaml"), text).unwrap();
    let reloads = |d: &Daemon| {
        d.store
            .events(None, 200)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str().starts_with("config_reload"))
            .collect::<Vec<_>>()
    };
    let before = reloads(d).first().map_or(0, |e| e.id);
    for _ in 0..50 {
        nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP).unwrap();
        for _ in 0..20 {
            if let Some(e) = reloads(d).into_iter().find(|e| e.id > before) {
                assert_eq!(e.kind, "config_reloaded", "{}", e.message);
                return e.message;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("no reload recorded");
}
