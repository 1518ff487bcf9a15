//! Which request each RUNNING application's JobManager gets on a status sweep: at most one, and
//! none when its job needs nothing from it on that sweep (pure; the engine makes the request
//! and records what it read in the application's [`Watch`]).
//!
//! What a run needs from its JobManager, and when:
//! - **Health figures** (`GET /jobs/{id}/metrics`), every sweep, only for a job with health
//!   rules: the engine's health call reads them (with the newest checkpoint in the same
//!   answer), not the status sweep. A job is taken to have health rules while the health call
//!   asked for its run on the previous sweep (the sweep asks only for those).
//! - **The task count** (`GET /jobs/overview`) for the rescale watch: on the sweep after the
//!   run is first seen, then once every [`TASKS_EVERY`] sweeps, each application on its own
//!   sweep of the cycle (so 1,000 applications are not all asked on the same one). On that
//!   sweep a job with health rules gets no figures.
//! - **The newest checkpoint** (`GET /jobs/{id}/checkpoints`), kept for a restart after the
//!   application's AM died (its JobManager then gone too, see [`super::checkpoints`]). It is
//!   read once; after that only when a newer one can exist:
//!   - never again once the kept one is a `file:` `…/chk-N`: a restart takes the newest
//!     completed `chk-M` of that folder, listed then;
//!   - otherwise once the next periodic checkpoint can have been triggered: Flink triggers
//!     them at a fixed rate of the job's interval (`GET /jobs/{id}/checkpoints/config`, read
//!     once) and never sooner, so no checkpoint newer than the kept one can complete before
//!     the latest trigger plus the interval; every sweep while one is in progress or none was
//!     ever triggered; and at least every [`CHECKPOINT_MAX_AGE`] (a checkpoint or savepoint
//!     triggered by hand, clocks that disagree).

/// A RUNNING application's task count is read once every this many sweeps.
pub const TASKS_EVERY: u64 = 6;
/// The newest checkpoint kept for an application is never older than this (ms): read again
/// after it whatever the schedule says.
pub const CHECKPOINT_MAX_AGE: i64 = 5 * 60 * 1000;
/// An interval at least this long (Flink answers `Long.MAX_VALUE`) means no periodic
/// checkpoints.
const NO_PERIODIC: i64 = 1 << 62;

/// One request to an application's JobManager on a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Its task count (`GET /jobs/overview`).
    Tasks,
    /// Its newest checkpoint (`GET /jobs/{id}/checkpoints`).
    Checkpoint,
    /// Its checkpoint interval (`GET /jobs/{id}/checkpoints/config`).
    Interval,
}

/// A job's checkpoint interval, as its JobManager said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interval {
    /// Not read yet (or the read failed).
    #[default]
    Unknown,
    /// Periodic checkpoints every this many ms.
    Every(i64),
    /// No periodic checkpoints (checkpointing disabled).
    Never,
}

/// What the latest read of an application's newest checkpoint said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// When it was read (ms since the epoch, this host's clock).
    pub at_ms: i64,
    /// When the latest periodic checkpoint was triggered (the JobManager's clock), when one was.
    pub last_trigger_ms: Option<i64>,
    /// A newer one may complete any moment: one was in progress, or the answer did not say
    /// (the health figures carry the checkpoint, not its trigger).
    pub open: bool,
}

/// What the engine knows of one RUNNING application's JobManager reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// The sweep whose request it got last.
    pub asked: Option<u64>,
    /// The sweep whose health call asked for its figures last.
    pub health: Option<u64>,
    /// The sweep its task count was read last.
    pub tasks: Option<u64>,
    /// Its job's checkpoint interval.
    pub interval: Interval,
    /// The latest read of its newest checkpoint.
    pub checked: Option<Checked>,
    /// Its sweep in each cycle of [`TASKS_EVERY`] (from its application id).
    pub phase: u64,
}

impl Watch {
    /// A watch of application `id`, nothing read yet.
    pub fn new(id: &str) -> Watch {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        Watch {
            phase: h.finish() % TASKS_EVERY,
            ..Watch::default()
        }
    }

    /// Whether its job has health rules, as far as the previous sweep showed.
    pub fn checks_health(&self, sweep: u64) -> bool {
        self.health.is_some_and(|h| h + 1 >= sweep)
    }
}

/// The request application `w` gets on status sweep `sweep` at `now_ms`, if any; `followable`:
/// its kept checkpoint is a `file:` `chk-N` whose folder a restart lists.
pub fn plan(w: &Watch, sweep: u64, now_ms: i64, followable: bool) -> Option<Read> {
    if w.asked == Some(sweep) {
        return None;
    }
    if w.tasks.is_none() || (sweep + w.phase).is_multiple_of(TASKS_EVERY) {
        return Some(Read::Tasks);
    }
    if w.checks_health(sweep) {
        return None; // its health call reads the figures, and the checkpoint with them
    }
    let Some(c) = w.checked else {
        return Some(Read::Checkpoint);
    };
    if followable {
        return None;
    }
    if w.interval == Interval::Unknown {
        return Some(Read::Interval);
    }
    (now_ms >= checkpoint_due(&c, w.interval)).then_some(Read::Checkpoint)
}

/// When a checkpoint newer than the one `c` read can first have completed (ms since the
/// epoch), so its read is due.
pub fn checkpoint_due(c: &Checked, interval: Interval) -> i64 {
    let cap = c.at_ms.saturating_add(CHECKPOINT_MAX_AGE);
    if c.open {
        return c.at_ms;
    }
    match (interval, c.last_trigger_ms) {
        (Interval::Every(i), Some(t)) => t.saturating_add(i).min(cap),
        (Interval::Never, _) => cap,
        // None triggered yet, or the interval not known: every sweep.
        (Interval::Every(_) | Interval::Unknown, _) => c.at_ms,
    }
}

/// The interval of an answer of `GET /jobs/{id}/checkpoints/config` (`None`: Flink answered
/// 404, checkpointing is not enabled).
pub fn interval_of(config: Option<&serde_json::Value>) -> Interval {
    let Some(config) = config else {
        return Interval::Never;
    };
    match config["interval"].as_i64() {
        Some(i) if i <= 0 || i >= NO_PERIODIC => Interval::Never,
        Some(i) => Interval::Every(i),
        None => Interval::Unknown,
    }
}

/// What an answer of `GET /jobs/{id}/checkpoints` read at `now_ms` says of the next one: the
/// latest trigger of a periodic checkpoint (completed, failed or in progress) and whether one is
/// in progress.
pub fn checked_of(stats: &serde_json::Value, now_ms: i64) -> Checked {
    let periodic = |c: &serde_json::Value| c["is_savepoint"] != true;
    let latest = &stats["latest"];
    let history = stats["history"].as_array().into_iter().flatten();
    let last_trigger_ms = [&latest["completed"], &latest["failed"]]
        .into_iter()
        .chain(history)
        .filter(|c| periodic(c))
        .filter_map(|c| c["trigger_timestamp"].as_i64())
        .filter(|t| *t > 0)
        .max();
    Checked {
        at_ms: now_ms,
        last_trigger_ms,
        open: stats["counts"]["in_progress"].as_u64().unwrap_or(0) > 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A watch whose first reads are done (task count on sweep 1, checkpoint, interval).
    fn settled(interval: Interval, last_trigger_ms: Option<i64>) -> Watch {
        Watch {
            asked: Some(3),
            health: None,
            tasks: Some(1),
            interval,
            checked: Some(Checked {
                at_ms: 1_000_000,
                last_trigger_ms,
                open: false,
            }),
            phase: 0,
        }
    }

    #[test]
    fn a_new_application_gets_its_task_count_then_its_checkpoint_then_its_interval() {
        let mut w = Watch::new("application_1_0001");
        w.phase = 1; // its task-count sweeps: 5, 11, …
        assert_eq!(plan(&w, 1, 0, false), Some(Read::Tasks));
        w.tasks = Some(1);
        w.asked = Some(1);
        assert_eq!(plan(&w, 1, 0, false), None, "one request a sweep");
        assert_eq!(plan(&w, 2, 0, false), Some(Read::Checkpoint));
        w.checked = Some(Checked {
            at_ms: 0,
            last_trigger_ms: Some(0),
            open: false,
        });
        assert_eq!(plan(&w, 3, 0, false), Some(Read::Interval));
        assert_eq!(
            plan(&w, 3, 0, true),
            None,
            "a followable checkpoint needs no interval"
        );
        assert_eq!(plan(&w, 5, 0, true), Some(Read::Tasks));
    }

    #[test]
    fn a_checkpoint_is_read_again_only_once_a_newer_one_can_exist() {
        let w = settled(Interval::Every(60_000), Some(990_000));
        assert_eq!(
            plan(&w, 4, 1_040_000, false),
            None,
            "next trigger at 1,050,000"
        );
        assert_eq!(plan(&w, 4, 1_050_000, false), Some(Read::Checkpoint));
        assert_eq!(
            plan(&w, 4, 1_050_000, true),
            None,
            "its folder is listed instead"
        );
        // In progress: every sweep until it completes.
        let mut open = w.clone();
        open.checked.as_mut().unwrap().open = true;
        assert_eq!(plan(&open, 4, 1_000_001, false), Some(Read::Checkpoint));
        // None triggered yet: every sweep.
        let none = settled(Interval::Every(60_000), None);
        assert_eq!(plan(&none, 4, 1_000_001, false), Some(Read::Checkpoint));
        // No periodic checkpoints, or an interval longer than the cap: the cap.
        for w in [
            settled(Interval::Never, None),
            settled(Interval::Every(3_600_000), Some(1_000_000)),
        ] {
            assert_eq!(plan(&w, 4, 1_000_000 + CHECKPOINT_MAX_AGE - 1, false), None);
            assert_eq!(
                plan(&w, 4, 1_000_000 + CHECKPOINT_MAX_AGE, false),
                Some(Read::Checkpoint)
            );
        }
    }

    #[test]
    fn a_job_with_health_rules_is_left_to_its_health_call_but_its_task_count_is_read() {
        let mut w = settled(Interval::Every(1_000), Some(0));
        w.health = Some(3);
        assert_eq!(plan(&w, 4, 10_000_000, false), None);
        assert_eq!(plan(&w, 6, 10_000_000, false), Some(Read::Tasks));
        // Its health rules gone (not asked for on sweep 4): the status sweep reads it again.
        assert_eq!(plan(&w, 5, 10_000_000, false), Some(Read::Checkpoint));
    }

    #[test]
    fn task_counts_are_read_once_a_cycle_spread_over_its_sweeps() {
        let ids: Vec<String> = (0..600)
            .map(|i| format!("application_1700000000000_{i:04}"))
            .collect();
        let mut per_sweep = [0; TASKS_EVERY as usize];
        for id in &ids {
            let mut w = Watch::new(id);
            w.tasks = Some(0);
            w.checked = Some(Checked {
                at_ms: 0,
                last_trigger_ms: None,
                open: false,
            });
            w.interval = Interval::Never;
            let reads: Vec<u64> = (1..=TASKS_EVERY)
                .filter(|s| plan(&w, *s, 0, false) == Some(Read::Tasks))
                .collect();
            assert_eq!(reads.len(), 1, "{id}: {reads:?}");
            per_sweep[(reads[0] - 1) as usize] += 1;
        }
        assert!(per_sweep.iter().all(|n| *n > 50), "{per_sweep:?}");
    }

    #[test]
    fn the_interval_and_the_latest_trigger_are_read_from_flink_s_answers() {
        assert_eq!(
            interval_of(Some(&json!({"interval": 180000}))),
            Interval::Every(180_000)
        );
        assert_eq!(
            interval_of(Some(&json!({"interval": i64::MAX}))),
            Interval::Never
        );
        assert_eq!(interval_of(None), Interval::Never);
        assert_eq!(interval_of(Some(&json!("html"))), Interval::Unknown);
        // Shape of Flink 1.20.3 / 2.3.0, shortened: a savepoint's trigger does not count.
        let stats = json!({
            "counts": {"in_progress": 0, "completed": 3},
            "latest": {
                "completed": {"id": 3, "is_savepoint": false, "trigger_timestamp": 3000},
                "savepoint": {"id": 4, "is_savepoint": true, "trigger_timestamp": 4000},
                "failed": {"id": 2, "is_savepoint": false, "trigger_timestamp": 2000}
            },
            "history": [
                {"id": 4, "is_savepoint": true, "trigger_timestamp": 4000},
                {"id": 3, "is_savepoint": false, "trigger_timestamp": 3000}
            ]
        });
        assert_eq!(
            checked_of(&stats, 9),
            Checked {
                at_ms: 9,
                last_trigger_ms: Some(3000),
                open: false
            }
        );
        let open = json!({"counts": {"in_progress": 1}, "latest": {"completed": null}, "history": [
            {"id": 1, "is_savepoint": false, "trigger_timestamp": 5000, "status": "IN_PROGRESS"}
        ]});
        assert_eq!(
            checked_of(&open, 9),
            Checked {
                at_ms: 9,
                last_trigger_ms: Some(5000),
                open: true
            }
        );
    }
}
