//! The `versions` table: per job, what a rollback needs and what it did. The version that ran
//! before the current one (its spec, hash, artifact and the savepoint its stop took), how long
//! the current one is on probation (`ready_within` after it started), and the version that was
//! refused by a rollback (its hash, config commit and why), which is not tried again until a
//! commit changes the job file.

use serde::Serialize;

use super::facts::{Failure, Stage};
use super::sql::p;
use super::{Blocking, Result, now_ms};
use crate::build::Artifact;
use crate::spec::JobSpec;

/// A version a job can go back to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviousVersion {
    /// Its spec.
    pub spec: JobSpec,
    /// Its spec hash.
    pub hash: String,
    /// Its artifact, for jobs with a project or SQL.
    pub artifact: Option<Artifact>,
    /// The savepoint its stop took (flink), which it starts from again.
    pub restore: Option<String>,
    /// The config commit that deployed it, when known.
    pub commit: Option<String>,
}

/// A job's row of the `versions` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionsRow {
    /// The version before the current one, while the current one is on probation (boxed: most
    /// jobs have none, and every job's actor holds a row).
    pub previous: Option<Box<PreviousVersion>>,
    /// Unix time (ms) until which the current version is on probation.
    pub probation_until: Option<i64>,
    /// The hash of the version a rollback refused.
    pub refused_hash: Option<String>,
    /// The config commit of that version.
    pub refused_commit: Option<String>,
    /// Why it was refused.
    pub refused_reason: Option<String>,
    /// The last version whose build, deploy or move failed (not retried until the file
    /// changes); `crate::condition` derives `build_failed` and `deploy_failed` from it.
    pub failed: Option<Failure>,
}

impl Blocking {
    /// The job's row (empty when it has none).
    pub fn versions(&self, job: &str) -> Result<VersionsRow> {
        let row = self.sql(|db| {
            db.query_opt(
                "SELECT prev_spec, prev_hash, prev_artifact, prev_restore, prev_commit,
                        probation_until, refused_hash, refused_commit, refused_reason,
                        failed_hash, failed_commit, failed_stage, failed_reason
                 FROM versions WHERE job = ?1",
                p![job],
                |r| {
                    Ok((
                        r.get::<Option<String>>(0)?,
                        r.get::<Option<String>>(1)?,
                        r.get::<Option<String>>(2)?,
                        r.get::<Option<String>>(3)?,
                        r.get::<Option<String>>(4)?,
                        VersionsRow {
                            previous: None,
                            probation_until: r.get(5)?,
                            refused_hash: r.get(6)?,
                            refused_commit: r.get(7)?,
                            refused_reason: r.get(8)?,
                            failed: None,
                        },
                        (
                            r.get::<Option<String>>(9)?,
                            r.get::<Option<String>>(10)?,
                            r.get::<Option<String>>(11)?,
                            r.get::<Option<String>>(12)?,
                        ),
                    ))
                },
            )
        })?;
        let Some((spec, hash, artifact, restore, commit, mut out, failed)) = row else {
            return Ok(VersionsRow::default());
        };
        if let (Some(hash), commit, Some(stage), reason) = failed {
            let at = super::At {
                table: "versions",
                row: &job,
            };
            out.failed = Some(Failure {
                hash,
                commit,
                stage: at.word("failed_stage", &stage, Stage::parse)?,
                reason: reason.unwrap_or_default(),
            });
        }
        if let (Some(spec), Some(hash)) = (spec, hash) {
            out.previous = Some(Box::new(PreviousVersion {
                spec: serde_json::from_str(&spec)?,
                hash,
                artifact: artifact.map(|a| serde_json::from_str(&a)).transpose()?,
                restore,
                commit,
            }));
        }
        Ok(out)
    }

    /// Replaces the job's row.
    pub fn set_versions(&self, job: &str, row: &VersionsRow) -> Result<()> {
        let prev = row.previous.as_ref();
        let spec = prev.map(|p| serde_json::to_string(&p.spec)).transpose()?;
        let artifact = prev
            .and_then(|p| p.artifact.as_ref())
            .map(serde_json::to_string)
            .transpose()?;
        // Every column is set: the row is replaced whole.
        self.sql(|db| {
            db.execute(
                "INSERT INTO versions (job, prev_spec, prev_hash, prev_artifact,
                 prev_restore, prev_commit, probation_until, refused_hash, refused_commit,
                 refused_reason, updated_at, failed_hash, failed_commit, failed_stage,
                 failed_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (job) DO UPDATE SET prev_spec = excluded.prev_spec,
                 prev_hash = excluded.prev_hash, prev_artifact = excluded.prev_artifact,
                 prev_restore = excluded.prev_restore, prev_commit = excluded.prev_commit,
                 probation_until = excluded.probation_until,
                 refused_hash = excluded.refused_hash, refused_commit = excluded.refused_commit,
                 refused_reason = excluded.refused_reason, updated_at = excluded.updated_at,
                 failed_hash = excluded.failed_hash, failed_commit = excluded.failed_commit,
                 failed_stage = excluded.failed_stage, failed_reason = excluded.failed_reason",
                p![
                    job,
                    spec,
                    prev.map(|p| p.hash.as_str()),
                    artifact,
                    prev.and_then(|p| p.restore.as_deref()),
                    prev.and_then(|p| p.commit.as_deref()),
                    row.probation_until,
                    row.refused_hash,
                    row.refused_commit,
                    row.refused_reason,
                    now_ms(),
                    row.failed.as_ref().map(|f| f.hash.as_str()),
                    row.failed.as_ref().and_then(|f| f.commit.as_deref()),
                    row.failed.as_ref().map(|f| f.stage.as_str()),
                    row.failed.as_ref().map(|f| f.reason.as_str()),
                ],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_and_a_missing_one_is_empty() {
        for store in crate::store::tests::stores() {
            assert_eq!(store.versions("a").unwrap(), VersionsRow::default());
            let spec = crate::spec::parse_job(
                "a.yaml",
                b"env: dev\nparams: {command: [x]}\n",
                crate::spec::Context::default(),
            )
            .unwrap();
            let row = VersionsRow {
                previous: Some(Box::new(PreviousVersion {
                    spec,
                    hash: "h1".into(),
                    artifact: None,
                    restore: Some("file:/sp/1".into()),
                    commit: Some("abc".into()),
                })),
                probation_until: Some(42),
                refused_hash: Some("h2".into()),
                refused_commit: Some("def".into()),
                refused_reason: Some("exit 1".into()),
                failed: Some(Failure {
                    hash: "h3".into(),
                    commit: Some("ghi".into()),
                    stage: Stage::Move,
                    reason: "refused".into(),
                }),
            };
            store.set_versions("a", &row).unwrap();
            assert_eq!(store.versions("a").unwrap(), row);
            store.set_versions("a", &VersionsRow::default()).unwrap();
            assert_eq!(store.versions("a").unwrap(), VersionsRow::default());
            assert_eq!(store.versions("b").unwrap(), VersionsRow::default());
        }
    }
}
