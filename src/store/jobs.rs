//! The `jobs` table: each job's desired and applied spec, artifact and [`JobState`], and the
//! lists and counts of jobs the API, metrics and status line show.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::sql::{Backend, RowRef, Sql, ToValue, p};
use super::{At, Blocking, Result, StoreError, now_ms};
use crate::build::Artifact;
use crate::spec::JobSpec;

/// States of a job (SPEC "Health loop").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Known, not yet acted on.
    Pending,
    /// Its project is being built.
    Building,
    /// Being submitted.
    Deploying,
    /// A run is live.
    Running,
    /// The last batch run succeeded.
    Succeeded,
    /// The last run failed, or the job could not be built or deployed.
    Failed,
    /// Waiting to be restarted.
    Backoff,
    /// Too many restarts: waits for a new commit or `jobkeeper restart`.
    GaveUp,
    /// `suspend: true`.
    Suspended,
    /// Stopped (removed from the repo).
    Stopped,
    /// Its file is invalid and it never had a valid version.
    Invalid,
    /// A new version failed before it was ready: the previous one runs, until a new commit.
    RolledBack,
}

// In SPEC's order: `JobState::ALL` lists them so.
words!(JobState {
    Pending => "pending",
    Building => "building",
    Deploying => "deploying",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Backoff => "backoff",
    GaveUp => "gave_up",
    Suspended => "suspended",
    Stopped => "stopped",
    Invalid => "invalid",
    RolledBack => "rolled_back",
});

/// A deployed version as [`Blocking::set_applied`] records it: a borrowed view of the actor's
/// `reconcile::Deployed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied<'a> {
    /// Its spec.
    pub spec: &'a JobSpec,
    /// The spec's hash.
    pub hash: &'a str,
    /// Its artifact, for jobs with a project or SQL.
    pub artifact: Option<&'a Artifact>,
    /// The config commit that deployed it, when known.
    pub commit: Option<&'a str>,
}

/// A job's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// Job name.
    pub name: String,
    /// Path of its file in the config repo.
    pub path: String,
    /// The spec the config repo wants, `None` once removed.
    pub desired: Option<JobSpec>,
    /// Hash of `desired` (see `reconcile::spec_hash`).
    pub desired_hash: Option<String>,
    /// Config commit that last changed `desired`.
    pub desired_commit: Option<String>,
    /// The spec of the deployed version.
    pub applied: Option<JobSpec>,
    /// Hash of `applied`.
    pub applied_hash: Option<String>,
    /// The deployed artifact.
    pub artifact: Option<Artifact>,
    /// Config commit of the deployed version.
    pub applied_commit: Option<String>,
    /// Current state.
    pub state: JobState,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Problems of the latest version of its file, when invalid.
    pub invalid: Option<String>,
    /// Unix time of the last change.
    pub updated_at: i64,
}

/// A job as lists show it (see [`Blocking::job_list`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobListRow {
    /// Job name.
    pub name: String,
    /// Path of its file in the config repo.
    pub path: String,
    /// Current state; `None` when the stored state cannot be read (see `unreadable`).
    pub state: Option<JobState>,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Config commit that last changed its desired spec.
    pub desired_commit: Option<String>,
    /// The `env` of its desired (else applied) spec.
    pub env: Option<String>,
    /// True when the latest version of its file is invalid.
    pub invalid: bool,
    /// True once its file was removed from the config repo (its history is kept).
    #[serde(default)]
    pub removed: bool,
    /// Restarts recorded.
    #[serde(default)]
    pub restarts: u64,
    /// The `schedule` of its desired (else applied) spec, for a batch job on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Id of its latest event.
    #[serde(default)]
    pub last_event_id: Option<i64>,
    /// Why the row cannot be read whole (a spec, artifact or state that does not decode): the
    /// list still shows it, with what could be read, instead of failing for every job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// Which jobs a list shows (see [`Blocking::job_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs whose env is one of these (`None`: any env).
    pub envs: Option<Vec<String>>,
    /// Only jobs in this folder (`team-a` lists `team-a/...`, subfolders included).
    pub folder: Option<String>,
    /// Only the job of this name.
    pub name: Option<String>,
    /// Only the jobs of these names (`None`: any name; empty: none).
    pub names: Option<Vec<String>>,
    /// Only jobs whose name holds this text, in any case (the status page's search).
    pub name_contains: Option<String>,
    /// Removed jobs too (hidden by default).
    pub removed: bool,
    /// Only jobs whose name sorts after this one (the previous page's last).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl JobListRow {
    /// The list view of a full row.
    pub fn of(row: &JobRow) -> JobListRow {
        JobListRow {
            name: row.name.clone(),
            path: row.path.clone(),
            state: Some(row.state),
            reason: row.reason.clone(),
            desired_commit: row.desired_commit.clone(),
            env: row
                .desired
                .as_ref()
                .or(row.applied.as_ref())
                .map(|s| s.env.clone()),
            invalid: row.invalid.is_some(),
            removed: row.desired.is_none() && row.invalid.is_none(),
            restarts: 0,
            schedule: row
                .desired
                .as_ref()
                .or(row.applied.as_ref())
                .and_then(|s| s.schedule.clone()),
            last_event_id: None,
            unreadable: None,
        }
    }
}

/// The SQL test of a row that cannot be read whole: a state word no [`JobState`] has, or a
/// spec or artifact column that is not JSON.
fn unreadable_sql() -> String {
    let words: Vec<String> = JobState::ALL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "(state NOT IN ({}) OR COALESCE(json_valid(desired), 1) = 0 \
          OR COALESCE(json_valid(applied), 1) = 0 OR COALESCE(json_valid(artifact), 1) = 0)",
        words.join(", ")
    )
}

/// Why a list row's JSON columns cannot be read: the columns whose text is not JSON.
fn bad_json(at: &At<'_>, valid: [(&'static str, Option<bool>); 3]) -> Option<String> {
    let bad: Vec<String> = valid
        .iter()
        .filter(|(_, ok)| *ok == Some(false))
        .map(|(column, _)| at.error(column, "not JSON").to_string())
        .collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

/// The SQL test of a job still in the config repo: a removed job has neither a desired spec
/// nor an invalid file. Lists hide the others by default, and counts leave them out.
/// Jobs still in the config repo; [`Blocking::job_state_counts`] walks the partial index of
/// this condition (`jobs_counted`, migration 14), so keep the two the same text.
pub(super) const NOT_REMOVED: &str = "NOT (desired IS NULL AND invalid IS NULL)";

const JOB_SELECT: &str = "SELECT name, path, desired, desired_hash, desired_commit, applied,
    applied_hash, artifact, state, reason, invalid, updated_at, applied_commit FROM jobs";

/// How job names compare and sort: by their bytes, as SQLite compares text, on both
/// databases (a Postgres database's own collation may sort `B` after `a`, or ignore `-`), so
/// pages by name and lists sorted by name are the same on both.
pub(super) fn by_bytes(db: &dyn Sql) -> &'static str {
    match db.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " COLLATE \"C\"",
    }
}

fn job_row(r: &dyn RowRef) -> Result<JobRow> {
    let name: String = r.get(0)?;
    let at = At {
        table: "jobs",
        row: &name,
    };
    Ok(JobRow {
        path: r.get(1)?,
        desired: at.json("desired", r.get(2)?)?,
        desired_hash: r.get(3)?,
        desired_commit: r.get(4)?,
        applied: at.json("applied", r.get(5)?)?,
        applied_hash: r.get(6)?,
        artifact: at.json("artifact", r.get(7)?)?,
        state: at.word("state", &r.get::<String>(8)?, JobState::parse)?,
        reason: r.get(9)?,
        invalid: r.get(10)?,
        updated_at: r.get(11)?,
        applied_commit: r.get(12)?,
        name: name.clone(),
    })
}

/// A row of [`Blocking::job_page`]'s answer: what can be read, and why the rest cannot.
fn list_row(r: &dyn RowRef) -> Result<JobListRow> {
    let name: String = r.get(0)?;
    let at = At {
        table: "jobs",
        row: &name,
    };
    let mut unreadable = Vec::new();
    let mut keep = |e: StoreError| {
        unreadable.push(e.to_string());
    };
    let text = |i: usize| r.get::<Option<String>>(i).unwrap_or_default();
    let state = text(2).map_or_else(
        || Err(at.error("state", "not text")),
        |w| at.word("state", &w, JobState::parse),
    );
    let state = state.map_err(&mut keep).ok();
    let env = r
        .get::<Option<String>>(5)
        .map_err(|e| keep(at.error("env", e)))
        .ok()
        .flatten();
    let valid = |i: usize| r.get::<Option<bool>>(i).ok().flatten();
    if let Some(bad) = bad_json(
        &at,
        [
            ("desired", valid(10)),
            ("applied", valid(11)),
            ("artifact", valid(12)),
        ],
    ) {
        unreadable.push(bad);
    }
    Ok(JobListRow {
        path: text(1).unwrap_or_default(),
        state,
        reason: text(3),
        desired_commit: text(4),
        env,
        invalid: r.get(6).unwrap_or(false),
        removed: r.get(7).unwrap_or(false),
        restarts: r.get::<Option<i64>>(8).ok().flatten().unwrap_or(0) as u64,
        last_event_id: r.get(9).ok().flatten(),
        schedule: r.get::<Option<String>>(13).ok().flatten(),
        unreadable: (!unreadable.is_empty()).then(|| unreadable.join("; ")),
        name,
    })
}

impl Blocking {
    /// Every job row, sorted by name.
    pub fn jobs(&self) -> Result<Vec<JobRow>> {
        self.sql(|db| {
            let sql = format!("{JOB_SELECT} ORDER BY name{}", by_bytes(db));
            db.query_map(&sql, p![], job_row)
        })
    }

    /// One job row.
    pub fn job(&self, name: &str) -> Result<Option<JobRow>> {
        self.sql(|db| db.query_opt(&format!("{JOB_SELECT} WHERE name = ?1"), p![name], job_row))
    }

    /// The jobs the config repo wants (a desired spec is recorded), as `(name, path)`, sorted
    /// by name; no spec is read.
    pub fn desired_jobs(&self) -> Result<Vec<(String, String)>> {
        self.sql(|db| {
            let sql = format!(
                "SELECT name, path FROM jobs WHERE desired IS NOT NULL ORDER BY name{}",
                by_bytes(db)
            );
            db.query_map(&sql, p![], |r| Ok((r.get(0)?, r.get(1)?)))
        })
    }

    /// The desired (else applied) specs of the named jobs that have one.
    pub fn applied_specs(&self, names: &[&str]) -> Result<Vec<(String, JobSpec)>> {
        let found = self.sql(|db| {
            let mut found = Vec::with_capacity(names.len());
            if db.backend() == super::sql::Backend::Postgres {
                // Every statement is a round trip: the names go 500 to a statement (a first
                // start over 10,000 jobs asked 10,000 times), answered in their order.
                let mut by_name: HashMap<String, String> = HashMap::new();
                for chunk in names.chunks(500) {
                    let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
                    let params: Vec<&dyn super::sql::ToValue> = chunk
                        .iter()
                        .map(|n| n as &dyn super::sql::ToValue)
                        .collect();
                    let sql = format!(
                        "SELECT name, COALESCE(desired, applied) FROM jobs WHERE name IN ({})
                         AND COALESCE(desired, applied) IS NOT NULL",
                        marks.join(", ")
                    );
                    for (name, json) in db.query_map(&sql, &params, |r| {
                        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
                    })? {
                        by_name.insert(name, json);
                    }
                }
                for n in names {
                    if let Some(json) = by_name.remove(*n) {
                        found.push((n.to_string(), json));
                    }
                }
                return Ok(found);
            }
            for n in names {
                found.extend(db.query_opt(
                    "SELECT name, COALESCE(desired, applied) FROM jobs WHERE name = ?1
                     AND COALESCE(desired, applied) IS NOT NULL",
                    p![n],
                    |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
                )?);
            }
            Ok(found)
        })?;
        let mut out = Vec::new();
        for (name, json) in found {
            let at = At {
                table: "jobs",
                row: &name,
            };
            if let Some(spec) = at.json("desired", Some(json))? {
                out.push((name, spec));
            }
        }
        Ok(out)
    }

    /// Sets a job's state and the reason for it.
    pub fn set_state(&self, name: &str, state: JobState, reason: Option<&str>) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE jobs SET state = ?2, reason = ?3, updated_at = ?4 WHERE name = ?1",
                p![name, state.as_str(), reason, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Records the version now deployed, or `None` when nothing is deployed any more. The spec
    /// is stored as `serde_json` writes it, so its hash stays the hash of the stored bytes.
    pub fn set_applied(&self, name: &str, applied: Option<Applied<'_>>) -> Result<()> {
        let (spec, hash, artifact, commit) = match applied {
            Some(a) => (
                Some(serde_json::to_string(a.spec)?),
                Some(a.hash),
                a.artifact.map(serde_json::to_string).transpose()?,
                a.commit,
            ),
            None => (None, None, None, None),
        };
        self.sql(|db| {
            db.execute(
                "UPDATE jobs SET applied = ?2, applied_hash = ?3, artifact = ?4,
                     applied_commit = ?6, updated_at = ?5
                 WHERE name = ?1",
                p![name, spec, hash, artifact, now_ms(), commit],
            )
        })?;
        Ok(())
    }

    /// Every job as lists show it, sorted by name: no specs are read, only their `env`.
    pub fn job_list(&self) -> Result<Vec<JobListRow>> {
        self.job_page(&JobQuery {
            removed: true,
            limit: usize::MAX,
            ..JobQuery::default()
        })
    }

    /// The jobs `q` asks for, sorted by name: one indexed walk of the jobs by name, each spec
    /// read only for its `env`.
    pub fn job_page(&self, q: &JobQuery) -> Result<Vec<JobListRow>> {
        self.sql(|db| {
            let bytes = by_bytes(db);
            let mut sql = format!(
                "SELECT name, path, state, reason, desired_commit, env, invalid IS NOT NULL,
                     desired IS NULL AND invalid IS NULL, restarts, last_event_id,
                     json_valid(desired), json_valid(applied), json_valid(artifact), schedule
                 FROM (SELECT *, CASE WHEN json_valid(COALESCE(desired, applied)) = 1
                     THEN json_extract(COALESCE(desired, applied), '$.env') END AS env,
                     CASE WHEN json_valid(COALESCE(desired, applied)) = 1
                     THEN json_extract(COALESCE(desired, applied), '$.schedule') END AS schedule
                     FROM jobs) AS j
                 WHERE name{bytes} > ?1",
            );
            let mut args: Vec<Box<dyn ToValue>> =
                vec![Box::new(q.after.clone().unwrap_or_default())];
            if let Some(state) = q.state {
                args.push(Box::new(state.as_str()));
                let _ = write!(sql, " AND state = ?{}", args.len());
            }
            if let Some(folder) = &q.folder {
                let prefix = format!("{}/", folder.trim_end_matches('/'));
                args.push(Box::new(prefix.chars().count() as i64));
                let n = args.len();
                args.push(Box::new(prefix));
                let _ = write!(sql, " AND substr(name, 1, ?{n}) = ?{}", n + 1);
            }
            if let Some(name) = &q.name {
                args.push(Box::new(name.clone()));
                let _ = write!(sql, " AND name = ?{}", args.len());
            }
            if let Some(names) = &q.names {
                let mut marks = Vec::new();
                for n in names {
                    args.push(Box::new(n.clone()));
                    marks.push(format!("?{}", args.len()));
                }
                if marks.is_empty() {
                    sql.push_str(" AND 1 = 0");
                } else {
                    let _ = write!(sql, " AND name IN ({})", marks.join(", "));
                }
            }
            if let Some(text) = q.name_contains.as_deref().filter(|t| !t.is_empty()) {
                args.push(Box::new(text.to_lowercase()));
                let _ = write!(sql, " AND instr(lower(name), ?{}) > 0", args.len());
            }
            if let Some(envs) = &q.envs {
                let mut marks = Vec::new();
                for e in envs {
                    args.push(Box::new(e.clone()));
                    marks.push(format!("?{}", args.len()));
                }
                if marks.is_empty() {
                    // No env is asked for: no job (Postgres takes no empty `IN ()`).
                    sql.push_str(" AND 1 = 0");
                } else {
                    let _ = write!(sql, " AND env IN ({})", marks.join(", "));
                }
            }
            if !q.removed {
                let _ = write!(sql, " AND {NOT_REMOVED}");
            }
            args.push(Box::new(i64::try_from(q.limit).unwrap_or(i64::MAX)));
            let _ = write!(sql, " ORDER BY name{bytes} LIMIT ?{}", args.len());
            let args: Vec<&dyn ToValue> = args.iter().map(|a| &**a).collect();
            // A row that cannot be read whole is listed with what can be read and why the rest
            // cannot: one bad row never fails the list of every job.
            db.query_map(&sql, &args, list_row)
        })
    }

    /// How many jobs have a row that cannot be read whole (see [`JobListRow::unreadable`]).
    pub fn unreadable_jobs(&self) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM jobs WHERE {}", unreadable_sql());
        let n: i64 = self.sql(|db| db.one(&sql, p![]))?;
        Ok(n as u64)
    }

    /// How many jobs are in each state (every state, zeros included). Jobs removed from the
    /// config repo are left out, as the job list leaves them out by default: the count of a
    /// state is the length of the list of that state (`?state=`). A state no [`JobState`] has
    /// is counted by [`Blocking::unreadable_jobs`], not here.
    pub fn job_state_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let sql = format!("SELECT state, COUNT(*) FROM jobs WHERE {NOT_REMOVED} GROUP BY state");
        let rows = self.sql(|db| {
            db.query_map(&sql, p![], |r| {
                Ok((r.get::<Option<String>>(0).ok().flatten(), r.get::<i64>(1)?))
            })
        })?;
        let mut counts: HashMap<JobState, u64> = HashMap::new();
        for (state, n) in rows {
            if let Some(state) = state.as_deref().and_then(JobState::parse) {
                counts.insert(state, n as u64);
            }
        }
        Ok(JobState::ALL
            .into_iter()
            .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
            .collect())
    }

    /// How many times each job was restarted (its `restarted` events), by job.
    pub fn restart_counts(&self) -> Result<HashMap<String, u64>> {
        // `jobs.restarts` is kept by each event the store records (`events::insert_event`).
        let rows = self.sql(|db| {
            db.query_map(
                "SELECT name, restarts FROM jobs WHERE restarts > 0",
                p![],
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)? as u64)),
            )
        })?;
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::DesiredUpdate;
    use super::super::tests::{commit, spec_update, stores};
    use super::*;
    use crate::event::JobEvent;

    /// Runs `sql` on the store's database as it is: a test's way to damage a row on purpose.
    fn damage(s: &Blocking, sql: &str) {
        s.sql(|db| db.batch(sql)).unwrap();
    }

    #[test]
    fn job_states_round_trip() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
        }
    }

    #[test]
    fn apply_commit_is_atomic_and_keeps_desired_of_invalid_jobs() {
        for s in stores() {
            assert_eq!(s.applied_commit().unwrap(), None);
            s.apply_commit(
                &commit("c1"),
                &[spec_update("a", "dev")],
                &[("a".into(), JobEvent::Planned { line: "add".into() })],
            )
            .unwrap();
            let hash = s.job("a").unwrap().unwrap().desired_hash;
            s.apply_commit(
                &commit("c2"),
                &[DesiredUpdate::Invalid {
                    name: "a".into(),
                    path: "jobs/a.yaml".into(),
                    errors: "jobs/a.yaml:1:1: bad".into(),
                }],
                &[],
            )
            .unwrap();
            let a = s.job("a").unwrap().unwrap();
            assert_eq!(a.desired_hash, hash);
            assert_eq!(a.desired.map(|d| d.env).as_deref(), Some("dev"));
            assert_eq!(a.desired_commit.as_deref(), Some("c1"));
            assert_eq!(a.invalid.as_deref(), Some("jobs/a.yaml:1:1: bad"));
            assert_eq!(s.applied_commit().unwrap().as_deref(), Some("c2"));
            // The plan note is recorded with the commit, and is the job's latest event.
            let (id, author): (i64, String) = s
                .sql(|db| {
                    db.query_row(
                        "SELECT e.id, c.author FROM events e JOIN commits c ON c.id = e.commit_id
                     WHERE e.job = 'a' AND e.kind = 'planned'",
                        p![],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                })
                .unwrap();
            assert_eq!(author, "Ann <ann@example.com>");
            assert_eq!(s.job_list().unwrap()[0].last_event_id, Some(id));
            s.apply_commit(
                &commit("c3"),
                &[DesiredUpdate::Removed { name: "a".into() }],
                &[],
            )
            .unwrap();
            assert_eq!(s.job("a").unwrap().unwrap().desired, None);
        }
    }

    #[test]
    fn applied_specs_of_many_names_come_in_the_order_asked() {
        for s in stores() {
            let names: Vec<String> = (0..601).map(|i| format!("j{i:03}")).collect();
            let updates: Vec<DesiredUpdate> = names.iter().map(|n| spec_update(n, "dev")).collect();
            s.apply_commit(&commit("c1"), &updates, &[]).unwrap();
            // Backwards, with names the store does not have among them.
            let mut asked: Vec<&str> = names.iter().rev().map(String::as_str).collect();
            asked.insert(3, "nope");
            asked.push("also-nope");
            let got: Vec<String> = s
                .applied_specs(&asked)
                .unwrap()
                .into_iter()
                .map(|(n, spec)| {
                    assert_eq!(spec.env, "dev");
                    n
                })
                .collect();
            let want: Vec<String> = names.iter().rev().cloned().collect();
            assert_eq!(got, want, "{:?}", s.backend());
        }
    }

    #[test]
    fn applied_specs_and_artifacts_read_back_typed() {
        for s in stores() {
            s.apply_commit(&commit("c1"), &[spec_update("a", "prod")], &[])
                .unwrap();
            let spec = s.job("a").unwrap().unwrap().desired.unwrap();
            let artifact = Artifact {
                key: "k".into(),
                path: "/a/app.jar".into(),
                digest: "d".into(),
                log: "/a/build.log".into(),
                commit: "c1".into(),
            };
            let applied = Applied {
                spec: &spec,
                hash: "h",
                artifact: Some(&artifact),
                commit: Some("c1"),
            };
            s.set_applied("a", Some(applied)).unwrap();
            let row = s.job("a").unwrap().unwrap();
            assert_eq!(row.applied.as_ref(), Some(&spec));
            assert_eq!(row.applied_commit.as_deref(), Some("c1"));
            assert_eq!(row.applied_hash.as_deref(), Some("h"));
            assert_eq!(row.artifact, Some(artifact));
            assert_eq!(
                s.applied_specs(&["a", "b"]).unwrap(),
                [("a".to_string(), spec)]
            );
            assert_eq!(
                s.desired_jobs().unwrap(),
                [("a".into(), "jobs/a.yaml".into())]
            );
            assert_eq!(s.job_list().unwrap()[0].env.as_deref(), Some("prod"));
            s.set_applied("a", None).unwrap();
            let row = s.job("a").unwrap().unwrap();
            assert_eq!((row.applied, row.artifact), (None, None));
            assert_eq!(row.applied_commit, None);
        }
    }

    #[test]
    fn a_value_that_does_not_decode_is_an_error_naming_its_row_and_column() {
        for s in stores() {
            s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
                .unwrap();
            damage(&s, "UPDATE jobs SET artifact = '{\"key\": 1}'");
            let err = s.job("a").unwrap_err();
            assert!(
                matches!(&err, StoreError::Decode { table: "jobs", row, column: "artifact", .. } if row == "a"),
                "{err}"
            );
            assert!(s.jobs().is_err());
            damage(&s, "UPDATE jobs SET artifact = NULL, state = 'sleeping'");
            // The list shows the row as unreadable, and the counts leave it to `unreadable_jobs`.
            let list = s.job_list().unwrap();
            assert_eq!(list[0].state, None);
            let why = list[0].unreadable.as_deref().unwrap();
            assert!(why.contains("unknown state `sleeping`"), "{why}");
            assert!(s.job_state_counts().unwrap().iter().all(|(_, n)| *n == 0));
            assert_eq!(s.unreadable_jobs().unwrap(), 1);
        }
    }

    #[test]
    fn one_row_whose_spec_is_not_json_is_listed_unreadable_beside_the_others() {
        for s in stores() {
            let jobs = [
                spec_update("a", "dev"),
                spec_update("b", "dev"),
                spec_update("c", "dev"),
            ];
            s.apply_commit(&commit("c1"), &jobs, &[]).unwrap();
            damage(
                &s,
                "UPDATE jobs SET desired = '{\"env\": ' WHERE name = 'b'",
            );
            let list = s.job_list().unwrap();
            let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["a", "b", "c"]);
            assert_eq!(list[0].env.as_deref(), Some("dev"));
            assert_eq!(list[0].unreadable, None);
            assert_eq!(list[1].env, None);
            assert_eq!(list[1].state, Some(JobState::Pending));
            let why = list[1].unreadable.as_deref().unwrap();
            assert!(why.contains("desired"), "{why}");
            assert_eq!(s.unreadable_jobs().unwrap(), 1);
            assert_eq!(
                s.job_state_counts()
                    .unwrap()
                    .iter()
                    .map(|(_, n)| n)
                    .sum::<u64>(),
                3
            );
        }
    }

    #[test]
    fn a_removed_job_is_left_out_of_the_counts_as_out_of_the_list() {
        for s in stores() {
            s.apply_commit(
                &commit("c1"),
                &[spec_update("a", "dev"), spec_update("b", "dev")],
                &[],
            )
            .unwrap();
            s.set_state("b", JobState::Running, None).unwrap();
            s.apply_commit(
                &commit("c2"),
                &[DesiredUpdate::Removed { name: "a".into() }],
                &[],
            )
            .unwrap();
            s.set_state("a", JobState::Stopped, Some("job file removed"))
                .unwrap();
            s.apply_commit(
                &commit("c3"),
                &[DesiredUpdate::Invalid {
                    name: "c".into(),
                    path: "jobs/c.yaml".into(),
                    errors: "jobs/c.yaml:1:1: bad".into(),
                }],
                &[],
            )
            .unwrap();
            let counts: HashMap<_, _> = s.job_state_counts().unwrap().into_iter().collect();
            assert_eq!(
                counts[&JobState::Stopped],
                0,
                "the removed job is not counted"
            );
            assert_eq!(counts[&JobState::Running], 1);
            assert_eq!(
                counts[&JobState::Invalid],
                1,
                "an invalid file is not removed"
            );
            for (state, n) in &counts {
                let listed = s
                    .job_page(&JobQuery {
                        state: Some(*state),
                        limit: usize::MAX,
                        ..JobQuery::default()
                    })
                    .unwrap();
                assert_eq!(listed.len() as u64, *n, "{state}");
            }
            let shown = s.job_page(&JobQuery {
                limit: usize::MAX,
                ..JobQuery::default()
            });
            assert_eq!(counts.values().sum::<u64>(), shown.unwrap().len() as u64);
            let all = s.job_list().unwrap();
            assert_eq!((all.len(), all[0].removed), (3, true));
            assert_eq!(s.desired_jobs().unwrap().len(), 1);
        }
    }

    #[test]
    fn pages_are_in_byte_order_and_filter_alike_on_every_backend() {
        for s in stores() {
            let names = ["b", "B", "a-x", "team/c", "team/a", "ax", "Team/z"];
            let jobs: Vec<_> = names
                .iter()
                .map(|n| spec_update(n, if n.starts_with('a') { "prod" } else { "dev" }))
                .collect();
            s.apply_commit(&commit("c1"), &jobs, &[]).unwrap();
            s.set_state("ax", JobState::Running, Some("up")).unwrap();
            let page = |q: JobQuery| -> Vec<String> {
                let q = JobQuery {
                    // 0 (the default) is no limit here.
                    limit: if q.limit == 0 { usize::MAX } else { q.limit },
                    ..q
                };
                s.job_page(&q)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.name)
                    .collect()
            };
            let all = page(JobQuery::default());
            assert_eq!(all, ["B", "Team/z", "a-x", "ax", "b", "team/a", "team/c"]);
            let names: Vec<String> = s.jobs().unwrap().into_iter().map(|j| j.name).collect();
            assert_eq!(names, all);
            let desired: Vec<String> = s.desired_jobs().unwrap().into_iter().map(|j| j.0).collect();
            assert_eq!(desired, all);
            // Page by page, each after the last name of the one before.
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let got = page(JobQuery {
                    after: after.clone(),
                    limit: 3,
                    ..JobQuery::default()
                });
                if got.is_empty() {
                    break;
                }
                after = got.last().cloned();
                paged.extend(got);
            }
            assert_eq!(paged, all);
            let q = |f: fn(&mut JobQuery)| {
                let mut q = JobQuery::default();
                f(&mut q);
                page(q)
            };
            assert_eq!(q(|q| q.folder = Some("team/".into())), ["team/a", "team/c"]);
            assert_eq!(q(|q| q.name = Some("B".into())), ["B"]);
            assert_eq!(
                q(|q| q.name_contains = Some("TeAm".into())),
                ["Team/z", "team/a", "team/c"]
            );
            assert_eq!(q(|q| q.envs = Some(vec!["prod".into()])), ["a-x", "ax"]);
            assert_eq!(q(|q| q.envs = Some(vec![])), Vec::<String>::new());
            assert_eq!(q(|q| q.state = Some(JobState::Running)), ["ax"]);
            let ax = s
                .job_page(&JobQuery {
                    name: Some("ax".into()),
                    limit: 1,
                    ..JobQuery::default()
                })
                .unwrap();
            assert_eq!(ax[0].state, Some(JobState::Running));
            assert_eq!(ax[0].reason.as_deref(), Some("up"));
            assert_eq!(
                (ax[0].env.as_deref(), ax[0].invalid, ax[0].removed),
                (Some("prod"), false, false)
            );
            assert_eq!(ax[0].unreadable, None);
            assert!(s.restart_counts().unwrap().is_empty());
        }
    }
}
