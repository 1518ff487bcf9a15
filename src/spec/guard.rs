//! What keeps a running job honest beyond "it runs": `health` (when a RUNNING flink job is
//! unhealthy), `rollback` and `ready_within` (a new version that is not healthy soon enough is
//! rolled back) and `drift` (what to do when the job is changed outside jobkeeper).
//!
//! A job file, an env and the daemon config may each set any of them ([`GuardOverride`]); the
//! job's [`Guard`] is the daemon's, then the env's, then the job's fields on top.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::opt_duration;
use crate::yaml::{Checker, Fields, Node};

/// The fields of a job file's (and an env's) `health`.
pub const HEALTH_FIELDS: &[&str] = &["checkpoint_age", "restarts"];
/// The fields of `health.restarts`.
pub const HEALTH_RESTARTS_FIELDS: &[&str] = &["count", "window"];
/// The guard fields of a job file, an env and the daemon config, beside `health`.
pub const GUARD_FIELDS: &[&str] = &["rollback", "ready_within", "drift"];

/// [`GUARD_FIELDS`], for lists of allowed fields.
pub(crate) fn guard_fields() -> impl Iterator<Item = &'static str> {
    GUARD_FIELDS.iter().copied()
}

/// The default `ready_within`.
pub const DEFAULT_READY_WITHIN: Duration = Duration::from_secs(120);

/// `health.restarts`: Flink restarted the job `count` times within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartsLimit {
    /// Restarts that make the job unhealthy.
    pub count: u32,
    /// The window they are counted in.
    #[serde(with = "super::humantime_serde_compat")]
    pub window: Duration,
}

/// `drift`: what to do with a job changed outside jobkeeper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// Put it back as its file says (the default).
    #[default]
    Correct,
    /// Only raise `drift`.
    Warn,
}

impl Drift {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Correct => "correct",
            Drift::Warn => "warn",
        }
    }
}

/// Guard fields as one level (job file, env, daemon config) sets them; unset ones fall back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardOverride {
    /// `health.checkpoint_age`.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub checkpoint_age: Option<Duration>,
    /// `health.restarts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartsLimit>,
    /// `rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<bool>,
    /// `ready_within`.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ready_within: Option<Duration>,
    /// `drift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

impl GuardOverride {
    /// True when no field is set (a job file without any of them keeps its spec hash).
    pub fn is_empty(&self) -> bool {
        *self == GuardOverride::default()
    }
}

/// A job's resolved guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// A RUNNING job whose latest completed checkpoint is older is unhealthy (only when it
    /// checkpoints); `None`: not checked.
    pub checkpoint_age: Option<Duration>,
    /// A job Flink restarted this often is unhealthy; `None`: not checked.
    pub restarts: Option<RestartsLimit>,
    /// A new version that fails before `ready_within` is rolled back.
    pub rollback: bool,
    /// How long a new version must run before it is trusted.
    pub ready_within: Duration,
    /// What to do with a job changed outside jobkeeper.
    pub drift: Drift,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            checkpoint_age: None,
            restarts: None,
            rollback: false,
            ready_within: DEFAULT_READY_WITHIN,
            drift: Drift::Correct,
        }
    }
}

impl Guard {
    /// This guard with the fields an override sets replaced.
    pub fn with(self, o: &GuardOverride) -> Guard {
        Guard {
            checkpoint_age: o.checkpoint_age.or(self.checkpoint_age),
            restarts: o.restarts.or(self.restarts),
            rollback: o.rollback.unwrap_or(self.rollback),
            ready_within: o.ready_within.unwrap_or(self.ready_within),
            drift: o.drift.unwrap_or(self.drift),
        }
    }

    /// Whether the health of a RUNNING job is looked at beyond its state.
    pub fn checks_health(&self) -> bool {
        self.checkpoint_age.is_some() || self.restarts.is_some()
    }
}

/// Reads `health` (mapping `n`, named `name`; `extra` are fields of the same mapping read
/// elsewhere, the daemon's `interval`) into `o`.
pub(crate) fn read_health(
    c: &mut Checker,
    n: &Node,
    name: &str,
    extra: &[&str],
    o: &mut GuardOverride,
) {
    let allowed: Vec<&str> = HEALTH_FIELDS.iter().chain(extra).copied().collect();
    let Some(f) = c.mapping(n, name, &allowed) else {
        return;
    };
    if let Some(v) = f.get("checkpoint_age") {
        o.checkpoint_age = positive(c, v, &format!("{name}.checkpoint_age"));
    }
    if let Some(v) = f.get("restarts") {
        let rname = format!("{name}.restarts");
        let Some(r) = c.mapping(v, &rname, HEALTH_RESTARTS_FIELDS) else {
            return;
        };
        let count = match r.get("count") {
            Some(cv) => c
                .integer(cv, &format!("{rname}.count"), 1, i64::from(u32::MAX))
                .and_then(|i| u32::try_from(i).ok()),
            None => {
                c.missing(&r, "count", "how many restarts make the job unhealthy");
                None
            }
        };
        let window = match r.get("window") {
            Some(wv) => positive(c, wv, &format!("{rname}.window")),
            None => {
                c.missing(
                    &r,
                    "window",
                    "the window restarts are counted in, e.g. `10m`",
                );
                None
            }
        };
        if let (Some(count), Some(window)) = (count, window) {
            o.restarts = Some(RestartsLimit { count, window });
        }
    }
}

/// Reads `rollback`, `ready_within` and `drift` of the mapping `f`; `prefix` names the mapping
/// in messages (`envs.prod.`, or empty).
pub(crate) fn read_guard_fields(
    c: &mut Checker,
    f: &Fields<'_>,
    prefix: &str,
    o: &mut GuardOverride,
) {
    if let Some(v) = f.get("rollback") {
        o.rollback = c.boolean(v, &format!("{prefix}rollback"));
    }
    if let Some(v) = f.get("ready_within") {
        o.ready_within = positive(c, v, &format!("{prefix}ready_within"));
    }
    if let Some(v) = f.get("drift") {
        let name = format!("{prefix}drift");
        o.drift = match c.string(v, &name).as_deref() {
            Some("correct") => Some(Drift::Correct),
            Some("warn") => Some(Drift::Warn),
            Some(other) => {
                c.error(
                    v,
                    format!("`{name}`: unknown value `{other}`; expected one of: correct, warn"),
                );
                None
            }
            None => None,
        };
    }
}

fn positive(c: &mut Checker, n: &Node, name: &str) -> Option<Duration> {
    let d = c.duration(n, name)?;
    if d.is_zero() {
        c.error(n, format!("`{name}`: must be longer than zero"));
        return None;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_overrides_the_one_below() {
        let daemon = GuardOverride {
            checkpoint_age: Some(Duration::from_secs(600)),
            ready_within: Some(Duration::from_secs(60)),
            ..GuardOverride::default()
        };
        let env = GuardOverride {
            rollback: Some(true),
            drift: Some(Drift::Warn),
            ..GuardOverride::default()
        };
        let job = GuardOverride {
            checkpoint_age: Some(Duration::from_secs(30)),
            restarts: Some(RestartsLimit {
                count: 3,
                window: Duration::from_secs(60),
            }),
            ..GuardOverride::default()
        };
        let g = Guard::default().with(&daemon).with(&env).with(&job);
        assert_eq!(
            g,
            Guard {
                checkpoint_age: Some(Duration::from_secs(30)),
                restarts: Some(RestartsLimit {
                    count: 3,
                    window: Duration::from_secs(60)
                }),
                rollback: true,
                ready_within: Duration::from_secs(60),
                drift: Drift::Warn,
            }
        );
        assert!(g.checks_health());
        assert!(!Guard::default().checks_health());
    }

    #[test]
    fn an_empty_override_is_not_serialized() {
        assert!(GuardOverride::default().is_empty());
        assert_eq!(
            serde_json::to_string(&GuardOverride::default()).unwrap(),
            "{}"
        );
        let o = GuardOverride {
            ready_within: Some(Duration::from_secs(90)),
            drift: Some(Drift::Warn),
            ..GuardOverride::default()
        };
        let back: GuardOverride =
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
