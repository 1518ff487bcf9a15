//! The runs of a job: submitting the deployed version, stopping runs (with a savepoint where
//! the engine keeps state), a run's end, a submit whose answer was lost, and the runs a previous
//! daemon left on engines whose runs outlive it.

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Actor, Live, Stall, Standing};
use super::decide::Deployed;
use super::decide::StepError;
use crate::engine::{
    EngineError, RunExit, RunHandle, RunStatus, STOP_GRACE, StateLeft, StatePoint,
};
use crate::event::{JobEvent, StartedFrom};
use crate::host::HostFault;
use crate::spec;
use crate::store::{JobState, RunOrigin, RunState, SavepointKind, StoreError};

/// Why a submit started no run.
#[derive(Debug, thiserror::Error)]
pub(super) enum SubmitError {
    /// The job or its engine refused it (secrets masked): `deploy_failed`.
    #[error("{0}")]
    Refused(String),
    /// The daemon's host ran out of something: the job waits on the host.
    #[error("waiting on the host: {0}")]
    Host(HostFault),
}

impl From<super::deploy::Refusal> for SubmitError {
    fn from(refusal: super::deploy::Refusal) -> SubmitError {
        SubmitError::Refused(refusal.to_string())
    }
}

impl SubmitError {
    /// What a step that submitted gives: a refusal as `refused` says, a host fault as waiting
    /// on the host.
    pub(super) fn into_step(self, refused: impl FnOnce(String) -> StepError) -> StepError {
        match self {
            SubmitError::Refused(reason) => refused(reason),
            SubmitError::Host(fault) => StepError::Host { fault },
        }
    }
}

impl Actor {
    /// Submits the deployed version; returns the run id, or why it was refused (secrets
    /// masked), or the host fault that kept it from starting (see [`super::onhost`]).
    pub(super) async fn submit(&mut self, batch: bool) -> Result<i64, SubmitError> {
        let Some(deployed) = self.applied.clone() else {
            return Err(SubmitError::Refused("nothing to submit".into()));
        };
        let engine = self.engine_for(&deployed.spec)?;
        self.host_ready().await.map_err(SubmitError::Host)?;
        let log_dir = crate::runlogs::job_dir(&self.ctx.logs_dir, &self.name);
        let run_id = self
            .ctx
            .store
            .insert_run(
                &self.name,
                RunOrigin {
                    config_commit: deployed.commit.as_deref(),
                    project_commit: deployed.project_commit(),
                    artifact_key: deployed.artifact.as_ref().map(|a| a.key.as_str()),
                },
                &deployed.hash,
                (engine.kind(), &deployed.spec.env),
                &log_dir,
            )
            .await
            .map_err(|e| SubmitError::Host(self.store_fault(&e)))?;
        self.submit_run(run_id, &deployed, engine, batch).await
    }

    /// Submits run `run_id` (recorded) of `deployed` to `engine`; the body of [`Self::submit`],
    /// also used to submit a run again under its own id ([`Self::not_submitted`]).
    async fn submit_run(
        &mut self,
        run_id: i64,
        deployed: &Deployed,
        engine: std::sync::Arc<dyn crate::engine::Engine>,
        batch: bool,
    ) -> Result<i64, SubmitError> {
        let log_dir = crate::runlogs::job_dir(&self.ctx.logs_dir, &self.name);
        let log_path = log_dir.join(format!("{run_id}.log"));
        let request = self.request(&deployed.spec, deployed.artifact.as_ref(), run_id, log_path);
        let (req, secrets) = match request {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                self.finish_run(run_id, RunState::Failed, Some(&reason))
                    .await;
                return Err(SubmitError::Refused(reason));
            }
        };
        let secrets = std::sync::Arc::new(secrets);
        self.hold_secrets(run_id, &secrets, &req.log_path).await;
        // A cluster that did not answer: the run is looked up later by the id jobkeeper chose
        // for it (flink), or, when the cluster chooses ids (spark: its engine already looked for
        // a driver the lost answer made), by no id at all: once the cluster answers again it is
        // not found and is submitted again.
        let chosen_id = engine.engine_id_for(&self.name, run_id);
        let (handle, confirmed) = match engine.submit(req).await {
            Ok(handle) => (handle, true),
            Err(EngineError::Unreachable(why)) => {
                let location = engine.location();
                self.ctx
                    .outages
                    .down(&self.ctx.events, &location, &why)
                    .await;
                let why = format!("waiting for {location}, which did not answer the submit");
                self.set_state(JobState::Deploying, Some(&why)).await;
                let handle = RunHandle {
                    run_id,
                    engine_id: chosen_id.unwrap_or_default(),
                    start_ticks: None,
                    cluster: engine.cluster(),
                };
                (handle, false)
            }
            Err(EngineError::Host(fault)) => {
                let why = format!("not started: waiting on the host: {fault}");
                self.finish_run(run_id, RunState::Stopped, Some(&why)).await;
                return Err(SubmitError::Host(fault));
            }
            Err(e) => {
                let mut reason = secrets.mask(&e.to_string());
                if let Some(placed) = engine.place_refusal(&deployed.spec, &reason) {
                    reason = format!("{placed}\n{reason}");
                }
                self.finish_run(run_id, RunState::Failed, Some(&reason))
                    .await;
                return Err(SubmitError::Refused(reason));
            }
        };
        if engine.kind().keeps_state() {
            self.started_from = Some((run_id, self.start_point(&deployed.spec, run_id).await));
            if let Some(location) = &self.restore {
                let store = &self.ctx.store;
                store.record(
                    Some(&self.name),
                    "where the run started from",
                    store.record_run_start(&self.name, run_id, location).await,
                );
            }
        }
        self.record_handle(run_id, &handle).await;
        if let Some(version) = engine.version() {
            let store = &self.ctx.store;
            store.record(
                Some(&self.name),
                "run engine version",
                store.set_run_engine_version(run_id, &version).await,
            );
        }
        let deadline = deployed
            .spec
            .timeout
            .filter(|_| batch && confirmed)
            .map(|t| Instant::now() + t);
        self.live.push(Live {
            run_id,
            handle,
            engine,
            secrets,
            deadline,
            started: Instant::now(),
            confirmed,
        });
        if confirmed {
            self.set_state(JobState::Running, None).await;
        } else {
            self.schedule_retry();
        }
        Ok(run_id)
    }

    /// What run `run_id` of `spec` starts from: [`Actor::restore`] and its age, or no state and
    /// why. A stateful job that ran before and has nothing to start from raises `started_empty`.
    async fn start_point(&self, spec: &spec::JobSpec, run_id: i64) -> StartedFrom {
        if let Some(location) = &self.restore {
            let read = self.ctx.store.savepoint_time(&self.name, location).await;
            let taken = self
                .ctx
                .store
                .read_or_log(Some(&self.name), "savepoint time", read)
                .flatten();
            let age = taken.map(|t| {
                let ms = u64::try_from(crate::store::now_ms().saturating_sub(t)).unwrap_or(0);
                Duration::from_millis(ms)
            });
            return StartedFrom::point(location, age);
        }
        if spec.upgrade == spec::Upgrade::Stateless {
            return StartedFrom::Nothing("`upgrade: stateless`".into());
        }
        let read = self.ctx.store.runs(&self.name, 16).await;
        let ran_before = self
            .ctx
            .store
            .read_or_log(Some(&self.name), "runs", read)
            .is_some_and(|runs| {
                runs.iter()
                    .any(|r| r.id != run_id && r.handle.is_some() && r.state != RunState::Running)
            });
        if !ran_before {
            return StartedFrom::Nothing("its first run".into());
        }
        let why = self.no_state.clone().unwrap_or_else(|| {
            "no savepoint or retained checkpoint of an earlier run is recorded".into()
        });
        self.event(Some(run_id), &JobEvent::StartedEmpty { why: why.clone() })
            .await;
        StartedFrom::Nothing(why)
    }

    /// Submits the deployed version and records `event` with the run; a refused submit is
    /// `deploy_failed` and counts as a failed run for the restart policy; a host fault makes
    /// the job wait on the host, this start tried again when the host allows.
    pub(super) async fn start(&mut self, event: JobEvent, batch: bool) {
        match self.submit(batch).await {
            Ok(run_id) => self.event(Some(run_id), &event).await,
            Err(SubmitError::Host(fault)) => self.wait_on_host(fault, Some((event, batch))).await,
            Err(SubmitError::Refused(reason)) => {
                self.event(
                    None,
                    &JobEvent::DeployFailed {
                        reason: reason.clone(),
                    },
                )
                .await;
                let ran_for = Duration::ZERO;
                self.on_error(Stall::Nothing, StepError::Transient { reason, ran_for })
                    .await;
            }
        }
    }

    /// Records which secrets run `run_id` was given (names and keyed fingerprint, never the
    /// values) and holds the values in memory to mask its log (`log`) until it ends. A run
    /// whose record failed has its log withheld once the daemon no longer holds the values.
    async fn hold_secrets(
        &self,
        run_id: i64,
        secrets: &std::sync::Arc<crate::secrets::RunSecrets>,
        log: &std::path::Path,
    ) {
        let mac = (!secrets.is_empty()).then(|| secrets.fingerprint(self.ctx.secrets.key()));
        let store = &self.ctx.store;
        store.record(
            Some(&self.name),
            "run secrets",
            store
                .set_run_secrets(run_id, &secrets.names(), mac.as_deref())
                .await,
        );
        self.ctx
            .secrets
            .hold(run_id, secrets.clone(), log.to_path_buf());
    }

    /// Stops every live run (with a savepoint where the engine keeps state and `keep_state`).
    /// A run that could not be stopped stays live, and nothing new may start: waiting.
    pub(super) async fn stop_all(&mut self, why: &str, keep_state: bool) -> Result<(), StepError> {
        self.stop_all_as(RunState::Stopped, why, keep_state).await
    }

    /// [`Actor::stop_all`], recording each run as ended as `end`.
    pub(super) async fn stop_all_as(
        &mut self,
        end: RunState,
        why: &str,
        keep_state: bool,
    ) -> Result<(), StepError> {
        let mut kept = Vec::new();
        for live in std::mem::take(&mut self.live) {
            if let Err(live) = self.stop_run(live, end, why, keep_state).await {
                kept.push(live);
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.live.extend(kept);
        Err(StepError::Waiting {
            after: self.engine_retry.backoff.peek(),
        })
    }

    /// Stops a run, recording it as ended as `end`.
    ///
    /// A run that does not outlive the daemon (local) stays live in the store until the engine
    /// says it is gone, so a daemon killed during the grace period finds it at its next start
    /// and stops it then (its exit is not taken for a failure: the actor no longer counts it as
    /// live). A run that outlives the daemon is recorded once its engine stopped it (with a
    /// savepoint when `keep_state`, kept in the store and used by the next run); when the engine
    /// does not answer or refuses, the run is handed back: it may still be running.
    pub(super) async fn stop_run(
        &mut self,
        live: Live,
        end: RunState,
        why: &str,
        keep_state: bool,
    ) -> Result<(), Live> {
        if live.engine.runs_survive_daemon() {
            return self.stop_kept_run(live, end, why, keep_state).await;
        }
        match live.engine.stop(&live.handle, STOP_GRACE).await {
            Ok(()) => tracing::info!(job = %self.name, run = live.run_id, "stopped: {why}"),
            Err(err) => {
                let reason = format!("could not stop run: {err}");
                self.event(Some(live.run_id), &JobEvent::Failed { reason })
                    .await;
            }
        }
        self.finish_run(live.run_id, end, Some(why)).await;
        Ok(())
    }

    /// Stops a run that outlives the daemon (see [`Actor::stop_run`]).
    async fn stop_kept_run(
        &mut self,
        live: Live,
        end: RunState,
        why: &str,
        keep_state: bool,
    ) -> Result<(), Live> {
        let location = live.engine.location();
        if keep_state && let Some(max_age) = self.last_state {
            match self.stop_at_last_state(&live, max_age).await {
                Ok(true) => {
                    self.ctx.outages.up(&self.ctx.events, &location).await;
                    self.finish_run(live.run_id, end, Some(why)).await;
                    return Ok(());
                }
                Ok(false) => {} // no young checkpoint: a savepoint, below
                Err(EngineError::Unreachable(e)) => {
                    self.ctx.outages.down(&self.ctx.events, &location, &e).await;
                    return Err(live);
                }
                Err(e) => {
                    let reason = format!("could not cancel run: {e}");
                    self.event(Some(live.run_id), &JobEvent::Failed { reason })
                        .await;
                    return Err(live);
                }
            }
        }
        let result = if keep_state {
            match live
                .engine
                .stop_with_savepoint(&live.handle, STOP_GRACE)
                .await
            {
                Err(EngineError::Refused(e) | EngineError::Other(e)) => {
                    let reason =
                        format!("could not stop with a savepoint ({e}); cancelling instead");
                    self.event(Some(live.run_id), &JobEvent::Failed { reason })
                        .await;
                    live.engine
                        .stop(&live.handle, STOP_GRACE)
                        .await
                        .map(|()| None)
                }
                r => r.map(|o| o.savepoint),
            }
        } else {
            live.engine
                .stop(&live.handle, STOP_GRACE)
                .await
                .map(|()| None)
        };
        match result {
            Ok(savepoint) => {
                self.ctx.outages.up(&self.ctx.events, &location).await;
                self.finish_run(live.run_id, end, Some(why)).await;
                match savepoint {
                    Some(sp) => {
                        let cluster = live
                            .handle
                            .cluster
                            .clone()
                            .or_else(|| live.engine.cluster());
                        self.keep_savepoint(live.run_id, &sp, cluster.as_deref())
                            .await;
                        let why = format!("stopped with savepoint {sp}: {why}");
                        self.event(Some(live.run_id), &JobEvent::Stopped { why })
                            .await;
                        self.restore = Some(sp);
                        self.no_state = None;
                    }
                    // A stop that was to keep state but reported no savepoint (the job had
                    // ended already, or the answer was lost): start from what it left.
                    None if keep_state => {
                        tracing::warn!(job = %self.name, run = live.run_id, "stopped with no savepoint reported: {why}");
                        if let Ok(StateLeft::Point(point)) =
                            live.engine.restore_point(&live.handle).await
                        {
                            self.keep_point(live.run_id, &point).await;
                            let why = format!(
                                "stopped; starting from its latest state {}: {why}",
                                point.location
                            );
                            self.event(Some(live.run_id), &JobEvent::Stopped { why })
                                .await;
                        }
                    }
                    None => tracing::info!(job = %self.name, run = live.run_id, "stopped: {why}"),
                }
                Ok(())
            }
            Err(EngineError::Unreachable(e)) => {
                self.ctx.outages.down(&self.ctx.events, &location, &e).await;
                Err(live)
            }
            Err(e) => {
                let reason = format!("could not stop run: {e}");
                self.event(Some(live.run_id), &JobEvent::Failed { reason })
                    .await;
                Err(live)
            }
        }
    }

    /// `upgrade: last-state`: cancels the run keeping its retained checkpoints when its latest
    /// completed one is younger than `max_age`, and keeps the newest it left as where the next
    /// run starts. False when it has none that young (nothing was stopped: a savepoint is taken
    /// instead).
    async fn stop_at_last_state(
        &mut self,
        live: &Live,
        max_age: Duration,
    ) -> Result<bool, EngineError> {
        let Some(point) = live.engine.last_state(&live.handle, max_age).await? else {
            tracing::info!(job = %self.name, run = live.run_id, "upgrade: last-state: no checkpoint younger than {}: a savepoint instead", humantime::format_duration(max_age));
            return Ok(false);
        };
        live.engine.stop(&live.handle, STOP_GRACE).await?;
        // A checkpoint may have completed between the look and the cancel: the newest one.
        let point = match live.engine.restore_point(&live.handle).await {
            Ok(StateLeft::Point(p)) if p.taken_ms >= point.taken_ms => p,
            _ => point,
        };
        self.keep_point(live.run_id, &point).await;
        let why = format!(
            "cancelled with its retained checkpoints (upgrade: last-state); starting from {}",
            point.location
        );
        self.event(Some(live.run_id), &JobEvent::Stopped { why })
            .await;
        Ok(true)
    }

    /// Keeps the savepoint a stop of run `run_id` on `cluster` took, with why it was taken.
    async fn keep_savepoint(&self, run_id: i64, location: &str, cluster: Option<&str>) {
        let store = &self.ctx.store;
        let new = crate::store::NewSavepoint {
            run_id: Some(run_id),
            kind: SavepointKind::Savepoint,
            cause: self.stop_cause,
            cluster,
            time: None,
        };
        store.record(
            Some(&self.name),
            "savepoint",
            store.add_savepoint_by(&self.name, location, new).await,
        );
    }

    /// Looks at the cluster again after the engine backoff's wait (see [`Actor::arm_retry`]).
    pub(super) fn schedule_retry(&mut self) {
        let after = self.engine_retry.backoff.peek();
        self.arm_retry(Instant::now() + after);
    }

    /// Looks again at runs whose submit was not confirmed, then converges again if a cluster
    /// kept a converge from finishing; true when the actor is done.
    pub(super) async fn retry(&mut self) -> bool {
        let mut waiting = false;
        for i in (0..self.live.len()).rev() {
            if self.live[i].confirmed {
                continue;
            }
            let (engine, handle) = (self.live[i].engine.clone(), self.live[i].handle.clone());
            match engine.status(std::slice::from_ref(&handle)).await {
                Ok(status) => {
                    self.ctx
                        .outages
                        .up(&self.ctx.events, &engine.location())
                        .await;
                    if status.first() == Some(&RunStatus::Vanished) {
                        let live = self.live.remove(i);
                        self.not_submitted(live).await;
                    } else {
                        self.live[i].confirmed = true;
                        self.set_state(JobState::Running, None).await;
                        tracing::info!(job = %self.name, run = handle.run_id, "the cluster has the run");
                    }
                }
                Err(e) => {
                    if let EngineError::Unreachable(m) = &e {
                        self.ctx
                            .outages
                            .down(&self.ctx.events, &engine.location(), m)
                            .await;
                    }
                    waiting = true;
                }
            }
        }
        if std::mem::take(&mut self.engine_retry.converge) && self.converge().await {
            return true;
        }
        if waiting || self.engine_retry.converge {
            if self.timers.retry.is_none() {
                self.schedule_retry();
            }
        } else {
            self.engine_retry.backoff.reset();
        }
        false
    }

    /// A run whose submit never reached its cluster: submitted again (not a failure: the
    /// restart policy does not count it). On an engine that takes the run's id from jobkeeper
    /// (Flink), the same run is submitted again under the same id, so a first submit that
    /// arrives late (held in the network, or sent by a former leader) meets a duplicate and
    /// never starts the job twice; elsewhere the run is recorded as never submitted and a new
    /// one starts.
    async fn not_submitted(&mut self, live: Live) {
        if live.engine.engine_id_for(&self.name, live.run_id).is_some()
            && self.standing != Standing::GaveUp
            && let Some(deployed) = self.applied.clone()
        {
            let batch = deployed.is_batch();
            tracing::info!(job = %self.name, run = live.run_id, "the cluster does not have the run: submitted again under its own id");
            match self
                .submit_run(live.run_id, &deployed, live.engine.clone(), batch)
                .await
            {
                Ok(run_id) => {
                    let why = format!(
                        "submitted again as the same run {run_id}: its first submit's answer was lost, \
                         and its cluster does not have it"
                    );
                    self.event(Some(run_id), &JobEvent::Started { why }).await;
                }
                Err(SubmitError::Host(fault)) => self.wait_on_host(fault, None).await,
                Err(SubmitError::Refused(reason)) => {
                    self.event(None, &JobEvent::Failed { reason }).await;
                }
            }
            return;
        }
        let why = "never reached the cluster (its answer to the submit was lost)";
        self.finish_run(live.run_id, RunState::Stopped, Some(why))
            .await;
        let batch = self.applied.as_ref().is_some_and(|a| a.is_batch());
        if self.applied.is_some() && self.standing != Standing::GaveUp {
            let why = format!("submitted again: run {} {why}", live.run_id);
            self.start(JobEvent::Started { why }, batch).await;
        }
    }

    /// Takes over the runs a previous daemon left on engines whose runs outlive it (by their
    /// recorded engine ids), and the latest savepoint to start from. A store that cannot be
    /// read is an error, and nothing is taken over.
    pub(super) async fn adopt(&mut self) -> Result<(), StoreError> {
        let savepoint = self.ctx.store.savepoints(&self.name, 1).await?;
        let runs = self.ctx.store.runs(&self.name, 16).await?;
        self.restore = savepoint.into_iter().next().map(|s| s.location);
        let dir = self.ctx.settings.get().secrets_dir.clone();
        for run in runs.into_iter().rev() {
            if run.state == RunState::Starting && run.handle.is_none() {
                self.adopt_unconfirmed(&run);
                continue;
            }
            if run.state != RunState::Running {
                continue;
            }
            let Some(engine) = self.ctx.engine_of_run(&run) else {
                continue;
            };
            let Some(handle) = run.handle.clone().filter(|_| engine.runs_survive_daemon()) else {
                continue;
            };
            let event = JobEvent::Adopted {
                location: engine.location(),
                engine_id: handle.engine_id.clone(),
                named: None,
            };
            // The values it was given, read again: trusted only when they are the ones its
            // submit recorded the fingerprint of (else its log is withheld).
            let secrets = crate::secrets::seal::trusted(&run, &self.ctx.secrets, dir.as_deref())
                .map(std::sync::Arc::new)
                .unwrap_or_default();
            if secrets.is_empty() && run.secrets.as_ref().is_some_and(|n| !n.is_empty()) {
                tracing::warn!(job = %self.name, run = run.id, "the secrets this run was given changed or are gone: its log is withheld");
            }
            self.ctx
                .secrets
                .hold(run.id, secrets.clone(), run.log_path.clone().into());
            self.live.push(Live {
                run_id: run.id,
                handle,
                engine,
                secrets,
                deadline: None,
                started: Instant::now(),
                confirmed: true,
            });
            self.event(Some(run.id), &event).await;
        }
        Ok(())
    }

    /// A run a previous daemon (or leader) was submitting when it stopped, on an engine that
    /// takes the run's id from jobkeeper: looked for by that id, and submitted again under it
    /// when the cluster does not have it ([`Self::retry`]). Other engines' runs of that kind
    /// were ended by [`super::recover`].
    fn adopt_unconfirmed(&mut self, run: &crate::store::RunRow) {
        let Some(engine) = self.ctx.engine_of_run(run) else {
            return;
        };
        let Some(engine_id) = engine
            .engine_id_for(&self.name, run.id)
            .filter(|_| engine.runs_survive_daemon())
        else {
            return;
        };
        tracing::info!(job = %self.name, run = run.id, %engine_id, "a run whose submit was not answered: looked for by its id");
        self.live.push(Live {
            run_id: run.id,
            handle: RunHandle {
                run_id: run.id,
                engine_id,
                start_ticks: None,
                cluster: engine.cluster(),
            },
            engine,
            secrets: Default::default(),
            deadline: None,
            started: Instant::now(),
            confirmed: false,
        });
        self.schedule_retry();
    }

    /// A run ended; true when the actor is done.
    pub(super) async fn on_exit(&mut self, exit: RunExit) -> bool {
        let Some(pos) = self.live.iter().position(|l| l.run_id == exit.run_id) else {
            return false; // a run this actor stopped itself
        };
        let live = self.live.remove(pos);
        if !live.confirmed && exit.status == RunStatus::Vanished {
            self.not_submitted(live).await;
            return false;
        }
        let batch = self.applied.as_ref().is_some_and(|a| a.is_batch());
        match exit.status {
            RunStatus::Running => self.live.push(live),
            RunStatus::Succeeded if batch => self.succeeded(&live).await,
            status => return self.failed(live, status).await,
        }
        false
    }

    /// A batch run succeeded.
    async fn succeeded(&mut self, live: &Live) {
        self.finish_run(live.run_id, RunState::Succeeded, None)
            .await;
        self.restarts.succeeded();
        let how = if live.engine.runs_survive_daemon() {
            "run finished with success on the cluster"
        } else {
            "run finished with exit 0"
        };
        let how = how.to_string();
        self.event(Some(live.run_id), &JobEvent::Succeeded { how })
            .await;
        if std::mem::replace(&mut self.standing, Standing::Ok) != Standing::Ok {
            let why = "a run succeeded after failures".to_string();
            self.event(Some(live.run_id), &JobEvent::Recovered { why })
                .await;
        }
        if self.live.is_empty() {
            self.set_state(JobState::Succeeded, None).await;
        }
    }

    /// A run failed, vanished, or (a service job) finished; true when the actor is done.
    async fn failed(&mut self, live: Live, status: RunStatus) -> bool {
        let state = if matches!(status, RunStatus::Succeeded) {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        let drift = matches!(status, RunStatus::CancelledOutside(_));
        let reason = match status {
            RunStatus::Failed(r) | RunStatus::CancelledOutside(r) => live.secrets.mask(&r),
            RunStatus::Vanished => "the run vanished".to_string(),
            _ => "a service job finished with success; it must always run".to_string(),
        };
        self.finish_run(live.run_id, state, Some(&reason)).await;
        let event = if drift {
            // Never one of jobkeeper's own stops: those leave the live list before they reach
            // the cluster.
            JobEvent::Drift {
                what: reason.clone(),
                action: "started again from its newest checkpoint or savepoint (its restart \
                         says which), under its restart policy"
                    .into(),
            }
        } else {
            JobEvent::Failed {
                reason: reason.clone(),
            }
        };
        self.event(Some(live.run_id), &event).await;
        if self.standing == Standing::Ok {
            self.standing = Standing::Failing;
        }
        self.timers.recover = None;
        let waited_for = std::mem::take(&mut self.engine_retry.converge);
        if !waited_for && !batch_of(self) && self.rolls_back() {
            // The bad version's state is not kept: the previous version starts from the
            // savepoint its upgrade took, never from the bad one's checkpoint.
            self.roll_back(&reason, Some(live.run_id)).await;
            return false;
        }
        self.keep_checkpoint(&live).await;
        if waited_for {
            // A new version was waiting for this run to stop: it is what starts now.
            self.timers.retry = None;
            return self.converge().await;
        }
        let ran_for = live.started.elapsed();
        self.on_error(Stall::Nothing, StepError::Transient { reason, ran_for })
            .await;
        false
    }

    /// A run that ended: its newest completed checkpoint or savepoint (if its engine kept one)
    /// goes into the savepoint history and is where the next run starts from, unless the store
    /// knows a newer savepoint. When it left nothing, the next run starts from what the store
    /// last gave (the savepoint its own run started from), or with no state, and why is kept.
    async fn keep_checkpoint(&mut self, live: &Live) {
        match live.engine.restore_point(&live.handle).await {
            Ok(StateLeft::Point(p)) => {
                let read = self.ctx.store.savepoints(&self.name, 1).await;
                let newer = self
                    .ctx
                    .store
                    .read_or_log(Some(&self.name), "savepoints", read)
                    .and_then(|rows| rows.into_iter().next())
                    .filter(|row| p.taken_ms.is_some_and(|t| row.time > t));
                match newer {
                    Some(row) => {
                        tracing::info!(job = %self.name, "a savepoint newer than the run's checkpoint is kept: {}", row.location);
                        self.restore = Some(row.location);
                        self.no_state = None;
                    }
                    None => self.keep_point(live.run_id, &p).await,
                }
            }
            Ok(StateLeft::Nothing(why)) => {
                tracing::info!(job = %self.name, "no checkpoint to restart from: {why}");
                if self.restore.is_none() {
                    self.no_state = Some(why);
                }
            }
            Err(e) => {
                tracing::warn!(job = %self.name, "no checkpoint to restart from: {e}");
                if self.restore.is_none() {
                    self.no_state = Some(format!("its cluster did not say what it left: {e}"));
                }
            }
        }
    }

    /// Keeps a checkpoint (or savepoint) a run left, with when it completed, as where the next
    /// run starts from.
    async fn keep_point(&mut self, run_id: i64, p: &StatePoint) {
        let store = &self.ctx.store;
        let taken = p.taken_ms.unwrap_or_else(crate::store::now_ms);
        store.record(
            Some(&self.name),
            "checkpoint",
            store
                .add_savepoint_taken(
                    &self.name,
                    Some(run_id),
                    &p.location,
                    SavepointKind::Checkpoint,
                    taken,
                )
                .await,
        );
        self.restore = Some(p.location.clone());
        self.no_state = None;
    }
}

fn batch_of(actor: &Actor) -> bool {
    actor.applied.as_ref().is_some_and(|a| a.is_batch())
}
