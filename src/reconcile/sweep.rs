//! The health loop's status sweep: once per `health.interval`, one batched status call per
//! engine (per cluster) about every run the store thinks is live. The sweep only reports: a run
//! an engine says ended is handed to its job's actor, which alone decides what happens next;
//! so are the health figures of running runs whose jobs set `health` (one more batch per
//! engine, see [`crate::engine::Engine::health`]). The same status answer lists the cluster's
//! live jobs, from which the unmanaged ones are kept ([`super::unmanaged`]): every cluster is
//! asked each sweep, with or without runs. It also gives each RUNNING run's task count, handed
//! to its actor, which reads the run's vertices only when the count changed (a rescale outside
//! jobkeeper, see `rescaled`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::emit::Scope;
use super::unmanaged::{Managed, classify};
use super::{Context, Reconciler};
use crate::engine::{ClusterJob, Engine, EngineError, RunExit, RunHandle, RunStatus};
use crate::event::JobEvent;

/// Asks each engine about every run the store thinks is live, once per `interval` (one batched
/// call per engine), and hands runs that ended or vanished to their actors.
///
/// The same task pings systemd's watchdog (`watchdog`, every half `WatchdogSec`) between and
/// during sweeps: a sweep waiting on a slow cluster or store lets the pings go on, but a loop
/// whose thread is stuck (a frozen runtime, code blocking its worker) sends none, and systemd
/// kills the daemon.
pub async fn sweep_loop(
    ctx: Arc<Context>,
    reconciler: Arc<Reconciler>,
    interval: Duration,
    watchdog: Option<crate::systemd::Watchdog>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let period = watchdog
        .as_ref()
        .map_or(Duration::from_secs(3600), |w| w.period());
    let mut ping = tokio::time::interval(period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick(), if running.is_none() => {
                running = Some(Box::pin(sweep(&ctx, &reconciler)));
            }
            () = finish(&mut running), if running.is_some() => running = None,
            _ = ping.tick(), if watchdog.is_some() => {
                if let Some(w) = &watchdog {
                    w.ping();
                }
            }
        }
    }
}

/// Drives the sweep in flight to its end.
async fn finish(running: &mut Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>>) {
    match running {
        Some(sweep) => sweep.await,
        None => std::future::pending().await,
    }
}

/// Asks the engine for the health figures of its running runs whose jobs check health (one
/// batch per engine, given the cluster's `live` jobs from the same sweep's status answer), and
/// hands them to their actors.
async fn health(
    ctx: &Context,
    reconciler: &Reconciler,
    engine: &Arc<dyn Engine>,
    running: JobRuns,
    live: Option<&[ClusterJob]>,
) {
    let settings = ctx.settings.get();
    let names: Vec<&str> = running.iter().map(|(j, _)| j.as_str()).collect();
    let read = ctx.store.applied_specs(&names).await;
    let Some(specs) = ctx
        .store
        .read_or_log(None, "specs, for the health sweep", read)
    else {
        return;
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
    match engine.health(&handles, live).await {
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

/// One engine's part of a sweep: its runs with handles, and the engine ids of every run of it
/// the store thinks is live (a run still being submitted counted by the id it will get).
struct Group {
    engine: Arc<dyn Engine>,
    runs: JobRuns,
    managed: Managed,
}

/// One sweep: one batched status call per engine instance (per cluster), all clusters at
/// once; the same answer lists the cluster's unmanaged jobs ([`super::unmanaged`]). A cluster
/// that does not answer reports nothing (its runs are not failed): it raises one
/// `engine_unreachable` per outage (see [`super::Outages`]).
pub async fn sweep(ctx: &Context, reconciler: &Reconciler) {
    let read = ctx.store.live_runs().await;
    let Some(runs) = ctx
        .store
        .read_or_log(None, "live runs, for the health sweep", read)
    else {
        return;
    };
    let mut groups: Vec<Group> = Vec::new();
    for engine in ctx.engines.distinct() {
        if engine.runs_survive_daemon() {
            groups.push(Group {
                engine,
                runs: Vec::new(),
                managed: Managed::default(),
            });
        }
    }
    for run in runs {
        let Some(engine) = ctx.engine_of_run(&run) else {
            continue;
        };
        let i = match groups.iter().position(|g| Arc::ptr_eq(&g.engine, &engine)) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    engine,
                    runs: Vec::new(),
                    managed: Managed::default(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        let id = match &run.handle {
            Some(h) => Some(h.engine_id.clone()),
            None => g.engine.engine_id_for(&run.job, run.id),
        };
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            g.managed.ids.insert(id, run.job.clone());
        }
        if let Some(handle) = run.handle {
            g.runs.push((run.job, handle));
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for g in groups {
        calls.spawn(async move {
            let handles: Vec<RunHandle> = g.runs.iter().map(|(_, h)| h.clone()).collect();
            let result = g.engine.survey(&handles).await;
            (g, result)
        });
    }
    while let Some(done) = calls.join_next().await {
        let Ok((g, result)) = done else {
            continue;
        };
        let engine = &g.engine;
        match result {
            Ok(survey) => {
                ctx.outages.up(&ctx.events, &engine.location()).await;
                let mut running = Vec::new();
                let tasks = survey.tasks.iter().copied().chain(std::iter::repeat(None));
                for (((job, handle), status), tasks) in
                    g.runs.into_iter().zip(survey.statuses).zip(tasks)
                {
                    if status == RunStatus::Running {
                        if let Some(n) = tasks {
                            reconciler.tasks(&job, handle.run_id, n);
                        }
                        running.push((job, handle));
                    } else {
                        reconciler.exited(RunExit {
                            job,
                            run_id: handle.run_id,
                            status,
                        });
                    }
                }
                if let Some(live) = &survey.live {
                    note_unmanaged(ctx, engine.as_ref(), live, &g.managed).await;
                    kill_strays(ctx, engine, live, &g.managed).await;
                }
                health(ctx, reconciler, engine, running, survey.live.as_deref()).await;
            }
            Err(EngineError::Unreachable(e)) => {
                ctx.outages.down(&ctx.events, &engine.location(), &e).await;
            }
            Err(e) => tracing::warn!(engine = %engine.location(), "health: status failed: {e}"),
        }
    }
    ctx.metrics.sweep_done();
}

/// Kills each live cluster job that no live run records and that this installation submitted
/// as a run that is not its job's live run ([`Engine::submitted_as`]): a create that arrived
/// after its run was given up, a former leader's late submit, a second driver of the live run.
/// A run still submitting (live, no engine id recorded yet) keeps its driver. Each kill is a
/// `stray_killed` event of the job.
async fn kill_strays(
    ctx: &Context,
    engine: &Arc<dyn Engine>,
    live: &[ClusterJob],
    managed: &Managed,
) {
    for found in live
        .iter()
        .filter(|j| !managed.ids.contains_key(&j.engine_id))
    {
        let Some((job, run_id)) = engine.submitted_as(found).await else {
            continue;
        };
        let read = ctx.store.run(run_id).await;
        let Some(row) = ctx
            .store
            .read_or_log(Some(&job), "run, for the stray sweep", read)
        else {
            continue;
        };
        let row = row.filter(|r| r.job == job);
        let why = match &row {
            Some(r) if r.state.is_live() && r.handle.is_none() => continue, // being submitted
            Some(r) if r.state.is_live() => format!(
                "run {run_id} is live as {} {}",
                engine.kind().as_str(),
                r.handle.as_ref().map_or("", |h| h.engine_id.as_str())
            ),
            Some(r) => format!("run {run_id} is {}", r.state.as_str()),
            None => format!("the store has no run {run_id} of the job"),
        };
        let handle = RunHandle {
            run_id,
            engine_id: found.engine_id.clone(),
            start_ticks: None,
            cluster: engine.cluster(),
        };
        let location = engine.location();
        match engine.stop(&handle, crate::engine::STOP_GRACE).await {
            Ok(()) => {
                let what = format!(
                    "{} {} on {location} was submitted as run {run_id}, which is not the job's live run ({why}): killed",
                    engine.kind().as_str(),
                    found.engine_id
                );
                tracing::warn!(job = %job, run = run_id, id = %found.engine_id, "{what}");
                let scope = Scope::job(&job, None).run(row.map(|r| r.id));
                ctx.events
                    .emit(scope, &JobEvent::StrayKilled { what })
                    .await;
            }
            Err(e) => tracing::warn!(
                job = %job, run = run_id, id = %found.engine_id,
                "a stray of the job on {location} could not be killed: {e}"
            ),
        }
    }
}

/// Puts a cluster's unmanaged jobs in place; a second live copy of a managed job raises
/// `drift` on that job (once per engine id).
async fn note_unmanaged(
    ctx: &Context,
    engine: &dyn Engine,
    live: &[ClusterJob],
    managed: &Managed,
) {
    let cluster = engine.url().unwrap_or_else(|| engine.location());
    let found = classify(&cluster, engine.kind().as_str(), live, managed);
    for u in &found {
        let Some(job) = &u.duplicate_of else {
            continue;
        };
        if !ctx.unmanaged.first_drift(&u.engine_id) {
            continue;
        }
        let what = format!(
            "a second live job named `{}` runs on {cluster} outside jobkeeper: {} {} ({})",
            u.name, u.engine, u.engine_id, u.state
        );
        let action = format!("jobkeeper supervises only its own run of `{job}`");
        ctx.events
            .emit(Scope::job(job, None), &JobEvent::Drift { what, action })
            .await;
    }
    ctx.unmanaged.set(&cluster, found);
}
