//! A job's conditions: what is wrong with it now, derived from two facts (what runs, or last
//! ran, and what its latest file asks for) and the typed records the daemon keeps (the last
//! version whose build, deploy or move failed; the version a rollback refused; the open drift
//! or unhealthy incident of a run). [`derive`] is a pure function of those facts, so a
//! condition clears the moment its cause is gone: a revert to what runs clears
//! [`Condition::DeployFailed`] and [`Condition::RolledBack`], a fixed file clears
//! [`Condition::Invalid`]. Lists, `status`, the pages and the metrics show conditions, not the
//! last event, so a later event never hides one that still holds. Text is made at the edge
//! ([`Condition::phrase`], [`place_phrase`]).

use serde::{Deserialize, Serialize};

use crate::store::JobState;
pub use crate::store::{Failure, Incident, Incidents, Place, Stage};

/// The version a rollback refused (see `reconcile::rollback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused<'a> {
    /// Its spec hash.
    pub hash: &'a str,
    /// Its config commit.
    pub commit: Option<&'a str>,
    /// Why it was rolled back.
    pub reason: Option<&'a str>,
}

/// The live (or last) run of a job, as conditions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts<'a> {
    /// Its id.
    pub run_id: i64,
    /// The spec hash of the version it runs.
    pub spec_hash: &'a str,
    /// Where it runs.
    pub place: &'a Place,
}

/// Everything [`derive`] looks at: stored facts and what the daemon knows of its clusters now.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The stored state.
    pub state: Option<JobState>,
    /// The stored state's reason.
    pub reason: Option<&'a str>,
    /// The problems of the latest version of the job file, when it is invalid.
    pub invalid: Option<&'a str>,
    /// The hash of the latest valid version of the file.
    pub desired_hash: Option<&'a str>,
    /// The hash of the deployed version.
    pub applied_hash: Option<&'a str>,
    /// The live run (the newest, when several).
    pub running: Option<RunFacts<'a>>,
    /// Where the file asks the job to run: its env and that env's cluster now.
    pub file: Option<&'a Place>,
    /// The last version whose build, deploy or move failed.
    pub failed: Option<&'a Failure>,
    /// The version a rollback refused.
    pub refused: Option<Refused<'a>>,
    /// Open incidents of its runs.
    pub incidents: Option<&'a Incidents>,
    /// The cluster of the job's run or env does not answer (its location).
    pub engine_down: Option<&'a str>,
    /// Changes to the job are held (why).
    pub held: Option<&'a str>,
    /// The job waits on its host (why: a full disk, no file descriptors, the store).
    pub host_fault: Option<&'a str>,
}

/// A condition of a job: something wrong that holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// The latest version of the job file is invalid: it is not applied.
    Invalid {
        /// Its problems, `path:line:column: message` each.
        problems: String,
    },
    /// The latest version of the file did not build; the previous one (if any) runs.
    BuildFailed {
        /// Its config commit.
        commit: Option<String>,
        /// Why.
        reason: String,
    },
    /// The latest version of the file was refused by its engine (or its env's new cluster
    /// refused the job); what ran before runs.
    DeployFailed {
        /// Its config commit.
        commit: Option<String>,
        /// Why.
        reason: String,
        /// The job was to move to another cluster or env.
        moved: bool,
        /// Where the job runs instead, when not where the file asks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runs_elsewhere: Option<Place>,
    },
    /// The latest version failed on probation and was rolled back: the previous one runs.
    RolledBack {
        /// The config commit of the refused version.
        bad_commit: Option<String>,
        /// Why it was rolled back.
        reason: Option<String>,
    },
    /// A live run was rescaled outside jobkeeper.
    Drift {
        /// The run.
        run_id: i64,
        /// What differs.
        what: String,
    },
    /// A run was found unhealthy; no run has started since.
    Unhealthy {
        /// The run.
        run_id: i64,
        /// Why.
        reason: String,
    },
    /// The restart policy gave up: nothing restarts until a new commit or an operator.
    GaveUp {
        /// Why.
        reason: Option<String>,
    },
    /// Changes to the job are held.
    Held {
        /// Why, and until when.
        why: String,
    },
    /// The cluster of the job does not answer.
    WaitingOnEngine {
        /// The cluster.
        engine: String,
    },
    /// The job waits on its host.
    WaitingOnHost {
        /// Why.
        why: String,
    },
}

/// A condition's kind, one word each: the `problem` label of `jobkeeper_job_problems`, and a
/// `?state=` filter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// [`Condition::Invalid`].
    Invalid,
    /// [`Condition::BuildFailed`].
    BuildFailed,
    /// [`Condition::DeployFailed`].
    DeployFailed,
    /// [`Condition::RolledBack`].
    RolledBack,
    /// [`Condition::Drift`].
    Drift,
    /// [`Condition::Unhealthy`].
    Unhealthy,
    /// [`Condition::GaveUp`].
    GaveUp,
    /// [`Condition::Held`].
    Held,
    /// [`Condition::WaitingOnEngine`].
    WaitingOnEngine,
    /// [`Condition::WaitingOnHost`].
    WaitingOnHost,
}

words!(ConditionKind {
    Invalid => "invalid",
    BuildFailed => "build_failed",
    DeployFailed => "deploy_failed",
    RolledBack => "rolled_back",
    Drift => "drift",
    Unhealthy => "unhealthy",
    GaveUp => "gave_up",
    Held => "held",
    WaitingOnEngine => "waiting_on_engine",
    WaitingOnHost => "waiting_on_host",
});

impl Condition {
    /// Its kind.
    pub fn kind(&self) -> ConditionKind {
        match self {
            Condition::Invalid { .. } => ConditionKind::Invalid,
            Condition::BuildFailed { .. } => ConditionKind::BuildFailed,
            Condition::DeployFailed { .. } => ConditionKind::DeployFailed,
            Condition::RolledBack { .. } => ConditionKind::RolledBack,
            Condition::Drift { .. } => ConditionKind::Drift,
            Condition::Unhealthy { .. } => ConditionKind::Unhealthy,
            Condition::GaveUp { .. } => ConditionKind::GaveUp,
            Condition::Held { .. } => ConditionKind::Held,
            Condition::WaitingOnEngine { .. } => ConditionKind::WaitingOnEngine,
            Condition::WaitingOnHost { .. } => ConditionKind::WaitingOnHost,
        }
    }

    /// The condition in a few words (`deploy failed`, `invalid file`), for a state column.
    pub fn label(&self) -> &'static str {
        match self.kind() {
            ConditionKind::Invalid => "invalid file",
            ConditionKind::BuildFailed => "build failed",
            ConditionKind::DeployFailed => "deploy failed",
            ConditionKind::RolledBack => "rolled back",
            ConditionKind::Drift => "drift",
            ConditionKind::Unhealthy => "unhealthy",
            ConditionKind::GaveUp => "gave up",
            ConditionKind::Held => "held",
            ConditionKind::WaitingOnEngine => "waiting on its cluster",
            ConditionKind::WaitingOnHost => "waiting on the host",
        }
    }

    /// The condition in one line with its cause (the first line of a long reason).
    pub fn phrase(&self) -> String {
        let first = |s: &str| s.lines().next().unwrap_or("").to_string();
        let short = |c: &Option<String>| {
            c.as_deref()
                .map(|c| format!(" {}", c.chars().take(8).collect::<String>()))
                .unwrap_or_default()
        };
        match self {
            Condition::Invalid { problems } => {
                format!(
                    "the latest job file is invalid and not applied: {}",
                    first(problems)
                )
            }
            Condition::BuildFailed { commit, reason } => {
                format!(
                    "the version of commit{} did not build: {}",
                    short(commit),
                    first(reason)
                )
            }
            Condition::DeployFailed {
                commit,
                reason,
                moved,
                ..
            } => {
                let what = if *moved { "the move" } else { "the version" };
                format!(
                    "{what} of commit{} was refused: {}",
                    short(commit),
                    first(reason)
                )
            }
            Condition::RolledBack { bad_commit, reason } => format!(
                "the version of commit{} was rolled back: {}",
                short(bad_commit),
                reason.as_deref().map(first).unwrap_or_default()
            ),
            Condition::Drift { run_id, what } => format!("run {run_id} drifted: {}", first(what)),
            Condition::Unhealthy { run_id, reason } => {
                format!("run {run_id} was unhealthy: {}", first(reason))
            }
            Condition::GaveUp { reason } => format!(
                "the restart policy gave up: {}",
                reason.as_deref().map(first).unwrap_or_default()
            ),
            Condition::Held { why } => format!("changes are held: {}", first(why)),
            Condition::WaitingOnEngine { engine } => format!("{engine} does not answer"),
            Condition::WaitingOnHost { why } => format!("waiting on the host: {}", first(why)),
        }
    }
}

/// Every condition that holds for a job with these facts, in [`ConditionKind`] order.
pub fn derive(f: &Facts<'_>) -> Vec<Condition> {
    let mut out = Vec::new();
    if let Some(problems) = f.invalid {
        out.push(Condition::Invalid {
            problems: problems.to_string(),
        });
    }
    // What runs, or else what was deployed: the version a failure or rollback is measured
    // against. A desired version equal to it has nothing pending.
    let runs_hash = f.running.as_ref().map(|r| r.spec_hash).or(f.applied_hash);
    let pending = |hash: &str| f.desired_hash == Some(hash) && runs_hash != Some(hash);
    let elsewhere = || {
        let (run, file) = (f.running.as_ref()?, f.file?);
        run.place.differs_from(file).then(|| run.place.clone())
    };
    if let Some(failed) = f.failed {
        let holds = match failed.stage {
            Stage::Build | Stage::Deploy => pending(&failed.hash),
            // The same version runs on its former cluster while the env names another.
            Stage::Move => f.desired_hash == Some(failed.hash.as_str()) && elsewhere().is_some(),
        };
        if holds && failed.stage == Stage::Build {
            out.push(Condition::BuildFailed {
                commit: failed.commit.clone(),
                reason: failed.reason.clone(),
            });
        } else if holds {
            let runs_elsewhere = elsewhere();
            out.push(Condition::DeployFailed {
                commit: failed.commit.clone(),
                reason: failed.reason.clone(),
                moved: failed.stage == Stage::Move || runs_elsewhere.is_some(),
                runs_elsewhere,
            });
        }
    }
    if let Some(r) = &f.refused
        && pending(r.hash)
    {
        out.push(Condition::RolledBack {
            bad_commit: r.commit.map(str::to_string),
            reason: r.reason.map(str::to_string),
        });
    }
    let incidents = f.incidents.cloned().unwrap_or_default();
    if let (Some(d), Some(run)) = (&incidents.drift, &f.running)
        && d.run_id == run.run_id
    {
        out.push(Condition::Drift {
            run_id: d.run_id,
            what: d.what.clone(),
        });
    }
    if let Some(u) = &incidents.unhealthy
        && f.running.as_ref().is_none_or(|r| r.run_id <= u.run_id)
    {
        out.push(Condition::Unhealthy {
            run_id: u.run_id,
            reason: u.what.clone(),
        });
    }
    if f.state == Some(JobState::GaveUp) {
        out.push(Condition::GaveUp {
            reason: f.reason.map(str::to_string),
        });
    }
    if let Some(why) = f.held {
        out.push(Condition::Held {
            why: why.to_string(),
        });
    }
    if let Some(engine) = f.engine_down {
        out.push(Condition::WaitingOnEngine {
            engine: engine.to_string(),
        });
    }
    if let Some(why) = f.host_fault {
        out.push(Condition::WaitingOnHost {
            why: why.to_string(),
        });
    }
    out
}

/// The state a job is shown in: the stored one, except that `rolled_back` is only shown while
/// its condition holds (a revert to what runs shows `running`).
pub fn shown_state(stored: JobState, conditions: &[Condition], live: bool) -> JobState {
    let rolled_back = conditions
        .iter()
        .any(|c| c.kind() == ConditionKind::RolledBack);
    match stored {
        JobState::RolledBack if !rolled_back && live => JobState::Running,
        other => other,
    }
}

/// One phrase saying where a job runs when that is not where its file asks, and why:
/// "runs on flink (2.3.0); the file asks for flink-1-20: the move was refused". `None` when it
/// runs where the file asks (or nothing runs).
pub fn place_phrase(running: &Place, file: &Place, conditions: &[Condition]) -> Option<String> {
    if !running.differs_from(file) {
        return None;
    }
    let refused = conditions
        .iter()
        .any(|c| matches!(c, Condition::DeployFailed { .. }));
    let why = if refused {
        "the move was refused"
    } else {
        "not moved yet"
    };
    // Same env, another cluster: the env's cluster changed in the daemon config.
    let same_env = running.env == file.env;
    Some(format!(
        "runs on {}; the file asks for {}: {why}",
        running.label(same_env),
        if same_env {
            file.label(true)
        } else {
            file.env.clone().unwrap_or_default()
        }
    ))
}

#[cfg(test)]
mod tests;
