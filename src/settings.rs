//! The daemon config (`jobkeeper run --config FILE`): types, defaults, parsing and validation.
//!
//! Relative paths in the file (`state_dir`, a local `repo.url`, secret and token files) are
//! resolved against the folder holding the config file, so a config can travel with its repo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::spec::{RestartOverride, RestartPolicy};

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

/// `health:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often engines are asked about their jobs (default 5s).
    pub interval: Duration,
}

/// Which engine an env uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
