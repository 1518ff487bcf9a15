//! Which commit of a pushed range last changed each job: a push of several commits changes
//! jobs whose files were last touched by different commits (and authors), not all by the tip.

use std::collections::{HashMap, HashSet};

use crate::repo::{GitTree, JobFileChange, Oid, RawCommit, RepoError};

/// The repo paths of the job files commit `c` changed below `path`, against every one of its
/// parents in the repository (a merge changed a file only when it differs from each parent, as
/// git's history simplification says), with the jobs whose `sql_file` it changed
/// ([`super::with_sql_dependents`]).
fn changed_by(tree: &GitTree, c: &RawCommit, path: &str) -> Result<HashSet<String>, RepoError> {
    let parents: Vec<Option<Oid>> = {
        let known: Vec<Option<Oid>> = c
            .parents
            .iter()
            .filter(|p| tree.has_commit(**p))
            .map(|p| Some(*p))
            .collect();
        if known.is_empty() { vec![None] } else { known }
    };
    let mut common: Option<HashSet<String>> = None;
    for parent in parents {
        let diff =
            super::with_sql_dependents(tree, c.id, path, tree.diff_files(parent, c.id, path)?)?;
        let paths: HashSet<String> = diff
            .iter()
            .flat_map(|ch| match ch {
                JobFileChange::Added(f) | JobFileChange::Deleted(f) => vec![f.repo_path.clone()],
                JobFileChange::Modified { old, new } => {
                    vec![old.repo_path.clone(), new.repo_path.clone()]
                }
            })
            .collect();
        common = Some(match common {
            None => paths,
            Some(c) => c.intersection(&paths).cloned().collect(),
        });
    }
    Ok(common.unwrap_or_default())
}

/// For each of `paths` (job files' repo paths the range changed), the index in `commits` (the
/// range, tip first, as [`GitTree::commits_since`] gives it) of the newest commit that changed
/// it. Paths no commit of the range changed alone are left out (the caller keeps the tip). A
/// range of one commit is not walked.
pub fn last_changed(
    tree: &GitTree,
    commits: &[RawCommit],
    path: &str,
    paths: &[&str],
) -> Result<HashMap<String, usize>, RepoError> {
    let mut out = HashMap::new();
    if commits.len() < 2 {
        return Ok(out);
    }
    let mut left: HashSet<&str> = paths.iter().copied().collect();
    for (i, c) in commits.iter().enumerate() {
        if left.is_empty() {
            break;
        }
        let changed = changed_by(tree, c, path)?;
        left.retain(|p| {
            let hit = changed.contains(*p);
            if hit {
                out.insert((*p).to_string(), i);
            }
            !hit
        });
    }
    Ok(out)
}
