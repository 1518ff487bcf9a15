//! `GET /api/v1/jobs/{name}/logs`: the end of a run's log (the secrets it was given masked,
//! or withheld when they cannot be), of the latest build's log, or what the engine keeps of a
//! cluster run; and reading a file's last lines.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::super::ApiState;
use super::{
    ApiError, DEFAULT_TAIL, MAX_LOG_READ, MAX_TAIL, blocking, error, internal, unknown_job,
};
use crate::store::{RunRow, StoreError};

/// A run's log as it may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunLog {
    /// Its end, with the secrets the run was given masked.
    Text(String),
    /// Not served: why, naming the secrets it may hold (never their values).
    Withheld(String),
}

/// The last `lines` lines of `run`'s log, masked (before the cut) with the values the run was
/// given: while the daemon holds them, from memory; once the log was masked in place, as it
/// is; a run given no secrets, as it is. Any other log is withheld: it is never masked with
/// what the secret files say today (see [`crate::secrets`]).
pub fn run_log_tail(state: &ApiState, run: &RunRow, lines: usize) -> std::io::Result<RunLog> {
    let path = Path::new(&run.log_path);
    let held = state.reconciler.context().secrets.get(run.id);
    match (&run.secrets, held) {
        (_, Some(secrets)) => read_tail_masked(path, lines, |t| secrets.mask(t)).map(RunLog::Text),
        (Some(names), None) if names.is_empty() || run.log_masked => {
            read_tail(path, lines).map(RunLog::Text)
        }
        (Some(names), None) => {
            // Withheld only when there is a log to withhold.
            std::fs::metadata(path)?;
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            Ok(RunLog::Withheld(format!(
                "the log of run {} is withheld: it may hold the values of secret {} it was given, which this daemon no longer holds, and the secret files no longer match them (changed, removed, or `secrets_dir` moved); it is kept on the host as it was written",
                run.id,
                names.join(", ")
            )))
        }
        (None, None) => {
            std::fs::metadata(path)?;
            Ok(RunLog::Withheld(format!(
                "the log of run {} is withheld: the run was recorded before jobkeeper kept which secrets a run was given, so it cannot be masked; it is kept on the host as it was written",
                run.id
            )))
        }
    }
}

/// The last `lines` lines of run `run_id`'s log for the job page (a withheld log is its
/// reason, in brackets); `None` when it has no log (yet, or any more); an error when the store
/// cannot be read.
pub fn masked_run_log(
    state: &ApiState,
    run_id: i64,
    lines: usize,
) -> Result<Option<String>, StoreError> {
    let Some(run) = state.store.blocking().run(run_id)? else {
        return Ok(None);
    };
    Ok(match run_log_tail(state, &run, lines) {
        Ok(RunLog::Text(t)) => Some(t),
        Ok(RunLog::Withheld(why)) => Some(format!("[{why}]\n")),
        Err(_) => None,
    })
}

/// The query of `GET /api/v1/jobs/{name}/logs`.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// A run id (default: the latest run).
    pub run: Option<String>,
    /// `latest`: the latest build's log instead of a run's.
    pub build: Option<String>,
    /// Last lines to return (default [`DEFAULT_TAIL`], at most [`MAX_TAIL`]).
    pub tail: Option<String>,
}

/// `GET /api/v1/jobs/{name}/logs?run=ID|build=latest&tail=N`: the end of a log as text, with
/// the job's secret values masked.
pub async fn logs(
    State(state): State<Arc<ApiState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let tail = match q.tail.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_TAIL,
        Some(Ok(n)) => n.min(MAX_TAIL),
        Some(Err(_)) => {
            return error(StatusCode::BAD_REQUEST, "`tail` must be a number").into_response();
        }
    };
    let state2 = state.clone();
    let result = blocking(move || {
        let store = &state.store;
        let Some(_) = store.blocking().job(&name).map_err(internal)? else {
            return Err(unknown_job(&name));
        };
        let path = match (q.build.as_deref(), q.run.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "ask for `run` or `build`, not both",
                ));
            }
            (Some("latest"), None) => latest_build_log(&state, &name),
            (Some(_), None) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "`build` takes `latest` only",
                ));
            }
            (None, run) => {
                let run = requested_run(store, &name, run)?;
                return match run_log_tail(&state, &run, tail) {
                    Ok(RunLog::Text(t)) => Ok((t, Some(run))),
                    Ok(RunLog::Withheld(why)) => Err(error(StatusCode::FORBIDDEN, &why)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(error(
                        StatusCode::NOT_FOUND,
                        &format!("job `{name}` has no such log (yet)"),
                    )),
                    Err(e) => Err(internal(e)),
                };
            }
        };
        // A build log: builds are never given secrets (`${secret:..}` in `project` is an
        // error), so it is served as it is.
        let which = path
            .parent()
            .and_then(crate::build::LatestBuild::read)
            .map_or_else(
                || "the latest build (which build it was is not recorded)".to_string(),
                |b| b.describe(),
            );
        match read_tail(&path, tail) {
            Ok(t) => Ok((format!("==== {which} ====\n{t}"), None)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(error(
                StatusCode::NOT_FOUND,
                &format!("job `{name}` has no such log (yet)"),
            )),
            Err(e) => Err(internal(e)),
        }
    })
    .await;
    let (mut text, run) = match result {
        Ok(found) => found,
        Err(r) => return r.into_response(),
    };
    if let Some(run) = run
        && let Some(section) = engine_section(&state2, &run, tail).await
    {
        text.push_str(&section);
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The latest build log of job `name`: in its folder, or, for a job in a folder built before
/// the one-level layout, where it was.
fn latest_build_log(state: &ApiState, name: &str) -> std::path::PathBuf {
    let logs = state.started.state_dir.join("logs");
    let path = crate::runlogs::job_dir(&logs, name).join("build-latest.log");
    let before = logs.join(name).join("build-latest.log");
    if path.exists() || !before.is_file() {
        path
    } else {
        before
    }
}

/// The run of job `name` a `logs` request asks for: run `id`, or the latest.
fn requested_run(
    store: &crate::store::Store,
    name: &str,
    id: Option<&str>,
) -> Result<crate::store::RunRow, ApiError> {
    let Some(id) = id else {
        return store
            .blocking()
            .runs(name, 1)
            .map_err(internal)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    &format!("job `{name}` has no runs yet"),
                )
            });
    };
    let id: i64 = id
        .parse()
        .map_err(|_| error(StatusCode::BAD_REQUEST, "`run` must be a run id (a number)"))?;
    store
        .blocking()
        .run(id)
        .map_err(internal)?
        .filter(|r| r.job == name)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                &format!("job `{name}` has no run {id}"),
            )
        })
}

/// What `run`'s engine keeps of its output beyond its log file (a cluster run's log holds only
/// what the daemon wrote while submitting it), as a section of the `logs` answer after the log:
/// its last `lines` lines under a line naming where they came from, or why the engine has
/// none now. `None` for a local run and a run never submitted. The secret values the run was
/// given are masked in it as in its log; when the daemon no longer holds them, the section is
/// withheld (it cannot be masked).
pub async fn engine_section(state: &ApiState, run: &RunRow, lines: usize) -> Option<String> {
    use crate::engine::RunOutput;
    let handle = run.handle.as_ref().filter(|h| !h.engine_id.is_empty())?;
    let engine =
        state
            .reconciler
            .context()
            .engines
            .of_run(run.env.as_deref(), run.engine, Some(handle))?;
    let section = match engine.run_output(handle, lines).await {
        RunOutput::Nothing => return None,
        RunOutput::Kept { source, text } => format!("==== {source} ====\n{text}"),
        RunOutput::Gone(why) => format!("==== the engine no longer has this run's output: {why}\n"),
        RunOutput::Unavailable(why) => {
            format!("==== the engine's output of this run cannot be read now: {why}\n")
        }
    };
    let held = state.reconciler.context().secrets.get(run.id);
    Some(match (&run.secrets, held) {
        (_, Some(secrets)) => secrets.mask(&section),
        (Some(names), None) if names.is_empty() => section,
        _ => format!(
            "==== the engine's output of run {} is withheld: it may hold the values of the \
             secrets the run was given, which this daemon no longer holds to mask them\n",
            run.id
        ),
    })
}

/// The last `lines` lines of a file, reading at most [`MAX_LOG_READ`] bytes from its end.
pub fn read_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    read_tail_masked(path, lines, str::to_string)
}

/// [`read_tail`], with `mask` applied to the whole lines read before they are cut to the last
/// `lines`: a cut never falls inside a value before it is masked.
pub fn read_tail_masked(
    path: &Path,
    lines: usize,
    mask: impl Fn(&str) -> String,
) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX_LOG_READ);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(MAX_LOG_READ).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut body: &str = &text;
    if start > 0 {
        // The read began inside a line: drop that piece.
        body = body.split_once('\n').map_or("", |(_, rest)| rest);
    }
    let masked = mask(body);
    let trimmed = masked.strip_suffix('\n').unwrap_or(&masked);
    if lines == 0 || trimmed.is_empty() {
        return Ok(String::new());
    }
    let cut = trimmed
        .rmatch_indices('\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    let mut out = trimmed[cut..].to_string();
    out.push('\n');
    Ok(out)
}
