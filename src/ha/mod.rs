//! Leadership: which daemon acts on the fleet. Owns the [`Leadership`] state that the rest of
//! the daemon reads through a [`LeaderWatch`] (`GET /leaderz`, `jobkeeper_leader`).
//!
//! Without `ha` configured the daemon is the only one and always leads
//! ([`Leadership::single`]): its watch never changes. With `ha`, the lease (held in the store)
//! is the one writer of the watch's sender; readers only ever see its latest value.

pub mod keeper;
pub mod lease;
pub mod stepdown;
pub mod warm;

use tokio::sync::watch;

/// Who leads, as this daemon knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// True when this daemon leads: it acts on engines and sends alerts.
    pub leader: bool,
    /// The leading node's name (`ha.node`, else the host name); empty when no node leads.
    pub node: String,
    /// The lease's epoch (0 without `ha`): grows with every new holder.
    pub epoch: i64,
    /// Since when (ms since the Unix epoch) that node leads.
    pub since_ms: i64,
    /// False without `ha` configured: the only daemon, leading always.
    pub ha: bool,
}

impl Leadership {
    /// The only daemon, leading since `since_ms` on `node`.
    pub fn single(node: &str, since_ms: i64) -> Leadership {
        Leadership {
            leader: true,
            node: node.to_string(),
            epoch: 0,
            since_ms,
            ha: false,
        }
    }
}

/// What readers hold: the latest [`Leadership`], cheap to clone.
pub type LeaderWatch = watch::Receiver<Leadership>;

/// A watch that always says `state` (its sender dropped: the value never changes).
pub fn fixed(state: Leadership) -> LeaderWatch {
    watch::channel(state).1
}

pub use crate::settings::ha::host_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_daemon_leads_on_its_host_from_its_start() {
        let w = fixed(Leadership::single("ops-1", 42));
        let now = w.borrow().clone();
        assert!(now.leader && !now.ha);
        assert_eq!(
            (now.node.as_str(), now.epoch, now.since_ms),
            ("ops-1", 0, 42)
        );
        assert!(!host_name().is_empty());
    }
}
