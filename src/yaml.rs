//! A located YAML tree, and the checks every file reader in the crate builds on.
//!
//! [`parse`] turns text into a [`Node`] tree from `saphyr-parser` events. Every node carries the
//! 1-based line and column where it starts, so later validation can point at
//! `path:line:column`. Scalars keep their text, whether they were quoted, and a resolved
//! [`ScalarKind`] (YAML 1.2 core schema; a quoted or block scalar is always a string).
//!
//! The parser refuses what a config file should never contain: duplicate mapping keys, more
//! than one document, nesting deeper than [`MAX_DEPTH`], and alias expansion beyond
//! [`MAX_ALIAS_NODES`] nodes (the "billion laughs").
//!
//! [`Checker`] is the toolbox for validating a tree: typed getters that report
//! "expected X, found Y", unknown fields with a "did you mean" hint, and collection of every
//! problem of a file, reported in file order.

use std::collections::HashMap;
use std::time::Duration;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use crate::diag::Diagnostic;

/// Deepest nesting of lists and mappings accepted.
pub const MAX_DEPTH: usize = 64;

/// Most nodes that alias expansion may add to a tree.
pub const MAX_ALIAS_NODES: usize = 10_000;

/// One node of the tree, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the node holds.
    pub value: Value,
    /// Which file the node was read from: 0 for the file being checked, `n` for the `n`th of
    /// the [`Checker`]'s other sources (a folder's `_defaults.yaml` merged under a job file).
    pub origin: u32,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence (list).
    Seq(Vec<Node>),
    /// A mapping, in file order; keys are scalars and unique.
    Map(Vec<(Node, Node)>),
}

/// A scalar as written, with its resolved kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text after YAML unquoting and folding.
    pub text: String,
    /// Written quoted or as a block scalar (`|`, `>`), which makes it a string.
    pub quoted: bool,
    /// What the scalar means.
    pub kind: ScalarKind,
}

/// A scalar's meaning under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalarKind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A floating-point number (or an integer too large for `i64`).
    Float(f64),
    /// Anything else.
    String,
}

impl Node {
    /// What kind of value this is, for messages: "a string", "a list", ...
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Null => "null",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Int(_) | ScalarKind::Float(_) => "a number",
                ScalarKind::String => "a string",
            },
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar, if this is one.
    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// True for a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.kind == ScalarKind::Null)
    }
}

/// Resolves a plain scalar under the YAML 1.2 core schema.
pub fn resolve(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarKind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return i64::from_str_radix(oct, 8)
                .map(ScalarKind::Int)
                .unwrap_or(ScalarKind::String);
        }
        return ScalarKind::String;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return i64::from_str_radix(hex, 16)
                .map(ScalarKind::Int)
                .unwrap_or(ScalarKind::String);
        }
        return ScalarKind::String;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => ScalarKind::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map(ScalarKind::Float)
                .unwrap_or(ScalarKind::String),
        };
    }
    if is_core_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return ScalarKind::Float(f);
    }
    ScalarKind::String
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (sign already removed).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let d = e.strip_prefix(['-', '+']).unwrap_or(e);
            !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exp_ok
}

/// A list or mapping being built.
enum Frame {
    Seq {
        line: usize,
        column: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        column: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashMap<String, (usize, usize)>,
    },
}

/// Builds the tree from events.
struct Builder<'p> {
    path: &'p str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
    root: Option<Node>,
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

impl Builder<'_> {
    fn diag(&self, line: usize, column: usize, msg: impl Into<String>) -> Vec<Diagnostic> {
        vec![Diagnostic::new(self.path, line, column, msg)]
    }

    /// Adds a finished node to its parent (or makes it the root).
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), Vec<Diagnostic>> {
        if anchor != 0 {
            let n = count(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                Some(k) => {
                    entries.push((k, node));
                    Ok(())
                }
                None => {
                    let Value::Scalar(s) = &node.value else {
                        let (l, c) = (node.line, node.column);
                        return Err(self.diag(
                            l,
                            c,
                            format!(
                                "a mapping key must be a plain value, found {}",
                                node.kind_name()
                            ),
                        ));
                    };
                    if let Some((l0, c0)) = seen.get(&s.text) {
                        let msg = format!(
                            "duplicate key `{}` (first defined at line {l0}, column {c0})",
                            s.text
                        );
                        let (l, c) = (node.line, node.column);
                        return Err(self.diag(l, c, msg));
                    }
                    seen.insert(s.text.clone(), (node.line, node.column));
                    *key = Some(node);
                    Ok(())
                }
            },
        }
    }
}

/// Parses one YAML document into a located tree.
///
/// `path` is only used in diagnostics. Errors: YAML syntax, an empty file, several documents,
/// duplicate keys, non-scalar keys, nesting deeper than [`MAX_DEPTH`], alias expansion beyond
/// [`MAX_ALIAS_NODES`], an alias to an unknown anchor.
pub fn parse(path: &str, src: &str) -> Result<Node, Vec<Diagnostic>> {
    let end = crate::diag::end_of(src);
    build(path, src, end).map_err(|mut diags| {
        // The scanner counts some columns in bytes (a directive line with non-ASCII text):
        // a column past its line's end is moved to the end.
        for d in &mut diags {
            (d.line, d.column) = crate::diag::clamp(src, d.line, d.column);
        }
        diags
    })
}

/// A position moved back into the text (which ends at `end`) when it lies past the end: the
/// scanner reports the end of a text that does not end in a line break as the start of the
/// line after it.
fn within(end: (usize, usize), at: (usize, usize)) -> (usize, usize) {
    if at.0 <= end.0 { at } else { end }
}

/// [`parse`]; `end` is the position just past the text.
fn build(path: &str, src: &str, end: (usize, usize)) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder {
        path,
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        root: None,
    };
    let mut documents = 0usize;
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e: ScanError| {
            let m = e.marker();
            vec![Diagnostic::new(
                path,
                m.line().max(1),
                m.col() + 1,
                format!("invalid YAML: {}", e.info()),
            )]
        })?;
        let at = within(end, pos(&span));
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(b.diag(
                        at.0,
                        at.1,
                        "a second YAML document (`---`); expected exactly one document per file",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                b.scalar(at, text.into_owned(), style, forced_str, anchor)?;
            }
            Event::SequenceStart(anchor, _) => b.open(at, anchor, true)?,
            Event::MappingStart(anchor, _) => b.open(at, anchor, false)?,
            Event::SequenceEnd | Event::MappingEnd => b.close(at)?,
            Event::Alias(id) => b.alias(at, id)?,
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    b.root.ok_or_else(|| {
        vec![Diagnostic::file(
            path,
            "the file is empty; expected a YAML mapping of fields",
        )]
    })
}

impl Builder<'_> {
    /// A scalar at `(line, column)`: a string when quoted or tagged `!!str`, else resolved.
    fn scalar(
        &mut self,
        (line, column): (usize, usize),
        text: String,
        style: ScalarStyle,
        forced_str: bool,
        anchor: usize,
    ) -> Result<(), Vec<Diagnostic>> {
        let quoted = style != ScalarStyle::Plain;
        let kind = if quoted || forced_str {
            ScalarKind::String
        } else {
            resolve(&text)
        };
        let node = Node {
            line,
            column,
            value: Value::Scalar(Scalar { text, quoted, kind }),
            origin: 0,
        };
        self.finish(node, anchor)
    }

    /// The start of a sequence (`seq`) or a mapping, at most [`MAX_DEPTH`] deep.
    fn open(
        &mut self,
        (line, column): (usize, usize),
        anchor: usize,
        seq: bool,
    ) -> Result<(), Vec<Diagnostic>> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.diag(
                line,
                column,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let frame = if seq {
            Frame::Seq {
                line,
                column,
                anchor,
                items: Vec::new(),
            }
        } else {
            Frame::Map {
                line,
                column,
                anchor,
                entries: Vec::new(),
                key: None,
                seen: HashMap::new(),
            }
        };
        self.stack.push(frame);
        Ok(())
    }

    /// The end of the innermost sequence or mapping.
    fn close(&mut self, (line, column): (usize, usize)) -> Result<(), Vec<Diagnostic>> {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq {
                line,
                column,
                anchor,
                items,
            }) => (
                Node {
                    line,
                    column,
                    value: Value::Seq(items),
                    origin: 0,
                },
                anchor,
            ),
            Some(Frame::Map {
                line,
                column,
                anchor,
                entries,
                ..
            }) => (
                Node {
                    line,
                    column,
                    value: Value::Map(entries),
                    origin: 0,
                },
                anchor,
            ),
            None => return Err(self.diag(line, column, "invalid YAML: unbalanced end")),
        };
        self.finish(node, anchor)
    }

    /// An alias: a copy of its anchor's node, counted against [`MAX_ALIAS_NODES`].
    fn alias(&mut self, (line, column): (usize, usize), id: usize) -> Result<(), Vec<Diagnostic>> {
        let Some((node, n)) = self.anchors.get(&id).cloned() else {
            return Err(self.diag(line, column, "alias to an unknown anchor"));
        };
        self.alias_nodes = self.alias_nodes.saturating_add(n);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(self.diag(
                line,
                column,
                format!(
                    "aliases expand to more than {MAX_ALIAS_NODES} nodes; \
                     write the values out or use fewer aliases"
                ),
            ));
        }
        self.finish(node, 0)
    }
}

/// The closest candidate to `word`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(&'a str, f64)> = None;
    for c in candidates {
        if c.eq_ignore_ascii_case(word) {
            return Some(c);
        }
        let score = strsim::jaro_winkler(&lower, c);
        if score >= 0.8 && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// The fields of a mapping, by name.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    /// The mapping node itself.
    pub node: &'a Node,
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// The value of `key`, unless it is absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// All entries, in file order (unknown keys included).
    pub fn entries(&self) -> &[(&'a str, &'a Node)] {
        &self.entries
    }
}

/// Collects the problems of one file while typed getters read its tree.
#[derive(Debug, Clone)]
pub struct Checker {
    path: String,
    diags: Vec<Diagnostic>,
    /// The files nodes with an `origin` above 0 came from, and the job they are checked for.
    sources: Option<(Vec<String>, String)>,
}

impl Checker {
    /// A checker for the file known to the operator as `path`.
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
            diags: Vec::new(),
            sources: None,
        }
    }

    /// A checker for job `job` (file `path`) whose tree holds nodes read from other files:
    /// a node with origin `n` is reported in `sources[n - 1]`, naming the job.
    pub fn with_sources(path: &str, sources: Vec<String>, job: &str) -> Self {
        Self {
            sources: Some((sources, job.to_string())),
            ..Self::new(path)
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records a problem at a node.
    pub fn error(&mut self, node: &Node, msg: impl Into<String>) {
        let inherited = node.origin.checked_sub(1).and_then(|i| {
            let (files, job) = self.sources.as_ref()?;
            Some((files.get(usize::try_from(i).ok()?)?, job))
        });
        let d = match inherited {
            Some((file, job)) => Diagnostic::new(
                file,
                node.line,
                node.column,
                format!("job `{job}`: {}", msg.into()),
            ),
            None => Diagnostic::new(&self.path, node.line, node.column, msg),
        };
        self.diags.push(d);
    }

    /// Records a problem found elsewhere (another file, a place inside a scalar).
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// True when no problem was recorded.
    pub fn is_ok(&self) -> bool {
        self.diags.is_empty()
    }

    /// Every problem, in file order (line, then column, then the order found).
    pub fn finish(mut self) -> Vec<Diagnostic> {
        if self.sources.is_none() {
            self.diags.sort_by_key(|d| (d.line, d.column));
            return self.diags;
        }
        let own = self.path.clone();
        // The job file's own problems first, then each inherited file's, in file order.
        self.diags
            .sort_by_key(|d| (d.path != own, d.path.clone(), d.line, d.column));
        self.diags
    }

    fn type_error(&mut self, node: &Node, name: &str, expected: &str) {
        let msg = if name.is_empty() {
            format!(
                "expected {expected} of fields at the top level, found {}",
                node.kind_name()
            )
        } else {
            format!("`{name}`: expected {expected}, found {}", node.kind_name())
        };
        self.error(node, msg);
    }

    /// The fields of a mapping named `name`; unknown keys are reported with a hint.
    pub fn mapping<'a>(
        &mut self,
        node: &'a Node,
        name: &str,
        known: &[&str],
    ) -> Option<Fields<'a>> {
        let Value::Map(entries) = &node.value else {
            self.type_error(node, name, "a mapping");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = k.scalar().map(|s| s.text.as_str()).unwrap_or_default();
            if !known.contains(&key) {
                let place = if name.is_empty() {
                    String::new()
                } else {
                    format!(" in `{name}`")
                };
                let msg = match did_you_mean(key, known) {
                    Some(hint) => format!("unknown field `{key}`{place}, did you mean `{hint}`?"),
                    None => format!(
                        "unknown field `{key}`{place}; expected one of: {}",
                        known.join(", ")
                    ),
                };
                self.error(k, msg);
            }
            out.push((key, v));
        }
        Some(Fields { node, entries: out })
    }

    /// A mapping whose keys are free-form (`vars`, `conf`): its entries with their key nodes.
    pub fn free_mapping<'a>(&mut self, node: &'a Node, name: &str) -> Vec<(&'a Node, &'a Node)> {
        match &node.value {
            Value::Map(entries) => entries.iter().map(|(k, v)| (k, v)).collect(),
            _ => {
                self.type_error(node, name, "a mapping");
                Vec::new()
            }
        }
    }

    /// Reports a missing required field of a mapping, unless an unknown key of the mapping
    /// was already reported as a likely misspelling of it.
    pub fn missing(&mut self, fields: &Fields<'_>, name: &str, hint: &str) {
        if fields
            .entries
            .iter()
            .any(|(k, _)| *k != name && did_you_mean(k, &[name]).is_some())
        {
            return;
        }
        let msg = format!("missing required field `{name}` ({hint})");
        self.error(fields.node, msg);
    }

    /// A required string field `key` of a section (`name` in messages); a missing one is
    /// reported with `hint`.
    pub fn required_string(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        name: &str,
        hint: &str,
    ) -> Option<String> {
        match fields.get(key) {
            Some(v) => self.string(v, name),
            None => {
                self.missing(fields, key, hint);
                None
            }
        }
    }

    /// A string; numbers and booleans are refused.
    pub fn string(&mut self, node: &Node, name: &str) -> Option<String> {
        match node.scalar() {
            Some(s) if s.kind == ScalarKind::String => Some(s.text.clone()),
            _ => {
                self.type_error(node, name, "a string");
                None
            }
        }
    }

    /// A string, number or boolean, as text (for values passed on to programs).
    pub fn text(&mut self, node: &Node, name: &str) -> Option<String> {
        match node.scalar() {
            Some(s) if s.kind != ScalarKind::Null => Some(s.text.clone()),
            _ => {
                self.type_error(node, name, "a string, number or boolean");
                None
            }
        }
    }

    /// A boolean.
    pub fn boolean(&mut self, node: &Node, name: &str) -> Option<bool> {
        match node.scalar().map(|s| s.kind) {
            Some(ScalarKind::Bool(b)) => Some(b),
            _ => {
                self.type_error(node, name, "`true` or `false`");
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn integer(&mut self, node: &Node, name: &str, min: i64, max: i64) -> Option<i64> {
        match node.scalar().map(|s| s.kind) {
            Some(ScalarKind::Int(i)) if (min..=max).contains(&i) => Some(i),
            Some(ScalarKind::Int(i)) => {
                let msg =
                    format!("`{name}`: expected a whole number from {min} to {max}, found {i}");
                self.error(node, msg);
                None
            }
            // A number that is not whole, or too large for a whole number: say which.
            Some(ScalarKind::Float(_)) => {
                let text = node.scalar().map(|s| s.text.as_str()).unwrap_or_default();
                let msg =
                    format!("`{name}`: expected a whole number from {min} to {max}, found {text}");
                self.error(node, msg);
                None
            }
            _ => {
                self.type_error(node, name, "a whole number");
                None
            }
        }
    }

    /// A size in bytes: a whole number, or text such as `64MiB`, `500 MB` or `1GiB`, in
    /// `min..=max` bytes.
    pub fn size(&mut self, node: &Node, name: &str, min: u64, max: u64) -> Option<u64> {
        let expected = "a size like `64MiB`, `500MB` or `1GiB`";
        let bytes = match node.scalar() {
            Some(s) => match s.kind {
                ScalarKind::Int(i) => u64::try_from(i).ok(),
                ScalarKind::String => s
                    .text
                    .trim()
                    .parse::<bytesize::ByteSize>()
                    .ok()
                    .map(|b| b.as_u64()),
                _ => None,
            },
            None => None,
        };
        let text = node.scalar().map(|s| s.text.clone()).unwrap_or_default();
        match bytes {
            Some(b) if (min..=max).contains(&b) => Some(b),
            Some(_) => {
                let msg = format!(
                    "`{name}`: `{text}` is out of range; expected from {} to {}",
                    bytesize::ByteSize::b(min).display().iec(),
                    bytesize::ByteSize::b(max).display().iec()
                );
                self.error(node, msg);
                None
            }
            None if node.scalar().is_some() => {
                let msg = format!("`{name}`: invalid size `{text}`; expected {expected}");
                self.error(node, msg);
                None
            }
            None => {
                self.type_error(node, name, expected);
                None
            }
        }
    }

    /// A humantime duration such as `90s`, `5m` or `2h`.
    pub fn duration(&mut self, node: &Node, name: &str) -> Option<Duration> {
        let s = match node.scalar() {
            Some(s) if s.kind == ScalarKind::String => s,
            _ => {
                self.type_error(node, name, "a duration like `90s`, `5m` or `2h`");
                return None;
            }
        };
        match humantime::parse_duration(s.text.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                let msg = format!(
                    "`{name}`: invalid duration `{}` ({e}); expected a duration like `90s`, `5m` or `2h`",
                    s.text
                );
                self.error(node, msg);
                None
            }
        }
    }

    /// A list of strings (numbers and booleans refused).
    pub fn string_list(&mut self, node: &Node, name: &str) -> Option<Vec<String>> {
        self.list(node, name, |c, item, n| c.string(item, n))
    }

    /// A list of strings, numbers or booleans, as text.
    pub fn text_list(&mut self, node: &Node, name: &str) -> Option<Vec<String>> {
        self.list(node, name, |c, item, n| c.text(item, n))
    }

    fn list(
        &mut self,
        node: &Node,
        name: &str,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<String>,
    ) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.type_error(node, name, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, n) in items.iter().enumerate() {
            match item(self, n, &format!("{name}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::render;

    fn err(src: &str) -> String {
        render(&parse("f.yaml", src).expect_err("should fail"))
    }

    /// Found by fuzzing (`fuzz/`, target `job_file`): a syntax error at the end of a file with
    /// no final line break was reported on a line past the end (`5:1` in a file of 4 lines).
    #[test]
    fn an_error_at_the_end_of_the_file_points_into_the_file() {
        assert_eq!(
            err("env: dev\nparams:\n  command: {command}\n{extra}"),
            "f.yaml:4:8: invalid YAML: simple key expected\n"
        );
        assert_eq!(
            err("a: [1,"),
            "f.yaml:1:7: invalid YAML: while parsing a node, did not find expected node content\n"
        );
        // A node there too: an explicit key with nothing after it.
        let root = parse("f.yaml", "? ").expect("a mapping with a null key");
        let Value::Map(entries) = &root.value else {
            panic!("root is a mapping")
        };
        assert_eq!((entries[0].0.line, entries[0].0.column), (1, 3));
        assert_eq!(
            err("a: [1,\r"),
            "f.yaml:2:1: invalid YAML: while parsing a node, did not find expected node content\n"
        );
    }

    /// Found by fuzzing (`fuzz/`, target `daemon_config`): the scanner counts the columns of a
    /// directive line in bytes, so an error in one with non-ASCII text pointed past the line.
    #[test]
    fn an_error_in_a_directive_line_points_into_it() {
        let diags = parse("f.yaml", "%ϝϝϝϝϝ\0\nx: 1\n").expect_err("unprintable");
        assert_eq!((diags[0].line, diags[0].column), (1, 8));
    }

    #[test]
    fn locations_and_kinds() {
        let root = parse(
            "f.yaml",
            "a: 1\nb:\n  - 'x'\n  - true\nc: ~\nd: 1.5\ne: hello\n",
        )
        .expect("valid");
        let Value::Map(entries) = &root.value else {
            panic!("root is a mapping")
        };
        assert_eq!((root.line, root.column), (1, 1));
        let (k, v) = &entries[1];
        assert_eq!((k.line, k.column), (2, 1));
        let Value::Seq(items) = &v.value else {
            panic!("b is a list")
        };
        assert_eq!((items[0].line, items[0].column), (3, 5));
        let s = items[0].scalar().expect("scalar");
        assert!(s.quoted);
        assert_eq!(s.kind, ScalarKind::String);
        assert_eq!(
            items[1].scalar().map(|s| s.kind),
            Some(ScalarKind::Bool(true))
        );
        assert!(entries[2].1.is_null());
        assert_eq!(
            entries[3].1.scalar().map(|s| s.kind),
            Some(ScalarKind::Float(1.5))
        );
        assert_eq!(
            entries[0].1.scalar().map(|s| s.kind),
            Some(ScalarKind::Int(1))
        );
        assert_eq!(entries[4].1.kind_name(), "a string");
    }

    #[test]
    fn core_schema() {
        assert_eq!(resolve("0x1f"), ScalarKind::Int(31));
        assert_eq!(resolve("0o17"), ScalarKind::Int(15));
        assert_eq!(resolve("-12"), ScalarKind::Int(-12));
        assert_eq!(resolve("1e3"), ScalarKind::Float(1000.0));
        assert_eq!(resolve(".5"), ScalarKind::Float(0.5));
        assert_eq!(resolve("yes"), ScalarKind::String);
        assert_eq!(resolve("1.2.3"), ScalarKind::String);
        assert_eq!(resolve("90s"), ScalarKind::String);
        assert_eq!(resolve("."), ScalarKind::String);
        assert_eq!(resolve("+"), ScalarKind::String);
        assert_eq!(resolve("e5"), ScalarKind::String);
    }

    #[test]
    fn duplicate_key() {
        assert_eq!(
            err("a: 1\nb:\n  c: 1\n  c: 2\n"),
            "f.yaml:4:3: duplicate key `c` (first defined at line 3, column 3)\n"
        );
    }

    #[test]
    fn empty_and_comment_only() {
        let want = "f.yaml:1:1: the file is empty; expected a YAML mapping of fields\n";
        assert_eq!(err(""), want);
        assert_eq!(err("# nothing\n\n"), want);
    }

    #[test]
    fn multiple_documents() {
        assert_eq!(
            err("a: 1\n---\nb: 2\n"),
            "f.yaml:2:1: a second YAML document (`---`); expected exactly one document per file\n"
        );
    }

    #[test]
    fn syntax_error_at_marker() {
        assert_eq!(
            err("a: b: c\n"),
            "f.yaml:1:5: invalid YAML: mapping values are not allowed in this context\n"
        );
        assert_eq!(
            err("a:\n\t- x\n"),
            "f.yaml:2:2: invalid YAML: tabs disallowed within this context (block indentation)\n"
        );
        assert_eq!(
            err("a: *nope\n"),
            "f.yaml:1:4: invalid YAML: while parsing node, found unknown anchor\n"
        );
    }

    #[test]
    fn tags_and_bom() {
        let root = parse("f.yaml", "\u{feff}a: !!str 5\n").expect("valid");
        let Value::Map(e) = &root.value else {
            panic!("mapping")
        };
        assert_eq!(e[0].1.scalar().map(|s| s.kind), Some(ScalarKind::String));
        assert_eq!((e[0].1.line, e[0].1.column), (1, 4));
    }

    #[test]
    fn aliases_expand_and_bombs_stop() {
        let root = parse("f.yaml", "a: &x [1, 2]\nb: *x\n").expect("valid");
        let Value::Map(e) = &root.value else {
            panic!("mapping")
        };
        assert_eq!(e[0].1.value, e[1].1.value);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let out = err(&bomb);
        assert!(
            out.contains("aliases expand to more than 10000 nodes"),
            "{out}"
        );
    }

    #[test]
    fn deep_nesting_refused() {
        let seventy = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(
            err(&seventy),
            "f.yaml:1:65: nesting deeper than 64 levels\n"
        );
        // The scanner has its own limit, reached first on very deep flow collections.
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("limit"));
        let mut block = String::new();
        for i in 0..80 {
            block.push_str(&" ".repeat(i));
            block.push_str("k:\n");
        }
        assert!(err(&block).contains("nesting deeper than 64 levels"));
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: Vec<String> = vec![
            "\u{0}\u{1}\u{2}".into(),
            "{{{{".into(),
            "- - - - -".into(),
            "? [a]\n: b\n".into(),
            "*unknown".into(),
            "&a [*a]".into(),
            "'unterminated".into(),
            "a: |\n  x\n b".into(),
            "%YAML 1.2\n%YAML 1.2\n---\na: 1".into(),
            "!!binary abc".into(),
            "\t\ta: b".into(),
            String::from_utf8_lossy(&(0u8..=255).collect::<Vec<u8>>()).into_owned(),
        ];
        for s in inputs {
            let _ = parse("f.yaml", &s);
        }
    }

    #[test]
    fn did_you_mean_hints() {
        let known = ["project", "env", "params", "schedule"];
        assert_eq!(did_you_mean("enviroment", &known), Some("env"));
        assert_eq!(did_you_mean("shedule", &known), Some("schedule"));
        assert_eq!(did_you_mean("PARAMS", &known), Some("params"));
        assert_eq!(did_you_mean("zzz", &known), None);
    }
}
