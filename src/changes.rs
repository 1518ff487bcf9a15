//! Reading what a commit changed: the job files that differ between two commits of a config
//! repo, parsed into [`Change`]s for [`crate::plan`]. Shared by the daemon (on its mirror) and by
//! `jobkeeper plan` (on the user's own clone). Only changed files are read, so the cost grows with
//! the change, not with the number of jobs.

use std::collections::BTreeMap;
use std::path::Path;

mod defaults;
mod frozen;
mod inherited;

pub use self::defaults::{DefaultsCauses, with_defaults_dependents};
pub use self::frozen::mark_held;
use crate::diag::Diagnostic;
use crate::plan::{Change, Plan, plan};
use crate::repo::{FileDiff, GitTree, JobFile, JobFileChange, Oid, RepoError, open_existing};
use crate::spec::{self, Context, Folders, JobSpec, MAX_JOB_FILE_BYTES, RepoFiles};

mod last_changed;
pub use last_changed::last_changed;

/// The files of one commit of a config repo, for the `sql_file`s its job files name.
#[derive(Debug)]
pub struct TreeFiles<'a> {
    /// The repository.
    pub tree: &'a GitTree,
    /// The commit read.
    pub commit: Oid,
}

impl RepoFiles for TreeFiles<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, spec::FileReadError> {
        match self.tree.read_path(self.commit, path) {
            Ok(b) => Ok(Some(b)),
            Err(RepoError::NotFound { .. }) => Ok(None),
            Err(e) => Err(spec::FileReadError::Source(Box::new(e))),
        }
    }
}

/// The job files of `diff`, plus the job files at `to` (under `path`) whose `sql_file` is one
/// of the other files (`.sql`) that changed between `from` and `to`: a changed `.sql` file
/// changes its jobs. Only job files whose text names a changed file's name are parsed.
/// `others` are the changed files that are not job files, from the repository's root
/// ([`FileDiff::others`]): a `sql_file` may lie outside the jobs folder (`../sql/a.sql`).
pub fn with_sql_dependents(
    tree: &GitTree,
    to: Oid,
    path: &str,
    FileDiff {
        jobs: mut diff,
        others,
    }: FileDiff,
) -> Result<Vec<JobFileChange>, RepoError> {
    // A folder's `_defaults.yaml` (and `_freeze.yaml`) is no job's `sql_file`: its jobs are
    // found by `with_defaults_dependents`, without reading every job file here.
    let others: Vec<String> = others
        .into_iter()
        .filter(|o| {
            let base = o.rsplit('/').next().unwrap_or(o);
            base != spec::DEFAULTS_FILE && base != spec::FREEZE_FILE
        })
        .collect();
    if others.is_empty() {
        return Ok(diff);
    }
    let listed: std::collections::HashSet<String> =
        diff.iter().map(|c| c.rel_path().to_string()).collect();
    let files = TreeFiles { tree, commit: to };
    let ctx = Context {
        settings: None,
        files: Some(&files),
    };
    for f in tree.list_job_files(to, path)? {
        if listed.contains(&f.rel_path) {
            continue;
        }
        let Ok(bytes) = tree.read_blob(f.blob) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let names_one = others.iter().any(|o| {
            let base = o.rsplit('/').next().unwrap_or(o);
            text.contains(base)
        });
        if !names_one {
            continue;
        }
        let uses = spec::parse_job(&f.repo_path, &bytes, ctx)
            .ok()
            .and_then(|s| s.sql)
            .is_some_and(|sql| sql.file.is_some() && others.contains(&sql.path));
        if uses {
            diff.push(JobFileChange::Modified {
                old: f.clone(),
                new: f,
            });
        }
    }
    diff.sort_by(|a, b| a.rel_path().cmp(b.rel_path()));
    Ok(diff)
}

/// True when a job's `project.repo` is the config repo itself (`.`).
fn is_config_repo(repo: &str) -> bool {
    Path::new(repo)
        .components()
        .all(|c| c == std::path::Component::CurDir)
}

/// The `project.follow: true` jobs whose project is a folder of the config repo that changed
/// between `from` and `to`, and whose job file did not change: the daemon rebuilds them from
/// the new commit (its follow check), so the plan names them too. Cheap when a commit changes
/// only job files: no job file is read then. `others` are the changed files that are not job
/// files ([`FileDiff::others`]).
pub fn followed_folders(
    tree: &GitTree,
    from: Option<Oid>,
    to: Oid,
    path: &str,
    diff: &[JobFileChange],
    others: &[String],
    ctx: Context<'_>,
) -> Result<Vec<crate::plan::Item>, RepoError> {
    if from.is_none() {
        return Ok(Vec::new()); // a first commit adds every job
    }
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let listed: std::collections::HashSet<&str> = diff.iter().map(|c| c.rel_path()).collect();
    let files = TreeFiles { tree, commit: to };
    let ctx = Context {
        files: Some(&files),
        ..ctx
    };
    let mut items = Vec::new();
    for f in tree.list_job_files(to, path)? {
        if listed.contains(f.rel_path.as_str()) {
            continue;
        }
        let Ok(bytes) = tree.read_blob(f.blob) else {
            continue;
        };
        if !String::from_utf8_lossy(&bytes).contains("follow") {
            continue;
        }
        let Some(project) = spec::parse_job(&f.repo_path, &bytes, ctx)
            .ok()
            .and_then(|s| s.project)
            .filter(|p| p.follow && is_config_repo(&p.repo))
        else {
            continue;
        };
        let dir = project.dir.trim_matches('/');
        let inside =
            |o: &String| dir.is_empty() || o.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
        if !others.iter().any(inside) {
            continue;
        }
        let shown = if dir.is_empty() { "." } else { dir };
        items.push(crate::plan::Item {
            job: spec::job_name_of(&f.rel_path)
                .unwrap_or(&f.rel_path)
                .to_string(),
            path: f.repo_path.clone(),
            action: crate::plan::Action::Rebuild,
            reasons: vec![
                format!(
                    "project folder `{shown}` changed (`follow: true`): rebuilt from the new commit"
                )
                .into(),
            ],
            errors: Vec::new(),
            hash: None,
            keeps_state: false,
            refused: false,
        });
    }
    Ok(items)
}

/// Parses one job file of a commit (name rules, size, content), with its folders' defaults
/// read through `ctx.files`.
pub fn read_job(
    tree: &GitTree,
    file: &JobFile,
    ctx: Context<'_>,
) -> Result<JobSpec, Vec<Diagnostic>> {
    read_job_in(tree, file, ctx, &Folders::new(ctx.files))
}

/// [`read_job`] with the defaults files found by `folders` (one per commit, so that each
/// folder's file is read once for all its jobs).
pub fn read_job_in(
    tree: &GitTree,
    file: &JobFile,
    ctx: Context<'_>,
    folders: &Folders<'_>,
) -> Result<JobSpec, Vec<Diagnostic>> {
    let name = spec::job_name_of(&file.rel_path).unwrap_or(&file.rel_path);
    if file.rel_path.contains(char::REPLACEMENT_CHARACTER) {
        // The tree keeps a name that is not UTF-8, shown with U+FFFD (see `repo::tree`).
        return Err(vec![Diagnostic::file(
            &file.repo_path,
            "the file name is not UTF-8 (shown with �); rename it: a job name is \
             lowercase letters, digits, `.`, `_`, `-` and `/`",
        )]);
    }
    if let Err(msg) = spec::check_name(name) {
        return Err(vec![Diagnostic::file(&file.repo_path, msg.to_string())]);
    }
    // One look at the object's header: a file over the limit is refused before it is read.
    match tree.read_blob(file.blob) {
        Ok(bytes) => {
            let layers = folders.layers(&file.repo_path, &file.rel_path, name)?;
            spec::parse_job_in(&file.repo_path, Some(name), &bytes, &layers, ctx)
        }
        Err(RepoError::TooLarge { size, .. }) => Err(vec![Diagnostic::file(
            &file.repo_path,
            format!("job file is {size} bytes; at most {MAX_JOB_FILE_BYTES} (1 MiB) are allowed"),
        )]),
        Err(e) => Err(vec![Diagnostic::file(
            &file.repo_path,
            format!("cannot read: {e}"),
        )]),
    }
}

/// The changed jobs between `from` (`None`: nothing applied yet) and `to`, under `path`.
///
/// A job whose file was renamed within its name (`a.yml` → `a.yaml`) is one upsert; two files
/// for one job name make that job invalid.
pub fn read_changes(
    tree: &GitTree,
    from: Option<Oid>,
    to: Oid,
    path: &str,
    ctx: Context<'_>,
) -> Result<Vec<Change>, RepoError> {
    let diff = with_sql_dependents(tree, to, path, tree.diff_files(from, to, path)?)?;
    let files = TreeFiles { tree, commit: to };
    let ctx = Context {
        files: Some(&files),
        ..ctx
    };
    Ok(changes_of(tree, &diff, ctx))
}

/// Parses the new versions of the files of a diff into changes.
pub fn changes_of(tree: &GitTree, diff: &[JobFileChange], ctx: Context<'_>) -> Vec<Change> {
    changes_known(tree, diff, ctx, &Folders::new(ctx.files), &mut [])
}

/// [`changes_of`], with the defaults files found by `folders` and the specs already read in
/// `known` (one for each change of `diff`, or none) taken from it as they are.
fn changes_known(
    tree: &GitTree,
    diff: &[JobFileChange],
    ctx: Context<'_>,
    folders: &Folders<'_>,
    known: &mut [inherited::Inherited],
) -> Vec<Change> {
    let mut upserts: BTreeMap<String, Change> = BTreeMap::new();
    let mut removes: BTreeMap<String, Change> = BTreeMap::new();
    for (i, change) in diff.iter().enumerate() {
        match change {
            JobFileChange::Added(f) | JobFileChange::Modified { new: f, .. } => {
                let name = spec::job_name_of(&f.rel_path)
                    .unwrap_or(&f.rel_path)
                    .to_string();
                let spec = match known.get_mut(i).and_then(|k| k.new.take()) {
                    Some(spec) => Ok(spec),
                    None => read_job_in(tree, f, ctx, folders),
                };
                let spec = if upserts.contains_key(&name) {
                    Err(vec![Diagnostic::file(
                        &f.repo_path,
                        format!(
                            "two files define the job `{name}`: keep one of `{name}.yaml` and `{name}.yml`"
                        ),
                    )])
                } else {
                    spec
                };
                upserts.insert(
                    name.clone(),
                    Change::Upsert {
                        name,
                        path: f.repo_path.clone(),
                        spec,
                    },
                );
            }
            JobFileChange::Deleted(f) => {
                let name = spec::job_name_of(&f.rel_path)
                    .unwrap_or(&f.rel_path)
                    .to_string();
                removes.insert(
                    name.clone(),
                    Change::Remove {
                        name,
                        path: f.repo_path.clone(),
                    },
                );
            }
        }
    }
    let mut out: Vec<Change> = removes
        .into_values()
        .filter(|r| !upserts.contains_key(r.name()))
        .collect();
    out.extend(upserts.into_values());
    out
}

/// True when `path` is a folder in the tree of `commit`.
pub fn path_exists(tree: &GitTree, commit: Oid, path: &str) -> bool {
    let repo = tree.repository();
    let Ok(root) = tree.commit_tree(commit).and_then(|t| {
        repo.find_tree(t)
            .map_err(crate::repo::RepoError::git("cannot read a tree"))
    }) else {
        return false;
    };
    let path = path.trim_matches('/');
    path.is_empty()
        || root
            .get_path(std::path::Path::new(path))
            .is_ok_and(|e| e.kind() == Some(git2::ObjectType::Tree))
}

/// `jobkeeper plan`: what applying `to` after `from` does, read from the repo at `dir`, with
/// its removals checked against `max_removals` as the daemon checks them (the jobs at `from`,
/// the trailer in the commits from `from` to `to`).
pub fn plan_between(
    dir: &Path,
    from: &str,
    to: &str,
    path: &str,
    ctx: Context<'_>,
    max_removals: crate::settings::MaxRemovals,
) -> Result<Plan, RepoError> {
    let tree = open_existing(dir)?;
    let (from_rev, to_rev) = (from, to);
    // The empty tree: what the first commit of a repo does, as a daemon with nothing applied.
    let from = if from == EMPTY_TREE {
        None
    } else {
        Some(tree.resolve_rev(from)?)
    };
    let to = tree.resolve_rev(to)?;

    let files = tree.diff_files(from, to, path)?;
    let existed = from.is_some_and(|f| path_exists(&tree, f, path));
    if files.jobs.is_empty() && !existed && !path_exists(&tree, to, path) {
        // A wrong folder would otherwise read as "no job changes" and pass review.
        return Err(RepoError::NotFound {
            url: dir.display().to_string(),
            what: format!(
                "the job folder `{path}` (at `{from_rev}` and at `{to_rev}`; give the right one with --path)"
            ),
        });
    }
    let others = files.others.clone();
    let mut diff = with_sql_dependents(&tree, to, path, files)?;
    let causes = with_defaults_dependents(&tree, from, to, path, &mut diff, &others)?;
    let new_files = TreeFiles {
        tree: &tree,
        commit: to,
    };
    let new_ctx = Context {
        files: Some(&new_files),
        ..ctx
    };
    let new_folders = Folders::new(new_ctx.files);
    let old_files = from.map(|commit| TreeFiles {
        tree: &tree,
        commit,
    });
    let old_ctx = Context {
        files: old_files.as_ref().map(|f| f as &dyn RepoFiles),
        ..ctx
    };
    let old_folders = Folders::new(old_ctx.files);
    // The jobs changed only by their defaults: each file read once for both commits.
    let mut inherited = inherited::inherited_specs(
        &tree,
        &diff,
        &causes,
        (new_ctx, &new_folders),
        (old_ctx, &old_folders),
    );
    let mut changes = changes_known(&tree, &diff, new_ctx, &new_folders, &mut inherited);
    // The old versions of the changed files only: read from the diff, not the whole tree.
    let mut applied = BTreeMap::new();
    if let Some(from) = from {
        for (change, known) in diff.iter().zip(&mut inherited) {
            let old = match change {
                JobFileChange::Modified { old, .. } | JobFileChange::Deleted(old) => old,
                JobFileChange::Added(_) => continue,
            };
            let name = spec::job_name_of(&old.rel_path)
                .unwrap_or(&old.rel_path)
                .to_string();
            let known = known.old.take();
            let spec = match known {
                Some(spec) => Some(spec),
                _ => last_valid(&tree, from, old, ctx, &old_folders),
            };
            if let Some(spec) = spec {
                applied.insert(name, spec);
            }
        }
    }
    let mut plan = plan(&applied, &changes);
    causes.settle(&mut plan, &mut changes);
    plan.items.extend(followed_folders(
        &tree, from, to, path, &diff, &others, ctx,
    )?);
    plan.items.sort_by(|a, b| a.job.cmp(&b.job));
    if let Some(from) = from {
        let jobs: std::collections::BTreeSet<String> = tree
            .list_job_files(from, path)?
            .iter()
            .filter_map(|f| spec::job_name_of(&f.rel_path).map(str::to_string))
            .collect();
        let removed = plan.count(crate::plan::Action::Remove);
        let commits = tree.commits_since(Some(from), to)?;
        plan.removals = Some(crate::removals::check(
            max_removals,
            removed,
            jobs.len(),
            &commits,
        ));
    }
    Ok(plan)
}

/// Git's empty tree: `plan --from` it plans a repo's first commit.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Commits looked back through for the last valid version of a file invalid at `from`.
const LOOK_BACK: usize = 1000;

/// The version of job file `old` the daemon holds after applying `from`: the file at `from`,
/// or, when it is invalid there, its newest valid version before (an invalid file leaves the
/// previous version in place), looking back at most [`LOOK_BACK`] commits. `folders` finds
/// the defaults files at `from`.
fn last_valid(
    tree: &GitTree,
    from: Oid,
    old: &JobFile,
    ctx: Context<'_>,
    folders: &Folders<'_>,
) -> Option<JobSpec> {
    let at = |commit: Oid, file: &JobFile| {
        let files = TreeFiles { tree, commit };
        read_job(
            tree,
            file,
            Context {
                files: Some(&files),
                ..ctx
            },
        )
        .ok()
    };
    let files = TreeFiles { tree, commit: from };
    let from_ctx = Context {
        files: Some(&files),
        ..ctx
    };
    if let Ok(spec) = read_job_in(tree, old, from_ctx, folders) {
        return Some(spec);
    }
    let repo = tree.repository();
    let mut walk = repo.revwalk().ok()?;
    walk.push(from).ok()?;
    let mut seen = old.blob;
    for id in walk.flatten().skip(1).take(LOOK_BACK) {
        let commit = repo.find_commit(id).ok()?;
        let Ok(entry) = commit.tree().ok()?.get_path(Path::new(&old.repo_path)) else {
            return None; // the file did not exist before: the job was never valid
        };
        if entry.id() == seen {
            continue;
        }
        seen = entry.id();
        let file = JobFile {
            blob: entry.id(),
            ..old.clone()
        };
        if let Some(spec) = at(id, &file) {
            return Some(spec);
        }
    }
    None
}
