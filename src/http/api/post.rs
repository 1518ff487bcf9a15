//! The two POST endpoints behind `Authorization: Bearer <token>`: `POST /api/v1/sync` and
//! `POST /api/v1/jobs/{name}/restart`, each recorded as an event naming the peer address; and
//! the token check they share ([`authorize`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::ApiState;
use super::{blocking, error, internal, unknown_job};
use crate::event::JobEvent;
use crate::reconcile::Scope;
use crate::repo::TriggerReason;
use crate::settings::Settings;
use crate::store::RequestKind;

/// Why a POST for the whole repo is refused, or `None` when its bearer token is the all-jobs
/// token (`api_token_file`): a scoped token is 403 ([`crate::http::access::caller`] says who).
pub fn authorize(settings: &Settings, headers: &HeaderMap) -> Option<Response> {
    match crate::http::access::caller(settings, headers) {
        Ok(c) => c.refuse_whole_repo("call this endpoint"),
        Err(refused) => Some(*refused),
    }
}

/// Equality of two secrets in time that depends on neither (compares their SHA-256).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// `POST /api/v1/sync`: fetch the config repo and apply its tip now.
pub async fn sync(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let caller = match crate::http::access::caller(&state.settings.get(), &headers) {
        Ok(c) => c,
        Err(refused) => {
            tracing::warn!(%peer, "refused POST /api/v1/sync: unauthorized");
            return *refused;
        }
    };
    if let Some(refused) = caller.refuse_whole_repo("call the whole-repo `sync`") {
        tracing::warn!(%peer, token = %caller.token(), "refused POST /api/v1/sync: scoped token");
        return refused;
    }
    if let Some(leader) = crate::http::standby::leader_elsewhere(&state) {
        let who = caller.who(peer);
        return crate::http::standby::record(&state, RequestKind::Sync, &who, &leader).await;
    }
    let Some(trigger) = state.trigger.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is still starting",
        )
        .into_response();
    };
    let queued = trigger.trigger(TriggerReason::Manual);
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let who = caller.who(peer);
        let events = &st.reconciler.context().events;
        events.emit_blocking(Scope::daemon(), &JobEvent::ApiSync { who });
    })
    .await;
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "status": "sync requested",
            "queued": queued,
            "note": if queued { "a fetch starts now" } else { "a fetch was already pending; this request joins it" },
        })),
    )
        .into_response()
}

/// `POST /api/v1/jobs/{name}/restart`: redeploy one job now, clearing `gave_up`.
pub async fn restart(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match crate::http::access::caller(&state.settings.get(), &headers) {
        Ok(c) => c,
        Err(refused) => {
            tracing::warn!(%peer, job = %name, "refused POST restart: unauthorized");
            return *refused;
        }
    };
    if let Some(refused) = caller.refuse_restart(&name) {
        tracing::warn!(%peer, job = %name, token = %caller.token(), "refused POST restart: outside the token's folders");
        return refused;
    }
    let st = state.clone();
    let result = blocking(move || {
        let Some(row) = st.store.blocking().job(&name).map_err(internal)? else {
            return Err(unknown_job(&name));
        };
        if row.desired.is_none() {
            return Err(error(
                StatusCode::CONFLICT,
                &format!(
                    "job `{name}` has no valid version to run (removed, or its file is invalid)"
                ),
            ));
        }
        let who = caller.who(peer);
        let event = JobEvent::RestartRequested { who: who.clone() };
        let events = &st.reconciler.context().events;
        events.emit_blocking(Scope::job(&name, None), &event);
        if crate::http::standby::leader_elsewhere(&st).is_none() {
            st.reconciler.restart(&name, &who);
        }
        Ok((name, who))
    })
    .await;
    match result {
        Ok((name, who)) if let Some(leader) = crate::http::standby::leader_elsewhere(&state) => {
            crate::http::standby::record(&state, RequestKind::Restart(name), &who, &leader).await
        }
        Ok((name, _)) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "restart requested", "job": name })),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}
