//! Real alert receivers for tests and benches: an SMTP server (aiosmtpd, run by
//! `tests/support/smtp_sink.py` from the venv `scripts/test.sh` makes) and an HTTP webhook
//! receiver (axum on 127.0.0.1:0) that records what it gets and answers what it is told.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The venv python with aiosmtpd: `JOBKEEPER_TEST_PYTHON`, else `.venv/bin/python` in the
/// crate. Panics with what to do when neither is there.
pub fn test_python() -> PathBuf {
    if let Ok(p) = std::env::var("JOBKEEPER_TEST_PYTHON")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "no python with aiosmtpd for the SMTP tests: run scripts/test.sh once (it makes .venv \
         and installs aiosmtpd), or set JOBKEEPER_TEST_PYTHON"
    );
    p
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it writes `<n>.eml`.
    pub dir: PathBuf,
}

impl SmtpSink {
    /// Starts it on a free port, writing under `dir`; waits (≤ 20 s) until it accepts.
    pub fn start(dir: &Path) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let port = free_port();
        let mut child = Command::new(test_python())
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP sink");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!("the SMTP sink did not start (is aiosmtpd installed? run scripts/test.sh)");
        }
        SmtpSink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, oldest first, with quoted-printable undone.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let n = name.strip_suffix(".eml")?.parse().ok()?;
                        Some((n, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| unqp(&String::from_utf8_lossy(&std::fs::read(p).unwrap())))
            .collect()
    }

    /// When message `n` (0-based) was received, as the sink recorded it.
    pub fn received_at(&self, n: usize) -> Option<SystemTime> {
        let m = self.messages().into_iter().nth(n)?;
        let secs: f64 = m
            .lines()
            .next()?
            .strip_prefix("X-Received-At: ")?
            .trim()
            .parse()
            .ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes quoted-printable soft breaks and the escapes the alert text can hold.
fn unqp(s: &str) -> String {
    if !s.contains("quoted-printable") {
        return s.to_string();
    }
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// The body.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, wall clock.
    pub wall: SystemTime,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    got: Vec<Received>,
    /// Answers to give, in order; the last one repeats.
    answers: Vec<(u16, String)>,
}

/// An HTTP webhook receiver on 127.0.0.1; stops with the test's runtime.
#[derive(Clone)]
pub struct HttpReceiver {
    shared: Arc<Mutex<Shared>>,
    /// Its address.
    pub addr: std::net::SocketAddr,
}

impl HttpReceiver {
    /// Starts it; it answers 200 `ok` until told otherwise.
    pub async fn start() -> HttpReceiver {
        HttpReceiver::start_on(0).await
    }

    /// [`HttpReceiver::start`] on a given port (0: any free one), e.g. one a daemon was
    /// already told about while nothing listened there.
    pub async fn start_on(port: u16) -> HttpReceiver {
        let shared = Arc::new(Mutex::new(Shared {
            got: Vec::new(),
            answers: vec![(200, "ok".into())],
        }));
        let s2 = shared.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
            let s = s2.clone();
            async move {
                let mut s = s.lock().unwrap();
                s.got.push(Received {
                    uri: uri.to_string(),
                    body,
                    at: Instant::now(),
                    wall: SystemTime::now(),
                });
                let (code, text) = if s.answers.len() > 1 {
                    s.answers.remove(0)
                } else {
                    s.answers[0].clone()
                };
                (axum::http::StatusCode::from_u16(code).unwrap(), text)
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpReceiver { shared, addr }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers to give from now on, in order; the last one repeats.
    pub fn answer(&self, answers: &[(u16, &str)]) {
        self.shared.lock().unwrap().answers =
            answers.iter().map(|(c, t)| (*c, t.to_string())).collect();
    }

    /// What it got so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().got.clone()
    }
}
