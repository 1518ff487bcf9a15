//! Correctness under load, with the real binary, real git and real processes; the figures are
//! printed (`-- --nocapture`), never asserted (goals live in `benches/core.rs`).
//!
//! - 2,000 running local jobs, then one commit changing 500 of them: each changed job is
//!   redeployed exactly once, the other 1,500 keep their process. `JOBKEEPER_LOAD_JOBS` sets the
//!   fleet (default 2000; a quarter is changed).
//! - GitHub push webhooks, 100 a second (bursts of 10 every 100 ms) for 30 s, with a commit
//!   pushed every 2 s and the config repo served by `git daemon` (not watched, `poll: 1h`, so
//!   only webhooks make the daemon fetch): every pushed commit is applied, bursts are coalesced
//!   into few fetches, memory stays bounded. `JOBKEEPER_LOAD_HOOK_SECS` sets the length
//!   (default 30).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hmac::Mac;
use jobkeeper::store::Blocking;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `jobkeeper` binary on a config, its log in a file; killed on drop.
struct Binary {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Binary {
    async fn start(root: &Path, config_text: &str, ready_within: Duration) -> Binary {
        let port = free_port();
        let cfg = root.join("config.yaml");
        let text = format!("{config_text}listen: 127.0.0.1:{port}\n");
        std::fs::write(&cfg, text).unwrap();
        let log = root.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let b = Binary { child, port, log };
        let t = Instant::now();
        while b.get("/readyz").await.0 != 200 {
            assert!(t.elapsed() < ready_within, "not ready: {}", b.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match tokio::net::TcpStream::connect(self.addr()).await {
            Ok(_) => http_get(self.addr(), path).await,
            Err(_) => (0, String::new()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then waits (bounded) for the exit: local runs are stopped with the daemon.
    fn stop(&mut self, within: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < within, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `files` (path, content) in one commit on `main` of the bare repo with
/// `git fast-import` (much faster than `git add` for thousands of files), then fetches it into
/// the work tree.
fn fast_commit(git: &Git, msg: &str, files: &[(String, String)]) -> String {
    let head = Command::new("git")
        .args(["rev-parse", "--verify", "-q", "refs/heads/main"])
        .current_dir(&git.bare)
        .output()
        .unwrap();
    let parent = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let mut fi = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&git.bare)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut buf = Vec::new();
        write!(
            buf,
            "commit refs/heads/main\ncommitter Ann Operator <ann@example.com> 1700000000 +0000\ndata {}\n{msg}\n",
            msg.len()
        )
        .unwrap();
        if !parent.is_empty() {
            writeln!(buf, "from {parent}").unwrap();
        }
        for (path, body) in files {
            write!(buf, "M 100644 inline {path}\ndata {}\n{body}\n", body.len()).unwrap();
        }
        fi.stdin.as_mut().unwrap().write_all(&buf).unwrap();
    }
    assert!(fi.wait().unwrap().success());
    git.git(&["fetch", "-q", "origin"]);
    git.git(&["reset", "-q", "--hard", "origin/main"]);
    git.git(&["rev-parse", "HEAD"])
}

fn job_path(i: u64) -> String {
    format!("jobs/team-{}/job-{i:04}.yaml", i % 20)
}

fn job_name(i: u64) -> String {
    format!("team-{}/job-{i:04}", i % 20)
}

/// A service job whose process is `sleep <marker>`: the marker tells versions apart.
fn sleep_job(marker: u64) -> String {
    format!("env: dev\nparams: {{command: [sleep, \"{marker}\"]}}\n")
}

/// Each job's live run: (run id, pid).
fn live(store: &Blocking) -> std::collections::HashMap<String, Vec<(i64, u32)>> {
    let mut by_job: std::collections::HashMap<String, Vec<(i64, u32)>> = Default::default();
    for r in store.live_runs().unwrap() {
        if r.state == "running" {
            by_job
                .entry(r.job.clone())
                .or_default()
                .push((r.id, pid_of(&r)));
        }
    }
    by_job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_then_a_commit_changing_a_quarter_redeploys_exactly_those() {
    let n = env_or("JOBKEEPER_LOAD_JOBS", 2000);
    let changed = n / 4;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    let v1: Vec<(String, String)> = (0..n)
        .map(|i| (job_path(i), sleep_job(1_000_000 + i)))
        .collect();
    fast_commit(&git, "the fleet", &v1);
    let state = root.join("state");
    let cfg = format!(
        "repo: {{url: {}, poll: 5s}}\nstate_dir: {}\nenvs:\n  dev: {{engine: local}}\n",
        git.bare.display(),
        state.display()
    );
    let t = Instant::now();
    let mut b = Binary::start(root, &cfg, Duration::from_secs(60)).await;
    let store = Blocking::open(&state.join("jobkeeper.db")).unwrap();
    wait_for("the fleet running", Duration::from_secs(180), || {
        live(&store).len() as u64 == n
    })
    .await;
    let started_in = t.elapsed();
    let before = live(&store);
    for (job, runs) in &before {
        assert_eq!(runs.len(), 1, "{job}: {runs:?}");
        assert!(alive(runs[0].1), "{job}");
    }

    // One commit changing every fourth job's args.
    let v2: Vec<(String, String)> = (0..n)
        .filter(|i| i % 4 == 0)
        .map(|i| (job_path(i), sleep_job(2_000_000 + i)))
        .collect();
    assert_eq!(v2.len() as u64, changed);
    let t = Instant::now();
    let c2 = fast_commit(&git, "change a quarter of the fleet", &v2);
    let mut converged = || {
        let now = live(&store);
        (0..n).filter(|i| i % 4 == 0).all(|i| {
            now.get(&job_name(i)).is_some_and(|r| {
                r.len() == 1 && r[0].1 != before[&job_name(i)][0].1 && alive(r[0].1)
            })
        })
    };
    wait_for(
        "the changed jobs redeployed",
        Duration::from_secs(180),
        &mut converged,
    )
    .await;
    let converge = t.elapsed();
    assert_eq!(
        store.applied_commit().unwrap().as_deref(),
        Some(c2.as_str())
    );
    // Let anything that would happen twice happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = live(&store);
    assert_eq!(after.len() as u64, n);
    for i in 0..n {
        let job = job_name(i);
        let runs = store.runs(&job, 10).unwrap();
        let now = &after[&job];
        assert_eq!(now.len(), 1, "{job}: {now:?}");
        let pid = now[0].1;
        if i % 4 == 0 {
            // Redeployed exactly once: the old run stopped, one new run, the new version.
            assert_eq!(runs.len(), 2, "{job}: {runs:?}");
            assert_eq!(runs[1].state, "stopped", "{job}: {runs:?}");
            assert!(cmdline(pid).contains(&(2_000_000 + i).to_string()), "{job}");
            assert!(!alive(before[&job][0].1) || cmdline(before[&job][0].1).is_empty());
        } else {
            assert_eq!(runs.len(), 1, "{job}: {runs:?}");
            assert_eq!(pid, before[&job][0].1, "{job} untouched");
            assert!(alive(pid) && cmdline(pid).contains(&(1_000_000 + i).to_string()));
        }
    }
    let (rss, hwm) = b.rss_kib();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", b.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "load: {n} jobs running {:.1} s after start; a commit changing {changed}: converged in {:.2} s \
         (push to every new run up); daemon RSS {} MiB, peak {} MiB, {fds} open files",
        started_in.as_secs_f64(),
        converge.as_secs_f64(),
        rss / 1024,
        hwm / 1024
    );
    drop(store);
    b.stop(Duration::from_secs(120));
    // Every run was stopped with the daemon.
    for runs in after.values() {
        assert!(!alive(runs[0].1) || cmdline(runs[0].1).is_empty());
    }
}

const HOOK_SECRET: &str = "load-hook-secret";

fn github_push(after: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": {"full_name": "ops/jobs", "default_branch": "main"},
        "pusher": {"name": "ann", "email": "ann@example.com"},
        "commits": [],
    }))
    .unwrap()
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_webhooks_a_second_lose_no_push_and_are_coalesced() {
    let secs = env_or("JOBKEEPER_LOAD_HOOK_SECS", 30);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let git = Git::new(root, "config");
    git.write("jobs/base.yaml", &sleeper(600));
    let first = git.commit_push("base");
    let gd = GitDaemon::start(root).await;
    std::fs::write(root.join("hook_secret"), HOOK_SECRET).unwrap();
    let state = root.join("state");
    let cfg = format!(
        "repo: {{url: \"{}\", poll: 1h}}\nstate_dir: {}\nwebhook_secret_file: {}\nenvs:\n  dev: {{engine: local}}\n",
        gd.url("config.git"),
        state.display(),
        root.join("hook_secret").display()
    );
    let mut b = Binary::start(root, &cfg, Duration::from_secs(30)).await;
    let store = Blocking::open(&state.join("jobkeeper.db")).unwrap();
    wait_for("the first commit", Duration::from_secs(20), || {
        store.applied_commit().unwrap().as_deref() == Some(first.as_str())
    })
    .await;
    let metrics_before = b.get("/metrics").await.1;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let url = format!("http://{}/hooks/github", b.addr());
    let sent = Arc::new(AtomicU64::new(0));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let mut pushed = Vec::new();
    let mut rss_samples = Vec::new();
    let bursts = secs * 10;
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for burst in 0..bursts {
        tick.tick().await;
        if burst % 20 == 5 {
            // A push now and then (the daemon learns of it only from the hooks that follow).
            let k = pushed.len();
            git.write(&format!("jobs/n{k}.yaml"), &sleeper(600));
            pushed.push((format!("n{k}"), git.commit_push(&format!("add n{k}"))));
        }
        if burst % 2 == 0 {
            rss_samples.push(b.rss_kib().0);
        }
        let after = pushed.last().map_or(first.clone(), |(_, c)| c.clone());
        for _ in 0..10 {
            let (client, url, sent, slowest) = (
                client.clone(),
                url.clone(),
                sent.clone(),
                slowest_ms.clone(),
            );
            let body = github_push(&after);
            tasks.spawn(async move {
                let t = Instant::now();
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("X-GitHub-Event", "push")
                    .header("X-Hub-Signature-256", sign(&body))
                    .body(body)
                    .send()
                    .await
                    .expect("the daemon answers");
                assert_eq!(r.status().as_u16(), 202);
                sent.fetch_add(1, Ordering::Relaxed);
                slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            });
        }
        while let Some(r) = tasks.try_join_next() {
            r.unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let took = t0.elapsed();
    let hooks = sent.load(Ordering::Relaxed);
    assert_eq!(hooks, bursts * 10);

    // No lost trigger: the last push is applied without any more hooks (and no poll for 1 h),
    // and every pushed job is there.
    let (last_job, last) = pushed.last().unwrap().clone();
    wait_for("the last push applied", Duration::from_secs(20), || {
        store.applied_commit().unwrap().as_deref() == Some(last.as_str())
    })
    .await;
    for (job, _) in &pushed {
        assert!(
            store.job(job).unwrap().is_some_and(|j| j.desired.is_some()),
            "{job} lost"
        );
    }
    wait_for("the last job running", Duration::from_secs(20), || {
        store
            .runs(&last_job, 1)
            .unwrap()
            .first()
            .is_some_and(|r| r.state == "running")
    })
    .await;
    // Coalesced: at most one fetch in flight and one waiting, so at most two per burst, and
    // every hook was counted as asking for a fetch.
    let text = b.get("/metrics").await.1;
    let m = |name: &str| metric(&text, name) - metric(&metrics_before, name);
    let fetches = m("jobkeeper_fetch_triggers_total{trigger=\"webhook\"}");
    assert_eq!(
        m("jobkeeper_webhooks_total{source=\"github\",outcome=\"fetch\"}"),
        hooks as f64
    );
    assert!(
        fetches >= pushed.len() as f64 && fetches <= 2.0 * bursts as f64,
        "{fetches} fetches for {bursts} bursts"
    );
    assert_eq!(m("jobkeeper_git_fetches_total{result=\"failed\"}"), 0.0);
    // Memory: bounded, and not growing with the number of hooks.
    let (rss_end, hwm) = b.rss_kib();
    let first_rss = rss_samples[..rss_samples.len().min(10)]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let max_rss = rss_samples.iter().copied().max().unwrap_or(0);
    assert!(hwm < 200 * 1024, "peak RSS {hwm} KiB");
    assert!(
        rss_end < first_rss + 32 * 1024,
        "RSS grew from {first_rss} KiB to {rss_end} KiB"
    );
    println!(
        "load: {hooks} signed GitHub hooks in {:.1} s ({:.0}/s, {bursts} bursts of 10), {} pushes: \
         {fetches} fetches ({:.2} per burst), every push applied, slowest hook answer {} ms; \
         daemon RSS {} MiB in the first second, {} MiB at most, {} MiB at the end (peak {} MiB)",
        took.as_secs_f64(),
        hooks as f64 / took.as_secs_f64(),
        pushed.len(),
        fetches / bursts as f64,
        slowest_ms.load(Ordering::Relaxed),
        first_rss / 1024,
        max_rss / 1024,
        rss_end / 1024,
        hwm / 1024
    );
    drop(store);
    b.stop(Duration::from_secs(30));
    drop(gd);
}
