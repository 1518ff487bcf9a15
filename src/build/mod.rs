//! Project builds: checkout, build command, artifact cache, build queue (SPEC reconcile rule 6).
//!
//! Owns everything under `state_dir/builds` and `state_dir/artifacts`, and the
//! `build-latest.log` of each job under `state_dir/logs/<job>/`.
//!
//! A build is keyed by a sha256 over (repo, commit id, dir, build command, artifact glob); see
//! [`build_key`]. A key is built at most once while its artifact is cached: a successful build
//! leaves `state_dir/artifacts/<key>/<file name>` (or `.../tree` when the artifact is the folder)
//! and a `meta.json`, read again by later requests and by later daemon instances. Identical
//! requests made while a build runs wait for that build. At most `max_concurrent` builds run at
//! once; the others queue. A failed build is not cached: the next request for its key builds
//! again.
//!
//! Each build gets a fresh `state_dir/builds/<key>/src` for its checkout, runs `sh -c <command>`
//! there with a clean environment in its own process group, and is killed (the whole group) after
//! `timeout`. Its output goes to `state_dir/builds/<key>/build.log`, capped at `max_log_bytes`
//! (the start and the last lines are kept); the pipes are drained to the end whatever the child
//! prints, so memory stays bounded. When the command ends, whatever it left running in its
//! process group is killed, and the checkout is removed once the artifact has been moved out.

mod cache;
mod log;
mod queue;
mod runner;
pub mod sql_runner;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cache::{LATEST_BUILD_FILE, LatestBuild};
pub use log::{log_tail, log_tail_masked};
pub use queue::Builder;

/// Default cap of one build log: 64 MiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// `PATH` of a build command unless the daemon config's `build.path` names another.
pub const BUILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many log lines an error carries.
const TAIL_LINES: usize = 20;

/// Read buffer for build output.
const CHUNK: usize = 64 * 1024;

/// Settings of a [`Builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The daemon's state folder; builds, artifacts and logs live below it.
    pub state_dir: PathBuf,
    /// Builds running at once; more wait in a queue (0 is taken as 1).
    pub max_concurrent: usize,
    /// A build running longer is killed, with its whole process group.
    pub timeout: Duration,
    /// Cap of one build log, in bytes.
    pub max_log_bytes: u64,
    /// `PATH` of a build command (the daemon config's `build.path`).
    pub path: String,
}

impl BuildConfig {
    /// Defaults (2 at once, 30 minutes, 64 MiB logs, [`BUILD_PATH`]) for `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            max_concurrent: 2,
            timeout: Duration::from_secs(30 * 60),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            path: BUILD_PATH.to_string(),
        }
    }
}

/// Puts a project's source at a commit into a folder. The git implementation lives in
/// [`crate::repo`]; tests use the git command line.
pub trait SourceCheckout: Send + Sync {
    /// Checks out `commit` of `repo` into `dest`, which does not exist yet (its parent does).
    /// Blocking: called on a blocking thread. The error is shown to the operator as is.
    fn checkout(&self, repo: &str, commit: &str, dest: &Path) -> Result<(), CheckoutError>;
}

/// Why a project's source could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The commit is not a commit id.
    #[error("bad commit id {commit}: {why}")]
    BadCommit {
        /// What was given.
        commit: String,
        /// What is wrong with it.
        why: String,
    },
    /// The repository could not give the commit.
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    /// Writing the source, or running the tool that writes it, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The blocking task of the checkout ended without an answer.
    #[error("checkout task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One build to do (or to find in the cache).
#[derive(Clone)]
pub struct BuildRequest {
    /// The job asking; its `build-latest.log` is updated.
    pub job: String,
    /// The project's repo (URL or path), as in the job file.
    pub repo: String,
    /// Full commit id (40 or 64 hex digits).
    pub commit: String,
    /// Folder inside the repo; empty for the root.
    pub dir: String,
    /// Shell command run in `dir`; `None` for no build.
    pub command: Option<String>,
    /// Glob in `dir` matching exactly one file; `None`: the artifact is the folder itself.
    pub artifact_glob: Option<String>,
    /// Where the source comes from.
    pub source: Arc<dyn SourceCheckout>,
}

impl fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildRequest")
            .field("job", &self.job)
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("dir", &self.dir)
            .field("command", &self.command)
            .field("artifact_glob", &self.artifact_glob)
            .finish_non_exhaustive()
    }
}

impl BuildRequest {
    /// The request's cache key; see [`build_key`].
    pub fn key(&self) -> String {
        build_key(
            &self.repo,
            &self.commit,
            &self.dir,
            self.command.as_deref(),
            self.artifact_glob.as_deref(),
        )
    }
}

/// The cache key of a build: hex sha256 over (repo, commit, dir, build command) as SPEC rule 6
/// says, and also the artifact glob, so two jobs picking different files out of the same build
/// never share an artifact. `dir` is normalised (`./a/` is `a`).
pub fn build_key(
    repo: &str,
    commit: &str,
    dir: &str,
    command: Option<&str>,
    artifact_glob: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |tag: u8, v: Option<&str>| {
        h.update([tag]);
        match v {
            None => h.update([0]),
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
    };
    field(b'v', Some("jobkeeper-build-1"));
    field(b'r', Some(repo));
    field(b'c', Some(&commit.to_ascii_lowercase()));
    field(b'd', Some(&normalize_dir(dir)));
    field(b'b', command);
    field(b'a', artifact_glob);
    hex::encode(h.finalize())
}

/// `dir` without `./` parts and trailing slashes; the root is empty.
fn normalize_dir(dir: &str) -> String {
    dir.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A built artifact, ready to submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The build key ([`build_key`]).
    pub key: String,
    /// The artifact file, or the folder (`.../tree`) when the job names no artifact.
    pub path: PathBuf,
    /// Hex sha256 of the file; for a folder, of the key.
    pub digest: String,
    /// The kept build log.
    pub log: PathBuf,
    /// The commit it was built from.
    pub commit: String,
}

/// Why a build gave no artifact. Every message carries the last lines of the build log when
/// there is one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The build command failed.
    #[error("build command {}{}", exit_words(*code), tail_suffix(log_tail))]
    Failed {
        /// Its exit code; `None` when a signal ended it.
        code: Option<i32>,
        /// The last lines of the build log.
        log_tail: String,
    },
    /// The build command ran longer than the timeout and was killed with its process group.
    #[error("build timed out after {}{}", humantime::format_duration(*after), tail_suffix(log_tail))]
    TimedOut {
        /// The timeout.
        after: Duration,
        /// The last lines of the build log.
        log_tail: String,
    },
    /// No artifact, or more than one, or a bad artifact glob.
    #[error("artifact: {0}")]
    Artifact(String),
    /// The source could not be checked out (or the request names no valid source).
    #[error("checkout: {0}")]
    Checkout(String),
    /// A file operation of the builder failed.
    #[error("{what}: {source}{}", tail_suffix(log_tail))]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: Arc<std::io::Error>,
        /// The last lines of the build log, if any.
        log_tail: String,
    },
}

impl BuildError {
    /// An [`BuildError::Io`] without a log.
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source: Arc::new(source),
            log_tail: String::new(),
        }
    }

    /// Adds the last lines of `log` to an error that has none yet.
    fn with_log(self, log: &Path) -> Self {
        let tail = || log_tail(log, TAIL_LINES);
        match self {
            Self::Artifact(m) => Self::Artifact(format!("{m}{}", tail_suffix(&tail()))),
            Self::Checkout(m) => Self::Checkout(format!("{m}{}", tail_suffix(&tail()))),
            Self::Io {
                what,
                source,
                log_tail,
            } if log_tail.is_empty() => Self::Io {
                what,
                source,
                log_tail: tail(),
            },
            other => other,
        }
    }
}

/// "exited with code 3" / "was killed by a signal".
fn exit_words(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".into(),
    }
}

/// "\nlast lines of the build log:\n..." or nothing.
fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast lines of the build log:\n{tail}")
    }
}

/// Checks a request before anything runs.
fn validate(req: &BuildRequest) -> Result<(), BuildError> {
    let hex = req.commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || !(req.commit.len() == 40 || req.commit.len() == 64) {
        return Err(BuildError::Checkout(format!(
            "commit {:?} is not a full commit id (40 hex digits)",
            req.commit
        )));
    }
    if !is_inside(&req.dir) {
        return Err(BuildError::Checkout(format!(
            "project dir {:?} must be a relative folder inside the repo",
            req.dir
        )));
    }
    if let Some(g) = &req.artifact_glob
        && (g.trim().is_empty() || !is_inside(g))
    {
        return Err(BuildError::Artifact(format!(
            "artifact glob {g:?} must be a relative pattern inside the project folder"
        )));
    }
    if req.job.is_empty() || !is_inside(&req.job) {
        return Err(BuildError::Checkout(format!(
            "job name {:?} cannot name a log folder",
            req.job
        )));
    }
    Ok(())
}

/// A relative path with no `..`.
fn is_inside(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}
