//! The `yarn` engine: Flink on YARN. Application mode (the default): each run is its own YARN
//! application, submitted by the env's Flink CLI ([`submit`]); session mode (`session:`): the
//! env's jobs run in a long-running yarn-session application found through the RM, driven as
//! a Flink session cluster ([`super::flink`]).
//!
//! - **Tracking**: one `GET /ws/v1/cluster/apps?states=…&applicationTypes=Apache Flink` to the
//!   active RM per sweep lists every live Flink application ([`rm`], [`apps`]); a recorded
//!   application missing from that list is asked for by its id once (`…/apps/{id}`), and one
//!   the RM has forgotten (404) is a vanished run. A RUNNING application's JobManager gets at
//!   most one request per sweep, and none when its job needs nothing from it then ([`reads`]:
//!   health figures for jobs with health rules, the task count once every few sweeps, the
//!   newest checkpoint when a newer one can exist).
//! - **The JobManager** of an application is reached at its own address (`amRPCAddress`), not
//!   through the RM proxy (which refuses POST): savepoints, checkpoints, exceptions and health
//!   figures go there through the session engine's own code, with the run's Flink job id.
//! - **Identity**: an engine id is the application id. The Flink job id of a run jobkeeper
//!   submitted is the run's token, fixed at submit and carried in its `jk-run-` tag; an
//!   application adopted without tags has its Flink job found on its JobManager. A submit whose
//!   answer was lost is recorded as `/TOKEN` and found by its tag.
//! - **Checkpoints**: a RUNNING application's newest completed checkpoint is read when a newer
//!   one can exist (with its health figures when its job has health rules) and kept
//!   ([`checkpoints`]): a run whose AM died restarts from it, its JobManager being gone.
//! - **Stop**: stop-with-savepoint on the JobManager (the application then finishes), else the
//!   RM's `PUT /ws/v1/cluster/apps/{id}/state` `{"state":"KILLED"}`, repeated until done.
//! - A standby RM (307) or one that does not answer is [`EngineError::Unreachable`]: wait,
//!   never fail.

pub mod apps;
pub mod checkpoints;
pub mod gss;
pub mod kerberos;
pub mod reads;
pub mod rm;
mod session;
pub mod settings;
pub mod submit;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;

use super::cluster::{lock, require_jar, run_token, write_log};
use super::flink::{FlinkEngine, FlinkSettings, FlinkVersion};
use super::{
    ClusterJob, Engine, EngineError, EngineKind, HealthFacts, JobDetails, NEVER_STARTED,
    RecordedRun, Recovery, RunExit, RunHandle, RunOutput, RunStatus, StateLeft, StatePoint,
    StopOutcome, SubmitRequest, Survey, Vertex,
};
use apps::App;
use kerberos::Kerberos;
use reads::{Read, Watch};
use rm::{RmAuth, RmClient, RmError};
pub use settings::{MISSING, SECTION, YarnAuth, YarnSettings, read_settings};

/// The application type Flink's CLI gives its applications.
const APP_TYPE: &str = "Apache Flink";
/// How often a submission looks at its CLI and the RM.
const SUBMIT_POLL: Duration = Duration::from_millis(500);
/// How long after its CLI exited 0 a submission waits for the RM to list the application.
const LISTED_WAIT: Duration = Duration::from_secs(15);
/// How long a killed application may take to end.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// How many lines of the CLI's output a refusal quotes.
const CLI_LINES: usize = 15;
/// How long a sweep waits for the JobManagers' answers.
const FIGURES_WAIT: Duration = Duration::from_secs(5);
/// How many running applications' JobManagers a disposal asks at most.
const DISPOSERS: usize = 3;

/// Flink on YARN, for one env's RMs and Flink distribution.
pub struct YarnEngine {
    settings: YarnSettings,
    /// The daemon's state folder (also what makes run tokens unique to it).
    salt: String,
    rm: RmClient,
    kerberos: Option<Kerberos>,
    /// The Flink version of `flink_home`, when its dist jar names it.
    version: Option<FlinkVersion>,
    /// The applications as the latest list or lookup showed them, by id.
    apps: Mutex<HashMap<String, App>>,
    /// A session engine per JobManager address.
    jms: Mutex<HashMap<String, Arc<FlinkEngine>>>,
    /// Session mode: the yarn-session's JobManager, once found.
    session_jm: Mutex<Option<Arc<FlinkEngine>>>,
    /// The newest completed checkpoint of each RUNNING application, read when a newer one can
    /// exist.
    kept: checkpoints::Kept,
    /// The status sweeps so far (a sweep's number orders its JobManager reads).
    sweeps: AtomicU64,
    /// What each RUNNING application's JobManager was asked, by application id.
    watches: Mutex<HashMap<String, Watch>>,
    /// The Flink job of an application adopted without tags, once found on its JobManager.
    jids: Mutex<HashMap<String, String>>,
}

impl YarnEngine {
    /// An engine for `settings`; `salt` is the daemon's state folder (run tokens are unique to
    /// it, and the Kerberos credential cache lives under it).
    pub fn new(settings: &YarnSettings, salt: &str) -> Result<YarnEngine, EngineError> {
        let kerberos = match &settings.auth {
            YarnAuth::Kerberos {
                principal,
                keytab,
                krb5_conf,
            } => Some(Kerberos::new(
                principal,
                keytab,
                krb5_conf.as_deref(),
                &PathBuf::from(salt),
            )),
            YarnAuth::Simple { .. } => None,
        };
        let auth = match (&settings.auth, &kerberos) {
            (_, Some(k)) => RmAuth::Kerberos(Arc::new(k.clone())),
            (YarnAuth::Simple { user }, None) => RmAuth::Simple(user.clone()),
            (YarnAuth::Kerberos { .. }, None) => RmAuth::Simple(None),
        };
        let rm = RmClient::new(settings.rm.clone(), auth)
            .map_err(|e| EngineError::Other(format!("http client: {e}")))?;
        Ok(YarnEngine {
            version: submit::dist_version(&settings.flink_home),
            settings: settings.clone(),
            salt: salt.to_string(),
            rm,
            kerberos,
            apps: Mutex::new(HashMap::new()),
            jms: Mutex::new(HashMap::new()),
            session_jm: Mutex::new(None),
            kept: checkpoints::Kept::new(&PathBuf::from(salt)),
            sweeps: AtomicU64::new(0),
            watches: Mutex::new(HashMap::new()),
            jids: Mutex::new(HashMap::new()),
        })
    }

    /// What the RM client sent so far: (requests, SPNEGO handshakes).
    pub fn rm_counts(&self) -> (u64, u64) {
        (
            self.rm.counts.requests.load(Ordering::Relaxed),
            self.rm.counts.handshakes.load(Ordering::Relaxed),
        )
    }

    fn rm_error(&self, e: RmError) -> EngineError {
        EngineError::Unreachable(format!("yarn {}: {e}", self.rm.names()))
    }

    /// Every live Flink application (one request), kept in the cache.
    async fn list_live(&self) -> Result<Vec<App>, EngineError> {
        let (status, body) = self
            .rm
            .get(
                "/ws/v1/cluster/apps",
                &[
                    ("states", apps::LIVE_STATES),
                    ("applicationTypes", APP_TYPE),
                ],
            )
            .await
            .map_err(|e| self.rm_error(e))?;
        if !status.is_success() {
            return Err(EngineError::Unreachable(format!(
                "yarn {}: the apps list answered {status}: {}",
                self.rm.names(),
                apps::short(&body)
            )));
        }
        let live = apps::parse_list(&body)
            .map_err(|e| EngineError::Unreachable(format!("yarn {}: {e}", self.rm.names())))?;
        let mut cache = lock(&self.apps);
        for a in &live {
            cache.insert(a.id.clone(), a.clone());
        }
        Ok(live)
    }

    /// One application by id; `None` when the RM does not know it (404 `RemoteException`).
    async fn app(&self, id: &str) -> Result<Option<App>, EngineError> {
        let (status, body) = self
            .rm
            .get(&format!("/ws/v1/cluster/apps/{id}"), &[])
            .await
            .map_err(|e| self.rm_error(e))?;
        if status == StatusCode::NOT_FOUND {
            lock(&self.apps).remove(id);
            return Ok(None);
        }
        if !status.is_success() {
            return Err(EngineError::Unreachable(format!(
                "yarn {}: application {id} answered {status}: {}",
                self.rm.names(),
                apps::short(&body)
            )));
        }
        let app = apps::parse_one(&body)
            .map_err(|e| EngineError::Unreachable(format!("yarn {}: {e}", self.rm.names())))?;
        lock(&self.apps).insert(app.id.clone(), app.clone());
        Ok(Some(app))
    }

    /// Applications carrying `tag`, in any state.
    async fn tagged(&self, tag: &str) -> Result<Vec<App>, EngineError> {
        let (status, body) = self
            .rm
            .get("/ws/v1/cluster/apps", &[("applicationTags", tag)])
            .await
            .map_err(|e| self.rm_error(e))?;
        if !status.is_success() {
            return Err(EngineError::Unreachable(format!(
                "yarn {}: the apps list answered {status}",
                self.rm.names()
            )));
        }
        apps::parse_list(&body)
            .map(|l| {
                l.into_iter()
                    .filter(|a| a.tags.iter().any(|t| t == tag))
                    .collect()
            })
            .map_err(|e| EngineError::Unreachable(format!("yarn {}: {e}", self.rm.names())))
    }

    /// The session engine at a JobManager address.
    fn jm(&self, url: &str) -> Result<Arc<FlinkEngine>, EngineError> {
        let mut jms = lock(&self.jms);
        if let Some(e) = jms.get(url) {
            return Ok(e.clone());
        }
        let settings = FlinkSettings {
            url: url.to_string(),
            savepoint_dir: self.settings.savepoint_dir.clone(),
            sql_runner: None,
        };
        let mut e = FlinkEngine::new(&settings, &self.salt)?;
        if let Some(k) = &self.kerberos {
            e = e.with_spnego(Arc::new(k.clone()));
        }
        let e = Arc::new(e);
        jms.insert(url.to_string(), e.clone());
        Ok(e)
    }

    /// The application of a handle: cached, else asked for. A handle whose submit got no
    /// answer names only its run token (`/TOKEN`): its application is found by its run tag.
    async fn app_of(&self, handle: &RunHandle) -> Result<App, EngineError> {
        let (id, jid) = apps::split_id(&handle.engine_id);
        if id.is_empty() {
            let tag = format!("{}{}", apps::RUN_TAG, jid.unwrap_or_default());
            return self.tagged(&tag).await?.into_iter().next().ok_or_else(|| {
                EngineError::Other(format!("the RM lists no application tagged {tag}"))
            });
        }
        let cached = lock(&self.apps).get(id).cloned();
        match cached {
            Some(a) => Ok(a),
            None => self.app(id).await?.ok_or_else(|| {
                EngineError::Other(format!(
                    "yarn application {id} is no longer known to the RM"
                ))
            }),
        }
    }

    /// The session engine of a run's JobManager and the run's handle there (its Flink job id).
    async fn on_jm(
        &self,
        handle: &RunHandle,
    ) -> Result<(Arc<FlinkEngine>, RunHandle), EngineError> {
        let app = self.app_of(handle).await?;
        let url = app.jobmanager().ok_or_else(|| {
            EngineError::Unreachable(format!(
                "yarn application {} ({}) has no JobManager address yet",
                app.id, app.state
            ))
        })?;
        let jm = self.jm(&url)?;
        let found = lock(&self.jids).get(&app.id).cloned();
        let jid = match apps::split_id(&handle.engine_id).1.or(app.run_token()) {
            Some(j) => j.to_string(),
            None => match found {
                Some(j) => j,
                None => {
                    let j = only_job(&jm, &app).await?;
                    lock(&self.jids).insert(app.id.clone(), j.clone());
                    j
                }
            },
        };
        let h = RunHandle {
            run_id: handle.run_id,
            engine_id: jid,
            start_ticks: None,
            cluster: Some(url),
        };
        Ok((jm, h))
    }

    /// Kills an application through the RM: `PUT …/state {"state":"KILLED"}` until the RM
    /// answers 200 (202 means it is on its way); a forgotten application is already gone.
    async fn kill(&self, id: &str, limit: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let (status, body) = self
                .rm
                .put(
                    &format!("/ws/v1/cluster/apps/{id}/state"),
                    &json!({"state": "KILLED"}),
                )
                .await
                .map_err(|e| self.rm_error(e))?;
            match status {
                StatusCode::OK | StatusCode::NOT_FOUND => {
                    lock(&self.apps).remove(id);
                    return Ok(());
                }
                StatusCode::ACCEPTED => {}
                StatusCode::FORBIDDEN => {
                    return Err(EngineError::Other(format!(
                        "yarn {} refused to kill {id} (403: jobkeeper's user lacks the MODIFY_APP \
                         ACL): {}",
                        self.rm.names(),
                        apps::short(&body)
                    )));
                }
                s => {
                    return Err(EngineError::Other(format!(
                        "yarn {}: killing {id} answered {s}: {}",
                        self.rm.names(),
                        apps::short(&body)
                    )));
                }
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Other(format!(
                    "yarn application {id} still not KILLED after {}",
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until application `id` is over (or forgotten), at most `limit`; true when it is.
    async fn wait_over(&self, id: &str, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            match self.app(id).await {
                Ok(None) => return true,
                Ok(Some(a)) if !a.is_live() => return true,
                _ => {}
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of each handle, given the live applications by id: one lookup by id for a
    /// recorded application that is no longer live.
    async fn statuses(&self, live: &HashMap<&str, &App>, handles: &[RunHandle]) -> Vec<RunStatus> {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            let (id, jid) = apps::split_id(&h.engine_id);
            let status = match live.get(id) {
                Some(a) => a.run_status(),
                // A submit that got no answer: found by its run tag, or never made.
                None if id.is_empty() => {
                    let tag = format!("{}{}", apps::RUN_TAG, jid.unwrap_or_default());
                    match self.tagged(&tag).await {
                        Ok(found) => found.first().map_or(RunStatus::Vanished, App::run_status),
                        Err(_) => RunStatus::Running,
                    }
                }
                None => match self.app(id).await {
                    Ok(Some(a)) => self.with_exception(h, a.run_status()).await,
                    Ok(None) => RunStatus::Vanished,
                    // Not known now: alive as far as anyone can tell; asked again next sweep.
                    Err(_) => RunStatus::Running,
                },
            };
            out.push(status);
        }
        out
    }

    /// A failed run's reason with its Flink job's root exception, when its JobManager still
    /// answers.
    async fn with_exception(&self, h: &RunHandle, status: RunStatus) -> RunStatus {
        let RunStatus::Failed(reason) = status else {
            return status;
        };
        let exception = match self.on_jm(h).await {
            Ok((jm, fh)) => tokio::time::timeout(Duration::from_secs(5), jm.root_exception(&fh))
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        RunStatus::Failed(match exception {
            Some(e) if !reason.contains(&e) => format!("{reason}\n{e}"),
            _ => reason,
        })
    }

    /// Makes this sweep's JobManager reads ([`reads::plan`]: at most one per RUNNING
    /// application, all at once, each at most [`FIGURES_WAIT`]), keeps what they read, and
    /// answers the task counts read, one per handle (a change is a rescale: the drift rules).
    async fn read_jobmanagers(
        &self,
        live: &HashMap<&str, &App>,
        handles: &[RunHandle],
    ) -> Vec<Option<u64>> {
        if handles.is_empty() {
            return Vec::new();
        }
        let sweep = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let running = |id: &str| live.get(id).filter(|a| a.state == "RUNNING").copied();
        lock(&self.watches).retain(|id, _| running(id).is_some());
        lock(&self.jids).retain(|id, _| running(id).is_some());
        let mut calls = tokio::task::JoinSet::new();
        for (i, h) in handles.iter().enumerate() {
            let Some(app) = running(apps::split_id(&h.engine_id).0) else {
                continue;
            };
            let followable = self.kept.followable(&app.id);
            let read = {
                let mut watches = lock(&self.watches);
                let w = watches
                    .entry(app.id.clone())
                    .or_insert_with(|| Watch::new(&app.id));
                reads::plan(w, sweep, now_ms, followable)
            };
            let Some(read) = read else {
                continue;
            };
            let Ok((jm, fh)) = self.on_jm(h).await else {
                continue;
            };
            if let Some(w) = lock(&self.watches).get_mut(&app.id) {
                w.asked = Some(sweep);
            }
            let id = app.id.clone();
            calls.spawn(async move {
                let jid = fh.engine_id.as_str();
                let got = match read {
                    Read::Tasks => Got::Tasks(
                        tokio::time::timeout(FIGURES_WAIT, jm.job_tasks(jid))
                            .await
                            .ok()
                            .and_then(Result::ok),
                    ),
                    Read::Checkpoint => Got::Checkpoint(
                        tokio::time::timeout(FIGURES_WAIT, jm.checkpoint_stats(jid))
                            .await
                            .ok()
                            .and_then(Result::ok),
                    ),
                    Read::Interval => Got::Interval(
                        tokio::time::timeout(FIGURES_WAIT, jm.checkpoint_config(jid))
                            .await
                            .ok()
                            .and_then(Result::ok),
                    ),
                };
                (i, id, got)
            });
        }
        let mut tasks = vec![None; handles.len()];
        while let Some(done) = calls.join_next().await {
            let Ok((i, id, got)) = done else {
                continue;
            };
            let point = match &got {
                Got::Checkpoint(Some(stats)) => super::flink::answers::newest_state_point(stats),
                _ => None,
            };
            if let Some(p) = point {
                self.kept.keep(&id, self.job_tag(&id).as_deref(), &p);
            }
            let mut watches = lock(&self.watches);
            let Some(w) = watches.get_mut(&id) else {
                continue;
            };
            match got {
                Got::Tasks(Some(n)) => {
                    w.tasks = Some(sweep);
                    tasks[i] = n;
                }
                Got::Checkpoint(Some(stats)) => {
                    w.checked = Some(reads::checked_of(&stats, now_ms));
                }
                Got::Interval(Some(config)) => w.interval = reads::interval_of(config.as_ref()),
                // No answer: asked again when the plan says so (at the latest next sweep).
                Got::Tasks(None) | Got::Checkpoint(None) | Got::Interval(None) => {}
            }
        }
        tasks
    }

    /// The `jk-job-` tag of application `id`, as the RM listed it.
    fn job_tag(&self, id: &str) -> Option<String> {
        lock(&self.apps)
            .get(id)
            .and_then(App::job_tag)
            .map(str::to_string)
    }

    /// What run `handle` left when its JobManager cannot tell: the newest checkpoint read
    /// while it ran, else `why`.
    fn kept_point(&self, handle: &RunHandle, why: String) -> StateLeft {
        let id = apps::split_id(&handle.engine_id).0;
        match self.kept.newest(id) {
            Some(p) => {
                tracing::info!(app = %id, checkpoint = %p.location, "its JobManager is gone ({why}); the newest checkpoint read while it ran");
                StateLeft::Point(p)
            }
            None => StateLeft::Nothing(format!(
                "{why}; no checkpoint read while it ran is still there"
            )),
        }
    }

    /// The last lines of the run's log (the CLI's output), secrets masked.
    fn cli_tail(req: &SubmitRequest) -> String {
        crate::build::log_tail_masked(&req.log_path, CLI_LINES, &req.secrets)
    }

    /// Submits a run in application mode through the CLI, bounded by `accepted_timeout`.
    async fn submit_application(&self, req: &SubmitRequest) -> Result<RunHandle, EngineError> {
        let version = self.version.clone().ok_or_else(|| {
            EngineError::Refused(format!(
                "cannot tell the Flink version of {}: it has no lib/flink-dist-*.jar",
                self.settings.flink_home.display()
            ))
        })?;
        let token = run_token(&self.salt, &req.job, req.run_id);
        let jar = req.artifact.clone().unwrap_or_default();
        let run = submit::CliRun {
            job: &req.job,
            run_id: req.run_id,
            token: &token,
            params: &req.params,
            jar: &jar,
            restore: req.restore.as_deref(),
        };
        // The RM must answer (and take jobkeeper's credentials) before anything is submitted;
        // an application already tagged with this run is this run.
        let tag = format!("{}{token}", apps::RUN_TAG);
        if let Some(a) = self.tagged(&tag).await?.into_iter().find(App::is_live) {
            return Ok(RunHandle {
                run_id: req.run_id,
                engine_id: a.id.clone(),
                start_ticks: None,
                cluster: self.cluster(),
            });
        }
        let argv = submit::argv(&self.settings, &version, &run);
        let cli = submit::cli(&self.settings.flink_home);
        if let Some(dir) = req.log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&req.log_path)
            .map_err(|e| EngineError::Other(format!("cannot open the run's log: {e}")))?;
        let err = log
            .try_clone()
            .map_err(|e| EngineError::Other(format!("cannot open the run's log: {e}")))?;
        write_log(
            &req.log_path,
            &format!(
                "submitting to yarn {} with {} (Flink {version}), run tag {}{token}\n",
                self.rm.names(),
                cli.display(),
                apps::RUN_TAG
            ),
        )
        .await;
        let mut cmd = tokio::process::Command::new(&cli);
        cmd.args(&argv)
            .env_clear()
            .envs(submit::env(&self.settings, self.kerberos.as_ref()))
            .current_dir(&self.settings.flink_home)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = crate::proc::GroupChild::spawn(&mut cmd).map_err(|e| {
            EngineError::Refused(format!("cannot run the Flink CLI {}: {e}", cli.display()))
        })?;
        let started = tokio::time::Instant::now();
        let mut accepted_since: Option<tokio::time::Instant> = None;
        let mut exited: Option<(std::process::ExitStatus, tokio::time::Instant)> = None;
        let mut rm_error: Option<EngineError>;
        loop {
            if exited.is_none()
                && let Ok(Ok(st)) = tokio::time::timeout(SUBMIT_POLL, child.wait()).await
            {
                exited = Some((st, tokio::time::Instant::now()));
            }
            let found = match self.tagged(&tag).await {
                Ok(l) => {
                    rm_error = None;
                    l.into_iter().next()
                }
                Err(e) => {
                    rm_error = Some(e);
                    None
                }
            };
            if let Some(a) = &found {
                lock(&self.apps).insert(a.id.clone(), a.clone());
            }
            match (&found, exited) {
                (Some(a), Some((st, _))) if st.success() && a.state == "RUNNING" => {
                    let note = format!(
                        "yarn application {} RUNNING, JobManager {}\n",
                        a.id,
                        a.jobmanager().unwrap_or_default()
                    );
                    write_log(&req.log_path, &note).await;
                    self.kept.prune_job(&apps::job_tag(&req.job), Some(&a.id));
                    return Ok(RunHandle {
                        run_id: req.run_id,
                        engine_id: a.id.clone(),
                        start_ticks: None,
                        cluster: self.cluster(),
                    });
                }
                (Some(a), Some((st, _))) if st.success() && !a.is_live() => {
                    return Err(EngineError::Refused(format!(
                        "yarn application {} ended {} ({}) while it was deployed: {}",
                        a.id, a.state, a.final_status, a.diagnostics
                    )));
                }
                (found, Some((st, _))) if !st.success() => {
                    if let Some(a) = found.as_ref().filter(|a| a.is_live()) {
                        let _ = self.kill(&a.id, KILL_WAIT).await;
                    }
                    return Err(EngineError::Refused(format!(
                        "the Flink CLI failed ({st}):\n{}",
                        Self::cli_tail(req)
                    )));
                }
                (None, Some((_, at))) if at.elapsed() > LISTED_WAIT => {
                    if let Some(e) = rm_error {
                        // The application may exist: it is looked up by its tag later.
                        return Err(e);
                    }
                    return Err(EngineError::Refused(format!(
                        "the Flink CLI exited 0 but the RM lists no application tagged {tag} \
                         after {}:\n{}",
                        humantime::format_duration(LISTED_WAIT),
                        Self::cli_tail(req)
                    )));
                }
                _ => {}
            }
            let waiting = match &found {
                Some(a) if a.is_live() && a.state != "RUNNING" => accepted_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed(),
                None if exited.is_none() => started.elapsed(),
                _ => Duration::ZERO,
            };
            if waiting > self.settings.accepted_timeout {
                // SIGTERM first: the CLI's deployment failure hook kills what it deployed.
                let _ = child.signal_group(nix::sys::signal::Signal::SIGTERM);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                child.kill_group();
                let what = match &found {
                    Some(a) => {
                        let killed = self.kill(&a.id, KILL_WAIT).await;
                        format!(
                            "yarn application {} stayed {} in queue {} for {} and was killed{}: {}",
                            a.id,
                            a.state,
                            a.queue,
                            humantime::format_duration(self.settings.accepted_timeout),
                            killed
                                .err()
                                .map(|e| format!(" (the kill failed: {e})"))
                                .unwrap_or_default(),
                            if a.diagnostics.is_empty() {
                                "the RM gave no diagnostics"
                            } else {
                                a.diagnostics.as_str()
                            }
                        )
                    }
                    None => format!(
                        "the Flink CLI made no application within {}: stopped",
                        humantime::format_duration(self.settings.accepted_timeout)
                    ),
                };
                write_log(&req.log_path, &format!("{what}\n")).await;
                return Err(EngineError::Refused(format!(
                    "{what}\n{}",
                    Self::cli_tail(req)
                )));
            }
            if exited.is_some() {
                tokio::time::sleep(SUBMIT_POLL).await;
            }
        }
    }
}

/// What one JobManager read of a sweep got (`None`: no answer).
enum Got {
    /// The job's task count, when its JobManager lists it RUNNING.
    Tasks(Option<Option<u64>>),
    /// The checkpoint statistics.
    Checkpoint(Option<serde_json::Value>),
    /// The checkpoint configuration (`None` inside: checkpointing not enabled).
    Interval(Option<Option<serde_json::Value>>),
}

/// The one live Flink job of an application's JobManager (an application adopted without
/// tags), else its one live job named as the application, else the live job that started
/// nearest the application (within a minute: a JobManager serving several applications).
async fn only_job(jm: &FlinkEngine, app: &App) -> Result<String, EngineError> {
    let live: Vec<_> = jm
        .overview()
        .await?
        .into_iter()
        .filter(|j| super::flink::version::is_live(&j.state))
        .collect();
    if let [one] = live.as_slice() {
        return Ok(one.engine_id.clone());
    }
    let named: Vec<_> = live.iter().filter(|j| j.name == app.name).collect();
    if let [one] = named.as_slice() {
        return Ok(one.engine_id.clone());
    }
    let nearest = app.started_ms.and_then(|at| {
        live.iter()
            .filter_map(|j| Some((j.since_ms?.abs_diff(at), j)))
            .filter(|(d, _)| *d <= 60_000)
            .min_by_key(|(d, _)| *d)
            .map(|(_, j)| j.engine_id.clone())
    });
    match nearest {
        Some(jid) => Ok(jid),
        None => Err(EngineError::Other(format!(
            "yarn application {}: its JobManager runs {} live jobs, {} named {}",
            app.id,
            live.len(),
            named.len(),
            app.name
        ))),
    }
}

#[async_trait::async_trait]
impl Engine for YarnEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Yarn
    }

    fn location(&self) -> String {
        format!("yarn {}", self.rm.names())
    }

    /// A SQL job's planner error names the statement and its line: placed in the job file.
    fn place_refusal(&self, spec: &crate::spec::JobSpec, reason: &str) -> Option<String> {
        crate::spec::place_flink_error(spec.sql.as_ref()?, reason)
    }

    fn cluster(&self) -> Option<String> {
        Some(format!("yarn {}", self.settings.rm.join(",")))
    }

    fn url(&self) -> Option<String> {
        self.settings.rm.first().cloned()
    }

    fn version(&self) -> Option<String> {
        if self.settings.session.is_some()
            && let Some(jm) = lock(&self.session_jm).as_ref()
        {
            return jm.version();
        }
        self.version.as_ref().map(ToString::to_string)
    }

    /// Finds the active RM (`cluster/info`); one that does not answer is not fatal.
    async fn probe(&self) -> Result<(), EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.probe().await;
        }
        self.rm
            .get("/ws/v1/cluster/info", &[])
            .await
            .map(|_| ())
            .map_err(|e| self.rm_error(e))
    }

    async fn preflight(&self, req: &SubmitRequest) -> Result<(), EngineError> {
        require_jar("yarn", req)?;
        let cli = submit::cli(&self.settings.flink_home);
        if !cli.is_file() {
            return Err(EngineError::Refused(format!(
                "the Flink CLI {} does not exist (check `yarn.flink_home`)",
                cli.display()
            )));
        }
        if let Some(k) = &self.kerberos {
            k.check_keytab()
                .map_err(|e| EngineError::Refused(e.to_string()))?;
        }
        Ok(())
    }

    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError> {
        if let Some(name) = &self.settings.session {
            require_jar("yarn", &req)?;
            let jm = self.session(name).await?;
            let r = jm.submit(req).await;
            if let Err(e) = &r {
                self.session_lost(e);
            }
            return r.map(|h| self.recorded(h));
        }
        self.preflight(&req).await?;
        self.submit_application(&req).await
    }

    /// The statuses alone: the RM's list, no JobManager read.
    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError> {
        if self.settings.session.is_some() {
            return Ok(self.survey(handles).await?.statuses);
        }
        let live = self.list_live().await?;
        let by_id: HashMap<&str, &App> = live.iter().map(|a| (a.id.as_str(), a)).collect();
        Ok(self.statuses(&by_id, handles).await)
    }

    async fn survey(&self, handles: &[RunHandle]) -> Result<Survey, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            let inner: Vec<RunHandle> = handles.iter().map(|h| Self::to_session(&jm, h)).collect();
            let r = jm.survey(&inner).await;
            if let Err(e) = &r {
                self.session_lost(e);
            }
            return r;
        }
        let live = self.list_live().await?;
        let by_id: HashMap<&str, &App> = live.iter().map(|a| (a.id.as_str(), a)).collect();
        let statuses = self.statuses(&by_id, handles).await;
        let tasks = self.read_jobmanagers(&by_id, handles).await;
        Ok(Survey {
            statuses,
            live: Some(live.iter().map(App::cluster_job).collect()),
            tasks,
        })
    }

    /// The RM's list alone (one request): no JobManager is asked, and the status sweeps'
    /// schedule ([`reads`]) is not moved on.
    async fn live_jobs(&self) -> Result<Option<Vec<ClusterJob>>, EngineError> {
        if self.settings.session.is_some() {
            return Ok(self.survey(&[]).await?.live);
        }
        let live = self.list_live().await?;
        Ok(Some(live.iter().map(App::cluster_job).collect()))
    }

    async fn describe(&self, job: &ClusterJob) -> Result<JobDetails, EngineError> {
        if let Some(name) = &self.settings.session {
            return self.session(name).await?.describe(job).await;
        }
        let h = RunHandle {
            engine_id: job.engine_id.clone(),
            ..RunHandle::default()
        };
        let app = self.app_of(&h).await?;
        let (jm, fh) = self.on_jm(&h).await?;
        let inner = ClusterJob {
            engine_id: fh.engine_id.clone(),
            ..job.clone()
        };
        let mut d = jm.describe(&inner).await?;
        d.notes.push(format!(
            "yarn application {} in queue {}, tags [{}]",
            app.id,
            app.queue,
            app.tags.join(",")
        ));
        Ok(d)
    }

    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.stop(&Self::to_session(&jm, handle), grace).await;
        }
        let (id, _) = apps::split_id(&handle.engine_id);
        self.kill(id, grace.max(KILL_WAIT)).await?;
        self.wait_over(id, KILL_WAIT).await;
        Ok(())
    }

    /// Stop-with-savepoint on the application's JobManager; the application then finishes by
    /// itself (killed through the RM when it does not).
    async fn stop_with_savepoint(
        &self,
        handle: &RunHandle,
        grace: Duration,
    ) -> Result<StopOutcome, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm
                .stop_with_savepoint(&Self::to_session(&jm, handle), grace)
                .await;
        }
        let (id, _) = apps::split_id(&handle.engine_id);
        match self.app(id).await? {
            None => return Ok(StopOutcome::default()),
            Some(a) if !a.is_live() => return Ok(StopOutcome::default()),
            Some(_) => {}
        }
        let (jm, fh) = self.on_jm(handle).await?;
        let outcome = jm.stop_with_savepoint(&fh, grace).await?;
        if !self.wait_over(id, KILL_WAIT).await {
            self.kill(id, KILL_WAIT).await?;
        }
        Ok(outcome)
    }

    /// A savepoint taken by the run's JobManager (the session's, or the application's own).
    async fn savepoint(&self, handle: &RunHandle) -> Result<StatePoint, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.savepoint(&Self::to_session(&jm, handle)).await;
        }
        let (jm, fh) = self.on_jm(handle).await?;
        jm.savepoint(&fh).await
    }

    /// The run's newest retained checkpoint, from its JobManager.
    async fn last_state(
        &self,
        handle: &RunHandle,
        max_age: Duration,
    ) -> Result<Option<StatePoint>, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.last_state(&Self::to_session(&jm, handle), max_age).await;
        }
        let (jm, fh) = self.on_jm(handle).await?;
        let point = jm.last_state(&fh, max_age).await?;
        if let Some(p) = &point {
            let id = apps::split_id(&handle.engine_id).0;
            self.kept.keep(id, self.job_tag(id).as_deref(), p);
        }
        Ok(point)
    }

    /// In session mode, the yarn-session's JobManager disposes of it. In application mode the
    /// JobManager that took it ended with its application, but any JobManager of jobkeeper's
    /// RUNNING applications on these RMs reads the same savepoint storage as the same user: the
    /// first of them (at most [`DISPOSERS`]) that answers disposes of it
    /// (`POST /savepoint-disposal`). With none running it is refused: a `file:` savepoint's
    /// folder is then deleted by the caller, any other is tried again at a later pass.
    async fn dispose_savepoint(&self, location: &str) -> Result<(), EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.dispose_savepoint(location).await;
        }
        let mut running: Vec<App> = self
            .list_live()
            .await?
            .into_iter()
            .filter(|a| {
                a.state == "RUNNING"
                    && a.jobmanager().is_some()
                    && a.tags.iter().any(|t| t == apps::TAG)
            })
            .collect();
        running.sort_by_key(|a| std::cmp::Reverse(a.started_ms));
        let mut tried = Vec::new();
        for app in running.iter().take(DISPOSERS) {
            let url = app.jobmanager().unwrap_or_default();
            match self.jm(&url)?.dispose_savepoint(location).await {
                Ok(()) => {
                    tracing::info!(savepoint = %location, app = %app.id, "disposed of by the JobManager of a running application");
                    return Ok(());
                }
                Err(EngineError::Unreachable(e)) => tried.push(format!("{}: {e}", app.id)),
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Refused(if tried.is_empty() {
            format!(
                "no application of jobkeeper's runs on yarn {} whose JobManager could dispose of \
                 {location} (the one that took it ended with its application); tried again later",
                self.rm.names()
            )
        } else {
            format!(
                "no JobManager of jobkeeper's running applications answered to dispose of \
                 {location}: {}",
                tried.join("; ")
            )
        }))
    }

    async fn restore_point(&self, handle: &RunHandle) -> Result<StateLeft, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.restore_point(&Self::to_session(&jm, handle)).await;
        }
        let (jm, fh) = match self.on_jm(handle).await {
            Ok(x) => x,
            Err(e) => return Ok(self.kept_point(handle, e.to_string())),
        };
        match jm.restore_point(&fh).await {
            Ok(s) => Ok(s),
            Err(EngineError::Unreachable(e)) => Ok(self.kept_point(
                handle,
                format!(
                    "the JobManager of {} is gone with its application ({e})",
                    handle.engine_id
                ),
            )),
            Err(e) => Err(e),
        }
    }

    async fn wait_started(&self, handle: &RunHandle, limit: Duration) -> Result<(), EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.wait_started(&Self::to_session(&jm, handle), limit).await;
        }
        let (jm, fh) = self.on_jm(handle).await?;
        jm.wait_started(&fh, limit).await
    }

    /// One `GET /jobs/{id}/metrics` per run at its own JobManager (health figures and the
    /// newest checkpoint, which is kept), all at once; start times from the RM's list. A run
    /// whose JobManager this sweep's status call asked already (its task count) has no figures
    /// this sweep: at most one request per application per sweep.
    async fn health(
        &self,
        handles: &[RunHandle],
        _live: Option<&[ClusterJob]>,
    ) -> Result<Vec<Option<HealthFacts>>, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            let inner: Vec<RunHandle> = handles.iter().map(|h| Self::to_session(&jm, h)).collect();
            return jm.health(&inner, _live).await;
        }
        let sweep = self.sweeps.load(Ordering::Relaxed);
        let mut calls = tokio::task::JoinSet::new();
        let mut out = vec![None; handles.len()];
        for (i, h) in handles.iter().enumerate() {
            let id = apps::split_id(&h.engine_id).0;
            let asked = {
                let mut watches = lock(&self.watches);
                let w = watches
                    .entry(id.to_string())
                    .or_insert_with(|| Watch::new(id));
                w.health = Some(sweep);
                w.asked == Some(sweep)
            };
            if asked {
                continue;
            }
            let Ok((jm, fh)) = self.on_jm(h).await else {
                continue;
            };
            if let Some(w) = lock(&self.watches).get_mut(id) {
                w.asked = Some(sweep);
            }
            let started = lock(&self.apps)
                .get(id)
                .and_then(|a| a.started_ms)
                .unwrap_or_default();
            let id = id.to_string();
            calls.spawn(async move {
                let read = tokio::time::timeout(FIGURES_WAIT, jm.figures(&fh, started)).await;
                (i, id, read.ok().and_then(Result::ok))
            });
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        while let Some(done) = calls.join_next().await {
            let Ok((i, id, Some((facts, point)))) = done else {
                continue;
            };
            if let Some(p) = point {
                self.kept.keep(&id, self.job_tag(&id).as_deref(), &p);
            }
            if let Some(w) = lock(&self.watches).get_mut(&id) {
                // The figures say which checkpoint completed last, not when the next can come.
                w.checked = Some(reads::Checked {
                    at_ms: now_ms,
                    last_trigger_ms: None,
                    open: true,
                });
            }
            out[i] = Some(facts);
        }
        Ok(out)
    }

    async fn vertices(&self, handle: &RunHandle) -> Result<Vec<Vertex>, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm.vertices(&Self::to_session(&jm, handle)).await;
        }
        let (jm, fh) = self.on_jm(handle).await?;
        jm.vertices(&fh).await
    }

    async fn requested_parallelism(
        &self,
        handle: &RunHandle,
    ) -> Result<HashMap<String, u32>, EngineError> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await?;
            return jm
                .requested_parallelism(&Self::to_session(&jm, handle))
                .await;
        }
        let (jm, fh) = self.on_jm(handle).await?;
        jm.requested_parallelism(&fh).await
    }

    async fn latest_checkpoint_ms(&self, handle: &RunHandle) -> Option<i64> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await.ok()?;
            return jm
                .latest_checkpoint_ms(&Self::to_session(&jm, handle))
                .await;
        }
        let (jm, fh) = self.on_jm(handle).await.ok()?;
        jm.latest_checkpoint_ms(&fh).await
    }

    async fn root_exception(&self, handle: &RunHandle) -> Option<String> {
        if let Some(name) = &self.settings.session {
            let jm = self.session(name).await.ok()?;
            return jm.root_exception(&Self::to_session(&jm, handle)).await;
        }
        let (jm, fh) = self.on_jm(handle).await.ok()?;
        jm.root_exception(&fh).await
    }

    async fn run_output(&self, handle: &RunHandle, lines: usize) -> RunOutput {
        if let Some(name) = &self.settings.session {
            return match self.session(name).await {
                Ok(jm) => jm.run_output(&Self::to_session(&jm, handle), lines).await,
                Err(e) => RunOutput::Unavailable(e.to_string()),
            };
        }
        match self.on_jm(handle).await {
            Ok((jm, fh)) => jm.run_output(&fh, lines).await,
            Err(e) => RunOutput::Unavailable(e.to_string()),
        }
    }

    /// `/TOKEN`: the run's token, also its tag and Flink job id; the application id is not
    /// known before the RM lists it.
    fn engine_id_for(&self, job: &str, run_id: i64) -> Option<String> {
        if let Some(name) = &self.settings.session {
            let _ = name;
            return Some(super::flink::job_id(&self.salt, job, run_id));
        }
        Some(format!("/{}", run_token(&self.salt, job, run_id)))
    }

    fn runs_survive_daemon(&self) -> bool {
        true
    }

    /// A recorded application is adopted. A run whose submit was in flight when the daemon
    /// stopped is looked up by its run tag: adopted when the RM lists it, never started when
    /// the RM answers without it.
    async fn recover(&self, run: &RecordedRun<'_>) -> Recovery {
        if let Some(name) = &self.settings.session {
            return match self.session(name).await {
                Ok(jm) => match jm.recover(run).await {
                    Recovery::Adopt(h) => Recovery::Adopt(self.recorded(h)),
                    other => other,
                },
                // The session cannot be asked: the recorded run is adopted (never twice).
                Err(_) => match run.handle {
                    Some(h) => Recovery::Adopt(h.clone()),
                    None => Recovery::Stopped(format!(
                        "its submit was in flight and yarn-session {name} could not be asked"
                    )),
                },
            };
        }
        if let Some(h) = run.handle {
            return Recovery::Adopt(h.clone());
        }
        let token = run_token(&self.salt, run.job, run.run_id);
        match self.tagged(&format!("{}{token}", apps::RUN_TAG)).await {
            Ok(found) => match found.into_iter().find(App::is_live) {
                Some(a) => Recovery::Adopt(RunHandle {
                    run_id: run.run_id,
                    engine_id: a.id.clone(),
                    start_ticks: None,
                    cluster: self.cluster(),
                }),
                None => Recovery::NeverStarted(NEVER_STARTED.to_string()),
            },
            Err(e) => Recovery::Stopped(format!(
                "its submit was in flight and the RM could not be asked for it ({e})"
            )),
        }
    }

    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>> {
        None
    }

    /// The checkpoints kept for the job's applications go.
    async fn forget_job(&self, job: &str) {
        if self.settings.session.is_none() {
            self.kept.prune_job(&apps::job_tag(job), None);
        }
    }
}
