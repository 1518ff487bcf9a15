//! Active/passive HA end to end: three daemons (n1, n2, n3) as real processes of the binary,
//! one PostgreSQL database (`JOBKEEPER_TEST_POSTGRES_URL`, or a server of the test's own when
//! it crashes the server), one config repo, and the real Flink 2.3.0 cluster
//! (`JOBKEEPER_FLINK_URL`, `JOBKEEPER_FLINK_LIB`). Each daemon reaches Postgres and Flink
//! through its own TCP proxy (pass, freeze, cut, hold one request); the harness plays systemd's
//! watchdog (tests/support/ha_cluster.rs). Lease: `lease_ttl: 3s`, `renew_deadline: 2s`,
//! `retry: 500ms`.
//!
//! Scenarios: SIGKILL of the leader; SIGSTOP of the leader past the lease (the watchdog kills
//! it), and a paused host resumed past the lease; a frozen and a cut database link;
//! `pg_ctl restart -m immediate` shorter than `renew_deadline` and an outage longer; a Flink
//! submit held in the proxy and released after a takeover; a SIGTERM switchover (and POSTs to a
//! standby); randomized trials (`JOBKEEPER_HA_SEED`, `JOBKEEPER_HA_TRIALS`, default 6):
//! `JOBKEEPER_HA_TRIALS=50 cargo test --release --test ha randomized -- --nocapture`.
//! `JOBKEEPER_HA_WATCHDOG=0` turns the harness's watchdog off, to see what a daemon does past a
//! missed ping (the SIGSTOP scenario expects it on).
//!
//! After each: sampled every 100 ms, no job ever had two live runs (local processes by their
//! marker, Flink jobs by name); every job runs exactly once; one `leader_changed` names the old
//! node, the new one and the epoch; no run was started by the deposed node, and no row of an
//! older epoch was written, after the takeover; the deposed daemon's Flink proxy got no
//! mutating request after its deadline. Takeover times are printed (`figure: ...`) and go to
//! docs/BENCHMARKS.md.

mod common;
#[path = "support/ha_cluster.rs"]
mod ha_cluster;
#[path = "support/receivers.rs"]
mod receivers;
#[path = "support/tcp_proxy.rs"]
mod tcp_proxy;

use std::time::{Duration, Instant};

use ha_cluster::*;
use nix::sys::signal::Signal;
use tcp_proxy::Mode;

/// Cancels the cluster's live jobs named `name` (a test's leftovers, even when it failed).
pub fn cancel_flink_jobs(url: &str, name: &str) {
    let Ok(out) = std::process::Command::new("curl")
        .args(["-s", "-m", "5"])
        .arg(format!("{url}/jobs/overview"))
        .output()
    else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for j in v["jobs"].as_array().into_iter().flatten() {
        let live = !matches!(
            j["state"].as_str(),
            Some("FINISHED" | "CANCELED" | "FAILED")
        );
        if live && j["name"] == name {
            let _ = std::process::Command::new("curl")
                .args(["-s", "-m", "5", "-o", "/dev/null", "-X", "PATCH"])
                .arg(format!(
                    "{url}/jobs/{}?mode=cancel",
                    j["jid"].as_str().unwrap_or("")
                ))
                .status();
        }
    }
}

/// What a fault does to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// SIGKILL of the daemon; systemd (`KillMode=mixed`) kills its cgroup.
    Kill,
    /// SIGSTOP past the lease: the watchdog kills it; SIGCONT after.
    Stop,
    /// Its link to Postgres holds every byte.
    FreezeDb,
    /// Its link to Postgres is cut.
    CutDb,
    /// SIGTERM: it releases the lease.
    Term,
    /// The whole server down (`pg_ctl stop -m immediate`) for longer than `renew_deadline`.
    PgOutage,
}

/// Does `kind` to the leader, waits for the takeover, brings the faulted daemon back as a
/// standby, waits until every job runs once again, and checks the takeover. Returns the fault
/// and the takeover.
async fn takeover_after(c: &mut Cluster, kind: Kind) -> (Fault, Takeover) {
    let old = c.leader().await;
    let old_epoch = c.leaderz(old).await.epoch().unwrap_or(0);
    let old_pid = c.nodes[old].pid().unwrap();
    let fault;
    let t;
    match kind {
        Kind::Kill => {
            fault = c.fault(old, "SIGKILL", Duration::ZERO);
            c.nodes[old].kill_unit();
            t = c.wait_leader(&[old], SETTLE).await;
            figure(
                "SIGKILL -> a standby's /leaderz says it leads",
                t.seen - fault.at,
            );
        }
        Kind::Stop => {
            fault = c.fault(old, "SIGSTOP", RENEW_DEADLINE);
            c.nodes[old].signal(Signal::SIGSTOP);
            t = c.wait_leader(&[old], SETTLE).await;
            let kills = c.nodes[old].watchdog_kills();
            let kill = kills
                .iter()
                .find(|(at, _)| *at >= fault.at)
                .unwrap_or_else(|| panic!("the watchdog never killed the stopped leader"));
            assert!(
                kill.0 - fault.at < LEASE_TTL,
                "the watchdog killed the stopped leader {:?} after the stop, not before its \
                 lease could expire ({LEASE_TTL:?})",
                kill.0 - fault.at
            );
            figure("SIGSTOP -> the watchdog's kill", kill.0 - fault.at);
            figure("SIGSTOP -> a standby leads", t.seen - fault.at);
            c.nodes[old].signal(Signal::SIGCONT);
        }
        Kind::FreezeDb | Kind::CutDb => {
            let (mode, what) = match kind {
                Kind::FreezeDb => (Mode::Freeze, "database link frozen"),
                _ => (Mode::Cut, "database link cut"),
            };
            fault = c.fault(old, what, RENEW_DEADLINE);
            c.nodes[old].pg.set(mode);
            t = c.wait_leader(&[old], SETTLE).await;
            figure(&format!("{what} -> a standby leads"), t.seen - fault.at);
            // The deposed leader stepped down before anyone took over: its local jobs are
            // gone, it still runs (re-executed in place, same pid) and says so in its log.
            assert_eq!(
                c.nodes[old].pid(),
                Some(old_pid),
                "{} runs on in place after stepping down\n{}",
                c.nodes[old].name,
                c.dump().await
            );
            let log = c.nodes[old].log_text();
            assert!(
                log.contains("stepped down"),
                "{} logs that it stepped down:\n{}",
                c.nodes[old].name,
                c.nodes[old].log_tail(30)
            );
            for j in &c.jobs {
                if let Job::Local { marker, name } = j {
                    let left: Vec<u32> = marked(marker)
                        .into_iter()
                        .filter(|p| c.nodes[old].cgroup_pids().contains(p))
                        .collect();
                    assert!(
                        left.is_empty(),
                        "{name} still runs on the deposed {} after the takeover: {left:?}",
                        c.nodes[old].name
                    );
                }
            }
            c.nodes[old].pg.set(Mode::Pass);
        }
        Kind::Term => {
            fault = c.fault(old, "SIGTERM", Duration::ZERO);
            c.nodes[old].signal(Signal::SIGTERM);
            t = c.wait_leader(&[old], SETTLE).await;
            figure("SIGTERM -> a standby leads", t.seen - fault.at);
            let Some(st) = c.nodes[old].wait_exit(Duration::from_secs(30)).await else {
                panic!(
                    "{} did not exit within 30 s of its SIGTERM\n{}",
                    c.nodes[old].name,
                    c.dump().await
                );
            };
            assert!(st.success(), "a stopped leader exits 0: {st:?}");
        }
        Kind::PgOutage => {
            fault = c.fault(old, "PostgreSQL down", RENEW_DEADLINE);
            c.pg.stop_immediate();
            // Down for longer than renew_deadline and the lease: every daemon sees it.
            tokio::time::sleep(LEASE_TTL + Duration::from_millis(500)).await;
            c.pg.start_again();
            let back = Instant::now();
            let start = Instant::now();
            loop {
                let leaders = c.leaders().await;
                if let [i] = leaders.as_slice()
                    && c.leaderz(*i).await.epoch().unwrap_or(0) > old_epoch
                {
                    break;
                }
                assert!(
                    start.elapsed() < SETTLE,
                    "no leader of a new epoch after the outage\n{}",
                    c.dump().await
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            t = c.wait_leader(&[], SETTLE).await;
            figure("PostgreSQL back -> a leader of a new epoch", t.seen - back);
            assert!(
                c.nodes[old].log_text().contains("stepped down"),
                "{} logs that it stepped down:\n{}",
                c.nodes[old].name,
                c.nodes[old].log_tail(30)
            );
        }
    }
    let t = Takeover {
        old: c.nodes[old].name.clone(),
        ..t
    };
    assert!(
        t.epoch > old_epoch,
        "the epoch grew: {old_epoch} -> {}",
        t.epoch
    );
    if !c.nodes[old].running() {
        c.nodes[old].spawn();
    }
    if t.new != old {
        c.wait_standby(old, SETTLE).await;
    }
    c.converge(SETTLE).await;
    if let Some(ms) = c.leader_changed_ms(fault.at_ms).await {
        figure(
            &format!("{} -> leader_changed recorded", fault.what),
            Duration::from_millis(ms.max(0) as u64),
        );
    }
    if let Some(ms) = c.first_action_ms(t.new, fault.at_ms).await {
        figure(
            &format!("{} -> the new leader's first run started", fault.what),
            Duration::from_millis(ms.max(0) as u64),
        );
    }
    check(c, &fault, &t).await;
    (fault, t)
}

/// Every check after a takeover, plus the leader's and the standbys' metrics.
async fn check(c: &mut Cluster, fault: &Fault, t: &Takeover) {
    c.check_never_twice().await;
    if t.new == fault.node {
        // The same node leads again (after a whole-server outage): only the epoch fences.
        c.check_no_stale_writes("", t.epoch, t.seen_ms).await;
        c.check_no_late_engine_requests(fault);
    } else {
        c.check_takeover(fault, t).await;
    }
    let leader = c.leader().await;
    let (code, m) = c.get(leader, "/metrics").await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(metric(&m, "jobkeeper_leader"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "jobkeeper_lease_epoch"),
        Some(t.epoch as f64),
        "the leader's epoch"
    );
    assert!(
        metric(&m, "jobkeeper_takeovers_total").unwrap_or(0.0) >= 1.0,
        "jobkeeper_takeovers_total on the new leader"
    );
    for i in 0..c.nodes.len() {
        if i != leader && c.nodes[i].running() {
            let (code, m) = c.get(i, "/metrics").await;
            assert_eq!(code, 200, "a standby serves /metrics: {m}");
            assert_eq!(metric(&m, "jobkeeper_leader"), Some(0.0), "{m}");
        }
    }
}

/// The Flink job's run id and job id now.
async fn flink_run(c: &Cluster) -> (i64, String) {
    let live = c.live_runs().await;
    let r = &live["counter"];
    (r.id, r.engine_id.clone())
}

/// The Flink job was not restarted: the same run, the same Flink job id, the only one ever
/// seen live.
async fn same_flink_job(c: &Cluster, before: &(i64, String)) {
    let now = flink_run(c).await;
    assert_eq!(&now, before, "the Flink job is adopted, not restarted");
    let seen = c.flink_jids("counter");
    assert_eq!(
        seen.len(),
        1,
        "one Flink job id ever live for the job: {seen:?}"
    );
}

fn opts(name: &str, local_jobs: usize, flink: bool, private_pg: bool) -> Options {
    Options {
        name: name.into(),
        local_jobs,
        flink,
        private_pg,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_hands_over_within_the_lease_and_restarts_no_flink_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("kill", 2, true, false)).await;
    let before = flink_run(&c).await;
    let (fault, t) = takeover_after(&mut c, Kind::Kill).await;
    assert!(
        t.seen - fault.at <= LEASE_TTL + Duration::from_secs(2),
        "a standby leads within lease_ttl + 2 s of the crash: {:?}",
        t.seen - fault.at
    );
    same_flink_job(&c, &before).await;
    // Local jobs run again on the new node: their live runs record it (the Flink job's run is
    // the one n1 started, adopted).
    for (job, r) in c.live_runs().await {
        if job == "counter" {
            continue;
        }
        assert_eq!(
            r.node.as_deref(),
            Some(c.nodes[t.new].name.as_str()),
            "{job}"
        );
    }
    // The takeover is alerted (the first leader's too): the last alert names the new node.
    let new = c.nodes[t.new].name.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<serde_json::Value> = c.alerts.received().iter().map(|r| r.json()).collect();
        if got.iter().any(|a| {
            a["event"] == "leader_changed"
                && a["reason"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("{new} leads")))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader_changed alert naming {new}: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_leader_past_the_lease_is_ended_by_the_watchdog_before_its_lease_expires() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("stop", 2, false, false)).await;
    takeover_after(&mut c, Kind::Stop).await;
}

/// A whole host paused (its daemon, its local jobs and its watchdog: `cgroup.freeze`) for
/// longer than the lease, then resumed: a standby took over meanwhile; the resumed daemon finds
/// its deadline passed, commits nothing, and ends its local jobs. Those resumed jobs overlap
/// the new leader's briefly (the documented limit of a whole-host pause): the overlap is
/// measured, and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_host_resumed_past_the_lease_steps_down_without_writing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("pause", 2, false, false)).await;
    let old = c.leader().await;
    let old_pid = c.nodes[old].pid().unwrap();
    c.nodes[old].set_watchdog(false);
    c.sampler_pause(old, true);
    let fault = c.fault(old, "host paused", RENEW_DEADLINE);
    c.nodes[old].freeze_host(true);
    let t = c.wait_leader(&[old], SETTLE).await;
    figure("host paused -> a standby leads", t.seen - fault.at);
    c.converge(SETTLE).await;

    // Resumed: the old leader's jobs run again for a moment, until it sees its deadline.
    let resumed = Instant::now();
    c.excuse_until(resumed + Duration::from_secs(3));
    c.sampler_pause(old, false);
    c.nodes[old].freeze_host(false);
    let markers: Vec<String> = c
        .jobs
        .iter()
        .filter_map(|j| match j {
            Job::Local { marker, .. } => Some(marker.clone()),
            Job::Flink { .. } => None,
        })
        .collect();
    loop {
        let pids = c.nodes[old].cgroup_pids();
        if !markers
            .iter()
            .any(|m| marked(m).iter().any(|p| pids.contains(p)))
        {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(3),
            "the resumed {} still runs its local jobs 3 s later\n{}",
            c.nodes[old].name,
            c.dump().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figure(
        "paused host resumed -> its local jobs ended",
        resumed.elapsed(),
    );
    c.wait_standby(old, SETTLE).await;
    assert_eq!(c.nodes[old].pid(), Some(old_pid), "re-executed in place");
    c.nodes[old].set_watchdog(true);
    c.converge(SETTLE).await;
    let t = Takeover {
        old: c.nodes[old].name.clone(),
        ..t
    };
    c.check_takeover(&fault, &t).await;
    let excused = c.sampler.samples.lock().unwrap().excused.clone();
    println!(
        "overlap while the paused host resumed ({} samples): {excused:#?}",
        excused.len()
    );
    c.check_never_twice().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_then_a_cut_database_link_deposes_the_leader_at_its_renew_deadline() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("dblink", 2, false, false)).await;
    takeover_after(&mut c, Kind::FreezeDb).await;
    takeover_after(&mut c, Kind::CutDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_shorter_than_renew_deadline_keep_the_leader_and_longer_ones_hand_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("pgrestart", 2, false, true)).await;
    let leader = c.leader().await;
    let epoch = c.leaderz(leader).await.epoch();
    let runs_before = c.live_runs().await;

    // A crash and restart of the server that lasts less than renew_deadline: nobody steps
    // down, nothing restarts.
    let t0 = Instant::now();
    let from_ms = now_ms();
    c.pg.restart_immediate();
    let took = t0.elapsed();
    figure("pg_ctl restart -m immediate", took);
    assert!(
        took < RENEW_DEADLINE,
        "the restart itself took {took:?}, not shorter than renew_deadline"
    );
    // The positive marker: the leader swept its jobs three times after the server was back.
    let sweeps = |m: &str| metric(m, "jobkeeper_health_sweeps_total").unwrap_or(0.0);
    let start = Instant::now();
    let first = loop {
        let (code, m) = c.get(leader, "/metrics").await;
        if code == 200 {
            break sweeps(&m);
        }
        assert!(
            start.elapsed() < SETTLE,
            "the leader's /metrics never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let (_, m) = c.get(leader, "/metrics").await;
        if sweeps(&m) >= first + 3.0 {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "no health sweeps after the restart\n{}",
            c.dump().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.leaders().await, vec![leader], "{}", c.dump().await);
    assert_eq!(c.leaderz(leader).await.epoch(), epoch, "the same lease");
    let runs_after = c.live_runs().await;
    let ids =
        |m: &std::collections::BTreeMap<String, Run>| m.values().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&runs_after), ids(&runs_before), "no job restarted");
    assert!(
        !c.store
            .events()
            .await
            .iter()
            .any(|e| e.kind == "leader_changed" && e.time >= from_ms),
        "no leader_changed"
    );
    c.check_never_twice().await;

    // Down for longer than renew_deadline and the lease: the leader stepped down; a leader of
    // a new epoch runs every job once.
    takeover_after(&mut c, Kind::PgOutage).await;
}

/// The leader's submit of the Flink job is held in its proxy and its links to Flink and to the
/// database freeze: it steps down, a standby takes over and runs the job; then the held submit
/// reaches Flink, late. Flink must refuse it as a duplicate of the run's job id (the new leader
/// carries the same run on): the job runs once, never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flink_submit_held_past_a_takeover_never_runs_the_job_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::new(opts("held", 1, true, false)).await;
    c.nodes[0].flink.as_ref().unwrap().hold("/run");
    c.nodes[0].spawn();
    c.wait_leader(&[], SETTLE).await;
    c.nodes[1].spawn();
    c.nodes[2].spawn();
    for i in [1, 2] {
        c.wait_standby(i, SETTLE).await;
    }
    let start = Instant::now();
    while c.nodes[0].flink.as_ref().unwrap().held().is_empty() {
        assert!(
            start.elapsed() < SETTLE,
            "n1 never submitted the job\n{}",
            c.dump().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = c.nodes[0].flink.as_ref().unwrap().held();
    println!("held in n1's Flink proxy: {held:?}");
    // n1's link to Flink freezes too (a partition): nothing of n1's reaches Flink until the
    // test lets the held submit go.
    c.nodes[0].flink.as_ref().unwrap().set(Mode::Freeze);

    // n1 is cut off from the database: it steps down; a standby takes over.
    let fault = c.fault(0, "database link frozen", RENEW_DEADLINE);
    c.nodes[0].pg.set(Mode::Freeze);
    let t = c.wait_leader(&[0], SETTLE).await;
    c.converge(SETTLE).await;
    let before = flink_run(&c).await;

    // The held submit arrives now.
    let released = now_ms();
    c.nodes[0].flink.as_ref().unwrap().release();
    c.nodes[0].flink.as_ref().unwrap().set(Mode::Pass);
    // The positive marker that it was answered: the proxy holds nothing and the cluster lists
    // the job once; then three sweeps of the leader.
    let start = Instant::now();
    while !c.nodes[0].flink.as_ref().unwrap().held().is_empty() {
        assert!(start.elapsed() < SETTLE, "the held request never went on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = t.new;
    let sweeps = |m: &str| metric(m, "jobkeeper_health_sweeps_total").unwrap_or(0.0);
    let first = sweeps(&c.get(leader, "/metrics").await.1);
    while sweeps(&c.get(leader, "/metrics").await.1) < first + 3.0 {
        assert!(start.elapsed() < SETTLE, "no sweeps after the release");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.sampler.pass(5).await;
    c.check_never_twice().await;
    c.converge(SETTLE).await;
    same_flink_job(&c, &before).await;
    let runs: Vec<Run> = c
        .store
        .runs()
        .await
        .into_iter()
        .filter(|r| r.job == "counter")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "one run of the Flink job, submitted by n1 and carried on by {}: {runs:#?}",
        c.nodes[leader].name
    );
    println!(
        "the held submit was released {} ms after the takeover",
        released - t.seen_ms
    );
    c.nodes[0].pg.set(Mode::Pass);
    c.wait_standby(0, SETTLE).await;
    let t = Takeover {
        old: "n1".into(),
        ..t
    };
    check(&mut c, &fault, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_switches_over_within_2_s_and_a_standby_hands_posts_to_the_leader() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::up(opts("term", 2, true, false)).await;
    let before = flink_run(&c).await;
    let (fault, t) = takeover_after(&mut c, Kind::Term).await;
    assert!(
        t.seen - fault.at <= Duration::from_secs(2),
        "SIGTERM switchover within 2 s: {:?}",
        t.seen - fault.at
    );
    same_flink_job(&c, &before).await;

    // A restart asked of a standby is recorded for the leader, which carries it out.
    let leader = t.new;
    let standby = (0..3).find(|&i| i != leader).unwrap();
    let run = c.live_runs().await["svc0"].id;
    let (code, body) = c.post(standby, "/api/v1/jobs/svc0/restart").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("leader"), "the answer says who acts: {body}");
    let start = Instant::now();
    loop {
        let live = c.live_runs().await;
        if let Some(r) = live.get("svc0")
            && r.id > run
        {
            assert_eq!(
                r.node.as_deref(),
                Some(c.nodes[leader].name.as_str()),
                "the leader ran it"
            );
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "the leader never carried out the restart asked of {}\n{}",
            c.nodes[standby].name,
            c.dump().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = c.post(standby, "/api/v1/sync").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("leader"), "{body}");
    c.converge(SETTLE).await;
    c.check_never_twice().await;
}

/// A tiny xorshift64 PRNG: a run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_faults_of_the_leader_never_run_a_job_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = env_u64("JOBKEEPER_HA_SEED").unwrap_or_else(|| now_ms() as u64);
    let trials = env_u64("JOBKEEPER_HA_TRIALS").unwrap_or(6);
    println!("ha randomized: seed {seed}, {trials} trials (JOBKEEPER_HA_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut c = Cluster::up(opts("random", 2, true, true)).await;
    let before = flink_run(&c).await;
    let kinds = [
        Kind::Kill,
        Kind::Stop,
        Kind::FreezeDb,
        Kind::CutDb,
        Kind::Term,
        Kind::PgOutage,
    ];
    let started = Instant::now();
    for trial in 0..trials {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let leader = c.leader().await;
        println!(
            "trial {trial} (seed {seed}): {kind:?} of {}",
            c.nodes[leader].name
        );
        takeover_after(&mut c, kind).await;
        same_flink_job(&c, &before).await;
    }
    println!(
        "ha randomized: {trials} trials in {:?} (seed {seed})",
        started.elapsed()
    );
}
