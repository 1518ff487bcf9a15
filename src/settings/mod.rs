//! The daemon config (`jobkeeper run --config FILE`): types, defaults, parsing and validation.
//!
//! Relative paths in the file (`state_dir`, a local `repo.url`, secret and token files) are
//! resolved against the folder holding the config file, so a config can travel with its repo.
//!
//! The top-level sections are read in `read`, envs in `envs` and alert channels in `channels`;
//! an env's engine block is read by its engine ([`crate::engine::EngineConfig`]). Job files are
//! checked against a config through [`crate::spec::DaemonConfig`], implemented here.

mod channels;
mod envs;
pub mod ha;
mod read;
pub mod store;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::channels::{
    AlertChannel, EmailSettings, WEBHOOK_FORMATS, WebhookSettings, alert_event_words,
};
pub use self::envs::{EnvSettings, JobGlob};
pub use self::tokens::{ScopedToken, token_name};
use crate::diag::Diagnostic;
use crate::event::EventKind;
// The engines' own types, where they were found before the engines owned them.
pub use crate::engine::EngineKind;
pub use crate::engine::flink::FlinkSettings;
pub use crate::engine::spark::SparkSettings;
use crate::spec::{self, Guard, GuardOverride, Params, RestartOverride, RestartPolicy};
use crate::yaml::{self, Checker};

/// The whole daemon config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where job files come from.
    pub repo: RepoSettings,
    /// SQLite store (without `store:`), repo mirrors, builds, artifacts, logs.
    pub state_dir: PathBuf,
    /// `store.postgres`: the state in PostgreSQL instead of SQLite under `state_dir`.
    pub store: Option<store::PostgresSettings>,
    /// `ha`: one of several daemons on that store, leading by a lease.
    pub ha: Option<ha::HaSettings>,
    /// Folder of `${secret:NAME}` files.
    pub secrets_dir: Option<PathBuf>,
    /// HTTP API address (default `127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// Bearer token file for POST endpoints: the all-jobs token.
    pub api_token_file: Option<PathBuf>,
    /// Scoped tokens (`api_tokens:`): each may restart only the jobs below its folders.
    pub api_tokens: Vec<ScopedToken>,
    /// Freeze windows (`freeze:`); `<repo.path>/_freeze.yaml` adds more.
    pub freeze: Vec<crate::freeze::FreezeWindow>,
    /// Secret for git webhooks.
    pub webhook_secret_file: Option<PathBuf>,
    /// Time zone for schedules (default: the host's).
    pub timezone: chrono_tz::Tz,
    /// Build limits.
    pub build: BuildSettings,
    /// Health loop.
    pub health: HealthSettings,
    /// Local runs' logs.
    pub logs: LogSettings,
    /// How the HTTP listener guards itself: timeouts, the connection cap, unverified bodies.
    pub http: HttpSettings,
    /// How much history each job keeps.
    pub retention: Retention,
    /// Daemon-wide `savepoints` (periodic savepoints and how many are kept).
    pub savepoints: crate::spec::SavepointsOverride,
    /// Daemon-wide restart policy.
    pub restart: RestartPolicy,
    /// Daemon-wide `health` (beyond `interval`), `rollback`, `ready_within` and `drift`.
    pub guard: GuardOverride,
    /// Same job + same event is not sent twice within this.
    pub alerts_throttle: Duration,
    /// A commit removing more jobs than this is held (default 50%).
    pub max_removals: MaxRemovals,
    /// The base of links in alerts and pages (no trailing `/`); `None`: built from `listen`.
    pub external_url: Option<String>,
    /// Named targets.
    pub envs: BTreeMap<String, EnvSettings>,
    /// Named alert channels.
    pub alerts: BTreeMap<String, AlertChannel>,
}

/// `repo:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSettings {
    /// Remote URL, bare repo path or local work tree path (paths made absolute).
    pub url: String,
    /// Branch whose tip is the desired state (default `main`).
    pub branch: String,
    /// Folder of job files (default `jobs`).
    pub path: String,
    /// Fetch interval (default 30s).
    pub poll: Duration,
    /// SSH private key for `ssh://` / scp-like URLs.
    pub ssh_key: Option<PathBuf>,
    /// File holding an HTTPS token.
    pub token_file: Option<PathBuf>,
}

/// `build:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Builds running at once (default 2); more wait in a queue.
    pub max_concurrent: usize,
    /// A build running longer is killed (default 30m).
    pub timeout: Duration,
    /// The `PATH` of a build command, and where `javac` is looked for to build the SQL runner
    /// (default [`crate::build::BUILD_PATH`], the system folders).
    pub path: String,
}

/// `logs:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// A live local run's log is rotated past this size (default 64 MiB); one older part is
    /// kept, so a run's output takes at most twice this.
    pub max_size: u64,
}

/// `max_removals:`: how many of the jobs one commit may remove before it is held until a
/// commit carries the trailer `Jobkeeper-Allow-Removals: <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxRemovals {
    /// A share of the jobs the daemon has, in percent (`50%`); at least one job may always
    /// be removed. `100%` never holds a commit.
    Percent(u32),
    /// A number of jobs (`20`).
    Count(usize),
}

impl Default for MaxRemovals {
    fn default() -> MaxRemovals {
        MaxRemovals::Percent(50)
    }
}

impl MaxRemovals {
    /// The most jobs a commit may remove out of `jobs`.
    pub fn limit(self, jobs: usize) -> usize {
        match self {
            MaxRemovals::Percent(p) => (jobs * p as usize / 100).max(1),
            MaxRemovals::Count(n) => n,
        }
    }

    /// True when removing `removed` of `jobs` is more than allowed.
    pub fn exceeded(self, removed: usize, jobs: usize) -> bool {
        removed > self.limit(jobs)
    }
}

impl std::fmt::Display for MaxRemovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxRemovals::Percent(p) => write!(f, "{p}%"),
            MaxRemovals::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The default `logs.max_size`.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// `http:` section: what the listener on `listen` holds against slow or many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// A request's head must have arrived whole this long after its connection opened or its
    /// previous answer was sent, else the connection is closed (default 10s).
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (default 60s).
    pub idle_timeout: Duration,
    /// A request's body must have arrived whole this long after its head (default 60s).
    pub body_timeout: Duration,
    /// Connections open at once (default 512, and at most a quarter of the open-file limit);
    /// one more is answered 503 and closed at once.
    pub max_connections: usize,
    /// Bytes of webhook bodies held while their signature is not yet verified, across all
    /// connections (default 64 MiB, at least [`MIN_HOOK_BUFFER`]); a hook that would go over
    /// is answered 503 before its body is read.
    pub hook_buffer: u64,
}

/// The smallest `http.hook_buffer`: one webhook body of the largest size taken (25 MiB).
pub const MIN_HOOK_BUFFER: u64 = 25 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_connections: 512,
            hook_buffer: 64 * 1024 * 1024,
        }
    }
}

/// `health:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often engines are asked about their jobs (default 5s).
    pub interval: Duration,
}

/// `retention:`: per job, runs (records and logs) past the latest `runs` and older than `age`
/// are deleted, and events older than `age` (the job's latest event is always kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs always kept per job (default 100).
    pub runs: usize,
    /// History younger than this is always kept (default 30 days).
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            runs: 100,
            age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The daemon config as the running daemon sees it: replaced whole by a reload (SIGHUP), read
/// whole by each step, so no step ever sees half of an old and half of a new config.
#[derive(Debug, Clone)]
pub struct Live(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Settings>>>);

impl Live {
    /// The config at start.
    pub fn new(settings: Settings) -> Live {
        Live(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(settings),
        )))
    }

    /// The current config.
    pub fn get(&self) -> std::sync::Arc<Settings> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a new config in place.
    pub fn replace(&self, settings: Settings) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(settings);
    }
}

/// The fields of `new` that differ from `old` and that the running daemon only takes at its
/// next start (where it listens, its state, its repo, build and health loops).
pub fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.repo != new.repo {
        out.push("repo");
    }
    if old.state_dir != new.state_dir {
        out.push("state_dir");
    }
    if old.store != new.store {
        out.push("store");
    }
    if old.ha != new.ha {
        out.push("ha");
    }
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.http != new.http {
        out.push("http");
    }
    if old.build != new.build {
        out.push("build");
    }
    if old.health != new.health {
        out.push("health");
    }
    out
}

impl Settings {
    /// The restart policy of a job in `env` with its own override.
    pub fn restart_policy(&self, env: &str, job: &RestartOverride) -> RestartPolicy {
        let base = match self.envs.get(env) {
            Some(e) => self.restart.with(&e.restart),
            None => self.restart,
        };
        base.with(job)
    }

    /// The savepoint policy of a job in `env` with its own `savepoints`: the daemon's, then the
    /// env's, then the job's.
    pub fn savepoint_policy(
        &self,
        env: &str,
        job: &crate::spec::SavepointsOverride,
    ) -> crate::spec::SavepointPolicy {
        let base = self
            .savepoints
            .with(&crate::spec::SavepointPolicy::default());
        let base = match self.envs.get(env) {
            Some(e) => e.savepoints.with(&base),
            None => base,
        };
        job.with(&base)
    }

    /// The guard (`health`, `rollback`, `ready_within`, `drift`) of a job in `env` with its own
    /// fields: the daemon's, then the env's, then the job's.
    pub fn guard(&self, env: &str, job: &GuardOverride) -> Guard {
        let base = Guard::default().with(&self.guard);
        let base = match self.envs.get(env) {
            Some(e) => base.with(&e.guard),
            None => base,
        };
        base.with(job)
    }
}

/// The default `listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

impl Settings {
    /// The env named `name`.
    pub fn env(&self, name: &str) -> Option<&EnvSettings> {
        self.envs.get(name)
    }

    /// Whether `channel` wants `event` (its `on:` list, or every non-info event by default).
    pub fn channel_wants(&self, channel: &str, event: EventKind) -> bool {
        match self.alerts.get(channel) {
            Some(AlertChannel { on: Some(on), .. }) => on.contains(&event),
            Some(_) => !event.is_info(),
            None => false,
        }
    }
}

/// What job files are checked against: envs with their vars and engine, alert channels.
impl spec::DaemonConfig for Settings {
    fn env_vars(&self, env: &str) -> Option<&BTreeMap<String, String>> {
        self.envs.get(env).map(|e| &e.vars)
    }

    fn env_names(&self) -> Vec<&str> {
        self.envs.keys().map(String::as_str).collect()
    }

    fn has_channel(&self, name: &str) -> bool {
        self.alerts.contains_key(name)
    }

    fn channel_names(&self) -> Vec<&str> {
        self.alerts.keys().map(String::as_str).collect()
    }

    fn engine(&self, env: &str) -> Option<spec::EngineFacts> {
        let kind = self.envs.get(env)?.engine.kind();
        Some(spec::EngineFacts {
            name: kind.as_str(),
            runs_on_cluster: kind.runs_on_cluster(),
            runs_sql: kind.runs_sql(),
            keeps_state: kind.keeps_state(),
        })
    }

    fn check_params(&self, env: &str, params: &Params) -> Result<(), spec::ParamsError> {
        match self.envs.get(env) {
            Some(e) => e.engine.kind().check_params(env, params),
            None => Ok(()),
        }
    }

    fn has_secrets_dir(&self) -> bool {
        self.secrets_dir.is_some()
    }

    fn env_open_to(&self, env: &str, job: &str) -> bool {
        match self.envs.get(env).and_then(|e| e.folders.as_ref()) {
            Some(globs) => globs.iter().any(|g| g.matches(job)),
            None => true,
        }
    }
}

/// The host's time zone, or UTC when it cannot be told.
pub fn host_timezone() -> chrono_tz::Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or(chrono_tz::Tz::UTC)
}

/// True for a git URL (`scheme://...`) or an scp-like address (`user@host:path`), as opposed
/// to a local path.
pub fn is_remote_url(url: &str) -> bool {
    if url.contains("://") {
        return true;
    }
    match url.split_once(':') {
        Some((before, _)) => before.contains('@') && !before.contains('/'),
        None => false,
    }
}

/// Reads and validates the daemon config at `path`; relative paths in it are resolved against
/// the folder holding it.
pub fn load(path: &Path) -> Result<Settings, Vec<Diagnostic>> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        vec![Diagnostic::file(
            &display,
            format!("cannot read the daemon config: {e}"),
        )]
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&display, &bytes, &base)
}

/// Parses and validates a daemon config. `display_path` names the file in diagnostics;
/// relative paths are resolved against `base_dir`. Every problem is reported, in file order.
pub fn parse(
    display_path: &str,
    bytes: &[u8],
    base_dir: &Path,
) -> Result<Settings, Vec<Diagnostic>> {
    let src = crate::spec::utf8(display_path, bytes)?;
    let root = yaml::parse(display_path, src)?;
    let base = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let mut c = Checker::new(display_path);
    let s = read::read_settings(&mut c, &root, &base);
    let diags = c.finish();
    match s {
        Some(s) if diags.is_empty() => Ok(s),
        _ if !diags.is_empty() => Err(diags),
        _ => Err(vec![Diagnostic::file(
            display_path,
            "invalid daemon config",
        )]),
    }
}
