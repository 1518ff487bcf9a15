//! Failover of the leader (`ha`): two daemons of the real binary on one PostgreSQL store and one
//! config repo of local jobs. (That no Flink job restarts in a failover is asserted by
//! `cargo test --test ha`, on a real cluster.)
//!
//! - **SIGKILL of the leader**, as a host dying under systemd (`KillMode=mixed`: its local runs
//!   are killed with it): the time until the standby leads (`/leaderz` 200) and until it acts
//!   (every local job running again, started by it), per trial, p50 and p99, with
//!   `lease_ttl` 3 s and 15 s (`BENCH_TTLS`, seconds, comma-separated).
//! - **SIGTERM switchover**: the time until the standby leads.
//! - **A standby's load on Postgres**: transactions per second of the database with the leader
//!   alone and with a standby beside it (`pg_stat_database.xact_commit`).
//!
//! `cargo bench --profile dev --bench failover` (the times are the lease's, not the CPU's).
//! `BENCH_TRIALS` (default 10) trials per TTL. Needs `JOBKEEPER_TEST_POSTGRES_URL`, or starts a
//! server with `scripts/postgres.sh`. Under `cargo test` (no `--bench`) it is a smoke run: one
//! trial with a 3 s TTL, one switchover, a 3 s load window.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on 127.0.0.1: the status and body; `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn postgres_url(dir: &Path) -> String {
    if let Ok(url) = std::env::var("JOBKEEPER_TEST_POSTGRES_URL") {
        return url;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/postgres.sh"))
        .arg("start")
        .arg(dir.join("pg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// A fresh schema of the database at `url`; the URL that puts the store in it.
fn schema(rt: &tokio::runtime::Runtime, url: &str, name: &str) -> String {
    let admin = url.to_string();
    let create = format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}");
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(&create).await.unwrap();
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{name}")
}

fn commits_of_db(rt: &tokio::runtime::Runtime, url: &str) -> i64 {
    let url = url.to_string();
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let r = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0)
    })
}

/// One daemon: its config, port and process.
struct Daemon {
    node: String,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn leads(&self) -> bool {
        matches!(get(self.port, "/leaderz"), Some((200, _)))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, with every process below it (systemd's `KillMode=mixed` after a crash).
    fn kill_unit(&mut self) {
        let below = descendants(self.pid());
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in below {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        self.child = None;
    }

    fn sigterm(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    fn wait_exit(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.wait();
        }
        self.child = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_unit();
        }
    }
}

/// Every process below `pid`, read from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parent_of.push((p, pp));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// The local jobs' run ids, as `GET /api/v1/jobs` on `port` shows them, when every one runs.
fn runs(port: u16) -> Option<Vec<i64>> {
    let (_, body) = get(port, "/api/v1/jobs")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut out = vec![];
    for j in v["jobs"].as_array()? {
        if j["name"].as_str()?.starts_with("sleeper") {
            if j["state"] != "running" {
                return None;
            }
            out.push(j["running"]["run_id"].as_i64()?);
        }
    }
    (out.len() == JOBS).then_some(out)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn shown(d: &[Duration]) -> String {
    let mut s = d.to_vec();
    s.sort();
    format!(
        "p50 {:.2} s, p99 {:.2} s, max {:.2} s (n={})",
        pct(&s, 0.5).as_secs_f64(),
        pct(&s, 0.99).as_secs_f64(),
        s.last().unwrap().as_secs_f64(),
        s.len()
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
}

fn setup(rt: &tokio::runtime::Runtime, pg: &str, ttl: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("cfg.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(dir.path(), &["clone", "-q", bare.to_str().unwrap(), "work"]);
    std::fs::create_dir_all(work.join("jobs")).unwrap();
    for i in 0..JOBS {
        std::fs::write(
            work.join(format!("jobs/sleeper{i}.yaml")),
            format!(
                "env: local\nparams:\n  command: [\"sleep\", \"{}\"]\n",
                100_000 + i
            ),
        )
        .unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "jobs"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let url = schema(rt, pg, &format!("failover_{}_{ttl}", std::process::id()));
    let (deadline, retry) = ((ttl * 2000) / 3, (ttl * 1000) / 6);
    let mut daemons = vec![];
    for n in 1..=2 {
        let node = format!("n{n}");
        let port = free_port();
        let config = dir.path().join(format!("{node}.yaml"));
        std::fs::write(
            &config,
            format!(
                "repo: {{url: {}, branch: main, path: jobs, poll: 1s}}\n\
                 state_dir: {}\n\
                 listen: 127.0.0.1:{port}\n\
                 envs: {{local: {{engine: local}}}}\n\
                 store: {{postgres: {{url: \"{url}\", tls: disable}}}}\n\
                 ha: {{lease_ttl: {ttl}s, renew_deadline: {deadline}ms, retry: {retry}ms, node: {node}}}\n",
                bare.display(),
                dir.path().join(format!("state-{node}")).display(),
            ),
        )
        .unwrap();
        daemons.push(Daemon {
            log: dir.path().join(format!("{node}.log")),
            node,
            config,
            port,
            child: None,
        });
    }
    Setup { _dir: dir, daemons }
}

/// SIGKILL trials with `lease_ttl` `ttl` seconds: (to lead, to act) per trial.
fn kill_trials(
    rt: &tokio::runtime::Runtime,
    pg: &str,
    ttl: u64,
    trials: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut s = setup(rt, pg, ttl);
    s.daemons[0].start();
    let limit = Duration::from_secs(ttl * 3 + 20);
    assert!(
        wait_until(limit, || s.daemons[0].leads()
            && runs(s.daemons[0].port).is_some())
        .is_some(),
        "n1 never led with every job running"
    );
    s.daemons[1].start();
    assert!(
        wait_until(limit, || get(s.daemons[1].port, "/leaderz").is_some()).is_some(),
        "n2 never answered"
    );
    let (mut lead, mut act) = (vec![], vec![]);
    for t in 0..trials {
        let leader = usize::from(!s.daemons[0].leads());
        let standby = 1 - leader;
        let before = runs(s.daemons[leader].port).expect("every job runs before the kill");
        // The standby must be up and waiting (it was started again after the last trial).
        assert!(
            wait_until(limit, || matches!(
                get(s.daemons[standby].port, "/leaderz"),
                Some((503, _))
            ))
            .is_some(),
            "the standby does not answer"
        );
        let t0 = Instant::now();
        s.daemons[leader].kill_unit();
        let sp = s.daemons[standby].port;
        let led = wait_until(limit, || s.daemons[standby].leads())
            .unwrap_or_else(|| panic!("trial {t}: {} never led", s.daemons[standby].node));
        wait_until(limit, || {
            runs(sp).is_some_and(|r| r.iter().zip(&before).all(|(a, b)| a != b))
        })
        .unwrap_or_else(|| panic!("trial {t}: the local jobs never ran again"));
        let acted = t0.elapsed();
        eprintln!(
            "ttl {ttl}s trial {t}: {} leads after {:.2} s, every local job runs again after {:.2} s",
            s.daemons[standby].node,
            led.as_secs_f64(),
            acted.as_secs_f64()
        );
        lead.push(led);
        act.push(acted);
        s.daemons[leader].start();
    }
    (lead, act)
}

/// SIGTERM switchovers: the time until the standby leads.
fn term_trials(rt: &tokio::runtime::Runtime, pg: &str, trials: usize) -> Vec<Duration> {
    let ttl = 15;
    let mut s = setup(rt, pg, ttl);
    s.daemons[0].start();
    let limit = Duration::from_secs(60);
    assert!(wait_until(limit, || s.daemons[0].leads()).is_some());
    s.daemons[1].start();
    let mut out = vec![];
    for t in 0..trials {
        let leader = usize::from(!s.daemons[0].leads());
        let standby = 1 - leader;
        assert!(
            wait_until(limit, || matches!(
                get(s.daemons[standby].port, "/leaderz"),
                Some((503, _))
            ))
            .is_some()
        );
        assert!(wait_until(limit, || runs(s.daemons[leader].port).is_some()).is_some());
        let t0 = Instant::now();
        s.daemons[leader].sigterm();
        wait_until(limit, || s.daemons[standby].leads())
            .unwrap_or_else(|| panic!("switchover {t}: no new leader"));
        let took = t0.elapsed();
        eprintln!("switchover {t}: {:.2} s", took.as_secs_f64());
        out.push(took);
        s.daemons[leader].wait_exit();
        s.daemons[leader].start();
    }
    out
}

/// Transactions per second on the database: the leader alone, then with a standby.
fn standby_load(rt: &tokio::runtime::Runtime, pg: &str, window: Duration) -> (f64, f64) {
    let mut s = setup(rt, pg, 15);
    s.daemons[0].start();
    assert!(
        wait_until(Duration::from_secs(60), || runs(s.daemons[0].port)
            .is_some())
        .is_some()
    );
    let rate = |rt: &tokio::runtime::Runtime| {
        let a = commits_of_db(rt, pg);
        std::thread::sleep(window);
        (commits_of_db(rt, pg) - a) as f64 / window.as_secs_f64()
    };
    let alone = rate(rt);
    s.daemons[1].start();
    assert!(
        wait_until(Duration::from_secs(30), || get(
            s.daemons[1].port,
            "/leaderz"
        )
        .is_some())
        .is_some()
    );
    std::thread::sleep(Duration::from_secs(2));
    let with = rate(rt);
    (alone, with)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = postgres_url(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let full = std::env::args().any(|a| a == "--bench");
    let trials: usize = std::env::var("BENCH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 10 } else { 1 });
    let ttls: Vec<u64> = std::env::var("BENCH_TTLS")
        .unwrap_or_else(|_| if full { "3,15" } else { "3" }.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut report = vec![];
    for ttl in ttls {
        let (lead, act) = kill_trials(&rt, &pg, ttl, trials);
        report.push(format!(
            "SIGKILL, lease_ttl {ttl}s: leads {}; every local job running again {}",
            shown(&lead),
            shown(&act)
        ));
    }
    let term = term_trials(&rt, &pg, trials);
    report.push(format!("SIGTERM switchover: leads {}", shown(&term)));
    let window = Duration::from_secs(if full { 20 } else { 3 });
    let (alone, with) = standby_load(&rt, &pg, window);
    report.push(format!(
        "Postgres transactions/s: leader alone {alone:.1}, leader and a standby {with:.1} \
         (the standby adds {:.1}/s)",
        with - alone
    ));
    println!("\nfailover ({JOBS} local jobs):");
    for line in report {
        println!("  {line}");
    }
}
