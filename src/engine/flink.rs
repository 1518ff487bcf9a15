//! The `flink` engine: runs are jobs of one Apache Flink session cluster, driven over its REST
//! API (tested against Flink 2.3.0 and 1.20.3; the REST fields that differ between versions are
//! in [`version`], the cluster's version is read at start and after an outage).
//!
//! Owns the cluster's jars (uploaded once per artifact digest, found again by name after a
//! daemon restart, uploaded again when the cluster lost them), job submission, the batched
//! status of all runs (one `GET /jobs/overview` per call), failure reasons from
//! `/jobs/{id}/exceptions`, stop-with-savepoint, cancel, the latest retained checkpoint of a
//! failed job, and savepoints taken or disposed of while jobs run ([`savepoints`]).
//!
//! Job ids are chosen by jobkeeper ([`job_id`]): a hash of the daemon's state folder, the job
//! name and the store's run id. A submit whose answer was lost (timeout, cluster gone) can then
//! be looked up by that id instead of being sent again, so a run is never submitted twice. A
//! submit that reaches the cluster twice anyway (a late one from a daemon that lost its turn)
//! is answered 400 `Duplicate…SubmissionException` ([`duplicate_submission`]): the run's job
//! runs or ran there, and the run is tracked as that job, never failed.
//!
//! Each submission also names its jobkeeper job and run in its job config ([`identity`]), so
//! the cluster's other users can tell jobkeeper's jobs from theirs.
//!
//! Every request has a short timeout; a cluster that does not answer is
//! [`EngineError::Unreachable`], which callers treat as "wait and retry", never as a failed run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::cluster::{lock, require_jar, unreachable, write_log};
use super::{
    ClusterJob, Engine, EngineError, HealthFacts, JobDetails, RecordedRun, Recovery, RunExit,
    RunHandle, RunStatus, StateLeft, StatePoint, StopOutcome, SubmitRequest, Survey, Vertex,
};
use crate::yaml::{Checker, Node};

pub mod answers;
pub mod identity;
pub mod negotiate;
pub mod origin;
pub mod output;
pub mod savepoints;
pub mod version;

pub use answers::{
    REASON_LINES, completed_at, duplicate_submission, error_text, execution_failure, health_facts,
    job_vertices, overview_jobs, overview_tasks, requested_parallelism, summarize_trace, tasks_up,
};
pub use version::FlinkVersion;
use version::is_live;

/// Connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a plain REST call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a jar upload.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of `POST /jars/{id}/run` (the job's `main()` runs inside it).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a savepoint may take.
pub const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(600);
/// How many times a stop-with-savepoint is tried before the caller is told it failed.
const SAVEPOINT_ATTEMPTS: u32 = 3;
/// How long a stop-with-savepoint waits for a deploying job's tasks to run.
const TASKS_WAIT: Duration = Duration::from_secs(60);
/// How often a savepoint or a stopping job is looked at.
const POLL: Duration = Duration::from_millis(100);
/// Flink's own name for `allowNonRestoredState`, accepted in `params.conf`.
pub const IGNORE_UNCLAIMED_STATE: &str = "execution.savepoint.ignore-unclaimed-state";
/// The longest wait for a cluster's cached checkpoint statistics to include a job's end.
const STATS_SETTLE_MAX: Duration = Duration::from_secs(10);

/// Checkpoint retention, set to [`RETENTION_DEFAULT`] unless `params.conf` says otherwise.
pub const RETENTION_KEY: &str = "execution.checkpointing.externalized-checkpoint-retention";
/// Checkpoints are kept when a job fails and when it is cancelled (in Flink's UI, say), so the
/// next run starts from the newest one; the same key and value on 1.19, 1.20 and 2.x.
pub const RETENTION_DEFAULT: &str = "RETAIN_ON_CANCELLATION";

/// The job metrics a health sweep asks for.
const HEALTH_METRICS: &str =
    "numRestarts,lastCheckpointCompletedTimestamp,totalNumberOfCheckpoints";

/// The Flink job id of run `run_id` of `job` for the installation whose id is `salt`
/// ([`crate::store::Blocking::installation_id`]): 32 hex digits.
pub fn job_id(salt: &str, job: &str, run_id: i64) -> String {
    super::cluster::run_token(salt, job, run_id)
}

/// The reason of a FAILED job: its exception on the first line (so a reason shown as one line
/// still says what failed), then the rest of the root-cause chain `summary`.
pub fn failed_reason(jid: &str, summary: &str) -> String {
    if summary.is_empty() {
        format!("flink job {jid} FAILED")
    } else {
        format!("flink job {jid} FAILED: {summary}")
    }
}

/// The key of an env holding its Flink cluster.
pub const SECTION: &str = "flink";
/// What an env on this engine without [`SECTION`] needs, for messages.
pub const MISSING: &str = "uses engine flink and needs `flink: {url: http://...:8081}`";

/// `flink:` of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkSettings {
    /// REST URL of the JobManager.
    pub url: String,
    /// Where savepoints go.
    pub savepoint_dir: Option<String>,
    /// A pre-built SQL runner jar; `None`: the runner is built from its source (needs a JDK).
    pub sql_runner: Option<std::path::PathBuf>,
}

/// Reads the `flink:` block `n` of an env (`section` in messages); problems go to `c`.
pub fn read_settings(c: &mut Checker, n: &Node, section: &str) -> Option<FlinkSettings> {
    let f = c.mapping(n, section, &["url", "savepoint_dir", "sql_runner"])?;
    let url = c.required_string(
        &f,
        "url",
        &format!("{section}.url"),
        "the JobManager's REST URL, e.g. `http://flink-jm:8081`",
    );
    if let (Some(u), Some(uv)) = (&url, f.get("url"))
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        c.error(
            uv,
            format!("`{section}.url`: `{u}` must start with `http://` or `https://`"),
        );
    }
    let savepoint_dir = f
        .get("savepoint_dir")
        .and_then(|s| c.string(s, &format!("{section}.savepoint_dir")));
    let sql_runner = f.get("sql_runner").and_then(|s| {
        let p = c.string(s, &format!("{section}.sql_runner"))?;
        if !p.starts_with('/') {
            c.error(
                s,
                format!("`{section}.sql_runner`: `{p}` must be an absolute path to a jar"),
            );
        }
        Some(std::path::PathBuf::from(p))
    });
    Some(FlinkSettings {
        url: url?,
        savepoint_dir,
        sql_runner,
    })
}

/// An Apache Flink session cluster.
pub struct FlinkEngine {
    /// REST base URL, without a trailing `/`.
    base: String,
    /// `targetDirectory` of savepoints (else the cluster's `execution.checkpointing.savepoint-dir`).
    savepoint_dir: Option<String>,
    /// Makes job ids unique to one daemon (its state folder).
    salt: String,
    /// The HTTP client.
    http: reqwest::Client,
    /// Artifact digest → jar id on this cluster.
    jars: Mutex<HashMap<String, String>>,
    /// One upload at a time, so jobs sharing an artifact upload it once.
    upload: tokio::sync::Mutex<()>,
    /// The cluster's Flink version, once read.
    version: Mutex<Option<FlinkVersion>>,
    /// True until the version is read, and again after the cluster did not answer.
    version_stale: AtomicBool,
    /// SPNEGO, for a JobManager behind a gateway that demands it ([`negotiate`]).
    negotiator: Option<std::sync::Arc<negotiate::Negotiator>>,
}

impl FlinkEngine {
    /// An engine for the cluster of `settings`; `salt` makes its job ids unique to this daemon
    /// (the state folder is a good one).
    pub fn new(settings: &FlinkSettings, salt: &str) -> Result<FlinkEngine, EngineError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| EngineError::Other(format!("http client: {e}")))?;
        Ok(FlinkEngine {
            base: settings.url.trim_end_matches('/').to_string(),
            savepoint_dir: settings.savepoint_dir.clone(),
            salt: salt.to_string(),
            http,
            jars: Mutex::new(HashMap::new()),
            upload: tokio::sync::Mutex::new(()),
            version: Mutex::new(None),
            version_stale: AtomicBool::new(true),
            negotiator: None,
        })
    }

    /// This engine answering a JobManager that demands SPNEGO with tokens from `source`.
    pub fn with_spnego(mut self, source: std::sync::Arc<dyn negotiate::TokenSource>) -> Self {
        let host = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        self.negotiator = Some(std::sync::Arc::new(negotiate::Negotiator::new(
            source, &host,
        )));
        self
    }

    /// SPNEGO tokens made for this JobManager so far.
    pub fn handshakes(&self) -> u64 {
        self.negotiator
            .as_ref()
            .map_or(0, |n| n.handshakes.load(Ordering::Relaxed))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns the status and the JSON body (`Null` when not JSON).
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, Value), EngineError> {
        let resp = match &self.negotiator {
            Some(n) => n.send(req, |e| self.unreachable(e)).await?,
            None => req.send().await.map_err(|e| self.unreachable(&e))?,
        };
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    fn unreachable(&self, e: &reqwest::Error) -> EngineError {
        self.version_stale.store(true, Ordering::Relaxed);
        unreachable(&format!("flink {}", self.base), e)
    }

    /// GET that must answer 200.
    async fn get(&self, path: &str) -> Result<Value, EngineError> {
        let (status, body) = self.call(self.http.get(self.url(path))).await?;
        if status.is_success() {
            Ok(body)
        } else if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
            // 502/503/504: a proxy or a JobManager still starting.
            Err(EngineError::Unreachable(format!(
                "flink {}: GET {path} answered {status}",
                self.base
            )))
        } else {
            Err(EngineError::Other(format!(
                "flink GET {path} answered {status}: {}",
                error_text(&body, &body.to_string())
            )))
        }
    }

    /// Every job the cluster knows, in any state (one `GET /jobs/overview`).
    pub async fn overview(&self) -> Result<Vec<ClusterJob>, EngineError> {
        Ok(overview_jobs(&self.overview_body().await?))
    }

    /// The answer of `GET /jobs/overview`.
    async fn overview_body(&self) -> Result<Value, EngineError> {
        let body = self.get("/jobs/overview").await?;
        self.refresh_version().await;
        Ok(body)
    }

    /// Every job the cluster knows: id → state.
    pub async fn jobs(&self) -> Result<HashMap<String, String>, EngineError> {
        Ok(self
            .overview()
            .await?
            .into_iter()
            .map(|j| (j.engine_id, j.state))
            .collect())
    }

    /// The status of each handle among the cluster's `jobs` (id → state).
    async fn statuses(
        &self,
        jobs: &HashMap<String, String>,
        handles: &[RunHandle],
    ) -> Vec<RunStatus> {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(match jobs.get(&h.engine_id).map(String::as_str) {
                None => RunStatus::Vanished,
                Some("FINISHED") => RunStatus::Succeeded,
                Some("FAILED") => RunStatus::Failed(self.failure_reason(&h.engine_id).await),
                Some("CANCELED") => RunStatus::CancelledOutside(format!(
                    "flink job {} canceled outside jobkeeper",
                    h.engine_id
                )),
                // Alive, or on its way to an end the next sweep sees.
                Some(_) => RunStatus::Running,
            });
        }
        out
    }

    /// What the cluster tells of the jar, entry class and args `job` was started with, into
    /// `d` ([`origin`]): from an application-mode config, else by matching the uploaded jars.
    async fn describe_origin(
        &self,
        job: &ClusterJob,
        d: &mut JobDetails,
    ) -> Result<(), EngineError> {
        let jid = &job.engine_id;
        let path = format!("/jobs/{jid}/jobmanager/config");
        let (status, body) = self.call(self.http.get(self.url(&path))).await?;
        let app = if status.is_success() {
            origin::application(&body)
        } else {
            origin::Application::default()
        };
        if let Some(c) = app.main_class {
            d.main_class = Some(c);
            d.notes.push(
                "main_class: from the cluster's application config \
                 (`$internal.application.main`); check it"
                    .into(),
            );
        }
        if let Some(args) = app.args {
            d.args = Some(args);
            d.notes.retain(|n| !n.starts_with("args:"));
            d.notes.push(
                "args: from the cluster's application config \
                 (`$internal.application.program-args`); check them"
                    .into(),
            );
        }
        if d.args.is_none() {
            d.args_missing = Some(
                "the job's program arguments: they could not be read from Flink, which keeps no \
                 args of a job run through its REST API or CLI"
                    .into(),
            );
        }
        let (status, listed) = self.call(self.http.get(self.url("/jars"))).await?;
        let jars = if status.is_success() {
            origin::uploaded(&listed)
        } else {
            Vec::new()
        };
        let operators: Vec<String> = match self.get(&format!("/jobs/{jid}")).await {
            Ok(body) => job_vertices(&body).into_iter().map(|v| v.name).collect(),
            Err(_) => Vec::new(),
        };
        let found = origin::match_jar(&job.name, &operators, job.since_ms, &app.jars, &jars);
        let (jar, how) = match found {
            origin::JarMatch::Found { jar, how } => (jar, how),
            origin::JarMatch::Several(jars) => {
                if d.main_class.is_none() {
                    let list: Vec<String> =
                        jars.iter().map(origin::UploadedJar::describe).collect();
                    d.main_class_missing = Some(format!(
                        "the entry class of the jar the job was started from, which Flink does \
                         not record; the jars uploaded before it started that fit: {}",
                        list.join("; ")
                    ));
                }
                return Ok(());
            }
            origin::JarMatch::None => {
                if d.main_class.is_none() {
                    d.main_class_missing = Some(
                        "the job's entry class: Flink does not record it, and the cluster holds \
                         no jar uploaded before the job started"
                            .into(),
                    );
                }
                return Ok(());
            }
        };
        d.jar = Some(jar.name.clone());
        if d.main_class.is_some() {
            return Ok(());
        }
        match jar.entries.as_slice() {
            [entry] => {
                d.main_class = Some(entry.clone());
                d.notes.push(format!(
                    "main_class: the entry class of {}, {how}; check it",
                    jar.name
                ));
            }
            [] => {
                d.main_class_missing = Some(format!(
                    "the job's entry class: its jar {} names none in its manifest, and Flink does \
                     not record the class a job was run with",
                    jar.name
                ));
            }
            several => {
                d.main_class_missing = Some(format!(
                    "the job's entry class, one of those its jar {} names: {}",
                    jar.name,
                    several.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The jar id of an artifact on this cluster, uploading it when the cluster lacks it.
    async fn jar_for(&self, artifact: &Path, digest: &str) -> Result<String, EngineError> {
        let _one = self.upload.lock().await;
        let stem = artifact
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into());
        let short = digest.get(..12).unwrap_or(digest);
        let name = format!("{stem}-{short}.jar");
        let listed = self.get("/jars").await?;
        let files: Vec<(String, String)> = listed["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["id"].as_str()?.into(), f["name"].as_str()?.into())))
            .collect();
        let remembered = lock(&self.jars).get(digest).cloned();
        if let Some(id) = remembered
            && files.iter().any(|(i, _)| *i == id)
        {
            return Ok(id);
        }
        // Uploaded by a previous daemon: its name carries the digest.
        if let Some((id, _)) = files.iter().find(|(_, n)| *n == name) {
            lock(&self.jars).insert(digest.to_string(), id.clone());
            return Ok(id.clone());
        }
        let bytes = tokio::fs::read(artifact).await.map_err(|e| {
            EngineError::Refused(format!("cannot read the jar {}: {e}", artifact.display()))
        })?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("application/x-java-archive")
            .map_err(|e| EngineError::Other(e.to_string()))?;
        let form = reqwest::multipart::Form::new().part("jarfile", part);
        // reqwest sends no `Expect: 100-continue`, which Flink's upload handler rejects.
        let req = self
            .http
            .post(self.url("/jars/upload"))
            .timeout(UPLOAD_TIMEOUT)
            .multipart(form);
        let (status, body) = self.call(req).await?;
        let filename = body["filename"].as_str().unwrap_or_default();
        if !status.is_success() || filename.is_empty() {
            return Err(EngineError::Refused(format!(
                "flink refused the jar upload ({status}): {}",
                error_text(&body, &body.to_string())
            )));
        }
        let id = filename.rsplit('/').next().unwrap_or(filename).to_string();
        tracing::info!(cluster = %self.base, jar = %id, "uploaded jar");
        lock(&self.jars).insert(digest.to_string(), id.clone());
        Ok(id)
    }

    /// Why a FAILED job failed: the first line and `Caused by:` lines of the failure cause in
    /// its execution result (kept once the job has ended), else of its latest exception.
    async fn failure_reason(&self, jid: &str) -> String {
        if let Ok(body) = self.get(&format!("/jobs/{jid}/execution-result")).await
            && let Some(t) = execution_failure(&body)
        {
            return failed_reason(jid, &summarize_trace(t));
        }
        let body = match self.get(&format!("/jobs/{jid}/exceptions")).await {
            Ok(b) => b,
            Err(e) => return format!("flink job {jid} FAILED (no exception: {e})"),
        };
        let entry = &body["exceptionHistory"]["entries"][0];
        let trace = version::latest_trace(&body);
        match trace {
            Some(t) => failed_reason(jid, &summarize_trace(t)),
            None => match entry["exceptionName"].as_str() {
                Some(name) => format!(
                    "flink job {jid} FAILED: {name}: {}",
                    entry["exceptionMessage"].as_str().unwrap_or_default()
                ),
                None => format!("flink job {jid} FAILED"),
            },
        }
    }

    /// [`Self::failure_reason`] of a job that has just failed: its execution result and
    /// exception history may lag its state by a moment, so they are asked again (for up to
    /// 20 s) while they hold nothing.
    async fn settled_reason(&self, jid: &str) -> String {
        let bare = format!("flink job {jid} FAILED");
        // Flink files a failed job's result a little after the job shows FAILED (its result
        // is "IN_PROGRESS" until the job master has let the job go); on a busy host that has
        // taken more than 5 s.
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reason = self.failure_reason(jid).await;
            if reason != bare || tokio::time::Instant::now() >= until {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the job is no longer live (or unknown), at most `limit`.
    async fn wait_ended(&self, jid: &str, limit: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let state = self.jobs().await?.remove(jid);
            if state.as_ref().is_none_or(|s| !is_live(s)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Other(format!(
                    "flink job {jid} still {} after {}",
                    state.unwrap_or_default(),
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A running job's health figures and its newest externally addressable completed
    /// checkpoint (or savepoint), from one `GET /jobs/{id}/metrics` (Flink refreshes metrics
    /// every `metrics.fetcher.update-interval`, 10 s by default). `started_ms` is when it
    /// started.
    pub async fn figures(
        &self,
        handle: &RunHandle,
        started_ms: i64,
    ) -> Result<(HealthFacts, Option<StatePoint>), EngineError> {
        let path = format!(
            "/jobs/{}/metrics?get={HEALTH_METRICS},lastCheckpointExternalPath",
            handle.engine_id
        );
        let body = self.get(&path).await?;
        Ok((
            health_facts(&body, started_ms),
            answers::checkpoint_metric(&body),
        ))
    }

    /// A job's task count (`tasks.total` of its `GET /jobs/overview` entry; one request):
    /// `None` when the JobManager does not list it.
    pub async fn job_tasks(&self, jid: &str) -> Result<Option<u64>, EngineError> {
        let body = self.get("/jobs/overview").await?;
        Ok(overview_tasks(&body).get(jid).copied())
    }

    /// A job's checkpoint statistics (one `GET /jobs/{id}/checkpoints`).
    pub async fn checkpoint_stats(&self, jid: &str) -> Result<Value, EngineError> {
        self.get(&format!("/jobs/{jid}/checkpoints")).await
    }

    /// A job's checkpoint configuration (one `GET /jobs/{id}/checkpoints/config`): `None` when
    /// Flink answers 404 (checkpointing is not enabled for it).
    pub async fn checkpoint_config(&self, jid: &str) -> Result<Option<Value>, EngineError> {
        let path = format!("/jobs/{jid}/checkpoints/config");
        let (status, body) = self.call(self.http.get(self.url(&path))).await?;
        match status {
            s if s.is_success() => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(EngineError::Unreachable(format!(
                "flink {}: GET {path} answered {s}",
                self.base
            ))),
        }
    }

    /// The newest externally addressable checkpoint or savepoint of an ended job: where a run
    /// of it starts from when its own stop or failure was not recorded.
    async fn last_state_point(&self, jid: &str) -> Result<Option<StatePoint>, EngineError> {
        let path = format!("/jobs/{jid}/checkpoints");
        let (status, body) = self.call(self.http.get(self.url(&path))).await?;
        if !status.is_success() {
            return Ok(None);
        }
        Ok(answers::newest_state_point(&body))
    }

    /// Waits, when job `jid` ended within the cluster's `refresh-interval` (`GET /config`), until
    /// that interval has passed since its end: Flink serves checkpoint statistics from a cache
    /// that old (`rest.cache.checkpoint-statistics.timeout` defaults to it), so a read right
    /// after a cancel may miss the checkpoint completed last, whose predecessor Flink has then
    /// already deleted. At most [`STATS_SETTLE_MAX`]; a cluster that does not say is not waited for.
    async fn wait_stats_settled(&self, jid: &str) {
        let Ok(Some(job)) = self.overview_job(jid).await else {
            return;
        };
        let Some(ended) = job["end-time"].as_i64().filter(|t| *t > 0) else {
            return;
        };
        let refresh = match self.get("/config").await {
            Ok(c) => c["refresh-interval"].as_i64().unwrap_or(0),
            Err(_) => return,
        };
        let settled = ended.saturating_add(refresh).saturating_add(100);
        let wait = settled.saturating_sub(chrono::Utc::now().timestamp_millis());
        if wait > 0 {
            let wait = Duration::from_millis(wait.unsigned_abs()).min(STATS_SETTLE_MAX);
            tracing::debug!(job = %jid, "waiting {wait:?} for flink's checkpoint statistics to settle");
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether an ended job's checkpoints outlived its cancellation: its checkpoint config says
    /// they are externalized and not deleted on cancellation.
    async fn retained_on_cancel(&self, jid: &str) -> Result<bool, EngineError> {
        let path = format!("/jobs/{jid}/checkpoints/config");
        let (status, body) = self.call(self.http.get(self.url(&path))).await?;
        Ok(status.is_success() && answers::retains_on_cancel(&body))
    }

    /// What a stop of an already ended job leaves: the savepoint its earlier stop took.
    async fn already_stopped(&self, jid: &str) -> Result<StopOutcome, EngineError> {
        let savepoint = match self.jobs().await?.get(jid).map(String::as_str) {
            Some("FINISHED") => self.last_state_point(jid).await?.map(|p| p.location),
            _ => None,
        };
        Ok(StopOutcome { savepoint })
    }

    /// True when the cluster does not know the job or it has ended.
    async fn ended(&self, jid: &str) -> Result<bool, EngineError> {
        Ok(self.jobs().await?.get(jid).is_none_or(|s| !is_live(s)))
    }
    /// A job's entry in `GET /jobs/overview` (state and task counts), `None` when unknown.
    async fn overview_job(&self, jid: &str) -> Result<Option<serde_json::Value>, EngineError> {
        let body = self.get("/jobs/overview").await?;
        Ok(body["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["jid"] == jid).cloned()))
    }

    /// Waits until every task of a live job runs (or finished: a source subtask left without
    /// a split after an upscale ends, and Flink still takes savepoints of the job), at most
    /// `limit` (then goes on: the savepoint will say what is wrong).
    async fn wait_tasks_running(&self, jid: &str, limit: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let job = self.overview_job(jid).await?;
            let ready = job.is_none_or(|j| {
                !is_live(j["state"].as_str().unwrap_or_default())
                    || (j["state"] == "RUNNING" && tasks_up(&j))
            });
            if ready || tokio::time::Instant::now() >= until {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One stop-with-savepoint: trigger, then poll until the savepoint is done.
    async fn savepoint_and_stop(&self, jid: &str) -> Result<StopOutcome, EngineError> {
        let body = version::stop_body(self.savepoint_dir.as_deref());
        let post = self
            .http
            .post(self.url(&format!("/jobs/{jid}/stop")))
            .json(&body);
        let (status, answer) = self.call(post).await?;
        let Some(request) = answer["request-id"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            if self.ended(jid).await? {
                return self.already_stopped(jid).await; // nothing left to stop
            }
            return Err(EngineError::Other(format!(
                "flink refused to stop job {jid} with a savepoint ({status}): {}",
                error_text(&answer, &answer.to_string())
            )));
        };
        let until = tokio::time::Instant::now() + SAVEPOINT_TIMEOUT;
        loop {
            let op = self
                .get(&format!("/jobs/{jid}/savepoints/{request}"))
                .await?;
            if op["status"]["id"] == "COMPLETED" {
                if let Some(location) = op["operation"]["location"].as_str() {
                    self.wait_ended(jid, Duration::from_secs(30)).await?;
                    return Ok(StopOutcome {
                        savepoint: Some(location.to_string()),
                    });
                }
                let cause = op["operation"]["failure-cause"]["stack-trace"]
                    .as_str()
                    .map(summarize_trace)
                    .unwrap_or_else(|| op["operation"].to_string());
                return Err(EngineError::Other(format!(
                    "savepoint of flink job {jid} failed: {cause}"
                )));
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Other(format!(
                    "savepoint of flink job {jid} not done after {}",
                    humantime::format_duration(SAVEPOINT_TIMEOUT)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait::async_trait]
impl Engine for FlinkEngine {
    fn kind(&self) -> super::EngineKind {
        super::EngineKind::Flink
    }

    fn location(&self) -> String {
        format!("flink cluster {}", self.base)
    }

    /// A SQL job's planner error names the statement and its line: placed in the job file.
    fn place_refusal(&self, spec: &crate::spec::JobSpec, reason: &str) -> Option<String> {
        crate::spec::place_flink_error(spec.sql.as_ref()?, reason)
    }

    fn cluster(&self) -> Option<String> {
        Some(self.base.clone())
    }

    fn elsewhere(&self, cluster: &str) -> Option<std::sync::Arc<dyn Engine>> {
        let settings = FlinkSettings {
            url: cluster.to_string(),
            savepoint_dir: self.savepoint_dir.clone(),
            sql_runner: None,
        };
        let engine = FlinkEngine::new(&settings, &self.salt).ok()?;
        Some(std::sync::Arc::new(engine))
    }

    async fn probe(&self) -> Result<(), EngineError> {
        self.read_version().await.map(|_| ())
    }

    fn version(&self) -> Option<String> {
        lock(&self.version).as_ref().map(ToString::to_string)
    }

    async fn preflight(&self, req: &SubmitRequest) -> Result<(), EngineError> {
        require_jar("flink", req)
    }

    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError> {
        self.preflight(&req).await?;
        let artifact = req.artifact.clone().unwrap_or_default();
        let digest = match &req.digest {
            Some(d) => d.clone(),
            None => {
                let bytes = tokio::fs::read(&artifact)
                    .await
                    .map_err(|e| EngineError::Refused(format!("cannot read the jar: {e}")))?;
                hex::encode(Sha256::digest(&bytes))
            }
        };
        self.refresh_version().await;
        let v = self.checked_version()?;
        let jar = self.jar_for(&artifact, &digest).await?;
        let jid = job_id(&self.salt, &req.job, req.run_id);
        let mut conf: serde_json::Map<String, Value> = req
            .params
            .conf
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        conf.entry(RETENTION_KEY)
            .or_insert_with(|| Value::String(RETENTION_DEFAULT.into()));
        identity::stamp(&mut conf, &req.job, req.run_id);
        let mut body = json!({
            "programArgsList": req.params.args,
            "jobId": jid,
            "allowNonRestoredState": req.params.conf.get(IGNORE_UNCLAIMED_STATE).is_some_and(|v| v == "true"),
            "flinkConfiguration": conf,
        });
        if let Some(c) = &req.params.main_class {
            body["entryClass"] = json!(c);
        }
        if let Some(p) = req.params.parallelism {
            body["parallelism"] = json!(p);
        }
        if let Some(sp) = &req.restore {
            body["savepointPath"] = json!(sp);
            let fields = version::restore_fields(v.as_ref(), &req.params.conf)
                .map_err(EngineError::Refused)?;
            if let Some(b) = body.as_object_mut() {
                b.extend(fields);
            }
        }
        let post = self
            .http
            .post(self.url(&format!("/jars/{jar}/run")))
            .timeout(RUN_TIMEOUT)
            .json(&body);
        let (status, answer) = self.call(post).await?;
        let duplicate = !status.is_success() && duplicate_submission(&answer);
        let note = match (&req.restore, status.is_success()) {
            _ if duplicate => format!(
                "{} already has job {jid} of this run (it was submitted before): tracking it\n",
                self.base
            ),
            (Some(sp), true) => format!("submitted to {} as job {jid} from {sp}\n", self.base),
            (None, true) => format!("submitted to {} as job {jid}\n", self.base),
            (_, false) => format!(
                "{} refused the job ({status}):\n{}\n",
                self.base,
                error_text(&answer, &answer.to_string())
            ),
        };
        write_log(
            &req.log_path,
            &crate::spec::mask_secrets(&note, &req.secrets),
        )
        .await;
        if duplicate {
            // The run's job id is taken: this run's job runs (or ran) there. Tracked as it is,
            // never as a refusal and never submitted under another id.
            tracing::info!(job = %req.job, run = req.run_id, id = %jid, "the cluster already has this run's job: tracking it");
            return Ok(RunHandle {
                run_id: req.run_id,
                engine_id: jid,
                start_ticks: None,
                cluster: Some(self.base.clone()),
            });
        }
        if status == StatusCode::BAD_REQUEST || status == StatusCode::INTERNAL_SERVER_ERROR {
            return Err(EngineError::Refused(format!(
                "flink refused the job ({status}): {}",
                error_text(&answer, &answer.to_string())
            )));
        }
        if !status.is_success() {
            // 502/503/504 and the like: the job may or may not exist; the caller looks it up.
            return Err(EngineError::Unreachable(format!(
                "flink {}: run answered {status}",
                self.base
            )));
        }
        let id = answer["jobid"].as_str().unwrap_or(&jid).to_string();
        Ok(RunHandle {
            run_id: req.run_id,
            engine_id: id,
            start_ticks: None,
            cluster: Some(self.base.clone()),
        })
    }

    async fn wait_started(&self, handle: &RunHandle, limit: Duration) -> Result<(), EngineError> {
        let jid = handle.engine_id.as_str();
        let until = tokio::time::Instant::now() + limit;
        loop {
            let job = self.overview_job(jid).await?;
            let state = job
                .as_ref()
                .and_then(|j| j["state"].as_str())
                .unwrap_or_default();
            match state {
                "RUNNING"
                    if job
                        .as_ref()
                        .is_some_and(|j| j["tasks"]["running"] == j["tasks"]["total"]) =>
                {
                    return Ok(());
                }
                // Ended another way (cancelled outside jobkeeper, say): the health sweep sees it.
                "FINISHED" | "CANCELLING" | "CANCELED" => return Ok(()),
                // FAILING ends FAILED (or RESTARTING) in a moment: its reason is kept in the
                // failed job's execution result, which a cancel now would leave without one.
                "FAILED" | "RESTARTING" => {
                    if state == "RESTARTING" {
                        // Flink's own restart strategy would try again and again: stop it.
                        let req = self
                            .http
                            .patch(self.url(&format!("/jobs/{jid}")))
                            .query(&[("mode", "cancel")]);
                        self.call(req).await?;
                        self.wait_ended(jid, Duration::from_secs(30)).await?;
                    }
                    return Err(EngineError::Refused(self.settled_reason(jid).await));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= until {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError> {
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = self.jobs().await?;
        Ok(self.statuses(&jobs, handles).await)
    }

    async fn survey(&self, handles: &[RunHandle]) -> Result<Survey, EngineError> {
        let body = self.overview_body().await?;
        let all = overview_jobs(&body);
        let tasks = overview_tasks(&body);
        let tasks = handles
            .iter()
            .map(|h| tasks.get(&h.engine_id).copied())
            .collect();
        let states: HashMap<String, String> = all
            .iter()
            .map(|j| (j.engine_id.clone(), j.state.clone()))
            .collect();
        let statuses = self.statuses(&states, handles).await;
        // A job being cancelled is on its way out: not counted as running.
        let live = all
            .into_iter()
            .filter(|j| is_live(&j.state) && j.state != "CANCELLING")
            .collect();
        Ok(Survey {
            statuses,
            live: Some(live),
            tasks,
        })
    }

    async fn vertices(&self, handle: &RunHandle) -> Result<Vec<Vertex>, EngineError> {
        let body = self.get(&format!("/jobs/{}", handle.engine_id)).await?;
        Ok(job_vertices(&body))
    }

    /// Flink's default scheduler answers 500 ("does not support changing the parallelism"):
    /// nothing requested beyond what runs.
    async fn requested_parallelism(
        &self,
        handle: &RunHandle,
    ) -> Result<HashMap<String, u32>, EngineError> {
        let path = format!("/jobs/{}/resource-requirements", handle.engine_id);
        let (status, body) = self.call(self.http.get(self.url(&path))).await?;
        if !status.is_success() {
            return Ok(HashMap::new());
        }
        Ok(requested_parallelism(&body))
    }

    async fn describe(&self, job: &ClusterJob) -> Result<JobDetails, EngineError> {
        let jid = &job.engine_id;
        let config = self.get(&format!("/jobs/{jid}/config")).await?;
        let mut d = JobDetails::default();
        let exec = &config["execution-config"];
        d.parallelism = exec["job-parallelism"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let user = exec["user-config"].as_object();
        if let Some((owner, run)) = user.and_then(identity::read) {
            d.notes.push(format!(
                "submitted by a jobkeeper daemon as job `{owner}` (run {run}); adopting it here \
                 takes it from that daemon"
            ));
        }
        // Global job parameters (a ParameterTool the job registered) are its program args;
        // the ones jobkeeper adds to identify its submissions are not.
        let theirs: Vec<(&String, &Value)> = user
            .into_iter()
            .flatten()
            .filter(|(k, _)| !identity::is_ours(k))
            .collect();
        if !theirs.is_empty() {
            let mut args = Vec::new();
            for (k, v) in theirs {
                args.push(format!("--{k}"));
                args.push(v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
            d.args = Some(args);
            d.notes
                .push("args: read from the job's global parameters; check them".into());
        }
        let (status, cp) = self
            .call(
                self.http
                    .get(self.url(&format!("/jobs/{jid}/checkpoints/config"))),
            )
            .await?;
        if status.is_success()
            && let Some(ms) = cp["interval"]
                .as_u64()
                .filter(|ms| *ms > 0 && *ms < i64::MAX as u64)
        {
            let interval = humantime::format_duration(Duration::from_millis(ms)).to_string();
            d.conf.insert(
                "execution.checkpointing.interval".into(),
                interval.replace(' ', ""),
            );
        }
        self.describe_origin(job, &mut d).await?;
        Ok(d)
    }

    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), EngineError> {
        let jid = &handle.engine_id;
        let req = self
            .http
            .patch(self.url(&format!("/jobs/{jid}")))
            .query(&[("mode", "cancel")]);
        let (status, body) = self.call(req).await?;
        if !status.is_success() && status != StatusCode::NOT_FOUND && !self.ended(jid).await? {
            return Err(EngineError::Other(format!(
                "flink could not cancel job {jid} ({status}): {}",
                error_text(&body, &body.to_string())
            )));
        }
        self.wait_ended(jid, grace.max(Duration::from_secs(30)))
            .await
    }

    async fn stop_with_savepoint(
        &self,
        handle: &RunHandle,
        _grace: Duration,
    ) -> Result<StopOutcome, EngineError> {
        let jid = &handle.engine_id;
        // A savepoint needs every task running: a job just (re)started may still be deploying.
        self.wait_tasks_running(jid, TASKS_WAIT).await?;
        let mut attempt = 1;
        loop {
            match self.savepoint_and_stop(jid).await {
                Err(EngineError::Other(e)) if attempt < SAVEPOINT_ATTEMPTS => {
                    if self.ended(jid).await? {
                        return self.already_stopped(jid).await;
                    }
                    tracing::warn!(job = %jid, attempt, "savepoint failed, trying again: {e}");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.wait_tasks_running(jid, TASKS_WAIT).await?;
                }
                r => return r,
            }
        }
    }

    async fn savepoint(&self, handle: &RunHandle) -> Result<StatePoint, EngineError> {
        self.take_savepoint(&handle.engine_id).await
    }

    async fn dispose_savepoint(&self, location: &str) -> Result<(), EngineError> {
        self.dispose(location).await
    }

    /// The newest completed checkpoint in `GET /jobs/{id}/checkpoints`, when it completed within
    /// `max_age` and `GET /jobs/{id}/checkpoints/config` says checkpoints outlive a cancel.
    async fn last_state(
        &self,
        handle: &RunHandle,
        max_age: Duration,
    ) -> Result<Option<StatePoint>, EngineError> {
        let jid = &handle.engine_id;
        if !self.retained_on_cancel(jid).await? {
            tracing::info!(job = %jid, "checkpoints are not retained on cancellation: a savepoint instead");
            return Ok(None);
        }
        let Some(point) = self.last_state_point(jid).await? else {
            return Ok(None);
        };
        let max_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let young = point
            .taken_ms
            .is_some_and(|t| chrono::Utc::now().timestamp_millis().saturating_sub(t) <= max_ms);
        Ok(young.then_some(point))
    }

    async fn restore_point(&self, handle: &RunHandle) -> Result<StateLeft, EngineError> {
        // A FAILED job keeps its checkpoints; a FINISHED one was stopped with a savepoint (by a
        // daemon that may have been killed before recording it); a CANCELED one keeps them when
        // its retention says so (RETENTION_DEFAULT, unless `params.conf` set another).
        let jid = &handle.engine_id;
        let state = self.jobs().await?.remove(jid);
        let kept = match state.as_deref() {
            Some("FAILED" | "FINISHED") => true,
            Some("CANCELED") => self.retained_on_cancel(jid).await?,
            Some(s) => return Ok(StateLeft::Nothing(format!("flink job {jid} is {s}"))),
            None => {
                let why = format!("flink job {jid} is no longer known to the cluster");
                return Ok(StateLeft::Nothing(why));
            }
        };
        if !kept {
            return Ok(StateLeft::Nothing(format!(
                "flink job {jid} was cancelled and its checkpoints were deleted with it, \
                 as `{RETENTION_KEY}` is not {RETENTION_DEFAULT}"
            )));
        }
        self.wait_stats_settled(jid).await;
        Ok(match self.last_state_point(jid).await? {
            Some(p) => StateLeft::Point(p),
            None => StateLeft::Nothing(format!(
                "flink job {jid} completed no checkpoint a run can start from"
            )),
        })
    }

    fn engine_id_for(&self, job: &str, run_id: i64) -> Option<String> {
        Some(job_id(&self.salt, job, run_id))
    }

    /// One `GET /jobs/{id}/metrics` per run (restarts and the latest checkpoint in one answer),
    /// all at once. The runs' start times come from `live` (the sweep's own
    /// `GET /jobs/overview`), or from one more `GET /jobs/overview` when it is not given.
    async fn health(
        &self,
        handles: &[RunHandle],
        live: Option<&[ClusterJob]>,
    ) -> Result<Vec<Option<HealthFacts>>, EngineError> {
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let asked;
        let live = match live {
            Some(live) => live,
            None => {
                asked = overview_jobs(&self.get("/jobs/overview").await?);
                &asked
            }
        };
        let started: HashMap<&str, i64> = live
            .iter()
            .filter_map(|j| Some((j.engine_id.as_str(), j.since_ms?)))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for (i, h) in handles.iter().enumerate() {
            let Some(&started_ms) = started.get(h.engine_id.as_str()) else {
                continue;
            };
            let (http, negotiator, url) = (
                self.http.clone(),
                self.negotiator.clone(),
                self.url(&format!(
                    "/jobs/{}/metrics?get={HEALTH_METRICS}",
                    h.engine_id
                )),
            );
            calls.spawn(async move {
                let sent = match &negotiator {
                    Some(n) => n.send(http.get(url), |e| unreachable("flink", e)).await,
                    None => http
                        .get(url)
                        .send()
                        .await
                        .map_err(|e| unreachable("flink", &e)),
                };
                let body: Option<Value> = match sent {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    _ => None,
                };
                (i, body.map(|b| health_facts(&b, started_ms)))
            });
        }
        let mut out = vec![None; handles.len()];
        while let Some(done) = calls.join_next().await {
            if let Ok((i, facts)) = done {
                out[i] = facts;
            }
        }
        Ok(out)
    }

    async fn latest_checkpoint_ms(&self, handle: &RunHandle) -> Option<i64> {
        let body = self
            .get(&format!("/jobs/{}/checkpoints", handle.engine_id))
            .await
            .ok()?;
        completed_at(&body)
    }

    async fn run_output(&self, handle: &RunHandle, lines: usize) -> super::RunOutput {
        self.output(handle, lines).await
    }

    async fn root_exception(&self, handle: &RunHandle) -> Option<String> {
        let body = self
            .get(&format!("/jobs/{}/exceptions", handle.engine_id))
            .await
            .ok()?;
        version::latest_trace(&body).map(summarize_trace)
    }

    fn runs_survive_daemon(&self) -> bool {
        true
    }

    /// A recorded job is adopted. A run whose submit was in flight when the daemon stopped is
    /// looked up by the job id jobkeeper chose for it: adopted when the cluster has it or cannot
    /// say (never submitted twice), never started when the cluster does not know it.
    async fn recover(&self, run: &RecordedRun<'_>) -> Recovery {
        if let Some(h) = run.handle {
            tracing::info!(job = %run.job, run = run.run_id, id = %h.engine_id, "cluster run left running for its job to adopt");
            return Recovery::Adopt(h.clone());
        }
        let h = RunHandle {
            run_id: run.run_id,
            engine_id: job_id(&self.salt, run.job, run.run_id),
            start_ticks: None,
            cluster: Some(self.base.clone()),
        };
        // Not there yet (or not known): a submit held on its way may still arrive, so the run
        // is submitted again under its own id, never as a new run.
        match self.status(std::slice::from_ref(&h)).await {
            Ok(st) if st.first().is_some_and(|s| *s != RunStatus::Vanished) => Recovery::Adopt(h),
            _ => Recovery::Unconfirmed,
        }
    }

    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_32_hex_digits_and_differ_by_daemon_job_and_run() {
        let a = job_id("/var/lib/jobkeeper", "clicks", 7);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, job_id("/var/lib/jobkeeper", "clicks", 7));
        assert_ne!(a, job_id("/var/lib/jobkeeper", "clicks", 8));
        assert_ne!(a, job_id("/var/lib/jobkeeper", "views", 7));
        assert_ne!(a, job_id("/srv/jobkeeper", "clicks", 7));
    }

    #[test]
    fn a_trace_is_summarized_to_its_first_and_caused_by_lines() {
        let trace = "org.apache.flink.runtime.JobException: Recovery is suppressed\n\
                     \tat org.apache.flink.Foo.bar(Foo.java:1)\n\
                     \t... 3 more\n\
                     Caused by: java.lang.IllegalStateException: failing on purpose\n\
                     \tat example.Counter.map(Counter.java:9)\n";
        assert_eq!(
            summarize_trace(trace),
            "org.apache.flink.runtime.JobException: Recovery is suppressed\n\
             Caused by: java.lang.IllegalStateException: failing on purpose"
        );
        let long: String = (0..50).map(|i| format!("Caused by: E{i}\n")).collect();
        let s = summarize_trace(&format!("top\n{long}"));
        assert!(s.lines().count() <= REASON_LINES, "{s}");
        assert!(s.starts_with("top\n… ") && s.ends_with("E49"), "{s}");
        assert!(s.contains("lines left out"), "{s}");
        // A message of several lines is kept whole; a wrapper line does not hide the exception.
        let wrapped = "<Exception on server side:\n\
                       org.apache.flink.client.program.ProgramInvocationException: The main method caused an error: SQL parse failed.\n\
                       Encountered \"FROM\" at line 2, column 1.\n\
                       \tat a.b(C.java:1)\n\
                       Caused by: org.apache.flink.sql.parser.impl.ParseException: Encountered \"FROM\"\n\
                       \tat d.e(F.java:2)\n\
                       End of exception on server side>";
        assert_eq!(
            summarize_trace(wrapped),
            "<Exception on server side:\n\
             org.apache.flink.client.program.ProgramInvocationException: The main method caused an error: SQL parse failed.\n\
             Encountered \"FROM\" at line 2, column 1.\n\
             Caused by: org.apache.flink.sql.parser.impl.ParseException: Encountered \"FROM\""
        );
        // Capped by size too: the root cause at the end stays.
        let huge: String = (0..12)
            .map(|i| format!("Caused by: E{i}: {}\n", "x".repeat(700)))
            .collect();
        let s = summarize_trace(&format!("top\n{huge}Caused by: root cause\n"));
        assert!(s.chars().count() <= answers::REASON_CHARS, "{}", s.len());
        assert!(s.ends_with("Caused by: root cause"), "{s}");
    }

    #[test]
    fn a_failed_job_s_reason_names_its_exception_on_its_first_line() {
        let r = failed_reason(
            "abc",
            "org.apache.flink.runtime.JobException: Recovery is suppressed\nCaused by: boom",
        );
        assert_eq!(
            r,
            "flink job abc FAILED: org.apache.flink.runtime.JobException: Recovery is suppressed\n\
             Caused by: boom"
        );
        assert_eq!(failed_reason("abc", ""), "flink job abc FAILED");
    }

    #[test]
    fn health_facts_are_read_from_the_job_metrics_answer() {
        let body = json!([
            {"id": "lastCheckpointCompletedTimestamp", "value": "1796298334442"},
            {"id": "totalNumberOfCheckpoints", "value": "3"},
            {"id": "numRestarts", "value": "2"}
        ]);
        assert_eq!(
            health_facts(&body, 7),
            HealthFacts {
                restarts: 2,
                last_checkpoint_ms: Some(1_796_298_334_442),
                checkpoints: true,
                started_ms: 7
            }
        );
        // A job that does not checkpoint (Flink says -1 and no checkpoint was triggered).
        let body = json!([
            {"id": "lastCheckpointCompletedTimestamp", "value": "-1"},
            {"id": "totalNumberOfCheckpoints", "value": "0"},
            {"id": "numRestarts", "value": "0"}
        ]);
        let f = health_facts(&body, 7);
        assert!(!f.checkpoints && f.last_checkpoint_ms.is_none() && f.restarts == 0);
        // Nothing known (an empty answer): nothing unhealthy.
        assert_eq!(health_facts(&json!([]), 7).restarts, 0);
    }

    #[test]
    fn a_checkpoints_completion_time_is_read_from_the_checkpoint_stats() {
        let body = json!({"latest": {"completed": {"@class": "completed", "id": 4,
            "trigger_timestamp": 1_796_298_334_000_i64, "latest_ack_timestamp": 1_796_298_334_442_i64}}});
        assert_eq!(completed_at(&body), Some(1_796_298_334_442));
        // No checkpoint completed yet.
        assert_eq!(completed_at(&json!({"latest": {"completed": null}})), None);
        assert_eq!(completed_at(&json!({})), None);
    }

    #[test]
    fn task_counts_and_vertices_are_read_from_flink_answers() {
        let overview = json!({"jobs": [
            {"jid": "a", "state": "RUNNING", "tasks": {"total": 6, "running": 5}},
            {"jid": "b", "state": "RESTARTING", "tasks": {"total": 4}},
            {"jid": "c", "state": "RUNNING", "tasks": {"total": 0}},
            {"jid": "d", "state": "RUNNING"}
        ]});
        assert_eq!(overview_tasks(&overview), HashMap::from([("a".into(), 6)]));
        let job = json!({"jid": "a", "vertices": [
            {"id": "v1", "name": "Source: numbers", "parallelism": 1, "maxParallelism": 1},
            {"id": "v2", "name": "count -> Sink: Writer", "parallelism": 5, "maxParallelism": 128},
            {"name": "no id"}
        ]});
        assert_eq!(
            job_vertices(&job),
            vec![
                Vertex {
                    id: "v1".into(),
                    name: "Source: numbers".into(),
                    parallelism: 1,
                    max_parallelism: 1
                },
                Vertex {
                    id: "v2".into(),
                    name: "count -> Sink: Writer".into(),
                    parallelism: 5,
                    max_parallelism: 128
                }
            ]
        );
        assert!(job_vertices(&json!({"errors": ["nope"]})).is_empty());
        let requirements = json!({
            "v1": {"parallelism": {"lowerBound": 1, "upperBound": 2}},
            "v2": {"parallelism": {"lowerBound": 1}}
        });
        assert_eq!(
            requested_parallelism(&requirements),
            HashMap::from([("v1".into(), 2)])
        );
        assert!(requested_parallelism(&json!({"errors": ["nope"]})).is_empty());
    }

    #[test]
    fn error_answers_keep_their_errors_text() {
        let body = json!({"errors": ["org.apache.flink.X: Could not run\n\tat a.b(C.java:1)\nCaused by: java.lang.ClassNotFoundException: nope"]});
        assert_eq!(
            error_text(&body, ""),
            "org.apache.flink.X: Could not run\nCaused by: java.lang.ClassNotFoundException: nope"
        );
        assert_eq!(error_text(&Value::Null, "plain"), "plain");
    }

    #[test]
    fn a_taken_job_id_is_told_from_other_refusals_on_1_20_and_2_3() {
        // The causes' last lines of the answers 1.20.3 and 2.3.0 gave a repeated `jars/run`.
        let v1 = "RestHandlerException: Could not execute application.\n\tat x.y(Z.java:1)\nCaused by: org.apache.flink.runtime.client.DuplicateJobSubmissionException: Job has already been submitted.";
        let v2 = "RestHandlerException: Could not execute application.\nCaused by: org.apache.flink.runtime.client.DuplicateApplicationSubmissionException: Application has already been submitted.";
        assert!(duplicate_submission(&json!({"errors": [v1]})));
        assert!(duplicate_submission(&json!({"errors": [v2]})));
        let other = "Caused by: java.lang.ClassNotFoundException: example.Nope";
        assert!(!duplicate_submission(&json!({"errors": [other]})));
        assert!(!duplicate_submission(&Value::Null));
    }
}
