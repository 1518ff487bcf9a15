//! What a live run's parallelism must stay at, vertex by vertex, which vertices moved away
//! from it (a rescale outside jobkeeper), and what follows ([`verdict`]): pure functions over
//! what the engine said, fed and carried out by `rescaled` (the actor's side).
//!
//! A vertex must keep the parallelism jobkeeper's submission gave it. That is not naively the
//! job file's `params.parallelism`: a vertex the job's code fixed (`setParallelism(1)` on a
//! sink) or one that cannot run in parallel (a non-parallel source, max parallelism 1) runs
//! at its own figure. So the first look at a run records each vertex's parallelism as its
//! own; a vertex later seen at the file's `params.parallelism` must keep that figure from
//! then on (a cluster short of slots may start a run below it and scale it up later). A job
//! file without `params.parallelism` keeps what the cluster gave each vertex at submit. A vertex
//! below its figure that still requests it of its engine is short of slots, not rescaled
//! ([`rescaled`]).

use std::collections::{BTreeMap, HashMap};

use crate::engine::Vertex;
use crate::spec::Drift;

/// An open incident of a run rescaled outside jobkeeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    /// The run was stopped and submitted again at the file's parallelism.
    pub corrected: bool,
}

/// What follows one look at a live run's vertices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing new: all is as it must be, or the open incident was already raised (and, with
    /// `drift: correct`, corrected).
    Nothing,
    /// A new incident: raise `drift`, then correct the run when `correct`.
    Raise {
        /// `drift: correct`: redeploy it at the file's parallelism.
        correct: bool,
    },
    /// An incident raised under `drift: warn` whose job now says `correct`: correct it (no new
    /// `drift`).
    Correct,
    /// The open incident cleared: raise `recovered`.
    Recovered,
}

/// The one place that says what a look at a run's vertices leads to: `moved` tells whether a
/// vertex runs at another parallelism than it must, `open` the job's open incident, `mode` its
/// `drift`. One `drift` per incident, however many looks still see it.
pub fn verdict(moved: bool, open: Option<Incident>, mode: Drift) -> Verdict {
    let correct = mode == Drift::Correct;
    match (moved, open) {
        (false, None) => Verdict::Nothing,
        (false, Some(_)) => Verdict::Recovered,
        (true, None) => Verdict::Raise { correct },
        (true, Some(i)) if correct && !i.corrected => Verdict::Correct,
        (true, Some(_)) => Verdict::Nothing,
    }
}

/// What one run's vertices must run at, as far as jobkeeper knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The run these figures are of.
    pub run_id: i64,
    /// The run's task count (the sum of its vertices' parallelism) when they were last read;
    /// zero before the first read. While the engine's count stays the same, nothing is read.
    pub tasks: u64,
    /// Vertex id → the parallelism it must run at.
    pub vertices: BTreeMap<String, u32>,
}

/// A vertex that runs at another parallelism than it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The vertex's id.
    pub id: String,
    /// The vertex's name.
    pub name: String,
    /// Its parallelism now.
    pub now: u32,
    /// What it must run at.
    pub expected: u32,
}

impl Expected {
    /// Figures of run `run_id`, not read yet.
    pub fn new(run_id: i64) -> Expected {
        Expected {
            run_id,
            ..Expected::default()
        }
    }

    /// Compares the vertices `now` (read when the engine counted `tasks`) with what they must
    /// run at, learning the figures of vertices seen for the first time and of those at the
    /// file's parallelism `file`. Returns the vertices that moved, or `None` when `now` is not
    /// the answer the count was made from (the engine's vertex list lags its count: its
    /// parallelism does not add up to `tasks`), so nothing is learnt and the caller reads again.
    pub fn compare(&mut self, file: Option<u32>, tasks: u64, now: &[Vertex]) -> Option<Vec<Moved>> {
        let sum: u64 = now.iter().map(|v| u64::from(v.parallelism)).sum();
        if sum != tasks || now.iter().any(|v| v.parallelism == 0) {
            return None;
        }
        self.tasks = tasks;
        let mut moved = Vec::new();
        for v in now {
            if v.max_parallelism == 1 {
                continue; // it cannot run at anything but 1
            }
            let expected = self.vertices.entry(v.id.clone()).or_insert(v.parallelism);
            if file == Some(v.parallelism) {
                *expected = v.parallelism;
            }
            if v.parallelism != *expected {
                moved.push(Moved {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    now: v.parallelism,
                    expected: *expected,
                });
            }
        }
        Some(moved)
    }
}

/// Whether some vertex of `moved` runs below what it must: the cluster may lack the slots
/// (ask it what the vertices request, see [`rescaled`]).
pub fn below(moved: &[Moved]) -> bool {
    moved.iter().any(|m| m.now < m.expected)
}

/// The vertices of `moved` that were rescaled, given what each still requests of its engine
/// (`requested`, vertex id → parallelism; empty when the engine runs vertices at what they
/// request). A vertex below what it must run at that still requests that figure is short of
/// slots (Flink's adaptive scheduler runs a job with the slots left after a TaskManager is
/// lost, and scales it up again when they come back): not a rescale.
pub fn rescaled(moved: Vec<Moved>, requested: &HashMap<String, u32>) -> Vec<Moved> {
    moved
        .into_iter()
        .filter(|m| !(m.now < m.expected && requested.get(&m.id) == Some(&m.expected)))
        .collect()
}

/// What a `drift` event says of the vertices that moved of `run` (`flink job ID`), whose job
/// file sets `file`.
pub fn describe(run: &str, file: Option<u32>, moved: &[Moved]) -> String {
    let vertices: Vec<String> = moved
        .iter()
        .map(|m| format!("`{}` runs at {}, not {}", m.name, m.now, m.expected))
        .collect();
    let file = match file {
        Some(p) => format!("params.parallelism: {p}"),
        None => "no params.parallelism: as first submitted".to_string(),
    };
    format!(
        "{run} was rescaled outside jobkeeper: {} ({file})",
        vertices.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(id: &str, parallelism: u32, max: u32) -> Vertex {
        Vertex {
            id: id.into(),
            name: format!("op {id}"),
            parallelism,
            max_parallelism: max,
        }
    }

    fn moved(id: &str, now: u32, expected: u32) -> Moved {
        Moved {
            id: id.into(),
            name: format!("op {id}"),
            now,
            expected,
        }
    }

    #[test]
    fn a_rescale_outside_is_seen_and_fixed_or_non_parallel_vertices_are_not() {
        // Submitted at 4: a non-parallel source, a map at 4, a sink the code fixed at 1.
        let submitted = [
            vertex("src", 1, 1),
            vertex("map", 4, 128),
            vertex("sink", 1, 128),
        ];
        let mut e = Expected::new(7);
        assert_eq!(e.compare(Some(4), 6, &submitted), Some(vec![]));
        assert_eq!(e.tasks, 6);
        // The same figures again: nothing moved.
        assert_eq!(e.compare(Some(4), 6, &submitted), Some(vec![]));
        // Rescaled to 2 outside jobkeeper (Flink's adaptive scheduler rescales every vertex
        // whose requirements were changed; a non-parallel source stays at 1).
        let rescaled = [
            vertex("src", 1, 1),
            vertex("map", 2, 128),
            vertex("sink", 2, 128),
        ];
        assert_eq!(
            e.compare(Some(4), 5, &rescaled),
            Some(vec![moved("map", 2, 4), moved("sink", 2, 1)])
        );
        // Back as submitted: nothing moved any more.
        assert_eq!(e.compare(Some(4), 6, &submitted), Some(vec![]));
    }

    #[test]
    fn a_run_started_below_the_file_s_parallelism_may_grow_to_it_and_must_then_keep_it() {
        // A cluster short of slots started it at 2 of the file's 4.
        let mut e = Expected::new(1);
        assert_eq!(
            e.compare(Some(4), 2, &[vertex("map", 2, 128)]),
            Some(vec![])
        );
        // Scaled up to the file's figure by the cluster: not a drift.
        assert_eq!(
            e.compare(Some(4), 4, &[vertex("map", 4, 128)]),
            Some(vec![])
        );
        // Then down to 2 outside jobkeeper: a drift.
        assert_eq!(
            e.compare(Some(4), 2, &[vertex("map", 2, 128)]),
            Some(vec![moved("map", 2, 4)])
        );
    }

    #[test]
    fn without_params_parallelism_what_was_submitted_is_kept() {
        let mut e = Expected::new(1);
        assert_eq!(e.compare(None, 3, &[vertex("map", 3, 128)]), Some(vec![]));
        assert_eq!(
            e.compare(None, 5, &[vertex("map", 5, 128)]),
            Some(vec![moved("map", 5, 3)])
        );
    }

    #[test]
    fn a_vertex_list_that_lags_the_task_count_is_read_again() {
        let mut e = Expected::new(1);
        assert_eq!(
            e.compare(Some(2), 4, &[vertex("a", 2, 128), vertex("b", 2, 128)]),
            Some(vec![])
        );
        // Flink's count says 2 while its (cached) vertex list still says 4: nothing is learnt.
        assert_eq!(
            e.compare(Some(2), 2, &[vertex("a", 2, 128), vertex("b", 2, 128)]),
            None
        );
        assert_eq!(e.tasks, 4);
        // A vertex not placed yet (parallelism unknown) is no answer either.
        assert_eq!(
            e.compare(Some(2), 2, &[vertex("a", 2, 128), vertex("b", 0, 128)]),
            None
        );
        assert_eq!(
            e.compare(Some(2), 2, &[vertex("a", 1, 128), vertex("b", 1, 128)]),
            Some(vec![moved("a", 1, 2), moved("b", 1, 2)])
        );
        assert_eq!(e.tasks, 2);
    }

    #[test]
    fn a_vertex_short_of_slots_that_still_requests_its_figure_was_not_rescaled() {
        let all = || vec![moved("a", 1, 2), moved("b", 1, 2), moved("c", 3, 2)];
        assert!(below(&all()));
        assert!(!below(&[moved("c", 3, 2)]));
        // A TaskManager lost: `a` still requests 2 (short of slots); `b` was set to 1 through
        // Flink's REST API; `c` runs above what it must, whatever it requests.
        let requested = HashMap::from([
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("c".to_string(), 2),
        ]);
        assert_eq!(
            rescaled(all(), &requested),
            vec![moved("b", 1, 2), moved("c", 3, 2)]
        );
        // An engine that runs vertices at what they request: every move is a rescale.
        assert_eq!(rescaled(all(), &HashMap::new()), all());
    }

    #[test]
    fn one_drift_per_incident_corrected_or_warned_then_recovered() {
        use Drift::{Correct, Warn};
        let (open, fixed) = (
            Some(Incident { corrected: false }),
            Some(Incident { corrected: true }),
        );
        let rows = [
            // (moved, open incident, drift, what follows)
            (false, None, Correct, Verdict::Nothing),
            (true, None, Correct, Verdict::Raise { correct: true }),
            (true, None, Warn, Verdict::Raise { correct: false }),
            // Still rescaled at the next looks: raised once.
            (true, open, Warn, Verdict::Nothing),
            (true, fixed, Correct, Verdict::Nothing),
            // A correction the cluster did not carry out is tried again, without a new drift;
            // so is a warned incident once the job says `correct`.
            (true, open, Correct, Verdict::Correct),
            // Back as it must be (the corrected run, or rescaled back): recovered.
            (false, open, Warn, Verdict::Recovered),
            (false, fixed, Correct, Verdict::Recovered),
        ];
        for (moved, incident, mode, want) in rows {
            assert_eq!(
                verdict(moved, incident, mode),
                want,
                "{moved} {incident:?} {mode:?}"
            );
        }
    }

    #[test]
    fn the_drift_names_each_moved_vertex_and_the_file_s_figure() {
        assert_eq!(
            describe(
                "flink job abc",
                Some(2),
                &[moved("a", 1, 2), moved("b", 3, 2)]
            ),
            "flink job abc was rescaled outside jobkeeper: `op a` runs at 1, not 2, `op b` runs at 3, \
             not 2 (params.parallelism: 2)"
        );
        assert_eq!(
            describe("flink job abc", None, &[moved("a", 1, 2)]),
            "flink job abc was rescaled outside jobkeeper: `op a` runs at 1, not 2 \
             (no params.parallelism: as first submitted)"
        );
    }
}
