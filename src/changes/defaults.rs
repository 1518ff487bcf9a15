//! The jobs a commit changes through their folders' `_defaults.yaml`: a changed defaults file
//! brings every job file below it into the commit's changes ([`with_defaults_dependents`]);
//! once planned, the ones whose merged file did not change are dropped and the others name the
//! defaults file as a reason ([`DefaultsCauses::settle`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::plan::{Action, Change, Plan, Reason};
use crate::repo::{GitTree, JobFile, JobFileChange, Oid, RepoError, normalize_dir};
use crate::spec;

/// Which changed defaults files reach which jobs of a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultsCauses {
    /// Each job below a changed defaults file: those files (paths in the repo), outermost first.
    pub by_job: BTreeMap<String, Vec<String>>,
    /// The jobs in the changes only because of their defaults (their own file did not change).
    pub only: HashSet<String>,
}

impl DefaultsCauses {
    /// True when no defaults file changed.
    pub fn is_empty(&self) -> bool {
        self.by_job.is_empty()
    }

    /// After planning: drops the jobs brought in by their defaults whose merged file did not
    /// change (from the plan and from the changes), and names the defaults files as the first
    /// reasons of every other item they reach.
    pub fn settle(&self, plan: &mut Plan, changes: &mut Vec<Change>) {
        if self.is_empty() {
            return;
        }
        plan.items
            .retain(|i| !(i.action == Action::Unchanged && self.only.contains(&i.job)));
        let kept: HashSet<&str> = plan.items.iter().map(|i| i.job.as_str()).collect();
        changes.retain(|c| !self.only.contains(c.name()) || kept.contains(c.name()));
        for item in &mut plan.items {
            if item.action == Action::Remove {
                continue;
            }
            if let Some(files) = self.by_job.get(&item.job) {
                let mut reasons: Vec<Reason> = files
                    .iter()
                    .map(|file| Reason::DefaultsChanged { file: file.clone() })
                    .collect();
                reasons.append(&mut item.reasons);
                item.reasons = reasons;
            }
        }
    }
}

/// Adds to `diff` (job-file changes between `from` and `to` below `path`) every job file at
/// `to` below a folder whose `_defaults.yaml` is among `others` (the other changed files, from
/// the repository's root), as a modification of the same file; says which defaults files reach
/// which jobs. Nothing is added for a first commit (`from` is `None`: every job is new) or when
/// no defaults file changed; only the folders of the changed defaults files are listed.
pub fn with_defaults_dependents(
    tree: &GitTree,
    from: Option<Oid>,
    to: Oid,
    path: &str,
    diff: &mut Vec<JobFileChange>,
    others: &[String],
) -> Result<DefaultsCauses, RepoError> {
    let mut causes = DefaultsCauses::default();
    let Some(from) = from else {
        return Ok(causes);
    };
    let dir = normalize_dir(path);
    let mut folders: Vec<(&str, &str)> = others
        .iter()
        .filter_map(|o| {
            let rel = if dir.is_empty() {
                Some(o.as_str())
            } else {
                o.strip_prefix(dir.as_str())?.strip_prefix('/')
            }?;
            spec::defaults_folder(rel).map(|folder| (folder, o.as_str()))
        })
        .collect();
    if folders.is_empty() {
        return Ok(causes);
    }
    // Outermost first, so a job's reasons name the files from the top down.
    folders.sort_by_key(|(folder, _)| (folder.matches('/').count(), folder.len()));
    let listed: HashSet<String> = diff.iter().map(|c| c.rel_path().to_string()).collect();
    let mut added: HashSet<String> = HashSet::new();
    for (folder, file) in folders {
        let at = if folder.is_empty() {
            dir.clone()
        } else if dir.is_empty() {
            folder.to_string()
        } else {
            format!("{dir}/{folder}")
        };
        let below = |f: JobFile| JobFile {
            rel_path: if folder.is_empty() {
                f.rel_path
            } else {
                format!("{folder}/{}", f.rel_path)
            },
            ..f
        };
        let old: HashMap<String, JobFile> = tree
            .list_job_files(from, &at)?
            .into_iter()
            .map(below)
            .map(|f| (f.rel_path.clone(), f))
            .collect();
        for new in tree.list_job_files(to, &at)?.into_iter().map(below) {
            let name = spec::job_name_of(&new.rel_path)
                .unwrap_or(&new.rel_path)
                .to_string();
            causes
                .by_job
                .entry(name.clone())
                .or_default()
                .push(file.to_string());
            if listed.contains(&new.rel_path) {
                continue;
            }
            let Some(old) = old.get(&new.rel_path) else {
                continue; // new at `to`: in the diff already
            };
            causes.only.insert(name);
            if added.insert(new.rel_path.clone()) {
                diff.push(JobFileChange::Modified {
                    old: old.clone(),
                    new,
                });
            }
        }
    }
    diff.sort_by(|a, b| a.rel_path().cmp(b.rel_path()));
    Ok(causes)
}
