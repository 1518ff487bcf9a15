//! Rollback of a bad new version. A service version deployed by a commit is on probation for
//! `ready_within` after it started; the version before it (spec, artifact and the savepoint its
//! stop took) is kept in the store meanwhile. A run that fails on probation with `rollback: true`
//! stops the new version, starts the previous one again (flink: from that savepoint) and raises
//! `rolled_back`; the bad version is refused until a commit changes the job file
//! ([`super::decide::after_bad_run`] decides, [`super::decide::decide`] keeps it refused).

use std::time::Duration;

use super::actor::{Actor, Stall, Standing};
use super::decide::{AfterBadRun, BadRun, Deployed, StepError, after_bad_run};
use crate::event::JobEvent;
use crate::store::{JobState, PreviousVersion, VersionsRow, now_ms};

impl Actor {
    /// Reads the job's versions row; a refused version other than the desired one is forgotten
    /// (a commit changed the file while the daemon was down).
    pub(super) fn load_versions(&mut self, desired: Option<&str>) {
        self.versions = match self.ctx.store.versions(&self.name) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(job = %self.name, "could not read the versions: {e}");
                VersionsRow::default()
            }
        };
        if self.versions.refused_hash.is_some() && self.versions.refused_hash.as_deref() != desired
        {
            self.new_commit(desired.unwrap_or_default());
        }
    }

    /// A commit changed the job file (to `hash`): a refused version other than it is forgotten,
    /// and so is the probation of the version it replaces.
    pub(super) fn new_commit(&mut self, hash: &str) {
        if self.versions.refused_hash.as_deref() == Some(hash) {
            return;
        }
        if self.versions == VersionsRow::default() {
            return;
        }
        self.versions = VersionsRow::default();
        self.save_versions();
    }

    fn save_versions(&self) {
        let store = &self.ctx.store;
        store.record(
            Some(&self.name),
            "versions",
            store.set_versions(&self.name, &self.versions),
        );
    }

    /// A new service version deployed by a commit has started: it is on probation for its
    /// `ready_within`, with `previous` (restarted from `restore`) to go back to when its
    /// `rollback` is true.
    pub(super) fn start_probation(&mut self, previous: Option<Deployed>, restore: Option<String>) {
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
            previous: previous.map(|p| PreviousVersion {
                spec: p.spec,
                hash: p.hash,
                artifact: p.artifact,
                restore,
                commit: p.commit,
            }),
            ..VersionsRow::default()
        };
        self.save_versions();
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
    /// previous version again and refuses the bad one until a new commit.
    pub(super) async fn roll_back(&mut self, why: &str) {
        if !self.live.is_empty() {
            // The bad version's state is not kept: the previous version starts from its own.
            if let Err(err) = self.stop_all("rolled back", false).await {
                self.on_error(Stall::Nothing, err);
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
            refused_reason: Some(format!("rolled back: {}", first_line(why))),
            ..VersionsRow::default()
        };
        // The store knows the rollback before anything is submitted: a daemon that dies now
        // starts the previous version at its next start, never the refused one.
        self.record_applied();
        self.save_versions();
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
        match self.submit(false).await {
            Ok(run_id) => self.event(Some(run_id), &event),
            Err(reason) => {
                self.event(None, &event);
                self.event(
                    None,
                    &JobEvent::Failed {
                        reason: reason.clone(),
                    },
                );
                let ran_for = Duration::ZERO;
                self.on_error(Stall::Nothing, StepError::Transient { reason, ran_for });
                self.set_state(
                    JobState::RolledBack,
                    self.versions.refused_reason.as_deref(),
                );
            }
        }
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(8).collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
