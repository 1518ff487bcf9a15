//! Changes held by a freeze window (the `held` table): the desired state a commit set for a
//! job of a frozen env, kept aside until the window closes, then put in place.

use super::sql::p;
use super::{Blocking, JobState, Result};

/// A change held by a freeze window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChange {
    /// Job name.
    pub job: String,
    /// Path of its file in the repo.
    pub path: String,
    /// The new desired spec (JSON) and its hash; `None` when the change removes the job.
    pub spec: Option<(String, String)>,
    /// The full id of the commit that made the change.
    pub commit: String,
    /// When the window closes, in ms since the Unix epoch.
    pub until_ms: i64,
    /// When the window closes, as shown (RFC 3339 in the daemon's time zone).
    pub until: String,
    /// The window's reason.
    pub reason: String,
}

impl Blocking {
    /// Records `held` changes (each replacing any change held for its job before) and drops
    /// the held changes of the `applied` jobs, whose newer change is put in place now.
    pub fn set_held(&self, held: &[HeldChange], applied: &[&str]) -> Result<()> {
        if held.is_empty() {
            // Nothing held before (the usual case): nothing to drop either.
            let any: bool = self.sql(|db| db.one("SELECT EXISTS (SELECT 1 FROM held)", p![]))?;
            if !any {
                return Ok(());
            }
        }
        self.tx(|db| {
            for job in applied {
                db.execute("DELETE FROM held WHERE job = ?1", p![job])?;
            }
            for h in held {
                let (spec, hash) = h.spec.clone().unzip();
                db.execute(
                    "INSERT INTO held (job, path, spec, hash, commit_id, until_ms, until, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(job) DO UPDATE SET path = ?2, spec = ?3, hash = ?4,
                         commit_id = ?5, until_ms = ?6, until = ?7, reason = ?8",
                    p![
                        h.job, h.path, spec, hash, h.commit, h.until_ms, h.until, h.reason
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every held change, by job.
    pub fn held_changes(&self) -> Result<Vec<HeldChange>> {
        let mut rows = self.sql(|db| {
            db.query_map(
                "SELECT job, path, spec, hash, commit_id, until_ms, until, reason FROM held
                 ORDER BY job",
                p![],
                |r| {
                    let spec: Option<String> = r.get(2)?;
                    let hash: Option<String> = r.get(3)?;
                    Ok(HeldChange {
                        job: r.get(0)?,
                        path: r.get(1)?,
                        spec: spec.zip(hash),
                        commit: r.get(4)?,
                        until_ms: r.get(5)?,
                        until: r.get(6)?,
                        reason: r.get(7)?,
                    })
                },
            )
        })?;
        // By name as bytes order them (SQLite's order), whatever a Postgres collation says.
        rows.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(rows)
    }

    /// Puts in place, in one transaction, every held change whose window closed by `now_ms`:
    /// its spec becomes the job's desired state (of its commit), or the job is removed.
    /// Returns the changes put in place.
    pub fn release_held(&self, now_ms: i64) -> Result<Vec<HeldChange>> {
        let due: Vec<HeldChange> = self
            .held_changes()?
            .into_iter()
            .filter(|h| h.until_ms <= now_ms)
            .collect();
        if due.is_empty() {
            return Ok(due);
        }
        self.tx(|db| {
            let now = super::now_ms();
            for h in &due {
                match &h.spec {
                    Some((spec, hash)) => db.execute(
                        "INSERT INTO jobs (name, path, desired, desired_hash, desired_commit,
                             state, invalid, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?7, NULL, ?6)
                         ON CONFLICT(name) DO UPDATE SET path = ?2, desired = ?3,
                             desired_hash = ?4, desired_commit = ?5, invalid = NULL,
                             updated_at = ?6",
                        p![
                            h.job,
                            h.path,
                            spec,
                            hash,
                            h.commit,
                            now,
                            JobState::Pending.as_str()
                        ],
                    )?,
                    None => db.execute(
                        "UPDATE jobs SET desired = NULL, desired_hash = NULL, desired_commit = ?2,
                             invalid = NULL, updated_at = ?3 WHERE name = ?1",
                        p![h.job, h.commit, now],
                    )?,
                };
                db.execute("DELETE FROM held WHERE job = ?1", p![h.job])?;
            }
            Ok(())
        })?;
        Ok(due)
    }
}

impl super::Store {
    /// See [`Blocking::set_held`].
    pub async fn set_held(&self, held: &[HeldChange], applied: &[&str]) -> Result<()> {
        let held = held.to_vec();
        let applied: Vec<String> = applied.iter().map(|s| s.to_string()).collect();
        self.call(move |db| {
            let applied: Vec<&str> = applied.iter().map(String::as_str).collect();
            db.set_held(&held, &applied)
        })
        .await
    }

    /// See [`Blocking::held_changes`].
    pub async fn held_changes(&self) -> Result<Vec<HeldChange>> {
        self.call(|db| db.held_changes()).await
    }

    /// See [`Blocking::release_held`].
    pub async fn release_held(&self, now_ms: i64) -> Result<Vec<HeldChange>> {
        self.call(move |db| db.release_held(now_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(job: &str, until_ms: i64) -> HeldChange {
        let yaml = "env: dev\nparams: {command: [sleep, '1']}\n";
        let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
        HeldChange {
            job: job.into(),
            path: format!("jobs/{job}.yaml"),
            spec: Some((serde_json::to_string(&spec).unwrap(), format!("hash-{job}"))),
            commit: "c".repeat(40),
            until_ms,
            until: "2026-12-07T18:00:00+00:00".into(),
            reason: "weekend".into(),
        }
    }

    #[test]
    fn held_changes_are_replaced_dropped_and_released_when_due() {
        for s in crate::store::tests::stores() {
            s.set_held(&[], &[]).unwrap();
            s.set_held(&[held("a", 10), held("b", 20)], &[]).unwrap();
            s.set_held(&[held("a", 15)], &[]).unwrap();
            assert_eq!(s.held_changes().unwrap()[0].until_ms, 15, "replaced");
            assert_eq!(s.release_held(14).unwrap(), vec![]);
            let out = s.release_held(15).unwrap();
            assert_eq!(
                out.iter().map(|h| h.job.as_str()).collect::<Vec<_>>(),
                ["a"]
            );
            let desired = |job: &str| -> (Option<String>, Option<String>, String) {
                s.sql(|db| {
                    db.query_row(
                        "SELECT desired_hash, desired_commit, state FROM jobs WHERE name = ?1",
                        p![job],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                })
                .unwrap()
            };
            let c = "c".repeat(40);
            assert_eq!(
                desired("a"),
                (Some("hash-a".into()), Some(c.clone()), "pending".into())
            );
            // A held removal takes the job's desired state away.
            let removal = HeldChange {
                spec: None,
                ..held("a", 30)
            };
            s.set_held(&[removal], &[]).unwrap();
            let out = s.release_held(30).unwrap();
            assert_eq!(
                out.iter().map(|h| h.job.as_str()).collect::<Vec<_>>(),
                ["a", "b"]
            );
            assert_eq!(desired("a"), (None, Some(c), "pending".into()));
            s.set_held(&[], &["b"]).unwrap();
            assert!(
                s.held_changes().unwrap().is_empty(),
                "b's newer change was applied"
            );
            // Jobs by name as bytes order them, whatever the database's collation.
            s.set_held(&[held("a", 40), held("B", 40)], &[]).unwrap();
            let jobs: Vec<String> = s
                .held_changes()
                .unwrap()
                .into_iter()
                .map(|h| h.job)
                .collect();
            assert_eq!(jobs, ["B", "a"]);
        }
    }

    #[test]
    fn a_released_change_is_the_jobs_desired_state() {
        let s = Blocking::in_memory().unwrap();
        s.set_held(&[held("a", 10)], &[]).unwrap();
        s.release_held(10).unwrap();
        let a = s.job("a").unwrap().unwrap();
        assert_eq!(a.desired_hash.as_deref(), Some("hash-a"));
        assert_eq!(a.desired_commit.as_deref(), Some("c".repeat(40).as_str()));
    }
}
