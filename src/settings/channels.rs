//! Alert channels of the daemon config (`alerts:`): their types, the events a channel may
//! ask for, and reading and checking each channel's email and webhook delivery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::read::path_field;
use crate::event::EventKind;
use crate::yaml::{Checker, Node, Value};

/// One alert channel.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChannel {
    /// Email delivery, if set.
    pub email: Option<EmailSettings>,
    /// Webhook delivery, if set.
    pub webhook: Option<WebhookSettings>,
    /// Events this channel wants; `None` means all but info events.
    pub on: Option<Vec<EventKind>>,
}

/// `email:` of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `smtp://host:port` or `smtps://host:port`.
    pub smtp: String,
    /// Upgrade with STARTTLS.
    pub starttls: bool,
    /// Login user.
    pub user: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// `webhook:` of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// slack | dingtalk | feishu | wecom | json.
    pub format: String,
    /// Signing secret file (dingtalk, feishu).
    pub secret_file: Option<PathBuf>,
}

/// The words of the alert events a channel's `on:` may name ([`EventKind::ALERTS`]); the
/// info ones ([`EventKind::INFO`]) go only to channels that name them.
pub fn alert_event_words() -> Vec<&'static str> {
    EventKind::ALERTS.iter().map(|k| k.as_str()).collect()
}

/// Webhook formats.
pub const WEBHOOK_FORMATS: &[&str] = &["slack", "dingtalk", "feishu", "wecom", "json"];

const CHANNEL_FIELDS: &[&str] = &["email", "webhook", "on"];
const EMAIL_FIELDS: &[&str] = &["smtp", "starttls", "user", "password_file", "from", "to"];
const WEBHOOK_FIELDS: &[&str] = &["url", "format", "secret_file"];

/// A list of channel names that must all exist.
pub(super) fn check_channels(
    c: &mut Checker,
    n: &Node,
    name: &str,
    channels: &BTreeMap<String, AlertChannel>,
) -> Vec<String> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`{name}`: expected a list of channel names, found {}",
                n.kind_name()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(ch) = c.string(item, &format!("{name}[{i}]")) else {
            continue;
        };
        if !channels.contains_key(&ch) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            c.error(
                item,
                format!(
                    "unknown alert channel `{ch}`; known channels: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        out.push(ch);
    }
    out
}

/// The `alerts:` mapping `n`; paths are resolved against `base`.
pub(super) fn read_channels(
    c: &mut Checker,
    n: &Node,
    base: &Path,
) -> BTreeMap<String, AlertChannel> {
    let mut alerts = BTreeMap::new();
    for (k, v) in c.free_mapping(n, "alerts") {
        let Some(name) = c.string(k, "alerts key") else {
            continue;
        };
        if let Some(ch) = read_channel(c, v, &name, base) {
            alerts.insert(name, ch);
        }
    }
    alerts
}

fn read_channel(c: &mut Checker, n: &Node, name: &str, base: &Path) -> Option<AlertChannel> {
    let section = format!("alerts.{name}");
    let f = c.mapping(n, &section, CHANNEL_FIELDS)?;
    let email = f
        .get("email")
        .and_then(|v| read_email(c, v, &format!("{section}.email"), base));
    let webhook = f
        .get("webhook")
        .and_then(|v| read_webhook(c, v, &format!("{section}.webhook"), base));
    if f.get("email").is_none() && f.get("webhook").is_none() {
        c.error(
            n,
            format!(
                "alert channel `{name}` has neither `email` nor `webhook`; expected at least one"
            ),
        );
    }
    let on = f.get("on").and_then(|v| read_on(c, v, &section));
    Some(AlertChannel { email, webhook, on })
}

/// The `email:` block `v` of a channel (`es` in messages).
fn read_email(c: &mut Checker, v: &Node, es: &str, base: &Path) -> Option<EmailSettings> {
    let ef = c.mapping(v, es, EMAIL_FIELDS)?;
    let smtp = c.required_string(
        &ef,
        "smtp",
        &format!("{es}.smtp"),
        "e.g. `smtp://mail.example.com:587`",
    );
    if let (Some(s), Some(sv)) = (&smtp, ef.get("smtp"))
        && !(s.starts_with("smtp://") || s.starts_with("smtps://"))
    {
        c.error(
            sv,
            format!("`{es}.smtp`: `{s}` must start with `smtp://` or `smtps://`"),
        );
    }
    let starttls = ef
        .get("starttls")
        .and_then(|b| c.boolean(b, &format!("{es}.starttls")))
        .unwrap_or_else(|| smtp.as_deref().is_some_and(|s| s.starts_with("smtp://")));
    let user = ef
        .get("user")
        .and_then(|u| c.string(u, &format!("{es}.user")));
    let password_file = path_field(
        c,
        &ef,
        "password_file",
        &format!("{es}.password_file"),
        base,
    );
    let from = c.required_string(&ef, "from", &format!("{es}.from"), "the sender address");
    let to = match ef.get("to") {
        Some(t) => c.string_list(t, &format!("{es}.to")).and_then(|to| {
            if to.is_empty() {
                c.error(t, format!("`{es}.to`: expected at least one recipient"));
                None
            } else {
                Some(to)
            }
        }),
        None => {
            c.missing(&ef, "to", "a list of recipient addresses");
            None
        }
    };
    Some(EmailSettings {
        smtp: smtp?,
        starttls,
        user,
        password_file,
        from: from?,
        to: to?,
    })
}

/// The `webhook:` block `v` of a channel (`ws` in messages).
fn read_webhook(c: &mut Checker, v: &Node, ws: &str, base: &Path) -> Option<WebhookSettings> {
    let wf = c.mapping(v, ws, WEBHOOK_FIELDS)?;
    let url = c.required_string(
        &wf,
        "url",
        &format!("{ws}.url"),
        "the URL to POST alerts to",
    );
    if let (Some(u), Some(uv)) = (&url, wf.get("url"))
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        c.error(
            uv,
            format!("`{ws}.url`: `{u}` must start with `http://` or `https://`"),
        );
    }
    let format = match wf.get("format") {
        Some(fv) => c.string(fv, &format!("{ws}.format")).and_then(|s| {
            if WEBHOOK_FORMATS.contains(&s.as_str()) {
                Some(s)
            } else {
                c.error(
                    fv,
                    format!(
                        "`{ws}.format`: unknown format `{s}`; expected one of: {}",
                        WEBHOOK_FORMATS.join(", ")
                    ),
                );
                None
            }
        }),
        None => Some("json".to_string()),
    };
    let secret_file = path_field(c, &wf, "secret_file", &format!("{ws}.secret_file"), base);
    Some(WebhookSettings {
        url: url?,
        format: format?,
        secret_file,
    })
}

/// The `on:` list `v` of the channel `section`: known event names.
fn read_on(c: &mut Checker, v: &Node, section: &str) -> Option<Vec<EventKind>> {
    let Value::Seq(items) = &v.value else {
        c.error(
            v,
            format!(
                "`{section}.on`: expected a list of events, found {}",
                v.kind_name()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(ev) = c.string(item, &format!("{section}.on[{i}]")) else {
            continue;
        };
        if let Some(kind) = EventKind::parse(&ev).filter(|k| k.is_alert()) {
            out.push(kind);
        } else {
            let words = alert_event_words();
            let hint = match crate::yaml::did_you_mean(&ev, &words) {
                Some(h) => format!(", did you mean `{h}`?"),
                None => format!("; expected one of: {}", words.join(", ")),
            };
            c.error(item, format!("unknown event `{ev}`{hint}"));
        }
    }
    Some(out)
}
