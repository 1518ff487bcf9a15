//! Fetching into a bare mirror with credentials (an SSH key, or an HTTPS token sent as user
//! `oauth2`), classifying failures and keeping secrets out of every message.

use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, Oid, RemoteCallbacks, Repository,
};

use super::{RepoError, redact_url, url_host};
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

/// Fetches `refspecs` from `url` into `repo` (through its remote `origin`). Any transport
/// failure is [`RepoError::Unreachable`].
pub(crate) fn fetch_into(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    creds: &Credentials,
    prune: bool,
) -> Result<Fetched, RepoError> {
    let mut remote = repo.find_remote("origin").map_err(RepoError::git(format!(
        "mirror {} has no remote `origin`",
        repo.path().display()
    )))?;
    // A token read for redaction only; the callback reads it again, so a rotated token is used.
    let token = creds.token_for(url).and_then(Result::ok);
    let mut attempts = 0u32;
    let mut callbacks = RemoteCallbacks::new();
    let key = creds.ssh_key.clone();
    let creds_cb = creds.clone();
    callbacks.credentials(move |cb_url, user_from_url, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(
                "authentication failed (credentials were refused)",
            ));
        }
        let user = user_from_url.unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &key
        {
            return Cred::ssh_key(user, None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            match creds_cb.token_for(cb_url) {
                Some(Ok(token)) => return Cred::userpass_plaintext("oauth2", &token),
                Some(Err(e)) => return Err(git2::Error::from_str(&e)),
                None => {}
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        Err(git2::Error::from_str(
            "the server asks for credentials and none are configured (ssh_key or token_file)",
        ))
    });
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false)
        .prune(if prune {
            FetchPrune::On
        } else {
            FetchPrune::Off
        });
    let shown_url = redact_url(url);
    remote
        .fetch(refspecs, Some(&mut opts), Some("jobkeeper fetch"))
        .map_err(|e| RepoError::Unreachable {
            url: shown_url.clone(),
            message: scrub(e.message(), url, token.as_deref()),
        })?;
    let received_objects = remote.stats().received_objects();
    let heads = remote
        .list()
        .map_err(|e| RepoError::Unreachable {
            url: shown_url,
            message: scrub(e.message(), url, token.as_deref()),
        })?
        .iter()
        .map(|h| (h.name().to_string(), h.oid()))
        .collect();
    Ok(Fetched {
        heads,
        received_objects,
    })
}

/// Removes the URL's password and the token from a transport message.
fn scrub(message: &str, url: &str, token: Option<&str>) -> String {
    let mut out = message.replace(url, &redact_url(url));
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        out = out.replace(token, "***");
    }
    out
}

/// The configured fetch refspec of a mirror's `origin` (fetches name their refspecs anyway).
const MIRROR_REFSPEC: &str = "+refs/heads/*:refs/heads/*";

/// Opens the bare mirror at `dir`, creating it (atomically, through a temporary folder) when
/// missing, and points its remote `origin` at `url`.
pub(crate) fn open_or_init_mirror(dir: &Path, url: &str) -> Result<Repository, RepoError> {
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
