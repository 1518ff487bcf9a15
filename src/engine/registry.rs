//! The engines of a daemon, by env: the local engine is shared by every local env; each cluster
//! (flink URL and savepoint folder, spark master) has one engine, shared by the envs naming it.
//!
//! An env's cluster can change while runs live on the old one: a config reload swaps the env's
//! engine ([`Engines::apply`]), and a daemon started with a new URL finds runs recorded on the
//! old one ([`RunHandle::cluster`]). Such runs keep an engine for the cluster they live on (a
//! *former* engine) until their job's actor has moved them to the env's current cluster, so
//! nothing is ever looked up on a cluster it does not run on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use std::path::Path;

use tokio::sync::mpsc;

use super::flink::FlinkEngine;
use super::local::LocalEngine;
use super::spark::artifacts::Shelf;
use super::spark::{JarShelf, SparkEngine};
use super::yarn::YarnEngine;
use super::{Engine, EngineConfig, EngineError, EngineKind, RunExit, RunHandle};

/// The engines by env, and the former engines of runs on a cluster no env names any more.
pub struct Engines {
    current: RwLock<HashMap<String, Entry>>,
    former: Mutex<Vec<Arc<dyn Engine>>>,
    local: Arc<LocalEngine>,
    salt: String,
    /// Where spark engines put jars for their workers (`None`: no spark engine can be made).
    jars: Option<JarShelf>,
}

/// What [`Engines::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Envs that had an engine and now have another one (their runs move to it).
    pub changed: Vec<String>,
    /// Envs that keep their engine until the daemon restarts.
    pub needs_restart: Vec<String>,
}

/// An env's engine and the key of its cluster (`None`: local).
struct Entry {
    key: Option<String>,
    engine: Arc<dyn Engine>,
}

/// The key of a cluster's engine: envs with the same key share one engine.
fn cluster_key(engine: &EngineConfig) -> Option<String> {
    match engine {
        EngineConfig::Local => None,
        EngineConfig::Flink(f) => Some(format!(
            "flink {} {:?}",
            f.url.trim_end_matches('/'),
            f.savepoint_dir
        )),
        EngineConfig::Spark(s) => Some(format!(
            "spark {} {} {:?} {:?} {:?}",
            s.url, s.master, s.ui, s.artifact_url, s.artifact_dir
        )),
        EngineConfig::Yarn(y) => Some(format!("yarn {y:?}")),
    }
}

/// A new engine for a cluster env.
fn make(
    engine: &EngineConfig,
    salt: &str,
    jars: Option<&JarShelf>,
) -> Result<Arc<dyn Engine>, EngineError> {
    match engine {
        EngineConfig::Local => Err(EngineError::Other("local has no cluster".into())),
        EngineConfig::Flink(f) => FlinkEngine::new(f, salt).map(|e| Arc::new(e) as Arc<dyn Engine>),
        EngineConfig::Yarn(y) => YarnEngine::new(y, salt).map(|e| Arc::new(e) as Arc<dyn Engine>),
        EngineConfig::Spark(s) => match jars {
            Some(jars) => SparkEngine::new(s, salt, jars).map(|e| Arc::new(e) as Arc<dyn Engine>),
            None => Err(EngineError::Other(
                "spark needs the daemon's shelf of served jars".into(),
            )),
        },
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engines {
    /// The engines of `settings`' envs; spark engines serve jars from `jars`. An engine that
    /// cannot be built is logged and its env left out: its jobs are refused with
    /// `deploy_failed`.
    pub fn build<'a>(
        salt: &str,
        envs: impl IntoIterator<Item = (&'a String, &'a EngineConfig)>,
        jars: Option<JarShelf>,
    ) -> Engines {
        Self::build_with(LocalEngine::new(), salt, envs, jars)
    }

    /// [`Engines::build`] with `local` as the engine of every local env.
    pub fn build_with<'a>(
        local: LocalEngine,
        salt: &str,
        envs: impl IntoIterator<Item = (&'a String, &'a EngineConfig)>,
        jars: Option<JarShelf>,
    ) -> Engines {
        let salt = salt.to_string();
        let engines = Engines {
            current: RwLock::new(HashMap::new()),
            former: Mutex::new(Vec::new()),
            local: Arc::new(local),
            salt,
            jars,
        };
        engines.apply(envs, false);
        engines
    }

    /// Ends every local run this daemon started, each given `grace` after SIGTERM (a leader
    /// stepping down: the new leader starts those jobs on its own node); returns how many.
    pub async fn end_local_runs(&self, grace: std::time::Duration) -> usize {
        let runs = self.local.running();
        let n = runs.len();
        let mut stops = tokio::task::JoinSet::new();
        for h in runs {
            let local = self.local.clone();
            stops.spawn(async move {
                if let Err(e) = local.stop(&h, grace).await {
                    tracing::warn!(run = h.run_id, "local run not stopped: {e}");
                }
            });
        }
        stops.join_all().await;
        n
    }

    /// Takes over the exit notifications of the engines that send them (local children's
    /// exits are seen at once); `None` after the first call.
    pub fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>> {
        self.local.take_exits()
    }

    /// Engines for a fixed map (tests and tools).
    pub fn from_map(map: HashMap<String, Arc<dyn Engine>>) -> Engines {
        Engines {
            current: RwLock::new(
                map.into_iter()
                    .map(|(env, engine)| {
                        let key = engine
                            .cluster()
                            .map(|c| format!("{} {c}", engine.kind().as_str()));
                        (env, Entry { key, engine })
                    })
                    .collect(),
            ),
            former: Mutex::new(Vec::new()),
            local: Arc::new(LocalEngine::new()),
            salt: String::new(),
            jars: None,
        }
    }

    /// Gives each env of `settings` its engine, keeping the engine of every cluster that did
    /// not change; the engine an env had before is kept as a former engine for the runs still
    /// on it.
    ///
    /// On a `reload` of a running daemon, only a flink env may change its cluster (its jobs
    /// then move, see [`Engines::of_run`]); an env that changes its engine kind or its spark
    /// master keeps its engine until the daemon restarts.
    pub fn apply<'a>(
        &self,
        envs: impl IntoIterator<Item = (&'a String, &'a EngineConfig)>,
        reload: bool,
    ) -> Applied {
        let mut out = Applied::default();
        let mut current = write(&self.current);
        let mut by_key: HashMap<String, Arc<dyn Engine>> = current
            .values()
            .filter_map(|e| Some((e.key.clone()?, e.engine.clone())))
            .collect();
        let mut next: HashMap<String, Entry> = HashMap::new();
        for (name, config) in envs {
            let key = cluster_key(config);
            if reload
                && let Some(old) = current.get(name)
                && old.key != key
                && (old.engine.kind() != config.kind() || config.kind() == EngineKind::Spark)
            {
                out.needs_restart.push(name.clone());
                next.insert(
                    name.clone(),
                    Entry {
                        key: old.key.clone(),
                        engine: old.engine.clone(),
                    },
                );
                continue;
            }
            let engine = match &key {
                None => self.local.clone() as Arc<dyn Engine>,
                Some(k) => match by_key.get(k) {
                    Some(e) => e.clone(),
                    None => match make(config, &self.salt, self.jars.as_ref()) {
                        Ok(e) => {
                            by_key.insert(k.clone(), e.clone());
                            e
                        }
                        Err(err) => {
                            tracing::error!(env = %name, "engine unavailable: {err}");
                            continue;
                        }
                    },
                },
            };
            next.insert(name.clone(), Entry { key, engine });
        }
        out.changed = next
            .iter()
            .filter(|(name, e)| {
                current
                    .get(*name)
                    .is_some_and(|old| !Arc::ptr_eq(&old.engine, &e.engine))
            })
            .map(|(name, _)| name.clone())
            .collect();
        out.changed.sort();
        out.needs_restart.sort();
        let mut former = crate::engine::cluster::lock(&self.former);
        for old in current.values() {
            let kept = next.values().any(|e| Arc::ptr_eq(&e.engine, &old.engine))
                || former.iter().any(|e| Arc::ptr_eq(e, &old.engine));
            if !kept && old.key.is_some() {
                former.push(old.engine.clone());
            }
        }
        *current = next;
        out
    }

    /// The engine of env `env` now.
    pub fn get(&self, env: &str) -> Option<Arc<dyn Engine>> {
        read(&self.current).get(env).map(|e| e.engine.clone())
    }

    /// Every env and its engine, sorted by env.
    pub fn all(&self) -> Vec<(String, Arc<dyn Engine>)> {
        let mut all: Vec<_> = read(&self.current)
            .iter()
            .map(|(k, v)| (k.clone(), v.engine.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every engine once (envs sharing a cluster share it), current ones first.
    pub fn distinct(&self) -> Vec<Arc<dyn Engine>> {
        let mut out: Vec<Arc<dyn Engine>> = Vec::new();
        for (_, e) in self.all() {
            if !out.iter().any(|o| Arc::ptr_eq(o, &e)) {
                out.push(e);
            }
        }
        out
    }

    /// The engine a recorded run lives on: its env's engine when the run was recorded on that
    /// engine's cluster (or recorded no cluster), else the former engine of the cluster it was
    /// recorded on. `kind` is the run's engine kind; an env that now uses another kind has
    /// none. Runs recorded without an env get the first engine of their kind.
    pub fn of_run(
        &self,
        env: Option<&str>,
        kind: EngineKind,
        handle: Option<&RunHandle>,
    ) -> Option<Arc<dyn Engine>> {
        let Some(env) = env else {
            return self.distinct().into_iter().find(|e| e.kind() == kind);
        };
        let engine = self.get(env).filter(|e| e.kind() == kind)?;
        let recorded = handle.and_then(|h| h.cluster.as_deref());
        match recorded {
            Some(c) if engine.cluster().as_deref() != Some(c) => self.former_at(&engine, c),
            _ => Some(engine),
        }
    }

    /// The engine of `kind` driving `cluster` (a cluster an env names, or one a former env
    /// named, made like the first engine of that kind); `None` when no engine can.
    pub fn at_cluster(&self, kind: EngineKind, cluster: &str) -> Option<Arc<dyn Engine>> {
        let engines = self.distinct();
        if let Some(e) = engines
            .iter()
            .find(|e| e.kind() == kind && e.cluster().as_deref() == Some(cluster))
        {
            return Some(e.clone());
        }
        let like = engines.into_iter().find(|e| e.kind() == kind)?;
        self.former_at(&like, cluster)
    }

    /// The former engine for cluster `cluster`, made from `like` (the env's engine now) when
    /// none exists yet; `None` when that engine cannot drive another cluster.
    fn former_at(&self, like: &Arc<dyn Engine>, cluster: &str) -> Option<Arc<dyn Engine>> {
        let mut former = crate::engine::cluster::lock(&self.former);
        if let Some(e) = former
            .iter()
            .find(|e| e.kind() == like.kind() && e.cluster().as_deref() == Some(cluster))
        {
            return Some(e.clone());
        }
        let made = like.elsewhere(cluster)?;
        tracing::info!(
            "{} still runs jobs recorded there: they are moved to {}",
            made.location(),
            like.location()
        );
        former.push(made.clone());
        Some(made)
    }
}

/// The engines of a daemon whose state folder is `state_dir`, whose installation id is
/// `installation` (the salt of engine ids and run tokens, [`crate::store::Blocking::installation_id`])
/// and whose base URL is `daemon_url`, for its envs `envs` (see [`Engines::build`]), and the files those engines
/// serve over the daemon's HTTP listener (spark workers fetch jars from
/// `state_dir/served`, their tokens made with `artifact_key`, see [`crate::served_key`]).
pub fn for_daemon<'a>(
    state_dir: &Path,
    installation: &str,
    artifact_key: [u8; 32],
    daemon_url: String,
    envs: impl IntoIterator<Item = (&'a String, &'a EngineConfig)>,
) -> (Engines, Shelf) {
    let shelf = Shelf::new(state_dir, artifact_key);
    let jars = JarShelf {
        shelf: shelf.clone(),
        daemon_url,
    };
    let local = match crate::cgroup::RunCgroups::open(state_dir) {
        Ok(cgroups) => {
            tracing::info!(
                "local runs: each in a cgroup of its own below {}; ending a run ends every \
                 process it started",
                cgroups.root().display()
            );
            LocalEngine::with_cgroups(cgroups)
        }
        Err(e) => {
            tracing::warn!(
                "local runs: no cgroup of their own ({e}); a run is stopped through its \
                 process group, and a process it moves out of it (setsid) outlives the run"
            );
            LocalEngine::new()
        }
    };
    let engines = Engines::build_with(local, installation, envs, Some(jars));
    (engines, shelf)
}

/// An engine of `config` that only reads its cluster (`jobkeeper import`): it never serves a
/// jar. `None` for an engine with no cluster to read.
pub fn for_reading(
    state_dir: &Path,
    config: &EngineConfig,
) -> Result<Option<Arc<dyn Engine>>, EngineError> {
    if !config.kind().runs_on_cluster() {
        return Ok(None);
    }
    let jars = JarShelf {
        shelf: Shelf::read_only(state_dir),
        daemon_url: String::new(),
    };
    make(config, &state_dir.display().to_string(), Some(&jars)).map(Some)
}

/// The version of the cluster of `config` (flink: `GET /config`), waiting at most `wait` for
/// its answer; `None` when the engine names no version or the cluster does not answer.
pub async fn cluster_version(config: &EngineConfig, wait: std::time::Duration) -> Option<String> {
    let engine = make(config, "plan", None).ok()?;
    if tokio::time::timeout(wait, engine.probe()).await.is_err() {
        return None;
    }
    engine.version()
}

/// A cluster jobkeeper cannot drive (a Flink older than 1.19), found by [`probe`].
#[derive(Debug, thiserror::Error)]
#[error("env {env}: {message}")]
pub struct Refused {
    /// The env (the first naming the cluster).
    pub env: String,
    /// What the engine said.
    pub message: String,
}

/// Asks each cluster of `engines` what it is (flink: its version), once per cluster: one that
/// jobkeeper cannot drive is refused with the env naming it; one that does not answer is asked
/// again when it does.
pub async fn probe(engines: &[(String, Arc<dyn Engine>)]) -> Result<(), Refused> {
    let mut asked = std::collections::HashSet::new();
    for (env, engine) in engines {
        if !asked.insert(engine.location()) {
            continue;
        }
        match engine.probe().await {
            Ok(()) => {}
            Err(EngineError::Refused(message)) => {
                return Err(Refused {
                    env: env.clone(),
                    message,
                });
            }
            Err(e) => tracing::warn!(env = %env, "{}: {e}", engine.location()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::flink::FlinkSettings;
    use crate::engine::spark::SparkSettings;

    /// Envs as a daemon config has them.
    fn settings(envs: &[(&str, EngineConfig)]) -> BTreeMap<String, EngineConfig> {
        envs.iter()
            .map(|(n, e)| (n.to_string(), e.clone()))
            .collect()
    }

    fn flink(url: &str) -> EngineConfig {
        EngineConfig::Flink(FlinkSettings {
            url: url.into(),
            savepoint_dir: None,
            sql_runner: None,
        })
    }

    fn spark(url: &str, master: &str) -> EngineConfig {
        EngineConfig::Spark(SparkSettings {
            url: url.into(),
            master: master.into(),
            ui: None,
            artifact_url: None,
            artifact_dir: None,
        })
    }

    fn handle(cluster: Option<&str>) -> RunHandle {
        RunHandle {
            run_id: 1,
            engine_id: "j".into(),
            start_ticks: None,
            cluster: cluster.map(String::from),
        }
    }

    #[test]
    fn envs_naming_one_cluster_share_its_engine() {
        let s = settings(&[
            ("a", flink("http://127.0.0.1:1")),
            ("b", flink("http://127.0.0.1:1/")),
            ("c", EngineConfig::Local),
        ]);
        let engines = Engines::build("/tmp/s", &s, None);
        let (a, b) = (engines.get("a").unwrap(), engines.get("b").unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one engine per cluster");
        assert_eq!(a.cluster().as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(engines.get("c").unwrap().cluster(), None);
        assert_eq!(engines.distinct().len(), 2);
    }

    #[test]
    fn a_changed_url_swaps_the_env_engine_and_keeps_the_old_one_for_its_runs() {
        let before = settings(&[
            ("a", flink("http://127.0.0.1:1")),
            ("l", EngineConfig::Local),
        ]);
        let engines = Engines::build("/tmp/s", &before, None);
        let old = engines.get("a").unwrap();
        assert_eq!(
            engines.apply(&before, true),
            Applied::default(),
            "nothing changed"
        );
        let after = settings(&[
            ("a", flink("http://127.0.0.1:2")),
            ("l", EngineConfig::Local),
        ]);
        let applied = engines.apply(&after, true);
        assert_eq!(applied.changed, vec!["a".to_string()]);
        assert!(applied.needs_restart.is_empty());
        let new = engines.get("a").unwrap();
        assert_eq!(new.cluster().as_deref(), Some("http://127.0.0.1:2"));
        // A run recorded on the old cluster is found on the old engine, a new one on the new.
        let on_old = engines
            .of_run(
                Some("a"),
                EngineKind::Flink,
                Some(&handle(Some("http://127.0.0.1:1"))),
            )
            .unwrap();
        assert!(Arc::ptr_eq(&on_old, &old));
        let on_new = engines
            .of_run(
                Some("a"),
                EngineKind::Flink,
                Some(&handle(Some("http://127.0.0.1:2"))),
            )
            .unwrap();
        assert!(Arc::ptr_eq(&on_new, &new));
        // A run recorded before clusters were recorded is taken to be on the env's cluster.
        let unrecorded = engines
            .of_run(Some("a"), EngineKind::Flink, Some(&handle(None)))
            .unwrap();
        assert!(Arc::ptr_eq(&unrecorded, &new));
        assert!(
            engines.of_run(Some("a"), EngineKind::Local, None).is_none(),
            "kind changed"
        );
    }

    #[test]
    fn a_run_recorded_on_a_cluster_no_env_names_gets_an_engine_there() {
        let s = settings(&[("a", flink("http://127.0.0.1:2"))]);
        let engines = Engines::build("/tmp/s", &s, None);
        let h = handle(Some("http://127.0.0.1:9"));
        let e = engines
            .of_run(Some("a"), EngineKind::Flink, Some(&h))
            .unwrap();
        assert_eq!(e.cluster().as_deref(), Some("http://127.0.0.1:9"));
        let again = engines
            .of_run(Some("a"), EngineKind::Flink, Some(&h))
            .unwrap();
        assert!(Arc::ptr_eq(&e, &again), "made once");
    }

    #[test]
    fn a_reload_keeps_an_env_that_changes_kind_or_spark_master_until_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let jars = Some(JarShelf {
            shelf: crate::engine::spark::artifacts::Shelf::new(tmp.path(), [1; 32]),
            daemon_url: "http://127.0.0.1:7070".into(),
        });
        let before = settings(&[
            ("a", EngineConfig::Local),
            ("s", spark("http://127.0.0.1:1", "spark://127.0.0.1:2")),
        ]);
        let engines = Engines::build("/tmp/s", &before, jars.clone());
        let after = settings(&[
            ("a", flink("http://127.0.0.1:3")),
            ("s", spark("http://127.0.0.1:4", "spark://127.0.0.1:5")),
            ("n", flink("http://127.0.0.1:3")),
        ]);
        let applied = engines.apply(&after, true);
        assert_eq!(
            applied.needs_restart,
            vec!["a".to_string(), "s".to_string()]
        );
        assert!(applied.changed.is_empty(), "{applied:?}");
        assert_eq!(engines.get("a").unwrap().cluster(), None, "still local");
        assert_eq!(
            engines.get("n").unwrap().cluster().as_deref(),
            Some("http://127.0.0.1:3"),
            "a new cluster env gets its engine at once"
        );
        // At a start, every env gets the engine its config names.
        let restarted = Engines::build("/tmp/s", &after, jars);
        assert_eq!(restarted.get("a").unwrap().kind(), EngineKind::Flink);
    }
}
