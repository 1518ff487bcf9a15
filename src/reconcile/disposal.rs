//! Savepoint retention: the savepoints jobkeeper took (upgrade, stop, periodic, manual) past a
//! job's `savepoints.keep` are disposed of, on the cluster that took them (flink:
//! `POST /savepoint-disposal`), or, when that cluster cannot be reached and the savepoint is a
//! `file:` path on this host, by deleting its folder. Each is then marked disposed of in the
//! store; the history keeps the row.
//!
//! Never disposed of ([`crate::store::Store::disposable_savepoints`]): the newest `keep.count`
//! (so the newest completed one), those younger than `keep.age`, the one a live run started
//! from, the one the rollback version would start from, and the one the job file's `restore`
//! names. A disposal that fails is logged, counted (`jobkeeper_savepoint_disposals_total`),
//! recorded on the row and tried again at the next pass; it blocks nothing: passes run in
//! their own task, beside the jobs' actors.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use crate::engine::{EngineError, EngineKind};
use crate::store::{Keep, SavepointEntry, StoreError};

/// How often a pass runs.
pub const DISPOSAL_INTERVAL: Duration = Duration::from_secs(5);

/// The longest wait before a failed disposal is tried again.
pub const DISPOSAL_BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// When each savepoint whose disposal failed is tried again: after [`DISPOSAL_INTERVAL`]
/// doubled per failure in a row, up to [`DISPOSAL_BACKOFF_MAX`], so a cluster that is gone
/// for good costs a warning an hour, not one every pass. Kept in memory: a restarted daemon
/// tries each once at its first pass.
#[derive(Debug, Default)]
pub struct Retries {
    due: std::collections::HashMap<i64, (u32, tokio::time::Instant)>,
}

impl Retries {
    /// Whether savepoint row `id` may be tried now.
    fn due(&self, id: i64) -> bool {
        self.due
            .get(&id)
            .is_none_or(|(_, at)| *at <= tokio::time::Instant::now())
    }

    /// Savepoint row `id` failed again: its next try is pushed back.
    fn failed(&mut self, id: i64) -> Duration {
        let failures = self.due.get(&id).map_or(0, |(n, _)| *n) + 1;
        let wait = DISPOSAL_INTERVAL
            .saturating_mul(1u32 << failures.min(20))
            .min(DISPOSAL_BACKOFF_MAX);
        self.due
            .insert(id, (failures, tokio::time::Instant::now() + wait));
        wait
    }

    /// Savepoint row `id` is disposed of: nothing to retry.
    fn done(&mut self, id: i64) {
        self.due.remove(&id);
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disposed {
    /// Savepoints disposed of.
    pub disposed: u64,
    /// Disposals that failed (tried again after a backoff, see [`Retries`]).
    pub failed: u64,
}

/// Runs a pass every [`DISPOSAL_INTERVAL`] until `cancel`.
pub async fn disposal_loop(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut retries = Retries::default();
    loop {
        // A pass in flight is dropped at shutdown: a disposal Flink finished but the store did
        // not record is found gone at the next start (see `dispose`).
        let done = tokio::select! {
            () = cancel.cancelled() => return,
            done = pass(&ctx, &mut retries) => done,
        };
        match done {
            Ok(d) if d != Disposed::default() => tracing::info!(
                disposed = d.disposed,
                failed = d.failed,
                "savepoints past their job's keep disposed of"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("savepoint disposal: {e}; trying again at the next pass"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(DISPOSAL_INTERVAL) => {}
        }
    }
}

/// One pass over every job with more than one savepoint kept; a savepoint whose disposal
/// failed is tried again only once its backoff in `retries` is over.
pub async fn pass(ctx: &Context, retries: &mut Retries) -> Result<Disposed, StoreError> {
    let mut out = Disposed::default();
    for job in ctx.store.jobs_with_savepoints_over(1).await? {
        let row = ctx.store.job(&job).await?;
        let spec = row
            .as_ref()
            .and_then(|r| r.desired.clone().or(r.applied.clone()));
        let settings = ctx.settings.get();
        let (env, own) = match &spec {
            Some(s) => (Some(s.env.clone()), s.savepoints.clone()),
            None => (None, crate::spec::SavepointsOverride::default()),
        };
        let policy = settings.savepoint_policy(env.as_deref().unwrap_or_default(), &own);
        let keep = Keep {
            count: policy.keep_count,
            age_ms: i64::try_from(policy.keep_age.as_millis()).unwrap_or(i64::MAX),
        };
        for sp in ctx.store.disposable_savepoints(&job, keep).await? {
            if !retries.due(sp.id) {
                continue;
            }
            match dispose(ctx, env.as_deref(), &sp).await {
                Ok(how) => {
                    ctx.store.mark_disposed(sp.id).await?;
                    retries.done(sp.id);
                    ctx.metrics.disposal("disposed");
                    out.disposed += 1;
                    tracing::info!(job = %job, location = %sp.location, "savepoint disposed of ({how})");
                }
                Err(why) => {
                    ctx.store.dispose_failed(sp.id, &why).await?;
                    ctx.metrics.disposal("failed");
                    out.failed += 1;
                    let wait = retries.failed(sp.id);
                    tracing::warn!(job = %job, location = %sp.location, "savepoint not disposed of, tried again in {}: {why}", humantime::format_duration(wait));
                }
            }
        }
    }
    Ok(out)
}

/// Disposes of one savepoint: how, or why it could not be.
async fn dispose(ctx: &Context, env: Option<&str>, sp: &SavepointEntry) -> Result<String, String> {
    let own = env.and_then(|e| ctx.engines.get(e));
    let engine = match &sp.cluster {
        // The engine an env names for that cluster (a yarn env's savepoints are recorded with
        // its RMs as their cluster: it disposes of them through its session, or in application
        // mode through a running application's JobManager, refusing when none runs), else a Flink session engine for a cluster no env names any more.
        Some(c) => ctx
            .engines
            .distinct()
            .into_iter()
            .find(|e| e.cluster().as_deref() == Some(c.as_str()))
            .or_else(|| ctx.engines.at_cluster(EngineKind::Flink, c)),
        None => own.filter(|e| e.kind().keeps_state()),
    };
    let refused = match &engine {
        Some(engine) => match engine.dispose_savepoint(&sp.location).await {
            Ok(()) => return Ok(format!("by {}", engine.location())),
            Err(EngineError::Unreachable(why)) => {
                format!("{} does not answer: {why}", engine.location())
            }
            // Disposed of before (by a pass cut short at shutdown, or by hand): nothing left.
            Err(_) if local_gone(&sp.location) => {
                return Ok("its folder on this host was already gone".to_string());
            }
            // An engine that cannot dispose of it now (no yarn application of jobkeeper's
            // runs): its folder is deleted here when it is one on this host.
            Err(EngineError::Refused(why)) => format!("{} cannot: {why}", engine.location()),
            Err(e) => return Err(e.to_string()),
        },
        None => "no engine drives the cluster that took it".to_string(),
    };
    match delete_local(&sp.location) {
        Some(Ok(())) => Ok(format!("{refused}; its folder on this host deleted")),
        Some(Err(e)) => Err(format!("{refused}; its folder could not be deleted: {e}")),
        None => Err(refused),
    }
}

/// Whether `location` is a `file:` path on this host that no longer exists.
fn local_gone(location: &str) -> bool {
    crate::retention::local_path(location).is_some_and(|p| !p.exists())
}

/// Deletes a savepoint's folder when `location` is a `file:` path on this host holding a
/// savepoint (`_metadata`); `None` when it is not one.
fn delete_local(location: &str) -> Option<std::io::Result<()>> {
    let path = crate::retention::local_path(location)?;
    if !path.join("_metadata").is_file() {
        return None;
    }
    Some(std::fs::remove_dir_all(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_disposal_waits_longer_each_time_up_to_an_hour() {
        let mut r = Retries::default();
        assert!(r.due(7), "never tried: due");
        assert_eq!(r.failed(7), Duration::from_secs(10));
        assert!(!r.due(7) && r.due(8), "only the failed one waits");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(r.due(7));
        assert_eq!(r.failed(7), Duration::from_secs(20));
        for _ in 0..30 {
            r.failed(7);
        }
        assert_eq!(r.failed(7), DISPOSAL_BACKOFF_MAX);
        r.done(7);
        assert!(r.due(7), "disposed of: forgotten");
    }

    #[test]
    fn only_local_savepoint_folders_are_deleted_here() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("savepoint-1a2b-3c4d");
        std::fs::create_dir_all(&sp).unwrap();
        std::fs::write(sp.join("_metadata"), b"x").unwrap();
        let loc = format!("file:{}", sp.display());
        assert!(matches!(delete_local(&loc), Some(Ok(()))));
        assert!(!sp.exists());
        // Gone already, elsewhere, or not a savepoint: nothing deleted here.
        assert!(delete_local(&loc).is_none());
        assert!(delete_local("s3://bucket/sp/savepoint-1").is_none());
        let other = dir.path().join("not-a-savepoint");
        std::fs::create_dir_all(&other).unwrap();
        assert!(delete_local(&format!("file://{}", other.display())).is_none());
        assert!(other.exists());
        assert!(local_gone(&loc) && !local_gone(&format!("file:{}", other.display())));
        assert!(
            !local_gone("s3://bucket/sp/savepoint-1"),
            "elsewhere: not known gone"
        );
    }
}
