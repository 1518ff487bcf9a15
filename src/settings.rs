//! The daemon config (`jobkeeper run --config FILE`): types, defaults, parsing and validation.
//!
//! Relative paths in the file (`state_dir`, a local `repo.url`, secret and token files) are
//! resolved against the folder holding the config file, so a config can travel with its repo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::spec::{RestartOverride, RestartPolicy, read_restart};
use crate::yaml::{self, Checker, Fields, Node, Value};

/// The whole daemon config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where job files come from.
    pub repo: RepoSettings,
    /// SQLite store, repo mirrors, builds, artifacts, logs.
    pub state_dir: PathBuf,
    /// Folder of `${secret:NAME}` files.
    pub secrets_dir: Option<PathBuf>,
    /// HTTP API address (default `127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// Bearer token file for POST endpoints.
    pub api_token_file: Option<PathBuf>,
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
    /// Daemon-wide restart policy.
    pub restart: RestartPolicy,
    /// Same job + same event is not sent twice within this.
    pub alerts_throttle: Duration,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildSettings {
    /// Builds running at once (default 2); more wait in a queue.
    pub max_concurrent: usize,
    /// A build running longer is killed (default 30m).
    pub timeout: Duration,
}

/// `logs:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// A live local run's log is rotated past this size (default 64 MiB); one older part is
    /// kept, so a run's output takes at most twice this.
    pub max_size: u64,
}

/// The default `logs.max_size`.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// `health:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often engines are asked about their jobs (default 5s).
    pub interval: Duration,
}

/// Which engine an env uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Supervised child processes.
    Local,
    /// An Apache Flink cluster.
    Flink,
    /// A Spark standalone cluster.
    Spark,
}

impl EngineKind {
    /// The name used in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Flink => "flink",
            EngineKind::Spark => "spark",
        }
    }
}

/// One env.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSettings {
    /// Engine of this env.
    pub engine: EngineKind,
    /// Flink cluster (engine flink).
    pub flink: Option<FlinkSettings>,
    /// Spark cluster (engine spark).
    pub spark: Option<SparkSettings>,
    /// Values for `${var:NAME}`.
    pub vars: BTreeMap<String, String>,
    /// Default alert channels of the env's jobs.
    pub alerts: Vec<String>,
    /// Env-wide restart policy fields.
    pub restart: RestartOverride,
}

/// `flink:` of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkSettings {
    /// REST URL of the JobManager.
    pub url: String,
    /// Where savepoints go.
    pub savepoint_dir: Option<String>,
}

/// `spark:` of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkSettings {
    /// REST submission server (port 6066).
    pub url: String,
    /// The `spark://` master URL.
    pub master: String,
    /// Master web UI, for batched status.
    pub ui: Option<String>,
}

/// One alert channel.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChannel {
    /// Email delivery, if set.
    pub email: Option<EmailSettings>,
    /// Webhook delivery, if set.
    pub webhook: Option<WebhookSettings>,
    /// Events this channel wants; `None` means all but info events.
    pub on: Option<Vec<String>>,
}

/// `email:` of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `smtp://host:port` or `smtps://host:port`.
    pub smtp: String,
    /// Upgrade with STARTTLS.
    pub starttls: bool,
    /// Login user.
    pub user: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// `webhook:` of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// slack | dingtalk | feishu | wecom | json.
    pub format: String,
    /// Signing secret file (dingtalk, feishu).
    pub secret_file: Option<PathBuf>,
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
    if old.listen != new.listen {
        out.push("listen");
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
}

/// Alert events; see [`INFO_EVENTS`] for the ones a channel does not get by default.
pub const EVENTS: &[&str] = &[
    "failed",
    "restarted",
    "gave_up",
    "recovered",
    "build_failed",
    "deploy_failed",
    "invalid",
    "repo_unreachable",
    "engine_unreachable",
    "deployed",
    "succeeded",
];

/// Info events: sent only to channels that list them in `on:`.
pub const INFO_EVENTS: &[&str] = &["deployed", "succeeded"];

/// Webhook formats.
pub const WEBHOOK_FORMATS: &[&str] = &["slack", "dingtalk", "feishu", "wecom", "json"];

/// The default `listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

const TOP_FIELDS: &[&str] = &[
    "repo",
    "state_dir",
    "secrets_dir",
    "listen",
    "api_token_file",
    "webhook_secret_file",
    "timezone",
    "build",
    "health",
    "logs",
    "restart",
    "alerts_throttle",
    "envs",
    "alerts",
];
const REPO_FIELDS: &[&str] = &["url", "branch", "path", "poll", "ssh_key", "token_file"];
const ENV_FIELDS: &[&str] = &["engine", "flink", "spark", "vars", "alerts", "restart"];
const CHANNEL_FIELDS: &[&str] = &["email", "webhook", "on"];
const EMAIL_FIELDS: &[&str] = &["smtp", "starttls", "user", "password_file", "from", "to"];
const WEBHOOK_FIELDS: &[&str] = &["url", "format", "secret_file"];

impl Settings {
    /// The env named `name`.
    pub fn env(&self, name: &str) -> Option<&EnvSettings> {
        self.envs.get(name)
    }

    /// Whether `channel` wants `event` (its `on:` list, or every non-info event by default).
    pub fn channel_wants(&self, channel: &str, event: &str) -> bool {
        match self.alerts.get(channel) {
            Some(AlertChannel { on: Some(on), .. }) => on.iter().any(|e| e == event),
            Some(_) => !INFO_EVENTS.contains(&event),
            None => false,
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
    let s = read_settings(&mut c, &root, &base);
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

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A path field, made absolute.
fn path_field(
    c: &mut Checker,
    f: &Fields<'_>,
    key: &str,
    name: &str,
    base: &Path,
) -> Option<PathBuf> {
    let n = f.get(key)?;
    let s = c.string(n, name)?;
    if s.is_empty() {
        c.error(
            n,
            format!("`{name}`: expected a path, found an empty string"),
        );
        return None;
    }
    Some(resolve_path(base, &s))
}

/// A duration that must be longer than zero.
fn positive_duration(c: &mut Checker, n: &Node, name: &str) -> Option<Duration> {
    let d = c.duration(n, name)?;
    if d.is_zero() {
        c.error(n, format!("`{name}`: must be longer than zero"));
        return None;
    }
    Some(d)
}

fn read_settings(c: &mut Checker, root: &Node, base: &Path) -> Option<Settings> {
    let f = c.mapping(root, "", TOP_FIELDS)?;
    let repo = match f.get("repo") {
        Some(n) => read_repo(c, n, base),
        None => {
            c.missing(
                &f,
                "repo",
                "where job files come from, e.g. `repo: {url: ...}`",
            );
            None
        }
    };
    let state_dir = match f.get("state_dir") {
        Some(_) => path_field(c, &f, "state_dir", "state_dir", base),
        None => {
            c.missing(
                &f,
                "state_dir",
                "a folder for the store, builds and logs, e.g. `/var/lib/jobkeeper`",
            );
            None
        }
    };
    let secrets_dir = path_field(c, &f, "secrets_dir", "secrets_dir", base);
    let api_token_file = path_field(c, &f, "api_token_file", "api_token_file", base);
    let webhook_secret_file = path_field(c, &f, "webhook_secret_file", "webhook_secret_file", base);
    let default_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7070));
    let listen = match f.get("listen") {
        Some(n) => c.string(n, "listen").and_then(|s| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                c.error(
                    n,
                    format!("`listen`: invalid address `{s}`; expected an IP address and port like `{DEFAULT_LISTEN}`"),
                );
                None
            }
        }),
        None => None,
    }
    .unwrap_or(default_listen);
    let timezone = match f.get("timezone") {
        Some(n) => c
            .string(n, "timezone")
            .and_then(|s| match s.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    c.error(
                        n,
                        format!("`timezone`: unknown time zone `{s}`; expected an IANA name like `Europe/Berlin`, `Asia/Shanghai` or `UTC`"),
                    );
                    None
                }
            })
            .unwrap_or(chrono_tz::Tz::UTC),
        None => host_timezone(),
    };
    let mut build = BuildSettings {
        max_concurrent: 2,
        timeout: Duration::from_secs(30 * 60),
    };
    if let Some(n) = f.get("build")
        && let Some(b) = c.mapping(n, "build", &["max_concurrent", "timeout"])
    {
        if let Some(v) = b.get("max_concurrent")
            && let Some(i) = c.integer(v, "build.max_concurrent", 1, 1024)
        {
            build.max_concurrent = usize::try_from(i).unwrap_or(1);
        }
        if let Some(v) = b.get("timeout")
            && let Some(d) = positive_duration(c, v, "build.timeout")
        {
            build.timeout = d;
        }
    }
    let mut health = HealthSettings {
        interval: Duration::from_secs(5),
    };
    if let Some(n) = f.get("health")
        && let Some(h) = c.mapping(n, "health", &["interval"])
        && let Some(v) = h.get("interval")
        && let Some(d) = positive_duration(c, v, "health.interval")
    {
        health.interval = d;
    }
    let mut logs = LogSettings {
        max_size: DEFAULT_LOG_MAX_SIZE,
    };
    if let Some(n) = f.get("logs")
        && let Some(l) = c.mapping(n, "logs", &["max_size"])
        && let Some(v) = l.get("max_size")
        && let Some(b) = c.size(v, "logs.max_size", 64 * 1024, 1 << 40)
    {
        logs.max_size = b;
    }
    let restart = match f.get("restart") {
        Some(n) => RestartPolicy::default().with(&read_restart(c, n, "restart")),
        None => RestartPolicy::default(),
    };
    let alerts_throttle = f
        .get("alerts_throttle")
        .and_then(|n| c.duration(n, "alerts_throttle"))
        .unwrap_or(Duration::from_secs(300));

    let mut alerts = BTreeMap::new();
    if let Some(n) = f.get("alerts") {
        for (k, v) in c.free_mapping(n, "alerts") {
            let Some(name) = c.string(k, "alerts key") else {
                continue;
            };
            if let Some(ch) = read_channel(c, v, &name, base) {
                alerts.insert(name, ch);
            }
        }
    }
    let mut envs = BTreeMap::new();
    if let Some(n) = f.get("envs") {
        for (k, v) in c.free_mapping(n, "envs") {
            let Some(name) = c.string(k, "envs key") else {
                continue;
            };
            if name.is_empty() {
                c.error(k, "`envs`: an env name must not be empty");
                continue;
            }
            if let Some(e) = read_env(c, v, &name, &alerts) {
                envs.insert(name, e);
            }
        }
    }
    Some(Settings {
        repo: repo?,
        state_dir: state_dir?,
        secrets_dir,
        listen,
        api_token_file,
        webhook_secret_file,
        timezone,
        build,
        health,
        logs,
        restart,
        alerts_throttle,
        envs,
        alerts,
    })
}

fn read_repo(c: &mut Checker, n: &Node, base: &Path) -> Option<RepoSettings> {
    let f = c.mapping(n, "repo", REPO_FIELDS)?;
    let url = match f.get("url") {
        Some(v) => c.string(v, "repo.url").and_then(|u| {
            if u.is_empty() {
                c.error(
                    v,
                    "`repo.url`: expected a git URL or a path, found an empty string",
                );
                None
            } else if is_remote_url(&u) {
                Some(u)
            } else {
                Some(resolve_path(base, &u).to_string_lossy().into_owned())
            }
        }),
        None => {
            c.missing(
                &f,
                "url",
                "a git URL, bare repo path or local work tree path",
            );
            None
        }
    };
    let branch = f
        .get("branch")
        .and_then(|v| c.string(v, "repo.branch"))
        .unwrap_or_else(|| "main".to_string());
    let path = match f.get("path") {
        Some(v) => c.string(v, "repo.path").map(|p| {
            if p.starts_with('/') || p.split('/').any(|s| s == "..") {
                c.error(
                    v,
                    format!(
                        "`repo.path`: `{p}` must be a folder inside the repo (relative, no `..`)"
                    ),
                );
            }
            p.trim_end_matches('/').to_string()
        }),
        None => None,
    }
    .unwrap_or_else(|| "jobs".to_string());
    let poll = f
        .get("poll")
        .and_then(|v| positive_duration(c, v, "repo.poll"))
        .unwrap_or(Duration::from_secs(30));
    let ssh_key = path_field(c, &f, "ssh_key", "repo.ssh_key", base);
    let token_file = path_field(c, &f, "token_file", "repo.token_file", base);
    Some(RepoSettings {
        url: url?,
        branch,
        path,
        poll,
        ssh_key,
        token_file,
    })
}

/// A required string field of a section.
fn required_string(
    c: &mut Checker,
    f: &Fields<'_>,
    key: &str,
    name: &str,
    hint: &str,
) -> Option<String> {
    match f.get(key) {
        Some(v) => c.string(v, name),
        None => {
            c.missing(f, key, hint);
            None
        }
    }
}

fn read_env(
    c: &mut Checker,
    n: &Node,
    name: &str,
    channels: &BTreeMap<String, AlertChannel>,
) -> Option<EnvSettings> {
    let section = format!("envs.{name}");
    let f = c.mapping(n, &section, ENV_FIELDS)?;
    let engine = match f.get("engine") {
        Some(v) => c.string(v, &format!("{section}.engine")).and_then(|e| match e.as_str() {
            "local" => Some(EngineKind::Local),
            "flink" => Some(EngineKind::Flink),
            "spark" => Some(EngineKind::Spark),
            _ => {
                c.error(
                    v,
                    format!("`{section}.engine`: unknown engine `{e}`; expected one of: local, flink, spark"),
                );
                None
            }
        }),
        None => {
            c.missing(&f, "engine", "one of: local, flink, spark");
            None
        }
    };
    let flink = match f.get("flink") {
        Some(v) => {
            let fs = format!("{section}.flink");
            c.mapping(v, &fs, &["url", "savepoint_dir"]).and_then(|ff| {
                let url = required_string(
                    c,
                    &ff,
                    "url",
                    &format!("{fs}.url"),
                    "the JobManager's REST URL, e.g. `http://flink-jm:8081`",
                );
                if let (Some(u), Some(uv)) = (&url, ff.get("url"))
                    && !(u.starts_with("http://") || u.starts_with("https://"))
                {
                    c.error(
                        uv,
                        format!("`{fs}.url`: `{u}` must start with `http://` or `https://`"),
                    );
                }
                let savepoint_dir = ff
                    .get("savepoint_dir")
                    .and_then(|s| c.string(s, &format!("{fs}.savepoint_dir")));
                Some(FlinkSettings {
                    url: url?,
                    savepoint_dir,
                })
            })
        }
        None => None,
    };
    let spark = match f.get("spark") {
        Some(v) => {
            let ss = format!("{section}.spark");
            c.mapping(v, &ss, &["url", "master", "ui"]).and_then(|sf| {
                let url = required_string(
                    c,
                    &sf,
                    "url",
                    &format!("{ss}.url"),
                    "the REST submission server, e.g. `http://spark-master:6066`",
                );
                let master = required_string(
                    c,
                    &sf,
                    "master",
                    &format!("{ss}.master"),
                    "the master URL, e.g. `spark://spark-master:7077`",
                );
                let ui = sf.get("ui").and_then(|s| c.string(s, &format!("{ss}.ui")));
                Some(SparkSettings {
                    url: url?,
                    master: master?,
                    ui,
                })
            })
        }
        None => None,
    };
    match engine {
        Some(EngineKind::Flink) if f.get("flink").is_none() => c.error(
            n,
            format!("env `{name}` uses engine flink and needs `flink: {{url: http://...:8081}}`"),
        ),
        Some(EngineKind::Spark) if f.get("spark").is_none() => c.error(
            n,
            format!("env `{name}` uses engine spark and needs `spark: {{url: http://...:6066, master: spark://...:7077}}`"),
        ),
        _ => {}
    }
    let mut vars = BTreeMap::new();
    if let Some(v) = f.get("vars") {
        for (k, val) in c.free_mapping(v, &format!("{section}.vars")) {
            let Some(key) = c.text(k, &format!("{section}.vars key")) else {
                continue;
            };
            if let Some(t) = c.text(val, &format!("{section}.vars.{key}")) {
                vars.insert(key, t);
            }
        }
    }
    let alerts = match f.get("alerts") {
        Some(v) => check_channels(c, v, &format!("{section}.alerts"), channels),
        None => Vec::new(),
    };
    let restart = f
        .get("restart")
        .map(|v| read_restart(c, v, &format!("{section}.restart")))
        .unwrap_or_default();
    Some(EnvSettings {
        engine: engine?,
        flink,
        spark,
        vars,
        alerts,
        restart,
    })
}

/// A list of channel names that must all exist.
fn check_channels(
    c: &mut Checker,
    n: &Node,
    name: &str,
    channels: &BTreeMap<String, AlertChannel>,
) -> Vec<String> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`{name}`: expected a list of channel names, found {}",
                n.kind_name()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(ch) = c.string(item, &format!("{name}[{i}]")) else {
            continue;
        };
        if !channels.contains_key(&ch) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            c.error(
                item,
                format!(
                    "unknown alert channel `{ch}`; known channels: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        out.push(ch);
    }
    out
}

fn read_channel(c: &mut Checker, n: &Node, name: &str, base: &Path) -> Option<AlertChannel> {
    let section = format!("alerts.{name}");
    let f = c.mapping(n, &section, CHANNEL_FIELDS)?;
    let email = f.get("email").and_then(|v| {
        let es = format!("{section}.email");
        let ef = c.mapping(v, &es, EMAIL_FIELDS)?;
        let smtp = required_string(
            c,
            &ef,
            "smtp",
            &format!("{es}.smtp"),
            "e.g. `smtp://mail.example.com:587`",
        );
        if let (Some(s), Some(sv)) = (&smtp, ef.get("smtp"))
            && !(s.starts_with("smtp://") || s.starts_with("smtps://"))
        {
            c.error(
                sv,
                format!("`{es}.smtp`: `{s}` must start with `smtp://` or `smtps://`"),
            );
        }
        let starttls = ef
            .get("starttls")
            .and_then(|b| c.boolean(b, &format!("{es}.starttls")))
            .unwrap_or_else(|| smtp.as_deref().is_some_and(|s| s.starts_with("smtp://")));
        let user = ef
            .get("user")
            .and_then(|u| c.string(u, &format!("{es}.user")));
        let password_file = path_field(
            c,
            &ef,
            "password_file",
            &format!("{es}.password_file"),
            base,
        );
        let from = required_string(c, &ef, "from", &format!("{es}.from"), "the sender address");
        let to = match ef.get("to") {
            Some(t) => c.string_list(t, &format!("{es}.to")).and_then(|to| {
                if to.is_empty() {
                    c.error(t, format!("`{es}.to`: expected at least one recipient"));
                    None
                } else {
                    Some(to)
                }
            }),
            None => {
                c.missing(&ef, "to", "a list of recipient addresses");
                None
            }
        };
        Some(EmailSettings {
            smtp: smtp?,
            starttls,
            user,
            password_file,
            from: from?,
            to: to?,
        })
    });
    let webhook = f.get("webhook").and_then(|v| {
        let ws = format!("{section}.webhook");
        let wf = c.mapping(v, &ws, WEBHOOK_FIELDS)?;
        let url = required_string(
            c,
            &wf,
            "url",
            &format!("{ws}.url"),
            "the URL to POST alerts to",
        );
        if let (Some(u), Some(uv)) = (&url, wf.get("url"))
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            c.error(
                uv,
                format!("`{ws}.url`: `{u}` must start with `http://` or `https://`"),
            );
        }
        let format = match wf.get("format") {
            Some(fv) => c.string(fv, &format!("{ws}.format")).and_then(|s| {
                if WEBHOOK_FORMATS.contains(&s.as_str()) {
                    Some(s)
                } else {
                    c.error(
                        fv,
                        format!(
                            "`{ws}.format`: unknown format `{s}`; expected one of: {}",
                            WEBHOOK_FORMATS.join(", ")
                        ),
                    );
                    None
                }
            }),
            None => Some("json".to_string()),
        };
        let secret_file = path_field(c, &wf, "secret_file", &format!("{ws}.secret_file"), base);
        Some(WebhookSettings {
            url: url?,
            format: format?,
            secret_file,
        })
    });
    if f.get("email").is_none() && f.get("webhook").is_none() {
        c.error(
            n,
            format!(
                "alert channel `{name}` has neither `email` nor `webhook`; expected at least one"
            ),
        );
    }
    let on = f.get("on").and_then(|v| {
        let Value::Seq(items) = &v.value else {
            c.error(
                v,
                format!(
                    "`{section}.on`: expected a list of events, found {}",
                    v.kind_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(ev) = c.string(item, &format!("{section}.on[{i}]")) else {
                continue;
            };
            if EVENTS.contains(&ev.as_str()) {
                out.push(ev);
            } else {
                let hint = match crate::yaml::did_you_mean(&ev, EVENTS) {
                    Some(h) => format!(", did you mean `{h}`?"),
                    None => format!("; expected one of: {}", EVENTS.join(", ")),
                };
                c.error(item, format!("unknown event `{ev}`{hint}"));
            }
        }
        Some(out)
    });
    Some(AlertChannel { email, webhook, on })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::render;

    fn ok(src: &str) -> Settings {
        match parse("config.yaml", src.as_bytes(), Path::new("/etc/jobkeeper")) {
            Ok(s) => s,
            Err(d) => panic!("{}", render(&d)),
        }
    }

    fn errors(src: &str) -> String {
        render(
            &parse("config.yaml", src.as_bytes(), Path::new("/etc/jobkeeper"))
                .expect_err("should fail"),
        )
    }

    const FULL: &str = r#"
repo:
  url: git@git.example.com:ops/jobs.git
  branch: prod
  path: deploy/jobs/
  poll: 1m
  ssh_key: keys/deploy_key
state_dir: /var/lib/jobkeeper
secrets_dir: secrets
listen: 0.0.0.0:8080
api_token_file: /etc/jobkeeper/api_token
webhook_secret_file: webhook_secret
timezone: Asia/Shanghai
build: {max_concurrent: 4, timeout: 1h}
health: {interval: 2s}
restart: {attempts: 5, window: 30m}
alerts_throttle: 10m
envs:
  dev:  {engine: local}
  prod:
    engine: flink
    flink: {url: "http://flink-jm:8081", savepoint_dir: "s3://bucket/savepoints"}
    vars: {KAFKA: "kafka-prod:9092", PORT: 9092}
    alerts: [oncall]
    restart: {attempts: 10}
  batch:
    engine: spark
    spark: {url: "http://spark:6066", master: "spark://spark:7077"}
alerts:
  oncall:
    email: {smtp: "smtp://mail.example.com:587", starttls: true, user: jobkeeper,
            password_file: /etc/jobkeeper/smtp_pw, from: jobkeeper@example.com, to: [oncall@example.com]}
  team-chat:
    webhook: {url: "https://chat.example.com/hook/abc", format: dingtalk}
    on: [failed, gave_up, build_failed, invalid]
"#;

    #[test]
    fn full_example() {
        let s = ok(FULL);
        assert_eq!(s.repo.url, "git@git.example.com:ops/jobs.git");
        assert_eq!(s.repo.branch, "prod");
        assert_eq!(s.repo.path, "deploy/jobs");
        assert_eq!(s.repo.poll, Duration::from_secs(60));
        assert_eq!(
            s.repo.ssh_key.as_deref(),
            Some(Path::new("/etc/jobkeeper/keys/deploy_key"))
        );
        assert_eq!(
            s.secrets_dir.as_deref(),
            Some(Path::new("/etc/jobkeeper/secrets"))
        );
        assert_eq!(
            s.webhook_secret_file.as_deref(),
            Some(Path::new("/etc/jobkeeper/webhook_secret"))
        );
        assert_eq!(s.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(s.build.max_concurrent, 4);
        assert_eq!(s.health.interval, Duration::from_secs(2));
        assert_eq!(s.restart.attempts, 5);
        assert_eq!(s.restart.window, Duration::from_secs(1800));
        assert_eq!(s.restart.backoff, Duration::from_secs(10));
        assert_eq!(s.alerts_throttle, Duration::from_secs(600));
        let prod = s.env("prod").expect("prod");
        assert_eq!(prod.engine, EngineKind::Flink);
        assert_eq!(prod.vars["PORT"], "9092");
        assert_eq!(prod.alerts, vec!["oncall"]);
        assert_eq!(
            s.restart_policy("prod", &RestartOverride::default())
                .attempts,
            10
        );
        let spark = s.env("batch").and_then(|e| e.spark.clone()).expect("spark");
        assert_eq!(spark.master, "spark://spark:7077");
        let email = s.alerts["oncall"].email.clone().expect("email");
        assert!(email.starttls);
        assert_eq!(email.to, vec!["oncall@example.com"]);
        assert!(s.channel_wants("oncall", "failed"));
        assert!(!s.channel_wants("oncall", "deployed"));
        assert!(s.channel_wants("team-chat", "invalid"));
        assert!(!s.channel_wants("team-chat", "restarted"));
    }

    #[test]
    fn defaults() {
        let s = ok("repo: {url: ../jobs-repo}\nstate_dir: state\n");
        assert_eq!(s.repo.url, "/etc/jobkeeper/../jobs-repo");
        assert_eq!(s.repo.branch, "main");
        assert_eq!(s.repo.path, "jobs");
        assert_eq!(s.repo.poll, Duration::from_secs(30));
        assert_eq!(s.state_dir, Path::new("/etc/jobkeeper/state"));
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.timezone, host_timezone());
        assert_eq!(s.build.max_concurrent, 2);
        assert_eq!(s.build.timeout, Duration::from_secs(1800));
        assert_eq!(s.health.interval, Duration::from_secs(5));
        assert_eq!(s.logs.max_size, DEFAULT_LOG_MAX_SIZE);
        assert_eq!(s.restart, RestartPolicy::default());
        assert_eq!(s.alerts_throttle, Duration::from_secs(300));
        assert!(s.envs.is_empty() && s.alerts.is_empty());
    }

    #[test]
    fn log_sizes_take_units_or_bytes_within_range() {
        let base = "repo: {url: r}\nstate_dir: s\n";
        for (text, bytes) in [
            ("16MiB", 16 << 20),
            ("\"500 MB\"", 500_000_000),
            ("1GiB", 1 << 30),
            ("1048576", 1 << 20),
        ] {
            let s = ok(&format!("{base}logs: {{max_size: {text}}}\n"));
            assert_eq!(s.logs.max_size, bytes, "{text}");
        }
        assert_eq!(
            errors(&format!("{base}logs: {{max_size: 1KiB}}\n")),
            "config.yaml:3:18: `logs.max_size`: `1KiB` is out of range; expected from 64.0 KiB to 1.0 TiB\n"
        );
        assert_eq!(
            errors(&format!("{base}logs: {{max_size: lots}}\n")),
            "config.yaml:3:18: `logs.max_size`: invalid size `lots`; expected a size like `64MiB`, `500MB` or `1GiB`\n"
        );
        assert_eq!(
            errors(&format!("{base}logs: {{max_sise: 1MiB}}\n")),
            "config.yaml:3:8: unknown field `max_sise` in `logs`, did you mean `max_size`?\n"
        );
    }

    #[test]
    fn url_kinds() {
        assert!(is_remote_url("https://git.example.com/a.git"));
        assert!(is_remote_url("file:///srv/git/a.git"));
        assert!(is_remote_url("git@host:ops/jobs.git"));
        assert!(!is_remote_url("/srv/git/jobs.git"));
        assert!(!is_remote_url("./jobs"));
        assert!(!is_remote_url("dir/with:colon"));
    }

    #[test]
    fn missing_required() {
        assert_eq!(
            errors("listen: 127.0.0.1:1\n"),
            "config.yaml:1:1: missing required field `repo` (where job files come from, e.g. `repo: {url: ...}`)\n\
             config.yaml:1:1: missing required field `state_dir` (a folder for the store, builds and logs, e.g. `/var/lib/jobkeeper`)\n"
        );
        assert_eq!(
            errors("repo: {branch: main}\nstate_dir: /s\n"),
            "config.yaml:1:7: missing required field `url` (a git URL, bare repo path or local work tree path)\n"
        );
    }

    #[test]
    fn every_problem_reported_in_order() {
        let src = "\
repo: {url: /r, pol: 5s}
state_dir: /s
listen: localhost:7070
timezone: Mars/Olympus
build: {max_concurrent: 0, timeout: forever}
health: {interval: 0s}
envs:
  a: {engine: flink}
  b: {engine: spark, spark: {url: \"http://s:6066\"}}
  c: {engine: yarn, alerts: [nobody]}
alerts:
  empty: {}
  hook: {webhook: {url: \"https://h\", format: teams}, on: [failed, faild, exploded]}
";
        assert_eq!(
            errors(src),
            "config.yaml:1:17: unknown field `pol` in `repo`, did you mean `poll`?\n\
             config.yaml:3:9: `listen`: invalid address `localhost:7070`; expected an IP address and port like `127.0.0.1:7070`\n\
             config.yaml:4:11: `timezone`: unknown time zone `Mars/Olympus`; expected an IANA name like `Europe/Berlin`, `Asia/Shanghai` or `UTC`\n\
             config.yaml:5:25: `build.max_concurrent`: expected a whole number from 1 to 1024, found 0\n\
             config.yaml:5:37: `build.timeout`: invalid duration `forever` (expected number at 0); expected a duration like `90s`, `5m` or `2h`\n\
             config.yaml:6:20: `health.interval`: must be longer than zero\n\
             config.yaml:8:6: env `a` uses engine flink and needs `flink: {url: http://...:8081}`\n\
             config.yaml:9:29: missing required field `master` (the master URL, e.g. `spark://spark-master:7077`)\n\
             config.yaml:10:15: `envs.c.engine`: unknown engine `yarn`; expected one of: local, flink, spark\n\
             config.yaml:10:30: unknown alert channel `nobody`; known channels: empty, hook\n\
             config.yaml:12:10: alert channel `empty` has neither `email` nor `webhook`; expected at least one\n\
             config.yaml:13:46: `alerts.hook.webhook.format`: unknown format `teams`; expected one of: slack, dingtalk, feishu, wecom, json\n\
             config.yaml:13:67: unknown event `faild`, did you mean `failed`?\n\
             config.yaml:13:74: unknown event `exploded`; expected one of: failed, restarted, gave_up, recovered, build_failed, deploy_failed, invalid, repo_unreachable, engine_unreachable, deployed, succeeded\n"
        );
    }

    #[test]
    fn load_reads_file_and_resolves_against_its_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "repo: {url: repo}\nstate_dir: state\n").expect("write");
        let s = load(&path).expect("valid");
        assert_eq!(s.state_dir, dir.path().join("state"));
        assert_eq!(s.repo.url, dir.path().join("repo").to_string_lossy());
        let missing = dir.path().join("nope.yaml");
        let e = render(&load(&missing).expect_err("missing"));
        assert!(
            e.contains("nope.yaml:1:1: cannot read the daemon config: "),
            "{e}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b"\xff"[..],
            b"",
            b"- a",
            b"repo: {url: [x]}\nstate_dir: {}\nenvs: [a]\nalerts: 3",
            b"envs: {? [a] : b}",
            b"envs: {x: {engine: flink, flink: [1]}}",
            b"alerts: {x: {email: {to: []}, on: {}}}",
        ] {
            let _ = parse("c.yaml", input, Path::new("."));
        }
    }
}
