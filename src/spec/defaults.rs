//! Folder defaults: a `_defaults.yaml` in any folder under `repo.path` is a partial job file
//! merged under every job file below that folder.
//!
//! The merge is over located YAML trees ([`merge_under`]): the nearest folder's file wins over
//! the ones above it, mappings merge key by key, lists and scalars replace, and the job file wins
//! over all of them. Every node keeps the file it came from (its `origin`), so a problem in an
//! inherited value is reported at the defaults file's `path:line:column`, naming the job it
//! broke. [`Folders`] finds and reads the defaults files of a job, once per folder, through
//! the same [`RepoFiles`] that reads a job's `sql_file` (a git commit or the disk).
//! A defaults file is never a job ([`is_folder_file`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::{JOB_FIELDS, MAX_JOB_FILE_BYTES, RepoFiles};
use crate::diag::Diagnostic;
use crate::yaml::{self, Checker, Node, Value};

/// The name of a folder's defaults file.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";

/// The name of the freeze-window file at the top of `repo.path`.
pub const FREEZE_FILE: &str = "_freeze.yaml";

/// Fields a defaults file may not set: each job's SQL and what it takes over are its own.
pub const NOT_DEFAULTS: &[&str] = &["sql", "sql_file", "adopt"];

/// True for a path below `repo.path` (`team-a/_defaults.yaml`) that is a folder's file and
/// never a job: a `_defaults.yaml` in any folder, and `_freeze.yaml` at the top.
pub fn is_folder_file(rel_path: &str) -> bool {
    let base = rel_path.rsplit('/').next().unwrap_or(rel_path);
    base == DEFAULTS_FILE || rel_path == FREEZE_FILE
}

/// The folder (below `repo.path`, `""` for the top) whose jobs a defaults file at `rel_path`
/// applies to; `None` when `rel_path` is not a defaults file.
pub fn defaults_folder(rel_path: &str) -> Option<&str> {
    if rel_path == DEFAULTS_FILE {
        return Some("");
    }
    rel_path
        .strip_suffix(DEFAULTS_FILE)
        .and_then(|p| p.strip_suffix('/'))
}

/// True when the job file at `rel_path` (below `repo.path`) lies below `folder` (`""`: all).
pub fn is_below(folder: &str, rel_path: &str) -> bool {
    folder.is_empty()
        || rel_path
            .strip_prefix(folder)
            .is_some_and(|r| r.starts_with('/'))
}

/// One folder's defaults file, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultsFile {
    /// The file as the operator knows it (`jobs/team-a/_defaults.yaml`).
    pub path: String,
    /// Its top-level mapping (an empty file is an empty mapping).
    pub root: Node,
}

/// Reads and checks a defaults file: YAML with the limits of a job file, a mapping of job
/// fields, none of [`NOT_DEFAULTS`]. The values are checked where they are merged (each job's
/// env decides what they mean), and reported here, naming the job.
pub fn parse_defaults(path: &str, bytes: &[u8]) -> Result<DefaultsFile, Vec<Diagnostic>> {
    if bytes.len() > MAX_JOB_FILE_BYTES {
        return Err(vec![Diagnostic::file(
            path,
            format!(
                "file is {} bytes; a defaults file may be at most {MAX_JOB_FILE_BYTES} bytes (1 MiB)",
                bytes.len()
            ),
        )]);
    }
    let src = super::utf8(path, bytes)?;
    let mut root = yaml::parse(path, src)?;
    if root.is_null() {
        root.value = Value::Map(Vec::new());
    }
    let mut c = Checker::new(path);
    if let Some(f) = c.mapping(&root, "", JOB_FIELDS) {
        for (key, _) in f.entries() {
            if NOT_DEFAULTS.contains(key)
                && let Some(k) = key_node(&root, key)
            {
                c.error(
                    k,
                    format!(
                        "`{key}` cannot be a folder default: each job's `sql`, `sql_file` and \
                         `adopt` are its own; set it in the job file"
                    ),
                );
            }
        }
    }
    let diags = c.finish();
    if diags.is_empty() {
        Ok(DefaultsFile {
            path: path.to_string(),
            root,
        })
    } else {
        Err(diags)
    }
}

/// The key node of `key` in mapping `n`.
fn key_node<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    match &n.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar().is_some_and(|s| s.text == key))
            .map(|(k, _)| k),
        _ => None,
    }
}

/// `node` and everything below it marked as read from source `origin`.
pub fn with_origin(mut node: Node, origin: u32) -> Node {
    fn mark(n: &mut Node, origin: u32) {
        n.origin = origin;
        match &mut n.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => items.iter_mut().for_each(|i| mark(i, origin)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                mark(k, origin);
                mark(v, origin);
            }),
        }
    }
    mark(&mut node, origin);
    node
}

/// `over` merged over `base`: two mappings merge key by key (a key of `over` wins, its value
/// merged over the base's); anything else (a list, a scalar, null, or a mapping over a
/// non-mapping) is `over`, replacing `base` whole. Pure.
pub fn merge_under(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(overs)) => {
            for (k, v) in overs {
                let key = k.scalar().map(|s| s.text.clone());
                let at = entries
                    .iter()
                    .position(|(bk, _)| bk.scalar().map(|s| &s.text) == key.as_ref());
                match at {
                    Some(i) => {
                        let (_, old) = entries.remove(i);
                        entries.insert(i, (k, merge_under(old, v)));
                    }
                    None => entries.push((k, v)),
                }
            }
            Node {
                value: Value::Map(entries),
                ..over_pos(&over.line, &over.column, over.origin)
            }
        }
        (_, value) => Node {
            value,
            ..over_pos(&over.line, &over.column, over.origin)
        },
    }
}

/// A node at a place, holding nothing yet.
fn over_pos(line: &usize, column: &usize, origin: u32) -> Node {
    Node {
        line: *line,
        column: *column,
        value: Value::Seq(Vec::new()),
        origin,
    }
}

/// The job file's tree `job` with `layers` (outermost folder first) merged under it; each
/// layer's nodes get origin `i + 1`, the job's keep 0.
pub fn merged(layers: &[Arc<DefaultsFile>], job: Node) -> Node {
    let mut acc: Option<Node> = None;
    for (i, layer) in layers.iter().enumerate() {
        let origin = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let node = with_origin(layer.root.clone(), origin);
        acc = Some(match acc {
            None => node,
            Some(base) => merge_under(base, node),
        });
    }
    match acc {
        None => job,
        Some(base) => merge_under(base, job),
    }
}

/// A defaults file as found: read and checked, or every problem of it.
type Found = Option<Result<Arc<DefaultsFile>, Arc<Vec<Diagnostic>>>>;

/// Finds the defaults files of job files of one commit (or of the disk), reading each
/// folder's file once.
#[derive(Debug)]
pub struct Folders<'a> {
    files: Option<&'a dyn RepoFiles>,
    cache: RefCell<HashMap<String, Found>>,
}

impl<'a> Folders<'a> {
    /// Defaults read through `files`; without it, no job has defaults.
    pub fn new(files: Option<&'a dyn RepoFiles>) -> Self {
        Self {
            files,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The defaults files above the job file at `repo_path` (whose path below `repo.path` is
    /// `rel_path`), outermost first; every problem of any of them, naming job `job`.
    pub fn layers(
        &self,
        repo_path: &str,
        rel_path: &str,
        job: &str,
    ) -> Result<Vec<Arc<DefaultsFile>>, Vec<Diagnostic>> {
        let Some(files) = self.files else {
            return Ok(Vec::new());
        };
        let top = repo_path
            .strip_suffix(rel_path)
            .unwrap_or("")
            .trim_end_matches('/');
        let mut folder = top.to_string();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut segments = rel_path.split('/').collect::<Vec<_>>();
        segments.pop();
        for i in 0..=segments.len() {
            if i > 0 {
                if !folder.is_empty() {
                    folder.push('/');
                }
                folder.push_str(segments[i - 1]);
            }
            match self.found(files, &folder) {
                None => {}
                Some(Ok(found)) => out.push(found),
                Some(Err(diags)) => errors.extend(diags.iter().map(|d| Diagnostic {
                    message: format!("job `{job}`: {}", d.message),
                    ..d.clone()
                })),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The defaults file of `folder` (from the repository's root), read once.
    fn found(&self, files: &dyn RepoFiles, folder: &str) -> Found {
        if let Some(f) = self.cache.borrow().get(folder) {
            return f.clone();
        }
        let path = if folder.is_empty() {
            DEFAULTS_FILE.to_string()
        } else {
            format!("{folder}/{DEFAULTS_FILE}")
        };
        let found = match files.read(&path) {
            Ok(None) => None,
            Ok(Some(bytes)) => Some(parse_defaults(&path, &bytes).map(Arc::new).map_err(Arc::new)),
            Err(e) => Some(Err(Arc::new(vec![Diagnostic::file(
                &path,
                format!("cannot read: {e}"),
            )]))),
        };
        self.cache
            .borrow_mut()
            .insert(folder.to_string(), found.clone());
        found
    }
}
