//! [`GitTree`]: read-only access to one repository (a mirror or the user's own clone): resolve
//! revisions, describe commits, list and diff the job files below a folder, read blobs.

use std::path::Path;

use git2::{FileMode, ObjectType, Oid, Repository, Tree};
use serde::Serialize;

use super::{RepoError, normalize_dir};

/// Who made a commit and why, for events, alerts and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// Full hex id.
    pub id: String,
    /// First 8 hex digits.
    pub short: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// First line of the message.
    pub subject: String,
    /// Commit (committer) time, seconds since the Unix epoch.
    pub time: i64,
}

/// A job file at some commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobFile {
    /// Path below the jobs folder, `/`-separated (`team-a/x.yaml`).
    pub rel_path: String,
    /// Path in the repository (`jobs/team-a/x.yaml`).
    pub repo_path: String,
    /// The file's blob.
    pub blob: Oid,
}

/// The files that differ between two commits ([`GitTree::diff_files`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDiff {
    /// The job files below the jobs folder, by path.
    pub jobs: Vec<JobFileChange>,
    /// The other changed files (not job files), from the repository's root.
    pub others: Vec<String>,
}

/// How one job file changed between two commits. A rename is a `Deleted` and an `Added`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFileChange {
    /// A new job file.
    Added(JobFile),
    /// A job file whose content changed.
    Modified {
        /// The file before.
        old: JobFile,
        /// The file after.
        new: JobFile,
    },
    /// A job file that is gone.
    Deleted(JobFile),
}

impl JobFileChange {
    /// The path below the jobs folder of the file this change is about.
    pub fn rel_path(&self) -> &str {
        match self {
            JobFileChange::Added(f) | JobFileChange::Deleted(f) => &f.rel_path,
            JobFileChange::Modified { new, .. } => &new.rel_path,
        }
    }
}

/// A repository opened for reading. Not `Sync`: use one per thread, or behind a `Mutex`.
pub struct GitTree {
    repo: Repository,
    label: String,
}

impl std::fmt::Debug for GitTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitTree")
            .field("repo", &self.label)
            .finish()
    }
}

/// Opens an existing repository (bare, a work tree, or a folder inside one) for reading, as
/// `jobkeeper plan --repo DIR` does.
pub fn open_existing(dir: &Path) -> Result<GitTree, RepoError> {
    GitTree::open(dir)
}

impl GitTree {
    /// Opens an existing repository (bare, a work tree, or a folder inside one).
    pub fn open(dir: &Path) -> Result<GitTree, RepoError> {
        super::init_libgit2();
        let label = dir.display().to_string();
        let repo = Repository::discover(dir).map_err(|e| {
            if e.code() == git2::ErrorCode::NotFound {
                RepoError::NotFound {
                    url: label.clone(),
                    what: "git repository".to_string(),
                }
            } else {
                RepoError::Git {
                    context: format!("cannot open git repository {label}"),
                    source: e,
                }
            }
        })?;
        Ok(GitTree { repo, label })
    }

    pub(crate) fn from_repo(repo: Repository, label: String) -> GitTree {
        GitTree { repo, label }
    }

    /// The underlying repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The repository as shown in messages (its folder).
    pub fn label(&self) -> &str {
        &self.label
    }

    fn not_found(&self, what: String) -> RepoError {
        RepoError::NotFound {
            url: self.label.clone(),
            what,
        }
    }

    /// The commit a revision names: a branch, tag, `HEAD`, a (short) id, `origin/main`, or any
    /// other git revspec (`main~2`).
    pub fn resolve_rev(&self, rev: &str) -> Result<Oid, RepoError> {
        let object = self
            .repo
            .revparse_single(rev)
            .map_err(|_| self.not_found(format!("revision `{rev}`")))?;
        let commit = object
            .peel_to_commit()
            .map_err(|_| self.not_found(format!("commit for revision `{rev}`")))?;
        Ok(commit.id())
    }

    /// Id, author, subject and time of a commit. A commit libgit2 cannot parse (an author
    /// without an e-mail) is read from its raw text: the author is then the header's text.
    pub fn commit_info(&self, id: Oid) -> Result<CommitInfo, RepoError> {
        let hex = id.to_string();
        let Ok(commit) = self.repo.find_commit(id) else {
            let raw = self.read_commit(id)?;
            return Ok(CommitInfo {
                short: hex[..8].to_string(),
                id: hex,
                author: raw.author.clone(),
                subject: raw.subject(),
                time: raw.time,
            });
        };
        let author = commit.author();
        Ok(CommitInfo {
            short: hex[..8].to_string(),
            id: hex,
            author: format!(
                "{} <{}>",
                String::from_utf8_lossy(author.name_bytes()),
                String::from_utf8_lossy(author.email_bytes())
            ),
            subject: commit
                .message_bytes()
                .split(|b| *b == b'\n')
                .map(|l| String::from_utf8_lossy(l).trim().to_string())
                .find(|l| !l.is_empty())
                .unwrap_or_default(),
            time: commit.time().seconds(),
        })
    }

    /// The tree of folder `dir` at `commit`; `None` when the folder is not there.
    fn subtree(&self, commit: Oid, dir: &str) -> Result<Option<Tree<'_>>, RepoError> {
        let root = self
            .repo
            .find_tree(self.commit_tree(commit)?)
            .map_err(RepoError::git(format!(
                "cannot read the tree of commit {commit}"
            )))?;
        if dir.is_empty() {
            return Ok(Some(root));
        }
        let entry = match root.get_path(Path::new(dir)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(RepoError::Git {
                    context: format!("cannot look up `{dir}` in commit {commit}"),
                    source: e,
                });
            }
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Ok(None);
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(RepoError::git(format!(
                "cannot read `{dir}` in commit {commit}"
            )))?;
        Ok(Some(tree))
    }

    /// Every `.yaml`/`.yml` file below folder `path` (recursively) at `commit`, sorted by
    /// path. A commit without that folder has no job files.
    pub fn list_job_files(&self, commit: Oid, path: &str) -> Result<Vec<JobFile>, RepoError> {
        let dir = normalize_dir(path);
        let Some(tree) = self.subtree(commit, &dir)? else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        self.collect(&tree, &dir, "", &mut files)?;
        files.sort();
        Ok(files)
    }

    fn collect(
        &self,
        tree: &Tree<'_>,
        dir: &str,
        prefix: &str,
        out: &mut Vec<JobFile>,
    ) -> Result<(), RepoError> {
        for entry in tree.iter() {
            // A name that is not UTF-8 is kept (shown with U+FFFD): its job is then invalid
            // by name, as `validate` says, rather than silently missing.
            let name = String::from_utf8_lossy(entry.name_bytes());
            let rel = format!("{prefix}{name}");
            match entry.filemode() {
                m if m == i32::from(FileMode::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(RepoError::git(format!("cannot read folder `{rel}`")))?;
                    self.collect(&sub, dir, &format!("{rel}/"), out)?;
                }
                m if is_blob_mode(m) && is_job_path(&rel) && !crate::spec::is_folder_file(&rel) => {
                    out.push(job_file(dir, rel, entry.id()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// What differs between commit `from` (`None`: an empty tree) and commit `to`, in one walk
    /// of the repository: the job files below folder `path` (as [`GitTree::diff_job_files`]
    /// gives them) and every other changed file that is not a job file, from the repository's
    /// root.
    pub fn diff_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        path: &str,
    ) -> Result<FileDiff, RepoError> {
        let dir = normalize_dir(path);
        let (all, mut others) = self.diff_below(from, to, "")?;
        let prefix = format!("{dir}/");
        let below = |f: &JobFile| {
            let rel = if dir.is_empty() {
                Some(f.rel_path.as_str())
            } else {
                f.repo_path.strip_prefix(&prefix)
            };
            // `_freeze.yaml` at the top of the jobs folder is not a job: one of the others.
            rel.filter(|rel| !crate::spec::is_folder_file(rel))
                .map(|rel| job_file(&dir, rel.to_string(), f.blob))
        };
        let freeze = if dir.is_empty() {
            crate::spec::FREEZE_FILE.to_string()
        } else {
            format!("{dir}/{}", crate::spec::FREEZE_FILE)
        };
        if all.iter().any(|c| match c {
            JobFileChange::Added(f) | JobFileChange::Deleted(f) => f.repo_path == freeze,
            JobFileChange::Modified { new, .. } => new.repo_path == freeze,
        }) {
            others.push(freeze);
            others.sort();
        }
        let mut jobs: Vec<JobFileChange> = all
            .iter()
            .filter_map(|c| match c {
                JobFileChange::Added(f) => below(f).map(JobFileChange::Added),
                JobFileChange::Deleted(f) => below(f).map(JobFileChange::Deleted),
                JobFileChange::Modified { old, new } => Some(JobFileChange::Modified {
                    old: below(old)?,
                    new: below(new)?,
                }),
            })
            .collect();
        if jobs.is_empty() && !dir.is_empty() {
            // A path git cannot look up (`../x`) is the same error as for diff_job_files; no
            // job file is below it, so this costs nothing when a job file changed.
            self.subtree(to, &dir)?;
        }
        jobs.sort_by(|a, b| a.rel_path().cmp(b.rel_path()));
        Ok(FileDiff { jobs, others })
    }

    /// The job files below folder `path` that differ between commit `from` (`None`: an empty
    /// tree) and commit `to`, by a tree-to-tree diff of the two folders: the cost grows with the
    /// change, and `from` need not be an ancestor of `to`. No rename detection.
    pub fn diff_job_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        path: &str,
    ) -> Result<Vec<JobFileChange>, RepoError> {
        let (mut changes, _) = self.diff_below(from, to, &normalize_dir(path))?;
        changes.sort_by(|a, b| a.rel_path().cmp(b.rel_path()));
        Ok(changes)
    }

    /// The job-file changes and the other changed files (relative to `dir`) below folder
    /// `dir` between `from` (`None`: an empty tree) and `to`. A tree walk that descends only
    /// into subtrees whose ids differ: the cost grows with the change, not with the number of
    /// files.
    fn diff_below(
        &self,
        from: Option<Oid>,
        to: Oid,
        dir: &str,
    ) -> Result<(Vec<JobFileChange>, Vec<String>), RepoError> {
        let old = match from {
            Some(id) => self.subtree(id, dir)?,
            None => None,
        };
        let new = self.subtree(to, dir)?;
        let (mut changes, mut others) = (Vec::new(), Vec::new());
        if let (Some(a), Some(b)) = (&old, &new)
            && a.id() == b.id()
        {
            return Ok((changes, others));
        }
        self.walk_diff(
            old.as_ref(),
            new.as_ref(),
            "",
            dir,
            &mut (&mut changes, &mut others),
        )?;
        Ok((changes, others))
    }

    /// Appends the job-file changes between two trees (either may be absent) below `prefix`
    /// to `out.0`, and the paths of other changed files to `out.1`.
    fn walk_diff(
        &self,
        old: Option<&Tree<'_>>,
        new: Option<&Tree<'_>>,
        prefix: &str,
        dir: &str,
        out: &mut (&mut Vec<JobFileChange>, &mut Vec<String>),
    ) -> Result<(), RepoError> {
        use std::collections::BTreeMap;
        type Entry = (Oid, i32);
        fn entries(t: Option<&Tree<'_>>) -> BTreeMap<Vec<u8>, Entry> {
            t.map(|t| {
                t.iter()
                    .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
                    .collect()
            })
            .unwrap_or_default()
        }
        let (olds, news) = (entries(old), entries(new));
        let mut names: Vec<&Vec<u8>> = olds.keys().chain(news.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let (o, n) = (olds.get(name), news.get(name));
            if let (Some(o), Some(n)) = (o, n)
                && o == n
            {
                continue; // same object, same mode: nothing below changed
            }
            let name = String::from_utf8_lossy(name);
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let is_tree =
                |e: Option<&Entry>| e.is_some_and(|(_, m)| *m == i32::from(FileMode::Tree));
            let blob = |e: Option<&Entry>| e.filter(|(_, m)| is_blob_mode(*m)).map(|(id, _)| *id);
            if is_tree(o) || is_tree(n) {
                let o_tree = if is_tree(o) {
                    Some(self.find_tree(o.map(|e| e.0))?)
                } else {
                    None
                };
                let n_tree = if is_tree(n) {
                    Some(self.find_tree(n.map(|e| e.0))?)
                } else {
                    None
                };
                self.walk_diff(o_tree.as_ref(), n_tree.as_ref(), &rel, dir, out)?;
            }
            if !is_job_path(&rel) {
                if blob(o) != blob(n) {
                    out.1.push(rel);
                }
                continue;
            }
            let out = &mut *out.0;
            match (blob(o), blob(n)) {
                (Some(a), Some(b)) if a != b => out.push(JobFileChange::Modified {
                    old: job_file(dir, rel.clone(), a),
                    new: job_file(dir, rel, b),
                }),
                (Some(a), None) => out.push(JobFileChange::Deleted(job_file(dir, rel, a))),
                (None, Some(b)) => out.push(JobFileChange::Added(job_file(dir, rel, b))),
                _ => {}
            }
        }
        Ok(())
    }

    fn find_tree(&self, id: Option<Oid>) -> Result<Tree<'_>, RepoError> {
        let id = id.unwrap_or_else(Oid::zero);
        self.repo
            .find_tree(id)
            .map_err(RepoError::git(format!("cannot read tree {id}")))
    }

    /// The content of the file at `path` (from the repository's root) in `commit`.
    pub fn read_path(&self, commit: Oid, path: &str) -> Result<Vec<u8>, RepoError> {
        let missing = || self.not_found(format!("`{path}` in commit {commit}"));
        let tree = self
            .commit_tree(commit)
            .and_then(|t| self.repo.find_tree(t).map_err(|_| missing()))
            .map_err(|_| missing())?;
        let entry = tree
            .get_path(std::path::Path::new(path))
            .map_err(|_| missing())?;
        self.read_blob(entry.id())
    }

    /// The content of a blob of at most [`MAX_BLOB_BYTES`]; a larger one is
    /// [`RepoError::TooLarge`], found from the object's header before anything is read.
    pub fn read_blob(&self, id: Oid) -> Result<Vec<u8>, RepoError> {
        let size = self.blob_size(id)?;
        if size > MAX_BLOB_BYTES {
            return Err(RepoError::TooLarge {
                what: format!("blob {id}"),
                size,
                limit: MAX_BLOB_BYTES,
            });
        }
        let blob = self
            .repo
            .find_blob(id)
            .map_err(|_| self.not_found(format!("blob {id}")))?;
        Ok(blob.content().to_vec())
    }

    /// The size of a blob in bytes, without reading it (to refuse huge files cheaply).
    pub fn blob_size(&self, id: Oid) -> Result<usize, RepoError> {
        let odb = self.repo.odb().map_err(RepoError::git(format!(
            "cannot open the objects of {}",
            self.label
        )))?;
        let (size, _) = odb
            .read_header(id)
            .map_err(|_| self.not_found(format!("blob {id}")))?;
        Ok(size)
    }
}

/// The largest blob [`GitTree::read_blob`] reads: a job file's limit
/// ([`crate::spec::MAX_JOB_FILE_BYTES`], 1 MiB), which a `sql_file` shares.
pub const MAX_BLOB_BYTES: usize = crate::spec::MAX_JOB_FILE_BYTES;

fn is_blob_mode(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob)
        || mode == i32::from(FileMode::BlobExecutable)
        || mode == i32::from(FileMode::BlobGroupWritable)
}

/// A `.yaml`/`.yml` file that is not a folder's `_defaults.yaml` (which is never a job).
fn is_job_path(rel: &str) -> bool {
    crate::spec::job_name_of(rel).is_some() && !crate::spec::is_defaults_path(rel)
}

fn job_file(dir: &str, rel_path: String, blob: Oid) -> JobFile {
    let repo_path = if dir.is_empty() {
        rel_path.clone()
    } else {
        format!("{dir}/{rel_path}")
    };
    JobFile {
        rel_path,
        repo_path,
        blob,
    }
}
