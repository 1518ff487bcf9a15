//! Retention in the store: deleting a job's old runs and events in small batches, finding the
//! jobs that have any, and the artifact keys that current, previous and live versions still need.
//!
//! Every call here is one short statement (or a few) bounded by a `limit`, and ends by handing
//! the store's lock straight to a waiting caller (`unlock_fair`: without it the pass, which asks
//! again at once, could take the lock back before a woken writer runs), so reconcile never waits
//! behind more than one batch. A live run (starting or running) is never deleted, nor a job's
//! latest event (the job list shows it). The write-ahead log a pass fills is copied into the
//! database by the pass's own [`Checkpointer`], not by whichever job's write passes SQLite's
//! automatic threshold.
//!
//! On PostgreSQL there is no store lock to hand on (each call takes a connection of the pool)
//! and no log of the store's to copy: the server checkpoints its own. The deletes are the same
//! statements on both.

use std::collections::HashSet;

use parking_lot::MutexGuard;
use rusqlite::Connection;

use super::runs::LIVE;
use super::sql::{Backend, Lite, Sql, p};
use super::{Blocking, Db, Result, SavepointKind, SavepointRow};

/// A deleted run: its id and its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRun {
    /// The run id.
    pub id: i64,
    /// Its log file (the caller deletes it, with its rotated part).
    pub log_path: String,
}

/// A job of a page of a pruning pass, and what of it retention may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCandidate {
    /// The job.
    pub job: String,
    /// It has runs to delete.
    pub runs: bool,
    /// It has events to delete.
    pub events: bool,
}

/// A connection of its own on the store's file that copies the write-ahead log into the
/// database, PASSIVE (it neither waits for nor blocks writers). Without it, SQLite does the copy
/// (and its `fsync`) inside the commit that takes the log past 1,000 pages: during a pass that
/// deletes millions of rows, that is some job's state write. SQLite only: a store in memory or
/// in PostgreSQL (whose server checkpoints its own write-ahead log) has nothing to copy.
pub struct Checkpointer {
    /// `None` for an in-memory or PostgreSQL store.
    conn: Option<Connection>,
}

impl Checkpointer {
    /// Copies what it can of the log into the database now; the log's pages and how many of
    /// them are in the database (the rest are copied by a later checkpoint). `(0, 0)` when
    /// there is no log of the store's to copy.
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        match &self.conn {
            Some(conn) => Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?),
            None => Ok((0, 0)),
        }
    }
}

impl Blocking {
    /// Runs `f` on a connection like [`Blocking::sql`]; on SQLite the store's lock then goes
    /// straight to a caller waiting for it, if any.
    fn handing_on<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &*self.db {
            Db::Sqlite(c) => {
                let conn = c.lock();
                let out = f(&mut Lite(&conn));
                MutexGuard::unlock_fair(conn);
                out
            }
            Db::Postgres(_) => self.sql(f),
        }
    }

    /// Runs `f` in one transaction like [`Blocking::tx`]; on SQLite the store's lock then goes
    /// straight to a caller waiting for it, if any.
    fn handing_on_tx<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match &*self.db {
            Db::Sqlite(c) => {
                let mut conn = c.lock();
                let out: Result<T> = (|| {
                    let tx = conn.transaction()?;
                    let out = f(&mut Lite(&tx))?;
                    tx.commit()?;
                    Ok(out)
                })();
                MutexGuard::unlock_fair(conn);
                out
            }
            Db::Postgres(_) => self.tx(f),
        }
    }

    /// A [`Checkpointer`] on this store's file (one with nothing to do for a store in memory
    /// or in PostgreSQL).
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        let conn = match (&self.path, self.backend()) {
            (Some(path), Backend::Sqlite) => {
                let conn = Connection::open(path)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Some(conn)
            }
            _ => None,
        };
        Ok(Checkpointer { conn })
    }

    /// Up to `limit` jobs after `after` by name (all jobs, removed ones too; a pass walks them in
    /// pages), each with whether it has runs past its latest `keep` that started before
    /// `before_ms` and ended, and events before `before_ms` besides its latest. Index lookups
    /// only, so a pass with nothing to delete costs a query per page. Run ids grow with time:
    /// a job whose oldest ended run is younger than the age has no older one. (The pages
    /// follow the database's order of names, `>` and `ORDER BY` alike.)
    pub fn prune_candidates(
        &self,
        after: &str,
        limit: usize,
        keep: usize,
        before_ms: i64,
    ) -> Result<Vec<PruneCandidate>> {
        let sql = format!(
            "SELECT j.name,
                 (SELECT id FROM runs WHERE job = j.name ORDER BY id DESC LIMIT 1 OFFSET ?3),
                 (SELECT id FROM runs WHERE job = j.name
                     AND state NOT IN {live} ORDER BY id LIMIT 1),
                 (SELECT started_at FROM runs WHERE job = j.name
                     AND state NOT IN {live} ORDER BY id LIMIT 1),
                 EXISTS (SELECT 1 FROM events e WHERE e.job = j.name AND e.time < ?4
                     AND e.id < (SELECT MAX(id) FROM events WHERE job = j.name))
             FROM jobs j WHERE j.name > ?1 ORDER BY j.name LIMIT ?2",
            live = *LIVE
        );
        self.handing_on(|db| {
            db.query_map(&sql, p![after, limit as i64, keep as i64, before_ms], |r| {
                let boundary: Option<i64> = r.get(1)?;
                let oldest: Option<i64> = r.get(2)?;
                let started: Option<i64> = r.get(3)?;
                let runs = match (boundary, oldest, started) {
                    (Some(b), Some(id), Some(at)) => id <= b && at < before_ms,
                    _ => false,
                };
                Ok(PruneCandidate {
                    job: r.get(0)?,
                    runs,
                    events: r.get(4)?,
                })
            })
        })
    }

    /// Deletes at most `limit` runs of `job` that are past its latest `keep` runs, started
    /// before `before_ms` and ended, oldest first; returns them so their logs can go too.
    pub fn prune_runs(
        &self,
        job: &str,
        keep: usize,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PrunedRun>> {
        let select = format!(
            "SELECT id, log_path FROM runs WHERE job = ?1 AND id <= ?2 AND started_at < ?3
             AND state NOT IN {} ORDER BY id LIMIT ?4",
            *LIVE
        );
        let delete = format!(
            "DELETE FROM runs WHERE job = ?1 AND id BETWEEN ?2 AND ?3 AND started_at < ?4
             AND state NOT IN {}",
            *LIVE
        );
        self.handing_on_tx(|db| {
            // The newest run that is not among the latest `keep` (run ids grow with time).
            let boundary: Option<i64> = db.query_opt(
                "SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                p![job, keep as i64],
                |r| r.get(0),
            )?;
            let Some(boundary) = boundary else {
                return Ok(Vec::new());
            };
            let pruned =
                db.query_map(&select, p![job, boundary, before_ms, limit as i64], |r| {
                    Ok(PrunedRun {
                        id: r.get(0)?,
                        log_path: r.get(1)?,
                    })
                })?;
            if let (Some(first), Some(last)) = (pruned.first(), pruned.last()) {
                db.execute(&delete, p![job, first.id, last.id, before_ms])?;
            }
            Ok(pruned)
        })
    }

    /// Deletes at most `limit` events of `job` (`None`: the daemon's own events) older than
    /// `before_ms`, keeping the job's latest event; returns how many went.
    pub fn prune_events(&self, job: Option<&str>, before_ms: i64, limit: usize) -> Result<usize> {
        // `job = ?1` rather than `job IS NOT DISTINCT FROM ?1`, which PostgreSQL cannot look
        // up in an index.
        let of_job = if job.is_some() {
            "job = ?1"
        } else {
            "job IS NULL AND CAST(?1 AS TEXT) IS NULL"
        };
        let sql = format!(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE {of_job} AND time < ?2
                 AND id < COALESCE((SELECT MAX(id) FROM events WHERE {of_job}), 0)
                 ORDER BY time LIMIT ?3)"
        );
        self.handing_on(|db| db.execute(&sql, p![job, before_ms, limit as i64]))
    }

    /// Takes out of the store at most `limit` retained checkpoints of ended runs recorded
    /// before `before_ms` that no run needs any more: never a job's newest savepoint or
    /// checkpoint (where its next run starts), one of a live run, or the one a rollback version
    /// would start from. Returns the rows taken out, for their folders to be deleted.
    pub fn prune_checkpoints(&self, before_ms: i64, limit: usize) -> Result<Vec<SavepointRow>> {
        let sql = format!(
            "SELECT s.id, s.job, s.run_id, s.location, s.time FROM savepoints s
             WHERE s.kind = ?3 AND s.time < ?1
               AND s.id < (SELECT MAX(t.id) FROM savepoints t WHERE t.job = s.job)
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.state IN {})
               AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.job = s.job
                               AND v.prev_restore = s.location)
               AND NOT EXISTS (SELECT 1 FROM savepoints n WHERE n.job = s.job AND n.id > s.id
                               AND n.location = s.location)
             ORDER BY s.id LIMIT ?2",
            *LIVE
        );
        self.sql(|db| {
            let rows = db.query_map(
                &sql,
                p![before_ms, limit as i64, SavepointKind::Checkpoint.as_str()],
                |r| {
                    Ok(SavepointRow {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        run_id: r.get(2)?,
                        location: r.get(3)?,
                        kind: SavepointKind::Checkpoint,
                        time: r.get(4)?,
                    })
                },
            )?;
            for row in &rows {
                db.execute("DELETE FROM savepoints WHERE id = ?1", p![row.id])?;
            }
            Ok(rows)
        })
    }

    /// Deletes at most `limit` alert deliveries recorded before `before_ms`.
    pub fn prune_alerts_sent(&self, before_ms: i64, limit: usize) -> Result<usize> {
        self.handing_on(|db| {
            db.execute(
                "DELETE FROM alerts_sent WHERE id IN (
                     SELECT id FROM alerts_sent WHERE sent_at < ?1 ORDER BY id LIMIT ?2)",
                p![before_ms, limit as i64],
            )
        })
    }

    /// The build keys of artifacts still needed: each job's deployed artifact, the rollback
    /// version's, the artifacts of live runs, and each job's previous artifact (of its newest run
    /// built otherwise), which a failed deploy starts again. The jobs are read in pages, the lock
    /// handed on between them.
    pub fn needed_artifacts(&self) -> Result<HashSet<String>> {
        const PAGE: i64 = 500;
        let mut keys = HashSet::new();
        let mut after = String::new();
        loop {
            let page: Vec<(String, Option<String>, Option<String>)> = self.handing_on(|db| {
                db.query_map(
                    "SELECT j.name, json_extract(j.artifact, '$.key'),
                         (SELECT r.artifact_key FROM runs r WHERE r.job = j.name
                             AND r.artifact_key IS NOT NULL
                             AND r.artifact_key IS DISTINCT FROM json_extract(j.artifact, '$.key')
                             ORDER BY r.id DESC LIMIT 1)
                     FROM jobs j WHERE j.name > ?1 ORDER BY j.name LIMIT ?2",
                    p![after, PAGE],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })?;
            let full = page.len() as i64 == PAGE;
            for (name, deployed, previous) in page {
                keys.extend(deployed);
                keys.extend(previous);
                after = name;
            }
            if !full {
                break;
            }
        }
        let sql = format!(
            "SELECT json_extract(prev_artifact, '$.key') FROM versions
                 WHERE prev_artifact IS NOT NULL
             UNION SELECT artifact_key FROM runs
                 WHERE state IN {} AND artifact_key IS NOT NULL",
            *LIVE
        );
        let rest: Vec<Option<String>> = self.sql(|db| db.query_map(&sql, p![], |r| r.get(0)))?;
        keys.extend(rest.into_iter().flatten());
        Ok(keys)
    }

    /// The size of the store, in bytes: on SQLite its files' pages (database and write-ahead
    /// log); on PostgreSQL its tables (in the schema of the connection's `search_path`), with
    /// their indexes and TOAST.
    pub fn page_bytes(&self) -> Result<u64> {
        let bytes: i64 = match self.backend() {
            Backend::Sqlite => {
                let conn = self.conn()?;
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                pages * size
            }
            Backend::Postgres => self.sql(|db| {
                db.one(
                    "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'
                       AND c.relname IN ('meta', 'commits', 'jobs', 'runs', 'events',
                           'alerts_sent', 'savepoints', 'versions', 'run_starts', 'held',
                           'jobkeeper_schema')",
                    p![],
                )
            })?,
        };
        Ok(u64::try_from(bytes).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::events::tests::add_jobs;
    use super::super::tests::{commit, spec_update};
    use super::super::{NewEvent, RunOrigin, RunState};
    use super::*;
    use crate::event::EventKind;

    fn run(s: &Blocking, job: &str, key: Option<&str>, started: i64, end: bool) -> i64 {
        let origin = RunOrigin {
            artifact_key: key,
            ..RunOrigin::default()
        };
        let id = s
            .insert_run(
                job,
                origin,
                "h",
                (crate::engine::EngineKind::Local, "dev"),
                Path::new("/logs"),
            )
            .unwrap();
        s.sql(|db| {
            db.execute(
                "UPDATE runs SET started_at = ?2 WHERE id = ?1",
                p![id, started],
            )
        })
        .unwrap();
        if end {
            s.finish_run(id, RunState::Succeeded, None).unwrap();
        }
        id
    }

    #[test]
    fn runs_past_the_latest_and_older_than_the_age_go_live_ones_stay() {
        for s in crate::store::tests::stores() {
            runs_past_the_latest_go_on(&s);
        }
    }

    fn runs_past_the_latest_go_on(s: &Blocking) {
        let live = run(s, "a", None, 1, false);
        let ids: Vec<i64> = (0..10).map(|i| run(s, "a", None, 10 + i, true)).collect();
        run(s, "b", None, 1, true);
        // Keep the latest 3; only runs that started before 15 may go: ids[0..5].
        let mut gone = Vec::new();
        loop {
            let batch = s.prune_runs("a", 3, 15, 2).unwrap();
            assert!(batch.len() <= 2);
            if batch.is_empty() {
                break;
            }
            gone.extend(batch.into_iter().map(|r| r.id));
        }
        assert_eq!(gone, ids[..5]);
        assert_eq!(gone.iter().map(|id| format!("/logs/{id}.log")).count(), 5);
        let left: Vec<i64> = s.runs("a", 100).unwrap().iter().map(|r| r.id).collect();
        assert!(left.contains(&live), "a live run is never deleted");
        assert_eq!(left.len(), 6);
        assert_eq!(s.runs("b", 10).unwrap().len(), 1, "other jobs untouched");
        // Fewer runs than `keep`: nothing goes, however old.
        assert!(s.prune_runs("b", 3, i64::MAX, 10).unwrap().is_empty());
        assert!(s.prune_runs("b", 0, i64::MAX, 10).unwrap().len() == 1);
    }

    #[test]
    fn old_events_go_but_each_jobs_latest_stays() {
        for s in crate::store::tests::stores() {
            old_events_go_on(&s);
        }
    }

    fn old_events_go_on(s: &Blocking) {
        add_jobs(s, &["a"]);
        for job in [Some("a"), Some("a"), None, Some("b")] {
            s.event(&NewEvent {
                job,
                ..NewEvent::new(EventKind::Started, "x")
            })
            .unwrap();
        }
        let far = super::super::now_ms() + 1000;
        assert_eq!(s.prune_events(Some("a"), far, 100).unwrap(), 1);
        assert_eq!(s.prune_events(Some("a"), far, 100).unwrap(), 0);
        assert_eq!(s.prune_events(Some("b"), far, 100).unwrap(), 0);
        assert_eq!(s.prune_events(None, far, 100).unwrap(), 0);
        assert_eq!(s.prune_events(Some("a"), 0, 100).unwrap(), 0);
        assert_eq!(s.events(Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.last_events().unwrap()["a"].kind, EventKind::Started);
        // The daemon's own events: the older ones go, the latest stays.
        for _ in 0..2 {
            s.event(&NewEvent::new(EventKind::RepoUnreachable, "x"))
                .unwrap();
        }
        assert_eq!(s.prune_events(None, far, 100).unwrap(), 2);
        assert_eq!(s.prune_events(None, far, 100).unwrap(), 0);
        let left: Vec<_> = s
            .events(None, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.job)
            .collect();
        assert_eq!(left, [None, Some("b".to_string()), Some("a".to_string())]);
    }

    #[test]
    fn candidates_are_the_jobs_with_something_to_delete() {
        for s in crate::store::tests::stores() {
            candidates_on(&s);
        }
    }

    fn candidates_on(s: &Blocking) {
        add_jobs(s, &["few", "live", "old", "young"]);
        // Keep 3, delete what started before 100.
        for i in 0..5 {
            run(s, "old", None, 10 + i, true);
            run(s, "young", None, 100 + i, true);
        }
        run(s, "live", None, 1, false);
        for i in 0..3 {
            run(s, "live", None, 200 + i, true);
        }
        run(s, "few", None, 1, true);
        for job in ["old", "old", "few"] {
            s.event(&NewEvent {
                job: Some(job),
                ..NewEvent::new(EventKind::Started, "x")
            })
            .unwrap();
        }
        let before = super::super::now_ms() + 1000;
        let page = |after: &str, limit| {
            s.prune_candidates(after, limit, 3, 100)
                .unwrap()
                .into_iter()
                .map(|c| (c.job, c.runs, c.events))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            page("", 10),
            [
                ("few".to_string(), false, false),
                ("live".to_string(), false, false),
                ("old".to_string(), true, false),
                ("young".to_string(), false, false),
            ]
        );
        assert_eq!(page("live", 1), [("old".to_string(), true, false)]);
        let events = s.prune_candidates("", 10, 3, before).unwrap();
        let with_events: Vec<_> = events.iter().filter(|c| c.events).map(|c| &c.job).collect();
        assert_eq!(with_events, ["old"], "a job's latest event is kept");
        // Once pruned, nothing is left to find.
        while !s.prune_runs("old", 3, 100, 10).unwrap().is_empty() {}
        assert!(s.prune_events(Some("old"), before, 10).unwrap() == 1);
        assert!(
            s.prune_candidates("", 10, 3, before)
                .unwrap()
                .iter()
                .all(|c| !c.events && (!c.runs || c.job == "young")),
        );
        assert!(page("", 10).iter().all(|c| !c.1));
    }

    #[test]
    fn the_checkpointer_copies_the_log_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = Blocking::open(&dir.path().join("s.db")).unwrap();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        // SQLite only: automatic checkpoints off, so the log is the checkpointer's to copy.
        s.conn()
            .unwrap()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        for i in 0..20 {
            run(&s, "a", None, i, true);
        }
        let (pages, copied) = s.checkpointer().unwrap().checkpoint().unwrap();
        assert!(pages > 0 && copied == pages, "{pages} {copied}");
        for s in crate::store::tests::stores() {
            // In memory or in PostgreSQL: no log of the store's to copy.
            assert_eq!(s.checkpointer().unwrap().checkpoint().unwrap(), (0, 0));
        }
    }

    #[test]
    fn needed_artifacts_are_the_deployed_live_and_previous_ones() {
        let s = Blocking::in_memory().unwrap();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        let spec = s.job("a").unwrap().unwrap().desired.unwrap();
        let artifact = crate::build::Artifact {
            key: "k3".into(),
            path: "/a".into(),
            digest: "d".into(),
            log: "/l".into(),
            commit: "p".into(),
        };
        run(&s, "a", Some("k1"), 1, true);
        run(&s, "a", Some("k2"), 2, true);
        run(&s, "z", Some("k0"), 1, false);
        run(&s, "a", Some("k3"), 3, true);
        let applied = crate::store::Applied {
            spec: &spec,
            hash: "h",
            artifact: Some(&artifact),
            commit: Some("c1"),
        };
        s.set_applied("a", Some(applied)).unwrap();
        let needed = s.needed_artifacts().unwrap();
        let mut needed: Vec<_> = needed.into_iter().collect();
        needed.sort();
        assert_eq!(needed, ["k0", "k2", "k3"]);
        assert!(s.page_bytes().unwrap() > 0);
    }

    #[test]
    fn needed_artifacts_and_the_other_prunes_on_every_backend() {
        for s in crate::store::tests::stores() {
            add_jobs(&s, &["a", "b"]);
            s.sql(|db| {
                db.execute(
                    "UPDATE jobs SET artifact = ?1 WHERE name = 'a'",
                    p![r#"{"key": "k3", "path": "/a"}"#],
                )?;
                db.execute(
                    "INSERT INTO versions (job, prev_artifact, updated_at) VALUES ('b', ?1, 0)",
                    p![r#"{"key": "k5"}"#],
                )
            })
            .unwrap();
            run(&s, "a", Some("k1"), 1, true);
            run(&s, "a", Some("k2"), 2, true);
            run(&s, "z", Some("k0"), 1, false);
            run(&s, "a", Some("k3"), 3, true);
            let mut needed: Vec<_> = s.needed_artifacts().unwrap().into_iter().collect();
            needed.sort();
            assert_eq!(needed, ["k0", "k2", "k3", "k5"]);
            assert!(s.page_bytes().unwrap() > 0);

            // Alert deliveries: the oldest go first, at most `limit` at a time.
            for event_id in 1..=3 {
                s.claim_alert(&crate::store::NewAlertSent {
                    event_id,
                    job: None,
                    event: EventKind::RepoUnreachable,
                    commit_id: None,
                    target: "t/email",
                    folded: 0,
                })
                .unwrap();
            }
            let later = super::super::now_ms() + 1000;
            assert_eq!(s.prune_alerts_sent(0, 10).unwrap(), 0);
            assert_eq!(s.prune_alerts_sent(later, 2).unwrap(), 2);
            assert_eq!(s.alerts_sent(10).unwrap()[0].event_id, 3);
            assert_eq!(s.prune_alerts_sent(later, 2).unwrap(), 1);

            // Retained checkpoints: an old one of an ended run goes; the newest, one of a live
            // run, and the one a rollback version starts from stay.
            let ended = run(&s, "c", None, 1, true);
            let live = run(&s, "c", None, 2, false);
            let cp = |run_id, loc: &str| {
                s.add_savepoint_taken(c(), Some(run_id), loc, SavepointKind::Checkpoint, 10)
                    .unwrap()
            };
            fn c() -> &'static str {
                "c"
            }
            let gone = cp(ended, "file:/cp/1");
            cp(ended, "file:/cp/rollback");
            cp(live, "file:/cp/live");
            cp(ended, "file:/cp/newest");
            s.sql(|db| {
                db.execute(
                    "INSERT INTO versions (job, prev_restore, updated_at) VALUES ('c', ?1, 0)",
                    p!["file:/cp/rollback"],
                )
            })
            .unwrap();
            assert!(s.prune_checkpoints(10, 10).unwrap().is_empty(), "too young");
            let pruned = s.prune_checkpoints(11, 10).unwrap();
            assert_eq!(
                pruned
                    .iter()
                    .map(|r| (r.id, r.location.as_str()))
                    .collect::<Vec<_>>(),
                [(gone, "file:/cp/1")]
            );
            assert_eq!(s.savepoints("c", 10).unwrap().len(), 3);
            assert!(s.prune_checkpoints(11, 10).unwrap().is_empty());
        }
    }
}
