//! The JSON API: jobs, one job with its runs and events, logs (secrets masked), and the two
//! POST endpoints behind `Authorization: Bearer <token>`: sync and restart.
//!
//! Every POST is recorded as an event (`api_sync`, `restart_requested`) naming the peer address.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::shown::{Envs, Shown, shown};
use crate::condition::{Condition, ConditionKind, Place};
use crate::event::JobEvent;
use crate::reconcile::Scope;
use crate::repo::TriggerReason;
use crate::settings::Settings;
use crate::store::{
    CommitRecord, EventRow, JobListRow, JobRow, JobState, RunRow, Running, StoreError,
};

/// Runs listed for one job.
pub const RUNS_SHOWN: usize = 20;
/// Events listed for one job.
pub const EVENTS_SHOWN: usize = 50;
/// Log lines returned when `tail` is not given.
pub const DEFAULT_TAIL: usize = 200;
/// The most log lines one request returns.
pub const MAX_TAIL: usize = 10_000;
/// The most bytes read from the end of a log file.
pub const MAX_LOG_READ: u64 = 4 * 1024 * 1024;

/// An error answer: a status and a JSON body `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// An [`ApiError`].
pub fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError {
        status,
        message: message.to_string(),
    }
}

pub(super) fn internal(err: impl std::fmt::Display) -> ApiError {
    tracing::error!("api: {err}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the daemon log",
    )
}

/// A config commit as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitView {
    /// Full id.
    pub id: String,
    /// First 8 characters.
    pub short: String,
    /// `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

impl CommitView {
    fn of(c: &CommitRecord) -> CommitView {
        CommitView {
            id: c.id.clone(),
            short: c.id.chars().take(8).collect(),
            author: c.author.clone(),
            subject: c.subject.clone(),
        }
    }
}

/// An event as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    /// Event id.
    pub id: i64,
    /// RFC 3339 time.
    pub time: String,
    /// Job, for job events.
    pub job: Option<String>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened.
    pub kind: String,
    /// Short id of the config commit it happened under.
    pub commit: Option<String>,
    /// Details.
    pub message: String,
}

impl EventView {
    /// The view of a stored event.
    pub fn of(e: &EventRow) -> EventView {
        EventView {
            id: e.id,
            time: rfc3339(e.time),
            job: e.job.clone(),
            run_id: e.run_id,
            kind: e.kind.as_str().to_string(),
            commit: e.commit_id.as_ref().map(|c| c.chars().take(8).collect()),
            message: e.message.clone(),
        }
    }
}

/// A run as shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunView {
    /// Run id.
    pub id: i64,
    /// starting | running | succeeded | failed | stopped | lost.
    pub state: String,
    /// How it ended.
    pub reason: Option<String>,
    /// Engine kind.
    pub engine: String,
    /// Short id of the config commit that deployed the version it runs.
    pub commit: Option<String>,
    /// For project jobs, short id of the project commit its artifact was built from.
    #[serde(default)]
    pub project_commit: Option<String>,
    /// The env it ran in.
    #[serde(default)]
    pub env: Option<String>,
    /// The engine's id of the run (flink job id, spark driver id, local pid).
    #[serde(default)]
    pub engine_id: Option<String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub ended_at: Option<String>,
}

impl RunView {
    fn of(r: &RunRow) -> RunView {
        RunView {
            id: r.id,
            state: r.state.as_str().to_string(),
            reason: r.reason.clone(),
            engine: r.engine.as_str().to_string(),
            commit: r.commit_id.as_deref().map(short),
            project_commit: r.project_commit.as_deref().map(short),
            env: r.env.clone(),
            engine_id: r
                .handle
                .as_ref()
                .map(|h| h.engine_id.clone())
                .filter(|id| !id.is_empty()),
            started_at: rfc3339(r.started_at),
            ended_at: r.ended_at.map(rfc3339),
        }
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(8).collect()
}

/// What runs now: the commits of the job's newest live run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunningView {
    /// The run.
    pub run_id: i64,
    /// Full id of the config commit that deployed the version it runs.
    pub config_commit: Option<String>,
    /// For project jobs, full id of the project commit its artifact was built from.
    pub project_commit: Option<String>,
    /// RFC 3339 time the run started.
    pub since: String,
    /// The spec hash of the version it runs.
    #[serde(default)]
    pub spec_hash: Option<String>,
    /// The env it was started in.
    #[serde(default)]
    pub env: Option<String>,
    /// Its engine.
    #[serde(default)]
    pub engine: Option<String>,
    /// The cluster it runs on (its URL; `None` for local runs).
    #[serde(default)]
    pub cluster: Option<String>,
    /// That cluster's version, when known (flink: `2.3.0`).
    #[serde(default)]
    pub version: Option<String>,
}

impl RunningView {
    /// The view of a stored live run, at `place` (its stored place, with the version filled
    /// in when the run's record lacks it).
    pub fn of(r: &Running, place: Option<&Place>) -> RunningView {
        let place = place.unwrap_or(&r.place);
        RunningView {
            run_id: r.run_id,
            config_commit: r.config_commit.clone(),
            project_commit: r.project_commit.clone(),
            since: rfc3339(r.since),
            spec_hash: Some(r.spec_hash.clone()),
            env: place.env.clone(),
            engine: place.engine.clone(),
            cluster: place.cluster.clone(),
            version: place.version.clone(),
        }
    }
}

/// One job in `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// Its state (`running`, `gave_up`, ...).
    pub state: String,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// What is wrong with it now, each typed (`{"kind": "deploy_failed", ...}`); empty when
    /// nothing is. Derived from what runs and what its file asks, so each clears when its
    /// cause is gone.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// True when it has a condition.
    #[serde(default)]
    pub problem: bool,
    /// Where it runs: the env of its live run, else the env its file asks for; `None` for a
    /// job that never had a valid file.
    pub env: Option<String>,
    /// That env's engine.
    pub engine: Option<String>,
    /// The version of the cluster it runs on (else of its env's cluster), once the daemon read
    /// it (flink: `1.20.3`).
    #[serde(default)]
    pub version: Option<String>,
    /// The env its latest valid file asks for.
    #[serde(default)]
    pub desired_env: Option<String>,
    /// When where it runs is not where its file asks, one phrase saying so and why ("runs on
    /// flink (2.3.0); the file asks for flink-1-20: the move was refused").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Path of its file in the config repo.
    pub path: String,
    /// The config commit that last changed its file.
    pub commit: Option<CommitView>,
    /// What runs now; `None` while no run is live.
    #[serde(default)]
    pub running: Option<RunningView>,
    /// Restarts recorded.
    pub restarts: u64,
    /// The `schedule` of a batch job on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Its latest event.
    pub last_event: Option<EventView>,
    /// True when the latest version of its file is invalid.
    pub invalid: bool,
    /// For a `rolled_back` job: the config commit of the version the rollback refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_commit: Option<String>,
    /// Why the job's row in the store cannot be read whole (its state is then `unreadable`
    /// when the state itself is what cannot be read); the other jobs are served as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl JobView {
    /// What runs now, in short: the config commit, then the project commit of project jobs
    /// (`1a2b3c4d (project 5e6f7a8b)`); `None` while no run is live.
    pub fn running_label(&self) -> Option<String> {
        let r = self.running.as_ref()?;
        let config = r.config_commit.as_deref().map_or("-".into(), short);
        Some(match r.project_commit.as_deref() {
            Some(p) => format!("{config} (project {})", short(p)),
            None => config,
        })
    }

    /// Its engine with its cluster's version when known (`flink 1.20.3`).
    pub fn engine_label(&self) -> Option<String> {
        let engine = self.engine.as_ref()?;
        Some(match &self.version {
            Some(v) => format!("{engine} {v}"),
            None => engine.clone(),
        })
    }
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobsView {
    /// True once the first config commit is applied.
    pub ready: bool,
    /// The applied config commit.
    pub applied_commit: Option<CommitView>,
    /// The jobs asked for, by name (at most `limit`).
    pub jobs: Vec<JobView>,
    /// When more jobs follow: the `after` of the next page.
    #[serde(default)]
    pub next: Option<String>,
}

/// A query parameter's value, `None` when missing or empty.
pub fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Jobs listed per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 1000;
/// The most jobs one page lists.
pub const MAX_PAGE: usize = 10_000;

/// The query of `GET /api/v1/jobs` and of the status page: filters and paging.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// A job state (`running`, `failed`, ...).
    pub state: Option<String>,
    /// An env name.
    pub env: Option<String>,
    /// An engine (`local`, `flink`, `spark`).
    pub engine: Option<String>,
    /// A folder of job names (`team-a`).
    pub folder: Option<String>,
    /// `1` or `true`: removed jobs too.
    pub removed: Option<String>,
    /// The name the previous page ended with.
    pub after: Option<String>,
    /// Jobs per page (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    pub limit: Option<String>,
    /// Only jobs whose name holds this text, in any case (the status page's search box).
    pub q: Option<String>,
    /// The status page's sort column (`job`, `state`, ...), applied by its script; the
    /// server lists by name.
    pub sort: Option<String>,
    /// `desc`: the status page's sort descending.
    pub dir: Option<String>,
    /// `1` or `true`: only jobs with a condition.
    pub problem: Option<String>,
}

/// A list's filters on what is shown (a state or condition, problems only), applied to the
/// derived conditions, beside the store query.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// What the store is asked for (no state: the shown state is derived).
    pub query: crate::store::JobQuery,
    /// `?state=`: jobs shown in this state, or with this condition (a word may be both).
    pub state: Option<(Option<JobState>, Option<ConditionKind>)>,
    /// `?problem=true`: only jobs with a condition.
    pub problem: bool,
}

impl ListFilter {
    /// All jobs, `limit` at most.
    pub fn all(query: crate::store::JobQuery) -> ListFilter {
        ListFilter {
            query,
            ..ListFilter::default()
        }
    }

    /// Whether the filters are on the shown state or conditions (which the store cannot
    /// filter on).
    fn on_shown(&self) -> bool {
        let in_store = self.query.state.is_some();
        (self.state.is_some() && !in_store) || self.problem
    }

    /// Whether `view` passes the filters.
    fn keeps(&self, view: &JobView) -> bool {
        if self.problem && !view.problem {
            return false;
        }
        let Some((state, kind)) = self.state else {
            return true;
        };
        state.is_some_and(|s| view.state == s.as_str())
            || kind.is_some_and(|k| view.conditions.iter().any(|c| c.kind() == k))
    }
}

/// A `1`/`0` query flag (empty: no).
fn flag(name: &str, v: &Option<String>) -> Result<bool, ApiError> {
    match given(v) {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(v) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("`{name}`: expected 1 or 0, found `{v}`"),
        )),
    }
}

impl ListQuery {
    /// The store query, or a 400 naming the bad parameter. Empty values mean "any".
    pub fn to_query(&self, settings: &Settings) -> Result<ListFilter, ApiError> {
        let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
        let state = match given(&self.state) {
            Some(s) => {
                let (state, kind) = (JobState::parse(s), ConditionKind::parse(s));
                if state.is_none() && kind.is_none() {
                    let mut all: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                    for k in ConditionKind::ALL {
                        if !all.contains(&k.as_str()) {
                            all.push(k.as_str());
                        }
                    }
                    return Err(bad(format!(
                        "unknown state `{s}`; expected one of: {}",
                        all.join(", ")
                    )));
                }
                Some((state, kind))
            }
            None => None,
        };
        let mut envs: Option<Vec<String>> = given(&self.env).map(|e| vec![e.to_string()]);
        if let Some(engine) = given(&self.engine) {
            let of_engine: Vec<String> = settings
                .envs
                .iter()
                .filter(|(_, e)| e.engine.as_str() == engine)
                .map(|(n, _)| n.clone())
                .collect();
            envs = Some(match envs {
                Some(e) => e.into_iter().filter(|n| of_engine.contains(n)).collect(),
                None => of_engine,
            });
        }
        let removed = flag("removed", &self.removed)?;
        let problem = flag("problem", &self.problem)?;
        let limit = match given(&self.limit) {
            None => DEFAULT_PAGE,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(bad(format!(
                        "`limit`: expected a number from 1 to {MAX_PAGE}, found `{v}`"
                    )));
                }
            },
        };
        // A state no condition is named after and that is shown as stored is asked of the
        // store too (a page then reads only its rows); `running` and `pending` are also shown
        // for jobs stored otherwise (a revert of a rolled back version, a wait on the host).
        let stored = state.and_then(|(s, kind)| {
            s.filter(|s| kind.is_none() && !matches!(s, JobState::Running | JobState::Pending))
        });
        Ok(ListFilter {
            query: crate::store::JobQuery {
                state: stored,
                envs,
                folder: given(&self.folder).map(|f| f.trim_matches('/').to_string()),
                name: None,
                name_contains: given(&self.q).map(str::to_string),
                removed,
                after: given(&self.after).map(str::to_string),
                limit,
            },
            state,
            problem,
        })
    }
}

/// `GET /api/v1/jobs/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub job: JobView,
    /// Problems of the latest version of its file, when invalid.
    pub errors: Option<String>,
    /// Latest runs first (at most [`RUNS_SHOWN`]).
    pub runs: Vec<RunView>,
    /// Latest events first (at most [`EVENTS_SHOWN`]).
    pub events: Vec<EventView>,
    /// Flink savepoints and the checkpoints restarts used, newest first (at most
    /// [`SAVEPOINTS_SHOWN`]).
    #[serde(default)]
    pub savepoints: Vec<crate::store::SavepointRow>,
    /// The version that runs (its spec hash) and, after a rollback, the refused one.
    #[serde(default)]
    pub versions: Option<VersionsView>,
}

/// The running version and the version a rollback refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionsView {
    /// The spec hash of the version that runs.
    pub running_hash: Option<String>,
    /// The spec hash of the refused version, until a commit changes the job file.
    pub refused_hash: Option<String>,
    /// The config commit of the refused version.
    pub refused_commit: Option<String>,
    /// Why it was refused.
    pub refused_reason: Option<String>,
}

/// Savepoints shown with a job.
pub const SAVEPOINTS_SHOWN: usize = 20;

/// RFC 3339 (UTC, milliseconds) of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// What a job's view is made of besides its list row.
struct Extra<'a> {
    commits: &'a HashMap<String, CommitRecord>,
    restarts: u64,
    last: Option<&'a EventRow>,
    running: Option<&'a Running>,
    shown: Shown,
}

fn job_view(settings: &Settings, row: &JobListRow, x: Extra<'_>) -> JobView {
    let Shown {
        conditions,
        state,
        reason,
        running: running_place,
        file,
        place,
    } = x.shown;
    // Where it runs (its live run), else where its file asks.
    let at = running_place.as_ref().or(file.as_ref());
    let env = at.and_then(|p| p.env.clone()).or_else(|| row.env.clone());
    let engine = at.and_then(|p| p.engine.clone()).or_else(|| {
        env.as_deref()
            .and_then(|e| settings.envs.get(e))
            .map(|e| e.engine.as_str().to_string())
    });
    let state = state.or(row.state);
    JobView {
        name: row.name.clone(),
        state: state.map_or(UNREADABLE, JobState::as_str).to_string(),
        reason: if state == row.state {
            reason.or_else(|| row.reason.clone())
        } else {
            reason
        },
        problem: !conditions.is_empty(),
        conditions,
        env,
        engine,
        version: at.and_then(|p| p.version.clone()),
        desired_env: row.env.clone(),
        place,
        path: row.path.clone(),
        commit: row
            .desired_commit
            .as_deref()
            .and_then(|c| x.commits.get(c))
            .map(CommitView::of),
        running: x
            .running
            .map(|r| RunningView::of(r, running_place.as_ref())),
        restarts: x.restarts,
        schedule: row.schedule.clone(),
        last_event: x.last.map(EventView::of),
        invalid: row.invalid,
        refused_commit: None,
        unreadable: row.unreadable.clone(),
    }
}

/// The state shown for a job whose stored state cannot be read.
pub const UNREADABLE: &str = "unreadable";

/// `view` (of a job in `state`) with the refused commit of a `rolled_back` job, read from the
/// store.
fn with_refused(
    store: &crate::store::Store,
    state: Option<JobState>,
    mut view: JobView,
) -> Result<JobView, StoreError> {
    if state == Some(JobState::RolledBack) && view.state == JobState::RolledBack.as_str() {
        view.refused_commit = store.blocking().versions(&view.name)?.refused_commit;
    }
    Ok(view)
}

/// `view` as the job waits on the host, when it does (see [`crate::reconcile::HostWaits`]):
/// the store cannot hold that while it refuses writes, so the daemon's own account is shown
/// over it, and a run whose end could not be recorded is not shown as running.
fn with_host_wait(state: &ApiState, mut view: JobView) -> JobView {
    if let Some(w) = state.reconciler.context().host.job(&view.name) {
        view.state = w.state().as_str().to_string();
        view.reason = Some(w.reason());
        if !w.live {
            view.running = None;
        }
    }
    view
}

/// The runs of a job waiting on the host, with the ends the store has not recorded yet.
fn runs_with_host_wait(state: &ApiState, job: &str, runs: &mut [RunView]) {
    let Some(w) = state.reconciler.context().host.job(job) else {
        return;
    };
    for run in runs {
        if let Some((_, ended)) = w.unrecorded.iter().find(|(id, _)| *id == run.id) {
            run.state = ended.as_str().to_string();
            run.reason = Some(format!(
                "ended {ended}; the end is recorded once {} works again",
                w.resource
            ));
        }
    }
}

/// The jobs `f` asks for, as the list and the status page show them. Only the page's rows are
/// read, with their latest events and commits; what runs comes from the live runs alone. A
/// filter on the shown state or on conditions reads the rows after `after` until the page is
/// full.
pub fn jobs_view(state: &ApiState, f: &ListFilter) -> Result<JobsView, crate::store::StoreError> {
    let store = &state.store;
    let settings = state.settings.get();
    let q = &f.query;
    let applied = store.blocking().applied_commit()?;
    let running = store.blocking().running()?;
    let envs = Envs::now(state);
    let mut commits = HashMap::new();
    let mut jobs = Vec::new();
    let mut after = q.after.clone();
    let mut next = None;
    // A filter on conditions reads pages of the store until the list is full.
    let batch = if f.on_shown() {
        DEFAULT_PAGE.max(q.limit.saturating_add(1))
    } else {
        q.limit.saturating_add(1)
    };
    loop {
        let rows = store.blocking().job_page(&crate::store::JobQuery {
            limit: batch,
            after: after.clone(),
            ..q.clone()
        })?;
        let ended = rows.len() < batch;
        let ids: Vec<i64> = rows.iter().filter_map(|r| r.last_event_id).collect();
        let last = store.blocking().events_by_ids(&ids)?;
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let facts = store.blocking().condition_rows(Some(&names))?;
        for row in &rows {
            after = Some(row.name.clone());
            if let Some(id) = row.desired_commit.as_deref()
                && !commits.contains_key(id)
                && let Some(c) = store.blocking().commit(id)?
            {
                commits.insert(id.to_string(), c);
            }
            let extra = Extra {
                commits: &commits,
                restarts: row.restarts,
                last: row.last_event_id.and_then(|id| last.get(&id)),
                running: running.get(&row.name),
                shown: shown(
                    state,
                    &envs,
                    &row.name,
                    facts.get(&row.name),
                    running.get(&row.name),
                ),
            };
            let view = with_refused(store, row.state, job_view(&settings, row, extra))
                .map(|v| with_host_wait(state, v))?;
            if !f.keeps(&view) {
                continue;
            }
            if jobs.len() == q.limit {
                next = jobs.last().map(|j: &JobView| j.name.clone());
                break;
            }
            jobs.push(view);
        }
        if next.is_some() || ended {
            break;
        }
    }
    if let Some(id) = applied.as_deref()
        && !commits.contains_key(id)
        && let Some(c) = store.blocking().commit(id)?
    {
        commits.insert(id.to_string(), c);
    }
    Ok(JobsView {
        ready: state.ready.load(std::sync::atomic::Ordering::Acquire),
        applied_commit: applied
            .as_deref()
            .and_then(|c| commits.get(c))
            .map(CommitView::of),
        jobs,
        next,
    })
}

/// Runs a store read off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// `GET /api/v1/jobs?state=&problem=&env=&engine=&folder=&removed=&after=&limit=`.
pub async fn jobs(State(state): State<Arc<ApiState>>, Query(q): Query<ListQuery>) -> Response {
    let result = blocking(move || {
        let f = q.to_query(&state.settings.get())?;
        jobs_view(&state, &f).map_err(internal)
    });
    match result.await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
}

fn unknown_job(name: &str) -> ApiError {
    error(StatusCode::NOT_FOUND, &format!("no job named `{name}`"))
}

/// A job with its latest runs and events, and its row; 404 for an unknown job. A row that
/// cannot be read whole gives the job as the list shows it, marked unreadable with the error,
/// with its runs and events, and no row.
pub fn job_detail(state: &ApiState, name: &str) -> Result<(JobDetail, Option<JobRow>), ApiError> {
    let store = &state.store;
    let row = match store.blocking().job(name) {
        Ok(Some(row)) => row,
        Ok(None) => return Err(unknown_job(name)),
        Err(e @ StoreError::Decode { .. }) => {
            return unreadable_detail(state, name, &e.to_string()).map(|d| (d, None));
        }
        Err(e) => return Err(internal(e)),
    };
    let commit = match row.desired_commit.as_deref() {
        Some(c) => store.blocking().commit(c).map_err(internal)?,
        None => None,
    };
    let commits = commit
        .map(|c| HashMap::from([(c.id.clone(), c)]))
        .unwrap_or_default();
    let events = store
        .blocking()
        .events(Some(name), EVENTS_SHOWN)
        .map_err(internal)?;
    let restarts = store
        .blocking()
        .restart_counts()
        .map_err(internal)?
        .get(name)
        .copied()
        .unwrap_or(0);
    let runs = store.blocking().runs(name, RUNS_SHOWN).map_err(internal)?;
    let savepoints = store
        .blocking()
        .savepoints(name, SAVEPOINTS_SHOWN)
        .map_err(internal)?;
    let running = store.blocking().running_of(name).map_err(internal)?;
    let list_row = JobListRow::of(&row);
    let v = store.blocking().versions(name).map_err(internal)?;
    let versions = Some(VersionsView {
        running_hash: row.applied_hash.clone(),
        refused_hash: v.refused_hash,
        refused_commit: v.refused_commit,
        refused_reason: v.refused_reason,
    });
    let facts = store
        .blocking()
        .condition_rows(Some(&[name]))
        .map_err(internal)?;
    let extra = Extra {
        commits: &commits,
        restarts,
        last: events.first(),
        running: running.as_ref(),
        shown: shown(
            state,
            &Envs::now(state),
            name,
            facts.get(name),
            running.as_ref(),
        ),
    };
    let mut runs: Vec<RunView> = runs.iter().map(RunView::of).collect();
    runs_with_host_wait(state, name, &mut runs);
    let detail = JobDetail {
        job: with_host_wait(state, job_view(&state.settings.get(), &list_row, extra)),
        errors: row.invalid.clone(),
        runs,
        events: events.iter().map(EventView::of).collect(),
        savepoints,
        versions,
    };
    Ok((detail, Some(row)))
}

/// The detail of job `name` whose row does not decode (`why`): what the list reads of it,
/// its runs, events and savepoints.
fn unreadable_detail(state: &ApiState, name: &str, why: &str) -> Result<JobDetail, ApiError> {
    let store = &state.store;
    let q = crate::store::JobQuery {
        name: Some(name.to_string()),
        removed: true,
        limit: 1,
        ..Default::default()
    };
    let Some(mut list_row) = store.blocking().job_page(&q).map_err(internal)?.pop() else {
        return Err(unknown_job(name));
    };
    list_row.unreadable = Some(why.to_string());
    let commits = match list_row.desired_commit.as_deref() {
        Some(c) => store
            .blocking()
            .commit(c)
            .map_err(internal)?
            .map(|c| HashMap::from([(c.id.clone(), c)]))
            .unwrap_or_default(),
        None => HashMap::new(),
    };
    let events = store
        .blocking()
        .events(Some(name), EVENTS_SHOWN)
        .map_err(internal)?;
    let runs = store.blocking().runs(name, RUNS_SHOWN).map_err(internal)?;
    let running = store.blocking().running_of(name).map_err(internal)?;
    let facts = store
        .blocking()
        .condition_rows(Some(&[name]))
        .map_err(internal)?;
    let extra = Extra {
        commits: &commits,
        restarts: list_row.restarts,
        last: events.first(),
        running: running.as_ref(),
        shown: shown(
            state,
            &Envs::now(state),
            name,
            facts.get(name),
            running.as_ref(),
        ),
    };
    Ok(JobDetail {
        job: job_view(&state.settings.get(), &list_row, extra),
        errors: None,
        runs: runs.iter().map(RunView::of).collect(),
        events: events.iter().map(EventView::of).collect(),
        savepoints: store
            .blocking()
            .savepoints(name, SAVEPOINTS_SHOWN)
            .map_err(internal)?,
        versions: None,
    })
}

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
                "the log of run {} is withheld: it may hold the values of secret {} it was                  given, which this daemon no longer holds, and the secret files no longer match                  them (changed, removed, or `secrets_dir` moved); it is kept on the host as it                  was written",
                run.id,
                names.join(", ")
            )))
        }
        (None, None) => {
            std::fs::metadata(path)?;
            Ok(RunLog::Withheld(format!(
                "the log of run {} is withheld: the run was recorded before jobkeeper kept which                  secrets a run was given, so it cannot be masked; it is kept on the host as it                  was written",
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

/// `GET /api/v1/jobs/{name}`: the job with its latest runs and events.
pub async fn job(State(state): State<Arc<ApiState>>, UrlPath(name): UrlPath<String>) -> Response {
    match blocking(move || job_detail(&state, &name).map(|(d, _)| d)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r.into_response(),
    }
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

/// Why a POST is refused, or `None` when its bearer token is the configured one. The token
/// file is read on each request (so it can be rotated); tokens are compared in constant time
/// (over their SHA-256, which also hides their lengths).
pub fn authorize(settings: &Settings, headers: &HeaderMap) -> Option<Response> {
    let unauthorized = |msg: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, msg).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    };
    let Some(file) = settings.api_token_file.as_deref() else {
        return unauthorized(
            "POST endpoints are disabled: the daemon config has no `api_token_file`",
        );
    };
    let expected = match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        Ok(_) => return unauthorized("POST endpoints are disabled: the API token file is empty"),
        Err(e) => {
            tracing::error!(file = %file.display(), "cannot read the API token file: {e}");
            return unauthorized("POST endpoints are disabled: the API token file cannot be read");
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return unauthorized("missing `Authorization: Bearer <token>`");
    };
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        None
    } else {
        unauthorized("wrong token")
    }
}

/// Equality of two secrets in time that depends on neither (compares their SHA-256).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// `POST /api/v1/sync`: fetch the config repo and apply its tip now.
pub async fn sync(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorize(&state.settings.get(), &headers) {
        tracing::warn!(%peer, "refused POST /api/v1/sync: unauthorized");
        return refused;
    }
    let Some(trigger) = state.trigger.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is still starting",
        )
        .into_response();
    };
    let queued = trigger.trigger(TriggerReason::Manual);
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let who = format!("the API from {peer}");
        let events = &st.reconciler.context().events;
        events.emit_blocking(Scope::daemon(), &JobEvent::ApiSync { who });
    })
    .await;
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "status": "sync requested",
            "queued": queued,
            "note": if queued { "a fetch starts now" } else { "a fetch was already pending; this request joins it" },
        })),
    )
        .into_response()
}

/// `POST /api/v1/jobs/{name}/restart`: redeploy one job now, clearing `gave_up`.
pub async fn restart(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorize(&state.settings.get(), &headers) {
        tracing::warn!(%peer, job = %name, "refused POST restart: unauthorized");
        return refused;
    }
    let st = state.clone();
    let result = blocking(move || {
        let Some(row) = st.store.blocking().job(&name).map_err(internal)? else {
            return Err(unknown_job(&name));
        };
        if row.desired.is_none() {
            return Err(error(
                StatusCode::CONFLICT,
                &format!(
                    "job `{name}` has no valid version to run (removed, or its file is invalid)"
                ),
            ));
        }
        let who = format!("the API from {peer}");
        let event = JobEvent::RestartRequested { who: who.clone() };
        let events = &st.reconciler.context().events;
        events.emit_blocking(Scope::job(&name, None), &event);
        st.reconciler.restart(&name, &who);
        Ok(name)
    })
    .await;
    match result {
        Ok(name) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "restart requested", "job": name })),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_tail_gives_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail(&p, 2).unwrap(), "b\nc\n");
        assert_eq!(read_tail(&p, 10).unwrap(), "a\nb\nc\n");
        assert_eq!(read_tail(&p, 0).unwrap(), "");
        std::fs::write(&p, "a\nno newline").unwrap();
        assert_eq!(read_tail(&p, 1).unwrap(), "no newline\n");
        let big: String = (0..1_000_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, big).unwrap();
        assert_eq!(read_tail(&p, 2).unwrap(), "line 999998\nline 999999\n");
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
