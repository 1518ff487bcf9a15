//! The two POST endpoints behind `Authorization: Bearer <token>`: `POST /api/v1/sync` and
//! `POST /api/v1/jobs/{name}/restart`, each recorded as an event naming the peer address; and
//! the token check they share ([`authorize`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::ApiState;
use super::{blocking, error, internal, unknown_job};
use crate::event::JobEvent;
use crate::reconcile::Scope;
use crate::repo::TriggerReason;
use crate::settings::Settings;

/// Why a POST is refused, or `None` when its bearer token is the configured one. The token
/// file is read on each request (so it can be rotated); tokens are compared in constant time
/// (over their SHA-256, which also hides their lengths).
pub fn authorize(settings: &Settings, headers: &HeaderMap) -> Option<Response> {
    let unauthorized = |msg: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, msg).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    };
    let Some(file) = settings.api_token_file.as_deref() else {
        return unauthorized(
            "POST endpoints are disabled: the daemon config has no `api_token_file`",
        );
    };
    let expected = match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        Ok(_) => return unauthorized("POST endpoints are disabled: the API token file is empty"),
        Err(e) => {
            tracing::error!(file = %file.display(), "cannot read the API token file: {e}");
            return unauthorized("POST endpoints are disabled: the API token file cannot be read");
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return unauthorized("missing `Authorization: Bearer <token>`");
    };
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        None
    } else {
        unauthorized("wrong token")
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
    if let Some(refused) = authorize(&state.settings.get(), &headers) {
        tracing::warn!(%peer, "refused POST /api/v1/sync: unauthorized");
        return refused;
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
        let who = format!("the API from {peer}");
        let events = &st.reconciler.context().events;
        events.emit(Scope::daemon(), &JobEvent::ApiSync { who });
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
    if let Some(refused) = authorize(&state.settings.get(), &headers) {
        tracing::warn!(%peer, job = %name, "refused POST restart: unauthorized");
        return refused;
    }
    let st = state.clone();
    let result = blocking(move || {
        let Some(row) = st.store.job(&name).map_err(internal)? else {
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
        let who = format!("the API from {peer}");
        let event = JobEvent::RestartRequested { who: who.clone() };
        let events = &st.reconciler.context().events;
        events.emit(Scope::job(&name, None), &event);
        st.reconciler.restart(&name, &who);
        Ok(name)
    })
    .await;
    match result {
        Ok(name) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "restart requested", "job": name })),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}
