//! Git webhooks: `POST /hooks/github` (verified by `X-Hub-Signature-256`, the HMAC-SHA256 of the
//! raw body keyed with the webhook secret) and `POST /hooks/gitlab` (`X-Gitlab-Token`, the secret
//! itself). Both compare in constant time; a bad or missing proof is 401, a body over 25 MiB
//! 413 (GitHub's own cap on push payloads is 25 MB).
//!
//! Nothing of the body is read while the proof can be refused from the headers alone: webhooks
//! disabled, no proof, a GitHub signature that is not `sha256=` and 64 hex digits, a wrong
//! GitLab token. A GitHub body is then read within the shared `http.hook_buffer` (503 when it
//! does not fit, before it is read; [`super::body`]) and its HMAC computed as it arrives.
//!
//! A push to the config repo's branch asks for one fetch at once (202); the trigger channel holds
//! one pending fetch, so a burst of hooks becomes one fetch. Other events (ping, other branches,
//! tags) are answered 200 and ignored. That decision is [`read_push`], a pure function of the
//! payload's bytes.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;

use super::api::{ApiError, constant_time_eq, error};
use super::body::{BodyError, HeldBody};
use super::{ApiState, MAX_HOOK_BODY, body_refused};
use crate::repo::TriggerReason;
use crate::settings::Settings;

/// The fields of a push payload that matter (GitHub and GitLab share them).
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// GitLab: `push`, `tag_push`, ...
    object_kind: Option<String>,
    /// GitLab system hooks: `push`, `project_create`, `repository_update`, ...
    event_name: Option<String>,
}

/// The webhook secret, or why webhooks are refused.
fn secret(settings: &Settings) -> Result<Vec<u8>, ApiError> {
    let unauthorized = |m: &str| error(StatusCode::UNAUTHORIZED, m);
    let Some(file) = settings.webhook_secret_file.as_deref() else {
        return Err(unauthorized(
            "webhooks are disabled: the daemon config has no `webhook_secret_file`",
        ));
    };
    match std::fs::read_to_string(file) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => Err(unauthorized(
            "webhooks are disabled: the webhook secret file is empty",
        )),
        Err(e) => {
            tracing::error!(file = %file.display(), "cannot read the webhook secret file: {e}");
            Err(unauthorized(
                "webhooks are disabled: the webhook secret file cannot be read",
            ))
        }
    }
}

fn fail(status: StatusCode, message: &str) -> Response {
    error(status, message).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The HMAC a GitHub signature header (`sha256=<64 hex digits>`) carries, if well formed.
pub fn parse_signature(signature: &str) -> Option<Vec<u8>> {
    signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h.trim()).ok())
        .filter(|mac| mac.len() == 32)
}

/// True when `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed with `secret`.
pub fn github_signature_ok(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(given) = parse_signature(signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).is_ok()
}

/// `POST /hooks/github`.
pub async fn github(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Only the signature's form can be checked before the body is read.
    let well_formed = |_: &[u8], sig: &str| parse_signature(sig).is_some();
    let secret = match authenticate(
        &state,
        "github",
        &headers,
        "X-Hub-Signature-256",
        "bad",
        well_formed,
    ) {
        Ok(secret) => secret,
        Err(refused) => return refused.into_response(),
    };
    let given = header(&headers, "x-hub-signature-256").and_then(parse_signature);
    let (Some(given), Ok(mut mac)) = (given, Hmac::<sha2::Sha256>::new_from_slice(&secret)) else {
        return refuse(&state, "github", "bad", "X-Hub-Signature-256").into_response();
    };
    let body = match read_body(&state, "github", &headers, body, |chunk| mac.update(chunk)).await {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    // `verify_slice` compares in constant time.
    if mac.verify_slice(&given).is_err() {
        return refuse(&state, "github", "bad", "X-Hub-Signature-256").into_response();
    }
    match header(&headers, "x-github-event") {
        Some("push") => {}
        Some(event) => return ignored(&state, "github", &format!("event `{event}`")),
        None => {
            state.metrics.webhook("github", "malformed");
            return fail(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
        }
    }
    // GitHub sends JSON, or `payload=<json>` as a form when so configured.
    let json = if header(&headers, "content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        github_form_payload(&body.bytes)
    } else {
        body.bytes
    };
    push(&state, "github", &json)
}

/// `POST /hooks/gitlab`.
pub async fn gitlab(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let check = |secret: &[u8], token: &str| constant_time_eq(token.trim().as_bytes(), secret);
    if let Err(refused) = authenticate(&state, "gitlab", &headers, "X-Gitlab-Token", "wrong", check)
    {
        return refused.into_response();
    }
    match header(&headers, "x-gitlab-event") {
        Some("Push Hook" | "System Hook") | None => {}
        Some(event) => return ignored(&state, "gitlab", &format!("event `{event}`")),
    }
    match read_body(&state, "gitlab", &headers, body, |_| {}).await {
        Ok(body) => push(&state, "gitlab", &body.bytes),
        Err(refused) => refused.into_response(),
    }
}

/// Reads a hook's body within `http.hook_buffer` and `http.body_timeout`, each chunk handed to
/// `each`; a refusal is the answer, and a full buffer is counted as `busy`.
async fn read_body(
    state: &ApiState,
    source: &'static str,
    headers: &HeaderMap,
    body: Body,
    each: impl FnMut(&[u8]),
) -> Result<HeldBody, ApiError> {
    let within = state.started.http.body_timeout;
    let read = state
        .hook_buffer
        .read(headers, body, MAX_HOOK_BODY, within, each);
    read.await.map_err(|e| {
        if matches!(e, BodyError::Busy) {
            state.metrics.webhook(source, "busy");
            tracing::debug!(source, "webhook refused: {e}");
        }
        body_refused(&e)
    })
}

/// Checks a hook's credential header (`name`) against the webhook secret with `valid`, from
/// the headers alone; every refusal (`Err`) is a 401 saying what was missing or `bad`, and is
/// counted. Gives the secret.
fn authenticate(
    state: &ApiState,
    source: &'static str,
    headers: &HeaderMap,
    name: &str,
    bad: &str,
    valid: impl FnOnce(&[u8], &str) -> bool,
) -> Result<Vec<u8>, ApiError> {
    let secret = secret(&state.settings.get()).inspect_err(|_| {
        state.metrics.webhook(source, "unauthorized");
    })?;
    let Some(given) = header(headers, &name.to_ascii_lowercase()) else {
        state.metrics.webhook(source, "unauthorized");
        return Err(error(StatusCode::UNAUTHORIZED, &format!("missing {name}")));
    };
    if !valid(&secret, given) {
        return Err(refuse(state, source, bad, name));
    }
    Ok(secret)
}

/// A 401 for a proof that is `bad` in header `name`, counted and logged.
fn refuse(state: &ApiState, source: &'static str, bad: &str, name: &str) -> ApiError {
    state.metrics.webhook(source, "unauthorized");
    tracing::warn!(source, "refused a webhook: {bad} {name}");
    error(StatusCode::UNAUTHORIZED, &format!("{bad} {name}"))
}

fn ignored(state: &ApiState, source: &'static str, what: &str) -> Response {
    state.metrics.webhook(source, "ignored");
    tracing::debug!(source, "webhook ignored: {what}");
    (
        StatusCode::OK,
        Json(serde_json::json!({ "status": "ignored", "reason": format!("{what} does not change the config branch") })),
    )
        .into_response()
}

/// The JSON of a GitHub hook sent as a form (`payload=<json>`, GitHub's
/// `application/x-www-form-urlencoded` content type); empty when the form has no `payload`.
pub fn github_form_payload(body: &[u8]) -> Vec<u8> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()
        .and_then(|f| f.into_iter().find(|(k, _)| k == "payload"))
        .map(|(_, v)| v.into_bytes())
        .unwrap_or_default()
}

/// What a verified push payload asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushVerdict {
    /// A push to the config branch (this ref): fetch at once.
    Fetch(String),
    /// Another kind of event or a push to another ref: acknowledged, nothing to do; says what
    /// the payload was (`a push to `refs/heads/dev``).
    Ignore(String),
    /// Not a push event; says why.
    Malformed(String),
}

/// Reads a push payload, GitHub's or GitLab's JSON (they share `ref`; GitLab adds
/// `object_kind`), and decides whether it moved `refs/heads/<branch>`. Pure: the credential is
/// checked before, the fetch is asked for after.
pub fn read_push(body: &[u8], branch: &str) -> PushVerdict {
    // serde reads a struct from a JSON list too (fields in order): `["refs/heads/main"]` was
    // taken for a push.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return PushVerdict::Malformed(
            "the body is not a push event: expected a JSON object".to_string(),
        );
    }
    let push: Push = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return PushVerdict::Malformed(format!("the body is not a push event: {e}")),
    };
    if let Some(kind) = push.object_kind.filter(|k| k != "push") {
        return PushVerdict::Ignore(format!("a `{kind}` event"));
    }
    // A GitLab system hook that is not a push (project_create, user_create, repository_update):
    // acknowledged like any other event that is not a push.
    if let Some(name) = push.event_name.filter(|n| n != "push") {
        return PushVerdict::Ignore(format!("a `{name}` event"));
    }
    let Some(git_ref) = push.git_ref else {
        return PushVerdict::Malformed("the push event has no `ref`".to_string());
    };
    if git_ref != format!("refs/heads/{branch}") {
        return PushVerdict::Ignore(format!("a push to `{git_ref}`"));
    }
    PushVerdict::Fetch(git_ref)
}

/// A verified push payload: a fetch when it moved the config branch.
fn push(state: &ApiState, source: &'static str, body: &[u8]) -> Response {
    let git_ref = match read_push(body, &state.started.repo.branch) {
        PushVerdict::Fetch(git_ref) => git_ref,
        PushVerdict::Ignore(what) => return ignored(state, source, &what),
        PushVerdict::Malformed(why) => {
            state.metrics.webhook(source, "malformed");
            return fail(StatusCode::BAD_REQUEST, &why);
        }
    };
    if let Some(leader) = crate::http::standby::leader_elsewhere(state) {
        // Recorded for the leader, which fetches; the answer does not wait for the store.
        let store = state.store.clone();
        tokio::spawn(async move {
            let who = format!("{source} webhook");
            if let Err(e) = store
                .record_request(crate::store::RequestKind::Sync, &who)
                .await
            {
                tracing::warn!("a standby could not record a {who} for the leader: {e}");
            }
        });
        state.metrics.webhook(source, "fetch");
        return (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "status": "recorded for the leader",
                "leader": leader,
                "note": "this daemon is a standby: the leader fetches",
            })),
        )
            .into_response();
    }
    let Some(trigger) = state.trigger.get() else {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is still starting",
        );
    };
    let queued = trigger.trigger(TriggerReason::Webhook);
    state.metrics.webhook(source, "fetch");
    tracing::debug!(source, queued, "webhook: push to {git_ref}: fetch");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "fetch", "ref": git_ref, "queued": queued })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_is_hmac_sha256_of_the_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(b"other", b"Hello, World!", sig));
        assert!(!github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!github_signature_ok(b"k", b"b", "sha1=00"));
        assert!(!github_signature_ok(b"k", b"b", "sha256=zz"));
        // Only `sha256=` and 64 hex digits is a signature; anything else is refused unread.
        assert!(parse_signature(sig).is_some());
        assert!(parse_signature("sha256=00").is_none());
        assert!(parse_signature(&format!("sha256={}", "0".repeat(64))).is_some());
        assert!(parse_signature(&format!("sha1={}", "0".repeat(40))).is_none());
    }

    #[test]
    fn read_push_fetches_only_for_the_config_branch() {
        let v = |body: &str| read_push(body.as_bytes(), "main");
        assert_eq!(
            v(r#"{"ref":"refs/heads/main"}"#),
            PushVerdict::Fetch("refs/heads/main".into())
        );
        assert_eq!(
            v(r#"{"object_kind":"push","ref":"refs/heads/main"}"#),
            PushVerdict::Fetch("refs/heads/main".into())
        );
        assert_eq!(
            v(r#"{"ref":"refs/heads/dev"}"#),
            PushVerdict::Ignore("a push to `refs/heads/dev`".into())
        );
        assert_eq!(
            v(r#"{"object_kind":"tag_push","ref":"refs/tags/v1"}"#),
            PushVerdict::Ignore("a `tag_push` event".into())
        );
        assert_eq!(
            v(r#"{"before":"0"}"#),
            PushVerdict::Malformed("the push event has no `ref`".into())
        );
        assert!(matches!(v("{"), PushVerdict::Malformed(m) if m.starts_with("the body is not")));
        // Found while writing the fuzz target's properties (`fuzz/`, target `webhook`).
        assert_eq!(
            v(r#"["refs/heads/main"]"#),
            PushVerdict::Malformed("the body is not a push event: expected a JSON object".into())
        );
    }

    #[test]
    fn gitlab_system_hooks_that_are_not_pushes_are_ignored_not_malformed() {
        // Shapes of GitLab's published system hook payloads (docs: "System hooks").
        let v = |body: &str| read_push(body.as_bytes(), "main");
        for (name, body) in [
            (
                "project_create",
                r#"{"created_at":"2012-07-21T07:30:54Z","updated_at":"2012-07-21T07:38:22Z","event_name":"project_create","name":"StoreCloud","owner_email":"johnsmith@example.com","owner_name":"John Smith","path":"storecloud","path_with_namespace":"jsmith/storecloud","project_id":74,"project_visibility":"private"}"#,
            ),
            (
                "user_create",
                r#"{"created_at":"2012-07-21T07:44:07Z","updated_at":"2012-07-21T07:38:22Z","email":"js@gitlabhq.com","event_name":"user_create","name":"John Smith","username":"js","user_id":41}"#,
            ),
            (
                "group_create",
                r#"{"created_at":"2012-07-21T07:30:54Z","updated_at":"2012-07-21T07:38:22Z","event_name":"group_create","name":"StoreCloud","path":"storecloud","group_id":78}"#,
            ),
            (
                "key_create",
                r#"{"event_name":"key_create","created_at":"2014-08-18 18:45:16 UTC","updated_at":"2012-07-21T07:38:22Z","username":"root","key":"ssh-rsa AAAA","id":4}"#,
            ),
            (
                "repository_update",
                r#"{"event_name":"repository_update","user_id":1,"user_name":"John Smith","user_email":"admin@example.com","project_id":1,"changes":[{"before":"8205ea8d81ce0c6b90fbe8280d118cc9fdad6130","after":"4045ea7a3df38697b3730a20fb73c8bed8a3e69e","ref":"refs/heads/main"}],"refs":["refs/heads/main"]}"#,
            ),
        ] {
            assert_eq!(
                v(body),
                PushVerdict::Ignore(format!("a `{name}` event")),
                "{name}"
            );
        }
        // A system hook's push carries `event_name: push` and is a push like any other.
        assert_eq!(
            v(r#"{"object_kind":"push","event_name":"push","ref":"refs/heads/main"}"#),
            PushVerdict::Fetch("refs/heads/main".into())
        );
    }

    #[test]
    fn github_form_payload_is_the_payload_field() {
        assert_eq!(
            github_form_payload(b"a=1&payload=%7B%22ref%22%3A1%7D"),
            br#"{"ref":1}"#
        );
        assert!(github_form_payload(b"a=1").is_empty());
    }
}
