//! Retention in the store: deleting a job's old runs and events in small batches, and the
//! artifact keys that current, previous and live versions still need.
//!
//! Every call here is one short statement (or a few) bounded by a `limit`, so the store's lock
//! is never held long and reconcile never waits behind a pruning pass. A live run (starting or
//! running) is never deleted, nor a job's latest event (the job list shows it).

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

/// A deleted run: its id and its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRun {
    /// The run id.
    pub id: i64,
    /// Its log file (the caller deletes it, with its rotated part).
    pub log_path: String,
}

impl Store {
    /// Up to `limit` job names after `after` (all jobs, removed ones too), by name: a pruning
    /// pass walks the jobs in pages.
    pub fn job_names_after(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st =
            conn.prepare_cached("SELECT name FROM jobs WHERE name > ?1 ORDER BY name LIMIT ?2")?;
        let rows = st
            .query_map(params![after, limit as i64], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
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
        let mut conn = self.conn();
        // The newest run that is not among the latest `keep` (run ids grow with time).
        let boundary: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
            )?
            .query_row(params![job, keep as i64], |r| r.get(0))
            .optional()?;
        let Some(boundary) = boundary else {
            return Ok(Vec::new());
        };
        let tx = conn.transaction()?;
        let pruned: Vec<PrunedRun> = {
            let mut st = tx.prepare_cached(
                "SELECT id, log_path FROM runs WHERE job = ?1 AND id <= ?2 AND started_at < ?3
                 AND state NOT IN ('starting', 'running') ORDER BY id LIMIT ?4",
            )?;
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
                "DELETE FROM runs WHERE job = ?1 AND id BETWEEN ?2 AND ?3 AND started_at < ?4
                 AND state NOT IN ('starting', 'running')",
                params![job, first.id, last.id, before_ms],
            )?;
        }
        tx.commit()?;
        Ok(pruned)
    }

    /// Deletes at most `limit` events of `job` (`None`: the daemon's own events) older than
    /// `before_ms`, keeping the job's latest event; returns how many went.
    pub fn prune_events(&self, job: Option<&str>, before_ms: i64, limit: usize) -> Result<usize> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events WHERE job IS ?1 AND time < ?2
                     AND id < COALESCE((SELECT MAX(id) FROM events WHERE job IS ?1), 0)
                     ORDER BY time LIMIT ?3)",
            )?
            .execute(params![job, before_ms, limit as i64])?;
        Ok(n)
    }

    /// Deletes at most `limit` alert deliveries recorded before `before_ms`.
    pub fn prune_alerts_sent(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(
                "DELETE FROM alerts_sent WHERE id IN (
                     SELECT id FROM alerts_sent WHERE sent_at < ?1 ORDER BY id LIMIT ?2)",
            )?
            .execute(params![before_ms, limit as i64])?;
        Ok(n)
    }

    /// The build keys of artifacts still needed: each job's deployed artifact, the rollback
    /// version's, the artifacts of live runs, and each job's previous artifact (of its newest run built otherwise), which a
    /// failed deploy starts again.
    pub fn needed_artifacts(&self) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT json_extract(artifact, '$.key') FROM jobs WHERE artifact IS NOT NULL
             UNION SELECT json_extract(prev_artifact, '$.key') FROM versions
                 WHERE prev_artifact IS NOT NULL
             UNION SELECT artifact_key FROM runs
                 WHERE state IN ('starting', 'running') AND artifact_key IS NOT NULL
             UNION SELECT (SELECT r.artifact_key FROM runs r WHERE r.job = j.name
                     AND r.artifact_key IS NOT NULL
                     AND r.artifact_key IS NOT json_extract(j.artifact, '$.key')
                     ORDER BY r.id DESC LIMIT 1)
                 FROM jobs j",
        )?;
        let keys = st
            .query_map([], |r| r.get::<_, Option<String>>(0))?
            .filter_map(|k| k.transpose())
            .collect::<std::result::Result<_, _>>()?;
        Ok(keys)
    }

    /// The size of the store's files (database and write-ahead log), in bytes.
    pub fn page_bytes(&self) -> Result<u64> {
        let conn = self.conn();
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

    fn run(s: &Store, job: &str, key: Option<&str>, started: i64, end: bool) -> i64 {
        let origin = RunOrigin {
            artifact_key: key,
            ..RunOrigin::default()
        };
        let id = s
            .insert_run(job, origin, "h", ("local", "dev"), Path::new("/logs"))
            .unwrap();
        s.conn()
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
        let s = Store::in_memory().unwrap();
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
        let s = Store::in_memory().unwrap();
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
    fn needed_artifacts_are_the_deployed_live_and_previous_ones() {
        let s = Store::in_memory().unwrap();
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
        s.set_applied("a", Some((&spec, "h", Some(&artifact), Some("c1"))))
            .unwrap();
        let needed = s.needed_artifacts().unwrap();
        let mut needed: Vec<_> = needed.into_iter().collect();
        needed.sort();
        assert_eq!(needed, ["k0", "k2", "k3"]);
        assert!(s.page_bytes().unwrap() > 0);
    }
}
