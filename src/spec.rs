//! Job files: the typed [`JobSpec`], its parsing from YAML and its validation.
//!
//! Parsing goes through [`crate::yaml`]'s located tree so that every problem names
//! `path:line:column`, and all problems of a file are reported at once.
//!
//! Strings of `params` and `project` may hold placeholders: `${var:NAME}` is replaced from the
//! env's `vars` when a daemon config is given ([`Context`]), and `${secret:NAME}` stays as
//! written until [`resolve_secrets`] reads it at submit time; any other `${...}` is an error.
//! This module also owns job names ([`check_name`]), secret masking ([`mask_secrets`]) and the
//! job file's JSON Schema ([`json_schema`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::schedule::Schedule;
use crate::settings::{EngineKind, Settings};
use crate::yaml::{self, Checker, Node, Value};

/// Largest job file accepted, in bytes.
pub const MAX_JOB_FILE_BYTES: usize = 1024 * 1024;

/// One job, as its file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Where the job's code comes from; `None` for a job that runs a command with no project.
    pub project: Option<Project>,
    /// The env (of the daemon config) the job runs in.
    pub env: String,
    /// Engine parameters, checked by the engine (`${var:..}` already replaced when a config was given).
    pub params: Params,
    /// Cron expression as written; present means a batch job.
    pub schedule: Option<String>,
    /// What a batch job does when its previous run is still live.
    pub overlap: Overlap,
    /// A batch run taking longer than this is stopped and counts as failed.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Restart policy fields set in the job file (the rest come from the env, then the daemon).
    pub restart: RestartOverride,
    /// How a flink job is upgraded.
    pub upgrade: Upgrade,
    /// Alert channels; `None` means the env's.
    pub alerts: Option<Vec<String>>,
    /// Stop the job but keep its file and history.
    pub suspend: bool,
}

/// The git repo, branch and folder holding a job's code, and how to build it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Project {
    /// URL, or a path to a local git repo.
    pub repo: String,
    /// Branch, tag or full commit id.
    pub branch: String,
    /// Folder inside the repo; empty for the root.
    pub dir: String,
    /// Shell command run in `dir`; `None` for no build.
    pub build: Option<String>,
    /// Glob in `dir` that must match exactly one file.
    pub artifact: Option<String>,
    /// A new commit on the branch rebuilds and redeploys.
    pub follow: bool,
}

/// Engine parameters. Which ones apply depends on the env's engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// flink/spark: the entry class.
    pub main_class: Option<String>,
    /// flink/spark: program arguments.
    pub args: Vec<String>,
    /// flink: parallelism.
    pub parallelism: Option<u32>,
    /// flink/spark: configuration properties.
    pub conf: BTreeMap<String, String>,
    /// local: the argv to run (`{artifact}` is replaced by the artifact's path).
    pub command: Vec<String>,
    /// local: environment variables of the child; spark: of the driver.
    pub environment: BTreeMap<String, String>,
    /// local: working directory (relative to the project checkout when there is one).
    pub workdir: Option<String>,
}

/// Batch overlap policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip a tick while a run is live.
    #[default]
    Forbid,
    /// Stop the live run and start a new one.
    Replace,
    /// Start another run beside the live one.
    Allow,
}

/// Flink upgrade mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upgrade {
    /// Stop with a savepoint and resubmit from it.
    #[default]
    Savepoint,
    /// Cancel and submit fresh.
    Stateless,
}

/// Restart policy fields; unset ones fall back to the env, then the daemon config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOverride {
    /// Restarts allowed within `window` before giving up.
    pub attempts: Option<u32>,
    /// The window restarts are counted in.
    #[serde(with = "opt_duration")]
    pub window: Option<Duration>,
    /// First delay before a restart.
    #[serde(with = "opt_duration")]
    pub backoff: Option<Duration>,
    /// Largest delay before a restart.
    #[serde(with = "opt_duration")]
    pub max_backoff: Option<Duration>,
}

/// A fully resolved restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before giving up.
    pub attempts: u32,
    /// The window restarts are counted in.
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    /// First delay before a restart.
    #[serde(with = "humantime_serde_compat")]
    pub backoff: Duration,
    /// Largest delay before a restart.
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            window: Duration::from_secs(3600),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RestartPolicy {
    /// This policy with the fields an override sets replaced.
    pub fn with(self, o: &RestartOverride) -> Self {
        Self {
            attempts: o.attempts.unwrap_or(self.attempts),
            window: o.window.unwrap_or(self.window),
            backoff: o.backoff.unwrap_or(self.backoff),
            max_backoff: o.max_backoff.unwrap_or(self.max_backoff),
        }
    }
}

/// Serde for `Option<Duration>` as a humantime string (`"90s"`).
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as null and a duration as `"1m 30s"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for `Duration` as a humantime string.
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as `"1m 30s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = String::deserialize(d)?;
        humantime::parse_duration(&v).map_err(serde::de::Error::custom)
    }
}

/// What validation may check beyond the file itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// With a daemon config: `env` must exist, `${var:..}` is replaced from the env's vars
    /// (an unknown name is an error), `alerts` must name channels, params are checked against
    /// the env's engine.
    pub settings: Option<&'a Settings>,
}

/// The job name for a file path relative to `repo.path` (`team-a/clicks.yaml` → `team-a/clicks`),
/// or `None` when the path is not a job file (not `.yaml`/`.yml`).
pub fn job_name_of(rel_path: &str) -> Option<&str> {
    rel_path
        .strip_suffix(".yaml")
        .or_else(|| rel_path.strip_suffix(".yml"))
}

/// The fields a job file may have.
pub const JOB_FIELDS: &[&str] = &[
    "project", "env", "params", "schedule", "overlap", "timeout", "restart", "upgrade", "alerts",
    "suspend",
];
/// The fields of `project`.
pub const PROJECT_FIELDS: &[&str] = &["repo", "branch", "dir", "build", "artifact", "follow"];
/// The fields of `params`.
pub const PARAMS_FIELDS: &[&str] = &[
    "main_class",
    "args",
    "parallelism",
    "conf",
    "command",
    "environment",
    "workdir",
];
/// The fields of `restart` (in a job file, an env, or the daemon config).
pub const RESTART_FIELDS: &[&str] = &["attempts", "window", "backoff", "max_backoff"];

impl JobSpec {
    /// A job with a `schedule` is a batch job; one without is a service job.
    pub fn is_batch(&self) -> bool {
        self.schedule.is_some()
    }
}

impl Overlap {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Forbid => "forbid",
            Overlap::Replace => "replace",
            Overlap::Allow => "allow",
        }
    }
}

impl Upgrade {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Upgrade::Savepoint => "savepoint",
            Upgrade::Stateless => "stateless",
        }
    }
}

/// Parses and validates one job file.
///
/// `path` is the file as the operator knows it (used in diagnostics). Every problem of the file
/// is reported, in file order. See [`Context`] for what a daemon config adds.
pub fn parse_job(path: &str, bytes: &[u8], ctx: Context) -> Result<JobSpec, Vec<Diagnostic>> {
    if bytes.len() > MAX_JOB_FILE_BYTES {
        return Err(vec![Diagnostic::file(
            path,
            format!(
                "file is {} bytes; a job file may be at most {MAX_JOB_FILE_BYTES} bytes (1 MiB)",
                bytes.len()
            ),
        )]);
    }
    let src = utf8(path, bytes)?;
    let root = yaml::parse(path, src)?;
    let mut c = Checker::new(path);
    let spec = read_job(&mut c, &root, ctx);
    let diags = c.finish();
    if diags.is_empty() {
        Ok(spec)
    } else {
        Err(diags)
    }
}

/// The text of a file, or a diagnostic at the first byte that is not UTF-8.
pub(crate) fn utf8<'a>(path: &str, bytes: &'a [u8]) -> Result<&'a str, Vec<Diagnostic>> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let good = std::str::from_utf8(good).unwrap_or_default();
        let (line, column) = crate::diag::end_of(good);
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        vec![Diagnostic::new(
            path,
            line,
            column,
            format!("invalid UTF-8 (byte 0x{byte:02x}); the file must be UTF-8 text"),
        )]
    })
}

/// How strings of params and project are expanded.
struct Expand<'a> {
    /// The env's vars, when a daemon config was given and the env exists.
    vars: Option<&'a BTreeMap<String, String>>,
    /// The env's name, for messages.
    env: &'a str,
}

impl Expand<'_> {
    /// Replaces `${var:NAME}` (when vars are known) and checks every `${...}` of `text`.
    fn apply(&self, c: &mut Checker, node: &Node, text: String) -> String {
        match expand(&text, self.vars, self.env) {
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
fn expand(
    text: &str,
    vars: Option<&BTreeMap<String, String>>,
    env: &str,
) -> Result<String, Vec<String>> {
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

/// Reads the whole job; problems go to `c`, fields with problems keep their defaults.
fn read_job(c: &mut Checker, root: &Node, ctx: Context) -> JobSpec {
    let mut spec = JobSpec {
        project: None,
        env: String::new(),
        params: Params::default(),
        schedule: None,
        overlap: Overlap::default(),
        timeout: None,
        restart: RestartOverride::default(),
        upgrade: Upgrade::default(),
        alerts: None,
        suspend: false,
    };
    let Some(f) = c.mapping(root, "", JOB_FIELDS) else {
        return spec;
    };

    // env first: it decides which vars apply.
    let mut env_settings = None;
    match f.get("env") {
        None => c.missing(
            &f,
            "env",
            "the env of the daemon config to run in, e.g. `env: prod`",
        ),
        Some(n) => {
            if let Some(env) = c.string(n, "env") {
                if let Some(s) = ctx.settings {
                    match s.envs.get(&env) {
                        Some(e) => env_settings = Some(e),
                        None => {
                            let known: Vec<&str> = s.envs.keys().map(String::as_str).collect();
                            c.error(
                                n,
                                format!(
                                    "unknown env `{env}`; known envs: {}",
                                    if known.is_empty() {
                                        "(none)".to_string()
                                    } else {
                                        known.join(", ")
                                    }
                                ),
                            );
                        }
                    }
                }
                spec.env = env;
            }
        }
    }
    let ex = Expand {
        vars: env_settings.map(|e| &e.vars),
        env: &spec.env,
    };

    if let Some(n) = f.get("project") {
        spec.project = read_project(c, n, &ex);
    }
    if let Some(n) = f.get("params") {
        spec.params = read_params(c, n, &ex);
    }
    if let Some(n) = f.get("schedule")
        && let Some(s) = c.string(n, "schedule")
    {
        match Schedule::parse(&s) {
            Ok(_) => spec.schedule = Some(s),
            Err(e) => c.error(n, format!("`schedule`: invalid cron `{s}`: {e}")),
        }
    }
    if let Some(n) = f.get("overlap")
        && let Some(v) = one_of(c, n, "overlap", &["forbid", "replace", "allow"])
    {
        spec.overlap = match v {
            "replace" => Overlap::Replace,
            "allow" => Overlap::Allow,
            _ => Overlap::Forbid,
        };
    }
    if let Some(n) = f.get("upgrade")
        && let Some(v) = one_of(c, n, "upgrade", &["savepoint", "stateless"])
    {
        spec.upgrade = match v {
            "stateless" => Upgrade::Stateless,
            _ => Upgrade::Savepoint,
        };
    }
    if let Some(n) = f.get("timeout") {
        spec.timeout = c.duration(n, "timeout");
        if spec.timeout == Some(Duration::ZERO) {
            c.error(n, "`timeout`: must be longer than zero");
        }
    }
    if let Some(n) = f.get("restart") {
        spec.restart = read_restart(c, n, "restart");
    }
    if let Some(n) = f.get("alerts") {
        spec.alerts = read_alerts(c, n, ctx.settings);
    }
    if let Some(n) = f.get("suspend") {
        spec.suspend = c.boolean(n, "suspend").unwrap_or(false);
    }

    if let Some(e) = env_settings
        && e.engine == EngineKind::Local
        && spec.params.command.is_empty()
    {
        let at = f.get("params").unwrap_or(root);
        c.error(
            at,
            format!(
                "env `{}` runs on the local engine, which needs `params.command` (the argv to run, e.g. `command: [\"./run.sh\"]`)",
                spec.env
            ),
        );
    }
    spec
}

/// A string that must be one of `allowed`.
fn one_of<'a>(c: &mut Checker, n: &Node, name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let v = c.string(n, name)?;
    match allowed.iter().find(|a| **a == v) {
        Some(a) => Some(a),
        None => {
            c.error(
                n,
                format!(
                    "`{name}`: unknown value `{v}`; expected one of: {}",
                    allowed.join(", ")
                ),
            );
            None
        }
    }
}

/// The `alerts` list; with a daemon config, every name must be a channel.
fn read_alerts(c: &mut Checker, n: &Node, settings: Option<&Settings>) -> Option<Vec<String>> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`alerts`: expected a list of channel names, found {}",
                n.kind_name()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = c.string(item, &format!("alerts[{i}]")) else {
            continue;
        };
        if let Some(s) = settings
            && !s.alerts.contains_key(&name)
        {
            let known: Vec<&str> = s.alerts.keys().map(String::as_str).collect();
            c.error(
                item,
                format!(
                    "unknown alert channel `{name}`; known channels: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        out.push(name);
    }
    Some(out)
}

/// A `restart` mapping (shared with the daemon config).
pub(crate) fn read_restart(c: &mut Checker, n: &Node, name: &str) -> RestartOverride {
    let mut r = RestartOverride::default();
    let Some(f) = c.mapping(n, name, RESTART_FIELDS) else {
        return r;
    };
    if let Some(v) = f.get("attempts") {
        r.attempts = c
            .integer(v, &format!("{name}.attempts"), 0, i64::from(u32::MAX))
            .and_then(|i| u32::try_from(i).ok());
    }
    for (key, slot) in [
        ("window", &mut r.window),
        ("backoff", &mut r.backoff),
        ("max_backoff", &mut r.max_backoff),
    ] {
        if let Some(v) = f.get(key) {
            *slot = c.duration(v, &format!("{name}.{key}"));
        }
    }
    if let (Some(b), Some(m)) = (r.backoff, r.max_backoff)
        && b > m
        && let Some(v) = f.get("max_backoff")
    {
        c.error(
            v,
            format!("`{name}.max_backoff`: must not be shorter than `{name}.backoff`"),
        );
    }
    r
}

/// A string field that may hold placeholders.
fn expanded_string(c: &mut Checker, n: &Node, name: &str, ex: &Expand<'_>) -> Option<String> {
    let s = c.string(n, name)?;
    Some(ex.apply(c, n, s))
}

fn read_project(c: &mut Checker, n: &Node, ex: &Expand<'_>) -> Option<Project> {
    let f = c.mapping(n, "project", PROJECT_FIELDS)?;
    let repo = match f.get("repo") {
        Some(v) => expanded_string(c, v, "project.repo", ex),
        None => {
            c.missing(&f, "repo", "a git URL or a path to a local git repo");
            None
        }
    };
    if repo.as_deref() == Some("")
        && let Some(v) = f.get("repo")
    {
        c.error(v, "`project.repo`: must not be empty");
    }
    let branch = f
        .get("branch")
        .and_then(|v| expanded_string(c, v, "project.branch", ex))
        .unwrap_or_else(|| "main".to_string());
    let dir = match f.get("dir") {
        Some(v) => {
            let d = expanded_string(c, v, "project.dir", ex).unwrap_or_default();
            if d.starts_with('/') {
                c.error(
                    v,
                    format!("`project.dir`: `{d}` is absolute; expected a folder inside the repo"),
                );
            } else if d.split(['/', '\\']).any(|seg| seg == "..") {
                c.error(
                    v,
                    format!(
                        "`project.dir`: `{d}` contains `..`; expected a folder inside the repo"
                    ),
                );
            }
            d.trim_end_matches('/').to_string()
        }
        None => String::new(),
    };
    let build = f
        .get("build")
        .and_then(|v| expanded_string(c, v, "project.build", ex));
    let artifact = f.get("artifact").and_then(|v| {
        let a = expanded_string(c, v, "project.artifact", ex)?;
        // The artifact is found in the build folder; it may not name a file outside it.
        if a.starts_with('/') {
            c.error(
                v,
                format!(
                    "`project.artifact`: `{a}` is absolute; expected a glob inside `project.dir`"
                ),
            );
        } else if a.split(['/', '\\']).any(|seg| seg == "..") {
            c.error(
                v,
                format!(
                    "`project.artifact`: `{a}` contains `..`; expected a glob inside `project.dir`"
                ),
            );
        }
        Some(a)
    });
    let follow = f
        .get("follow")
        .and_then(|v| c.boolean(v, "project.follow"))
        .unwrap_or(false);
    Some(Project {
        repo: repo?,
        branch,
        dir,
        build,
        artifact,
        follow,
    })
}

/// A list of strings/numbers/booleans as text, each expanded.
fn expanded_list(c: &mut Checker, n: &Node, name: &str, ex: &Expand<'_>) -> Vec<String> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!("`{name}`: expected a list, found {}", n.kind_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = c.text(item, &format!("{name}[{i}]")) {
            out.push(ex.apply(c, item, s));
        }
    }
    out
}

/// A mapping of names to strings/numbers/booleans as text, values expanded.
fn expanded_map(
    c: &mut Checker,
    n: &Node,
    name: &str,
    ex: &Expand<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in c.free_mapping(n, name) {
        let Some(key) = c.text(k, &format!("{name} key")) else {
            continue;
        };
        if let Some(val) = c.text(v, &format!("{name}.{key}")) {
            let val = ex.apply(c, v, val);
            out.insert(key, val);
        }
    }
    out
}

fn read_params(c: &mut Checker, n: &Node, ex: &Expand<'_>) -> Params {
    let mut p = Params::default();
    let Some(f) = c.mapping(n, "params", PARAMS_FIELDS) else {
        return p;
    };
    p.main_class = f
        .get("main_class")
        .and_then(|v| expanded_string(c, v, "params.main_class", ex));
    if let Some(v) = f.get("args") {
        p.args = expanded_list(c, v, "params.args", ex);
    }
    if let Some(v) = f.get("parallelism") {
        p.parallelism = c
            .integer(v, "params.parallelism", 1, i64::from(u32::MAX))
            .and_then(|i| u32::try_from(i).ok());
    }
    if let Some(v) = f.get("conf") {
        p.conf = expanded_map(c, v, "params.conf", ex);
    }
    if let Some(v) = f.get("command") {
        p.command = expanded_list(c, v, "params.command", ex);
        if p.command.first().is_some_and(|s| s.is_empty()) {
            c.error(
                v,
                "`params.command`: the program (first item) must not be empty",
            );
        }
    }
    if let Some(v) = f.get("environment") {
        p.environment = expanded_map(c, v, "params.environment", ex);
        for key in p.environment.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                c.error(
                    v,
                    format!("`params.environment`: invalid variable name `{key}`"),
                );
            }
        }
    }
    p.workdir = f
        .get("workdir")
        .and_then(|v| expanded_string(c, v, "params.workdir", ex));
    p
}

/// What job names may look like, for messages.
const NAME_RULE: &str = "a job name is lowercase letters, digits, `.`, `_`, `-` and `/`, \
starts with a letter or digit, has no empty or `..` segment and is at most 128 characters";

/// Checks a job name (`team-a/clicks`) against the naming rules of the contract:
/// `[a-z0-9][a-z0-9._/-]*`, no `..` or empty segment, at most 128 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("empty job name; {NAME_RULE}"));
    }
    let len = name.chars().count();
    if len > 128 {
        return Err(format!("job name is {len} characters long; {NAME_RULE}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-'))
    {
        return Err(format!("job name `{name}` contains `{bad}`; {NAME_RULE}"));
    }
    if !name.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return Err(format!(
            "job name `{name}` must start with a letter or digit; {NAME_RULE}"
        ));
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(format!(
                "job name `{name}` has an empty segment; {NAME_RULE}"
            ));
        }
        if seg == ".." || seg == "." {
            return Err(format!(
                "job name `{name}` has a `{seg}` segment; {NAME_RULE}"
            ));
        }
    }
    Ok(())
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

/// Like [`resolve_secrets`], also returning the secret values, so whatever the run later
/// prints can be masked with [`mask_secrets`].
pub fn resolve_secrets_with_values(
    params: &Params,
    secrets_dir: Option<&Path>,
) -> Result<(Params, Vec<String>), SecretError> {
    let names = secret_names(params);
    if names.is_empty() {
        return Ok((params.clone(), Vec::new()));
    }
    let mut values = Vec::with_capacity(names.len());
    for name in names {
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
        values.push((format!("${{secret:{name}}}"), text));
    }
    let resolved = map_param_strings(params, |s| {
        let mut out = s.to_string();
        for (placeholder, value) in &values {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    });
    Ok((resolved, values.into_iter().map(|(_, v)| v).collect()))
}

/// `text` with every occurrence of each (non-empty) secret value replaced by `***`.
pub fn mask_secrets(text: &str, values: &[String]) -> String {
    let mut sorted: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
    // Longest first, so a value containing another is masked whole.
    sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in sorted {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// The JSON Schema (draft 2020-12) of a job file, for editors and CI (`jobkeeper schema`).
pub fn json_schema() -> serde_json::Value {
    let duration = serde_json::json!({
        "type": "string",
        "pattern": "^\\s*([0-9]+\\s*[a-zA-Zµ]+\\s*)+$",
        "description": "A duration such as `90s`, `5m`, `2h` or `1h 30m`."
    });
    let text = serde_json::json!({"type": ["string", "number", "boolean"]});
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://jobkeeper.dev/schema/job.json",
        "title": "jobkeeper job file",
        "description": "One job: its project, env and params. The job's name is the file's path below `repo.path` without the extension.",
        "type": "object",
        "additionalProperties": false,
        "required": ["env"],
        "properties": {
            "project": {
                "description": "The git repo and branch (and folder) holding the job's code; optional: a job may run a command with no project.",
                "type": "object",
                "additionalProperties": false,
                "required": ["repo"],
                "properties": {
                    "repo": {"type": "string", "minLength": 1, "description": "URL, or a path to a local git repo."},
                    "branch": {"type": "string", "default": "main", "description": "Branch, tag or full commit id."},
                    "dir": {"type": "string", "default": "", "description": "Folder inside the repo (default: the root); not absolute, no `..`."},
                    "build": {"type": "string", "description": "Shell command run in that folder (default: none)."},
                    "artifact": {"type": "string", "description": "Glob in that folder; must match exactly one file."},
                    "follow": {"type": "boolean", "default": false, "description": "true: a new commit on the branch rebuilds and redeploys."}
                }
            },
            "env": {"type": "string", "minLength": 1, "description": "Required: an env of the daemon config."},
            "params": {
                "description": "Engine parameters, checked by the engine. Strings may use `${var:NAME}` (from the env's vars) and `${secret:NAME}` (read from `secrets_dir/NAME` at submit time).",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "main_class": {"type": "string", "description": "flink/spark: the entry class."},
                    "args": {"type": "array", "items": text, "description": "flink/spark: program arguments."},
                    "parallelism": {"type": "integer", "minimum": 1, "description": "flink: parallelism."},
                    "conf": {"type": "object", "additionalProperties": text, "description": "flink/spark: configuration properties."},
                    "command": {"type": "array", "items": text, "minItems": 1, "description": "local: the argv to run (never a shell); `{artifact}` is replaced by the artifact's path."},
                    "environment": {"type": "object", "additionalProperties": text, "description": "local: environment variables of the child; spark: of the driver."},
                    "workdir": {"type": "string", "description": "local: working directory."}
                }
            },
            "schedule": {"type": "string", "description": "Optional cron: crontab's five fields, or six with a leading seconds field; weekday 0 or 7 is Sunday; names (MON, JAN) and @daily-style macros work. Present = batch job."},
            "overlap": {"enum": ["forbid", "replace", "allow"], "default": "forbid", "description": "Batch: forbid (skip while a run is live) | replace | allow."},
            "timeout": {"allOf": [duration], "description": "Batch: a run taking longer is stopped and counts as failed."},
            "restart": {
                "description": "Restart policy; unset fields come from the env, then the daemon config.",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "attempts": {"type": "integer", "minimum": 0, "description": "Restarts allowed within `window` before giving up."},
                    "window": {"allOf": [duration], "description": "The window restarts are counted in."},
                    "backoff": {"allOf": [duration], "description": "First delay before a restart (doubling)."},
                    "max_backoff": {"allOf": [duration], "description": "Largest delay before a restart."}
                }
            },
            "upgrade": {"enum": ["savepoint", "stateless"], "default": "savepoint", "description": "Flink: savepoint (stop with a savepoint, resubmit from it) | stateless."},
            "alerts": {"type": "array", "items": {"type": "string"}, "description": "Alert channels (default: the env's)."},
            "suspend": {"type": "boolean", "default": false, "description": "true: stop the job but keep its file and history."}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::render;

    const P: &str = "jobs/a.yaml";

    fn settings() -> Settings {
        let cfg = r#"
repo: {url: "https://git.example.com/ops/jobs.git"}
state_dir: /var/lib/jobkeeper
timezone: UTC
envs:
  dev: {engine: local}
  prod:
    engine: flink
    flink: {url: "http://flink:8081"}
    vars: {KAFKA: "kafka-prod:9092", PORT: 9092}
alerts:
  oncall: {webhook: {url: "https://chat.example.com/hook", format: slack}}
"#;
        crate::settings::parse("config.yaml", cfg.as_bytes(), Path::new("/etc/jobkeeper"))
            .expect("test config is valid")
    }

    fn errors(src: &str) -> String {
        render(&parse_job(P, src.as_bytes(), Context::default()).expect_err("should fail"))
    }

    fn errors_with(src: &str) -> String {
        let s = settings();
        render(
            &parse_job(P, src.as_bytes(), Context { settings: Some(&s) }).expect_err("should fail"),
        )
    }

    fn ok(src: &str) -> JobSpec {
        match parse_job(P, src.as_bytes(), Context::default()) {
            Ok(s) => s,
            Err(d) => panic!("{}", render(&d)),
        }
    }

    /// Found by fuzzing (`fuzz/`, target `job_file`): invalid UTF-8 after a lone `\r` (a line
    /// break to YAML) was reported on the line before it, at a column past that line's end.
    #[test]
    fn invalid_utf8_after_a_carriage_return_is_on_the_next_line() {
        let d = utf8("f.yaml", b"env: dev\r\xe0").expect_err("not UTF-8");
        assert_eq!((d[0].line, d[0].column), (2, 1));
        let d = utf8("f.yaml", b"a\r\nb: \xff").expect_err("not UTF-8");
        assert_eq!((d[0].line, d[0].column), (2, 4));
    }

    #[test]
    fn full_example() {
        let spec = ok(r#"
project:
  repo: https://git.example.com/data/clicks.git
  dir: jobs/clicks
  build: mvn -B -q package -DskipTests
  artifact: target/clicks-*.jar
  follow: true
env: prod
params:
  main_class: com.example.Clicks
  args: ["--topic", "clicks", "--brokers", "${var:KAFKA}", "--n", 5, "--password", "${secret:kafka_pw}"]
  parallelism: 4
  conf: {taskmanager.numberOfTaskSlots: "2", a.b: 3, c: true}
schedule: "30 2 * * *"
overlap: replace
timeout: 2h
restart: {attempts: 5, window: 1h, backoff: 10s, max_backoff: 5m}
upgrade: stateless
alerts: [oncall, team-chat]
suspend: false
"#);
        let p = spec.project.as_ref().expect("project");
        assert_eq!(p.branch, "main");
        assert_eq!(p.dir, "jobs/clicks");
        assert!(p.follow);
        assert_eq!(spec.env, "prod");
        assert_eq!(spec.params.args[3], "${var:KAFKA}");
        assert_eq!(spec.params.args[5], "5");
        assert_eq!(spec.params.conf["a.b"], "3");
        assert_eq!(spec.params.conf["c"], "true");
        assert_eq!(spec.params.parallelism, Some(4));
        assert!(spec.is_batch());
        assert_eq!(spec.overlap, Overlap::Replace);
        assert_eq!(spec.upgrade, Upgrade::Stateless);
        assert_eq!(spec.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(spec.restart.attempts, Some(5));
        assert_eq!(spec.restart.max_backoff, Some(Duration::from_secs(300)));
        assert_eq!(
            spec.alerts.as_deref(),
            Some(&["oncall".to_string(), "team-chat".to_string()][..])
        );
        assert_eq!(secret_names(&spec.params), vec!["kafka_pw".to_string()]);
    }

    #[test]
    fn minimal_service_job_defaults() {
        let spec = ok("env: dev\nparams: {command: [sleep, 100]}\n");
        assert!(!spec.is_batch());
        assert_eq!(spec.project, None);
        assert_eq!(spec.overlap, Overlap::Forbid);
        assert_eq!(spec.upgrade, Upgrade::Savepoint);
        assert_eq!(spec.params.command, vec!["sleep", "100"]);
        let p = ok("env: dev\nproject: {repo: ./code}\n")
            .project
            .expect("project");
        assert_eq!(
            (p.branch.as_str(), p.dir.as_str(), p.follow),
            ("main", "", false)
        );
    }

    #[test]
    fn unknown_field_with_hint() {
        assert_eq!(
            errors("params: {command: [x]}\nenviroment: prod\n"),
            "jobs/a.yaml:2:1: unknown field `enviroment`, did you mean `env`?\n"
        );
        assert_eq!(
            errors("env: dev\nparams:\n  paralelism: 2\n  bogus: 1\n"),
            "jobs/a.yaml:3:3: unknown field `paralelism` in `params`, did you mean `parallelism`?\n\
             jobs/a.yaml:4:3: unknown field `bogus` in `params`; expected one of: main_class, args, parallelism, conf, command, environment, workdir\n"
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            errors("env: [prod]\n"),
            "jobs/a.yaml:1:6: `env`: expected a string, found a list\n"
        );
        assert_eq!(
            errors("env: dev\nsuspend: yes\nparams: {parallelism: two, args: [a, {b: c}]}\n"),
            "jobs/a.yaml:2:10: `suspend`: expected `true` or `false`, found a string\n\
             jobs/a.yaml:3:23: `params.parallelism`: expected a whole number, found a string\n\
             jobs/a.yaml:3:38: `params.args[1]`: expected a string, number or boolean, found a mapping\n"
        );
    }

    #[test]
    fn bad_duration() {
        assert_eq!(
            errors("env: dev\ntimeout: 5 minutes please\nrestart: {backoff: 10}\n"),
            "jobs/a.yaml:2:10: `timeout`: invalid duration `5 minutes please` (expected number at 10); expected a duration like `90s`, `5m` or `2h`\n\
             jobs/a.yaml:3:20: `restart.backoff`: expected a duration like `90s`, `5m` or `2h`, found a number\n"
        );
    }

    #[test]
    fn bad_cron() {
        assert_eq!(
            errors("env: dev\nschedule: \"61 2 * * *\"\n"),
            "jobs/a.yaml:2:11: `schedule`: invalid cron `61 2 * * *`: minute `61` out of range in `61`; expected 0-59\n"
        );
    }

    #[test]
    fn bad_enums() {
        assert_eq!(
            errors("env: dev\noverlap: skip\nupgrade: savepoints\n"),
            "jobs/a.yaml:2:10: `overlap`: unknown value `skip`; expected one of: forbid, replace, allow\n\
             jobs/a.yaml:3:10: `upgrade`: unknown value `savepoints`; expected one of: savepoint, stateless\n"
        );
    }

    #[test]
    fn duplicate_key() {
        assert_eq!(
            errors("env: dev\nparams: {}\nenv: prod\n"),
            "jobs/a.yaml:3:1: duplicate key `env` (first defined at line 1, column 1)\n"
        );
    }

    #[test]
    fn project_rules() {
        assert_eq!(
            errors("env: dev\nproject: {branch: dev}\n"),
            "jobs/a.yaml:2:10: missing required field `repo` (a git URL or a path to a local git repo)\n"
        );
        assert_eq!(
            errors("env: dev\nproject: {repo: x, dir: /abs}\n"),
            "jobs/a.yaml:2:25: `project.dir`: `/abs` is absolute; expected a folder inside the repo\n"
        );
        assert_eq!(
            errors("env: dev\nproject: {repo: x, dir: a/../../b}\n"),
            "jobs/a.yaml:2:25: `project.dir`: `a/../../b` contains `..`; expected a folder inside the repo\n"
        );
    }

    #[test]
    fn missing_env() {
        assert_eq!(
            errors("params: {}\n"),
            "jobs/a.yaml:1:1: missing required field `env` (the env of the daemon config to run in, e.g. `env: prod`)\n"
        );
    }

    #[test]
    fn unknown_env_with_settings() {
        assert_eq!(
            errors_with("env: staging\n"),
            "jobs/a.yaml:1:6: unknown env `staging`; known envs: dev, prod\n"
        );
    }

    #[test]
    fn unknown_alert_channel_with_settings() {
        assert_eq!(
            errors_with("env: prod\nalerts: [oncall, pager]\n"),
            "jobs/a.yaml:2:18: unknown alert channel `pager`; known channels: oncall\n"
        );
    }

    #[test]
    fn local_env_needs_command() {
        assert_eq!(
            errors_with("env: dev\nparams: {workdir: /tmp}\n"),
            "jobs/a.yaml:2:9: env `dev` runs on the local engine, which needs `params.command` (the argv to run, e.g. `command: [\"./run.sh\"]`)\n"
        );
    }

    #[test]
    fn vars_replaced_with_settings() {
        let s = settings();
        let ctx = Context { settings: Some(&s) };
        let src = "env: prod\nproject: {repo: \"https://x/${var:KAFKA}.git\"}\nparams: {args: [\"--b=${var:KAFKA}\", \"${var:PORT}\", \"${secret:pw}\"], conf: {k: \"${var:PORT}\"}}\n";
        let spec = parse_job(P, src.as_bytes(), ctx).expect("valid");
        assert_eq!(
            spec.params.args,
            vec!["--b=kafka-prod:9092", "9092", "${secret:pw}"]
        );
        assert_eq!(spec.params.conf["k"], "9092");
        assert_eq!(
            spec.project.map(|p| p.repo).as_deref(),
            Some("https://x/kafka-prod:9092.git")
        );
        // Without settings, vars stay as written.
        let spec = ok(src);
        assert_eq!(spec.params.args[0], "--b=${var:KAFKA}");
    }

    #[test]
    fn unknown_var() {
        assert_eq!(
            errors_with("env: prod\nparams:\n  args: [\"--x\", \"${var:KAFKA_URL}\"]\n"),
            "jobs/a.yaml:3:17: unknown var `KAFKA_URL` in `${var:KAFKA_URL}`; known vars of env `prod`: KAFKA, PORT\n"
        );
    }

    #[test]
    fn placeholder_forms() {
        assert_eq!(
            errors(
                "env: dev\nparams:\n  command: [\"${env:HOME}\", \"${secret:a/b}\", \"${oops\"]\n"
            ),
            "jobs/a.yaml:3:13: unknown placeholder `${env:HOME}`; expected `${var:NAME}` or `${secret:NAME}`\n\
             jobs/a.yaml:3:28: invalid secret name `a/b` in `${secret:a/b}`; expected letters, digits, `_`, `.` or `-`\n\
             jobs/a.yaml:3:45: unclosed `${` in `${oops`; expected `${var:NAME}` or `${secret:NAME}`\n"
        );
    }

    #[test]
    fn oversize_file() {
        let big = vec![b'#'; MAX_JOB_FILE_BYTES + 1];
        assert_eq!(
            render(&parse_job(P, &big, Context::default()).expect_err("too big")),
            "jobs/a.yaml:1:1: file is 1048577 bytes; a job file may be at most 1048576 bytes (1 MiB)\n"
        );
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            render(
                &parse_job(
                    P,
                    b"env: dev\nparams: {workdir: \"ab\xff\"}\n",
                    Context::default()
                )
                .expect_err("bad")
            ),
            "jobs/a.yaml:2:22: invalid UTF-8 (byte 0xff); the file must be UTF-8 text\n"
        );
    }

    #[test]
    fn empty_file() {
        assert_eq!(
            errors(""),
            "jobs/a.yaml:1:1: the file is empty; expected a YAML mapping of fields\n"
        );
        assert_eq!(
            errors("- a\n"),
            "jobs/a.yaml:1:1: expected a mapping of fields at the top level, found a list\n"
        );
    }

    #[test]
    fn several_errors_in_file_order() {
        let src = "\
project:
  repo: [x]
  folow: true
env: staging
params:
  args: \"--x\"
schedule: \"* * * *\"
timeout: soon
alerts: [pager]
";
        assert_eq!(
            errors_with(src),
            "jobs/a.yaml:2:9: `project.repo`: expected a string, found a list\n\
             jobs/a.yaml:3:3: unknown field `folow` in `project`, did you mean `follow`?\n\
             jobs/a.yaml:4:6: unknown env `staging`; known envs: dev, prod\n\
             jobs/a.yaml:6:9: `params.args`: expected a list, found a string\n\
             jobs/a.yaml:7:11: `schedule`: invalid cron `* * * *`: expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found 4\n\
             jobs/a.yaml:8:10: `timeout`: invalid duration `soon` (expected number at 0); expected a duration like `90s`, `5m` or `2h`\n\
             jobs/a.yaml:9:10: unknown alert channel `pager`; known channels: oncall\n"
        );
    }

    #[test]
    fn names() {
        assert_eq!(check_name("team-a/clicks"), Ok(()));
        assert_eq!(check_name("a.b_c-1/x2"), Ok(()));
        for bad in [
            "", "Team", "-a", "a//b", "a/../b", "a/", "/a", "a b", "a/./b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_name(&"a".repeat(128)).is_ok());
        let long = check_name(&"a".repeat(129)).expect_err("too long");
        assert!(long.contains("at most 128 characters"), "{long}");
        assert_eq!(
            check_name("Clicks"),
            Err("job name `Clicks` contains `C`; a job name is lowercase letters, digits, `.`, `_`, `-` and `/`, starts with a letter or digit, has no empty or `..` segment and is at most 128 characters".to_string())
        );
    }

    #[test]
    fn secrets_resolved_and_masked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kafka_pw"), "s3cr3t\n").expect("write");
        std::fs::write(dir.path().join("token"), "tok").expect("write");
        let params = Params {
            args: vec!["--password".into(), "${secret:kafka_pw}".into()],
            environment: [("T".to_string(), "x-${secret:token}-y".to_string())].into(),
            ..Params::default()
        };
        assert_eq!(secret_names(&params), vec!["kafka_pw", "token"]);
        let r = resolve_secrets(&params, Some(dir.path())).expect("resolved");
        assert_eq!(r.args[1], "s3cr3t");
        assert_eq!(r.environment["T"], "x-tok-y");
        assert_eq!(
            mask_secrets(
                "pw=s3cr3t t=tok",
                &["tok".into(), "s3cr3t".into(), String::new()]
            ),
            "pw=*** t=***"
        );

        let missing = Params {
            args: vec!["${secret:nope}".into()],
            ..Params::default()
        };
        let e = resolve_secrets(&missing, Some(dir.path())).expect_err("missing");
        assert!(
            e.to_string().starts_with("secret `nope`: cannot read "),
            "{e}"
        );
        let e = resolve_secrets(&missing, None).expect_err("no dir");
        assert_eq!(
            e.to_string(),
            "secret `nope` is used but no `secrets_dir` is configured"
        );
        // An error never carries a secret's value.
        let e = resolve_secrets(&params, None).expect_err("no dir");
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn schema_is_closed() {
        let s = json_schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"][0], "env");
        assert_eq!(s["properties"]["overlap"]["enum"][1], "replace");
        let props = s["properties"].as_object().expect("object");
        for f in JOB_FIELDS {
            assert!(props.contains_key(*f), "{f} missing from schema");
        }
        let params = s["properties"]["params"]["properties"]
            .as_object()
            .expect("object");
        for f in PARAMS_FIELDS {
            assert!(params.contains_key(*f), "{f} missing from schema");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"\xff\xfe\x00".to_vec(),
            (0u8..=255).collect(),
            b"env: dev\nparams: {conf: {[a]: b}}".to_vec(),
            b"env: &e dev\nparams: {args: [*e, *e]}\nalerts: *e".to_vec(),
            b"{env: {env: {env: null}}}".to_vec(),
            b"env: dev\nschedule: \"@\"\n".to_vec(),
            b"env: dev\nparams: {command: [\"${\", \"}${var:}\", \"${secret:}\"]}".to_vec(),
            b"!!str".to_vec(),
            b"? a\n".to_vec(),
            b"env: dev\nparams: {parallelism: 99999999999999999999999}".to_vec(),
            b"env: dev\nrestart: {attempts: -1}".to_vec(),
        ];
        inputs.push(format!("{}{}", "[".repeat(500), "]".repeat(500)).into_bytes());
        inputs.push("a: ".repeat(5000).into_bytes());
        for input in &inputs {
            let _ = parse_job(P, input, Context::default());
            let s = settings();
            let _ = parse_job(P, input, Context { settings: Some(&s) });
        }
    }
}
