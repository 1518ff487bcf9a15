//! Crash convergence: the real daemon binary against a stream of commits to a bare config repo
//! (adds, changes of args, removals, broken files, suspends, a job that keeps failing, a batch job
//! firing every second), killed with SIGKILL at random points and started again. After each
//! trial, once the daemon applied the tip:
//!
//! - the running set equals the desired set: each valid, non-suspended service job has exactly
//!   one live run whose pid is alive and runs the job's current args, and no process of a
//!   removed, changed or suspended job is alive;
//! - no job ever ran twice at once: a background thread samples `/proc` every ~20 ms during the
//!   whole test and counts, per job, the process-group leaders carrying one of its markers;
//! - no run or event was lost: ids only grow, every run seen before a kill is still there, every
//!   run has an end unless live;
//! - the store passes `PRAGMA integrity_check`.
//!
//! `JOBKEEPER_CHAOS_SEED` (default: the time, always printed) and `JOBKEEPER_CHAOS_TRIALS`
//! (default 50) replay or lengthen a run:
//! `JOBKEEPER_CHAOS_TRIALS=200 JOBKEEPER_CHAOS_SEED=42 cargo test --release --test crash_convergence -- --nocapture`
//!
//! A second test kills the daemon at one chosen point of a rollback on the local engine (the
//! Flink cases, adoption and rollback, are in tests/crash_flink.rs).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Git, alive};
use jobkeeper::store::Blocking;

/// How long one trial may take to converge after the restart.
const SETTLE: Duration = Duration::from_secs(40);

/// A tiny xorshift64 PRNG: the whole run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `sleep <marker>`: must always run.
    Service,
    /// Exits with code 3 after 0.3 s: restarted with backoff, then gives up.
    Flaky,
    /// A batch job on a `*/1 * * * * *` schedule, each run 0.3 s.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Absent,
    Valid,
    Broken,
}

/// One job of the stream and what the config repo wants of it.
#[derive(Debug)]
struct Slot {
    name: String,
    kind: Kind,
    file: File,
    /// Version of the latest file written (each version has its own marker).
    version: u32,
    /// The version the daemon must apply: the last valid one since the last removal, and
    /// whether it is suspended.
    desired: Option<(u32, bool)>,
}

/// Markers of every job version ever written, shared with the `/proc` sampler.
type Markers = Arc<Mutex<HashMap<String, (usize, u32)>>>;

/// What `/proc/<pid>/stat` says: (state, process group).
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
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

/// Live (not zombie) process-group leaders carrying a known marker: (pid, slot, version).
/// Each run of the local engine leads its own group; a shell's forked child does not.
fn marked_processes(markers: &Markers) -> Vec<(u32, usize, u32)> {
    let markers = markers.lock().unwrap().clone();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((state, pgrp)) = stat(pid) else {
            continue;
        };
        if state == 'Z' || state == 'X' || pgrp != pid {
            continue;
        }
        if let Some(&(slot, version)) = argv(pid).iter().find_map(|a| markers.get(a)) {
            out.push((pid, slot, version));
        }
    }
    out
}

/// The pid in a run's handle.
fn handle_pid(handle: Option<&str>) -> u32 {
    handle
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
        .and_then(|v| v["engine_id"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Run {
    id: i64,
    job: String,
    state: String,
    pid: u32,
    ended: bool,
}

/// Owns everything the test starts; its `Drop` kills the daemon and every job process, even
/// when an assertion failed.
struct Harness {
    _root: tempfile::TempDir,
    git: Git,
    cfg: PathBuf,
    log: PathBuf,
    db: StoreAt,
    daemon: Option<Child>,
    markers: Markers,
    base: u64,
    slots: Vec<Slot>,
    stop_sampler: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<u64>>,
    sampler: Option<std::thread::JoinHandle<()>>,
    /// Every pid the store ever recorded.
    recorded: BTreeSet<u32>,
    /// Slots given a new version in this trial, not yet applied by the daemon.
    touched: BTreeSet<usize>,
}

impl Harness {
    /// A harness whose daemon keeps its store in SQLite, or (`postgres`) in a new schema of
    /// `JOBKEEPER_TEST_POSTGRES_URL`.
    fn new(postgres: bool) -> Harness {
        let root = tempfile::tempdir().unwrap();
        let git = Git::new(root.path(), "config");
        let cfg = root.path().join("config.yaml");
        let db = match postgres {
            true => StoreAt::postgres(),
            false => StoreAt::Sqlite(root.path().join("state/jobkeeper.db")),
        };
        let mut text = format!(
            "repo:\n  url: {}\n  branch: main\n  path: jobs\n  poll: 1s\nstate_dir: {}\n\
             listen: 127.0.0.1:0\ntimezone: UTC\nhealth: {{interval: 1s}}\n\
             restart: {{attempts: 3, window: 1h, backoff: 200ms, max_backoff: 1s}}\n\
             max_removals: 100%\n\
             envs:\n  dev: {{engine: local}}\n",
            git.bare.display(),
            root.path().join("state").display()
        );
        if let StoreAt::Postgres(url) = &db {
            text.push_str(&format!(
                "store:\n  postgres: {{url: \"{url}\", tls: disable, pool: 4}}\n"
            ));
        }
        // The model removes any share of its few jobs in one push: no commit is held.
        std::fs::write(&cfg, text).unwrap();
        let log = root.path().join("daemon.log");
        let mut slots = Vec::new();
        for (i, kind) in [
            Kind::Service,
            Kind::Service,
            Kind::Service,
            Kind::Service,
            Kind::Flaky,
            Kind::Tick,
        ]
        .into_iter()
        .enumerate()
        {
            let name = match kind {
                Kind::Service => format!("svc{i}"),
                Kind::Flaky => "flaky".into(),
                Kind::Tick => "team/tick".into(),
            };
            slots.push(Slot {
                name,
                kind,
                file: File::Absent,
                version: 0,
                desired: None,
            });
        }
        let markers: Markers = Arc::default();
        let stop_sampler = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0u64));
        let sampler = {
            let (markers, stop, violations, samples) = (
                markers.clone(),
                stop_sampler.clone(),
                violations.clone(),
                samples.clone(),
            );
            let names: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut per_slot: HashMap<usize, Vec<(u32, u32)>> = HashMap::new();
                    for (pid, slot, version) in marked_processes(&markers) {
                        per_slot.entry(slot).or_default().push((pid, version));
                    }
                    for (slot, procs) in per_slot {
                        if procs.len() > 1 {
                            let mut v = violations.lock().unwrap();
                            if v.len() < 20 {
                                v.push(format!(
                                    "{} job {} ran {} times at once: (pid, version) {procs:?}",
                                    chrono::Utc::now().format("%H:%M:%S%.3f"),
                                    names[slot],
                                    procs.len()
                                ));
                            }
                        }
                    }
                    *samples.lock().unwrap() += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Harness {
            _root: root,
            git,
            cfg,
            log,
            db,
            daemon: None,
            markers,
            // Unique to this test process, so other tests' `sleep`s are never counted.
            base: 700 + u64::from(std::process::id() % 299),
            slots,
            stop_sampler,
            violations,
            samples,
            sampler: Some(sampler),
            recorded: BTreeSet::new(),
            touched: BTreeSet::new(),
        }
    }

    fn marker(&self, slot: usize, version: u32) -> String {
        format!("{}{slot:02}{version:04}", self.base)
    }

    fn rel(&self, slot: usize) -> String {
        format!("jobs/{}.yaml", self.slots[slot].name)
    }

    /// A new valid version of a job (optionally suspended).
    fn write_version(&mut self, slot: usize, suspend: bool) {
        self.slots[slot].version += 1;
        let v = self.slots[slot].version;
        let m = self.marker(slot, v);
        self.markers.lock().unwrap().insert(m.clone(), (slot, v));
        let mut text = match self.slots[slot].kind {
            Kind::Service => format!("env: dev\nparams:\n  command: [\"sleep\", \"{m}\"]\n"),
            Kind::Flaky => format!(
                "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"sleep 0.3; exit 3\", \"{m}\"]\n\
                 restart: {{attempts: 2, window: 1h, backoff: 100ms, max_backoff: 200ms}}\n"
            ),
            Kind::Tick => format!(
                "env: dev\nschedule: \"*/1 * * * * *\"\noverlap: forbid\n\
                 params:\n  command: [\"sh\", \"-c\", \"sleep 0.3; true\", \"{m}\"]\n"
            ),
        };
        if suspend {
            text.push_str("suspend: true\n");
        }
        self.git.write(&self.rel(slot), &text);
        self.slots[slot].file = File::Valid;
        self.slots[slot].desired = Some((v, suspend));
        self.touched.insert(slot);
    }

    /// One random change to one job, committed (not pushed); returns its description.
    fn mutate(&mut self, rng: &mut Rng) -> String {
        let slot = rng.below(self.slots.len() as u64) as usize;
        let name = self.slots[slot].name.clone();
        let rel = self.rel(slot);
        let what = match self.slots[slot].file {
            File::Absent => {
                self.write_version(slot, false);
                format!("add {name}")
            }
            File::Valid | File::Broken => match rng.below(10) {
                0..=3 => {
                    self.write_version(slot, false);
                    format!("change {name}")
                }
                4 | 5 => {
                    self.git.remove(&rel);
                    self.slots[slot].file = File::Absent;
                    self.slots[slot].desired = None;
                    format!("remove {name}")
                }
                // Breaking a job whose new version the daemon may not have seen yet would leave
                // "the previous version" undefined for this model (the daemon keeps the last
                // version it applied; a skipped commit is never applied): change it instead.
                6..=8 if self.touched.contains(&slot) => {
                    self.write_version(slot, false);
                    format!("change {name}")
                }
                6..=8 => {
                    let broken = [
                        "env: [dev\n",
                        "env: dev\nparams: {command: [\"sleep\", \"1\"]}\nrestrat: {}\n",
                        "env: nowhere\nparams: {command: [\"sleep\", \"1\"]}\n",
                        "env: dev\nparams: {command: sleep}\n",
                        "env: dev\nenv: dev\n",
                        "env: dev\nschedule: \"61 * * * *\"\nparams: {command: [\"true\"]}\n",
                    ];
                    let text = broken[rng.below(broken.len() as u64) as usize];
                    self.git.write(&rel, text);
                    self.slots[slot].file = File::Broken;
                    format!("break {name}")
                }
                _ => {
                    let suspended = self.slots[slot].desired.is_some_and(|(_, s)| s);
                    self.write_version(slot, !suspended);
                    format!("{} {name}", if suspended { "resume" } else { "suspend" })
                }
            },
        };
        self.git.commit(&what);
        what
    }

    fn spawn(&mut self) {
        assert!(self.daemon.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config", self.cfg.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn sigkill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill().unwrap();
            d.wait().unwrap();
        }
    }

    /// Jobs, their latest runs and events, for a failure message.
    fn store_dump(&self) -> String {
        let Some(store) = self.db.open() else {
            return "(no store)".into();
        };
        let mut out = String::new();
        for job in store.jobs().unwrap_or_default() {
            out.push_str(&format!(
                "job {} state={} desired={:?} applied={:?} reason={:?}\n",
                job.name,
                job.state,
                job.desired_hash.as_deref().map(|h| &h[..8]),
                job.applied_hash.as_deref().map(|h| &h[..8]),
                job.reason
            ));
            for e in store
                .events(Some(&job.name), 12)
                .unwrap_or_default()
                .iter()
                .rev()
            {
                out.push_str(&format!(
                    "  event {} {} run={:?} {}\n",
                    e.id,
                    e.kind,
                    e.run_id,
                    e.message.lines().next().unwrap_or("")
                ));
            }
        }
        out
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The whole log is kept for a failed run.
        let kept = std::env::temp_dir().join(format!("jobkeeper-chaos-{}.log", std::process::id()));
        if std::fs::write(&kept, &text).is_ok() {
            eprintln!("daemon log kept in {}", kept.display());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn runs(&self) -> Vec<Run> {
        self.try_runs().expect("runs readable")
    }

    fn try_runs(&self) -> Option<Vec<Run>> {
        self.db.runs()
    }

    fn event_ids(&self) -> BTreeSet<i64> {
        self.db.event_ids().expect("events readable")
    }

    fn applied_commit(&self) -> Option<String> {
        if !self.db.exists() {
            return None;
        }
        self.db.applied_commit()
    }

    /// Whether what runs equals what the tip wants; the first difference otherwise.
    fn converged(&self, tip: &str) -> Result<(), String> {
        let applied = self.applied_commit();
        if applied.as_deref() != Some(tip) {
            return Err(format!("applied commit {applied:?}, tip {tip}"));
        }
        let runs = self.runs();
        let procs = marked_processes(&self.markers);
        for (i, slot) in self.slots.iter().enumerate() {
            let live: Vec<&Run> = runs
                .iter()
                .filter(|r| r.job == slot.name && !r.ended)
                .collect();
            let current = slot.desired.filter(|(_, suspended)| !suspended);
            let want_running = slot.kind == Kind::Service && current.is_some();
            if want_running {
                let (v, _) = current.unwrap();
                if live.len() != 1 {
                    return Err(format!("{}: {} live runs, want 1", slot.name, live.len()));
                }
                let pid = live[0].pid;
                if pid == 0 || !alive(pid) {
                    return Err(format!("{}: live run {} has no live pid", slot.name, pid));
                }
                if !argv(pid).contains(&self.marker(i, v)) {
                    return Err(format!(
                        "{}: pid {pid} runs {:?}, want version {v}",
                        slot.name,
                        argv(pid)
                    ));
                }
            } else if slot.kind == Kind::Service && !live.is_empty() {
                return Err(format!(
                    "{}: {} live runs, want none ({:?})",
                    slot.name,
                    live.len(),
                    slot.desired
                ));
            } else if live.len() > 1 {
                return Err(format!("{}: {} live runs", slot.name, live.len()));
            }
            // Every process of this job runs its current, non-suspended version.
            for &(pid, s, v) in &procs {
                if s == i && current.map(|(c, _)| c) != Some(v) {
                    return Err(format!(
                        "{}: stale process {pid} of version {v} alive (want {current:?})",
                        slot.name
                    ));
                }
            }
        }
        // No pid the store ever recorded runs one of ours unless it is a live run.
        let live_pids: BTreeSet<u32> = runs.iter().filter(|r| !r.ended).map(|r| r.pid).collect();
        for &(pid, s, v) in &procs {
            if self.recorded.contains(&pid) && !live_pids.contains(&pid) {
                return Err(format!(
                    "pid {pid} ({} version {v}) is alive but its run ended",
                    self.slots[s].name
                ));
            }
        }
        Ok(())
    }

    fn settle(&mut self, tip: &str) {
        let start = Instant::now();
        loop {
            let Some(runs) = self.db.exists().then(|| self.try_runs()).flatten() else {
                assert!(start.elapsed() < SETTLE, "no store after {SETTLE:?}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            for r in runs {
                if r.pid != 0 {
                    self.recorded.insert(r.pid);
                }
            }
            match self.converged(tip) {
                Ok(()) => return,
                Err(why) if start.elapsed() > SETTLE => panic!(
                    "not converged after {SETTLE:?}: {why}\nslots: {:#?}\nstore:\n{}\ndaemon log:\n{}",
                    self.slots,
                    self.store_dump(),
                    self.log_tail()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn assert_no_violation(&self) {
        let v = self.violations.lock().unwrap();
        assert!(
            v.is_empty(),
            "a job ran twice at once:\n{}\ndaemon log:\n{}",
            v.join("\n"),
            self.log_tail()
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        self.stop_sampler.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        // Every job process: by marker, then by the pids the store recorded (only when the pid
        // still runs one of ours).
        let kill = |pid: u32| {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        for (pid, _, _) in marked_processes(&self.markers) {
            kill(pid);
        }
        let markers = self.markers.lock().unwrap().clone();
        if self.db.exists() {
            for r in self.runs() {
                if r.pid > 1 && alive(r.pid) && argv(r.pid).iter().any(|a| markers.contains_key(a))
                {
                    kill(r.pid);
                }
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn random_sigkills_converge_to_the_tip_and_never_run_a_job_twice() {
    chaos(false, env_u64("JOBKEEPER_CHAOS_TRIALS").unwrap_or(50));
}

/// The same harness with the daemon's store in PostgreSQL (`JOBKEEPER_TEST_POSTGRES_URL`):
/// `JOBKEEPER_CHAOS_PG_TRIALS` trials (default 12).
#[test]
fn random_sigkills_on_a_postgres_store_converge_and_never_run_a_job_twice() {
    chaos(true, env_u64("JOBKEEPER_CHAOS_PG_TRIALS").unwrap_or(12));
}

/// The two harnesses of this file, one at a time: each watches every marked process on the
/// host, and both mark their jobs alike.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn chaos(postgres: bool, trials: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = env_u64("JOBKEEPER_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    });
    let backend = if postgres { "postgres" } else { "sqlite" };
    println!(
        "crash_convergence ({backend}): seed {seed}, {trials} trials (JOBKEEPER_CHAOS_SEED={seed})"
    );
    let mut rng = Rng::new(seed);
    let mut h = Harness::new(postgres);
    let started = Instant::now();

    // A first commit with every job, applied by a first daemon.
    for i in 0..h.slots.len() {
        h.write_version(i, false);
    }
    let mut tip = h.git.commit_push("all jobs");
    let mut commits = 1u64;
    let mut kills = 0u64;
    h.spawn();
    h.settle(&tip);

    let mut seen_runs: BTreeSet<i64> = BTreeSet::new();
    let mut seen_events: BTreeSet<i64> = BTreeSet::new();
    for trial in 0..trials {
        let ctx = format!("seed {seed}, trial {trial}");
        // 0-3 commits: most pushed while the daemon runs, some while it is down.
        let n = rng.below(4);
        let mut what = Vec::new();
        for _ in 0..n {
            what.push(h.mutate(&mut rng));
            commits += 1;
            if rng.below(3) != 0 {
                h.git.push();
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(50, 800)));
        h.sigkill();
        kills += 1;
        // Sometimes a second crash, during start-up recovery.
        if rng.below(4) == 0 {
            h.spawn();
            std::thread::sleep(Duration::from_millis(rng.range(20, 400)));
            h.sigkill();
            kills += 1;
        }
        h.git.push();
        tip = h.git.git(&["rev-parse", "HEAD"]);
        h.spawn();
        h.settle(&tip);
        h.touched.clear();
        h.assert_no_violation();

        // Nothing lost: every run and event seen before is still there; every run ended unless
        // live.
        let runs = h.runs();
        let run_ids: BTreeSet<i64> = runs.iter().map(|r| r.id).collect();
        let lost: Vec<&i64> = seen_runs.difference(&run_ids).collect();
        assert!(lost.is_empty(), "{ctx}: runs lost: {lost:?}");
        let events = h.event_ids();
        let lost: Vec<&i64> = seen_events.difference(&events).collect();
        assert!(lost.is_empty(), "{ctx}: events lost: {lost:?}");
        assert!(
            run_ids.last() >= seen_runs.last() && events.last() >= seen_events.last(),
            "{ctx}: ids went back"
        );
        for r in &runs {
            let live_state = r.state == "starting" || r.state == "running";
            assert_eq!(
                live_state, !r.ended,
                "{ctx}: run {} of {} is {} with ended={}",
                r.id, r.job, r.state, r.ended
            );
        }
        seen_runs = run_ids;
        seen_events = events;
        let store = h.db.open().expect("the store opens");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{ctx}");
        drop(store);
        println!(
            "trial {trial}: {} → converged ({} runs, {} events, {:.1}s)",
            if what.is_empty() {
                "no commit".to_string()
            } else {
                what.join(", ")
            },
            seen_runs.len(),
            seen_events.len(),
            started.elapsed().as_secs_f64()
        );
    }
    // Let the sampler look a little longer at the converged state.
    std::thread::sleep(Duration::from_millis(300));
    h.assert_no_violation();
    let samples = *h.samples.lock().unwrap();
    println!(
        "crash_convergence summary ({backend}): trials={trials} kills={kills} commits={commits} \
         runs={} events={} samples={samples} lost=0 duplicated=0 seed={seed} ({:.0}s)",
        seen_runs.len(),
        seen_events.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Where the daemon's store is, read by the harness on its own threads.
enum StoreAt {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// A Postgres schema's URL.
    Postgres(String),
}

/// The runtime the harness's own Postgres reads run on.
fn pg_rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

impl StoreAt {
    /// A new empty schema of `JOBKEEPER_TEST_POSTGRES_URL`.
    fn postgres() -> StoreAt {
        let url = std::env::var("JOBKEEPER_TEST_POSTGRES_URL").expect(
            "JOBKEEPER_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
             (scripts/test.sh starts one; or scripts/postgres.sh start DIR)",
        );
        let schema = format!("chaos_{}", std::process::id());
        let admin = url.clone();
        let s = schema.clone();
        pg_rt().block_on(async move {
            let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"
            ))
            .await
            .unwrap();
        });
        let sep = if url.contains('?') { '&' } else { '?' };
        StoreAt::Postgres(format!("{url}{sep}options=-csearch_path%3D{schema}"))
    }

    /// Whether the daemon made its store yet.
    fn exists(&self) -> bool {
        match self {
            StoreAt::Sqlite(p) => p.exists(),
            StoreAt::Postgres(_) => self.pg_rows("SELECT id FROM runs LIMIT 1").is_some(),
        }
    }

    /// The store through jobkeeper's own operations.
    fn open(&self) -> Option<Blocking> {
        match self {
            StoreAt::Sqlite(p) => Blocking::open(p).ok(),
            StoreAt::Postgres(url) => Blocking::open_postgres(
                &jobkeeper::store::postgres::Target {
                    url: url.clone(),
                    password: None,
                    tls: jobkeeper::store::postgres::TlsMode::Disable,
                    pool: 1,
                },
                pg_rt().handle().clone(),
            )
            .ok(),
        }
    }

    fn sqlite(p: &std::path::Path) -> Option<rusqlite::Connection> {
        let c =
            rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
                .ok()?;
        c.busy_timeout(Duration::from_secs(5)).ok()?;
        Some(c)
    }

    /// The rows of `sql` on the Postgres store; `None` when it cannot be read.
    fn pg_rows(&self, sql: &str) -> Option<Vec<tokio_postgres::Row>> {
        let StoreAt::Postgres(url) = self else {
            return None;
        };
        let (url, sql) = (url.clone(), sql.to_string());
        pg_rt().block_on(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(conn);
            c.query(&sql, &[]).await.ok()
        })
    }

    const RUNS: &str = "SELECT id, job, state, handle, ended_at FROM runs ORDER BY id";

    fn runs(&self) -> Option<Vec<Run>> {
        let run = |id, job, state, handle: Option<String>, ended: Option<i64>| Run {
            id,
            job,
            state,
            pid: handle_pid(handle.as_deref()),
            ended: ended.is_some(),
        };
        match self {
            StoreAt::Sqlite(p) => {
                let c = Self::sqlite(p)?;
                let mut st = c.prepare(Self::RUNS).ok()?;
                st.query_map([], |r| {
                    Ok(run(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .ok()?
                .collect::<Result<_, _>>()
                .ok()
            }
            StoreAt::Postgres(_) => Some(
                self.pg_rows(Self::RUNS)?
                    .iter()
                    .map(|r| run(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect(),
            ),
        }
    }

    fn event_ids(&self) -> Option<BTreeSet<i64>> {
        match self {
            StoreAt::Sqlite(p) => {
                let c = Self::sqlite(p)?;
                let mut st = c.prepare("SELECT id FROM events").ok()?;
                st.query_map([], |r| r.get(0))
                    .ok()?
                    .collect::<Result<_, _>>()
                    .ok()
            }
            StoreAt::Postgres(_) => Some(
                self.pg_rows("SELECT id FROM events")?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            ),
        }
    }

    fn applied_commit(&self) -> Option<String> {
        const SQL: &str = "SELECT value FROM meta WHERE key = 'applied_commit'";
        match self {
            StoreAt::Sqlite(p) => Self::sqlite(p)?.query_row(SQL, [], |r| r.get(0)).ok(),
            StoreAt::Postgres(_) => self.pg_rows(SQL)?.first().map(|r| r.get(0)),
        }
    }
}

/// The daemon binary, killed with SIGKILL on drop.
struct Binary(Option<Child>);

impl Binary {
    fn start(cfg: &std::path::Path, log: &std::path::Path) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Binary(Some(child))
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Live process-group leaders whose argv holds one of `markers`.
fn leaders_with(markers: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| stat(p).is_some_and(|(st, pgrp)| st != 'Z' && pgrp == p))
                .filter(|&p| argv(p).iter().any(|a| markers.contains(&a.as_str())))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills, on drop, the process groups of the runs carrying these markers, even when an
/// assertion failed.
struct KillMarked(Vec<String>);

impl Drop for KillMarked {
    fn drop(&mut self) {
        let markers: Vec<&str> = self.0.iter().map(String::as_str).collect();
        for pid in leaders_with(&markers) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Polls every 20 ms until `cond` holds, at most [`SETTLE`]; `dump` explains a timeout.
fn poll_until(what: &str, dump: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < SETTLE,
            "timed out after {SETTLE:?} waiting for {what}\n{}",
            dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The crash harness's local case for a rollback. v1 runs; v2, deployed by a commit with
/// `rollback: true`, exits with code 4 half a second after it starts; the daemon binary is
/// killed once the rollback is recorded and v1's run inserted, before v1 is spawned. That point
/// is reached deterministically: the run's log file, which the local engine opens for the
/// process's output just before spawning it, is a FIFO no one reads, so the open blocks. Started
/// again, the daemon converges to v1 alone (one live run, its process alive with v1's marker),
/// the job `rolled_back` with one `rolled_back` event, and v2 run exactly once.
#[test]
fn a_daemon_killed_during_a_local_rollback_starts_the_previous_version_alone() {
    let root = tempfile::tempdir().unwrap();
    let git = Git::new(root.path(), "config");
    let cfg = root.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "repo:\n  url: {}\n  branch: main\n  path: jobs\n  poll: 1s\nstate_dir: {}\n\
             listen: 127.0.0.1:0\nenvs:\n  dev: {{engine: local}}\n",
            git.bare.display(),
            root.path().join("state").display()
        ),
    )
    .unwrap();
    let (db, log) = (
        root.path().join("state/jobkeeper.db"),
        root.path().join("daemon.log"),
    );
    // Markers unique to this test process: its processes are told from every other's.
    let (m1, m2) = (
        format!("{}01", 900 + std::process::id() % 99),
        format!("{}02", 900 + std::process::id() % 99),
    );
    let _kill = KillMarked(vec![m1.clone(), m2.clone()]);
    let guard = "restart: {attempts: 3, window: 1h, backoff: 200ms, max_backoff: 200ms}\n\
                 rollback: true\nready_within: 1m\n";
    git.write(
        "jobs/app.yaml",
        &format!("env: dev\nparams:\n  command: [\"sleep\", \"{m1}\"]\n{guard}"),
    );
    git.commit_push("v1");
    let mut daemon = Binary::start(&cfg, &log);
    let store = || Blocking::open(&db).ok();
    let runs = || {
        store()
            .and_then(|s| s.runs("app", 100).ok())
            .unwrap_or_default()
    };
    let dump = || {
        let mut out = format!(
            "job: {:?}\n",
            store().and_then(|s| s.job("app").ok().flatten())
        );
        for r in runs().iter().rev() {
            out.push_str(&format!(
                "run {} {} {:?} {:?}\n",
                r.id, r.state, r.handle, r.reason
            ));
        }
        if let Some(s) = store() {
            for e in s.events(Some("app"), 100).unwrap_or_default().iter().rev() {
                out.push_str(&format!("event {} {}\n", e.kind, e.message));
            }
        }
        format!(
            "{out}daemon log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    let live_pid = || match runs()
        .iter()
        .filter(|r| r.ended_at.is_none())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [one] => Some(handle_pid(
            one.handle
                .as_ref()
                .map(|h| serde_json::to_string(h).unwrap())
                .as_deref(),
        ))
        .filter(|&pid| pid != 0 && alive(pid)),
        _ => None,
    };
    // The applied version is recorded by a write of its own after the run is seen live.
    let applied = || store().and_then(|s| s.job("app").ok().flatten()?.applied_hash);
    poll_until("v1 running and applied", dump, || {
        live_pid().is_some() && applied().is_some()
    });
    let v1_hash = applied();
    let v1_pid = live_pid().unwrap();

    // v2's run is the next run, v1's run after the rollback the one after it.
    let next = runs().iter().map(|r| r.id).max().unwrap() + 1;
    let fifo = root.path().join(format!("state/logs/app/{}.log", next + 1));
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    git.write(
        "jobs/app.yaml",
        &format!(
            "env: dev\nparams:\n  command: [\"sh\", \"-c\", \"sleep 0.5; exit 4\", \"{m2}\"]\n\
             {guard}"
        ),
    );
    git.commit_push("v2 exits with code 4 after half a second");
    poll_until("the rollback recorded, v1's run inserted", dump, || {
        runs().iter().any(|r| r.id == next + 1)
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.sigkill();
    std::fs::remove_file(&fifo).unwrap();
    let row = store().unwrap().job("app").unwrap().unwrap();
    assert_eq!(
        row.applied_hash, v1_hash,
        "killed after the rollback was recorded"
    );
    let v1_again = runs().into_iter().find(|r| r.id == next + 1).unwrap();
    assert_eq!(
        (v1_again.handle, Some(v1_again.spec_hash)),
        (None, v1_hash.clone()),
        "killed before v1 was spawned\n{}",
        dump()
    );
    assert!(!alive(v1_pid), "the upgrade stopped v1");

    let _daemon = Binary::start(&cfg, &log);
    poll_until("v1 running again", dump, || {
        live_pid().is_some_and(|pid| argv(pid).contains(&m1))
    });
    // A few health sweeps: nothing else starts.
    std::thread::sleep(Duration::from_secs(3));
    let pid = live_pid().unwrap_or_else(|| panic!("v1 no longer runs\n{}", dump()));
    assert!(argv(pid).contains(&m1), "{}", dump());
    let s = store().unwrap();
    let row = s.job("app").unwrap().unwrap();
    assert_eq!(row.state, "rolled_back", "{}", dump());
    let v2_runs = runs()
        .iter()
        .filter(|r| Some(&r.spec_hash) == row.desired_hash.as_ref())
        .count();
    assert_eq!(v2_runs, 1, "v2 ran once\n{}", dump());
    let events = s.events(Some("app"), 100).unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        (count("rolled_back"), count("deploy_failed")),
        (1, 0),
        "{}",
        dump()
    );
    // No process of v2, nor a second of v1.
    assert_eq!(leaders_with(&[&m1, &m2]), [pid], "{}", dump());
}
