//! Each job's own commit after a push of several: [`Store::set_changed_by`] points a changed
//! job's `desired_commit` at the commit that last changed its file (not the tip), so its author
//! is the one shown and recorded.

use rusqlite::params;

use super::{Blocking, CommitRecord, Result, now_ms};

impl Blocking {
    /// Records each `(job, commit)`: the commit's row, and the commit as the job's
    /// `desired_commit` (the commit that last changed its file), in one transaction. Called
    /// after [`Store::apply_commit`] for the jobs a commit before the tip last changed.
    pub fn set_changed_by(&self, changed: &[(String, CommitRecord)]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = now_ms();
        {
            let mut commit = tx.prepare_cached(
                "INSERT OR IGNORE INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut job =
                tx.prepare_cached("UPDATE jobs SET desired_commit = ?2 WHERE name = ?1")?;
            for (name, c) in changed {
                commit.execute(params![c.id, c.author, c.subject, now])?;
                job.execute(params![name, c.id])?;
            }
        }
        tx.commit()?;
        Ok(())
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
    use super::super::tests::{commit, spec_update};
    use super::*;

    #[test]
    fn a_job_names_the_commit_that_last_changed_it() {
        let s = Blocking::in_memory().unwrap();
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
    }
}
