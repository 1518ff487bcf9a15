//! The sync step (SPEC reconcile rules 1–4, 7): fetch the config repo, and when its tip is not
//! the applied commit, diff the job files, plan, and record the new desired state of every
//! changed job in one store transaction; then poke the actors of the jobs that changed.
//!
//! The edges (git, the store) sit in [`sync`] and [`apply_tip`]; what a commit's changes and
//! plan write to the store is the pure [`store_updates`], and which stored jobs a tip without
//! a known base removes is the pure [`removed_jobs`]. [`Follower`] runs one sync per trigger.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::changes::changes_of;
use crate::diag;
use crate::event::JobEvent;
use crate::plan::{self, Change, Plan};
use crate::reconcile::{Context, Reconciler, Scope, spec_hash};
use crate::repo::{CommitInfo, ConfigRepo, JobFileChange, Oid, RepoError};
use crate::spec::{self, JobSpec};
use crate::store::{CommitRecord, DesiredUpdate, StoreError};

mod follow;
pub use follow::{Follower, STARTUP_SYNC_WAIT};

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The tip is the applied commit.
    UpToDate,
    /// A new commit was applied; the jobs it changed.
    Applied {
        /// The commit.
        commit: String,
        /// Changed jobs.
        jobs: usize,
    },
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Git said no.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The store said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task died.
    #[error("sync task failed: {0}")]
    Task(String),
}

impl SyncError {
    /// True when the repo could not be reached (retry with backoff).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Repo(e) if e.is_unreachable())
    }
}

/// One event of a commit's plan: the job and its `planned` or `invalid` event.
pub type Note = (String, JobEvent);

/// What a commit writes to the store, and whom it wakes.
#[derive(Debug, Clone, Default)]
pub struct StoreUpdates {
    /// The new desired state of each changed job, in the order of the changes.
    pub updates: Vec<DesiredUpdate>,
    /// One `planned` or `invalid` event per plan item.
    pub notes: Vec<Note>,
    /// The jobs whose actors have something to do (every plan item but the invalid ones).
    pub poke: Vec<String>,
}

/// A stored job, as [`removed_jobs`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// Job name.
    pub name: String,
    /// Path of its file in the repo.
    pub path: String,
    /// Whether the store has a desired state for it (it is not removed).
    pub desired: bool,
}

/// Maps a commit's changes and their plan to store updates (pure).
///
/// A valid file sets the desired spec (JSON and its hash); an invalid one records its problems
/// and leaves the desired state as it was; a removed file clears it. Each plan item gives one
/// note: `invalid` with the reasons and every problem, or `planned` with the action and reasons.
pub fn store_updates(changes: &[Change], the_plan: &Plan) -> StoreUpdates {
    let updates = changes.iter().map(desired_update).collect();
    let notes = the_plan.items.iter().map(note_of).collect();
    let poke = the_plan
        .items
        .iter()
        .filter(|i| i.action != plan::Action::Invalid)
        .map(|i| i.job.clone())
        .collect();
    StoreUpdates {
        updates,
        notes,
        poke,
    }
}

fn desired_update(change: &Change) -> DesiredUpdate {
    match change {
        Change::Upsert {
            name,
            path,
            spec: Ok(spec),
        } => {
            let json = serde_json::to_string(spec).unwrap_or_default();
            let hash = spec_hash(&json);
            DesiredUpdate::Spec {
                name: name.clone(),
                path: path.clone(),
                spec: json,
                hash,
            }
        }
        Change::Upsert {
            name,
            path,
            spec: Err(errors),
        } => DesiredUpdate::Invalid {
            name: name.clone(),
            path: path.clone(),
            errors: diag::render(errors),
        },
        Change::Remove { name, .. } => DesiredUpdate::Removed { name: name.clone() },
    }
}

fn note_of(item: &plan::Item) -> Note {
    let event = match item.action {
        plan::Action::Invalid => JobEvent::Invalid {
            errors: format!(
                "{}\n{}",
                item.reasons.join("; "),
                diag::render(&item.errors)
            ),
        },
        // Every item has a reason (plan's tests pin it); none would print the word alone, never
        // a colon with nothing after it.
        action if item.reasons.is_empty() => JobEvent::Planned {
            line: action.as_str().to_string(),
        },
        action => JobEvent::Planned {
            line: format!("{}: {}", action.as_str(), item.reasons.join("; ")),
        },
    };
    (item.job.clone(), event)
}

/// The stored jobs a tip removes when there is no applied commit to diff from (nothing applied
/// yet, or the applied commit is unknown to the mirror): every job with a desired state whose
/// name is not among `present`, the jobs of the tip (pure).
pub fn removed_jobs(present: &HashSet<String>, stored: &[StoredJob]) -> Vec<Change> {
    stored
        .iter()
        .filter(|row| row.desired && !present.contains(&row.name))
        .map(|row| Change::Remove {
            name: row.name.clone(),
            path: row.path.clone(),
        })
        .collect()
}

/// Fetches the config repo and applies its tip if it is new; pokes the changed jobs.
pub async fn sync(
    repo: &Arc<ConfigRepo>,
    ctx: &Arc<Context>,
    reconciler: &Arc<Reconciler>,
) -> Result<SyncOutcome, SyncError> {
    let (repo, ctx2, reconciler) = (repo.clone(), ctx.clone(), reconciler.clone());
    let applied = tokio::task::spawn_blocking(move || {
        let applied = apply_tip(&repo, &ctx2)?;
        // Poked from this thread, so new actors are made here: glibc gives each thread a heap
        // (arena) of its own, and this one holds what the parse and plan just freed. Over
        // 10,000 jobs at a first start, the actors then reuse those 20 MB instead of adding
        // to them.
        for job in applied.iter().flat_map(|(_, jobs)| jobs) {
            reconciler.poke(job);
        }
        Ok::<_, SyncError>(applied)
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))??;
    match applied {
        None => Ok(SyncOutcome::UpToDate),
        Some((commit, jobs)) => Ok(SyncOutcome::Applied {
            commit,
            jobs: jobs.len(),
        }),
    }
}

/// Blocking part of a sync: fetch, diff against the applied commit, parse the changed files,
/// and record the new desired state in one transaction. Returns the short commit id and the
/// jobs to poke, or `None` when the tip is already applied (rule 7).
pub fn apply_tip(
    repo: &ConfigRepo,
    ctx: &Context,
) -> Result<Option<(String, Vec<String>)>, SyncError> {
    let tip = repo.fetch()?;
    let applied = ctx.store.applied_commit()?;
    if applied.as_deref() == Some(tip.to_string().as_str()) {
        return Ok(None);
    }
    let (changes, info) = read_changes(repo, ctx, applied.as_deref(), tip)?;
    let names: Vec<&str> = changes.iter().map(Change::name).collect();
    let applied_specs: BTreeMap<String, JobSpec> =
        ctx.store.applied_specs(&names)?.into_iter().collect();
    let the_plan = plan::plan(&applied_specs, &changes);
    let out = store_updates(&changes, &the_plan);
    // The parsed files and the plan are in `out` now: freed before the store's transaction,
    // so a commit of 10,000 new jobs does not hold them and the transaction's memory at once.
    drop((applied_specs, the_plan, changes));
    let commit = CommitRecord {
        id: info.id.clone(),
        author: info.author.clone(),
        subject: info.subject.clone(),
    };
    ctx.store.apply_commit(&commit, &out.updates, &out.notes)?;
    // Stored (and handed to the alerter) with the commit: logged and counted as every event.
    for (job, event) in &out.notes {
        ctx.events
            .announce(Scope::job(job, Some(&commit.id)), event);
    }
    Ok(Some((info.short, out.poke)))
}

/// The changed jobs between the applied commit (when the mirror knows it) and `tip`, parsed,
/// and the tip's commit info.
fn read_changes(
    repo: &ConfigRepo,
    ctx: &Context,
    applied: Option<&str>,
    tip: Oid,
) -> Result<(Vec<Change>, CommitInfo), SyncError> {
    let settings = ctx.settings.get();
    let path = &settings.repo.path;
    let tree = repo.tree();
    let files = crate::changes::TreeFiles {
        tree: &tree,
        commit: tip,
    };
    let sctx = spec::Context {
        settings: Some(&*settings),
        files: Some(&files),
    };
    let from = applied
        .and_then(|a| Oid::from_str(a).ok())
        .filter(|id| tree.repository().find_commit(*id).is_ok());
    let diff =
        crate::changes::with_sql_dependents(&tree, tip, path, tree.diff_files(from, tip, path)?)?;
    let mut changes = changes_of(&tree, &diff, sctx);
    if from.is_none() {
        let present: HashSet<String> = diff
            .iter()
            .filter_map(|c| match c {
                JobFileChange::Added(f) => spec::job_name_of(&f.rel_path).map(str::to_string),
                _ => None,
            })
            .collect();
        let stored: Vec<StoredJob> = ctx
            .store
            .desired_jobs()?
            .into_iter()
            .map(|(name, path)| StoredJob {
                desired: true,
                name,
                path,
            })
            .collect();
        changes.extend(removed_jobs(&present, &stored));
    }
    if !crate::changes::path_exists(&tree, tip, path) {
        tracing::warn!(path = %path, "the config repo has no folder `{path}` at its tip: no jobs (check `repo.path`)");
    }
    let info = tree.commit_info(tip)?;
    Ok((changes, info))
}

#[cfg(test)]
mod tests;
