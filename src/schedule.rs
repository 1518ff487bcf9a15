//! Cron schedules of batch jobs, with crontab's meaning, evaluated in a time zone.
//!
//! An expression has crontab's five fields (minute hour day-of-month month day-of-week), or six
//! with a leading seconds field, or is one of the macros `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`. Fields take numbers, `*`, ranges `a-b`, steps
//! `/n` and lists `a,b`; months and weekdays also take names (`JAN`, `MON`). Weekday 0 and 7 are
//! Sunday. As in crontab, when both day-of-month and day-of-week are restricted (neither starts
//! with `*`), a day matching either one matches; otherwise both must match.
//!
//! Matching is done by the `croner` crate; this module checks the expression against crontab's
//! syntax first (croner accepts extensions such as `L`, `W`, `#` and `?` that crontab does not)
//! and sets croner's day-of-month/day-of-week combination to crontab's rule.

use chrono::DateTime;
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};

/// What is wrong with a cron expression; each says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing but spaces.
    #[error("empty schedule; expected five cron fields like `30 2 * * *`")]
    Empty,
    /// An `@name` that is not one of the macros.
    #[error(
        "unknown macro `{0}`; expected one of @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight, @hourly"
    )]
    UnknownMacro(String),
    /// Neither five nor six fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading \
         seconds field, found {0}"
    )]
    FieldCount(usize),
    /// `a,,b`.
    #[error("empty list item in {field} field `{part}`")]
    EmptyItem {
        /// The field's name (`minute`).
        field: &'static str,
        /// The field as written.
        part: String,
    },
    /// `5-2`.
    #[error("range `{range}` in {field} field goes backwards")]
    Backwards {
        /// The field's name.
        field: &'static str,
        /// The range as written.
        range: String,
    },
    /// `/x`.
    #[error("step `/{step}` in {field} field is not a number")]
    StepNotANumber {
        /// The field's name.
        field: &'static str,
        /// The step as written.
        step: String,
    },
    /// `/0`, or a step past the field's largest value.
    #[error("step `/{step}` in {field} field must be between 1 and {max}")]
    StepOutOfRange {
        /// The field's name.
        field: &'static str,
        /// The step as written.
        step: String,
        /// The largest step allowed.
        max: u32,
    },
    /// A number outside the field's range.
    #[error("{field} `{value}` out of range in `{part}`; expected {min}-{max}")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The number.
        value: u32,
        /// The field as written.
        part: String,
        /// The field's smallest value.
        min: u32,
        /// The field's largest value.
        max: u32,
    },
    /// Neither a number nor a name of the field.
    #[error(
        "invalid {field} `{value}` in `{part}`; expected a number {min}-{max}{names}, `*`, a \
         range `a-b`, a step `/n` or a list `a,b`"
    )]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What was written.
        value: String,
        /// The field as written.
        part: String,
        /// The field's smallest value.
        min: u32,
        /// The field's largest value.
        max: u32,
        /// ` or a name (JAN, ...)` for fields with names, else empty.
        names: String,
    },
    /// The matcher refused the checked expression.
    #[error("invalid cron expression: {0}")]
    Cron(String),
    /// Valid, but no date matches (`0 0 30 2 *`).
    #[error("`{0}` never matches a date (check day-of-month against month)")]
    Never(String),
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written.
    expr: String,
    /// The croner pattern it was translated to.
    cron: Cron,
}

/// Month names, 1-based.
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
/// Weekday names, Sunday = 0.
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's name, range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first name (1 for months, 0 for weekdays).
    name_base: u32,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    name_base: 0,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    name_base: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    name_base: 0,
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    name_base: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    name_base: 1,
};
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
    name_base: 0,
};

impl Schedule {
    /// Parses a crontab expression; the error says what is wrong and what is allowed.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let expanded = if let Some(mac) = trimmed.strip_prefix('@') {
            match mac.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(ScheduleError::UnknownMacro(trimmed.to_string())),
            }
        } else {
            trimmed
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let fields: &[Field] = match parts.len() {
            5 => &[MINUTE, HOUR, DOM, MONTH, DOW],
            6 => &[SECOND, MINUTE, HOUR, DOM, MONTH, DOW],
            n => return Err(ScheduleError::FieldCount(n)),
        };
        let mut numeric = Vec::with_capacity(parts.len());
        for (part, field) in parts.iter().zip(fields) {
            numeric.push(check_field(part, field)?);
        }
        if numeric.len() == 5 {
            numeric.insert(0, "0".to_string());
        }
        // crontab: a field starting with `*` counts as unrestricted; with one unrestricted the
        // other decides (AND), with both restricted either matches (OR).
        let dom_star = parts[parts.len() - 3].starts_with('*');
        let dow_star = parts[parts.len() - 1].starts_with('*');
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(dom_star || dow_star)
            .build();
        let pattern = numeric.join(" ");
        let cron = parser
            .parse(&pattern)
            .map_err(|e| ScheduleError::Cron(e.to_string()))?;
        let schedule = Schedule {
            expr: expr.to_string(),
            cron,
        };
        // A pattern such as `0 0 30 2 *` is valid syntax but never fires; say so now.
        let probe = chrono::TimeZone::with_ymd_and_hms(&Tz::UTC, 2024, 1, 1, 0, 0, 0).single();
        if let Some(t) = probe
            && schedule.next_after(t).is_none()
        {
            return Err(ScheduleError::Never(trimmed.to_string()));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first time strictly after `after` that matches, or `None` when there is none
    /// (e.g. `0 0 31 2 *`).
    /// Cron times are whole seconds: the fraction of `after` is dropped first, so the same
    /// tick is found whatever the sub-second time it is asked at.
    pub fn next_after(&self, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
        use chrono::{SubsecRound, TimeZone};
        let mut t = after.trunc_subsecs(0);
        // croner moves a time-of-day job that falls in a DST gap to the end of the gap, but it
        // also does so when its search merely steps into the gap (`0 1 * * *` in Berlin after
        // 01:00 on the day clocks go 02:00 → 03:00 gave 03:00): such a time is not one, and
        // the search goes on from it. Each round moves past one gap or repeated hour, so a few
        // rounds suffice.
        for _ in 0..8 {
            let next = self
                .cron
                .find_next_occurrence(&t, false)
                .ok()?
                .trunc_subsecs(0);
            if next <= t {
                // `t` is in the second pass of a repeated hour (clocks went back): croner
                // searches wall-clock times and answers with their first pass, which is past.
                // An interval job fires in the second pass too; a time-of-day job ran in the
                // first, and its next time is found from the end of the second.
                let second = next
                    .timezone()
                    .from_local_datetime(&next.naive_local())
                    .latest()?;
                if second > t && self.cron.determine_job_type() == JobType::IntervalWildcard {
                    return Some(second);
                }
                t = second;
                continue;
            }
            // A wall-clock time that a DST gap between `t` and `next` skipped fires when the gap
            // ends (croner does this for a single time of day, not for lists or ranges:
            // `30 1,2 * * *` on the day Berlin goes 02:00 → 03:00 fired next on the day after).
            let changes = offset_changes(t, next);
            if let Some(end) = changes
                .iter()
                .filter(|c| c.forward)
                .map(|c| c.at)
                .find(|g| *g < next && self.fires_at(*g))
            {
                return Some(end);
            }
            // Clocks going back between `t` and `next`: a job with a wildcard hour (hourly or
            // more often) runs in the repeated hour's second pass too, as cron(8) schedules such
            // jobs "normally", whether the daemon started before that hour or inside it.
            if self.cron.determine_job_type() == JobType::IntervalWildcard
                && let Some(r) = changes
                    .iter()
                    .filter(|c| !c.forward)
                    .find_map(|c| self.first_in_second_pass(c.at, c.by))
                    .filter(|r| *r > t && *r < next)
            {
                return Some(r);
            }
            if self.fires_at(next) {
                return Some(next);
            }
            t = next;
        }
        None
    }

    /// The first time in the second pass of a repeated hour that matches: `start` is the first
    /// instant after clocks went back by `by` seconds.
    fn first_in_second_pass(&self, start: DateTime<Tz>, by: i64) -> Option<DateTime<Tz>> {
        use chrono::TimeZone;
        let tz = start.timezone();
        let mut wall = start.naive_local();
        for _ in 0..by {
            let as_wall = chrono::Utc.from_utc_datetime(&wall);
            if self.cron.is_time_matching(&as_wall).unwrap_or(false) {
                return tz.from_local_datetime(&wall).latest();
            }
            wall += chrono::Duration::seconds(1);
        }
        None
    }

    /// True when the schedule fires at `t`: its wall-clock time matches, or `t` is the first
    /// instant after a DST gap and a wall-clock time the gap skipped matches (crontab runs such
    /// a job when the gap ends).
    fn fires_at(&self, t: DateTime<Tz>) -> bool {
        if self.cron.is_time_matching(&t).unwrap_or(false) {
            return true;
        }
        let second = chrono::Duration::seconds(1);
        let Some(mut wall) = (t - second).naive_local().checked_add_signed(second) else {
            return false;
        };
        let end = t.naive_local();
        // A gap is an hour or two; a day at most (Samoa, 2011): a bounded walk.
        let mut steps = 0;
        while wall < end && steps <= 2 * 86_400 {
            let as_wall = chrono::TimeZone::from_utc_datetime(&chrono::Utc, &wall);
            if self.cron.is_time_matching(&as_wall).unwrap_or(false) {
                return true;
            }
            wall += second;
            steps += 1;
        }
        false
    }
}

/// A change of a zone's UTC offset: clocks going forward (a gap) or back (a repeated hour).
#[derive(Debug, Clone, Copy)]
struct OffsetChange {
    /// The first instant with the new offset.
    at: DateTime<Tz>,
    /// True when clocks went forward.
    forward: bool,
    /// By how many seconds they moved.
    by: i64,
}

/// The offset changes in `(from, to]`, in order. Zones change their offset at most a few times
/// a year: the span is looked at in 20-day pieces, and a piece whose ends differ in offset is
/// halved down to the second the offset changes.
fn offset_changes(from: DateTime<Tz>, to: DateTime<Tz>) -> Vec<OffsetChange> {
    use chrono::{Offset, TimeZone};
    let tz = from.timezone();
    let offset = |secs: i64| {
        tz.timestamp_opt(secs, 0)
            .single()
            .map(|t| i64::from(t.offset().fix().local_minus_utc()))
    };
    let piece = 20 * 86_400;
    let (start, end) = (from.timestamp(), to.timestamp());
    let mut out = Vec::new();
    let mut a = start;
    while a < end {
        let b = (a + piece).min(end);
        let (Some(oa), Some(ob)) = (offset(a), offset(b)) else {
            break;
        };
        if ob != oa {
            // Find the first second with another offset than `a`'s.
            let (mut lo, mut hi) = (a, b);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(mid).is_some_and(|o| o != oa) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            if let (Some(at), Some(new)) = (tz.timestamp_opt(hi, 0).single(), offset(hi)) {
                out.push(OffsetChange {
                    at,
                    forward: new > oa,
                    by: (new - oa).abs(),
                });
            }
        }
        a = b;
    }
    out
}

/// Checks one field against crontab's syntax and returns it with names replaced by numbers.
fn check_field(part: &str, field: &Field) -> Result<String, ScheduleError> {
    let mut out_items = Vec::new();
    for item in part.split(',') {
        if item.is_empty() {
            return Err(ScheduleError::EmptyItem {
                field: field.name,
                part: part.to_string(),
            });
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let mut out = String::new();
        if range == "*" {
            out.push('*');
        } else {
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (a, Some(b)),
                None => (range, None),
            };
            let lo_v = value(lo, field, part)?;
            out.push_str(&lo_v.to_string());
            if let Some(hi) = hi {
                let hi_v = value(hi, field, part)?;
                if hi_v < lo_v {
                    return Err(ScheduleError::Backwards {
                        field: field.name,
                        range: range.to_string(),
                    });
                }
                out.push('-');
                out.push_str(&hi_v.to_string());
            } else if step.is_some() {
                // crontab: `a/n` means `a-max/n`.
                out.push('-');
                out.push_str(&field.max.to_string());
            }
        }
        if let Some(step) = step {
            let n: u32 = step.parse().map_err(|_| ScheduleError::StepNotANumber {
                field: field.name,
                step: step.to_string(),
            })?;
            if n == 0 || n > field.max.max(1) {
                return Err(ScheduleError::StepOutOfRange {
                    field: field.name,
                    step: step.to_string(),
                    max: field.max.max(1),
                });
            }
            out.push('/');
            out.push_str(&n.to_string());
        }
        out_items.push(out);
    }
    Ok(out_items.join(","))
}

/// One number or name of a field.
fn value(s: &str, field: &Field, part: &str) -> Result<u32, ScheduleError> {
    if let Ok(v) = s.parse::<u32>() {
        if v < field.min || v > field.max {
            return Err(ScheduleError::OutOfRange {
                field: field.name,
                value: v,
                part: part.to_string(),
                min: field.min,
                max: field.max,
            });
        }
        return Ok(v);
    }
    let upper = s.to_ascii_uppercase();
    if let Some(i) = field.names.iter().position(|n| *n == upper) {
        return Ok(field.name_base + i as u32);
    }
    let names = if field.names.is_empty() {
        String::new()
    } else {
        format!(" or a name ({})", field.names.join(", "))
    };
    Err(ScheduleError::Invalid {
        field: field.name,
        value: s.to_string(),
        part: part.to_string(),
        min: field.min,
        max: field.max,
        names,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_whole_seconds_whatever_the_fraction_asked_at() {
        use chrono::TimeZone;
        let s = super::Schedule::parse("*/2 * * * * *").unwrap();
        let utc = chrono_tz::UTC;
        let at = utc.timestamp_millis_opt(1_795_617_347_126).unwrap();
        let next = s.next_after(at).unwrap();
        assert_eq!(next.timestamp_millis(), 1_795_617_348_000);
        let again = s
            .next_after(utc.timestamp_millis_opt(1_795_617_347_999).unwrap())
            .unwrap();
        assert_eq!(again, next);
    }

    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Tz> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test time")
    }

    fn next(expr: &str, after: DateTime<Tz>) -> DateTime<Tz> {
        Schedule::parse(expr)
            .expect("valid expression")
            .next_after(after)
            .expect("has a next time")
    }

    #[test]
    fn every_two_seconds() {
        let t = at(Tz::UTC, 2024, 1, 1, 0, 0, 0);
        let n1 = next("*/2 * * * * *", t);
        assert_eq!(n1, at(Tz::UTC, 2024, 1, 1, 0, 0, 2));
        let n2 = next("*/2 * * * * *", n1);
        assert_eq!(n2, at(Tz::UTC, 2024, 1, 1, 0, 0, 4));
        let odd = at(Tz::UTC, 2024, 1, 1, 0, 0, 3);
        assert_eq!(next("*/2 * * * * *", odd), at(Tz::UTC, 2024, 1, 1, 0, 0, 4));
    }

    #[test]
    fn daily_at_half_past_two_strictly_after() {
        let t = at(Tz::UTC, 2024, 3, 10, 1, 0, 0);
        assert_eq!(next("30 2 * * *", t), at(Tz::UTC, 2024, 3, 10, 2, 30, 0));
        let exact = at(Tz::UTC, 2024, 3, 10, 2, 30, 0);
        assert_eq!(
            next("30 2 * * *", exact),
            at(Tz::UTC, 2024, 3, 11, 2, 30, 0)
        );
    }

    #[test]
    fn weekdays_only() {
        // 2024-03-08 is a Friday.
        let fri = at(Tz::UTC, 2024, 3, 8, 10, 0, 0);
        let n = next("0 9 * * 1-5", fri);
        assert_eq!(n, at(Tz::UTC, 2024, 3, 11, 9, 0, 0));
        assert_eq!(n.weekday(), Weekday::Mon);
        let mut t = at(Tz::UTC, 2024, 3, 1, 0, 0, 0);
        for _ in 0..20 {
            t = next("0 9 * * MON-FRI", t);
            assert!(!matches!(t.weekday(), Weekday::Sat | Weekday::Sun));
            assert_eq!((t.hour(), t.minute()), (9, 0));
        }
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        let t = at(Tz::UTC, 2024, 3, 6, 12, 0, 0); // Wednesday
        let a = next("0 0 * * 0", t);
        let b = next("0 0 * * 7", t);
        let c = next("0 0 * * sun", t);
        assert_eq!(a, at(Tz::UTC, 2024, 3, 10, 0, 0, 0));
        assert_eq!(a.weekday(), Weekday::Sun);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(next("0 0 * * 1", t).weekday(), Weekday::Mon);
    }

    #[test]
    fn macros() {
        let t = at(Tz::UTC, 2024, 3, 6, 12, 0, 0);
        assert_eq!(next("@daily", t), at(Tz::UTC, 2024, 3, 7, 0, 0, 0));
        assert_eq!(next("@midnight", t), at(Tz::UTC, 2024, 3, 7, 0, 0, 0));
        assert_eq!(next("@hourly", t), at(Tz::UTC, 2024, 3, 6, 13, 0, 0));
        assert_eq!(next("@weekly", t), at(Tz::UTC, 2024, 3, 10, 0, 0, 0));
        assert_eq!(next("@monthly", t), at(Tz::UTC, 2024, 4, 1, 0, 0, 0));
        assert_eq!(next("@yearly", t), at(Tz::UTC, 2025, 1, 1, 0, 0, 0));
        assert_eq!(next("@annually", t), at(Tz::UTC, 2025, 1, 1, 0, 0, 0));
    }

    #[test]
    fn month_names() {
        let t = at(Tz::UTC, 2024, 3, 6, 12, 0, 0);
        assert_eq!(next("0 0 1 jan *", t), at(Tz::UTC, 2025, 1, 1, 0, 0, 0));
        assert_eq!(next("0 0 1 JUN-AUG *", t), at(Tz::UTC, 2024, 6, 1, 0, 0, 0));
    }

    #[test]
    fn dom_and_dow_follow_crontab() {
        // Both restricted: OR. From Wednesday 2024-03-06 the next Monday (11th) comes
        // before the 15th; from the 12th the 15th comes first.
        let t = at(Tz::UTC, 2024, 3, 6, 12, 0, 0);
        assert_eq!(next("0 0 15 * 1", t), at(Tz::UTC, 2024, 3, 11, 0, 0, 0));
        let t2 = at(Tz::UTC, 2024, 3, 12, 0, 0, 0);
        assert_eq!(next("0 0 15 * 1", t2), at(Tz::UTC, 2024, 3, 15, 0, 0, 0));
        // Day-of-month starting with `*`: AND, as vixie cron does.
        let n = next("0 0 */2 * 1", t);
        assert_eq!(n.weekday(), Weekday::Mon);
        assert_eq!(n.day() % 2, 1);
        // Only one restricted: that one decides.
        assert_eq!(next("0 0 15 * *", t), at(Tz::UTC, 2024, 3, 15, 0, 0, 0));
    }

    #[test]
    fn dst_gap_and_overlap() {
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        // 2024-03-31: 02:00 → 03:00 in Berlin; a 02:30 job still runs that day.
        let before = at(tz, 2024, 3, 30, 12, 0, 0);
        let n = next("30 2 * * *", before);
        assert!(n > before);
        assert_eq!(n.date_naive().day(), 31);
        let after = next("30 2 * * *", n);
        assert_eq!(after, at(tz, 2024, 4, 1, 2, 30, 0));
        // Hourly across the gap: consecutive times are one real hour apart.
        let a = at(tz, 2024, 3, 31, 1, 0, 0);
        let b = next("0 * * * *", a);
        assert_eq!((b - a).num_hours(), 1);
        assert_eq!(b.hour(), 3);
        // 2024-10-27: 03:00 → 02:00; a 02:30 job runs once that day.
        let o = at(tz, 2024, 10, 26, 12, 0, 0);
        let first = next("30 2 * * *", o);
        let second = next("30 2 * * *", first);
        assert_eq!(first.date_naive().day(), 27);
        assert_eq!(second.date_naive().day(), 28);
    }

    /// A minutely job went 61 minutes without a run when the daemon ran through the fall-back
    /// hour (01:59 EDT, then 02:00 EST), but ran in the second pass when started inside it.
    #[test]
    fn a_job_more_frequent_than_hourly_runs_in_both_passes_of_the_repeated_hour() {
        use chrono::TimeZone;
        let york: Tz = "America/New_York".parse().expect("zone");
        // 2024-11-03 02:00 EDT → 01:00 EST.
        let last_edt = york
            .from_local_datetime(
                &chrono::NaiveDate::from_ymd_opt(2024, 11, 3)
                    .unwrap()
                    .and_hms_opt(1, 59, 0)
                    .unwrap(),
            )
            .earliest()
            .unwrap();
        let first_est = next("* * * * *", last_edt);
        assert_eq!((first_est - last_edt).num_minutes(), 1, "{first_est}");
        assert_eq!(first_est.naive_local().to_string(), "2024-11-03 01:00:00");
        // Inside the second pass, as when the daemon starts there.
        let then = next("* * * * *", first_est);
        assert_eq!((then - first_est).num_minutes(), 1);
        // cron(8): only jobs at a specific time or coarser than hourly are run once; an hourly
        // job is scheduled normally, so it runs at 01:00 EST too. A daily 01:30 job runs once.
        let hourly = next("0 * * * *", last_edt);
        assert_eq!((hourly - last_edt).num_minutes(), 1);
        let daily = next("30 1 * * *", last_edt);
        assert_eq!(daily.naive_local().to_string(), "2024-11-04 01:30:00");
    }

    /// With a list or a range in the hour field, the run inside a spring-forward gap was lost
    /// (`30 1,2 * * *` in Berlin on 2024-03-31 next ran on April 1): it runs when the gap ends,
    /// as a single time of day does.
    #[test]
    fn lists_and_ranges_in_the_hour_field_keep_their_run_inside_a_dst_gap() {
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        let york: Tz = "America/New_York".parse().expect("zone");
        // Berlin 2024-03-31 and New York 2024-03-10: clocks go 02:00 → 03:00.
        for (tz, day, next_day) in [(berlin, 31, (4, 1)), (york, 10, (3, 11))] {
            let month = 3;
            let t = |h, m| at(tz, 2024, month, day, h, m, 0);
            let tomorrow = |h, m| at(tz, 2024, next_day.0, next_day.1, h, m, 0);
            // `30 1,2`: 01:30, then the 02:30 the gap skipped runs when it ends, then next day.
            assert_eq!(next("30 1,2 * * *", t(0, 0)), t(1, 30));
            let gap_run = next("30 1,2 * * *", t(1, 30));
            assert_eq!(gap_run, t(3, 0), "{tz}");
            assert_eq!(next("30 1,2 * * *", gap_run), tomorrow(1, 30));
            // `15,45 2`: both fall in the gap; one run when it ends.
            let r = next("15,45 2 * * *", t(1, 0));
            assert_eq!(r, t(3, 0), "{tz}");
            assert_eq!(next("15,45 2 * * *", r), tomorrow(2, 15));
            // `30 2-3`: 02:30 is skipped (runs at 03:00), 03:30 runs as usual.
            let r = next("30 2-3 * * *", t(1, 0));
            assert_eq!(r, t(3, 0), "{tz}");
            assert_eq!(next("30 2-3 * * *", r), t(3, 30));
        }
    }

    /// Found by fuzzing (`fuzz/`, target `cron`): on the day clocks spring forward, a job at
    /// the hour before the gap fired a second time when the gap ended (`0 1 * * *` in Berlin:
    /// 01:00 and 03:00; `0 2 31 * *` in EET on 2080-03-31: 02:00 and 04:00).
    #[test]
    fn a_job_before_a_dst_gap_fires_once() {
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        let one = at(berlin, 2024, 3, 31, 1, 0, 0);
        assert_eq!(next("0 1 * * *", one), at(berlin, 2024, 4, 1, 1, 0, 0));
        let eet: Tz = "EET".parse().expect("zone");
        let two = at(eet, 2080, 3, 31, 2, 0, 0);
        assert_eq!(next("0 2 31 * *", two), at(eet, 2080, 5, 31, 2, 0, 0));
        // A job inside the gap still runs when it ends, once.
        let before = at(berlin, 2024, 3, 31, 1, 59, 59);
        let in_gap = next("30 2 * * *", before);
        assert_eq!(in_gap, at(berlin, 2024, 3, 31, 3, 0, 0));
        assert_eq!(next("30 2 * * *", in_gap), at(berlin, 2024, 4, 1, 2, 30, 0));
    }

    /// Found by fuzzing (`fuzz/`, target `cron`): asked in the second pass of the hour repeated
    /// when clocks go back, the next time was the first pass's, an hour in the past
    /// (`* * * * *` at 02:29:36 CET gave 02:30 CEST).
    #[test]
    fn the_next_time_in_a_repeated_hour_is_not_in_the_past() {
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        let second_pass = |h, mi, s| {
            berlin
                .with_ymd_and_hms(2024, 10, 27, h, mi, s)
                .latest()
                .expect("a time")
        };
        let t = second_pass(2, 29, 36);
        assert_eq!(next("* * * * *", t), second_pass(2, 30, 0));
        assert_eq!(next("*/10 * * * *", t), second_pass(2, 30, 0));
        // A time-of-day job ran in the first pass: its next time is the next day's.
        let t = second_pass(2, 10, 0);
        assert_eq!(next("30 2 * * *", t), at(berlin, 2024, 10, 28, 2, 30, 0));
    }

    #[test]
    fn invalid_expressions() {
        for (expr, want) in [
            ("", "empty schedule"),
            ("* * * *", "expected 5 fields"),
            ("* * * * * * *", "found 7"),
            ("60 * * * *", "minute `60` out of range"),
            ("* 24 * * *", "hour `24` out of range"),
            ("* * 0 * *", "day-of-month `0` out of range"),
            ("* * * 13 *", "month `13` out of range"),
            ("* * * * 8", "day-of-week `8` out of range"),
            ("* * * * MOO", "invalid day-of-week `MOO`"),
            ("*/0 * * * *", "step `/0`"),
            ("5-1 * * * *", "goes backwards"),
            ("@often", "unknown macro"),
            ("* * L * *", "invalid day-of-month `L`"),
            ("* * * * 5#2", "invalid day-of-week `5#2`"),
            ("* * ? * *", "invalid day-of-month `?`"),
            ("1,,2 * * * *", "empty list item"),
        ] {
            let err = Schedule::parse(expr).expect_err(expr);
            assert!(err.to_string().contains(want), "{expr}: {err}");
        }
    }

    #[test]
    fn impossible_date_is_refused_and_leap_day_is_not() {
        let err = Schedule::parse("0 0 30 2 *").expect_err("never fires");
        assert_eq!(err, ScheduleError::Never("0 0 30 2 *".into()));
        assert_eq!(
            err.to_string(),
            "`0 0 30 2 *` never matches a date (check day-of-month against month)"
        );
        let t = at(Tz::UTC, 2025, 1, 1, 0, 0, 0);
        assert_eq!(next("0 0 29 2 *", t), at(Tz::UTC, 2028, 2, 29, 0, 0, 0));
    }
}
