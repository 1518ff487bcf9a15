//! Engines: where runs happen. One trait, [`Engine`], one file per implementation.
//! [`EngineKind`] names an env's engine and [`EngineConfig`] holds that engine's settings; each
//! engine reads its own block of an env and checks its own params (see `kind.rs`).
//!
//! The reconciler hands an engine a fully resolved [`SubmitRequest`] (secrets already read) and
//! keeps the [`RunHandle`] it gets back in the store; everything the engine needs to find the run
//! again after a daemon restart lives in that handle.
//!
//! Cluster engines ([`flink`], [`spark`]) keep their runs when the daemon stops: their handles are adopted
//! by the next daemon. Their stops may take a savepoint ([`Engine::stop_with_savepoint`]), and a
//! failed run may leave a checkpoint to resume from ([`Engine::restore_point`]).

pub mod cluster;
pub mod flink;
mod kind;
pub mod local;
pub mod spark;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::spec::Params;

pub use kind::{EngineConfig, EngineKind};

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
}

/// What identifies a run to its engine; stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The store's run id.
    pub run_id: i64,
    /// Engine's id of the run (local: the pid).
    pub engine_id: String,
    /// local: the process start time in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// so a recycled pid is never mistaken for the run.
    pub start_ticks: Option<u64>,
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

/// What a stop left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// The savepoint taken while stopping, when one was.
    pub savepoint: Option<String>,
}

/// Errors of an engine, classed by what happens next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine refused the run (bad params, missing file): stalled until a new commit.
    #[error("refused: {0}")]
    Refused(String),
    /// The engine could not be reached: wait and retry.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// An engine. Implementations must be cheap to call concurrently for different runs.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// `local`, `flink` or `spark`.
    fn kind(&self) -> &'static str;

    /// Checks what can be checked before the running version is stopped for this one
    /// (local: the program exists, the working folder exists). The default checks nothing.
    async fn preflight(&self, _req: &SubmitRequest) -> Result<(), EngineError> {
        Ok(())
    }

    /// Starts a run.
    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError>;

    /// Status of many runs in one go (one request per cluster where the engine allows it).
    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError>;

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

    /// Where a run that ended can be resumed from (flink: its latest completed, retained
    /// checkpoint). The default: nowhere.
    async fn restore_point(&self, _handle: &RunHandle) -> Result<Option<String>, EngineError> {
        Ok(None)
    }

    /// The id the engine will give run `run_id` of `job`, when the engine lets the caller choose
    /// it (flink: the job id). A submit whose answer was lost can then be found, never repeated.
    fn engine_id_for(&self, _job: &str, _run_id: i64) -> Option<String> {
        None
    }

    /// A run whose submit was in flight when the daemon stopped, before the id the cluster
    /// chose for it was recorded (spark): the engine id of run `run_id` of `job`, a live run of
    /// `main_class` that started at or after `since_ms` (ms since the epoch). The default: none.
    async fn find_unrecorded(
        &self,
        _job: &str,
        _run_id: i64,
        _main_class: &str,
        _since_ms: u64,
    ) -> Result<Option<String>, EngineError> {
        Ok(None)
    }

    /// Where the engine is, for messages (flink: its REST URL).
    fn location(&self) -> String {
        self.kind().to_string()
    }

    /// Takes over the exit notifications of this engine (local: child exits are seen at once).
    /// Returns `None` after the first call and for engines that only answer `status`.
    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>>;
}
