//! The stored facts a job's conditions are derived from (see [`crate::condition`]): per job,
//! its state, invalid file, desired and applied hashes, desired env, open incidents (the
//! `jobs.incidents` column), the last failed version and the version a rollback refused (the
//! `versions` table). What runs comes from [`Blocking::running`].

use std::collections::HashMap;

use rusqlite::params;

use super::facts::{Failure, Incidents, Stage};
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
        let filter = match names {
            Some(_) => "j.name IN (SELECT value FROM json_each(?1))",
            None => "NOT (j.desired IS NULL AND j.invalid IS NULL) AND ?1 IS NULL",
        };
        let names = names.map(serde_json::to_string).transpose()?;
        self.condition_rows_where(filter, names)
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
        // Only the clauses that can match: the env test reads each spec's JSON.
        let mut any = vec![
            "j.invalid IS NOT NULL".to_string(),
            "v.failed_hash IS NOT NULL".into(),
            "v.refused_hash IS NOT NULL".into(),
            "j.incidents IS NOT NULL".into(),
            format!("j.state = '{}'", JobState::GaveUp.as_str()),
        ];
        if !names.is_empty() {
            any.push("j.name IN (SELECT value FROM json_each(?1 ->> '$.names'))".into());
        }
        if !envs.is_empty() {
            any.push(
                "(json_valid(j.desired) AND json_extract(j.desired, '$.env')
                     IN (SELECT value FROM json_each(?1 ->> '$.envs')))"
                    .into(),
            );
        }
        let filter = format!(
            "NOT (j.desired IS NULL AND j.invalid IS NULL) AND ?1 IS NOT NULL AND ({})",
            any.join(" OR ")
        );
        let args = serde_json::json!({ "envs": envs, "names": names }).to_string();
        self.condition_rows_where(&filter, Some(args))
    }

    fn condition_rows_where(
        &self,
        filter: &str,
        names: Option<String>,
    ) -> Result<HashMap<String, ConditionRow>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT j.name, j.state, j.reason, j.invalid, j.desired_hash, j.applied_hash,
                 CASE WHEN json_valid(j.desired) THEN json_extract(j.desired, '$.env') END,
                 j.incidents, v.failed_hash, v.failed_commit, v.failed_stage, v.failed_reason,
                 v.refused_hash, v.refused_commit, v.refused_reason
             FROM jobs j LEFT JOIN versions v ON v.job = j.name WHERE {filter}"
        ))?;
        let rows = st.query_map(params![names], |r| {
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
            let failed = match (
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(10)?,
            ) {
                (Some(hash), Some(stage)) => match at.word("failed_stage", &stage, Stage::parse) {
                    Ok(stage) => Some(Failure {
                        hash,
                        commit: r.get(9)?,
                        stage,
                        reason: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                    }),
                    Err(e) => {
                        tracing::warn!(job = %name, "{e}");
                        None
                    }
                },
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
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces a job's open incidents.
    pub fn set_incidents(&self, name: &str, incidents: &Incidents) -> Result<()> {
        let json = (incidents != &Incidents::default())
            .then(|| serde_json::to_string(incidents))
            .transpose()?;
        self.conn()?.execute(
            "UPDATE jobs SET incidents = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, json, now_ms()],
        )?;
        Ok(())
    }

    /// A job's open incidents (none when it has no row).
    pub fn incidents(&self, name: &str) -> Result<Incidents> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached("SELECT incidents FROM jobs WHERE name = ?1")?;
        let mut rows = st.query([name])?;
        let Some(row) = rows.next()? else {
            return Ok(Incidents::default());
        };
        let at = At {
            table: "jobs",
            row: &name,
        };
        Ok(at.json("incidents", row.get(0)?)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::VersionsRow;
    use super::super::tests::{commit, spec_update};
    use super::*;
    use crate::store::Incident;

    #[test]
    fn the_facts_of_a_job_read_back_typed() {
        let s = Blocking::in_memory().unwrap();
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
    }
}
