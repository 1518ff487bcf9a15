//! The `savepoints` table: Flink savepoints taken when stopping, and the retained checkpoints
//! restarts started from.

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store, now_ms};

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
    fn savepoints_are_kept_per_job_newest_first() {
        let s = Store::in_memory().unwrap();
        s.add_savepoint("a", Some(1), "file:/sp/1", "savepoint")
            .unwrap();
        s.add_savepoint("a", Some(1), "file:/cp/2", "checkpoint")
            .unwrap();
        let sps = s.savepoints("a", 10).unwrap();
        assert_eq!(sps.len(), 2);
        assert_eq!(sps[0].location, "file:/cp/2");
        assert_eq!(sps[1].kind, "savepoint");
        assert!(s.savepoints("b", 10).unwrap().is_empty());
    }
}
