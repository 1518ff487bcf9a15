//! Runs a previous daemon left: before anything new starts, every run the store thinks is live
//! is handed to its engine's [`crate::engine::Engine::recover`], which adopts it (it stays live
//! for its job's actor), or stops it (runs that do not outlive the daemon are started again by
//! their actors), or finds it never started. No job ever runs twice.
//!
//! A run whose job row cannot be read (its spec is what a Spark run is looked for by) is kept
//! as it is recorded, live: it is neither recovered nor called never-started, since its driver
//! may be running. The failed read is logged and counted; the job's actor cannot read the row
//! either, so it starts nothing, and the next daemon start looks at the run again.

use super::Context;
use super::emit::Scope;
use crate::engine::{EngineKind, NEVER_STARTED, RecordedRun, Recovery};
use crate::event::JobEvent;
use crate::store::{RunRow, RunState, StoreError};

/// Recovers every run recorded as live (see the module doc). Returns the number of runs
/// recorded as ended.
pub async fn recover_live_runs(ctx: &Context) -> Result<usize, StoreError> {
    let mut n = 0;
    for run in ctx.store.live_runs().await? {
        let handle = run.handle.clone();
        let elsewhere = run
            .node
            .as_deref()
            .filter(|n| run.engine == EngineKind::Local && *n != ctx.store.node());
        // A local run is a process of the host that started it: its pid means nothing here
        // (another process may have it), so it is never looked for, adopted or stopped from
        // this node. Its own node stopped it when its daemon stopped or stepped down.
        let note = match ctx.engine_of_run(&run) {
            _ if let Some(node) = elsewhere => format!(
                "a local run of node `{node}`: not looked for from node `{}`; the job runs again here",
                ctx.store.node()
            ),
            Some(engine) => {
                let read = run_params(ctx, &run);
                let what = format!("job of run {}, to recover it", run.id);
                let Some(params) = ctx.store.read_or_log(Some(&run.job), what, read.await) else {
                    continue;
                };
                let recorded = RecordedRun {
                    job: &run.job,
                    run_id: run.id,
                    handle: handle.as_ref(),
                    log_path: std::path::Path::new(&run.log_path),
                    started_at_ms: run.started_at,
                    params: params.as_ref(),
                };
                match engine.recover(&recorded).await {
                    Recovery::Adopt(h) => {
                        if handle.as_ref() != Some(&h) {
                            ctx.store.set_run_running(run.id, &h).await?;
                        }
                        continue;
                    }
                    // Left as recorded: its actor looks for it by its id.
                    Recovery::Unconfirmed => continue,
                    Recovery::Stopped(note) | Recovery::NeverStarted(note) => note,
                }
            }
            None if handle.is_none() => NEVER_STARTED.to_string(),
            None => "lost: its engine is not available".to_string(),
        };
        ctx.store
            .finish_run(run.id, RunState::Stopped, Some(&note))
            .await?;
        let scope = Scope::job(&run.job, run.commit_id.as_deref()).run(Some(run.id));
        ctx.events
            .emit(scope, &JobEvent::Stopped { why: note })
            .await;
        n += 1;
    }
    Ok(n)
}

/// The params of the spec a run was made from (its job's applied or desired spec);
/// `Ok(None)` when the job or that spec is gone.
async fn run_params(
    ctx: &Context,
    run: &RunRow,
) -> Result<Option<crate::spec::Params>, StoreError> {
    let Some(row) = ctx.store.job(&run.job).await? else {
        return Ok(None);
    };
    let spec = if row.desired_hash.as_deref() == Some(run.spec_hash.as_str()) {
        row.desired
    } else {
        row.applied
    };
    Ok(spec.map(|s| s.params))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{context, desire_a, desired_text, set_desired};
    use super::*;
    use crate::engine::EngineKind;

    #[tokio::test]
    async fn a_run_whose_job_cannot_be_read_is_kept_not_called_never_started() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        desire_a(&ctx.store);
        let good = desired_text(dir.path());
        let logs = dir.path().join("logs/a");
        let run = ctx
            .store
            .insert_run(
                "a",
                Default::default(),
                "h1",
                (EngineKind::Local, "dev"),
                &logs,
            )
            .await
            .unwrap();
        set_desired(dir.path(), "{\"env\": 1}");
        assert_eq!(recover_live_runs(&ctx).await.unwrap(), 0);
        let live = ctx.store.live_runs().await.unwrap();
        assert_eq!(
            (live.len(), live[0].id),
            (1, run),
            "the run is kept as recorded"
        );
        assert_eq!(ctx.store.read_errors(), 1);
        set_desired(dir.path(), &good);
        assert_eq!(recover_live_runs(&ctx).await.unwrap(), 1);
        assert!(ctx.store.live_runs().await.unwrap().is_empty());
        let ended = ctx.store.run(run).await.unwrap().unwrap();
        assert_eq!(ended.state, RunState::Stopped);
    }
}
