//! What a standby (`ha`) answers to a POST that acts: a restart, a sync or a git webhook is
//! recorded in the store for the leader, which carries it out ([`crate::lead`]), and the
//! answer (202) says so and names the leader. A savepoint, whose answer is the savepoint
//! itself, is refused (503) with the leader to ask instead.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::store::RequestKind;

/// With `ha`, when this daemon does not lead: who does (empty when nobody holds the lease).
pub fn leader_elsewhere(state: &ApiState) -> Option<String> {
    let l = state.leadership.borrow();
    (l.ha && !l.leader).then(|| l.node.clone())
}

fn leader_named(leader: &str) -> String {
    if leader.is_empty() {
        "no daemon holds the lease now; the next leader".to_string()
    } else {
        format!("the leader ({leader})")
    }
}

/// Records `kind`, asked by `who`, for the leader: 202 naming it, or 503 when the store did
/// not take the record.
pub async fn record(state: &ApiState, kind: RequestKind, who: &str, leader: &str) -> Response {
    let what = match &kind {
        RequestKind::Restart(job) => format!("restart of `{job}`"),
        RequestKind::Sync => "sync".to_string(),
    };
    match state.store.record_request(kind, who).await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "status": "recorded for the leader",
                "request": id,
                "leader": leader,
                "note": format!(
                    "this daemon is a standby: the {what} was recorded, and {} carries it out",
                    leader_named(leader)
                ),
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!("a standby could not record a {what} for the leader: {e}");
            super::api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "this daemon is a standby and could not record the {what} for the leader: {e}"
                ),
            )
            .into_response()
        }
    }
}

/// 503 for what only the leader can answer.
pub fn refuse(what: &str, leader: &str) -> Response {
    super::api::error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "this daemon is a standby: {what} is answered by {}",
            leader_named(leader)
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_named_or_said_to_be_missing() {
        assert_eq!(leader_named("ops-1"), "the leader (ops-1)");
        assert!(leader_named("").starts_with("no daemon holds the lease"));
    }
}
