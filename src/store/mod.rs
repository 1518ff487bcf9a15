//! The store: one SQLite file (WAL) under `state_dir` holding the applied commit, each job's
//! desired and applied spec, artifacts, runs with their engine handles, and the event history.
//!
//! Every write that must be atomic (a whole commit's desired specs and the applied commit) is one
//! transaction, so a crash at any point leaves either the old or the new state. The operations
//! are written once, as short blocking calls on [`Blocking`] (the connection sits behind a
//! mutex); async code calls them through [`Store`], which runs each on a blocking thread, so no
//! SQLite call runs on a runtime worker thread (see `handle`). Retention's calls hand the mutex
//! straight to a waiting caller when they end ([`parking_lot::MutexGuard::unlock_fair`]), and
//! retention copies the write-ahead log into the database from a connection of its own
//! ([`Checkpointer`]), so a job's write never waits for more than one small batch.
//!
//! Rows come back typed: states are enums, specs, artifacts and run handles are decoded here. A
//! value that does not decode is a [`StoreError::Decode`] naming the table, row and column; it is
//! never dropped silently.
//!
//! # Layout
//! - `handle`: [`Store`], the async handle: each operation on a blocking thread.
//! - this file: the [`Blocking`] operations' handle, opening, errors, the failed-write rule ([`Blocking::record`])
//!   and the decoding shared by the tables.
//! - `migrations`: the schema, numbered with `PRAGMA user_version`.
//! - `changed_by`: each changed job's own commit after a push of several ([`Store::set_changed_by`]).
//! - `generation`: a number every write moves ([`Store::generation`]), for what readers keep.
//! - `commits`: config commits and [`Blocking::apply_commit`], which writes a commit's desired specs.
//! - `jobs`: [`JobState`], job rows, their lists and counts.
//! - `conditions`: the stored facts a job's conditions are derived from ([`ConditionRow`]).
//! - `runs`: [`RunState`], run rows and their lifecycle.
//! - `events`: the event history and the sink that forwards events to the alerter.
//! - `alerts`: the alert deliveries made ([`AlertStatus`]).
//! - `savepoints`: Flink savepoints and retained checkpoints ([`SavepointKind`]); with
//!   `savepoint_history`, why each was taken, its disposal, and where runs started from.
//! - `versions`: each job's previous version (what a rollback starts again), the current
//!   version's probation, and the version a rollback refused.
//! - `install`: the installation id, which salts engine ids and run tokens.
//! - `retention`: deleting old runs and events in small batches; the artifacts still needed.

mod alerts;
mod changed_by;
mod commits;
mod conditions;
mod events;
mod facts;
mod generation;
mod handle;
mod held;
mod install;
mod jobs;
mod migrations;
mod retention;
mod runs;
mod savepoint_history;
mod savepoints;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, params};
use serde::de::DeserializeOwned;

pub use alerts::{AlertSentRow, AlertStatus, NewAlertSent};
pub use commits::{CommitRecord, DesiredUpdate};
pub use conditions::ConditionRow;
pub use events::{EventRow, EventSink, NewEvent, UNSTORED};
pub use facts::{Failure, Incident, Incidents, Place, Stage};
pub use generation::Generation;
pub use handle::Store;
pub use held::HeldChange;
pub use jobs::{Applied, JobListRow, JobQuery, JobRow, JobState};
pub use retention::{Checkpointer, PruneCandidate, PrunedRun};
pub use runs::{RunOrigin, RunRow, RunState, Running};
pub use savepoint_history::{Keep, NewSavepoint, SavepointCause, SavepointEntry};
pub use savepoints::{SavepointKind, SavepointRow};
pub use versions::{PreviousVersion, VersionsRow};

/// Blocking errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value could not be written as JSON.
    #[error("store: cannot encode a value: {0}")]
    Json(#[from] serde_json::Error),
    /// The file could not be created.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value did not decode into its type.
    #[error("store: {table} row `{row}`, column `{column}`: {detail}")]
    Decode {
        /// The table.
        table: &'static str,
        /// The row's key (job name, run id, ...).
        row: String,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The file was written by a newer jobkeeper, with a schema this one does not know.
    #[error(
        "store: schema version {found} is newer than this jobkeeper knows ({known}); upgrade jobkeeper"
    )]
    TooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The latest version this build knows.
        known: i64,
    },
    /// The runtime stopped before the call ran (the daemon is shutting down).
    #[error("store: the call was dropped while the daemon stopped")]
    Stopped,
}

type Result<T> = std::result::Result<T, StoreError>;

/// What a store call answers.
pub type StoreResult<T> = Result<T>;

/// The store's operations as blocking calls; cheap to clone. Async code calls them through
/// [`Store`], which runs them on blocking threads; call them directly only from a thread of
/// your own (a command at the terminal, a test thread), never from a runtime worker.
#[derive(Clone)]
pub struct Blocking {
    conn: Arc<Mutex<Connection>>,
    /// The store's file (`None` in memory): retention's [`Checkpointer`] opens it again.
    path: Option<PathBuf>,
    /// Where recorded events are forwarded (alerts); see [`Blocking::set_event_sink`].
    sink: Arc<Mutex<Option<EventSink>>>,
    /// Writes that failed and were carried on from ([`Blocking::record`]).
    write_errors: Arc<AtomicU64>,
    /// Reads that failed and were carried on from ([`Blocking::read_or_log`]).
    read_errors: Arc<AtomicU64>,
    /// This host's name, recorded with each run it starts.
    node: Arc<str>,
}

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Blocking {
    /// Opens (creating) the store file, in WAL mode, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Blocking> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Reads through a memory map instead of copying pages: lists of 10,000 jobs stay fast.
        conn.pragma_update(None, "mmap_size", 256_i64 * 1024 * 1024)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Blocking::with(conn, Some(path.to_path_buf()))
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Blocking> {
        Blocking::with(Connection::open_in_memory()?, None)
    }

    fn with(conn: Connection, path: Option<PathBuf>) -> Result<Blocking> {
        migrations::migrate(&conn)?;
        Ok(Blocking {
            conn: Arc::new(Mutex::new(conn)),
            path,
            sink: Arc::default(),
            write_errors: Arc::default(),
            read_errors: Arc::default(),
            node: node_name().into(),
        })
    }

    /// The connection. (A panic while holding the lock cannot leave SQLite inconsistent, and
    /// this mutex is not poisoned by one.)
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// The rule for a failed write whose caller carries on (see docs/operations.md, "When a
    /// store write fails"): the error is logged at error level with the job and what was being
    /// written, and counted in `jobkeeper_store_write_errors_total`. The daemon's in-memory
    /// state stays authoritative; the next write of the same thing retries it. Returns the
    /// value when the write succeeded.
    pub fn record<T>(
        &self,
        job: Option<&str>,
        what: impl std::fmt::Display,
        result: Result<T>,
    ) -> Option<T> {
        let failed = || format!("write failed ({what}); carrying on");
        carried_on(&self.write_errors, job, failed, result)
    }

    /// Writes that failed and were carried on from since the store was opened.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// The rule for a failed read whose caller carries on without its answer (see
    /// docs/operations.md, "When a store read fails"): the error is logged at error level with
    /// the job and what was being read, and counted in `jobkeeper_store_read_errors_total`.
    /// Returns the value when the read succeeded. A `None` here is not "nothing stored": each
    /// caller decides what is safe without the answer (an actor keeps its job and looks again,
    /// an alert goes to every channel, ...). Callers that can return the error do so instead.
    pub fn read_or_log<T>(
        &self,
        job: Option<&str>,
        what: impl std::fmt::Display,
        result: Result<T>,
    ) -> Option<T> {
        let failed = || format!("read failed ({what})");
        carried_on(&self.read_errors, job, failed, result)
    }

    /// Reads that failed and were carried on from since the store was opened.
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// A small write that proves the store takes writes (for the watchdog).
    pub fn heartbeat(&self) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('heartbeat', ?1)
             ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![now_ms().to_string()],
        )?;
        Ok(())
    }

    /// SQLite's `PRAGMA integrity_check` answer (`ok` when fine).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// This host's name (the kernel's, as `hostname` prints it), `unknown` when it cannot be read.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Which value is being decoded: the table and row, for [`StoreError::Decode`].
struct At<'a> {
    table: &'static str,
    row: &'a dyn std::fmt::Display,
}

impl At<'_> {
    fn error(&self, column: &'static str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Decode {
            table: self.table,
            row: self.row.to_string(),
            column,
            detail: detail.to_string(),
        }
    }

    /// A JSON column, `NULL` being `None`.
    fn json<T: DeserializeOwned>(
        &self,
        column: &'static str,
        text: Option<String>,
    ) -> Result<Option<T>> {
        text.map(|t| serde_json::from_str(&t).map_err(|e| self.error(column, e)))
            .transpose()
    }

    /// A column holding one word of a closed set (a state, a kind, an engine): `parse` gives
    /// `None` for a word it does not know, an error naming the column (`unknown state `x``).
    fn word<T>(&self, column: &'static str, word: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        parse(word).ok_or_else(|| self.error(column, format!("unknown {column} `{word}`")))
    }
}

/// Collects rows mapped to `rusqlite::Result<Result<T>>` (SQLite errors outside, decode errors
/// inside).
fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<Result<T>>>) -> Result<Vec<T>> {
    rows.map(|r| r?).collect()
}

/// The value of `result`, or, when it failed, `None` after logging the error at error level
/// (with the job as a field when there is one) and counting it in `count`: the one shape of
/// [`Blocking::record`] and [`Blocking::read_or_log`].
fn carried_on<T>(
    count: &AtomicU64,
    job: Option<&str>,
    failed: impl FnOnce() -> String,
    result: Result<T>,
) -> Option<T> {
    let err = match result {
        Ok(v) => return Some(v),
        Err(err) => err,
    };
    count.fetch_add(1, Ordering::Relaxed);
    let failed = failed();
    match job {
        Some(job) => tracing::error!(job, "store {failed}: {err}"),
        None => tracing::error!("store {failed}: {err}"),
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A commit `id` by Ann.
    pub(crate) fn commit(id: &str) -> CommitRecord {
        CommitRecord {
            id: id.into(),
            author: "Ann <ann@example.com>".into(),
            subject: "s".into(),
        }
    }

    /// A valid spec for job `name` (file `jobs/<name>.yaml`) in `env`.
    pub(crate) fn spec_update(name: &str, env: &str) -> DesiredUpdate {
        let yaml = format!("env: {env}\nparams:\n  command: [\"true\"]\n");
        let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
        DesiredUpdate::Spec {
            name: name.into(),
            path: format!("jobs/{name}.yaml"),
            spec: serde_json::to_string(&spec).unwrap(),
            hash: format!("hash-{name}"),
        }
    }

    #[test]
    fn a_failed_write_is_counted_and_carried_on_from() {
        let s = Blocking::in_memory().unwrap();
        assert_eq!(s.record(Some("a"), "state", Ok(3)), Some(3));
        assert_eq!(s.write_errors(), 0);
        s.conn().execute_batch("DROP TABLE runs").unwrap();
        let failed = s.finish_run(1, RunState::Failed, None);
        assert_eq!(s.record(Some("a"), "run end", failed), None);
        assert_eq!(s.clone().write_errors(), 1);
    }

    #[test]
    fn a_failed_read_is_counted_apart_from_failed_writes() {
        let s = Blocking::in_memory().unwrap();
        assert_eq!(s.read_or_log(None, "runs", Ok(2)), Some(2));
        s.conn().execute_batch("DROP TABLE runs").unwrap();
        assert_eq!(s.read_or_log(Some("a"), "runs", s.runs("a", 1)), None);
        assert_eq!((s.clone().read_errors(), s.write_errors()), (1, 0));
    }
}
