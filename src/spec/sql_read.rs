//! Reading a job file's `sql` or `sql_file` into a [`Sql`]: which of `sql`, `sql_file` and
//! `params.main_class` a job may have, the `.sql` file beside the job file, placeholders in the
//! SQL, and every problem placed in the job file (inside the `sql` block) or in the `.sql` file.

use std::path::Path;

use super::placeholders::Expand;
use super::sql::{self, SqlError, StatementKind};
use super::{Context, EngineFacts, MAX_JOB_FILE_BYTES, SecretError, Sql};
use crate::diag::Diagnostic;
use crate::yaml::{Checker, Fields, Node, Value};

/// Reads the files a job file names, at the same commit as the job file.
pub trait RepoFiles: std::fmt::Debug {
    /// The content of `path` (a path as [`sibling_path`] makes it); `None` when there is no
    /// such file; an error says why it cannot be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileReadError>;
}

/// Why a file a job file names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    /// The disk said no.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The store of the files (a git repository) said no.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
}

/// [`RepoFiles`] of the local disk, paths as given (relative to the working folder).
#[derive(Debug, Clone, Copy)]
pub struct DiskFiles;

impl RepoFiles for DiskFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileReadError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The path of `rel`, written in the job file at `job_path`, relative to the job file's folder:
/// `jobs/a/x.yaml` + `../sql/x.sql` is `jobs/sql/x.sql`. `None` when `rel` is absolute or
/// leaves the folder `job_path` is relative to.
pub fn sibling_path(job_path: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = job_path.split('/').collect();
    parts.pop();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none_or(|p| p == "..") {
                    return None;
                }
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// Statements with every `${secret:NAME}` replaced by its value from `secrets_dir`, and the
/// secrets read (to mask). Meant for the moment of submission only.
pub fn resolve_sql_secrets(
    statements: &[sql::Statement],
    secrets_dir: Option<&Path>,
) -> Result<(Vec<sql::Statement>, Vec<super::SecretValue>), SecretError> {
    // Every string of the statements in one list: each text, then a SET's key and value.
    let mut strings = Vec::new();
    for s in statements {
        strings.push(s.text.clone());
        if let StatementKind::Set { key, value } = &s.kind {
            strings.extend([key.clone(), value.clone()]);
        }
    }
    let params = super::Params {
        args: strings,
        ..super::Params::default()
    };
    let (resolved, values) = super::resolve_secrets_with_values(&params, secrets_dir)?;
    let mut it = resolved.args.into_iter();
    let mut next = || it.next().unwrap_or_default();
    let out = statements
        .iter()
        .map(|s| {
            let text = next();
            let kind = match &s.kind {
                StatementKind::Set { .. } => StatementKind::Set {
                    key: next(),
                    value: next(),
                },
                k => k.clone(),
            };
            sql::Statement {
                kind,
                text,
                ..s.clone()
            }
        })
        .collect();
    Ok((out, values))
}

/// Which of `sql` and `sql_file` a job file's text `src` has, and the line and column of its
/// value: the place of a problem with the job's SQL as a whole.
pub fn sql_field_place(src: &str) -> Option<(&'static str, usize, usize)> {
    let root = crate::yaml::parse("", src).ok()?;
    let Value::Map(entries) = &root.value else {
        return None;
    };
    entries.iter().find_map(|(k, v)| {
        let key = match k.scalar()?.text.as_str() {
            "sql" => "sql",
            "sql_file" => "sql_file",
            _ => return None,
        };
        Some((key, v.line, v.column))
    })
}

/// The node of `params.<key>`, when the file has one.
fn param_node<'a>(f: &Fields<'a>, key: &str) -> Option<&'a Node> {
    let Value::Map(entries) = &f.get("params")?.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.scalar().is_some_and(|s| s.text == key))
        .map(|(_, v)| v)
}

/// Reads `sql` / `sql_file` of the job's fields `f`; `engine` is the env's engine when a daemon
/// config was given. Problems go to `c`.
pub(super) fn read_sql(
    c: &mut Checker,
    f: &Fields<'_>,
    src: &str,
    ex: &Expand<'_>,
    ctx: Context<'_>,
    engine: Option<EngineFacts>,
) -> Option<Sql> {
    let inline = f.get("sql");
    let file = f.get("sql_file");
    check_kind(c, f, ex, engine);
    if let (Some(args), Some(_)) = (param_node(f, "args"), inline.or(file)) {
        c.error(
            args,
            "`params.args`: a SQL job takes no program arguments (its statements are what the \
             SQL runner gets); remove them, and put values in the SQL with `${var:NAME}`",
        );
    }
    if let (Some(a), Some(_)) = (inline, file) {
        // Reported above with a config; without one, still only one may be read.
        if engine.is_none() {
            c.error(
                a,
                "`sql`: give the SQL inline (`sql`) or in a file (`sql_file`), not both",
            );
        }
        return None;
    }
    if let Some(n) = inline {
        let text = c.string(n, "sql")?;
        let base = Base::of(src, n);
        let path = c.path().to_string();
        return Some(checked(c, &path, &text, None, ex, |l, col| {
            base.place(l, col)
        }));
    }
    let n = file?;
    let rel = c.string(n, "sql_file")?;
    let Some(path) = sibling_path(c.path(), &rel) else {
        c.error(
            n,
            format!("`sql_file`: `{rel}` must be a path relative to the job file, inside the repo"),
        );
        return None;
    };
    let Some(files) = ctx.files else {
        return Some(Sql {
            file: Some(rel),
            path,
            text: String::new(),
            statements: Vec::new(),
            indent: 0,
        });
    };
    let text = read_text(c, n, files, &path, &rel)?;
    Some(checked(c, &path, &text, Some(rel), ex, |l, col| (l, col)))
}

/// On a flink env, exactly one of `sql`, `sql_file` and `params.main_class`; on another
/// engine, neither `sql` nor `sql_file`.
fn check_kind(c: &mut Checker, f: &Fields<'_>, ex: &Expand<'_>, engine: Option<EngineFacts>) {
    let (inline, file) = (f.get("sql"), f.get("sql_file"));
    let given: Vec<(&str, &Node)> = [
        ("sql", inline),
        ("sql_file", file),
        ("params.main_class", param_node(f, "main_class")),
    ]
    .into_iter()
    .filter_map(|(name, n)| Some((name, n?)))
    .collect();
    match engine {
        Some(e) if e.runs_sql => match given.as_slice() {
            [] => c.error(
                f.node,
                format!(
                    "a {} job needs one of `sql`, `sql_file` or `params.main_class`",
                    e.name
                ),
            ),
            [_] => {}
            [(first, _), (second, n), ..] => c.error(
                n,
                format!(
                    "`{second}`: a {} job has exactly one of `sql`, `sql_file` or \
                     `params.main_class`, and this one also has `{first}`; keep one",
                    e.name
                ),
            ),
        },
        Some(EngineFacts { name: other, .. }) => {
            for (name, n) in given.iter().filter(|(name, _)| !name.starts_with("params")) {
                c.error(
                    n,
                    format!(
                        "`{name}`: env `{}` runs on the {other} engine; SQL jobs run on flink",
                        ex.env
                    ),
                );
            }
        }
        None => {}
    }
}

/// The text of the `sql_file` (at `n`, written `rel`) found at `path`.
fn read_text(
    c: &mut Checker,
    n: &Node,
    files: &dyn RepoFiles,
    path: &str,
    rel: &str,
) -> Option<String> {
    match files.read(path) {
        Ok(None) => {
            c.error(
                n,
                format!("`sql_file`: there is no file `{path}` (`{rel}` beside the job file)"),
            );
            None
        }
        Ok(Some(bytes)) if bytes.len() > MAX_JOB_FILE_BYTES => {
            c.error(n, format!("`sql_file`: `{path}` is over 1 MiB"));
            None
        }
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(t) => Some(t),
            Err(_) => {
                c.error(n, format!("`sql_file`: `{path}` is not UTF-8 text"));
                None
            }
        },
        Err(e) => {
            c.error(n, format!("`sql_file`: cannot read `{path}`: {e}"));
            None
        }
    }
}

/// Splits and checks SQL `text` read from `path`; `place` turns a place in the text into one in
/// the file.
fn checked(
    c: &mut Checker,
    path: &str,
    text: &str,
    file: Option<String>,
    ex: &Expand<'_>,
    place: impl Fn(usize, usize) -> (usize, usize),
) -> Sql {
    let mut report = |e: SqlError| {
        let (line, column) = place(e.line, e.column);
        c.push(Diagnostic::new(path, line, column, e.message));
    };
    for e in placeholder_errors(text, ex) {
        report(e);
    }
    let mut statements = match sql::split(text) {
        Ok(s) => s,
        Err(errors) => {
            errors.into_iter().for_each(&mut report);
            Vec::new()
        }
    };
    for s in &mut statements {
        (s.line, s.column) = place(s.line, s.column);
        s.text = ex.quietly(&s.text).0;
        if let StatementKind::Set { key, value } = &mut s.kind {
            *key = ex.quietly(key).0;
            *value = ex.quietly(value).0;
        }
    }
    Sql {
        file,
        path: path.to_string(),
        text: ex.quietly(text).0,
        statements,
        indent: 0,
    }
}

/// The place in the job file (or `.sql` file) of an error Flink gave for a statement the runner
/// named (`jobkeeper-sql statement N: ...`), as a `path:line:column: message` line. Flink's
/// `line L, column C` count from the statement's first word; without them the statement's own
/// place is given. Columns count the SQL Flink got: on a line with a `${var:..}` before the
/// place, they count the variable's value, not the placeholder.
pub fn place_flink_error(sql: &Sql, reason: &str) -> Option<String> {
    const MARK: &str = "jobkeeper-sql statement ";
    let at = reason.find(MARK)? + MARK.len();
    let rest = &reason[at..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    let stmt = sql.statements.get(n.checked_sub(1)?)?;
    let message = rest[digits.len()..]
        .trim_start_matches(':')
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    let (line, column) = match line_column(message) {
        Some((1, c)) => (stmt.line, stmt.column + c - 1),
        Some((l, c)) => (stmt.line + l - 1, indent(sql) + c),
        None => (stmt.line, stmt.column),
    };
    Some(Diagnostic::new(&sql.path, line, column, message).to_string())
}

/// Columns before the SQL text on its lines in the file: 0 in a `.sql` file; in an inline block,
/// its indentation, which is where its leftmost statement starts. (A statement starts its line
/// unless a comment or another statement is before it on that line.) It is derived here rather
/// than kept in [`Sql::indent`], which stays 0 so that the hash of a job's spec does not change.
fn indent(sql: &Sql) -> usize {
    if sql.file.is_some() {
        return sql.indent;
    }
    let leftmost = sql.statements.iter().map(|s| s.column).min();
    sql.indent.max(leftmost.unwrap_or(1).saturating_sub(1))
}

/// The first `line L, column C` of a Flink message.
fn line_column(message: &str) -> Option<(usize, usize)> {
    let at = message.find("line ")?;
    let rest = &message[at + 5..];
    let l: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let rest = rest[l.len()..].strip_prefix(", column ")?;
    let c: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((l.parse().ok()?, c.parse().ok().filter(|c| *c > 0)?))
}

/// The problems of the `${...}` placeholders of `text`, each at its `$`.
fn placeholder_errors(text: &str, ex: &Expand<'_>) -> Vec<SqlError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("${").map(|i| i + from) {
        let end = text[i..].find('}').map_or(text.len(), |e| i + e + 1);
        let before = &text[..i];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        for message in ex.quietly(&text[i..end]).1 {
            out.push(SqlError {
                line,
                column,
                message,
            });
        }
        from = end.max(i + 2);
    }
    out
}

/// Where the text of a scalar starts in its file, to place problems found inside it.
struct Base {
    /// Line of the scalar's first text line.
    line: usize,
    /// Columns before the text on its first line.
    first: usize,
    /// Columns before the text on later lines (a block scalar's indentation).
    indent: usize,
}

impl Base {
    /// The base of scalar node `n` of `src`.
    fn of(src: &str, n: &Node) -> Base {
        let mut lines = src.lines().skip(n.line.saturating_sub(1));
        let first = lines.next().unwrap_or("");
        let at = first.chars().nth(n.column.saturating_sub(1));
        match at {
            Some('|' | '>') => {
                let indent = lines
                    .find(|l| !l.trim().is_empty())
                    .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
                Base {
                    line: n.line + 1,
                    first: indent,
                    indent,
                }
            }
            Some('"' | '\'') => Base {
                line: n.line,
                first: n.column,
                indent: 0,
            },
            // A block scalar's node starts at its text: every line is indented as the first.
            _ if n.scalar().is_some_and(|s| s.quoted) => Base {
                line: n.line,
                first: n.column.saturating_sub(1),
                indent: n.column.saturating_sub(1),
            },
            _ => Base {
                line: n.line,
                first: n.column.saturating_sub(1),
                indent: 0,
            },
        }
    }

    /// A place in the scalar's text as a place in the file.
    fn place(&self, line: usize, column: usize) -> (usize, usize) {
        if line <= 1 {
            (self.line, self.first + column)
        } else {
            (self.line + line - 1, self.indent + column)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_errors_are_placed_in_the_file() {
        let sql = Sql {
            file: None,
            path: "jobs/a.yaml".into(),
            text: String::new(),
            statements: vec![
                sql::Statement {
                    kind: StatementKind::Other,
                    text: "CREATE TABLE t".into(),
                    line: 3,
                    column: 3,
                },
                sql::Statement {
                    kind: StatementKind::Insert,
                    text: "INSERT INTO u\nSELECT * FROM nope".into(),
                    line: 4,
                    column: 3,
                },
            ],
            indent: 2,
        };
        let reason = "flink refused the job (400 Bad Request): x\nCaused by: java.lang.RuntimeException: \
                      jobkeeper-sql statement 2: From line 2, column 15 to line 2, column 18: \
                      Object 'nope' not found\nCaused by: more";
        assert_eq!(
            place_flink_error(&sql, reason).as_deref(),
            Some(
                "jobs/a.yaml:5:17: From line 2, column 15 to line 2, column 18: Object 'nope' not found"
            )
        );
        let first =
            "jobkeeper-sql statement 1: SQL parse failed. Encountered \"x\" at line 1, column 8.";
        assert_eq!(
            place_flink_error(&sql, first).as_deref(),
            Some("jobs/a.yaml:3:10: SQL parse failed. Encountered \"x\" at line 1, column 8.")
        );
        assert_eq!(place_flink_error(&sql, "no statement named"), None);
    }

    #[test]
    fn flink_errors_in_an_inline_block_count_its_indentation() {
        let file = "env: f\nsql: |\n    CREATE TABLE t (x INT) WITH ('connector' = 'datagen');\n    \
                    INSERT INTO t\n    SELECT x\n      FROM nope;\n";
        let spec = super::super::parse_job(
            "jobs/a.yaml",
            file.as_bytes(),
            Context {
                settings: None,
                files: None,
            },
        )
        .unwrap();
        let sql = spec.sql.as_ref().unwrap();
        assert_eq!(indent(sql), 4);
        assert_eq!((sql.statements[1].line, sql.statements[1].column), (4, 5));
        // Flink counts from the statement's first word: its line 3 is the file's line 6, and
        // its column 8 (in the text without the block's indentation) is the file's column 12.
        let reason = "jobkeeper-sql statement 2: From line 3, column 8 to line 3, column 11: \
                      Object 'nope' not found";
        assert_eq!(
            place_flink_error(sql, reason).as_deref(),
            Some(
                "jobs/a.yaml:6:12: From line 3, column 8 to line 3, column 11: Object 'nope' not found"
            )
        );
        let sql_line = file.lines().nth(5).unwrap();
        assert_eq!(&sql_line[11..15], "nope");
    }

    #[test]
    fn secrets_are_replaced_in_texts_and_set_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let statements = sql::split(
            "SET 'k' = '${secret:pw}';\nINSERT INTO t SELECT '${secret:pw}', '${var:X}';",
        )
        .unwrap();
        let (out, values) = resolve_sql_secrets(&statements, Some(dir.path())).unwrap();
        assert_eq!(crate::spec::values_of(&values), vec!["s3cret"]);
        assert_eq!(values[0].name, "pw");
        assert_eq!(
            out[0].kind,
            StatementKind::Set {
                key: "k".into(),
                value: "s3cret".into()
            }
        );
        assert_eq!(out[1].text, "INSERT INTO t SELECT 's3cret', '${var:X}'");
        assert_eq!((out[1].line, out[1].column), (2, 1));
        let missing = resolve_sql_secrets(&statements, None).unwrap_err();
        assert!(missing.to_string().contains("`pw`"), "{missing}");
    }

    #[test]
    fn sibling_paths_stay_inside() {
        assert_eq!(
            sibling_path("jobs/a.yaml", "a.sql").as_deref(),
            Some("jobs/a.sql")
        );
        assert_eq!(
            sibling_path("jobs/t/a.yaml", "../sql/./a.sql").as_deref(),
            Some("jobs/sql/a.sql")
        );
        assert_eq!(sibling_path("jobs/a.yaml", "../../x.sql"), None);
        assert_eq!(sibling_path("jobs/a.yaml", "/etc/passwd"), None);
    }
}
