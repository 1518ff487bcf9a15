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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::repo::open_existing;

    fn git(dir: &Path, author: &str, args: &[&str]) -> String {
        let (name, email) = author.split_once(' ').unwrap();
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(dir: &Path, author: &str, file: &str, text: &str) -> String {
        std::fs::create_dir_all(dir.join("jobs")).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
        git(dir, author, &["add", "-A"]);
        git(dir, author, &["commit", "-q", "-m", file]);
        git(dir, author, &["rev-parse", "HEAD"])
    }

    /// Two commits of a push, each changing another job, then a merge of a branch that changed
    /// a third: each job is named after the newest commit that changed its file, never the
    /// merge (whose files each equal one parent's).
    #[test]
    fn each_job_is_named_after_the_newest_commit_that_changed_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, "a a@x", &["init", "-q", "-b", "main"]);
        let base = commit(dir, "a a@x", "jobs/a.yaml", "env: dev\n");
        commit(dir, "a a@x", "jobs/b.yaml", "env: dev\n");
        let carol = commit(dir, "carol c@x", "jobs/a.yaml", "env: prod\n");
        git(dir, "a a@x", &["checkout", "-q", "-b", "side", &base]);
        let dan = commit(dir, "dan d@x", "jobs/c.yaml", "env: dev\n");
        git(dir, "a a@x", &["checkout", "-q", "main"]);
        let bob = commit(dir, "bob b@x", "jobs/b.yaml", "env: prod\n");
        git(
            dir,
            "m m@x",
            &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
        );
        let tree = open_existing(dir).unwrap();
        let tip = tree.resolve_rev("HEAD").unwrap();
        let commits = tree
            .commits_since(Some(tree.resolve_rev(&base).unwrap()), tip)
            .unwrap();
        let paths = ["jobs/a.yaml", "jobs/b.yaml", "jobs/c.yaml"];
        let last = last_changed(&tree, &commits, "jobs", &paths).unwrap();
        let by = |p: &str| commits[last[p]].id.to_string();
        assert_eq!(by("jobs/a.yaml"), carol);
        assert_eq!(by("jobs/b.yaml"), bob);
        assert_eq!(by("jobs/c.yaml"), dan);
        let one = &commits[..1];
        assert!(last_changed(&tree, one, "jobs", &paths).unwrap().is_empty());
    }
}
