//! Runs a previous daemon left: before anything new starts, every run the store thinks is live
//! is handed to its engine's [`crate::engine::Engine::recover`], which adopts it (it stays live
//! for its job's actor), or stops it (runs that do not outlive the daemon are started again by
//! their actors), or finds it never started. No job ever runs twice.

use super::Context;
use super::emit::Scope;
use crate::engine::{NEVER_STARTED, RecordedRun, Recovery};
use crate::event::JobEvent;
use crate::store::{RunRow, RunState, StoreError};

/// Recovers every run recorded as live (see the module doc). Returns the number of runs
/// recorded as ended.
pub async fn recover_live_runs(ctx: &Context) -> Result<usize, StoreError> {
    let mut n = 0;
    for run in ctx.store.live_runs()? {
        let handle = run.handle.clone();
        let note = match ctx.engine_of_run(&run) {
            Some(engine) => {
                let main_class = run_main_class(ctx, &run);
                let recorded = RecordedRun {
                    job: &run.job,
                    run_id: run.id,
                    handle: handle.as_ref(),
                    log_path: std::path::Path::new(&run.log_path),
                    started_at_ms: run.started_at,
                    main_class: main_class.as_deref(),
                };
                match engine.recover(&recorded).await {
                    Recovery::Adopt(h) => {
                        if handle.as_ref() != Some(&h) {
                            ctx.store.set_run_running(run.id, &h)?;
                        }
                        continue;
                    }
                    Recovery::Stopped(note) | Recovery::NeverStarted(note) => note,
                }
            }
            None if handle.is_none() => NEVER_STARTED.to_string(),
            None => "lost: its engine is not available".to_string(),
        };
        ctx.store
            .finish_run(run.id, RunState::Stopped, Some(&note))?;
        let scope = Scope::job(&run.job, run.commit_id.as_deref()).run(Some(run.id));
        ctx.events.emit(scope, &JobEvent::Stopped { why: note });
        n += 1;
    }
    Ok(n)
}

/// The main class of the spec a run was made from (its job's applied or desired spec).
fn run_main_class(ctx: &Context, run: &RunRow) -> Option<String> {
    let row = ctx.store.job(&run.job).ok()??;
    let spec = if row.desired_hash.as_deref() == Some(run.spec_hash.as_str()) {
        row.desired
    } else {
        row.applied
    }?;
    spec.params.main_class
}
