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
pub mod frozen;
pub use follow::{Follower, STARTUP_SYNC_WAIT};

/// What one sync did.
#[derive(Debug, Clone, PartialEq)]
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
    /// The tip removes more jobs than `max_removals`: nothing of it was applied.
    Held {
        /// The tip's full id.
        commit: String,
        /// Its `commit_held` event.
        event: JobEvent,
    },
}

/// Whether `tip` descends from the commit `applied` (false when the mirror does not hold it).
fn descends(repo: &ConfigRepo, tip: Oid, applied: &str) -> bool {
    let Ok(applied) = Oid::from_str(applied) else {
        return false;
    };
    repo.tree()
        .repository()
        .graph_descendant_of(tip, applied)
        .unwrap_or(false)
}

/// What [`apply_tip`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The tip is the applied commit.
    UpToDate,
    /// The tip was applied: its short id and the jobs to poke.
    Applied(String, Vec<String>),
    /// The tip is held ([`crate::removals`]): its full id and its `commit_held` event.
    Held(String, JobEvent),
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The config repo could not be fetched, or its branch is not there.
    #[error(transparent)]
    Fetch(RepoError),
    /// Git said no.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The store said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task died.
    #[error("sync task failed: {0}")]
    Task(String),
    /// With `ha`: the tip does not descend from the applied commit (a mirror that lags behind
    /// what another daemon applied, or a rewritten branch); it is not applied.
    #[error(
        "the tip {tip} does not descend from the applied commit {applied}: not applied, so a \
         lagging mirror never rolls jobs back (with `ha`, move the branch forward, e.g. with a \
         revert commit, instead of rewriting it)"
    )]
    NotDescendant {
        /// The fetched tip (short).
        tip: String,
        /// The applied commit (short).
        applied: String,
    },
}

impl SyncError {
    /// True when the repo could not be reached, or its branch is missing (retry with
    /// backoff; an outage: `repo_unreachable`).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Fetch(e) if e.is_unreachable() || e.is_not_found())
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
                crate::plan::joined(&item.reasons),
                diag::render(&item.errors)
            ),
        },
        // Every item has a reason (plan's tests pin it); none would print the word alone, never
        // a colon with nothing after it.
        action if item.reasons.is_empty() => JobEvent::Planned {
            line: action.as_str().to_string(),
        },
        action => JobEvent::Planned {
            line: format!(
                "{}: {}",
                action.as_str(),
                crate::plan::joined(&item.reasons)
            ),
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
        if let Applied::Applied(_, jobs) = &applied {
            for job in jobs {
                reconciler.poke(job);
            }
        }
        Ok::<_, SyncError>(applied)
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))??;
    Ok(match applied {
        Applied::UpToDate => SyncOutcome::UpToDate,
        Applied::Applied(commit, jobs) => SyncOutcome::Applied {
            commit,
            jobs: jobs.len(),
        },
        Applied::Held(commit, event) => SyncOutcome::Held { commit, event },
    })
}

/// Blocking part of a sync: fetch, diff against the applied commit, parse the changed files,
/// and record the new desired state in one transaction. Returns the short commit id and the
/// jobs to poke; [`Applied::UpToDate`] when the tip is already applied (rule 7); and
/// [`Applied::Held`] when it removes more jobs than `max_removals` and no new commit carries
/// the trailer (nothing is written then). Each new commit libgit2 cannot parse is named in a
/// `commit_malformed` event when the tip is applied.
pub fn apply_tip(repo: &ConfigRepo, ctx: &Context) -> Result<Applied, SyncError> {
    let tip = repo.fetch().map_err(SyncError::Fetch)?;
    let applied = ctx.store.blocking().applied_commit()?;
    if applied.as_deref() == Some(tip.to_string().as_str()) {
        return Ok(Applied::UpToDate);
    }
    if ctx.settings.get().ha.is_some()
        && let Some(applied) = applied.as_deref()
        && !descends(repo, tip, applied)
    {
        return Err(SyncError::NotDescendant {
            tip: tip.to_string()[..12].to_string(),
            applied: applied.get(..12).unwrap_or(applied).to_string(),
        });
    }
    let Read {
        mut changes,
        info,
        commits,
        jobs,
        changed_by,
        defaults,
    } = read_changes(repo, ctx, applied.as_deref(), tip)?;
    let removed = changes
        .iter()
        .filter(|c| matches!(c, Change::Remove { .. }))
        .count();
    let max = ctx.settings.get().max_removals;
    let removals = crate::removals::check(max, removed, jobs, &commits);
    if removals.held() {
        let event = JobEvent::CommitHeld {
            commit: info.short.clone(),
            removed,
            of: jobs,
            limit: removals.max_removals,
        };
        return Ok(Applied::Held(info.id, event));
    }
    if let Some(a) = &removals.allowed {
        tracing::info!(commit = %info.short, removed, of = jobs, allowed_by = %a.commit, reason = %a.reason, "removals over max_removals allowed by a trailer");
    }
    let names: Vec<&str> = changes.iter().map(Change::name).collect();
    let applied_specs: BTreeMap<String, JobSpec> = ctx
        .store
        .blocking()
        .applied_specs(&names)?
        .into_iter()
        .collect();
    let mut the_plan = plan::plan(&applied_specs, &changes);
    defaults.settle(&mut the_plan, &mut changes);
    let mut out = store_updates(&changes, &the_plan);
    let settings = ctx.settings.get();
    let freeze = frozen::freeze_at(&repo.tree(), tip, &settings);
    let override_reason = commits
        .iter()
        .find_map(|c| c.trailer(crate::freeze::OVERRIDE_TRAILER));
    let holds = frozen::hold(
        &mut out,
        &changes,
        &applied_specs,
        &freeze,
        crate::freeze::now_in(settings.timezone),
        override_reason.as_deref(),
        &info.id,
    );
    // Held first: a crash before the commit is recorded holds them again on the next sync.
    let applied_now: Vec<&str> = holds.applied.iter().map(String::as_str).collect();
    ctx.store.blocking().set_held(&holds.held, &applied_now)?;
    // The parsed files and the plan are in `out` now: freed before the store's transaction,
    // so a commit of 10,000 new jobs does not hold them and the transaction's memory at once.
    drop((applied_specs, the_plan, changes));
    let commit = CommitRecord {
        id: info.id.clone(),
        author: info.author.clone(),
        subject: info.subject.clone(),
    };
    ctx.store
        .blocking()
        .apply_commit(&commit, &out.updates, &out.notes)?;
    // Before the actors are poked, so what they record names each job's own commit. A crash
    // in between leaves the tip, which holds the same files.
    if !changed_by.is_empty() {
        ctx.store.blocking().set_changed_by(&changed_by)?;
    }
    // Stored (and handed to the alerter) with the commit: logged and counted as every event.
    for (job, event) in &out.notes {
        ctx.events
            .announce(Scope::job(job, Some(&commit.id)), event);
    }
    for c in commits.iter().rev() {
        if let Some(problem) = &c.problem {
            let event = JobEvent::CommitMalformed {
                commit: c.id.to_string()[..8].to_string(),
                problem: problem.clone(),
                author: c.author.clone(),
            };
            let id = c.id.to_string();
            let scope = Scope {
                commit: Some(&id),
                ..Scope::daemon()
            };
            ctx.events.emit_blocking(scope, &event);
        }
    }
    Ok(Applied::Applied(info.short, out.poke))
}

/// What [`read_changes`] read.
struct Read {
    /// The changed jobs, parsed.
    changes: Vec<Change>,
    /// The tip.
    info: CommitInfo,
    /// The commits not yet applied, tip first, read leniently.
    commits: Vec<crate::repo::RawCommit>,
    /// The jobs the daemon has before the tip (with a desired state).
    jobs: usize,
    /// The changed jobs whose file a commit before the tip last changed, with that commit.
    changed_by: Vec<(String, CommitRecord)>,
    /// Which changed `_defaults.yaml` files reach which jobs.
    defaults: crate::changes::DefaultsCauses,
}

/// The changed jobs between the applied commit (when the mirror knows it) and `tip`, parsed,
/// the tip's commit info, the commits not yet applied and how many jobs there are.
fn read_changes(
    repo: &ConfigRepo,
    ctx: &Context,
    applied: Option<&str>,
    tip: Oid,
) -> Result<Read, SyncError> {
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
        .filter(|id| tree.has_commit(*id));
    let files = tree.diff_files(from, tip, path)?;
    let others = files.others.clone();
    let mut diff = crate::changes::with_sql_dependents(&tree, tip, path, files)?;
    let defaults =
        crate::changes::with_defaults_dependents(&tree, from, tip, path, &mut diff, &others)?;
    let mut changes = changes_of(&tree, &diff, sctx);
    let desired = ctx.store.blocking().desired_jobs()?;
    let jobs = desired.len();
    if from.is_none() {
        let present: HashSet<String> = diff
            .iter()
            .filter_map(|c| match c {
                JobFileChange::Added(f) => spec::job_name_of(&f.rel_path).map(str::to_string),
                _ => None,
            })
            .collect();
        let stored: Vec<StoredJob> = desired
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
    let commits = tree.commits_since(from, tip)?;
    let changed_by = changed_by(&tree, &commits, path, &changes)?;
    Ok(Read {
        changes,
        info,
        commits,
        jobs,
        changed_by,
        defaults,
    })
}

/// The changed jobs whose file was last changed by a commit of the range other than the tip
/// (`commits`, tip first), each with that commit: a push of several commits by several
/// authors names each job's own.
fn changed_by(
    tree: &crate::repo::GitTree,
    commits: &[crate::repo::RawCommit],
    path: &str,
    changes: &[Change],
) -> Result<Vec<(String, CommitRecord)>, SyncError> {
    let paths: Vec<&str> = changes
        .iter()
        .map(|c| match c {
            Change::Upsert { path, .. } | Change::Remove { path, .. } => path.as_str(),
        })
        .collect();
    let last = crate::changes::last_changed(tree, commits, path, &paths)?;
    Ok(changes
        .iter()
        .filter_map(|c| {
            let (Change::Upsert { name, path, .. } | Change::Remove { name, path }) = c;
            let i = *last.get(path.as_str())?;
            let commit = commits.get(i).filter(|_| i > 0)?;
            Some((
                name.clone(),
                CommitRecord {
                    id: commit.id.to_string(),
                    author: commit.author.clone(),
                    subject: commit.subject(),
                },
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests;
