//! Diagnostics: an error that points at `path:line:column` in a job file or daemon config.
//!
//! Every parser and validator in the crate reports problems as [`Diagnostic`]s and collects all of
//! them for a file instead of stopping at the first, so an operator fixes a file in one pass.

use std::fmt;

/// One problem found in a file, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// The file as the operator knows it (`jobs/team-a/clicks.yaml`).
    pub path: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when the problem concerns the whole file.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A problem at a place in a file.
    pub fn new(
        path: impl Into<String>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A problem with the whole file (reported at `1:1`).
    pub fn file(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(path, 1, 1, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path, self.line, self.column)?;
        // A message quoting a huge value (a 200 KB string) is cut, so one line stays readable.
        match self.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => {
                let more = self.message[cut..].chars().count();
                write!(f, "{}… ({more} more characters)", &self.message[..cut])
            }
            None => f.write_str(&self.message),
        }
    }
}

/// Longest message shown in one diagnostic line, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// The 1-based line and column just past the end of `text`: lines end at YAML's line breaks
/// (`\n`, `\r\n`, a lone `\r`), columns count characters.
pub fn end_of(text: &str) -> (usize, usize) {
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    let last = text.rsplit(['\n', '\r']).next().unwrap_or_default();
    (breaks + 1, last.chars().count() + 1)
}

/// `(line, column)` moved onto `text`: a line past the end becomes the end of the text, a
/// column past the end of its line the end of that line (lines and columns as in [`end_of`]).
pub fn clamp(text: &str, line: usize, column: usize) -> (usize, usize) {
    let pieces: Vec<&str> = text.split('\n').collect();
    let last = pieces.len() - 1;
    let mut lines = pieces.iter().enumerate().flat_map(|(i, p)| {
        // `\r\n` is one break: the `\r` before a `\n` ends no line of its own.
        let p = if i < last {
            p.strip_suffix('\r').unwrap_or(p)
        } else {
            p
        };
        p.split('\r')
    });
    match lines.nth(line.saturating_sub(1)) {
        Some(l) => (line, column.min(l.chars().count() + 1)),
        None => end_of(text),
    }
}

/// Renders diagnostics one per line, as `validate` prints them.
pub fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_clamped_onto_the_text() {
        assert_eq!(end_of("a\r\nbc"), (2, 3));
        assert_eq!(end_of("a\r"), (2, 1));
        assert_eq!(clamp("ab\ncd", 1, 9), (1, 3));
        assert_eq!(clamp("ab\r\ncd", 2, 2), (2, 2));
        assert_eq!(clamp("ab\rcd", 3, 1), (2, 3));
        assert_eq!(clamp("ab\r", 2, 5), (2, 1));
    }
}
