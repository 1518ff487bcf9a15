//! Accepting and driving the connections on `listen`, within the daemon config's `http:` limits:
//!
//! - at most `max_connections` are open at once, and never more than a quarter of the process's
//!   open-file limit, so a flood of clients cannot take the file descriptors the daemon needs
//!   for its repo, runs, store and alerts; one more is answered 503 and closed at once, without
//!   a byte of it read;
//! - a request's head must have arrived whole within `header_timeout` of the connection opening
//!   or of its previous answer (hyper's header timer), so half-sent requests and idle keep-alive
//!   connections are closed;
//! - a connection on which no byte moves either way for `idle_timeout` is closed: a stalled body,
//!   or a client that stopped reading its answer.
//!
//! Each connection that the listener closes itself is counted by reason in `/metrics`
//! (`jobkeeper_http_connections_closed_total`). On cancel, accepting stops and each connection
//! finishes the request it serves, for at most [`SHUTDOWN_WAIT`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::settings::HttpSettings;

/// How long shutdown waits for open connections to finish their requests.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How long accepting pauses after the system refused a new socket (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The connections allowed open at once: `configured`, lowered to a quarter of the soft
/// open-file limit `nofile` when that is smaller (at least 1).
pub fn connection_cap(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => configured.min(usize::try_from(n / 4).unwrap_or(usize::MAX).max(1)),
        None => configured,
    }
}

/// The process's soft open-file limit, when it can be read.
fn nofile_soft() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// What a connection over the cap is told before it is closed.
fn over_cap_answer() -> Vec<u8> {
    let body = r#"{"error":"too many connections (http.max_connections); try again later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `cancel` fires, within `limits`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpSettings,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let nofile = nofile_soft();
    let cap = connection_cap(limits.max_connections, nofile);
    if cap < limits.max_connections {
        tracing::warn!(
            "`http.max_connections` is {} but the open-file limit is {}: at most {cap} HTTP \
             connections are served at once, a quarter of the limit",
            limits.max_connections,
            nofile.unwrap_or_default()
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    let refusal = over_cap_answer();
    let tracker = TaskTracker::new();
    // Set while connections are being refused, so one episode is logged once.
    let mut refusing = false;
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("http: cannot accept a connection: {e}");
                    last_accept_error = Some(Instant::now());
                }
                if !is_per_connection(&e) {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                    }
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    "http: {cap} connections are open (`http.max_connections`): refusing new \
                     ones until some close"
                );
                refusing = true;
            }
            metrics.http_closed("over_cap");
            // Best effort: the answer fits the socket's empty send buffer; never waited for.
            let _ = stream.try_write(&refusal);
            continue;
        };
        if refusing {
            tracing::info!("http: connections accepted again");
            refusing = false;
        }
        let _ = stream.set_nodelay(true);
        metrics.http_opened();
        let (app, metrics, cancel) = (app.clone(), metrics.clone(), cancel.clone());
        tracker.spawn(async move {
            drive(stream, peer, app, limits, &metrics, cancel).await;
            metrics.http_ended();
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_WAIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!(
            "http: {} connections still open after {SHUTDOWN_WAIT:?}: closed",
            tracker.len()
        );
    }
    Ok(())
}

/// An accept error that concerns one connection only (it was reset before being accepted), as
/// opposed to the process or system being out of something.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, times out, idles or the daemon stops.
async fn drive(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpSettings,
    metrics: &Metrics,
    cancel: CancellationToken,
) {
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let idle = activity.idle_for(limits.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                match r {
                    Err(e) if e.is_timeout() => {
                        metrics.http_closed("header_timeout");
                        tracing::debug!(%peer, "http: no whole request head within the header timeout: closed");
                    }
                    Err(e) => tracing::debug!(%peer, "http: connection ended: {e}"),
                    Ok(()) => {}
                }
                return;
            }
            () = cancel.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle => {
                metrics.http_closed("idle_timeout");
                tracing::debug!(%peer, "http: no byte moved within the idle timeout: closed");
                return;
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A socket that notes each byte moved in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_quarter_of_the_open_file_limit_at_most() {
        assert_eq!(connection_cap(512, Some(1024)), 256);
        assert_eq!(connection_cap(512, Some(65536)), 512);
        assert_eq!(connection_cap(512, Some(u64::MAX)), 512);
        assert_eq!(connection_cap(512, Some(2)), 1);
        assert_eq!(connection_cap(100, None), 100);
    }

    #[test]
    fn the_over_cap_answer_is_a_whole_503() {
        let a = String::from_utf8(over_cap_answer()).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
