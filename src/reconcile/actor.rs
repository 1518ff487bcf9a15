//! The actor of one job: its state, its message loop, and the converge that carries out what
//! [`decide`] says. Steps live beside it: `deploy` (new versions, `follow`), `runs` (submit,
//! stop, exits, adoption), `timers` (schedules, restarts, timeouts, outages), `unhealthy` and
//! `rescaled` (what the health sweep saw of a live run).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::decide::{
    self, Action, Deployed, Desired, Observed, StepError, Then, Timers, error_policy,
};
use super::emit::Scope;
use crate::backoff::Backoff;
use crate::condition::{Failure, Stage};
use crate::engine::{Engine, RunExit, RunHandle};
use crate::event::{Attempt, EventKind, JobEvent};
use crate::health::RestartTracker;
use crate::spec::JobSpec;
use crate::store::{JobRow, JobState, RunState, StoreError};

/// First and longest wait before looking again at a cluster that did not answer.
pub const ENGINE_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// What an actor is asked to do.
///
/// Payloads are boxed so a message is two words: messages wait in a job's mailbox, and the
/// common ones carry nothing.
pub enum Msg {
    /// The desired spec may have changed: look at the store again.
    Desired,
    /// A run ended.
    Exit(Box<RunExit>),
    /// Check whether a `follow: true` project's branch moved.
    Follow,
    /// An operator asked for a restart (who asked).
    Restart(Box<String>),
    /// The health sweep's figures of a live run: the store's run id and what the engine said.
    Health(Box<(i64, crate::engine::HealthFacts)>),
    /// The health sweep's task count of a RUNNING run (a change means it was rescaled): the
    /// store's run id and the engine's count (flink: the sum of the run's vertices'
    /// parallelism).
    Tasks(Box<(i64, u64)>),
    /// Take a savepoint the run keeps running through (an operator's `jobkeeper savepoint`).
    Savepoint(Box<super::savepoint::SavepointAsk>),
}

const _: () = assert!(std::mem::size_of::<Msg>() <= 16);

/// Whether the job keeps its runs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Nothing failed since the last version or recovery.
    Ok,
    /// A run failed; the job has not recovered yet.
    Failing,
    /// The restart policy gave up: nothing restarts until a new commit or an operator.
    GaveUp,
}

/// A live run of the job.
pub(super) struct Live {
    pub run_id: i64,
    pub handle: RunHandle,
    pub engine: Arc<dyn Engine>,
    /// The secrets it was given, for masking them out of failure reasons (also held in
    /// [`super::Context::secrets`] for its log).
    pub secrets: Arc<crate::secrets::RunSecrets>,
    /// Batch runs: when the run is stopped as failed.
    pub deadline: Option<Instant>,
    /// When it was submitted.
    pub started: Instant,
    /// False while a cluster's answer to its submit was lost: the run may or may not exist.
    pub confirmed: bool,
}

/// The cluster a job stays on because its env's new cluster refused it (see
/// [`Actor::move_cluster`]): until the env names yet another cluster or a new version deploys.
pub(super) struct Pinned {
    /// The env's cluster that refused the job.
    pub refused_by: Option<String>,
    /// The engine of the cluster the job runs on.
    pub engine: Arc<dyn Engine>,
}

/// Looking again at a cluster that did not answer.
pub(super) struct EngineRetry {
    /// The wait before looking again, doubling while the cluster does not answer.
    pub backoff: Backoff,
    /// A converge could not finish: converge again when looking.
    pub converge: bool,
}

/// One job's actor (see the module doc).
pub struct Actor {
    pub(super) name: String,
    pub(super) ctx: Arc<Context>,
    pub(super) cancel: CancellationToken,
    pub(super) live: Vec<Live>,
    /// The deployed version.
    pub(super) applied: Option<Deployed>,
    /// The config commit of the desired version (events are recorded under it).
    pub(super) commit: Option<String>,
    /// The desired hash whose build or submit failed: not retried until the spec changes.
    pub(super) stalled: Option<String>,
    /// A followed project commit whose build failed: not retried until the branch moves again.
    pub(super) follow_failed: Option<String>,
    pub(super) standing: Standing,
    /// Restarts within the policy window and the next backoff.
    pub(super) restarts: RestartTracker,
    /// The attempt the pending restart will be.
    pub(super) pending_attempt: Attempt,
    /// flink: the savepoint or checkpoint the next run starts from.
    pub(super) restore: Option<String>,
    /// flink: why the last run left nothing to start from, while [`Actor::restore`] is `None`.
    pub(super) no_state: Option<String>,
    /// What the latest submitted run (by id) started from: said in its start event.
    pub(super) started_from: Option<(i64, crate::event::StartedFrom)>,
    /// When the actor wakes up next, and why.
    pub(super) timers: Timers,
    /// The wall-clock time of the next cron tick (for messages).
    pub(super) fire_at: Option<chrono::DateTime<chrono_tz::Tz>>,
    pub(super) engine_retry: EngineRetry,
    /// The job stays on its former cluster: its env's new one refused it.
    pub(super) pinned: Option<Pinned>,
    /// The version to roll back to, the current version's probation, and the refused version.
    pub(super) versions: crate::store::VersionsRow,
    /// The run the health samples are of, and the samples (oldest first).
    pub(super) health: (Option<i64>, Vec<decide::RestartSample>),
    /// What the live run's vertices must run at (see [`super::parallelism`]).
    pub(super) expected: super::parallelism::Expected,
    /// An open incident of a run rescaled outside jobkeeper.
    pub(super) rescaled: Option<super::parallelism::Incident>,
    /// What the job waits on the host for, and the start to try again (see [`super::onhost`]).
    pub(super) host_wait: Option<super::onhost::HostWait>,
    /// Run records the store refused, written again when it takes writes.
    pub(super) unrecorded: Vec<super::onhost::Unrecorded>,
    /// The wait before trying again what waits on the host.
    pub(super) host_backoff: Backoff,
    /// The periodic savepoints armed (see [`super::savepoint`]).
    pub(super) periodic: super::savepoint::Periodic,
    /// Why a savepoint taken while stopping runs is taken: a stop of the job (suspended,
    /// removed) while one is under way, else an upgrade.
    pub(super) stop_cause: crate::store::SavepointCause,
    /// `upgrade: last-state` while an upgrade or a move stops the runs: a checkpoint younger
    /// than this is started from instead of a new savepoint.
    pub(super) last_state: Option<std::time::Duration>,
    /// The turns of actors taking over their job, shared by the reconciler's actors (see
    /// [`super::STARTING_AT_ONCE`]); `None`: no wait for a turn.
    pub(super) starting: Option<Arc<tokio::sync::Semaphore>>,
}

impl Actor {
    /// An actor for job `name`; it does nothing until [`Actor::run`].
    pub fn new(name: String, ctx: Arc<Context>, cancel: CancellationToken) -> Actor {
        Actor {
            name,
            ctx,
            cancel,
            live: Vec::new(),
            applied: None,
            commit: None,
            stalled: None,
            follow_failed: None,
            standing: Standing::Ok,
            restarts: RestartTracker::default(),
            pending_attempt: Attempt { n: 0, of: 0 },
            restore: None,
            no_state: None,
            started_from: None,
            timers: Timers::default(),
            fire_at: None,
            engine_retry: EngineRetry {
                backoff: Backoff::new(ENGINE_WAIT.0, ENGINE_WAIT.1),
                converge: false,
            },
            pinned: None,
            versions: crate::store::VersionsRow::default(),
            health: (None, Vec::new()),
            expected: super::parallelism::Expected::default(),
            rescaled: None,
            host_wait: None,
            unrecorded: Vec::new(),
            host_backoff: Backoff::new(super::onhost::HOST_WAIT.0, super::onhost::HOST_WAIT.1),
            periodic: super::savepoint::Periodic::default(),
            stop_cause: crate::store::SavepointCause::Upgrade,
            last_state: None,
            starting: None,
        }
    }

    /// Takes over what the store and a previous daemon left, then handles messages and timers
    /// one at a time until the daemon stops or the job is removed.
    ///
    /// The actor comes boxed: an `async fn` keeps its arguments and the locals made from them
    /// both in its future, so an actor passed by value would sit twice in every job's task.
    pub async fn run(mut self: Box<Self>, mut rx: super::mailbox::Receiver<Msg>) {
        // The turn is taken before the take-over's future is made: 10,000 actors waiting for
        // theirs then hold this small loop each, not that future (some 5 KB).
        let turn = self.turn().await;
        if !Box::pin(self.init_when_read(turn)).await {
            return;
        }
        // The work futures are boxed: an idle actor (most of them, most of the time) then
        // holds only this small loop, not the state of its largest step (an unboxed one here
        // made every job's task 2.3 KB instead of 0.5 KB).
        Box::pin(self.finish_rollback()).await;
        loop {
            self.arm_savepoints_if_changed().await;
            let deadline = self.next_deadline();
            let done = tokio::select! {
                () = self.cancel.cancelled() => {
                    Box::pin(self.shutdown()).await;
                    return;
                }
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Desired) => Box::pin(self.converge()).await,
                    Some(Msg::Exit(exit)) => Box::pin(self.on_exit(*exit)).await,
                    Some(Msg::Follow) => { Box::pin(self.follow()).await; false }
                    Some(Msg::Restart(who)) => Box::pin(self.restart(*who)).await,
                    Some(Msg::Health(health)) => {
                        let (run_id, facts) = *health;
                        Box::pin(self.on_health(run_id, facts)).await;
                        false
                    }
                    Some(Msg::Tasks(counted)) => {
                        let (run_id, tasks) = *counted;
                        Box::pin(self.on_tasks(run_id, tasks)).await;
                        false
                    }
                    Some(Msg::Savepoint(ask)) => {
                        Box::pin(self.take_savepoint(*ask)).await;
                        false
                    }
                },
                () = sleep_until_opt(deadline) => Box::pin(self.on_timer()).await,
            };
            if done {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.live.iter().filter_map(|l| l.deadline).min();
        let timers = Timers {
            timeout,
            ..self.timers
        }
        .next();
        [timers, self.periodic.due].into_iter().flatten().min()
    }

    /// [`Actor::init`], tried again after each wait of the engine backoff while the store
    /// cannot be read: a job whose row cannot be read is neither dropped nor started, it waits
    /// (each failed read is logged and counted). False when the store has no such job or the
    /// daemon stops. Each try holds a turn among the actors starting (`first`: the one taken
    /// for the first try); none is held while waiting.
    async fn init_when_read(&mut self, first: Option<OwnedSemaphorePermit>) -> bool {
        let mut first = first;
        loop {
            let turn = match first.take() {
                Some(turn) => Some(turn),
                None => self.turn().await,
            };
            let read = self.init().await;
            drop(turn);
            if let Some(found) = self
                .ctx
                .store
                .read_or_log(Some(&self.name), "job, at start", read)
            {
                self.engine_retry.backoff.reset();
                return found;
            }
            let wait = self.engine_retry.backoff.next();
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A turn among the actors taking over their jobs (see [`super::STARTING_AT_ONCE`]);
    /// `None` when this actor waits for none. The turns are never closed.
    async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        match &self.starting {
            Some(turns) => turns.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Reads the job's row once: the deployed version, what the previous daemon decided (a job
    /// that gave up waits for a new commit or an operator; a version whose build or deploy
    /// failed is not retried), the latest savepoint, and the cluster runs it left. False when
    /// the store has no such job; an error when the store cannot be read (nothing was adopted
    /// then, and calling it again starts afresh).
    async fn init(&mut self) -> Result<bool, StoreError> {
        let Some(row) = self.ctx.store.job(&self.name).await? else {
            return Ok(false);
        };
        self.commit = row.desired_commit.clone();
        self.applied = deployed_of(&row);
        let applied_hash = self.applied.as_ref().map(|a| a.hash.as_str());
        let changed = row.desired_hash.is_some() && row.desired_hash.as_deref() != applied_hash;
        if !changed && row.state == JobState::GaveUp {
            self.standing = Standing::GaveUp;
        }
        self.load_versions(row.desired_hash.as_deref()).await?;
        // A version whose build or deploy failed is not retried (the typed record says which).
        if let Some(failed) = &self.versions.failed
            && changed
            && failed.stage != Stage::Move
            && row.desired_hash.as_deref() == Some(failed.hash.as_str())
        {
            self.stalled = Some(failed.hash.clone());
        }
        self.resume_restarts().await?;
        self.adopt().await?;
        Ok(true)
    }

    /// The file asks again for the deployed version (a revert): a failed or rolled back
    /// version is forgotten, so that asking for it again tries it again, and a `rolled_back`
    /// state shows what runs.
    async fn back_to_what_runs(&mut self, state: JobState) {
        self.stalled = None;
        let failed = self
            .versions
            .failed
            .as_ref()
            .is_some_and(|f| f.stage != Stage::Move);
        if !failed && self.versions.refused_hash.is_none() {
            return;
        }
        if failed {
            self.versions.failed = None;
        }
        self.versions.refused_hash = None;
        self.versions.refused_commit = None;
        self.versions.refused_reason = None;
        self.save_versions().await;
        if state == JobState::RolledBack && !self.live.is_empty() {
            self.set_state(JobState::Running, None).await;
        }
    }

    /// Changes the job's open incidents (drift, unhealthy) in the store: `change` edits what
    /// the store holds.
    pub(super) async fn set_incident(&self, change: impl FnOnce(&mut crate::condition::Incidents)) {
        let store = &self.ctx.store;
        let Some(mut incidents) = store.read_or_log(
            Some(&self.name),
            "incidents",
            store.incidents(&self.name).await,
        ) else {
            return;
        };
        change(&mut incidents);
        store.record(
            Some(&self.name),
            "incidents",
            store.set_incidents(&self.name, &incidents).await,
        );
    }

    /// Records the version that failed (typed, in the `versions` row).
    pub(super) async fn record_failure(&mut self, failure: Failure) {
        self.versions.failed = Some(failure);
        self.save_versions().await;
    }

    pub(super) fn scope(&self) -> Scope<'_> {
        Scope::job(&self.name, self.commit.as_deref())
    }

    /// Records an event of this job (see [`super::Emitter::emit`]).
    /// Records `event` (of run `run_id`); a start event of the latest submitted run says what
    /// that run started from.
    pub(super) async fn event(&self, run_id: Option<i64>, event: &JobEvent) {
        match &self.started_from {
            Some((run, from)) if run_id == Some(*run) => {
                let event = event.with_start(from);
                self.ctx.events.emit(self.scope().run(run_id), &event).await;
            }
            _ => {
                self.ctx.events.emit(self.scope().run(run_id), event).await;
            }
        }
    }

    pub(super) async fn set_state(&self, state: JobState, reason: Option<&str>) {
        // A job that was rolled back shows it while its previous version runs.
        let (state, reason) = match (&self.versions.refused_reason, state) {
            (Some(why), JobState::Running) => (JobState::RolledBack, Some(why.as_str())),
            _ => (state, reason),
        };
        let store = &self.ctx.store;
        store.record(
            Some(&self.name),
            "state",
            store.set_state(&self.name, state, reason).await,
        );
    }

    pub(super) fn idle_or_running(&self, idle: JobState) -> JobState {
        if self.live.is_empty() {
            idle
        } else {
            JobState::Running
        }
    }

    /// The job's row, `None` once the store has no such job. A row that cannot be read is
    /// logged and counted, and the actor converges again after the next wait of the engine
    /// backoff (see [`error_policy`]): `Err(())` then, and the caller does nothing more now.
    async fn load(&mut self, what: &str) -> Result<Option<JobRow>, ()> {
        let read = self.ctx.store.job(&self.name).await;
        if let Some(row) = self.ctx.store.read_or_log(Some(&self.name), what, read) {
            return Ok(row);
        }
        let after = self.engine_retry.backoff.peek();
        self.on_error(Stall::Nothing, StepError::Waiting { after })
            .await;
        Err(())
    }

    /// Brings the job to its desired state; true when the actor is done (job removed).
    pub(super) async fn converge(&mut self) -> bool {
        let Ok(row) = self.load("job").await else {
            return false;
        };
        let Some(row) = row else {
            return true;
        };
        self.commit = row.desired_commit.clone();
        let desired = desired_of(&row);
        let want = match &desired {
            Some((spec, hash)) => Desired::Spec { spec, hash },
            None => Desired::Removed,
        };
        if let Desired::Spec { hash, .. } = want
            && self.applied.as_ref().map(|a| a.hash.as_str()) == Some(hash)
        {
            self.back_to_what_runs(row.state).await;
        }
        if let Desired::Spec { hash, .. } = want
            && self.applied.as_ref().map(|a| a.hash.as_str()) != Some(hash)
        {
            // A new version cancels a pending retry and clears `gave_up`.
            self.standing = Standing::Ok;
            self.timers.restart = None;
            self.timers.recover = None;
            self.restarts.reset();
            // The start waiting on the host was of the old version; the deploy submits.
            if let Some(w) = &mut self.host_wait {
                w.start = None;
            }
            self.new_commit(hash).await;
        }
        let action = match decide::decide(&want, &self.observed(row.state)) {
            Ok(action) => action,
            Err(err) => {
                // A wait the pending restart ends: the restart starts the run, its timer wakes
                // the actor, no converge of its own is needed.
                let restart_ends_it = matches!(
                    error_policy(&err),
                    Then::RetryAfter(after) if self.restart_within(after) || self.host_within(after)
                );
                if !restart_ends_it {
                    self.on_error(Stall::Nothing, err).await;
                }
                return false;
            }
        };
        let hash = desired.as_ref().map(|(_, h)| h.clone()).unwrap_or_default();
        let result = match (action, desired) {
            (Action::Remove, _) => return self.remove().await,
            (Action::Suspend { .. }, None) | (Action::Deploy, None) => Ok(()),
            (
                Action::Suspend {
                    drop_artifact,
                    changed,
                    set_state,
                },
                Some((spec, hash)),
            ) => {
                self.suspend(spec, hash, drop_artifact, changed, set_state)
                    .await
            }
            (Action::Deploy, Some((spec, hash))) => self.deploy(spec, hash).await,
            (Action::StartPrevious, _) => {
                let why = "previous version (the new one is stalled)";
                self.start(JobEvent::Started { why: why.into() }, false)
                    .await;
                if !self.live.is_empty() {
                    self.set_state(JobState::Running, None).await;
                }
                Ok(())
            }
            (Action::Move, _) => self.move_cluster().await,
            (Action::Start, _) => {
                let why = "run submitted";
                self.start(JobEvent::Started { why: why.into() }, false)
                    .await;
                Ok(())
            }
            (Action::Schedule { show_pending }, _) => {
                self.schedule_next(true).await;
                if show_pending {
                    self.set_state(JobState::Pending, Some("waiting for its schedule"))
                        .await;
                }
                Ok(())
            }
            (Action::Nothing, _) => Ok(()),
        };
        if let Err(err) = result {
            self.on_error(Stall::Version(hash), err).await;
        }
        false
    }

    pub(super) fn observed(&self, state: JobState) -> Observed<'_> {
        Observed {
            applied: self.applied.as_ref(),
            live: self.live.len(),
            stalled: self.stalled.as_deref(),
            refused: self.versions.refused_hash.as_deref(),
            gave_up: self.standing == Standing::GaveUp,
            restart_in: self
                .timers
                .restart
                .map(|t| t.saturating_duration_since(Instant::now())),
            host_in: self
                .timers
                .host
                .map(|t| t.saturating_duration_since(Instant::now())),
            scheduled: self.timers.fire.is_some(),
            state,
            elsewhere: self.elsewhere(),
        }
    }

    /// Whether a live run is on a cluster other than the one its env names now (and that one
    /// did not refuse the job).
    fn elsewhere(&self) -> bool {
        let Some(target) = self
            .applied
            .as_ref()
            .and_then(|a| self.ctx.engines.get(&a.spec.env))
        else {
            return false;
        };
        let cluster = target.cluster();
        if cluster.is_none()
            || self
                .pinned
                .as_ref()
                .is_some_and(|p| p.refused_by == cluster)
        {
            return false;
        }
        self.live
            .iter()
            .any(|l| l.engine.kind() == target.kind() && l.engine.cluster() != cluster)
    }

    /// Carries out what [`error_policy`] says of a failed step. `stall` names what a stalled
    /// step holds back: a version (its hash) or a followed project commit.
    pub(super) async fn on_error(&mut self, stall: Stall, err: StepError) {
        match (error_policy(&err), err) {
            (Then::Stall { stage, .. }, StepError::Stalled { kind, reason }) => {
                let event = if kind == EventKind::BuildFailed {
                    JobEvent::BuildFailed {
                        reason: reason.clone(),
                    }
                } else {
                    JobEvent::DeployFailed {
                        reason: reason.clone(),
                    }
                };
                self.event(None, &event).await;
                match stall {
                    Stall::Version(hash) => {
                        self.stalled = Some(hash.clone());
                        self.record_failure(Failure {
                            hash,
                            commit: self.commit.clone(),
                            stage,
                            reason: reason.clone(),
                        })
                        .await;
                        // A job whose previous version runs shows `running`; the condition
                        // (`build_failed`, `deploy_failed`) says what was refused.
                        if self.live.is_empty() {
                            self.set_state(JobState::Failed, Some(&reason)).await;
                        } else {
                            self.set_state(JobState::Running, None).await;
                        }
                    }
                    Stall::Follow(commit) => self.follow_failed = Some(commit),
                    Stall::Nothing => {}
                }
            }
            (Then::RetryAfter(after), _) => self.retry_after(after),
            (Then::WaitOnHost, StepError::Host { fault }) => self.wait_on_host(fault, None).await,
            (Then::Backoff, StepError::Transient { reason, ran_for }) => {
                self.schedule_restart(&reason, ran_for).await;
            }
            _ => {}
        }
    }

    /// Converges again `after` from now ([`Then::RetryAfter`]).
    pub(super) fn retry_after(&mut self, after: Duration) {
        self.engine_retry.converge = true;
        self.arm_retry(Instant::now() + after);
    }

    /// Whether a restart is pending and due within `after` from now.
    fn restart_within(&self, after: Duration) -> bool {
        let by = Instant::now() + after;
        self.timers.restart.is_some_and(|t| t <= by)
    }

    /// Whether the host's next try is due within `after` from now.
    fn host_within(&self, after: Duration) -> bool {
        let by = Instant::now() + after;
        self.timers.host.is_some_and(|t| t <= by)
    }

    /// Looks again at the cluster at `at`, unless a look is due earlier. Every look armed
    /// moves the engine backoff on: the next wait for a cluster that still does not answer
    /// doubles.
    pub(super) fn arm_retry(&mut self, at: Instant) {
        if self.timers.retry.is_none_or(|t| t > at) {
            self.timers.retry = Some(at);
            self.engine_retry.backoff.next();
        }
    }

    /// The job file was removed: stop every run (keeping state), keep the history.
    async fn remove(&mut self) -> bool {
        self.stop_cause = crate::store::SavepointCause::Stop;
        let stopped = self
            .stop_all("job removed from the config repo", true)
            .await;
        self.stop_cause = crate::store::SavepointCause::Upgrade;
        if let Err(err) = stopped {
            self.on_error(Stall::Nothing, err).await;
            return false;
        }
        for engine in self.ctx.engines.distinct() {
            engine.forget_job(&self.name).await;
        }
        self.applied = None;
        let store = &self.ctx.store;
        store.record(
            Some(&self.name),
            "applied spec",
            store.set_applied(&self.name, None).await,
        );
        self.set_state(JobState::Stopped, Some("job file removed"))
            .await;
        self.event(
            None,
            &JobEvent::Stopped {
                why: "job file removed: stopped, history kept".into(),
            },
        )
        .await;
        true
    }

    /// `suspend: true`: stop every run (keeping state) and record the version.
    async fn suspend(
        &mut self,
        spec: JobSpec,
        hash: String,
        drop_artifact: bool,
        changed: bool,
        set_state: bool,
    ) -> Result<(), StepError> {
        if !self.live.is_empty() {
            self.stop_cause = crate::store::SavepointCause::Stop;
            let stopped = self.stop_all("suspended", true).await;
            self.stop_cause = crate::store::SavepointCause::Upgrade;
            stopped?;
        }
        self.timers.fire = None;
        // The build of a project that changed while suspended is not this version's: it is
        // built when the job is resumed.
        let artifact = if drop_artifact {
            None
        } else {
            self.applied.as_ref().and_then(|a| a.artifact.clone())
        };
        self.applied = Some(Deployed {
            spec,
            hash,
            artifact,
            commit: self.commit.clone(),
        });
        self.record_applied().await;
        if set_state {
            self.set_state(JobState::Suspended, Some("suspend: true"))
                .await;
            if changed {
                self.event(None, &JobEvent::Suspended).await;
            }
        }
        Ok(())
    }

    /// An operator's restart (see [`super::Reconciler::restart`]); true when the actor is done.
    async fn restart(&mut self, who: String) -> bool {
        if let Some(w) = &mut self.host_wait {
            w.start = None; // the restart asked for starts the run
        }
        if self.standing == Standing::GaveUp {
            self.standing = Standing::Failing;
        }
        self.stalled = None;
        self.follow_failed = None;
        self.timers.restart = None;
        self.restarts.reset();
        // A row that cannot be read drops the restart: the job converges again later.
        let Ok(row) = self
            .load(&format!("job, for a restart asked for by {who}"))
            .await
        else {
            return false;
        };
        let desired = row.and_then(|r| r.desired_hash);
        let same = self.applied.as_ref().filter(|a| {
            // A restart of a job that was rolled back restarts the version that runs.
            let refused = self.versions.refused_hash.as_ref();
            !a.spec.suspend
                && (desired.as_ref() == Some(&a.hash)
                    || (desired.is_some() && desired.as_ref() == refused))
        });
        let Some(applied) = same else {
            // A new version that did not build or deploy is tried again; a suspended job stays so.
            return self.converge().await;
        };
        let (batch, keep_state) = (applied.is_batch(), applied.spec.upgrade.keeps_state());
        let why = format!("restart asked for by {who}");
        if let Err(err) = self.stop_all(&why, keep_state).await {
            self.on_error(Stall::Nothing, err).await;
            return false;
        }
        // A start of its own: it spends no restart attempt and is not counted as a restart.
        self.start(JobEvent::Started { why }, batch).await;
        if batch && self.timers.fire.is_none() {
            self.schedule_next(false).await; // a batch job that gave up is scheduled again
        }
        false
    }

    /// Records the deployed version in the store.
    pub(super) async fn record_applied(&self) {
        let Some(d) = &self.applied else {
            return;
        };
        let store = &self.ctx.store;
        let applied = crate::store::Applied {
            spec: &d.spec,
            hash: &d.hash,
            artifact: d.artifact.as_ref(),
            commit: d.commit.as_deref(),
        };
        store.record(
            Some(&self.name),
            "applied spec",
            store.set_applied(&self.name, Some(applied)).await,
        );
    }

    /// Daemon shutdown: runs that do not outlive the daemon stop with it; the others keep
    /// running for the next daemon to adopt.
    async fn shutdown(&mut self) {
        for live in std::mem::take(&mut self.live) {
            if !live.engine.runs_survive_daemon() {
                // A local stop always ends the run's record: nothing is handed back.
                let _ = self
                    .stop_run(live, RunState::Stopped, "daemon shutdown", false)
                    .await;
            }
        }
    }
}

/// What a stalled step holds back.
pub(super) enum Stall {
    /// The desired version with this hash.
    Version(String),
    /// A followed project commit.
    Follow(String),
    /// Nothing (the step cannot stall).
    Nothing,
}

/// The desired version of a row: `None` once its file was removed.
fn desired_of(row: &JobRow) -> Option<(JobSpec, String)> {
    let spec = row.desired.clone()?;
    let hash = row
        .desired_hash
        .clone()
        .unwrap_or_else(|| super::spec_hash(&serde_json::to_string(&spec).unwrap_or_default()));
    Some((spec, hash))
}

/// The deployed version of a row.
fn deployed_of(row: &JobRow) -> Option<Deployed> {
    Some(Deployed {
        spec: row.applied.clone()?,
        hash: row.applied_hash.clone()?,
        artifact: row.artifact.clone(),
        commit: row.applied_commit.clone(),
    })
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{context, desire_a, desired_text, set_desired, wait_for};
    use super::*;
    use crate::store::{RunRow, Store};

    fn live_runs(store: &Store) -> Vec<RunRow> {
        store.blocking().live_runs().unwrap()
    }

    #[tokio::test]
    async fn a_job_row_that_cannot_be_read_at_start_waits_and_is_started_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        desire_a(&ctx.store);
        let good = desired_text(dir.path());
        set_desired(dir.path(), "{\"env\": 1}");
        let cancel = CancellationToken::new();
        let reconciler = super::super::Reconciler::new(ctx.clone(), cancel.clone());
        reconciler.poke("a");
        wait_for("two failed reads", || ctx.store.read_errors() >= 2).await;
        assert!(
            ctx.store.blocking().runs("a", 5).unwrap().is_empty(),
            "nothing started"
        );
        set_desired(dir.path(), &good);
        // No new poke: the actor that waits reads again by itself.
        wait_for("a run", || !live_runs(&ctx.store).is_empty()).await;
        cancel.cancel();
        reconciler.wait().await;
    }

    #[tokio::test]
    async fn a_failed_run_waits_for_its_restart_however_often_the_job_is_poked() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let yaml = "env: dev\nrestart: {attempts: 5, window: 1h, backoff: 2s}\n\
                    params:\n  command: [sh, -c, \"exit 3\"]\n";
        let spec = crate::spec::parse_job("b.yaml", yaml.as_bytes(), Default::default()).unwrap();
        let update = crate::store::DesiredUpdate::Spec {
            name: "b".into(),
            path: "jobs/b.yaml".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            hash: "h1".into(),
        };
        let commit = crate::store::CommitRecord::default();
        ctx.store
            .blocking()
            .apply_commit(&commit, &[update], &[])
            .unwrap();
        let cancel = CancellationToken::new();
        let reconciler = super::super::Reconciler::new(ctx.clone(), cancel.clone());
        let mut exits = ctx.engines.take_exits().unwrap();
        let r = reconciler.clone();
        let forward = tokio::spawn(async move {
            while let Some(exit) = exits.recv().await {
                r.exited(exit);
            }
        });
        let runs = || ctx.store.blocking().runs("b", 10).unwrap();
        reconciler.poke("b");
        wait_for("the job in backoff", || {
            ctx.store.blocking().job("b").unwrap().unwrap().state == JobState::Backoff
        })
        .await;
        // Each poke converges: the job waits for its restart, it is not started again now.
        for _ in 0..5 {
            reconciler.poke("b");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_for("the restart", || runs().len() >= 2).await;
        // Newest first: the second run started after the backoff, not at a poke.
        let (second, first) = (&runs()[0], &runs()[1]);
        let ended = first.ended_at.expect("the first run ended");
        assert!(
            second.started_at - ended >= 1_900,
            "restarted {} ms after the failure, before its 2 s backoff",
            second.started_at - ended
        );
        // The `restarted` event is recorded as the run starts: waited for, not assumed.
        let restarted = || -> Vec<_> {
            ctx.store
                .blocking()
                .events(Some("b"), 50)
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EventKind::Restarted)
                .collect()
        };
        wait_for("the restarted event", || !restarted().is_empty()).await;
        assert_eq!(restarted()[0].attempt, Some(Attempt { n: 1, of: 5 }));
        cancel.cancel();
        reconciler.wait().await;
        forward.abort();
    }

    /// A daemon on `ctx`: its reconciler, its stop token and the task handing it run ends.
    fn daemon(
        ctx: &Arc<Context>,
    ) -> (
        Arc<super::super::Reconciler>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let cancel = CancellationToken::new();
        let reconciler = super::super::Reconciler::new(ctx.clone(), cancel.clone());
        let mut exits = ctx.engines.take_exits().unwrap();
        let r = reconciler.clone();
        let forward = tokio::spawn(async move {
            while let Some(exit) = exits.recv().await {
                r.exited(exit);
            }
        });
        (reconciler, cancel, forward)
    }

    /// The trial's finding: attempts started again at 1/3 after a daemon restart, so a job
    /// that keeps failing was restarted more often than `attempts` within the window.
    #[tokio::test]
    async fn restart_attempts_spent_before_a_daemon_restart_stay_spent() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let yaml = "env: dev\nrestart: {attempts: 2, window: 1h, backoff: 1s, max_backoff: 1s}\n\
                    params:\n  command: [sh, -c, \"sleep 0.3; exit 3\"]\n";
        let spec = crate::spec::parse_job("c.yaml", yaml.as_bytes(), Default::default()).unwrap();
        let update = crate::store::DesiredUpdate::Spec {
            name: "c".into(),
            path: "jobs/c.yaml".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            hash: "h1".into(),
        };
        let commit = crate::store::CommitRecord::default();
        ctx.store
            .blocking()
            .apply_commit(&commit, &[update], &[])
            .unwrap();
        let restarts = |ctx: &Context| -> Vec<Attempt> {
            let events = ctx.store.blocking().events(Some("c"), 100).unwrap();
            let mut a: Vec<_> = events
                .iter()
                .filter(|e| e.kind == EventKind::Restarted)
                .filter_map(|e| e.attempt)
                .collect();
            a.reverse();
            a
        };
        let (reconciler, cancel, forward) = daemon(&ctx);
        reconciler.poke("c");
        wait_for("the first restart", || !restarts(&ctx).is_empty()).await;
        cancel.cancel();
        reconciler.wait().await;
        forward.abort();

        // The next daemon, on the same store.
        let ctx = context(dir.path());
        let (reconciler, cancel, forward) = daemon(&ctx);
        reconciler.poke("c");
        wait_for("gave up", || {
            ctx.store.blocking().job("c").unwrap().unwrap().state == JobState::GaveUp
        })
        .await;
        assert_eq!(
            restarts(&ctx),
            [Attempt { n: 1, of: 2 }, Attempt { n: 2, of: 2 }],
            "two restarts within the window, across the daemon restart"
        );
        let events = ctx.store.blocking().events(Some("c"), 100).unwrap();
        let gave_up = events.iter().find(|e| e.kind == EventKind::GaveUp).unwrap();
        assert!(
            gave_up
                .message
                .starts_with("gave up after 2 restarts within 1h"),
            "{}",
            gave_up.message
        );
        assert_eq!(ctx.store.restart_counts().await.unwrap().get("c"), Some(&2));
        cancel.cancel();
        reconciler.wait().await;
        forward.abort();
    }

    /// The trial's finding: the previous version started again after a failed deploy was a
    /// `restarted` and counted as a restart.
    #[tokio::test]
    async fn the_previous_version_started_after_a_failed_deploy_is_no_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        desire_a(&ctx.store);
        let (reconciler, cancel, forward) = daemon(&ctx);
        reconciler.poke("a");
        wait_for("v1 running", || live_runs(&ctx.store).len() == 1).await;
        let yaml = "env: dev\nparams:\n  command: [/nonexistent/jobkeeper-test-program]\n";
        let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
        let update = crate::store::DesiredUpdate::Spec {
            name: "a".into(),
            path: "jobs/a.yaml".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            hash: "h2".into(),
        };
        let commit = crate::store::CommitRecord {
            id: "c2".into(),
            ..Default::default()
        };
        ctx.store
            .blocking()
            .apply_commit(&commit, &[update], &[])
            .unwrap();
        reconciler.poke("a");
        let events = || ctx.store.blocking().events(Some("a"), 100).unwrap();
        wait_for("deploy_failed", || {
            events().iter().any(|e| e.kind == EventKind::DeployFailed)
        })
        .await;
        wait_for("v1 running again", || live_runs(&ctx.store).len() == 1).await;
        let events = events();
        let fallback = events
            .iter()
            .find(|e| e.message.contains("previous version started again"))
            .expect("the fallback's event");
        assert_eq!(fallback.kind, EventKind::Started, "{fallback:?}");
        assert_eq!(fallback.attempt, None);
        assert!(
            !events.iter().any(|e| e.kind == EventKind::Restarted),
            "{events:#?}"
        );
        assert_eq!(ctx.store.restart_counts().await.unwrap().get("a"), None);
        cancel.cancel();
        reconciler.wait().await;
        forward.abort();
    }

    /// The review's finding: a store failure while a run was submitted (the run's row refused)
    /// became `deploy_failed` and counted against the restart policy. It is a store fault: the
    /// job waits on the host, spends no attempt, and starts once the store takes the row.
    #[tokio::test]
    async fn a_store_failure_during_a_submit_is_a_store_fault_never_deploy_failed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        desire_a(&ctx.store);
        // The store refuses every new run (not a full disk, not descriptors: the store itself).
        let db = rusqlite::Connection::open(dir.path().join("jobkeeper.db")).unwrap();
        db.execute_batch(
            "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs
             BEGIN SELECT RAISE(ABORT, 'runs refused for the test'); END;",
        )
        .unwrap();
        let (reconciler, cancel, forward) = daemon(&ctx);
        reconciler.poke("a");
        let events = || ctx.store.blocking().events(Some("a"), 100).unwrap();
        // A host fault is the daemon's event (one per episode, whichever job met it).
        let fault = || {
            let all = ctx.store.blocking().events(None, 100).unwrap();
            all.into_iter().find(|e| e.kind == EventKind::HostFault)
        };
        wait_for("host_fault", || fault().is_some()).await;
        let fault = fault().unwrap();
        assert!(
            fault.message.starts_with("the store refuses writes")
                && fault.message.contains("runs refused for the test"),
            "{fault:?}"
        );
        db.execute_batch("DROP TRIGGER refuse_runs").unwrap();
        wait_for("a run once the store takes it", || {
            live_runs(&ctx.store).len() == 1
        })
        .await;
        let events = events();
        for kind in [
            EventKind::DeployFailed,
            EventKind::Restarted,
            EventKind::GaveUp,
        ] {
            assert!(
                !events.iter().any(|e| e.kind == kind),
                "{kind}: {events:#?}"
            );
        }
        assert_eq!(ctx.store.restart_counts().await.unwrap().get("a"), None);
        cancel.cancel();
        reconciler.wait().await;
        forward.abort();
    }

    #[tokio::test]
    async fn a_job_row_that_cannot_be_read_keeps_the_job_and_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        desire_a(&ctx.store);
        let good = desired_text(dir.path());
        let cancel = CancellationToken::new();
        let reconciler = super::super::Reconciler::new(ctx.clone(), cancel.clone());
        reconciler.poke("a");
        wait_for("a running run", || {
            live_runs(&ctx.store)
                .first()
                .is_some_and(|r| r.state == RunState::Running)
        })
        .await;
        let run = live_runs(&ctx.store)[0].id;
        set_desired(dir.path(), "{\"env\": 1}");
        reconciler.poke("a");
        wait_for("a failed read", || ctx.store.read_errors() >= 1).await;
        set_desired(dir.path(), &good);
        // Before the fix, the actor ended as if the job were removed: the next poke made a
        // new actor, which started the job a second time.
        reconciler.poke("a");
        wait_for("the retry", || ctx.store.read_errors() >= 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let live: Vec<i64> = live_runs(&ctx.store).iter().map(|r| r.id).collect();
        assert_eq!(live, [run], "the job runs once, its run kept");
        let row = ctx.store.job("a").await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Running);
        cancel.cancel();
        reconciler.wait().await;
    }
}
