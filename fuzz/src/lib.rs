//! What the fuzz targets share: the properties every diagnostic must have, and a job spec
//! written back as a job file.

use std::fmt::Write as _;
use std::time::Duration;

use jobkeeper::diag::Diagnostic;
use jobkeeper::spec::JobSpec;

/// The lines of `text`, split at YAML's line breaks (`\n`, `\r\n`, a lone `\r`); a text ending
/// in a line break has an empty last line.
pub fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&text[start..]);
    out
}

/// Checks that a failed parse of `bytes` says why, and that each of its diagnostics names
/// `path` and a place in the input: a line of it, and a column within that line or just past
/// its end (columns count characters; invalid UTF-8 counts as one character per bad sequence).
pub fn assert_located(path: &str, bytes: &[u8], diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "an error without a diagnostic");
    let text = String::from_utf8_lossy(bytes);
    let lines = lines(&text);
    for d in diags {
        assert_eq!(d.path, path, "{d}: wrong path");
        assert!(d.line >= 1 && d.column >= 1, "{d}: no position");
        assert!(!d.message.trim().is_empty(), "{d}: empty message");
        let Some(line) = lines.get(d.line - 1) else {
            panic!("{d}: line {} of an input of {} lines", d.line, lines.len());
        };
        let width = line.chars().count();
        assert!(
            d.column <= width + 1,
            "{d}: column {} of a line of {width} characters: {line:?}",
            d.column
        );
        let shown = d.to_string();
        assert!(shown.starts_with(&format!("{path}:{}:{}: ", d.line, d.column)));
    }
}

/// `s` as a YAML double-quoted scalar: printable ASCII as is, everything else escaped, so the
/// text reads back exactly whatever characters it holds.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(ch),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

fn map<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let items: Vec<String> = entries
        .map(|(k, v)| format!("{}: {}", quoted(k), quoted(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn duration(d: Duration) -> String {
    quoted(&humantime::format_duration(d).to_string())
}

/// A job file that says what `spec` says, every field written out.
pub fn job_file(spec: &JobSpec) -> String {
    let mut f = String::new();
    let _ = writeln!(f, "env: {}", quoted(&spec.env));
    if let Some(p) = &spec.project {
        let _ = writeln!(f, "project:");
        let _ = writeln!(f, "  repo: {}", quoted(&p.repo));
        let _ = writeln!(f, "  branch: {}", quoted(&p.branch));
        let _ = writeln!(f, "  dir: {}", quoted(&p.dir));
        if let Some(b) = &p.build {
            let _ = writeln!(f, "  build: {}", quoted(b));
        }
        if let Some(a) = &p.artifact {
            let _ = writeln!(f, "  artifact: {}", quoted(a));
        }
        let _ = writeln!(f, "  follow: {}", p.follow);
    }
    let p = &spec.params;
    let _ = writeln!(f, "params:");
    if let Some(m) = &p.main_class {
        let _ = writeln!(f, "  main_class: {}", quoted(m));
    }
    let _ = writeln!(f, "  args: {}", list(&p.args));
    if let Some(n) = p.parallelism {
        let _ = writeln!(f, "  parallelism: {n}");
    }
    let _ = writeln!(f, "  conf: {}", map(p.conf.iter()));
    let _ = writeln!(f, "  command: {}", list(&p.command));
    let _ = writeln!(f, "  environment: {}", map(p.environment.iter()));
    if let Some(w) = &p.workdir {
        let _ = writeln!(f, "  workdir: {}", quoted(w));
    }
    if let Some(s) = &spec.schedule {
        let _ = writeln!(f, "schedule: {}", quoted(s));
    }
    let _ = writeln!(f, "overlap: {}", spec.overlap.as_str());
    if let Some(t) = spec.timeout {
        let _ = writeln!(f, "timeout: {}", duration(t));
    }
    let r = &spec.restart;
    let mut restart: Vec<String> = r
        .attempts
        .iter()
        .map(|a| format!("attempts: {a}"))
        .collect();
    for (name, d) in [
        ("window", r.window),
        ("backoff", r.backoff),
        ("max_backoff", r.max_backoff),
    ] {
        if let Some(d) = d {
            restart.push(format!("{name}: {}", duration(d)));
        }
    }
    let _ = writeln!(f, "restart: {{{}}}", restart.join(", "));
    let _ = writeln!(f, "upgrade: {}", spec.upgrade.as_str());
    if let Some(a) = &spec.alerts {
        let _ = writeln!(f, "alerts: {}", list(a));
    }
    let _ = writeln!(f, "suspend: {}", spec.suspend);
    f
}
