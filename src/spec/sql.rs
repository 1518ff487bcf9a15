//! Flink SQL of a job (`sql` or `sql_file`): splitting the text into statements, with the place
//! each starts at, and the offline checks `validate` runs on it.
//!
//! The splitter knows just enough of Flink's lexical rules not to be fooled: `;` ends a
//! statement except inside a `'string'` (`''` is a quote inside it), a `` `quoted` `` or
//! `"quoted"` identifier, a `-- line comment` or a `/* block comment */`. It is not Flink's
//! parser: what a statement means is for the cluster to say at deploy. Beyond splitting, it
//! knows the first word of the statements a SQL job cannot run (`SELECT`, `EXECUTE`,
//! `BEGIN STATEMENT SET`, `END`).
//!
//! Why a scanner of its own: the well-kept Rust SQL crate, `sqlparser` (0.59), has no Flink
//! dialect. Its parser refuses Flink's DDL in the dialects closest to it (generic, Hive, MySQL
//! all stop at `WATERMARK FOR ts AS ...` with "Expected: ',' or ')' after column definition"),
//! so it cannot check statements; its tokenizer alone could find the `;`s, but by another
//! dialect's lexical rules, and it places an unclosed `/*` at the end of the text rather than
//! where the comment opened. Splitting needs only Flink's rules for strings, quoted identifiers
//! and comments: the scanner below, fuzzed by `fuzz/fuzz_targets/sql_split.rs`.

use serde::{Deserialize, Serialize};

/// One statement of a SQL job, as the runner gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// What kind of statement it is.
    pub kind: StatementKind,
    /// Its text from its first word to before its `;` (comments before it left out).
    pub text: String,
    /// 1-based line of its first word in the SQL text.
    pub line: usize,
    /// 1-based column (in characters) of its first word in the SQL text.
    pub column: usize,
}

/// What the runner does with a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// `SET 'key' = 'value'`: set in the job's table config.
    Set {
        /// The key, unquoted.
        key: String,
        /// The value, unquoted.
        value: String,
    },
    /// `INSERT INTO ...`: one of the statement set's inserts.
    Insert,
    /// Anything else (`CREATE TABLE`, `CREATE FUNCTION`, `USE`, ...): run in order.
    Other,
}

/// A problem in SQL text, at a 1-based line and column of that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plain SQL.
    Code,
    /// Inside a quoted string or identifier closed by this character.
    Quoted(char),
    /// Inside `-- ...` up to the end of the line.
    LineComment,
    /// Inside `/* ... */`.
    BlockComment,
}

/// A statement's raw extent while splitting.
struct Raw {
    /// Byte offset of its first word, when it has one.
    start: Option<usize>,
    /// Line and column of that word.
    at: (usize, usize),
    /// Line and column just after its last character outside a comment.
    end: (usize, usize),
}

/// Splits `sql` into statements. Every problem is reported: an unclosed quote or comment, an
/// empty statement, a last statement without its `;`, a `SET` not of the form
/// `SET 'key' = 'value'`, a statement a SQL job cannot run, no `INSERT` at all.
pub fn split(sql: &str) -> Result<Vec<Statement>, Vec<SqlError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut mode = Mode::Code;
    let (mut line, mut column) = (1usize, 1usize);
    let mut opened = (1usize, 1usize);
    let mut cur = Raw {
        start: None,
        at: (1, 1),
        end: (1, 1),
    };
    let mut chars = sql.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        let next = chars.peek().map(|&(_, c)| c);
        let here = (line, column);
        let before = mode;
        if ch == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
        match mode {
            Mode::Quoted(q) if ch == q => {
                if next == Some(q) {
                    chars.next();
                    column += 1;
                } else {
                    mode = Mode::Code;
                }
            }
            Mode::Quoted(_) => {}
            Mode::LineComment if ch == '\n' => mode = Mode::Code,
            Mode::LineComment => {}
            Mode::BlockComment if ch == '*' && next == Some('/') => {
                chars.next();
                column += 1;
                mode = Mode::Code;
            }
            Mode::BlockComment => {}
            Mode::Code => match ch {
                '-' if next == Some('-') => mode = Mode::LineComment,
                '/' if next == Some('*') => {
                    chars.next();
                    column += 1;
                    opened = here;
                    mode = Mode::BlockComment;
                }
                ';' => {
                    match cur.start {
                        Some(s) => out.push(statement(&sql[s..i], cur.at, &mut errors)),
                        None => errors.push(SqlError {
                            line: here.0,
                            column: here.1,
                            message: "empty statement: nothing before this `;`".into(),
                        }),
                    }
                    cur.start = None;
                }
                c if c.is_whitespace() => {}
                c => {
                    if cur.start.is_none() {
                        cur.start = Some(i);
                        cur.at = here;
                    }
                    if matches!(c, '\'' | '"' | '`') {
                        opened = here;
                        mode = Mode::Quoted(c);
                    }
                }
            },
        }
        let code = matches!(before, Mode::Code | Mode::Quoted(_))
            && matches!(mode, Mode::Code | Mode::Quoted(_));
        if code && !ch.is_whitespace() {
            cur.end = (line, column);
        }
    }
    end_of_text(sql, mode, opened, &cur, &mut out, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// At the end of `sql`, reached in `mode` with `cur` unfinished: an unclosed quote or comment,
/// a last statement without its `;`, or no `INSERT` at all.
fn end_of_text(
    sql: &str,
    mode: Mode,
    opened: (usize, usize),
    cur: &Raw,
    out: &mut Vec<Statement>,
    errors: &mut Vec<SqlError>,
) {
    match unclosed(mode, opened) {
        Some(e) => errors.push(e),
        None => {
            if let Some(s) = cur.start {
                out.push(statement(sql[s..].trim_end(), cur.at, errors));
                errors.push(SqlError {
                    line: cur.end.0,
                    column: cur.end.1,
                    message: "missing `;`: every statement ends with `;`, the last one too".into(),
                });
            }
        }
    }
    if errors.is_empty() && !out.iter().any(|s| s.kind == StatementKind::Insert) {
        errors.push(SqlError {
            line: 1,
            column: 1,
            message: "no INSERT statement; a SQL job needs at least one `INSERT INTO ...`".into(),
        });
    }
}

/// The problem of text ending in `mode` (a quote or comment opened at `opened`), if any.
fn unclosed(mode: Mode, opened: (usize, usize)) -> Option<SqlError> {
    let message = match mode {
        Mode::Quoted(q) => format!("unclosed {}: no closing `{q}`", quote_name(q)),
        Mode::BlockComment => "unclosed comment: no closing `*/`".into(),
        Mode::Code | Mode::LineComment => return None,
    };
    Some(SqlError {
        line: opened.0,
        column: opened.1,
        message,
    })
}

/// What a quote character opens, for messages.
fn quote_name(q: char) -> &'static str {
    match q {
        '\'' => "string",
        _ => "quoted identifier",
    }
}

/// One statement's kind, from its first word.
fn statement(text: &str, at: (usize, usize), errors: &mut Vec<SqlError>) -> Statement {
    let text = text.trim_end().to_string();
    let word: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    if let Some(why) = cannot_run(&word) {
        errors.push(SqlError {
            line: at.0,
            column: at.1,
            message: why.into(),
        });
    }
    let kind = match word.as_str() {
        "INSERT" => StatementKind::Insert,
        "SET" => match parse_set(&text[3..]) {
            Some((key, value)) => StatementKind::Set { key, value },
            None => {
                errors.push(SqlError {
                    line: at.0,
                    column: at.1,
                    message: "expected `SET 'key' = 'value'`".into(),
                });
                StatementKind::Other
            }
        },
        _ => StatementKind::Other,
    };
    Statement {
        kind,
        text,
        line: at.0,
        column: at.1,
    }
}

/// Why a statement starting with `word` (upper case) cannot be in a SQL job, if it cannot.
fn cannot_run(word: &str) -> Option<&'static str> {
    match word {
        "SELECT" => Some(
            "a query on its own has nowhere to write its rows in a SQL job; \
             write them with `INSERT INTO <table> SELECT ...`",
        ),
        "EXECUTE" => Some(
            "`EXECUTE` would run a Flink job of its own; write the `INSERT INTO ...` alone: \
             every INSERT of a SQL job runs in its one Flink job",
        ),
        "BEGIN" | "END" => Some(
            "`BEGIN STATEMENT SET` and `END` are not needed: every INSERT of a SQL job runs in \
             one statement set; remove them",
        ),
        _ => None,
    }
}

/// `'key' = 'value'` (after `SET`), unquoted.
fn parse_set(rest: &str) -> Option<(String, String)> {
    let (key, rest) = quoted(rest.trim_start())?;
    let rest = rest.trim_start().strip_prefix('=')?;
    let (value, rest) = quoted(rest.trim_start())?;
    rest.trim().is_empty().then_some((key, value))
}

/// A leading `'string'` (with `''` inside), unquoted, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('\'')?;
    let mut out = String::new();
    loop {
        let end = rest.find('\'')?;
        out.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('\'') {
            Some(r) => {
                out.push('\'');
                rest = r;
            }
            None => return Some((out, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(String, usize, usize)> {
        split(sql)
            .unwrap()
            .into_iter()
            .map(|s| (s.text, s.line, s.column))
            .collect()
    }

    fn errors(sql: &str) -> Vec<String> {
        split(sql)
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect()
    }

    #[test]
    fn semicolons_in_strings_identifiers_and_comments_do_not_split() {
        let sql = "CREATE TABLE `a;b` (x STRING) WITH ('k' = 'v;''w');\n\
                   -- a comment; still a comment\n\
                   /* block; comment */ INSERT INTO \"t;\" SELECT 'x;' FROM `a;b`;";
        assert_eq!(
            kinds(sql),
            vec![
                (
                    "CREATE TABLE `a;b` (x STRING) WITH ('k' = 'v;''w')".into(),
                    1,
                    1
                ),
                ("INSERT INTO \"t;\" SELECT 'x;' FROM `a;b`".into(), 3, 22),
            ]
        );
    }

    #[test]
    fn set_statements_are_read() {
        let s = split("SET 'pipeline.name' = 'it''s';\nINSERT INTO t SELECT 1;").unwrap();
        assert_eq!(
            s[0].kind,
            StatementKind::Set {
                key: "pipeline.name".into(),
                value: "it's".into()
            }
        );
        assert_eq!((s[1].line, s[1].column), (2, 1));
        assert_eq!(
            errors("SET x = 1;\nINSERT INTO t SELECT 1;"),
            vec!["1:1: expected `SET 'key' = 'value'`"]
        );
    }

    #[test]
    fn problems_are_placed() {
        assert_eq!(
            errors("INSERT INTO t SELECT 'x;"),
            vec!["1:22: unclosed string: no closing `'`"]
        );
        assert_eq!(
            errors("INSERT INTO t SELECT 1; /* no end"),
            vec!["1:25: unclosed comment: no closing `*/`"]
        );
        assert_eq!(
            errors("INSERT INTO t SELECT 1;\n  ;"),
            vec!["2:3: empty statement: nothing before this `;`"]
        );
        assert_eq!(
            errors("CREATE TABLE t (x INT);"),
            vec!["1:1: no INSERT statement; a SQL job needs at least one `INSERT INTO ...`"]
        );
        assert_eq!(
            errors("SELECT 'é' FROM `ü"),
            vec!["1:17: unclosed quoted identifier: no closing ```"]
        );
    }

    #[test]
    fn a_last_statement_without_its_semicolon_is_placed_at_its_end() {
        let missing = "missing `;`: every statement ends with `;`, the last one too";
        assert_eq!(
            errors("INSERT INTO t SELECT 1;\nINSERT INTO u\n  SELECT 'ü' -- no end\n\n"),
            vec![format!("3:13: {missing}")]
        );
        assert_eq!(
            errors("INSERT INTO t SELECT 1 /* c */  "),
            vec![format!("1:23: {missing}")]
        );
        // A comment after the last `;` is no statement.
        assert!(split("INSERT INTO t SELECT 1; -- done\n/* end */").is_ok());
    }

    #[test]
    fn statements_a_sql_job_cannot_run_are_placed() {
        let sql = "CREATE TABLE t (x INT);\n  select x FROM t;\nBEGIN STATEMENT SET;\n\
                   INSERT INTO u SELECT x FROM t;\nEND;\nEXECUTE INSERT INTO u SELECT 1;\n";
        assert_eq!(
            errors(sql),
            vec![
                "2:3: a query on its own has nowhere to write its rows in a SQL job; write them \
                 with `INSERT INTO <table> SELECT ...`",
                "3:1: `BEGIN STATEMENT SET` and `END` are not needed: every INSERT of a SQL job \
                 runs in one statement set; remove them",
                "5:1: `BEGIN STATEMENT SET` and `END` are not needed: every INSERT of a SQL job \
                 runs in one statement set; remove them",
                "6:1: `EXECUTE` would run a Flink job of its own; write the `INSERT INTO ...` \
                 alone: every INSERT of a SQL job runs in its one Flink job",
            ]
        );
    }
}
