//! Which engine an env uses ([`EngineKind`]) and that engine's own part of the env
//! ([`EngineConfig`]): reading the env's engine block and checking a job's params.
//!
//! Each engine reads its block and checks its params in its own file; this module only
//! dispatches, so a new engine is one file plus one arm in each enum here.

use crate::spec::{Params, ParamsError};
use crate::yaml::{Checker, Fields, Node};

use super::flink::{self, FlinkSettings};
use super::local;
use super::spark::{self, SparkSettings};
use super::yarn::{self, YarnSettings};

/// Which engine an env uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Supervised child processes.
    Local,
    /// An Apache Flink cluster.
    Flink,
    /// A Spark standalone cluster.
    Spark,
    /// Flink on YARN.
    Yarn,
}

impl EngineKind {
    /// Every engine, in the order they are listed in messages.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Local,
        EngineKind::Flink,
        EngineKind::Spark,
        EngineKind::Yarn,
    ];

    /// The name used in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Flink => "flink",
            EngineKind::Spark => "spark",
            EngineKind::Yarn => "yarn",
        }
    }

    /// The engine named `name` in a file.
    pub fn from_name(name: &str) -> Option<EngineKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Every engine's name, comma separated, for messages.
    pub fn names() -> String {
        Self::ALL.map(EngineKind::as_str).join(", ")
    }

    /// Whether the engine runs jobs on a cluster, where jobs started outside jobkeeper can be
    /// taken over (`adopt`).
    pub fn runs_on_cluster(self) -> bool {
        !matches!(self, EngineKind::Local)
    }

    /// Whether the engine runs SQL jobs (`sql`, `sql_file`).
    pub fn runs_sql(self) -> bool {
        matches!(self, EngineKind::Flink | EngineKind::Yarn)
    }

    /// Whether runs keep state a new run starts from (flink: checkpoints and savepoints).
    pub fn keeps_state(self) -> bool {
        matches!(self, EngineKind::Flink | EngineKind::Yarn)
    }

    /// Whether a run's log is a file the daemon writes (and rotates), not the cluster's.
    pub fn writes_run_logs(self) -> bool {
        matches!(self, EngineKind::Local)
    }

    /// What this engine finds wrong with the params of a job in env `env`.
    pub fn check_params(self, env: &str, params: &Params) -> Result<(), ParamsError> {
        match self {
            EngineKind::Local => local::check_params(env, params),
            // Cluster engines check their params when they submit.
            EngineKind::Flink | EngineKind::Spark | EngineKind::Yarn => Ok(()),
        }
    }
}

/// The engine of an env with the engine's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineConfig {
    /// Supervised child processes; nothing to configure.
    Local,
    /// An Apache Flink cluster (`flink:`).
    Flink(FlinkSettings),
    /// A Spark standalone cluster (`spark:`).
    Spark(SparkSettings),
    /// Flink on YARN (`yarn:`).
    Yarn(YarnSettings),
}

impl EngineConfig {
    /// The keys of an env that hold an engine's settings.
    pub const SECTIONS: [&str; 3] = [flink::SECTION, spark::SECTION, yarn::SECTION];

    /// The engine's name used in files and output.
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The pre-built runner jar SQL jobs run (flink: `sql_runner`), when one is configured;
    /// `None` builds it from its source.
    pub fn sql_runner(&self) -> Option<&std::path::Path> {
        match self {
            EngineConfig::Flink(f) => f.sql_runner.as_deref(),
            EngineConfig::Yarn(y) => y.sql_runner.as_deref(),
            EngineConfig::Local | EngineConfig::Spark(_) => None,
        }
    }

    /// The URL of the engine's cluster (`None` for local), as messages and plans show it.
    pub fn cluster_url(&self) -> Option<String> {
        match self {
            EngineConfig::Local => None,
            EngineConfig::Flink(f) => Some(f.url.trim_end_matches('/').to_string()),
            EngineConfig::Spark(s) => Some(s.url.clone()),
            EngineConfig::Yarn(y) => y.rm.first().cloned(),
        }
    }

    /// The page of run `id` in the engine's web UI, when the cluster has one. Flink: the
    /// job's page, under `running` while the run is live and `completed` once it ended (Flink
    /// answers a finished job only there). Spark (when `spark.ui` is set): the master's page,
    /// which lists its running and completed drivers with links to each driver's worker; Spark
    /// has no page of a driver by its id (`/app/?appId=driver-…` answers Not Found).
    pub fn run_page(&self, id: &str, live: bool) -> Option<String> {
        match self {
            EngineConfig::Local => None,
            EngineConfig::Flink(f) => Some(format!(
                "{}/#/job/{}/{id}/overview",
                f.url.trim_end_matches('/'),
                if live { "running" } else { "completed" }
            )),
            EngineConfig::Spark(s) => {
                s.ui.as_ref()
                    .map(|ui| format!("{}/", ui.trim_end_matches('/')))
            }
            // The application's page in the RM's UI (the engine id starts with it).
            EngineConfig::Yarn(y) => {
                y.rm.first()
                    .map(|rm| format!("{rm}/cluster/app/{}", yarn::apps::split_id(id).0))
            }
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            EngineConfig::Local => EngineKind::Local,
            EngineConfig::Flink(_) => EngineKind::Flink,
            EngineConfig::Spark(_) => EngineKind::Spark,
            EngineConfig::Yarn(_) => EngineKind::Yarn,
        }
    }

    /// Reads the engine blocks of env `env` (the mapping `f` at node `n`) for the engine
    /// `kind` the env names; `daemon` is how the daemon is reached (spark workers fetch jars
    /// from it). Every block present is checked, whichever engine the env uses;
    /// the env's engine must have its block. Problems go to `c`.
    pub fn read(
        c: &mut Checker,
        n: &Node,
        f: &Fields<'_>,
        env: &str,
        kind: Option<EngineKind>,
        daemon: spark::DaemonAddress<'_>,
    ) -> Option<EngineConfig> {
        let section = format!("envs.{env}");
        let flink = f
            .get(flink::SECTION)
            .and_then(|v| flink::read_settings(c, v, &format!("{section}.{}", flink::SECTION)));
        let spark = f.get(spark::SECTION).and_then(|v| {
            spark::read_settings(c, v, &format!("{section}.{}", spark::SECTION), daemon)
        });
        let yarn = f
            .get(yarn::SECTION)
            .and_then(|v| yarn::read_settings(c, v, &format!("{section}.{}", yarn::SECTION)));
        match kind? {
            EngineKind::Local => Some(EngineConfig::Local),
            EngineKind::Yarn => {
                require(c, n, f, env, yarn::SECTION, yarn::MISSING);
                yarn.map(EngineConfig::Yarn)
            }
            EngineKind::Flink => {
                require(c, n, f, env, flink::SECTION, flink::MISSING);
                flink.map(EngineConfig::Flink)
            }
            EngineKind::Spark => {
                require(c, n, f, env, spark::SECTION, spark::MISSING);
                spark.map(EngineConfig::Spark)
            }
        }
    }
}

/// Reports env `env` (at `n`) when it lacks the block `section` its engine needs; `missing`
/// says what the env needs.
fn require(c: &mut Checker, n: &Node, f: &Fields<'_>, env: &str, section: &str, missing: &str) {
    if f.get(section).is_none() {
        c.error(n, format!("env `{env}` {missing}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(EngineKind::names(), "local, flink, spark, yarn");
        for kind in EngineKind::ALL {
            assert_eq!(EngineKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(EngineKind::from_name("yarn"), Some(EngineKind::Yarn));
        assert_eq!(EngineKind::from_name("mesos"), None);
    }

    #[test]
    fn each_engine_checks_its_own_params() {
        let none = Params::default();
        let err = EngineKind::Local
            .check_params("dev", &none)
            .expect_err("local needs a command");
        assert!(
            err.to_string()
                .starts_with("env `dev` runs on the local engine"),
            "{err}"
        );
        let command = Params {
            command: vec!["true".into()],
            ..Params::default()
        };
        assert_eq!(EngineKind::Local.check_params("dev", &command), Ok(()));
        assert_eq!(EngineKind::Flink.check_params("prod", &none), Ok(()));
        assert_eq!(EngineKind::Spark.check_params("batch", &none), Ok(()));
    }

    #[test]
    fn capabilities_are_the_engine_s_own() {
        let of = |k: EngineKind| (k.runs_on_cluster(), k.runs_sql(), k.writes_run_logs());
        assert_eq!(of(EngineKind::Local), (false, false, true));
        assert_eq!(of(EngineKind::Flink), (true, true, false));
        assert_eq!(of(EngineKind::Spark), (true, false, false));
        assert_eq!(of(EngineKind::Yarn), (true, true, false));
        assert!(EngineKind::Flink.keeps_state());
        assert!(!EngineKind::Local.keeps_state() && !EngineKind::Spark.keeps_state());
        let runner = std::path::PathBuf::from("/opt/jobkeeper/sql-runner.jar");
        let flink = EngineConfig::Flink(FlinkSettings {
            url: "http://jm:8081/".into(),
            savepoint_dir: None,
            sql_runner: Some(runner.clone()),
        });
        assert_eq!(flink.sql_runner(), Some(runner.as_path()));
        assert_eq!(flink.cluster_url().as_deref(), Some("http://jm:8081"));
        assert_eq!(EngineConfig::Local.sql_runner(), None);
        assert_eq!(EngineConfig::Local.cluster_url(), None);
    }

    #[test]
    fn run_pages_are_pages_the_engine_answers() {
        let flink = EngineConfig::Flink(FlinkSettings {
            url: "http://jm:8081/".into(),
            savepoint_dir: None,
            sql_runner: None,
        });
        assert_eq!(
            flink.run_page("abc", true).as_deref(),
            Some("http://jm:8081/#/job/running/abc/overview")
        );
        assert_eq!(
            flink.run_page("abc", false).as_deref(),
            Some("http://jm:8081/#/job/completed/abc/overview")
        );
        let spark = |ui: Option<&str>| {
            EngineConfig::Spark(SparkSettings {
                url: "http://m:6066".into(),
                master: "spark://m:7077".into(),
                ui: ui.map(String::from),
                artifact_url: None,
                artifact_dir: None,
            })
        };
        // The master's page lists the drivers; `/app/?appId=driver-…` answers Not Found.
        let page = spark(Some("http://m:8080/")).run_page("driver-1", true);
        assert_eq!(page.as_deref(), Some("http://m:8080/"));
        assert_eq!(spark(None).run_page("driver-1", true), None);
        assert_eq!(EngineConfig::Local.run_page("42", true), None);
    }

    #[test]
    fn a_config_knows_its_kind() {
        let flink = EngineConfig::Flink(FlinkSettings {
            url: "http://jm:8081".into(),
            savepoint_dir: None,
            sql_runner: None,
        });
        assert_eq!(flink.kind(), EngineKind::Flink);
        assert_eq!(flink.as_str(), "flink");
        assert_eq!(EngineConfig::Local.kind(), EngineKind::Local);
    }
}
