//! What an actor does when its host runs out (a full disk, file descriptors, a store that
//! refuses writes) at a run's start or end: the job *waits on the host*. The run that could not
//! start is tried again after a backoff of its own ([`HOST_WAIT`]) without spending a restart
//! attempt; a run end or run handle the store refused is kept here and written again before
//! anything else; the job's condition is shown through [`super::HostWaits`]; and the first
//! start or write that goes through again ends the episode (`host_recovered`).

use std::time::Duration;

use tokio::time::Instant;

use super::actor::Actor;
use super::hostwait::Waiting;
use crate::engine::RunHandle;
use crate::event::JobEvent;
use crate::host::{HostFault, Resource};
use crate::store::{JobState, RunState, StoreError};

/// First and longest wait before trying again what waits on the host.
pub const HOST_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(15));

/// What the job waits on the host for.
pub(super) struct HostWait {
    /// The resource that ran out.
    pub resource: Resource,
    /// Since when (ms since the epoch).
    pub since: i64,
    /// The start that could not happen, tried again first (its event and whether the job is a
    /// batch job); `None` when only records wait.
    pub start: Option<(JobEvent, bool)>,
}

/// A run record the store refused.
pub(super) enum Unrecorded {
    /// How a run ended.
    End {
        run_id: i64,
        state: RunState,
        reason: Option<String>,
    },
    /// The handle of a run that started.
    Handle { run_id: i64, handle: RunHandle },
}

impl Actor {
    /// A store write's failure as a host fault named for this daemon's state folder.
    pub(super) fn store_fault(&self, err: &StoreError) -> HostFault {
        crate::host::store_fault(err, self.ctx.host.state_dir())
    }

    /// Records how a run ended; when the store refuses, the end is kept and written again
    /// once it takes writes, and the job waits on the host meanwhile (never shown running).
    pub(super) async fn finish_run(&mut self, run_id: i64, state: RunState, reason: Option<&str>) {
        let store = &self.ctx.store;
        let result = store.finish_run(run_id, state, reason).await;
        if let Err(err) = &result {
            let fault = self.store_fault(err);
            store.record(Some(&self.name), "run end", result);
            self.unrecorded.push(Unrecorded::End {
                run_id,
                state,
                reason: reason.map(str::to_string),
            });
            self.note_host_fault(fault).await;
        }
        // The log is masked in place with the secrets the run was given, which are then
        // forgotten (kept while that fails).
        crate::secrets::seal::seal_ended(&self.ctx.secrets, &self.ctx.store, &self.name, run_id);
    }

    /// Records a started run's handle; when the store refuses, it is kept and written again.
    pub(super) async fn record_handle(&mut self, run_id: i64, handle: &RunHandle) {
        let store = &self.ctx.store;
        let result = store.set_run_running(run_id, handle).await;
        if let Err(err) = &result {
            let fault = self.store_fault(err);
            store.record(Some(&self.name), "run handle", result);
            self.unrecorded.push(Unrecorded::Handle {
                run_id,
                handle: handle.clone(),
            });
            self.note_host_fault(fault).await;
        }
    }

    /// Writes the records the store refused, oldest first; the first refusal stops and is the
    /// error (the records left stay kept).
    pub(super) async fn flush_unrecorded(&mut self) -> Result<(), HostFault> {
        while let Some(first) = self.unrecorded.first() {
            let store = &self.ctx.store;
            let result = match first {
                Unrecorded::End {
                    run_id,
                    state,
                    reason,
                } => store.finish_run(*run_id, *state, reason.as_deref()).await,
                Unrecorded::Handle { run_id, handle } => {
                    store.set_run_running(*run_id, handle).await
                }
            };
            if let Err(err) = result {
                let fault = self.store_fault(&err);
                store.record(Some(&self.name), "run record, again", Err::<(), _>(err));
                return Err(fault);
            }
            self.unrecorded.remove(0);
        }
        Ok(())
    }

    /// Whether a run may start: the records the store refused are written first, and the
    /// daemon keeps its reserve of file descriptors ([`crate::host::fds_short`]).
    pub(super) async fn host_ready(&mut self) -> Result<(), HostFault> {
        self.flush_unrecorded().await?;
        match crate::host::fds_short() {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    /// The host ran out of something at a run's start or end: the episode's event (once), the
    /// job's condition, and the next try after the host backoff. A fault met again while
    /// waiting moves the backoff on.
    pub(super) async fn note_host_fault(&mut self, fault: HostFault) {
        let fault = self.ctx.host.named(fault);
        self.ctx.host.fault(&self.ctx.events, &fault).await;
        match &mut self.host_wait {
            Some(w) => {
                tracing::warn!(job = %self.name, resource = %fault.resource, "still waiting on the host: {}", fault.error);
                w.resource = fault.resource;
            }
            None => {
                tracing::warn!(job = %self.name, resource = %fault.resource, "waiting on the host: {}", fault.error);
                self.host_wait = Some(HostWait {
                    resource: fault.resource,
                    since: crate::store::now_ms(),
                    start: None,
                });
            }
        }
        if self.timers.host.is_none() {
            self.timers.host = Some(Instant::now() + self.host_backoff.next());
        }
        self.show_host_wait();
    }

    /// A run could not start for a host fault: `start` is tried again when the host allows
    /// (see [`Actor::retry_host`]); no restart attempt is spent and nothing is `deploy_failed`.
    pub(super) async fn wait_on_host(&mut self, fault: HostFault, start: Option<(JobEvent, bool)>) {
        self.note_host_fault(fault).await;
        if let (Some(w), Some(start)) = (&mut self.host_wait, start) {
            w.start = Some(start);
        }
        if let Some(w) = self.ctx.host.job(&self.name) {
            // Written where the store takes it (a refused descriptor); where it does not, the
            // condition shown above stands in for it.
            let store = &self.ctx.store;
            let _ = store
                .set_state(&self.name, w.state(), Some(&w.reason()))
                .await;
        }
    }

    /// Shows the job's condition (see [`super::HostWaits`]).
    fn show_host_wait(&self) {
        let Some(w) = &self.host_wait else {
            self.ctx.host.set_job(&self.name, None);
            return;
        };
        let unrecorded = self
            .unrecorded
            .iter()
            .filter_map(|u| match u {
                Unrecorded::End { run_id, state, .. } => Some((*run_id, *state)),
                Unrecorded::Handle { .. } => None,
            })
            .collect();
        let waiting = Waiting {
            resource: w.resource.clone(),
            since: w.since,
            unrecorded,
            live: !self.live.is_empty(),
        };
        self.ctx.host.set_job(&self.name, Some(waiting));
    }

    /// The host backoff's wait is over: the refused records are written, then the start that
    /// waited is tried again (or the job converges). When it all goes through, the job's wait
    /// and the episode end. True when the actor is done.
    pub(super) async fn retry_host(&mut self) -> bool {
        if let Err(fault) = self.flush_unrecorded().await {
            self.note_host_fault(fault).await;
            return false;
        }
        let Some(wait) = self.host_wait.take() else {
            self.host_backoff.reset();
            return false;
        };

        let done = match wait.start {
            Some((event, batch)) => {
                self.start(event, batch).await;
                false
            }
            None => self.converge().await,
        };
        if let Some(again) = &mut self.host_wait {
            // The same wait goes on: it is shown since it began.
            again.since = wait.since;
            self.show_host_wait();
        } else {
            tracing::info!(job = %self.name, resource = %wait.resource, "no longer waiting on the host");
            self.host_backoff.reset();
            self.ctx.host.set_job(&self.name, None);
            self.ctx
                .host
                .recovered(&self.ctx.events, &wait.resource)
                .await;
            if self.live.is_empty() && !done {
                // The condition shown no longer stands: the store's own state is shown again.
                self.refresh_idle_state().await;
            }
        }
        done
    }

    /// After a wait on the host that ended with nothing live (a batch job between runs, a job
    /// in backoff): the state the store shows is made true again.
    async fn refresh_idle_state(&self) {
        let shown = self
            .ctx
            .store
            .job(&self.name)
            .await
            .ok()
            .flatten()
            .map(|r| r.state);
        if shown == Some(JobState::Running) {
            self.set_state(JobState::Pending, None).await;
        }
    }
}
