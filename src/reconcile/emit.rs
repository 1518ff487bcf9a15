//! Recording an event: the one call that logs it, counts it, stores it and (through the store's
//! event sink) hands it to the alerter.

use std::sync::Arc;

use crate::event::{JobEvent, one_line};
use crate::metrics::Metrics;
use crate::store::{NewEvent, Store};

/// Who an event is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The job; `None` for daemon-wide events (a cluster outage, a reload).
    pub job: Option<&'a str>,
    /// The run, when about one.
    pub run_id: Option<i64>,
    /// The config commit it happened under.
    pub commit: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// A daemon-wide event.
    pub fn daemon() -> Scope<'a> {
        Scope::default()
    }

    /// An event of `job` under `commit`.
    pub fn job(job: &'a str, commit: Option<&'a str>) -> Scope<'a> {
        Scope {
            job: Some(job),
            run_id: None,
            commit,
        }
    }

    /// The same scope, about run `run_id`.
    #[must_use]
    pub fn run(self, run_id: Option<i64>) -> Scope<'a> {
        Scope { run_id, ..self }
    }
}

/// Records events (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    store: Store,
    metrics: Arc<Metrics>,
}

impl Emitter {
    /// An emitter writing to `store` and counting in `metrics`.
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Emitter {
        Emitter { store, metrics }
    }

    /// Logs `event` (one line; the whole message goes to the store), counts it, stores it and
    /// hands it to the alerter. Returns the stored event's id; a failed store write is logged
    /// and counted (see docs/operations.md, "When a store write fails") and gives `None`, and
    /// the event still goes to the alerter (a full disk does not silence alerts).
    pub async fn emit(&self, scope: Scope<'_>, event: &JobEvent) -> Option<i64> {
        let message = event.message();
        self.log_and_count(scope, event, &message);
        let new = self.new_event(scope, event, &message);
        let stored = self.store.event(&new).await;
        self.stored(&new, stored)
    }

    /// [`Emitter::emit`] for a caller already on a blocking thread (the sync that parses a
    /// commit, an HTTP handler's blocking part); never call it on a runtime worker.
    pub fn emit_blocking(&self, scope: Scope<'_>, event: &JobEvent) -> Option<i64> {
        let message = event.message();
        self.log_and_count(scope, event, &message);
        let new = self.new_event(scope, event, &message);
        let stored = self.store.blocking().event(&new);
        self.stored(&new, stored)
    }

    /// The row of `event` in `scope`.
    fn new_event<'a>(&self, scope: Scope<'a>, event: &JobEvent, message: &'a str) -> NewEvent<'a> {
        NewEvent {
            job: scope.job,
            run_id: scope.run_id,
            commit_id: scope.commit,
            attempt: event.attempt(),
            ..NewEvent::new(event.kind(), message)
        }
    }

    /// The failed-write rule for an event's write; an event not stored still goes to the
    /// alerter.
    fn stored(&self, new: &NewEvent<'_>, stored: crate::store::StoreResult<i64>) -> Option<i64> {
        let kind = new.kind;
        let id = self
            .store
            .record(new.job, format_args!("event {kind}"), stored);
        if id.is_none() {
            self.store.forward_unstored(new);
        }
        id
    }

    /// Logs and counts `event`, an event stored by a write of its own that hands it to the
    /// alerter (a commit's plan lines, written with the commit: [`Store::apply_commit`]).
    pub fn announce(&self, scope: Scope<'_>, event: &JobEvent) {
        self.log_and_count(scope, event, &event.message());
    }

    /// The log line and the count of every event.
    fn log_and_count(&self, scope: Scope<'_>, event: &JobEvent, message: &str) {
        let kind = event.kind();
        let line = one_line(message);
        // A field that is `None` is left out of the line (no empty `job=` or `run=`).
        let (job, run) = (scope.job, scope.run_id);
        if event.is_warning() {
            tracing::warn!(job, run, event = kind.as_str(), "{line}");
        } else {
            tracing::info!(job, run, event = kind.as_str(), "{line}");
        }
        if let Some(job) = scope.job {
            self.metrics.job_event(job, kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Snapshot;

    #[tokio::test]
    async fn an_announced_event_is_counted_as_an_emitted_one_and_stored_by_its_own_write() {
        let store = Store::in_memory().unwrap();
        let metrics = Arc::new(Metrics::default());
        let events = Emitter::new(store.clone(), metrics.clone());
        let planned = JobEvent::Planned {
            line: "add: new job".into(),
        };
        events.announce(Scope::job("a", Some("c1")), &planned);
        assert!(
            store.events(Some("a"), 10).await.unwrap().is_empty(),
            "stored by the commit's write, not again"
        );
        let failed = JobEvent::Failed {
            reason: "exit 1".into(),
        };
        let id = events
            .emit(Scope::job("a", None).run(Some(4)), &failed)
            .await;
        let stored = store.events(Some("a"), 10).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(Some(stored[0].id), id);
        assert_eq!(stored[0].run_id, Some(4));
        let text = metrics.render(&Snapshot::default());
        for line in [
            "jobkeeper_job_events_total{event=\"planned\"} 1",
            "jobkeeper_job_events_total{event=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
