//! The Flink version of a cluster and the REST dialect it speaks: every request and answer field
//! that differs between the supported versions (1.19, 1.20 and 2.x) lives here, so the rest of
//! the flink engine speaks one language.
//!
//! What differs (read from the REST classes of 1.20.3 and 2.3.0, and the 1.19 release notes):
//! - the claim mode of a run request (`POST /jars/{id}/run`): `restoreMode` up to 1.19,
//!   `claimMode` from 1.20 on (1.20 still reads `restoreMode`; 2.x reads it as deprecated);
//!   `LEGACY` exists in 1.x only;
//! - the claim mode's key in a job's configuration: `execution.savepoint-restore-mode` (1.x) or
//!   `execution.state-recovery.claim-mode` (1.20 and 2.x); either is accepted in `params.conf`;
//! - the savepoint format type (`formatType` of a stop or savepoint request): `CANONICAL` or
//!   `NATIVE` on every supported version; jobkeeper asks for `CANONICAL`, the one that moves
//!   between versions and state backends;
//! - answers: a run answer carries `applicationId` on 2.x only; a job's exceptions carry the
//!   deprecated `root-exception` on 1.x only (`exceptionHistory` on both);
//! - job states: the same eleven on 1.19, 1.20 and 2.x ([`LIVE_STATES`] are those still alive);
//!   a state this module does not know is taken as alive, so a newer cluster never makes a live
//!   job look ended.

use std::fmt;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::super::cluster::lock;
use super::{EngineError, FlinkEngine};

/// The oldest supported Flink version (major, minor).
pub const MIN_SUPPORTED: (u32, u32) = (1, 19);

/// The claim mode key of 1.20 and 2.x, accepted in `params.conf`.
pub const CLAIM_MODE_KEY: &str = "execution.state-recovery.claim-mode";
/// The claim mode key of 1.x, accepted in `params.conf`.
pub const RESTORE_MODE_KEY: &str = "execution.savepoint-restore-mode";
/// The savepoint format jobkeeper asks for.
pub const SAVEPOINT_FORMAT: &str = "CANONICAL";

/// Flink states in which a job is still alive (or about to be), on every supported version.
pub const LIVE_STATES: &[&str] = &[
    "INITIALIZING",
    "CREATED",
    "RUNNING",
    "RESTARTING",
    "RECONCILING",
    "FAILING",
    "CANCELLING",
    "SUSPENDED",
];

/// States in which a job has ended, on every supported version.
pub const ENDED_STATES: &[&str] = &["FINISHED", "FAILED", "CANCELED"];

/// Whether a job in `state` is alive: a known live state, or one this module does not know.
pub fn is_live(state: &str) -> bool {
    LIVE_STATES.contains(&state) || !ENDED_STATES.contains(&state)
}

/// A Flink version, as `GET /config` names it in `flink-version` (`1.20.3`, `2.3.0`,
/// `2.4-SNAPSHOT`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlinkVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version (0 when not given).
    pub patch: u32,
    /// The text the cluster gave.
    pub text: String,
}

impl FlinkVersion {
    /// Parses `flink-version`; `None` when it does not start with `MAJOR.MINOR`.
    pub fn parse(text: &str) -> Option<FlinkVersion> {
        let mut parts = text.trim().split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(FlinkVersion {
            major,
            minor,
            patch,
            text: text.trim().to_string(),
        })
    }

    /// Whether jobkeeper speaks this version's dialect (1.19 and later).
    pub fn is_supported(&self) -> bool {
        (self.major, self.minor) >= MIN_SUPPORTED
    }

    /// Why this version is refused, when it is.
    pub fn unsupported(&self, cluster: &str) -> Option<String> {
        (!self.is_supported()).then(|| {
            format!(
                "flink cluster {cluster} runs Flink {}, older than the oldest supported version {}.{}: \
                 upgrade the cluster or point the env at one running 1.19 or later",
                self.text, MIN_SUPPORTED.0, MIN_SUPPORTED.1
            )
        })
    }

    /// Why a cluster at this version cannot start a job from a savepoint taken on a cluster at
    /// `taken_on`: Flink reads savepoints of its own and older versions only (a patch release
    /// reads those of its minor version).
    pub fn cannot_read(&self, taken_on: &FlinkVersion) -> Option<String> {
        ((self.major, self.minor) < (taken_on.major, taken_on.minor)).then(|| {
            format!(
                "Flink {} cannot read a savepoint taken on {}; move with `upgrade: stateless` \
                 or to a cluster at {} or newer",
                self.text, taken_on.text, taken_on.text
            )
        })
    }

    /// The name of the run request's claim mode field.
    pub fn claim_field(&self) -> &'static str {
        if (self.major, self.minor) >= (1, 20) {
            "claimMode"
        } else {
            "restoreMode"
        }
    }

    /// The claim modes this version knows.
    pub fn claim_modes(&self) -> &'static [&'static str] {
        if self.major >= 2 {
            &["CLAIM", "NO_CLAIM"]
        } else {
            &["CLAIM", "NO_CLAIM", "LEGACY"]
        }
    }
}

impl fmt::Display for FlinkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `flink-version` of a `GET /config` answer.
pub fn version_of_config(body: &Value) -> Option<FlinkVersion> {
    body.get("flink-version")
        .and_then(Value::as_str)
        .and_then(FlinkVersion::parse)
}

/// The fields a run request restoring from a savepoint adds for `version` (the claim mode, from
/// `conf`'s claim mode key of either dialect, `NO_CLAIM` when none is set: the savepoint stays
/// the operator's, and may be used again to move back). A mode the version does not know is an
/// error naming the ones it does. `None` version: the cluster did not say; no claim field is
/// sent (every version defaults to `NO_CLAIM`).
pub fn restore_fields(
    version: Option<&FlinkVersion>,
    conf: &std::collections::BTreeMap<String, String>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let asked = conf
        .get(CLAIM_MODE_KEY)
        .or_else(|| conf.get(RESTORE_MODE_KEY))
        .map(|m| m.trim().to_ascii_uppercase());
    let Some(v) = version else {
        if let Some(m) = asked {
            out.insert("claimMode".into(), json!(m));
        }
        return Ok(out);
    };
    let mode = asked.unwrap_or_else(|| "NO_CLAIM".into());
    if !v.claim_modes().contains(&mode.as_str()) {
        return Err(format!(
            "claim mode `{mode}` is not known to Flink {v} (it knows {})",
            v.claim_modes().join(", ")
        ));
    }
    out.insert(v.claim_field().into(), json!(mode));
    Ok(out)
}

/// The body of a stop-with-savepoint request.
pub fn stop_body(target_directory: Option<&str>) -> Value {
    let mut body = json!({"drain": false, "formatType": SAVEPOINT_FORMAT});
    if let Some(dir) = target_directory {
        body["targetDirectory"] = json!(dir);
    }
    body
}

/// The stack trace of a job's latest exception in a `GET /jobs/{id}/exceptions` answer:
/// `exceptionHistory` (every version), else `root-exception` (1.x).
pub fn latest_trace(body: &Value) -> Option<&str> {
    body["exceptionHistory"]["entries"][0]["stacktrace"]
        .as_str()
        .or_else(|| body["root-exception"].as_str())
}

impl FlinkEngine {
    /// Reads the cluster's version (`GET /config`) and keeps it. A version below 1.19 is
    /// [`EngineError::Refused`], naming it; one the cluster does not give is an error too.
    pub(super) async fn read_version(&self) -> Result<FlinkVersion, EngineError> {
        let body = self.get("/config").await?;
        let Some(v) = version_of_config(&body) else {
            return Err(EngineError::Other(format!(
                "flink cluster {} did not name its version in GET /config: {body}",
                self.base
            )));
        };
        self.version_stale.store(false, Ordering::Relaxed);
        let before = lock(&self.version).replace(v.clone());
        if before.as_ref() != Some(&v) {
            tracing::info!(cluster = %self.base, version = %v, "flink version");
        }
        match v.unsupported(&self.base) {
            Some(why) => Err(EngineError::Refused(why)),
            None => Ok(v),
        }
    }

    /// Reads the version again when it is not known yet or the cluster was out since; problems
    /// are logged (the next call tries again).
    pub(super) async fn refresh_version(&self) {
        if self.version_stale.load(Ordering::Relaxed)
            && let Err(e) = self.read_version().await
        {
            tracing::warn!(cluster = %self.base, "flink version: {e}");
        }
    }

    /// The version known now (`None`: not read yet); a version below 1.19 is
    /// [`EngineError::Refused`].
    pub(super) fn checked_version(&self) -> Result<Option<FlinkVersion>, EngineError> {
        let v = lock(&self.version).clone();
        match v.as_ref().and_then(|v| v.unsupported(&self.base)) {
            Some(why) => Err(EngineError::Refused(why)),
            None => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn an_older_minor_version_cannot_read_a_newer_one_s_savepoint() {
        let v = |t: &str| FlinkVersion::parse(t).unwrap();
        assert_eq!(
            v("1.20.3").cannot_read(&v("2.3.0")).as_deref(),
            Some(
                "Flink 1.20.3 cannot read a savepoint taken on 2.3.0; move with `upgrade: \
                 stateless` or to a cluster at 2.3.0 or newer"
            )
        );
        assert!(v("2.2.0").cannot_read(&v("2.3.0")).is_some());
        assert_eq!(v("2.3.0").cannot_read(&v("1.20.3")), None);
        assert_eq!(
            v("2.3.0").cannot_read(&v("2.3.1")),
            None,
            "a patch release reads it"
        );
        assert_eq!(v("2.3.0").cannot_read(&v("2.3.0")), None);
    }

    fn v(s: &str) -> FlinkVersion {
        FlinkVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            (v("1.20.3").major, v("1.20.3").minor, v("1.20.3").patch),
            (1, 20, 3)
        );
        assert_eq!(v("2.4-SNAPSHOT").minor, 4);
        assert_eq!(v("2.4-SNAPSHOT").patch, 0);
        assert!(v("1.19.0") < v("1.20.3") && v("1.20.3") < v("2.0.0"));
        assert!(FlinkVersion::parse("").is_none());
        assert!(FlinkVersion::parse("banana").is_none());
        assert_eq!(
            version_of_config(&json!({"flink-version": "2.3.0"})),
            Some(v("2.3.0"))
        );
        assert_eq!(version_of_config(&json!({})), None);
    }

    #[test]
    fn versions_below_1_19_are_refused_naming_the_version() {
        assert!(v("1.19.1").is_supported() && v("2.0.0").is_supported());
        assert!(!v("1.18.1").is_supported());
        let why = v("1.18.1").unsupported("http://jm:8081").unwrap();
        assert!(
            why.contains("Flink 1.18.1") && why.contains("1.19"),
            "{why}"
        );
        assert_eq!(v("1.20.3").unsupported("x"), None);
    }

    #[test]
    fn the_claim_mode_field_and_values_follow_the_version() {
        let none = BTreeMap::new();
        let f = |ver: &str, conf: &BTreeMap<String, String>| {
            restore_fields(Some(&v(ver)), conf).map(|m| Value::Object(m).to_string())
        };
        assert_eq!(f("1.19.1", &none).unwrap(), r#"{"restoreMode":"NO_CLAIM"}"#);
        assert_eq!(f("1.20.3", &none).unwrap(), r#"{"claimMode":"NO_CLAIM"}"#);
        assert_eq!(f("2.3.0", &none).unwrap(), r#"{"claimMode":"NO_CLAIM"}"#);
        let legacy: BTreeMap<String, String> =
            [(RESTORE_MODE_KEY.to_string(), "legacy".to_string())].into();
        assert_eq!(f("1.20.3", &legacy).unwrap(), r#"{"claimMode":"LEGACY"}"#);
        let err = f("2.3.0", &legacy).unwrap_err();
        assert!(err.contains("LEGACY") && err.contains("2.3.0"), "{err}");
        let claim: BTreeMap<String, String> =
            [(CLAIM_MODE_KEY.to_string(), "CLAIM".to_string())].into();
        assert_eq!(f("1.19.0", &claim).unwrap(), r#"{"restoreMode":"CLAIM"}"#);
        assert!(restore_fields(None, &none).unwrap().is_empty());
    }

    #[test]
    fn stops_ask_for_a_canonical_savepoint() {
        assert_eq!(
            stop_body(Some("file:///sp")),
            json!({"drain": false, "formatType": "CANONICAL", "targetDirectory": "file:///sp"})
        );
        assert_eq!(stop_body(None)["formatType"], "CANONICAL");
    }

    #[test]
    fn states_and_traces_of_either_major() {
        assert!(is_live("RUNNING") && is_live("RECONCILING") && is_live("SOME_NEW_STATE"));
        assert!(!is_live("FINISHED") && !is_live("FAILED") && !is_live("CANCELED"));
        let two = json!({"exceptionHistory": {"entries": [{"stacktrace": "boom"}]}});
        let one = json!({"root-exception": "old boom", "exceptionHistory": {"entries": []}});
        assert_eq!(latest_trace(&two), Some("boom"));
        assert_eq!(latest_trace(&one), Some("old boom"));
        assert_eq!(latest_trace(&json!({})), None);
    }
}
