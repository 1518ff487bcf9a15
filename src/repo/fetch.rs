//! Fetching into a bare mirror: local sources with libgit2, remote URLs with the `git` program
//! and credentials (an SSH key, or an HTTPS token sent as user `oauth2`), classifying failures
//! and keeping secrets out of every message.

use std::path::{Path, PathBuf};

use git2::{AutotagOption, FetchOptions, FetchPrune, Oid, Repository};

use super::remote::{FETCH_TIMEOUT, fetch_remote, scrub};
use super::{RepoError, local_path, redact_url, url_host};
use crate::settings::RepoSettings;

/// How to authenticate a fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// SSH private key, offered to SSH servers.
    pub ssh_key: Option<PathBuf>,
    /// File holding an HTTPS token, sent as password of user `oauth2`.
    pub token_file: Option<PathBuf>,
    /// When set, the token is only sent to this host (so a project URL on another host never
    /// sees the config repo's token).
    pub token_host: Option<String>,
}

impl Credentials {
    /// The credentials of the `repo:` section; the token is only sent to the config repo's host.
    pub fn from_settings(settings: &RepoSettings) -> Credentials {
        Credentials {
            ssh_key: settings.ssh_key.clone(),
            token_file: settings.token_file.clone(),
            token_host: url_host(&settings.url),
        }
    }

    pub(crate) fn token_for(&self, url: &str) -> Option<Result<String, String>> {
        let file = self.token_file.as_ref()?;
        if let Some(host) = &self.token_host
            && url_host(url).as_deref() != Some(host.as_str())
        {
            return None;
        }
        Some(
            std::fs::read_to_string(file)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read token file {}: {e}", file.display())),
        )
    }
}

/// What a fetch brought.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// The refs the source advertised (name, target).
    pub heads: Vec<(String, Oid)>,
    /// Objects received (0 when nothing was new).
    pub received_objects: usize,
}

/// Fetches `refspecs` from `url` into `repo` (through its remote `origin`): a local source
/// (a path or `file://`) with libgit2, a remote URL with the `git` program (see
/// [`super::remote`]), stopped after [`FETCH_TIMEOUT`]. Any transport failure is
/// [`RepoError::Unreachable`].
pub(crate) fn fetch_into(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    creds: &Credentials,
    prune: bool,
) -> Result<Fetched, RepoError> {
    if local_path(url).is_some() {
        match fetch_local(repo, url, refspecs, prune) {
            // libgit2 refuses a source holding a commit it cannot parse (an author without an
            // e-mail), which git accepts: the `git` program fetches it.
            Err(LocalFetch::Unparsable(why)) => {
                tracing::warn!(url = %redact_url(url), "libgit2 cannot parse a commit of the source ({why}): fetching with the git program");
                fetch_remote(repo, url, refspecs, creds, prune, FETCH_TIMEOUT)
            }
            Err(LocalFetch::Failed(e)) => Err(e),
            Ok(f) => Ok(f),
        }
    } else {
        fetch_remote(repo, url, refspecs, creds, prune, FETCH_TIMEOUT)
    }
}

/// Why a fetch with libgit2's local transport failed.
enum LocalFetch {
    /// libgit2 cannot parse an object of the source (its message).
    Unparsable(String),
    /// Any other failure.
    Failed(RepoError),
}

impl From<RepoError> for LocalFetch {
    fn from(e: RepoError) -> LocalFetch {
        LocalFetch::Failed(e)
    }
}

/// True for libgit2's "failed to parse ..." errors about an object.
fn is_unparsable(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        git2::ErrorClass::Invalid | git2::ErrorClass::Object
    ) && e.message().contains("failed to parse")
}

/// Fetches from a local source with libgit2's local transport (no credentials, no TLS).
fn fetch_local(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    prune: bool,
) -> Result<Fetched, LocalFetch> {
    let mut remote = repo.find_remote("origin").map_err(RepoError::git(format!(
        "mirror {} has no remote `origin`",
        repo.path().display()
    )))?;
    let mut opts = FetchOptions::new();
    opts.download_tags(AutotagOption::None)
        .update_fetchhead(false)
        .prune(if prune {
            FetchPrune::On
        } else {
            FetchPrune::Off
        });
    // libgit2 takes a local path that does not exist for an unknown URL scheme ("unsupported
    // URL protocol"): say what is wrong instead.
    if super::is_local(url) && !Path::new(url).exists() {
        return Err(LocalFetch::Failed(RepoError::Unreachable {
            url: redact_url(url),
            message: "the path does not exist".to_string(),
        }));
    }
    let unreachable = |e: git2::Error| RepoError::Unreachable {
        url: redact_url(url),
        message: scrub(e.message(), url, &[]),
    };
    remote
        .fetch(refspecs, Some(&mut opts), Some("jobkeeper fetch"))
        .map_err(|e| {
            if is_unparsable(&e) {
                LocalFetch::Unparsable(e.message().to_string())
            } else {
                LocalFetch::Failed(unreachable(e))
            }
        })?;
    let received_objects = remote.stats().received_objects();
    // git2 0.20's `Remote::list` makes a slice from a null pointer when the source advertises
    // nothing (its only branch deleted): a source without any ref has no heads.
    let heads = if advertises_nothing(url) {
        Vec::new()
    } else {
        remote
            .list()
            .map_err(unreachable)?
            .iter()
            .map(|h| (h.name().to_string(), h.oid()))
            .collect()
    };
    Ok(Fetched {
        heads,
        received_objects,
    })
}

/// True when the local repository at `url` has no ref and no `HEAD` commit (nothing to
/// advertise); false when it cannot be opened (the fetch said what was wrong).
fn advertises_nothing(url: &str) -> bool {
    let Some(path) = local_path(url) else {
        return false;
    };
    let Ok(source) = Repository::open(&path) else {
        return false;
    };
    let no_refs = source
        .references()
        .map(|mut refs| refs.next().is_none())
        .unwrap_or(false);
    no_refs && source.head().is_err()
}

/// The configured fetch refspec of a mirror's `origin` (fetches name their refspecs anyway).
const MIRROR_REFSPEC: &str = "+refs/heads/*:refs/heads/*";

/// Opens the bare mirror at `dir`, creating it (atomically, through a temporary folder) when
/// missing, and points its remote `origin` at `url`.
pub(crate) fn open_or_init_mirror(dir: &Path, url: &str) -> Result<Repository, RepoError> {
    super::init_libgit2();
    let shown = dir.display().to_string();
    if !dir.exists() {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(RepoError::io(format!("cannot create {}", parent.display())))?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("mirror"),
            std::process::id()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(RepoError::io(format!("cannot remove {}", tmp.display())))?;
        }
        let repo = Repository::init_bare(&tmp).map_err(RepoError::git(format!(
            "cannot create mirror {}",
            tmp.display()
        )))?;
        repo.remote_with_fetch("origin", url, MIRROR_REFSPEC)
            .map_err(RepoError::git(format!(
                "cannot add remote to mirror {shown}"
            )))?;
        drop(repo);
        if let Err(e) = std::fs::rename(&tmp, dir) {
            // Another thread or process may have created it meanwhile; use theirs.
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.exists() {
                return Err(RepoError::Io {
                    context: format!("cannot create mirror {shown}"),
                    source: e,
                });
            }
        }
    }
    let repo = Repository::open_bare(dir)
        .map_err(RepoError::git(format!("cannot open mirror {shown}")))?;
    let current = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().map(str::to_string));
    match current {
        Some(u) if u == url => {}
        Some(_) => {
            tracing::info!(mirror = %shown, url = %redact_url(url), "repository URL changed");
            repo.remote_set_url("origin", url)
                .map_err(RepoError::git(format!(
                    "cannot set the URL of mirror {shown}"
                )))?;
        }
        None => {
            repo.remote_with_fetch("origin", url, MIRROR_REFSPEC)
                .map_err(RepoError::git(format!(
                    "cannot add remote to mirror {shown}"
                )))?;
        }
    }
    Ok(repo)
}
