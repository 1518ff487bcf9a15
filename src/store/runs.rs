//! The `runs` table: each submission of a job to its engine, with the engine's [`RunHandle`]
//! and how the run ended ([`RunState`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::sql::{RowRef, p};
use super::{At, Blocking, Result, now_ms};
use crate::engine::{EngineKind, RunHandle};

/// States of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Recorded, not yet accepted by its engine.
    Starting,
    /// Its engine has it (or it is being looked up after a lost submit answer).
    Running,
    /// Ended with success.
    Succeeded,
    /// Ended with failure, or could not be submitted.
    Failed,
    /// Stopped by jobkeeper (or never reached its cluster).
    Stopped,
    /// No longer known to its engine and not recovered.
    Lost,
}

words!(RunState {
    Starting => "starting",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Stopped => "stopped",
    Lost => "lost",
});

impl RunState {
    /// Starting or running: not known to have ended.
    pub fn is_live(self) -> bool {
        matches!(self, RunState::Starting | RunState::Running)
    }
}

/// The live states as an SQL list, `('starting', 'running')`, written from
/// [`RunState::as_str`]: the queries of live runs and the partial index they use
/// (`runs_live`) say it alike, and no state word is spelled in SQL text.
pub(super) static LIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let words: Vec<String> = RunState::ALL
        .into_iter()
        .filter(|s| s.is_live())
        .map(|s| format!("'{s}'"))
        .collect();
    format!("({})", words.join(", "))
});

/// A run's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Job name.
    pub job: String,
    /// Config commit that deployed the version the run runs.
    pub commit_id: Option<String>,
    /// For project jobs, the project commit its artifact was built from.
    pub project_commit: Option<String>,
    /// Hash of the spec it runs.
    pub spec_hash: String,
    /// The engine it was submitted to.
    pub engine: EngineKind,
    /// The env it runs in (which cluster); `None` for runs recorded before envs were kept.
    pub env: Option<String>,
    /// Engine handle, once submitted.
    pub handle: Option<RunHandle>,
    /// Where it is.
    pub state: RunState,
    /// How it ended.
    pub reason: Option<String>,
    /// Its log file.
    pub log_path: String,
    /// Unix time (ms) it started.
    pub started_at: i64,
    /// Unix time (ms) it ended.
    pub ended_at: Option<i64>,
    /// The names of the secrets it was given; `None` when not recorded (a run recorded before
    /// they were, or whose submit had not read them yet).
    pub secrets: Option<Vec<String>>,
    /// The keyed fingerprint of those secrets' values ([`crate::secrets::RunSecrets::fingerprint`]).
    #[serde(skip)]
    pub secrets_mac: Option<String>,
    /// Its log was masked in place after it ended.
    pub log_masked: bool,
    /// The node (host name) whose daemon started it; `None` for runs recorded before nodes
    /// were.
    pub node: Option<String>,
}

/// Where a run's version comes from (see [`Blocking::insert_run`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOrigin<'a> {
    /// The config commit that deployed the version.
    pub config_commit: Option<&'a str>,
    /// For project jobs, the project commit its artifact was built from.
    pub project_commit: Option<&'a str>,
    /// The build key of its artifact.
    pub artifact_key: Option<&'a str>,
}

/// What runs now for one job: its newest live run's commits (see [`Blocking::running`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    /// The run.
    pub run_id: i64,
    /// Config commit that deployed the version it runs.
    pub config_commit: Option<String>,
    /// For project jobs, the project commit its artifact was built from.
    pub project_commit: Option<String>,
    /// Unix time (ms) it started.
    pub since: i64,
    /// The spec hash of the version it runs.
    pub spec_hash: String,
    /// Where it runs: its env, engine, cluster (from its handle) and the cluster's version
    /// when it was submitted.
    pub place: super::facts::Place,
}

/// The columns [`running_row`] reads: the cluster is the one its handle records.
const RUNNING_COLUMNS: &str = "id, commit_id, project_commit, started_at, spec_hash, env, engine,
    CASE WHEN json_valid(handle) = 1 THEN json_extract(handle, '$.cluster') END, engine_version";

/// A [`Running`] from [`RUNNING_COLUMNS`], starting at column `i`.
fn running_row(r: &dyn RowRef, i: usize) -> Result<Running> {
    Ok(Running {
        run_id: r.get(i)?,
        config_commit: r.get(i + 1)?,
        project_commit: r.get(i + 2)?,
        since: r.get(i + 3)?,
        spec_hash: r.get(i + 4)?,
        place: super::facts::Place {
            env: r.get(i + 5)?,
            engine: r.get(i + 6)?,
            cluster: r.get(i + 7)?,
            version: r.get(i + 8)?,
        },
    })
}

const RUN_SELECT: &str = "SELECT id, job, commit_id, spec_hash, engine, handle, state, reason,
    log_path, started_at, ended_at, env, project_commit, secrets, secrets_mac, log_masked, node
    FROM runs";

fn run_row(r: &dyn RowRef) -> Result<RunRow> {
    let id: i64 = r.get(0)?;
    let at = At {
        table: "runs",
        row: &id,
    };
    Ok(RunRow {
        id,
        job: r.get(1)?,
        commit_id: r.get(2)?,
        spec_hash: r.get(3)?,
        engine: at.word("engine", &r.get::<String>(4)?, EngineKind::from_name)?,
        handle: at.json("handle", r.get(5)?)?,
        state: at.word("state", &r.get::<String>(6)?, RunState::parse)?,
        reason: r.get(7)?,
        log_path: r.get(8)?,
        started_at: r.get(9)?,
        ended_at: r.get(10)?,
        env: r.get(11)?,
        project_commit: r.get(12)?,
        secrets: at.json("secrets", r.get(13)?)?,
        secrets_mac: r.get(14)?,
        log_masked: r.get(15)?,
        node: r.get(16)?,
    })
}

impl Blocking {
    /// Records a run about to be submitted to `engine` in `env`, of the version `origin` says;
    /// returns its id. Its log is `log_dir/<id>.log`.
    pub fn insert_run(
        &self,
        job: &str,
        origin: RunOrigin<'_>,
        spec_hash: &str,
        (engine, env): (EngineKind, &str),
        log_dir: &Path,
    ) -> Result<i64> {
        let epoch = self.epoch();
        self.tx(|db| {
            let id: i64 = db.one(
                "INSERT INTO runs (job, commit_id, project_commit, artifact_key, spec_hash, engine,
                     env, state, log_path, started_at, node, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, '', ?8, ?10, ?11) RETURNING id",
                p![
                    job,
                    origin.config_commit,
                    origin.project_commit,
                    origin.artifact_key,
                    spec_hash,
                    engine.as_str(),
                    env,
                    now_ms(),
                    RunState::Starting.as_str(),
                    &*self.node,
                    epoch,
                ],
            )?;
            let log = log_dir.join(format!("{id}.log"));
            db.execute(
                "UPDATE runs SET log_path = ?2 WHERE id = ?1",
                p![id, log.to_string_lossy().into_owned()],
            )?;
            Ok(id)
        })
    }

    /// Records which secrets run `id` was given (`names`) and their keyed fingerprint.
    pub fn set_run_secrets(&self, id: i64, names: &[String], mac: Option<&str>) -> Result<()> {
        let names = serde_json::to_string(names)?;
        self.sql(|db| {
            db.execute(
                "UPDATE runs SET secrets = ?2, secrets_mac = ?3 WHERE id = ?1",
                p![id, names, mac],
            )
        })?;
        Ok(())
    }

    /// Records that run `id`'s log was masked in place.
    pub fn set_log_masked(&self, id: i64) -> Result<()> {
        self.sql(|db| db.execute("UPDATE runs SET log_masked = 1 WHERE id = ?1", p![id]))?;
        Ok(())
    }

    /// Ended runs given secrets whose log was not masked in place.
    pub fn unmasked_ended_runs(&self) -> Result<Vec<RunRow>> {
        let sql = format!(
            "{RUN_SELECT} WHERE log_masked = 0 AND secrets IS NOT NULL AND secrets != '[]'
             AND state NOT IN {} ORDER BY id",
            *LIVE
        );
        self.sql(|db| db.query_map(&sql, p![], run_row))
    }

    /// Records a job found running on its cluster (`adopt`) as a new run of `job` (given no
    /// secrets by jobkeeper), `running` with its engine id, in one write: a daemon that stops at any moment leaves either no run
    /// (the next one looks again) or this one with its id (the next one adopts it).
    pub fn insert_adopted_run(
        &self,
        job: &str,
        commit: Option<&str>,
        spec_hash: &str,
        (engine, env): (EngineKind, &str),
        log_dir: &Path,
        (engine_id, cluster): (&str, Option<String>),
    ) -> Result<RunHandle> {
        let epoch = self.epoch();
        self.tx(|db| {
            let id: i64 = db.one(
                "INSERT INTO runs (job, commit_id, spec_hash, engine, env, state, log_path,
                     started_at, secrets, node, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, '[]', ?8, ?9) RETURNING id",
                p![
                    job,
                    commit,
                    spec_hash,
                    engine.as_str(),
                    env,
                    RunState::Running.as_str(),
                    now_ms(),
                    &*self.node,
                    epoch
                ],
            )?;
            let log = log_dir.join(format!("{id}.log"));
            let handle = RunHandle {
                run_id: id,
                engine_id: engine_id.to_string(),
                start_ticks: None,
                cluster,
            };
            db.execute(
                "UPDATE runs SET log_path = ?2, handle = ?3 WHERE id = ?1",
                p![
                    id,
                    log.to_string_lossy().into_owned(),
                    serde_json::to_string(&handle)?
                ],
            )?;
            Ok(handle)
        })
    }

    /// Records the engine's handle of a submitted run; the run is then `running`.
    pub fn set_run_running(&self, id: i64, handle: &RunHandle) -> Result<()> {
        let handle = serde_json::to_string(handle)?;
        self.sql(|db| {
            db.execute(
                "UPDATE runs SET handle = ?2, state = ?3 WHERE id = ?1",
                p![id, handle, RunState::Running.as_str()],
            )
        })?;
        Ok(())
    }

    /// Records what each vertex of run `id` must run at (vertex id → parallelism).
    pub fn set_run_parallelism(&self, id: i64, vertices: &BTreeMap<String, u32>) -> Result<()> {
        let vertices = serde_json::to_string(vertices)?;
        self.sql(|db| {
            db.execute(
                "UPDATE runs SET parallelism = ?2 WHERE id = ?1",
                p![id, vertices],
            )
        })?;
        Ok(())
    }

    /// What each vertex of run `id` must run at, as [`Blocking::set_run_parallelism`] recorded it
    /// (empty when nothing was).
    pub fn run_parallelism(&self, id: i64) -> Result<BTreeMap<String, u32>> {
        let text: Option<String> = self
            .sql(|db| {
                db.query_opt("SELECT parallelism FROM runs WHERE id = ?1", p![id], |r| {
                    r.get(0)
                })
            })?
            .flatten();
        let at = At {
            table: "runs",
            row: &id,
        };
        Ok(at.json("parallelism", text)?.unwrap_or_default())
    }

    /// Records how a run ended (only the first end counts).
    pub fn finish_run(&self, id: i64, state: RunState, reason: Option<&str>) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE runs SET state = ?2, reason = ?3, ended_at = ?4
                 WHERE id = ?1 AND ended_at IS NULL",
                p![id, state.as_str(), reason, now_ms()],
            )
        })?;
        Ok(())
    }

    /// Runs not known to have ended (starting or running), oldest first.
    pub fn live_runs(&self) -> Result<Vec<RunRow>> {
        let sql = format!("{RUN_SELECT} WHERE state IN {} ORDER BY id", *LIVE);
        self.sql(|db| db.query_map(&sql, p![], run_row))
    }

    /// What runs now, by job: each job's newest live run. Reads only live runs (an index
    /// holds them), so it costs the number of running jobs, not the history.
    pub fn running(&self) -> Result<HashMap<String, Running>> {
        let sql = format!(
            "SELECT job, {RUNNING_COLUMNS} FROM runs WHERE state IN {} ORDER BY id",
            *LIVE
        );
        let rows = self.sql(|db| {
            db.query_map(&sql, p![], |r| {
                Ok((r.get::<String>(0)?, running_row(r, 1)?))
            })
        })?;
        // Oldest first: each job's newest live run is the one kept.
        Ok(rows.into_iter().collect())
    }

    /// What runs now for one job (see [`Blocking::running`]).
    pub fn running_of(&self, job: &str) -> Result<Option<Running>> {
        let sql = format!(
            "SELECT {RUNNING_COLUMNS} FROM runs
             WHERE job = ?1 AND state IN {} ORDER BY id DESC LIMIT 1",
            *LIVE
        );
        self.sql(|db| db.query_opt(&sql, p![job], |r| running_row(r, 0)))
    }

    /// Records the version of the cluster run `id` was submitted to.
    pub fn set_run_engine_version(&self, id: i64, version: &str) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE runs SET engine_version = ?2 WHERE id = ?1",
                p![id, version],
            )
        })?;
        Ok(())
    }

    /// The latest runs of a job, newest first.
    pub fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRow>> {
        let sql = format!("{RUN_SELECT} WHERE job = ?1 ORDER BY id DESC LIMIT ?2");
        self.sql(|db| db.query_map(&sql, p![job, limit as i64], run_row))
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let sql = format!("{RUN_SELECT} WHERE id = ?1");
        self.sql(|db| db.query_opt(&sql, p![id], run_row))
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreError;
    use super::super::sql::Backend;
    use super::*;

    #[test]
    fn each_run_records_the_node_that_started_it() {
        for s in crate::store::tests::stores() {
            let dir = Path::new("/tmp");
            let id = s
                .insert_run(
                    "a",
                    RunOrigin::default(),
                    "h",
                    (EngineKind::Local, "dev"),
                    dir,
                )
                .unwrap();
            let adopted = s
                .insert_adopted_run("b", None, "h", (EngineKind::Local, "dev"), dir, ("x", None))
                .unwrap();
            let host = super::super::node_name();
            assert_ne!(host, "unknown");
            assert_eq!(
                s.run(id).unwrap().unwrap().node.as_deref(),
                Some(host.as_str())
            );
            let b = s.runs("b", 1).unwrap().remove(0);
            assert_eq!(
                (b.node.as_deref(), adopted.engine_id.as_str()),
                (Some(host.as_str()), "x")
            );
            assert_eq!(b.log_path, format!("/tmp/{}.log", b.id));
            assert_eq!((b.state, b.handle), (RunState::Running, Some(adopted)));
        }
    }

    #[test]
    fn run_states_round_trip() {
        for st in RunState::ALL {
            assert_eq!(RunState::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
    }

    #[test]
    fn runs_live_until_finished_once() {
        for s in crate::store::tests::stores() {
            let id = s
                .insert_run(
                    "a",
                    RunOrigin {
                        config_commit: Some("c1"),
                        project_commit: Some("p1"),
                        artifact_key: Some("k1"),
                    },
                    "h",
                    (EngineKind::Local, "dev"),
                    Path::new("/logs/a"),
                )
                .unwrap();
            let live = s.live_runs().unwrap();
            assert_eq!(
                (
                    live[0].commit_id.as_deref(),
                    live[0].project_commit.as_deref()
                ),
                (Some("c1"), Some("p1"))
            );
            let running = &s.running().unwrap()["a"];
            assert_eq!(
                (running.run_id, running.config_commit.as_deref()),
                (id, Some("c1"))
            );
            assert_eq!(running.place.engine.as_deref(), Some("local"));
            assert_eq!(running.place.cluster, None);
            assert_eq!(s.running_of("a").unwrap().as_ref(), Some(running));
            assert_eq!(live[0].log_path, format!("/logs/a/{id}.log"));
            assert_eq!(
                (live[0].state, live[0].handle.as_ref()),
                (RunState::Starting, None)
            );
            let handle = RunHandle {
                run_id: id,
                engine_id: "42".into(),
                start_ticks: Some(7),
                cluster: Some("http://jm:8081".into()),
            };
            s.set_run_running(id, &handle).unwrap();
            s.set_run_engine_version(id, "2.3.0").unwrap();
            let place = s.running_of("a").unwrap().unwrap().place;
            assert_eq!(
                (place.cluster.as_deref(), place.version.as_deref()),
                (Some("http://jm:8081"), Some("2.3.0"))
            );
            let run = s.run(id).unwrap().unwrap();
            assert_eq!((run.state, run.handle), (RunState::Running, Some(handle)));
            assert!(s.run_parallelism(id).unwrap().is_empty());
            let vertices = BTreeMap::from([("v1".to_string(), 2), ("v2".to_string(), 1)]);
            s.set_run_parallelism(id, &vertices).unwrap();
            assert_eq!(s.run_parallelism(id).unwrap(), vertices);
            assert!(s.run_parallelism(id + 1).unwrap().is_empty());
            s.finish_run(id, RunState::Failed, Some("exit 3")).unwrap();
            s.finish_run(id, RunState::Stopped, None).unwrap();
            assert!(s.live_runs().unwrap().is_empty());
            assert!(s.running().unwrap().is_empty());
            assert_eq!(s.running_of("a").unwrap(), None);
            let r = &s.runs("a", 5).unwrap()[0];
            assert_eq!(
                (r.state, r.reason.as_deref(), r.ended_at.is_some()),
                (RunState::Failed, Some("exit 3"), true)
            );
            assert_eq!(s.run(id + 1).unwrap(), None);
            if s.backend() == Backend::Sqlite {
                assert_eq!(s.integrity_check().unwrap(), "ok");
            }
        }
    }

    #[test]
    fn secrets_are_recorded_and_unmasked_logs_of_ended_runs_found() {
        for s in crate::store::tests::stores() {
            let run = |job| {
                s.insert_run(
                    job,
                    RunOrigin::default(),
                    "h",
                    (EngineKind::Local, "dev"),
                    Path::new("/l"),
                )
                .unwrap()
            };
            let (given, none, live) = (run("a"), run("b"), run("c"));
            s.set_run_secrets(given, &["db".to_string()], Some("mac"))
                .unwrap();
            s.set_run_secrets(none, &[], None).unwrap();
            s.set_run_secrets(live, &["db".to_string()], None).unwrap();
            for id in [given, none] {
                s.finish_run(id, RunState::Succeeded, None).unwrap();
            }
            let found = s.unmasked_ended_runs().unwrap();
            assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [given]);
            assert_eq!(
                (found[0].secrets.clone(), found[0].secrets_mac.as_deref()),
                (Some(vec!["db".to_string()]), Some("mac"))
            );
            s.set_log_masked(given).unwrap();
            assert!(s.run(given).unwrap().unwrap().log_masked);
            assert!(s.unmasked_ended_runs().unwrap().is_empty());
        }
    }

    #[test]
    fn a_handle_that_does_not_decode_is_an_error_not_a_dropped_run() {
        for s in crate::store::tests::stores() {
            let id = s
                .insert_run(
                    "a",
                    RunOrigin::default(),
                    "h",
                    (EngineKind::Flink, "prod"),
                    Path::new("/l"),
                )
                .unwrap();
            // A row damaged on purpose.
            s.sql(|db| {
                db.execute(
                    "UPDATE runs SET handle = '{\"jobid\": 1}', state = 'running'",
                    p![],
                )
            })
            .unwrap();
            let err = s.live_runs().unwrap_err();
            assert!(
                matches!(&err, StoreError::Decode { table: "runs", row, column: "handle", .. } if *row == id.to_string()),
                "{err}"
            );
        }
    }
}
