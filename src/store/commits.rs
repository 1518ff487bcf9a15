//! Config commits: the `commits` table, the applied commit, and [`Blocking::apply_commit`], which
//! records a commit's desired specs (on `jobs`) and its plan notes (on `events`) in one
//! transaction.

use serde::Serialize;

use super::sql::{RowRef, p};
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
        self.sql(|db| {
            db.query_opt(
                "SELECT value FROM meta WHERE key = 'applied_commit'",
                p![],
                |r| r.get(0),
            )
        })
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
        let now = now_ms();
        let recorded = self.tx(|db| {
            db.execute(
                "INSERT INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                p![commit.id, commit.author, commit.subject, now],
            )?;
            for u in updates {
                match u {
                    DesiredUpdate::Spec {
                        name,
                        path,
                        spec,
                        hash,
                    } => {
                        db.execute(
                            "INSERT INTO jobs (name, path, desired, desired_hash, desired_commit,
                                 state, invalid, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?7, NULL, ?6)
                             ON CONFLICT(name) DO UPDATE SET path = ?2, desired = ?3,
                                 desired_hash = ?4, desired_commit = ?5, invalid = NULL,
                                 updated_at = ?6",
                            p![
                                name,
                                path,
                                spec,
                                hash,
                                commit.id,
                                now,
                                JobState::Pending.as_str()
                            ],
                        )?;
                    }
                    DesiredUpdate::Invalid { name, path, errors } => {
                        db.execute(
                            "INSERT INTO jobs (name, path, state, invalid, reason, updated_at)
                             VALUES (?1, ?2, ?5, ?3, 'job file is invalid', ?4)
                             ON CONFLICT(name) DO UPDATE SET invalid = ?3, updated_at = ?4",
                            p![name, path, errors, now, JobState::Invalid.as_str()],
                        )?;
                    }
                    DesiredUpdate::Removed { name } => {
                        db.execute(
                            "UPDATE jobs SET desired = NULL, desired_hash = NULL,
                                 desired_commit = ?2, invalid = NULL, updated_at = ?3
                             WHERE name = ?1",
                            p![name, commit.id, now],
                        )?;
                    }
                }
            }
            let mut recorded = Vec::with_capacity(notes.len());
            for (job, event) in notes {
                let (kind, message) = (event.kind(), event.message());
                let e = NewEvent {
                    job: Some(job),
                    commit_id: Some(&commit.id),
                    ..NewEvent::new(kind, &message)
                };
                recorded.push(EventRow {
                    id: super::events::insert_event(&mut *db, now, &e)?,
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
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('applied_commit', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = ?1",
                p![commit.id],
            )?;
            Ok(recorded)
        })?;
        self.forward(&recorded);
        Ok(())
    }

    /// A commit's author and subject, when seen.
    pub fn commit(&self, id: &str) -> Result<Option<CommitRecord>> {
        self.sql(|db| {
            db.query_opt(
                "SELECT id, author, subject FROM commits WHERE id = ?1",
                p![id],
                commit_row,
            )
        })
    }

    /// Every config commit seen, by id.
    pub fn commits(&self) -> Result<std::collections::HashMap<String, CommitRecord>> {
        let rows = self.sql(|db| {
            db.query_map("SELECT id, author, subject FROM commits", p![], |r| {
                Ok((r.get::<String>(0)?, commit_row(r)?))
            })
        })?;
        Ok(rows.into_iter().collect())
    }
}

fn commit_row(r: &dyn RowRef) -> Result<CommitRecord> {
    Ok(CommitRecord {
        id: r.get(0)?,
        author: r.get(1)?,
        subject: r.get(2)?,
    })
}
