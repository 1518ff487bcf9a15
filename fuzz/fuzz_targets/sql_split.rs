//! The SQL splitter of SQL jobs: `spec::split_sql` on arbitrary text.
//!
//! Properties: no panic; every place it names (a statement's start, a problem) lies inside the
//! text; a statement is never empty, starts at the place it names, and statements come in text
//! order; a text that splits has at least one INSERT, and splitting the statements joined again
//! by `;` on a line of its own gives the same statements.

#![no_main]

use jobkeeper::spec::{StatementKind, split_sql};
use libfuzzer_sys::fuzz_target;

/// The byte offset of 1-based `line` and `column` (in characters) of `text`, if inside it.
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let rest = &text[start..];
    let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
    match line_text.char_indices().nth(column.checked_sub(1)?) {
        Some((i, _)) => Some(start + i),
        None if column == line_text.chars().count() + 1 => Some(start + line_text.len()),
        None => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match split_sql(text) {
        Ok(statements) => {
            assert!(statements.iter().any(|s| s.kind == StatementKind::Insert));
            let mut last = 0;
            for s in &statements {
                assert!(!s.text.is_empty());
                let at = offset(text, s.line, s.column).expect("a statement starts inside");
                assert!(at >= last, "statements in text order");
                assert!(text[at..].starts_with(&s.text), "{s:?} is at its place");
                last = at + s.text.len();
            }
            let joined: Vec<String> = statements.iter().map(|s| s.text.clone()).collect();
            let again = split_sql(&format!("{}\n;\n", joined.join("\n;\n"))).expect("splits again");
            let texts: Vec<&str> = again.iter().map(|s| s.text.as_str()).collect();
            assert_eq!(texts, joined.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(
                    offset(text, e.line, e.column).is_some(),
                    "{e:?} lies inside the text"
                );
            }
        }
    }
});
