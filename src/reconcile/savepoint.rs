//! Savepoints a job's run keeps running through: an operator's (`jobkeeper savepoint`) and the
//! periodic ones its `savepoints.schedule` or `every` asks for.
//!
//! Both are taken by the job's actor, one message at a time like everything else it does, so a
//! savepoint never overlaps another one of the same job, nor an upgrade's stop. The next
//! periodic savepoint is due after the newest periodic one the store holds (at most one late,
//! at once, when the daemon was down at its time), so a daemon restart takes it once, not
//! twice. One that fails raises `savepoint_failed` and the job keeps running.

use chrono::Utc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::actor::Actor;
use crate::event::JobEvent;
use crate::spec::SavepointSchedule;
use crate::store::{NewSavepoint, SavepointCause, SavepointKind};

/// What an operator's savepoint could not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavepointRefused {
    /// The job has no live run (or none whose submit its cluster confirmed).
    #[error("job {0} has no live run to take a savepoint of")]
    NoRun(String),
    /// The job runs on an engine that keeps no state (local, spark): which.
    #[error("job {job} runs on the {engine} engine, which takes no savepoints")]
    Stateless {
        /// The job.
        job: String,
        /// Its engine.
        engine: &'static str,
    },
    /// The engine could not take it: what it said.
    #[error("{0}")]
    Failed(String),
    /// The job's actor stopped before answering (the daemon is stopping, the job was removed).
    #[error("the job was stopped before its savepoint was taken")]
    Gone,
}

/// A savepoint asked of a job's actor.
pub struct SavepointAsk {
    /// Why: [`SavepointCause::Manual`] or [`SavepointCause::Periodic`].
    pub cause: SavepointCause,
    /// Who asked, and how (an operator's).
    pub who: Option<String>,
    /// Where the savepoint's location, or why none was taken, goes.
    pub reply: Option<oneshot::Sender<Result<String, SavepointRefused>>>,
}

/// The periodic savepoints an actor has armed: for which schedule, and when the next is due.
#[derive(Debug, Clone, Default)]
pub(super) struct Periodic {
    /// The schedule armed; `None`: no periodic savepoints.
    pub schedule: Option<SavepointSchedule>,
    /// When the next one is due.
    pub due: Option<Instant>,
}

impl Actor {
    /// The schedule of periodic savepoints the deployed version asks for (job, env, daemon),
    /// on an engine that keeps state; `None` for batch jobs and stateless engines.
    fn savepoint_schedule(&self) -> Option<SavepointSchedule> {
        let applied = self.applied.as_ref().filter(|a| !a.is_batch())?;
        let settings = self.ctx.settings.get();
        let engine = settings.env(&applied.spec.env)?.engine.kind();
        if !engine.keeps_state() {
            return None;
        }
        settings
            .savepoint_policy(&applied.spec.env, &applied.spec.savepoints)
            .schedule
    }

    /// Arms the periodic savepoint timer when the schedule the deployed version asks for is
    /// not the one armed (at start, and after a commit or a reload changed it).
    pub(super) async fn arm_savepoints_if_changed(&mut self) {
        let schedule = self.savepoint_schedule();
        if schedule != self.periodic.schedule {
            self.periodic.schedule = schedule;
            self.arm_savepoints().await;
        }
    }

    /// Sets when the next periodic savepoint is due: its schedule's next time after the newest
    /// periodic savepoint the store holds (now when none), at once when that time has passed.
    async fn arm_savepoints(&mut self) {
        self.periodic.due = None;
        let Some(schedule) = self.periodic.schedule.clone() else {
            return;
        };
        let tz = self.ctx.settings.get().timezone;
        let now = Utc::now().with_timezone(&tz);
        let read = self.ctx.store.last_periodic_savepoint(&self.name).await;
        let Some(last) =
            self.ctx
                .store
                .read_or_log(Some(&self.name), "last periodic savepoint", read)
        else {
            // Unread: armed from now, so a restart never takes one twice.
            self.periodic.due = due_in(&schedule, now);
            return;
        };
        let from = last
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(now, |t| t.with_timezone(&tz));
        self.periodic.due = due_in(&schedule, from);
        if let Some(t) = schedule.next_after(from) {
            tracing::debug!(job = %self.name, next = %t, "next periodic savepoint");
        }
    }

    /// The periodic savepoint timer fired.
    pub(super) async fn periodic_savepoint(&mut self) {
        self.periodic.due = None;
        let ask = SavepointAsk {
            cause: SavepointCause::Periodic,
            who: None,
            reply: None,
        };
        self.take_savepoint(ask).await;
        // The next one after this one (or, when none was taken, after now).
        let tz = self.ctx.settings.get().timezone;
        if let Some(schedule) = self.periodic.schedule.clone() {
            self.periodic.due = due_in(&schedule, Utc::now().with_timezone(&tz));
        }
    }

    /// Takes a savepoint of the live run, which keeps running; records it with its cause and
    /// cluster and where the next run starts from; `savepoint_failed` when it fails.
    pub(super) async fn take_savepoint(&mut self, ask: SavepointAsk) {
        let result = self.savepoint_now(ask.cause, ask.who).await;
        if let Some(reply) = ask.reply {
            // The asker may have gone (a client that timed out): the savepoint is kept anyway.
            let _ = reply.send(result);
        }
    }

    async fn savepoint_now(
        &mut self,
        cause: SavepointCause,
        who: Option<String>,
    ) -> Result<String, SavepointRefused> {
        let Some(live) = self.live.iter().rev().find(|l| l.confirmed) else {
            tracing::info!(job = %self.name, %cause, "no live run: no savepoint taken");
            return Err(SavepointRefused::NoRun(self.name.clone()));
        };
        let (engine, handle, run_id) = (live.engine.clone(), live.handle.clone(), live.run_id);
        if !engine.kind().keeps_state() {
            return Err(SavepointRefused::Stateless {
                job: self.name.clone(),
                engine: engine.kind().as_str(),
            });
        }
        match engine.savepoint(&handle).await {
            Ok(point) => {
                let cluster = handle.cluster.clone().or_else(|| engine.cluster());
                let new = NewSavepoint {
                    run_id: Some(run_id),
                    kind: SavepointKind::Savepoint,
                    cause,
                    cluster: cluster.as_deref(),
                    time: point.taken_ms,
                };
                let store = &self.ctx.store;
                store.record(
                    Some(&self.name),
                    "savepoint",
                    store
                        .add_savepoint_by(&self.name, &point.location, new)
                        .await,
                );
                let event = JobEvent::SavepointTaken {
                    location: point.location.clone(),
                    cause,
                    who,
                };
                self.event(Some(run_id), &event).await;
                // The newest state: a run started after this one ends starts from it.
                self.restore = Some(point.location.clone());
                self.no_state = None;
                Ok(point.location)
            }
            Err(e) => {
                let reason = live_mask(self, run_id, &e.to_string());
                let event = JobEvent::SavepointFailed {
                    cause,
                    who,
                    reason: reason.clone(),
                };
                self.event(Some(run_id), &event).await;
                Err(SavepointRefused::Failed(reason))
            }
        }
    }
}

/// `text` with the secrets of live run `run_id` masked.
fn live_mask(actor: &Actor, run_id: i64, text: &str) -> String {
    actor
        .live
        .iter()
        .find(|l| l.run_id == run_id)
        .map_or_else(|| text.to_string(), |l| l.secrets.mask(text))
}

/// When the first time of `schedule` after `from` comes, as an instant (now when it passed).
fn due_in(schedule: &SavepointSchedule, from: chrono::DateTime<chrono_tz::Tz>) -> Option<Instant> {
    let next = schedule.next_after(from)?;
    let wait = (next.with_timezone(&Utc) - Utc::now())
        .to_std()
        .unwrap_or_default();
    Some(Instant::now() + wait)
}
