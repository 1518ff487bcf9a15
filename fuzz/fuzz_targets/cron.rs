//! Cron expressions: `Schedule::parse` on arbitrary text, then the next fire times from an
//! arbitrary instant in an arbitrary time zone.
//!
//! Input: the expression, then (after a NUL byte, optional) 8 bytes of seconds since 1970 and
//! 2 bytes choosing the time zone.
//!
//! Properties: no panic; a parsed expression parses again from its text; each next fire time
//! is a whole second strictly after the instant asked at, nothing fires between the second
//! before it and it, and the times strictly increase.

#![no_main]

use chrono::{DateTime, TimeZone, Timelike};
use chrono_tz::{TZ_VARIANTS, Tz};
use jobkeeper::schedule::Schedule;
use libfuzzer_sys::fuzz_target;

/// Instants are taken in 1970..2200.
const SPAN_SECS: u64 = 230 * 365 * 24 * 3600;

fn instant(tail: &[u8]) -> (DateTime<Tz>, Tz) {
    let mut secs = [0u8; 8];
    let n = tail.len().min(8);
    secs[..n].copy_from_slice(&tail[..n]);
    let secs = u64::from_le_bytes(secs) % SPAN_SECS;
    let zone = match tail.get(8..10) {
        Some(z) => usize::from(u16::from_le_bytes([z[0], z[1]])) % TZ_VARIANTS.len(),
        None => 0,
    };
    let tz = TZ_VARIANTS[zone];
    let secs = i64::try_from(secs).unwrap_or_default();
    let nanos = u32::from(tail.get(10).copied().unwrap_or_default()) * 3_900_000;
    let t = tz
        .timestamp_opt(secs, nanos)
        .single()
        .expect("a timestamp is one instant");
    (t, tz)
}

fuzz_target!(|data: &[u8]| {
    let (expr, tail) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let Ok(schedule) = Schedule::parse(expr) else {
        return;
    };
    assert_eq!(schedule.as_str(), expr);
    Schedule::parse(schedule.as_str()).expect("parses again");
    let (mut t, _tz) = instant(tail);
    for _ in 0..4 {
        let Some(next) = schedule.next_after(t) else {
            break;
        };
        assert!(next > t, "`{expr}`: {next} is not after {t}");
        assert_eq!(
            next.nanosecond(),
            0,
            "`{expr}`: {next} is not a whole second"
        );
        let before = next - chrono::Duration::seconds(1);
        assert_eq!(
            schedule.next_after(before),
            Some(next),
            "`{expr}`: asked at {before}, another fire time than {next}"
        );
        t = next;
    }
});
