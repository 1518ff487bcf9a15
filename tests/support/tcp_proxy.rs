//! A TCP proxy on 127.0.0.1 that the test controls: it passes bytes to an upstream address,
//! holds them (a frozen link: connections stay open, nothing moves), or cuts every connection
//! and refuses new ones.

use std::sync::Arc;
use std::time::Duration;

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

/// The running proxy; it stops when dropped.
pub struct TcpProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on `port` (0: a free one) to `upstream` (`host:port`), starting in `mode`.
    pub async fn start(port: u16, upstream: String, mode: Mode) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(mode);
        let upstream = Arc::new(upstream);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (rx, upstream) = (rx.clone(), upstream.clone());
                tokio::spawn(async move { relay(client, &upstream, rx).await });
            }
        });
        TcpProxy {
            port,
            mode: tx,
            task,
        }
    }

    /// Switches what the proxy does.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Cut);
    }
}

async fn relay(mut client: TcpStream, upstream: &str, mut mode: watch::Receiver<Mode>) {
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
                Ok(n) => if !wait_pass(&mut mode).await || sw.write_all(&a[..n]).await.is_err() { return },
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
