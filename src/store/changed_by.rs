//! Each job's own commit after a push of several: [`Store::set_changed_by`] points a changed
//! job's `desired_commit` at the commit that last changed its file (not the tip), so its author
//! is the one shown and recorded.

use super::sql::p;
use super::{Blocking, CommitRecord, Result, now_ms};

impl Blocking {
    /// Records each `(job, commit)`: the commit's row, and the commit as the job's
    /// `desired_commit` (the commit that last changed its file), in one transaction. Called
    /// after [`Store::apply_commit`] for the jobs a commit before the tip last changed.
    pub fn set_changed_by(&self, changed: &[(String, CommitRecord)]) -> Result<()> {
        let now = now_ms();
        self.tx(|db| {
            for (name, c) in changed {
                db.execute(
                    "INSERT INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    p![c.id, c.author, c.subject, now],
                )?;
                db.execute(
                    "UPDATE jobs SET desired_commit = ?2 WHERE name = ?1",
                    p![name, c.id],
                )?;
            }
            Ok(())
        })
    }
}

impl super::Store {
    /// See [`Blocking::set_changed_by`].
    pub async fn set_changed_by(&self, changed: &[(String, CommitRecord)]) -> Result<()> {
        let changed = changed.to_vec();
        self.call(move |db| db.set_changed_by(&changed)).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{commit, spec_update, stores};
    use super::*;

    #[test]
    fn a_job_names_the_commit_that_last_changed_it() {
        for s in stores() {
            let tip = commit("c2");
            s.apply_commit(
                &tip,
                &[spec_update("a", "dev"), spec_update("b", "dev")],
                &[],
            )
            .unwrap();
            let older = CommitRecord {
                id: "c1".into(),
                author: "Bob <bob@example.com>".into(),
                subject: "b: more".into(),
            };
            s.set_changed_by(&[("b".into(), older.clone())]).unwrap();
            assert_eq!(
                s.job("a").unwrap().unwrap().desired_commit.as_deref(),
                Some("c2")
            );
            assert_eq!(
                s.job("b").unwrap().unwrap().desired_commit.as_deref(),
                Some("c1")
            );
            assert_eq!(s.commit("c1").unwrap().unwrap(), older);
            // Seen again, a commit keeps its first row.
            let again = CommitRecord {
                subject: "other".into(),
                ..older.clone()
            };
            s.set_changed_by(&[("a".into(), again)]).unwrap();
            assert_eq!(s.commit("c1").unwrap().unwrap(), older);
            let all = s.commits().unwrap();
            assert_eq!((all.len(), &all["c2"]), (2, &tip));
            assert_eq!(
                s.job("a").unwrap().unwrap().desired_commit.as_deref(),
                Some("c1")
            );
        }
    }
}
