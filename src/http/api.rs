//! The JSON API: jobs, one job with its runs and events, logs (secrets masked, [`logs`]), and
//! the two POST endpoints behind `Authorization: Bearer <token>`, sync and restart ([`post`]).
//!
//! Every POST is recorded as an event (`api_sync`, `restart_requested`) naming the peer address.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;

mod logs;
mod post;

use super::shown::{Envs, Shown, shown};
use crate::condition::{Condition, ConditionKind, Place};
use crate::settings::Settings;
use crate::store::{
    CommitRecord, EventRow, JobListRow, JobRow, JobState, RunRow, Running, StoreError,
};
pub use logs::{
    LogQuery, RunLog, engine_section, logs, masked_run_log, read_tail, read_tail_masked,
    run_log_tail,
};
pub use post::{authorize, constant_time_eq, restart, sync};

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
    /// A change to the job held by an open freeze window, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldView>,
    /// Why the job's row in the store cannot be read whole (its state is then `unreadable`
    /// when the state itself is what cannot be read); the other jobs are served as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// A change held by a freeze window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeldView {
    /// When the window closes and the change is applied (RFC 3339).
    pub until: String,
    /// The short id of the commit whose change is held.
    pub commit: String,
    /// The window's reason.
    pub reason: String,
}

impl HeldView {
    /// The view of a held change.
    pub fn of(h: &crate::store::HeldChange) -> HeldView {
        HeldView {
            until: h.until.clone(),
            commit: short(&h.commit),
            reason: h.reason.clone(),
        }
    }

    /// `held until <time>`, as `status` and the pages show it.
    pub fn label(&self) -> String {
        format!("held until {}", self.until)
    }
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
    /// Who leads ([`crate::ha`]), as the daemon that answered knows it.
    #[serde(default)]
    pub leader: Option<LeaderView>,
}

/// Who leads, in `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderView {
    /// The leading node (empty when no daemon holds the lease).
    pub node: String,
    /// The lease's epoch (0 without `ha`).
    pub epoch: i64,
    /// Since when that node leads (RFC 3339).
    pub since: String,
    /// True when the daemon that answered leads.
    pub this_daemon: bool,
    /// False without `ha`: the only daemon, leading always.
    pub ha: bool,
}

impl LeaderView {
    /// The view of `l`.
    pub fn of(l: &crate::ha::Leadership) -> LeaderView {
        LeaderView {
            node: l.node.clone(),
            epoch: l.epoch,
            since: rfc3339(l.since_ms),
            this_daemon: l.leader,
            ha: l.ha,
        }
    }
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    pub savepoints: Vec<super::savepoints::SavepointView>,
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
        held: None,
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
    let held: HashMap<String, crate::store::HeldChange> = store
        .blocking()
        .held_changes()?
        .into_iter()
        .map(|h| (h.job.clone(), h))
        .collect();
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
            let mut view = with_refused(store, row.state, job_view(&settings, row, extra))
                .map(|v| with_host_wait(state, v))?;
            view.held = held.get(&row.name).map(HeldView::of);
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
        leader: Some(LeaderView::of(&state.leadership.borrow())),
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
    let mut savepoints = super::savepoints::savepoints_view(store, name)
        .map_err(internal)?
        .savepoints;
    savepoints.truncate(SAVEPOINTS_SHOWN);
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
    let mut job = with_host_wait(state, job_view(&state.settings.get(), &list_row, extra));
    job.held = store
        .blocking()
        .held_changes()
        .map_err(internal)?
        .iter()
        .find(|h| h.job == name)
        .map(HeldView::of);
    let detail = JobDetail {
        job,
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
        savepoints: {
            let mut v = super::savepoints::savepoints_view(store, name)
                .map_err(internal)?
                .savepoints;
            v.truncate(SAVEPOINTS_SHOWN);
            v
        },
        versions: None,
    })
}

/// `GET /api/v1/jobs/{name}`: the job with its latest runs and events.
pub async fn job(State(state): State<Arc<ApiState>>, UrlPath(name): UrlPath<String>) -> Response {
    match blocking(move || job_detail(&state, &name).map(|(d, _)| d)).await {
        Ok(v) => Json(v).into_response(),
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
