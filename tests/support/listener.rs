//! The listener under abuse, shared by `tests/listener.rs` (which asserts the limits) and
//! `benches/listener.rs` (which measures them for docs/BENCHMARKS.md): the real `jobkeeper`
//! binary on a free port ([`Binary`]), half-sent requests ([`slow_clients`]), bodies with a wrong
//! signature ([`bad_signature_bodies`]) and a flood of idle connections under an open-file limit
//! ([`idle_flood`]). Both crates declare `common` and `receivers` at their root.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobkeeper::store::Blocking;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Git, sleeper, wait_for};
use crate::receivers::{HttpReceiver, free_port};

pub const HOOK_SECRET: &str = "hook-secret-for-listener-tests";
pub const MIB: usize = 1024 * 1024;

/// The daemon binary: `JOBKEEPER_LISTENER_DAEMON`, else this build's.
pub fn daemon_binary() -> PathBuf {
    std::env::var("JOBKEEPER_LISTENER_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_jobkeeper")))
}

/// The `jobkeeper` binary running `run --config`, its output in a file; killed on drop.
pub struct Binary {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Binary {
    /// Starts it on `config_text` (plus `listen`), under an open-file limit when `nofile` is
    /// set (`prlimit`, soft and hard), and waits until `/readyz` answers 200.
    pub async fn start(root: &Path, config_text: &str, nofile: Option<u64>) -> Binary {
        let port = free_port();
        let cfg = root.join("config.yaml");
        std::fs::write(&cfg, format!("{config_text}listen: 127.0.0.1:{port}\n")).unwrap();
        let log = root.join("daemon.log");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(daemon_binary());
                c
            }
            None => Command::new(daemon_binary()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(std::fs::File::create(root.join("daemon.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let b = Binary { child, port, log };
        let t = Instant::now();
        while b.get("/readyz").await.0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "not ready: {}",
                b.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// A GET on a new connection; `(0, "")` when it cannot be made or answered within 5 s.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let ask = async {
            let mut s = TcpStream::connect(self.addr()).await.ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).to_string();
            let code = status_of(&text);
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            Some((code, body.unwrap_or_default()))
        };
        tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .ok()
            .flatten()
            .unwrap_or((0, String::new()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `VmHWM` (peak resident memory) in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    /// File descriptors the daemon holds now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of an HTTP answer's text (0 if none).
pub fn status_of(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A config on `git`'s bare repo (poll 1 s, a local env), with `extra` lines.
pub fn config(root: &Path, git: &Git, extra: &str) -> String {
    std::fs::write(root.join("hook_secret"), HOOK_SECRET).unwrap();
    format!(
        "repo: {{url: \"{}\", poll: 1s}}\nstate_dir: {}\nwebhook_secret_file: {}\n\
         envs:\n  dev: {{engine: local}}\n{extra}",
        git.bare.display(),
        root.join("state").display(),
        root.join("hook_secret").display()
    )
}

/// Reads until the peer closes (or fails); the answer's text, or `None` when it stays open
/// past `limit`.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).to_string()),
        Err(_) => None,
    }
}

/// What happened to `n` clients that each sent half a request head.
pub struct SlowClients {
    pub opened: usize,
    /// Time from the last one sent to each one closed by the daemon, for those closed.
    pub closed_after: Vec<Duration>,
}

/// `n` connections each sending half a request head and nothing more; each is watched for
/// `limit` for the daemon to close it.
pub async fn slow_clients(addr: std::net::SocketAddr, n: usize, limit: Duration) -> SlowClients {
    let mut conns = Vec::new();
    for _ in 0..n {
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
            && s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_ok()
        {
            conns.push(s);
        }
    }
    let sent = Instant::now();
    let opened = conns.len();
    let mut watch = tokio::task::JoinSet::new();
    for mut s in conns {
        watch.spawn(async move {
            read_until_closed(&mut s, limit)
                .await
                .map(|_| sent.elapsed())
        });
    }
    let mut closed_after = Vec::new();
    while let Some(r) = watch.join_next().await {
        if let Some(d) = r.unwrap() {
            closed_after.push(d);
        }
    }
    closed_after.sort();
    SlowClients {
        opened,
        closed_after,
    }
}

/// A POST to `path` over a raw connection: the head, then (unless `head_only`) `body`, read
/// concurrently with the answer; the status code (0: none within `limit`) and how long it took.
pub async fn post_raw(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: Arc<Vec<u8>>,
    head_only: bool,
    limit: Duration,
) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(s) = TcpStream::connect(addr).await else {
        return (0, t.elapsed());
    };
    let (mut rd, mut wr) = s.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The daemon may answer before the body is sent and close: a failed write ends the
    // sending, never the reading.
    let send = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        if !head_only {
            for c in body.chunks(256 * 1024) {
                wr.write_all(c).await?;
            }
        }
        // Held open: the daemon answers and closes.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let read = async {
        let mut buf = Vec::new();
        let _ = rd.read_to_end(&mut buf).await;
        status_of(&String::from_utf8_lossy(&buf))
    };
    let code = tokio::time::timeout(limit, read).await.unwrap_or(0);
    send.abort();
    (code, t.elapsed())
}

/// What `n` parallel bodies of `size` bytes with a well-formed, wrong GitHub signature got.
pub struct BadBodies {
    pub codes: BTreeMap<u16, usize>,
    pub slowest: Duration,
    pub peak_before_mib: f64,
    pub peak_mib: f64,
}

pub async fn bad_signature_bodies(b: &Binary, n: usize, size: usize) -> BadBodies {
    let peak_before_mib = b.peak_rss_mib();
    let body = Arc::new(vec![b'{'; size]);
    let headers = vec![
        ("X-GitHub-Event", "push".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (addr, body, headers) = (b.addr(), body.clone(), headers.clone());
        tasks.spawn(async move {
            post_raw(
                addr,
                "/hooks/github",
                &headers,
                body,
                false,
                Duration::from_secs(120),
            )
            .await
        });
    }
    let mut codes = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        let (code, took) = r.unwrap();
        *codes.entry(code).or_insert(0) += 1;
        slowest = slowest.max(took);
    }
    BadBodies {
        codes,
        slowest,
        peak_before_mib,
        peak_mib: b.peak_rss_mib(),
    }
}

/// What a flood of idle connections did to a daemon under an open-file limit.
pub struct Flood {
    /// Connections that got a socket.
    pub connected: usize,
    /// Of those, closed by the daemon within 20 s (over the cap).
    pub closed_at_once: usize,
    /// From the commit's push to it being applied, if it was within the wait.
    pub applied_after: Option<Duration>,
    /// From the push to the alert of the failing job it added, if it came within the wait.
    pub alerted_after: Option<Duration>,
    /// The most file descriptors the daemon held during the flood.
    pub fds: usize,
}

/// Under `nofile`, opens `n` idle connections, then pushes a commit adding a job that fails
/// (its alert goes to `hook`), and waits up to `wait` for both; the connections are held
/// until the end.
pub async fn idle_flood(
    b: &Binary,
    git: &Git,
    store: &Blocking,
    hook: &HttpReceiver,
    n: usize,
    wait: Duration,
) -> Flood {
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = b.addr();
        connecting.spawn(async move {
            tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = connecting.join_next().await {
        conns.extend(r.unwrap());
    }
    let connected = conns.len();
    // Those over the cap are closed at once (a 503, then EOF); the others stay open. (Past the
    // listen backlog, a connection reaches the daemon only when the kernel retries its
    // handshake, seconds later: each is watched for 20 s.)
    let mut watch = tokio::task::JoinSet::new();
    for mut s in conns {
        watch.spawn(async move {
            let mut buf = [0u8; 512];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await,
                Ok(Ok(_) | Err(_))
            );
            (closed, s)
        });
    }
    let mut fds = b.open_fds();

    git.write(
        "jobs/failing.yaml",
        "env: dev\nalerts: [oncall]\nrestart: {attempts: 1, window: 1h, backoff: 0s}\n\
         params:\n  command: [sh, -c, \"exit 3\"]\n",
    );
    let pushed = Instant::now();
    let commit = git.commit_push("a job that fails");
    let (mut applied_after, mut alerted_after) = (None, None);
    while pushed.elapsed() < wait && (applied_after.is_none() || alerted_after.is_none()) {
        if applied_after.is_none()
            && store.applied_commit().ok().flatten().as_deref() == Some(&commit)
        {
            applied_after = Some(pushed.elapsed());
        }
        if alerted_after.is_none() && hook.received().iter().any(|r| r.body.contains("failing")) {
            alerted_after = Some(pushed.elapsed());
        }
        fds = fds.max(b.open_fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut held = Vec::new();
    let mut closed_at_once = 0;
    while let Some(r) = watch.join_next().await {
        let (closed, s) = r.unwrap();
        if closed {
            closed_at_once += 1;
        } else {
            held.push(s);
        }
    }
    fds = fds.max(b.open_fds());
    drop(held);
    Flood {
        connected,
        closed_at_once,
        applied_after,
        alerted_after,
        fds,
    }
}

/// A daemon under `prlimit --nofile=1024` with a running job and an alert channel. The test
/// itself needs a socket per flood connection: its soft open-file limit is raised to its hard
/// one, which must allow 4,096.
pub async fn flood_setup(root: &Path, extra: &str) -> (Git, Binary, Blocking, HttpReceiver) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 4096,
        "the flood needs 4,096 open files in the test process; the hard limit is {hard} \
         (raise it, e.g. `ulimit -Hn 65536` as root)"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let git = Git::new(root, "config");
    git.write("jobs/web.yaml", &sleeper(600));
    let first = git.commit_push("a job");
    let hook = HttpReceiver::start().await;
    let extra = format!(
        "alerts_throttle: 1s\nalerts:\n  oncall:\n    webhook: {{url: \"{}\", format: json}}\n{extra}",
        hook.url()
    );
    let b = Binary::start(root, &config(root, &git, &extra), Some(1024)).await;
    let store = Blocking::open(&root.join("state/jobkeeper.db")).unwrap();
    wait_for("the first commit", Duration::from_secs(20), || {
        store.applied_commit().ok().flatten().as_deref() == Some(first.as_str())
    })
    .await;
    (git, b, store, hook)
}
