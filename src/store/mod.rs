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
mod copy;
mod events;
mod facts;
mod fence;
mod generation;
mod handle;
mod held;
mod install;
mod jobs;
mod migrations;
pub mod postgres;
mod reach;
mod requests;
mod retention;
mod runs;
mod savepoint_history;
mod savepoints;
pub mod sql;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use sql::{Lite, Sql};

pub use alerts::{AlertSentRow, AlertStatus, NewAlertSent};
pub use commits::{CommitRecord, DesiredUpdate};
pub use conditions::ConditionRow;
pub use copy::{Copied, TABLES};
pub use events::{EventRow, EventSink, NewEvent, UNSTORED};
pub use facts::{Failure, Incident, Incidents, Place, Stage};
pub use fence::{Fence, OnFenced};
pub use generation::Generation;
pub use handle::Store;
pub use held::HeldChange;
pub use jobs::{Applied, JobListRow, JobQuery, JobRow, JobState};
pub use requests::{Request, RequestKind};
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
    /// PostgreSQL said no, or its connection failed; shown with its causes (the server's
    /// message, or why the link failed), which are therefore not its `source`.
    #[error("store: postgres: {}", postgres::said(.0))]
    Postgres(tokio_postgres::Error),
    /// PostgreSQL did not answer in time.
    #[error("store: postgres: {0}")]
    Timeout(String),
    /// Every connection to PostgreSQL stayed busy.
    #[error("store: postgres: {0}")]
    Busy(String),
    /// The TLS settings for PostgreSQL cannot be used.
    #[error("store: postgres: {0}")]
    Tls(String),
    /// A column did not hold the type the store reads from it.
    #[error("store: column {index}: {detail}")]
    Column {
        /// The column's position in the answer.
        index: usize,
        /// What was found.
        detail: String,
    },
    /// Another daemon took the lease: this write was not made.
    #[error(
        "store: this daemon no longer holds the lease (its epoch {epoch} is stale: another \
         daemon took over); the write was not made"
    )]
    Fenced {
        /// The stale epoch.
        epoch: i64,
    },
    /// A query that must answer a row answered none.
    #[error("store: no row where one was expected")]
    NoRow,
    /// `migrate-store` into a store that already holds jobs.
    #[error(
        "store: the target already holds {count} {table}; migrate-store copies into an empty store only"
    )]
    TargetNotEmpty {
        /// How many rows.
        count: i64,
        /// Of which table.
        table: &'static str,
    },
    /// The operation exists for one backend only.
    #[error("store: {0} is not available on this backend")]
    Unsupported(&'static str),
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
    db: Arc<Db>,
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
    /// Whether the store answers ([`reach`]).
    reach: Arc<reach::Reach>,
    /// The lease writes are checked against, with `ha` ([`fence`]).
    fences: Arc<fence::Fences>,
}

/// The database behind a [`Blocking`].
enum Db {
    /// One SQLite connection; SQLite writes one at a time anyway.
    Sqlite(Mutex<Connection>),
    /// A pool of PostgreSQL connections.
    Postgres(Box<postgres::Pool>),
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
        Ok(Blocking::of(Db::Sqlite(Mutex::new(conn)), path))
    }

    /// Opens the store in the PostgreSQL database `target` names, and brings its schema up to
    /// date (once, under an advisory lock, when several daemons start at once). Its calls run
    /// their I/O on `rt`; call it, and the store's operations, from a blocking thread.
    pub fn open_postgres(
        target: &postgres::Target,
        rt: tokio::runtime::Handle,
    ) -> Result<Blocking> {
        let pool = postgres::Pool::connect(target, rt)?;
        migrations::migrate_postgres(&mut *pool.get()?)?;
        Ok(Blocking::of(Db::Postgres(Box::new(pool)), None))
    }

    fn of(db: Db, path: Option<PathBuf>) -> Blocking {
        Blocking {
            db: Arc::new(db),
            path,
            sink: Arc::default(),
            write_errors: Arc::default(),
            read_errors: Arc::default(),
            node: node_name().into(),
            reach: Arc::default(),
            fences: Arc::default(),
        }
    }

    /// This host's name, as the runs it starts record it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This store, recording `node` (`ha.node`) with the runs it starts; call it before the
    /// store is cloned.
    pub fn with_node(mut self, node: &str) -> Blocking {
        self.node = node.into();
        self
    }

    /// From now on every write through this store and its clones commits only while `fence`
    /// holds the lease (PostgreSQL; see [`fence`]).
    pub fn set_fence(&self, fence: Fence) {
        self.fences.set(fence);
    }

    /// Refuses every write from now on, without asking the database: this daemon steps down.
    pub fn depose(&self) {
        self.fences.depose();
    }

    /// The lease's epoch this daemon writes under (`ha`), recorded with its runs and events.
    fn epoch(&self) -> Option<i64> {
        self.fences.current().map(|f| f.epoch)
    }

    /// `f` hears of each write refused because another daemon took the lease.
    pub fn on_fenced(&self, f: OnFenced) {
        self.fences.on_fenced(f);
    }

    /// Which database holds the store.
    pub fn backend(&self) -> sql::Backend {
        match &*self.db {
            Db::Sqlite(_) => sql::Backend::Sqlite,
            Db::Postgres(_) => sql::Backend::Postgres,
        }
    }

    /// How many calls can use the database at once: SQLite's one connection, or the Postgres
    /// pool's size.
    pub(super) fn connections(&self) -> usize {
        match &*self.db {
            Db::Sqlite(_) => 1,
            Db::Postgres(pool) => pool.size(),
        }
    }

    /// The SQLite connection, for what only SQLite has (its pragmas, its file). (A panic while
    /// holding the lock cannot leave SQLite inconsistent, and this mutex is not poisoned by
    /// one.)
    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        match &*self.db {
            Db::Sqlite(c) => Ok(c.lock()),
            Db::Postgres(_) => Err(StoreError::Unsupported("a SQLite connection")),
        }
    }

    /// Runs `f` on a connection (statements outside a transaction each commit on their own).
    fn sql<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &*self.db {
            Db::Sqlite(c) => f(&mut Lite(&c.lock())),
            Db::Postgres(pool) => {
                let fence = self.fences.current();
                let out = pool.get().and_then(|mut conn| match &fence {
                    Some(fence) => {
                        let mut fenced = fence::FencedSql::new(&mut *conn, fence, &self.fences);
                        let out = f(&mut fenced);
                        fenced.finish(out)
                    }
                    None => f(&mut *conn),
                });
                self.fences.note(&out);
                self.note_reach(&out);
                out
            }
        }
    }

    /// The store, for logs and events: the SQLite file, or the Postgres URL without password.
    pub fn shown(&self) -> String {
        match &*self.db {
            Db::Sqlite(_) => self
                .path
                .as_ref()
                .map_or_else(|| "(in memory)".to_string(), |p| p.display().to_string()),
            Db::Postgres(pool) => pool.shown().to_string(),
        }
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &*self.db {
            Db::Sqlite(c) => {
                let mut conn = c.lock();
                let tx = conn.transaction()?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(pool) => {
                let fence = self.fences.current();
                let out = pool.get().and_then(|mut conn| {
                    conn.batch("BEGIN")?;
                    let checked = match &fence {
                        Some(fence) => self
                            .fences
                            .refused()
                            .and_then(|()| fence::check(&mut *conn, fence)),
                        None => Ok(()),
                    };
                    match checked.and_then(|()| f(&mut *conn)) {
                        Ok(out) => {
                            conn.batch("COMMIT")?;
                            Ok(out)
                        }
                        Err(e) => {
                            // A failed rollback leaves the connection broken: it is dropped.
                            let _ = conn.batch("ROLLBACK");
                            Err(e)
                        }
                    }
                });
                self.fences.note(&out);
                self.note_reach(&out);
                out
            }
        }
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
        let now = now_ms().to_string();
        self.sql(|db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                sql::p![now],
            )
        })?;
        Ok(())
    }

    /// Whether the store is whole: SQLite's `PRAGMA integrity_check` answer (`ok` when fine);
    /// on PostgreSQL, which checks its own pages, `ok` when the schema is the one this build
    /// writes.
    pub fn integrity_check(&self) -> Result<String> {
        match self.backend() {
            sql::Backend::Sqlite => {
                Ok(self
                    .conn()?
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
            }
            sql::Backend::Postgres => {
                let v: i64 =
                    self.sql(|db| db.one("SELECT version FROM jobkeeper_schema", sql::p![]))?;
                Ok(if v == migrations::LATEST {
                    "ok".to_string()
                } else {
                    format!(
                        "schema version {v}, this build writes {}",
                        migrations::LATEST
                    )
                })
            }
        }
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

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
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

    /// The runtime the Postgres stores of the tests run their I/O on.
    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
    }

    /// A new, empty store in its own schema of the PostgreSQL server
    /// `JOBKEEPER_TEST_POSTGRES_URL` names (scripts/test.sh starts one), or `None` without it.
    pub(crate) fn postgres_store() -> Option<Blocking> {
        Some(postgres_store_at(&postgres_target()?))
    }

    /// The store in `target` (made by [`postgres_target`]), opened and migrated.
    pub(crate) fn postgres_store_at(target: &postgres::Target) -> Blocking {
        Blocking::open_postgres(target, runtime().handle().clone()).unwrap()
    }

    /// A fresh schema of the test server, as a target (the store not yet opened in it).
    pub(crate) fn postgres_target() -> Option<postgres::Target> {
        let url = std::env::var("JOBKEEPER_TEST_POSTGRES_URL").ok()?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = url.clone();
        let create = schema.clone();
        runtime().block_on(async move {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .expect("JOBKEEPER_TEST_POSTGRES_URL answers");
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {create} CASCADE; CREATE SCHEMA {create}"
                ))
                .await
                .unwrap();
        });
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(postgres::Target {
            url: format!("{url}{sep}options=-csearch_path%3D{schema}"),
            password: None,
            tls: postgres::TlsMode::Disable,
            pool: 4,
        })
    }

    /// The stores a contract test runs on: SQLite in memory, and Postgres when the tests are
    /// given one ([`postgres_store`]).
    pub(crate) fn stores() -> Vec<Blocking> {
        let mut out = vec![Blocking::in_memory().unwrap()];
        match postgres_store() {
            Some(pg) => out.push(pg),
            None => eprintln!(
                "JOBKEEPER_TEST_POSTGRES_URL is not set: this store test ran on SQLite only \
                 (scripts/test.sh sets it)"
            ),
        }
        out
    }

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
        s.conn().unwrap().execute_batch("DROP TABLE runs").unwrap();
        let failed = s.finish_run(1, RunState::Failed, None);
        assert_eq!(s.record(Some("a"), "run end", failed), None);
        assert_eq!(s.clone().write_errors(), 1);
    }

    #[test]
    fn a_failed_read_is_counted_apart_from_failed_writes() {
        let s = Blocking::in_memory().unwrap();
        assert_eq!(s.read_or_log(None, "runs", Ok(2)), Some(2));
        s.conn().unwrap().execute_batch("DROP TABLE runs").unwrap();
        assert_eq!(s.read_or_log(Some("a"), "runs", s.runs("a", 1)), None);
        assert_eq!((s.clone().read_errors(), s.write_errors()), (1, 0));
    }
}
