//! What the API, the pages and the metrics show of a job besides its row: its conditions
//! ([`crate::condition::derive`] over the stored facts and what the daemon knows of its
//! clusters now), the state shown, where its live run runs and where its file asks it to run.

use std::collections::HashMap;

use crate::condition::{self, Condition, ConditionKind, Facts, Place, Refused, RunFacts};
use crate::store::{ConditionRow, JobState, Running, StoreError};

use super::ApiState;

/// One job as shown (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Shown {
    /// Its conditions.
    pub conditions: Vec<Condition>,
    /// The state shown ([`condition::shown_state`]); `None` when the stored one cannot be read.
    pub state: Option<JobState>,
    /// The state's reason (`None` when the shown state is not the stored one).
    pub reason: Option<String>,
    /// Where its live run runs.
    pub running: Option<Place>,
    /// Where its file asks it to run: its env, that env's engine, cluster and version now.
    pub file: Option<Place>,
    /// One phrase when the two differ ([`condition::place_phrase`]).
    pub place: Option<String>,
}

/// Where each env runs jobs now, read once per list: its engine, cluster and version, and the
/// cluster's location when it does not answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envs {
    now: HashMap<String, (Place, Option<String>)>,
}

impl Envs {
    /// The daemon's envs as they are now.
    pub fn now(state: &ApiState) -> Envs {
        let settings = state.settings.get();
        let ctx = state.reconciler.context();
        let mut now = HashMap::new();
        for (env, config) in &settings.envs {
            let engine = ctx.engines.get(env);
            let place = Place {
                env: Some(env.clone()),
                engine: Some(config.engine.as_str().to_string()),
                cluster: engine.as_ref().and_then(|e| e.cluster()),
                version: engine.as_ref().and_then(|e| e.version()),
            };
            let down = engine
                .map(|e| e.location())
                .filter(|l| ctx.outages.is_down(l));
            now.insert(env.clone(), (place, down));
        }
        Envs { now }
    }

    /// Where env `env` runs jobs now (only its name when the daemon has no such env).
    pub fn place(&self, env: &str) -> Place {
        self.now.get(env).map_or_else(
            || Place {
                env: Some(env.to_string()),
                ..Place::default()
            },
            |(p, _)| p.clone(),
        )
    }

    /// The location of env `env`'s cluster when it does not answer; a run on another cluster
    /// than the env's now (`cluster`) is not judged by it.
    fn down(&self, env: Option<&str>, cluster: Option<&str>) -> Option<String> {
        let (place, down) = self.now.get(env?)?;
        if cluster.is_some() && place.cluster.as_deref() != cluster {
            return None;
        }
        down.clone()
    }
}

/// What is shown of job `name` from its stored facts `row`, its live run `running` and what
/// the daemon knows now (clusters that do not answer, a wait on the host).
pub fn shown(
    state: &ApiState,
    envs: &Envs,
    name: &str,
    row: Option<&ConditionRow>,
    running: Option<&Running>,
) -> Shown {
    let Some(row) = row else {
        return Shown::default();
    };
    let host_fault = state
        .reconciler
        .context()
        .host
        .job(name)
        .map(|w| w.reason());
    let file = row.desired_env.as_deref().map(|e| envs.place(e));
    let running_place = running.map(|r| {
        let mut place = r.place.clone();
        // A run recorded without its cluster's version: the version of its env's cluster,
        // when the run is on it.
        if place.version.is_none()
            && let Some(env) = place.env.as_deref()
        {
            let now = envs.place(env);
            if place.cluster == now.cluster {
                place.version = now.version;
            }
        }
        place
    });
    let engine_down = running_place
        .as_ref()
        .and_then(|p| envs.down(p.env.as_deref(), p.cluster.as_deref()))
        .or_else(|| envs.down(row.desired_env.as_deref(), None));
    let facts = Facts {
        state: row.state,
        reason: row.reason.as_deref(),
        invalid: row.invalid.as_deref(),
        desired_hash: row.desired_hash.as_deref(),
        applied_hash: row.applied_hash.as_deref(),
        running: running
            .zip(running_place.as_ref())
            .map(|(r, place)| RunFacts {
                run_id: r.run_id,
                spec_hash: &r.spec_hash,
                place,
            }),
        file: file.as_ref(),
        failed: row.failed.as_ref(),
        refused: row.refused_hash.as_deref().map(|hash| Refused {
            hash,
            commit: row.refused_commit.as_deref(),
            reason: row.refused_reason.as_deref(),
        }),
        incidents: Some(&row.incidents),
        engine_down: engine_down.as_deref(),
        held: None,
        host_fault: host_fault.as_deref(),
    };
    let conditions = condition::derive(&facts);
    let state_shown = row
        .state
        .map(|s| condition::shown_state(s, &conditions, running.is_some()));
    let place = running_place
        .as_ref()
        .zip(file.as_ref())
        .and_then(|(r, f)| condition::place_phrase(r, f, &conditions));
    Shown {
        reason: if state_shown == row.state {
            row.reason.clone()
        } else {
            None
        },
        state: state_shown,
        conditions,
        running: running_place,
        file,
        place,
    }
}

/// How many jobs have each condition, every kind listed.
pub type ConditionCounts = Vec<(ConditionKind, u64)>;

/// The jobs (still in the config repo) that have a condition, by name (the status page's
/// problems view), and how many have each condition, every kind listed: one pass over the jobs
/// that may have one ([`crate::store::Store::problem_rows`]), with the envs as they are now
/// (`envs`) and the jobs waiting on the host (`waiting`). See [`super::counts`], which keeps
/// them between changes.
pub fn problems(
    state: &ApiState,
    envs: &Envs,
    waiting: &[&str],
) -> Result<(Vec<String>, ConditionCounts), StoreError> {
    let down: Vec<&str> = envs
        .now
        .iter()
        .filter(|(_, (_, down))| down.is_some())
        .map(|(env, _)| env.as_str())
        .collect();
    let mut names = Vec::new();
    let mut counts: HashMap<ConditionKind, u64> = HashMap::new();
    for (name, row) in &state.store.blocking().problem_rows(&down, waiting)? {
        let running = state.store.blocking().running_of(name)?;
        let conditions = shown(state, envs, name, Some(row), running.as_ref()).conditions;
        for c in &conditions {
            *counts.entry(c.kind()).or_default() += 1;
        }
        if !conditions.is_empty() {
            names.push(name.clone());
        }
    }
    names.sort();
    let counts = ConditionKind::ALL
        .into_iter()
        .map(|k| (k, counts.get(&k).copied().unwrap_or(0)))
        .collect();
    Ok((names, counts))
}
