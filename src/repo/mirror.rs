//! [`ConfigRepo`]: the bare mirror of the config repository at `state_dir/repos/config.git`,
//! created once and then fetched incrementally; reads go through its [`GitTree`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use git2::{Oid, Repository};

use super::fetch::{Credentials, Fetched, fetch_into, open_or_init_mirror};
use super::tree::{CommitInfo, GitTree, JobFile, JobFileChange};
use super::{RepoError, redact_url};
use crate::settings::RepoSettings;

/// The config repository's mirror. `Send + Sync`; every method blocks, so call it from
/// `tokio::task::spawn_blocking`.
#[derive(Debug)]
pub struct ConfigRepo {
    /// The mirror's folder.
    dir: PathBuf,
    /// Source URL or path.
    url: String,
    /// Branch whose tip is the desired state.
    branch: String,
    /// How to authenticate.
    creds: Credentials,
    /// Serializes fetches.
    fetch_lock: Mutex<()>,
    /// The mirror opened for reading.
    tree: Mutex<GitTree>,
}

impl ConfigRepo {
    /// Opens the mirror at `state_dir/repos/config.git`, creating it on first use (never
    /// re-cloned). A changed `settings.url` updates the mirror's remote.
    pub fn open(settings: &RepoSettings, state_dir: &Path) -> Result<ConfigRepo, RepoError> {
        let dir = state_dir.join("repos").join("config.git");
        let repo = open_or_init_mirror(&dir, &settings.url)?;
        let branch_ref = format!("refs/heads/{}", settings.branch);
        if !git2::Reference::is_valid_name(&branch_ref) {
            return Err(RepoError::NotFound {
                url: redact_url(&settings.url),
                what: format!("branch `{}` (not a valid branch name)", settings.branch),
            });
        }
        // Keep the mirror's HEAD on the branch, so plain `git log` in it shows the right thing.
        let _ = repo.set_head(&branch_ref);
        Ok(ConfigRepo {
            tree: Mutex::new(GitTree::from_repo(repo, dir.display().to_string())),
            dir,
            url: settings.url.clone(),
            branch: settings.branch.clone(),
            creds: Credentials::from_settings(settings),
            fetch_lock: Mutex::new(()),
        })
    }

    /// The mirror's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The branch this mirror follows.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Fetches the branch (forced, so force-pushes are followed) and returns its tip.
    /// Incremental: only new objects are transferred.
    pub fn fetch(&self) -> Result<Oid, RepoError> {
        self.fetch_counted().map(|(tip, _)| tip)
    }

    /// [`fetch`](Self::fetch), also saying how many objects were received.
    pub(crate) fn fetch_counted(&self) -> Result<(Oid, usize), RepoError> {
        let _guard = self.fetch_lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = Repository::open_bare(&self.dir).map_err(RepoError::git(format!(
            "cannot open mirror {}",
            self.dir.display()
        )))?;
        let name = format!("refs/heads/{}", self.branch);
        let refspec = format!("+{name}:{name}");
        let Fetched {
            heads,
            received_objects,
        } = fetch_into(&repo, &self.url, &[refspec], &self.creds, false)?;
        let Some(&(_, tip)) = heads.iter().find(|(n, _)| *n == name) else {
            return Err(RepoError::NotFound {
                url: redact_url(&self.url),
                what: format!("branch `{}`", self.branch),
            });
        };
        let local = repo
            .refname_to_id(&name)
            .map_err(RepoError::git(format!("fetch did not write {name}")))?;
        if local != tip {
            return Err(RepoError::Git {
                context: format!("fetch of {name} wrote {local}, the source has {tip}"),
                source: git2::Error::from_str("ref not updated"),
            });
        }
        // The object's type from its header: a commit libgit2 cannot parse is still the tip
        // (read leniently, see `commits`).
        let kind = repo
            .odb()
            .and_then(|odb| odb.read_header(tip))
            .map_err(RepoError::git(format!("cannot read the tip {tip}")))?
            .1;
        if kind != git2::ObjectType::Commit {
            return Err(RepoError::Git {
                context: format!("the tip of branch `{}` is a {kind}", self.branch),
                source: git2::Error::from_str("not a commit"),
            });
        }
        tracing::debug!(branch = %self.branch, %tip, received_objects, "fetched config repo");
        Ok((tip, received_objects))
    }

    /// The mirror opened for reading, locked for the caller.
    pub fn tree(&self) -> MutexGuard<'_, GitTree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The branch's tip as last fetched, if it was ever fetched.
    pub fn tip(&self) -> Option<Oid> {
        self.tree()
            .repository()
            .refname_to_id(&format!("refs/heads/{}", self.branch))
            .ok()
    }

    /// Id, author, subject and time of a commit.
    pub fn commit_info(&self, id: Oid) -> Result<CommitInfo, RepoError> {
        self.tree().commit_info(id)
    }

    /// Every job file below `path` at `commit`. See [`GitTree::list_job_files`].
    pub fn list_job_files(&self, commit: Oid, path: &str) -> Result<Vec<JobFile>, RepoError> {
        self.tree().list_job_files(commit, path)
    }

    /// Job files changed below `path` from `from` to `to`. See [`GitTree::diff_job_files`].
    pub fn diff_job_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        path: &str,
    ) -> Result<Vec<JobFileChange>, RepoError> {
        self.tree().diff_job_files(from, to, path)
    }

    /// The content of a blob.
    pub fn read_blob(&self, id: Oid) -> Result<Vec<u8>, RepoError> {
        self.tree().read_blob(id)
    }
}
