//! A RUNNING run the health sweep finds unhealthy ([`super::decide::unhealthy`] says when): it
//! raises `unhealthy` with the reason and the engine's root exception, then is rolled back (a new
//! version on probation, see `rollback`) or restarted under the job's restart policy: stopped
//! with a savepoint where it can take one (else cancelled, and started from the latest
//! savepoint or retained checkpoint the store knows), counted as a restart, and given up on
//! like any failed run.

use super::actor::{Actor, Standing};
use super::decide::{self, RestartSample};
use crate::engine::HealthFacts;
use crate::event::JobEvent;
use crate::store::{RunState, now_ms};

impl Actor {
    /// Judges one sweep's figures of run `run_id`.
    pub(super) async fn on_health(&mut self, run_id: i64, mut facts: HealthFacts) {
        let Some(pos) = self.live.iter().position(|l| l.run_id == run_id) else {
            return;
        };
        let Some(applied) = &self.applied else {
            return;
        };
        let guard = self
            .ctx
            .settings
            .get()
            .guard(&applied.spec.env, &applied.spec.guard);
        if self.health.0 != Some(run_id) {
            self.health = (Some(run_id), Vec::new());
        }
        let now = now_ms();
        let mut verdict = decide::unhealthy(&guard, &facts, &self.health.1, now);
        if verdict.is_some() && guard.checkpoint_age.is_some() && facts.checkpoints {
            // The sweep's checkpoint time can lag; judge again with the engine's fresh one.
            let live = &self.live[pos];
            if let Some(fresh) = live.engine.latest_checkpoint_ms(&live.handle).await {
                facts.last_checkpoint_ms = facts.last_checkpoint_ms.max(Some(fresh));
                verdict = decide::unhealthy(&guard, &facts, &self.health.1, now);
            }
        }
        let samples = &mut self.health.1;
        samples.push(RestartSample {
            at_ms: now,
            restarts: facts.restarts,
        });
        // Keep one sample at or before the window's start, and what came after it.
        if let Some(limit) = guard.restarts {
            let start = now - i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
            let before = samples.iter().filter(|s| s.at_ms <= start).count();
            samples.drain(..before.saturating_sub(1));
        } else {
            samples.drain(..samples.len().saturating_sub(1));
        }
        let Some(reason) = verdict else {
            return;
        };
        let live = &self.live[pos];
        let exception = live.engine.root_exception(&live.handle).await;
        let exception = exception.map(|e| live.secrets.mask(&e));
        let event = JobEvent::Unhealthy {
            reason: reason.clone(),
            exception,
        };
        let incident = crate::condition::Incident {
            run_id,
            what: reason.clone(),
        };
        self.set_incident(|i| i.unhealthy = Some(incident)).await;
        self.event(Some(run_id), &event).await;
        self.health = (None, Vec::new());
        if self.rolls_back() {
            self.roll_back(&format!("unhealthy: {reason}"), Some(run_id))
                .await;
            return;
        }
        let live = self.live.remove(pos);
        let ran_for = live.started.elapsed();
        let why = format!("unhealthy: {reason}");
        if let Err(live) = self.stop_run(live, RunState::Failed, &why, true).await {
            self.live.push(live); // the cluster did not answer: the next sweep looks again
            return;
        }
        if self.standing == Standing::Ok {
            self.standing = Standing::Failing;
        }
        self.timers.recover = None;
        self.schedule_restart(&why, ran_for).await;
    }
}
