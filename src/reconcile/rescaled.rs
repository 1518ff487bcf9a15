//! A live service run rescaled outside jobkeeper (flink: its parallelism no longer matches its
//! file). The health sweep hands each RUNNING run's task count to its actor; only when the count
//! changes (and once, the first time) does the actor read the run's vertices;
//! [`super::parallelism`] says which moved and what follows. A vertex below what it must run at
//! that still requests that figure of its engine is short of slots, not rescaled (it is read
//! again at every sweep while so). What each vertex must run at is
//! kept with the run in the store, so a daemon that adopts the run sees a rescale made while
//! none watched it. A rescale raises `drift` once per incident: with `drift: correct` the run is
//! stopped with a savepoint and submitted again from it at the job file's parallelism; with
//! `warn` it is left as it runs. `recovered` follows when the parallelism matches again (the
//! corrected run, or the run rescaled back).

use super::actor::Actor;
use super::parallelism::{self, Expected, Incident, Verdict};
use crate::event::JobEvent;
use crate::spec::Drift;
use crate::store::RunState;

impl Actor {
    /// Judges the task count `tasks` one sweep saw of run `run_id`.
    pub(super) async fn on_tasks(&mut self, run_id: i64, tasks: u64) {
        let Some(pos) = self.live.iter().position(|l| l.run_id == run_id) else {
            return;
        };
        let Some(applied) = &self.applied else {
            return;
        };
        if applied.is_batch() {
            return; // a batch run ends on its own; its parallelism is not watched
        }
        let file = applied.spec.params.parallelism;
        let mode = self
            .ctx
            .settings
            .get()
            .guard(&applied.spec.env, &applied.spec.guard)
            .drift;
        // An incident `drift: warn` left uncorrected is corrected once the job says `correct`.
        let to_correct = mode == Drift::Correct && self.rescaled.is_some_and(|r| !r.corrected);
        if self.expected.run_id != run_id {
            // What a previous daemon learnt of the run (an adopted run), if anything.
            // Unread, the run's parallelism is learnt again from what the cluster says.
            let read = self.ctx.store.run_parallelism(run_id).await;
            let vertices = self
                .ctx
                .store
                .read_or_log(Some(&self.name), "recorded parallelism", read)
                .unwrap_or_default();
            self.expected = Expected {
                vertices,
                ..Expected::new(run_id)
            };
        }
        if self.expected.tasks == tasks && !to_correct {
            return;
        }
        let live = &self.live[pos];
        let vertices = match live.engine.vertices(&live.handle).await {
            Ok(v) if !v.is_empty() => v,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(job = %self.name, run = run_id, "vertices not read: {e}");
                return;
            }
        };
        let run = format!(
            "{} job {}",
            live.engine.kind().as_str(),
            live.handle.engine_id
        );
        let learnt = self.expected.vertices.clone();
        let Some(mut moved) = self.expected.compare(file, tasks, &vertices) else {
            return; // read again at the next sweep
        };
        if parallelism::below(&moved) {
            let live = &self.live[pos];
            match live.engine.requested_parallelism(&live.handle).await {
                Ok(requested) => {
                    moved = parallelism::rescaled(moved, &requested);
                    if moved.is_empty() {
                        // Short of slots. Its requirements may change with no change of its
                        // count (set to the figure it runs at): read again at every sweep.
                        self.expected.tasks = 0;
                    }
                }
                Err(e) => {
                    tracing::debug!(job = %self.name, run = run_id, "requirements not read: {e}");
                    self.expected.tasks = 0; // read again at the next sweep
                    return;
                }
            }
        }
        if self.expected.vertices != learnt {
            let store = &self.ctx.store;
            store.record(
                Some(&self.name),
                "run parallelism",
                store
                    .set_run_parallelism(run_id, &self.expected.vertices)
                    .await,
            );
        }
        match parallelism::verdict(!moved.is_empty(), self.rescaled, mode) {
            Verdict::Nothing => {}
            Verdict::Recovered => {
                self.rescaled = None;
                self.set_incident(|i| i.drift = None).await;
                let why = format!("the parallelism of {run} matches the job file again");
                self.event(Some(run_id), &JobEvent::Recovered { why }).await;
            }
            Verdict::Raise { correct } => {
                let what = parallelism::describe(&run, file, &moved);
                self.raise_drift(pos, run_id, what, correct).await;
            }
            Verdict::Correct => self.correct_rescale(pos).await,
        }
    }

    /// Raises `drift` for the rescale `what` of run `run_id` (at `pos`), opening an incident,
    /// and corrects it when `correct`.
    async fn raise_drift(&mut self, pos: usize, run_id: i64, what: String, correct: bool) {
        let action = match (correct, self.keeps_state()) {
            (true, true) => {
                "redeploying it through a savepoint at the job file's parallelism (drift: correct)"
            }
            (true, false) => {
                "redeploying it at the job file's parallelism (drift: correct, upgrade: stateless)"
            }
            (false, _) => "left as it runs (drift: warn)",
        };
        let action = action.to_string();
        let incident = crate::condition::Incident {
            run_id,
            what: what.clone(),
        };
        self.set_incident(|i| i.drift = Some(incident)).await;
        self.event(Some(run_id), &JobEvent::Drift { what, action })
            .await;
        self.rescaled = Some(Incident { corrected: false });
        if correct {
            self.correct_rescale(pos).await;
        }
    }

    /// Stops the rescaled run at `pos` (with a savepoint, unless `upgrade: stateless`) and
    /// submits the same version again from it, at the file's parallelism. A stop the cluster
    /// did not carry out leaves the run live: the next sweep tries again.
    async fn correct_rescale(&mut self, pos: usize) {
        let keep_state = self.keeps_state();
        let live = self.live.remove(pos);
        let why = "rescaled outside jobkeeper: redeployed at the job file's parallelism";
        if let Err(live) = self
            .stop_run(live, RunState::Stopped, why, keep_state)
            .await
        {
            self.live.push(live);
            self.expected.tasks = 0;
            return;
        }
        if !keep_state {
            self.restore = None;
        }
        self.rescaled = Some(Incident { corrected: true });
        let from = match &self.restore {
            Some(sp) => format!(" from {sp}"),
            None => String::new(),
        };
        let why = format!("submitted again{from} at the job file's parallelism (drift: correct)");
        self.start(JobEvent::Started { why }, false).await;
    }

    /// Whether the job's stops keep its state (`upgrade: savepoint`).
    fn keeps_state(&self) -> bool {
        self.applied
            .as_ref()
            .is_some_and(|a| a.spec.upgrade.keeps_state())
    }
}
