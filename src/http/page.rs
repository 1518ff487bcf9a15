//! `GET /`: the read-only status page for people. One server-rendered HTML document with inline
//! CSS and one small script of its own ([`SCRIPT`], served at [`SCRIPT_PATH`]; no external
//! assets); every value from the store or the config repo is HTML-escaped. One line per job,
//! each cell cut with an ellipsis and whole on hover; times in one format ([`time_html`]); a
//! colour per state. The script searches by name as you type, sorts by any column and
//! refreshes the jobs in place with conditional requests ([`conditional`]); without it the
//! form filters and searches on the server. On a narrow screen the jobs table becomes one card
//! per job.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::api::{ApiError, EventView, JobsView, ListQuery, given, jobs_view};

/// Recent events shown at the bottom of the page.
pub const RECENT_EVENTS: usize = 30;

/// `s` with `& < > " '` escaped, safe in HTML text and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pages' style sheet.
pub const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#5c6675;--line:#e2e5ea;
--ok:#1a7f37;--bad:#c62828;--warn:#b26a00;--idle:#59636e;--info:#0a5bb5;--roll:#8250df}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--card:#171b21;--fg:#e6e9ee;--muted:#9aa4b2;
--line:#2a313a;--ok:#3fb950;--bad:#f0605d;--warn:#e3a33b;--idle:#8b949e;--info:#58a6ff;--roll:#bc8cff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:12px 16px;border-bottom:1px solid var(--line);background:var(--card)}
h1{font-size:20px;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:16px;margin:18px 16px 8px}
.muted{color:var(--muted)}
.commit code{font-size:13px}
main{max-width:1600px;margin:0 auto;padding-bottom:24px}
.summary{display:flex;flex-wrap:wrap;gap:6px;padding:10px 16px 0}
.chip{border:1px solid var(--line);background:var(--card);border-radius:999px;padding:2px 10px;font-size:13px}
.box{margin:0 16px;overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{width:100%;border-collapse:collapse;background:var(--card)}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
.nw{white-space:nowrap}
a{color:var(--info)}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:10px 16px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
form.filters select,form.filters input,form.filters button{font:inherit;padding:3px 6px}
.pager{margin:10px 16px}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);white-space:nowrap}
tr:last-child td{border-bottom:0}
td.name{font-weight:600}
.state{font-weight:600;white-space:nowrap}
.s-running,.s-succeeded{color:var(--ok)}
.s-failed,.s-gave_up,.s-invalid,.s-unreadable,.s-lost{color:var(--bad)}
.s-backoff,.s-building,.s-deploying,.s-starting{color:var(--warn)}
.s-rolled_back{color:var(--roll)}
.s-pending,.s-suspended,.s-stopped{color:var(--idle)}
.ev{font-size:13px}
.ev .k{font-weight:600}
.reason{display:block;font-size:12px;color:var(--muted);font-weight:400}
table.list{table-layout:fixed}
table.list td>div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
table.list .reason{display:inline;margin-left:6px}
table.list th[data-col]{cursor:pointer;user-select:none}
table.list th[aria-sort=ascending]::after{content:" ▲"}
table.list th[aria-sort=descending]::after{content:" ▼"}
td.num,th.num{text-align:right}
tr.problem td:first-child{box-shadow:inset 3px 0 0 var(--bad)}
.problem-mark{display:block;font-size:12px;color:var(--bad);font-weight:600}
table.list .problem-mark{display:inline;margin-left:6px}
ul.events{list-style:none;margin:0 16px;padding:0;background:var(--card);border:1px solid var(--line);border-radius:8px}
ul.events li{padding:6px 10px;border-bottom:1px solid var(--line);font-size:13px;word-break:break-word}
ul.events li:last-child{border-bottom:0}
.empty{margin:0 16px}
@media (max-width:700px){
 table,thead,tbody,tr,td{display:block;width:auto}
 table.list{table-layout:auto}
 .box{border:0;background:none;margin:0 12px;overflow:visible}
 table{background:none}
 thead,colgroup{display:none}
 tr{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:10px;padding:6px 0}
 td{border:0;padding:3px 12px;display:flex;gap:10px}
 td>div{flex:1;min-width:0}
 table.list td>div{white-space:normal;overflow-wrap:anywhere}
 td::before{content:attr(data-label);flex:0 0 84px;color:var(--muted);font-size:12px;text-transform:uppercase;padding-top:2px}
 td.name{font-size:16px}
 td.name::before{display:none}
 ul.events{margin:0 12px}
 h2{margin-left:12px}
}
"#;

/// The one way the pages show a time (an RFC 3339 UTC time from the API): to the minute in UTC,
/// `2026-12-03 10:41 UTC`, with the full time to the millisecond on hover (and in `datetime`).
pub fn time_html(rfc3339: &str) -> String {
    time_html_with(rfc3339, None)
}

/// [`time_html`] with more for the hover text (the daemon's time zone of a schedule).
pub fn time_html_with(rfc3339: &str, more: Option<&str>) -> String {
    let shown = format!(
        "{} UTC",
        rfc3339.get(..16).unwrap_or(rfc3339).replace('T', " ")
    );
    let mut full = utc_time(rfc3339);
    if let Some(more) = more {
        full.push_str(" · ");
        full.push_str(more);
    }
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        escape(rfc3339),
        escape(&full),
        escape(&shown)
    )
}

/// An RFC 3339 UTC time in full, as hover texts show it: `2026-12-03 10:41:07.123 UTC`.
pub fn utc_time(rfc3339: &str) -> String {
    format!(
        "{} UTC",
        rfc3339
            .trim_end_matches('Z')
            .trim_end_matches("+00:00")
            .replace('T', " ")
    )
}

/// The next run of a batch job's `schedule` after now (the schedule read in the daemon's
/// time zone): the RFC 3339 UTC time and the same time in that zone.
pub fn next_run(settings: &crate::settings::Settings, schedule: &str) -> Option<(String, String)> {
    next_run_at(settings, schedule).map(|(_, utc, local)| (utc, local))
}

/// [`next_run`] with the time itself first.
fn next_run_at(
    settings: &crate::settings::Settings,
    schedule: &str,
) -> Option<(chrono::DateTime<chrono::Utc>, String, String)> {
    let s = crate::schedule::Schedule::parse(schedule).ok()?;
    let now = chrono::Utc::now().with_timezone(&settings.timezone);
    let t = s.next_after(now)?;
    let utc = t.with_timezone(&chrono::Utc);
    Some((
        utc,
        utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
    ))
}

pub use crate::spec::{job_path, utf8_percent_encode};

/// What the page's filter form offers and what it was asked for.
pub struct Filters<'a> {
    /// The query the page was asked with.
    pub query: &'a ListQuery,
    /// Env names, then each env's engine.
    pub envs: Vec<(String, String)>,
    /// Jobs per state, over all jobs.
    pub counts: Vec<(crate::store::JobState, u64)>,
    /// Jobs per condition, over all jobs.
    pub problems: Vec<(crate::condition::ConditionKind, u64)>,
}

impl Filters<'_> {
    /// The query string of these filters with `after`, for the next page's link.
    fn with_after(&self, after: &str) -> String {
        let q = self.query;
        let mut parts = Vec::new();
        for (k, v) in [
            ("state", &q.state),
            ("env", &q.env),
            ("engine", &q.engine),
            ("folder", &q.folder),
            ("removed", &q.removed),
            ("problem", &q.problem),
            ("limit", &q.limit),
            ("q", &q.q),
            ("sort", &q.sort),
            ("dir", &q.dir),
        ] {
            if let Some(v) = given(v) {
                parts.push(format!("{k}={}", utf8_percent_encode(v)));
            }
        }
        parts.push(format!("after={}", utf8_percent_encode(after)));
        format!("?{}", parts.join("&amp;"))
    }

    fn form(&self) -> String {
        let q = self.query;
        let select = |name: &str, options: &[String], chosen: Option<&str>| {
            let mut h =
                format!("<label>{name}<select name=\"{name}\"><option value=\"\">any</option>");
            for o in options {
                let sel = if chosen == Some(o.as_str()) {
                    " selected"
                } else {
                    ""
                };
                let _ = write!(h, "<option{sel}>{}</option>", escape(o));
            }
            h.push_str("</select></label>");
            h
        };
        let mut states: Vec<String> = crate::store::JobState::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        for k in crate::condition::ConditionKind::ALL {
            if !states.iter().any(|s| s == k.as_str()) {
                states.push(k.as_str().to_string());
            }
        }
        let problem = matches!(given(&q.problem), Some("1" | "true" | "yes"));
        let envs: Vec<String> = self.envs.iter().map(|(e, _)| e.clone()).collect();
        let mut engines: Vec<String> = self.envs.iter().map(|(_, e)| e.clone()).collect();
        engines.sort();
        engines.dedup();
        let removed = matches!(given(&q.removed), Some("1" | "true" | "yes"));
        format!(
            "<form class=\"filters\" method=\"get\" action=\"/\">\
             <label>search<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" size=\"24\" \
             placeholder=\"part of a name\" autocomplete=\"off\"></label>{}{}{}\
             <label>folder<input name=\"folder\" value=\"{}\" size=\"12\"></label>\
             <label><span><input type=\"checkbox\" name=\"removed\" value=\"1\"{}> removed</span></label>\
             <label><span><input type=\"checkbox\" name=\"problem\" value=\"1\"{}> problems only</span></label>\
             <button type=\"submit\">Filter</button> <a href=\"/\">clear</a> \
             <span id=\"shown\" class=\"muted\"></span></form>",
            escape(given(&q.q).unwrap_or("")),
            select("state", &states, given(&q.state)),
            select("env", &envs, given(&q.env)),
            select("engine", &engines, given(&q.engine)),
            escape(given(&q.folder).unwrap_or("")),
            if removed { " checked" } else { "" },
            if problem { " checked" } else { "" },
        )
    }
}

/// A message or reason on one line: its first line and its last (a root cause), see
/// [`crate::event::one_line`].
fn one_line(s: &str) -> String {
    crate::event::one_line(s)
}

fn event_html(e: &EventView, with_job: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<span class=\"muted\">{}</span> <span class=\"k\">{}</span>",
        time_html(&e.time),
        escape(&e.kind)
    );
    if with_job && let Some(job) = &e.job {
        let _ = write!(s, " <b>{}</b>", escape(job));
    }
    let msg = one_line(&e.message);
    if !msg.is_empty() {
        let _ = write!(s, " · {}", escape(&msg));
    }
    s
}

/// What runs now: the config commit, the project commit of project jobs, and since when.
fn running_html(j: &super::api::JobView) -> Option<String> {
    let r = j.running.as_ref()?;
    let short = |c: &Option<String>| {
        c.as_deref()
            .map_or("–".into(), |c| escape(c.get(..8).unwrap_or(c)))
    };
    let mut s = format!("<code>{}</code>", short(&r.config_commit));
    if r.project_commit.is_some() {
        let _ = write!(s, " project <code>{}</code>", short(&r.project_commit));
    }
    let _ = write!(
        s,
        " <span class=\"muted\">since {}</span>",
        time_html(&r.since)
    );
    Some(s)
}

/// The jobs table's columns: the key the page's script sorts by (`?sort=`), the heading and
/// its share of the width.
pub const COLUMNS: [(&str, &str, &str); 8] = [
    ("job", "Job", "22%"),
    ("state", "State", "13%"),
    ("env", "Env", "7%"),
    ("engine", "Engine", "7%"),
    ("running", "Running", "17%"),
    ("next", "Next run", "12%"),
    ("restarts", "Restarts", "6%"),
    ("event", "Last event", "16%"),
];

/// The page's script, served at [`SCRIPT_PATH`]: search as you type, sorting by any column and
/// refreshing the jobs in place by a conditional request of the page itself (`If-None-Match`,
/// 304 while nothing changed). Without it the page still works: the form filters and searches
/// on the server.
pub const SCRIPT: &str = include_str!("page.js");

/// Where the page's script is served.
pub const SCRIPT_PATH: &str = "/static/page.js";

/// `GET /static/page.js`.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The page's HTML for a view of the jobs and the recent events, with `before_events` (the
/// clusters' and unmanaged jobs' tables) between the jobs and the events, and the earliest
/// next run it shows (the page holds until then).
pub fn render(
    settings: &crate::settings::Settings,
    view: &JobsView,
    events: &[EventView],
    filters: &Filters<'_>,
    problems: &Problems,
    before_events: &str,
) -> (String, Option<chrono::DateTime<chrono::Utc>>) {
    let mut until = None;
    // About 1 KB a row: one allocation for the whole page, never copied to grow.
    let rows = view.jobs.len() + problems.jobs.len();
    let mut h = String::with_capacity(8192 + before_events.len() + rows * 1200);
    header_html(&mut h, view);
    h.push_str("<div id=\"summary\">");
    summary_html(&mut h, filters);
    h.push_str("</div><div id=\"problem-view\">");
    if !problems.jobs.is_empty() {
        let _ = write!(
            h,
            "<h2>Problems <span class=\"muted\">{} jobs with a condition</span></h2>\
             <div class=\"box\"><table id=\"problem-jobs\" class=\"list\">",
            problems.total
        );
        head_html(&mut h, false);
        for j in &problems.jobs {
            // The job's row in the list below keeps the `id`.
            let mut row = String::new();
            job_row_html(&mut row, settings, j, &mut until);
            h.push_str(&row.replacen(&format!("<tr id=\"{}\" ", escape(&j.name)), "<tr ", 1));
        }
        h.push_str("</tbody></table></div>");
        if problems.total > problems.jobs.len() {
            let _ = write!(
                h,
                "<p class=\"pager\"><a href=\"/?problem=1\">all {} jobs with a condition →</a></p>",
                problems.total
            );
        }
    }
    h.push_str("</div><h2>Jobs</h2>");
    h.push_str(&filters.form());
    let _ = write!(
        h,
        "<div id=\"list\" data-q=\"{}\" data-more=\"{}\">",
        escape(given(&filters.query.q).unwrap_or("")),
        view.next.is_some()
    );
    if view.jobs.is_empty() {
        h.push_str("<p class=\"empty muted\">No jobs match.</p>");
    } else {
        h.push_str("<div class=\"box\"><table id=\"jobs\" class=\"list\"><colgroup>");
        for (_, _, width) in COLUMNS {
            let _ = write!(h, "<col style=\"width:{width}\">");
        }
        h.push_str("</colgroup><thead><tr>");
        for (key, label, _) in COLUMNS {
            let num = if key == "restarts" {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(
                h,
                "<th data-col=\"{key}\"{num} title=\"sort by {label}\">{label}</th>"
            );
        }
        h.push_str("</tr></thead><tbody>");
        for j in &view.jobs {
            job_row_html(&mut h, settings, j, &mut until);
        }
        h.push_str("</tbody></table></div>");
    }
    if let Some(next) = &view.next {
        let _ = write!(
            h,
            "<p class=\"pager\"><a id=\"next\" href=\"{}\">next jobs after {} →</a></p>",
            filters.with_after(next),
            escape(next)
        );
    }
    h.push_str("</div><div id=\"rest\">");
    h.push_str(before_events);
    h.push_str(EVENTS_HEADING);
    if events.is_empty() {
        h.push_str("<p class=\"empty muted\">No events yet.</p>");
    } else {
        h.push_str("<ul class=\"events\" id=\"events\">");
        for e in events {
            let _ = write!(h, "<li>{}</li>", event_html(e, true));
        }
        h.push_str("</ul>");
    }
    let _ = writeln!(
        h,
        "</div></main><script src=\"{SCRIPT_PATH}\" defer></script></body></html>"
    );
    (h, until)
}

/// The problems view: the jobs with a condition (at most [`PROBLEMS_SHOWN`]) and how many
/// have one.
#[derive(Debug, Default)]
pub struct Problems {
    /// The first of them by name.
    pub jobs: Vec<super::api::JobView>,
    /// How many jobs have a condition.
    pub total: usize,
}

/// Jobs the problems view lists; the rest are a link away (`?problem=1`).
pub const PROBLEMS_SHOWN: usize = 100;

impl Problems {
    /// The views of `names`, the jobs with a condition now ([`super::shown::problems`]).
    pub fn read(state: &ApiState, names: &[String]) -> Result<Problems, crate::store::StoreError> {
        let mut jobs = Vec::new();
        for name in names.iter().take(PROBLEMS_SHOWN) {
            let q = crate::store::JobQuery {
                name: Some(name.clone()),
                limit: 1,
                ..Default::default()
            };
            let view = jobs_view(state, &super::api::ListFilter::all(q))?;
            jobs.extend(view.jobs.into_iter().filter(|j| j.problem));
        }
        Ok(Problems {
            jobs,
            total: names.len(),
        })
    }
}

/// A jobs table's column widths and headings; `sortable` ones carry the key the script sorts by.
fn head_html(h: &mut String, sortable: bool) {
    h.push_str("<colgroup>");
    for (_, _, width) in COLUMNS {
        let _ = write!(h, "<col style=\"width:{width}\">");
    }
    h.push_str("</colgroup><thead><tr>");
    for (key, label, _) in COLUMNS {
        let num = if key == "restarts" {
            " class=\"num\""
        } else {
            ""
        };
        if sortable {
            let _ = write!(
                h,
                "<th data-col=\"{key}\"{num} title=\"sort by {label}\">{label}</th>"
            );
        } else {
            let _ = write!(h, "<th{num}>{label}</th>");
        }
    }
    h.push_str("</tr></thead><tbody>");
}

/// The document head and the page header: the applied commit, and whether the daemon is starting.
fn header_html(h: &mut String, view: &JobsView) {
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str("<title>jobkeeper</title><style>");
    h.push_str(CSS);
    h.push_str("</style></head><body><header><h1>jobkeeper</h1><div class=\"commit\">");
    match &view.applied_commit {
        Some(c) => {
            let _ = write!(
                h,
                "applied commit <code>{}</code> {} <span class=\"muted\">by {}</span>",
                escape(&c.short),
                escape(&c.subject),
                escape(&c.author)
            );
        }
        None => h.push_str("<span class=\"muted\">no config commit applied yet</span>"),
    }
    if let Some(l) = view.leader.as_ref().filter(|l| l.ha) {
        let _ = match (l.node.as_str(), l.this_daemon) {
            ("", _) => write!(
                h,
                " <span class=\"chip\">no leader now (epoch {})</span>",
                l.epoch
            ),
            (node, this) => write!(
                h,
                " <span class=\"chip\" title=\"since {}\">{} {}, epoch {}</span>",
                escape(&l.since),
                if this { "leading:" } else { "standby; leader:" },
                escape(node),
                l.epoch
            ),
        };
    }
    if !view.ready && view.leader.as_ref().is_none_or(|l| !l.ha || l.this_daemon) {
        h.push_str(" <span class=\"chip\">starting</span>");
    }
    h.push_str("</div></header><main>");
}

/// The count of all jobs and a link per state that has any.
fn summary_html(h: &mut String, filters: &Filters<'_>) {
    let total: u64 = filters.counts.iter().map(|(_, n)| n).sum();
    let _ = write!(
        h,
        "<div class=\"summary\"><span class=\"chip\"><b>{total}</b> jobs</span>"
    );
    for (state, n) in filters.counts.iter().filter(|(_, n)| *n > 0) {
        let _ = write!(
            h,
            "<a class=\"chip s-{0}\" href=\"/?state={0}\">{1} {0}</a>",
            state.as_str(),
            n
        );
    }
    let problems: u64 = filters.problems.iter().map(|(_, n)| n).sum();
    if problems > 0 {
        let _ = write!(
            h,
            "<a class=\"chip s-failed\" id=\"problems\" href=\"/?problem=1\">problems:</a>"
        );
    }
    for (kind, n) in filters.problems.iter().filter(|(_, n)| *n > 0) {
        let _ = write!(
            h,
            "<a class=\"chip s-failed\" href=\"/?state={0}\">{1} {0}</a>",
            kind.as_str(),
            n
        );
    }
    h.push_str("</div>");
}

/// One job's row of the jobs table: one line, each cell cut with an ellipsis and whole in its
/// `title`; `data-v` is what the script sorts by where the text is not. Its next run, when
/// earlier, goes into `until`.
fn job_row_html(
    h: &mut String,
    settings: &crate::settings::Settings,
    j: &super::api::JobView,
    until: &mut Option<chrono::DateTime<chrono::Utc>>,
) {
    let name = escape(&j.name);
    let mut state_title = j.state.clone();
    let reason = j.reason.as_deref().map(one_line).filter(|r| !r.is_empty());
    if let Some(r) = &reason {
        state_title.push_str(": ");
        state_title.push_str(r);
    }
    let _ = write!(
        h,
        "<tr id=\"{name}\" data-job=\"{name}\"{problem}><td class=\"name\" data-label=\"Job\" title=\"{name}\"><div><a href=\"{link}\">{name}</a></div></td>\
         <td data-label=\"State\" title=\"{title}\"><div><span class=\"state s-{state}\">{state}</span>",
        link = escape(&job_path(&j.name)),
        title = escape(&state_title),
        state = escape(&j.state),
        problem = if j.problem {
            " class=\"problem\" data-problem=\"1\""
        } else {
            ""
        }
    );
    if let Some(r) = &reason {
        let _ = write!(h, "<span class=\"reason\">{}</span>", escape(r));
    }
    for c in &j.conditions {
        let _ = write!(
            h,
            "<span class=\"problem-mark\" data-condition=\"{}\" title=\"{}\">⚠ {}</span>",
            c.kind().as_str(),
            escape(&c.phrase()),
            escape(c.label())
        );
    }
    if let Some(place) = &j.place {
        let _ = write!(h, "<span class=\"reason place\">{}</span>", escape(place));
    }
    if let Some(why) = &j.unreadable {
        let _ = write!(
            h,
            "<span class=\"reason unreadable\">unreadable: {}</span>",
            escape(why)
        );
    }
    if let Some(c) = &j.refused_commit {
        let _ = write!(
            h,
            "<span class=\"reason\">refused: commit <code>{}</code></span>",
            escape(&c.chars().take(8).collect::<String>())
        );
    }
    if let Some(held) = &j.held {
        let _ = write!(
            h,
            "<span class=\"reason held\" title=\"freeze: {}\">{}</span>",
            escape(&held.reason),
            escape(&held.label())
        );
    }
    let dash = "–".to_string();
    let commit = running_html(j).unwrap_or_else(|| dash.clone());
    let since = j.running.as_ref().map_or("", |r| r.since.as_str());
    let (next_v, next) = match j.schedule.as_deref().and_then(|s| next_run_at(settings, s)) {
        Some((at, utc, local)) => {
            if until.is_none_or(|u| at < u) {
                *until = Some(at);
            }
            (utc.clone(), time_html_with(&utc, Some(&local)))
        }
        None => (String::new(), dash.clone()),
    };
    let (last_v, last_title, last) = j.last_event.as_ref().map_or_else(
        || (String::new(), String::new(), dash.clone()),
        |e| {
            let text = format!("{} {} {}", utc_time(&e.time), e.kind, one_line(&e.message));
            (e.time.clone(), text, event_html(e, false))
        },
    );
    let _ = write!(
        h,
        "</div></td><td data-label=\"Env\"><div>{}</div></td>\
         <td data-label=\"Engine\"><div>{}</div></td>\
         <td data-label=\"Running\" data-v=\"{}\"><div>{commit}</div></td>\
         <td data-label=\"Next run\" data-v=\"{}\"><div>{next}</div></td>\
         <td class=\"num\" data-label=\"Restarts\" data-v=\"{}\"><div>{}</div></td>\
         <td class=\"ev\" data-label=\"Last event\" data-v=\"{}\" title=\"{}\"><div>{last}</div></td></tr>",
        escape(j.env.as_deref().unwrap_or("–")),
        escape(&j.engine_label().unwrap_or_else(|| "–".into())),
        escape(since),
        escape(&next_v),
        j.restarts,
        j.restarts,
        escape(&last_v),
        escape(&last_title),
    );
}

/// The heading of the page's events; the clusters and unmanaged jobs go before it.
const EVENTS_HEADING: &str = "<h2>Recent events</h2>";

/// The page's table of clusters (none without a cluster engine): envs, URL, version, reachable.
pub fn clusters_html(view: &super::clusters::ClustersView) -> String {
    if view.clusters.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Clusters</h2><div class=\"box\"><table id=\"clusters\"><thead><tr><th>Envs</th><th>Engine</th>\
         <th>URL</th><th>Version</th><th>Reachable</th></tr></thead><tbody>",
    );
    for c in &view.clusters {
        let _ = write!(
            h,
            "<tr><td data-label=\"Envs\"><div>{}</div></td><td data-label=\"Engine\"><div>{}</div></td>\
             <td data-label=\"URL\"><div>{}</div></td><td data-label=\"Version\"><div>{}</div></td>\
             <td data-label=\"Reachable\"><div>{}</div></td></tr>",
            escape(&c.envs.join(", ")),
            escape(&c.engine),
            escape(&c.url),
            escape(c.version.as_deref().unwrap_or("–")),
            if c.reachable { "yes" } else { "no" },
        );
    }
    h.push_str("</tbody></table></div>");
    h
}

/// An HTML answer: no scripts, no external assets.
pub fn html_response(html: impl Into<axum::body::Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'",
            ),
        ],
        html.into(),
    )
        .into_response()
}

/// The entity tag of a page: a hash of its bytes, so a refresh that finds nothing changed is
/// answered 304 with no body.
pub fn etag(html: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    html.hash(&mut hasher);
    format!("\"{:016x}-{:x}\"", hasher.finish(), html.len())
}

/// `html` as an answer with its [`etag`], or 304 when `headers` ask `If-None-Match` that tag.
pub fn conditional(headers: &HeaderMap, html: String) -> Response {
    let tag = etag(&html);
    answer(headers, &tag, html.into())
}

/// `body` (HTML) as an answer tagged `tag`, or 304 when `headers` ask `If-None-Match` it.
fn answer(headers: &HeaderMap, tag: &str, body: axum::body::Bytes) -> Response {
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == tag);
    let tag = header::HeaderValue::from_str(tag).ok();
    if matches {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Some(tag) = tag {
            resp.headers_mut().insert(header::ETAG, tag);
        }
        return resp;
    }
    let mut resp = html_response(body);
    if let Some(tag) = tag {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// `GET /?q=&state=&env=&engine=&folder=&removed=&after=&limit=&sort=&dir=`; answers 304 to
/// `If-None-Match` with the page's tag while the page is unchanged. Pages are kept while
/// nothing they show changed ([`super::kept_page`]): an unchanged refresh reads no job.
pub async fn status_page(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let settings = state.settings.get();
        let q = match query.to_query(&settings) {
            Ok(q) => q,
            Err(e) => return Ok(Err(e)),
        };
        super::kept_page::page(&state, &query, |sources| build(&state, &query, &q, sources))
            .map(Ok::<_, ApiError>)
    })
    .await;
    match result {
        Ok(Ok(Err(e))) => (e.status, format!("{}\n", e.message)).into_response(),
        Ok(Ok(Ok(page))) => answer(&headers, &page.tag, page.html.clone()),
        Ok(Err(e)) => {
            tracing::error!("status page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
        Err(e) => {
            tracing::error!("status page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// The page for `query` (the store's query `q`) built from `sources` read before.
fn build(
    state: &ApiState,
    query: &ListQuery,
    q: &super::api::ListFilter,
    sources: &super::kept_page::Sources,
) -> Result<super::kept_page::Page, crate::store::StoreError> {
    let settings = &sources.settings;
    let view = jobs_view(state, q)?;
    let events = state.store.blocking().events(None, RECENT_EVENTS)?;
    let events: Vec<EventView> = events.iter().map(EventView::of).collect();
    let counts = super::counts::counts_for(state, sources.inputs.clone())?;
    let filters = Filters {
        query,
        envs: settings
            .envs
            .iter()
            .map(|(n, e)| (n.clone(), e.engine.as_str().to_string()))
            .collect(),
        counts: counts.states.clone(),
        problems: counts.conditions.clone(),
    };
    let problems = Problems::read(state, &counts.problems)?;
    let before_events =
        clusters_html(&sources.clusters) + &super::unmanaged::unmanaged_html(&sources.unmanaged);
    let (html, until) = render(
        settings,
        &view,
        &events,
        &filters,
        &problems,
        &before_events,
    );
    Ok(super::kept_page::Page::new(html, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_colour() {
        for s in crate::store::JobState::ALL.map(|s| s.as_str()) {
            assert!(
                CSS.contains(&format!(".s-{s}{{")) || CSS.contains(&format!(".s-{s},")),
                "{s}"
            );
        }
        for s in crate::store::RunState::ALL.map(|s| s.as_str()) {
            assert!(
                CSS.contains(&format!(".s-{s}{{")) || CSS.contains(&format!(".s-{s},")),
                "{s}"
            );
        }
        assert!(CSS.contains(".s-unreadable"));
    }

    #[test]
    fn one_time_format_with_the_full_time_on_hover() {
        assert_eq!(
            time_html("2026-12-03T10:41:07.123Z"),
            "<time datetime=\"2026-12-03T10:41:07.123Z\" title=\"2026-12-03 10:41:07.123 UTC\">\
             2026-12-03 10:41 UTC</time>"
        );
    }

    #[test]
    fn job_paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(job_path("team-a/clicks"), "/jobs/team-a/clicks");
        assert_eq!(job_path("a b/c?d"), "/jobs/a%20b/c%3Fd");
    }

    #[test]
    fn a_page_that_did_not_change_is_not_sent_again() {
        let html = "<p>same</p>".to_string();
        let first = conditional(&HeaderMap::new(), html.clone());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(conditional(&h, html).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            conditional(&h, "<p>new</p>".into()).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
