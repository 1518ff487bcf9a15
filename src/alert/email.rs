//! Email alerts over SMTP (lettre, rustls with the ring provider).
//!
//! `smtp://host:port` speaks plain SMTP, upgraded with STARTTLS when `starttls: true` (then
//! required, never silently skipped); `smtps://host:port` is TLS from the first byte. With
//! `user`, the password is read from `password_file` (a trailing newline is dropped). The body
//! is plain text; the subject is `[jobkeeper] prod/clicks failed (attempt 2/5)`.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Alert, AlertError, Delivery, Notifier};
use crate::settings::EmailSettings;

/// Bound of connecting and of each SMTP command.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends alerts as email through one SMTP server.
pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailNotifier {
    /// Checks the settings, reads the password file, and prepares the transport (no
    /// connection is made until the first alert).
    pub fn new(s: &EmailSettings) -> Result<EmailNotifier, AlertError> {
        let bad = |m: String| AlertError::Config(format!("email: {m}"));
        let url = reqwest::Url::parse(&s.smtp)
            .map_err(|e| bad(format!("bad smtp address `{}`: {e}", s.smtp)))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad(format!("smtp address `{}` has no host", s.smtp)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_err = |e: lettre::transport::smtp::Error| bad(format!("TLS setup: {e}"));
        let builder = match url.scheme() {
            "smtps" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(tls_err)?
                .port(url.port().unwrap_or(465)),
            "smtp" if s.starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(tls_err)?
                .port(url.port().unwrap_or(587)),
            "smtp" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                .port(url.port().unwrap_or(25)),
            other => {
                return Err(bad(format!(
                    "unknown scheme `{other}` in `{}`; expected smtp:// or smtps://",
                    s.smtp
                )));
            }
        };
        let mut builder = builder.timeout(Some(SMTP_TIMEOUT));
        if let Some(user) = &s.user {
            let password = match &s.password_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| bad(format!("cannot read password_file {}: {e}", p.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from = s
            .from
            .parse()
            .map_err(|e| bad(format!("bad `from` address `{}`: {e}", s.from)))?;
        let to =
            s.to.iter()
                .map(|t| {
                    t.parse()
                        .map_err(|e| bad(format!("bad `to` address `{t}`: {e}")))
                })
                .collect::<Result<Vec<Mailbox>, _>>()?;
        if to.is_empty() {
            return Err(bad("no `to` address".into()));
        }
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// The message an alert becomes.
    pub fn message(&self, alert: &Alert) -> Result<Message, AlertError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.body(alert.text())
            .map_err(|e| AlertError::Config(format!("email: cannot build the message: {e}")))
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[async_trait]
impl Notifier for EmailNotifier {
    async fn send(&self, alert: &Alert) -> Result<Delivery, AlertError> {
        let msg = self.message(alert)?;
        match self.transport.send(msg).await {
            Ok(resp) => Ok(Delivery {
                answer: format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                )
                .trim_end()
                .to_string(),
            }),
            Err(e) if e.is_permanent() => Err(AlertError::Refused(format!("smtp: {}", chain(&e)))),
            Err(e) => Err(AlertError::Transport(format!("smtp: {}", chain(&e)))),
        }
    }
}
