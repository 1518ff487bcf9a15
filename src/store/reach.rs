//! Whether the store answers. A PostgreSQL store can stop answering while the daemon runs (the
//! server restarts, the link freezes): each failed call is an error for its caller, as a failed
//! disk is (see [`super::Blocking::record`]); this file keeps the episode. The first call that
//! cannot reach the database logs it; the first call that reaches it again records one
//! `store_unreachable` event (since when, the first error, how many calls failed) and one
//! `store_reachable`, so the alert goes out as soon as there is a store to record it in.

use parking_lot::Mutex;

use super::{Blocking, NewEvent, Result, StoreError, now_ms};
use crate::event::{EventKind, JobEvent};

/// An episode of the store not answering.
#[derive(Debug, Clone)]
struct Down {
    since: i64,
    why: String,
    failed: u64,
}

/// The store's reachability, shared by every clone of a [`Blocking`].
#[derive(Debug, Default)]
pub(super) struct Reach {
    down: Mutex<Option<Down>>,
}

/// True for the errors that say the database was not reached (no answer, a closed or refused
/// link, a server shutting down), not that it refused a statement.
pub(super) fn unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Timeout(_) | StoreError::Busy(_) => true,
        StoreError::Postgres(e) => match e.as_db_error() {
            // The server answered: only its "cannot serve you now" classes count.
            Some(db) => {
                let c = db.code().code();
                c.starts_with("08") || c.starts_with("57P") || c == "53300"
            }
            // No answer: the link failed (an I/O error under it, a closed connection, a
            // connect timeout). A value that could not be converted (a bug, not an outage)
            // carries its own, non-I/O, error.
            None => {
                let source = std::error::Error::source(e);
                e.is_closed()
                    || source.is_none()
                    || source.is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
            }
        },
        _ => false,
    }
}

impl Blocking {
    /// Notes what a call to a PostgreSQL store answered: the start of an episode, a call failed
    /// during it, or its end (the two events recorded).
    pub(super) fn note_reach<T>(&self, result: &Result<T>) {
        match result {
            Err(e) if unreachable(e) => {
                let mut down = self.reach.down.lock();
                match down.as_mut() {
                    Some(d) => d.failed += 1,
                    None => {
                        tracing::error!(store = %self.shown(), "store unreachable: {e}; jobs keep running as they are, and nothing is submitted that cannot be recorded first");
                        *down = Some(Down {
                            since: now_ms(),
                            why: e.to_string(),
                            failed: 1,
                        });
                    }
                }
            }
            Ok(_) => {
                let Some(d) = self.reach.down.lock().take() else {
                    return;
                };
                self.end_episode(d);
            }
            Err(_) => {}
        }
    }

    /// Records the episode's two events; an episode whose events cannot be recorded yet is
    /// kept for the next call that succeeds.
    fn end_episode(&self, d: Down) {
        let store = self.shown();
        let down = JobEvent::StoreUnreachable {
            store: store.clone(),
            since: d.since,
            why: d.why.clone(),
            failed: d.failed,
        };
        let message = down.message();
        let recorded = self.event(&NewEvent::new(EventKind::StoreUnreachable, &message));
        if recorded.is_err() {
            let mut now = self.reach.down.lock();
            if now.is_none() {
                *now = Some(d);
            }
            return;
        }
        tracing::info!(store = %store, failed = d.failed, "store reachable again");
        let up = JobEvent::StoreReachable { store };
        let message = up.message();
        let _ = self.record(
            None,
            "store_reachable event",
            self.event(&NewEvent::new(EventKind::StoreReachable, &message)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_the_link_count_as_unreachable() {
        assert!(unreachable(&StoreError::Timeout("x".into())));
        assert!(unreachable(&StoreError::Busy("x".into())));
        assert!(!unreachable(&StoreError::NoRow));
        assert!(!unreachable(&StoreError::Unsupported("x")));
    }
}
