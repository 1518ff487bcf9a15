//! Who a POST comes from: the all-jobs token (`api_token_file`) or a scoped one
//! (`api_tokens`), told apart by the bearer token; what each may do; and how audit events
//! name it (by the token file's name, never its value).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api::{constant_time_eq, error};
use crate::settings::{ScopedToken, Settings, token_name};

/// The holder of a token the daemon knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// The all-jobs token; the name of its file.
    All(String),
    /// A scoped token.
    Scoped(ScopedToken),
}

impl Caller {
    /// The name of the token's file, as audit events show it.
    pub fn token(&self) -> String {
        match self {
            Caller::All(name) => name.clone(),
            Caller::Scoped(t) => token_name(&t.file),
        }
    }

    /// Who asked, for audit events: the peer and the token's file name.
    pub fn who(&self, peer: std::net::SocketAddr) -> String {
        format!("the API from {peer} with token `{}`", self.token())
    }

    /// Why this caller may not restart job `name`, or `None` when it may.
    pub fn refuse_restart(&self, name: &str) -> Option<Response> {
        self.refuse_job(name, "restart")
    }

    /// Why this caller may not `act` on job `name` (restart it, take its savepoint), or `None`
    /// when it may.
    pub fn refuse_job(&self, name: &str, act: &str) -> Option<Response> {
        match self {
            Caller::Scoped(t) if !t.covers(name) => Some(forbidden(&format!(
                "token `{}` may {act} only the jobs matching {}; `{name}` is not among them",
                self.token(),
                globs(t)
            ))),
            _ => None,
        }
    }

    /// Why this caller may not call an endpoint for the whole repo (`what`), or `None`.
    pub fn refuse_whole_repo(&self, what: &str) -> Option<Response> {
        match self {
            Caller::Scoped(t) => Some(forbidden(&format!(
                "token `{}` is scoped to {}: it may not {what}; that needs the all-jobs token \
                 (`api_token_file`)",
                self.token(),
                globs(t)
            ))),
            Caller::All(_) => None,
        }
    }
}

fn globs(t: &ScopedToken) -> String {
    t.folders
        .iter()
        .map(|g| format!("`{}`", g.text))
        .collect::<Vec<_>>()
        .join(", ")
}

fn forbidden(msg: &str) -> Response {
    error(StatusCode::FORBIDDEN, msg).into_response()
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, msg).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// A token file's token; why it cannot be used.
fn read_token(file: &std::path::Path) -> Result<String, &'static str> {
    match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err("POST endpoints are disabled: the API token file is empty"),
        Err(e) => {
            tracing::error!(file = %file.display(), "cannot read an API token file: {e}");
            Err("POST endpoints are disabled: the API token file cannot be read")
        }
    }
}

/// The caller of a POST by its bearer token, or the 401 that refuses it. Token files are read
/// on each request (so they can be rotated) and compared in constant time.
pub fn caller(settings: &Settings, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let all = match settings.api_token_file.as_deref() {
        Some(file) => read_token(file).map(|t| (t, token_name(file))),
        None => Err("POST endpoints are disabled: the daemon config has no `api_token_file`"),
    };
    if let Err(msg) = &all
        && settings.api_tokens.is_empty()
    {
        return Err(Box::new(unauthorized(msg)));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return Err(Box::new(unauthorized(
            "missing `Authorization: Bearer <token>`",
        )));
    };
    if let Ok((token, name)) = &all
        && constant_time_eq(given.as_bytes(), token.as_bytes())
    {
        return Ok(Caller::All(name.clone()));
    }
    for scoped in &settings.api_tokens {
        if let Ok(token) = read_token(&scoped.file)
            && constant_time_eq(given.as_bytes(), token.as_bytes())
        {
            return Ok(Caller::Scoped(scoped.clone()));
        }
    }
    Err(Box::new(unauthorized("wrong token")))
}
