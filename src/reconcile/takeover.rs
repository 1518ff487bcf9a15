//! `adopt`: on a job's first apply, the job already running on the env's cluster is recorded as
//! the job's run instead of a submit. Nothing is stopped, submitted or rescaled; from then on
//! the job is supervised like any other (health, restarts, alerts), and a later change upgrades
//! it as usual.
//!
//! The match is pure ([`find`]): the engine id first, then the name among RUNNING jobs. No
//! match, several, or a job already another job's run: `deploy_failed` naming what was found,
//! stalled until the file changes. The run is recorded with its engine id in one store write
//! ([`crate::store::Store::insert_adopted_run`]), so a daemon stopped at any point either looks
//! again or adopts that run at its next start; since adopting never submits, no job runs twice.

use std::collections::HashMap;

use tokio::time::Instant;

use super::actor::{Actor, Live};
use super::decide::{Deployed, StepError};
use crate::engine::{ClusterJob, EngineError};
use crate::event::{EventKind, JobEvent};
use crate::store::JobState;

/// At most this many jobs are named in a message.
const SHOWN: usize = 10;

/// Why `adopt` found no job to take over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    /// No job has that id or RUNNING name.
    #[error(
        "adopt: no job with id or RUNNING name `{target}` on {location}; nothing was submitted. \
         Live there: {live}"
    )]
    NotFound {
        /// What `adopt` names.
        target: String,
        /// The cluster ([`crate::engine::Engine::location`]).
        location: String,
        /// The jobs live there, described.
        live: String,
    },
    /// Several RUNNING jobs have that name.
    #[error(
        "adopt: {count} RUNNING jobs named `{target}` on {location}: {listed}; nothing was taken \
         over or submitted. Name one by its id"
    )]
    Ambiguous {
        /// How many.
        count: usize,
        /// What `adopt` names.
        target: String,
        /// The cluster.
        location: String,
        /// Those jobs, described.
        listed: String,
    },
    /// The job found is another job's run.
    #[error(
        "adopt: {found} on {location} is already the run of job `{owner}`; nothing was taken \
         over or submitted"
    )]
    Owned {
        /// The job found, described.
        found: String,
        /// The cluster.
        location: String,
        /// The job whose run it is.
        owner: String,
    },
}

/// The one live job `target` names among `live` (an engine id, or the name of exactly one
/// RUNNING job), or why there is none. `owners` maps engine ids to the jobs whose runs they are.
pub fn find<'a>(
    target: &str,
    live: &'a [ClusterJob],
    owners: &HashMap<String, String>,
    location: &str,
) -> Result<&'a ClusterJob, AdoptError> {
    let found = match live.iter().find(|j| j.engine_id == target) {
        Some(j) => j,
        None => {
            let named: Vec<&ClusterJob> = live
                .iter()
                .filter(|j| j.name == target && j.state == "RUNNING")
                .collect();
            match named.as_slice() {
                [one] => *one,
                [] => {
                    return Err(AdoptError::NotFound {
                        target: target.to_string(),
                        location: location.to_string(),
                        live: listing(live.iter()),
                    });
                }
                many => {
                    return Err(AdoptError::Ambiguous {
                        count: many.len(),
                        target: target.to_string(),
                        location: location.to_string(),
                        listed: listing(many.iter().copied()),
                    });
                }
            }
        }
    };
    if let Some(owner) = owners.get(&found.engine_id) {
        return Err(AdoptError::Owned {
            found: describe(found),
            location: location.to_string(),
            owner: owner.clone(),
        });
    }
    Ok(found)
}

/// `id (`name`, STATE, since T)`.
pub fn describe(j: &ClusterJob) -> String {
    let since = j
        .since_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| format!(", since {}", t.to_rfc3339()))
        .unwrap_or_default();
    format!("{} (`{}`, {}{since})", j.engine_id, j.name, j.state)
}

/// The first [`SHOWN`] jobs, described; `none` for none.
fn listing<'a>(jobs: impl Iterator<Item = &'a ClusterJob>) -> String {
    let all: Vec<&ClusterJob> = jobs.collect();
    if all.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<String> = all.iter().take(SHOWN).map(|j| describe(j)).collect();
    if all.len() > SHOWN {
        shown.push(format!("and {} more", all.len() - SHOWN));
    }
    shown.join(", ")
}

fn deploy_failed(reason: String) -> StepError {
    StepError::Stalled {
        kind: EventKind::DeployFailed,
        reason,
    }
}

impl Actor {
    /// Whether a new version is the job's first apply with `adopt`: the job has no runs at all.
    /// A job with runs ignores `adopt`.
    pub(super) async fn first_adoption(&self, new: &Deployed) -> bool {
        if self.applied.is_some() || new.spec.adopt.is_none() {
            return false;
        }
        let read = self.ctx.store.runs(&self.name, 1).await;
        // Unread, the job counts as one that ran: nothing is taken over.
        self.ctx
            .store
            .read_or_log(Some(&self.name), "runs, before a takeover", read)
            .is_some_and(|runs| runs.is_empty())
    }

    /// Takes over the job `new.spec.adopt` names (see the module doc).
    pub(super) async fn take_over(&mut self, new: Deployed) -> Result<(), StepError> {
        let target = new.spec.adopt.clone().unwrap_or_default();
        let engine = self
            .engine_for(&new.spec)
            .map_err(|e| deploy_failed(e.to_string()))?;
        let location = engine.location();
        let live = match engine.live_jobs().await {
            Ok(Some(live)) => live,
            Ok(None) => {
                let needs = engine
                    .listing_needs()
                    .map(|n| format!(" ({}: {n})", engine.kind().as_str()))
                    .unwrap_or_default();
                return Err(deploy_failed(format!(
                    "adopt: {location} cannot list its jobs{needs}; nothing was submitted"
                )));
            }
            Err(EngineError::Unreachable(e)) => {
                self.ctx.outages.down(&self.ctx.events, &location, &e).await;
                self.set_state(
                    JobState::Deploying,
                    Some("waiting for the cluster to adopt from"),
                )
                .await;
                return Err(StepError::Waiting {
                    after: self.engine_retry.backoff.peek(),
                });
            }
            Err(e) => return Err(deploy_failed(format!("adopt: {e}"))),
        };
        self.ctx.outages.up(&self.ctx.events, &location).await;
        // Unread, no run's owner is known: nothing is taken over now, it is tried again.
        let Some(owners) = self.run_owners().await else {
            return Err(StepError::Waiting {
                after: self.engine_retry.backoff.peek(),
            });
        };
        let found =
            find(&target, &live, &owners, &location).map_err(|e| deploy_failed(e.to_string()))?;
        let log_dir = crate::runlogs::job_dir(&self.ctx.logs_dir, &self.name);
        let handle = self
            .ctx
            .store
            .insert_adopted_run(
                &self.name,
                self.commit.as_deref(),
                &new.hash,
                (engine.kind(), &new.spec.env),
                &log_dir,
                (&found.engine_id, engine.cluster()),
            )
            .await
            .map_err(|e| deploy_failed(format!("adopt: could not record the run: {e}")))?;
        let note = format!(
            "taken over on {location} as it ran: job {} (adopt: {target}); not stopped, not \
             submitted again\n",
            describe(found)
        );
        let log_path = log_dir.join(format!("{}.log", handle.run_id));
        crate::engine::cluster::write_log(&log_path, &note).await;
        let run_id = handle.run_id;
        let event = JobEvent::Adopted {
            location,
            engine_id: handle.engine_id.clone(),
            named: Some(target),
        };
        let batch = new.is_batch();
        self.applied = Some(new);
        self.record_applied().await;
        self.live.push(Live {
            run_id,
            handle,
            engine,
            secrets: Default::default(),
            deadline: None,
            started: Instant::now(),
            confirmed: true,
        });
        self.set_state(JobState::Running, None).await;
        self.event(Some(run_id), &event).await;
        if batch {
            self.schedule_next(false).await;
        }
        Ok(())
    }

    /// An adoption a previous daemon recorded the run of but not the version: the version is
    /// recorded now, the run left as it is.
    pub(super) async fn finish_adoption(&mut self, new: Deployed) {
        let batch = new.is_batch();
        self.applied = Some(new);
        self.record_applied().await;
        self.set_state(JobState::Running, None).await;
        if batch {
            self.schedule_next(false).await;
        }
    }

    /// Engine id → the job whose live run it is (every job's); `None` when the store cannot
    /// be read (logged and counted).
    async fn run_owners(&self) -> Option<HashMap<String, String>> {
        let read = self.ctx.store.live_runs().await;
        let runs =
            self.ctx
                .store
                .read_or_log(Some(&self.name), "live runs, for a takeover", read)?;
        Some(
            runs.into_iter()
                .filter_map(|r| Some((r.handle?.engine_id, r.job)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, name: &str, state: &str) -> ClusterJob {
        ClusterJob {
            engine_id: id.into(),
            name: name.into(),
            state: state.into(),
            since_ms: None,
        }
    }

    #[test]
    fn an_id_or_one_running_name_matches() {
        let live = [
            job("a1", "clicks", "RUNNING"),
            job("b2", "views", "RUNNING"),
            job("c3", "views", "RESTARTING"),
        ];
        let none = HashMap::new();
        assert_eq!(find("a1", &live, &none, "f").unwrap().engine_id, "a1");
        assert_eq!(find("clicks", &live, &none, "f").unwrap().engine_id, "a1");
        // One RUNNING job of that name: the restarting one does not count.
        assert_eq!(find("views", &live, &none, "f").unwrap().engine_id, "b2");
        // An id matches whatever its state.
        assert_eq!(find("c3", &live, &none, "f").unwrap().engine_id, "c3");
    }

    #[test]
    fn none_several_or_an_owned_job_is_refused_naming_what_was_found() {
        let live = [job("a1", "x", "RUNNING"), job("b2", "x", "RUNNING")];
        let none = HashMap::new();
        assert_eq!(
            find("x", &live, &none, "flink cluster http://f")
                .unwrap_err()
                .to_string(),
            "adopt: 2 RUNNING jobs named `x` on flink cluster http://f: a1 (`x`, RUNNING), b2 \
             (`x`, RUNNING); nothing was taken over or submitted. Name one by its id"
        );
        assert_eq!(
            find("nope", &live[..1], &none, "f")
                .unwrap_err()
                .to_string(),
            "adopt: no job with id or RUNNING name `nope` on f; nothing was submitted. Live \
             there: a1 (`x`, RUNNING)"
        );
        assert!(
            find("nope", &[], &none, "f")
                .unwrap_err()
                .to_string()
                .ends_with("Live there: none")
        );
        let owners = HashMap::from([("a1".to_string(), "other".to_string())]);
        assert_eq!(
            find("a1", &live, &owners, "f").unwrap_err().to_string(),
            "adopt: a1 (`x`, RUNNING) on f is already the run of job `other`; nothing was taken \
             over or submitted"
        );
        let many: Vec<ClusterJob> = (0..12)
            .map(|i| job(&format!("j{i}"), "y", "RUNNING"))
            .collect();
        assert!(
            find("z", &many, &none, "f")
                .unwrap_err()
                .to_string()
                .ends_with("and 2 more")
        );
    }
}
