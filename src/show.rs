//! `jobkeeper show JOB --repo DIR [--rev REV]`: a job's file merged with its folders'
//! `_defaults.yaml`, as YAML with the file and line each value came from.

use std::fmt::Write as _;
use std::path::Path;

use crate::changes::TreeFiles;
use crate::diag::Diagnostic;
use crate::repo::{RepoError, open_existing};
use crate::spec::{self, Folders};
use crate::yaml::{Node, ScalarKind, Value};

/// Why a job cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// Git said no (no repository, no such revision).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// No file for the job at that commit.
    #[error("no job `{job}` at `{rev}`: neither `{path}/{job}.yaml` nor `{path}/{job}.yml` exists")]
    NoJob {
        /// The job asked for.
        job: String,
        /// The revision read.
        rev: String,
        /// The jobs folder.
        path: String,
    },
    /// The job file or a defaults file above it cannot be read as YAML.
    #[error("{}", crate::diag::render(.0).trim_end())]
    Unreadable(Vec<Diagnostic>),
}

/// What [`show`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The merged file, each value with its source.
    pub text: String,
    /// The problems of the merged file (empty when the job is valid).
    pub errors: Vec<Diagnostic>,
}

/// The merged file of job `job` at revision `rev` of the repository at `dir`, its job files
/// under `path`.
pub fn show(dir: &Path, job: &str, rev: &str, path: &str) -> Result<Shown, ShowError> {
    let tree = open_existing(dir)?;
    let commit = tree.resolve_rev(rev)?;
    let top = path.trim_matches('/');
    let files = TreeFiles {
        tree: &tree,
        commit,
    };
    let mut found = None;
    for ext in ["yaml", "yml"] {
        let rel = format!("{job}.{ext}");
        let repo_path = if top.is_empty() {
            rel.clone()
        } else {
            format!("{top}/{rel}")
        };
        match tree.read_path(commit, &repo_path) {
            Ok(bytes) => {
                found = Some((rel, repo_path, bytes));
                break;
            }
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let Some((rel, repo_path, bytes)) = found else {
        return Err(ShowError::NoJob {
            job: job.to_string(),
            rev: rev.to_string(),
            path: top.to_string(),
        });
    };
    let folders = Folders::new(Some(&files));
    let layers = folders
        .layers(&repo_path, &rel, job)
        .map_err(ShowError::Unreadable)?;
    let src = spec::utf8(&repo_path, &bytes).map_err(ShowError::Unreadable)?;
    let root = crate::yaml::parse(&repo_path, src).map_err(ShowError::Unreadable)?;
    let root = if root.is_null() {
        Node {
            value: Value::Map(Vec::new()),
            ..root
        }
    } else {
        root
    };
    let merged = spec::merged(&layers, root);
    let mut sources: Vec<&str> = vec![&repo_path];
    sources.extend(layers.iter().map(|l| l.path.as_str()));
    let info = tree.commit_info(commit)?;
    let mut text = format!("# job `{job}` at {} ({})\n", info.short, info.subject);
    if layers.is_empty() {
        let _ = writeln!(text, "# no _defaults.yaml above it: {repo_path} as written");
    } else {
        let chain: Vec<&str> = layers.iter().rev().map(|l| l.path.as_str()).collect();
        let _ = writeln!(
            text,
            "# {repo_path} merged over {} (nearest first)",
            chain.join(", ")
        );
    }
    render_map(&mut text, &merged, 0, &sources);
    let ctx = spec::Context {
        settings: None,
        files: Some(&files),
    };
    let errors = spec::parse_job_in(&repo_path, Some(job), &bytes, &layers, ctx)
        .err()
        .unwrap_or_default();
    Ok(Shown { text, errors })
}

/// Where node `n` came from: `file:line`.
fn source(n: &Node, sources: &[&str]) -> String {
    let file = usize::try_from(n.origin)
        .ok()
        .and_then(|i| sources.get(i))
        .copied()
        .unwrap_or("?");
    format!("{file}:{}", n.line)
}

/// The entries of mapping `n` as block YAML at `indent`.
fn render_map(out: &mut String, n: &Node, indent: usize, sources: &[&str]) {
    let Value::Map(entries) = &n.value else {
        return;
    };
    let pad = " ".repeat(indent);
    for (k, v) in entries {
        let key = k.scalar().map_or_else(String::new, |s| scalar(&s.text, s));
        match &v.value {
            Value::Map(inner) if !inner.is_empty() => {
                let _ = writeln!(out, "{pad}{key}:");
                render_map(out, v, indent + 2, sources);
            }
            _ => {
                let line = format!("{pad}{key}: {}", flow(v));
                let _ = writeln!(out, "{line:<48} # {}", source(v, sources));
            }
        }
    }
}

/// A node in YAML's flow style, on one line.
fn flow(n: &Node) -> String {
    match &n.value {
        Value::Scalar(s) => scalar(&s.text, s),
        Value::Seq(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(entries) => {
            let items: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// A scalar as YAML reads it back the same: plain when that is safe, else double-quoted.
fn scalar(text: &str, s: &crate::yaml::Scalar) -> String {
    if s.kind == ScalarKind::Null && !s.quoted {
        return "null".to_string();
    }
    if !s.quoted && s.kind != ScalarKind::String {
        return text.to_string();
    }
    let plain_ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || "._/-+".contains(c))
        && !text.starts_with(['-', '.'])
        && crate::yaml::resolve(text) == s.kind;
    if plain_ok {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}
