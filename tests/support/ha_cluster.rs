//! Three daemons (n1, n2, n3) as real processes of the jobkeeper binary, sharing one PostgreSQL
//! database (a schema of it) and one config repo, each with its own state folder, HTTP port,
//! and TCP proxies to Postgres and to the Flink cluster that the test controls. The harness
//! plays systemd for each: it owns `NOTIFY_SOCKET` and `WATCHDOG_USEC`, and on a missed ping it
//! SIGKILLs the daemon and every process of its cgroup (its local jobs), as `KillMode=mixed`
//! does. A sampler thread checks every 100 ms that no job has two live runs: local processes by
//! their marker in `/proc`, Flink jobs by name in the cluster's `/jobs/overview`.
//!
//! The test's own reads of the store go straight to Postgres (never through a proxy), in SQL.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Git, alive};
use crate::tcp_proxy::{Mode, TcpProxy};

/// The lease settings every daemon gets (the issue's CI figures).
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// The leader steps down when it has not renewed for this long.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// `WATCHDOG_USEC` the harness gives each daemon: half the lease TTL, so a frozen leader is
/// killed before its lease can expire (docs/install.md gives the unit the same ratio).
pub const WATCHDOG: Duration = Duration::from_millis(1500);
/// How long a takeover, or the fleet settling after one, may take in a test.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Milliseconds since the Unix epoch of a wall-clock time.
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Now, in ms since the Unix epoch (the clock the store's times use, on this one host).
pub fn now_ms() -> i64 {
    ms(SystemTime::now())
}

fn env_need(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: {what}. Run scripts/test.sh, or: export \
             JOBKEEPER_TEST_POSTGRES_URL=$(scripts/postgres.sh start /tmp/jk-pg) and \
             scripts/flink.sh start /tmp/jk-flink 18081 2.3.0 && export \
             JOBKEEPER_FLINK_URL=http://127.0.0.1:18081 JOBKEEPER_FLINK_LIB=$(scripts/flink.sh lib 2.3.0)"
        )
    })
}

fn need_root() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
        "the HA tests run as root: they put each daemon in a cgroup of its own and restart a \
         PostgreSQL server through runuser"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server: the test run's (`JOBKEEPER_TEST_POSTGRES_URL`) or a private one under
/// a temp folder (scripts/postgres.sh), which a test may crash and restart.
pub struct Pg {
    /// `postgres://user@127.0.0.1:PORT/jobkeeper`.
    pub url: String,
    /// The server's folder when this test started it.
    dir: Option<PathBuf>,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn pg_bin() -> PathBuf {
    for v in ["17", "16", "15"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("pg_ctl").exists() {
            return p;
        }
    }
    panic!("no PostgreSQL under /usr/lib/postgresql (scripts/postgres.sh installs it)");
}

impl Pg {
    /// The test run's server.
    pub fn shared() -> Pg {
        Pg {
            url: env_need(
                "JOBKEEPER_TEST_POSTGRES_URL",
                "the HA tests need a PostgreSQL server",
            ),
            dir: None,
        }
    }

    /// A server of this test's own, under `dir` (which must not exist yet).
    pub fn private(dir: &Path) -> Pg {
        need_root();
        let out = Command::new(script("postgres.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .expect("scripts/postgres.sh runs");
        assert!(
            out.status.success(),
            "scripts/postgres.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pg {
            url: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            dir: Some(dir.to_path_buf()),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        let cfg: tokio_postgres::Config = self.url.parse().unwrap();
        format!("127.0.0.1:{}", cfg.get_ports()[0])
    }

    fn pg_ctl(&self, args: &[&str]) {
        let dir = self.dir.as_ref().expect("a private server");
        // The server pg_ctl starts keeps the descriptors it was given: a file, never a pipe
        // this test would wait on.
        let out_path = dir.join("pg_ctl.out");
        let out = std::fs::File::create(&out_path).unwrap();
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pg_ctl {args:?}: {}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
    }

    /// `pg_ctl restart -m immediate` (a crash and crash recovery), waiting until it serves.
    pub fn restart_immediate(&self) {
        let log = self.dir.as_ref().unwrap().join("server.log");
        self.pg_ctl(&[
            "-m",
            "immediate",
            "-l",
            log.to_str().unwrap(),
            "-w",
            "restart",
        ]);
    }

    /// `pg_ctl stop -m immediate`: the server is gone until [`Pg::start_again`].
    pub fn stop_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Starts the stopped server again with its former options.
    pub fn start_again(&self) {
        let dir = self.dir.as_ref().unwrap();
        let port = std::fs::read_to_string(dir.join("port")).unwrap();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            port.trim(),
            dir.display()
        );
        let log = dir.join("server.log");
        self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"]);
    }

    /// A new empty schema `name`; the URL of a store in it through `via` (a proxy's port).
    pub async fn schema(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .unwrap();
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{name}", self.url)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(script("postgres.sh"))
                .args(["stop"])
                .arg(dir)
                .arg("immediate")
                .output();
        }
    }
}

/// `url` with its port replaced by `port` (a proxy in front of the server).
pub fn via_port(url: &str, port: u16) -> String {
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let now = cfg.get_ports()[0];
    url.replace(&format!(":{now}/"), &format!(":{port}/"))
}

// ---------------------------------------------------------------------------------------------
// The store, read by the test

/// A run row as the test reads it.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub job: String,
    pub state: String,
    pub node: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The engine's id: a pid (local) or a Flink job id.
    pub engine_id: String,
    pub epoch: Option<i64>,
}

impl Run {
    pub fn live(&self) -> bool {
        self.ended_at.is_none() && matches!(self.state.as_str(), "running" | "starting")
    }
}

/// An event row.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub time: i64,
    pub job: Option<String>,
    pub kind: String,
    pub message: String,
    pub epoch: Option<i64>,
}

/// Reads of the store's schema, straight from Postgres.
#[derive(Clone)]
pub struct StoreReader {
    pub url: String,
}

impl StoreReader {
    async fn client(&self) -> Option<tokio_postgres::Client> {
        let (c, conn) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
        )
        .await
        .ok()?
        .ok()?;
        tokio::spawn(conn);
        Some(c)
    }

    /// The columns of `table` in this schema.
    pub async fn columns(&self, table: &str) -> BTreeSet<String> {
        let Some(c) = self.client().await else {
            return BTreeSet::new();
        };
        c.query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default()
    }

    /// Every run, by id; empty while the store cannot be read.
    pub async fn runs(&self) -> Vec<Run> {
        let epoch = self.columns("runs").await.contains("epoch");
        let Some(c) = self.client().await else {
            return Vec::new();
        };
        let sql = format!(
            "SELECT id, job, state, node, started_at, ended_at, handle, {} FROM runs ORDER BY id",
            if epoch {
                "epoch::bigint"
            } else {
                "NULL::bigint"
            }
        );
        let Ok(rows) = c.query(&sql, &[]).await else {
            return Vec::new();
        };
        rows.iter()
            .map(|r| {
                let handle: Option<String> = r.get(6);
                let engine_id = handle
                    .and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok())
                    .and_then(|v| v["engine_id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Run {
                    id: r.get(0),
                    job: r.get(1),
                    state: r.get(2),
                    node: r.get(3),
                    started_at: r.get(4),
                    ended_at: r.get(5),
                    engine_id,
                    epoch: r.get(7),
                }
            })
            .collect()
    }

    /// Every event, by id.
    pub async fn events(&self) -> Vec<Event> {
        let epoch = self.columns("events").await.contains("epoch");
        let Some(c) = self.client().await else {
            return Vec::new();
        };
        let sql = format!(
            "SELECT id, time, job, kind, message, {} FROM events ORDER BY id",
            if epoch {
                "epoch::bigint"
            } else {
                "NULL::bigint"
            }
        );
        let Ok(rows) = c.query(&sql, &[]).await else {
            return Vec::new();
        };
        rows.iter()
            .map(|r| Event {
                id: r.get(0),
                time: r.get(1),
                job: r.get(2),
                kind: r.get(3),
                message: r.get(4),
                epoch: r.get(5),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: cgroups, /proc

fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn argv(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup v2 path of a process (`0::/a/b` → `/a/b`).
fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_default()
}

/// Where the cgroup v2 hierarchy is mounted, when it is (hybrid: `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            p.join("cgroup.procs").exists() && p.join("cgroup.kill").exists() || {
                p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists()
            }
        })
}

/// Every process below `pid` (its children, theirs, ...), from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let parent: HashMap<u32, u32> = pids()
        .into_iter()
        .filter_map(|p| Some((p, stat(p)?.1)))
        .collect();
    let mut out = Vec::new();
    for (&p, _) in parent.iter() {
        let mut q = p;
        for _ in 0..64 {
            match parent.get(&q) {
                Some(&pp) if pp == pid => {
                    out.push(p);
                    break;
                }
                Some(&pp) if pp > 1 => q = pp,
                _ => break,
            }
        }
    }
    out
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Kills everything in cgroup `dir` (`cgroup.kill`, else each process of `cgroup.procs` and
/// of the cgroups below), and waits (bounded) until it is empty.
fn kill_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for d in walk(dir) {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
            {
                sigkill(pid);
            }
        }
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && walk(dir).iter().any(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .is_ok_and(|t| t.lines().any(|l| l.parse::<u32>().is_ok_and(alive)))
        })
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `dir` and every cgroup below it, deepest first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// What a frozen (paused) process looks like to a freezer: stopped, or in the freezer's trap.
fn paused_state(c: char) -> bool {
    c == 'T' || c == 't'
}

// ---------------------------------------------------------------------------------------------
// One daemon

/// What the harness, playing systemd, knows of one daemon.
#[derive(Default)]
struct Unit {
    /// The daemon's pid while it runs (0 when not).
    pid: AtomicU32,
    /// When it last sent `WATCHDOG=1` (or `READY=1`); the watchdog is armed from the first.
    last_ping: Mutex<Option<Instant>>,
    /// The watchdog kills on a missed ping while this is set.
    watchdog: AtomicBool,
    /// Kills done by the watchdog: when, and the gap it saw.
    kills: Mutex<Vec<(Instant, Duration)>>,
    /// Every message received, with when.
    messages: Mutex<Vec<(Instant, String)>>,
    stop: AtomicBool,
}

/// How the harness starts a daemon, as systemd would: the shell joins the daemon's cgroup
/// (`$1`, or `-`), then, when given a hosts file (`$2`), enters a mount namespace of its own
/// where that file is `/etc/hosts`; every step `exec`s, so the daemon keeps the shell's pid and
/// nothing it starts is ever outside its cgroup.
const LAUNCH: &str = r#"cg="$1"; hosts="$2"; shift 2
[ "$cg" = - ] || echo $$ > "$cg" || exit 1
if [ "$hosts" != - ]; then
  exec unshare -m --propagation private /bin/sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$hosts" "$@"
fi
exec "$@"
"#;

/// One daemon: its folder, port, proxies and process.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub pg: TcpProxy,
    pub flink: Option<TcpProxy>,
    pub log: PathBuf,
    cfg: PathBuf,
    child: Option<Child>,
    /// How the daemon's last process ended, once reaped.
    exited: Option<std::process::ExitStatus>,
    unit: Arc<Unit>,
    /// This daemon's cgroup (v2), when the host has a writable hierarchy.
    pub cgroup: Option<PathBuf>,
    /// The `/etc/hosts` the daemon sees (bind-mounted in a mount namespace of its own), where
    /// `jk-flink` is this node's Flink proxy.
    hosts: Option<PathBuf>,
    watchdog_thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        dir: PathBuf,
        config: String,
        pg: TcpProxy,
        flink: Option<TcpProxy>,
        port: u16,
        cgroup_name: &str,
        hosts: Option<String>,
    ) -> Node {
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        std::fs::write(dir.join("launch.sh"), LAUNCH).unwrap();
        let hosts = hosts.map(|text| {
            let p = dir.join("hosts");
            std::fs::write(&p, text).unwrap();
            p
        });
        let cgroup = cgroup2_root().and_then(|root| {
            let p = root.join(cgroup_name);
            std::fs::create_dir_all(&p).ok()?;
            Some(p)
        });
        let unit = Arc::new(Unit::default());
        let sock_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let thread = {
            let (unit, cgroup) = (unit.clone(), cgroup.clone());
            std::thread::spawn(move || watchdog_loop(sock, unit, cgroup))
        };
        Node {
            name: name.to_string(),
            log: dir.join("daemon.log"),
            dir,
            port,
            pg,
            flink,
            cfg,
            child: None,
            exited: None,
            unit,
            cgroup,
            hosts,
            watchdog_thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the daemon (as systemd would: in its cgroup, with a notify socket and a
    /// watchdog).
    pub fn spawn(&mut self) {
        self.reap();
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let bin = env!("CARGO_BIN_EXE_jobkeeper");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(self.dir.join("launch.sh"))
            .arg(match &self.cgroup {
                Some(cg) => cg.join("cgroup.procs"),
                None => PathBuf::from("-"),
            })
            .arg(match &self.hosts {
                Some(h) => h.clone(),
                None => PathBuf::from("-"),
            })
            .arg(bin);
        cmd.args(["run", "--config", self.cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", self.dir.join("notify.sock"))
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .env("RUST_BACKTRACE", "1")
            // A group of its own, as under systemd: a kill of its groups never reaches the test.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        self.exited = None;
        *self.unit.last_ping.lock().unwrap() = None;
        self.unit.pid.store(child.id(), Ordering::SeqCst);
        // `JOBKEEPER_HA_WATCHDOG=0` turns the harness's watchdog off (to look at what a daemon
        // does past a missed ping); the scenarios expect it on.
        let on = std::env::var("JOBKEEPER_HA_WATCHDOG").map_or(true, |v| v != "0");
        self.unit.watchdog.store(on, Ordering::SeqCst);
        self.child = Some(child);
    }

    /// The daemon's pid while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        self.reap();
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the daemon process runs.
    pub fn running(&mut self) -> bool {
        self.pid().is_some()
    }

    fn reap(&mut self) {
        if let Some(c) = &mut self.child
            && let Some(st) = c.try_wait().ok().flatten()
        {
            self.child = None;
            self.exited = Some(st);
            self.unit.pid.store(0, Ordering::SeqCst);
        }
    }

    /// SIGKILL of the daemon alone (its local jobs live on, as after a crash without
    /// `KillMode=mixed`); use [`Node::kill_unit`] for what systemd does.
    pub fn sigkill(&mut self) {
        self.unit.watchdog.store(false, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unit.pid.store(0, Ordering::SeqCst);
    }

    /// The daemon and every process of its cgroup SIGKILLed (systemd's `KillMode=mixed` once
    /// the main process died, or the watchdog's kill).
    pub fn kill_unit(&mut self) {
        let pid = self.pid();
        self.unit.watchdog.store(false, Ordering::SeqCst);
        kill_all(pid.unwrap_or(0), self.cgroup.as_deref());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unit.pid.store(0, Ordering::SeqCst);
    }

    /// Sends `sig` to the daemon process.
    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// Waits (bounded) until the daemon exits; its exit status, `None` when it runs on.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            self.reap();
            if self.child.is_none() {
                return self.exited.take();
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Turns the harness's watchdog for this daemon on or off.
    pub fn set_watchdog(&self, on: bool) {
        *self.unit.last_ping.lock().unwrap() = None;
        self.unit.watchdog.store(on, Ordering::SeqCst);
    }

    /// The watchdog's kills so far: when, and the gap between pings it saw.
    pub fn watchdog_kills(&self) -> Vec<(Instant, Duration)> {
        self.unit.kills.lock().unwrap().clone()
    }

    /// `sd_notify` messages received since `since`.
    pub fn messages_since(&self, since: Instant) -> Vec<String> {
        self.unit
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The cgroup's processes are paused (`cgroup.freeze`), as a whole host or VM pause: the
    /// daemon, its local jobs, and (the harness's watchdog being off) nothing sees time pass.
    pub fn freeze_host(&self, on: bool) {
        let cg = self
            .cgroup
            .as_ref()
            .expect("a cgroup v2 hierarchy (the host pause needs cgroup.freeze)");
        std::fs::write(cg.join("cgroup.freeze"), if on { "1" } else { "0" })
            .expect("cgroup.freeze writable");
        let want = if on { "frozen 1" } else { "frozen 0" };
        let start = Instant::now();
        while !std::fs::read_to_string(cg.join("cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == want)
        {
            assert!(start.elapsed() < Duration::from_secs(5), "cgroup.freeze");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pids of this node's cgroup (and below), alive.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        let Some(cg) = &self.cgroup else {
            return Vec::new();
        };
        walk(cg)
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .filter(|&p| alive(p))
            .collect()
    }
}

/// Kills the daemon `pid` and everything it started: its cgroup when it has one, and every
/// process below it and its process group.
fn kill_all(pid: u32, cgroup: Option<&Path>) {
    if pid != 0 {
        // The processes below it first, so none is left without a parent to find it by.
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        let own = stat(std::process::id()).map(|(_, _, g)| g);
        for p in descendants(pid) {
            if let Some((_, _, pgrp)) = stat(p)
                && Some(pgrp) != own
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgrp as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            sigkill(p);
        }
        sigkill(pid);
    }
    if let Some(cg) = cgroup {
        kill_cgroup(cg);
    }
}

/// systemd's side of one daemon: reads its notify socket, and SIGKILLs the daemon and its
/// cgroup when the watchdog is armed and no ping came for [`WATCHDOG`].
fn watchdog_loop(sock: UnixDatagram, unit: Arc<Unit>, cgroup: Option<PathBuf>) {
    let mut buf = [0u8; 4096];
    while !unit.stop.load(Ordering::SeqCst) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.lines().any(|l| l == "WATCHDOG=1" || l == "READY=1") {
                *unit.last_ping.lock().unwrap() = Some(Instant::now());
            }
            unit.messages.lock().unwrap().push((Instant::now(), msg));
        }
        let pid = unit.pid.load(Ordering::SeqCst);
        if pid == 0 || !unit.watchdog.load(Ordering::SeqCst) {
            continue;
        }
        let last = *unit.last_ping.lock().unwrap();
        if let Some(last) = last
            && last.elapsed() > WATCHDOG
        {
            let gap = last.elapsed();
            unit.watchdog.store(false, Ordering::SeqCst);
            kill_all(pid, cgroup.as_deref());
            unit.kills.lock().unwrap().push((Instant::now(), gap));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.unit.stop.store(true, Ordering::SeqCst);
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::write(cg.join("cgroup.freeze"), "0");
        }
        kill_all(pid, self.cgroup.as_deref());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.watchdog_thread.take() {
            let _ = t.join();
        }
        if let Some(cg) = &self.cgroup {
            for d in walk(cg) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A minimal HTTP/1.1 request over loopback with a 5 s limit: (status, body); (0, "") when
/// nothing answers.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .ok()
        .flatten()
        .unwrap_or((0, String::new()))
}

/// A blocking GET of a JSON document (the sampler's thread): `Null` when nothing answers.
fn get_json_blocking(host_port: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(host_port) else {
        return serde_json::Value::Null;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return serde_json::Value::Null;
    }
    // Read until the body is complete (the server may keep the connection open).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            match len {
                Some(len) if buf.len() >= end + 4 + len => break,
                None if head.contains("transfer-encoding: chunked")
                    && buf.ends_with(b"0\r\n\r\n") =>
                {
                    break;
                }
                _ => {}
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return serde_json::Value::Null;
    };
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What `GET /leaderz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaderz {
    pub code: u16,
    pub body: String,
}

impl Leaderz {
    /// True on the leader (200 `leader: NODE (this daemon), epoch E, since T`).
    pub fn leads(&self) -> bool {
        self.code == 200 && self.body.trim_start().starts_with("leader:")
    }

    /// The epoch it names.
    pub fn epoch(&self) -> Option<i64> {
        let (_, rest) = self.body.split_once("epoch ")?;
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    }

    /// The leading node it names (`standby: NODE leads`, `leader: NODE (this daemon)`).
    pub fn leader_node(&self) -> Option<String> {
        let b = self.body.trim();
        if let Some(r) = b.strip_prefix("leader: ") {
            return r
                .split_whitespace()
                .next()
                .map(|s| s.trim_end_matches(',').to_string());
        }
        let r = b.strip_prefix("standby: ")?;
        let (node, rest) = r.split_once(' ')?;
        rest.starts_with("leads").then(|| node.to_string())
    }
}

/// The value of the Prometheus sample `name` (no labels); `None` when absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Jobs and the sampler

/// A job of the config repo.
#[derive(Debug, Clone)]
pub enum Job {
    /// A local service job `sleep MARKER` (the marker finds its processes in `/proc`).
    Local { name: String, marker: String },
    /// The flink-counter example on the real cluster, named `flink-counter TAG` there.
    Flink { name: String, tag: String },
}

impl Job {
    pub fn name(&self) -> &str {
        match self {
            Job::Local { name, .. } | Job::Flink { name, .. } => name,
        }
    }
}

/// Flink job states that are over.
fn terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "CANCELED" | "FAILED" | "SUSPENDED")
}

/// What the sampler shares with the test.
#[derive(Default)]
pub struct Samples {
    pub count: u64,
    /// Every time two live runs of one job were seen.
    pub violations: Vec<String>,
    /// Flink job ids ever seen live, per job name.
    pub flink_jids: BTreeMap<String, BTreeSet<String>>,
    /// Violations seen inside an allowed window (a paused host resuming), kept apart.
    pub excused: Vec<String>,
}

/// Samples, every 100 ms, the marked processes and the Flink cluster's jobs.
pub struct Sampler {
    pub samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Cgroups whose processes do not count while paused (a frozen host).
    paused: Arc<Mutex<BTreeSet<String>>>,
    /// Until when (if set) a violation is kept apart as excused.
    excuse_until: Arc<Mutex<Option<Instant>>>,
}

impl Sampler {
    fn start(jobs: Vec<Job>, flink: Option<String>) -> Sampler {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let paused: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let excuse_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let thread = {
            let (samples, stop, paused, excuse) = (
                samples.clone(),
                stop.clone(),
                paused.clone(),
                excuse_until.clone(),
            );
            let flink_hp = flink.map(|u| u.trim_start_matches("http://").to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let t0 = Instant::now();
                    let found = sample_once(&jobs, flink_hp.as_deref(), &paused.lock().unwrap());
                    let excused = excuse.lock().unwrap().is_some_and(|u| Instant::now() < u);
                    let mut s = samples.lock().unwrap();
                    s.count += 1;
                    for (name, jids) in found.flink_live {
                        s.flink_jids.entry(name).or_default().extend(jids);
                    }
                    for v in found.violations {
                        let list = if excused {
                            &mut s.excused
                        } else {
                            &mut s.violations
                        };
                        if list.len() < 40 {
                            list.push(v);
                        }
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed()));
                }
            })
        };
        Sampler {
            samples,
            stop,
            thread: Some(thread),
            paused,
            excuse_until,
        }
    }

    /// Waits until `n` more samples were taken (the positive marker that the sampler looked).
    pub async fn pass(&self, n: u64) {
        let from = self.samples.lock().unwrap().count;
        let start = Instant::now();
        while self.samples.lock().unwrap().count < from + n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the sampler stalled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.samples.lock().unwrap().violations.clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Found {
    violations: Vec<String>,
    flink_live: Vec<(String, Vec<String>)>,
}

fn sample_once(jobs: &[Job], flink: Option<&str>, paused: &BTreeSet<String>) -> Found {
    let stamp = chrono::Utc::now().format("%H:%M:%S%.3f");
    let mut violations = Vec::new();
    let markers: HashMap<&str, &str> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Local { name, marker } => Some((marker.as_str(), name.as_str())),
            Job::Flink { .. } => None,
        })
        .collect();
    let mut per_job: BTreeMap<&str, Vec<(u32, String)>> = BTreeMap::new();
    if !markers.is_empty() {
        for pid in pids() {
            let Some((state, _, pgrp)) = stat(pid) else {
                continue;
            };
            if state == 'Z' || state == 'X' || pgrp != pid {
                continue;
            }
            let Some(job) = argv(pid)
                .iter()
                .find_map(|a| markers.get(a.as_str()).copied())
            else {
                continue;
            };
            let cg = cgroup_of(pid);
            if paused_state(state) || paused.iter().any(|p| cg.starts_with(p.as_str())) {
                continue;
            }
            per_job.entry(job).or_default().push((pid, cg));
        }
    }
    for (job, procs) in per_job {
        if procs.len() > 1 {
            violations.push(format!(
                "{stamp} local job {job} ran {} times at once: (pid, cgroup) {procs:?}",
                procs.len()
            ));
        }
    }
    let mut flink_live = Vec::new();
    if let Some(hp) = flink {
        let o = get_json_blocking(hp, "/jobs/overview");
        let mut per_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for j in o["jobs"].as_array().into_iter().flatten() {
            let (Some(name), Some(state), Some(jid)) =
                (j["name"].as_str(), j["state"].as_str(), j["jid"].as_str())
            else {
                continue;
            };
            if terminal(state) {
                continue;
            }
            for job in jobs {
                if let Job::Flink { name: jname, tag } = job
                    && name == format!("flink-counter {tag}")
                {
                    per_name
                        .entry(jname.clone())
                        .or_default()
                        .push(format!("{jid} {state}"));
                }
            }
        }
        for (name, live) in per_name {
            if live.len() > 1 {
                violations.push(format!(
                    "{stamp} flink job {name} has {} live jobs: {live:?}",
                    live.len()
                ));
            }
            flink_live.push((
                name,
                live.iter()
                    .map(|l| l.split(' ').next().unwrap().to_string())
                    .collect(),
            ));
        }
    }
    Found {
        violations,
        flink_live,
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster of three daemons

/// The Flink cluster the daemons reach (through their proxies).
pub struct FlinkSetup {
    /// The cluster's own REST URL (the test reads it directly).
    pub url: String,
    /// The flink-counter jar, built once per test binary.
    pub jar: PathBuf,
}

impl FlinkSetup {
    /// From `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB`; the jar built once.
    pub fn from_env() -> FlinkSetup {
        let url = env_need(
            "JOBKEEPER_FLINK_URL",
            "this HA test runs a job on a real Flink 2.3.0 cluster",
        );
        let lib = env_need(
            "JOBKEEPER_FLINK_LIB",
            "this HA test builds the flink-counter example against Flink's lib",
        );
        static JAR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let jar = JAR
            .get_or_init(|| {
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("ha-counter-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                crate::common::flink::build_counter_jar(&dir, &lib)
            })
            .clone();
        FlinkSetup { url, jar }
    }
}

/// What a test asks of its cluster.
pub struct Options {
    /// A short name, unique among the tests (the schema, the cgroups, Flink job tags).
    pub name: String,
    /// Local service jobs.
    pub local_jobs: usize,
    /// A flink-counter job on the real cluster.
    pub flink: bool,
    /// A PostgreSQL server of the test's own (one it may crash and restart).
    pub private_pg: bool,
}

/// A fault done to one daemon, and when: what the checks after a takeover need.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Which daemon.
    pub node: usize,
    /// What was done.
    pub what: String,
    /// When (monotonic and wall clock).
    pub at: Instant,
    pub at_ms: i64,
    /// The daemon's deadline: it may send no mutating engine request and commit no write
    /// after this (wall ms).
    pub deadline_ms: i64,
}

/// A takeover the test saw.
#[derive(Debug, Clone)]
pub struct Takeover {
    pub old: String,
    pub new: usize,
    pub epoch: i64,
    /// When `/leaderz` of the new leader first said 200.
    pub seen: Instant,
    pub seen_ms: i64,
}

/// Three daemons, the store, the repo, the sampler.
pub struct Cluster {
    pub git: Git,
    pub pg: Pg,
    pub store: StoreReader,
    pub nodes: Vec<Node>,
    pub jobs: Vec<Job>,
    pub flink: Option<FlinkSetup>,
    pub sampler: Sampler,
    pub token: String,
    pub name: String,
    /// The webhook every daemon sends its `leader_changed` alerts to.
    pub alerts: crate::receivers::HttpReceiver,
    /// Dropped last: the private server (in it) is stopped first.
    pub root: tempfile::TempDir,
}

/// The tests of this file, one at a time: each samples every marked process of the host and
/// the one Flink cluster.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Figures measured by the tests, printed at the end of each.
pub static FIGURES: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

/// Records a figure (printed now and kept for the summary).
pub fn figure(what: &str, d: Duration) {
    println!("figure: {what}: {} ms", d.as_millis());
    FIGURES.lock().unwrap().push((what.to_string(), d));
}

impl Cluster {
    /// The repo, the store, three configured daemons (not started).
    pub async fn new(opts: Options) -> Cluster {
        need_root();
        let root = tempfile::tempdir().unwrap();
        let pg = if opts.private_pg {
            Pg::private(&root.path().join("pg"))
        } else {
            Pg::shared()
        };
        let schema = format!("ha_{}_{}", opts.name, std::process::id());
        let url = pg.schema(&schema).await;
        let flink = opts.flink.then(FlinkSetup::from_env);
        let git = Git::new(root.path(), "config");
        let mut jobs = Vec::new();
        let base = 700 + u64::from(std::process::id() % 299);
        let salt = opts.name.bytes().map(u64::from).sum::<u64>() % 100;
        for i in 0..opts.local_jobs {
            let name = format!("svc{i}");
            let marker = format!("{base}{salt:02}{i:02}");
            git.write(
                &format!("jobs/{name}.yaml"),
                &format!("env: dev\nparams:\n  command: [\"sleep\", \"{marker}\"]\n"),
            );
            jobs.push(Job::Local { name, marker });
        }
        if let Some(f) = &flink {
            let tag = format!("ha-{}-{}", opts.name, std::process::id());
            git.write(
                "projects/counter/README",
                "the flink-counter jar, prebuilt\n",
            );
            git.write(
                "jobs/counter.yaml",
                &format!(
                    "project:\n  repo: .\n  dir: projects/counter\n  build: mkdir -p out && cp {} out/flink-counter.jar\n  \
                     artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
                     args: [\"--tag\", \"{tag}\", \"--rate\", \"5\"]\n  parallelism: 1\n",
                    f.jar.display()
                ),
            );
            jobs.push(Job::Flink {
                name: "counter".into(),
                tag,
            });
        }
        git.commit_push("the fleet");
        let token = format!("ha-token-{}", std::process::id());
        std::fs::write(root.path().join("api_token"), format!("{token}\n")).unwrap();
        // Every daemon names the Flink cluster alike (`http://jk-flink:PORT`, as daemons sharing
        // one config do); each resolves the name to its own proxy, on 127.0.0.2-4.
        let flink_port = std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let alerts = crate::receivers::HttpReceiver::start().await;
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let name = format!("n{i}");
            let dir = root.path().join(&name);
            let pg_proxy = TcpProxy::start(0, pg.addr(), Mode::Pass).await;
            let flink_proxy = match &flink {
                Some(f) => Some(
                    TcpProxy::start_on(
                        &format!("127.0.0.{}", i + 1),
                        flink_port,
                        f.url.trim_start_matches("http://").to_string(),
                        Mode::Pass,
                    )
                    .await,
                ),
                None => None,
            };
            let port = crate::common::free_port();
            let mut text = format!(
                "repo:\n  url: {}\n  branch: main\n  path: jobs\n  poll: 1s\nstate_dir: {}\n\
                 listen: 127.0.0.1:{port}\ntimezone: UTC\nhealth: {{interval: 1s}}\n\
                 restart: {{attempts: 10, window: 1h, backoff: 200ms, max_backoff: 1s}}\n\
                 api_token_file: {}\n\
                 alerts: {{ops: {{webhook: {{url: \"{}\", format: json}}, on: [leader_changed]}}}}\n\
                 envs:\n  dev: {{engine: local}}\n",
                git.bare.display(),
                dir.join("state").display(),
                root.path().join("api_token").display(),
                alerts.url(),
            );
            if let (Some(_), Some(p)) = (&flink, &flink_proxy) {
                text.push_str(&format!(
                    "  flink: {{engine: flink, flink: {{url: \"http://jk-flink:{}\", savepoint_dir: \"file://{}\"}}}}\n",
                    p.port,
                    root.path().join("savepoints").display()
                ));
            }
            text.push_str(&format!(
                "store:\n  postgres: {{url: \"{}\", tls: disable, pool: 4}}\n\
                 ha: {{lease_ttl: {}ms, renew_deadline: {}ms, retry: 500ms, node: {name}}}\n",
                via_port(&url, pg_proxy.port),
                LEASE_TTL.as_millis(),
                RENEW_DEADLINE.as_millis()
            ));
            let cgroup_name = format!("jk-ha-{}-{}-{name}", std::process::id(), opts.name);
            let hosts = flink_proxy
                .as_ref()
                .map(|_| format!("127.0.0.1 localhost\n127.0.0.{} jk-flink\n", i + 1));
            nodes.push(Node::new(
                &name,
                dir,
                text,
                pg_proxy,
                flink_proxy,
                port,
                &cgroup_name,
                hosts,
            ));
        }
        let sampler = Sampler::start(jobs.clone(), flink.as_ref().map(|f| f.url.clone()));
        Cluster {
            root,
            git,
            pg,
            store: StoreReader { url },
            nodes,
            jobs,
            flink,
            sampler,
            token,
            name: opts.name,
            alerts,
        }
    }

    /// A cluster whose n1 leads, n2 and n3 stand by, and whose jobs all run once.
    pub async fn up(opts: Options) -> Cluster {
        let mut c = Cluster::new(opts).await;
        c.nodes[0].spawn();
        c.wait_leader(&[], SETTLE).await;
        c.nodes[1].spawn();
        c.nodes[2].spawn();
        for i in [1, 2] {
            c.wait_standby(i, SETTLE).await;
        }
        c.converge(SETTLE).await;
        c
    }

    /// `GET /leaderz` of daemon `i` ((0, "") when it does not answer).
    pub async fn leaderz(&self, i: usize) -> Leaderz {
        let (code, body) = http(self.nodes[i].addr(), "GET", "/leaderz", None).await;
        Leaderz { code, body }
    }

    /// `GET path` of daemon `i`.
    pub async fn get(&self, i: usize, path: &str) -> (u16, String) {
        http(self.nodes[i].addr(), "GET", path, None).await
    }

    /// `POST path` of daemon `i` with the API token.
    pub async fn post(&self, i: usize, path: &str) -> (u16, String) {
        http(self.nodes[i].addr(), "POST", path, Some(&self.token)).await
    }

    /// The daemons whose `/leaderz` says they lead.
    pub async fn leaders(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].running() && self.leaderz(i).await.leads() {
                out.push(i);
            }
        }
        out
    }

    /// Waits until exactly one daemon not in `not` leads; which one, as a [`Takeover`]
    /// (`old` empty).
    pub async fn wait_leader(&mut self, not: &[usize], limit: Duration) -> Takeover {
        let start = Instant::now();
        loop {
            let leaders = self.leaders().await;
            if let [i] = leaders.as_slice()
                && !not.contains(i)
            {
                let z = self.leaderz(*i).await;
                return Takeover {
                    old: String::new(),
                    new: *i,
                    epoch: z.epoch().unwrap_or(-1),
                    seen: Instant::now(),
                    seen_ms: now_ms(),
                };
            }
            let up = self
                .nodes
                .iter_mut()
                .map(|n| n.running())
                .filter(|r| *r)
                .count();
            if start.elapsed() > limit || up == 0 {
                panic!(
                    "no new leader within {limit:?} (leaders now: {leaders:?}, not {not:?})\n{}",
                    self.dump().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until daemon `i` answers `/leaderz` as a standby naming a leader.
    pub async fn wait_standby(&mut self, i: usize, limit: Duration) -> Leaderz {
        let start = Instant::now();
        loop {
            let z = self.leaderz(i).await;
            if z.code == 503 && z.body.contains("standby:") && z.leader_node().is_some() {
                return z;
            }
            if start.elapsed() > limit {
                let dump = self.dump().await;
                panic!(
                    "{} never stood by within {limit:?}: {z:?}\n{dump}",
                    self.nodes[i].name,
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which node index leads now, from the daemons' own answers (exactly one).
    pub async fn leader(&mut self) -> usize {
        self.wait_leader(&[], SETTLE).await.new
    }

    /// Waits until every job runs exactly once: one live run in the store; a local job's
    /// process alive (one, on the leading node), a Flink job RUNNING on the cluster and the
    /// only live job of its name there.
    pub async fn converge(&mut self, limit: Duration) {
        let start = Instant::now();
        let mut why;
        loop {
            why = self.converged().await.err();
            if why.is_none() {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "not converged within {limit:?}: {}\n{}",
                    why.unwrap(),
                    self.dump().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every job runs exactly once; the first difference otherwise.
    pub async fn converged(&mut self) -> Result<(), String> {
        let leaders = self.leaders().await;
        let [leader] = leaders.as_slice() else {
            return Err(format!("leaders: {leaders:?}"));
        };
        // The leader's node as it names itself (`ha.node`).
        let leader_name = self
            .leaderz(*leader)
            .await
            .leader_node()
            .unwrap_or_else(|| self.nodes[*leader].name.clone());
        let runs = self.store.runs().await;
        for job in &self.jobs {
            let live: Vec<&Run> = runs
                .iter()
                .filter(|r| r.job == job.name() && r.live())
                .collect();
            let [run] = live.as_slice() else {
                return Err(format!("{}: {} live runs", job.name(), live.len()));
            };
            match job {
                Job::Local { name, marker } => {
                    let pid: u32 = run.engine_id.parse().unwrap_or(0);
                    if pid == 0 || !alive(pid) || !argv(pid).contains(marker) {
                        return Err(format!("{name}: run {} has no live process", run.id));
                    }
                    if run.node.as_deref() != Some(&leader_name) {
                        return Err(format!(
                            "{name}: its live run {} is on {:?}, the leader is {leader_name}",
                            run.id, run.node
                        ));
                    }
                    // A paused host's processes do nothing (they are not counted).
                    let paused = self.sampler.paused.lock().unwrap().clone();
                    let procs: Vec<u32> = marked(marker)
                        .into_iter()
                        .filter(|&p| {
                            let cg = cgroup_of(p);
                            !paused.iter().any(|x| cg.starts_with(x.as_str()))
                        })
                        .collect();
                    if procs.len() != 1 {
                        return Err(format!("{name}: {} processes {procs:?}", procs.len()));
                    }
                }
                Job::Flink { name, tag } => {
                    let f = self.flink.as_ref().unwrap();
                    let o = crate::common::flink::rest(&f.url, "/jobs/overview").await;
                    let live: Vec<(String, String)> = o["jobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|j| j["name"] == format!("flink-counter {tag}"))
                        .filter(|j| !terminal(j["state"].as_str().unwrap_or("")))
                        .map(|j| {
                            (
                                j["jid"].as_str().unwrap_or("").to_string(),
                                j["state"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect();
                    if live.len() != 1 || live[0].0 != run.engine_id || live[0].1 != "RUNNING" {
                        return Err(format!(
                            "{name}: run {} ({}), live on the cluster: {live:?}",
                            run.id, run.engine_id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The live runs, by job.
    pub async fn live_runs(&self) -> BTreeMap<String, Run> {
        self.store
            .runs()
            .await
            .into_iter()
            .filter(Run::live)
            .map(|r| (r.job.clone(), r))
            .collect()
    }

    /// A fault at daemon `i`: now, with the deadline after which it may not act.
    pub fn fault(&self, i: usize, what: &str, deadline: Duration) -> Fault {
        let at_ms = now_ms();
        Fault {
            node: i,
            what: what.to_string(),
            at: Instant::now(),
            at_ms,
            deadline_ms: at_ms + deadline.as_millis() as i64,
        }
    }

    /// The checks after a takeover from `fault`'s daemon to `t`'s: the sampler saw no job run
    /// twice; exactly one `leader_changed` since the fault, naming both nodes and the epoch;
    /// no run started by the deposed node and no row of an older epoch written after the
    /// takeover; the deposed node sent no mutating request to Flink after its deadline.
    pub async fn check_takeover(&self, fault: &Fault, t: &Takeover) {
        let old = &self.nodes[fault.node].name;
        let new = &self.nodes[t.new].name;
        let events = self.store.events().await;
        let changed: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == "leader_changed" && e.time >= fault.at_ms)
            .collect();
        assert_eq!(
            changed.len(),
            1,
            "one leader_changed after {}: {changed:#?}",
            fault.what
        );
        let msg = &changed[0].message;
        assert!(
            msg.contains(old.as_str()) && msg.contains(new.as_str()),
            "leader_changed names {old} and {new}: {msg}"
        );
        assert!(
            msg.contains(&t.epoch.to_string()),
            "leader_changed names epoch {}: {msg}",
            t.epoch
        );
        let takeover_ms = changed[0].time.min(t.seen_ms);
        self.check_no_stale_writes(old, t.epoch, takeover_ms).await;
        self.check_no_late_engine_requests(fault);
    }

    /// No run started by `old` after `after_ms`, and (where rows carry an epoch) no run or
    /// event of an epoch before `epoch` written after it.
    pub async fn check_no_stale_writes(&self, old: &str, epoch: i64, after_ms: i64) {
        let runs = self.store.runs().await;
        let late: Vec<&Run> = runs
            .iter()
            .filter(|r| r.node.as_deref() == Some(old) && r.started_at > after_ms)
            .collect();
        assert!(
            late.is_empty(),
            "runs started by the deposed {old} after the takeover: {late:#?}"
        );
        let stale_runs: Vec<&Run> = runs
            .iter()
            .filter(|r| r.epoch.is_some_and(|e| e < epoch) && r.started_at > after_ms)
            .collect();
        assert!(
            stale_runs.is_empty(),
            "runs of an older epoch than {epoch} after the takeover: {stale_runs:#?}"
        );
        let events = self.store.events().await;
        let stale: Vec<&Event> = events
            .iter()
            .filter(|e| e.epoch.is_some_and(|x| x < epoch) && e.time > after_ms)
            .collect();
        assert!(
            stale.is_empty(),
            "events of an older epoch than {epoch} after the takeover: {stale:#?}"
        );
    }

    /// The deposed daemon's Flink proxy logged no POST, PATCH, PUT or DELETE received after
    /// its deadline.
    pub fn check_no_late_engine_requests(&self, fault: &Fault) {
        let Some(p) = &self.nodes[fault.node].flink else {
            return;
        };
        let late: Vec<String> = p
            .requests()
            .into_iter()
            .filter(|r| r.mutating() && ms(r.wall) > fault.deadline_ms)
            .map(|r| {
                format!(
                    "{} ms after the fault: {}",
                    ms(r.wall) - fault.at_ms,
                    r.line
                )
            })
            .collect();
        assert!(
            late.is_empty(),
            "{} sent mutating Flink requests after its deadline ({} ms after the fault): {late:#?}",
            self.nodes[fault.node].name,
            fault.deadline_ms - fault.at_ms
        );
    }

    /// The sampler saw no job run twice (after `n` more samples).
    pub async fn check_never_twice(&self) {
        self.sampler.pass(3).await;
        let v = self.sampler.violations();
        assert!(v.is_empty(), "a job ran twice at once:\n{}", v.join("\n"));
    }

    /// The Flink job ids the sampler ever saw live for `job`.
    pub fn flink_jids(&self, job: &str) -> BTreeSet<String> {
        self.sampler
            .samples
            .lock()
            .unwrap()
            .flink_jids
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Time from `from_ms` to the first supervised action of node `i` after it: the first run
    /// it started, else its `leader_changed` event.
    pub async fn first_action_ms(&self, i: usize, from_ms: i64) -> Option<i64> {
        let name = &self.nodes[i].name;
        self.store
            .runs()
            .await
            .iter()
            .filter(|r| r.node.as_deref() == Some(name) && r.started_at >= from_ms)
            .map(|r| r.started_at - from_ms)
            .min()
    }

    /// The `leader_changed` event written after `from_ms`, its delay from then.
    pub async fn leader_changed_ms(&self, from_ms: i64) -> Option<i64> {
        self.store
            .events()
            .await
            .iter()
            .find(|e| e.kind == "leader_changed" && e.time >= from_ms)
            .map(|e| e.time - from_ms)
    }

    /// What a failure message needs: who says what, the runs, the recent events, log tails.
    pub async fn dump(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let pid = self.nodes[i].unit.pid.load(Ordering::SeqCst);
            let running = pid != 0 && alive(pid);
            let z = if running {
                self.leaderz(i).await
            } else {
                Leaderz {
                    code: 0,
                    body: "(not running)".into(),
                }
            };
            let kills: Vec<String> = self.nodes[i]
                .watchdog_kills()
                .iter()
                .map(|(at, gap)| {
                    format!(
                        "{} ms ago after {} ms without a ping",
                        at.elapsed().as_millis(),
                        gap.as_millis()
                    )
                })
                .collect();
            out.push_str(&format!(
                "{}: {} {} (pid {pid}; watchdog kills: {kills:?})\n",
                self.nodes[i].name,
                z.code,
                z.body.trim()
            ));
        }
        for r in self.store.runs().await.iter().rev().take(20) {
            out.push_str(&format!(
                "run {} {} {} node={:?} engine={} started={} ended={:?}\n",
                r.id, r.job, r.state, r.node, r.engine_id, r.started_at, r.ended_at
            ));
        }
        for e in self.store.events().await.iter().rev().take(25).rev() {
            out.push_str(&format!(
                "event {} {} {:?} {}\n",
                e.time,
                e.kind,
                e.job,
                e.message.lines().next().unwrap_or("")
            ));
        }
        for n in &self.nodes {
            if let Some(p) = &n.flink {
                let held = p.held();
                if !held.is_empty() {
                    out.push_str(&format!("{} -> flink, held now: {held:?}\n", n.name));
                }
                for r in p.requests().iter().filter(|r| r.mutating()) {
                    out.push_str(&format!(
                        "{} -> flink at {}: {}\n",
                        n.name,
                        chrono::DateTime::<chrono::Utc>::from(r.wall).format("%H:%M:%S%.3f"),
                        r.line
                    ));
                }
            }
        }
        for n in &self.nodes {
            out.push_str(&format!("--- {} log tail\n{}\n", n.name, n.log_tail(25)));
            let kept = std::env::temp_dir().join(format!(
                "jobkeeper-ha-{}-{}-{}.log",
                self.name,
                std::process::id(),
                n.name
            ));
            let _ = std::fs::write(&kept, n.log_text());
        }
        out.push_str(&format!(
            "(whole logs kept in {}/jobkeeper-ha-{}-{}-*.log)\n",
            std::env::temp_dir().display(),
            self.name,
            std::process::id()
        ));
        out
    }

    /// Pauses or resumes the sampler's count of node `i`'s processes (a frozen host).
    pub fn sampler_pause(&self, i: usize, on: bool) {
        let Some(cg) = &self.nodes[i].cgroup else {
            return;
        };
        let root = cgroup2_root().unwrap();
        let rel = format!("/{}", cg.strip_prefix(&root).unwrap().display());
        let mut p = self.sampler.paused.lock().unwrap();
        if on {
            p.insert(rel);
        } else {
            p.remove(&rel);
        }
    }

    /// Two live runs seen before `until` are kept apart, as excused (a paused host resuming).
    pub fn excuse_until(&self, until: Instant) {
        *self.sampler.excuse_until.lock().unwrap() = Some(until);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Every daemon and its jobs, then what runs on the cluster for this test.
        for n in &mut self.nodes {
            n.kill_unit();
        }
        if let (Some(f), Some(Job::Flink { tag, .. })) = (
            &self.flink,
            self.jobs.iter().find(|j| matches!(j, Job::Flink { .. })),
        ) {
            crate::cancel_flink_jobs(&f.url, &format!("flink-counter {tag}"));
        }
    }
}

/// The live marked processes (group leaders whose argv has `marker`).
pub fn marked(marker: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|&p| {
            stat(p).is_some_and(|(s, _, g)| s != 'Z' && s != 'X' && g == p)
                && argv(p).iter().any(|a| a == marker)
        })
        .collect()
}
