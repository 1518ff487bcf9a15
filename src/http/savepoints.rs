//! A job's savepoints: `GET /api/v1/jobs/{name}/savepoints` (time, kind, cause, run,
//! location, disposed of or not, and which one the current run started from), shown on the job
//! page too, and `POST /api/v1/jobs/{name}/savepoint` (an operator's savepoint, taken by the
//! job's actor; token needed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::api::{ApiError, error, internal};
use crate::reconcile::savepoint::SavepointRefused;
use crate::store::{SavepointEntry, Store, StoreError};

/// The most savepoints listed.
pub const LISTED: usize = 200;

/// One savepoint, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavepointView {
    /// Row id.
    pub id: i64,
    /// When it completed (ms since the epoch).
    pub time: i64,
    /// `savepoint` or `checkpoint`.
    pub kind: String,
    /// Why it was taken (`upgrade`, `stop`, `periodic`, `manual`, `ended`); `None` when not
    /// recorded.
    pub cause: Option<String>,
    /// The run it was taken from.
    pub run_id: Option<i64>,
    /// Where it is.
    pub location: String,
    /// The cluster that took it.
    pub cluster: Option<String>,
    /// When it was disposed of (ms), `None` while kept.
    pub disposed_at: Option<i64>,
    /// Failed disposals, and the latest failure's reason.
    pub dispose_failures: i64,
    /// Why the latest disposal failed.
    pub dispose_error: Option<String>,
    /// The current run started from it.
    pub current: bool,
}

/// `GET /api/v1/jobs/{name}/savepoints`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavepointsView {
    /// The job.
    pub job: String,
    /// Where its live run started from, when it started from a savepoint or checkpoint.
    pub started_from: Option<String>,
    /// Newest first.
    pub savepoints: Vec<SavepointView>,
}

/// The savepoints of `job` (which must be known to the store), newest first.
pub fn savepoints_view(store: &Store, job: &str) -> Result<SavepointsView, StoreError> {
    let started_from = match store.blocking().running_of(job)? {
        Some(r) => store.blocking().run_start(r.run_id)?,
        None => None,
    };
    let rows = store.blocking().savepoint_history(job, LISTED)?;
    let view = |e: SavepointEntry| SavepointView {
        id: e.id,
        time: e.time,
        kind: e.kind.as_str().to_string(),
        cause: e.cause.map(|c| c.as_str().to_string()),
        run_id: e.run_id,
        current: started_from.as_deref() == Some(e.location.as_str()),
        location: e.location,
        cluster: e.cluster,
        disposed_at: e.disposed_at,
        dispose_failures: e.dispose_failures,
        dispose_error: e.dispose_error,
    };
    Ok(SavepointsView {
        job: job.to_string(),
        started_from: started_from.clone(),
        savepoints: rows.into_iter().map(view).collect(),
    })
}

/// `GET /api/v1/jobs/{name}/savepoints`; 404 for a job the store does not know.
pub async fn list(State(state): State<Arc<ApiState>>, UrlPath(name): UrlPath<String>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let known = match state.store.blocking().job(&name) {
            Ok(row) => row.is_some(),
            // A row that does not decode whole is still a job with a history.
            Err(StoreError::Decode { .. }) => true,
            Err(e) => return Err(internal(e)),
        };
        if !known {
            return Err(error(
                StatusCode::NOT_FOUND,
                &format!("no job named `{name}`"),
            ));
        }
        savepoints_view(&state.store, &name).map_err(internal)
    })
    .await;
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(e).into_response(),
    }
}

/// `POST /api/v1/jobs/{name}/savepoint`: 200 with the savepoint's location; 202 when it is
/// still under way as the connection would go idle (it is recorded when done); 409 when the job
/// has no live run or runs on an engine without savepoints; 502 when the engine could not take it (`savepoint_failed` says why).
pub async fn take(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let settings = state.settings.get();
    let caller = match crate::http::access::caller(&settings, &headers) {
        Ok(c) => c,
        Err(refused) => {
            tracing::warn!(%peer, job = %name, "refused POST savepoint: unauthorized");
            return *refused;
        }
    };
    if let Some(refused) = caller.refuse_job(&name, "take a savepoint of") {
        tracing::warn!(%peer, job = %name, token = %caller.token(), "refused POST savepoint: outside the token's folders");
        return refused;
    }
    let st = state.clone();
    let job = name.clone();
    let known = tokio::task::spawn_blocking(move || st.store.blocking().job(&job)).await;
    match known {
        Ok(Ok(Some(row))) if row.desired.is_some() || row.applied.is_some() => {}
        Ok(Ok(_)) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no job named `{name}` (or it was removed)"),
            )
            .into_response();
        }
        Ok(Err(e)) => return internal(e).into_response(),
        Err(e) => return internal(e).into_response(),
    }
    if let Some(leader) = crate::http::standby::leader_elsewhere(&state) {
        return crate::http::standby::refuse("a savepoint", &leader);
    }
    let who = caller.who(peer);
    tracing::info!(job = %name, %who, "savepoint asked for");
    let answer = state.reconciler.savepoint(&name, &who);
    // Answered before the listener would close the connection as idle.
    let wait = settings
        .http
        .idle_timeout
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(5));
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(location))) => {
            Json(serde_json::json!({"job": name, "location": location})).into_response()
        }
        Ok(Ok(Err(refused))) => refusal(&refused).into_response(),
        Ok(Err(_)) => refusal(&SavepointRefused::Gone).into_response(),
        Err(_) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "job": name,
                "status": "savepoint under way; `jobkeeper savepoints` lists it when it is done"
            })),
        )
            .into_response(),
    }
}

fn refusal(r: &SavepointRefused) -> ApiError {
    let status = match r {
        SavepointRefused::NoRun(_)
        | SavepointRefused::Stateless { .. }
        | SavepointRefused::Gone => StatusCode::CONFLICT,
        SavepointRefused::Failed(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, &r.to_string())
}
