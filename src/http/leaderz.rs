//! `GET /leaderz`, for load balancers: 200 when this daemon leads, 503 when it does not, with a
//! line saying who leads, since when and at which epoch (from the daemon's [`LeaderWatch`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use super::ApiState;
use crate::ha::{LeaderWatch, Leadership};

/// The answer for `state`: its status and its line.
pub fn answer(state: &Leadership) -> (StatusCode, String) {
    let since = super::api::rfc3339(state.since_ms);
    let line = match (state.ha, state.leader) {
        (false, _) => format!(
            "leader: {} (no `ha` configured: this daemon is the only one and always leads), since {since}\n",
            state.node
        ),
        (true, true) => format!(
            "leader: {} (this daemon), epoch {}, since {since}\n",
            state.node, state.epoch
        ),
        (true, false) if state.node.is_empty() => {
            "standby: no daemon holds the lease now\n".to_string()
        }
        (true, false) => format!(
            "standby: {} leads, epoch {}, since {since}\n",
            state.node, state.epoch
        ),
    };
    let status = if state.leader {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, line)
}

/// `GET /leaderz`.
pub async fn leaderz(State(state): State<Arc<ApiState>>) -> (StatusCode, String) {
    answer(&now(&state.leadership))
}

fn now(w: &LeaderWatch) -> Leadership {
    w.borrow().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_answers_200_and_a_standby_503_naming_who_leads() {
        let single = Leadership::single("ops-1", 0);
        let (status, line) = answer(&single);
        assert_eq!(status, StatusCode::OK);
        assert!(
            line.starts_with("leader: ops-1 (no `ha` configured"),
            "{line}"
        );
        let ha = Leadership {
            leader: false,
            node: "ops-2".into(),
            epoch: 7,
            since_ms: 0,
            ha: true,
        };
        let (status, line) = answer(&ha);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(line.starts_with("standby: ops-2 leads, epoch 7"), "{line}");
        let leading = Leadership { leader: true, ..ha };
        assert_eq!(answer(&leading).0, StatusCode::OK);
    }
}
