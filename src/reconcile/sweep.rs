//! The health loop's status sweep: once per `health.interval`, one batched status call per
//! engine (per cluster) about every run the store thinks is live. The sweep only reports: a run
//! an engine says ended is handed to its job's actor, which alone decides what happens next;
//! so are the health figures of running runs whose jobs set `health` (one more batch per
//! engine, see [`crate::engine::Engine::health`]).

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

/// Asks the engine for the health figures of its running runs whose jobs check health (one
/// batch per engine), and hands them to their actors.
async fn health(
    ctx: &Context,
    reconciler: &Reconciler,
    engine: &Arc<dyn Engine>,
    running: JobRuns,
) {
    let settings = ctx.settings.get();
    let names: Vec<&str> = running.iter().map(|(j, _)| j.as_str()).collect();
    let specs = match ctx.store.applied_specs(&names) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("health: cannot read specs: {e}");
            return;
        }
    };
    let checked: JobRuns = running
        .into_iter()
        .filter(|(job, _)| {
            specs
                .iter()
                .find(|(n, _)| n == job)
                .is_some_and(|(_, s)| settings.guard(&s.env, &s.guard).checks_health())
        })
        .collect();
    if checked.is_empty() {
        return;
    }
    let handles: Vec<RunHandle> = checked.iter().map(|(_, h)| h.clone()).collect();
    match engine.health(&handles).await {
        Ok(facts) => {
            for ((job, handle), facts) in checked.into_iter().zip(facts) {
                if let Some(facts) = facts {
                    reconciler.health(&job, handle.run_id, facts);
                }
            }
        }
        Err(e) => tracing::warn!(engine = %engine.location(), "health: figures failed: {e}"),
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
                let mut running = Vec::new();
                for ((job, handle), status) in runs.into_iter().zip(statuses) {
                    if status == RunStatus::Running {
                        running.push((job, handle));
                    } else {
                        reconciler.exited(RunExit {
                            job,
                            run_id: handle.run_id,
                            status,
                        });
                    }
                }
                health(ctx, reconciler, &engine, running).await;
            }
            Err(EngineError::Unreachable(e)) => {
                ctx.outages.down(&ctx.events, &engine.location(), &e);
            }
            Err(e) => tracing::warn!(engine = %engine.location(), "health: status failed: {e}"),
        }
    }
}
