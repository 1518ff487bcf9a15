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

use std::collections::HashSet;

use parking_lot::MutexGuard;
use rusqlite::{Connection, OptionalExtension, params};

use super::runs::LIVE;
use super::{Blocking, Result, SavepointKind, SavepointRow};

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
/// deletes millions of rows, that is some job's state write.
pub struct Checkpointer {
    /// `None` for an in-memory store.
    conn: Option<Connection>,
}

impl Checkpointer {
    /// Copies what it can of the log into the database now; the log's pages and how many of
    /// them are in the database (the rest are copied by a later checkpoint).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        match &self.conn {
            Some(conn) => Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?),
            None => Ok((0, 0)),
        }
    }
}

/// Hands the lock to a caller waiting for it, if any.
fn release(conn: MutexGuard<'_, Connection>) {
    MutexGuard::unlock_fair(conn);
}

impl Blocking {
    /// A [`Checkpointer`] on this store's file.
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        let conn = match &self.path {
            Some(path) => {
                let conn = Connection::open(path)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Some(conn)
            }
            None => None,
        };
        Ok(Checkpointer { conn })
    }

    /// Up to `limit` jobs after `after` by name (all jobs, removed ones too; a pass walks them in
    /// pages), each with whether it has runs past its latest `keep` that started before
    /// `before_ms` and ended, and events before `before_ms` besides its latest. Index lookups
    /// only, so a pass with nothing to delete costs a query per page. Run ids grow with time:
    /// a job whose oldest ended run is younger than the age has no older one.
    pub fn prune_candidates(
        &self,
        after: &str,
        limit: usize,
        keep: usize,
        before_ms: i64,
    ) -> Result<Vec<PruneCandidate>> {
        let conn = self.conn()?;
        let rows = {
            let mut st = conn.prepare_cached(&format!(
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
            ))?;
            st.query_map(params![after, limit as i64, keep as i64, before_ms], |r| {
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
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?
        };
        release(conn);
        Ok(rows)
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
        let mut conn = self.conn()?;
        // The newest run that is not among the latest `keep` (run ids grow with time).
        let boundary: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
            )?
            .query_row(params![job, keep as i64], |r| r.get(0))
            .optional()?;
        let Some(boundary) = boundary else {
            release(conn);
            return Ok(Vec::new());
        };
        let tx = conn.transaction()?;
        let pruned: Vec<PrunedRun> = {
            let mut st = tx.prepare_cached(&format!(
                "SELECT id, log_path FROM runs WHERE job = ?1 AND id <= ?2 AND started_at < ?3
                 AND state NOT IN {} ORDER BY id LIMIT ?4",
                *LIVE
            ))?;
            st.query_map(params![job, boundary, before_ms, limit as i64], |r| {
                Ok(PrunedRun {
                    id: r.get(0)?,
                    log_path: r.get(1)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?
        };
        if let (Some(first), Some(last)) = (pruned.first(), pruned.last()) {
            tx.execute(
                &format!(
                    "DELETE FROM runs WHERE job = ?1 AND id BETWEEN ?2 AND ?3 AND started_at < ?4
                     AND state NOT IN {}",
                    *LIVE
                ),
                params![job, first.id, last.id, before_ms],
            )?;
        }
        tx.commit()?;
        release(conn);
        Ok(pruned)
    }

    /// Deletes at most `limit` events of `job` (`None`: the daemon's own events) older than
    /// `before_ms`, keeping the job's latest event; returns how many went.
    pub fn prune_events(&self, job: Option<&str>, before_ms: i64, limit: usize) -> Result<usize> {
        let conn = self.conn()?;
        let n = conn
            .prepare_cached(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events WHERE job IS ?1 AND time < ?2
                     AND id < COALESCE((SELECT MAX(id) FROM events WHERE job IS ?1), 0)
                     ORDER BY time LIMIT ?3)",
            )?
            .execute(params![job, before_ms, limit as i64])?;
        release(conn);
        Ok(n)
    }

    /// Takes out of the store at most `limit` retained checkpoints of ended runs recorded
    /// before `before_ms` that no run needs any more: never a job's newest savepoint or
    /// checkpoint (where its next run starts), one of a live run, or the one a rollback version
    /// would start from. Returns the rows taken out, for their folders to be deleted.
    pub fn prune_checkpoints(&self, before_ms: i64, limit: usize) -> Result<Vec<SavepointRow>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT s.id, s.job, s.run_id, s.location, s.time FROM savepoints s
             WHERE s.kind = 'checkpoint' AND s.time < ?1
               AND s.id < (SELECT MAX(t.id) FROM savepoints t WHERE t.job = s.job)
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.state IN {})
               AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.job = s.job
                               AND v.prev_restore = s.location)
               AND NOT EXISTS (SELECT 1 FROM savepoints n WHERE n.job = s.job AND n.id > s.id
                               AND n.location = s.location)
             ORDER BY s.id LIMIT ?2",
            *LIVE
        ))?;
        let rows = st
            .query_map(params![before_ms, limit as i64], |r| {
                Ok(SavepointRow {
                    id: r.get(0)?,
                    job: r.get(1)?,
                    run_id: r.get(2)?,
                    location: r.get(3)?,
                    kind: SavepointKind::Checkpoint,
                    time: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for row in &rows {
            conn.execute("DELETE FROM savepoints WHERE id = ?1", params![row.id])?;
        }
        Ok(rows)
    }

    /// Deletes at most `limit` alert deliveries recorded before `before_ms`.
    pub fn prune_alerts_sent(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let conn = self.conn()?;
        let n = conn
            .prepare_cached(
                "DELETE FROM alerts_sent WHERE id IN (
                     SELECT id FROM alerts_sent WHERE sent_at < ?1 ORDER BY id LIMIT ?2)",
            )?
            .execute(params![before_ms, limit as i64])?;
        release(conn);
        Ok(n)
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
            let conn = self.conn()?;
            let page: Vec<(String, Option<String>, Option<String>)> = conn
                .prepare_cached(
                    "SELECT j.name, json_extract(j.artifact, '$.key'),
                         (SELECT r.artifact_key FROM runs r WHERE r.job = j.name
                             AND r.artifact_key IS NOT NULL
                             AND r.artifact_key IS NOT json_extract(j.artifact, '$.key')
                             ORDER BY r.id DESC LIMIT 1)
                     FROM jobs j WHERE j.name > ?1 ORDER BY j.name LIMIT ?2",
                )?
                .query_map(params![after, PAGE], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<std::result::Result<_, _>>()?;
            release(conn);
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
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT json_extract(prev_artifact, '$.key') FROM versions
                 WHERE prev_artifact IS NOT NULL
             UNION SELECT artifact_key FROM runs
                 WHERE state IN {} AND artifact_key IS NOT NULL",
            *LIVE
        ))?;
        for key in st.query_map([], |r| r.get::<_, Option<String>>(0))? {
            keys.extend(key?);
        }
        Ok(keys)
    }

    /// The size of the store's files (database and write-ahead log), in bytes.
    pub fn page_bytes(&self) -> Result<u64> {
        let conn = self.conn()?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages * size) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
        s.conn()
            .unwrap()
            .execute(
                "UPDATE runs SET started_at = ?2 WHERE id = ?1",
                params![id, started],
            )
            .unwrap();
        if end {
            s.finish_run(id, RunState::Succeeded, None).unwrap();
        }
        id
    }

    #[test]
    fn runs_past_the_latest_and_older_than_the_age_go_live_ones_stay() {
        let s = Blocking::in_memory().unwrap();
        let live = run(&s, "a", None, 1, false);
        let ids: Vec<i64> = (0..10).map(|i| run(&s, "a", None, 10 + i, true)).collect();
        run(&s, "b", None, 1, true);
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
        let s = Blocking::in_memory().unwrap();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
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
    }

    #[test]
    fn candidates_are_the_jobs_with_something_to_delete() {
        let s = Blocking::in_memory().unwrap();
        let names = ["few", "live", "old", "young"];
        let updates: Vec<_> = names.iter().map(|n| spec_update(n, "dev")).collect();
        s.apply_commit(&commit("c1"), &updates, &[]).unwrap();
        // Keep 3, delete what started before 100.
        for i in 0..5 {
            run(&s, "old", None, 10 + i, true);
            run(&s, "young", None, 100 + i, true);
        }
        run(&s, "live", None, 1, false);
        for i in 0..3 {
            run(&s, "live", None, 200 + i, true);
        }
        run(&s, "few", None, 1, true);
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
        s.conn()
            .unwrap()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        for i in 0..20 {
            run(&s, "a", None, i, true);
        }
        let (pages, copied) = s.checkpointer().unwrap().checkpoint().unwrap();
        assert!(pages > 0 && copied == pages, "{pages} {copied}");
        let memory = Blocking::in_memory().unwrap().checkpointer().unwrap();
        assert_eq!(memory.checkpoint().unwrap(), (0, 0));
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
}
