//! Engines: where runs happen. One trait, [`Engine`], one file per implementation.
//! [`EngineKind`] names an env's engine and [`EngineConfig`] holds that engine's settings; each
//! engine reads its own block of an env and checks its own params (see `kind.rs`).
//!
//! The reconciler hands an engine a fully resolved [`SubmitRequest`] (secrets already read) and
//! keeps the [`RunHandle`] it gets back in the store; everything the engine needs to find the run
//! again after a daemon restart lives in that handle.
//!
//! Cluster engines ([`flink`], [`spark`], [`yarn`]) keep their runs when the daemon stops: their handles are adopted
//! by the next daemon. Their stops may take a savepoint ([`Engine::stop_with_savepoint`]), and a
//! failed run may leave a checkpoint to resume from ([`Engine::restore_point`]).

pub mod cluster;
pub mod flink;
mod kind;
pub mod local;
pub mod registry;
pub mod spark;
pub mod yarn;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::spec::{JobSpec, Params};

pub use kind::{EngineConfig, EngineKind};
pub use registry::Engines;

/// The jars the daemon serves over its HTTP listener to the cluster workers that fetch a job's
/// jar (spark workers), at URLs keyed by the state folder's `artifact.key`.
pub type ServedJars = spark::artifacts::Shelf;

/// One submission, ready to go.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// Job name.
    pub job: String,
    /// The store's run id.
    pub run_id: i64,
    /// Params with `${secret:..}` already replaced (never log these).
    pub params: Params,
    /// The built artifact (file, or the checkout folder when nothing is built).
    pub artifact: Option<PathBuf>,
    /// The project checkout folder, when the job has a project.
    pub checkout: Option<PathBuf>,
    /// Where the run's output goes.
    pub log_path: PathBuf,
    /// The artifact's content digest (sha256), when there is one: cluster engines upload it
    /// once per digest.
    pub digest: Option<String>,
    /// flink: the savepoint or checkpoint to start from.
    pub restore: Option<String>,
    /// The secret values in `params` (and a SQL job's statements): masked in whatever the
    /// engine writes to the run's log (a cluster's refusal may quote them).
    pub secrets: Vec<String>,
}

/// What identifies a run to its engine; stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The store's run id.
    pub run_id: i64,
    /// Engine's id of the run (local: the pid).
    pub engine_id: String,
    /// local: the process start time in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// so a recycled pid is never mistaken for the run.
    pub start_ticks: Option<u64>,
    /// The cluster the run was submitted to ([`Engine::cluster`]); `None` on local and for runs
    /// recorded before clusters were. A run whose env now names another cluster is moved there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// What an engine says about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Ended with success (local: exit 0).
    Succeeded,
    /// Ended with failure; the reason (exit code, signal, last log lines).
    Failed(String),
    /// The engine no longer knows it.
    Vanished,
    /// Someone else stopped it (flink: cancelled outside jobkeeper): a drift; what the engine said.
    CancelledOutside(String),
}

/// A run that ended, reported as soon as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunExit {
    /// Job name.
    pub job: String,
    /// The store's run id.
    pub run_id: i64,
    /// How it ended.
    pub status: RunStatus,
}

/// What an engine's own figures say about a live run's health (flink: its job metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthFacts {
    /// How many times the engine restarted the run since it was submitted (flink: `numRestarts`).
    pub restarts: u64,
    /// When its latest checkpoint completed (ms since the epoch), when one did.
    pub last_checkpoint_ms: Option<i64>,
    /// Whether the run checkpoints at all (it triggered at least one checkpoint).
    pub checkpoints: bool,
    /// When the run was submitted (ms since the epoch).
    pub started_ms: i64,
}

/// What a stop left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// The savepoint taken while stopping, when one was.
    pub savepoint: Option<String>,
}

/// Why a savepoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointCause {
    /// Stopping the run for a new version, a move or a restore.
    Upgrade,
    /// Stopping the job (suspended, removed, the daemon told to stop it).
    Stop,
    /// A periodic savepoint (`savepoints.schedule` or `every`).
    Periodic,
    /// An operator's `jobkeeper savepoint`.
    Manual,
    /// The newest checkpoint a run that ended left.
    Ended,
}

words!(SavepointCause {
    Upgrade => "upgrade",
    Stop => "stop",
    Periodic => "periodic",
    Manual => "manual",
    Ended => "ended",
});

/// A completed checkpoint or savepoint a run can start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePoint {
    /// Where it is (`file:/.../chk-42`, `s3://.../savepoint-...`).
    pub location: String,
    /// When it completed (ms since the epoch), when the engine says.
    pub taken_ms: Option<i64>,
}

/// What a run that ended left to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLeft {
    /// Its newest completed checkpoint or savepoint.
    Point(StatePoint),
    /// Nothing; why, in the engine's words (`flink job … completed no checkpoint`).
    Nothing(String),
}

/// How long a stopped run gets between SIGTERM and SIGKILL (local), or to stop (clusters).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A run the store recorded as live, as a new daemon finds it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedRun<'a> {
    /// Job name.
    pub job: &'a str,
    /// The store's run id.
    pub run_id: i64,
    /// Its handle, when the daemon recorded one before it stopped.
    pub handle: Option<&'a RunHandle>,
    /// Its log file.
    pub log_path: &'a Path,
    /// When it was recorded (ms since the epoch).
    pub started_at_ms: i64,
    /// The params of the version it runs (its job's applied or desired spec), when known: an
    /// engine that cannot tell its runs apart by a recorded id looks the run up by them.
    pub params: Option<&'a Params>,
}

/// What becomes of a recorded run when a new daemon starts (see [`Engine::recover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// It is live on the engine: its job's actor adopts it with this handle.
    Adopt(RunHandle),
    /// It was found and stopped (or could not be): the note says which.
    Stopped(String),
    /// It never started: the daemon stopped while submitting it.
    NeverStarted(String),
    /// The daemon stopped while submitting it, and the engine takes the run's id from
    /// jobkeeper: the run stays as recorded, and its job's actor looks for it by that id and
    /// submits it again under the same id when the cluster does not have it, so a submit that
    /// arrives late meets a duplicate.
    Unconfirmed,
}

/// The note of a run that never started because the daemon stopped while submitting it.
pub const NEVER_STARTED: &str = "never started: the daemon stopped while submitting it";

/// Errors of an engine, classed by what happens next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine refused the run (bad params, missing file): stalled until a new commit.
    #[error("refused: {0}")]
    Refused(String),
    /// The engine could not be reached: wait and retry.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The daemon's own host ran out of something the run needs (a full disk, file
    /// descriptors): the run waits on the host and the job's restart attempts are not spent.
    #[error("{0}")]
    Host(crate::host::HostFault),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A job live on a cluster, as its engine lists it (every job of a Flink cluster, every driver
/// of a Spark master), whoever started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterJob {
    /// The engine's id (flink: the job id; spark: the driver id).
    pub engine_id: String,
    /// Its name (flink: the job name; spark: the driver's main class).
    pub name: String,
    /// Its state as the engine says it (`RUNNING`, `RESTARTING`, ...).
    pub state: String,
    /// When it started (ms since the epoch, the cluster's clock), when the engine says.
    pub since_ms: Option<i64>,
}

/// What one batched status request tells: the status of each run asked about, and every live
/// job of the cluster (the same answer), when the engine can list them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// One status per handle asked about, in order.
    pub statuses: Vec<RunStatus>,
    /// Every live job of the cluster; `None` when the engine cannot list them.
    pub live: Option<Vec<ClusterJob>>,
    /// One entry per handle asked about (or none at all): the task count of a RUNNING run
    /// (flink: `tasks.total` of `/jobs/overview`, the sum of its vertices' parallelism), when
    /// the engine says. A change means the run was rescaled.
    pub tasks: Vec<Option<u64>>,
}

/// One stage of a live run and its parallelism (flink: a job vertex of `GET /jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    /// The engine's id of the stage (flink: the job vertex id, kept across rescales).
    pub id: String,
    /// Its name (`Source: clicks`, `count -> Sink: Writer`).
    pub name: String,
    /// How many parallel tasks it runs now.
    pub parallelism: u32,
    /// The most it can run (1: a stage that cannot run in parallel, such as a non-parallel
    /// source).
    pub max_parallelism: u32,
}

/// What an engine keeps of a run's output beyond the run's own log file (which holds only what
/// the daemon wrote while submitting a cluster run), for `jobkeeper logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutput {
    /// The engine keeps nothing more (local: the run's log file is its whole output).
    Nothing,
    /// What the engine keeps now.
    Kept {
        /// Where it came from (`spark driver … stderr, from worker http://…`).
        source: String,
        /// The text, at most the lines asked for.
        text: String,
    },
    /// The engine kept it once and no longer has it: why, in its terms.
    Gone(String),
    /// It could not be read now (the cluster does not answer, no UI is configured): why.
    Unavailable(String),
}

/// What an engine can tell of a job it runs, for `jobkeeper import`: the params a job file
/// needs to submit it again. Fields the engine cannot tell stay empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDetails {
    /// The entry class, when the cluster still knows it.
    pub main_class: Option<String>,
    /// Program arguments, when the cluster still knows them.
    pub args: Option<Vec<String>>,
    /// flink: the job's parallelism.
    pub parallelism: Option<u32>,
    /// Configuration the job runs with (flink: job config; spark: its Spark properties).
    pub conf: std::collections::BTreeMap<String, String>,
    /// The jar the job runs, as the cluster names it (flink: the uploaded jar's file name;
    /// spark: the driver's jar as submitted), when it tells.
    pub jar: Option<String>,
    /// Why `main_class` is empty, when the engine can say more than that it does not keep it.
    pub main_class_missing: Option<String>,
    /// Why `args` is empty, when the engine can say more than that it does not keep them.
    pub args_missing: Option<String>,
    /// What the engine could not tell, or where a value came from, one line each.
    pub notes: Vec<String>,
}

/// An engine. Implementations must be cheap to call concurrently for different runs.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// `local`, `flink` or `spark`.
    fn kind(&self) -> EngineKind;

    /// Checks what can be checked before the running version is stopped for this one
    /// (local: the program exists, the working folder exists). The default checks nothing.
    async fn preflight(&self, _req: &SubmitRequest) -> Result<(), EngineError> {
        Ok(())
    }

    /// Starts a run.
    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError>;

    /// Status of many runs in one go (one request per cluster where the engine allows it).
    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError>;

    /// [`Engine::status`] of `handles`, and every live job of the cluster from the same request
    /// (flink: `/jobs/overview`; spark: the master's `/json/`). The default lists nothing.
    async fn survey(&self, handles: &[RunHandle]) -> Result<Survey, EngineError> {
        Ok(Survey {
            statuses: self.status(handles).await?,
            ..Survey::default()
        })
    }

    /// Every live job of the cluster (one request); `None` when the engine cannot list them.
    async fn live_jobs(&self) -> Result<Option<Vec<ClusterJob>>, EngineError> {
        Ok(self.survey(&[]).await?.live)
    }

    /// What the cluster can tell of a live job, for `jobkeeper import`. The default: nothing.
    async fn describe(&self, _job: &ClusterJob) -> Result<JobDetails, EngineError> {
        Ok(JobDetails::default())
    }

    /// Stops a run gracefully, forcefully after `grace`. Stopping a run that already ended is Ok.
    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), EngineError>;

    /// Stops a run after taking a savepoint (flink: stop-with-savepoint), so its next version
    /// can start from it. Engines without savepoints just stop it (the default).
    async fn stop_with_savepoint(
        &self,
        handle: &RunHandle,
        grace: Duration,
    ) -> Result<StopOutcome, EngineError> {
        self.stop(handle, grace)
            .await
            .map(|()| StopOutcome::default())
    }

    /// Takes a savepoint of a live run, which keeps running (flink: `POST /jobs/{id}/savepoints`).
    /// Engines without savepoints refuse (the default).
    async fn savepoint(&self, _handle: &RunHandle) -> Result<StatePoint, EngineError> {
        Err(EngineError::Refused(format!(
            "the {} engine takes no savepoints",
            self.kind().as_str()
        )))
    }

    /// Disposes of a savepoint this engine's cluster took (flink: `POST /savepoint-disposal`).
    /// Engines without savepoints refuse (the default).
    async fn dispose_savepoint(&self, location: &str) -> Result<(), EngineError> {
        Err(EngineError::Refused(format!(
            "the {} engine cannot dispose of savepoint {location}",
            self.kind().as_str()
        )))
    }

    /// Where a live run's next run can start from if it is cancelled now (`upgrade:
    /// last-state`): its latest completed checkpoint, when one completed within `max_age` and
    /// outlives a cancel (flink: retained on cancellation). `None`: take a savepoint instead
    /// (the default).
    async fn last_state(
        &self,
        _handle: &RunHandle,
        _max_age: Duration,
    ) -> Result<Option<StatePoint>, EngineError> {
        Ok(None)
    }

    /// Where a run that ended can be resumed from (flink: its newest completed checkpoint or
    /// savepoint, when the cluster kept it), or why nowhere. The default: nowhere.
    async fn restore_point(&self, _handle: &RunHandle) -> Result<StateLeft, EngineError> {
        Ok(StateLeft::Nothing("its engine keeps no state".into()))
    }

    /// Waits, at most `limit`, until a run just submitted from a savepoint has its state back
    /// (flink: every task RUNNING). A run that fails first (its state no longer matches the
    /// savepoint, say) is stopped and [`EngineError::Refused`] with its reason. The default, and
    /// a run still starting after `limit`: Ok.
    async fn wait_started(&self, _handle: &RunHandle, _limit: Duration) -> Result<(), EngineError> {
        Ok(())
    }

    /// The health figures of live runs, one entry per handle (`None`: the engine has none for
    /// it). `live` is the cluster's live jobs as the same sweep's [`Engine::survey`] listed
    /// them, when it did (flink reads the runs' start times there instead of asking again).
    /// The default: none.
    async fn health(
        &self,
        handles: &[RunHandle],
        _live: Option<&[ClusterJob]>,
    ) -> Result<Vec<Option<HealthFacts>>, EngineError> {
        Ok(vec![None; handles.len()])
    }

    /// The stages of a live run with their parallelism now (flink: one `GET /jobs/{id}`).
    /// Empty when the engine cannot tell (the default).
    async fn vertices(&self, _handle: &RunHandle) -> Result<Vec<Vertex>, EngineError> {
        Ok(Vec::new())
    }

    /// The parallelism each stage of a live run asks for, when the engine may run it below that
    /// for want of slots (flink's adaptive scheduler: the upper bounds of
    /// `GET /jobs/{id}/resource-requirements`, which a rescale through Flink's REST API sets).
    /// Empty when stages run at what they ask (the default, and Flink's default scheduler).
    async fn requested_parallelism(
        &self,
        _handle: &RunHandle,
    ) -> Result<HashMap<String, u32>, EngineError> {
        Ok(HashMap::new())
    }

    /// When the latest checkpoint of a live run completed (ms since the epoch), read fresh
    /// from the engine's checkpoint statistics (flink: one `GET /jobs/{id}/checkpoints`). The
    /// health sweep's figures can lag (Flink serves metrics refreshed every
    /// `metrics.fetcher.update-interval`, 10 s by default), so a run they show past its
    /// `health.checkpoint_age` is confirmed here before it is called unhealthy. The default:
    /// none (nothing fresher is known).
    async fn latest_checkpoint_ms(&self, _handle: &RunHandle) -> Option<i64> {
        None
    }

    /// The root exception of a live run, when the engine keeps one (flink: the latest entry of
    /// its exception history). The default: none.
    async fn root_exception(&self, _handle: &RunHandle) -> Option<String> {
        None
    }

    /// What the engine keeps of a run's output, its last `lines` lines (spark: the driver's
    /// stderr from its worker's UI; flink: the job's state, root cause and exception
    /// history), or why it has none now. The default: [`RunOutput::Nothing`].
    async fn run_output(&self, _handle: &RunHandle, _lines: usize) -> RunOutput {
        RunOutput::Nothing
    }

    /// The jobkeeper job and run id a live cluster job (one no live run records) was submitted
    /// as by this installation, when it carries their proof (spark: a driver's launch
    /// properties, its token checked against the job and run); `None` when it carries none,
    /// another installation's, or the cluster cannot say now. The sweep kills such a job when
    /// the run is not its job's live run (`stray_killed`).
    async fn submitted_as(&self, _job: &ClusterJob) -> Option<(String, i64)> {
        None
    }

    /// The id the engine will give run `run_id` of `job`, when the engine lets the caller choose
    /// it (flink: the job id). A submit whose answer was lost can then be found, never repeated.
    fn engine_id_for(&self, _job: &str, _run_id: i64) -> Option<String> {
        None
    }

    /// Whether runs keep going when the daemon stops (cluster engines). Such runs are adopted by
    /// the next daemon, and a stop that does not reach the engine leaves the run live. Runs that
    /// do not survive (local children) stop with the daemon and are started again after it.
    fn runs_survive_daemon(&self) -> bool;

    /// What to do with a run the store recorded as live when a new daemon starts, before
    /// anything new is submitted: adopt it (it is live on the engine), or record it as stopped
    /// or never started. Never submits anything; a run is never left running twice.
    async fn recover(&self, run: &RecordedRun<'_>) -> Recovery;

    /// Asks the engine's cluster what it is (flink: its version, `GET /config`), at daemon
    /// start. [`EngineError::Refused`] means jobkeeper cannot drive it (a Flink older than
    /// 1.19); unreachable is not fatal (the version is read when it answers). The default:
    /// nothing to ask.
    async fn probe(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// The version of the engine's cluster, once known (flink: `flink-version`).
    fn version(&self) -> Option<String> {
        None
    }

    /// The cluster this engine drives, as recorded in [`RunHandle::cluster`] (flink: its REST
    /// URL); `None` for the local engine.
    fn cluster(&self) -> Option<String> {
        None
    }

    /// The URL of the cluster this engine drives, as lists of clusters show it (flink: its REST
    /// URL, spark: its master's REST URL); `None` for the local engine.
    fn url(&self) -> Option<String> {
        self.cluster()
    }

    /// The same engine, with the same settings, driving another cluster: for runs recorded on
    /// a cluster their env no longer names. `None` when the engine cannot.
    fn elsewhere(&self, _cluster: &str) -> Option<Arc<dyn Engine>> {
        None
    }

    /// Where the engine is, for messages (flink: its REST URL).
    fn location(&self) -> String {
        self.kind().as_str().to_string()
    }

    /// Where in the job file `spec` the engine's refusal `reason` of a submit points (flink:
    /// the SQL statement and line of a planner error), as `path:line:column: ...`. The
    /// default: nowhere.
    fn place_refusal(&self, _spec: &JobSpec, _reason: &str) -> Option<String> {
        None
    }

    /// What the engine needs to list its cluster's jobs, when [`Engine::live_jobs`] cannot
    /// (spark: the master's web UI), for messages. The default: nothing more can be done.
    fn listing_needs(&self) -> Option<&'static str> {
        None
    }

    /// Takes over the exit notifications of this engine (local: child exits are seen at once).
    /// Returns `None` after the first call and for engines that only answer `status`.
    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>>;

    /// The job was removed from the config repo and its runs were stopped: whatever the engine
    /// keeps to restart its runs goes (yarn: the checkpoints kept for its applications). The
    /// default: nothing is kept.
    async fn forget_job(&self, _job: &str) {}
}
