//! Reconcile: one actor per job converges what runs to what the store says is desired.
//!
//! The store is the source of truth: a commit writes each changed job's desired spec there
//! (see [`crate::daemon`]), then pokes the job's actor. The actor is the only place that builds,
//! submits, stops or restarts that job, one thing at a time, so a job is never submitted twice
//! whatever races between a commit, a child's exit and a timer. Failures are classed by what
//! happens next (STYLE habit 4): an invalid spec or failed build is *stalled* until the desired
//! spec changes; a failed run is retried after a backoff by the restart policy.
//!
//! Cluster engines (flink, spark) add three things. Their runs outlive the daemon: a new daemon's actor
//! *adopts* the run its job had (by the recorded engine id) instead of submitting it again. Their
//! stops may keep state (flink): a savepoint upgrade, a suspend and a removal stop with a
//! savepoint (kept in the store's savepoint history), and the next run starts from the latest
//! savepoint or retained checkpoint; spark drivers are killed. And their cluster may not answer: that is *waiting*, never a failure — the actor
//! keeps the run it is unsure about, looks again with a backoff, raises one `engine_unreachable`
//! per outage (see [`Outages`]), and submits again only once the cluster says the run is not
//! there.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{Artifact, BuildRequest, Builder, SourceCheckout};
use crate::engine::EngineKind;
use crate::engine::{Engine, EngineError, RunExit, RunHandle, RunStatus, SubmitRequest};
use crate::health::{Decision, RestartTracker, first_fire};
use crate::plan::{Action, diff_specs};
use crate::repo::ProjectRepos;
use crate::schedule::Schedule;
use crate::spec::Upgrade;
use crate::spec::{self, JobSpec, Overlap};
use crate::store::{JobRow, JobState, NewEvent, RunRow, Store};

/// How long a stopped local run gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The state reason of a job whose new version did not build (stalled until a new commit).
const BUILD_FAILED: &str = "build failed";
/// The state reason of a job whose new version was refused (stalled until a new commit).
const DEPLOY_FAILED: &str = "deploy failed";

/// A restarted service run that stays up this long raises `recovered`.
pub const RECOVERED_AFTER: Duration = Duration::from_secs(10);

/// Why a step was abandoned at shutdown (not a failure of the job).
const SHUTTING_DOWN: &str = "daemon shutting down";

/// First and longest wait before looking again at a cluster that did not answer.
const ENGINE_WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// The hash the store keeps of a spec: sha256 of its JSON.
pub fn spec_hash(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// Everything an actor needs, shared.
pub struct Context {
    /// The daemon config.
    pub settings: crate::settings::Live,
    /// The store.
    pub store: Store,
    /// The build queue and artifact cache.
    pub builder: Arc<Builder>,
    /// Project mirrors.
    pub projects: Arc<ProjectRepos>,
    /// Engines by env name: the local engine is shared by every local env; each cluster
    /// (flink URL, spark master) has its own engine, shared by the envs that name it. An env missing here
    /// refuses its jobs with `deploy_failed`.
    pub engines: HashMap<String, Arc<dyn Engine>>,
    /// `state_dir/logs`.
    pub logs_dir: PathBuf,
    /// The daemon's metrics (job events are counted in [`Actor::event`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Clusters that do not answer right now.
    pub outages: Outages,
}

impl Context {
    /// The engine a recorded run lives on: its env's, when that env still uses the run's
    /// engine kind; for runs recorded without an env, the first engine of that kind.
    pub fn engine_of_run(&self, run: &RunRow) -> Option<&Arc<dyn Engine>> {
        match run.env.as_deref().and_then(|env| self.engines.get(env)) {
            Some(e) if e.kind() == run.engine => Some(e),
            Some(_) => None,
            None if run.env.is_none() => self.engines.values().find(|e| e.kind() == run.engine),
            None => None,
        }
    }
}

/// Engines (clusters) that do not answer: one `engine_unreachable` event per outage, whoever
/// notices it first (the health sweep or an actor), and an `engine_reachable` when it is over.
#[derive(Default)]
pub struct Outages {
    down: Mutex<HashSet<String>>,
}

impl Outages {
    /// `engine` (its [`Engine::location`]) did not answer.
    pub fn down(&self, store: &Store, engine: &str, why: &str) {
        let new = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(engine.to_string());
        if new {
            let message = format!("{engine} does not answer; waiting for it: {why}");
            tracing::warn!(event = "engine_unreachable", "{message}");
            let _ = store.event(&NewEvent {
                kind: "engine_unreachable",
                message: &message,
                ..NewEvent::default()
            });
        }
    }

    /// `engine` answered.
    pub fn up(&self, store: &Store, engine: &str) {
        let was_down = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(engine);
        if was_down {
            let message = format!("{engine} answers again");
            tracing::info!(event = "engine_reachable", "{message}");
            let _ = store.event(&NewEvent {
                kind: "engine_reachable",
                message: &message,
                ..NewEvent::default()
            });
        }
    }

    /// Whether `engine` is in an outage.
    pub fn is_down(&self, engine: &str) -> bool {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(engine)
    }
}

enum Msg {
    /// The desired spec may have changed: look at the store again.
    Desired,
    /// A run ended.
    Exit(RunExit),
    /// Check whether a `follow: true` project's branch moved.
    Follow,
    /// An operator asked for a restart (who asked).
    Restart(String),
}

/// Routes work to the job actors, creating them on first use.
pub struct Reconciler {
    ctx: Arc<Context>,
    actors: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Reconciler {
    /// A reconciler whose actors stop (and stop their local runs) when `cancel` fires.
    pub fn new(ctx: Arc<Context>, cancel: CancellationToken) -> Arc<Reconciler> {
        Arc::new(Reconciler {
            ctx,
            actors: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            cancel,
        })
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn send(&self, job: &str, msg: Msg) {
        let mut actors = self
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let msg = match actors.get(job) {
            Some(tx) => match tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(m)) => m,
            },
            None => msg,
        };
        if self.cancel.is_cancelled() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(msg);
        actors.insert(job.to_string(), tx);
        let actor = Actor::new(job.to_string(), self.ctx.clone(), self.cancel.clone());
        self.tracker.spawn(actor.run(rx));
    }

    /// The job's desired spec may have changed.
    pub fn poke(&self, job: &str) {
        self.send(job, Msg::Desired);
    }

    /// Asks every job with `project.follow: true` to check whether its branch moved
    /// (the others ignore it).
    pub fn follow_all(&self) {
        let actors = self
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tx in actors.values() {
            let _ = tx.send(Msg::Follow);
        }
    }

    /// Redeploys the job now (an operator's `jobkeeper restart`): resets its restart policy,
    /// clears `gave_up` and a stalled version, stops the live run and submits again. `who` is
    /// recorded with the `restarted` event.
    pub fn restart(&self, job: &str, who: &str) {
        self.send(job, Msg::Restart(who.to_string()));
    }

    /// A run ended.
    pub fn exited(&self, exit: RunExit) {
        let job = exit.job.clone();
        self.send(&job, Msg::Exit(exit));
    }

    /// Waits until every actor has stopped (after the cancel token fired).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A live run of the job.
struct Live {
    run_id: i64,
    handle: RunHandle,
    engine: Arc<dyn Engine>,
    /// For masking secrets out of failure reasons.
    secrets: Vec<String>,
    /// Batch runs: when the run is stopped as failed.
    deadline: Option<Instant>,
    /// When it was submitted.
    started: Instant,
    /// False while a cluster's answer to its submit was lost: the run may or may not exist.
    confirmed: bool,
}

struct Actor {
    name: String,
    ctx: Arc<Context>,
    cancel: CancellationToken,
    live: Vec<Live>,
    /// The desired hash whose build or submit failed: not retried until the spec changes.
    stalled: Option<String>,
    /// A followed project commit whose build failed: not retried until the branch moves again.
    follow_failed: Option<String>,
    /// Next cron time of a batch job.
    next_fire: Option<(Instant, chrono::DateTime<chrono_tz::Tz>)>,
    /// When a failed run is resubmitted.
    restart_at: Option<Instant>,
    /// A restarted service run that stays up until then has `recovered`.
    recover_at: Option<Instant>,
    /// The job failed and has not recovered yet.
    failing: bool,
    /// Restarts within the policy window and the next backoff.
    restarts: RestartTracker,
    gave_up: bool,
    /// The store's row has been read once (state carried over from a previous daemon).
    loaded: bool,
    /// The attempt the pending restart will be, of how many.
    pending_attempt: (u32, u32),
    /// Spec of the deployed version, with its hash and artifact.
    applied: Option<(JobSpec, String, Option<Artifact>)>,
    commit: Option<String>,
    /// The runs a previous daemon left on cluster engines have been taken over.
    adopted: bool,
    /// flink: the savepoint or checkpoint the next run starts from.
    restore: Option<String>,
    /// When to look again at a cluster that did not answer (unconfirmed runs, a stop that
    /// could not be made), and the wait after that.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// A converge gave up on a cluster that did not answer: converge again at `retry_at`.
    retry_converge: bool,
}

enum Step {
    Continue,
    Done,
}

impl Actor {
    fn new(name: String, ctx: Arc<Context>, cancel: CancellationToken) -> Actor {
        Actor {
            name,
            ctx,
            cancel,
            live: Vec::new(),
            stalled: None,
            follow_failed: None,
            next_fire: None,
            restart_at: None,
            recover_at: None,
            failing: false,
            restarts: RestartTracker::default(),
            gave_up: false,
            loaded: false,
            pending_attempt: (0, 0),
            applied: None,
            commit: None,
            adopted: false,
            restore: None,
            retry_at: None,
            retry_wait: ENGINE_WAIT.0,
            retry_converge: false,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let deadline = self.next_deadline();
            // The work futures are boxed: an idle actor (most of them, most of the time) then
            // holds only this small loop, not the state of its largest step.
            let step = tokio::select! {
                () = self.cancel.cancelled() => {
                    Box::pin(self.shutdown()).await;
                    return;
                }
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Desired) => Box::pin(self.converge()).await,
                    Some(Msg::Exit(exit)) => Box::pin(self.on_exit(exit)).await,
                    Some(Msg::Follow) => { Box::pin(self.follow()).await; Step::Continue }
                    Some(Msg::Restart(who)) => Box::pin(self.restart(who)).await,
                },
                () = sleep_until_opt(deadline) => Box::pin(self.on_timer()).await,
            };
            if let Step::Done = step {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timeouts = self.live.iter().filter_map(|l| l.deadline);
        [
            self.next_fire.map(|(i, _)| i),
            self.restart_at,
            self.recover_at,
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .chain(timeouts)
        .min()
    }

    fn event(&self, kind: &str, run_id: Option<i64>, message: &str) {
        // One line per record in the log; the whole message (log tails, every diagnostic) is
        // kept in the store's event.
        let line = one_line(message);
        let run = run_id.map_or_else(String::new, |r| r.to_string());
        match kind {
            "failed" | "build_failed" | "deploy_failed" | "gave_up" | "invalid" => {
                tracing::warn!(job = %self.name, run = %run, event = kind, "{line}");
            }
            _ => tracing::info!(job = %self.name, run = %run, event = kind, "{line}"),
        }
        self.ctx.metrics.job_event(&self.name, kind);
        let e = NewEvent {
            job: Some(&self.name),
            run_id,
            kind,
            commit_id: self.commit.as_deref(),
            message,
        };
        if let Err(err) = self.ctx.store.event(&e) {
            tracing::error!(job = %self.name, "could not record event: {err}");
        }
    }

    fn set_state(&self, state: JobState, reason: Option<&str>) {
        if let Err(err) = self.ctx.store.set_state(&self.name, state, reason) {
            tracing::error!(job = %self.name, "could not record state: {err}");
        }
    }

    fn load(&self) -> Option<JobRow> {
        match self.ctx.store.job(&self.name) {
            Ok(row) => row,
            Err(err) => {
                tracing::error!(job = %self.name, "could not read the store: {err}");
                None
            }
        }
    }

    /// Brings the job to its desired state.
    async fn converge(&mut self) -> Step {
        let Some(row) = self.load() else {
            return Step::Done;
        };
        self.commit = row.desired_commit.clone();
        let first_load = !self.loaded;
        if first_load {
            self.loaded = true;
            self.applied = applied_of(&row);
        }
        self.adopt_once();
        let Some(desired_json) = row.desired.as_deref() else {
            if !self
                .stop_all("job removed from the config repo", true)
                .await
            {
                return self.wait_for_engine();
            }
            self.applied = None;
            let _ = self.ctx.store.set_applied(&self.name, None, None, None);
            self.set_state(JobState::Stopped, Some("job file removed"));
            self.event("stopped", None, "job file removed: stopped, history kept");
            return Step::Done;
        };
        let desired: JobSpec = match serde_json::from_str(desired_json) {
            Ok(s) => s,
            Err(err) => {
                self.set_state(JobState::Failed, Some("stored spec unreadable"));
                tracing::error!(job = %self.name, "stored spec unreadable: {err}");
                return Step::Continue;
            }
        };
        let desired_hash = row
            .desired_hash
            .clone()
            .unwrap_or_else(|| spec_hash(desired_json));
        let changed = self.applied.as_ref().map(|(_, h, _)| h) != Some(&desired_hash);
        if first_load {
            // What the previous daemon decided still holds: a job that gave up waits for a new
            // commit or an operator; a version whose build or deploy failed is not retried.
            self.gave_up = !changed && row.state == JobState::GaveUp.as_str();
            if changed && matches!(row.reason.as_deref(), Some(BUILD_FAILED | DEPLOY_FAILED)) {
                self.stalled = Some(desired_hash.clone());
            }
            if self.gave_up {
                return Step::Continue;
            }
        }

        if changed {
            // A new version cancels a pending retry and clears `gave_up`.
            self.gave_up = false;
            self.restart_at = None;
            self.restarts.reset();
            self.recover_at = None;
            self.failing = false;
        }
        if desired.suspend {
            if !self.live.is_empty() && !self.stop_all("suspended", true).await {
                return self.wait_for_engine();
            }
            self.next_fire = None;
            // The build of a project that changed while suspended is not this version's: it is
            // built when the job is resumed.
            let rebuilt = self
                .applied
                .as_ref()
                .is_some_and(|(old, _, _)| diff_specs(old, &desired).0 == Action::Rebuild);
            let artifact = if rebuilt {
                None
            } else {
                self.applied_artifact()
            };
            self.applied = Some((desired, desired_hash.clone(), artifact));
            self.record_applied();
            if changed || row.state != JobState::Suspended.as_str() {
                self.set_state(JobState::Suspended, Some("suspend: true"));
                if changed {
                    self.event("suspended", None, "suspend: true: stopped, history kept");
                }
            }
            return Step::Continue;
        }
        if changed {
            if self.stalled.as_deref() == Some(desired_hash.as_str()) {
                // The new version is stalled; the previous one keeps (or, after a daemon
                // restart, starts) running.
                let previous_is_service = self
                    .applied
                    .as_ref()
                    .is_some_and(|(s, _, _)| !s.is_batch() && !s.suspend);
                if previous_is_service && self.live.is_empty() && self.restart_at.is_none() {
                    self.start(
                        "started",
                        "previous version (the new one is stalled)",
                        false,
                    )
                    .await;
                    if !self.live.is_empty() {
                        self.set_state(JobState::Running, row.reason.as_deref());
                    }
                }
                return Step::Continue;
            }
            self.deploy(desired, desired_hash).await;
        } else if !desired.is_batch() && self.live.is_empty() && !self.gave_up {
            // Same version, nothing live: after a daemon restart, or the run ended.
            if self.restart_at.is_none() {
                self.start("started", "run submitted", false).await;
            }
        } else if desired.is_batch() && self.next_fire.is_none() {
            self.schedule_next(true);
            if self.live.is_empty() && row.state == JobState::Pending.as_str() {
                self.set_state(JobState::Pending, Some("waiting for its schedule"));
            }
        }
        Step::Continue
    }

    /// An operator's restart (see [`Reconciler::restart`]).
    async fn restart(&mut self, who: String) -> Step {
        if !self.loaded
            && let Step::Done = self.converge().await
        {
            return Step::Done;
        }
        self.gave_up = false;
        self.stalled = None;
        self.follow_failed = None;
        self.restart_at = None;
        self.restarts.reset();
        let desired = self.load().and_then(|r| r.desired_hash);
        let applied = self
            .applied
            .as_ref()
            .map(|(s, h, _)| (s.suspend, s.is_batch(), h));
        match applied {
            Some((false, batch, hash)) if desired.as_ref() == Some(hash) => {
                let keep_state = self
                    .applied
                    .as_ref()
                    .is_some_and(|(s, _, _)| s.upgrade == Upgrade::Savepoint);
                if !self
                    .stop_all(&format!("restart asked for by {who}"), keep_state)
                    .await
                {
                    return self.wait_for_engine();
                }
                self.start("restarted", &format!("restart asked for by {who}"), batch)
                    .await;
                Step::Continue
            }
            // A new version that did not build or deploy is tried again; a suspended job stays so.
            _ => self.converge().await,
        }
    }

    fn applied_artifact(&self) -> Option<Artifact> {
        self.applied.as_ref().and_then(|(_, _, a)| a.clone())
    }

    fn record_applied(&self) {
        let Some((spec, hash, artifact)) = &self.applied else {
            return;
        };
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        let art = artifact
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok());
        if let Err(err) =
            self.ctx
                .store
                .set_applied(&self.name, Some(&spec_json), Some(hash), art.as_deref())
        {
            tracing::error!(job = %self.name, "could not record applied spec: {err}");
        }
    }

    /// Deploys a new desired version: build if needed, then redeploy or apply in place.
    async fn deploy(&mut self, desired: JobSpec, hash: String) {
        self.stalled = None;
        let (action, reasons) = match &self.applied {
            Some((old, _, _)) => diff_specs(old, &desired),
            None => (Action::Add, vec!["new job".to_string()]),
        };

        let artifact = if desired.project.is_some() {
            let reuse = matches!(
                action,
                Action::Redeploy | Action::InPlace | Action::Unchanged
            );
            match self.artifact_for(&desired, reuse).await {
                Ok(a) => a,
                Err(reason) if reason == SHUTTING_DOWN => return,
                Err(reason) => {
                    self.stalled = Some(hash);
                    self.event("build_failed", None, &reason);
                    self.set_state(self.idle_or_running(JobState::Failed), Some(BUILD_FAILED));
                    return;
                }
            }
        } else {
            None
        };

        let same_artifact = self.applied_artifact().map(|a| a.digest)
            == artifact.as_ref().map(|a| a.digest.clone());
        if matches!(action, Action::InPlace | Action::Unchanged) && same_artifact {
            self.applied = Some((desired, hash, artifact));
            self.record_applied();
            self.event(
                "updated",
                None,
                &format!("applied in place: {}", reasons.join("; ")),
            );
            let batch = self.applied.as_ref().is_some_and(|(s, _, _)| s.is_batch());
            if batch && self.next_fire.is_none() {
                self.schedule_next(false);
            } else if !batch && self.live.is_empty() {
                // A new commit clears `gave_up` and a pending retry: the job runs again.
                self.start("started", "run submitted after a new commit", false)
                    .await;
            }
            return;
        }

        if desired.is_batch() {
            // The next tick runs the new version; a run in progress finishes as it started.
            self.applied = Some((desired, hash, artifact));
            self.record_applied();
            self.next_fire = None;
            self.schedule_next(false);
            let next = self
                .next_fire
                .map(|(_, t)| t.to_rfc3339())
                .unwrap_or_else(|| "never".into());
            self.event(
                "deployed",
                None,
                &format!("{}; next run at {next}", reasons.join("; ")),
            );
            if self.live.is_empty() {
                self.set_state(JobState::Pending, Some("waiting for its schedule"));
            }
            return;
        }

        // Service job: check the new version can start, stop the old, start the new.
        let previous = self.applied.clone();
        self.set_state(JobState::Deploying, Some(&reasons.join("; ")));
        if let Err(reason) = self.preflight(&desired, artifact.as_ref()).await {
            self.stalled = Some(hash);
            self.event("deploy_failed", None, &reason);
            self.set_state(self.idle_or_running(JobState::Failed), Some(DEPLOY_FAILED));
            return;
        }
        let keep_state = desired.upgrade == Upgrade::Savepoint;
        if !self.stop_all("replaced by a new version", keep_state).await {
            self.set_state(
                JobState::Deploying,
                Some("waiting for the cluster to stop the running version"),
            );
            self.wait_for_engine();
            return;
        }
        if !keep_state {
            self.restore = None; // `upgrade: stateless`: the new version starts fresh
        }
        self.applied = Some((desired, hash.clone(), artifact));
        match self.submit(false).await {
            Ok(run_id) => {
                self.record_applied();
                self.event("deployed", Some(run_id), &reasons.join("; "));
            }
            Err(reason) => {
                self.stalled = Some(hash);
                self.event("deploy_failed", None, &reason);
                self.applied = previous;
                if self.applied.is_some() {
                    match self.submit(false).await {
                        Ok(run_id) => self.event(
                            "restarted",
                            Some(run_id),
                            "previous version started again after the failed deploy",
                        ),
                        Err(again) => self.event("failed", None, &again),
                    }
                }
                self.set_state(self.idle_or_running(JobState::Failed), Some(DEPLOY_FAILED));
            }
        }
    }

    fn idle_or_running(&self, idle: JobState) -> JobState {
        if self.live.is_empty() {
            idle
        } else {
            JobState::Running
        }
    }

    /// The artifact for `spec`: the deployed one when the project did not change and it is
    /// still on disk, else a build (cached by key).
    async fn artifact_for(&self, spec: &JobSpec, reuse: bool) -> Result<Option<Artifact>, String> {
        let Some(project) = &spec.project else {
            return Ok(None);
        };
        if reuse
            && let Some(a) = self.applied_artifact()
            && a.path.exists()
        {
            return Ok(Some(a));
        }
        self.set_state(self.idle_or_running(JobState::Building), Some("building"));
        let commit = self.resolve_project(project).await?;
        self.build_at(project, commit).await.map(Some)
    }

    /// The commit a project's branch (tag, commit id) points at now, fetched.
    async fn resolve_project(&self, project: &crate::spec::Project) -> Result<String, String> {
        let projects = self.ctx.projects.clone();
        let url = project_url(&self.ctx.settings.get().repo.url, &project.repo);
        let rev = project.branch.clone();
        let fetch = tokio::task::spawn_blocking(move || projects.resolve(&url, &rev));
        let commit = tokio::select! {
            r = fetch => r
                .map_err(|e| format!("project fetch panicked: {e}"))?
                .map_err(|e| format!("project {}: {e}", project.repo))?,
            () = self.cancel.cancelled() => return Err(SHUTTING_DOWN.to_string()),
        };
        Ok(commit.to_string())
    }

    /// Builds a project at a commit (or takes the cached artifact of that build key).
    async fn build_at(
        &self,
        project: &crate::spec::Project,
        commit: String,
    ) -> Result<Artifact, String> {
        let url = project_url(&self.ctx.settings.get().repo.url, &project.repo);
        let req = BuildRequest {
            job: self.name.clone(),
            repo: url,
            commit,
            dir: project.dir.clone(),
            command: project.build.clone(),
            artifact_glob: project.artifact.clone(),
            source: self.ctx.projects.clone(),
        };
        // A build can take long: a daemon shutdown does not wait for it.
        let artifact = tokio::select! {
            r = self.ctx.builder.build(req) => r.map_err(|e| e.to_string())?,
            () = self.cancel.cancelled() => return Err(SHUTTING_DOWN.to_string()),
        };
        self.event(
            "built",
            None,
            &format!("artifact {}", artifact.path.display()),
        );
        Ok(artifact)
    }

    /// True when `project.dir` has the same tree at both commits.
    async fn same_dir_content(&self, project: &crate::spec::Project, a: &str, b: &str) -> bool {
        let projects = self.ctx.projects.clone();
        let url = project_url(&self.ctx.settings.get().repo.url, &project.repo);
        let dir = project.dir.clone();
        let (Ok(a), Ok(b)) = (crate::repo::Oid::from_str(a), crate::repo::Oid::from_str(b)) else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let ta = projects.dir_tree_id(&url, a, &dir).ok()??;
            let tb = projects.dir_tree_id(&url, b, &dir).ok()??;
            Some(ta == tb)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
    }

    /// `project.follow: true`: a new commit on the branch rebuilds and redeploys.
    async fn follow(&mut self) {
        let Some((spec, hash, Some(current))) = self.applied.clone() else {
            return;
        };
        let Some(project) = spec.project.clone().filter(|p| p.follow) else {
            return;
        };
        if spec.suspend || self.stalled.is_some() {
            return;
        }
        let commit = match self.resolve_project(&project).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(job = %self.name, "follow: cannot fetch the project: {e}");
                return;
            }
        };
        if commit == current.commit || self.follow_failed.as_deref() == Some(commit.as_str()) {
            return;
        }
        // A commit that leaves the project's folder as it was (a monorepo, or a config repo
        // that is its own project) needs no new build.
        if self
            .same_dir_content(&project, &current.commit, &commit)
            .await
        {
            return;
        }
        let short = |c: &str| c.chars().take(8).collect::<String>();
        let why = format!(
            "project.branch `{}` moved: {} → {}",
            project.branch,
            short(&current.commit),
            short(&commit)
        );
        let artifact = match self.build_at(&project, commit.clone()).await {
            Ok(a) => a,
            Err(reason) if reason == SHUTTING_DOWN => return,
            Err(reason) => {
                self.follow_failed = Some(commit);
                self.event("build_failed", None, &format!("{why}\n{reason}"));
                return;
            }
        };
        self.follow_failed = None;
        if !spec.is_batch() {
            if let Err(reason) = self.preflight(&spec, Some(&artifact)).await {
                self.event("deploy_failed", None, &reason);
                return;
            }
            let keep_state = spec.upgrade == Upgrade::Savepoint;
            if !self
                .stop_all("replaced by a new project commit", keep_state)
                .await
            {
                return; // the cluster did not answer: the next follow tick tries again
            }
            if !keep_state {
                self.restore = None;
            }
        }
        let previous = self.applied.replace((spec.clone(), hash, Some(artifact)));
        self.record_applied();
        if spec.is_batch() {
            self.event("deployed", None, &format!("{why}; the next run uses it"));
            return;
        }
        match self.submit(false).await {
            Ok(run_id) => self.event("deployed", Some(run_id), &why),
            Err(reason) => {
                self.event("deploy_failed", None, &reason);
                self.applied = previous;
                self.record_applied();
                if let Ok(run_id) = self.submit(false).await {
                    self.event(
                        "restarted",
                        Some(run_id),
                        "previous version started again after the failed deploy",
                    );
                }
            }
        }
    }

    fn engine_for(&self, spec: &JobSpec) -> Result<Arc<dyn Engine>, String> {
        let settings = self.ctx.settings.get();
        let env = settings
            .envs
            .get(&spec.env)
            .ok_or_else(|| format!("env `{}` is not in the daemon config", spec.env))?;
        let engine = self.ctx.engines.get(&spec.env).cloned().or_else(|| {
            // An env added by a config reload: the local engine serves it; a new cluster
            // needs a restart of the daemon.
            (env.engine.kind() == EngineKind::Local)
                .then(|| {
                    self.ctx
                        .engines
                        .values()
                        .find(|e| e.kind() == "local")
                        .cloned()
                })
                .flatten()
        });
        engine.ok_or_else(|| {
            format!(
                "engine `{}` of env `{}` is not available",
                env.engine.as_str(),
                spec.env
            )
        })
    }

    fn request(
        &self,
        spec: &JobSpec,
        artifact: Option<&Artifact>,
        run_id: i64,
        log_path: PathBuf,
    ) -> Result<(SubmitRequest, Vec<String>), String> {
        let secrets_dir = self.ctx.settings.get().secrets_dir.clone();
        let (params, secrets) =
            spec::resolve_secrets_with_values(&spec.params, secrets_dir.as_deref())
                .map_err(|e| e.to_string())?;
        // The working folder of a run with a project: the artifact when it is a folder, else the
        // folder holding it.
        let checkout = artifact.map(|a| {
            if a.path.is_dir() {
                a.path.clone()
            } else {
                a.path.parent().unwrap_or(&a.path).to_path_buf()
            }
        });
        Ok((
            SubmitRequest {
                job: self.name.clone(),
                run_id,
                params,
                artifact: artifact.map(|a| a.path.clone()),
                checkout,
                log_path,
                digest: artifact.map(|a| a.digest.clone()),
                restore: self.restore.clone(),
            },
            secrets,
        ))
    }

    /// Checks what can be checked before stopping the running version.
    async fn preflight(&self, spec: &JobSpec, artifact: Option<&Artifact>) -> Result<(), String> {
        let engine = self.engine_for(spec)?;
        let (req, _) = self.request(spec, artifact, 0, self.ctx.logs_dir.join("preflight.log"))?;
        engine.preflight(&req).await.map_err(|e| e.to_string())
    }

    /// Submits the applied version; returns the run id.
    async fn submit(&mut self, batch: bool) -> Result<i64, String> {
        let Some((spec, hash, artifact)) = self.applied.clone() else {
            return Err("nothing to submit".into());
        };
        let engine = self.engine_for(&spec)?;
        let log_dir = self.ctx.logs_dir.join(&self.name);
        let run_id = self
            .ctx
            .store
            .insert_run(
                &self.name,
                self.commit.as_deref(),
                &hash,
                (engine.kind(), &spec.env),
                &log_dir,
            )
            .map_err(|e| e.to_string())?;
        let log_path = log_dir.join(format!("{run_id}.log"));
        let (req, secrets) = match self.request(&spec, artifact.as_ref(), run_id, log_path) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.ctx.store.finish_run(run_id, "failed", Some(&e));
                return Err(e);
            }
        };
        // A cluster that did not answer: the run is looked up later by the id jobkeeper chose
        // for it (flink), or, when the cluster chooses ids (spark: its engine already looked for
        // a driver the lost answer made), by no id at all: once the cluster answers again it is
        // not found and is submitted again.
        let chosen_id = engine.engine_id_for(&self.name, run_id);
        match engine.submit(req).await {
            Err(EngineError::Unreachable(why)) => {
                let handle = RunHandle {
                    run_id,
                    engine_id: chosen_id.unwrap_or_default(),
                    start_ticks: None,
                };
                let json = serde_json::to_string(&handle).unwrap_or_default();
                if let Err(e) = self.ctx.store.set_run_running(run_id, &json) {
                    tracing::error!(job = %self.name, "could not record run handle: {e}");
                }
                let location = engine.location();
                self.ctx.outages.down(&self.ctx.store, &location, &why);
                self.live.push(Live {
                    run_id,
                    handle,
                    engine,
                    secrets,
                    deadline: None,
                    started: Instant::now(),
                    confirmed: false,
                });
                let why = format!("waiting for {location}, which did not answer the submit");
                self.set_state(JobState::Deploying, Some(&why));
                self.schedule_retry();
                Ok(run_id)
            }
            Ok(handle) => {
                let json = serde_json::to_string(&handle).unwrap_or_default();
                if let Err(e) = self.ctx.store.set_run_running(run_id, &json) {
                    tracing::error!(job = %self.name, "could not record run handle: {e}");
                }
                let deadline = if batch {
                    spec.timeout.map(|t| Instant::now() + t)
                } else {
                    None
                };
                self.live.push(Live {
                    run_id,
                    handle,
                    engine,
                    secrets,
                    deadline,
                    started: Instant::now(),
                    confirmed: true,
                });
                self.set_state(JobState::Running, None);
                Ok(run_id)
            }
            Err(e) => {
                let reason = spec::mask_secrets(&e.to_string(), &secrets);
                let _ = self.ctx.store.finish_run(run_id, "failed", Some(&reason));
                Err(reason)
            }
        }
    }

    /// Submits the applied version and records `kind` (`started`, `restarted`); a refused
    /// submit counts as a failed run for the restart policy.
    async fn start(&mut self, kind: &str, message: &str, batch: bool) {
        match self.submit(batch).await {
            Ok(run_id) => self.event(kind, Some(run_id), message),
            Err(reason) => {
                self.event("deploy_failed", None, &reason);
                self.schedule_restart(&reason, Duration::ZERO);
            }
        }
    }

    /// Stops every live run (cluster runs with a savepoint when `keep_state`). False when a
    /// cluster run could not be stopped: it stays live, and nothing new may start.
    async fn stop_all(&mut self, why: &str, keep_state: bool) -> bool {
        let mut kept = Vec::new();
        for live in std::mem::take(&mut self.live) {
            if let Err(live) = self.stop_run(live, "stopped", why, keep_state).await {
                kept.push(live);
            }
        }
        let stopped = kept.is_empty();
        self.live.extend(kept);
        stopped
    }

    /// Stops a run, recording it as ended in `state` (`stopped`, or `failed` for a timeout).
    /// A local run stays live in the store until the engine says it is gone, so a daemon killed
    /// during the grace period finds it at its next start and stops it then (its exit is not
    /// taken for a failure: the actor no longer counts it as live). A cluster run is recorded once the cluster stopped it (with a savepoint when
    /// `keep_state`, kept in the store and used by the next run); when the cluster does not
    /// answer or refuses, the run is handed back: it may still be running.
    async fn stop_run(
        &mut self,
        live: Live,
        state: &str,
        why: &str,
        keep_state: bool,
    ) -> Result<(), Live> {
        if live.engine.kind() != EngineKind::Local.as_str() {
            return self.stop_cluster_run(live, state, why, keep_state).await;
        }
        match live.engine.stop(&live.handle, STOP_GRACE).await {
            Ok(()) => tracing::info!(job = %self.name, run = live.run_id, "stopped: {why}"),
            Err(err) => {
                self.event(
                    "failed",
                    Some(live.run_id),
                    &format!("could not stop run: {err}"),
                );
            }
        }
        let _ = self.ctx.store.finish_run(live.run_id, state, Some(why));
        Ok(())
    }

    async fn stop_cluster_run(
        &mut self,
        live: Live,
        state: &str,
        why: &str,
        keep_state: bool,
    ) -> Result<(), Live> {
        let location = live.engine.location();
        let result = if keep_state {
            match live
                .engine
                .stop_with_savepoint(&live.handle, STOP_GRACE)
                .await
            {
                Err(EngineError::Refused(e) | EngineError::Other(e)) => {
                    self.event(
                        "failed",
                        Some(live.run_id),
                        &format!("could not stop with a savepoint ({e}); cancelling instead"),
                    );
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
                self.ctx.outages.up(&self.ctx.store, &location);
                let _ = self.ctx.store.finish_run(live.run_id, state, Some(why));
                match savepoint {
                    Some(sp) => {
                        let kind = "savepoint";
                        if let Err(e) =
                            self.ctx
                                .store
                                .add_savepoint(&self.name, Some(live.run_id), &sp, kind)
                        {
                            tracing::error!(job = %self.name, "could not record savepoint: {e}");
                        }
                        self.event(
                            "stopped",
                            Some(live.run_id),
                            &format!("stopped with savepoint {sp}: {why}"),
                        );
                        self.restore = Some(sp);
                    }
                    None => tracing::info!(job = %self.name, run = live.run_id, "stopped: {why}"),
                }
                Ok(())
            }
            Err(EngineError::Unreachable(e)) => {
                self.ctx.outages.down(&self.ctx.store, &location, &e);
                Err(live)
            }
            Err(e) => {
                self.event(
                    "failed",
                    Some(live.run_id),
                    &format!("could not stop run: {e}"),
                );
                Err(live)
            }
        }
    }

    /// A converge could not finish because a cluster did not answer: converge again later.
    fn wait_for_engine(&mut self) -> Step {
        self.retry_converge = true;
        if self.retry_at.is_none() {
            self.schedule_retry();
        }
        Step::Continue
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Some(Instant::now() + self.retry_wait);
        self.retry_wait = (self.retry_wait * 2).min(ENGINE_WAIT.1);
    }

    /// Looks again at runs whose submit was not confirmed, then converges again if a cluster
    /// kept a converge from finishing.
    async fn retry(&mut self) -> Step {
        let mut waiting = false;
        for i in (0..self.live.len()).rev() {
            if self.live[i].confirmed {
                continue;
            }
            let (engine, handle) = (self.live[i].engine.clone(), self.live[i].handle.clone());
            match engine.status(std::slice::from_ref(&handle)).await {
                Ok(status) => {
                    self.ctx.outages.up(&self.ctx.store, &engine.location());
                    if status.first() == Some(&RunStatus::Vanished) {
                        let live = self.live.remove(i);
                        self.not_submitted(live).await;
                    } else {
                        self.live[i].confirmed = true;
                        self.set_state(JobState::Running, None);
                        tracing::info!(job = %self.name, run = handle.run_id, "the cluster has the run");
                    }
                }
                Err(e) => {
                    if let EngineError::Unreachable(m) = &e {
                        self.ctx
                            .outages
                            .down(&self.ctx.store, &engine.location(), m);
                    }
                    waiting = true;
                }
            }
        }
        if std::mem::take(&mut self.retry_converge) {
            let step = self.converge().await;
            if let Step::Done = step {
                return step;
            }
        }
        if waiting || self.retry_converge {
            if self.retry_at.is_none() {
                self.schedule_retry();
            }
        } else {
            self.retry_wait = ENGINE_WAIT.0;
        }
        Step::Continue
    }

    /// A run whose submit never reached its cluster: recorded as such and submitted again
    /// (not a failure: the restart policy does not count it).
    async fn not_submitted(&mut self, live: Live) {
        let why = "never reached the cluster (its answer to the submit was lost)";
        let _ = self.ctx.store.finish_run(live.run_id, "stopped", Some(why));
        let batch = self.applied.as_ref().is_some_and(|(s, _, _)| s.is_batch());
        if self.applied.is_some() && !self.gave_up {
            self.start(
                "started",
                &format!("submitted again: run {} {why}", live.run_id),
                batch,
            )
            .await;
        }
    }

    /// Takes over, once, the cluster runs a previous daemon left for this job (by their
    /// recorded engine ids), and the latest savepoint to start from.
    fn adopt_once(&mut self) {
        if std::mem::replace(&mut self.adopted, true) {
            return;
        }
        self.restore = match self.ctx.store.savepoints(&self.name, 1) {
            Ok(s) => s.into_iter().next().map(|s| s.location),
            Err(_) => None,
        };
        let Ok(runs) = self.ctx.store.runs(&self.name, 16) else {
            return;
        };
        let secrets = self
            .applied
            .as_ref()
            .and_then(|(s, _, _)| {
                let dir = self.ctx.settings.get().secrets_dir.clone();
                spec::resolve_secrets_with_values(&s.params, dir.as_deref()).ok()
            })
            .map(|(_, secrets)| secrets)
            .unwrap_or_default();
        for run in runs.into_iter().rev() {
            if run.state != "running" || run.engine == EngineKind::Local.as_str() {
                continue;
            }
            let (Some(handle), Some(engine)) = (
                run.handle
                    .as_deref()
                    .and_then(|h| serde_json::from_str::<RunHandle>(h).ok()),
                self.ctx.engine_of_run(&run).cloned(),
            ) else {
                continue;
            };
            let msg = format!(
                "{} job {} adopted after a daemon restart",
                engine.location(),
                handle.engine_id
            );
            self.live.push(Live {
                run_id: run.id,
                handle,
                engine,
                secrets: secrets.clone(),
                deadline: None,
                started: Instant::now(),
                confirmed: true,
            });
            self.event("adopted", Some(run.id), &msg);
        }
    }

    /// A run ended.
    async fn on_exit(&mut self, exit: RunExit) -> Step {
        self.adopt_once();
        let Some(pos) = self.live.iter().position(|l| l.run_id == exit.run_id) else {
            return Step::Continue; // a run this actor stopped itself
        };
        let live = self.live.remove(pos);
        if !live.confirmed && exit.status == RunStatus::Vanished {
            self.not_submitted(live).await;
            return Step::Continue;
        }
        let batch = self.applied.as_ref().is_some_and(|(s, _, _)| s.is_batch());
        match exit.status {
            RunStatus::Running => self.live.push(live),
            RunStatus::Succeeded if batch => {
                let _ = self.ctx.store.finish_run(live.run_id, "succeeded", None);
                self.restarts.succeeded();
                let how = if live.engine.kind() == EngineKind::Local.as_str() {
                    "run finished with exit 0"
                } else {
                    "run finished with success on the cluster"
                };
                self.event("succeeded", Some(live.run_id), how);
                if std::mem::take(&mut self.failing) {
                    self.event(
                        "recovered",
                        Some(live.run_id),
                        "a run succeeded after failures",
                    );
                }
                if self.live.is_empty() {
                    self.set_state(JobState::Succeeded, None);
                }
            }
            status => {
                let state = if matches!(status, RunStatus::Succeeded) {
                    "succeeded"
                } else {
                    "failed"
                };
                let reason = match status {
                    RunStatus::Failed(r) => spec::mask_secrets(&r, &live.secrets),
                    RunStatus::Vanished => "the run vanished".to_string(),
                    _ => "a service job finished with success; it must always run".to_string(),
                };
                let _ = self.ctx.store.finish_run(live.run_id, state, Some(&reason));
                self.event("failed", Some(live.run_id), &reason);
                self.failing = true;
                self.recover_at = None;
                self.keep_checkpoint(&live).await;
                if std::mem::take(&mut self.retry_converge) {
                    // A new version was waiting for this run to stop: it is what starts now.
                    self.retry_at = None;
                    return self.converge().await;
                }
                self.schedule_restart(&reason, live.started.elapsed());
            }
        }
        Step::Continue
    }

    /// A cluster run that ended: its latest retained checkpoint (if any) is where the next run
    /// starts from, and goes into the savepoint history.
    async fn keep_checkpoint(&mut self, live: &Live) {
        if live.engine.kind() == EngineKind::Local.as_str() {
            return;
        }
        match live.engine.restore_point(&live.handle).await {
            Ok(Some(cp)) => {
                let _ =
                    self.ctx
                        .store
                        .add_savepoint(&self.name, Some(live.run_id), &cp, "checkpoint");
                self.restore = Some(cp);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job = %self.name, "no checkpoint to restart from: {e}"),
        }
    }

    /// Restart policy (see [`RestartTracker`]): backoff doubling up to `max_backoff`; more than
    /// `attempts` restarts within `window` gives up until a new commit or an operator's restart.
    fn schedule_restart(&mut self, reason: &str, ran_for: Duration) {
        let Some((spec, _, _)) = &self.applied else {
            return;
        };
        let policy = self
            .ctx
            .settings
            .get()
            .restart_policy(&spec.env, &spec.restart);
        match self.restarts.on_failure(Instant::now(), &policy, ran_for) {
            Decision::GiveUp { restarts } => {
                self.gave_up = true;
                self.restart_at = None;
                let msg = format!(
                    "gave up after {restarts} restarts within {}: {reason}",
                    humantime::format_duration(policy.window)
                );
                self.event("gave_up", None, &msg);
                if self.live.is_empty() {
                    self.set_state(JobState::GaveUp, Some(&msg));
                }
            }
            Decision::RestartAfter { delay, attempt, of } => {
                self.restart_at = Some(Instant::now() + delay);
                self.pending_attempt = (attempt, of);
                if self.live.is_empty() {
                    let msg = format!(
                        "restart {attempt}/{of} in {}",
                        humantime::format_duration(delay)
                    );
                    self.set_state(JobState::Backoff, Some(&msg));
                }
            }
        }
    }

    fn schedule_next(&mut self, allow_late: bool) {
        self.next_fire = None;
        let Some((spec, _, _)) = &self.applied else {
            return;
        };
        let Some(expr) = spec.schedule.as_deref() else {
            return;
        };
        let Ok(schedule) = Schedule::parse(expr) else {
            return;
        };
        let tz = self.ctx.settings.get().timezone;
        let now = Utc::now().with_timezone(&tz);
        let fire = if allow_late {
            // A tick missed while the daemon was down starts now, once, if recent enough.
            first_fire(&schedule, now, self.last_start())
        } else {
            schedule.next_after(now).map(|t| (t, false))
        };
        self.next_fire = fire.map(|(t, _)| {
            let wait = (t.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default();
            (Instant::now() + wait, t)
        });
    }

    fn last_start(&self) -> Option<chrono::DateTime<Utc>> {
        let runs = self.ctx.store.runs(&self.name, 1).ok()?;
        chrono::DateTime::from_timestamp_millis(runs.first()?.started_at)
    }

    async fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if let Step::Done = self.retry().await {
                return Step::Done;
            }
        }
        // Batch runs over their timeout.
        let (expired, keep): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| l.deadline.is_some_and(|d| d <= now));
        self.live = keep;
        for live in expired {
            let run_id = live.run_id;
            let timeout = self
                .applied
                .as_ref()
                .and_then(|(s, _, _)| s.timeout)
                .unwrap_or_default();
            let reason = format!("timed out after {}", humantime::format_duration(timeout));
            if let Err(mut live) = self.stop_run(live, "failed", &reason, false).await {
                live.deadline = Some(now + ENGINE_WAIT.1); // the cluster did not answer
                self.live.push(live);
                continue;
            }
            self.event("failed", Some(run_id), &reason);
            self.schedule_restart(&reason, timeout);
        }
        if self.recover_at.is_some_and(|t| t <= now) {
            self.recover_at = None;
            if self.failing && !self.live.is_empty() {
                self.failing = false;
                let run = self.live.first().map(|l| l.run_id);
                let msg = format!(
                    "running again for {} after failures",
                    humantime::format_duration(RECOVERED_AFTER)
                );
                self.event("recovered", run, &msg);
            }
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            let policy = self
                .applied
                .as_ref()
                .map(|(s, _, _)| self.ctx.settings.get().restart_policy(&s.env, &s.restart));
            let batch = self.applied.as_ref().is_some_and(|(s, _, _)| s.is_batch());
            if policy.is_some() && (self.live.is_empty() || batch) {
                self.restarts.restarted(now);
                let (attempt, of) = self.pending_attempt;
                let what = if batch {
                    "failed run retried"
                } else {
                    "resubmitted"
                };
                if !batch {
                    self.recover_at = Some(now + RECOVERED_AFTER);
                }
                self.start(
                    "restarted",
                    &format!("{what} (attempt {attempt}/{of})"),
                    batch,
                )
                .await;
            }
        }
        if self.next_fire.is_some_and(|(t, _)| t <= now) {
            self.next_fire = None;
            self.fire().await;
            self.schedule_next(false);
        }
        Step::Continue
    }

    /// A cron tick of a batch job.
    async fn fire(&mut self) {
        let overlap = self
            .applied
            .as_ref()
            .map_or(Overlap::Forbid, |(s, _, _)| s.overlap);
        if !self.live.is_empty() {
            match overlap {
                Overlap::Forbid => {
                    self.event("skipped", None, "previous run still live (overlap: forbid)");
                    return;
                }
                Overlap::Replace => {
                    if !self
                        .stop_all("replaced by the next scheduled run", false)
                        .await
                    {
                        self.event("skipped", None, "the previous run could not be stopped");
                        return;
                    }
                }
                Overlap::Allow => {}
            }
        }
        match self.submit(true).await {
            Ok(run_id) => self.event("started", Some(run_id), "scheduled run started"),
            Err(reason) => {
                self.event("deploy_failed", None, &reason);
                self.set_state(self.idle_or_running(JobState::Failed), Some(DEPLOY_FAILED));
            }
        }
    }

    /// Daemon shutdown: local runs stop with the daemon; cluster runs keep running.
    async fn shutdown(&mut self) {
        for live in std::mem::take(&mut self.live) {
            if live.engine.kind() == EngineKind::Local.as_str() {
                let _ = self
                    .stop_run(live, "stopped", "daemon shutdown", false)
                    .await;
            }
        }
    }
}

/// A project's repo as the daemon fetches it: a relative path is relative to the config repo
/// when that is local (`repo: .` is the config repo itself).
pub fn project_url(config_repo: &str, project_repo: &str) -> String {
    let path = std::path::Path::new(project_repo);
    if crate::repo::is_local(project_repo)
        && path.is_relative()
        && crate::repo::is_local(config_repo)
    {
        let joined = std::path::Path::new(config_repo).join(path);
        return joined
            .canonicalize()
            .unwrap_or(joined)
            .to_string_lossy()
            .into_owned();
    }
    project_repo.to_string()
}

impl SourceCheckout for ProjectRepos {
    fn checkout(&self, repo: &str, commit: &str, dest: &std::path::Path) -> Result<(), String> {
        let id = crate::repo::Oid::from_str(commit)
            .map_err(|e| format!("bad commit id {commit}: {e}"))?;
        ProjectRepos::checkout(self, repo, id, dest).map_err(|e| e.to_string())
    }
}

/// The first line of a message, with a hint when more lines are in the store.
pub fn one_line(message: &str) -> String {
    match message.split_once('\n') {
        Some((first, rest)) => {
            let more = rest.lines().filter(|l| !l.trim().is_empty()).count();
            format!("{first} [+{more} lines in the event]")
        }
        None => message.to_string(),
    }
}

/// The main class of the spec a run was made from (its job's applied or desired spec).
fn run_main_class(ctx: &Context, run: &RunRow) -> Option<String> {
    let row = ctx.store.job(&run.job).ok()??;
    let spec = if row.desired_hash.as_deref() == Some(run.spec_hash.as_str()) {
        row.desired.as_deref()
    } else {
        row.applied.as_deref()
    }?;
    let spec: JobSpec = serde_json::from_str(spec).ok()?;
    spec.params.main_class
}

fn applied_of(row: &JobRow) -> Option<(JobSpec, String, Option<Artifact>)> {
    let spec: JobSpec = serde_json::from_str(row.applied.as_deref()?).ok()?;
    let artifact = row
        .artifact
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok());
    Some((spec, row.applied_hash.clone()?, artifact))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// After a daemon restart, before anything new starts: every local run the store thinks is live
/// is found and stopped (local runs are children of the daemon and are started again by their
/// actors), so no job ever runs twice. Cluster runs stay live: their actors adopt them by their
/// recorded ids. A cluster run whose submit was in flight when the daemon stopped is looked up
/// by the id the engine was asked to give it; it stays live only if the cluster has it.
/// Returns the number of runs recorded as ended.
pub async fn recover_live_runs(ctx: &Context) -> Result<usize, crate::store::StoreError> {
    let mut n = 0;
    for run in ctx.store.live_runs()? {
        let handle: Option<RunHandle> = run
            .handle
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok());
        let engine = ctx.engine_of_run(&run);
        let outcome = match (handle, engine) {
            (Some(h), Some(e)) if e.kind() == EngineKind::Local.as_str() => {
                match e.stop(&h, STOP_GRACE).await {
                    Ok(()) => {
                        "stopped after a daemon restart (found by pid and start time)".to_string()
                    }
                    Err(
                        EngineError::Refused(m)
                        | EngineError::Unreachable(m)
                        | EngineError::Other(m),
                    ) => {
                        format!("could not be stopped after a daemon restart: {m}")
                    }
                }
            }
            // Killed between spawning the run and recording its pid: found by its log file.
            (None, Some(e)) if e.kind() == EngineKind::Local.as_str() => {
                let found = crate::engine::local::find_unrecorded(
                    run.id,
                    std::path::Path::new(&run.log_path),
                );
                let mut outcome =
                    "never started: the daemon stopped while submitting it".to_string();
                for h in &found {
                    outcome = match e.stop(h, STOP_GRACE).await {
                        Ok(()) => "stopped after a daemon restart (its pid was not recorded yet; \
                                   found by its log file)"
                            .to_string(),
                        Err(err) => format!("could not be stopped after a daemon restart: {err}"),
                    };
                }
                outcome
            }
            (Some(h), Some(_)) => {
                tracing::info!(job = %run.job, run = run.id, id = %h.engine_id, "cluster run left running for its job to adopt");
                continue;
            }
            (None, Some(e)) if e.engine_id_for(&run.job, run.id).is_some() => {
                let h = RunHandle {
                    run_id: run.id,
                    engine_id: e.engine_id_for(&run.job, run.id).unwrap_or_default(),
                    start_ticks: None,
                };
                match e.status(std::slice::from_ref(&h)).await {
                    Ok(st) if st.first() == Some(&RunStatus::Vanished) => {
                        "never started: the daemon stopped while submitting it".to_string()
                    }
                    // The cluster has it, or cannot say: keep it for the actor (never twice).
                    _ => {
                        let json = serde_json::to_string(&h).unwrap_or_default();
                        ctx.store.set_run_running(run.id, &json)?;
                        continue;
                    }
                }
            }
            // A cluster that chose the run's id (spark): the engine finds the run by the token
            // its submit carried.
            (None, Some(e)) => {
                let since = u64::try_from(run.started_at).unwrap_or(0);
                let found = match run_main_class(ctx, &run) {
                    Some(mc) => e.find_unrecorded(&run.job, run.id, &mc, since).await,
                    None => Ok(None),
                };
                match found {
                    Ok(Some(id)) => {
                        let h = RunHandle {
                            run_id: run.id,
                            engine_id: id.clone(),
                            start_ticks: None,
                        };
                        let json = serde_json::to_string(&h).unwrap_or_default();
                        ctx.store.set_run_running(run.id, &json)?;
                        tracing::info!(job = %run.job, run = run.id, id = %id, "found the run's unrecorded driver on the cluster; its job adopts it");
                        continue;
                    }
                    Ok(None) => "never started: the daemon stopped while submitting it".to_string(),
                    Err(err) => format!(
                        "the daemon stopped while submitting it; the cluster could not be asked \
                         whether it has it ({err})"
                    ),
                }
            }
            (None, None) => "never started: the daemon stopped while submitting it".to_string(),
            _ => "lost: its engine is not available".to_string(),
        };
        ctx.store.finish_run(run.id, "stopped", Some(&outcome))?;
        ctx.store.event(&NewEvent {
            job: Some(&run.job),
            run_id: Some(run.id),
            kind: "stopped",
            commit_id: run.commit_id.as_deref(),
            message: &outcome,
        })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(store: &Store) -> Vec<String> {
        let mut k: Vec<String> = store
            .events(None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        k.reverse();
        k
    }

    #[test]
    fn an_outage_is_one_engine_unreachable_and_one_engine_reachable_per_cluster() {
        let store = Store::in_memory().unwrap();
        let outages = Outages::default();
        outages.up(&store, "flink cluster a"); // answering: nothing to say
        for _ in 0..5 {
            outages.down(&store, "flink cluster a", "connection refused");
        }
        outages.down(&store, "flink cluster b", "timeout");
        assert!(outages.is_down("flink cluster a"));
        outages.up(&store, "flink cluster a");
        outages.up(&store, "flink cluster a");
        assert!(!outages.is_down("flink cluster a"));
        outages.down(&store, "flink cluster a", "again");
        assert_eq!(
            kinds(&store),
            [
                "engine_unreachable",
                "engine_unreachable",
                "engine_reachable",
                "engine_unreachable"
            ]
        );
        let first = &store.events(None, 100).unwrap()[3];
        assert!(first.job.is_none(), "a daemon-wide event");
        assert!(
            first.message.contains("flink cluster a") && first.message.contains("refused"),
            "{first:?}"
        );
    }
}
