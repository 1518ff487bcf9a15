//! Following the config repo: one [`super::sync`] per trigger (push, webhook, poll,
//! `POST /api/v1/sync`), the repo's outages as one `repo_unreachable` and one
//! `repo_reachable` event each, and at start the tip applied before the stored jobs start
//! (unless the repo does not answer within [`STARTUP_SYNC_WAIT`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{SyncError, SyncOutcome};
use crate::event::JobEvent;
use crate::http::ApiState;
use crate::reconcile::{Context, Reconciler, Scope};
use crate::repo::{ConfigRepo, TriggerControl, TriggerReason, spawn_trigger};
use crate::settings::RepoSettings;
use crate::store::StoreError;

/// How long the first sync may take before the stored jobs start anyway.
pub const STARTUP_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The daemon's main loop: one sync per trigger (push, webhook, poll, `POST /api/v1/sync`).
pub struct Follower {
    /// The config repo mirror.
    repo: Arc<ConfigRepo>,
    /// The store, settings and metrics the sync uses.
    ctx: Arc<Context>,
    /// The actors poked by each applied commit.
    reconciler: Arc<Reconciler>,
    /// Marked ready after the first sync; given the trigger control.
    api: Arc<ApiState>,
    /// The last sync found the repo unreachable (one event per outage).
    unreachable: bool,
    /// The tip held for its removals, once its `commit_held` event was recorded (one event
    /// per held tip).
    held: Option<String>,
    /// The stored jobs were started (after the first sync).
    started_jobs: bool,
}

impl Follower {
    /// A follower of `repo` that applies its commits with `ctx` and pokes `reconciler`'s
    /// actors; `api` is marked ready after the first sync.
    pub fn new(
        repo: Arc<ConfigRepo>,
        ctx: Arc<Context>,
        reconciler: Arc<Reconciler>,
        api: Arc<ApiState>,
    ) -> Follower {
        Follower {
            repo,
            ctx,
            reconciler,
            api,
            unreachable: false,
            held: None,
            started_jobs: false,
        }
    }

    /// Syncs on each trigger of `repo` (the daemon config's repo block) until `cancel` fires.
    /// Fails only when the stored jobs cannot be read after the first sync.
    pub async fn run(
        mut self,
        repo: &RepoSettings,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let (mut triggers, control) = spawn_trigger(repo, cancel.clone());
        let _ = self.api.trigger.set(control.clone());
        loop {
            let reason = tokio::select! {
                () = cancel.cancelled() => break,
                r = triggers.recv() => match r { Some(r) => r, None => break },
            };
            let started = Instant::now();
            self.ctx.metrics.fetch_started(reason.as_str());
            let result = self.sync_once().await;
            self.ctx
                .metrics
                .fetch_done(result.is_ok(), started.elapsed());
            match result {
                Ok(outcome) => {
                    control.fetch_ok();
                    self.synced(&outcome, &reason, started).await;
                }
                Err(err) => {
                    control.fetch_failed();
                    self.failed(&err, &reason, &control).await;
                }
            }
            if !self.started_jobs {
                self.started_jobs = true;
                for (name, _) in self.ctx.store.desired_jobs().await? {
                    self.reconciler.poke(&name);
                }
            }
        }
        Ok(())
    }

    /// At start, the tip is applied before stored jobs start, so a commit made while the
    /// daemon was down is not preceded by a run of the old version; a repo that does not
    /// answer in time does not keep the stored jobs from starting.
    async fn sync_once(&self) -> Result<SyncOutcome, SyncError> {
        let once = super::sync(&self.repo, &self.ctx, &self.reconciler);
        if self.started_jobs {
            return once.await;
        }
        match tokio::time::timeout(STARTUP_SYNC_WAIT, once).await {
            Ok(r) => r,
            Err(_) => Err(SyncError::Task(format!(
                "no answer within {}s at start; starting the stored jobs, still trying",
                STARTUP_SYNC_WAIT.as_secs()
            ))),
        }
    }

    async fn synced(&mut self, outcome: &SyncOutcome, reason: &TriggerReason, started: Instant) {
        let store = &self.ctx.store;
        if self.unreachable {
            self.unreachable = false;
            let message = "the config repo answers again".to_string();
            let event = JobEvent::RepoReachable { message };
            self.ctx.events.emit(Scope::daemon(), &event).await;
        }
        match outcome {
            SyncOutcome::Applied { commit, jobs } => {
                self.held = None;
                tracing::info!(%commit, jobs, trigger = %reason, took = ?started.elapsed(), "applied config commit");
            }
            SyncOutcome::Held { commit, event } => {
                if self.held.as_deref() != Some(commit.as_str()) {
                    let scope = Scope {
                        commit: Some(commit),
                        ..Scope::daemon()
                    };
                    self.ctx.events.emit(scope, event).await;
                    self.held = Some(commit.clone());
                } else {
                    tracing::debug!(%commit, "config commit still held for its removals");
                }
            }
            SyncOutcome::UpToDate => self.held = None,
        }
        if !self.api.ready.swap(true, Ordering::AcqRel) {
            let read = store.applied_commit().await;
            let applied = store.read_or_log(None, "applied commit", read).flatten();
            let applied = applied.unwrap_or_default();
            tracing::info!(commit = %applied.get(..8).unwrap_or(""), "ready");
        }
        self.reconciler.follow_all();
    }

    async fn failed(&mut self, err: &SyncError, reason: &TriggerReason, control: &TriggerControl) {
        if !err.is_unreachable() {
            tracing::error!(trigger = %reason, "cannot apply the config repo: {err}");
            return;
        }
        if !self.unreachable {
            self.unreachable = true;
            let event = JobEvent::RepoUnreachable {
                why: err.to_string(),
            };
            self.ctx.events.emit(Scope::daemon(), &event).await;
        }
        tracing::warn!(trigger = %reason, retry_in = ?control.poll_interval(), "config repo unreachable: {err}");
    }
}
