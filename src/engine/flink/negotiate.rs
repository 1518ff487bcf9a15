//! SPNEGO to a JobManager that demands it: a Flink REST API behind a gateway (apache with
//! `mod_auth_gssapi`, Knox) answering `401 WWW-Authenticate: Negotiate`. Flink's REST API has
//! no Kerberos of its own; the tokens come from the env's Kerberos identity (on YARN, the same
//! one that speaks to the ResourceManager, [`crate::engine::yarn::kerberos`]).
//!
//! - A request goes out as it is until the JobManager first demands Negotiate; it is then sent
//!   again with a fresh token (`Authorization: Negotiate …`, one per request: a token is never
//!   replayed), and so is every request after it.
//! - The cookies an authenticated answer sets (the gateway's session) are sent instead of a
//!   token until a 401 refuses them, so a steady state makes no handshake at all.
//! - A request whose body cannot be sent twice (a jar upload) carries a token from the start
//!   once the JobManager is known to demand one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::engine::EngineError;
use crate::engine::cluster::lock;

/// Makes SPNEGO tokens.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A fresh SPNEGO token (base64) for the service `HTTP@host`.
    async fn token(&self, host: &str) -> Result<String, EngineError>;
}

/// The SPNEGO state of one JobManager address.
pub struct Negotiator {
    source: std::sync::Arc<dyn TokenSource>,
    host: String,
    /// The JobManager answered a 401 demanding Negotiate.
    demanded: AtomicBool,
    /// The cookies of its last authenticated answer (`a=1; b=2`), until refused.
    cookie: Mutex<Option<String>>,
    /// Tokens made (each a handshake with the gateway).
    pub handshakes: AtomicU64,
}

impl Negotiator {
    /// SPNEGO to the JobManager on `host` with tokens from `source`.
    pub fn new(source: std::sync::Arc<dyn TokenSource>, host: &str) -> Negotiator {
        Negotiator {
            source,
            host: host.to_string(),
            demanded: AtomicBool::new(false),
            cookie: Mutex::new(None),
            handshakes: AtomicU64::new(0),
        }
    }

    async fn fresh(&self) -> Result<String, EngineError> {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        Ok(format!(
            "Negotiate {}",
            self.source.token(&self.host).await?
        ))
    }

    /// Sends `req` with the JobManager's credentials: its cookie, else a token once it demands
    /// one; a 401 demanding Negotiate is answered once with a fresh token. `broke` names a
    /// request that got no answer.
    pub async fn send(
        &self,
        req: RequestBuilder,
        broke: impl Fn(&reqwest::Error) -> EngineError,
    ) -> Result<Response, EngineError> {
        let retry = req.try_clone();
        let cookie = lock(&self.cookie).clone();
        let demanded = self.demanded.load(Ordering::Relaxed);
        let (first, with_token) = match &cookie {
            Some(c) => (req.header(COOKIE, c), false),
            None if demanded => (req.header(AUTHORIZATION, self.fresh().await?), true),
            None => (req, false),
        };
        let resp = first.send().await.map_err(|e| broke(&e))?;
        if resp.status() != StatusCode::UNAUTHORIZED || !demands_negotiate(resp.headers()) {
            self.keep_cookie(&resp);
            return Ok(resp);
        }
        *lock(&self.cookie) = None;
        self.demanded.store(true, Ordering::Relaxed);
        match retry {
            Some(again) if !with_token => {
                let resp = again
                    .header(AUTHORIZATION, self.fresh().await?)
                    .send()
                    .await
                    .map_err(|e| broke(&e))?;
                self.keep_cookie(&resp);
                Ok(resp)
            }
            _ => Ok(resp),
        }
    }

    /// Keeps the cookies an authenticated answer sets.
    fn keep_cookie(&self, resp: &Response) {
        if resp.status() == StatusCode::UNAUTHORIZED {
            return;
        }
        if let Some(c) = cookies(resp.headers()) {
            *lock(&self.cookie) = Some(c);
        }
    }
}

/// Whether an answer's `WWW-Authenticate` offers Negotiate.
fn demands_negotiate(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .any(|v| v.to_str().unwrap_or_default().starts_with("Negotiate"))
}

/// The `name=value` pairs of an answer's `Set-Cookie` headers with a value, as a `Cookie`
/// header (`a=1; b=2`); `None` when it sets none.
fn cookies(headers: &HeaderMap) -> Option<String> {
    let pairs: Vec<String> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let pair = v.to_str().ok()?.split(';').next()?.trim();
            let (name, value) = pair.split_once('=')?;
            let value = value.trim().trim_matches('"');
            (!name.is_empty() && !value.is_empty()).then(|| pair.to_string())
        })
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_the_pairs_with_a_value() {
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            "hadoop.auth=\"u=jk&t=k\"; Path=/; HttpOnly"
                .parse()
                .unwrap(),
        );
        h.append(SET_COOKIE, "gone=; Path=/".parse().unwrap());
        h.append(SET_COOKIE, "s=1".parse().unwrap());
        assert_eq!(
            cookies(&h).as_deref(),
            Some("hadoop.auth=\"u=jk&t=k\"; s=1")
        );
        let mut cleared = HeaderMap::new();
        cleared.append(SET_COOKIE, "gone=; Path=/".parse().unwrap());
        assert_eq!(cookies(&cleared), None);
        let mut w = HeaderMap::new();
        w.append(WWW_AUTHENTICATE, "Basic realm=x".parse().unwrap());
        assert!(!demands_negotiate(&w));
        w.append(WWW_AUTHENTICATE, "Negotiate".parse().unwrap());
        assert!(demands_negotiate(&w));
    }
}
