//! Health rules as pure arithmetic: the restart policy's tracker (backoff, attempts within a
//! window, giving up) and when a batch job's first run starts after a daemon restart. The
//! status sweep that feeds them is [`crate::reconcile::sweep`](mod@crate::reconcile::sweep); the actor that applies them is
//! [`crate::reconcile::actor`].

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::schedule::Schedule;
use crate::spec::RestartPolicy;

/// A run that stays up at least this long (or `max_backoff`, if longer) resets the backoff.
pub const MIN_STABLE: Duration = Duration::from_secs(60);

/// How late a missed batch run may still start (SPEC: at most one, within 10 minutes).
pub const LATE_RUN_WINDOW: Duration = Duration::from_secs(600);

/// What to do after a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Resubmit after this delay; `attempt` of `of` within the window.
    RestartAfter {
        /// The backoff delay.
        delay: Duration,
        /// The restart this will be (1-based).
        attempt: u32,
        /// Restarts allowed within the window.
        of: u32,
    },
    /// More than `attempts` restarts within `window`: stop restarting.
    GiveUp {
        /// Restarts counted within the window.
        restarts: u32,
    },
}

/// Restart bookkeeping of one job: restart times within the window and the next backoff.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    restarts: VecDeque<Instant>,
    /// The policy's `backoff` .. `max_backoff` doubling (bounds set at each failure).
    backoff: Backoff,
}

impl Default for RestartTracker {
    fn default() -> Self {
        RestartTracker {
            restarts: VecDeque::new(),
            backoff: Backoff::new(Duration::ZERO, Duration::ZERO),
        }
    }
}

impl RestartTracker {
    /// A run failed at `now` after running for `ran_for`: restart after a backoff, or give up.
    pub fn on_failure(
        &mut self,
        now: Instant,
        policy: &RestartPolicy,
        ran_for: Duration,
    ) -> Decision {
        self.backoff.set_bounds(policy.backoff, policy.max_backoff);
        if ran_for >= policy.max_backoff.max(MIN_STABLE) {
            self.backoff.reset(); // it stayed up long enough: start over from `backoff`
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= policy.window)
        {
            self.restarts.pop_front();
        }
        let restarts = self.restarts.len() as u32;
        if restarts >= policy.attempts {
            return Decision::GiveUp { restarts };
        }
        let delay = self.backoff.next();
        Decision::RestartAfter {
            delay,
            attempt: restarts + 1,
            of: policy.attempts,
        }
    }

    /// Takes up the restarts a previous daemon made, at these times (oldest first), so the
    /// attempts within the window go on where they were.
    pub fn resume(&mut self, made: impl IntoIterator<Item = Instant>) {
        self.restarts = made.into_iter().collect();
    }

    /// Counts a restart made at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.restarts.push_back(now);
    }

    /// A run succeeded (batch): the backoff starts over.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// A new version or an operator's restart: forget past restarts.
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }
}

/// The first cron time a batch job should start at, seen at `now`: a tick missed within
/// [`LATE_RUN_WINDOW`] that no run started at or after (`last_start`) starts now, once;
/// older misses are not replayed. Returns the tick and whether it is late.
pub fn first_fire(
    schedule: &Schedule,
    now: DateTime<Tz>,
    last_start: Option<DateTime<Utc>>,
) -> Option<(DateTime<Tz>, bool)> {
    let window = chrono::Duration::from_std(LATE_RUN_WINDOW).unwrap_or_default();
    let mut missed = None;
    let mut t = now - window;
    // The latest tick in (now - window, now].
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        missed = Some(next);
        t = next;
    }
    if let Some(m) = missed
        && last_start.is_none_or(|s| s < m.with_timezone(&Utc))
    {
        return Some((m, true));
    }
    schedule.next_after(now).map(|t| (t, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, window: u64, backoff: u64, max: u64) -> RestartPolicy {
        RestartPolicy {
            attempts,
            window: Duration::from_secs(window),
            backoff: Duration::from_secs(backoff),
            max_backoff: Duration::from_secs(max),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_the_cap_then_gives_up_after_attempts_within_the_window() {
        let p = policy(4, 3600, 10, 25);
        let mut t = RestartTracker::default();
        let mut delays = Vec::new();
        loop {
            match t.on_failure(Instant::now(), &p, Duration::from_secs(1)) {
                Decision::RestartAfter { delay, attempt, of } => {
                    assert_eq!(of, 4);
                    assert_eq!(attempt as usize, delays.len() + 1);
                    delays.push(delay.as_secs());
                    tokio::time::advance(delay).await;
                    t.restarted(Instant::now());
                }
                Decision::GiveUp { restarts } => {
                    assert_eq!(restarts, 4);
                    break;
                }
            }
        }
        assert_eq!(delays, vec![10, 20, 25, 25]);
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_older_than_the_window_do_not_count() {
        let p = policy(2, 60, 1, 1);
        let mut t = RestartTracker::default();
        for _ in 0..2 {
            assert!(matches!(
                t.on_failure(Instant::now(), &p, Duration::ZERO),
                Decision::RestartAfter { .. }
            ));
            t.restarted(Instant::now());
        }
        assert_eq!(
            t.on_failure(Instant::now(), &p, Duration::ZERO),
            Decision::GiveUp { restarts: 2 }
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            t.on_failure(Instant::now(), &p, Duration::ZERO),
            Decision::RestartAfter { attempt: 1, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_stays_up_resets_the_backoff() {
        let p = policy(100, 3600, 2, 8);
        let mut t = RestartTracker::default();
        let delay = |d: Decision| match d {
            Decision::RestartAfter { delay, .. } => delay.as_secs(),
            Decision::GiveUp { .. } => panic!("gave up"),
        };
        assert_eq!(delay(t.on_failure(Instant::now(), &p, Duration::ZERO)), 2);
        assert_eq!(delay(t.on_failure(Instant::now(), &p, Duration::ZERO)), 4);
        assert_eq!(
            delay(t.on_failure(Instant::now(), &p, Duration::from_secs(59))),
            8
        );
        assert_eq!(delay(t.on_failure(Instant::now(), &p, MIN_STABLE)), 2);
    }

    #[test]
    fn zero_backoff_restarts_at_once() {
        let p = policy(3, 60, 0, 0);
        let mut t = RestartTracker::default();
        assert!(matches!(
            t.on_failure(Instant::now(), &p, Duration::ZERO),
            Decision::RestartAfter {
                delay: Duration::ZERO,
                ..
            }
        ));
    }

    fn at(s: &str) -> DateTime<Tz> {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono_tz::UTC)
    }

    #[test]
    fn a_tick_missed_within_ten_minutes_starts_once_older_ones_never() {
        let hourly = Schedule::parse("0 * * * *").unwrap();
        // 10:05, last run at 09:00: the 10:00 tick is 5 minutes late: run it now.
        let now = at("2026-11-25T10:05:00Z");
        let last = Some(at("2026-11-25T09:00:00Z").with_timezone(&Utc));
        assert_eq!(
            first_fire(&hourly, now, last),
            Some((at("2026-11-25T10:00:00Z"), true))
        );
        // It ran at 10:00: nothing late, next is 11:00.
        let ran = Some(at("2026-11-25T10:00:00Z").with_timezone(&Utc));
        assert_eq!(
            first_fire(&hourly, now, ran),
            Some((at("2026-11-25T11:00:00Z"), false))
        );
        // 10:30: the 10:00 tick is 30 minutes old: not replayed.
        let now = at("2026-11-25T10:30:00Z");
        assert_eq!(
            first_fire(&hourly, now, last),
            Some((at("2026-11-25T11:00:00Z"), false))
        );
        // Every minute, down for an hour: only the latest missed tick runs, once.
        let minutely = Schedule::parse("* * * * *").unwrap();
        let now = at("2026-11-25T10:30:30Z");
        assert_eq!(
            first_fire(&minutely, now, last),
            Some((at("2026-11-25T10:30:00Z"), true))
        );
    }

    #[test]
    fn seconds_schedules_in_a_time_zone() {
        let every2 = Schedule::parse("*/2 * * * * *").unwrap();
        let now = at("2026-11-25T10:00:01Z");
        let ran = Some(at("2026-11-25T10:00:00Z").with_timezone(&Utc));
        assert_eq!(
            first_fire(&every2, now, ran),
            Some((at("2026-11-25T10:00:02Z"), false))
        );
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        let daily = Schedule::parse("30 2 * * *").unwrap();
        let now = at("2026-11-25T00:00:00Z").with_timezone(&shanghai); // 08:00 in Shanghai
        let (next, late) = first_fire(&daily, now, None).unwrap();
        assert!(!late);
        assert_eq!(
            next.with_timezone(&Utc),
            at("2026-11-25T18:30:00Z").with_timezone(&Utc)
        );
    }
}
