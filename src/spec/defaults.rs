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

/// Fields a defaults file may not set: each job's SQL, what it takes over and the state it is
/// restored from once are its own.
pub const NOT_DEFAULTS: &[&str] = &["sql", "sql_file", "adopt", "restore"];

/// True for a path below `repo.path` (`team-a/_defaults.yaml`) that is a folder's file and
/// never a job: a `_defaults.yaml` in any folder, and `_freeze.yaml` at the top.
pub fn is_folder_file(rel_path: &str) -> bool {
    is_defaults_path(rel_path) || rel_path == FREEZE_FILE
}

/// True for a `_defaults.yaml` in any folder (`a/_defaults.yaml`, `_defaults.yaml`).
pub fn is_defaults_path(path: &str) -> bool {
    path.strip_suffix(DEFAULTS_FILE)
        .is_some_and(|head| head.is_empty() || head.ends_with('/'))
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
    // A file of comments only sets nothing (a job file like it is an error).
    let blank = src.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    });
    let mut root = if blank {
        Node {
            line: 1,
            column: 1,
            value: Value::Map(Vec::new()),
            origin: 0,
        }
    } else {
        yaml::parse(path, src)?
    };
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
                        "`{key}` cannot be a folder default: each job's `sql`, `sql_file`, `adopt` \
                         and `restore` are its own; set it in the job file"
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
            Ok(Some(bytes)) => Some(
                parse_defaults(&path, &bytes)
                    .map(Arc::new)
                    .map_err(Arc::new),
            ),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::spec::{Context, FileReadError, parse_job_in};

    /// Files of a config repo held in memory: the same lookups as a commit's tree.
    #[derive(Debug, Default)]
    struct MemFiles(HashMap<String, String>);

    impl RepoFiles for MemFiles {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileReadError> {
            Ok(self.0.get(path).map(|s| s.as_bytes().to_vec()))
        }
    }

    /// A node as JSON (places dropped), for comparing merged trees.
    fn json(n: &Node) -> serde_json::Value {
        match &n.value {
            Value::Scalar(s) => serde_json::Value::String(s.text.clone()),
            Value::Seq(items) => items.iter().map(json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.scalar().map(|s| s.text.clone()).unwrap_or_default(),
                        json(v),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    fn tree(files: &[(&str, &str)]) -> MemFiles {
        MemFiles(
            files
                .iter()
                .map(|(p, t)| ((*p).to_string(), (*t).to_string()))
                .collect(),
        )
    }

    /// The merged tree of `jobs/team/a.yaml` under `jobs/_defaults.yaml` (`top`) and
    /// `jobs/team/_defaults.yaml` (`team`); `None` leaves a file out.
    fn merge_of(top: Option<&str>, team: Option<&str>, job: &str) -> serde_json::Value {
        let mut files = vec![];
        if let Some(t) = top {
            files.push(("jobs/_defaults.yaml", t));
        }
        if let Some(t) = team {
            files.push(("jobs/team/_defaults.yaml", t));
        }
        let mem = tree(&files);
        let folders = Folders::new(Some(&mem));
        let layers = folders
            .layers("jobs/team/a.yaml", "team/a.yaml", "team/a")
            .expect("layers");
        json(&merged(&layers, yaml::parse("a.yaml", job).expect("job")))
    }

    /// (case, top defaults, team defaults, job file, merged file as JSON)
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        &'static str,
    );

    #[test]
    fn merge_rules_table() {
        // (case, top defaults, team defaults, job file, merged file as JSON)
        let cases: &[Case] = &[
            (
                "no defaults: the job file as written",
                None,
                None,
                "env: dev",
                r#"{"env":"dev"}"#,
            ),
            (
                "a value only the top folder sets is inherited",
                Some("env: dev\nsuspend: true"),
                None,
                "params: {command: [a]}",
                r#"{"env":"dev","suspend":"true","params":{"command":["a"]}}"#,
            ),
            (
                "the nearest folder wins over the one above",
                Some("env: dev"),
                Some("env: prod"),
                "params: {command: [a]}",
                r#"{"env":"prod","params":{"command":["a"]}}"#,
            ),
            (
                "the job file wins over all of them",
                Some("env: dev"),
                Some("env: prod"),
                "env: test",
                r#"{"env":"test"}"#,
            ),
            (
                "mappings merge key by key, at every depth",
                Some("params: {conf: {a: '1', b: '2'}, parallelism: 2}"),
                Some("params: {conf: {b: '3'}}"),
                "params: {conf: {c: '4'}}",
                r#"{"params":{"conf":{"a":"1","b":"3","c":"4"},"parallelism":"2"}}"#,
            ),
            (
                "lists replace, never append",
                Some("params: {args: [a, b]}"),
                Some("params: {args: [c]}"),
                "params: {args: [d, e]}",
                r#"{"params":{"args":["d","e"]}}"#,
            ),
            (
                "a list from a folder is kept whole when the job sets none",
                Some("params: {args: [a, b]}"),
                None,
                "env: dev",
                r#"{"params":{"args":["a","b"]},"env":"dev"}"#,
            ),
            (
                "a scalar replaces a mapping (null drops an inherited value)",
                Some("restart: {attempts: 3}"),
                None,
                "restart: null",
                r#"{"restart":"null"}"#,
            ),
            (
                "a mapping replaces a scalar",
                Some("alerts: oncall"),
                None,
                "alerts: {x: y}",
                r#"{"alerts":{"x":"y"}}"#,
            ),
            (
                "an empty defaults file changes nothing",
                Some(""),
                Some("# only a comment\n"),
                "env: dev",
                r#"{"env":"dev"}"#,
            ),
        ];
        for (case, top, team, job, want) in cases {
            let want: serde_json::Value = serde_json::from_str(want).expect("json");
            assert_eq!(merge_of(*top, *team, job), want, "{case}");
        }
    }

    #[test]
    fn the_merged_spec_takes_values_from_every_level() {
        let mem = tree(&[
            (
                "jobs/_defaults.yaml",
                "env: dev\nrestart: {attempts: 7, backoff: 1s}\nalerts: [ops]\n",
            ),
            ("jobs/team/_defaults.yaml", "restart: {backoff: 2s}\n"),
        ]);
        let folders = Folders::new(Some(&mem));
        let layers = folders
            .layers("jobs/team/a.yaml", "team/a.yaml", "team/a")
            .unwrap();
        let spec = parse_job_in(
            "jobs/team/a.yaml",
            Some("team/a"),
            b"params: {command: [sleep, '1']}\nalerts: []\n",
            &layers,
            Context::default(),
        )
        .unwrap();
        assert_eq!(spec.env, "dev");
        assert_eq!(spec.restart.attempts, Some(7));
        assert_eq!(
            spec.restart.backoff,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(spec.alerts, Some(vec![]));
        assert_eq!(spec.params.command, vec!["sleep", "1"]);
    }

    #[test]
    fn an_inherited_error_is_placed_in_the_defaults_file_and_names_the_job() {
        let mem = tree(&[("jobs/team/_defaults.yaml", "env: dev\ntimeout: soon\n")]);
        let folders = Folders::new(Some(&mem));
        let layers = folders
            .layers("jobs/team/a.yaml", "team/a.yaml", "team/a")
            .unwrap();
        let errs = parse_job_in(
            "jobs/team/a.yaml",
            Some("team/a"),
            b"params: {command: [x]}\nschedule: nope\n",
            &layers,
            Context::default(),
        )
        .unwrap_err();
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("jobs/team/a.yaml:2:11: `schedule`: invalid cron `nope`"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("jobs/team/_defaults.yaml:2:10: job `team/a`: `timeout`"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_broken_defaults_file_fails_every_job_below_it_naming_each() {
        let mem = tree(&[(
            "jobs/_defaults.yaml",
            "env: dev\nsql: 'SELECT 1'\nbogus: 1\n",
        )]);
        let folders = Folders::new(Some(&mem));
        for job in ["a", "team/b"] {
            let errs = folders
                .layers(&format!("jobs/{job}.yaml"), &format!("{job}.yaml"), job)
                .unwrap_err();
            let text = crate::diag::render(&errs);
            assert!(
                text.contains(&format!(
                    "jobs/_defaults.yaml:2:1: job `{job}`: `sql` cannot be a folder default"
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "jobs/_defaults.yaml:3:1: job `{job}`: unknown field `bogus`"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn folder_files_are_never_jobs() {
        assert!(is_folder_file("_defaults.yaml"));
        assert!(is_folder_file("a/b/_defaults.yaml"));
        assert!(is_folder_file("_freeze.yaml"));
        assert!(
            !is_folder_file("a/_freeze.yaml"),
            "only at the top; elsewhere a bad job name"
        );
        assert!(!is_folder_file("a/defaults.yaml"));
        assert_eq!(defaults_folder("_defaults.yaml"), Some(""));
        assert_eq!(defaults_folder("a/b/_defaults.yaml"), Some("a/b"));
        assert_eq!(defaults_folder("a/x_defaults.yaml"), None);
        assert!(is_below("", "x.yaml"));
        assert!(is_below("a", "a/x.yaml"));
        assert!(!is_below("a", "ab/x.yaml"));
    }
}
