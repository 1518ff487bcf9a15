//! The typed facts a job's conditions are derived from, as the store keeps them: where a run
//! runs ([`Place`]), the last version whose build, deploy or move failed ([`Failure`]) and the
//! incidents opened on runs ([`Incidents`]). [`crate::condition`] derives conditions from them.

use serde::{Deserialize, Serialize};

/// Where a run runs, or where a job file asks a job to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The env.
    pub env: Option<String>,
    /// The engine (`local`, `flink`, `spark`).
    pub engine: Option<String>,
    /// The cluster's URL (`None` for local runs, and runs recorded before clusters were kept).
    pub cluster: Option<String>,
    /// The cluster's version, when known (flink: `2.3.0`).
    pub version: Option<String>,
}

impl Place {
    /// Whether `self` (where a run is) is not where `file` asks: another env, or another
    /// cluster when both are known.
    pub fn differs_from(&self, file: &Place) -> bool {
        if self.env.is_some() && file.env.is_some() && self.env != file.env {
            return true;
        }
        self.cluster.is_some() && file.cluster.is_some() && self.cluster != file.cluster
    }

    /// `flink (2.3.0)`, `flink at http://... (2.3.0)` when `with_cluster`.
    pub fn label(&self, with_cluster: bool) -> String {
        let mut out = self.env.clone().unwrap_or_else(|| "?".into());
        if with_cluster && let Some(c) = &self.cluster {
            out.push_str(" at ");
            out.push_str(c);
        }
        if let Some(v) = &self.version {
            out.push_str(&format!(" ({v})"));
        }
        out
    }
}

/// The step at which a version failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Its project or SQL jar did not build.
    Build,
    /// Its engine refused it (preflight, submit, or restoring its state).
    Deploy,
    /// Its env's cluster changed and the new cluster refused it: it runs on the former one.
    Move,
}

words!(Stage {
    Build => "build",
    Deploy => "deploy",
    Move => "move",
});

/// The last version of a job whose build, deploy or move failed, as the store keeps it: which
/// desired hash was refused and why. Not retried until the file changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The spec hash of the version.
    pub hash: String,
    /// The config commit of the version.
    pub commit: Option<String>,
    /// Where it failed.
    pub stage: Stage,
    /// Why (the engine's or the build's words, secrets masked).
    pub reason: String,
}

/// An incident opened on one run (drift, unhealthy), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The run it was seen on.
    pub run_id: i64,
    /// What was seen.
    pub what: String,
}

/// The incidents of a job's runs the store keeps (`jobs.incidents`, JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incidents {
    /// A run rescaled outside jobkeeper, until its parallelism matches the file again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Incident>,
    /// A run stopped as unhealthy, until a later run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<Incident>,
}
