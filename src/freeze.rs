//! Freeze windows: times when changes to the jobs of some envs are held, from the daemon
//! config's `freeze:` and from `<repo.path>/_freeze.yaml` (so that a freeze is itself
//! reviewed). A window opens at each time of its `schedule` and stays open for `duration`;
//! windows that overlap make one longer freeze. What is held, and when it is released, is
//! decided by [`crate::sync`] from [`Freeze::open_for`]; this module is pure.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;

use crate::diag::Diagnostic;
use crate::schedule::Schedule;
use crate::yaml::{Checker, Node, Value};

/// The trailer that applies a commit at once, whatever window is open; its value is the reason.
pub const OVERRIDE_TRAILER: &str = "Jobkeeper-Freeze-Override";

/// The fields of one window.
const FIELDS: &[&str] = &["schedule", "duration", "envs", "reason"];

/// Most window openings looked through for one answer (a window every second for a day).
const MAX_STEPS: usize = 100_000;

/// One freeze window.
#[derive(Debug, Clone)]
pub struct FreezeWindow {
    /// When it opens.
    pub schedule: Schedule,
    /// How long it stays open.
    pub duration: Duration,
    /// The envs it freezes; empty: every env.
    pub envs: Vec<String>,
    /// Why, for people (`weekend`).
    pub reason: String,
}

/// An open freeze of one env: until when, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// When the freeze closes.
    pub until: DateTime<Tz>,
    /// The reason of the window that closes last.
    pub reason: String,
}

/// Every window that applies: the daemon config's and the repo's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Freeze {
    /// The windows.
    pub windows: Vec<FreezeWindow>,
}

impl PartialEq for FreezeWindow {
    fn eq(&self, other: &Self) -> bool {
        self.schedule.as_str() == other.schedule.as_str()
            && (self.duration, &self.envs, &self.reason)
                == (other.duration, &other.envs, &other.reason)
    }
}

impl FreezeWindow {
    /// True when the window freezes env `env`.
    pub fn covers(&self, env: &str) -> bool {
        self.envs.is_empty() || self.envs.iter().any(|e| e == env)
    }

    /// When this window's freeze that holds `now` closes, counting the openings that start
    /// before it closes; `None` when it is not open at `now`.
    fn open_until(&self, now: DateTime<Tz>) -> Option<DateTime<Tz>> {
        let span = chrono::Duration::from_std(self.duration).ok()?;
        let mut tick = self.schedule.next_after(now - span)?;
        if tick > now {
            return None;
        }
        let mut until = tick + span;
        for _ in 0..MAX_STEPS {
            match self.schedule.next_after(tick) {
                Some(next) if next <= until => {
                    tick = next;
                    until = until.max(next + span);
                }
                _ => break,
            }
        }
        (until > now).then_some(until)
    }
}

impl Freeze {
    /// The open freeze of env `env` at `now` (the latest close among the windows open then),
    /// or `None`.
    pub fn open_for(&self, env: &str, now: DateTime<Tz>) -> Option<Open> {
        self.windows
            .iter()
            .filter(|w| w.covers(env))
            .filter_map(|w| w.open_until(now).map(|until| (until, &w.reason)))
            .max_by_key(|(until, _)| *until)
            .map(|(until, reason)| Open {
                until,
                reason: reason.clone(),
            })
    }
}

/// `now` in time zone `tz`.
pub fn now_in(tz: Tz) -> DateTime<Tz> {
    tz.from_utc_datetime(&chrono::Utc::now().naive_utc())
}

/// Reads a `freeze:` list at `n` (named `name` in messages); bad windows are reported and
/// left out.
pub fn read_windows(c: &mut Checker, n: &Node, name: &str) -> Vec<FreezeWindow> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`{name}`: expected a list of `{{schedule, duration, envs, reason}}`, found {}",
                n.kind_name()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{name}[{i}]");
        let Some(f) = c.mapping(item, &at, FIELDS) else {
            continue;
        };
        let schedule = match f.get("schedule") {
            Some(v) => c.string(v, &format!("{at}.schedule")).and_then(|s| {
                Schedule::parse(&s)
                    .map_err(|e| c.error(v, format!("`{at}.schedule`: invalid cron `{s}`: {e}")))
                    .ok()
            }),
            None => {
                c.missing(
                    &f,
                    "schedule",
                    "a cron time the window opens at, e.g. `0 18 * * 5`",
                );
                None
            }
        };
        let duration = match f.get("duration") {
            Some(v) => c.duration(v, &format!("{at}.duration")).filter(|d| {
                let ok = !d.is_zero();
                if !ok {
                    c.error(v, format!("`{at}.duration`: must be longer than zero"));
                }
                ok
            }),
            None => {
                c.missing(&f, "duration", "how long the window stays open, e.g. `62h`");
                None
            }
        };
        let envs = f
            .get("envs")
            .and_then(|v| c.string_list(v, &format!("{at}.envs")))
            .unwrap_or_default();
        let reason = f
            .get("reason")
            .and_then(|v| c.text(v, &format!("{at}.reason")))
            .unwrap_or_else(|| "freeze window".to_string());
        if let (Some(schedule), Some(duration)) = (schedule, duration) {
            out.push(FreezeWindow {
                schedule,
                duration,
                envs,
                reason,
            });
        }
    }
    out
}

/// Reads `<repo.path>/_freeze.yaml`: a mapping with one field, `freeze`, as in the daemon
/// config.
pub fn parse_freeze_file(path: &str, bytes: &[u8]) -> Result<Vec<FreezeWindow>, Vec<Diagnostic>> {
    let src = crate::spec::utf8(path, bytes)?;
    let root = crate::yaml::parse(path, src)?;
    let mut c = Checker::new(path);
    let mut windows = Vec::new();
    if let Some(f) = c.mapping(&root, "", &["freeze"]) {
        match f.get("freeze") {
            Some(n) => windows = read_windows(&mut c, n, "freeze"),
            None => c.missing(
                &f,
                "freeze",
                "a list of `{schedule, duration, envs, reason}`",
            ),
        }
    }
    let diags = c.finish();
    if diags.is_empty() {
        Ok(windows)
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Tz> {
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        chrono_tz::UTC.from_utc_datetime(&naive)
    }

    fn window(cron: &str, d: &str, envs: &[&str]) -> FreezeWindow {
        FreezeWindow {
            schedule: Schedule::parse(cron).unwrap(),
            duration: humantime::parse_duration(d).unwrap(),
            envs: envs.iter().map(ToString::to_string).collect(),
            reason: "weekend".into(),
        }
    }

    #[test]
    fn a_weekend_window_opens_friday_evening_and_closes_monday_morning() {
        let f = Freeze {
            windows: vec![window("0 18 * * 5", "62h", &["prod"])],
        };
        // 2026-12-04 is a Friday.
        assert_eq!(f.open_for("prod", at("2026-12-04 17:59:59")), None);
        let open = f.open_for("prod", at("2026-12-04 18:00:00")).unwrap();
        assert_eq!(open.until, at("2026-12-07 08:00:00"));
        assert_eq!(open.reason, "weekend");
        assert!(f.open_for("prod", at("2026-12-06 12:00:00")).is_some());
        assert_eq!(f.open_for("prod", at("2026-12-07 08:00:00")), None);
        assert_eq!(
            f.open_for("dev", at("2026-12-05 12:00:00")),
            None,
            "other envs run on"
        );
    }

    #[test]
    fn overlapping_openings_make_one_freeze_and_no_envs_means_all() {
        let f = Freeze {
            windows: vec![window("*/10 * * * * *", "15s", &[])],
        };
        let open = f.open_for("any", at("2026-12-07 10:00:05")).unwrap();
        assert!(open.until > at("2026-12-07 23:00:00"), "{:?}", open.until);
        let f = Freeze {
            windows: vec![window("*/10 * * * * *", "4s", &[])],
        };
        assert_eq!(
            f.open_for("any", at("2026-12-07 10:00:03")).unwrap().until,
            at("2026-12-07 10:00:04")
        );
        assert_eq!(f.open_for("any", at("2026-12-07 10:00:04")), None);
    }

    #[test]
    fn a_freeze_file_is_checked_with_places() {
        let good = parse_freeze_file(
            "jobs/_freeze.yaml",
            b"freeze:\n  - {schedule: \"0 18 * * 5\", duration: 62h, envs: [prod], reason: weekend}\n",
        )
        .unwrap();
        assert_eq!(good.len(), 1);
        let bad = parse_freeze_file(
            "jobs/_freeze.yaml",
            b"freeze:\n  - {schedule: \"0 99 * * 5\", duration: 0s, env: [prod]}\n",
        )
        .unwrap_err();
        let text = crate::diag::render(&bad);
        assert!(
            text.contains("jobs/_freeze.yaml:2:16: `freeze[0].schedule`: invalid cron"),
            "{text}"
        );
        assert!(
            text.contains("`freeze[0].duration`: must be longer than zero"),
            "{text}"
        );
        assert!(
            text.contains("unknown field `env` in `freeze[0]`, did you mean `envs`?"),
            "{text}"
        );
    }
}
