//! The stored facts a job's conditions are derived from (see [`crate::condition`]): per job,
//! its state, invalid file, desired and applied hashes, desired env, open incidents (the
//! `jobs.incidents` column), the last failed version and the version a rollback refused (the
//! `versions` table). What runs comes from [`Blocking::running`].

use std::collections::HashMap;

use super::facts::{Failure, Incidents, Stage};
use super::sql::{ToValue, p};
use super::{At, Blocking, JobState, Result, now_ms};

/// One job's stored facts (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConditionRow {
    /// Its state; `None` when the stored word is not a state.
    pub state: Option<JobState>,
    /// The state's reason.
    pub reason: Option<String>,
    /// Problems of the latest version of its file, when invalid.
    pub invalid: Option<String>,
    /// Hash of the desired spec.
    pub desired_hash: Option<String>,
    /// Hash of the applied spec.
    pub applied_hash: Option<String>,
    /// The env of the desired spec.
    pub desired_env: Option<String>,
    /// Open incidents of its runs.
    pub incidents: Incidents,
    /// The last version whose build, deploy or move failed.
    pub failed: Option<Failure>,
    /// The hash of the version a rollback refused.
    pub refused_hash: Option<String>,
    /// Its config commit.
    pub refused_commit: Option<String>,
    /// Why it was refused.
    pub refused_reason: Option<String>,
}

impl Blocking {
    /// The stored facts of the named jobs (`None`: every job still in the config repo), by
    /// name. A column that does not decode leaves that fact out and is logged: the other facts
    /// (and jobs) are still shown.
    pub fn condition_rows(&self, names: Option<&[&str]>) -> Result<HashMap<String, ConditionRow>> {
        match names {
            Some(names) => {
                let mut args = Vec::new();
                let filter = format!("j.name {}", one_of(&mut args, names));
                self.condition_rows_where(&filter, &args)
            }
            None => self.condition_rows_where("NOT (j.desired IS NULL AND j.invalid IS NULL)", &[]),
        }
    }

    /// The stored facts of the jobs (still in the config repo) that may have a condition: an
    /// invalid file, a failed or refused version, an open incident, `gave_up`, an env in
    /// `envs` (whose cluster does not answer) or a name in `names` (waiting on the host). Every
    /// other job has none, so counting conditions reads only these.
    pub fn problem_rows(
        &self,
        envs: &[&str],
        names: &[&str],
    ) -> Result<HashMap<String, ConditionRow>> {
        // Each clause is a walk of a partial index (migration 14), so this reads about as
        // many rows as there are jobs with a condition; only the env test, while an env's
        // cluster does not answer, reads each spec's JSON.
        let mut any = vec![
            "SELECT name FROM jobs WHERE invalid IS NOT NULL".to_string(),
            "SELECT name FROM jobs WHERE incidents IS NOT NULL".into(),
            format!(
                "SELECT name FROM jobs WHERE state = '{}' AND {}",
                JobState::GaveUp.as_str(),
                super::jobs::NOT_REMOVED
            ),
            "SELECT job FROM versions WHERE failed_hash IS NOT NULL".into(),
            "SELECT job FROM versions WHERE refused_hash IS NOT NULL".into(),
        ];
        let mut args = Vec::new();
        if !names.is_empty() {
            any.push(format!(
                "SELECT name FROM jobs WHERE name {}",
                one_of(&mut args, names)
            ));
        }
        if !envs.is_empty() {
            any.push(format!(
                "SELECT name FROM jobs WHERE json_valid(desired) = 1 AND json_extract(desired, '$.env') {}",
                one_of(&mut args, envs)
            ));
        }
        let filter = format!(
            "NOT (j.desired IS NULL AND j.invalid IS NULL) AND j.name IN ({})",
            any.join(" UNION ALL ")
        );
        self.condition_rows_where(&filter, &args)
    }

    fn condition_rows_where(
        &self,
        filter: &str,
        args: &[&str],
    ) -> Result<HashMap<String, ConditionRow>> {
        let sql = format!(
            "SELECT j.name, j.state, j.reason, j.invalid, j.desired_hash, j.applied_hash,
                 CASE WHEN json_valid(j.desired) = 1 THEN json_extract(j.desired, '$.env') END,
                 j.incidents, v.failed_hash, v.failed_commit, v.failed_stage, v.failed_reason,
                 v.refused_hash, v.refused_commit, v.refused_reason
             FROM jobs j LEFT JOIN versions v ON v.job = j.name WHERE {filter}"
        );
        let args: Vec<&dyn ToValue> = args.iter().map(|a| a as &dyn ToValue).collect();
        let rows = self.sql(|db| {
            db.query_map(&sql, &args, |r| {
                let name: String = r.get(0)?;
                let at = At {
                    table: "jobs",
                    row: &name,
                };
                let state: Option<String> = r.get(1)?;
                let incidents = at
                    .json::<Incidents>("incidents", r.get(7)?)
                    .unwrap_or_else(|e| {
                        tracing::warn!(job = %name, "{e}");
                        None
                    })
                    .unwrap_or_default();
                let failed = match (r.get::<Option<String>>(8)?, r.get::<Option<String>>(10)?) {
                    (Some(hash), Some(stage)) => {
                        match at.word("failed_stage", &stage, Stage::parse) {
                            Ok(stage) => Some(Failure {
                                hash,
                                commit: r.get(9)?,
                                stage,
                                reason: r.get::<Option<String>>(11)?.unwrap_or_default(),
                            }),
                            Err(e) => {
                                tracing::warn!(job = %name, "{e}");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let row = ConditionRow {
                    state: state.as_deref().and_then(JobState::parse),
                    reason: r.get(2)?,
                    invalid: r.get(3)?,
                    desired_hash: r.get(4)?,
                    applied_hash: r.get(5)?,
                    desired_env: r.get(6).ok().flatten(),
                    incidents,
                    failed,
                    refused_hash: r.get(12)?,
                    refused_commit: r.get(13)?,
                    refused_reason: r.get(14)?,
                };
                Ok((name, row))
            })
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Replaces a job's open incidents.
    pub fn set_incidents(&self, name: &str, incidents: &Incidents) -> Result<()> {
        let json = (incidents != &Incidents::default())
            .then(|| serde_json::to_string(incidents))
            .transpose()?;
        self.sql(|db| {
            db.execute(
                "UPDATE jobs SET incidents = ?2, updated_at = ?3 WHERE name = ?1",
                p![name, json, now_ms()],
            )
        })?;
        Ok(())
    }

    /// A job's open incidents (none when it has no row).
    pub fn incidents(&self, name: &str) -> Result<Incidents> {
        let json: Option<Option<String>> = self.sql(|db| {
            db.query_opt(
                "SELECT incidents FROM jobs WHERE name = ?1",
                p![name],
                |r| r.get(0),
            )
        })?;
        let at = At {
            table: "jobs",
            row: &name,
        };
        Ok(at.json("incidents", json.flatten())?.unwrap_or_default())
    }
}

/// `IN (?k, ?k+1, ...)` for `values`, appended to `args` (numbered after those already there);
/// `IN (NULL)`, which holds for no value, when there are none (Postgres takes no empty list).
fn one_of<'a>(args: &mut Vec<&'a str>, values: &[&'a str]) -> String {
    if values.is_empty() {
        return "IN (NULL)".to_string();
    }
    let marks: Vec<String> = values
        .iter()
        .map(|v| {
            args.push(v);
            format!("?{}", args.len())
        })
        .collect();
    format!("IN ({})", marks.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::VersionsRow;
    use super::super::tests::{commit, spec_update, stores};
    use super::*;
    use crate::store::Incident;

    #[test]
    fn the_facts_of_a_job_read_back_typed() {
        for s in stores() {
            s.apply_commit(
                &commit("c1"),
                &[spec_update("a", "dev"), spec_update("b", "prod")],
                &[],
            )
            .unwrap();
            let failed = Failure {
                hash: "h9".into(),
                commit: Some("c1".into()),
                stage: Stage::Deploy,
                reason: "refused".into(),
            };
            let versions = VersionsRow {
                failed: Some(failed.clone()),
                ..VersionsRow::default()
            };
            s.set_versions("a", &versions).unwrap();
            let incidents = Incidents {
                drift: Some(Incident {
                    run_id: 3,
                    what: "rescaled".into(),
                }),
                unhealthy: None,
            };
            s.set_incidents("a", &incidents).unwrap();
            assert_eq!(s.incidents("a").unwrap(), incidents);
            let rows = s.condition_rows(None).unwrap();
            assert_eq!(rows.len(), 2);
            let a = &rows["a"];
            assert_eq!(a.failed.as_ref(), Some(&failed));
            assert_eq!(a.incidents, incidents);
            assert_eq!(a.desired_env.as_deref(), Some("dev"));
            assert_eq!(a.state, Some(JobState::Pending));
            let maybe = s.problem_rows(&[], &[]).unwrap();
            assert_eq!(maybe.keys().collect::<Vec<_>>(), ["a"], "only a has a fact");
            let maybe = s.problem_rows(&["prod"], &[]).unwrap();
            assert_eq!(maybe.len(), 2, "b's env does not answer");
            assert_eq!(s.problem_rows(&[], &["b"]).unwrap().len(), 2);
            let only_b = s.condition_rows(Some(&["b"])).unwrap();
            assert_eq!(only_b.keys().collect::<Vec<_>>(), ["b"]);
            assert_eq!(only_b["b"].failed, None);
            s.set_incidents("a", &Incidents::default()).unwrap();
            assert_eq!(s.incidents("a").unwrap(), Incidents::default());
            assert_eq!(s.incidents("nobody").unwrap(), Incidents::default());
            assert!(s.condition_rows(Some(&[])).unwrap().is_empty());
            let both = s.problem_rows(&["dev"], &["b"]).unwrap();
            assert_eq!(both.len(), 2, "a by its env, b by its name");
            s.set_state("b", JobState::GaveUp, Some("too many restarts"))
                .unwrap();
            let b = &s.problem_rows(&[], &[]).unwrap()["b"];
            assert_eq!(b.state, Some(JobState::GaveUp));
            assert_eq!(b.reason.as_deref(), Some("too many restarts"));
            assert_eq!(b.desired_env.as_deref(), Some("prod"));
        }
    }

    #[test]
    fn each_fact_alone_makes_a_problem_row_and_counting_walks_indexes() {
        for s in stores() {
            let names = ["a", "b", "c", "d", "e"];
            let updates: Vec<_> = names.iter().map(|n| spec_update(n, "dev")).collect();
            s.apply_commit(&commit("c1"), &updates, &[]).unwrap();
            let drift = Incidents {
                drift: Some(Incident {
                    run_id: 1,
                    what: "rescaled".into(),
                }),
                unhealthy: None,
            };
            s.set_incidents("a", &drift).unwrap();
            let refused = VersionsRow {
                refused_hash: Some("h2".into()),
                refused_commit: Some("c2".into()),
                refused_reason: Some("rolled back".into()),
                ..VersionsRow::default()
            };
            s.set_versions("b", &refused).unwrap();
            s.set_state("c", JobState::GaveUp, Some("too many restarts"))
                .unwrap();
            let rows = s.problem_rows(&[], &[]).unwrap();
            let mut found: Vec<&str> = rows.keys().map(String::as_str).collect();
            found.sort();
            assert_eq!(found, ["a", "b", "c"], "d and e have no fact");
            assert_eq!(rows["b"].refused_hash.as_deref(), Some("h2"));
            assert_eq!(rows["a"].incidents, drift);
            let counts = s.job_state_counts().unwrap();
            let n = |st: JobState| counts.iter().find(|(s, _)| *s == st).unwrap().1;
            assert_eq!((n(JobState::GaveUp), n(JobState::Pending)), (1, 4));
        }
        // On SQLite the counts read the partial indexes of migration 14, not every job's row.
        let s = Blocking::in_memory().unwrap();
        let plan = |sql: &str| -> String {
            s.sql(|db| {
                db.query_map(&format!("EXPLAIN QUERY PLAN {sql}"), p![], |r| {
                    r.get::<String>(3)
                })
            })
            .unwrap()
            .join("; ")
        };
        let states = plan(&format!(
            "SELECT state, COUNT(*) FROM jobs WHERE {} GROUP BY state",
            super::super::jobs::NOT_REMOVED
        ));
        assert!(states.contains("USING INDEX jobs_counted"), "{states}");
        for index in [
            "jobs_invalid",
            "jobs_incidents",
            "versions_failed",
            "versions_refused",
        ] {
            let sql = match index {
                "jobs_invalid" => "SELECT name FROM jobs WHERE invalid IS NOT NULL",
                "jobs_incidents" => "SELECT name FROM jobs WHERE incidents IS NOT NULL",
                "versions_failed" => "SELECT job FROM versions WHERE failed_hash IS NOT NULL",
                _ => "SELECT job FROM versions WHERE refused_hash IS NOT NULL",
            };
            assert!(plan(sql).contains(index), "{sql}: {}", plan(sql));
        }
    }
}
