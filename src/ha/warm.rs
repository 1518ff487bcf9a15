//! A standby kept warm: its config repo mirror fetched, and the artifacts of the applied
//! versions built into its own build cache, so a takeover never waits for a fetch or a build.
//! It acts on nothing: it fetches, builds, and reads the store (the applied commit each round,
//! the applied versions only when that commit moved).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::build::BuildRequest;
use crate::reconcile::{Context, project_url};
use crate::repo::ConfigRepo;

/// The least time between two rounds, whatever `repo.poll` says.
const MIN_ROUND: Duration = Duration::from_secs(5);

/// Fetches the config repo and builds what the applied versions need, every `repo.poll`, until
/// `cancel` fires.
pub async fn keep_warm(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut mirror: Option<Arc<ConfigRepo>> = None;
    // The applied commit the last prebuild saw: the versions are read again only when it moved.
    let mut seen: Option<Option<String>> = None;
    loop {
        let settings = ctx.settings.get();
        if mirror.is_none() {
            let (repo, state_dir) = (settings.repo.clone(), settings.state_dir.clone());
            match tokio::task::spawn_blocking(move || ConfigRepo::open(&repo, &state_dir)).await {
                Ok(Ok(m)) => mirror = Some(Arc::new(m)),
                Ok(Err(e)) => tracing::warn!("standby: the config repo mirror: {e}"),
                Err(e) => tracing::warn!("standby: the config repo mirror: {e}"),
            }
        }
        if let Some(m) = mirror.clone() {
            match tokio::task::spawn_blocking(move || m.fetch()).await {
                Ok(Ok(tip)) => tracing::debug!(%tip, "standby: config repo fetched"),
                Ok(Err(e)) => tracing::warn!("standby: the config repo was not fetched: {e}"),
                Err(e) => tracing::warn!("standby: the config repo was not fetched: {e}"),
            }
        }
        match ctx.store.applied_commit().await {
            Ok(applied) if seen.as_ref() != Some(&applied) => {
                prebuild(&ctx, &cancel).await;
                seen = Some(applied);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("standby: the applied commit could not be read: {e}"),
        }
        let round = settings.repo.poll.max(MIN_ROUND);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(round) => {}
        }
    }
}

/// Builds each applied version's artifact this host's cache does not hold yet, at the commit
/// it was built from; returns how many builds ran.
pub async fn prebuild(ctx: &Context, cancel: &CancellationToken) -> usize {
    let jobs = match ctx.store.jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!("standby: the applied versions could not be read: {e}");
            return 0;
        }
    };
    let config_url = ctx.settings.get().repo.url.clone();
    let mut built = 0;
    for job in jobs {
        let (Some(spec), Some(artifact)) = (&job.applied, &job.artifact) else {
            continue;
        };
        let Some(project) = &spec.project else {
            continue;
        };
        if ctx.builder.cached(&artifact.key).is_some() {
            continue;
        }
        let req = BuildRequest {
            job: job.name.clone(),
            repo: project_url(&config_url, &project.repo),
            commit: artifact.commit.clone(),
            dir: project.dir.clone(),
            command: project.build.clone(),
            artifact_glob: project.artifact.clone(),
            source: ctx.projects.clone(),
        };
        if req.key() != artifact.key {
            // Not the build that made it (the SQL runner's jar, a project moved since).
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => return built,
            r = ctx.builder.build(req) => match r {
                Ok(a) => {
                    built += 1;
                    tracing::info!(job = %job.name, artifact = %a.path.display(), "standby: built ahead of a takeover");
                }
                Err(e) => tracing::warn!(job = %job.name, "standby: the build ahead of a takeover failed: {e}"),
            }
        }
    }
    built
}
