//! A TCP proxy on 127.0.0.1 that the test controls: it passes bytes to an upstream address,
//! holds them (a frozen link: connections stay open, nothing moves), or cuts every connection
//! and refuses new ones. For HTTP upstreams it also logs the request line of every request it
//! received from a client (with when), and can hold the requests whose line contains a given
//! text until the test releases them (a request delayed in the network past some event).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow.
    Pass,
    /// Bytes are held; connections stay open.
    Freeze,
    /// Every connection is closed; new ones are accepted and closed at once.
    Cut,
}

/// One HTTP request line a client sent through the proxy.
#[derive(Debug, Clone)]
pub struct Request {
    /// When the proxy read it from the client (before any hold).
    pub at: Instant,
    /// The same moment on the wall clock.
    pub wall: SystemTime,
    /// `METHOD PATH HTTP/1.1`.
    pub line: String,
}

impl Request {
    /// True for a request that changes something upstream (not GET, HEAD or OPTIONS).
    pub fn mutating(&self) -> bool {
        !["GET ", "HEAD ", "OPTIONS "]
            .iter()
            .any(|m| self.line.starts_with(m))
    }
}

/// What the relays share: the request log and the hold.
#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Request>>,
    /// Requests whose line contains this text are held until released.
    hold: Mutex<Option<String>>,
    /// Request lines being held now.
    held: Mutex<Vec<String>>,
}

/// The running proxy; it stops when dropped.
pub struct TcpProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    release: watch::Sender<u64>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on `port` (0: a free one) to `upstream` (`host:port`), starting in `mode`.
    pub async fn start(port: u16, upstream: String, mode: Mode) -> TcpProxy {
        TcpProxy::start_on("127.0.0.1", port, upstream, mode).await
    }

    /// [`TcpProxy::start`] on another loopback address (`127.0.0.2`, ...): proxies on one
    /// port of different addresses, for clients that must all use one URL.
    pub async fn start_on(ip: &str, port: u16, upstream: String, mode: Mode) -> TcpProxy {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(mode);
        let (release, release_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared::default());
        let upstream = Arc::new(upstream);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (rx, upstream, s, release) =
                    (rx.clone(), upstream.clone(), s.clone(), release_rx.clone());
                tokio::spawn(async move { relay(client, &upstream, rx, s, release).await });
            }
        });
        TcpProxy {
            port,
            mode: tx,
            release,
            shared,
            task,
        }
    }

    /// Switches what the proxy does.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// From now on, holds every request whose request line contains `text` (e.g.
    /// `"POST /jars/"`): its bytes stay in the proxy until [`TcpProxy::release`].
    pub fn hold(&self, text: &str) {
        *self.shared.hold.lock().unwrap() = Some(text.to_string());
    }

    /// Sends the held requests on (even when their client has gone) and holds no more.
    pub fn release(&self) {
        *self.shared.hold.lock().unwrap() = None;
        self.release.send_modify(|n| *n += 1);
    }

    /// The request lines held now.
    pub fn held(&self) -> Vec<String> {
        self.shared.held.lock().unwrap().clone()
    }

    /// Every request line received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Cut);
        self.release.send_modify(|n| *n += 1);
    }
}

/// The HTTP request lines that end in `bytes`, given `carry` (the unfinished last line of the
/// bytes before, which is updated): a line split across two reads is found in the second. (A
/// body that happens to hold such a line would be counted too, which the tests' bodies do not.)
fn request_lines(carry: &mut Vec<u8>, bytes: &[u8]) -> Vec<String> {
    const METHODS: [&str; 7] = [
        "GET ", "POST ", "PUT ", "PATCH ", "DELETE ", "HEAD ", "OPTIONS ",
    ];
    carry.extend_from_slice(bytes);
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = carry[start..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&carry[start..start + end]);
        if METHODS.iter().any(|m| line.starts_with(m)) && line.contains(" HTTP/1.") {
            out.push(line.into_owned());
        }
        start += end + 2;
    }
    carry.drain(..start);
    // Only a line's first bytes matter; a long unfinished one (a body) is dropped.
    if carry.len() > 8 * 1024 {
        carry.clear();
    }
    out
}

async fn relay(
    mut client: TcpStream,
    upstream: &str,
    mut mode: watch::Receiver<Mode>,
    shared: Arc<Shared>,
    mut release: watch::Receiver<u64>,
) {
    if *mode.borrow() == Mode::Cut {
        return;
    }
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut carry = Vec::new();
    loop {
        // Held while frozen; closed when cut.
        while *mode.borrow() == Mode::Freeze {
            if mode.changed().await.is_err() {
                return;
            }
        }
        if *mode.borrow() == Mode::Cut {
            return;
        }
        tokio::select! {
            r = cr.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let lines = request_lines(&mut carry, &a[..n]);
                    let hold = shared.hold.lock().unwrap().clone();
                    let held: Vec<String> = match &hold {
                        Some(text) => lines.iter().filter(|l| l.contains(text.as_str())).cloned().collect(),
                        None => Vec::new(),
                    };
                    {
                        let mut log = shared.log.lock().unwrap();
                        for line in lines {
                            log.push(Request { at: Instant::now(), wall: SystemTime::now(), line });
                        }
                    }
                    if !held.is_empty() {
                        shared.held.lock().unwrap().extend(held.iter().cloned());
                        release.borrow_and_update();
                        if release.changed().await.is_err() {
                            return;
                        }
                        shared.held.lock().unwrap().retain(|l| !held.contains(l));
                    }
                    if !wait_pass(&mut mode).await || sw.write_all(&a[..n]).await.is_err() { return }
                }
            },
            r = sr.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if !wait_pass(&mut mode).await || cw.write_all(&b[..n]).await.is_err() { return },
            },
            _ = mode.changed() => {}
        }
    }
}

/// Waits while frozen; true when the bytes may pass, false when cut.
async fn wait_pass(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow() {
            Mode::Pass => return true,
            Mode::Cut => return false,
            Mode::Freeze => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}
