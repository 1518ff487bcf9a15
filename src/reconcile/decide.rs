//! The decisions of a job's actor, as pure functions over plain data.
//!
//! [`decide`] looks at what the config repo wants ([`Desired`]) and what the actor knows
//! ([`Observed`]) and names the one [`Action`] to carry out; [`error_policy`] says what follows
//! when a step of that action fails ([`StepError`], classed by what happens next, as flux's
//! source-controller does); [`Timers::due`] says which of the actor's timers fired. None of them
//! touches git, an engine or the store: the actor (see [`super::actor`]) carries out what they
//! say, and the tables in this file's tests pin every situation.

use std::time::Duration;

use tokio::time::Instant;

use crate::build::Artifact;
use crate::condition::Stage;
use crate::event::EventKind;
use crate::plan;
use crate::spec::JobSpec;
use crate::store::JobState;

/// The version of a job that was deployed: its spec, the spec's hash and its artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    /// The job file's spec.
    pub spec: JobSpec,
    /// [`super::spec_hash`] of the spec.
    pub hash: String,
    /// The built artifact, for jobs with a project.
    pub artifact: Option<Artifact>,
    /// The config commit that deployed it.
    pub commit: Option<String>,
}

impl Deployed {
    /// The project commit its artifact was built from, for jobs with a project.
    pub fn project_commit(&self) -> Option<&str> {
        self.spec.project.as_ref()?;
        self.artifact.as_ref().map(|a| a.commit.as_str())
    }
}

impl Deployed {
    /// A batch job (it has a `schedule`).
    pub fn is_batch(&self) -> bool {
        self.spec.is_batch()
    }

    /// A service job that is not suspended: it must always run.
    pub fn is_live_service(&self) -> bool {
        !self.spec.is_batch() && !self.spec.suspend
    }
}

/// What the config repo wants for the job (the store's desired row).
#[derive(Debug, Clone, Copy)]
pub enum Desired<'a> {
    /// A valid version of the job file.
    Spec {
        /// Its spec.
        spec: &'a JobSpec,
        /// Its hash.
        hash: &'a str,
    },
    /// The job file was removed.
    Removed,
}

/// What the job's actor knows.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The deployed version.
    pub applied: Option<&'a Deployed>,
    /// How many runs are live.
    pub live: usize,
    /// The hash of a version whose build or deploy failed (not tried again until it changes).
    pub stalled: Option<&'a str>,
    /// The hash of a version a rollback refused (not tried again until it changes).
    pub refused: Option<&'a str>,
    /// The restart policy gave up.
    pub gave_up: bool,
    /// A restart is scheduled: how long until it starts the run.
    pub restart_in: Option<Duration>,
    /// The job waits on the host (a full disk, file descriptors, the store): how long until
    /// it tries again.
    pub host_in: Option<Duration>,
    /// A batch job's next cron time is known.
    pub scheduled: bool,
    /// The state the store shows.
    pub state: JobState,
    /// A live run is on a cluster the job's env no longer names (its URL changed), and that
    /// cluster did not refuse the job already.
    pub elsewhere: bool,
}

/// What the actor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop every run (with a savepoint where the engine keeps state) and forget the job.
    Remove,
    /// `suspend: true`: stop every run and record the version.
    Suspend {
        /// The project changed while suspended: the deployed artifact is not this version's.
        drop_artifact: bool,
        /// The version changed (the `suspended` event is raised once).
        changed: bool,
        /// The store does not show `suspended` yet.
        set_state: bool,
    },
    /// The new version is stalled; the previous service version is not running: start it.
    StartPrevious,
    /// Build (if needed) and deploy the new version.
    Deploy,
    /// The same version runs on a cluster its env no longer names: stop it there with a
    /// savepoint and start it on the env's cluster from it.
    Move,
    /// The same version with nothing live: start it (after a daemon restart, or the run ended).
    Start,
    /// A batch job without its next cron time: schedule it.
    Schedule {
        /// Show `pending` with "waiting for its schedule".
        show_pending: bool,
    },
    /// Nothing to do.
    Nothing,
}

/// Why a step could not finish, classed by what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The new version cannot work as it is (invalid, did not build, refused): nothing is tried
    /// again until the job file (or, with `follow`, the branch) changes.
    #[error("{reason}")]
    Stalled {
        /// `build_failed` or `deploy_failed`.
        kind: EventKind,
        /// What went wrong, with the log tail.
        reason: String,
    },
    /// A cluster did not answer: the step is tried again after `after`.
    #[error("waiting {after:?}")]
    Waiting {
        /// When to look again.
        after: Duration,
    },
    /// The daemon's own host ran out of something (a full disk, file descriptors, the store):
    /// the job waits on the host, without spending its restart attempts.
    #[error("waiting on the host: {fault}")]
    Host {
        /// What ran out.
        fault: crate::host::HostFault,
    },
    /// A run could not start or ended badly: the restart policy decides.
    #[error("{reason}")]
    Transient {
        /// Why.
        reason: String,
        /// How long the run was up (zero when it never started).
        ran_for: Duration,
    },
    /// The daemon is shutting down: the step is abandoned, nothing is recorded.
    #[error("daemon shutting down")]
    Cancelled,
}

/// What follows a failed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Raise `kind` and record the version as failed at `stage` (typed, in the store's
    /// `versions` row): not tried again until the file changes.
    Stall {
        /// The event to raise.
        kind: EventKind,
        /// Where it failed.
        stage: Stage,
    },
    /// Converge again at this time.
    RetryAfter(Duration),
    /// Wait on the host: try again after the host backoff, restart attempts unspent.
    WaitOnHost,
    /// Hand the failure to the restart policy.
    Backoff,
    /// Nothing: the daemon is stopping.
    Nothing,
}

/// The one place a failed step's consequence is decided.
pub fn error_policy(err: &StepError) -> Then {
    match err {
        StepError::Stalled { kind, .. } => Then::Stall {
            kind: *kind,
            stage: if *kind == EventKind::BuildFailed {
                Stage::Build
            } else {
                Stage::Deploy
            },
        },
        StepError::Waiting { after } => Then::RetryAfter(*after),
        StepError::Host { .. } => Then::WaitOnHost,
        StepError::Transient { .. } => Then::Backoff,
        StepError::Cancelled => Then::Nothing,
    }
}

/// The one action that brings the job closer to what the config repo wants, or why none can
/// be taken now: a run the job needs waits for its pending restart
/// ([`StepError::Waiting`] until then).
pub fn decide(desired: &Desired<'_>, seen: &Observed<'_>) -> Result<Action, StepError> {
    let &Desired::Spec { spec, hash } = desired else {
        return Ok(Action::Remove);
    };
    let changed = seen.applied.map(|a| a.hash.as_str()) != Some(hash);
    if spec.suspend {
        return Ok(Action::Suspend {
            drop_artifact: seen
                .applied
                .is_some_and(|a| plan::diff_specs(&a.spec, spec).0 == plan::Action::Rebuild),
            changed,
            set_state: changed || seen.state != JobState::Suspended,
        });
    }
    if changed {
        if seen.stalled == Some(hash) || seen.refused == Some(hash) {
            let previous_service = seen.applied.is_some_and(Deployed::is_live_service);
            if !previous_service || seen.live > 0 {
                return Ok(Action::Nothing);
            }
            return start_unless_waiting(seen, Action::StartPrevious);
        }
        return Ok(Action::Deploy);
    }
    if !spec.is_batch() {
        // A batch run left on the old cluster ends there; its next run starts on the new one.
        if seen.elsewhere && seen.live > 0 {
            return Ok(Action::Move);
        }
        if seen.live > 0 || seen.gave_up {
            return Ok(Action::Nothing);
        }
        return start_unless_waiting(seen, Action::Start);
    }
    // A batch job that gave up is not scheduled until a new commit or an operator's restart.
    if seen.scheduled || seen.gave_up {
        return Ok(Action::Nothing);
    }
    Ok(Action::Schedule {
        show_pending: seen.live == 0 && seen.state == JobState::Pending,
    })
}

/// `start`, or waiting for the pending restart or the host's next try, which start the run
/// themselves.
fn start_unless_waiting(seen: &Observed<'_>, start: Action) -> Result<Action, StepError> {
    match seen.restart_in.or(seen.host_in) {
        Some(after) => Err(StepError::Waiting { after }),
        None => Ok(start),
    }
}

/// What the actor knows when a run of a service job fails, its restart policy gives up, or it
/// turns unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct BadRun {
    /// `rollback` of the running version.
    pub rollback: bool,
    /// The running version was deployed by a commit and has not run for `ready_within` yet.
    pub on_probation: bool,
    /// The version before it is known (a new job has none).
    pub has_previous: bool,
}

/// What follows a bad run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBadRun {
    /// The previous version starts again; the bad one is refused until a new commit.
    RollBack,
    /// The restart policy decides (restart after a backoff, or give up).
    RestartPolicy,
}

/// The one place that says whether a bad run is rolled back.
pub fn after_bad_run(bad: BadRun) -> AfterBadRun {
    if bad.rollback && bad.on_probation && bad.has_previous {
        AfterBadRun::RollBack
    } else {
        AfterBadRun::RestartPolicy
    }
}

/// The newest run of a job as the store recorded it, for [`unfinished_rollback`].
#[derive(Debug, Clone, Copy)]
pub struct LastRun<'a> {
    /// The spec hash of the version it ran.
    pub spec_hash: &'a str,
    /// It ended `failed` (a failure, or a stop of an unhealthy run).
    pub failed: bool,
    /// When it ended (ms since the epoch), if it did.
    pub ended_ms: Option<i64>,
}

/// Whether a previous daemon recorded a bad run of the deployed version (hash `applied`) and
/// was stopped before it recorded the rollback that run called for: nothing of the job runs,
/// its newest run is the deployed version's and ended `failed` while that version was on
/// probation (until `probation_until`), and [`after_bad_run`] said then to roll back. The
/// rollback is carried out at start, so the bad version is never started again.
pub fn unfinished_rollback(
    applied: &str,
    live: usize,
    last: Option<LastRun<'_>>,
    rollback: bool,
    probation_until: Option<i64>,
    has_previous: bool,
) -> bool {
    let Some(last) = last else {
        return false;
    };
    let (Some(ended), Some(until)) = (last.ended_ms, probation_until) else {
        return false;
    };
    let bad = BadRun {
        rollback,
        on_probation: ended <= until,
        has_previous,
    };
    live == 0
        && last.failed
        && last.spec_hash == applied
        && after_bad_run(bad) == AfterBadRun::RollBack
}

/// A live run's restart figure as one sweep saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSample {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The engine's restart count of the run then.
    pub restarts: u64,
}

/// Why a RUNNING run is unhealthy, or `None` when it is healthy. `facts` are the engine's
/// figures now (`now_ms`); `history` the samples of earlier sweeps of the same run, oldest
/// first. Restarts are counted from the engine's own figure, so a restart between two sweeps
/// counts: the restarts within the window are the figure now less the figure at the window's
/// start (zero when the run started within the window; the oldest sample when the daemon has
/// watched the run for less than the window).
pub fn unhealthy(
    guard: &crate::spec::Guard,
    facts: &crate::engine::HealthFacts,
    history: &[RestartSample],
    now_ms: i64,
) -> Option<String> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let show = |m: i64| humantime::format_duration(Duration::from_secs(m.max(0) as u64 / 1000));
    if let Some(limit) = guard.restarts {
        let start = now_ms.saturating_sub(ms(limit.window));
        let baseline = if facts.started_ms >= start {
            0
        } else {
            history
                .iter()
                .rev()
                .find(|s| s.at_ms <= start)
                .or(history.first())
                .map_or(facts.restarts, |s| s.restarts)
        };
        let n = facts.restarts.saturating_sub(baseline);
        if n >= u64::from(limit.count) {
            return Some(format!(
                "restarted {n} times by its engine within {} (health.restarts: {} within {})",
                humantime::format_duration(limit.window),
                limit.count,
                humantime::format_duration(limit.window),
            ));
        }
    }
    if let Some(age) = guard.checkpoint_age
        && facts.checkpoints
    {
        let since = facts.last_checkpoint_ms.unwrap_or(facts.started_ms);
        let old = now_ms.saturating_sub(since);
        if old > ms(age) {
            let what = match facts.last_checkpoint_ms {
                Some(_) => format!("latest completed checkpoint {} ago", show(old)),
                None => format!(
                    "no checkpoint completed in the {} since it started",
                    show(old)
                ),
            };
            return Some(format!(
                "{what}, more than health.checkpoint_age {}",
                humantime::format_duration(age)
            ));
        }
    }
    None
}

/// The times an actor waits for; the earliest is its next wake-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    /// Look again at a cluster that did not answer.
    pub retry: Option<Instant>,
    /// A failed run is started again.
    pub restart: Option<Instant>,
    /// A restarted service run that is still up then has `recovered`.
    pub recover: Option<Instant>,
    /// A batch job's next cron time.
    pub fire: Option<Instant>,
    /// The earliest timeout of a live batch run.
    pub timeout: Option<Instant>,
    /// Try again what waits on the host.
    pub host: Option<Instant>,
}

/// The timers that fired, in the order the actor handles them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Look again at the cluster.
    pub retry: bool,
    /// Some batch run is over its timeout.
    pub timeout: bool,
    /// Check the restarted run recovered.
    pub recover: bool,
    /// Start the failed run again.
    pub restart: bool,
    /// Start the scheduled run.
    pub fire: bool,
    /// Try again what waits on the host.
    pub host: bool,
}

impl Timers {
    /// The earliest time set.
    pub fn next(&self) -> Option<Instant> {
        [
            self.retry,
            self.restart,
            self.recover,
            self.fire,
            self.timeout,
            self.host,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Which timers have fired at `now`.
    pub fn due(&self, now: Instant) -> Due {
        let fired = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        Due {
            retry: fired(self.retry),
            timeout: fired(self.timeout),
            recover: fired(self.recover),
            restart: fired(self.restart),
            fire: fired(self.fire),
            host: fired(self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;

    fn spec(yaml: &str) -> JobSpec {
        crate::spec::parse_job("t.yaml", yaml.as_bytes(), crate::spec::Context::default()).unwrap()
    }

    fn deployed(s: &JobSpec, hash: &str) -> Deployed {
        Deployed {
            spec: s.clone(),
            hash: hash.into(),
            artifact: None,
            commit: None,
        }
    }

    fn seen(applied: Option<&Deployed>) -> Observed<'_> {
        Observed {
            applied,
            live: 0,
            stalled: None,
            refused: None,
            gave_up: false,
            restart_in: None,
            host_in: None,
            scheduled: false,
            state: JobState::Pending,
            elsewhere: false,
        }
    }

    #[test]
    fn the_action_of_each_situation() {
        let service = spec("env: dev\nparams: {command: [sleep, '9']}\n");
        let batch = spec("env: dev\nschedule: '* * * * *'\nparams: {command: [true]}\n");
        let suspended = spec("env: dev\nsuspend: true\nparams: {command: [sleep, '9']}\n");
        let v1 = deployed(&service, "h1");
        let b1 = deployed(&batch, "b1");
        let s1 = deployed(&suspended, "s1");
        let want = |spec, hash| Desired::Spec { spec, hash };

        let waiting = |secs| {
            Err(StepError::Waiting {
                after: Duration::from_secs(secs),
            })
        };
        let rows: Vec<(&str, Desired<'_>, Observed<'_>, Result<Action, StepError>)> = vec![
            (
                "file removed",
                Desired::Removed,
                seen(Some(&v1)),
                Ok(Action::Remove),
            ),
            (
                "new job",
                want(&service, "h1"),
                seen(None),
                Ok(Action::Deploy),
            ),
            (
                "changed job",
                want(&service, "h2"),
                seen(Some(&v1)),
                Ok(Action::Deploy),
            ),
            (
                "same version, nothing live",
                want(&service, "h1"),
                seen(Some(&v1)),
                Ok(Action::Start),
            ),
            (
                "same version, running",
                want(&service, "h1"),
                Observed {
                    live: 1,
                    ..seen(Some(&v1))
                },
                Ok(Action::Nothing),
            ),
            (
                "same version, running on the env's former cluster",
                want(&service, "h1"),
                Observed {
                    live: 1,
                    elsewhere: true,
                    ..seen(Some(&v1))
                },
                Ok(Action::Move),
            ),
            (
                "changed version on the former cluster: the deploy moves it",
                want(&service, "h2"),
                Observed {
                    live: 1,
                    elsewhere: true,
                    ..seen(Some(&v1))
                },
                Ok(Action::Deploy),
            ),
            (
                "same version, gave up",
                want(&service, "h1"),
                Observed {
                    gave_up: true,
                    ..seen(Some(&v1))
                },
                Ok(Action::Nothing),
            ),
            (
                "same version, restart pending: waits for it",
                want(&service, "h1"),
                Observed {
                    restart_in: Some(Duration::from_secs(5)),
                    ..seen(Some(&v1))
                },
                waiting(5),
            ),
            (
                "stalled new version, previous down",
                want(&service, "h2"),
                Observed {
                    stalled: Some("h2"),
                    ..seen(Some(&v1))
                },
                Ok(Action::StartPrevious),
            ),
            (
                "stalled new version, previous running",
                want(&service, "h2"),
                Observed {
                    stalled: Some("h2"),
                    live: 1,
                    ..seen(Some(&v1))
                },
                Ok(Action::Nothing),
            ),
            (
                "stalled new version, previous waits for a restart",
                want(&service, "h2"),
                Observed {
                    stalled: Some("h2"),
                    restart_in: Some(Duration::from_secs(7)),
                    ..seen(Some(&v1))
                },
                waiting(7),
            ),
            (
                "stalled new job, nothing before",
                want(&service, "h2"),
                Observed {
                    stalled: Some("h2"),
                    ..seen(None)
                },
                Ok(Action::Nothing),
            ),
            (
                "stalled new version, previous was a batch job",
                want(&service, "h2"),
                Observed {
                    stalled: Some("h2"),
                    ..seen(Some(&b1))
                },
                Ok(Action::Nothing),
            ),
            (
                "a stall of an older version does not hold a newer one",
                want(&service, "h3"),
                Observed {
                    stalled: Some("h2"),
                    ..seen(Some(&v1))
                },
                Ok(Action::Deploy),
            ),
            (
                "a version a rollback refused, previous down",
                want(&service, "h2"),
                Observed {
                    refused: Some("h2"),
                    ..seen(Some(&v1))
                },
                Ok(Action::StartPrevious),
            ),
            (
                "a version a rollback refused, previous running",
                want(&service, "h2"),
                Observed {
                    refused: Some("h2"),
                    live: 1,
                    state: JobState::RolledBack,
                    ..seen(Some(&v1))
                },
                Ok(Action::Nothing),
            ),
            (
                "a new commit after a rollback is deployed",
                want(&service, "h3"),
                Observed {
                    refused: Some("h2"),
                    live: 1,
                    ..seen(Some(&v1))
                },
                Ok(Action::Deploy),
            ),
            (
                "batch job without its next time",
                want(&batch, "b1"),
                seen(Some(&b1)),
                Ok(Action::Schedule { show_pending: true }),
            ),
            (
                "batch job without its next time, a run live",
                want(&batch, "b1"),
                Observed {
                    live: 1,
                    state: JobState::Running,
                    ..seen(Some(&b1))
                },
                Ok(Action::Schedule {
                    show_pending: false,
                }),
            ),
            (
                "batch run on the env's former cluster: it ends there",
                want(&batch, "b1"),
                Observed {
                    live: 1,
                    elsewhere: true,
                    scheduled: true,
                    state: JobState::Running,
                    ..seen(Some(&b1))
                },
                Ok(Action::Nothing),
            ),
            (
                "batch job scheduled",
                want(&batch, "b1"),
                Observed {
                    scheduled: true,
                    ..seen(Some(&b1))
                },
                Ok(Action::Nothing),
            ),
            (
                "batch job that gave up: not scheduled",
                want(&batch, "b1"),
                Observed {
                    gave_up: true,
                    ..seen(Some(&b1))
                },
                Ok(Action::Nothing),
            ),
            (
                "batch job that gave up, changed: deployed (and scheduled)",
                want(&batch, "b2"),
                Observed {
                    gave_up: true,
                    ..seen(Some(&b1))
                },
                Ok(Action::Deploy),
            ),
            (
                "suspended",
                want(&suspended, "s1"),
                Observed {
                    live: 1,
                    ..seen(Some(&v1))
                },
                Ok(Action::Suspend {
                    drop_artifact: false,
                    changed: true,
                    set_state: true,
                }),
            ),
            (
                "suspended, seen again",
                want(&suspended, "s1"),
                Observed {
                    state: JobState::Suspended,
                    ..seen(Some(&s1))
                },
                Ok(Action::Suspend {
                    drop_artifact: false,
                    changed: false,
                    set_state: false,
                }),
            ),
        ];
        for (situation, desired, observed, action) in rows {
            assert_eq!(decide(&desired, &observed), action, "{situation}");
        }
    }

    #[test]
    fn a_project_change_while_suspended_drops_the_artifact() {
        let v1 = spec(
            "env: dev\nproject: {repo: ., build: make, artifact: a.jar}\nparams: {command: [x]}\n",
        );
        let v2 = spec(
            "env: dev\nsuspend: true\nproject: {repo: ., build: make -j2, artifact: a.jar}\n\
             params: {command: [x]}\n",
        );
        let d = deployed(&v1, "h1");
        assert_eq!(
            decide(
                &Desired::Spec {
                    spec: &v2,
                    hash: "h2"
                },
                &seen(Some(&d))
            ),
            Ok(Action::Suspend {
                drop_artifact: true,
                changed: true,
                set_state: true
            })
        );
    }

    #[test]
    fn each_step_error_has_one_consequence() {
        let rows = [
            (
                StepError::Stalled {
                    kind: EventKind::BuildFailed,
                    reason: "exit 2".into(),
                },
                Then::Stall {
                    kind: EventKind::BuildFailed,
                    stage: Stage::Build,
                },
            ),
            (
                StepError::Stalled {
                    kind: EventKind::DeployFailed,
                    reason: "refused".into(),
                },
                Then::Stall {
                    kind: EventKind::DeployFailed,
                    stage: Stage::Deploy,
                },
            ),
            (
                StepError::Waiting {
                    after: Duration::from_secs(4),
                },
                Then::RetryAfter(Duration::from_secs(4)),
            ),
            (
                StepError::Transient {
                    reason: "exit 1".into(),
                    ran_for: Duration::ZERO,
                },
                Then::Backoff,
            ),
            (StepError::Cancelled, Then::Nothing),
        ];
        for (err, then) in rows {
            assert_eq!(error_policy(&err), then, "{err:?}");
        }
    }

    #[test]
    fn a_bad_run_is_rolled_back_only_on_probation_with_rollback_and_a_previous_version() {
        let rows = [
            // (rollback, on probation, has previous) → what follows
            ((true, true, true), AfterBadRun::RollBack),
            ((false, true, true), AfterBadRun::RestartPolicy),
            ((true, false, true), AfterBadRun::RestartPolicy),
            ((true, true, false), AfterBadRun::RestartPolicy),
            ((false, false, false), AfterBadRun::RestartPolicy),
        ];
        for ((rollback, on_probation, has_previous), then) in rows {
            let bad = BadRun {
                rollback,
                on_probation,
                has_previous,
            };
            assert_eq!(after_bad_run(bad), then, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_run_recorded_by_a_daemon_killed_before_its_rollback_is_rolled_back_at_start() {
        // The deployed version is v2, on probation until 1000 ms.
        let ended = |hash, failed, at| {
            Some(LastRun {
                spec_hash: hash,
                failed,
                ended_ms: at,
            })
        };
        let failed = |at| ended("v2", true, Some(at));
        let now = |live, last, rollback, until, previous| {
            unfinished_rollback("v2", live, last, rollback, until, previous)
        };
        let until = Some(1_000);
        assert!(now(0, failed(900), true, until, true));
        // Ended at the probation's last moment: still on probation.
        assert!(now(0, failed(1_000), true, until, true));
        // Failed after its probation: the restart policy's, not a rollback.
        assert!(!now(0, failed(1_001), true, until, true));
        // Stopped by jobkeeper (a new commit, suspend, a daemon stop), not failed.
        assert!(!now(0, ended("v2", false, Some(900)), true, until, true));
        // Something runs, or the run is still live: the sweep follows it.
        assert!(!now(1, failed(900), true, until, true));
        assert!(!now(0, ended("v2", true, None), true, until, true));
        // The newest run is another version's (the rollback was recorded already), or none.
        assert!(!now(0, ended("v1", true, Some(900)), true, until, true));
        assert!(!now(0, None, true, until, true));
        // No rollback asked for, no probation, or nothing to go back to.
        assert!(!now(0, failed(900), false, until, true));
        assert!(!now(0, failed(900), true, None, true));
        assert!(!now(0, failed(900), true, until, false));
    }

    #[test]
    fn unhealthy_runs_by_restarts_within_the_window_and_checkpoint_age() {
        use crate::engine::HealthFacts;
        use crate::spec::{Guard, RestartsLimit};
        let min = 60_000;
        let now = 100 * min;
        let guard = Guard {
            checkpoint_age: Some(Duration::from_secs(600)),
            restarts: Some(RestartsLimit {
                count: 3,
                window: Duration::from_secs(600),
            }),
            ..Guard::default()
        };
        let facts = |restarts, last: Option<i64>, checkpoints, started| HealthFacts {
            restarts,
            last_checkpoint_ms: last,
            checkpoints,
            started_ms: started,
        };
        let sample = |at, restarts| RestartSample {
            at_ms: at,
            restarts,
        };
        let long_ago = 10 * min;
        let fresh = Some(now - min);
        let history = [sample(85 * min, 1), sample(95 * min, 2)];
        let before = [sample(89 * min, 1), sample(91 * min, 3)];
        let short = [sample(95 * min, 2)];
        let rows: Vec<(&str, HealthFacts, &[RestartSample], Option<&str>)> = vec![
            ("healthy", facts(2, fresh, true, long_ago), &history, None),
            (
                "3 restarts since the window's start (1 before it)",
                facts(4, fresh, true, long_ago),
                &history,
                Some("restarted 3 times"),
            ),
            (
                "restarts between two sweeps count",
                facts(3, fresh, true, 98 * min),
                &[],
                Some("restarted 3 times"),
            ),
            (
                "restarts before the window do not count",
                facts(3, fresh, true, long_ago),
                &before,
                None,
            ),
            (
                "watched for less than the window: from the oldest sample",
                facts(4, fresh, true, long_ago),
                &short,
                None,
            ),
            (
                "stale checkpoint",
                facts(0, Some(now - 11 * min), true, long_ago),
                &[],
                Some("latest completed checkpoint 11m ago"),
            ),
            (
                "no checkpoint since a start long ago",
                facts(0, None, true, long_ago),
                &[],
                Some("no checkpoint completed"),
            ),
            (
                "no checkpoint yet, started just now",
                facts(0, None, true, now - min),
                &[],
                None,
            ),
            (
                "a job that does not checkpoint is not judged by checkpoints",
                facts(0, None, false, long_ago),
                &[],
                None,
            ),
        ];
        for (situation, f, history, want) in rows {
            let got = unhealthy(&guard, &f, history, now);
            match want {
                None => assert_eq!(got, None, "{situation}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{situation}: {got:?}"
                ),
            }
        }
        let off = Guard::default();
        assert_eq!(
            unhealthy(&off, &facts(99, None, true, long_ago), &[], now),
            None,
            "nothing is checked unless health asks"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_service_waits_for_its_restart_as_time_passes() {
        let service = spec("env: dev\nparams: {command: [sleep, '9']}\n");
        let v1 = deployed(&service, "h1");
        let want = Desired::Spec {
            spec: &service,
            hash: "h1",
        };
        let s = Duration::from_secs;
        // The run failed; the restart policy set the restart 10 s from now.
        let mut timers = Timers {
            restart: Some(Instant::now() + s(10)),
            ..Timers::default()
        };
        let at = |timers: &Timers, live| Observed {
            live,
            restart_in: timers
                .restart
                .map(|t| t.saturating_duration_since(Instant::now())),
            ..seen(Some(&v1))
        };
        let waiting = |secs| Err(StepError::Waiting { after: s(secs) });
        assert_eq!(decide(&want, &at(&timers, 0)), waiting(10));
        assert_eq!(
            error_policy(&StepError::Waiting { after: s(10) }),
            Then::RetryAfter(s(10))
        );
        tokio::time::advance(s(4)).await;
        assert_eq!(decide(&want, &at(&timers, 0)), waiting(6));
        assert!(!timers.due(Instant::now()).restart);
        tokio::time::advance(s(6)).await;
        assert!(timers.due(Instant::now()).restart);
        assert_eq!(
            decide(&want, &at(&timers, 0)),
            waiting(0),
            "due, not yet handled"
        );
        // The restart fired and started the run: nothing to do while it runs.
        timers.restart = None;
        assert_eq!(decide(&want, &at(&timers, 1)), Ok(Action::Nothing));
        // It ended again with no restart pending (a daemon restart forgot it): started.
        assert_eq!(decide(&want, &at(&timers, 0)), Ok(Action::Start));
    }

    #[test]
    fn a_job_waiting_on_the_host_is_not_started_by_a_poke_and_spends_no_restart() {
        let service = spec("env: dev\nparams: {command: [sleep, '9']}\n");
        let v1 = deployed(&service, "h1");
        let want = Desired::Spec {
            spec: &service,
            hash: "h1",
        };
        let s = Duration::from_secs;
        let waiting = Observed {
            host_in: Some(s(3)),
            ..seen(Some(&v1))
        };
        assert_eq!(
            decide(&want, &waiting),
            Err(StepError::Waiting { after: s(3) })
        );
        assert_eq!(decide(&want, &seen(Some(&v1))), Ok(Action::Start));
        let fault = crate::host::HostFault::new(crate::host::Resource::FileDescriptors, "EMFILE");
        assert_eq!(
            error_policy(&StepError::Host { fault }),
            Then::WaitOnHost,
            "not Backoff: the restart policy never sees it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_order_as_time_passes() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let timers = Timers {
            retry: Some(t0 + s(1)),
            restart: Some(t0 + s(10)),
            recover: Some(t0 + s(20)),
            fire: Some(t0 + s(60)),
            timeout: None,
            host: None,
        };
        assert_eq!(timers.next(), Some(t0 + s(1)));
        assert_eq!(timers.due(Instant::now()), Due::default());
        tokio::time::advance(s(1)).await;
        assert_eq!(
            timers.due(Instant::now()),
            Due {
                retry: true,
                ..Due::default()
            }
        );
        tokio::time::advance(s(19)).await;
        assert_eq!(
            timers.due(Instant::now()),
            Due {
                retry: true,
                restart: true,
                recover: true,
                ..Due::default()
            }
        );
        tokio::time::advance(s(40)).await;
        assert!(timers.due(Instant::now()).fire);
        assert_eq!(Timers::default().next(), None);
    }
}
