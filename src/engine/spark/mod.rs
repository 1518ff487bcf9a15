//! The `spark` engine: runs are drivers of one Apache Spark standalone cluster, submitted in
//! cluster mode through the master's REST submission server (tested against Spark 4.3.0).
//!
//! Owns submission (`POST /v1/submissions/create` with the artifact jar, main class, args,
//! `params.conf` as Spark properties and `params.environment` as the driver's environment),
//! status (one `GET /json/` of the master's web UI per call when `spark.ui` is set, else
//! `GET /v1/submissions/status/{id}` per driver), stop (`POST /v1/submissions/kill/{id}`, then
//! waiting until the driver ended) and failure reasons: the state the API gives, its message,
//! and the exception lines of the driver's stderr, read from the worker's web UI (`/log/`) when
//! `spark.ui` is set and the worker's UI answers.
//!
//! Spark chooses submission ids itself, so each create carries a Spark property of jobkeeper's,
//! `spark.jobkeeper.run`, set to a token unique to the daemon (its state folder), the job and
//! the run ([`run_token`]). The worker writes every property into the first line of the
//! driver's stderr (`Launch Command: ... -Dspark.jobkeeper.run=<token>`), so a create whose
//! answer was lost (timeout, connection cut after sending), or whose id a daemon killed at that
//! moment never recorded, is found exactly: among the master's live drivers of the run's main
//! class started since, the one whose stderr names the run's token. This needs `spark.ui` and
//! the workers' web UIs; without them such a create is reported unreachable (and a crashed
//! daemon's is not found).
//!
//! Each create also names its job and run id (`spark.jobkeeper.job`, `spark.jobkeeper.run_id`),
//! so the sweep can tell, from a live driver no run records, that it is this installation's
//! driver of a run that is not its job's live run ([`Engine::submitted_as`]) and kill it.
//!
//! Every request has a short timeout; a master that does not answer is
//! [`EngineError::Unreachable`], which callers treat as "wait and retry", never as a failed run.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub mod artifacts;
pub mod output;
mod settings;
pub mod workers;

pub use settings::{
    ArtifactSource, DaemonAddress, MISSING, SECTION, SparkSettings, check_reachable, read_settings,
};

use self::artifacts::Shelf;
use self::workers::Seen;
use super::cluster::run_token;
use super::cluster::{lock, require_jar, unreachable, write_log};
use super::{
    ClusterJob, Engine, EngineError, JobDetails, NEVER_STARTED, RecordedRun, Recovery, RunExit,
    RunHandle, RunStatus, SubmitRequest, Survey,
};

/// Connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a plain REST call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a stopping driver is looked at.
const POLL: Duration = Duration::from_millis(200);
/// How long a killed driver may take to end.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// At most this many lines of the driver's stderr go into a reason.
const REASON_LINES: usize = 20;
/// How much of the end of the driver's stderr is read.
const STDERR_TAIL: u64 = 64 * 1024;
/// Slack allowed between the daemon's and the master's clocks when a lost create is looked up.
const CLOCK_SLACK_MS: u64 = 5_000;
/// The Spark property carrying a run's token.
pub const TOKEN_PROPERTY: &str = "spark.jobkeeper.run";
/// The Spark property naming the jobkeeper job of a driver.
pub const JOB_PROPERTY: &str = "spark.jobkeeper.job";
/// The Spark property holding the store's run id of a driver (its token proves it).
pub const RUN_ID_PROPERTY: &str = "spark.jobkeeper.run_id";
/// At most this many drivers' identities are kept between sweeps.
const IDENTITIES_KEPT: usize = 10_000;
/// How long a lost create's driver may take to be launched (and so to have a stderr to read).
const LAUNCH_WAIT: Duration = Duration::from_secs(10);
/// How much of the start of a driver's stderr is read for its launch command.
const LAUNCH_HEAD: u64 = 32 * 1024;
/// The `clientSparkVersion` sent with a create (the master accepts any).
const CLIENT_VERSION: &str = "4.3.0";

/// Driver states of a driver still alive (or about to be).
const LIVE_STATES: &[&str] = &["SUBMITTED", "RUNNING", "RELAUNCHING", "UNKNOWN"];

/// The sha256 of a file, in hex. Blocking.
fn sha256_of(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// What the master's `/json/` says about one driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// Driver state (`RUNNING`, `FINISHED`, ...).
    pub state: String,
    /// The worker it runs on, when placed.
    pub worker: Option<String>,
    /// Its main class.
    pub main_class: String,
    /// When it started (ms since the epoch, master's clock).
    pub start_ms: u64,
}

/// The master's `/json/`: drivers by id, and workers' web UI addresses by worker id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterView {
    /// The master's own state: `ALIVE`, or `RECOVERING` and `COMPLETING_RECOVERY` while it
    /// reads its drivers back after a restart with recovery, or `STANDBY`.
    pub status: String,
    /// Active and completed drivers.
    pub drivers: HashMap<String, DriverInfo>,
    /// Worker id → web UI URL.
    pub worker_uis: HashMap<String, String>,
    /// The workers the master sees alive.
    pub alive_workers: Vec<String>,
}

impl MasterView {
    /// Reads a `/json/` answer.
    pub fn parse(body: &Value) -> MasterView {
        let mut view = MasterView {
            status: body["status"].as_str().unwrap_or_default().to_string(),
            ..MasterView::default()
        };
        for w in body["workers"].as_array().into_iter().flatten() {
            if let (Some(id), Some(ui)) = (w["id"].as_str(), w["webuiaddress"].as_str()) {
                view.worker_uis
                    .insert(id.into(), ui.trim_end_matches('/').into());
                if w["state"] == "ALIVE" {
                    view.alive_workers.push(id.into());
                }
            }
        }
        let drivers = body["activedrivers"]
            .as_array()
            .into_iter()
            .chain(body["completeddrivers"].as_array())
            .flatten();
        for d in drivers {
            let (Some(id), Some(state)) = (d["id"].as_str(), d["state"].as_str()) else {
                continue;
            };
            let start_ms = match &d["starttime"] {
                Value::String(s) => s.parse().unwrap_or(0),
                v => v.as_u64().unwrap_or(0),
            };
            view.drivers.insert(
                id.into(),
                DriverInfo {
                    state: state.into(),
                    worker: d["worker"]
                        .as_str()
                        .filter(|w| *w != "None")
                        .map(Into::into),
                    main_class: d["mainclass"].as_str().unwrap_or_default().into(),
                    start_ms,
                },
            );
        }
        view
    }
}

/// What a driver's launch command (the first line of its stderr) says of how it was submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its main class.
    pub main_class: Option<String>,
    /// Its application arguments.
    pub args: Vec<String>,
    /// Its Spark properties, less those the engine sets itself (`spark.master`,
    /// `spark.submit.deployMode`, `spark.jars`, [`TOKEN_PROPERTY`]) and those Spark redacted.
    pub conf: std::collections::BTreeMap<String, String>,
    /// The properties whose values Spark redacted in the command (`spark.redaction.regex`:
    /// secrets, passwords, tokens), in order.
    pub redacted: Vec<String>,
    /// The driver's jar as it was submitted (`spark.jars`), else the worker's copy of it.
    pub jar: Option<String>,
}

/// The Spark properties the engine sets on every create.
const ENGINE_PROPERTIES: &[&str] = &[
    "spark.master",
    "spark.submit.deployMode",
    "spark.jars",
    TOKEN_PROPERTY,
    JOB_PROPERTY,
    RUN_ID_PROPERTY,
];

/// What Spark writes in place of a redacted value (`Utils.REDACTION_REPLACEMENT_TEXT`).
const REDACTED: &str = "*********(redacted)";

/// Reads the `Launch Command: "java" ... "-Dk=v" ... "...DriverWrapper" "worker" "jar"
/// "Main" "args"...` line a worker writes first into a driver's stderr; `None` without one.
pub fn parse_launch(stderr: &str) -> Option<Launch> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Launch Command: "))?;
    let words = launch_words(line);
    let wrapper = words.iter().position(|w| w.ends_with(".DriverWrapper"))?;
    let mut conf = std::collections::BTreeMap::new();
    let mut redacted = Vec::new();
    let mut jars = None;
    for w in &words[..wrapper] {
        let Some((k, v)) = w.strip_prefix("-D").and_then(|kv| kv.split_once('=')) else {
            continue;
        };
        if !k.starts_with("spark.") {
            continue;
        }
        if k == "spark.jars" {
            jars = Some(v.to_string());
        }
        if v == REDACTED {
            redacted.push(k.to_string());
        } else if !ENGINE_PROPERTIES.contains(&k) {
            conf.insert(k.to_string(), v.to_string());
        }
    }
    // After the wrapper: the worker's URL, the jar, the main class, the arguments.
    let copy = words.get(wrapper + 2).cloned();
    let rest = words.get(wrapper + 3..).unwrap_or_default();
    let jar = jars
        .and_then(|j| j.split(',').next().map(str::to_string))
        .filter(|j| !j.is_empty())
        .or(copy);
    Some(Launch {
        main_class: rest.first().cloned(),
        args: rest.iter().skip(1).cloned().collect(),
        conf,
        redacted,
        jar,
    })
}

/// The job, run id and token a driver's launch command carries ([`JOB_PROPERTY`],
/// [`RUN_ID_PROPERTY`], [`TOKEN_PROPERTY`]); `None` when it lacks one of them.
pub fn launch_identity(stderr: &str) -> Option<(String, i64, String)> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Launch Command: "))?;
    let words = launch_words(line);
    let wrapper = words.iter().position(|w| w.ends_with(".DriverWrapper"))?;
    let prop = |key: &str| {
        words[..wrapper].iter().find_map(|w| {
            let (k, v) = w.strip_prefix("-D")?.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    };
    let run_id = prop(RUN_ID_PROPERTY)?.parse().ok()?;
    Some((prop(JOB_PROPERTY)?, run_id, prop(TOKEN_PROPERTY)?))
}

/// The words of a launch command. Spark writes them as `"w1" "w2" ...` without escaping a quote
/// inside one (`-Dz="a b"` stays as it is), so the command is split at each `" "` between
/// words, not read as quoted strings.
fn launch_words(line: &str) -> Vec<String> {
    let line = line.trim_end();
    let Some(inner) = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return Vec::new();
    };
    inner.split("\" \"").map(str::to_string).collect()
}

/// The exception lines of a driver's stderr (`Exception in thread`, an exception's own line,
/// `Caused by:`, ERROR log lines); when it has none, its last lines that are not INFO, DEBUG or
/// TRACE log lines (never only log chatter); a note saying so when every line is. At most
/// `REASON_LINES` lines.
pub fn summarize_stderr(stderr: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in stderr.lines() {
        let t = line.trim();
        let wanted = t.starts_with("Exception in thread")
            || t.starts_with("Caused by:")
            || t.contains(" ERROR ")
            || is_exception_line(t);
        if wanted && !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !is_chatter(l))
            .collect();
        out = lines[lines.len().saturating_sub(5)..].to_vec();
    }
    if out.is_empty() {
        return "its stderr holds no error or exception lines, only informational log lines".into();
    }
    if out.len() > REASON_LINES {
        out.drain(..out.len() - REASON_LINES);
    }
    out.join("\n")
}

/// A Java exception's own line: `pkg.SomeException: message` or `pkg.SomeError` alone.
fn is_exception_line(line: &str) -> bool {
    let name = line.split(": ").next().unwrap_or(line);
    !name.contains(' ')
        && name.contains('.')
        && (name.ends_with("Exception") || name.ends_with("Error"))
}

/// A log line at INFO, DEBUG or TRACE level (`26/11/25 16:21:40 INFO SparkContext: ...`).
fn is_chatter(line: &str) -> bool {
    line.split_whitespace()
        .take(4)
        .any(|w| matches!(w, "INFO" | "DEBUG" | "TRACE"))
}

/// The run's status for a driver state.
fn status_of(state: &str) -> Option<RunStatus> {
    match state {
        s if LIVE_STATES.contains(&s) => Some(RunStatus::Running),
        "FINISHED" => Some(RunStatus::Succeeded),
        // FAILED, ERROR, KILLED: a reason is looked up by the caller.
        _ => None,
    }
}

/// A Spark standalone cluster.
pub struct SparkEngine {
    /// REST submission server, without a trailing `/`.
    rest: String,
    /// The `spark://` master URL.
    master: String,
    /// The master's web UI, without a trailing `/`.
    ui: Option<String>,
    /// The HTTP client.
    http: reqwest::Client,
    /// Makes run tokens unique to one daemon (its state folder).
    salt: String,
    /// Where the workers fetch a run's jar.
    source: ArtifactSource,
    /// The daemon's served jars.
    shelf: Shelf,
    /// Every worker's web UI seen in the master's `/json/` (worker id → URL): a master just
    /// restarted knows none until they register again, and they are asked about its drivers.
    worker_uis: std::sync::Mutex<HashMap<String, String>>,
    /// What each launched driver the sweep asked about was submitted as ([`launch_identity`],
    /// checked against this daemon's salt), so a driver's stderr is read once.
    identities: std::sync::Mutex<HashMap<String, Option<(String, i64)>>>,
}

/// Where a Spark engine puts jars: the daemon's shelf and its own base URL.
#[derive(Debug, Clone)]
pub struct JarShelf {
    /// The served jars.
    pub shelf: Shelf,
    /// The daemon's base URL (`external_url`, else built from the address it listens on).
    pub daemon_url: String,
}

impl SparkEngine {
    /// An engine for the cluster of `settings`; `salt` makes its run tokens unique to this
    /// daemon (the state folder is a good one); `jars` is where the daemon serves jars from.
    pub fn new(
        settings: &SparkSettings,
        salt: &str,
        jars: &JarShelf,
    ) -> Result<SparkEngine, EngineError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| EngineError::Other(format!("http client: {e}")))?;
        Ok(SparkEngine {
            rest: settings.url.trim_end_matches('/').to_string(),
            master: settings.master.clone(),
            ui: settings
                .ui
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
            http,
            salt: salt.to_string(),
            source: settings.artifact_source(&jars.daemon_url),
            shelf: jars.shelf.clone(),
            worker_uis: std::sync::Mutex::new(HashMap::new()),
            identities: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The URL the workers fetch the run's jar from: the daemon's served copy (put on its
    /// shelf now, once per digest), or a copy in the env's shared folder.
    async fn jar_url(&self, req: &SubmitRequest) -> Result<String, EngineError> {
        let artifact = req.artifact.clone().unwrap_or_default();
        let digest = req.digest.clone();
        let (source, shelf) = (self.source.clone(), self.shelf.clone());
        let job = tokio::task::spawn_blocking(move || {
            let digest = match digest {
                Some(d) => d,
                None => sha256_of(&artifact)?,
            };
            match source {
                ArtifactSource::Http(base) => {
                    shelf.publish(&artifact, &digest)?;
                    let name = artifact
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Ok::<_, std::io::Error>(shelf.url(&base, &digest, &name))
                }
                ArtifactSource::Dir(dir) => {
                    let copy = artifacts::copy_to_shared(&dir, &artifact, &digest)?;
                    Ok(format!("file://{}", copy.display()))
                }
            }
        });
        match job.await {
            Ok(Ok(url)) => Ok(url),
            Ok(Err(e)) => Err(EngineError::Other(match &self.source {
                ArtifactSource::Dir(dir) => {
                    format!(
                        "cannot copy the jar to the shared folder {}: {e}",
                        dir.display()
                    )
                }
                ArtifactSource::Http(_) => format!("cannot serve the jar: {e}"),
            })),
            Err(e) => Err(EngineError::Other(format!("jar copy: {e}"))),
        }
    }

    /// The status of driver `id`, which the master (`view`) does not know (it was restarted
    /// without recovery, say): running while a worker still runs it, vanished once none does.
    /// When that cannot be told yet, the cluster counts as unreachable: nothing is submitted.
    async fn forgotten(&self, id: &str, view: &MasterView) -> Result<RunStatus, EngineError> {
        match self.ask_workers(id, view).await {
            Seen::Running(ui) => {
                tracing::warn!(driver = %id, worker = %ui, master = %self.master, "the master does not know this driver but its worker still runs it: kept as the run until it ends");
                Ok(RunStatus::Running)
            }
            Seen::Gone => Ok(RunStatus::Vanished),
            Seen::Unknown(why) => Err(EngineError::Unreachable(format!(
                "spark master {} does not know driver {id} and whether a worker still runs it cannot be told: {why}",
                self.master
            ))),
        }
    }

    /// What the workers say about driver `id`, which the master (`view`) does not know.
    async fn ask_workers(&self, id: &str, view: &MasterView) -> Seen {
        let uis: Vec<String> = {
            let known = lock(&self.worker_uis);
            let mut uis: Vec<String> = known.values().cloned().collect();
            uis.sort();
            uis.dedup();
            uis
        };
        if view.alive_workers.is_empty() {
            // The master just started: its workers register within seconds. Until then a
            // driver it forgot may still run on one; a new one would only wait for them.
            return match workers::ask(&self.http, &uis, id).await {
                Seen::Running(ui) => Seen::Running(ui),
                _ => Seen::Unknown("the master knows no worker yet".to_string()),
            };
        }
        workers::ask(&self.http, &uis, id).await
    }

    fn unreachable(&self, base: &str, e: &reqwest::Error) -> EngineError {
        unreachable(&format!("spark {base}"), e)
    }

    /// Sends a request to `base`; returns the status and the JSON body (`Null` when not JSON).
    async fn call(
        &self,
        base: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), EngineError> {
        let resp = req.send().await.map_err(|e| self.unreachable(base, &e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(base, &e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
            return Err(EngineError::Unreachable(format!(
                "spark {base}: answered {status}"
            )));
        }
        Ok((status, body))
    }

    /// The master's view of its drivers and workers (needs `spark.ui`).
    pub async fn master_view(&self) -> Result<Option<MasterView>, EngineError> {
        let Some(ui) = &self.ui else {
            return Ok(None);
        };
        let (status, body) = self.call(ui, self.http.get(format!("{ui}/json/"))).await?;
        if !status.is_success() {
            return Err(EngineError::Other(format!(
                "spark master UI {ui}/json/ answered {status}"
            )));
        }
        let view = MasterView::parse(&body);
        lock(&self.worker_uis).extend(
            view.worker_uis
                .iter()
                .map(|(id, ui)| (id.clone(), ui.clone())),
        );
        Ok(Some(view))
    }

    /// One driver's state and worker from the REST server; `None` when it does not know it.
    async fn driver_status(
        &self,
        id: &str,
    ) -> Result<Option<(String, Option<String>, String)>, EngineError> {
        let url = format!("{}/v1/submissions/status/{id}", self.rest);
        let (_, body) = self.call(&self.rest, self.http.get(url)).await?;
        if body["success"] != json!(true) {
            return Ok(None);
        }
        let state = body["driverState"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_string();
        let worker = body["workerId"].as_str().map(str::to_string);
        let message = body["message"].as_str().unwrap_or_default().to_string();
        Ok(Some((state, worker, message)))
    }

    /// A driver's stderr from its worker's web UI: its last `len` bytes, or with `head` its
    /// first.
    async fn driver_stderr(
        &self,
        id: &str,
        worker_ui: &str,
        len: u64,
        head: bool,
    ) -> Option<String> {
        let url = format!("{worker_ui}/log/");
        let len = len.to_string();
        let mut query = vec![
            ("driverId", id),
            ("logType", "stderr"),
            ("byteLength", &len),
        ];
        if head {
            query.push(("offset", "0"));
        }
        let req = self.http.get(url).query(&query);
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let text = resp.text().await.ok()?;
        // The worker puts a `==== Bytes a-b of n of <file> ====` line first.
        let body = match text.split_once('\n') {
            Some((first, rest)) if first.starts_with("====") => rest,
            _ => text.as_str(),
        };
        Some(body.to_string())
    }

    /// The status of each handle, from the master's view when it has the driver (else the
    /// REST server's answer about it).
    async fn statuses(
        &self,
        view: Option<&MasterView>,
        handles: &[RunHandle],
    ) -> Result<Vec<RunStatus>, EngineError> {
        if let Some(v) = view.filter(|v| v.status != "ALIVE") {
            // A master reading its drivers back after a restart does not know them yet.
            return Err(EngineError::Unreachable(format!(
                "spark master {} is {}, not ALIVE",
                self.master, v.status
            )));
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            let id = &h.engine_id;
            // The master's `/json/` keeps only its latest completed drivers: ask the REST
            // server about the others.
            let found = match view.and_then(|v| v.drivers.get(id)) {
                Some(d) => Some((d.state.clone(), d.worker.clone(), String::new())),
                None => self.driver_status(id).await?,
            };
            let Some((state, worker, message)) = found else {
                out.push(match view {
                    Some(v) => self.forgotten(id, v).await?,
                    None => RunStatus::Vanished,
                });
                continue;
            };
            out.push(match status_of(&state) {
                Some(s) => s,
                None => {
                    // The REST answer carries the exception of an ERROR driver.
                    let message = if message.is_empty() && state == "ERROR" {
                        self.driver_status(id)
                            .await
                            .ok()
                            .flatten()
                            .map(|(_, _, m)| m)
                            .unwrap_or_default()
                    } else {
                        message
                    };
                    RunStatus::Failed(
                        self.failure_reason(id, &state, worker.as_deref(), &message, view)
                            .await,
                    )
                }
            });
        }
        Ok(out)
    }

    /// Why a driver ended in `state`: the state, the API's message, and its stderr's exception
    /// lines when its worker's UI can be read.
    async fn failure_reason(
        &self,
        id: &str,
        state: &str,
        worker: Option<&str>,
        message: &str,
        view: Option<&MasterView>,
    ) -> String {
        let mut reason = if state == "KILLED" {
            format!("spark driver {id} KILLED outside jobkeeper")
        } else {
            format!("spark driver {id} {state}")
        };
        if !message.trim().is_empty() {
            reason.push_str(": ");
            reason.push_str(message.trim());
        }
        let worker_ui = worker.and_then(|w| view.and_then(|v| v.worker_uis.get(w)));
        match worker_ui {
            Some(ui) => match self.driver_stderr(id, ui, STDERR_TAIL, false).await {
                Some(stderr) if !stderr.trim().is_empty() => {
                    reason.push('\n');
                    reason.push_str(&summarize_stderr(&stderr));
                }
                _ => reason.push_str(&format!(" (its stderr could not be read from {ui})")),
            },
            None if self.ui.is_none() => {
                reason.push_str(" (set `spark.ui` to read the driver's stderr from its worker)")
            }
            None => {}
        }
        reason
    }

    /// The live driver of `main_class`, started at or after `since_ms` (less
    /// [`CLOCK_SLACK_MS`]), whose launch command carries `token`; waits up to `wait` for
    /// drivers not yet launched. `None` without `spark.ui`.
    async fn find_by_token(
        &self,
        main_class: &str,
        since_ms: u64,
        token: &str,
        wait: Duration,
    ) -> Result<Option<String>, EngineError> {
        let marker = format!("-D{TOKEN_PROPERTY}={token}");
        let since = since_ms.saturating_sub(CLOCK_SLACK_MS);
        let until = tokio::time::Instant::now() + wait;
        loop {
            let Some(view) = self.master_view().await? else {
                return Ok(None);
            };
            let mut unlaunched = false;
            for (id, d) in &view.drivers {
                if d.main_class != main_class
                    || d.start_ms < since
                    || !LIVE_STATES.contains(&d.state.as_str())
                {
                    continue;
                }
                let ui = d.worker.as_ref().and_then(|w| view.worker_uis.get(w));
                let head = match ui {
                    Some(ui) => self.driver_stderr(id, ui, LAUNCH_HEAD, true).await,
                    None => None,
                };
                match head {
                    Some(h) if h.contains(&marker) => return Ok(Some(id.clone())),
                    Some(h) if h.contains("Launch Command") => {}
                    _ => unlaunched = true,
                }
            }
            if !unlaunched || tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The create request's body.
    fn create_body(&self, req: &SubmitRequest, jar: &str) -> Value {
        let mut props: serde_json::Map<String, Value> = req
            .params
            .conf
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        props.insert("spark.master".into(), json!(self.master));
        props.insert("spark.submit.deployMode".into(), json!("cluster"));
        props.insert("spark.jars".into(), json!(jar));
        props
            .entry("spark.app.name")
            .or_insert_with(|| json!(req.job));
        props
            .entry("spark.driver.supervise")
            .or_insert_with(|| json!("false"));
        props.insert(
            TOKEN_PROPERTY.into(),
            json!(run_token(&self.salt, &req.job, req.run_id)),
        );
        props.insert(JOB_PROPERTY.into(), json!(req.job));
        props.insert(RUN_ID_PROPERTY.into(), json!(req.run_id.to_string()));
        json!({
            "action": "CreateSubmissionRequest",
            "appResource": jar,
            "mainClass": req.params.main_class.clone().unwrap_or_default(),
            "appArgs": req.params.args,
            "clientSparkVersion": CLIENT_VERSION,
            "environmentVariables": req.params.environment,
            "sparkProperties": props,
        })
    }

    /// Waits, at most `limit`, until no worker runs driver `id`, which the master does not know
    /// and so cannot kill (a master restarted without recovery kills it once its worker
    /// registers again). Without `spark.ui` the workers cannot be asked: Ok.
    async fn wait_forgotten_ended(&self, id: &str, limit: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let Some(view) = self.master_view().await? else {
                return Ok(());
            };
            let seen = self.ask_workers(id, &view).await;
            match seen {
                Seen::Gone => return Ok(()),
                _ if tokio::time::Instant::now() >= until => {
                    return Err(EngineError::Other(format!(
                        "spark driver {id} is unknown to the master {} but did not end within {}: {}",
                        self.master,
                        humantime::format_duration(limit),
                        match seen {
                            Seen::Running(ui) => format!("the worker {ui} still runs it"),
                            Seen::Unknown(why) => why,
                            Seen::Gone => String::new(),
                        }
                    )));
                }
                _ => tokio::time::sleep(POLL * 5).await,
            }
        }
    }

    /// Waits until the driver is no longer live (or unknown), at most `limit`.
    async fn wait_ended(&self, id: &str, limit: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let state = self.driver_status(id).await?.map(|(s, _, _)| s);
            if state.as_deref().is_none_or(|s| !LIVE_STATES.contains(&s)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Other(format!(
                    "spark driver {id} still {} after {}",
                    state.unwrap_or_default(),
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait::async_trait]
impl Engine for SparkEngine {
    fn kind(&self) -> super::EngineKind {
        super::EngineKind::Spark
    }

    fn location(&self) -> String {
        format!("spark master {}", self.rest)
    }

    fn url(&self) -> Option<String> {
        Some(self.rest.to_string())
    }

    fn listing_needs(&self) -> Option<&'static str> {
        Some("set `spark.ui`, the master's web UI")
    }

    async fn preflight(&self, req: &SubmitRequest) -> Result<(), EngineError> {
        if req.params.main_class.as_deref().is_none_or(str::is_empty) {
            return Err(EngineError::Refused(
                "spark runs a jar's main class: set `params.main_class`".into(),
            ));
        }
        require_jar("spark", req)
    }

    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError> {
        self.preflight(&req).await?;
        let jar = self.jar_url(&req).await?;
        let body = self.create_body(&req, &jar);
        let sent_at = SystemTime::now();
        let url = format!("{}/v1/submissions/create", self.rest);
        let answer = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| (e.is_connect(), self.unreachable(&self.rest, &e)));
        let (status, answer) = match answer {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            // Nothing reached the master.
            Err((true, e)) => return Err(e),
            // Sent, but the answer was lost: the master may have made the driver.
            Err((false, e)) => {
                let main_class = req.params.main_class.as_deref().unwrap_or_default();
                let since = sent_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let token = run_token(&self.salt, &req.job, req.run_id);
                return match self
                    .find_by_token(main_class, since, &token, LAUNCH_WAIT)
                    .await
                {
                    Ok(Some(id)) => {
                        write_log(
                            &req.log_path,
                            &format!(
                                "submitted to {} as driver {id} (its answer was lost)\n",
                                self.rest
                            ),
                        )
                        .await;
                        Ok(RunHandle {
                            run_id: req.run_id,
                            engine_id: id,
                            start_ticks: None,
                            cluster: None,
                        })
                    }
                    _ => Err(e),
                };
            }
        };
        let id = answer["submissionId"].as_str().unwrap_or_default();
        let ok = status.is_success() && answer["success"] == json!(true) && !id.is_empty();
        let message = answer["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.to_string());
        if !ok {
            write_log(
                &req.log_path,
                &crate::spec::mask_secrets(
                    &format!("{} refused the driver ({status}): {message}\n", self.rest),
                    &req.secrets,
                ),
            )
            .await;
            if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
                return Err(EngineError::Unreachable(format!(
                    "spark {}: create answered {status}",
                    self.rest
                )));
            }
            return Err(EngineError::Refused(format!(
                "spark refused the driver ({status}): {message}"
            )));
        }
        write_log(
            &req.log_path,
            &format!("submitted to {} as driver {id}\n", self.rest),
        )
        .await;
        Ok(RunHandle {
            run_id: req.run_id,
            engine_id: id.to_string(),
            start_ticks: None,
            cluster: None,
        })
    }

    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError> {
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let view = self.master_view().await?;
        self.statuses(view.as_ref(), handles).await
    }

    async fn survey(&self, handles: &[RunHandle]) -> Result<Survey, EngineError> {
        let view = self.master_view().await?;
        let statuses = self.statuses(view.as_ref(), handles).await?;
        let live = view.map(|v| {
            let mut live: Vec<ClusterJob> = v
                .drivers
                .into_iter()
                .filter(|(_, d)| LIVE_STATES.contains(&d.state.as_str()))
                .map(|(id, d)| ClusterJob {
                    engine_id: id,
                    name: d.main_class,
                    state: d.state,
                    since_ms: i64::try_from(d.start_ms).ok().filter(|t| *t > 0),
                })
                .collect();
            live.sort_by(|a, b| a.engine_id.cmp(&b.engine_id));
            live
        });
        Ok(Survey {
            statuses,
            live,
            tasks: Vec::new(),
        })
    }

    async fn run_output(&self, handle: &RunHandle, lines: usize) -> super::RunOutput {
        self.output(handle, lines).await
    }

    async fn describe(&self, job: &ClusterJob) -> Result<JobDetails, EngineError> {
        let mut d = JobDetails {
            main_class: Some(job.name.clone()).filter(|c| !c.is_empty()),
            ..JobDetails::default()
        };
        let view = self.master_view().await?;
        let worker_ui = view.as_ref().and_then(|v| {
            let w = v.drivers.get(&job.engine_id)?.worker.as_ref()?;
            v.worker_uis.get(w).cloned()
        });
        let launch = match worker_ui {
            Some(ui) => {
                self.driver_stderr(&job.engine_id, &ui, LAUNCH_HEAD, true)
                    .await
            }
            None => None,
        };
        match launch.as_deref().and_then(parse_launch) {
            Some(l) => {
                d.args = Some(l.args);
                d.conf = l.conf;
                d.jar = l.jar;
                if l.main_class.is_some() {
                    d.main_class = l.main_class;
                }
                for k in l.redacted {
                    d.notes.push(format!(
                        "conf `{k}`: Spark redacted its value in the driver's launch command; \
                         add it by hand"
                    ));
                }
            }
            None => {
                let why = "the driver's launch command could not be read from its worker's web UI";
                d.args_missing = Some(why.into());
                d.notes.push(format!("conf: {why}"));
            }
        }
        Ok(d)
    }

    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), EngineError> {
        let id = &handle.engine_id;
        let url = format!("{}/v1/submissions/kill/{id}", self.rest);
        let (status, body) = self.call(&self.rest, self.http.post(url)).await?;
        if !(status.is_success() && body["success"] == json!(true)) {
            // "has already finished or does not exist": nothing left to stop.
            let state = self.driver_status(id).await?.map(|(s, _, _)| s);
            if state.as_deref().is_some_and(|s| LIVE_STATES.contains(&s)) {
                return Err(EngineError::Other(format!(
                    "spark could not kill driver {id} ({status}): {}",
                    body["message"].as_str().unwrap_or_default()
                )));
            }
            if state.is_none() {
                return self.wait_forgotten_ended(id, grace.max(KILL_WAIT)).await;
            }
            return Ok(());
        }
        self.wait_ended(id, grace.max(KILL_WAIT)).await
    }

    fn runs_survive_daemon(&self) -> bool {
        true
    }

    /// Read from the driver's launch command (its worker's `/log/`, once per driver): the job
    /// and run id it names, when its token is this daemon's for them.
    async fn submitted_as(&self, job: &ClusterJob) -> Option<(String, i64)> {
        let id = &job.engine_id;
        if let Some(known) = lock(&self.identities).get(id) {
            return known.clone();
        }
        let view = self.master_view().await.ok()??;
        let driver = view.drivers.get(id)?;
        let ui = view.worker_uis.get(driver.worker.as_ref()?)?;
        let head = self.driver_stderr(id, ui, LAUNCH_HEAD, true).await?;
        if !head.contains("Launch Command") {
            return None; // not launched yet: asked again at the next sweep
        }
        let ours = launch_identity(&head)
            .filter(|(j, run, token)| *token == run_token(&self.salt, j, *run))
            .map(|(j, run, _)| (j, run));
        let mut known = lock(&self.identities);
        if known.len() >= IDENTITIES_KEPT {
            known.clear();
        }
        known.insert(id.clone(), ours.clone());
        ours
    }

    /// A recorded driver is adopted. A run whose submit was in flight when the daemon stopped
    /// (the id spark chose was never recorded) is found by the token its submit carried.
    async fn recover(&self, run: &RecordedRun<'_>) -> Recovery {
        if let Some(h) = run.handle {
            return Recovery::Adopt(h.clone());
        }
        let Some(main_class) = run.params.and_then(|p| p.main_class.as_deref()) else {
            return Recovery::NeverStarted(NEVER_STARTED.to_string());
        };
        let token = run_token(&self.salt, run.job, run.run_id);
        let since = u64::try_from(run.started_at_ms).unwrap_or(0);
        match self
            .find_by_token(main_class, since, &token, LAUNCH_WAIT)
            .await
        {
            Ok(Some(id)) => {
                tracing::info!(job = %run.job, run = run.run_id, id = %id, "found the run's unrecorded driver on the cluster; its job adopts it");
                Recovery::Adopt(RunHandle {
                    run_id: run.run_id,
                    engine_id: id,
                    start_ticks: None,
                    cluster: None,
                })
            }
            Ok(None) => Recovery::NeverStarted(NEVER_STARTED.to_string()),
            Err(err) => Recovery::Stopped(format!(
                "the daemon stopped while submitting it; the cluster could not be asked \
                 whether it has it ({err})"
            )),
        }
    }

    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Params;

    /// A `/json/` answer as Spark 4.3.0's master gives it (trimmed).
    const MASTER_JSON: &str = r#"{
      "url" : "spark://127.0.0.1:7077",
      "workers" : [ { "id" : "worker-1", "host" : "127.0.0.1", "port" : 41477,
                      "webuiaddress" : "http://127.0.0.1:8091", "state" : "ALIVE" } ],
      "aliveworkers" : 1,
      "activedrivers" : [ { "id" : "driver-20261125162057-0000", "starttime" : "1795623657141",
                            "state" : "RUNNING", "worker" : "worker-1", "mainclass" : "example.Totals" } ],
      "completeddrivers" : [ { "id" : "driver-20261125162134-0001", "starttime" : "1795623694000",
                               "state" : "FAILED", "worker" : "worker-1", "mainclass" : "example.Totals" },
                             { "id" : "driver-20261125162134-0002", "starttime" : "0",
                               "state" : "ERROR", "worker" : "None", "mainclass" : "example.Other" } ],
      "status" : "ALIVE"
    }"#;

    #[test]
    fn a_launch_command_gives_main_class_args_and_properties() {
        // As a Spark 4.3.0 worker writes it: words in quotes, a quote inside one not escaped.
        let stderr = "Launch Command: \"/usr/bin/java\" \"-cp\" \"/x/*\" \"-Xmx512M\" \
            \"-Dio.netty.allocator.type=pooled\" \"-Dspark.master=spark://127.0.0.1:7077\" \
            \"-Dspark.cores.max=1\" \"-Dspark.jars=file:///b/a.jar\" \"-Dspark.app.name=ext x\" \
            \"-Dspark.jobkeeper.run=abc\" \"-Dspark.submit.deployMode=cluster\" \
            \"-Dspark.driver.extraJavaOptions=-Dx.y=1 -Dz=\"a b\"\" \
            \"-Dspark.hadoop.fs.s3a.secret.key=*********(redacted)\" \"-Dx.y=1\" \"-Dz=a b\" \
            \"org.apache.spark.deploy.worker.DriverWrapper\" \"spark://Worker@127.0.0.1:1\" \
            \"/w/driver-1/a.jar\" \"example.Totals\" \"--n\" \"100\" \"say \"hi\"\" \"C:\\d+\" \"\"\n\
            ========================================\n";
        let l = parse_launch(stderr).unwrap();
        assert_eq!(l.main_class.as_deref(), Some("example.Totals"));
        assert_eq!(l.args, ["--n", "100", "say \"hi\"", "C:\\d+", ""]);
        let conf: Vec<(&str, &str)> = l
            .conf
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            conf,
            [
                ("spark.app.name", "ext x"),
                ("spark.cores.max", "1"),
                ("spark.driver.extraJavaOptions", "-Dx.y=1 -Dz=\"a b\""),
            ]
        );
        assert_eq!(l.redacted, ["spark.hadoop.fs.s3a.secret.key"]);
        assert_eq!(l.jar.as_deref(), Some("file:///b/a.jar"));
        let no_jars = stderr.replace("\"-Dspark.jars=file:///b/a.jar\" ", "");
        assert_eq!(
            parse_launch(&no_jars).unwrap().jar.as_deref(),
            Some("/w/driver-1/a.jar")
        );
        assert_eq!(parse_launch("no launch line"), None);
        assert_eq!(parse_launch("Launch Command: \"java\""), None);
    }

    #[test]
    fn the_masters_json_gives_drivers_and_worker_uis() {
        let view = MasterView::parse(&serde_json::from_str(MASTER_JSON).unwrap());
        assert_eq!(view.drivers.len(), 3);
        let d = &view.drivers["driver-20261125162057-0000"];
        assert_eq!(d.state, "RUNNING");
        assert_eq!(d.worker.as_deref(), Some("worker-1"));
        assert_eq!(d.main_class, "example.Totals");
        assert_eq!(d.start_ms, 1_795_623_657_141);
        assert_eq!(view.drivers["driver-20261125162134-0002"].worker, None);
        assert_eq!(view.worker_uis["worker-1"], "http://127.0.0.1:8091");
        assert_eq!(MasterView::parse(&Value::Null), MasterView::default());
    }

    #[test]
    fn driver_states_map_to_run_statuses() {
        for s in ["SUBMITTED", "RUNNING", "RELAUNCHING", "UNKNOWN"] {
            assert_eq!(status_of(s), Some(RunStatus::Running), "{s}");
        }
        assert_eq!(status_of("FINISHED"), Some(RunStatus::Succeeded));
        for s in ["FAILED", "ERROR", "KILLED"] {
            assert_eq!(status_of(s), None, "{s}");
        }
    }

    #[test]
    fn stderr_is_summarized_to_its_exception_lines() {
        let stderr = "26/11/25 16:21:40 INFO SparkContext: Running Spark version 4.3.0\n\
                      Exception in thread \"main\" java.lang.reflect.InvocationTargetException\n\
                      \tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(Unknown Source)\n\
                      Caused by: java.lang.IllegalStateException: failing on purpose after total 3\n\
                      \tat example.Totals.main(Totals.java:49)\n\
                      26/11/25 16:21:41 INFO ShutdownHookManager: Shutdown hook called\n";
        assert_eq!(
            summarize_stderr(stderr),
            "Exception in thread \"main\" java.lang.reflect.InvocationTargetException\n\
             Caused by: java.lang.IllegalStateException: failing on purpose after total 3"
        );
        // No exception: never INFO lines, the last other lines or a note.
        let info = "26/11/25 16:21:40 INFO SparkContext: Running Spark version 4.3.0\n\
                    26/11/25 16:21:41 INFO ShutdownHookManager: Shutdown hook called\n";
        let s = summarize_stderr(info);
        assert!(!s.contains("INFO"), "{s}");
        assert!(s.contains("no error or exception lines"), "{s}");
        let mixed = format!("{info}26/11/25 16:21:42 WARN Worker: driver exited with 1\n{info}");
        assert_eq!(
            summarize_stderr(&mixed),
            "26/11/25 16:21:42 WARN Worker: driver exited with 1"
        );
        // An exception logged on its own line (no `Exception in thread`).
        let logged =
            format!("{info}java.io.FileNotFoundException: /data/in.csv\n\tat x.y(Z.java:1)\n");
        assert_eq!(
            summarize_stderr(&logged),
            "java.io.FileNotFoundException: /data/in.csv"
        );
        let plain: String = (0..9).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            summarize_stderr(&plain),
            "line 4\nline 5\nline 6\nline 7\nline 8"
        );
        let many: String = (0..40).map(|i| format!("Caused by: E{i}\n")).collect();
        let s = summarize_stderr(&many);
        assert_eq!(s.lines().count(), REASON_LINES);
        assert!(s.ends_with("E39"), "{s}");
    }

    #[test]
    fn the_create_body_carries_params_and_cluster_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = SparkEngine::new(
            &SparkSettings {
                url: "http://127.0.0.1:6066/".into(),
                master: "spark://127.0.0.1:7077".into(),
                ui: None,
                artifact_url: None,
                artifact_dir: None,
            },
            "/var/lib/jobkeeper",
            &JarShelf {
                shelf: Shelf::new(tmp.path(), [1; 32]),
                daemon_url: "http://127.0.0.1:7070".into(),
            },
        )
        .unwrap();
        let mut params = Params {
            main_class: Some("example.Totals".into()),
            args: vec!["--n".into(), "$(touch pwned)".into()],
            ..Params::default()
        };
        params
            .conf
            .insert("spark.driver.memory".into(), "512m".into());
        params
            .conf
            .insert("spark.submit.deployMode".into(), "client".into());
        params.environment.insert("TZ".into(), "UTC".into());
        let req = SubmitRequest {
            job: "reports/totals".into(),
            run_id: 7,
            params,
            artifact: None,
            checkout: None,
            log_path: "/tmp/x.log".into(),
            digest: None,
            restore: None,
            secrets: Vec::new(),
        };
        let body = engine.create_body(&req, "file:///a/b.jar");
        assert_eq!(body["action"], "CreateSubmissionRequest");
        assert_eq!(body["appResource"], "file:///a/b.jar");
        assert_eq!(body["mainClass"], "example.Totals");
        assert_eq!(body["appArgs"], json!(["--n", "$(touch pwned)"]));
        assert_eq!(body["environmentVariables"], json!({"TZ": "UTC"}));
        let props = &body["sparkProperties"];
        assert_eq!(props["spark.master"], "spark://127.0.0.1:7077");
        // Cluster mode always: the daemon's host is not where drivers run.
        assert_eq!(props["spark.submit.deployMode"], "cluster");
        assert_eq!(props["spark.jars"], "file:///a/b.jar");
        assert_eq!(props["spark.driver.memory"], "512m");
        assert_eq!(props["spark.app.name"], "reports/totals");
        // The run's token, by which a lost create is found again.
        assert_eq!(
            props[TOKEN_PROPERTY],
            run_token("/var/lib/jobkeeper", "reports/totals", 7)
        );
        assert_eq!(engine.rest, "http://127.0.0.1:6066");
    }

    #[test]
    fn a_launch_command_gives_the_job_run_and_token_it_was_submitted_as() {
        let head = "Launch Command: \"/usr/bin/java\" \"-cp\" \"x\" \"-Dspark.jobkeeper.job=team/etl\" \
                    \"-Dspark.jobkeeper.run=0a1b\" \"-Dspark.jobkeeper.run_id=42\" \
                    \"org.apache.spark.deploy.worker.DriverWrapper\" \"spark://w\" \"a.jar\" \"Main\"\n";
        assert_eq!(
            launch_identity(head),
            Some(("team/etl".into(), 42, "0a1b".into()))
        );
        let only_token = head.replace("\"-Dspark.jobkeeper.run_id=42\" ", "");
        assert_eq!(launch_identity(&only_token), None);
        assert_eq!(launch_identity("no launch line"), None);
    }
}
