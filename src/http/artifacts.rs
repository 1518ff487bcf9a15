//! `GET /artifacts/{digest}/{token}/{name}`: the jars spark workers fetch (see
//! [`crate::engine::spark::artifacts`]). A jar is sent only to a request naming its digest and
//! its token; any other request under `/artifacts/` (a wrong token, an unknown digest, a folder)
//! gets the same 404, so nothing can be listed or probed. `name` is only for the fetcher, which
//! names the file it saves after the URL. No API token is asked: workers have none.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::api;

/// Sends the jar of `digest` when `token` is its token.
pub async fn artifact(
    State(state): State<Arc<ApiState>>,
    Path((digest, token, _name)): Path<(String, String, String)>,
) -> Response {
    let not_found = || api::error(StatusCode::NOT_FOUND, "no such artifact").into_response();
    let Some(path) = state.shelf.find(&digest, &token) else {
        return not_found();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return not_found(),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return not_found(),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, "application/java-archive".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CACHE_CONTROL,
                "private, max-age=86400, immutable".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}
