//! The HTTP server on `listen` (SPEC "HTTP API"): health and readiness, `/metrics`, the JSON API
//! ([`api`], [`clusters`], [`unmanaged`], [`savepoints`]), git webhooks ([`hooks`]), the status page
//! ([`page`]), who leads ([`leaderz`]), a page per job ([`job_page`]) and the jars spark workers fetch ([`artifacts`]).
//! The counts over every job that the page and `/metrics` show are kept between changes
//! ([`counts`]).
//!
//! Connections are accepted and driven by [`listener`], within the daemon config's `http:`
//! limits (connection cap, header and idle timeouts). Every request body is limited to
//! [`MAX_BODY`] (413 above it) and read to its end without being kept, whether or not its
//! handler wants it ([`limit_body`]); the two webhook endpoints take up to [`MAX_HOOK_BODY`],
//! since GitHub delivers push payloads of up to 25 MB (a 2,048-commit push is 2.2 MB), refuse a
//! missing or malformed proof before reading the body, and hold the body within the shared
//! `http.hook_buffer` while its signature is checked ([`body`]). POST endpoints need an API
//! token: the all-jobs one or a scoped one ([`access`]); webhooks are verified with the webhook secret. Neither secret is
//! ever logged or echoed.

pub mod access;
pub mod api;
pub mod artifacts;
pub mod body;
pub mod clusters;
pub mod counts;
pub mod hooks;
pub mod job_page;
pub mod kept_page;
pub mod leaderz;
pub mod listener;
pub mod page;
pub mod savepoints;
pub mod shown;
pub mod standby;
pub mod unmanaged;
pub mod waiting;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};

use self::body::{BodyError, HookBuffer};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::Alerter;
use crate::engine::ServedJars;
use crate::metrics::{Metrics, Snapshot};
use crate::reconcile::Reconciler;
use crate::repo::TriggerControl;
use crate::settings::{Live, Settings};
use crate::store::Store;

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// The largest webhook body accepted: 25 MiB (GitHub's cap on push payloads is 25 MB).
pub const MAX_HOOK_BODY: usize = 25 * 1024 * 1024;

/// What the handlers read and act on.
pub struct ApiState {
    /// Set after the first reconcile.
    pub ready: AtomicBool,
    /// The daemon config as it is now (token and secret file paths, `secrets_dir`, envs): read
    /// at each use, so a reload (SIGHUP) applies to the next request.
    pub settings: Live,
    /// The daemon config at start, for the fields taken only at start (`state_dir`, `repo`).
    pub started: Arc<Settings>,
    /// The store: jobs, runs, events.
    pub store: Store,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The job actors, for restarts.
    pub reconciler: Arc<Reconciler>,
    /// The alerter, for its counters.
    pub alerter: Option<Alerter>,
    /// Asks the daemon loop for a fetch; set once the trigger task runs.
    pub trigger: OnceLock<TriggerControl>,
    /// The jars served to spark workers.
    pub shelf: ServedJars,
    /// The bytes webhook bodies may hold before their signature is checked (`http.hook_buffer`).
    pub hook_buffer: HookBuffer,
    /// The counts over every job, kept while nothing they come from changed.
    pub counts: counts::KeptCounts,
    /// Who leads ([`crate::ha`]): `GET /leaderz` and `jobkeeper_leader`.
    pub leadership: crate::ha::LeaderWatch,
    /// The status page's answers, kept while nothing they come from changed.
    pub pages: kept_page::KeptPages,
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(page::status_page))
        .route(page::SCRIPT_PATH, get(page::script))
        .route("/jobs/{*name}", get(job_page::job_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/leaderz", get(leaderz::leaderz))
        .route("/metrics", get(metrics))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/clusters", get(clusters::clusters))
        .route("/api/v1/unmanaged", get(unmanaged::unmanaged))
        .route("/api/v1/jobs/{name}", get(api::job))
        .route("/api/v1/jobs/{name}/logs", get(api::logs))
        .route("/api/v1/jobs/{name}/restart", post(api::restart))
        .route("/api/v1/jobs/{name}/savepoint", post(savepoints::take))
        .route("/api/v1/jobs/{name}/savepoints", get(savepoints::list))
        .route("/api/v1/sync", post(api::sync))
        .route(
            "/artifacts/{digest}/{token}/{name}",
            get(artifacts::artifact),
        )
        .fallback(|| async { api::error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .merge(
            // The webhooks read their bodies themselves, within `http.hook_buffer` ([`body`]).
            Router::new()
                .route("/hooks/github", post(hooks::github))
                .route("/hooks/gitlab", post(hooks::gitlab)),
        )
        .with_state(state)
}

/// Reads a request's body to its end before its handler runs, keeping none of it: 413 when it
/// is over [`MAX_BODY`] (at once when its `Content-Length` says so, else once that much was
/// read), 408 when it is not whole within `http.body_timeout`. Handlers that never read the
/// body (`POST /api/v1/sync`, restarts) are covered too, so no endpoint takes a body of any size.
pub async fn limit_body(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let within = state.started.http.body_timeout;
    match body::drain(&parts.headers, body, MAX_BODY, within).await {
        Ok(()) => next.run(Request::from_parts(parts, Body::empty())).await,
        Err(e) => body_refused(&e).into_response(),
    }
}

/// The answer to a body that was not read whole: 413, 503, 408 or 400, saying why.
pub fn body_refused(e: &BodyError) -> api::ApiError {
    let status = match e {
        BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        BodyError::Broken(_) => StatusCode::BAD_REQUEST,
    };
    api::error(status, &e.to_string())
}

async fn readyz(State(state): State<Arc<ApiState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else if standby::leader_elsewhere(&state).is_some() {
        // A standby serves reads from the store: ready for them (`/leaderz` says it does not
        // lead).
        (StatusCode::OK, "ready: a standby, serving reads\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: first reconcile not done\n",
        )
    }
}

/// `GET /metrics`; a store that cannot be read answers 500 (the error is logged), not
/// figures with the store's part missing.
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let st = state.clone();
    let snap = tokio::task::spawn_blocking(move || {
        let counts = counts::counts(&st)?;
        Ok::<_, crate::store::StoreError>(Snapshot {
            jobs_by_state: counts.states.clone(),
            jobs_unreadable: st.store.blocking().unreadable_jobs()?,
            applied_commit: st.store.blocking().applied_commit()?,
            store_write_errors: st.store.write_errors(),
            store_read_errors: st.store.read_errors(),
            alerts: st.alerter.as_ref().map(Alerter::stats).unwrap_or_default(),
            ready: st.ready.load(Ordering::Acquire),
            unmanaged: st.reconciler.context().unmanaged.counts(),
            job_problems: counts.conditions.clone(),
            leader: st.leadership.borrow().leader,
            lease_epoch: st.leadership.borrow().epoch,
        })
    })
    .await;
    let snap = match snap {
        Ok(Ok(snap)) => snap,
        Ok(Err(e)) => return api::internal(format!("metrics: {e}")).into_response(),
        Err(e) => return api::internal(format!("metrics: {e}")).into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&snap),
    )
        .into_response()
}

/// Serves until `cancel` fires, within the daemon config's `http:` limits ([`listener`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (limits, metrics) = (state.started.http, state.metrics.clone());
    listener::serve(listener, router(state), limits, metrics, cancel).await
}
