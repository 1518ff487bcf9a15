//! Job files: the typed [`JobSpec`], its parsing from YAML and its validation.
//!
//! Parsing goes through [`crate::yaml`]'s located tree so that every problem names
//! `path:line:column`, and all problems of a file are reported at once.
//!
//! Strings of `params` and `project` may hold placeholders: `${var:NAME}` is replaced from the
//! env's `vars` when a daemon config is given ([`Context`], seen through [`DaemonConfig`] so this
//! module does not depend on the config's own types), and `${secret:NAME}` stays as
//! written until [`resolve_secrets`] reads it at submit time; any other `${...}` is an error.
//! This module also owns job names ([`check_name`]), secret masking ([`mask_secrets`]) and the
//! job file's JSON Schema ([`json_schema`]).

mod defaults;
mod guard;
mod placeholders;
mod read;
mod schema;
mod sql;
mod sql_read;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::defaults::{
    DEFAULTS_FILE, DefaultsFile, FREEZE_FILE, Folders, NOT_DEFAULTS, defaults_folder, is_below,
    is_defaults_path, is_folder_file, merge_under, merged, parse_defaults, with_origin,
};
pub use self::guard::{Drift, Guard, GuardOverride, RestartsLimit};
pub(crate) use self::guard::{guard_fields, read_guard_fields, read_health};
pub use self::placeholders::{
    MIN_PIECE_CHARS, SecretError, SecretValue, mask_secrets, read_secret, resolve_secrets,
    resolve_secrets_with_values, secret_names, values_of,
};
pub(crate) use self::read::read_restart;
pub use self::schema::json_schema;
pub use self::sql::{SqlError, Statement, StatementKind, split as split_sql};
pub use self::sql_read::{
    DiskFiles, FileReadError, RepoFiles, place_flink_error, resolve_sql_secrets, sibling_path,
    sql_field_place,
};
pub(crate) use self::state::read_savepoints;
pub use self::state::{
    DEFAULT_KEEP_AGE, DEFAULT_KEEP_COUNT, RESTORE_SCHEMES, SavepointPolicy, SavepointSchedule,
    SavepointsOverride, check_restore,
};
use crate::diag::Diagnostic;
use crate::yaml::{self, Checker};

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
    /// flink: the job's SQL (`sql` or `sql_file`), run by the SQL runner instead of a main class.
    #[serde(default)]
    pub sql: Option<Sql>,
    /// `health`, `rollback`, `ready_within` and `drift` as the file sets them (the rest come
    /// from the env, then the daemon). Not serialized when empty, so older specs keep their hash.
    #[serde(default, skip_serializing_if = "GuardOverride::is_empty")]
    pub guard: GuardOverride,
    /// flink/spark: on the job's first apply, the job already running on the env's cluster to
    /// take over instead of submitting (a Flink job id or name, a Spark driver id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
    /// flink: periodic savepoints and how many are kept, as the file sets them (the rest come
    /// from the env, then the daemon). Not serialized when empty.
    #[serde(default, skip_serializing_if = "SavepointsOverride::is_empty")]
    pub savepoints: SavepointsOverride,
    /// flink: the savepoint or checkpoint a commit that sets or changes this starts the job
    /// from, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// flink `upgrade: last-state`: a checkpoint older than this is not started from (a
    /// savepoint is taken instead); `None`: [`DEFAULT_MAX_CHECKPOINT_AGE`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_checkpoint_age: Option<Duration>,
}

/// The default `max_checkpoint_age` of `upgrade: last-state`.
pub const DEFAULT_MAX_CHECKPOINT_AGE: Duration = Duration::from_secs(600);

/// The SQL of a SQL job, read and split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sql {
    /// `sql_file` as written; `None` for inline `sql`.
    pub file: Option<String>,
    /// The file the statements are in (the job file, or the `.sql` file), as the operator knows it.
    pub path: String,
    /// The whole text, `${var:..}` replaced (`${secret:..}` kept).
    pub text: String,
    /// The statements, `${var:..}` replaced; their lines and columns are places in `path`.
    pub statements: Vec<Statement>,
    /// Columns before the SQL text on its lines in `path`. Read as 0: an inline block's
    /// indentation is derived from its statements' places when Flink's error is placed, and the
    /// field stays so that the hash of a stored spec does not change.
    #[serde(default)]
    pub indent: usize,
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
    /// Cancel keeping the retained checkpoints and start from the latest completed one; a
    /// savepoint when none is younger than `max_checkpoint_age`.
    #[serde(rename = "last-state")]
    LastState,
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
    pub settings: Option<&'a dyn DaemonConfig>,
    /// Reads the files a job file names (`sql_file`), at the same commit; without it, a
    /// `sql_file` is not read.
    pub files: Option<&'a dyn RepoFiles>,
}

/// What a job file is checked against of an env's engine (the engine says, see
/// [`crate::engine::EngineKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineFacts {
    /// Its name (`local`, `flink`, `spark`), for messages.
    pub name: &'static str,
    /// It runs jobs on a cluster, where `adopt` can take one over.
    pub runs_on_cluster: bool,
    /// It runs SQL jobs (`sql`, `sql_file`); its jobs have one of those or `params.main_class`.
    pub runs_sql: bool,
    /// Its jobs have state that savepoints and checkpoints keep (`restore` can name one).
    pub keeps_state: bool,
}

/// What an env's engine finds wrong with a job's params.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The local engine runs `params.command`, and there is none.
    #[error(
        "env `{env}` runs on the local engine, which needs `params.command` (the argv to run, \
         e.g. `command: [\"./run.sh\"]`)"
    )]
    NoCommand {
        /// The job's env.
        env: String,
    },
}

/// The parts of the daemon config a job file is checked against
/// ([`crate::settings::Settings`] is one).
pub trait DaemonConfig: std::fmt::Debug {
    /// The vars of env `env`, or `None` when there is no such env.
    fn env_vars(&self, env: &str) -> Option<&BTreeMap<String, String>>;
    /// Every env's name, sorted.
    fn env_names(&self) -> Vec<&str>;
    /// Whether an alert channel is named `name`.
    fn has_channel(&self, name: &str) -> bool;
    /// Every alert channel's name, sorted.
    fn channel_names(&self) -> Vec<&str>;
    /// What a job file is checked against of the engine of env `env`; `None` for no such env.
    fn engine(&self, env: &str) -> Option<EngineFacts>;
    /// What the engine of env `env` finds wrong with a job's params.
    fn check_params(&self, env: &str, params: &Params) -> Result<(), ParamsError>;
    /// Whether a `secrets_dir` is configured (`${secret:..}` needs one).
    fn has_secrets_dir(&self) -> bool;
    /// Whether env `env` is open to job `job` (its `folders` globs match the name; an env
    /// without `folders` is open to all).
    fn env_open_to(&self, env: &str, job: &str) -> bool {
        let _ = (env, job);
        true
    }
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
    "project",
    "env",
    "params",
    "schedule",
    "overlap",
    "timeout",
    "restart",
    "upgrade",
    "alerts",
    "suspend",
    "sql",
    "sql_file",
    "health",
    "rollback",
    "ready_within",
    "drift",
    "adopt",
    "savepoints",
    "restore",
    "max_checkpoint_age",
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
            Upgrade::LastState => "last-state",
        }
    }

    /// Whether upgrades and moves keep the job's state (a savepoint or a checkpoint).
    pub fn keeps_state(self) -> bool {
        self != Upgrade::Stateless
    }
}

/// Parses and validates one job file.
///
/// `path` is the file as the operator knows it (used in diagnostics). Every problem of the file
/// is reported, in file order. See [`Context`] for what a daemon config adds.
pub fn parse_job(path: &str, bytes: &[u8], ctx: Context) -> Result<JobSpec, Vec<Diagnostic>> {
    parse_job_in(path, None, bytes, &[], ctx)
}

/// Parses and validates job `job`'s file with its folders' defaults `layers` (outermost
/// first, see [`Folders::layers`]) merged under it. A problem in an inherited value is reported
/// at the defaults file's place, naming the job. With a job name and a daemon config, the
/// job's env must be open to it (`envs.NAME.folders`).
pub fn parse_job_in(
    path: &str,
    job: Option<&str>,
    bytes: &[u8],
    layers: &[std::sync::Arc<DefaultsFile>],
    ctx: Context,
) -> Result<JobSpec, Vec<Diagnostic>> {
    let JobText { path, src, root } = JobText::parse(path, bytes)?;
    let root = merged_root(root, layers);
    build_job(path, src, job, &root, layers, ctx)
}

/// A job file's text, checked (size, UTF-8, no TODO markers) and parsed once, so that it can be
/// merged with the defaults of more than one commit ([`JobText::merged`], [`JobText::spec`])
/// with the same results as [`parse_job_in`].
#[derive(Debug, Clone)]
pub struct JobText<'a> {
    path: &'a str,
    src: &'a str,
    root: yaml::Node,
}

impl<'a> JobText<'a> {
    /// Checks and parses the job file at `path`; its problems as [`parse_job_in`] reports them.
    pub fn parse(path: &'a str, bytes: &'a [u8]) -> Result<Self, Vec<Diagnostic>> {
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
        let todos = todo_markers(path, src);
        if !todos.is_empty() {
            return Err(todos);
        }
        let root = yaml::parse(path, src)?;
        Ok(Self { path, src, root })
    }

    /// The file's tree with `layers` (outermost first) merged under it.
    pub fn merged(&self, layers: &[std::sync::Arc<DefaultsFile>]) -> yaml::Node {
        merged_root(self.root.clone(), layers)
    }

    /// Job `job`'s spec from `root`, the file merged with `layers` ([`JobText::merged`]).
    pub fn spec(
        &self,
        job: Option<&str>,
        root: &yaml::Node,
        layers: &[std::sync::Arc<DefaultsFile>],
        ctx: Context,
    ) -> Result<JobSpec, Vec<Diagnostic>> {
        build_job(self.path, self.src, job, root, layers, ctx)
    }
}

/// A job file's tree `root` with `layers` merged under it (none: the tree itself).
fn merged_root(root: yaml::Node, layers: &[std::sync::Arc<DefaultsFile>]) -> yaml::Node {
    if layers.is_empty() {
        return root;
    }
    let root = if root.is_null() {
        yaml::Node {
            value: yaml::Value::Map(Vec::new()),
            ..root
        }
    } else {
        root
    };
    merged(layers, root)
}

/// Reads and validates a job from its merged tree `root` (`src`: the job file's text).
fn build_job(
    path: &str,
    src: &str,
    job: Option<&str>,
    root: &yaml::Node,
    layers: &[std::sync::Arc<DefaultsFile>],
    ctx: Context,
) -> Result<JobSpec, Vec<Diagnostic>> {
    let mut c = if layers.is_empty() {
        Checker::new(path)
    } else {
        let sources = layers.iter().map(|l| l.path.clone()).collect();
        Checker::with_sources(path, sources, job.unwrap_or(path))
    };
    let spec = read::read_job(&mut c, root, src, ctx);
    if let (Some(job), Some(settings)) = (job, ctx.settings)
        && settings.env_vars(&spec.env).is_some()
        && !settings.env_open_to(&spec.env, job)
        && let yaml::Value::Map(entries) = &root.value
        && let Some((_, env)) = entries
            .iter()
            .find(|(k, _)| k.scalar().is_some_and(|s| s.text == "env"))
    {
        c.error(
            env,
            format!(
                "env `{}` is not open to `{job}`: its `folders` in the daemon config do not \
                 match this job; run it in another env, or ask for the folder to be added",
                spec.env
            ),
        );
    }
    let diags = c.finish();
    if diags.is_empty() {
        Ok(spec)
    } else {
        Err(diags)
    }
}

/// Warnings (not errors) of a valid job file: each `${secret:..}` in `params.command`, whose
/// value every local user can read in `/proc/<pid>/cmdline` while the run lives. The message
/// starts with `warning:` and points to `params.environment`.
pub fn command_secret_warnings(path: &str, bytes: &[u8]) -> Vec<Diagnostic> {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    let Ok(root) = yaml::parse(path, src) else {
        return Vec::new();
    };
    let field = |n: &'_ yaml::Node, key: &str| -> Option<yaml::Node> {
        match &n.value {
            yaml::Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar().is_some_and(|s| s.text == key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    };
    let Some(command) = field(&root, "params").and_then(|p| field(&p, "command")) else {
        return Vec::new();
    };
    let yaml::Value::Seq(items) = &command.value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(text) = item.scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        for name in secret_names(&Params {
            command: vec![text.to_string()],
            ..Params::default()
        }) {
            out.push(Diagnostic::new(
                path,
                item.line,
                item.column,
                format!(
                    "warning: `${{secret:{name}}}` in `params.command[{i}]` is visible to every \
                     local user in /proc/<pid>/cmdline while the run lives; pass it in \
                     `params.environment` instead (`environment: {{SECRET: \"${{secret:{name}}}\"}}`, \
                     read as `$SECRET` by the program)"
                ),
            ));
        }
    }
    out
}

/// What starts a line `jobkeeper import` leaves for the operator to complete.
pub const TODO_MARKER: &str = "# TODO";

/// One diagnostic per `# TODO` comment line: a file `jobkeeper import` wrote and nobody
/// completed yet is never applied.
fn todo_markers(path: &str, src: &str) -> Vec<Diagnostic> {
    src.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let text = line.trim_start();
            if !text.starts_with(TODO_MARKER) {
                return None;
            }
            let column = line.len() - text.len() + 1;
            Some(Diagnostic::new(
                path,
                i + 1,
                column,
                format!(
                    "unfinished job file: `{}`; do what it says, then delete the line",
                    text.trim_end()
                ),
            ))
        })
        .collect()
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
/// What job names may look like, for messages.
const NAME_RULE: &str = "a job name is lowercase letters, digits, `.`, `_`, `-` and `/`, \
starts with a letter or digit, has no empty or `..` segment and is at most 128 characters";

/// Why a job name breaks the naming rules; each message ends with the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// An empty name.
    #[error("empty job name; {NAME_RULE}")]
    Empty,
    /// Over 128 characters (how many).
    #[error("job name is {0} characters long; {NAME_RULE}")]
    TooLong(usize),
    /// A character names may not hold.
    #[error("job name `{name}` contains `{bad}`; {NAME_RULE}")]
    Character {
        /// The name.
        name: String,
        /// The first such character.
        bad: char,
    },
    /// It starts with neither a letter nor a digit.
    #[error("job name `{0}` must start with a letter or digit; {NAME_RULE}")]
    Start(String),
    /// `a//b`, `a/`.
    #[error("job name `{0}` has an empty segment; {NAME_RULE}")]
    EmptySegment(String),
    /// `a/../b`, `a/./b`.
    #[error("job name `{name}` has a `{segment}` segment; {NAME_RULE}")]
    DotSegment {
        /// The name.
        name: String,
        /// `.` or `..`.
        segment: String,
    },
}

/// Checks a job name (`team-a/clicks`) against the naming rules of the contract:
/// `[a-z0-9][a-z0-9._/-]*`, no `..` or empty segment, at most 128 characters.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > 128 {
        return Err(NameError::TooLong(len));
    }
    if let Some(bad) = name
        .chars()
        .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-'))
    {
        return Err(NameError::Character {
            name: name.to_string(),
            bad,
        });
    }
    if !name.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return Err(NameError::Start(name.to_string()));
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(NameError::EmptySegment(name.to_string()));
        }
        if seg == ".." || seg == "." {
            return Err(NameError::DotSegment {
                name: name.to_string(),
                segment: seg.to_string(),
            });
        }
    }
    Ok(())
}

/// The hash the store keeps of a spec: sha256 of its JSON.
pub fn spec_hash(json: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(json.as_bytes()))
}

/// The path of a job's page: `/jobs/` and its name, each segment percent-encoded and its
/// slashes kept (`team-a/clicks` is `/jobs/team-a/clicks`; the page answers at
/// `/jobs/team-a%2Fclicks` too).
pub fn job_path(name: &str) -> String {
    let segments: Vec<String> = name.split('/').map(utf8_percent_encode).collect();
    format!("/jobs/{}", segments.join("/"))
}

/// Percent-encodes everything but unreserved characters.
pub fn utf8_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
        }
    }
    out
}
