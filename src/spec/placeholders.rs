//! Placeholders in job files: `${var:NAME}` replaced from the env's vars while parsing,
//! `${secret:NAME}` checked while parsing and read from `secrets_dir` at submit time, and
//! masking of secret values in what a run prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Params;
use crate::yaml::{Checker, Node};

/// How strings of params and project are expanded.
pub(super) struct Expand<'a> {
    /// The env's vars, when a daemon config was given and the env exists.
    pub(super) vars: Option<&'a BTreeMap<String, String>>,
    /// The env's name, for messages.
    pub(super) env: &'a str,
    /// A daemon config was given and it has no `secrets_dir`: `${secret:..}` cannot work.
    pub(super) no_secrets_dir: bool,
}

impl Expand<'_> {
    /// Replaces `${var:NAME}` (when vars are known) and checks every `${...}` of `text`.
    pub(super) fn apply(&self, c: &mut Checker, node: &Node, text: String) -> String {
        match expand(&text, self) {
            Ok(s) => s,
            Err(msgs) => {
                for m in msgs {
                    c.error(node, m);
                }
                text
            }
        }
    }
}

impl Expand<'_> {
    /// `text` with `${var:..}` replaced (when vars are known), and the problems of its
    /// placeholders as messages (the text is then returned as far as it could be replaced).
    pub(super) fn quietly(&self, text: &str) -> (String, Vec<String>) {
        match expand(text, self) {
            Ok(s) => (s, Vec::new()),
            Err(msgs) => (text.to_string(), msgs),
        }
    }
}

/// True for a valid `${secret:NAME}` name.
fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Expands `${var:..}` and checks `${secret:..}` in one string; errors are messages.
fn expand(text: &str, how: &Expand<'_>) -> Result<String, Vec<String>> {
    let (vars, env) = (how.vars, how.env);
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            errors.push(format!(
                "unclosed `${{` in `{text}`; expected `${{var:NAME}}` or `${{secret:NAME}}`"
            ));
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let whole = &rest[start..start + 2 + end + 1];
        if let Some(name) = inner.strip_prefix("var:") {
            match vars {
                Some(vars) => match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        let known = if vars.is_empty() {
                            format!("env `{env}` defines no vars")
                        } else {
                            let names: Vec<&str> = vars.keys().map(String::as_str).collect();
                            format!("known vars of env `{env}`: {}", names.join(", "))
                        };
                        errors.push(format!("unknown var `{name}` in `{whole}`; {known}"));
                        out.push_str(whole);
                    }
                },
                None => out.push_str(whole),
            }
        } else if let Some(name) = inner.strip_prefix("secret:") {
            if !is_secret_name(name) {
                errors.push(format!(
                    "invalid secret name `{name}` in `{whole}`; expected letters, digits, `_`, `.` or `-`"
                ));
            } else if how.no_secrets_dir {
                errors.push(format!(
                    "`{whole}` needs `secrets_dir` in the daemon config, which sets none; add \
                     `secrets_dir: /etc/jobkeeper/secrets` with a file `{name}` in it"
                ));
            }
            out.push_str(whole);
        } else {
            errors.push(format!(
                "unknown placeholder `{whole}`; expected `${{var:NAME}}` or `${{secret:NAME}}`"
            ));
            out.push_str(whole);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A secret could not be read. Messages name the secret and its file, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A job uses `${secret:..}` but the daemon config has no `secrets_dir`.
    #[error("secret `{name}` is used but no `secrets_dir` is configured")]
    NoSecretsDir {
        /// The secret's name.
        name: String,
    },
    /// The secret's file is missing or unreadable.
    #[error("secret `{name}`: cannot read {}: {source}", path.display())]
    Unreadable {
        /// The secret's name.
        name: String,
        /// The file it should be in.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The secret's file is not UTF-8 text.
    #[error("secret `{name}`: {} is not UTF-8 text", path.display())]
    NotText {
        /// The secret's name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// The name is not `[A-Za-z0-9_.-]+`.
    #[error("invalid secret name `{name}`; expected letters, digits, `_`, `.` or `-`")]
    InvalidName {
        /// The name as written.
        name: String,
    },
}

/// Every string of params, for reading.
fn param_strings(p: &Params) -> Vec<&String> {
    let mut v: Vec<&String> = Vec::new();
    v.extend(p.main_class.iter());
    v.extend(p.args.iter());
    v.extend(p.conf.values());
    v.extend(p.command.iter());
    v.extend(p.environment.values());
    v.extend(p.workdir.iter());
    v
}

/// Applies `f` to every string of params.
fn map_param_strings(p: &Params, f: impl Fn(&str) -> String) -> Params {
    Params {
        main_class: p.main_class.as_deref().map(&f),
        args: p.args.iter().map(|s| f(s)).collect(),
        parallelism: p.parallelism,
        conf: p.conf.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
        command: p.command.iter().map(|s| f(s)).collect(),
        environment: p
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), f(v)))
            .collect(),
        workdir: p.workdir.as_deref().map(&f),
    }
}

/// The names of the `${secret:NAME}` placeholders in params, sorted, each once.
pub fn secret_names(params: &Params) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for s in param_strings(params) {
        let mut rest = s.as_str();
        while let Some(i) = rest.find("${secret:") {
            let after = &rest[i + "${secret:".len()..];
            match after.find('}') {
                Some(end) => {
                    names.insert(after[..end].to_string());
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
    }
    names.into_iter().collect()
}

/// Params with every `${secret:NAME}` replaced by the content of `secrets_dir/NAME`
/// (one trailing newline trimmed). Meant for the moment of submission only.
pub fn resolve_secrets(params: &Params, secrets_dir: Option<&Path>) -> Result<Params, SecretError> {
    resolve_secrets_with_values(params, secrets_dir).map(|(p, _)| p)
}

/// One secret a run was given: its name and the value read for it. Its `Debug` never shows
/// the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// The name in `${secret:NAME}`.
    pub name: String,
    /// The content of `secrets_dir/NAME` (one trailing newline trimmed).
    pub value: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({}: ***)", self.name)
    }
}

/// The values of `values`, for [`mask_secrets`].
pub fn values_of(values: &[SecretValue]) -> Vec<String> {
    values.iter().map(|s| s.value.clone()).collect()
}

/// The value of secret `name`: the content of `secrets_dir/NAME`, one trailing newline trimmed.
pub fn read_secret(name: &str, secrets_dir: Option<&Path>) -> Result<String, SecretError> {
    let name = name.to_string();
    if !is_secret_name(&name) {
        return Err(SecretError::InvalidName { name });
    }
    let Some(dir) = secrets_dir else {
        return Err(SecretError::NoSecretsDir { name });
    };
    let path = dir.join(&name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(SecretError::Unreadable { name, path, source }),
    };
    let Ok(mut text) = String::from_utf8(bytes) else {
        return Err(SecretError::NotText { name, path });
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Like [`resolve_secrets`], also returning the secrets read (name and value), so whatever the
/// run later prints can be masked with [`mask_secrets`].
pub fn resolve_secrets_with_values(
    params: &Params,
    secrets_dir: Option<&Path>,
) -> Result<(Params, Vec<SecretValue>), SecretError> {
    let names = secret_names(params);
    if names.is_empty() {
        return Ok((params.clone(), Vec::new()));
    }
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let value = read_secret(&name, secrets_dir)?;
        values.push(SecretValue { name, value });
    }
    let resolved = map_param_strings(params, |s| {
        let mut out = s.to_string();
        for v in &values {
            let placeholder = format!("${{secret:{}}}", v.name);
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), &v.value);
            }
        }
        out
    });
    Ok((resolved, values))
}

/// Lines of a multi-line secret shorter than this (after trimming spaces) are masked only
/// where they are a whole log line: masking every `}` or `ab` in a log would make it unreadable
/// and tell which short strings the secret holds.
pub const MIN_PIECE_CHARS: usize = 4;

/// `text` with every occurrence of each (non-empty) secret value replaced by `***`.
///
/// A multi-line value is also masked line by line, so any cut of the text into lines (a log's
/// tail, a reason's last lines) shows no piece of it: each of its lines (spaces trimmed) of
/// [`MIN_PIECE_CHARS`] or more is masked wherever it occurs, and a shorter one where it is a
/// whole line of `text`. Mask a text before cutting it: a cut inside a line can leave part of a
/// value that is then no longer found.
pub fn mask_secrets(text: &str, values: &[String]) -> String {
    let mut pieces: Vec<&str> = Vec::new();
    let mut short: Vec<&str> = Vec::new();
    for v in values.iter().filter(|v| !v.is_empty()) {
        pieces.push(v);
        if v.contains('\n') {
            for line in v.split('\n') {
                let t = line.trim();
                if t.chars().count() >= MIN_PIECE_CHARS {
                    pieces.push(t);
                } else if !t.is_empty() {
                    short.push(t);
                }
            }
        }
    }
    // Longest first, so a value containing another is masked whole.
    pieces.sort_by_key(|v| std::cmp::Reverse(v.len()));
    pieces.dedup();
    let mut out = text.to_string();
    for v in pieces {
        if out.contains(v) {
            out = out.replace(v, "***");
        }
    }
    if short.is_empty() {
        return out;
    }
    let mut masked = String::with_capacity(out.len());
    for line in out.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if short.contains(&body.trim()) {
            masked.push_str("***");
            masked.push_str(&line[body.len()..]);
        } else {
            masked.push_str(line);
        }
    }
    masked
}
