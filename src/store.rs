//! The store: one SQLite file (WAL) under `state_dir` holding the applied commit, each job's
//! desired and applied spec, artifacts, runs with their engine handles, and the event history.
//!
//! Every write that must be atomic (a whole commit's desired specs and the applied commit) is one
//! transaction, so a crash at any point leaves either the old or the new state. Calls are short
//! and synchronous; the connection sits behind a mutex.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON value did not parse.
    #[error("store: bad stored value: {0}")]
    Json(#[from] serde_json::Error),
    /// The file could not be created.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// States of a job (SPEC "Health loop").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Known, not yet acted on.
    Pending,
    /// Its project is being built.
    Building,
    /// Being submitted.
    Deploying,
    /// A run is live.
    Running,
    /// The last batch run succeeded.
    Succeeded,
    /// The last run failed, or the job could not be built or deployed.
    Failed,
    /// Waiting to be restarted.
    Backoff,
    /// Too many restarts: waits for a new commit or `jobkeeper restart`.
    GaveUp,
    /// `suspend: true`.
    Suspended,
    /// Stopped (removed from the repo).
    Stopped,
    /// Its file is invalid and it never had a valid version.
    Invalid,
}

impl JobState {
    /// Every state, in SPEC's order.
    pub const ALL: [JobState; 11] = [
        JobState::Pending,
        JobState::Building,
        JobState::Deploying,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Backoff,
        JobState::GaveUp,
        JobState::Suspended,
        JobState::Stopped,
        JobState::Invalid,
    ];

    /// The word used in the store, the API and output.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Building => "building",
            JobState::Deploying => "deploying",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Backoff => "backoff",
            JobState::GaveUp => "gave_up",
            JobState::Suspended => "suspended",
            JobState::Stopped => "stopped",
            JobState::Invalid => "invalid",
        }
    }

    /// Parses what [`JobState::as_str`] wrote.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A config-repo commit, as recorded with events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommitRecord {
    /// Full id.
    pub id: String,
    /// Author, `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

/// A job's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// Job name.
    pub name: String,
    /// Path of its file in the config repo.
    pub path: String,
    /// The spec the config repo wants (JSON), `None` once removed.
    pub desired: Option<String>,
    /// Hash of `desired`.
    pub desired_hash: Option<String>,
    /// Config commit that last changed `desired`.
    pub desired_commit: Option<String>,
    /// The spec of the deployed version (JSON).
    pub applied: Option<String>,
    /// Hash of `applied`.
    pub applied_hash: Option<String>,
    /// The deployed artifact (JSON).
    pub artifact: Option<String>,
    /// Current state.
    pub state: String,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Problems of the latest version of its file, when invalid.
    pub invalid: Option<String>,
    /// Unix time of the last change.
    pub updated_at: i64,
}

/// A job as lists show it (see [`Store::job_list`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobListRow {
    /// Job name.
    pub name: String,
    /// Path of its file in the config repo.
    pub path: String,
    /// Current state.
    pub state: String,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Config commit that last changed its desired spec.
    pub desired_commit: Option<String>,
    /// The `env` of its desired (else applied) spec.
    pub env: Option<String>,
    /// True when the latest version of its file is invalid.
    pub invalid: bool,
}

impl JobListRow {
    /// The list view of a full row.
    pub fn of(row: &JobRow) -> JobListRow {
        let env = row
            .desired
            .as_deref()
            .or(row.applied.as_deref())
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v["env"].as_str().map(str::to_string));
        JobListRow {
            name: row.name.clone(),
            path: row.path.clone(),
            state: row.state.clone(),
            reason: row.reason.clone(),
            desired_commit: row.desired_commit.clone(),
            env,
            invalid: row.invalid.is_some(),
        }
    }
}

/// A run's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// Config commit the run was made for.
    pub commit_id: Option<String>,
    /// Hash of the spec it runs.
    pub spec_hash: String,
    /// Engine kind.
    pub engine: String,
    /// The env it runs in (which cluster); `None` for runs recorded before envs were kept.
    pub env: Option<String>,
    /// Engine handle (JSON), once submitted.
    pub handle: Option<String>,
    /// starting | running | succeeded | failed | stopped | lost.
    pub state: String,
    /// How it ended.
    pub reason: Option<String>,
    /// Its log file.
    pub log_path: String,
    /// Unix time (ms) it started.
    pub started_at: i64,
    /// Unix time (ms) it ended.
    pub ended_at: Option<i64>,
}

/// An event in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Event id.
    pub id: i64,
    /// Unix time (ms).
    pub time: i64,
    /// Job, for job events.
    pub job: Option<String>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened (`deployed`, `failed`, ...).
    pub kind: String,
    /// Config commit it happened under.
    pub commit_id: Option<String>,
    /// That commit's author.
    pub author: Option<String>,
    /// That commit's subject.
    pub subject: Option<String>,
    /// Details.
    pub message: String,
}

/// A new event.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    /// Job, for job events.
    pub job: Option<&'a str>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened.
    pub kind: &'a str,
    /// Config commit it happened under.
    pub commit_id: Option<&'a str>,
    /// Details.
    pub message: &'a str,
}

/// What a commit sets for one job.
#[derive(Debug, Clone)]
pub enum DesiredUpdate {
    /// A valid spec: the new desired state.
    Spec {
        /// Job name.
        name: String,
        /// File path.
        path: String,
        /// Spec JSON.
        spec: String,
        /// Its hash.
        hash: String,
    },
    /// An invalid file: desired state unchanged, problems recorded.
    Invalid {
        /// Job name.
        name: String,
        /// File path.
        path: String,
        /// Rendered diagnostics.
        errors: String,
    },
    /// The file is gone.
    Removed {
        /// Job name.
        name: String,
    },
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Where recorded events are forwarded (alerts); see [`Store::set_event_sink`].
    sink: Arc<Mutex<Option<EventSink>>>,
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (
    id TEXT PRIMARY KEY, author TEXT NOT NULL, subject TEXT NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    desired TEXT, desired_hash TEXT, desired_commit TEXT,
    applied TEXT, applied_hash TEXT, artifact TEXT,
    state TEXT NOT NULL, reason TEXT, invalid TEXT,
    updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL, commit_id TEXT, spec_hash TEXT NOT NULL, engine TEXT NOT NULL,
    handle TEXT, state TEXT NOT NULL, reason TEXT, log_path TEXT NOT NULL,
    started_at INTEGER NOT NULL, ended_at INTEGER);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job, id);
CREATE INDEX IF NOT EXISTS runs_live ON runs(state) WHERE state IN ('starting', 'running');
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL, job TEXT, run_id INTEGER, kind TEXT NOT NULL,
    commit_id TEXT, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events(job, id);
";

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating) the store file, in WAL mode.
    pub fn open(path: &Path) -> Result<Store> {
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
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ALERT_SCHEMA)?;
        migrate_job_summary(&conn)?;
        migrate(&conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            sink: Arc::default(),
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ALERT_SCHEMA)?;
        migrate_job_summary(&conn)?;
        migrate(&conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            sink: Arc::default(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep going.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The config commit last applied.
    pub fn applied_commit(&self) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = 'applied_commit'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a commit's desired specs and makes it the applied commit, in one transaction.
    /// Also records one event per update (`commit` with the plan line given in `notes`).
    pub fn apply_commit(
        &self,
        commit: &CommitRecord,
        updates: &[DesiredUpdate],
        notes: &[(String, String, String)],
    ) -> Result<()> {
        let mut recorded = Vec::with_capacity(notes.len());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)",
            params![commit.id, commit.author, commit.subject, now],
        )?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO jobs (name, path, desired, desired_hash, desired_commit, state, invalid, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', NULL, ?6)
                 ON CONFLICT(name) DO UPDATE SET path = ?2, desired = ?3, desired_hash = ?4,
                     desired_commit = ?5, invalid = NULL, updated_at = ?6",
            )?;
            let mut invalid = tx.prepare_cached(
                "INSERT INTO jobs (name, path, state, invalid, reason, updated_at)
                 VALUES (?1, ?2, 'invalid', ?3, 'job file is invalid', ?4)
                 ON CONFLICT(name) DO UPDATE SET invalid = ?3, updated_at = ?4",
            )?;
            let mut removed = tx.prepare_cached(
                "UPDATE jobs SET desired = NULL, desired_hash = NULL, desired_commit = ?2,
                     invalid = NULL, updated_at = ?3 WHERE name = ?1",
            )?;
            for u in updates {
                match u {
                    DesiredUpdate::Spec {
                        name,
                        path,
                        spec,
                        hash,
                    } => {
                        upsert.execute(params![name, path, spec, hash, commit.id, now])?;
                    }
                    DesiredUpdate::Invalid { name, path, errors } => {
                        invalid.execute(params![name, path, errors, now])?;
                    }
                    DesiredUpdate::Removed { name } => {
                        removed.execute(params![name, commit.id, now])?;
                    }
                }
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (time, job, kind, commit_id, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (job, kind, message) in notes {
                ev.execute(params![now, job, kind, commit.id, message])?;
                recorded.push(EventRow {
                    id: tx.last_insert_rowid(),
                    time: now,
                    job: Some(job.clone()),
                    run_id: None,
                    kind: kind.clone(),
                    commit_id: Some(commit.id.clone()),
                    author: Some(commit.author.clone()),
                    subject: Some(commit.subject.clone()),
                    message: message.clone(),
                });
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('applied_commit', ?1)
             ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![commit.id],
        )?;
        tx.commit()?;
        drop(conn);
        self.forward(&recorded);
        Ok(())
    }

    /// Every job row, sorted by name.
    pub fn jobs(&self) -> Result<Vec<JobRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{JOB_SELECT} ORDER BY name"))?;
        let rows = st
            .query_map([], job_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One job row.
    pub fn job(&self, name: &str) -> Result<Option<JobRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{JOB_SELECT} WHERE name = ?1"))?;
        Ok(st.query_row([name], job_row).optional()?)
    }

    /// The applied specs (JSON) of the named jobs that have one.
    pub fn applied_specs(&self, names: &[&str]) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT name, COALESCE(desired, applied) FROM jobs WHERE name = ?1
             AND COALESCE(desired, applied) IS NOT NULL",
        )?;
        let mut out = Vec::new();
        for n in names {
            if let Some(row) = st
                .query_row([n], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Sets a job's state and the reason for it.
    pub fn set_state(&self, name: &str, state: JobState, reason: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, reason = ?3, updated_at = ?4 WHERE name = ?1",
            params![name, state.as_str(), reason, now_ms()],
        )?;
        Ok(())
    }

    /// Records the version now deployed.
    pub fn set_applied(
        &self,
        name: &str,
        spec: Option<&str>,
        hash: Option<&str>,
        artifact: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET applied = ?2, applied_hash = ?3, artifact = ?4, updated_at = ?5
             WHERE name = ?1",
            params![name, spec, hash, artifact, now_ms()],
        )?;
        Ok(())
    }

    /// Records a run about to be submitted to `engine` in `env`; returns its id.
    pub fn insert_run(
        &self,
        job: &str,
        commit: Option<&str>,
        spec_hash: &str,
        (engine, env): (&str, &str),
        log_dir: &Path,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (job, commit_id, spec_hash, engine, env, state, log_path, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'starting', '', ?6)",
            params![job, commit, spec_hash, engine, env, now_ms()],
        )?;
        let id = tx.last_insert_rowid();
        let log = log_dir.join(format!("{id}.log"));
        tx.execute(
            "UPDATE runs SET log_path = ?2 WHERE id = ?1",
            params![id, log.to_string_lossy()],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Records the engine's handle of a submitted run.
    pub fn set_run_running(&self, id: i64, handle: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET handle = ?2, state = 'running' WHERE id = ?1",
            params![id, handle],
        )?;
        Ok(())
    }

    /// Records how a run ended (only the first end counts).
    pub fn finish_run(&self, id: i64, state: &str, reason: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET state = ?2, reason = ?3, ended_at = ?4
             WHERE id = ?1 AND ended_at IS NULL",
            params![id, state, reason, now_ms()],
        )?;
        Ok(())
    }

    /// Runs not known to have ended (starting or running), oldest first.
    pub fn live_runs(&self) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "{RUN_SELECT} WHERE state IN ('starting', 'running') ORDER BY id"
        ))?;
        let rows = st
            .query_map([], run_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The latest runs of a job, newest first.
    pub fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "{RUN_SELECT} WHERE job = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![job, limit as i64], run_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records an event; returns its id.
    pub fn event(&self, e: &NewEvent<'_>) -> Result<i64> {
        let time = now_ms();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (time, job, run_id, kind, commit_id, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![time, e.job, e.run_id, e.kind, e.commit_id, e.message],
        )?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.forward(&[EventRow {
            id,
            time,
            job: e.job.map(str::to_string),
            run_id: e.run_id,
            kind: e.kind.to_string(),
            commit_id: e.commit_id.map(str::to_string),
            author: None,
            subject: None,
            message: e.message.to_string(),
        }]);
        Ok(id)
    }

    /// The latest events (of one job, or all), newest first.
    pub fn events(&self, job: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT e.id, e.time, e.job, e.run_id, e.kind, e.commit_id, c.author, c.subject, e.message
             FROM events e LEFT JOIN commits c ON c.id = e.commit_id
             {} ORDER BY e.id DESC LIMIT ?2",
            if job.is_some() { "WHERE e.job = ?1" } else { "WHERE ?1 IS NULL" }
        );
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![job, limit as i64], event_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A commit's author and subject, when seen.
    pub fn commit(&self, id: &str) -> Result<Option<CommitRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, author, subject FROM commits WHERE id = ?1",
                [id],
                |r| {
                    Ok(CommitRecord {
                        id: r.get(0)?,
                        author: r.get(1)?,
                        subject: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every job as lists show it, sorted by name: no specs are read, only their `env`.
    pub fn job_list(&self) -> Result<Vec<JobListRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT name, path, state, reason, desired_commit,
                 json_extract(COALESCE(desired, applied), '$.env'), invalid IS NOT NULL
             FROM jobs ORDER BY name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(JobListRow {
                    name: r.get(0)?,
                    path: r.get(1)?,
                    state: r.get(2)?,
                    reason: r.get(3)?,
                    desired_commit: r.get(4)?,
                    env: r.get(5).ok(),
                    invalid: r.get(6)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// How many jobs are in each state (every state, zeros included).
    pub fn job_state_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let mut counts: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            counts.insert(state, n);
        }
        Ok(JobState::ALL
            .into_iter()
            .map(|s| (s, counts.get(s.as_str()).copied().unwrap_or(0) as u64))
            .collect())
    }

    /// The latest event of each job that has one, by job.
    pub fn last_events(&self) -> Result<std::collections::HashMap<String, EventRow>> {
        let conn = self.conn();
        // `jobs.last_event_id` is kept by a trigger: one indexed lookup per job.
        let mut st = conn.prepare_cached(
            "SELECT e.id, e.time, e.job, e.run_id, e.kind, e.commit_id, c.author, c.subject, e.message
             FROM jobs j JOIN events e ON e.id = j.last_event_id
             LEFT JOIN commits c ON c.id = e.commit_id",
        )?;
        let mut out = std::collections::HashMap::new();
        for row in st.query_map([], event_row)? {
            let e = row?;
            if let Some(job) = e.job.clone() {
                out.insert(job, e);
            }
        }
        Ok(out)
    }

    /// How many times each job was restarted (its `restarted` events), by job.
    pub fn restart_counts(&self) -> Result<std::collections::HashMap<String, u64>> {
        let conn = self.conn();
        // `jobs.restarts` is kept by a trigger.
        let mut st = conn.prepare_cached("SELECT name, restarts FROM jobs WHERE restarts > 0")?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Every config commit seen, by id.
    pub fn commits(&self) -> Result<std::collections::HashMap<String, CommitRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id, author, subject FROM commits")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    CommitRecord {
                        id: r.get(0)?,
                        author: r.get(1)?,
                        subject: r.get(2)?,
                    },
                ))
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Number of jobs in each state (jobs whose file is gone and that are stopped left out).
    pub fn state_counts(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT state, count(*) FROM jobs WHERE desired IS NOT NULL OR state != 'stopped'
             GROUP BY state ORDER BY state",
        )?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
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

// ───── Alerts: the event sink and what was sent (used by `crate::alert`) ─────

/// A callback every recorded event is forwarded to, after its transaction committed. It must
/// not block (the alerter only queues).
pub type EventSink = Arc<dyn Fn(&EventRow) + Send + Sync>;

const ALERT_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS alerts_sent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL, job TEXT, event TEXT NOT NULL, commit_id TEXT,
    target TEXT NOT NULL, folded INTEGER NOT NULL, status TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER NOT NULL,
    UNIQUE (event_id, target));
CREATE INDEX IF NOT EXISTS alerts_sent_key ON alerts_sent(job, event, commit_id, sent_at);
";

/// One alert delivery, as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSentRow {
    /// Row id.
    pub id: i64,
    /// The event that fired it (the latest one, for a folded alert).
    pub event_id: i64,
    /// Job, for job events.
    pub job: Option<String>,
    /// Alert event (`failed`, ...).
    pub event: String,
    /// Config commit of the event.
    pub commit_id: Option<String>,
    /// `channel/email` or `channel/webhook`.
    pub target: String,
    /// How many repeats this alert folded in (0: none).
    pub folded: i64,
    /// `sending`, `sent`, `failed` or `dropped`.
    pub status: String,
    /// What the far end answered last (or why it could not be reached).
    pub answer: String,
    /// Delivery tries made.
    pub attempts: i64,
    /// Unix time (ms) it was fired.
    pub sent_at: i64,
}

/// A new alert delivery, claimed before it is sent.
#[derive(Debug, Clone, Default)]
pub struct NewAlertSent<'a> {
    /// The event that fired it.
    pub event_id: i64,
    /// Job, for job events.
    pub job: Option<&'a str>,
    /// Alert event.
    pub event: &'a str,
    /// Config commit of the event.
    pub commit_id: Option<&'a str>,
    /// `channel/email` or `channel/webhook`.
    pub target: &'a str,
    /// Repeats folded in.
    pub folded: i64,
}

impl Store {
    /// Sets the callback every later [`Store::event`] and [`Store::apply_commit`] note is
    /// forwarded to (on every clone of this store).
    pub fn set_event_sink(&self, sink: EventSink) {
        *self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sink);
    }

    fn forward(&self, events: &[EventRow]) {
        let sink = self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(sink) = sink {
            for e in events {
                sink(e);
            }
        }
    }

    /// The highest event id recorded so far (0 when none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("{RUN_SELECT} WHERE id = ?1"))?;
        Ok(st.query_row([id], run_row).optional()?)
    }

    /// The events recorded about one run as `kind message`, oldest first.
    pub fn run_event_kinds(&self, run_id: i64) -> Result<Vec<String>> {
        // Each as "kind message": the message of `restarted` names the attempt.
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT kind || ' ' || message FROM events WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([run_id], |r| r.get(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Claims the delivery of an alert to one target; false when that event was already
    /// claimed for it (so nothing is ever sent twice, across restarts too).
    pub fn claim_alert(&self, a: &NewAlertSent<'_>) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO alerts_sent
                 (event_id, job, event, commit_id, target, folded, status, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'sending', ?7)",
            params![
                a.event_id,
                a.job,
                a.event,
                a.commit_id,
                a.target,
                a.folded,
                now_ms()
            ],
        )?;
        Ok(n == 1)
    }

    /// Records how a claimed delivery ended.
    pub fn finish_alert(
        &self,
        event_id: i64,
        target: &str,
        status: &str,
        answer: &str,
        attempts: u32,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE alerts_sent SET status = ?3, answer = ?4, attempts = ?5
             WHERE event_id = ?1 AND target = ?2",
            params![event_id, target, status, answer, attempts],
        )?;
        Ok(())
    }

    /// When an alert for (job, event, commit) was last fired, to any target.
    pub fn alert_last_fired(
        &self,
        job: Option<&str>,
        event: &str,
        commit_id: Option<&str>,
    ) -> Result<Option<i64>> {
        Ok(self.conn().query_row(
            "SELECT MAX(sent_at) FROM alerts_sent
             WHERE job IS ?1 AND event = ?2 AND commit_id IS ?3",
            params![job, event, commit_id],
            |r| r.get(0),
        )?)
    }

    /// The latest alert deliveries, newest first.
    pub fn alerts_sent(&self, limit: usize) -> Result<Vec<AlertSentRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, event_id, job, event, commit_id, target, folded, status, answer, attempts,
                 sent_at FROM alerts_sent ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(AlertSentRow {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    job: r.get(2)?,
                    event: r.get(3)?,
                    commit_id: r.get(4)?,
                    target: r.get(5)?,
                    folded: r.get(6)?,
                    status: r.get(7)?,
                    answer: r.get(8)?,
                    attempts: r.get(9)?,
                    sent_at: r.get(10)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

// ───── end of the alerts block ─────

/// Adds each job's latest event id and restart count, kept by a trigger on `events`, so lists
/// of jobs need no scan of the event history. Existing stores are filled in once.
fn migrate_job_summary(conn: &Connection) -> rusqlite::Result<()> {
    // The look and the change are one write transaction: two processes opening one store at
    // once (the daemon and a reader) add the columns once.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'last_event_id'")?
            .exists([])?;
        if !has {
            conn.execute_batch(
                "ALTER TABLE jobs ADD COLUMN last_event_id INTEGER;
                 ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
                 UPDATE jobs SET
                     last_event_id = (SELECT MAX(id) FROM events WHERE job = jobs.name),
                     restarts = (SELECT COUNT(*) FROM events WHERE job = jobs.name AND kind = 'restarted');",
            )?;
        }
        conn.execute_batch(
            "CREATE TRIGGER IF NOT EXISTS jobs_event_summary AFTER INSERT ON events
             WHEN NEW.job IS NOT NULL BEGIN
                 UPDATE jobs SET last_event_id = NEW.id, restarts = restarts + (NEW.kind = 'restarted')
                 WHERE name = NEW.job;
             END;",
        )
    })();
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

const JOB_SELECT: &str = "SELECT name, path, desired, desired_hash, desired_commit, applied,
    applied_hash, artifact, state, reason, invalid, updated_at FROM jobs";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        name: r.get(0)?,
        path: r.get(1)?,
        desired: r.get(2)?,
        desired_hash: r.get(3)?,
        desired_commit: r.get(4)?,
        applied: r.get(5)?,
        applied_hash: r.get(6)?,
        artifact: r.get(7)?,
        state: r.get(8)?,
        reason: r.get(9)?,
        invalid: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        time: r.get(1)?,
        job: r.get(2)?,
        run_id: r.get(3)?,
        kind: r.get(4)?,
        commit_id: r.get(5)?,
        author: r.get(6)?,
        subject: r.get(7)?,
        message: r.get(8)?,
    })
}

const RUN_SELECT: &str = "SELECT id, job, commit_id, spec_hash, engine, handle, state, reason,
    log_path, started_at, ended_at, env FROM runs";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        job: r.get(1)?,
        commit_id: r.get(2)?,
        spec_hash: r.get(3)?,
        engine: r.get(4)?,
        handle: r.get(5)?,
        state: r.get(6)?,
        reason: r.get(7)?,
        log_path: r.get(8)?,
        started_at: r.get(9)?,
        ended_at: r.get(10)?,
        env: r.get(11)?,
    })
}

// ───── Savepoints, and columns added after the first release ─────

const SAVEPOINT_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS savepoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL, run_id INTEGER, location TEXT NOT NULL, kind TEXT NOT NULL,
    time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS savepoints_job ON savepoints(job, id);
";

/// Brings a store made by an older version up to date: new tables, and new columns added with
/// `ALTER TABLE ... ADD COLUMN` only when `PRAGMA table_info` lacks them.
fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(SAVEPOINT_SCHEMA)?;
    // Two processes may open one store at once (the daemon and a reader): the look and the
    // change are one write transaction, so only one of them adds a column.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = add_missing_columns(conn);
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn add_missing_columns(conn: &Connection) -> Result<()> {
    let has_env = {
        let mut st = conn.prepare("PRAGMA table_info(runs)")?;
        st.query_map([], |r| r.get::<_, String>(1))?
            .collect::<std::result::Result<Vec<_>, _>>()?
            .iter()
            .any(|c| c == "env")
    };
    if !has_env {
        conn.execute_batch("ALTER TABLE runs ADD COLUMN env TEXT")?;
    }
    Ok(())
}

/// A savepoint or retained checkpoint of a job, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SavepointRow {
    /// Row id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// The run it was taken from.
    pub run_id: Option<i64>,
    /// Where it is (`file:/...`, `s3://...`).
    pub location: String,
    /// `savepoint` (taken when stopping: upgrade, suspend, removal) or `checkpoint` (the latest
    /// retained checkpoint of a run that failed).
    pub kind: String,
    /// Unix time (ms) it was recorded.
    pub time: i64,
}

impl Store {
    /// Records a savepoint (or retained checkpoint) of a job.
    pub fn add_savepoint(
        &self,
        job: &str,
        run_id: Option<i64>,
        location: &str,
        kind: &str,
    ) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO savepoints (job, run_id, location, kind, time) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job, run_id, location, kind, now_ms()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// A job's savepoints and retained checkpoints, newest first.
    pub fn savepoints(&self, job: &str, limit: usize) -> Result<Vec<SavepointRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, job, run_id, location, kind, time FROM savepoints WHERE job = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![job, limit as i64], |r| {
                Ok(SavepointRow {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    run_id: r.get(2)?,
                    location: r.get(3)?,
                    kind: r.get(4)?,
                    time: r.get(5)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_opening_one_old_store_at_once_add_the_env_column_once() {
        // Regression: both saw no `env` column and the second ALTER failed with
        // "duplicate column name: env".
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            Connection::open(&path)
                .unwrap()
                .execute_batch(
                    "PRAGMA journal_mode = WAL;
                     CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
                     commit_id TEXT, spec_hash TEXT NOT NULL, engine TEXT NOT NULL, handle TEXT,
                     state TEXT NOT NULL, reason TEXT, log_path TEXT NOT NULL,
                     started_at INTEGER NOT NULL, ended_at INTEGER);",
                )
                .unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let opens: Vec<_> = (0..2)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&path).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                o.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn an_old_store_gains_the_env_column_and_the_savepoints_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
                 commit_id TEXT, spec_hash TEXT NOT NULL, engine TEXT NOT NULL, handle TEXT,
                 state TEXT NOT NULL, reason TEXT, log_path TEXT NOT NULL,
                 started_at INTEGER NOT NULL, ended_at INTEGER);
                 INSERT INTO runs (job, spec_hash, engine, state, log_path, started_at)
                 VALUES ('a', 'h', 'flink', 'running', '', 1);",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let runs = store.live_runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].env, None);
        drop(store);
        let store = Store::open(&path).unwrap(); // a second open adds nothing twice
        let id = store
            .insert_run("a", None, "h", ("flink", "prod"), Path::new("/l"))
            .unwrap();
        assert_eq!(store.run(id).unwrap().unwrap().env.as_deref(), Some("prod"));
        store
            .add_savepoint("a", Some(id), "file:/sp/1", "savepoint")
            .unwrap();
        store
            .add_savepoint("a", Some(id), "file:/cp/2", "checkpoint")
            .unwrap();
        let sps = store.savepoints("a", 10).unwrap();
        assert_eq!(sps.len(), 2);
        assert_eq!(sps[0].location, "file:/cp/2");
        assert_eq!(sps[1].kind, "savepoint");
        assert!(store.savepoints("b", 10).unwrap().is_empty());
    }

    fn commit(id: &str) -> CommitRecord {
        CommitRecord {
            id: id.into(),
            author: "Ann <ann@example.com>".into(),
            subject: "s".into(),
        }
    }

    #[test]
    fn apply_commit_is_atomic_and_keeps_desired_of_invalid_jobs() {
        let s = Store::in_memory().unwrap();
        assert_eq!(s.applied_commit().unwrap(), None);
        s.apply_commit(
            &commit("c1"),
            &[DesiredUpdate::Spec {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
                spec: "{}".into(),
                hash: "h1".into(),
            }],
            &[("a".into(), "planned".into(), "add".into())],
        )
        .unwrap();
        s.apply_commit(
            &commit("c2"),
            &[DesiredUpdate::Invalid {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
                errors: "jobs/a.yaml:1:1: bad".into(),
            }],
            &[],
        )
        .unwrap();
        let a = s.job("a").unwrap().unwrap();
        assert_eq!(a.desired_hash.as_deref(), Some("h1"));
        assert_eq!(a.desired_commit.as_deref(), Some("c1"));
        assert_eq!(a.invalid.as_deref(), Some("jobs/a.yaml:1:1: bad"));
        assert_eq!(s.applied_commit().unwrap().as_deref(), Some("c2"));
        let ev = s.events(Some("a"), 10).unwrap();
        assert_eq!(ev[0].author.as_deref(), Some("Ann <ann@example.com>"));
        s.apply_commit(
            &commit("c3"),
            &[DesiredUpdate::Removed { name: "a".into() }],
            &[],
        )
        .unwrap();
        assert_eq!(s.job("a").unwrap().unwrap().desired, None);
    }

    #[test]
    fn runs_live_until_finished_once() {
        let s = Store::in_memory().unwrap();
        let id = s
            .insert_run("a", Some("c1"), "h", ("local", "dev"), Path::new("/logs/a"))
            .unwrap();
        assert_eq!(
            s.live_runs().unwrap()[0].log_path,
            format!("/logs/a/{id}.log")
        );
        s.set_run_running(id, "{}").unwrap();
        s.finish_run(id, "failed", Some("exit 3")).unwrap();
        s.finish_run(id, "stopped", None).unwrap();
        assert!(s.live_runs().unwrap().is_empty());
        let r = &s.runs("a", 5).unwrap()[0];
        assert_eq!(
            (r.state.as_str(), r.reason.as_deref()),
            ("failed", Some("exit 3"))
        );
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn alert_claims_are_unique_and_events_reach_the_sink() {
        let s = Store::in_memory().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        s.set_event_sink(Arc::new(move |e: &EventRow| {
            seen2.lock().unwrap().push((e.id, e.kind.clone()));
        }));
        s.apply_commit(
            &commit("c1"),
            &[],
            &[("a".into(), "invalid".into(), "jobs/a.yaml:1:1: bad".into())],
        )
        .unwrap();
        let id = s
            .event(&NewEvent {
                job: Some("a"),
                kind: "failed",
                commit_id: Some("c1"),
                message: "exit 1",
                ..NewEvent::default()
            })
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (id, "failed".to_string()));
        assert_eq!(s.last_event_id().unwrap(), id);
        let claim = NewAlertSent {
            event_id: id,
            job: Some("a"),
            event: "failed",
            commit_id: Some("c1"),
            target: "oncall/email",
            folded: 0,
        };
        assert!(s.claim_alert(&claim).unwrap());
        assert!(!s.claim_alert(&claim).unwrap(), "claimed once");
        s.finish_alert(id, "oncall/email", "sent", "250 ok", 1)
            .unwrap();
        assert!(
            s.alert_last_fired(Some("a"), "failed", Some("c1"))
                .unwrap()
                .is_some()
        );
        assert_eq!(s.alert_last_fired(Some("a"), "failed", None).unwrap(), None);
        assert_eq!(s.alerts_sent(5).unwrap()[0].status, "sent");
    }

    #[test]
    fn each_job_keeps_its_latest_event_and_restart_count() {
        let s = Store::in_memory().unwrap();
        s.apply_commit(
            &commit("c1"),
            &[DesiredUpdate::Spec {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
                spec: "{}".into(),
                hash: "h".into(),
            }],
            &[("a".into(), "planned".into(), "add".into())],
        )
        .unwrap();
        for kind in ["restarted", "failed", "restarted"] {
            s.event(&NewEvent {
                job: Some("a"),
                kind,
                message: "m",
                ..NewEvent::default()
            })
            .unwrap();
        }
        s.event(&NewEvent {
            kind: "repo_unreachable",
            message: "x",
            ..NewEvent::default()
        })
        .unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&2));
        assert_eq!(s.last_events().unwrap()["a"].kind, "restarted");
        assert_eq!(s.last_events().unwrap().len(), 1);
    }

    #[test]
    fn a_store_from_before_the_job_summary_is_filled_in_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "INSERT INTO jobs (name, path, state, updated_at) VALUES ('a', 'jobs/a.yaml', 'running', 0);
                 INSERT INTO events (time, job, kind, message) VALUES (1, 'a', 'restarted', ''), (2, 'a', 'failed', '');",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&1));
        assert_eq!(s.last_events().unwrap()["a"].kind, "failed");
    }

    #[test]
    fn job_states_round_trip() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
        }
    }
}
