//! Clusters that do not answer: one `engine_unreachable` event per outage, whoever notices it
//! first (the health sweep or an actor), and one `engine_reachable` when it is over.

use std::collections::HashSet;
use std::sync::Mutex;

use super::emit::{Emitter, Scope};
use crate::event::JobEvent;

/// The engines (by [`crate::engine::Engine::location`]) in an outage now.
#[derive(Default)]
pub struct Outages {
    down: Mutex<HashSet<String>>,
}

impl Outages {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `engine` did not answer.
    pub async fn down(&self, events: &Emitter, engine: &str, why: &str) {
        if self.set().insert(engine.to_string()) {
            let event = JobEvent::EngineUnreachable {
                engine: engine.to_string(),
                why: why.to_string(),
            };
            events.emit(Scope::daemon(), &event).await;
        }
    }

    /// `engine` answered.
    pub async fn up(&self, events: &Emitter, engine: &str) {
        if self.set().remove(engine) {
            let event = JobEvent::EngineReachable {
                engine: engine.to_string(),
            };
            events.emit(Scope::daemon(), &event).await;
        }
    }

    /// Whether `engine` is in an outage.
    pub fn is_down(&self, engine: &str) -> bool {
        self.set().contains(engine)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Store;

    async fn kinds(store: &Store) -> Vec<String> {
        let mut k: Vec<String> = store
            .events(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind.as_str().to_string())
            .collect();
        k.reverse();
        k
    }

    #[tokio::test]
    async fn an_outage_is_one_engine_unreachable_and_one_engine_reachable_per_cluster() {
        let store = Store::in_memory().unwrap();
        let events = Emitter::new(store.clone(), Arc::default());
        let outages = Outages::default();
        outages.up(&events, "flink cluster a").await; // answering: nothing to say
        for _ in 0..5 {
            outages
                .down(&events, "flink cluster a", "connection refused")
                .await;
        }
        outages.down(&events, "flink cluster b", "timeout").await;
        assert!(outages.is_down("flink cluster a"));
        outages.up(&events, "flink cluster a").await;
        outages.up(&events, "flink cluster a").await;
        assert!(!outages.is_down("flink cluster a"));
        outages.down(&events, "flink cluster a", "again").await;
        assert_eq!(
            kinds(&store).await,
            [
                "engine_unreachable",
                "engine_unreachable",
                "engine_reachable",
                "engine_unreachable"
            ]
        );
        let first = &store.events(None, 100).await.unwrap()[3];
        assert!(first.job.is_none(), "a daemon-wide event");
        assert!(
            first.message.contains("flink cluster a") && first.message.contains("refused"),
            "{first:?}"
        );
    }
}
