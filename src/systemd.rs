//! systemd integration: `sd_notify` messages (READY, STATUS, WATCHDOG, RELOADING, STOPPING) over
//! `$NOTIFY_SOCKET`, the watchdog interval from `$WATCHDOG_USEC`, and log lines for journald.
//!
//! Written against the documented protocol (a datagram per message on a unix socket, `@` for the
//! abstract namespace) rather than a C library, so it needs no `unsafe` and no libsystemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `sd_notify` messages; does nothing when the daemon is not run by systemd.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::default();
        };
        let path = path.to_string_lossy().into_owned();
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path)
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(sock), Ok(addr)) => Notifier {
                socket: Some((sock, addr)),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("NOTIFY_SOCKET={path} unusable: {e}");
                Notifier::default()
            }
        }
    }

    /// True when messages go somewhere.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one message (`KEY=value` lines); errors are logged, never fatal.
    pub fn notify(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket
            && let Err(e) = sock.send_to_addr(message.as_bytes(), addr)
        {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=...`: what the daemon is doing, for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `RELOADING=1` with the monotonic time systemd wants for `Type=notify-reload`.
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config"
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping: local runs are being stopped");
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

fn monotonic_usec() -> u128 {
    // CLOCK_MONOTONIC as the uptime clock in /proc (seconds with fractions).
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |secs| (secs * 1_000_000.0) as u128)
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or
/// this process).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// systemd's watchdog: `WATCHDOG=1` through a [`Notifier`], every half `WatchdogSec`. Pinged by
/// the loop it vouches for (the health sweep's, see [`crate::reconcile::sweep_loop`]), never by
/// a thread of its own nor by a store write, so a stuck loop stops the pings.
#[derive(Debug, Clone)]
pub struct Watchdog {
    notifier: std::sync::Arc<Notifier>,
    period: Duration,
}

impl Watchdog {
    /// The watchdog systemd asked for ([`watchdog_interval`]), through `notifier`; `None` when
    /// there is none or no socket to ping.
    pub fn from_env(notifier: std::sync::Arc<Notifier>) -> Option<Watchdog> {
        let interval = watchdog_interval()?;
        notifier.enabled().then(|| Watchdog {
            notifier,
            period: interval / 2,
        })
    }

    /// How often to ping: half the interval.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// `WATCHDOG=1`.
    pub fn ping(&self) {
        self.notifier.watchdog();
    }
}

/// True when stderr goes to journald (`$JOURNAL_STREAM` names it): then log lines carry no
/// timestamp (journald adds one) and start with a `<N>` priority prefix.
pub fn logging_to_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream
        .to_string_lossy()
        .split_once(':')
        .map(|(a, b)| (a.to_string(), b.to_string()))
    else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| m.dev().to_string() == dev && m.ino().to_string() == ino)
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

/// A log line format for journald: the `<N>` priority prefix, then the wrapped format (which
/// should leave out the time; journald records it).
pub struct JournalFormat<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), addr)),
        };
        n.ready("applied 1a2b3c4d\nline two");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=applied 1a2b3c4d line two");
        n.reloading();
        let len = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..len]).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    }

    #[test]
    fn no_socket_means_no_op() {
        let n = Notifier::default();
        assert!(!n.enabled());
        n.watchdog();
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&tracing::Level::ERROR), 3);
        assert_eq!(priority(&tracing::Level::INFO), 6);
    }
}
