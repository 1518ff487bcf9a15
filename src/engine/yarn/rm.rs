//! The ResourceManager client: finds the active RM among several (HA), sends each request there
//! with the env's authentication, and tells the answers apart.
//!
//! - The active RM is found with `GET /ws/v1/cluster/info` (`haState`), which a standby answers
//!   too; it is kept until it answers 307 (a standby redirecting: it lost the leadership) or
//!   does not answer, then the RMs are asked again. A redirect is never followed (a SPNEGO
//!   token is bound to the host it was made for).
//! - No active RM, or no answer, is [`RmError::Unreachable`]: the caller waits, nothing fails.
//! - `auth: simple` adds `user.name=USER` to every request; `auth: kerberos` answers a 401
//!   `WWW-Authenticate: Negotiate` with a SPNEGO token ([`super::kerberos`]) and then keeps the
//!   RM's signed `hadoop.auth` cookie until the RM refuses it, so a steady state makes no
//!   handshake at all.
//! - An answer that is not JSON (an HTML login page of a gateway, say) is
//!   [`RmError::NotJson`], named with its first characters.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::kerberos::{Kerberos, KerberosError};
use crate::engine::cluster::lock;

/// Connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of every request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How requests prove who sends them.
#[derive(Clone)]
pub enum RmAuth {
    /// `user.name=USER` on every request, when a user is set.
    Simple(Option<String>),
    /// SPNEGO with tickets from the env's keytab.
    Kerberos(Arc<Kerberos>),
}

/// What went wrong asking the RM.
#[derive(Debug, thiserror::Error)]
pub enum RmError {
    /// No RM answered, or none is active: wait and ask again.
    #[error("{0}")]
    Unreachable(String),
    /// The RM answered something that is not JSON.
    #[error("{rm} answered {status} with {kind} instead of JSON: {start}")]
    NotJson {
        /// The RM.
        rm: String,
        /// Its status.
        status: StatusCode,
        /// Its `Content-Type`.
        kind: String,
        /// The first characters of the answer.
        start: String,
    },
    /// Kerberos could not make a token (keytab, principal, KDC).
    #[error(transparent)]
    Kerberos(#[from] KerberosError),
    /// The RM refused the credentials.
    #[error("{rm} refused jobkeeper's credentials ({status}): {text}")]
    Refused {
        /// The RM.
        rm: String,
        /// Its status.
        status: StatusCode,
        /// What it said.
        text: String,
    },
}

/// Counts of what the client sent, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct RmCounts {
    /// Requests sent to an RM (probes, handshake retries included).
    pub requests: AtomicU64,
    /// SPNEGO tokens made (each is a Kerberos handshake with the RM).
    pub handshakes: AtomicU64,
}

/// A client of the RMs of one env.
pub struct RmClient {
    rms: Vec<String>,
    auth: RmAuth,
    http: reqwest::Client,
    /// Index of the RM last found active.
    active: Mutex<Option<usize>>,
    /// The `hadoop.auth` cookie of each RM (by index), while it is accepted.
    cookies: Mutex<Vec<Option<String>>>,
    /// What was sent.
    pub counts: RmCounts,
}

/// One answer: its status and JSON body (`Null` for an empty one).
pub type Answer = (StatusCode, Value);

impl RmClient {
    /// A client of `rms` (web addresses without a trailing `/`).
    pub fn new(rms: Vec<String>, auth: RmAuth) -> Result<RmClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let n = rms.len();
        Ok(RmClient {
            rms,
            auth,
            http,
            active: Mutex::new(None),
            cookies: Mutex::new(vec![None; n]),
            counts: RmCounts::default(),
        })
    }

    /// The RMs, for messages.
    pub fn names(&self) -> String {
        self.rms.join(", ")
    }

    /// `GET path?query` on the active RM.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Answer, RmError> {
        self.call(Method::GET, path, query, None).await
    }

    /// `PUT path` with a JSON body on the active RM.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Answer, RmError> {
        self.call(Method::PUT, path, &[], Some(body)).await
    }

    /// Sends a request to the active RM, finding it first when none is known, and once more
    /// after a standby's 307 or no answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, RmError> {
        let mut last = None;
        for _ in 0..2 {
            let known = *lock(&self.active);
            let i = match known {
                Some(i) => i,
                None => self.find_active().await?,
            };
            match self.send(i, &method, path, query, body).await {
                Ok((StatusCode::TEMPORARY_REDIRECT, _)) => {
                    tracing::info!(rm = %self.rms[i], "the ResourceManager is a standby now");
                    last = Some(format!("{} answered 307 (standby)", self.rms[i]));
                    *lock(&self.active) = None;
                }
                Err(RmError::Unreachable(e)) => {
                    last = Some(e);
                    *lock(&self.active) = None;
                }
                r => return r,
            }
        }
        Err(RmError::Unreachable(format!(
            "no active ResourceManager answered: {}",
            last.unwrap_or_default()
        )))
    }

    /// Asks each RM's `cluster/info` for its HA state; the first ACTIVE one (or the only RM,
    /// when it names no HA state) is kept.
    async fn find_active(&self) -> Result<usize, RmError> {
        let mut seen = Vec::new();
        for i in 0..self.rms.len() {
            match self
                .send(i, &Method::GET, "/ws/v1/cluster/info", &[], None)
                .await
            {
                Ok((s, body)) if s.is_success() => {
                    let ha = body["clusterInfo"]["haState"].as_str().unwrap_or_default();
                    if ha == "ACTIVE" || (ha.is_empty() && self.rms.len() == 1) {
                        *lock(&self.active) = Some(i);
                        return Ok(i);
                    }
                    seen.push(format!(
                        "{} is {}",
                        self.rms[i],
                        if ha.is_empty() {
                            "of unknown HA state"
                        } else {
                            ha
                        }
                    ));
                }
                Ok((s, _)) => seen.push(format!("{} answered {s}", self.rms[i])),
                Err(RmError::Unreachable(e)) => seen.push(e),
                Err(e) => return Err(e),
            }
        }
        Err(RmError::Unreachable(format!(
            "no active ResourceManager: {}",
            seen.join("; ")
        )))
    }

    /// One request to RM `i`, with its credentials; a refused cookie or a Negotiate challenge
    /// is answered once with a fresh SPNEGO token.
    async fn send(
        &self,
        i: usize,
        method: &Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, RmError> {
        let rm = &self.rms[i];
        let mut token: Option<String> = None;
        for round in 0..2 {
            let mut req = self.http.request(method.clone(), format!("{rm}{path}"));
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let RmAuth::Simple(Some(user)) = &self.auth {
                q.push(("user.name", user));
            }
            if !q.is_empty() {
                req = req.query(&q);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let cookie = lock(&self.cookies)[i].clone();
            if let Some(t) = &token {
                req = req.header("Authorization", format!("Negotiate {t}"));
            } else if let Some(c) = &cookie {
                req = req.header("Cookie", format!("hadoop.auth={c}"));
            }
            self.counts.requests.fetch_add(1, Ordering::Relaxed);
            let resp = req.send().await.map_err(|e| {
                RmError::Unreachable(format!(
                    "{rm}: {} ({e})",
                    if e.is_timeout() {
                        "no answer in time"
                    } else {
                        "cannot connect"
                    }
                ))
            })?;
            let status = resp.status();
            if let Some(c) = auth_cookie(resp.headers()) {
                lock(&self.cookies)[i] = Some(c);
            }
            let negotiate = resp
                .headers()
                .get_all("WWW-Authenticate")
                .iter()
                .any(|v| v.to_str().unwrap_or_default().starts_with("Negotiate"));
            let kind = resp
                .headers()
                .get("Content-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let text = resp
                .text()
                .await
                .map_err(|e| RmError::Unreachable(format!("{rm}: the answer broke off ({e})")))?;
            if status == StatusCode::UNAUTHORIZED {
                if cookie.is_some() {
                    lock(&self.cookies)[i] = None;
                }
                match (&self.auth, round) {
                    (RmAuth::Kerberos(k), 0) if negotiate || cookie.is_some() => {
                        let host = reqwest::Url::parse(rm)
                            .ok()
                            .and_then(|u| u.host_str().map(str::to_string))
                            .unwrap_or_default();
                        self.counts.handshakes.fetch_add(1, Ordering::Relaxed);
                        token = Some(k.token(&host).await?);
                        continue;
                    }
                    _ => {
                        return Err(RmError::Refused {
                            rm: rm.clone(),
                            status,
                            text: first_chars(&text),
                        });
                    }
                }
            }
            if status == StatusCode::TEMPORARY_REDIRECT {
                return Ok((status, Value::Null));
            }
            if text.trim().is_empty() {
                return Ok((status, Value::Null));
            }
            return match serde_json::from_str(&text) {
                Ok(v) => Ok((status, v)),
                Err(_) => Err(RmError::NotJson {
                    rm: rm.clone(),
                    status,
                    kind: if kind.is_empty() {
                        "no Content-Type".into()
                    } else {
                        kind
                    },
                    start: first_chars(&text),
                }),
            };
        }
        Err(RmError::Refused {
            rm: rm.clone(),
            status: StatusCode::UNAUTHORIZED,
            text: "the RM refused a fresh SPNEGO token".into(),
        })
    }
}

/// The `hadoop.auth` cookie an answer sets, when it sets a non-empty one.
fn auth_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get_all("Set-Cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let rest = v.strip_prefix("hadoop.auth=")?;
        let value = rest.split(';').next()?.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The first 160 characters of a text on one line, for messages.
fn first_chars(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_cookie_is_read_from_set_cookie() {
        let mut h = reqwest::header::HeaderMap::new();
        h.append("Set-Cookie", "JSESSIONID=1; Path=/".parse().unwrap());
        h.append(
            "Set-Cookie",
            "hadoop.auth=\"u=jk&p=jk@TEST&t=kerberos&e=1&s=abc\"; Path=/; HttpOnly"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            auth_cookie(&h).as_deref(),
            Some("u=jk&p=jk@TEST&t=kerberos&e=1&s=abc")
        );
        let mut cleared = reqwest::header::HeaderMap::new();
        cleared.append("Set-Cookie", "hadoop.auth=; Path=/".parse().unwrap());
        assert_eq!(auth_cookie(&cleared), None);
    }

    #[test]
    fn first_chars_are_one_line() {
        assert_eq!(
            first_chars("<html>\n  <body>Login</body>\n</html>"),
            "<html> <body>Login</body> </html>"
        );
    }
}
