//! Config commits: the `commits` table, the applied commit, and [`Blocking::apply_commit`], which
//! records a commit's desired specs (on `jobs`) and its plan notes (on `events`) in one
//! transaction.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Blocking, EventRow, JobState, NewEvent, Result, now_ms};
use crate::event::JobEvent;

/// A config-repo commit, as recorded with events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommitRecord {
    /// Full id.
    pub id: String,
    /// Author, `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

/// What a commit sets for one job.
#[derive(Debug, Clone)]
pub enum DesiredUpdate {
    /// A valid spec: the new desired state.
    Spec {
        /// Job name.
        name: String,
        /// File path.
        path: String,
        /// The spec as `serde_json::to_string` of a [`crate::spec::JobSpec`] writes it: the
        /// bytes its hash is taken of, read back as a `JobSpec` by [`Blocking::job`].
        spec: String,
        /// Its hash.
        hash: String,
    },
    /// An invalid file: desired state unchanged, problems recorded.
    Invalid {
        /// Job name.
        name: String,
        /// File path.
        path: String,
        /// Rendered diagnostics.
        errors: String,
    },
    /// The file is gone.
    Removed {
        /// Job name.
        name: String,
    },
}

impl Blocking {
    /// The config commit last applied.
    pub fn applied_commit(&self) -> Result<Option<String>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT value FROM meta WHERE key = 'applied_commit'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a commit's desired specs and makes it the applied commit, in one transaction.
    /// Also records one event per note `(job, event)` (the plan lines; their log line and
    /// count are the caller's, see [`crate::reconcile::Emitter::announce`]).
    pub fn apply_commit(
        &self,
        commit: &CommitRecord,
        updates: &[DesiredUpdate],
        notes: &[(String, JobEvent)],
    ) -> Result<()> {
        let mut recorded = Vec::with_capacity(notes.len());
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)",
            params![commit.id, commit.author, commit.subject, now],
        )?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO jobs (name, path, desired, desired_hash, desired_commit, state, invalid, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?7, NULL, ?6)
                 ON CONFLICT(name) DO UPDATE SET path = ?2, desired = ?3, desired_hash = ?4,
                     desired_commit = ?5, invalid = NULL, updated_at = ?6",
            )?;
            let mut invalid = tx.prepare_cached(
                "INSERT INTO jobs (name, path, state, invalid, reason, updated_at)
                 VALUES (?1, ?2, ?5, ?3, 'job file is invalid', ?4)
                 ON CONFLICT(name) DO UPDATE SET invalid = ?3, updated_at = ?4",
            )?;
            let mut removed = tx.prepare_cached(
                "UPDATE jobs SET desired = NULL, desired_hash = NULL, desired_commit = ?2,
                     invalid = NULL, updated_at = ?3 WHERE name = ?1",
            )?;
            for u in updates {
                match u {
                    DesiredUpdate::Spec {
                        name,
                        path,
                        spec,
                        hash,
                    } => {
                        upsert.execute(params![
                            name,
                            path,
                            spec,
                            hash,
                            commit.id,
                            now,
                            JobState::Pending.as_str()
                        ])?;
                    }
                    DesiredUpdate::Invalid { name, path, errors } => {
                        invalid.execute(params![
                            name,
                            path,
                            errors,
                            now,
                            JobState::Invalid.as_str()
                        ])?;
                    }
                    DesiredUpdate::Removed { name } => {
                        removed.execute(params![name, commit.id, now])?;
                    }
                }
            }
            for (job, event) in notes {
                let (kind, message) = (event.kind(), event.message());
                let e = NewEvent {
                    job: Some(job),
                    commit_id: Some(&commit.id),
                    ..NewEvent::new(kind, &message)
                };
                recorded.push(EventRow {
                    id: super::events::insert_event(&tx, now, &e)?,
                    time: now,
                    job: Some(job.clone()),
                    run_id: None,
                    kind,
                    commit_id: Some(commit.id.clone()),
                    author: Some(commit.author.clone()),
                    subject: Some(commit.subject.clone()),
                    message,
                    attempt: None,
                });
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('applied_commit', ?1)
             ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![commit.id],
        )?;
        tx.commit()?;
        drop(conn);
        self.forward(&recorded);
        Ok(())
    }

    /// A commit's author and subject, when seen.
    pub fn commit(&self, id: &str) -> Result<Option<CommitRecord>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT id, author, subject FROM commits WHERE id = ?1",
                [id],
                commit_row,
            )
            .optional()?)
    }

    /// Every config commit seen, by id.
    pub fn commits(&self) -> Result<std::collections::HashMap<String, CommitRecord>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached("SELECT id, author, subject FROM commits")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, commit_row(r)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }
}

fn commit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommitRecord> {
    Ok(CommitRecord {
        id: r.get(0)?,
        author: r.get(1)?,
        subject: r.get(2)?,
    })
}
