//! What the daemon's address answers while the store cannot be opened yet (a PostgreSQL that
//! does not answer at start): `/healthz` says the process is alive, `/readyz` and everything
//! else answer 503 with why and when the next try is. The real server takes the same socket
//! once the store is open.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Serves the waiting answers on `listener` until `stop` fires; `why` is the line `/readyz`
/// gives, kept current by the opener.
pub async fn serve_until(
    listener: TcpListener,
    why: watch::Receiver<String>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let why = Arc::new(why);
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { "alive: waiting for the store\n" }),
        )
        .fallback(not_ready)
        .with_state(why);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn not_ready(State(why): State<Arc<watch::Receiver<String>>>) -> (StatusCode, String) {
    let line = why.borrow().clone();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {line}\n"),
    )
}
