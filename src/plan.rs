//! The plan: what applying a new set of job specs does, per job. Pure functions over plain data.
//!
//! [`diff_specs`] classes the change between two versions of one job (SPEC reconcile rule 3);
//! [`plan`] does it for every changed job file of a commit, and the `render_*` functions print
//! the result for people (text, a merge-request comment in markdown) and programs (JSON).

mod reason;

pub use reason::{AdoptCheck, Reason, joined};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::spec::JobSpec;

/// What happens to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new job: build if needed, then submit.
    Add,
    /// A new job with `adopt`: the job already running on its cluster is taken over, without a
    /// restart.
    Adopt,
    /// Project fields changed: build, then redeploy.
    Rebuild,
    /// Params, env, schedule or suspension changed: redeploy the same artifact.
    Redeploy,
    /// Only alerts, restart policy or batch settings changed: applied without touching the run.
    InPlace,
    /// The job file is gone: stop the job, keep its history.
    Remove,
    /// The job file is invalid: the previous version keeps running untouched.
    Invalid,
    /// The file changed but the job did not (comments, formatting).
    Unchanged,
}

impl Action {
    /// The word used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Adopt => "adopt",
            Action::Rebuild => "rebuild",
            Action::Redeploy => "redeploy",
            Action::InPlace => "in-place",
            Action::Remove => "remove",
            Action::Invalid => "invalid",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One changed job file, as read at the new commit.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per changed file; boxing buys nothing
pub enum Change {
    /// The file exists at the new commit (added or modified).
    Upsert {
        /// Job name.
        name: String,
        /// Path of the file in the repo.
        path: String,
        /// The parsed spec, or every problem of the file.
        spec: Result<JobSpec, Vec<Diagnostic>>,
    },
    /// The file is gone at the new commit.
    Remove {
        /// Job name.
        name: String,
        /// Path the file had.
        path: String,
    },
}

impl Change {
    /// The job this change is about.
    pub fn name(&self) -> &str {
        match self {
            Change::Upsert { name, .. } | Change::Remove { name, .. } => name,
        }
    }
}

/// The plan for one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Job name.
    pub job: String,
    /// Path of its file in the repo.
    pub path: String,
    /// What happens.
    pub action: Action,
    /// Why, one line each (`params.args changed`), typed; text when shown.
    pub reasons: Vec<Reason>,
    /// For `invalid`: every problem of the file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
    /// The spec hash of the new version (as the daemon's store keeps it), for a valid new file.
    #[serde(skip)]
    pub hash: Option<String>,
    /// The new version keeps its state across upgrades and moves (flink `upgrade: savepoint`).
    #[serde(skip)]
    pub keeps_state: bool,
    /// The change cannot work and the daemon refuses it (a reason says why).
    #[serde(skip)]
    pub refused: bool,
}

/// A version a rollback refused, as the daemon reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Its spec hash.
    pub hash: String,
    /// The config commit that deployed it.
    pub commit: Option<String>,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// Warns on each item whose new version is the one a rollback refused for its job (`refused` by
/// job name): the daemon keeps refusing it and the previous version keeps running.
pub fn warn_refused(plan: &mut Plan, refused: &BTreeMap<String, Refused>) {
    for item in &mut plan.items {
        let Some(r) = refused.get(&item.job) else {
            continue;
        };
        if item.hash.as_deref() != Some(r.hash.as_str()) {
            continue;
        }
        let commit = r
            .commit
            .as_deref()
            .map(|c| format!(" (commit {})", c.chars().take(8).collect::<String>()))
            .unwrap_or_default();
        let why = r
            .reason
            .as_deref()
            .map(|w| {
                format!(
                    ": {}",
                    chain_line(w.strip_prefix("rolled back: ").unwrap_or(w))
                )
            })
            .unwrap_or_default();
        item.reasons.push(Reason::Line(format!(
            "warning: this version was rolled back{commit}{why}; the daemon keeps refusing it \
             and the previous version keeps running until the job file changes"
        )));
    }
}

/// A reason of several lines (a root-cause chain) on one line: its lines joined by ` | `.
pub fn chain_line(reason: &str) -> String {
    reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The plan for a whole commit, sorted by job name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// One item per changed job.
    pub items: Vec<Item>,
    /// The commit's removals against `max_removals` (`jobkeeper plan` sets it).
    pub removals: Option<crate::removals::Removals>,
}

impl Plan {
    /// True when some job file is invalid.
    pub fn has_invalid(&self) -> bool {
        self.items.iter().any(|i| i.action == Action::Invalid)
    }

    /// True when some change cannot work and the daemon will refuse it (a refused move).
    pub fn has_refused(&self) -> bool {
        self.items.iter().any(|i| i.refused)
    }

    /// Number of items with this action.
    pub fn count(&self, action: Action) -> usize {
        self.items.iter().filter(|i| i.action == action).count()
    }
}

fn changed<T: PartialEq + std::fmt::Debug>(out: &mut Vec<Reason>, field: &str, old: &T, new: &T) {
    if old != new {
        out.push(Reason::Line(format!("{field} changed")));
    }
}

fn changed_shown(out: &mut Vec<Reason>, field: &str, old: Option<&str>, new: Option<&str>) {
    if old != new {
        let show = |v: Option<&str>| v.map_or_else(|| "(none)".to_string(), |s| format!("`{s}`"));
        out.push(Reason::Line(format!(
            "{field}: {} → {}",
            show(old),
            show(new)
        )));
    }
}

/// Classes the change from `old` to `new` of one job (SPEC reconcile rule 3), with reasons.
pub fn diff_specs(old: &JobSpec, new: &JobSpec) -> (Action, Vec<Reason>) {
    let rebuild = project_changes(old, new);
    let redeploy = deploy_changes(old, new);
    let mut in_place = Vec::new();
    changed(&mut in_place, "alerts", &old.alerts, &new.alerts);
    changed(&mut in_place, "restart", &old.restart, &new.restart);
    changed(&mut in_place, "overlap", &old.overlap, &new.overlap);
    changed(&mut in_place, "timeout", &old.timeout, &new.timeout);
    changed(&mut in_place, "upgrade", &old.upgrade, &new.upgrade);
    changed(
        &mut in_place,
        "max_checkpoint_age",
        &old.max_checkpoint_age,
        &new.max_checkpoint_age,
    );
    let (og, ng) = (&old.guard, &new.guard);
    let health = |g: &crate::spec::GuardOverride| (g.checkpoint_age, g.restarts);
    changed(&mut in_place, "health", &health(og), &health(ng));
    changed(&mut in_place, "rollback", &og.rollback, &ng.rollback);
    changed(
        &mut in_place,
        "ready_within",
        &og.ready_within,
        &ng.ready_within,
    );
    changed(&mut in_place, "drift", &og.drift, &ng.drift);
    changed(&mut in_place, "adopt", &old.adopt, &new.adopt);
    changed(
        &mut in_place,
        "savepoints",
        &old.savepoints,
        &new.savepoints,
    );
    if old.restore.is_some() && new.restore.is_none() {
        in_place.push(Reason::from(
            "restore removed (nothing is restored; the job keeps its state)",
        ));
    }

    let action = if !rebuild.is_empty() {
        Action::Rebuild
    } else if !redeploy.is_empty() {
        Action::Redeploy
    } else if !in_place.is_empty() {
        Action::InPlace
    } else {
        Action::Unchanged
    };
    let mut reasons = rebuild;
    reasons.extend(redeploy);
    reasons.extend(in_place);
    if action == Action::Unchanged {
        reasons.push(UNCHANGED.to_string().into());
    }
    if action != Action::Rebuild
        && old.env != new.env
        && let Some(field) = project_var(new)
    {
        reasons.push(
            format!(
                "may be a rebuild: `{field}` uses `${{var:..}}`, which take env `{}`'s values; \
                 `plan --config` reads them and says",
                new.env
            )
            .into(),
        );
    }
    (action, reasons)
}

/// The reason of a changed job file whose job did not change.
pub const UNCHANGED: &str =
    "the file changed, not what it asks for (comments, layout or the order of keys)";

/// The first `project` field that still holds a `${var:..}` (its env's vars were not read:
/// `plan` without `--config`), when the job has a project.
fn project_var(spec: &JobSpec) -> Option<&'static str> {
    let p = spec.project.as_ref()?;
    let var = |v: Option<&str>| v.is_some_and(|v| v.contains("${var:"));
    [
        ("project.repo", Some(p.repo.as_str())),
        ("project.branch", Some(p.branch.as_str())),
        ("project.dir", Some(p.dir.as_str())),
        ("project.build", p.build.as_deref()),
        ("project.artifact", p.artifact.as_deref()),
    ]
    .into_iter()
    .find(|(_, v)| var(*v))
    .map(|(field, _)| field)
}

/// The changes that need a new build.
fn project_changes(old: &JobSpec, new: &JobSpec) -> Vec<Reason> {
    let mut rebuild = Vec::new();
    match (&old.project, &new.project) {
        (Some(o), Some(n)) => {
            changed_shown(&mut rebuild, "project.repo", Some(&o.repo), Some(&n.repo));
            changed_shown(
                &mut rebuild,
                "project.branch",
                Some(&o.branch),
                Some(&n.branch),
            );
            changed_shown(&mut rebuild, "project.dir", Some(&o.dir), Some(&n.dir));
            changed_shown(
                &mut rebuild,
                "project.build",
                o.build.as_deref(),
                n.build.as_deref(),
            );
            changed_shown(
                &mut rebuild,
                "project.artifact",
                o.artifact.as_deref(),
                n.artifact.as_deref(),
            );
            if o.follow != n.follow {
                rebuild.push(Reason::Line(format!(
                    "project.follow: {} → {}",
                    o.follow, n.follow
                )));
            }
        }
        (None, Some(_)) => rebuild.push("project added".into()),
        (Some(_), None) => rebuild.push("project removed".into()),
        (None, None) => {}
    }
    rebuild
}

/// The changes that need a new run.
/// `sql` / `sql_file` changes: the file named, or the SQL it holds.
fn sql_changes(out: &mut Vec<Reason>, old: &JobSpec, new: &JobSpec) {
    match (&old.sql, &new.sql) {
        (None, None) => {}
        (None, Some(_)) => out.push("sql added".into()),
        (Some(_), None) => out.push("sql removed".into()),
        (Some(o), Some(n)) => {
            if o.file != n.file {
                changed_shown(out, "sql_file", o.file.as_deref(), n.file.as_deref());
            } else if o.text != n.text {
                let what = if n.file.is_some() { "sql_file" } else { "sql" };
                out.push(Reason::Line(format!("{what} changed")));
            }
        }
    }
}

fn deploy_changes(old: &JobSpec, new: &JobSpec) -> Vec<Reason> {
    let mut redeploy = Vec::new();
    if old.env != new.env {
        redeploy.push(Reason::EnvChanged {
            old: old.env.clone(),
            new: new.env.clone(),
        });
    }
    sql_changes(&mut redeploy, old, new);
    changed(
        &mut redeploy,
        "params.main_class",
        &old.params.main_class,
        &new.params.main_class,
    );
    changed(
        &mut redeploy,
        "params.args",
        &old.params.args,
        &new.params.args,
    );
    changed(
        &mut redeploy,
        "params.parallelism",
        &old.params.parallelism,
        &new.params.parallelism,
    );
    changed(
        &mut redeploy,
        "params.conf",
        &old.params.conf,
        &new.params.conf,
    );
    changed(
        &mut redeploy,
        "params.command",
        &old.params.command,
        &new.params.command,
    );
    changed(
        &mut redeploy,
        "params.environment",
        &old.params.environment,
        &new.params.environment,
    );
    changed(
        &mut redeploy,
        "params.workdir",
        &old.params.workdir,
        &new.params.workdir,
    );
    changed_shown(
        &mut redeploy,
        "schedule",
        old.schedule.as_deref(),
        new.schedule.as_deref(),
    );
    if let Some(path) = new
        .restore
        .as_deref()
        .filter(|p| old.restore.as_deref() != Some(*p))
    {
        redeploy.push(Reason::Line(format!("restore from {path}")));
    }
    if old.suspend != new.suspend {
        redeploy.push(Reason::from(if new.suspend {
            "suspend: false → true (the job is stopped)"
        } else {
            "suspend: true → false (the job is started)"
        }));
    }
    redeploy
}

/// The plan for a set of changed job files against the specs applied before them.
///
/// `applied` needs to hold only the jobs named by `changes` (a job absent from it is new).
pub fn plan(applied: &BTreeMap<String, JobSpec>, changes: &[Change]) -> Plan {
    let mut items: Vec<Item> = changes
        .iter()
        .map(|change| match change {
            Change::Remove { name, path } => Item {
                job: name.clone(),
                path: path.clone(),
                action: Action::Remove,
                reasons: vec![if applied.contains_key(name) {
                    "job file removed: the job is stopped, its history kept".into()
                } else {
                    "job file removed (it was not running)".into()
                }],
                errors: Vec::new(),
                hash: None,
                keeps_state: false,
                refused: false,
            },
            Change::Upsert {
                name,
                path,
                spec: Err(errors),
            } => Item {
                job: name.clone(),
                path: path.clone(),
                action: Action::Invalid,
                reasons: vec![if applied.contains_key(name) {
                    "job file is invalid: the previous version keeps running untouched".into()
                } else {
                    "job file is invalid: the job is not started".into()
                }],
                errors: errors.clone(),
                hash: None,
                keeps_state: false,
                refused: false,
            },
            Change::Upsert {
                name,
                path,
                spec: Ok(new),
            } => {
                let (action, reasons) = match applied.get(name) {
                    None => match &new.adopt {
                        Some(target) => (
                            Action::Adopt,
                            vec![Reason::Adopt {
                                target: target.clone(),
                                env: new.env.clone(),
                                check: AdoptCheck::Unchecked,
                            }],
                        ),
                        None => (Action::Add, vec![Reason::Line(add_reason(new))]),
                    },
                    Some(old) => diff_specs(old, new),
                };
                Item {
                    job: name.clone(),
                    path: path.clone(),
                    action,
                    reasons,
                    errors: Vec::new(),
                    hash: Some(crate::spec::spec_hash(
                        &serde_json::to_string(new).unwrap_or_default(),
                    )),
                    keeps_state: new.upgrade.keeps_state(),
                    refused: false,
                }
            }
        })
        .collect();
    items.sort_by(|a, b| a.job.cmp(&b.job).then(a.action.cmp(&b.action)));
    Plan {
        items,
        removals: None,
    }
}

/// What `plan` says of an adoption until the cluster is asked ([`checked_adoption`]).
pub const ADOPT_UNCHECKED: &str = "(checked at apply)";

/// An `adopt` item's reason once the cluster was asked: what it found, or why the apply would
/// be refused as things stand.
pub fn checked_adoption(reason: &mut Reason, found: Result<String, String>) {
    if let Reason::Adopt { check, .. } = reason {
        *check = match found {
            Ok(job) => AdoptCheck::Found(job),
            Err(why) => AdoptCheck::Refused(why),
        };
    }
}

fn add_reason(spec: &JobSpec) -> String {
    let what = if spec.schedule.is_some() {
        "batch job"
    } else {
        "service job"
    };
    let build = match &spec.project {
        Some(p) if p.build.is_some() => ", built from its project",
        _ => "",
    };
    let suspended = if spec.suspend {
        " (suspended: not started)"
    } else {
        ""
    };
    let restore = spec
        .restore
        .as_deref()
        .map(|p| format!("; restore from {p}"))
        .unwrap_or_default();
    format!(
        "new {what} in env `{}`{build}{suspended}{restore}",
        spec.env
    )
}

fn summary(plan: &Plan) -> String {
    let order = [
        Action::Add,
        Action::Adopt,
        Action::Rebuild,
        Action::Redeploy,
        Action::InPlace,
        Action::Remove,
        Action::Invalid,
        Action::Unchanged,
    ];
    let parts: Vec<String> = order
        .iter()
        .filter_map(|a| match plan.count(*a) {
            0 => None,
            n => Some(format!("{n} {}", a.as_str())),
        })
        .collect();
    if parts.is_empty() {
        "no job changes".to_string()
    } else {
        parts.join(", ")
    }
}

/// Plain text: one block per job, then a summary line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    for item in &plan.items {
        let _ = writeln!(
            out,
            "{:<9} {}  ({})",
            item.action.as_str(),
            item.job,
            item.path
        );
        for r in &item.reasons {
            let _ = writeln!(out, "          - {r}");
        }
        for e in &item.errors {
            let _ = writeln!(out, "          {e}");
        }
    }
    if let Some(line) = plan.removals.as_ref().and_then(|r| r.line()) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "plan: {}", summary(plan));
    out
}

/// Text for one markdown table cell or line: every character that can start inline markup
/// (a code span, link, image, emphasis, HTML, an entity, a table break) is backslash-escaped,
/// and every control character (a newline, a carriage return) becomes a space, so nothing
/// starts a new line: no heading, no fence.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '!' | '#' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A reason (text quoting names in backticks, as the plan writes it) for one table cell: the
/// text between backticks becomes code spans ([`md_code`]), the rest is escaped
/// ([`md_escape`]). A backtick left unpaired (a value holding one) is escaped as text, so
/// whatever the values hold, each piece is either escaped text or a closed code span.
fn md_reason(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    let mut out = String::with_capacity(s.len());
    for (i, part) in parts.iter().enumerate() {
        let quoted = i % 2 == 1;
        if quoted && i + 1 < parts.len() {
            out.push_str(&md_code(part));
        } else {
            if quoted {
                out.push_str("\\`");
            }
            out.push_str(&md_escape(part));
        }
    }
    out
}

/// `s` as an inline code span on one line: fenced by more backticks than any run inside it,
/// padded when it starts or ends with one, `|` escaped for tables, control characters as
/// spaces.
fn md_code(s: &str) -> String {
    let text: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|");
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// A fenced code block holding `lines`, one line each (a control character in one, such as
/// a newline in a file name, becomes a space): its fence is longer than any run of backticks
/// in them, so no line can close it early.
fn md_block(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '`').map(str::len))
        .max()
        .unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let mut out = format!("{fence}\n");
    for l in lines {
        let clean: String = l
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out.push_str(&clean);
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

/// The most characters (counted as bytes, which are never fewer) `plan --format markdown`
/// writes: under GitHub's 65,536-character comment limit, with room for the marker a CI
/// template puts first.
pub const MAX_MARKDOWN: usize = 60_000;

/// The order the classes of a plan are detailed in: what needs a reviewer's eyes first.
const DETAIL_ORDER: [Action; 8] = [
    Action::Invalid,
    Action::Remove,
    Action::Adopt,
    Action::Redeploy,
    Action::Rebuild,
    Action::InPlace,
    Action::Add,
    Action::Unchanged,
];

/// Room kept at the end for the lines that close a cut and say what it left out.
const CUT_NOTE_ROOM: usize = 1_200;

/// Markdown for a merge-request comment: a table of counts per class first, then one
/// `<details>` section per class (invalid and removed jobs first, open) with a row per job and
/// the invalid files' errors. The whole stays under [`MAX_MARKDOWN`] bytes: when the details do
/// not fit, the rows and error lines that do not are left out and a last line says how many of
/// each class, and how to get them all (`--format text`, which the CI templates print in the
/// job's log).
pub fn render_markdown(plan: &Plan, from: &str, to: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### jobkeeper plan {} → {}\n",
        md_code(from),
        md_code(to)
    );
    let _ = writeln!(out, "**{}**\n", summary(plan));
    if let Some(line) = plan.removals.as_ref().and_then(|r| r.line()) {
        let _ = writeln!(out, "⚠️ {}\n", md_reason(&line));
    }
    if plan.items.is_empty() {
        return out;
    }
    out.push_str("| action | jobs |\n|---|---:|\n");
    for action in DETAIL_ORDER {
        let n = plan.count(action);
        if n > 0 {
            let _ = writeln!(out, "| {}{} | {n} |", icon(action), action.as_str());
        }
    }
    out.push('\n');
    let budget = MAX_MARKDOWN - CUT_NOTE_ROOM;
    // Left out: per class, rows; and error lines.
    let mut left: Vec<(Action, usize)> = Vec::new();
    let mut errors_left = 0usize;
    for action in DETAIL_ORDER {
        let items: Vec<&Item> = plan.items.iter().filter(|i| i.action == action).collect();
        if items.is_empty() {
            continue;
        }
        let open = if matches!(action, Action::Invalid | Action::Remove) {
            " open"
        } else {
            ""
        };
        let head = format!(
            "<details{open}><summary>{}{}: {} job(s)</summary>\n\n| job | why |\n|---|---|\n",
            icon(action),
            action.as_str(),
            items.len()
        );
        let close = "\n</details>\n\n";
        if out.len() + head.len() + close.len() > budget {
            left.push((action, items.len()));
            if action == Action::Invalid {
                errors_left += items.iter().map(|i| i.errors.len()).sum::<usize>();
            }
            continue;
        }
        out.push_str(&head);
        let mut shown = 0;
        for item in &items {
            let row = format!(
                "| {} | {} |\n",
                md_code(&item.job),
                md_reason(&joined(&item.reasons))
            );
            if out.len() + row.len() + close.len() > budget {
                break;
            }
            out.push_str(&row);
            shown += 1;
        }
        if shown < items.len() {
            left.push((action, items.len() - shown));
        }
        if action == Action::Invalid {
            errors_left += markdown_errors(&mut out, &items, budget - close.len());
        }
        out.push_str(close);
    }
    if !left.is_empty() || errors_left > 0 {
        cut_note(&mut out, &left, errors_left);
    }
    out
}

/// The invalid files' error lines of `items` as one block, each line while `out` stays within
/// `budget`; how many lines were left out.
fn markdown_errors(out: &mut String, items: &[&Item], budget: usize) -> usize {
    let errors: Vec<String> = items
        .iter()
        .flat_map(|i| &i.errors)
        .map(Diagnostic::to_string)
        .collect();
    if errors.is_empty() {
        return 0;
    }
    let intro = "\n**Invalid job files** (these jobs keep their previous version):\n\n";
    let mut fitting: Vec<String> = Vec::new();
    // The block's fence and intro, then each line while it fits.
    let mut size = out.len() + intro.len() + 2 * (md_fence_len(&errors) + 1);
    for e in &errors {
        if size + e.len() + 1 > budget {
            break;
        }
        size += e.len() + 1;
        fitting.push(e.clone());
    }
    if !fitting.is_empty() {
        out.push_str(intro);
        out.push_str(&md_block(&fitting));
    }
    errors.len() - fitting.len()
}

/// The last line of a cut plan: how many rows of each class and error lines were left out, and
/// where the whole plan is.
fn cut_note(out: &mut String, left: &[(Action, usize)], errors_left: usize) {
    let mut parts: Vec<String> = left
        .iter()
        .map(|(a, n)| format!("{n} {}", a.as_str()))
        .collect();
    if errors_left > 0 {
        parts.push(format!("{errors_left} error line(s) of invalid files"));
    }
    let _ = writeln!(
        out,
        "✂️ Cut to fit a comment ({MAX_MARKDOWN} characters): left out {}. The whole plan \
         is in this pipeline's job log, or run the same `jobkeeper plan` with \
         `--format text`.",
        parts.join(", ")
    );
}

/// The icon a class is marked with.
fn icon(action: Action) -> &'static str {
    match action {
        Action::Invalid => "❌ ",
        Action::Remove => "🗑 ",
        _ => "",
    }
}

/// The length of the fence [`md_block`] puts around `lines`.
fn md_fence_len(lines: &[String]) -> usize {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '`').map(str::len))
        .max()
        .unwrap_or(0);
    (longest + 1).max(3)
}

/// JSON for programs: `{"from", "to", "items": [...], "invalid": bool}`, keys in
/// alphabetical order.
pub fn render_json(plan: &Plan, from: &str, to: &str) -> String {
    /// An item as JSON: its fields in alphabetical order, written straight from the plan.
    #[derive(Serialize)]
    struct JsonItem<'a> {
        action: Action,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<serde_json::Value>,
        job: &'a str,
        path: &'a str,
        reasons: &'a [Reason],
    }
    /// The plan as JSON, its fields in alphabetical order.
    #[derive(Serialize)]
    struct JsonPlan<'a> {
        from: &'a str,
        held: bool,
        invalid: bool,
        items: Vec<JsonItem<'a>>,
        removals: serde_json::Value,
        to: &'a str,
    }
    let v = JsonPlan {
        from,
        held: plan
            .removals
            .as_ref()
            .is_some_and(crate::removals::Removals::held),
        invalid: plan.has_invalid(),
        items: plan
            .items
            .iter()
            .map(|i| JsonItem {
                action: i.action,
                errors: i
                    .errors
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or_default())
                    .collect(),
                job: &i.job,
                path: &i.path,
                reasons: &i.reasons,
            })
            .collect(),
        removals: serde_json::to_value(&plan.removals).unwrap_or_default(),
        to,
    };
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Overlap, Params, Project, RestartOverride, Upgrade};

    /// The JSON as it was made before: the whole plan turned into a tree of values (whose
    /// mappings sort their keys), then written.
    fn json_through_values(plan: &Plan, from: &str, to: &str) -> String {
        let v = serde_json::json!({
            "from": from,
            "to": to,
            "items": plan.items,
            "invalid": plan.has_invalid(),
            "removals": plan.removals,
            "held": plan.removals.as_ref().is_some_and(crate::removals::Removals::held),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }

    #[test]
    fn json_is_written_straight_from_the_plan_as_through_a_tree_of_values() {
        let mut p = plan(
            &BTreeMap::from([("a".to_string(), spec()), ("gone".to_string(), spec())]),
            &[
                Change::Upsert {
                    name: "a".into(),
                    path: "jobs/a.yaml".into(),
                    spec: Ok(JobSpec {
                        env: "prod".into(),
                        ..spec()
                    }),
                },
                Change::Upsert {
                    name: "bad".into(),
                    path: "jobs/bad.yaml".into(),
                    spec: Err(vec![Diagnostic::file("jobs/bad.yaml", "broken \"here\"")]),
                },
                Change::Remove {
                    name: "gone".into(),
                    path: "jobs/gone.yaml".into(),
                },
            ],
        );
        assert_eq!(
            render_json(&p, "HEAD~1", "HEAD"),
            json_through_values(&p, "HEAD~1", "HEAD")
        );
        p.removals = Some(crate::removals::check(
            crate::settings::MaxRemovals::default(),
            1,
            3,
            &[],
        ));
        assert_eq!(render_json(&p, "a", "b"), json_through_values(&p, "a", "b"));
        assert_eq!(
            render_json(&Plan::default(), "a", "b"),
            json_through_values(&Plan::default(), "a", "b")
        );
    }

    fn spec() -> JobSpec {
        JobSpec {
            sql: None,
            adopt: None,
            savepoints: Default::default(),
            restore: None,
            max_checkpoint_age: None,
            project: Some(Project {
                repo: "/src/clicks.git".into(),
                branch: "main".into(),
                dir: String::new(),
                build: Some("make".into()),
                artifact: Some("out/*.jar".into()),
                follow: false,
            }),
            env: "dev".into(),
            params: Params {
                command: vec!["run".into()],
                ..Params::default()
            },
            schedule: None,
            overlap: Overlap::Forbid,
            timeout: None,
            restart: RestartOverride::default(),
            upgrade: Upgrade::Savepoint,
            alerts: None,
            suspend: false,
            guard: Default::default(),
        }
    }

    #[test]
    fn project_change_is_a_rebuild_with_reason() {
        let mut new = spec();
        new.project.as_mut().unwrap().branch = "dev".into();
        let (a, r) = diff_specs(&spec(), &new);
        assert_eq!(a, Action::Rebuild);
        assert_eq!(r, vec![Reason::from("project.branch: `main` → `dev`")]);
    }

    #[test]
    fn a_restore_set_or_changed_is_a_redeploy_from_it_and_left_in_place_is_nothing() {
        let mut set = spec();
        set.restore = Some("file:///sp/savepoint-1".into());
        assert_eq!(
            diff_specs(&spec(), &set),
            (
                Action::Redeploy,
                vec![Reason::from("restore from file:///sp/savepoint-1")]
            )
        );
        let mut changed = set.clone();
        changed.restore = Some("s3://b/sp/savepoint-2".into());
        assert_eq!(
            diff_specs(&set, &changed).1,
            vec![Reason::from("restore from s3://b/sp/savepoint-2")]
        );
        let mut args = set.clone();
        args.params.args = vec!["--x".into()];
        assert_eq!(
            diff_specs(&set, &args).1,
            vec![Reason::from("params.args changed")],
            "the field left in place restores nothing more"
        );
        assert_eq!(diff_specs(&set, &spec()).0, Action::InPlace);
    }

    #[test]
    fn params_env_schedule_suspend_are_redeploys() {
        let mut new = spec();
        new.params.args = vec!["--x".into()];
        assert_eq!(diff_specs(&spec(), &new).0, Action::Redeploy);
        let mut new = spec();
        new.env = "prod".into();
        assert_eq!(
            diff_specs(&spec(), &new),
            (
                Action::Redeploy,
                vec![Reason::EnvChanged {
                    old: "dev".into(),
                    new: "prod".into()
                }]
            )
        );
        let mut new = spec();
        new.schedule = Some("* * * * *".into());
        assert_eq!(diff_specs(&spec(), &new).0, Action::Redeploy);
        let mut new = spec();
        new.suspend = true;
        assert_eq!(diff_specs(&spec(), &new).0, Action::Redeploy);
    }

    #[test]
    fn alerts_and_restart_apply_in_place() {
        let mut new = spec();
        new.alerts = Some(vec!["oncall".into()]);
        new.restart.attempts = Some(9);
        let (a, r) = diff_specs(&spec(), &new);
        assert_eq!(a, Action::InPlace);
        assert_eq!(
            r,
            vec![
                Reason::from("alerts changed"),
                Reason::from("restart changed")
            ]
        );
    }

    #[test]
    fn same_spec_is_unchanged_and_says_why() {
        assert_eq!(
            diff_specs(&spec(), &spec()),
            (Action::Unchanged, vec![UNCHANGED.to_string().into()])
        );
    }

    #[test]
    fn every_item_of_a_plan_has_a_reason() {
        let mut other = spec();
        other.params.args = vec!["x".into()];
        let mut in_place = spec();
        in_place.restart.attempts = Some(9);
        let applied = BTreeMap::from([
            ("same".to_string(), spec()),
            ("args".to_string(), spec()),
            ("quiet".to_string(), spec()),
            ("gone".to_string(), spec()),
        ]);
        let upsert = |name: &str, s: JobSpec| Change::Upsert {
            name: name.into(),
            path: format!("jobs/{name}.yaml"),
            spec: Ok(s),
        };
        let changes = vec![
            upsert("same", spec()),
            upsert("args", other),
            upsert("quiet", in_place),
            upsert("new", spec()),
            Change::Remove {
                name: "gone".into(),
                path: "jobs/gone.yaml".into(),
            },
        ];
        let p = plan(&applied, &changes);
        assert_eq!(p.items.len(), 5);
        for item in &p.items {
            assert!(
                !item.reasons.is_empty()
                    && item
                        .reasons
                        .iter()
                        .all(|r| !r.to_string().trim().is_empty()),
                "{item:?}"
            );
        }
    }

    #[test]
    fn an_env_change_of_a_project_with_unread_vars_says_it_may_be_a_rebuild() {
        let with_project = |env: &str, build: &str| {
            let mut s = spec();
            s.env = env.into();
            s.project = Some(crate::spec::Project {
                repo: ".".into(),
                branch: "main".into(),
                dir: "p".into(),
                build: Some(build.into()),
                artifact: Some("out/a.jar".into()),
                follow: false,
            });
            s
        };
        // Without the daemon config the vars stay as written: the same text in both envs.
        let unread = "sh build.sh ${var:FLINK_VERSION}";
        let (a, r) = diff_specs(&with_project("flink", unread), &with_project("old", unread));
        assert_eq!(a, Action::Redeploy);
        assert_eq!(
            r.last().unwrap().to_string(),
            "may be a rebuild: `project.build` uses `${var:..}`, which take env `old`'s \
             values; `plan --config` reads them and says"
        );
        // With it, they are read: the build differs, a rebuild, and nothing more to say.
        let (a, r) = diff_specs(
            &with_project("flink", "sh build.sh 2.3.0"),
            &with_project("old", "sh build.sh 1.20.3"),
        );
        assert_eq!(a, Action::Rebuild);
        assert!(
            !r.iter().any(|r| r.to_string().starts_with("may be")),
            "{r:?}"
        );
    }

    #[test]
    fn a_new_version_that_a_rollback_refused_is_warned_about() {
        let changes = vec![Change::Upsert {
            name: "a".into(),
            path: "jobs/a.yaml".into(),
            spec: Ok(spec()),
        }];
        let mut p = plan(&BTreeMap::new(), &changes);
        let hash = p.items[0].hash.clone().unwrap();
        let mut refused = BTreeMap::new();
        refused.insert(
            "a".to_string(),
            Refused {
                hash: "other".into(),
                commit: None,
                reason: None,
            },
        );
        warn_refused(&mut p, &refused);
        assert_eq!(p.items[0].reasons.len(), 1, "another version: no warning");
        refused.insert(
            "a".to_string(),
            Refused {
                hash,
                commit: Some("0123456789abcdef".into()),
                reason: Some("rolled back: exited with code 4".into()),
            },
        );
        warn_refused(&mut p, &refused);
        assert_eq!(
            p.items[0].reasons[1].to_string(),
            "warning: this version was rolled back (commit 01234567): exited with code 4; the \
             daemon keeps refusing it and the previous version keeps running until the \
             job file changes"
        );
        // A Flink reason keeps its root-cause chain, on one line.
        p.items[0].reasons.truncate(1);
        refused.get_mut("a").unwrap().reason = Some(
            "rolled back: flink job 1f FAILED: JobException: Recovery is suppressed\n\
             Caused by: java.lang.IllegalStateException: failing on purpose"
                .into(),
        );
        warn_refused(&mut p, &refused);
        assert!(
            p.items[0].reasons[1].to_string().contains(
                ": flink job 1f FAILED: JobException: Recovery is suppressed | Caused by: \
                 java.lang.IllegalStateException: failing on purpose; the daemon"
            ),
            "{}",
            p.items[0].reasons[1]
        );
    }

    #[test]
    fn plan_covers_add_remove_invalid_sorted() {
        let mut applied = BTreeMap::new();
        applied.insert("b".to_string(), spec());
        applied.insert("c".to_string(), spec());
        let changes = vec![
            Change::Remove {
                name: "c".into(),
                path: "jobs/c.yaml".into(),
            },
            Change::Upsert {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
                spec: Ok(spec()),
            },
            Change::Upsert {
                name: "b".into(),
                path: "jobs/b.yaml".into(),
                spec: Err(vec![Diagnostic::new("jobs/b.yaml", 2, 1, "bad")]),
            },
        ];
        let p = plan(&applied, &changes);
        let got: Vec<(&str, Action)> = p.items.iter().map(|i| (i.job.as_str(), i.action)).collect();
        assert_eq!(
            got,
            vec![
                ("a", Action::Add),
                ("b", Action::Invalid),
                ("c", Action::Remove)
            ]
        );
        assert!(p.has_invalid());
        let text = render_text(&p);
        assert!(text.contains("jobs/b.yaml:2:1: bad"), "{text}");
        assert!(
            text.ends_with("plan: 1 add, 1 remove, 1 invalid\n"),
            "{text}"
        );
        let md = render_markdown(&p, "main", "HEAD");
        assert!(md.contains("| ❌ invalid | 1 |"), "{md}");
        assert!(
            md.contains("<details open><summary>❌ invalid: 1 job(s)</summary>\n\n| job | why |\n|---|---|\n| `b` | "),
            "{md}"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&p, "a", "b")).unwrap();
        assert_eq!(json["items"][1]["errors"][0]["line"], 2);
        assert_eq!(json["invalid"], true);
    }

    #[test]
    fn markdown_escapes_table_breakers() {
        assert_eq!(md_escape("a|b<c>\nd"), "a\\|b\\<c\\> d");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x"), "`` `x ``");
        assert_eq!(md_code("a|b\r\nc"), "`a\\|b  c`");
        assert_eq!(md_reason("env `dev` [x]"), "env `dev` \\[x\\]");
        assert_eq!(md_reason("a `b` c `d"), "a `b` c \\`d");
    }

    #[test]
    fn markdown_names_cannot_inject_markup() {
        // A file name with a backtick fence, newlines and a heading, as a job and in its error.
        let evil = "x```\n\n### ✅ LGTM, approved\n\n```y";
        let p = Plan {
            items: vec![Item {
                job: evil.to_string(),
                path: format!("jobs/{evil}.yaml"),
                action: Action::Invalid,
                reasons: vec![format!("name `{evil}` is bad").into()],
                errors: vec![Diagnostic::file(format!("jobs/{evil}.yaml"), "bad name")],
                hash: None,
                keeps_state: false,
                refused: false,
            }],
            removals: None,
        };
        let md = render_markdown(&p, "main\n# hi", "HEAD");
        for line in md.lines() {
            assert!(
                !line.starts_with('#') || line.starts_with("### jobkeeper plan"),
                "{md}"
            );
        }
        assert_eq!(
            md.lines().filter(|l| l.starts_with("### ")).count(),
            1,
            "{md}"
        );
        // The error block's fence is longer than any backtick run in it: one block, closed
        // on the last line.
        let fences: Vec<&str> = md.lines().filter(|l| l.starts_with("````")).collect();
        assert_eq!(fences, ["````", "````"], "{md}");
        let row = md.lines().find(|l| l.starts_with("| ````x")).unwrap();
        assert!(
            row.contains("````x```  ### ✅ LGTM, approved  ```y````"),
            "{row}"
        );
    }

    #[test]
    fn a_new_job_with_adopt_is_its_own_class_and_says_what_the_cluster_holds_once_asked() {
        let new = crate::spec::parse_job(
            "jobs/a.yaml",
            b"env: prod\nadopt: clicks\nparams: {main_class: A}\n",
            crate::spec::Context::default(),
        )
        .unwrap();
        let change = Change::Upsert {
            name: "a".into(),
            path: "jobs/a.yaml".into(),
            spec: Ok(new),
        };
        let p = plan(&BTreeMap::new(), &[change]);
        assert_eq!(p.items[0].action, Action::Adopt);
        let mut reason = p.items[0].reasons[0].clone();
        assert_eq!(
            reason.to_string(),
            "takes over `clicks` running on the cluster of env `prod`, without a restart (checked at apply)"
        );
        assert_eq!(reason.adoption(), Some(("clicks", "prod")));
        assert!(
            render_text(&p).ends_with("plan: 1 adopt\n"),
            "{}",
            render_text(&p)
        );
        checked_adoption(&mut reason, Ok("f00 (`clicks`, RUNNING)".into()));
        assert_eq!(
            reason.to_string(),
            "takes over `clicks` running on the cluster of env `prod`, without a restart (found: f00 (`clicks`, RUNNING))"
        );
    }
}
