//! A Flink job's state over its life, as files say it: `savepoints` (periodic savepoints and
//! how many are kept, in a job file, an env or the daemon config) and `restore` (the savepoint
//! or checkpoint a commit asks the job to start from once).
//!
//! A job's [`SavepointPolicy`] is the daemon's `savepoints`, then the env's, then the job's
//! fields on top ([`SavepointsOverride::with`]); `keep` defaults to [`DEFAULT_KEEP_COUNT`]
//! savepoints and [`DEFAULT_KEEP_AGE`], as the Flink Kubernetes operator's history does.

use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::opt_duration;
use crate::schedule::Schedule;
use crate::yaml::{Checker, Node};

/// The fields of `savepoints`.
pub const SAVEPOINTS_FIELDS: &[&str] = &["schedule", "every", "keep"];
/// The fields of `savepoints.keep`.
pub const KEEP_FIELDS: &[&str] = &["count", "age"];
/// Savepoints kept per job when no level sets `keep.count`.
pub const DEFAULT_KEEP_COUNT: u32 = 10;
/// A savepoint younger than this is kept when no level sets `keep.age`.
pub const DEFAULT_KEEP_AGE: Duration = Duration::from_secs(86_400);
/// The schemes `restore` may name: Flink's file systems.
pub const RESTORE_SCHEMES: &[&str] = &[
    "file", "hdfs", "viewfs", "s3", "s3a", "s3p", "s3n", "gs", "oss", "abfs", "abfss", "wasb",
    "wasbs", "cosn", "obs",
];

/// When periodic savepoints are taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointSchedule {
    /// A crontab expression, in the daemon's time zone.
    Cron(String),
    /// One every this long after the previous periodic one.
    #[serde(with = "super::humantime_serde_compat")]
    Every(Duration),
}

impl SavepointSchedule {
    /// The first time after `last` (the previous periodic savepoint, or when the job was first
    /// seen) a savepoint is due, in `tz`; `None` for a cron with no later time.
    pub fn next_after(&self, last: DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            SavepointSchedule::Every(d) => Some(last + chrono::Duration::from_std(*d).ok()?),
            SavepointSchedule::Cron(expr) => Schedule::parse(expr).ok()?.next_after(last),
        }
    }

    /// As written in files (`every 6h`, `0 3 * * *`).
    pub fn describe(&self) -> String {
        match self {
            SavepointSchedule::Cron(e) => e.clone(),
            SavepointSchedule::Every(d) => format!("every {}", humantime::format_duration(*d)),
        }
    }
}

/// `savepoints` as one level (job file, env, daemon config) sets it; unset fields fall back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointsOverride {
    /// `schedule` or `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<SavepointSchedule>,
    /// `keep.count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_count: Option<u32>,
    /// `keep.age`.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_age: Option<Duration>,
}

impl SavepointsOverride {
    /// True when the level sets nothing (not serialized then, so older specs keep their hash).
    pub fn is_empty(&self) -> bool {
        *self == SavepointsOverride::default()
    }

    /// `base` with this level's fields on top.
    pub fn with(&self, base: &SavepointPolicy) -> SavepointPolicy {
        SavepointPolicy {
            schedule: self.schedule.clone().or_else(|| base.schedule.clone()),
            keep_count: self.keep_count.unwrap_or(base.keep_count),
            keep_age: self.keep_age.unwrap_or(base.keep_age),
        }
    }
}

/// A job's savepoint policy, every level applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavepointPolicy {
    /// When periodic savepoints are taken; `None`: never.
    pub schedule: Option<SavepointSchedule>,
    /// Savepoints kept (the newest this many are never disposed of).
    pub keep_count: u32,
    /// A savepoint younger than this is never disposed of.
    #[serde(with = "super::humantime_serde_compat")]
    pub keep_age: Duration,
}

impl Default for SavepointPolicy {
    fn default() -> SavepointPolicy {
        SavepointPolicy {
            schedule: None,
            keep_count: DEFAULT_KEEP_COUNT,
            keep_age: DEFAULT_KEEP_AGE,
        }
    }
}

/// Reads a `savepoints` mapping `n` named `section` (`savepoints`, `envs.prod.savepoints`).
pub(crate) fn read_savepoints(c: &mut Checker, n: &Node, section: &str) -> SavepointsOverride {
    let mut out = SavepointsOverride::default();
    let Some(f) = c.mapping(n, section, SAVEPOINTS_FIELDS) else {
        return out;
    };
    match (f.get("schedule"), f.get("every")) {
        (Some(_), Some(e)) => c.error(
            e,
            format!("`{section}`: give `schedule` (cron) or `every` (a duration), not both"),
        ),
        (Some(s), None) => {
            if let Some(expr) = c.string(s, &format!("{section}.schedule")) {
                match Schedule::parse(&expr) {
                    Ok(_) => out.schedule = Some(SavepointSchedule::Cron(expr)),
                    Err(e) => c.error(
                        s,
                        format!("`{section}.schedule`: invalid cron `{expr}`: {e}"),
                    ),
                }
            }
        }
        (None, Some(e)) => {
            if let Some(d) = c.duration(e, &format!("{section}.every")) {
                if d < Duration::from_secs(1) {
                    c.error(e, format!("`{section}.every`: must be at least 1s"));
                } else {
                    out.schedule = Some(SavepointSchedule::Every(d));
                }
            }
        }
        (None, None) => {}
    }
    if let Some(k) = f.get("keep") {
        let name = format!("{section}.keep");
        if let Some(kf) = c.mapping(k, &name, KEEP_FIELDS) {
            if let Some(v) = kf.get("count") {
                out.keep_count = c
                    .integer(v, &format!("{name}.count"), 1, 100_000)
                    .and_then(|n| u32::try_from(n).ok());
            }
            if let Some(v) = kf.get("age") {
                out.keep_age = c.duration(v, &format!("{name}.age"));
            }
        }
    }
    out
}

/// Reads `restore`: a savepoint or checkpoint path with a scheme Flink knows
/// ([`RESTORE_SCHEMES`]).
pub(crate) fn read_restore(c: &mut Checker, n: &Node) -> Option<String> {
    let v = c.string(n, "restore")?;
    match check_restore(&v) {
        Ok(()) => Some(v),
        Err(msg) => {
            c.error(n, msg);
            None
        }
    }
}

/// Whether `path` names a savepoint or checkpoint with a known scheme; why not.
pub fn check_restore(path: &str) -> Result<(), String> {
    let scheme = path.split_once(':').map(|(s, _)| s);
    match scheme {
        Some(s) if RESTORE_SCHEMES.contains(&s.to_ascii_lowercase().as_str()) => {
            if path.len() <= s.len() + 1 {
                Err(format!(
                    "`restore`: `{path}` names no path after its scheme"
                ))
            } else {
                Ok(())
            }
        }
        Some(s) if !s.is_empty() && !s.contains('/') => Err(format!(
            "`restore`: unknown scheme `{s}:` in `{path}`; expected one of: {}",
            RESTORE_SCHEMES.join(", ")
        )),
        _ => Err(format!(
            "`restore`: `{path}` has no scheme; write the savepoint or checkpoint as a URI, \
             e.g. `file:///savepoints/savepoint-1a2b3c` or `s3://bucket/savepoints/...` \
             (expected one of: {})",
            RESTORE_SCHEMES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_paths_need_a_known_scheme() {
        assert!(check_restore("file:///sp/savepoint-1").is_ok());
        assert!(check_restore("s3://bucket/sp/savepoint-1").is_ok());
        assert!(check_restore("hdfs:///flink/chk-4").is_ok());
        let e = check_restore("/sp/savepoint-1").unwrap_err();
        assert!(e.contains("has no scheme"), "{e}");
        let e = check_restore("ftp://host/sp").unwrap_err();
        assert!(e.contains("unknown scheme `ftp:`"), "{e}");
        assert!(check_restore("file:").is_err());
    }

    #[test]
    fn job_files_name_bad_savepoints_and_restore_fields_where_they_are() {
        let errors = |yaml: &str| -> Vec<String> {
            crate::spec::parse_job("j.yaml", yaml.as_bytes(), crate::spec::Context::default())
                .unwrap_err()
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()
        };
        assert_eq!(
            errors("env: prod\nrestore: /sp/savepoint-1\n")[0]
                .split(" has no scheme")
                .next()
                .unwrap(),
            "2:10: `restore`: `/sp/savepoint-1`"
        );
        let e = errors("env: prod\nsavepoints: {schedule: \"0 3 * * *\", every: 1h}\n");
        assert!(e[0].contains("not both"), "{e:?}");
        let e = errors("env: prod\nsavepoints: {every: 1h, keep: {count: 0, age: 1d}}\n");
        assert!(e[0].contains("savepoints.keep.count"), "{e:?}");
        let e = errors("env: prod\nsavepoints: {schedule: \"61 * * * *\"}\n");
        assert!(e[0].contains("invalid cron"), "{e:?}");
        let ok = crate::spec::parse_job(
            "j.yaml",
            b"env: prod\nsavepoints: {every: 6h, keep: {count: 3, age: 7d}}\nrestore: s3://b/sp\n",
            crate::spec::Context::default(),
        )
        .unwrap();
        assert_eq!(
            ok.savepoints.schedule,
            Some(SavepointSchedule::Every(Duration::from_secs(6 * 3600)))
        );
        assert_eq!(ok.savepoints.keep_count, Some(3));
        assert_eq!(ok.restore.as_deref(), Some("s3://b/sp"));
    }

    #[test]
    fn policies_fall_back_level_by_level_and_schedules_tell_the_next_time() {
        let daemon = SavepointsOverride {
            keep_count: Some(3),
            ..SavepointsOverride::default()
        };
        let job = SavepointsOverride {
            schedule: Some(SavepointSchedule::Every(Duration::from_secs(60))),
            keep_age: Some(Duration::from_secs(5)),
            ..SavepointsOverride::default()
        };
        let p = job.with(&daemon.with(&SavepointPolicy::default()));
        assert_eq!(p.keep_count, 3);
        assert_eq!(p.keep_age, Duration::from_secs(5));
        let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .with_timezone(&chrono_tz::UTC);
        let every = p.schedule.unwrap();
        assert_eq!(every.next_after(t0).unwrap().timestamp(), 1_800_000_060);
        let cron = SavepointSchedule::Cron("0 3 * * *".into());
        let next = cron.next_after(t0).unwrap();
        assert!(next > t0 && next.timestamp() - t0.timestamp() <= 86_400);
        assert_eq!(chrono::Timelike::hour(&next), 3);
        assert_eq!(
            SavepointPolicy::default().keep_count,
            DEFAULT_KEEP_COUNT,
            "nothing set: the defaults"
        );
    }
}
