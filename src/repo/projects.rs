//! [`ProjectRepos`]: one bare mirror per project URL under `state_dir/repos/projects/`,
//! resolving a branch, tag or commit id to a commit, and writing a commit's files into a folder
//! for a build.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{FileMode, ObjectType, Oid, Repository, Tree};
use sha2::{Digest, Sha256};

use super::fetch::{Credentials, fetch_into, open_or_init_mirror};
use super::{RepoError, redact_url};

/// The mirrors of project repositories. `Send + Sync`; every method blocks, so call it from
/// `tokio::task::spawn_blocking`. Fetches of one URL never run at once.
#[derive(Debug)]
pub struct ProjectRepos {
    /// `state_dir/repos/projects`.
    root: PathBuf,
    /// How to authenticate.
    creds: Credentials,
    /// One lock per mirror folder.
    locks: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

impl ProjectRepos {
    /// Project mirrors below `state_dir/repos/projects` (created on first use).
    pub fn new(state_dir: &Path, creds: Credentials) -> ProjectRepos {
        ProjectRepos {
            root: state_dir.join("repos").join("projects"),
            creds,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror folder of `url`: the URL made safe for a file name, then a short sha256 of
    /// the URL, e.g. `git.example.com_data_clicks.git-3f2a9c1b07de`.
    pub fn mirror_dir(&self, url: &str) -> PathBuf {
        self.root.join(mirror_name(url))
    }

    fn lock(&self, dir: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(dir.to_path_buf()).or_default().clone()
    }

    fn fetch(&self, url: &str, dir: &Path) -> Result<Repository, RepoError> {
        let lock = self.lock(dir);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = open_or_init_mirror(dir, url)?;
        let refspecs = [
            "+refs/heads/*:refs/heads/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ];
        let fetched = fetch_into(&repo, url, &refspecs, &self.creds, true)?;
        tracing::debug!(url = %redact_url(url), received_objects = fetched.received_objects, "fetched project");
        Ok(repo)
    }

    /// Fetches the project's mirror (branches and tags, incrementally) and resolves `rev`: a
    /// branch, a tag, or a full 40-hex commit id. A commit id already in the mirror needs no
    /// fetch.
    pub fn resolve(&self, url: &str, rev: &str) -> Result<Oid, RepoError> {
        let dir = self.mirror_dir(url);
        let not_found = |what: String| RepoError::NotFound {
            url: redact_url(url),
            what,
        };
        if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            let id = Oid::from_str(rev).map_err(|_| not_found(format!("commit {rev}")))?;
            if let Ok(repo) = Repository::open_bare(&dir)
                && repo.find_commit(id).is_ok()
            {
                return Ok(id);
            }
            let repo = self.fetch(url, &dir)?;
            return match repo.find_commit(id) {
                Ok(c) => Ok(c.id()),
                Err(_) => Err(not_found(format!(
                    "commit {rev} (on no branch or tag of the repository)"
                ))),
            };
        }
        let repo = self.fetch(url, &dir)?;
        for (kind, name) in [
            ("branch", format!("refs/heads/{rev}")),
            ("tag", format!("refs/tags/{rev}")),
        ] {
            if !git2::Reference::is_valid_name(&name) {
                continue;
            }
            if let Ok(reference) = repo.find_reference(&name) {
                let commit = reference.peel_to_commit().map_err(RepoError::git(format!(
                    "{kind} `{rev}` of {} is not a commit",
                    redact_url(url)
                )))?;
                return Ok(commit.id());
            }
        }
        Err(not_found(format!("branch or tag `{rev}`")))
    }

    /// The id of the tree at `dir` (the root when empty) in `commit` of the project's mirror,
    /// `None` when the folder does not exist there. Two commits with the same id here have the
    /// same content in that folder.
    pub fn dir_tree_id(&self, url: &str, commit: Oid, dir: &str) -> Result<Option<Oid>, RepoError> {
        let repo = Repository::open_bare(self.mirror_dir(url)).map_err(RepoError::git(format!(
            "cannot open the mirror of {}",
            redact_url(url)
        )))?;
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(RepoError::git(format!("cannot read commit {commit}")))?;
        let dir = super::normalize_dir(dir);
        if dir.is_empty() {
            return Ok(Some(tree.id()));
        }
        Ok(tree
            .get_path(Path::new(&dir))
            .ok()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .map(|e| e.id()))
    }

    /// Writes the files of `commit` into `dest`, which must not exist or be empty. The files
    /// are written into a temporary sibling first and moved into place at the end, so `dest`
    /// is complete or absent. Fetches once if the commit is not in the mirror yet.
    pub fn checkout(&self, url: &str, commit: Oid, dest: &Path) -> Result<(), RepoError> {
        let dir = self.mirror_dir(url);
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) if repo.find_commit(commit).is_ok() => repo,
            _ => self.fetch(url, &dir)?,
        };
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|_| RepoError::NotFound {
                url: redact_url(url),
                what: format!("commit {commit}"),
            })?;
        if dest.exists() {
            let mut entries = std::fs::read_dir(dest)
                .map_err(RepoError::io(format!("cannot read {}", dest.display())))?;
            if entries.next().is_some() {
                return Err(RepoError::Io {
                    context: format!("cannot check out into {}", dest.display()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the folder is not empty",
                    ),
                });
            }
        }
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(RepoError::io(format!("cannot create {}", parent.display())))?;
        let tmp = parent.join(format!(
            ".{}.partial-{}-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "checkout".to_string()),
            std::process::id(),
            CHECKOUT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(RepoError::io(format!("cannot remove {}", tmp.display())))?;
        }
        std::fs::create_dir(&tmp)
            .map_err(RepoError::io(format!("cannot create {}", tmp.display())))?;
        let result = write_tree(&repo, &tree, &tmp).and_then(|()| {
            std::fs::rename(&tmp, dest).map_err(RepoError::io(format!(
                "cannot move checkout into {}",
                dest.display()
            )))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// Makes temporary checkout folders unique within the process.
static CHECKOUT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `url` made safe as a folder name plus 12 hex digits of its sha256.
fn mirror_name(url: &str) -> String {
    let digest = hex::encode(Sha256::digest(url.as_bytes()));
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let without_user = match without_scheme.split_once('@') {
        Some((user, rest)) if !user.contains('/') => rest,
        _ => without_scheme,
    };
    let mut safe = String::new();
    for c in without_user.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '_'
        };
        if !(c == '_' && safe.ends_with('_')) {
            safe.push(c);
        }
    }
    let safe = safe.trim_matches(|c| c == '_' || c == '.');
    // Keep the end of long names: the repository's own name is there.
    let start = safe.len().saturating_sub(60);
    let safe = safe[start..].trim_start_matches(['_', '.']);
    format!("{safe}-{}", &digest[..12])
}

/// Writes `tree` into the existing folder `dir`, refusing entry names that could escape it.
fn write_tree(repo: &Repository, tree: &Tree<'_>, dir: &Path) -> Result<(), RepoError> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.eq_ignore_ascii_case(b".git")
            || name.contains(&b'/')
            || name.contains(&0)
        {
            tracing::warn!(name = %String::from_utf8_lossy(name), "skipping an unsafe file name in a checkout");
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        let mode = entry.filemode();
        let io = |what: &str| RepoError::io(format!("cannot {what} {}", path.display()));
        if mode == i32::from(FileMode::Tree) {
            std::fs::create_dir(&path).map_err(io("create"))?;
            let sub = repo
                .find_tree(entry.id())
                .map_err(RepoError::git(format!("cannot read tree {}", entry.id())))?;
            write_tree(repo, &sub, &path)?;
        } else if mode == i32::from(FileMode::Commit) {
            // A submodule: an empty folder, as git leaves it.
            std::fs::create_dir(&path).map_err(io("create"))?;
        } else if entry.kind() == Some(ObjectType::Blob) {
            let blob = repo
                .find_blob(entry.id())
                .map_err(RepoError::git(format!("cannot read blob {}", entry.id())))?;
            if mode == i32::from(FileMode::Link) {
                let target = std::ffi::OsStr::from_bytes(blob.content());
                std::os::unix::fs::symlink(target, &path).map_err(io("create symlink"))?;
            } else {
                std::fs::write(&path, blob.content()).map_err(io("write"))?;
                let perm = if mode == i32::from(FileMode::BlobExecutable) {
                    0o755
                } else {
                    0o644
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm))
                    .map_err(io("set permissions of"))?;
            }
        }
    }
    Ok(())
}
