//! New versions of a job: a commit's desired spec (build if needed, then redeploy or apply in
//! place) and, with `project.follow`, a new commit on the project's branch. A new version that
//! cannot start leaves the previous one running (started again, from its savepoint, when it had
//! to be stopped first).

use std::sync::Arc;

use super::actor::{Actor, Stall};
use super::decide::{Deployed, StepError};
use super::project_url;
use super::runs::SubmitError;
use crate::build::{Artifact, BuildRequest, sql_runner};
use crate::condition::{Failure, Stage};
use crate::engine::{Engine, EngineError, SubmitRequest};
use crate::event::{EventKind, JobEvent};
use crate::plan::{Action, diff_specs};
use crate::spec::{self, JobSpec, Project};
use crate::store::{JobState, RunState};

/// How long a new version submitted from a savepoint may take to get its state back before the
/// deploy counts as done (the health sweep follows it after that).
const RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn stalled(kind: EventKind, reason: String) -> StepError {
    StepError::Stalled { kind, reason }
}

impl Actor {
    /// Deploys a new desired version: build if needed, then redeploy or apply in place.
    pub(super) async fn deploy(&mut self, desired: JobSpec, hash: String) -> Result<(), StepError> {
        self.stalled = None;
        let (action, reasons) = match &self.applied {
            Some(old) => diff_specs(&old.spec, &desired),
            None => (Action::Add, vec!["new job".into()]),
        };
        let reasons = crate::plan::joined(&reasons);
        let reuse = matches!(
            action,
            Action::Redeploy | Action::InPlace | Action::Unchanged
        );
        let artifact = self.artifact_for(&desired, reuse).await?;
        let same_artifact = self
            .applied
            .as_ref()
            .and_then(|a| a.artifact.as_ref())
            .map(|a| &a.digest)
            == artifact.as_ref().map(|a| &a.digest);
        let new = Deployed {
            spec: desired,
            hash,
            artifact,
            commit: self.commit.clone(),
        };
        if self.applied.is_none() && new.spec.adopt.is_some() && !self.live.is_empty() {
            // Adopted by a daemon that stopped before it recorded the version.
            self.finish_adoption(new).await;
            return Ok(());
        }
        if self.first_adoption(&new).await {
            return self.take_over(new).await;
        }
        if matches!(action, Action::InPlace | Action::Unchanged) && same_artifact {
            return self.apply_in_place(new, &reasons).await;
        }
        if new.is_batch() {
            self.deploy_batch(new, &reasons).await;
            return Ok(());
        }
        self.deploy_service(new, &reasons).await
    }

    /// A change that needs no new run (alerts, restart policy).
    async fn apply_in_place(&mut self, new: Deployed, reasons: &str) -> Result<(), StepError> {
        let batch = new.is_batch();
        self.applied = Some(new);
        self.record_applied().await;
        let why = format!("applied in place: {reasons}");
        self.event(None, &JobEvent::Updated { why }).await;
        if batch && self.timers.fire.is_none() {
            self.schedule_next(false).await;
        } else if !batch && self.live.is_empty() {
            // A new commit clears `gave_up` and a pending retry: the job runs again.
            let why = "run submitted after a new commit".to_string();
            self.start(JobEvent::Started { why }, false).await;
        }
        Ok(())
    }

    /// A batch job's new version: the next tick runs it; a run in progress finishes as it
    /// started.
    async fn deploy_batch(&mut self, new: Deployed, reasons: &str) {
        self.applied = Some(new);
        self.record_applied().await;
        self.timers.fire = None;
        self.schedule_next(false).await;
        let next = self
            .fire_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into());
        let why = format!("{reasons}; next run at {next}");
        self.event(None, &JobEvent::Deployed { why }).await;
        if self.live.is_empty() {
            self.set_state(JobState::Pending, Some("waiting for its schedule"))
                .await;
        }
    }

    /// A service job's new version: check it can start, stop the old one, start the new one;
    /// when the new one is refused, the old one starts again.
    async fn deploy_service(&mut self, new: Deployed, reasons: &str) -> Result<(), StepError> {
        if self.live_runs_are(&new.hash).await {
            // A previous daemon submitted this very version and stopped before it recorded the
            // deploy: the run it left (adopted) is the new version; nothing is stopped or
            // submitted again. It is on probation as a deploy recorded now, with the version it
            // replaced (restarted from the savepoint its stop took, the newest the store knows)
            // to roll back to.
            let previous = self.applied.replace(new);
            self.record_applied().await;
            let run_id = self.live.first().map(|l| l.run_id);
            let why = format!("{reasons} (its run was submitted before the daemon restarted)");
            self.event(run_id, &JobEvent::Deployed { why }).await;
            self.set_state(JobState::Running, None).await;
            self.start_probation(previous, self.restore.clone()).await;
            return Ok(());
        }
        self.set_state(JobState::Deploying, Some(reasons)).await;
        self.preflight(&new.spec, new.artifact.as_ref())
            .await
            .map_err(|reason| stalled(EventKind::DeployFailed, reason.to_string()))?;
        if let Some(why) = self.state_move_refused(&new.spec).await {
            return Err(stalled(EventKind::DeployFailed, why));
        }
        // A `restore` the commit set or changed: the new version starts from it, once; the
        // running version is still stopped with a savepoint, so its state is kept too.
        let asked = asked_restore(self.applied.as_ref(), &new);
        let keep_state = new.spec.upgrade.keeps_state() || asked.is_some();
        let from = self.live.first().map(|l| l.engine.clone());
        self.last_state = last_state_age(&new.spec).filter(|_| asked.is_none());
        let stopped = self.stop_all("replaced by a new version", keep_state).await;
        self.last_state = None;
        if let Err(err) = stopped {
            let why = "waiting for the cluster to stop the running version";
            self.set_state(JobState::Deploying, Some(why)).await;
            return Err(err);
        }
        if !keep_state {
            self.restore = None; // `upgrade: stateless`: the new version starts fresh
        }
        // A new version tries the env's cluster again, even one that refused the previous.
        self.pinned = None;
        let previous = self.applied.replace(new);
        // What the previous version would start from again (a rollback, a refused deploy).
        let restore = self.restore.clone();
        if let Some(path) = asked {
            tracing::info!(job = %self.name, %path, "restoring from the path the job file names");
            self.restore = Some(path);
            self.no_state = None;
        }
        let submitted = match self.submit(false).await {
            Ok(run_id) => self
                .confirm_restored(run_id)
                .await
                .map(|()| run_id)
                .map_err(SubmitError::from),
            Err(err) => Err(err),
        };
        match submitted {
            Ok(run_id) => {
                self.record_applied().await;
                let why = reasons.to_string();
                self.event(Some(run_id), &JobEvent::Deployed { why }).await;
                self.start_probation(previous, restore).await;
                Ok(())
            }
            Err(err) => {
                self.restore.clone_from(&restore);
                self.restore_previous(previous, from).await;
                Err(err.into_step(|reason| stalled(EventKind::DeployFailed, reason)))
            }
        }
    }

    /// The job's runs live on a cluster its env no longer names (the env's `flink.url` changed
    /// in the daemon config): they are stopped there with a savepoint and the same version is
    /// started on the env's cluster from it. When that cluster refuses, the job starts again
    /// where it ran, from the same savepoint, and stays there (`deploy_failed` says why) until
    /// the env names another cluster, a new version deploys or the daemon restarts.
    pub(super) async fn move_cluster(&mut self) -> Result<(), StepError> {
        let Some(applied) = self.applied.clone() else {
            return Ok(());
        };
        let to = self
            .engine_for(&applied.spec)
            .map_err(|reason| stalled(EventKind::DeployFailed, reason.to_string()))?;
        let Some(from) = self
            .live
            .iter()
            .map(|l| l.engine.clone())
            .find(|e| e.cluster() != to.cluster())
        else {
            return Ok(());
        };
        let versions = match (from.version(), to.version()) {
            (Some(a), Some(b)) => format!(" ({} {a} → {b})", to.kind().as_str()),
            _ => String::new(),
        };
        let why = format!(
            "the cluster of env `{}` changed: moved from {} to {}{versions}",
            applied.spec.env,
            from.location(),
            to.location()
        );
        self.set_state(JobState::Deploying, Some(&why)).await;
        let refused = async |actor: &mut Actor, reason: String| {
            actor.pinned = Some(super::actor::Pinned {
                refused_by: to.cluster(),
                engine: from.clone(),
            });
            let reason = format!(
                "{} refused the job moved from {}: {reason}",
                to.location(),
                from.location()
            );
            actor
                .event(
                    None,
                    &JobEvent::DeployFailed {
                        reason: reason.clone(),
                    },
                )
                .await;
            // Typed: the condition `deploy_failed` holds while the job runs on the former
            // cluster and its env names this one.
            actor
                .record_failure(Failure {
                    hash: applied.hash.clone(),
                    commit: applied.commit.clone(),
                    stage: Stage::Move,
                    reason,
                })
                .await;
        };
        if let Err(reason) = self
            .preflight(&applied.spec, applied.artifact.as_ref())
            .await
        {
            refused(self, reason.to_string()).await;
            self.set_state(JobState::Running, None).await;
            return Ok(());
        }
        if let Some(why) = self.state_move_refused(&applied.spec).await {
            refused(self, why).await;
            self.set_state(JobState::Running, None).await;
            return Ok(());
        }
        let keep_state = applied.spec.upgrade.keeps_state();
        let stopping = format!("moved to {}", to.location());
        self.last_state = last_state_age(&applied.spec);
        let stopped = self.stop_all(&stopping, keep_state).await;
        self.last_state = None;
        if let Err(err) = stopped {
            let why = "waiting for the former cluster to stop the job";
            self.set_state(JobState::Deploying, Some(why)).await;
            return Err(err);
        }
        if !keep_state {
            self.restore = None;
        }
        let submitted = match self.submit(false).await {
            Ok(run_id) => self
                .confirm_restored(run_id)
                .await
                .map(|()| run_id)
                .map_err(SubmitError::from),
            Err(err) => Err(err),
        };
        match submitted {
            Ok(run_id) => {
                self.event(Some(run_id), &JobEvent::Deployed { why }).await;
                Ok(())
            }
            Err(SubmitError::Host(fault)) => Err(StepError::Host { fault }),
            Err(SubmitError::Refused(reason)) => {
                refused(self, reason).await;
                let from_where = self.restore.clone().unwrap_or_else(|| "its start".into());
                match self.submit(false).await {
                    Ok(run_id) => {
                        let why = format!(
                            "started again on {} from {from_where} after the move was refused",
                            from.location()
                        );
                        self.event(Some(run_id), &JobEvent::Started { why }).await;
                        self.set_state(JobState::Running, None).await;
                    }
                    Err(SubmitError::Host(fault)) => self.wait_on_host(fault, None).await,
                    Err(SubmitError::Refused(reason)) => {
                        self.event(None, &JobEvent::Failed { reason }).await;
                    }
                }
                Ok(())
            }
        }
    }

    /// Why a stateful `spec` cannot move from the cluster its run is on to its env's cluster:
    /// that cluster's Flink is older than the one the savepoint would be taken on. Asked before
    /// anything is stopped; `None` when it can (or there is no move, or no version to compare).
    async fn state_move_refused(&self, spec: &JobSpec) -> Option<String> {
        if !spec.upgrade.keeps_state() {
            return None;
        }
        let to = self.ctx.engines.get(&spec.env)?;
        let from = self.live.first()?.engine.clone();
        if !from.kind().keeps_state() || from.kind() != to.kind() || from.cluster() == to.cluster()
        {
            return None;
        }
        for engine in [&from, &to] {
            if engine.version().is_none() {
                let _ = engine.probe().await;
            }
        }
        let parse = |v: Option<String>| crate::engine::flink::FlinkVersion::parse(&v?);
        let (old, new) = (parse(from.version())?, parse(to.version())?);
        let why = new.cannot_read(&old)?;
        Some(format!(
            "the move from {} to {} is refused before stopping anything: {why}; the job keeps \
             running on {}",
            from.location(),
            to.location(),
            from.location()
        ))
    }

    /// Whether the job has live runs and every one runs the version with spec hash `hash`.
    async fn live_runs_are(&self, hash: &str) -> bool {
        if self.live.is_empty() {
            return false;
        }
        let read = self.ctx.store.runs(&self.name, 16).await;
        let Some(runs) = self.ctx.store.read_or_log(Some(&self.name), "runs", read) else {
            return false;
        };
        self.live
            .iter()
            .all(|l| runs.iter().any(|r| r.id == l.run_id && r.spec_hash == hash))
    }

    /// A new version submitted from a savepoint must get its state back: waits until the
    /// engine says run `run_id` started. One that failed first (its state no longer matches the
    /// savepoint) is recorded as failed, and why is returned: the deploy failed.
    async fn confirm_restored(&mut self, run_id: i64) -> Result<(), Refusal> {
        let Some(savepoint) = self.restore.clone() else {
            return Ok(());
        };
        let Some(pos) = self
            .live
            .iter()
            .position(|l| l.run_id == run_id && l.confirmed)
        else {
            return Ok(());
        };
        let (engine, handle) = (self.live[pos].engine.clone(), self.live[pos].handle.clone());
        match engine.wait_started(&handle, RESTORE_WAIT).await {
            Err(EngineError::Refused(why)) => {
                let live = self.live.remove(pos);
                let why = live.secrets.mask(&why);
                let refusal = Refusal::NotRestored { savepoint, why };
                self.finish_run(run_id, RunState::Failed, Some(&refusal.to_string()))
                    .await;
                Err(refusal)
            }
            // Still starting, or the cluster did not answer: the health sweep follows it.
            _ => Ok(()),
        }
    }

    /// A new version could not start after the previous one was stopped: the previous one
    /// starts again (from the savepoint its stop took).
    async fn restore_previous(
        &mut self,
        previous: Option<Deployed>,
        from: Option<Arc<dyn Engine>>,
    ) {
        self.applied = previous;
        let Some(applied) = &self.applied else {
            return;
        };
        // The previous version ran on a cluster its env no longer names (a refused move):
        // it starts again there.
        if let (Some(from), Ok(env)) = (from, self.engine_for(&applied.spec))
            && from.kind() == env.kind()
            && from.cluster() != env.cluster()
        {
            self.pinned = Some(super::actor::Pinned {
                refused_by: env.cluster(),
                engine: from,
            });
        }
        self.record_applied().await;
        match self.submit(false).await {
            Ok(run_id) => {
                let why = "previous version started again after the failed deploy".to_string();
                self.event(Some(run_id), &JobEvent::Started { why }).await;
            }
            Err(SubmitError::Host(fault)) => self.wait_on_host(fault, None).await,
            Err(SubmitError::Refused(reason)) => {
                self.event(None, &JobEvent::Failed { reason }).await
            }
        }
    }

    /// The artifact for `spec`: the deployed one when the project did not change and it is
    /// still on disk, else a build (cached by key).
    async fn artifact_for(
        &self,
        spec: &JobSpec,
        reuse: bool,
    ) -> Result<Option<Artifact>, StepError> {
        if spec.project.is_none() && spec.sql.is_none() {
            return Ok(None);
        }
        // A jar job's artifact is no SQL job's, and the other way round.
        let same_kind = self
            .applied
            .as_ref()
            .is_some_and(|a| a.spec.sql.is_some() == spec.sql.is_some());
        if reuse
            && same_kind
            && let Some(a) = self.applied.as_ref().and_then(|a| a.artifact.as_ref())
        {
            if a.path.exists() {
                return Ok(Some(a.clone()));
            }
            // Built by another daemon (`ha`) into its own state folder: this host's build of the
            // same key, when it has one (a standby builds ahead of a takeover).
            if let Some(here) = self.ctx.builder.cached(&a.key) {
                return Ok(Some(here));
            }
        }
        let built = match &spec.project {
            Some(project) => {
                self.set_state(self.idle_or_running(JobState::Building), Some("building"))
                    .await;
                let commit = self.resolve_project(project).await?;
                Some(self.build_at(project, commit).await?)
            }
            None => None,
        };
        if spec.sql.is_none() {
            return Ok(built);
        }
        self.sql_artifact(spec, built).await.map(Some)
    }

    /// The jar a SQL job runs: the SQL runner (pre-built, or built once from its source), with
    /// the project's jar inside when the job has a project.
    pub(super) async fn sql_artifact(
        &self,
        spec: &JobSpec,
        project: Option<Artifact>,
    ) -> Result<Artifact, StepError> {
        let settings = self.ctx.settings.get();
        let prebuilt = settings
            .envs
            .get(&spec.env)
            .and_then(|e| e.engine.sql_runner())
            .map(std::path::Path::to_path_buf);
        let runner = match prebuilt {
            Some(path) => sql_runner::prebuilt(&path).map_err(|e| {
                let why = format!("the SQL runner jar {}: {e}", path.display());
                stalled(EventKind::BuildFailed, why)
            })?,
            None => {
                let req = sql_runner::request(&self.name);
                tokio::select! {
                    r = self.ctx.builder.build(req) => r.map_err(|e| {
                        let path = &self.ctx.builder.config().path;
                        let why = format!("SQL runner: {e}\n{}", sql_runner::needs_jdk(path));
                        stalled(EventKind::BuildFailed, why)
                    })?,
                    () = self.cancel.cancelled() => return Err(StepError::Cancelled),
                }
            }
        };
        let Some(project) = project else {
            return Ok(runner);
        };
        let state_dir = self.ctx.builder.config().state_dir.clone();
        tokio::task::spawn_blocking(move || sql_runner::with_project(&state_dir, &runner, &project))
            .await
            .map_err(|e| stalled(EventKind::BuildFailed, format!("SQL jar: {e}")))?
            .map_err(|e| stalled(EventKind::BuildFailed, e.to_string()))
    }

    /// The commit a project's branch (tag, commit id) points at now, fetched.
    async fn resolve_project(&self, project: &Project) -> Result<String, StepError> {
        let projects = self.ctx.projects.clone();
        let url = project_url(&self.ctx.settings.get().repo.url, &project.repo);
        let rev = project.branch.clone();
        let fetch = tokio::task::spawn_blocking(move || projects.resolve(&url, &rev));
        let commit = tokio::select! {
            r = fetch => r
                .map_err(|e| stalled(EventKind::BuildFailed, format!("project fetch panicked: {e}")))?
                .map_err(|e| stalled(EventKind::BuildFailed, format!("project {}: {e}", project.repo)))?,
            () = self.cancel.cancelled() => return Err(StepError::Cancelled),
        };
        Ok(commit.to_string())
    }

    /// Builds a project at a commit (or takes the cached artifact of that build key).
    async fn build_at(&self, project: &Project, commit: String) -> Result<Artifact, StepError> {
        let req = BuildRequest {
            job: self.name.clone(),
            repo: project_url(&self.ctx.settings.get().repo.url, &project.repo),
            commit,
            dir: project.dir.clone(),
            command: project.build.clone(),
            artifact_glob: project.artifact.clone(),
            source: self.ctx.projects.clone(),
        };
        // A build can take long: a daemon shutdown does not wait for it.
        let artifact = tokio::select! {
            r = self.ctx.builder.build(req) => {
                r.map_err(|e| stalled(EventKind::BuildFailed, e.to_string()))?
            }
            () = self.cancel.cancelled() => return Err(StepError::Cancelled),
        };
        let built = JobEvent::Built {
            artifact: artifact.path.clone(),
        };
        self.event(None, &built).await;
        Ok(artifact)
    }

    /// True when `project.dir` has the same tree at both commits.
    async fn same_dir_content(&self, project: &Project, a: &str, b: &str) -> bool {
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

    /// `project.follow: true`: a new commit on the branch rebuilds and redeploys. A commit whose
    /// build or deploy fails is not tried again until the branch moves on.
    pub(super) async fn follow(&mut self) {
        let Some(current) = self.applied.clone() else {
            return;
        };
        let (Some(built), Some(project)) = (
            current.artifact.clone(),
            current.spec.project.clone().filter(|p| p.follow),
        ) else {
            return;
        };
        if current.spec.suspend || self.stalled.is_some() {
            return;
        }
        let commit = match self.resolve_project(&project).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(job = %self.name, "follow: cannot fetch the project: {e}");
                return;
            }
        };
        if commit == built.commit || self.follow_failed.as_deref() == Some(commit.as_str()) {
            return;
        }
        // A commit that leaves the project's folder as it was (a monorepo, or a config repo
        // that is its own project) needs no new build.
        if self
            .same_dir_content(&project, &built.commit, &commit)
            .await
        {
            return;
        }
        let short = |c: &str| c.chars().take(8).collect::<String>();
        let why = format!(
            "project.branch `{}` moved: {} → {}",
            project.branch,
            short(&built.commit),
            short(&commit)
        );
        let built = match self.build_at(&project, commit.clone()).await {
            Ok(a) if current.spec.sql.is_some() => self.sql_artifact(&current.spec, Some(a)).await,
            r => r,
        };
        let result = match built {
            Ok(artifact) => self.deploy_followed(current, artifact, &why).await,
            Err(StepError::Stalled { kind, reason }) => Err(StepError::Stalled {
                kind,
                reason: format!("{why}\n{reason}"),
            }),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => self.follow_failed = None,
            Err(err) => self.on_error(Stall::Follow(commit), err).await,
        }
    }

    /// Deploys a followed project commit's artifact.
    async fn deploy_followed(
        &mut self,
        current: Deployed,
        artifact: Artifact,
        why: &str,
    ) -> Result<(), StepError> {
        let batch = current.is_batch();
        if !batch {
            self.preflight(&current.spec, Some(&artifact))
                .await
                .map_err(|reason| stalled(EventKind::DeployFailed, reason.to_string()))?;
            let keep_state = current.spec.upgrade.keeps_state();
            if self
                .stop_all("replaced by a new project commit", keep_state)
                .await
                .is_err()
            {
                return Ok(()); // the cluster did not answer: the next follow tick tries again
            }
            if !keep_state {
                self.restore = None;
            }
        }
        let previous = self.applied.replace(Deployed {
            artifact: Some(artifact),
            ..current
        });
        self.record_applied().await;
        if batch {
            let why = format!("{why}; the next run uses it");
            self.event(None, &JobEvent::Deployed { why }).await;
            return Ok(());
        }
        let submitted = match self.submit(false).await {
            Ok(run_id) => self
                .confirm_restored(run_id)
                .await
                .map(|()| run_id)
                .map_err(SubmitError::from),
            Err(err) => Err(err),
        };
        match submitted {
            Ok(run_id) => {
                let why = why.to_string();
                self.event(Some(run_id), &JobEvent::Deployed { why }).await;
                Ok(())
            }
            Err(err) => {
                self.restore_previous(previous, None).await;
                Err(err.into_step(|reason| stalled(EventKind::DeployFailed, reason)))
            }
        }
    }

    /// The engine of a spec's env.
    pub(super) fn engine_for(&self, spec: &JobSpec) -> Result<Arc<dyn Engine>, Refusal> {
        let settings = self.ctx.settings.get();
        let env = settings
            .envs
            .get(&spec.env)
            .ok_or_else(|| Refusal::NoEnv(spec.env.clone()))?;
        let engine = self
            .ctx
            .engines
            .get(&spec.env)
            .map(|engine| match &self.pinned {
                Some(p) if p.refused_by == engine.cluster() && p.engine.kind() == engine.kind() => {
                    p.engine.clone()
                }
                _ => engine,
            });
        engine.ok_or_else(|| Refusal::NoEngine {
            engine: env.engine.as_str(),
            env: spec.env.clone(),
        })
    }

    /// The submit request of `spec` with `artifact`, and the secret values to mask.
    pub(super) fn request(
        &self,
        spec: &JobSpec,
        artifact: Option<&Artifact>,
        run_id: i64,
        log_path: std::path::PathBuf,
    ) -> Result<(SubmitRequest, crate::secrets::RunSecrets), Refusal> {
        let secrets_dir = self.ctx.settings.get().secrets_dir.clone();
        let (mut params, mut secrets) =
            spec::resolve_secrets_with_values(&spec.params, secrets_dir.as_deref())?;
        if let Some(sql) = &spec.sql {
            let (statements, values) =
                spec::resolve_sql_secrets(&sql.statements, secrets_dir.as_deref())?;
            params.main_class = Some(sql_runner::ENTRY_CLASS.to_string());
            params.args = sql_runner::args(&self.name, &statements);
            secrets.extend(values);
        }
        let secrets = crate::secrets::RunSecrets::new(secrets);
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
                secrets: secrets.values(),
            },
            secrets,
        ))
    }

    /// Checks what can be checked before stopping the running version.
    async fn preflight(&self, spec: &JobSpec, artifact: Option<&Artifact>) -> Result<(), Refusal> {
        let engine = self.engine_for(spec)?;
        let (req, _) = self.request(spec, artifact, 0, self.ctx.logs_dir.join("preflight.log"))?;
        Ok(engine.preflight(&req).await?)
    }
}

/// Why a version cannot be submitted as it is: each is `deploy_failed`, its message the
/// reason shown.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    /// The job's env is not in the daemon config.
    #[error("env `{0}` is not in the daemon config")]
    NoEnv(String),
    /// The env's engine could not be made.
    #[error("engine `{engine}` of env `{env}` is not available")]
    NoEngine {
        /// The engine's name.
        engine: &'static str,
        /// The env.
        env: String,
    },
    /// A `${secret:..}` could not be read.
    #[error(transparent)]
    Secret(#[from] spec::SecretError),
    /// The engine's check before stopping the running version failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A new version submitted from a savepoint failed before it started (secrets masked).
    #[error("the new version could not start from {savepoint}: {why}")]
    NotRestored {
        /// The savepoint.
        savepoint: String,
        /// The engine's reason.
        why: String,
    },
}

/// The `restore` path the new version `new` asks to start from: set, and not what the
/// deployed version's file already said (leaving the field in place restores nothing more).
fn asked_restore(applied: Option<&Deployed>, new: &Deployed) -> Option<String> {
    let path = new.spec.restore.clone()?;
    let before = applied.and_then(|a| a.spec.restore.as_deref());
    (before != Some(path.as_str())).then_some(path)
}

/// `upgrade: last-state`: how young a checkpoint must be to start from.
fn last_state_age(spec: &JobSpec) -> Option<std::time::Duration> {
    (spec.upgrade == spec::Upgrade::LastState).then(|| {
        spec.max_checkpoint_age
            .unwrap_or(spec::DEFAULT_MAX_CHECKPOINT_AGE)
    })
}
