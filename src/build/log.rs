//! The build log: the build's output drained into a file capped in size (its start and its last
//! lines are kept), and reading the last lines of a log.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::CHUNK;

/// Copies build output into the log up to the cap, then keeps only its last bytes; reads both
/// pipes to their end so the build never blocks on a full pipe.
pub(super) async fn drain(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    mut file: tokio::fs::File,
    cap: u64,
) {
    let mut log = CappedLog::new(cap);
    let mut out = stdout.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
    let mut err = stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
    let mut b1 = vec![0u8; CHUNK];
    let mut b2 = vec![0u8; CHUNK];
    while out.is_some() || err.is_some() {
        tokio::select! {
            r = read_some(&mut out, &mut b1), if out.is_some() => match r {
                Some(n) => log.write(&mut file, &b1[..n]).await,
                None => out = None,
            },
            r = read_some(&mut err, &mut b2), if err.is_some() => match r {
                Some(n) => log.write(&mut file, &b2[..n]).await,
                None => err = None,
            },
        }
    }
    log.finish(&mut file).await;
}

/// One read; `None` at the end or on an error.
async fn read_some(
    r: &mut Option<Box<dyn AsyncRead + Send + Unpin>>,
    buf: &mut [u8],
) -> Option<usize> {
    match r.as_mut()?.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// A log that keeps the first bytes up to a cap and the last few bytes after it.
pub(super) struct CappedLog {
    /// Bytes written to the head part.
    head: u64,
    /// How many bytes the head part may take.
    head_limit: u64,
    /// Bytes over the head limit, kept: the last `tail_keep` of them.
    pub(super) tail: Vec<u8>,
    /// How many bytes the tail keeps.
    tail_keep: usize,
    /// Bytes seen after the head was full.
    over: u64,
    /// A write failed: keep draining, write nothing more.
    broken: bool,
}

impl CappedLog {
    /// A log of at most about `cap` bytes.
    pub(super) fn new(cap: u64) -> Self {
        let tail_keep = (cap / 4).min(16 * 1024) as usize;
        Self {
            head: 0,
            head_limit: cap.saturating_sub(tail_keep as u64 + 512),
            tail: Vec::new(),
            tail_keep,
            over: 0,
            broken: false,
        }
    }

    /// Takes a chunk of output.
    pub(super) async fn write(&mut self, file: &mut tokio::fs::File, mut data: &[u8]) {
        if self.head < self.head_limit {
            let room = (self.head_limit - self.head).min(data.len() as u64) as usize;
            self.put(file, &data[..room]).await;
            self.head += room as u64;
            data = &data[room..];
        }
        if data.is_empty() {
            return;
        }
        if self.over == 0 {
            let note = format!(
                "\n[jobkeeper: build output truncated: the log keeps its first {} bytes and \
                 its last lines]\n",
                self.head_limit
            );
            self.put(file, note.as_bytes()).await;
        }
        self.over += data.len() as u64;
        if data.len() >= self.tail_keep {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - self.tail_keep..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 2 * self.tail_keep.max(1024) {
                let cut = self.tail.len() - self.tail_keep;
                self.tail.drain(..cut);
            }
        }
    }

    /// Writes the kept tail, if output went over the cap.
    pub(super) async fn finish(mut self, file: &mut tokio::fs::File) {
        if self.over > 0 {
            let cut = self.tail.len().saturating_sub(self.tail_keep);
            let mut tail = self.tail.split_off(cut);
            // Start at a line boundary when the tail is not the whole rest.
            if (tail.len() as u64) < self.over
                && let Some(nl) = tail.iter().position(|b| *b == b'\n')
            {
                tail.drain(..=nl);
            }
            let note = format!(
                "\n[jobkeeper: {} bytes of output left out; the last lines follow]\n",
                self.over - tail.len() as u64
            );
            self.put(file, note.as_bytes()).await;
            self.put(file, &tail).await;
        }
        if !self.broken {
            let _ = file.flush().await;
        }
    }

    /// Writes to the file unless a write already failed.
    async fn put(&mut self, file: &mut tokio::fs::File, data: &[u8]) {
        if !self.broken && file.write_all(data).await.is_err() {
            self.broken = true;
        }
    }
}

/// How much of the end of a log [`log_tail`] reads at most.
const TAIL_READ: u64 = 64 * 1024;

/// How long one line of a [`log_tail`] may be; longer lines are cut.
pub(super) const TAIL_LINE_CHARS: usize = 400;

/// The last `lines` lines of the file at `path` (lossy UTF-8, long lines cut), reading only the
/// end of the file. A missing or unreadable file gives an empty string.
pub fn log_tail(path: &Path, lines: usize) -> String {
    log_tail_masked(path, lines, &[])
}

/// [`log_tail`] with the secret values `secrets` masked in the whole lines read, before they
/// are cut to the last `lines` and long lines are cut (see [`crate::spec::mask_secrets`]).
pub fn log_tail_masked(path: &Path, lines: usize, secrets: &[String]) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_READ);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    if f.take(TAIL_READ).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut text: &str = &text;
    // The first piece may be the middle of a line when the read did not start at the file's start.
    if start > 0
        && let Some((_, rest)) = text.split_once('\n')
        && !rest.is_empty()
    {
        text = rest;
    }
    let masked = crate::spec::mask_secrets(text, secrets);
    let text = masked.strip_suffix('\n').unwrap_or(&masked);
    let all: Vec<&str> = text.split('\n').collect();
    let from = all.len().saturating_sub(lines);
    all[from..]
        .iter()
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            if l.chars().count() > TAIL_LINE_CHARS {
                let cut: String = l.chars().take(TAIL_LINE_CHARS).collect();
                format!("{cut}…")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
