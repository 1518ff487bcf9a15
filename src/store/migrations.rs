//! The schema, numbered with `PRAGMA user_version`.
//!
//! Migration 1 is the schema as release 0.1.0 left it. Stores written by 0.1.0 and earlier
//! carry `user_version` 0 whatever their tables, so migration 1 is written to be idempotent:
//! it creates what is missing and adds the columns earlier versions lacked (probing
//! `pragma_table_info`), which also makes an empty file a version-1 store. Every later step is
//! numbered after it and runs exactly once, in order. The look at `user_version` and the steps
//! are one `BEGIN IMMEDIATE` transaction, so two processes opening one store at once (the daemon
//! and a reader) migrate it once.

use rusqlite::Connection;

use super::{Result, StoreError};
use crate::event::EventKind;

/// One numbered step: brings a store from version `n - 1` to `n` (its index + 1).
type Step = fn(&Connection) -> Result<()>;

/// The steps, in order; step `i` makes version `i + 1`. Add new steps at the end.
const STEPS: [Step; 12] = [
    release_0_1_0,
    typed_events,
    versions,
    what_runs,
    retention_indexes,
    run_parallelism,
    runs_with_artifacts,
    run_secrets,
    conditions,
    savepoint_history,
    held_changes,
    run_node,
];

/// The schema version this build writes.
pub(super) const LATEST: i64 = STEPS.len() as i64;

/// Brings the store's schema up to [`LATEST`].
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = run_steps(conn);
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn run_steps(conn: &Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            found,
            known: LATEST,
        });
    }
    for (i, step) in STEPS.iter().enumerate().skip(found as usize) {
        step(conn)?;
        conn.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    Ok(())
}

/// The schema of release 0.1.0; `{live}` is the list of live run states
/// ([`super::runs::LIVE`]).
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
CREATE INDEX IF NOT EXISTS runs_live ON runs(state) WHERE state IN {live};
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL, job TEXT, run_id INTEGER, kind TEXT NOT NULL,
    commit_id TEXT, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events(job, id);
CREATE TABLE IF NOT EXISTS alerts_sent (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL, job TEXT, event TEXT NOT NULL, commit_id TEXT,
    target TEXT NOT NULL, folded INTEGER NOT NULL, status TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER NOT NULL,
    UNIQUE (event_id, target));
CREATE INDEX IF NOT EXISTS alerts_sent_key ON alerts_sent(job, event, commit_id, sent_at);
CREATE TABLE IF NOT EXISTS savepoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL, run_id INTEGER, location TEXT NOT NULL, kind TEXT NOT NULL,
    time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS savepoints_job ON savepoints(job, id);
";

/// Migration 1: the schema of release 0.1.0, from nothing or from any earlier store.
fn release_0_1_0(conn: &Connection) -> Result<()> {
    conn.execute_batch(&SCHEMA.replace("{live}", &super::runs::LIVE))?;
    if !has_column(conn, "runs", "env")? {
        // The env a run runs in (which cluster); older runs keep NULL.
        conn.execute_batch("ALTER TABLE runs ADD COLUMN env TEXT")?;
    }
    if !has_column(conn, "jobs", "last_event_id")? {
        // Each job's latest event and restart count, kept by the trigger below, so lists of
        // jobs need no scan of the event history; filled in once from the history.
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN last_event_id INTEGER;
             ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;",
        )?;
        conn.execute(
            "UPDATE jobs SET
                 last_event_id = (SELECT MAX(id) FROM events WHERE job = jobs.name),
                 restarts = (SELECT COUNT(*) FROM events WHERE job = jobs.name AND kind = ?1)",
            [EventKind::Restarted.as_str()],
        )?;
    }
    // 0.1.0 kept the summary with this trigger; migration 2 replaces it.
    conn.execute_batch(&format!(
        "CREATE TRIGGER IF NOT EXISTS jobs_event_summary AFTER INSERT ON events
         WHEN NEW.job IS NOT NULL BEGIN
             UPDATE jobs SET last_event_id = NEW.id, restarts = restarts + (NEW.kind = '{}')
             WHERE name = NEW.job;
         END;",
        EventKind::Restarted.as_str()
    ))?;
    Ok(())
}

/// Migration 2: a restart's attempt in its own columns (`attempt`, `attempt_of`), and each job's
/// summary kept by the store's event writes instead of a trigger that named an event kind.
fn typed_events(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS jobs_event_summary;
         ALTER TABLE events ADD COLUMN attempt INTEGER;
         ALTER TABLE events ADD COLUMN attempt_of INTEGER;",
    )?;
    Ok(())
}

/// Migration 3: the `versions` table (what a rollback needs and what it refused).
fn versions(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE versions (
             job TEXT PRIMARY KEY,
             prev_spec TEXT, prev_hash TEXT, prev_artifact TEXT, prev_restore TEXT,
             prev_commit TEXT, probation_until INTEGER,
             refused_hash TEXT, refused_commit TEXT, refused_reason TEXT,
             updated_at INTEGER NOT NULL);",
    )?;
    Ok(())
}

/// Migration 4: what runs. Each run records the project commit its artifact was built from
/// (`runs.project_commit`, beside the config commit in `commit_id`) and its artifact's build
/// key (`runs.artifact_key`, so retention keeps what live and previous versions need), and each
/// job the config
/// commit of its deployed version (`jobs.applied_commit`): a commit that changes only comments
/// moves `desired_commit` but not what runs. Deployed versions recorded before are taken to come
/// from their desired commit when the two hashes agree.
fn what_runs(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN project_commit TEXT;
         ALTER TABLE runs ADD COLUMN artifact_key TEXT;
         ALTER TABLE jobs ADD COLUMN applied_commit TEXT;
         UPDATE jobs SET applied_commit = desired_commit
             WHERE applied_hash IS NOT NULL AND applied_hash = desired_hash;",
    )?;
    Ok(())
}

/// Migration 5: an index for retention: a job's events older than its `retention.age` are
/// found without reading its newer ones (runs use `runs_job`: their ids grow with time).
fn retention_indexes(conn: &Connection) -> Result<()> {
    conn.execute_batch("CREATE INDEX IF NOT EXISTS events_job_time ON events(job, time);")?;
    Ok(())
}

/// Migration 6: what each vertex of a run must run at (`runs.parallelism`, JSON: vertex id →
/// parallelism), so a daemon adopting the run sees a rescale made while none watched it.
fn run_parallelism(conn: &Connection) -> Result<()> {
    conn.execute_batch("ALTER TABLE runs ADD COLUMN parallelism TEXT;")?;
    Ok(())
}

/// Migration 7: an index of the runs that have an artifact, so finding each job's previous
/// artifact (which retention keeps) reads those runs only, not every run of a job without a
/// project.
fn runs_with_artifacts(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS runs_artifact ON runs(job, id) WHERE artifact_key IS NOT NULL;",
    )?;
    Ok(())
}

/// Migration 8: which secrets a run was given (their names, a JSON list; `NULL` for runs
/// recorded before), the keyed fingerprint of their values, and whether its log was masked in
/// place (see [`crate::secrets`]).
fn run_secrets(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN secrets TEXT;
         ALTER TABLE runs ADD COLUMN secrets_mac TEXT;
         ALTER TABLE runs ADD COLUMN log_masked INTEGER NOT NULL DEFAULT 0;",
    )?;
    Ok(())
}

/// Migration 9: what a job's conditions are derived from (see [`crate::condition`]): the last
/// version whose build, deploy or move failed (`versions.failed_*`: its hash, commit, stage and
/// reason, kept typed instead of as a state reason), the open drift and unhealthy incidents of
/// its runs (`jobs.incidents`, JSON), and the version of the cluster each run was submitted to
/// (`runs.engine_version`). A stalled version a previous daemon recorded only as the state
/// reason `build failed` or `deploy failed` is carried over as a failure of its desired hash.
fn conditions(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE versions ADD COLUMN failed_hash TEXT;
         ALTER TABLE versions ADD COLUMN failed_commit TEXT;
         ALTER TABLE versions ADD COLUMN failed_stage TEXT;
         ALTER TABLE versions ADD COLUMN failed_reason TEXT;
         ALTER TABLE jobs ADD COLUMN incidents TEXT;
         ALTER TABLE runs ADD COLUMN engine_version TEXT;
         INSERT OR IGNORE INTO versions (job, updated_at)
             SELECT name, updated_at FROM jobs
             WHERE reason IN ('build failed', 'deploy failed') AND desired_hash IS NOT NULL
                 AND desired_hash IS NOT applied_hash;
         UPDATE versions SET
             failed_hash = (SELECT desired_hash FROM jobs WHERE name = versions.job),
             failed_commit = (SELECT desired_commit FROM jobs WHERE name = versions.job),
             failed_stage = CASE (SELECT reason FROM jobs WHERE name = versions.job)
                 WHEN 'build failed' THEN 'build' ELSE 'deploy' END,
             failed_reason = 'recorded by an earlier jobkeeper; its events say why'
             WHERE job IN (SELECT name FROM jobs
                 WHERE reason IN ('build failed', 'deploy failed') AND desired_hash IS NOT NULL
                     AND desired_hash IS NOT applied_hash);",
    )?;
    Ok(())
}

/// Migration 10: the savepoint history: why each savepoint was taken, on which cluster, when
/// it was disposed of (and the failures of disposing of it), and where each run started from.
fn savepoint_history(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE savepoints ADD COLUMN cause TEXT;
         ALTER TABLE savepoints ADD COLUMN cluster TEXT;
         ALTER TABLE savepoints ADD COLUMN disposed_at INTEGER;
         ALTER TABLE savepoints ADD COLUMN dispose_failures INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE savepoints ADD COLUMN dispose_error TEXT;
         CREATE TABLE IF NOT EXISTS run_starts (
             run_id INTEGER PRIMARY KEY, job TEXT NOT NULL, location TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS run_starts_job ON run_starts(job, run_id);",
    )?;
    Ok(())
}

/// Migration 11: changes held by a freeze window until it closes (see [`crate::freeze`]).
fn held_changes(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS held (
             job TEXT PRIMARY KEY, path TEXT NOT NULL, spec TEXT, hash TEXT,
             commit_id TEXT NOT NULL, until_ms INTEGER NOT NULL, until TEXT NOT NULL,
             reason TEXT NOT NULL);",
    )?;
    Ok(())
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn
        .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])?)
}

/// Each run records the node (host) that started it; runs from before have none.
fn run_node(conn: &Connection) -> Result<()> {
    conn.execute_batch("ALTER TABLE runs ADD COLUMN node TEXT;")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Blocking, JobState, RunState};
    use super::*;

    const RUNS_0_0: &str = "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL, commit_id TEXT, spec_hash TEXT NOT NULL, engine TEXT NOT NULL,
        handle TEXT, state TEXT NOT NULL, reason TEXT, log_path TEXT NOT NULL,
        started_at INTEGER NOT NULL, ended_at INTEGER);";

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_store_is_at_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(Blocking::open(&path).unwrap());
        assert_eq!(user_version(&path), LATEST);
        drop(Blocking::open(&path).unwrap());
        assert_eq!(user_version(&path), LATEST);
    }

    #[test]
    fn a_store_from_a_newer_jobkeeper_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        let err = Blocking::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    /// `tests/fixtures/store-0.1.0.sqlite` was written by release 0.1.0: jobs (one removed,
    /// one invalid), runs (one live with a handle), events, an alert and a savepoint.
    #[test]
    fn a_store_written_by_release_0_1_0_opens_and_every_row_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0.sqlite");
        std::fs::copy(fixture, &path).unwrap();
        assert_eq!(user_version(&path), 0);
        let s = Blocking::open(&path).unwrap();
        assert_eq!(user_version(&path), LATEST);

        let jobs = s.jobs().unwrap();
        let names: Vec<_> = jobs.iter().map(|j| (j.name.as_str(), j.state)).collect();
        assert_eq!(
            names,
            [
                ("broken", JobState::Invalid),
                ("heartbeat", JobState::Succeeded),
                ("old", JobState::Stopped),
                ("wordcount", JobState::Running),
            ]
        );
        let wc = &jobs[3];
        assert_eq!(wc.desired, wc.applied);
        assert_eq!(wc.desired.as_ref().unwrap().env, "dev");
        assert_eq!(wc.artifact.as_ref().unwrap().key, "k1");
        assert_eq!(s.job_list().unwrap().len(), 4);
        assert_eq!(
            s.applied_specs(&["wordcount", "heartbeat", "old"])
                .unwrap()
                .len(),
            2
        );

        let live = s.live_runs().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].state, RunState::Running);
        let handle = live[0].handle.as_ref().unwrap();
        assert_eq!(
            (handle.run_id, handle.engine_id.as_str()),
            (live[0].id, "4343")
        );
        assert_eq!(handle.start_ticks, Some(123_999));
        let runs = s.runs("wordcount", 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].state, RunState::Failed);
        assert_eq!(runs[1].env.as_deref(), Some("dev"));
        assert_eq!(
            s.runs("heartbeat", 10).unwrap()[0].state,
            RunState::Succeeded
        );

        assert_eq!(s.events(None, 100).unwrap().len(), 8);
        assert_eq!(s.restart_counts().unwrap().get("wordcount"), Some(&1));
        assert_eq!(s.last_events().unwrap()["old"].kind, "planned");
        assert_eq!(s.alerts_sent(10).unwrap()[0].status, "sent");
        assert_eq!(s.savepoints("wordcount", 10).unwrap()[0].kind, "savepoint");
        assert!(s.commit(&"1".repeat(40)).unwrap().is_some());
        assert_eq!(s.applied_commit().unwrap(), Some("2".repeat(40)));

        // It takes writes, and the store keeps the summary.
        s.event(&super::super::NewEvent {
            job: Some("wordcount"),
            ..super::super::NewEvent::new(EventKind::Restarted, "attempt 2/5")
        })
        .unwrap();
        assert_eq!(s.restart_counts().unwrap().get("wordcount"), Some(&2));
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_version_stalled_before_migration_9_is_carried_over_as_a_typed_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Blocking::open(&path).unwrap();
        let update = |name: &str| crate::store::DesiredUpdate::Spec {
            name: name.into(),
            path: format!("jobs/{name}.yaml"),
            spec: "{\"env\": \"dev\"}".into(),
            hash: "h2".into(),
        };
        s.apply_commit(
            &crate::store::CommitRecord::default(),
            &[update("a"), update("b"), update("c")],
            &[],
        )
        .unwrap();
        drop(s);
        // A store as migration 8 left it: the stall only in the state's reason.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "UPDATE jobs SET applied_hash = 'h1', state = 'running';
             UPDATE jobs SET reason = 'deploy failed' WHERE name = 'a';
             UPDATE jobs SET reason = 'build failed' WHERE name = 'b';
             ALTER TABLE versions DROP COLUMN failed_hash;
             ALTER TABLE versions DROP COLUMN failed_commit;
             ALTER TABLE versions DROP COLUMN failed_stage;
             ALTER TABLE versions DROP COLUMN failed_reason;
             ALTER TABLE jobs DROP COLUMN incidents;
             ALTER TABLE runs DROP COLUMN engine_version;
             ALTER TABLE savepoints DROP COLUMN cause;
             ALTER TABLE savepoints DROP COLUMN cluster;
             ALTER TABLE savepoints DROP COLUMN disposed_at;
             ALTER TABLE savepoints DROP COLUMN dispose_failures;
             ALTER TABLE savepoints DROP COLUMN dispose_error;
             DROP TABLE run_starts;
             ALTER TABLE runs DROP COLUMN node;
             PRAGMA user_version = 8;",
        )
        .unwrap();
        drop(conn);
        let s = Blocking::open(&path).unwrap();
        assert_eq!(user_version(&path), LATEST);
        let stage = |name: &str| s.versions(name).unwrap().failed.map(|f| (f.hash, f.stage));
        use crate::store::Stage;
        assert_eq!(stage("a"), Some(("h2".into(), Stage::Deploy)));
        assert_eq!(stage("b"), Some(("h2".into(), Stage::Build)));
        assert_eq!(stage("c"), None);
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn two_processes_opening_one_old_store_at_once_add_the_env_column_once() {
        // Regression: both saw no `env` column and the second ALTER failed with
        // "duplicate column name: env".
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            Connection::open(&path)
                .unwrap()
                .execute_batch(&format!("PRAGMA journal_mode = WAL; {RUNS_0_0}"))
                .unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let opens: Vec<_> = (0..2)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Blocking::open(&path).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                o.join().unwrap().unwrap();
            }
            assert_eq!(user_version(&path), LATEST);
        }
    }

    #[test]
    fn an_old_store_gains_the_env_column_and_the_savepoints_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "{RUNS_0_0}
                 INSERT INTO runs (job, spec_hash, engine, state, log_path, started_at)
                 VALUES ('a', 'h', 'flink', 'running', '', 1);"
            ))
            .unwrap();
        let store = Blocking::open(&path).unwrap();
        let runs = store.live_runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].env, None);
        drop(store);
        let store = Blocking::open(&path).unwrap(); // a second open adds nothing twice
        let id = store
            .insert_run(
                "a",
                Default::default(),
                "h",
                (crate::engine::EngineKind::Flink, "prod"),
                Path::new("/l"),
            )
            .unwrap();
        assert_eq!(store.run(id).unwrap().unwrap().env.as_deref(), Some("prod"));
        store
            .add_savepoint(
                "a",
                Some(id),
                "file:/sp/1",
                crate::store::SavepointKind::Savepoint,
            )
            .unwrap();
        assert_eq!(store.savepoints("a", 10).unwrap().len(), 1);
    }

    #[test]
    fn a_store_from_before_the_job_summary_is_filled_in_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE jobs (name TEXT PRIMARY KEY, path TEXT NOT NULL,
                     desired TEXT, desired_hash TEXT, desired_commit TEXT,
                     applied TEXT, applied_hash TEXT, artifact TEXT,
                     state TEXT NOT NULL, reason TEXT, invalid TEXT, updated_at INTEGER NOT NULL);
                 CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     time INTEGER NOT NULL, job TEXT, run_id INTEGER, kind TEXT NOT NULL,
                     commit_id TEXT, message TEXT NOT NULL);
                 INSERT INTO jobs (name, path, state, updated_at) VALUES ('a', 'jobs/a.yaml', 'running', 0);
                 INSERT INTO events (time, job, kind, message) VALUES (1, 'a', 'restarted', ''), (2, 'a', 'failed', '');",
            )
            .unwrap();
        }
        let s = Blocking::open(&path).unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&1));
        assert_eq!(s.last_events().unwrap()["a"].kind, "failed");
    }
}
