//! What an actor does when a timer fires: looking again at a cluster, a batch run over its
//! timeout, a restarted run that stayed up (`recovered`), a restart after a backoff, and a cron
//! tick; and the restart policy and the schedule that set those timers.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::actor::{Actor, ENGINE_WAIT, Live, Standing};
use crate::event::{Attempt, JobEvent};
use crate::health::{Decision, first_fire};
use crate::schedule::Schedule;
use crate::spec::Overlap;
use crate::store::{JobState, RunState, StoreError};

/// When the newest of `runs` started.
fn last_start(runs: &[crate::store::RunRow]) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::from_timestamp_millis(runs.first()?.started_at)
}

/// A restarted service run that stays up this long raises `recovered`.
pub const RECOVERED_AFTER: Duration = Duration::from_secs(10);

impl Actor {
    /// Handles every timer that fired; true when the actor is done.
    pub(super) async fn on_timer(&mut self) -> bool {
        let now = Instant::now();
        if self.due(now).retry {
            self.timers.retry = None;
            if self.retry().await {
                return true;
            }
        }
        // Looking again may have changed the other timers: what is due is read after it.
        let due = self.due(now);
        if due.host {
            self.timers.host = None;
            if self.retry_host().await {
                return true;
            }
        }
        if due.timeout {
            self.time_out(now).await;
        }
        if due.recover {
            self.timers.recover = None;
            self.check_recovered().await;
        }
        if due.restart {
            self.timers.restart = None;
            self.restart_failed(now).await;
        }
        if due.fire {
            self.timers.fire = None;
            self.fire().await;
            if self.standing != Standing::GaveUp {
                self.schedule_next(false).await;
            }
        }
        if self.periodic.due.is_some_and(|t| t <= now) {
            self.periodic_savepoint().await;
        }
        false
    }

    fn due(&self, now: Instant) -> super::decide::Due {
        let timeout = self.live.iter().filter_map(|l| l.deadline).min();
        super::decide::Timers {
            timeout,
            ..self.timers
        }
        .due(now)
    }

    /// Batch runs over their timeout are stopped and count as failed.
    async fn time_out(&mut self, now: Instant) {
        let (expired, keep): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| l.deadline.is_some_and(|d| d <= now));
        self.live = keep;
        for live in expired {
            let run_id = live.run_id;
            let timeout = self
                .applied
                .as_ref()
                .and_then(|a| a.spec.timeout)
                .unwrap_or_default();
            let reason = format!("timed out after {}", humantime::format_duration(timeout));
            if let Err(mut live) = self.stop_run(live, RunState::Failed, &reason, false).await {
                live.deadline = Some(now + ENGINE_WAIT.1); // the cluster did not answer
                self.live.push(live);
                continue;
            }
            self.event(
                Some(run_id),
                &JobEvent::Failed {
                    reason: reason.clone(),
                },
            )
            .await;
            self.schedule_restart(&reason, timeout).await;
        }
    }

    /// A restarted service run that is still up has recovered.
    async fn check_recovered(&mut self) {
        if self.standing != Standing::Ok && !self.live.is_empty() {
            self.standing = Standing::Ok;
            let run = self.live.first().map(|l| l.run_id);
            let why = format!(
                "running again for {} after failures",
                humantime::format_duration(RECOVERED_AFTER)
            );
            self.event(run, &JobEvent::Recovered { why }).await;
        }
    }

    /// The backoff of a failed run is over: start it again.
    async fn restart_failed(&mut self, now: Instant) {
        let Some(batch) = self.applied.as_ref().map(|a| a.is_batch()) else {
            return;
        };
        if !self.live.is_empty() && !batch {
            return;
        }
        self.restarts.restarted(now);
        let what = if batch {
            "failed run retried"
        } else {
            "resubmitted"
        };
        if !batch {
            self.timers.recover = Some(now + RECOVERED_AFTER);
        }
        let event = JobEvent::Restarted {
            attempt: self.pending_attempt,
            why: what.to_string(),
        };
        self.start(event, batch).await;
    }

    /// Takes up the restart attempts a previous daemon spent within the window, from the
    /// restarts the store recorded (see [`crate::store::Store::counted_restarts`]), so a daemon
    /// restart does not give a failing job its attempts again.
    pub(super) async fn resume_restarts(&mut self) -> Result<(), StoreError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        let policy = self
            .ctx
            .settings
            .get()
            .restart_policy(&applied.spec.env, &applied.spec.restart);
        let now_ms = crate::store::now_ms();
        let window = i64::try_from(policy.window.as_millis()).unwrap_or(i64::MAX);
        let since = now_ms.saturating_sub(window);
        let made = self
            .ctx
            .store
            .counted_restarts(&self.name, since, policy.attempts)
            .await?;
        let now = Instant::now();
        let at = |t: i64| {
            let age = u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0);
            now.checked_sub(Duration::from_millis(age))
        };
        self.restarts.resume(made.into_iter().rev().filter_map(at));
        Ok(())
    }

    /// Restart policy (see [`crate::health::RestartTracker`]): backoff doubling up to
    /// `max_backoff`; more than `attempts` restarts within `window` gives up until a new commit
    /// or an operator's restart.
    pub(super) async fn schedule_restart(&mut self, reason: &str, ran_for: Duration) {
        let Some(applied) = &self.applied else {
            return;
        };
        let policy = self
            .ctx
            .settings
            .get()
            .restart_policy(&applied.spec.env, &applied.spec.restart);
        match self.restarts.on_failure(Instant::now(), &policy, ran_for) {
            Decision::GiveUp { restarts } => {
                self.standing = Standing::GaveUp;
                self.timers.restart = None;
                // A batch job stops at its cron times too until a new commit or a restart.
                self.timers.fire = None;
                self.fire_at = None;
                let event = JobEvent::GaveUp {
                    restarts,
                    window: policy.window,
                    reason: reason.to_string(),
                };
                self.event(None, &event).await;
                if self.live.is_empty() {
                    self.set_state(JobState::GaveUp, Some(&event.message()))
                        .await;
                }
            }
            Decision::RestartAfter { delay, attempt, of } => {
                self.timers.restart = Some(Instant::now() + delay);
                self.pending_attempt = Attempt { n: attempt, of };
                if self.live.is_empty() {
                    let msg = format!(
                        "restart {attempt}/{of} in {}",
                        humantime::format_duration(delay)
                    );
                    self.set_state(JobState::Backoff, Some(&msg)).await;
                }
            }
        }
    }

    /// Sets the next cron time of a batch job. With `allow_late`, a tick missed while the
    /// daemon was down starts now, once, if recent enough.
    pub(super) async fn schedule_next(&mut self, allow_late: bool) {
        self.timers.fire = None;
        self.fire_at = None;
        let Some(expr) = self.applied.as_ref().and_then(|a| a.spec.schedule.clone()) else {
            return;
        };
        let Ok(schedule) = Schedule::parse(&expr) else {
            return;
        };
        let tz = self.ctx.settings.get().timezone;
        let now = Utc::now().with_timezone(&tz);
        let fire = if allow_late {
            let read = self.ctx.store.runs(&self.name, 1).await;
            let what = "latest run, for a missed cron tick";
            match self.ctx.store.read_or_log(Some(&self.name), what, read) {
                Some(runs) => first_fire(&schedule, now, last_start(&runs)),
                // Unread, a missed tick is not started late: it could be a second run of it.
                None => schedule.next_after(now).map(|t| (t, false)),
            }
        } else {
            schedule.next_after(now).map(|t| (t, false))
        };
        if let Some((t, _)) = fire {
            let wait = (t.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default();
            self.timers.fire = Some(Instant::now() + wait);
            self.fire_at = Some(t);
        }
    }

    /// A cron tick of a batch job.
    async fn fire(&mut self) {
        let overlap = self
            .applied
            .as_ref()
            .map_or(Overlap::Forbid, |a| a.spec.overlap);
        if !self.live.is_empty() {
            match overlap {
                Overlap::Forbid => {
                    let why = "previous run still live (overlap: forbid)".to_string();
                    self.event(None, &JobEvent::Skipped { why }).await;
                    return;
                }
                Overlap::Replace => {
                    let why = "replaced by the next scheduled run";
                    if self.stop_all(why, false).await.is_err() {
                        let why = "the previous run could not be stopped".to_string();
                        self.event(None, &JobEvent::Skipped { why }).await;
                        return;
                    }
                }
                Overlap::Allow => {}
            }
        }
        match self.submit(true).await {
            Ok(run_id) => {
                let why = "scheduled run started".to_string();
                self.event(Some(run_id), &JobEvent::Started { why }).await;
            }
            Err(super::runs::SubmitError::Host(fault)) => {
                let why = "scheduled run started after waiting on the host".to_string();
                self.wait_on_host(fault, Some((JobEvent::Started { why }, true)))
                    .await;
            }
            Err(super::runs::SubmitError::Refused(reason)) => {
                let state = self.idle_or_running(JobState::Failed);
                self.set_state(state, Some(&reason)).await;
                self.event(None, &JobEvent::DeployFailed { reason }).await;
            }
        }
    }
}
