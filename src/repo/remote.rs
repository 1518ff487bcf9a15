//! Fetching remote URLs (`https://`, `http://`, `ssh://`, scp-like `user@host:path`, `git://`)
//! with the `git` program: it brings TLS, SSH, proxies and the system's CA bundle, so this binary
//! links none of them, and a hung server is stopped after a timeout.
//!
//! Secrets never reach the command line (visible in `ps`): the token goes through
//! `GIT_CONFIG_*` variables, a password in the URL stays in the mirror's config, and every
//! message is scrubbed of both.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use git2::Repository;

use super::fetch::{Credentials, Fetched};
use super::{RepoError, redact_url};
use crate::proc::SyncGroupChild;

/// How long a fetch of a remote URL may take before `git` (and its whole process group) is
/// killed and the fetch counts as unreachable.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The most of `git`'s stderr kept (its end, where the errors are).
const STDERR_LIMIT: usize = 64 * 1024;

/// Variables of the daemon's environment that would point `git` at another repository or
/// inject configuration.
const CLEARED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS",
    "SSH_ASKPASS",
    "LANGUAGE",
];

/// A `git fetch` ready to run, with the secrets it carries (to scrub from its messages).
pub(crate) struct FetchCommand {
    /// The command; its argv holds no secret.
    pub command: Command,
    /// Strings that must never appear in a message.
    pub secrets: Vec<String>,
}

/// Builds `git -C <mirror> fetch ... origin <refspecs>` for `url` (already the mirror's
/// `origin`), with credentials in the environment and every prompt disabled.
pub(crate) fn fetch_command(
    mirror: &Path,
    url: &str,
    refspecs: &[String],
    creds: &Credentials,
    prune: bool,
) -> Result<FetchCommand, RepoError> {
    let unreachable = |message: String| RepoError::Unreachable {
        url: redact_url(url),
        message,
    };
    let mut secrets = url_secrets(url);
    let mut command = Command::new("git");
    command.arg("-C").arg(mirror).args([
        "fetch",
        "--force",
        "--no-tags",
        "--no-write-fetch-head",
        "--refmap=",
        "--progress",
    ]);
    if prune {
        command.arg("--prune");
    }
    command.arg("origin").args(refspecs);
    for var in CLEARED_ENV {
        command.env_remove(var);
    }
    // Never wait for input: no terminal prompt, an empty askpass (git then gives up with
    // "terminal prompts disabled"), messages in English for `classify`.
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("GCM_INTERACTIVE", "never")
        .env("LC_ALL", "C");
    match &creds.ssh_key {
        Some(key) => {
            let key = key.to_str().ok_or_else(|| {
                unreachable(format!(
                    "the ssh_key path {} is not UTF-8",
                    key.to_string_lossy()
                ))
            })?;
            command.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes",
                    shell_quote(key)
                ),
            );
        }
        // Keep an operator's own ssh command; otherwise never let ssh prompt.
        None if std::env::var_os("GIT_SSH_COMMAND").is_none()
            && std::env::var_os("GIT_SSH").is_none() =>
        {
            command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        None => {}
    }
    let is_http = url.starts_with("https://") || url.starts_with("http://");
    if is_http && let Some(token) = creds.token_for(url) {
        // Read at every fetch, so a rotated token is used at once.
        let token = token.map_err(unreachable)?;
        if !token.is_empty() {
            let basic = base64(format!("oauth2:{token}").as_bytes());
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
            secrets.push(token);
            secrets.push(basic);
        }
    }
    Ok(FetchCommand { command, secrets })
}

/// Fetches `refspecs` from `url` (the `origin` of `repo`) with the `git` program, killing it
/// after `timeout`. Transport failures are [`RepoError::Unreachable`]; a named ref the source
/// does not have is [`RepoError::NotFound`].
pub(crate) fn fetch_remote(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    creds: &Credentials,
    prune: bool,
    timeout: Duration,
) -> Result<Fetched, RepoError> {
    let shown = redact_url(url);
    let FetchCommand {
        mut command,
        secrets,
    } = fetch_command(repo.path(), url, refspecs, creds, prune)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = SyncGroupChild::spawn(&mut command).map_err(|e| RepoError::Unreachable {
        url: shown.clone(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "the `git` program is needed to fetch remote URLs and was not found on PATH".to_string()
        } else {
            format!("cannot run git: {e}")
        },
    })?;
    let stderr = child.take_stderr();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("git-fetch-stderr".to_string())
        .spawn(move || {
            let _ = tx.send(stderr.map(read_tail).unwrap_or_default());
        });
    if let Err(e) = reader {
        child.kill_group();
        return Err(RepoError::Io {
            context: "cannot start a thread to read git's output".to_string(),
            source: e,
        });
    }
    // git, ssh and the remote helpers share the group: all of them go at the timeout.
    let status = child.wait_timeout(timeout);
    // The stderr pipe closes when git and its helpers are gone; never block on it for long.
    let stderr = rx
        .recv_timeout(Duration::from_secs(2))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let status = match status {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(RepoError::Unreachable {
                url: shown,
                message: format!(
                    "timed out after {} (git was stopped)",
                    humantime::format_duration(timeout)
                ),
            });
        }
        Err(e) => {
            return Err(RepoError::Io {
                context: format!("cannot wait for git fetching {shown}"),
                source: e,
            });
        }
    };
    if !status.success() {
        return Err(classify(&stderr, url, &secrets));
    }
    Ok(Fetched {
        heads: fetched_heads(repo, refspecs)?,
        received_objects: received_objects(&stderr),
    })
}

/// Reads `from` to its end, keeping the last [`STDERR_LIMIT`] bytes.
fn read_tail(mut from: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_LIMIT {
                    kept.drain(..kept.len() - STDERR_LIMIT);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if kept.len() > STDERR_LIMIT {
        kept.drain(..kept.len() - STDERR_LIMIT);
    }
    kept
}

/// The refs the fetch wrote, named as on the source (every refspec maps a source ref or
/// pattern to a destination).
fn fetched_heads(
    repo: &Repository,
    refspecs: &[String],
) -> Result<Vec<(String, git2::Oid)>, RepoError> {
    let mut heads = Vec::new();
    for spec in refspecs {
        let spec = spec.strip_prefix('+').unwrap_or(spec);
        let (src, dst) = spec.split_once(':').unwrap_or((spec, spec));
        let names: Vec<String> = if dst.ends_with('*') {
            repo.references_glob(dst)
                .map_err(RepoError::git(format!("cannot list {dst} in the mirror")))?
                .filter_map(|r| r.ok().and_then(|r| r.name().map(str::to_string)))
                .collect()
        } else {
            vec![dst.to_string()]
        };
        for name in names {
            let Ok(id) = repo.refname_to_id(&name) else {
                continue;
            };
            let source = match (src.strip_suffix('*'), dst.strip_suffix('*')) {
                (Some(src_prefix), Some(dst_prefix)) => name
                    .strip_prefix(dst_prefix)
                    .map_or_else(|| name.clone(), |rest| format!("{src_prefix}{rest}")),
                _ => src.to_string(),
            };
            heads.push((source, id));
        }
    }
    Ok(heads)
}

/// Objects received, from git's progress lines (`Receiving objects: 100% (52/52), done.`) or
/// the server's pack summary (`remote: Total 52 (delta 3), reused ...`).
fn received_objects(stderr: &str) -> usize {
    let leading_number = |s: &str| {
        s.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse::<usize>().ok())
    };
    stderr
        .split(['\r', '\n'])
        .map(|l| l.strip_prefix("remote: ").unwrap_or(l).trim_start())
        .filter_map(|l| {
            if l.starts_with("Receiving objects:") || l.starts_with("Unpacking objects:") {
                leading_number(l.split_once('/')?.1)
            } else {
                leading_number(l.strip_prefix("Total ")?)
            }
        })
        .max()
        .unwrap_or(0)
}

/// Turns a failed fetch's stderr into an error: a missing ref is `NotFound`, a failure to
/// write the mirror is `Git`, anything else (network, authentication, the server) is
/// `Unreachable`. Secrets are removed first.
pub(crate) fn classify(stderr: &str, url: &str, secrets: &[String]) -> RepoError {
    let shown = redact_url(url);
    let text = scrub(stderr, url, secrets);
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_progress(l))
        .collect();
    if let Some(line) = lines
        .iter()
        .find(|l| l.contains("couldn't find remote ref"))
    {
        let name = line
            .split("couldn't find remote ref")
            .nth(1)
            .unwrap_or("")
            .trim();
        let what = match (
            name.strip_prefix("refs/heads/"),
            name.strip_prefix("refs/tags/"),
        ) {
            (Some(branch), _) => format!("branch `{branch}`"),
            (_, Some(tag)) => format!("tag `{tag}`"),
            _ => format!("ref `{name}`"),
        };
        return RepoError::NotFound { url: shown, what };
    }
    let start = lines.len().saturating_sub(8);
    let mut message = lines[start..].join("; ");
    if message.is_empty() {
        message = "git fetch failed without a message".to_string();
    }
    let lower = message.to_ascii_lowercase();
    let local = [
        "cannot lock ref",
        "unable to update local ref",
        "no space left on device",
        "read-only file system",
        "not a git repository",
        "unable to create temporary",
    ];
    if local.iter().any(|p| lower.contains(p)) {
        return RepoError::Git {
            context: format!("cannot write what was fetched from {shown} into the mirror"),
            source: git2::Error::from_str(&message),
        };
    }
    let auth = [
        "terminal prompts disabled",
        "could not read username",
        "could not read password",
        "authentication failed",
        "permission denied (publickey",
        "invalid username or password",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
    ];
    if auth.iter().any(|p| lower.contains(p)) {
        message.push_str(" (authentication failed: check repo.ssh_key or repo.token_file)");
    } else if lower.contains("host key verification failed") {
        message.push_str(
            " (add the server's host key to the known_hosts of the user running jobkeeper)",
        );
    }
    RepoError::Unreachable {
        url: shown,
        message,
    }
}

/// Progress output and boilerplate, not worth showing in an error.
fn is_progress(line: &str) -> bool {
    let line = line.strip_prefix("remote: ").unwrap_or(line);
    line.contains("objects:")
        || line.contains("deltas:")
        || line.starts_with("Total ")
        || line.starts_with("Please make sure you have the correct access rights")
        || line == "and the repository exists."
}

/// Removes the URL's password and every secret from a message.
pub(crate) fn scrub(message: &str, url: &str, secrets: &[String]) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The secrets in a URL's userinfo: a password, or a lone http(s) user (often a token).
fn url_secrets(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    match userinfo.split_once(':') {
        Some((_, password)) => vec![password.to_string()],
        None if scheme.starts_with("http") => vec![userinfo.to_string()],
        None => Vec::new(),
    }
}

/// `s` quoted for a POSIX shell (git runs `GIT_SSH_COMMAND` through one).
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
