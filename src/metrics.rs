//! The daemon's metrics: one [`Metrics`] per daemon, bumped through typed functions from one
//! place each (the daemon loop, a job actor's event, the HTTP handlers), rendered in the
//! Prometheus text format (version 0.0.4) with `HELP` and `TYPE` lines, names prefixed
//! `jobkeeper_`.
//!
//! Values that the store or the alerter already keep (jobs by state, the applied commit, failed
//! store writes, alerts sent and failed) are read when `/metrics` is scraped, not counted twice.

use crate::event::EventKind;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::alert::AlertStats;
use crate::store::JobState;

/// Upper bounds (seconds) of the reconcile duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with the fixed [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, then one for `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of observed values, in microseconds.
    sum_micros: AtomicU64,
    /// Observations.
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The daemon's counters. Create one with [`Metrics::default`] and share it in an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Times this daemon took the lease (`ha`).
    takeovers: AtomicU64,
    /// Config-repo fetches that succeeded.
    fetches_ok: AtomicU64,
    /// Config-repo fetches that failed.
    fetches_failed: AtomicU64,
    /// Fetches started, by trigger reason.
    triggers: Mutex<BTreeMap<&'static str, u64>>,
    /// Time of one sync (fetch, diff, parse, store) of the config repo.
    reconcile: Histogram,
    /// Builds that gave an artifact (cached ones included).
    builds_ok: AtomicU64,
    /// Builds that failed.
    builds_failed: AtomicU64,
    /// Restarts after failures, by job.
    restarts: Mutex<BTreeMap<String, u64>>,
    /// Job events by kind.
    events: Mutex<BTreeMap<String, u64>>,
    /// Webhooks received, by (source, outcome).
    webhooks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// HTTP connections open now.
    http_open: AtomicU64,
    /// HTTP connections the listener closed itself, by reason.
    http_closed: Mutex<BTreeMap<&'static str, u64>>,
    /// The state folder's size, as the last retention pass measured it.
    state_bytes: AtomicU64,
    /// What retention deleted, by kind (`runs`, `events`, `files`).
    pruned: Mutex<BTreeMap<&'static str, u64>>,
    /// Health sweeps done (every engine asked, what each said handed to the job actors).
    sweeps: AtomicU64,
    /// Savepoint disposals, by result (`disposed`, `failed`).
    disposals: Mutex<BTreeMap<&'static str, u64>>,
}

/// What `/metrics` reads from elsewhere when scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Jobs per state.
    pub jobs_by_state: Vec<(JobState, u64)>,
    /// Jobs whose row in the store cannot be read whole ([`crate::store::Store::unreadable_jobs`]).
    pub jobs_unreadable: u64,
    /// The applied config commit (full id), once there is one.
    pub applied_commit: Option<String>,
    /// Store writes that failed and were carried on from ([`crate::store::Store::record`]).
    pub store_write_errors: u64,
    /// Store reads that failed and were carried on from ([`crate::store::Store::read_or_log`]).
    pub store_read_errors: u64,
    /// The alerter's counters.
    pub alerts: AlertStats,
    /// 1 once the first reconcile is done.
    pub ready: bool,
    /// Unmanaged jobs per cluster URL ([`crate::reconcile::unmanaged`]).
    pub unmanaged: Vec<(String, u64)>,
    /// Jobs per condition ([`crate::condition`]), every kind listed.
    pub job_problems: Vec<(crate::condition::ConditionKind, u64)>,
    /// True when this daemon leads ([`crate::ha::Leadership`]).
    pub leader: bool,
    /// The lease's epoch as this daemon last saw it (0 without `ha`).
    pub lease_epoch: i64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut m = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *m.entry(key).or_insert(0) += 1;
}

impl Metrics {
    /// The state folder's size, measured by a retention pass.
    pub fn set_state_bytes(&self, bytes: u64) {
        self.state_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A health sweep is done: every engine was asked and what each said was handed to the
    /// job actors.
    pub fn sweep_done(&self) {
        self.sweeps.fetch_add(1, Ordering::Relaxed);
    }

    /// Retention deleted `n` things of a kind (`runs`, `events`, `files`).
    pub fn pruned(&self, what: &'static str, n: u64) {
        if n > 0 {
            *lock(&self.pruned).entry(what).or_insert(0) += n;
        }
    }

    /// A savepoint disposal ended: `disposed` or `failed` (it is tried again at a later pass).
    pub fn disposal(&self, result: &'static str) {
        bump(&self.disposals, result);
    }

    /// A fetch of the config repo starts, for this reason (`webhook`, `poll`, ...).
    pub fn fetch_started(&self, reason: &'static str) {
        bump(&self.triggers, reason);
    }

    /// A fetch of the config repo ended; `took` is the whole sync (fetch and apply).
    pub fn fetch_done(&self, ok: bool, took: Duration) {
        if ok {
            self.fetches_ok.fetch_add(1, Ordering::Relaxed);
            self.reconcile.observe(took);
        } else {
            self.fetches_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A job recorded an event: counted by kind; `built`, `build_failed` and `restarted` also
    /// count as builds and restarts.
    pub fn job_event(&self, job: &str, kind: EventKind) {
        match kind {
            EventKind::Built => {
                self.builds_ok.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::BuildFailed => {
                self.builds_failed.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::Restarted => bump(&self.restarts, job.to_string()),
            _ => {}
        }
        bump(&self.events, kind.as_str().to_string());
    }

    /// A webhook arrived from `source` (`github`, `gitlab`) with this outcome (`fetch`,
    /// `ignored`, `unauthorized`, `malformed`, `busy`: refused while `http.hook_buffer` was
    /// taken by bodies not yet verified).
    pub fn webhook(&self, source: &'static str, outcome: &'static str) {
        bump(&self.webhooks, (source, outcome));
    }

    /// An HTTP connection was accepted and is served.
    pub fn http_opened(&self) {
        self.http_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A served HTTP connection ended.
    pub fn http_ended(&self) {
        self.http_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The listener closed an HTTP connection itself, for this reason (`over_cap`,
    /// `header_timeout`, `idle_timeout`).
    pub fn http_closed(&self, reason: &'static str) {
        bump(&self.http_closed, reason);
    }

    /// This daemon took the lease (`jobkeeper_takeovers_total`).
    pub fn took_over(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Config-repo fetches so far, `(ok, failed)`.
    pub fn fetches(&self) -> (u64, u64) {
        (
            self.fetches_ok.load(Ordering::Relaxed),
            self.fetches_failed.load(Ordering::Relaxed),
        )
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        self.render_state(&mut out, snap);
        self.render_repo(&mut out);
        self.render_histogram(&mut out);
        self.render_jobs(&mut out, snap);
        render_alerts(&mut out, snap.alerts);
        self.render_webhooks(&mut out);
        self.render_http(&mut out);
        out
    }

    /// The listener's connections: open now, and closed by the listener by reason.
    fn render_http(&self, o: &mut String) {
        family(
            o,
            "http_connections_open",
            "gauge",
            "HTTP connections open now.",
        );
        sample(
            o,
            "http_connections_open",
            &[],
            self.http_open.load(Ordering::Relaxed),
        );
        family(
            o,
            "http_connections_closed_total",
            "counter",
            "HTTP connections the listener closed itself, by reason (over_cap, header_timeout, idle_timeout).",
        );
        for (reason, n) in lock(&self.http_closed).iter() {
            sample(
                o,
                "http_connections_closed_total",
                &[("reason", reason)],
                *n,
            );
        }
    }

    /// Readiness, jobs by state, the applied commit.
    fn render_state(&self, o: &mut String, snap: &Snapshot) {
        family(
            o,
            "up",
            "gauge",
            "1 once the first config commit is applied, else 0",
        );
        sample(o, "up", &[], u64::from(snap.ready));

        family(
            o,
            "leader",
            "gauge",
            "1 when this daemon leads (always without `ha`), else 0",
        );
        sample(o, "leader", &[], u64::from(snap.leader));
        family(
            o,
            "lease_epoch",
            "gauge",
            "The leader lease's epoch as this daemon last saw it (0 without `ha`)",
        );
        sample(
            o,
            "lease_epoch",
            &[],
            u64::try_from(snap.lease_epoch).unwrap_or(0),
        );
        family(
            o,
            "takeovers_total",
            "counter",
            "Times this daemon took the leader lease",
        );
        sample(
            o,
            "takeovers_total",
            &[],
            self.takeovers.load(Ordering::Relaxed),
        );

        family(o, "jobs", "gauge", "Jobs by state.");
        for (state, n) in &snap.jobs_by_state {
            sample(o, "jobs", &[("state", state.as_str())], *n);
        }

        family(
            o,
            "jobs_unreadable",
            "gauge",
            "Jobs whose row in the store cannot be read whole (listed, marked unreadable).",
        );
        sample(o, "jobs_unreadable", &[], snap.jobs_unreadable);

        family(
            o,
            "job_problems",
            "gauge",
            "Jobs with a condition (invalid file, deploy failed, rolled back, ...), by condition.",
        );
        for (kind, n) in &snap.job_problems {
            sample(o, "job_problems", &[("problem", kind.as_str())], *n);
        }

        family(
            o,
            "applied_commit_info",
            "gauge",
            "The config commit applied last (value always 1).",
        );
        if let Some(c) = &snap.applied_commit {
            sample(o, "applied_commit_info", &[("commit", c)], 1);
        }

        family(
            o,
            "unmanaged_jobs",
            "gauge",
            "Jobs live on a managed cluster that no job file owns, by cluster.",
        );
        for (cluster, n) in &snap.unmanaged {
            sample(o, "unmanaged_jobs", &[("cluster", cluster)], *n);
        }
    }

    /// Config-repo fetches and what triggered them.
    fn render_repo(&self, o: &mut String) {
        let (ok, failed) = self.fetches();
        family(
            o,
            "git_fetches_total",
            "counter",
            "Config-repo fetches, by result.",
        );
        sample(o, "git_fetches_total", &[("result", "ok")], ok);
        sample(o, "git_fetches_total", &[("result", "failed")], failed);

        family(
            o,
            "fetch_triggers_total",
            "counter",
            "Config-repo fetches started, by what asked for them.",
        );
        for (reason, n) in lock(&self.triggers).iter() {
            sample(o, "fetch_triggers_total", &[("trigger", reason)], *n);
        }
    }

    /// Builds, restarts, job events and store write and read errors.
    fn render_jobs(&self, o: &mut String, snap: &Snapshot) {
        family(o, "builds_total", "counter", "Project builds, by result.");
        let b_ok = self.builds_ok.load(Ordering::Relaxed);
        let b_failed = self.builds_failed.load(Ordering::Relaxed);
        sample(o, "builds_total", &[("result", "ok")], b_ok);
        sample(o, "builds_total", &[("result", "failed")], b_failed);

        family(
            o,
            "restarts_total",
            "counter",
            "Job restarts after failures (the restart policy's), by job.",
        );
        for (job, n) in lock(&self.restarts).iter() {
            sample(o, "restarts_total", &[("job", job)], *n);
        }

        family(
            o,
            "health_sweeps_total",
            "counter",
            "Health sweeps done: every engine asked about its runs, what it said handed to the jobs.",
        );
        sample(
            o,
            "health_sweeps_total",
            &[],
            self.sweeps.load(Ordering::Relaxed),
        );

        family(o, "job_events_total", "counter", "Job events, by kind.");
        for (kind, n) in lock(&self.events).iter() {
            sample(o, "job_events_total", &[("event", kind)], *n);
        }

        family(
            o,
            "store_write_errors_total",
            "counter",
            "Store writes that failed; the daemon carried on (see docs/operations.md).",
        );
        sample(o, "store_write_errors_total", &[], snap.store_write_errors);

        family(
            o,
            "store_read_errors_total",
            "counter",
            "Store reads that failed; the daemon carried on without them (see docs/operations.md).",
        );
        sample(o, "store_read_errors_total", &[], snap.store_read_errors);

        family(
            o,
            "state_bytes",
            "gauge",
            "Size of the state folder (store, logs, builds, artifacts, mirrors) in bytes.",
        );
        let bytes = self.state_bytes.load(Ordering::Relaxed);
        sample(o, "state_bytes", &[], bytes);
        family(
            o,
            "pruned_total",
            "counter",
            "Runs, events and files deleted by retention, by kind.",
        );
        for what in ["runs", "events", "files"] {
            let n = lock(&self.pruned).get(what).copied().unwrap_or(0);
            sample(o, "pruned_total", &[("what", what)], n);
        }
        family(
            o,
            "savepoint_disposals_total",
            "counter",
            "Savepoints past their job's `savepoints.keep` disposed of, and disposals that failed (tried again).",
        );
        for result in ["disposed", "failed"] {
            let n = lock(&self.disposals).get(result).copied().unwrap_or(0);
            sample(o, "savepoint_disposals_total", &[("result", result)], n);
        }
    }

    /// Git webhooks by source and outcome.
    fn render_webhooks(&self, o: &mut String) {
        family(
            o,
            "webhooks_total",
            "counter",
            "Git webhooks received, by source and outcome.",
        );
        for ((source, outcome), n) in lock(&self.webhooks).iter() {
            sample(
                o,
                "webhooks_total",
                &[("source", source), ("outcome", outcome)],
                *n,
            );
        }
    }

    fn render_histogram(&self, o: &mut String) {
        let name = "reconcile_duration_seconds";
        family(
            o,
            name,
            "histogram",
            "Time to fetch the config repo and apply its tip (successful syncs).",
        );
        let h = &self.reconcile;
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let le = bound.to_string();
            sample(o, &format!("{name}_bucket"), &[("le", &le)], cumulative);
        }
        cumulative += h.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        sample(o, &format!("{name}_bucket"), &[("le", "+Inf")], cumulative);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "jobkeeper_{name}_sum {sum}");
        sample(o, &format!("{name}_count"), &[], cumulative);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Alert deliveries.
fn render_alerts(o: &mut String, a: AlertStats) {
    for (name, help, v) in [
        ("alerts_sent_total", "Alerts a channel accepted.", a.sent),
        (
            "alerts_failed_total",
            "Alerts given up on after every try.",
            a.failed,
        ),
        (
            "alert_tries_failed_total",
            "Alert delivery tries that failed (each retry counts).",
            a.failed_tries,
        ),
        (
            "alerts_dropped_total",
            "Events or alerts dropped because a queue was full.",
            a.dropped,
        ),
        (
            "alerts_folded_total",
            "Repeats folded into a later alert.",
            a.folded,
        ),
    ] {
        family(o, name, "counter", help);
        sample(o, name, &[], v);
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP jobkeeper_{name} {help}");
    let _ = writeln!(o, "# TYPE jobkeeper_{name} {kind}");
}

fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let _ = write!(o, "jobkeeper_{name}");
    if !labels.is_empty() {
        o.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(o, "{k}=\"{}\"", escape_label(v));
        }
        o.push('}');
    }
    let _ = writeln!(o, " {value}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_escaped_labels() {
        let m = Metrics::default();
        m.fetch_started("webhook");
        m.fetch_done(true, Duration::from_millis(3));
        m.fetch_done(false, Duration::ZERO);
        m.job_event("a\"b", EventKind::Restarted);
        m.job_event("a", EventKind::Built);
        m.sweep_done();
        let text = m.render(&Snapshot {
            jobs_by_state: vec![(JobState::Running, 2)],
            jobs_unreadable: 1,
            applied_commit: Some("abc".into()),
            store_write_errors: 3,
            store_read_errors: 5,
            alerts: AlertStats {
                sent: 4,
                ..AlertStats::default()
            },
            ready: true,
            unmanaged: vec![("http://127.0.0.1:8081".into(), 2)],
            job_problems: vec![(crate::condition::ConditionKind::Invalid, 3)],
            leader: true,
            lease_epoch: 3,
        });
        for line in [
            "jobkeeper_job_problems{problem=\"invalid\"} 3",
            "jobkeeper_jobs{state=\"running\"} 2",
            "jobkeeper_jobs_unreadable 1",
            "jobkeeper_leader 1",
            "jobkeeper_lease_epoch 3",
            "jobkeeper_takeovers_total 0",
            "jobkeeper_applied_commit_info{commit=\"abc\"} 1",
            "jobkeeper_unmanaged_jobs{cluster=\"http://127.0.0.1:8081\"} 2",
            "jobkeeper_git_fetches_total{result=\"ok\"} 1",
            "jobkeeper_git_fetches_total{result=\"failed\"} 1",
            "jobkeeper_fetch_triggers_total{trigger=\"webhook\"} 1",
            "jobkeeper_restarts_total{job=\"a\\\"b\"} 1",
            "jobkeeper_builds_total{result=\"ok\"} 1",
            "jobkeeper_health_sweeps_total 1",
            "jobkeeper_alerts_sent_total 4",
            "jobkeeper_store_write_errors_total 3",
            "jobkeeper_store_read_errors_total 5",
            "jobkeeper_reconcile_duration_seconds_bucket{le=\"0.001\"} 0",
            "jobkeeper_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
            "jobkeeper_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1",
            "jobkeeper_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
