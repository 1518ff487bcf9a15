//! Git: the config-repo mirror, reading job files at a commit, tree-to-tree diffs, project
//! mirrors and checkouts, and the watch/poll triggers that say when to fetch.
//!
//! # Layout
//! - [`tree`]: [`GitTree`], read-only access to any repository: revisions, commit info, job
//!   files at a commit, job-file diffs, blobs. Used by the mirror and by `jobkeeper plan`.
//! - [`mirror`]: [`ConfigRepo`], the bare mirror of the config repo under `state_dir/repos`.
//! - [`projects`]: [`ProjectRepos`], one bare mirror per project URL and checkouts of commits.
//! - [`commits`]: commits read leniently from their raw text (a malformed author is not an
//!   error), the commits a sync brings, and their trailers.
//! - [`trigger`]: [`spawn_trigger`], a task that says "fetch now" on ref changes and polls.
//! - `fetch` (private): fetching into a mirror, shared by both kinds of mirror: local sources
//!   with libgit2, remote URLs through `remote` (private), which runs the `git` program with
//!   credentials, a timeout and no prompts.
//!
//! Nothing here holds a `git2::Repository` across threads without a lock: every type is
//! `Send + Sync`, and every blocking method is meant to run in `tokio::task::spawn_blocking`.

pub mod commits;
mod fetch;
pub mod mirror;
pub mod projects;
mod remote;
pub mod tree;
pub mod trigger;

#[cfg(test)]
mod tests;

pub use commits::RawCommit;
pub use fetch::Credentials;
pub use git2::Oid;
pub use mirror::ConfigRepo;
pub use projects::ProjectRepos;
pub use tree::{CommitInfo, FileDiff, GitTree, JobFile, JobFileChange, open_existing};
pub use trigger::{PollBackoff, TriggerControl, TriggerReason, spawn_trigger};

/// Process-wide libgit2 settings, set once before the first repository is opened: objects are
/// not re-hashed on every read (as git itself does not; `git fsck` checks a repository's
/// integrity). Reading a commit's trees is then bound by decompression, not SHA-1.
pub fn init_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_hash_verification(false));
}

/// What went wrong with git, classed by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The source could not be reached or read (network, authentication, a local path that is
    /// gone). Waiting: retry later with backoff, and raise `repo_unreachable`.
    #[error("cannot fetch from {url}: {message}")]
    Unreachable {
        /// The source, with any password removed.
        url: String,
        /// What the transport said, with any secret removed.
        message: String,
    },
    /// A branch, revision, path or object does not exist. Stalled: nothing changes until the
    /// source or the config does.
    #[error("{what} not found in {url}")]
    NotFound {
        /// The repository (URL or folder), with any password removed.
        url: String,
        /// What was looked for, e.g. "branch `main`".
        what: String,
    },
    /// Any other git failure (a corrupt mirror, a bad object), with what was being done.
    #[error("{context}: {source}")]
    Git {
        /// What was being done.
        context: String,
        /// The libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// An object larger than what is read of it, found from its header (nothing was read).
    #[error("{what} is {size} bytes; at most {limit} are read")]
    TooLarge {
        /// The object (`blob <id>`, `commit <id>`).
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A local file-system failure (creating a mirror, writing a checkout).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl RepoError {
    /// True for failures that may go away by themselves (retry with backoff).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RepoError::Unreachable { .. })
    }

    /// True when a branch, revision or object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RepoError::NotFound { .. })
    }

    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> RepoError {
        let context = context.into();
        move |source| RepoError::Git { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RepoError {
        let context = context.into();
        move |source| RepoError::Io { context, source }
    }
}

/// True when `url` is a path on this host rather than a URL (`https://`, `ssh://`, `file://`,
/// or scp-like `user@host:path`).
pub fn is_local(url: &str) -> bool {
    if url.starts_with('/') || url.starts_with('.') {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    // scp-like `host:path` has a colon before any slash.
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon > slash,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The folder of a local source: a path, or a `file://` URL.
pub(crate) fn local_path(url: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(std::path::PathBuf::from(rest));
    }
    is_local(url).then(|| std::path::PathBuf::from(url))
}

/// `url` with any password (`https://user:secret@host/..`) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // A lone userinfo may itself be a token (`https://TOKEN@host`).
                "***".to_string()
            };
            format!("{}://{}@{}", &url[..scheme_end], shown, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// The host of a URL (`https://host:port/..`, `ssh://user@host/..`, `user@host:path`), if any.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let authority = if let Some(i) = url.find("://") {
        let rest = &url[i + 3..];
        &rest[..rest.find('/').unwrap_or(rest.len())]
    } else if !is_local(url) {
        &url[..url.find(':')?]
    } else {
        return None;
    };
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `path` in the repository with no leading/trailing slashes and no `./`; empty for the root.
pub(crate) fn normalize_dir(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}
