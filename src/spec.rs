//! Job files: the typed [`JobSpec`], its parsing from YAML and its validation.
//!
//! Parsing goes through [`crate::yaml`]'s located tree so that every problem names
//! `path:line:column`, and all problems of a file are reported at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use crate::diag::Diagnostic;
use crate::settings::Settings;

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
    /// local: environment variables of the child.
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
