//! The savepoint history beyond the `savepoints` rows' basics: why each savepoint was taken
//! ([`SavepointCause`]) and on which cluster, whether it was disposed of (and the failures of
//! disposing of it), where each run started from (`run_starts`), and which savepoints a
//! job's `keep` lets go ([`Store::disposable_savepoints`]).

use serde::Serialize;

use super::sql::{Backend, RowRef, p};
use super::{At, Blocking, Result, SavepointKind, now_ms};
pub use crate::engine::SavepointCause;

/// One savepoint (or retained checkpoint) of a job with its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavepointEntry {
    /// Row id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// The run it was taken from.
    pub run_id: Option<i64>,
    /// Where it is.
    pub location: String,
    /// A savepoint or a retained checkpoint.
    pub kind: SavepointKind,
    /// Why it was taken; `None` for rows recorded before causes were.
    pub cause: Option<SavepointCause>,
    /// The cluster that took it (flink: its REST URL), when recorded.
    pub cluster: Option<String>,
    /// When it completed (ms since the epoch).
    pub time: i64,
    /// When it was disposed of (ms), `None` while it is kept.
    pub disposed_at: Option<i64>,
    /// How many times disposing of it failed.
    pub dispose_failures: i64,
    /// Why the latest disposal failed.
    pub dispose_error: Option<String>,
}

/// What a new savepoint row holds beyond its job and location.
#[derive(Debug, Clone, Copy)]
pub struct NewSavepoint<'a> {
    /// The run it was taken from.
    pub run_id: Option<i64>,
    /// A savepoint or a retained checkpoint.
    pub kind: SavepointKind,
    /// Why it was taken.
    pub cause: SavepointCause,
    /// The cluster that took it.
    pub cluster: Option<&'a str>,
    /// When it completed (ms); `None`: now.
    pub time: Option<i64>,
}

/// How many savepoints a job keeps (its `savepoints.keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// The newest this many are kept.
    pub count: u32,
    /// Those younger than this (ms) are kept.
    pub age_ms: i64,
}

const COLUMNS: &str = "id, job, run_id, location, kind, cause, cluster, time, disposed_at, \
                       dispose_failures, dispose_error";

fn entry(r: &dyn RowRef) -> Result<SavepointEntry> {
    let id: i64 = r.get(0)?;
    let at = At {
        table: "savepoints",
        row: &id,
    };
    let cause: Option<String> = r.get(5)?;
    Ok(SavepointEntry {
        id,
        job: r.get(1)?,
        run_id: r.get(2)?,
        location: r.get(3)?,
        kind: at.word("kind", &r.get::<String>(4)?, SavepointKind::parse)?,
        cause: cause
            .map(|c| at.word("cause", &c, SavepointCause::parse))
            .transpose()?,
        cluster: r.get(6)?,
        time: r.get(7)?,
        disposed_at: r.get(8)?,
        dispose_failures: r.get(9)?,
        dispose_error: r.get(10)?,
    })
}

impl Blocking {
    /// Records a savepoint (or retained checkpoint) of `job` at `location` with why it was
    /// taken and where.
    pub fn add_savepoint_by(
        &self,
        job: &str,
        location: &str,
        new: NewSavepoint<'_>,
    ) -> Result<i64> {
        self.sql(|db| {
            db.one(
                "INSERT INTO savepoints (job, run_id, location, kind, time, cause, cluster)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                p![
                    job,
                    new.run_id,
                    location,
                    new.kind.as_str(),
                    new.time.unwrap_or_else(now_ms),
                    new.cause.as_str(),
                    new.cluster
                ],
            )
        })
    }

    /// A job's savepoints and retained checkpoints with their history, newest first.
    pub fn savepoint_history(&self, job: &str, limit: usize) -> Result<Vec<SavepointEntry>> {
        let sql =
            format!("SELECT {COLUMNS} FROM savepoints WHERE job = ?1 ORDER BY id DESC LIMIT ?2");
        self.sql(|db| db.query_map(&sql, p![job, limit as i64], entry))
    }

    /// When the newest periodic savepoint of `job` completed (ms).
    pub fn last_periodic_savepoint(&self, job: &str) -> Result<Option<i64>> {
        self.sql(|db| {
            db.one(
                "SELECT MAX(time) FROM savepoints WHERE job = ?1 AND cause = 'periodic'",
                p![job],
            )
        })
    }

    /// Records that run `run_id` of `job` started from `location`.
    pub fn record_run_start(&self, job: &str, run_id: i64, location: &str) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "INSERT INTO run_starts (run_id, job, location) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id) DO UPDATE SET job = excluded.job,
                     location = excluded.location",
                p![run_id, job, location],
            )
        })?;
        Ok(())
    }

    /// Where run `run_id` started from, when it started from a savepoint or checkpoint.
    pub fn run_start(&self, run_id: i64) -> Result<Option<String>> {
        self.sql(|db| {
            db.query_opt(
                "SELECT location FROM run_starts WHERE run_id = ?1",
                p![run_id],
                |r| r.get(0),
            )
        })
    }

    /// The jobs with savepoints not disposed of beyond `count` of them (candidates for
    /// disposal, whatever their `keep`), by name.
    pub fn jobs_with_savepoints_over(&self, count: u32) -> Result<Vec<String>> {
        let mut jobs: Vec<String> = self.sql(|db| {
            db.query_map(
                "SELECT job FROM savepoints WHERE kind = 'savepoint' AND disposed_at IS NULL
                 GROUP BY job HAVING COUNT(*) > ?1 ORDER BY job",
                p![i64::from(count)],
                |r| r.get(0),
            )
        })?;
        if self.backend() == Backend::Postgres {
            // By name as SQLite orders them (bytes), whatever the database's collation.
            jobs.sort_unstable();
        }
        Ok(jobs)
    }

    /// The savepoints of `job` that `keep` lets go, oldest first: kept are the newest
    /// `keep.count` savepoints not disposed of, those younger than `keep.age`, the one a live
    /// run of the job started from, the one its rollback version would start from, and the one
    /// its file's `restore` names. Only savepoints (never retained checkpoints, which retention
    /// prunes) and only those not disposed of yet.
    pub fn disposable_savepoints(&self, job: &str, keep: Keep) -> Result<Vec<SavepointEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM savepoints s
             WHERE s.job = ?1 AND s.kind = 'savepoint' AND s.disposed_at IS NULL
               AND s.time < ?2
               AND s.id NOT IN (SELECT t.id FROM savepoints t WHERE t.job = ?1
                                AND t.kind = 'savepoint' AND t.disposed_at IS NULL
                                ORDER BY t.id DESC LIMIT ?3)
               AND NOT EXISTS (SELECT 1 FROM run_starts rs JOIN runs r ON r.id = rs.run_id
                               WHERE rs.job = ?1 AND rs.location = s.location
                               AND r.state IN {})
               AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.job = ?1
                               AND v.prev_restore = s.location)
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.name = ?1
                               AND (json_extract(j.desired, '$.restore') = s.location
                                    OR json_extract(j.applied, '$.restore') = s.location))
             ORDER BY s.id",
            *super::runs::LIVE
        );
        let before = now_ms().saturating_sub(keep.age_ms);
        let count = i64::from(keep.count.max(1));
        self.sql(|db| db.query_map(&sql, p![job, before, count], entry))
    }

    /// Marks savepoint row `id` as disposed of, now.
    pub fn mark_disposed(&self, id: i64) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE savepoints SET disposed_at = ?2, dispose_error = NULL WHERE id = ?1",
                p![id, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records that disposing of savepoint row `id` failed, and why.
    pub fn dispose_failed(&self, id: i64, why: &str) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE savepoints SET dispose_failures = dispose_failures + 1,
                     dispose_error = ?2 WHERE id = ?1",
                p![id, why],
            )
        })?;
        Ok(())
    }
}

impl super::Store {
    /// See [`Blocking::add_savepoint_by`].
    pub async fn add_savepoint_by(
        &self,
        job: &str,
        location: &str,
        new: NewSavepoint<'_>,
    ) -> Result<i64> {
        let (job, location) = (job.to_string(), location.to_string());
        let (run_id, kind, cause, time) = (new.run_id, new.kind, new.cause, new.time);
        let cluster = new.cluster.map(str::to_string);
        self.call(move |db| {
            let new = NewSavepoint {
                run_id,
                kind,
                cause,
                cluster: cluster.as_deref(),
                time,
            };
            db.add_savepoint_by(&job, &location, new)
        })
        .await
    }

    /// See [`Blocking::savepoint_history`].
    pub async fn savepoint_history(&self, job: &str, limit: usize) -> Result<Vec<SavepointEntry>> {
        let job = job.to_string();
        self.call(move |db| db.savepoint_history(&job, limit)).await
    }

    /// See [`Blocking::last_periodic_savepoint`].
    pub async fn last_periodic_savepoint(&self, job: &str) -> Result<Option<i64>> {
        let job = job.to_string();
        self.call(move |db| db.last_periodic_savepoint(&job)).await
    }

    /// See [`Blocking::record_run_start`].
    pub async fn record_run_start(&self, job: &str, run_id: i64, location: &str) -> Result<()> {
        let (job, location) = (job.to_string(), location.to_string());
        self.call(move |db| db.record_run_start(&job, run_id, &location))
            .await
    }

    /// See [`Blocking::run_start`].
    pub async fn run_start(&self, run_id: i64) -> Result<Option<String>> {
        self.call(move |db| db.run_start(run_id)).await
    }

    /// See [`Blocking::jobs_with_savepoints_over`].
    pub async fn jobs_with_savepoints_over(&self, count: u32) -> Result<Vec<String>> {
        self.call(move |db| db.jobs_with_savepoints_over(count))
            .await
    }

    /// See [`Blocking::disposable_savepoints`].
    pub async fn disposable_savepoints(
        &self,
        job: &str,
        keep: Keep,
    ) -> Result<Vec<SavepointEntry>> {
        let job = job.to_string();
        self.call(move |db| db.disposable_savepoints(&job, keep))
            .await
    }

    /// See [`Blocking::mark_disposed`].
    pub async fn mark_disposed(&self, id: i64) -> Result<()> {
        self.call(move |db| db.mark_disposed(id)).await
    }

    /// See [`Blocking::dispose_failed`].
    pub async fn dispose_failed(&self, id: i64, why: &str) -> Result<()> {
        let why = why.to_string();
        self.call(move |db| db.dispose_failed(id, &why)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &Blocking, job: &str, loc: &str, cause: SavepointCause, time: i64) -> i64 {
        let new = NewSavepoint {
            run_id: None,
            kind: SavepointKind::Savepoint,
            cause,
            cluster: Some("http://jm:8081"),
            time: Some(time),
        };
        s.add_savepoint_by(job, loc, new).unwrap()
    }

    #[test]
    fn keep_lets_go_of_old_savepoints_past_the_count_but_never_the_protected_ones() {
        for s in crate::store::tests::stores() {
            keep_lets_go_on(&s);
        }
    }

    fn keep_lets_go_on(s: &Blocking) {
        let old = now_ms() - 3_600_000;
        for i in 1..=5 {
            sp(
                s,
                "a",
                &format!("file:/sp/{i}"),
                SavepointCause::Periodic,
                old,
            );
        }
        sp(s, "a", "file:/sp/young", SavepointCause::Manual, now_ms());
        sp(s, "b", "file:/sp/b1", SavepointCause::Upgrade, old);
        let keep = Keep {
            count: 2,
            age_ms: 60_000,
        };
        let locs = |v: Vec<SavepointEntry>| v.into_iter().map(|e| e.location).collect::<Vec<_>>();
        assert_eq!(
            locs(s.disposable_savepoints("a", keep).unwrap()),
            ["file:/sp/1", "file:/sp/2", "file:/sp/3", "file:/sp/4"],
            "the newest two (young, 5) stay"
        );
        // Young ones stay whatever the count.
        let all_young = Keep {
            count: 1,
            age_ms: 7_200_000,
        };
        assert!(s.disposable_savepoints("a", all_young).unwrap().is_empty());
        // A live run that started from one keeps it; so does a job file's `restore`.
        let run = s
            .insert_run(
                "a",
                super::super::RunOrigin::default(),
                "h",
                (crate::engine::EngineKind::Flink, "prod"),
                std::path::Path::new("/tmp"),
            )
            .unwrap();
        s.record_run_start("a", run, "file:/sp/2").unwrap();
        assert_eq!(s.run_start(run).unwrap().as_deref(), Some("file:/sp/2"));
        assert_eq!(
            locs(s.disposable_savepoints("a", keep).unwrap()),
            ["file:/sp/1", "file:/sp/3", "file:/sp/4"]
        );
        // Disposed of: never offered again; a failure is counted with its reason.
        let first = s.disposable_savepoints("a", keep).unwrap()[0].id;
        s.dispose_failed(first, "refused").unwrap();
        let h = s.savepoint_history("a", 10).unwrap();
        let row = h.iter().find(|e| e.id == first).unwrap();
        assert_eq!(
            (row.dispose_failures, row.dispose_error.as_deref()),
            (1, Some("refused"))
        );
        s.mark_disposed(first).unwrap();
        let row = s.savepoint_history("a", 10).unwrap();
        let row = row.iter().find(|e| e.id == first).unwrap();
        assert!(row.disposed_at.is_some() && row.dispose_error.is_none());
        assert_eq!(s.disposable_savepoints("a", keep).unwrap().len(), 2);
        assert_eq!(s.jobs_with_savepoints_over(2).unwrap(), ["a"]);
        // The savepoint the job's file restores from, and its rollback version's, stay.
        s.sql(|db| {
            db.execute(
                "INSERT INTO jobs (name, path, desired, state, updated_at)
                 VALUES ('a', 'jobs/a.yaml', ?1, 'pending', 0)",
                p![r#"{"restore": "file:/sp/3"}"#],
            )?;
            db.execute(
                "INSERT INTO versions (job, prev_restore, updated_at) VALUES ('a', ?1, 0)",
                p!["file:/sp/4"],
            )
        })
        .unwrap();
        assert!(s.disposable_savepoints("a", keep).unwrap().is_empty());
        // A run started again records where it started from last.
        s.record_run_start("a", run, "file:/sp/young").unwrap();
        assert_eq!(s.run_start(run).unwrap().as_deref(), Some("file:/sp/young"));
        assert_eq!(s.run_start(run + 1).unwrap(), None);
        // Jobs by name as bytes order them, whatever the database's collation.
        for i in 0..3 {
            sp(
                s,
                "B",
                &format!("file:/sp/B{i}"),
                SavepointCause::Manual,
                old,
            );
        }
        assert_eq!(s.jobs_with_savepoints_over(2).unwrap(), ["B", "a"]);
        assert_eq!(s.last_periodic_savepoint("a").unwrap(), Some(old));
        assert_eq!(s.last_periodic_savepoint("b").unwrap(), None);
        assert_eq!(h[0].cause, Some(SavepointCause::Manual));
        assert_eq!(h[0].cluster.as_deref(), Some("http://jm:8081"));
        for c in SavepointCause::ALL {
            assert_eq!(SavepointCause::parse(c.as_str()), Some(c));
        }
    }
}
