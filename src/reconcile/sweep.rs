//! The health loop's status sweep: once per `health.interval`, one batched status call per
//! engine (per cluster) about every run the store thinks is live. The sweep only reports: a run
//! an engine says ended is handed to its job's actor, which alone decides what happens next.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Context, Reconciler};
use crate::engine::{Engine, EngineError, RunExit, RunHandle, RunStatus};

/// Asks each engine about every run the store thinks is live, once per `interval` (one batched
/// call per engine), and hands runs that ended or vanished to their actors.
pub async fn sweep_loop(
    ctx: Arc<Context>,
    reconciler: Arc<Reconciler>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => sweep(&ctx, &reconciler).await,
        }
    }
}

/// Runs of one engine: (job, handle).
type JobRuns = Vec<(String, RunHandle)>;

/// One sweep: one batched status call per engine instance (per cluster), all clusters at
/// once. A cluster that does not answer reports nothing (its runs are not failed): it raises
/// one `engine_unreachable` per outage (see [`super::Outages`]).
pub async fn sweep(ctx: &Context, reconciler: &Reconciler) {
    let runs = match ctx.store.live_runs() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("health: cannot read live runs: {e}");
            return;
        }
    };
    let mut groups: Vec<(Arc<dyn Engine>, JobRuns)> = Vec::new();
    for run in runs {
        let Some(handle) = run.handle.clone() else {
            continue;
        };
        let Some(engine) = ctx.engine_of_run(&run) else {
            continue;
        };
        match groups.iter_mut().find(|(e, _)| Arc::ptr_eq(e, &engine)) {
            Some((_, g)) => g.push((run.job, handle)),
            None => groups.push((engine, vec![(run.job, handle)])),
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for (engine, runs) in groups {
        calls.spawn(async move {
            let handles: Vec<RunHandle> = runs.iter().map(|(_, h)| h.clone()).collect();
            let result = engine.status(&handles).await;
            (engine, runs, result)
        });
    }
    while let Some(done) = calls.join_next().await {
        let Ok((engine, runs, result)) = done else {
            continue;
        };
        match result {
            Ok(statuses) => {
                ctx.outages.up(&ctx.events, &engine.location());
                for ((job, handle), status) in runs.into_iter().zip(statuses) {
                    if status != RunStatus::Running {
                        reconciler.exited(RunExit {
                            job,
                            run_id: handle.run_id,
                            status,
                        });
                    }
                }
            }
            Err(EngineError::Unreachable(e)) => {
                ctx.outages.down(&ctx.events, &engine.location(), &e);
            }
            Err(e) => tracing::warn!(engine = %engine.location(), "health: status failed: {e}"),
        }
    }
}
