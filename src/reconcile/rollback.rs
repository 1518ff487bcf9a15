//! Rollback of a bad new version. A service version deployed by a commit is on probation for
//! `ready_within` after it started; the version before it (spec, artifact and the savepoint its
//! stop took) is kept in the store meanwhile. A run that fails on probation with `rollback: true`
//! stops the new version, starts the previous one again (flink: from that savepoint) and raises
//! `rolled_back`; the bad version is refused until a commit changes the job file
//! ([`super::decide::after_bad_run`] decides, [`super::decide::decide`] keeps it refused).
//!
//! A daemon killed at any point of a rollback converges at its next start: the rollback is
//! recorded whole before the previous version is submitted, and a bad run recorded just before
//! the daemon died is rolled back at start ([`super::decide::unfinished_rollback`]).

use std::time::Duration;

use super::actor::{Actor, Stall, Standing};
use super::decide::{self, AfterBadRun, BadRun, Deployed, StepError, after_bad_run};
use crate::event::JobEvent;
use crate::store::{JobState, PreviousVersion, RunState, StoreError, VersionsRow, now_ms};

impl Actor {
    /// Reads the job's versions row; a refused version other than the desired one is forgotten
    /// (a commit changed the file while the daemon was down).
    pub(super) async fn load_versions(&mut self, desired: Option<&str>) -> Result<(), StoreError> {
        self.versions = self.ctx.store.versions(&self.name).await?;
        if self.versions.refused_hash.is_some() && self.versions.refused_hash.as_deref() != desired
        {
            self.new_commit(desired.unwrap_or_default()).await;
        }
        Ok(())
    }

    /// A commit changed the job file (to `hash`): a refused version other than it is forgotten,
    /// and so is the probation of the version it replaces.
    pub(super) async fn new_commit(&mut self, hash: &str) {
        if self.versions.refused_hash.as_deref() == Some(hash)
            || self
                .versions
                .failed
                .as_ref()
                .is_some_and(|f| f.hash == hash)
        {
            return;
        }
        if self.versions == VersionsRow::default() {
            return;
        }
        self.versions = VersionsRow::default();
        self.save_versions().await;
    }

    pub(super) async fn save_versions(&self) {
        let store = &self.ctx.store;
        store.record(
            Some(&self.name),
            "versions",
            store.set_versions(&self.name, &self.versions).await,
        );
    }

    /// A new service version deployed by a commit has started: it is on probation for its
    /// `ready_within`, with `previous` (restarted from `restore`) to go back to when its
    /// `rollback` is true.
    pub(super) async fn start_probation(
        &mut self,
        previous: Option<Deployed>,
        restore: Option<String>,
    ) {
        let Some(applied) = &self.applied else {
            return;
        };
        let guard = self
            .ctx
            .settings
            .get()
            .guard(&applied.spec.env, &applied.spec.guard);
        let previous = previous.filter(|p| guard.rollback && p.is_live_service());
        let ready_ms = i64::try_from(guard.ready_within.as_millis()).unwrap_or(i64::MAX);
        self.versions = VersionsRow {
            probation_until: previous.as_ref().map(|_| now_ms().saturating_add(ready_ms)),
            previous: previous.map(|p| {
                Box::new(PreviousVersion {
                    spec: p.spec,
                    hash: p.hash,
                    artifact: p.artifact,
                    restore,
                    commit: p.commit,
                })
            }),
            ..VersionsRow::default()
        };
        self.save_versions().await;
    }

    /// Whether a bad run now is rolled back.
    pub(super) fn rolls_back(&self) -> bool {
        let Some(applied) = &self.applied else {
            return false;
        };
        let guard = self
            .ctx
            .settings
            .get()
            .guard(&applied.spec.env, &applied.spec.guard);
        let bad = BadRun {
            rollback: guard.rollback,
            on_probation: self
                .versions
                .probation_until
                .is_some_and(|until| now_ms() < until),
            has_previous: self.versions.previous.is_some(),
        };
        after_bad_run(bad) == AfterBadRun::RollBack
    }

    /// Rolls the bad version back (see the module doc): stops what of it still runs, starts the
    /// previous version again and refuses the bad one until a new commit. `bad_run` is the run
    /// that failed or turned unhealthy.
    ///
    /// The store knows the whole rollback (the bad run ended `failed`, the previous version
    /// deployed again, the bad one refused, the state and the `rolled_back` event) before
    /// anything is submitted, so a daemon killed at any point starts the previous version at
    /// its next start, never the refused one, and the alert is not lost. Killed after the bad
    /// run's end but before the rollback, the next daemon finishes it
    /// ([`Actor::finish_rollback`]).
    pub(super) async fn roll_back(&mut self, why: &str, bad_run: Option<i64>) {
        if !self.live.is_empty() {
            // The bad version's state is not kept: the previous version starts from its own.
            let stopping = format!("rolled back: {why}");
            if let Err(err) = self.stop_all_as(RunState::Failed, &stopping, false).await {
                self.on_error(Stall::Nothing, err).await;
                return;
            }
        }
        let Some(previous) = self.versions.previous.take() else {
            return;
        };
        let bad = self.applied.replace(Deployed {
            spec: previous.spec,
            hash: previous.hash,
            artifact: previous.artifact,
            commit: previous.commit.clone(),
        });
        self.restore = previous.restore.clone();
        self.versions = VersionsRow {
            refused_hash: bad.map(|b| b.hash),
            refused_commit: self.commit.clone(),
            refused_reason: Some(format!("rolled back: {why}")),
            ..VersionsRow::default()
        };
        self.record_applied().await;
        self.save_versions().await;
        self.set_state(
            JobState::RolledBack,
            self.versions.refused_reason.as_deref(),
        )
        .await;
        self.standing = Standing::Ok;
        self.timers.restart = None;
        self.timers.recover = None;
        self.restarts.reset();
        let to = match &previous.restore {
            Some(sp) => format!("the previous version runs again from savepoint {sp}"),
            None => "the previous version runs again".to_string(),
        };
        let event = JobEvent::RolledBack {
            bad_commit: self.commit.as_deref().map(short),
            why: why.to_string(),
            to,
        };
        self.event(bad_run, &event).await;
        match self.submit(false).await {
            Ok(_) => {}
            Err(super::runs::SubmitError::Host(fault)) => self.wait_on_host(fault, None).await,
            Err(super::runs::SubmitError::Refused(reason)) => {
                self.event(
                    None,
                    &JobEvent::Failed {
                        reason: reason.clone(),
                    },
                )
                .await;
                let ran_for = Duration::ZERO;
                self.on_error(Stall::Nothing, StepError::Transient { reason, ran_for })
                    .await;
                self.set_state(
                    JobState::RolledBack,
                    self.versions.refused_reason.as_deref(),
                )
                .await;
            }
        }
    }

    /// At start: a bad run a previous daemon recorded but did not roll back (it was killed in
    /// between, see [`decide::unfinished_rollback`]) is rolled back now, instead of the bad
    /// version being started again.
    pub(super) async fn finish_rollback(&mut self) {
        let Some(applied) = &self.applied else {
            return;
        };
        let read = self.ctx.store.runs(&self.name, 1).await;
        let Some(runs) = self
            .ctx
            .store
            .read_or_log(Some(&self.name), "latest run", read)
        else {
            return;
        };
        let newest = runs.into_iter().next();
        let rollback = self
            .ctx
            .settings
            .get()
            .guard(&applied.spec.env, &applied.spec.guard)
            .rollback;
        let last = newest.as_ref().map(|r| decide::LastRun {
            spec_hash: &r.spec_hash,
            failed: r.state == RunState::Failed,
            ended_ms: r.ended_at,
        });
        let unfinished = decide::unfinished_rollback(
            &applied.hash,
            self.live.len(),
            last,
            rollback,
            self.versions.probation_until,
            self.versions.previous.is_some(),
        );
        let Some(run) = newest.filter(|_| unfinished) else {
            return;
        };
        let why = run
            .reason
            .unwrap_or_else(|| format!("run {} failed", run.id));
        tracing::info!(job = %self.name, run = run.id, "rolling back a bad run recorded before the daemon stopped");
        self.roll_back(&why, Some(run.id)).await;
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(8).collect()
}
