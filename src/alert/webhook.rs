//! Chat-webhook alerts (reqwest, rustls with the ring provider) in the formats slack, dingtalk,
//! feishu, wecom and json.
//!
//! | format | body | success |
//! |---|---|---|
//! | slack | `{"text": ...}` | 2xx and the body `ok` |
//! | dingtalk | `{"msgtype": "markdown", "markdown": {"title", "text"}}` | 2xx and `errcode` 0 |
//! | feishu | `{"msg_type": "text", "content": {"text"}}` (+ `timestamp`, `sign`) | 2xx and `code` 0 |
//! | wecom | `{"msgtype": "markdown", "markdown": {"content"}}` | 2xx and `errcode` 0 |
//! | json | the whole [`Alert`] | 2xx |
//!
//! Signing (`secret_file`): DingTalk adds `timestamp` (ms) and `sign` query parameters, the
//! base64 HMAC-SHA256 of `"{timestamp}\n{secret}"` keyed with the secret; Feishu adds
//! `timestamp` (s) and `sign` body fields, the base64 HMAC-SHA256 of an empty message keyed
//! with `"{timestamp}\n{secret}"`.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Alert, AlertError, Delivery, Notifier};
use crate::settings::WebhookSettings;

/// Bound of connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer's body is kept in [`Delivery`] and errors.
pub const ANSWER_EXCERPT: usize = 300;

/// A webhook format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack incoming webhook.
    Slack,
    /// DingTalk robot, markdown message.
    DingTalk,
    /// Feishu (Lark) custom bot, text message.
    Feishu,
    /// WeCom (WeChat Work) group robot, markdown message.
    WeCom,
    /// The whole alert as JSON.
    Json,
}

impl Format {
    /// Parses a `format:` value.
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "slack" => Format::Slack,
            "dingtalk" => Format::DingTalk,
            "feishu" => Format::Feishu,
            "wecom" => Format::WeCom,
            "json" => Format::Json,
            _ => return None,
        })
    }
}

/// Posts alerts to one webhook URL.
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
    format: Format,
    secret: Option<String>,
}

impl WebhookNotifier {
    /// Checks the settings and reads the secret file.
    pub fn new(s: &WebhookSettings) -> Result<WebhookNotifier, AlertError> {
        let bad = |m: String| AlertError::Config(format!("webhook: {m}"));
        let url = reqwest::Url::parse(&s.url).map_err(|e| bad(format!("bad url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "url must be http:// or https://, not {}://",
                url.scheme()
            )));
        }
        let format = Format::parse(&s.format)
            .ok_or_else(|| bad(format!("unknown format `{}`", s.format)))?;
        let secret = match &s.secret_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| bad(format!("cannot read secret_file {}: {e}", p.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("jobkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(format!("cannot set up the HTTP client: {e}")))?;
        Ok(WebhookNotifier {
            client,
            url,
            format,
            secret,
        })
    }

    /// The URL and body an alert becomes at `now_ms` (Unix milliseconds; used for signing).
    pub fn request(&self, alert: &Alert, now_ms: i64) -> (reqwest::Url, Value) {
        let mut url = self.url.clone();
        let mut body = body(self.format, alert);
        if let Some(secret) = &self.secret {
            match self.format {
                Format::DingTalk => {
                    let sign = dingtalk_sign(now_ms, secret);
                    url.query_pairs_mut()
                        .append_pair("timestamp", &now_ms.to_string())
                        .append_pair("sign", &sign);
                }
                Format::Feishu => {
                    let ts = now_ms / 1000;
                    body["timestamp"] = json!(ts.to_string());
                    body["sign"] = json!(feishu_sign(ts, secret));
                }
                _ => {}
            }
        }
        (url, body)
    }
}

impl Format {
    /// The most a message may hold, in bytes, as each service documents it, and what the limit
    /// counts: WeCom caps a markdown message's `content` at 4,096 bytes; DingTalk refuses a
    /// message over 20,000 bytes (errcode 460101); Feishu refuses a request body over 20 KB;
    /// Slack truncates `text` past 40,000 characters (so 40,000 bytes is always within it).
    /// `None`: no limit (json).
    pub fn max_bytes(self) -> Option<usize> {
        match self {
            Format::WeCom => Some(4096),
            Format::DingTalk | Format::Feishu => Some(20_000),
            Format::Slack => Some(40_000),
            Format::Json => None,
        }
    }

    /// The size of `body` as the service counts it against [`Format::max_bytes`].
    fn measure(self, body: &Value) -> usize {
        let text = |v: &Value| v.as_str().map_or(0, str::len);
        match self {
            Format::WeCom => text(&body["markdown"]["content"]),
            Format::DingTalk => text(&body["markdown"]["text"]) + text(&body["markdown"]["title"]),
            Format::Slack => text(&body["text"]),
            Format::Feishu | Format::Json => body.to_string().len(),
        }
    }
}

/// The body of an alert in a format (unsigned), within the service's size limit: when the
/// whole alert does not fit, the start of its reason is cut (its end holds the error) so that
/// it does, leaving room for the signature fields.
pub fn body(format: Format, alert: &Alert) -> Value {
    let Some(max) = format.max_bytes() else {
        return render(format, alert);
    };
    // Room for Feishu's `timestamp` and `sign`, added after.
    let max = max.saturating_sub(128);
    let mut fitted = alert.clone();
    let mut v = render(format, &fitted);
    for _ in 0..4 {
        let size = format.measure(&v);
        if size <= max || fitted.reason.is_empty() {
            break;
        }
        // JSON escaping can make a byte of reason more than one byte of body: cut a margin.
        let over = size - max + 64;
        fitted.reason = keep_tail_bytes(&fitted.reason, fitted.reason.len().saturating_sub(over));
        v = render(format, &fitted);
    }
    v
}

/// The end of `text` in at most `max` bytes (cut at a character boundary), marked with `…`.
fn keep_tail_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let mut start = text.len() - budget;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

fn render(format: Format, alert: &Alert) -> Value {
    match format {
        Format::Slack => json!({ "text": alert.text() }),
        Format::DingTalk => json!({
            "msgtype": "markdown",
            "markdown": { "title": format!("[jobkeeper] {}", alert.title()), "text": alert.markdown() },
        }),
        Format::Feishu => json!({ "msg_type": "text", "content": { "text": alert.text() } }),
        Format::WeCom => {
            json!({ "msgtype": "markdown", "markdown": { "content": alert.markdown() } })
        }
        Format::Json => serde_json::to_value(alert).unwrap_or(Value::Null),
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// DingTalk's `sign` (before URL encoding): base64 HMAC-SHA256 of `"{timestamp_ms}\n{secret}"`
/// keyed with the secret.
pub fn dingtalk_sign(timestamp_ms: i64, secret: &str) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu's `sign`: base64 HMAC-SHA256 of an empty message keyed with
/// `"{timestamp_s}\n{secret}"`.
pub fn feishu_sign(timestamp_s: i64, secret: &str) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

fn excerpt(body: &str) -> String {
    let t = body.trim();
    if t.chars().count() <= ANSWER_EXCERPT {
        return t.to_string();
    }
    let cut: String = t.chars().take(ANSWER_EXCERPT).collect();
    format!("{cut}…")
}

/// Whether an answer means the robot accepted the message; `Err` says why not.
pub fn check_answer(format: Format, status: u16, body: &str) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {}", excerpt(body)));
    }
    let json = || serde_json::from_str::<Value>(body).ok();
    let code_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_i64);
    match format {
        Format::Slack if body.trim() != "ok" => {
            Err(format!("HTTP {status} but not `ok`: {}", excerpt(body)))
        }
        Format::DingTalk | Format::WeCom => {
            match json().as_ref().and_then(|v| code_of(v, "errcode")) {
                Some(0) => Ok(()),
                Some(code) => Err(format!("HTTP {status}, errcode {code}: {}", excerpt(body))),
                None => Err(format!(
                    "HTTP {status} without an errcode: {}",
                    excerpt(body)
                )),
            }
        }
        Format::Feishu => {
            let v = json();
            let code = v
                .as_ref()
                .and_then(|v| code_of(v, "code").or_else(|| code_of(v, "StatusCode")));
            match code {
                Some(0) => Ok(()),
                Some(code) => Err(format!("HTTP {status}, code {code}: {}", excerpt(body))),
                None => Err(format!("HTTP {status} without a code: {}", excerpt(body))),
            }
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, alert: &Alert) -> Result<Delivery, AlertError> {
        let (url, body) = self.request(alert, crate::store::now_ms());
        let resp = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                // The URL often holds the robot's access token: keep it out of logs and the store.
                let e = e.without_url();
                let mut msg = format!("webhook: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                AlertError::Transport(msg)
            })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| AlertError::Transport(format!("webhook: reading the answer: {e}")))?;
        match check_answer(self.format, status, &text) {
            Ok(()) => Ok(Delivery {
                answer: format!("HTTP {status}: {}", excerpt(&text))
                    .trim_end_matches([' ', ':'])
                    .to_string(),
            }),
            Err(why) if (500..600).contains(&status) || status == 429 => {
                Err(AlertError::Transport(format!("webhook: {why}")))
            }
            Err(why) => Err(AlertError::Refused(format!("webhook: {why}"))),
        }
    }
}
