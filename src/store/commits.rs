//! Config commits: the `commits` table, the applied commit, and [`Blocking::apply_commit`], which
//! records a commit's desired specs (on `jobs`) and its plan notes (on `events`) in one
//! transaction.

use serde::Serialize;

use super::sql::{Backend, RowRef, Sql, ToValue, p};
use super::{Blocking, EventRow, JobState, NewEvent, Result, now_ms};
use crate::event::{EventKind, JobEvent};

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
        let epoch = self.epoch();
        let recorded = self.tx(|db| {
            db.execute(
                "INSERT INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                p![commit.id, commit.author, commit.subject, now],
            )?;
            // On Postgres every statement is a round trip: new and changed specs go in batches
            // (a commit of 10,000 new jobs is 20 statements, not 10,000).
            let batched = db.backend() == Backend::Postgres && names_unique(updates);
            if batched {
                upsert_specs(db, commit, updates, now)?;
            }
            for u in updates {
                if batched && matches!(u, DesiredUpdate::Spec { .. }) {
                    continue;
                }
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
            let lines: Vec<(&String, EventKind, String)> = notes
                .iter()
                .map(|(job, event)| (job, event.kind(), event.message()))
                .collect();
            let events: Vec<NewEvent<'_>> = lines
                .iter()
                .map(|(job, kind, message)| NewEvent {
                    job: Some(job),
                    commit_id: Some(&commit.id),
                    ..NewEvent::new(*kind, message)
                })
                .collect();
            let ids = super::events::insert_events(&mut *db, now, &events, epoch)?;
            drop(events);
            let recorded: Vec<EventRow> = lines
                .into_iter()
                .zip(ids)
                .map(|((job, kind, message), id)| EventRow {
                    id,
                    time: now,
                    job: Some(job.clone()),
                    run_id: None,
                    kind,
                    commit_id: Some(commit.id.clone()),
                    author: Some(commit.author.clone()),
                    subject: Some(commit.subject.clone()),
                    message,
                    attempt: None,
                })
                .collect();
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

/// Spec updates per statement on Postgres (7 parameters each, well under its 65,535).
const SPEC_BATCH: usize = 500;

/// True when no job is named twice in `updates` (a statement may change a row once).
fn names_unique(updates: &[DesiredUpdate]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(updates.len());
    updates.iter().all(|u| {
        let name = match u {
            DesiredUpdate::Spec { name, .. }
            | DesiredUpdate::Invalid { name, .. }
            | DesiredUpdate::Removed { name } => name,
        };
        seen.insert(name.as_str())
    })
}

/// The `Spec` updates of `updates` as multi-row upserts, with the same meaning as one
/// statement per job in [`Blocking::apply_commit`].
fn upsert_specs(
    db: &mut dyn Sql,
    commit: &CommitRecord,
    updates: &[DesiredUpdate],
    now: i64,
) -> Result<()> {
    let specs: Vec<(&String, &String, &String, &String)> = updates
        .iter()
        .filter_map(|u| match u {
            DesiredUpdate::Spec {
                name,
                path,
                spec,
                hash,
            } => Some((name, path, spec, hash)),
            _ => None,
        })
        .collect();
    let pending = JobState::Pending.as_str();
    for chunk in specs.chunks(SPEC_BATCH) {
        let mut sql = String::from(
            "INSERT INTO jobs (name, path, desired, desired_hash, desired_commit, state, \
             invalid, updated_at) VALUES ",
        );
        let mut params: Vec<&dyn ToValue> = Vec::with_capacity(chunk.len() * 7);
        for (i, (name, path, spec, hash)) in chunk.iter().enumerate() {
            let n = params.len();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, NULL, ?{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7
            ));
            params.extend([
                *name as &dyn ToValue,
                *path,
                *spec,
                *hash,
                &commit.id,
                &pending,
                &now,
            ]);
        }
        sql.push_str(
            " ON CONFLICT(name) DO UPDATE SET path = excluded.path, desired = excluded.desired, \
             desired_hash = excluded.desired_hash, desired_commit = excluded.desired_commit, \
             invalid = NULL, updated_at = excluded.updated_at",
        );
        db.execute(&sql, &params)?;
    }
    Ok(())
}

fn commit_row(r: &dyn RowRef) -> Result<CommitRecord> {
    Ok(CommitRecord {
        id: r.get(0)?,
        author: r.get(1)?,
        subject: r.get(2)?,
    })
}
