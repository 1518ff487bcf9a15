//! Project builds: checkout, build command, artifact cache, build queue.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How much of the end of a log [`log_tail`] reads at most.
const TAIL_READ: u64 = 64 * 1024;

/// How long one line of a [`log_tail`] may be; longer lines are cut.
const TAIL_LINE_CHARS: usize = 400;

/// The last `lines` lines of the file at `path` (lossy UTF-8, long lines cut), reading only the
/// end of the file. A missing or unreadable file gives an empty string.
pub fn log_tail(path: &Path, lines: usize) -> String {
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
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut all: Vec<&str> = text.split('\n').collect();
    // The first piece may be the middle of a line when the read did not start at the file's start.
    if start > 0 && all.len() > 1 {
        all.remove(0);
    }
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
