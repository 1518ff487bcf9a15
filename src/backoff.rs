//! Doubling backoff: the wait before each retry of something that keeps failing.
//!
//! Owns one rule, used by restarts, alert deliveries, engine retries and polling loops: the first
//! wait is `first`, each next one doubles, none is longer than `max`, and [`Backoff::reset`]
//! starts over from `first`.
//!
//! ```
//! use std::time::Duration;
//! use jobkeeper::backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
//! let waits: Vec<u64> = (0..5).map(|_| b.next().as_secs()).collect();
//! assert_eq!(waits, [1, 2, 4, 5, 5]);
//! b.reset();
//! assert_eq!(b.peek(), Duration::from_secs(1));
//! ```

use std::time::Duration;

/// Waits that double from a first delay up to a cap. Create with [`Backoff::new`]; take each
/// wait with [`Backoff::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait, and the one after a reset.
    first: Duration,
    /// No wait is longer.
    max: Duration,
    /// The wait [`Backoff::next`] gives next (before the cap); `None` right after a reset.
    next: Option<Duration>,
}

impl Backoff {
    /// Waits of `first`, then twice as long each time, never over `max`. A zero `first` gives
    /// zero waits for ever.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: None,
        }
    }

    /// Waits that double without a cap (up to [`Duration::MAX`]).
    pub const fn uncapped(first: Duration) -> Self {
        Self::new(first, Duration::MAX)
    }

    /// The wait to make now; the one after it is twice as long (up to the cap).
    #[allow(clippy::should_implement_trait)] // an endless sequence: `Option` would only be noise
    pub fn next(&mut self) -> Duration {
        let wait = self.peek();
        self.next = Some(wait.saturating_mul(2).min(self.max));
        wait
    }

    /// The wait [`Backoff::next`] would give, without taking it.
    pub fn peek(&self) -> Duration {
        self.next.unwrap_or(self.first).min(self.max)
    }

    /// Starts over: the next wait is `first` again.
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// Whether no wait was taken since the start or the last reset.
    pub fn is_reset(&self) -> bool {
        self.next.is_none()
    }

    /// Changes the first wait and the cap (settings were reloaded), keeping how far the doubling
    /// went: the next wait is the one it would have been, under the new cap.
    pub fn set_bounds(&mut self, first: Duration, max: Duration) {
        self.first = first;
        self.max = max;
    }

    /// The first wait.
    pub fn first(&self) -> Duration {
        self.first
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| b.next().as_secs()).collect()
    }

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(25));
        assert!(b.is_reset());
        assert_eq!(secs(&mut b, 4), [10, 20, 25, 25]);
        assert!(!b.is_reset());
        b.reset();
        assert!(b.is_reset());
        assert_eq!(secs(&mut b, 2), [10, 20]);
    }

    #[test]
    fn peek_does_not_take_the_wait() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
        assert_eq!(b.peek(), Duration::from_millis(1));
        assert_eq!(b.peek(), Duration::from_millis(1));
        b.next();
        assert_eq!(b.peek(), Duration::from_millis(2));
    }

    #[test]
    fn zero_waits_stay_zero() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(secs(&mut b, 3), [0, 0, 0]);
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(60));
        assert_eq!(b.next(), Duration::ZERO);
        assert_eq!(b.next(), Duration::ZERO);
    }

    #[test]
    fn a_first_wait_over_the_cap_is_cut_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(secs(&mut b, 2), [5, 5]);
    }

    #[test]
    fn uncapped_doubling_saturates_instead_of_overflowing() {
        let mut b = Backoff::uncapped(Duration::MAX / 2 + Duration::from_secs(1));
        b.next();
        assert_eq!(b.next(), Duration::MAX);
        assert_eq!(b.next(), Duration::MAX);
    }

    #[test]
    fn new_bounds_keep_the_progress_under_the_new_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(100));
        assert_eq!(secs(&mut b, 3), [1, 2, 4]);
        b.set_bounds(Duration::from_secs(1), Duration::from_secs(6));
        assert_eq!(secs(&mut b, 2), [6, 6]);
        b.reset();
        assert_eq!(secs(&mut b, 1), [1]);
        assert_eq!(
            (b.first(), b.max()),
            (Duration::from_secs(1), Duration::from_secs(6))
        );
    }
}
