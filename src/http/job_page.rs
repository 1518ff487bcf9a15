//! `GET /jobs/{name}` (the name's slashes raw or as `%2F`): the page of one job for people. Its
//! state and what runs now (config and project commits, uptime of a service job, next run time
//! of a batch job), the params and args of the version that runs as its file wrote them (a
//! secret as its `${secret:NAME}`), its last runs as a strip of coloured squares and as a table
//! with the version, cluster and a link to the engine's UI of each ([`EngineConfig::run_page`]),
//! the savepoints and checkpoints it can start from, its events (the
//! problems of an invalid file at their `path:line:column`), and the tail of its latest log
//! with secrets masked. Server-rendered, no scripts; every value is HTML-escaped.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::api::{self, RunView, job_detail};
use super::page::{CSS, escape, html_response, time_html, time_html_with, utc_time};
#[cfg(doc)]
use crate::engine::EngineConfig;
use crate::settings::Settings;

/// Runs in the strip of squares.
pub const STRIP_RUNS: usize = 50;
/// Log lines shown.
pub const LOG_LINES: usize = 50;

const JOB_CSS: &str = r"
section{margin:0 16px 8px}
.strip{display:flex;flex-wrap:wrap;gap:3px;margin:6px 16px}
.sq{width:14px;height:14px;border-radius:3px;display:inline-block;background:var(--idle)}
.sq.r-succeeded,.sq.r-running{background:var(--ok)}.sq.r-failed,.sq.r-lost{background:var(--bad)}
.sq.r-starting{background:var(--warn)}
pre{margin:0 16px;padding:10px;background:var(--card);border:1px solid var(--line);border-radius:8px;
overflow-x:auto;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:10px 16px}
dt{color:var(--muted)}dd{margin:0}
";

/// The engine's UI page of a run, when the env's cluster has one.
fn engine_link(settings: &Settings, run: &RunView) -> Option<String> {
    let env = settings.envs.get(run.env.as_deref()?)?;
    let id = run.engine_id.as_deref()?;
    env.engine
        .run_page(id, matches!(run.state.as_str(), "starting" | "running"))
}

/// "3h 2m" of a number of seconds.
fn span(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The page's HTML.
fn render(
    settings: &Settings,
    d: &api::JobDetail,
    row: Option<&crate::store::JobRow>,
    schedule: Option<&str>,
    log: Option<&(i64, String)>,
) -> String {
    let j = &d.job;
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>{name} · jobkeeper</title>\
         <style>{CSS}{JOB_CSS}</style></head><body><header><h1>{name}</h1>\
         <div><a href=\"/\">all jobs</a> · <span class=\"state s-{state}\">{state}</span>",
        name = escape(&j.name),
        state = escape(&j.state),
    );
    if let Some(r) = j.reason.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(
            h,
            " <span class=\"muted\">{}</span>",
            escape(&crate::event::one_line(r))
        );
    }
    if let Some(held) = &j.held {
        let _ = write!(
            h,
            " · <span class=\"reason held\" title=\"freeze: {}; commit {}\">{}</span>",
            escape(&held.reason),
            escape(&held.commit),
            escape(&held.label())
        );
    }
    h.push_str("</div></header><main>");
    if !j.conditions.is_empty() || j.place.is_some() {
        h.push_str("<h2>Problems</h2><ul id=\"conditions\">");
        for c in &j.conditions {
            let _ = write!(
                h,
                "<li class=\"problem-mark\" data-condition=\"{}\">⚠ {}: {}</li>",
                c.kind().as_str(),
                escape(c.label()),
                escape(&c.phrase())
            );
        }
        if let Some(place) = &j.place {
            let _ = write!(h, "<li class=\"place\">{}</li>", escape(place));
        }
        h.push_str("</ul>");
    }
    h.push_str("<dl id=\"facts\">");
    facts_html(&mut h, settings, j, schedule);
    h.push_str("</dl>");

    if let Some(why) = &j.unreadable {
        let _ = write!(
            h,
            "<h2>Unreadable</h2><pre id=\"unreadable\">this job's record in the store cannot \
             be read whole: {}</pre>",
            escape(why)
        );
    }

    if let Some(errors) = &d.errors {
        let _ = write!(
            h,
            "<h2>Errors</h2><pre id=\"errors\">{}</pre>",
            escape(errors)
        );
    }

    params_html(&mut h, row);
    runs_html(&mut h, settings, d);
    savepoints_html(&mut h, d);
    log_html(&mut h, log);
    events_html(&mut h, d);
    h.push_str("</main></body></html>\n");
    h
}

/// The job's facts: its file, env, what runs now, its schedule, its last commit and restarts.
fn facts_html(h: &mut String, settings: &Settings, j: &api::JobView, schedule: Option<&str>) {
    let fact = |h: &mut String, k: &str, v: String| {
        let _ = write!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    fact(h, "file", escape(&j.path));
    fact(
        h,
        "env",
        format!(
            "{} <span class=\"muted\">{}</span>",
            escape(j.env.as_deref().unwrap_or("–")),
            escape(&j.engine_label().unwrap_or_default())
        ),
    );
    match &j.running {
        Some(r) => {
            let commit = |c: &Option<String>| {
                c.as_deref().map_or("–".into(), |c| {
                    format!("<code>{}</code>", escape(c.get(..8).unwrap_or(c)))
                })
            };
            let mut v = format!("config {}", commit(&r.config_commit));
            if r.project_commit.is_some() {
                let _ = write!(v, " · project {}", commit(&r.project_commit));
            }
            let _ = write!(v, " · run {} since {}", r.run_id, time_html(&r.since));
            fact(h, "running", v);
            if schedule.is_none()
                && let Ok(since) = chrono::DateTime::parse_from_rfc3339(&r.since)
            {
                let up = chrono::Utc::now().timestamp() - since.timestamp();
                fact(h, "uptime", span(up.max(0)));
            }
        }
        None => fact(h, "running", "nothing".into()),
    }
    if let Some(s) = schedule {
        let next = super::page::next_run(settings, s).map_or_else(
            || "never".into(),
            |(utc, local)| time_html_with(&utc, Some(&local)),
        );
        fact(
            h,
            "schedule",
            format!("<code>{}</code> · next run {next}", escape(s)),
        );
    }
    if let Some(c) = &j.commit {
        fact(
            h,
            "file changed by",
            format!(
                "<code>{}</code> {} <span class=\"muted\">by {}</span>",
                escape(&c.short),
                escape(&c.subject),
                escape(&c.author)
            ),
        );
    }
    fact(h, "restarts", j.restarts.to_string());
}

/// The runs: the strip of the latest [`STRIP_RUNS`] and the table.
fn runs_html(h: &mut String, settings: &Settings, d: &api::JobDetail) {
    let j = &d.job;
    h.push_str("<h2>Runs</h2><div class=\"strip\" id=\"strip\">");
    for r in d.runs.iter().take(STRIP_RUNS).rev() {
        let _ = write!(
            h,
            "<a class=\"sq r-{st}\" href=\"#run-{id}\" title=\"run {id}: {st} at {t}\"></a>",
            st = escape(&r.state),
            id = r.id,
            t = escape(&utc_time(&r.started_at)),
        );
    }
    h.push_str("</div>");
    if d.runs.is_empty() {
        h.push_str("<p class=\"empty muted\">No runs yet.</p>");
    } else {
        h.push_str(
            "<div class=\"box\"><table id=\"runs\"><thead><tr><th>Run</th><th>State</th><th>Started</th>\
             <th>Ended</th><th>Version</th><th>Cluster</th><th>Engine</th></tr></thead><tbody>",
        );
        for r in &d.runs {
            let mut commit = r
                .commit
                .as_deref()
                .map_or("–".into(), |c| format!("<code>{}</code>", escape(c)));
            if let Some(p) = &r.project_commit {
                let _ = write!(commit, " project <code>{}</code>", escape(p));
            }
            let engine = match (engine_link(settings, r), &r.engine_id) {
                (Some(url), Some(id)) => format!(
                    "<a href=\"{}\">{} {}</a>",
                    escape(&url),
                    escape(&r.engine),
                    escape(id)
                ),
                (None, Some(id)) => format!("{} {}", escape(&r.engine), escape(id)),
                _ => escape(&r.engine),
            };
            let reason = r
                .reason
                .as_deref()
                .map(crate::event::one_line)
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr id=\"run-{id}\"><td data-label=\"Run\"><div><a href=\"/api/v1/jobs/{job}/logs?run={id}\">{id}</a></div></td>\
                 <td data-label=\"State\"><div><span class=\"state s-{st}\">{st}</span><span class=\"reason\">{reason}</span></div></td>\
                 <td class=\"nw\" data-label=\"Started\"><div>{start}</div></td><td class=\"nw\" data-label=\"Ended\"><div>{end}</div></td>\
                 <td data-label=\"Version\"><div>{commit}</div></td><td data-label=\"Cluster\"><div>{cluster}</div></td>\
                 <td data-label=\"Engine\"><div>{engine}</div></td></tr>",
                id = r.id,
                job = super::page::utf8_percent_encode(&j.name),
                st = escape(&r.state),
                reason = escape(&reason),
                start = time_html(&r.started_at),
                end = r.ended_at.as_deref().map_or("–".into(), time_html),
                cluster = cluster_html(settings, d, r),
            );
        }
        h.push_str("</tbody></table></div>");
    }
}

/// The cluster a run ran on: its env, the env's engine and cluster URL, and the cluster's
/// version as the daemon last read it.
fn cluster_html(settings: &Settings, d: &api::JobDetail, r: &RunView) -> String {
    let Some(env) = r.env.as_deref() else {
        return "–".into();
    };
    let mut s = escape(env);
    if let Some(e) = settings.envs.get(env) {
        let _ = write!(s, " · {}", escape(e.engine.as_str()));
        if d.job.env.as_deref() == Some(env)
            && let Some(v) = &d.job.version
        {
            let _ = write!(s, " {}", escape(v));
        }
        if let Some(url) = e.engine.cluster_url() {
            let _ = write!(s, " <span class=\"muted\">{}</span>", escape(&url));
        }
    }
    s
}

/// The params and args of the version that runs (else of the one to run), as its file wrote
/// them: a secret is shown as its `${secret:NAME}`, never its value.
fn params_html(h: &mut String, row: Option<&crate::store::JobRow>) {
    let Some(row) = row else { return };
    let (spec, what) = match (&row.applied, &row.desired) {
        (Some(a), _) => (a, "of the version that runs"),
        (None, Some(d)) => (d, "of the version to run (none runs yet)"),
        (None, None) => return,
    };
    let p = &spec.params;
    let _ = write!(
        h,
        "<h2>Params <span class=\"muted\">{what}</span></h2><dl id=\"params\">"
    );
    let code = |v: &str| format!("<code>{}</code>", escape(v));
    let list = |vs: &[String]| vs.iter().map(|v| code(v)).collect::<Vec<_>>().join(" ");
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| code(&format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let start = h.len();
    let mut fact = |k: &str, v: String| {
        let _ = write!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    if let Some(c) = &p.main_class {
        fact("main class", code(c));
    }
    if !p.command.is_empty() {
        fact("command", list(&p.command));
    }
    if !p.args.is_empty() {
        fact("args", list(&p.args));
    }
    if let Some(n) = p.parallelism {
        fact("parallelism", n.to_string());
    }
    if !p.conf.is_empty() {
        fact("conf", map(&p.conf));
    }
    if !p.environment.is_empty() {
        fact("environment", map(&p.environment));
    }
    if let Some(w) = &p.workdir {
        fact("workdir", code(w));
    }
    if h.len() == start {
        h.push_str("<dt>params</dt><dd>none</dd>");
    }
    h.push_str("</dl>");
}

/// The savepoints and retained checkpoints the job can start from, newest first: why each
/// was taken, whether it is kept or was disposed of, and the one the current run started from.
fn savepoints_html(h: &mut String, d: &api::JobDetail) {
    if d.savepoints.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Savepoints and checkpoints</h2><div class=\"box\"><table id=\"savepoints\"><thead><tr>\
         <th>Kind</th><th>Cause</th><th>Location</th><th>Run</th><th>Taken</th><th>Kept</th></tr></thead><tbody>",
    );
    for sp in &d.savepoints {
        let kept = match (sp.disposed_at, sp.current) {
            (Some(t), _) => format!("disposed of {}", time_html(&api::rfc3339(t))),
            (None, true) => "kept: the current run started from it".to_string(),
            (None, false) if sp.dispose_failures > 0 => format!(
                "kept: disposing of it failed {} times: {}",
                sp.dispose_failures,
                escape(sp.dispose_error.as_deref().unwrap_or_default())
            ),
            (None, false) => "kept".to_string(),
        };
        let _ = write!(
            h,
            "<tr><td data-label=\"Kind\"><div>{}</div></td><td data-label=\"Cause\"><div>{}</div></td>\
             <td data-label=\"Location\"><div><code>{}</code></div></td>\
             <td data-label=\"Run\"><div>{}</div></td><td data-label=\"Taken\"><div>{}</div></td>\
             <td data-label=\"Kept\"><div>{kept}</div></td></tr>",
            escape(&sp.kind),
            escape(sp.cause.as_deref().unwrap_or("–")),
            escape(&sp.location),
            sp.run_id
                .map_or("–".into(), |r| format!("<a href=\"#run-{r}\">{r}</a>")),
            time_html(&api::rfc3339(sp.time)),
        );
    }
    h.push_str("</tbody></table></div>");
}

/// The tail of the latest log that has output.
fn log_html(h: &mut String, log: Option<&(i64, String)>) {
    match log {
        None => h.push_str("<h2>Log</h2><p class=\"empty muted\">No log yet.</p>"),
        Some((run, text)) => {
            let _ = write!(
                h,
                "<h2>Log of run {run}</h2><pre id=\"log\">{}</pre>",
                escape(text)
            );
        }
    }
}

/// The job's events, newest first.
fn events_html(h: &mut String, d: &api::JobDetail) {
    h.push_str("<h2>Events</h2>");
    if d.events.is_empty() {
        h.push_str("<p class=\"empty muted\">No events yet.</p>");
    } else {
        h.push_str("<ul class=\"events\" id=\"events\">");
        for e in &d.events {
            let _ = write!(
                h,
                "<li><span class=\"muted\">{}</span> <span class=\"k\">{}</span>",
                time_html(&e.time),
                escape(&e.kind)
            );
            if let Some(c) = &e.commit {
                let _ = write!(h, " <code>{}</code>", escape(c));
            }
            // Every line: the problems of an invalid file are `path:line:column: message`.
            let _ = write!(h, "<pre class=\"msg\">{}</pre></li>", escape(&e.message));
        }
        h.push_str("</ul>");
    }
}

/// `GET /jobs/{name}`.
pub async fn job_page(
    State(state): State<Arc<ApiState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let (detail, row) = job_detail(&state, &name)?;
        let settings = state.settings.get();
        let schedule = row
            .as_ref()
            .and_then(|row| row.desired.as_ref().or(row.applied.as_ref()))
            .and_then(|s| s.schedule.clone());
        // The latest run that wrote something (a batch run just started has an empty log).
        let mut log = None;
        for r in detail.runs.iter().take(5) {
            let text = api::masked_run_log(&state, r.id, LOG_LINES).map_err(api::internal)?;
            if let Some(text) = text.filter(|l| !l.is_empty()) {
                log = Some((r.id, text));
                break;
            }
        }
        Ok::<_, api::ApiError>(render(
            &settings,
            &detail,
            row.as_ref(),
            schedule.as_deref(),
            log.as_ref(),
        ))
    })
    .await;
    match result {
        Ok(Ok(html)) => html_response(html),
        Ok(Err(e)) => (e.status, format!("{}\n", e.message)).into_response(),
        Err(e) => {
            tracing::error!("job page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(5), "5s");
        assert_eq!(span(65), "1m 5s");
        assert_eq!(span(3 * 3600 + 120), "3h 2m");
        assert_eq!(span(2 * 86_400 + 3600), "2d 1h");
    }
}
