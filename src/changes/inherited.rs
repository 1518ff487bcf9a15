//! The specs, at both commits, of the jobs a commit changes only through their folders'
//! `_defaults.yaml` (their own file is the same blob at both commits, see
//! [`super::DefaultsCauses::only`]): each such job file is read and parsed once for both
//! commits, merged with each commit's defaults, and its old version is built only when the two
//! merged trees differ. Anything out of the ordinary (a bad name, an unreadable or invalid
//! file, a defaults file with problems, a `sql_file`) is left to the ordinary reads, so the plan
//! is the same as reading every file at both commits.

use super::DefaultsCauses;
use crate::repo::{GitTree, JobFileChange};
use crate::spec::{self, Context, Folders, JobSpec, JobText};
use crate::yaml::{Node, Value};

/// The specs of one change of a diff read once for both commits.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The job's spec at the new commit (only a valid one).
    pub new: Option<JobSpec>,
    /// The job's spec at the old commit, when valid there.
    pub old: Option<JobSpec>,
}

/// Reads the jobs of `diff` that `causes` brought in only through their defaults, one item
/// per change of `diff` (empty for the others): `to` and `from` are each commit's context (its
/// files) and defaults files.
pub fn inherited_specs(
    tree: &GitTree,
    diff: &[JobFileChange],
    causes: &DefaultsCauses,
    (to, to_folders): (Context<'_>, &Folders<'_>),
    (from, from_folders): (Context<'_>, &Folders<'_>),
) -> Vec<Inherited> {
    let mut out: Vec<Inherited> = std::iter::repeat_with(Inherited::default)
        .take(diff.len())
        .collect();
    if causes.only.is_empty() {
        return out;
    }
    for (change, out) in diff.iter().zip(&mut out) {
        let JobFileChange::Modified { old, new } = change else {
            continue;
        };
        if old.blob != new.blob || old.repo_path != new.repo_path {
            continue;
        }
        let Some(name) = spec::job_name_of(&new.rel_path) else {
            continue;
        };
        if !causes.only.contains(name)
            || new.rel_path.contains(char::REPLACEMENT_CHARACTER)
            || spec::check_name(name).is_err()
        {
            continue;
        }
        let Ok(bytes) = tree.read_blob(new.blob) else {
            continue;
        };
        let (Ok(new_layers), Ok(old_layers)) = (
            to_folders.layers(&new.repo_path, &new.rel_path, name),
            from_folders.layers(&old.repo_path, &old.rel_path, name),
        ) else {
            continue;
        };
        let Ok(text) = JobText::parse(&new.repo_path, &bytes) else {
            continue;
        };
        let new_root = text.merged(&new_layers);
        let Ok(new_spec) = text.spec(Some(name), &new_root, &new_layers, to) else {
            continue;
        };
        let old_root = text.merged(&old_layers);
        // The spec is made from the merged tree's values (places and origins only locate
        // problems), so the same values make the same spec; a `sql_file` is read from each
        // commit, so it is built again.
        let reads_file = new_spec.sql.as_ref().is_some_and(|s| s.file.is_some());
        let old_spec = if !reads_file && same_values(&old_root, &new_root) {
            Some(new_spec.clone())
        } else {
            text.spec(Some(name), &old_root, &old_layers, from).ok()
        };
        out.old = old_spec;
        out.new = Some(new_spec);
    }
    out
}

/// True when two trees hold the same values, wherever they were written.
fn same_values(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Scalar(x), Value::Scalar(y)) => x == y,
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_values(x, y))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((xk, xv), (yk, yv))| same_values(xk, yk) && same_values(xv, yv))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    use super::super::{
        TreeFiles, changes_of, followed_folders, last_valid, plan_between,
        with_defaults_dependents, with_sql_dependents,
    };
    use super::*;
    use crate::plan::{Action, Item, plan};
    use crate::repo::{Oid, open_existing};
    use crate::settings::MaxRemovals;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@x")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@x")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes (or, for `None`, deletes) files and commits them.
    fn commit(dir: &Path, files: &[(&str, Option<&str>)]) -> String {
        for (path, text) in files {
            let p = dir.join(path);
            match text {
                Some(t) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, t).unwrap();
                }
                None => std::fs::remove_file(p).unwrap(),
            }
        }
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", "change"]);
        git(dir, &["rev-parse", "HEAD"])
    }

    /// The plan's items as they were made before: every job file of the changes read and
    /// parsed at both commits on its own.
    fn read_at_both(dir: &Path, from: &str, to: &str) -> Vec<Item> {
        let tree = open_existing(dir).unwrap();
        let (from, to): (Oid, Oid) = (
            tree.resolve_rev(from).unwrap(),
            tree.resolve_rev(to).unwrap(),
        );
        let files = tree.diff_files(Some(from), to, "jobs").unwrap();
        let others = files.others.clone();
        let mut diff = with_sql_dependents(&tree, to, "jobs", files).unwrap();
        let causes =
            with_defaults_dependents(&tree, Some(from), to, "jobs", &mut diff, &others).unwrap();
        let new_files = TreeFiles {
            tree: &tree,
            commit: to,
        };
        let ctx = Context::default();
        let mut changes = changes_of(
            &tree,
            &diff,
            Context {
                files: Some(&new_files),
                ..ctx
            },
        );
        let old_files = TreeFiles {
            tree: &tree,
            commit: from,
        };
        let old_folders = Folders::new(Some(&old_files));
        let mut applied = BTreeMap::new();
        for change in &diff {
            let old = match change {
                JobFileChange::Modified { old, .. } | JobFileChange::Deleted(old) => old,
                JobFileChange::Added(_) => continue,
            };
            if let Some(spec) = last_valid(&tree, from, old, ctx, &old_folders) {
                applied.insert(spec::job_name_of(&old.rel_path).unwrap().to_string(), spec);
            }
        }
        let mut plan = plan(&applied, &changes);
        causes.settle(&mut plan, &mut changes);
        plan.items
            .extend(followed_folders(&tree, Some(from), to, "jobs", &diff, &others, ctx).unwrap());
        plan.items.sort_by(|a, b| a.job.cmp(&b.job));
        plan.items
    }

    fn planned(dir: &Path, from: &str, to: &str) -> Vec<Item> {
        let p = plan_between(
            dir,
            from,
            to,
            "jobs",
            Context::default(),
            MaxRemovals::default(),
        );
        p.unwrap().items
    }

    fn summary(items: &[Item]) -> Vec<(String, Action)> {
        items.iter().map(|i| (i.job.clone(), i.action)).collect()
    }

    const TOP: &str = "env: dev\nparams: {environment: {LEVEL: \"1\"}}\nrestart: {attempts: 3}\n";

    /// Commit after commit of defaults changes (a value every job overrides, one a nearer
    /// defaults file overrides, layout only, an error and its fix, a job's own file changed
    /// with its defaults, a job invalid before and after): `plan` gives, item for item, the
    /// plan of reading every file at both commits on its own.
    #[test]
    fn each_file_read_once_plans_exactly_as_reading_it_at_both_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q", "-b", "main"]);
        let own = "params:\n  command: [sleep, \"1\"]\n  environment: {LEVEL: \"9\"}\n";
        let mut commits = vec![commit(
            dir,
            &[
                ("jobs/_defaults.yaml", Some(TOP)),
                ("jobs/a.yaml", Some("params: {command: [sleep, \"1\"]}\n")),
                ("jobs/own.yaml", Some(own)),
                (
                    "jobs/bad.yaml",
                    Some("params: {command: [sleep, \"1\"]}\noverlap: sometimes\n"),
                ),
                (
                    "jobs/near/_defaults.yaml",
                    Some("params: {environment: {LEVEL: \"n\"}}\n"),
                ),
                (
                    "jobs/near/b.yaml",
                    Some("params: {command: [sleep, \"2\"]}\n"),
                ),
                (
                    "jobs/near/deep/c.yaml",
                    Some("params: {command: [sleep, \"3\"]}\nschedule: \"0 * * * *\"\n"),
                ),
            ],
        )];
        let top = |level: &str, attempts: u32| {
            format!(
                "env: dev\nparams: {{environment: {{LEVEL: \"{level}\"}}}}\nrestart: {{attempts: {attempts}}}\n"
            )
        };
        let steps: Vec<Vec<(&str, Option<String>)>> = vec![
            // A value `own` and the jobs below `near` override.
            vec![("jobs/_defaults.yaml", Some(top("2", 3)))],
            // Layout and comments only.
            vec![(
                "jobs/_defaults.yaml",
                Some("# the team's defaults\nrestart: {attempts: 3}\nparams:\n  environment:\n    LEVEL: \"2\"\nenv: dev\n".to_string()),
            )],
            // A value no job overrides.
            vec![("jobs/_defaults.yaml", Some(top("2", 4)))],
            // The nearer file stops overriding it.
            vec![("jobs/near/_defaults.yaml", Some("alerts: [ops]\n".to_string()))],
            // An error in the defaults, then its fix with another value.
            vec![("jobs/_defaults.yaml", Some("env: dev\noverlap: sometimes\n".to_string()))],
            vec![("jobs/_defaults.yaml", Some(top("3", 4)))],
            // A job's own file changed in the same commit as its defaults.
            vec![
                ("jobs/_defaults.yaml", Some(top("4", 4))),
                ("jobs/a.yaml", Some("params: {command: [sleep, \"5\"]}\n".to_string())),
                ("jobs/bad.yaml", Some("params: {command: [sleep, \"1\"]}\n".to_string())),
            ],
            // A nearer defaults file appears, and goes again.
            vec![(
                "jobs/near/deep/_defaults.yaml",
                Some("params: {environment: {LEVEL: \"d\"}}\ntimeout: 1h\n".to_string()),
            )],
            vec![("jobs/near/deep/_defaults.yaml", None)],
        ];
        for step in &steps {
            let files: Vec<(&str, Option<&str>)> =
                step.iter().map(|(p, t)| (*p, t.as_deref())).collect();
            commits.push(commit(dir, &files));
        }
        for pair in commits.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            assert_eq!(
                planned(dir, from, to),
                read_at_both(dir, from, to),
                "{from}..{to}"
            );
        }
        // What the first steps plan, in short.
        let at = |i: usize| summary(&planned(dir, &commits[i], &commits[i + 1]));
        let job = |j: &str, a: Action| (j.to_string(), a);
        assert_eq!(
            at(0),
            [job("a", Action::Redeploy), job("bad", Action::Invalid)],
            "`own` and the jobs below `near` override LEVEL"
        );
        assert_eq!(at(1), [job("bad", Action::Invalid)], "layout only");
        assert_eq!(
            at(3),
            [
                job("near/b", Action::Redeploy),
                job("near/deep/c", Action::Redeploy)
            ]
        );
    }
}
