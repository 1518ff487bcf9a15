//! The `savepoints` table: Flink savepoints taken when stopping, and the retained checkpoints
//! restarts started from.

use serde::Serialize;

use super::sql::p;
use super::{At, Blocking, Result, now_ms};

/// What a savepoints row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointKind {
    /// A savepoint taken when stopping (upgrade, suspend, removal).
    Savepoint,
    /// The latest retained checkpoint of a run that failed.
    Checkpoint,
}

words!(SavepointKind {
    Savepoint => "savepoint",
    Checkpoint => "checkpoint",
});

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
    /// A savepoint or a retained checkpoint.
    pub kind: SavepointKind,
    /// Unix time (ms) it was recorded.
    pub time: i64,
}

impl Blocking {
    /// Records a savepoint (or retained checkpoint) of a job.
    pub fn add_savepoint(
        &self,
        job: &str,
        run_id: Option<i64>,
        location: &str,
        kind: SavepointKind,
    ) -> Result<i64> {
        self.add_savepoint_taken(job, run_id, location, kind, now_ms())
    }

    /// Records a savepoint (or retained checkpoint) of a job that completed at `time` (ms since
    /// the epoch, as its engine says).
    pub fn add_savepoint_taken(
        &self,
        job: &str,
        run_id: Option<i64>,
        location: &str,
        kind: SavepointKind,
        time: i64,
    ) -> Result<i64> {
        self.sql(|db| {
            db.one(
                "INSERT INTO savepoints (job, run_id, location, kind, time)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                p![job, run_id, location, kind.as_str(), time],
            )
        })
    }

    /// When the newest row of `job` at `location` completed (ms), `None` when none is kept.
    pub fn savepoint_time(&self, job: &str, location: &str) -> Result<Option<i64>> {
        self.sql(|db| {
            db.query_opt(
                "SELECT time FROM savepoints WHERE job = ?1 AND location = ?2
                 ORDER BY id DESC LIMIT 1",
                p![job, location],
                |r| r.get(0),
            )
        })
    }

    /// A job's savepoints and retained checkpoints, newest first.
    pub fn savepoints(&self, job: &str, limit: usize) -> Result<Vec<SavepointRow>> {
        self.sql(|db| {
            db.query_map(
                "SELECT id, job, run_id, location, kind, time FROM savepoints WHERE job = ?1
                 ORDER BY id DESC LIMIT ?2",
                p![job, limit as i64],
                |r| {
                    let id: i64 = r.get(0)?;
                    let at = At {
                        table: "savepoints",
                        row: &id,
                    };
                    Ok(SavepointRow {
                        id,
                        job: r.get(1)?,
                        run_id: r.get(2)?,
                        location: r.get(3)?,
                        kind: at.word("kind", &r.get::<String>(4)?, SavepointKind::parse)?,
                        time: r.get(5)?,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_are_kept_per_job_newest_first() {
        for s in crate::store::tests::stores() {
            let first = s
                .add_savepoint("a", Some(1), "file:/sp/1", SavepointKind::Savepoint)
                .unwrap();
            let second = s
                .add_savepoint("a", Some(1), "file:/cp/2", SavepointKind::Checkpoint)
                .unwrap();
            assert!(second > first);
            let sps = s.savepoints("a", 10).unwrap();
            assert_eq!(sps.len(), 2);
            assert_eq!(sps[0].location, "file:/cp/2");
            assert_eq!((sps[1].id, sps[1].kind), (first, SavepointKind::Savepoint));
            assert!(s.savepoints("b", 10).unwrap().is_empty());
            s.add_savepoint_taken("a", Some(2), "file:/cp/3", SavepointKind::Checkpoint, 1234)
                .unwrap();
            assert_eq!(s.savepoint_time("a", "file:/cp/3").unwrap(), Some(1234));
            assert_eq!(s.savepoint_time("a", "file:/cp/9").unwrap(), None);
            for k in SavepointKind::ALL {
                assert_eq!(SavepointKind::parse(k.as_str()), Some(k));
            }
            // A row damaged on purpose.
            s.sql(|db| {
                db.execute(
                    "UPDATE savepoints SET kind = 'snapshot' WHERE id = ?1",
                    p![first],
                )
            })
            .unwrap();
            let err = s.savepoints("a", 10).unwrap_err();
            assert!(err.to_string().contains("`snapshot`"), "{err}");
        }
    }
}
