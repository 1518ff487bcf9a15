//! How a run is handed to YARN in application mode: the env's Flink CLI
//! (`flink_home/bin/flink`) as a child process, with the argv and environment made here (pure,
//! tested per Flink version), its output appended to the run's log.
//!
//! - Flink 2.x: `flink run -t yarn-application`; 1.x: `flink run-application -t
//!   yarn-application` (2.0 removed `run-application`). The real 1.20.3 CLI runs `run -t
//!   yarn-application` as a client-side program, which fails with "No ExecutorFactory found to
//!   execute the application": it deploys an application only through `run-application`.
//! - `yarn.application.name` is the job, `yarn.tags` carries jobkeeper's tags (job and run,
//!   [`super::apps::tags`]), `$internal.pipeline.job-id` fixes the Flink job id to the run's
//!   token, so the run is found by its tag and its Flink job by that id.
//! - The savepoint to restore is `execution.state-recovery.path` (1.20+) or
//!   `execution.savepoint.path` (older); `params.conf` entries are `-D` options.
//! - With Kerberos the CLI logs in from the env's keytab by its own `security.kerberos.login.*`
//!   options, with jobkeeper's credential cache, never the host's.

use std::path::{Path, PathBuf};

use super::apps;
use super::kerberos::Kerberos;
use super::settings::{YarnAuth, YarnSettings};
use crate::engine::flink::{FlinkVersion, RETENTION_DEFAULT, RETENTION_KEY, identity};
use crate::spec::Params;

/// The Flink option fixing a job's id.
pub const JOB_ID_KEY: &str = "$internal.pipeline.job-id";

/// The version of the Flink distribution at `home`, from its `lib/flink-dist*-VERSION.jar`.
pub fn dist_version(home: &Path) -> Option<FlinkVersion> {
    let lib = std::fs::read_dir(home.join("lib")).ok()?;
    lib.filter_map(Result::ok).find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix("flink-dist")?.strip_suffix(".jar")?;
        // `flink-dist-1.20.3.jar`, `flink-dist_2.12-1.17.2.jar`.
        let v = rest.rsplit_once('-').map(|(_, v)| v)?;
        FlinkVersion::parse(v)
    })
}

/// One submission through the CLI.
#[derive(Debug, Clone)]
pub struct CliRun<'a> {
    /// The jobkeeper job.
    pub job: &'a str,
    /// The store's run id.
    pub run_id: i64,
    /// The run's token: its tag and Flink job id (32 hex digits).
    pub token: &'a str,
    /// The job's params (secrets already in).
    pub params: &'a Params,
    /// The jar.
    pub jar: &'a Path,
    /// The savepoint or checkpoint to start from.
    pub restore: Option<&'a str>,
}

/// The argv after `bin/flink` for `run` on the distribution at `version`.
pub fn argv(s: &YarnSettings, version: &FlinkVersion, run: &CliRun<'_>) -> Vec<String> {
    let mut out: Vec<String> = if version.major >= 2 {
        vec!["run".into(), "-t".into(), "yarn-application".into()]
    } else {
        vec![
            "run-application".into(),
            "-t".into(),
            "yarn-application".into(),
        ]
    };
    let mut conf: Vec<(String, String)> = Vec::new();
    conf.push(("yarn.application.name".into(), run.job.to_string()));
    conf.push(("yarn.tags".into(), apps::tags(run.job, run.token).join(",")));
    if let Some(q) = &s.queue {
        conf.push(("yarn.application.queue".into(), q.clone()));
    }
    conf.push((JOB_ID_KEY.into(), run.token.to_string()));
    if let Some(dir) = &s.savepoint_dir {
        let key = if version.major >= 2 || version.minor >= 20 {
            "execution.checkpointing.savepoint-dir"
        } else {
            "state.savepoints.dir"
        };
        conf.push((key.into(), dir.clone()));
    }
    if let Some(sp) = run.restore {
        let key = if version.major >= 2 || version.minor >= 20 {
            "execution.state-recovery.path"
        } else {
            "execution.savepoint.path"
        };
        conf.push((key.into(), sp.to_string()));
    }
    if let YarnAuth::Kerberos {
        principal,
        keytab,
        krb5_conf,
    } = &s.auth
    {
        if let Some(path) = krb5_conf {
            conf.push((
                "security.kerberos.krb5-conf.path".into(),
                path.display().to_string(),
            ));
        }
        conf.push((
            "security.kerberos.login.keytab".into(),
            keytab.display().to_string(),
        ));
        conf.push((
            "security.kerberos.login.principal".into(),
            principal.clone(),
        ));
        conf.push((
            "security.kerberos.login.use-ticket-cache".into(),
            "false".into(),
        ));
    }
    let mut stamped = serde_json::Map::new();
    for (k, v) in &run.params.conf {
        stamped.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    stamped
        .entry(RETENTION_KEY)
        .or_insert_with(|| serde_json::Value::String(RETENTION_DEFAULT.into()));
    identity::stamp(&mut stamped, run.job, run.run_id);
    for (k, v) in stamped {
        if !conf.iter().any(|(c, _)| *c == k) {
            conf.push((k, v.as_str().unwrap_or_default().to_string()));
        }
    }
    for (k, v) in conf {
        out.push(format!("-D{k}={v}"));
    }
    if let Some(p) = run.params.parallelism {
        out.push("-p".into());
        out.push(p.to_string());
    }
    if let Some(c) = &run.params.main_class {
        out.push("-c".into());
        out.push(c.clone());
    }
    out.push(run.jar.display().to_string());
    out.extend(run.params.args.iter().cloned());
    out
}

/// The CLI's environment: nothing of the daemon's but `PATH`, `HOME`, `JAVA_HOME` and
/// `HADOOP_CLASSPATH`; `HADOOP_CONF_DIR` from the env, `HADOOP_USER_NAME` with `auth: simple`
/// and a user, jobkeeper's credential cache with Kerberos.
pub fn env(s: &YarnSettings, kerberos: Option<&Kerberos>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for k in ["PATH", "HOME", "JAVA_HOME", "HADOOP_CLASSPATH", "LANG"] {
        if let Ok(v) = std::env::var(k) {
            out.push((k.to_string(), v));
        }
    }
    if let Some(d) = &s.hadoop_conf_dir {
        out.push(("HADOOP_CONF_DIR".into(), d.display().to_string()));
    }
    if let YarnAuth::Simple { user: Some(u) } = &s.auth {
        out.push(("HADOOP_USER_NAME".into(), u.clone()));
    }
    if let Some(k) = kerberos {
        out.extend(k.env());
    }
    out
}

/// The CLI of the distribution at `home`.
pub fn cli(home: &Path) -> PathBuf {
    home.join("bin/flink")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(auth: YarnAuth) -> YarnSettings {
        YarnSettings {
            rm: vec!["http://rm1:8088".into()],
            flink_home: "/opt/flink".into(),
            hadoop_conf_dir: Some("/etc/hadoop/conf".into()),
            queue: Some("root.stream".into()),
            savepoint_dir: Some("hdfs:///flink/savepoints".into()),
            auth,
            session: None,
            accepted_timeout: Duration::from_secs(60),
            sql_runner: None,
        }
    }

    fn run<'a>(params: &'a Params, restore: Option<&'a str>) -> CliRun<'a> {
        CliRun {
            job: "team-a/clicks",
            run_id: 7,
            token: "0123456789abcdef0123456789abcdef",
            params,
            jar: Path::new("/var/lib/jobkeeper/artifacts/clicks.jar"),
            restore,
        }
    }

    #[test]
    fn flink_2_runs_a_yarn_application_and_1_x_runs_run_application() {
        let params = Params {
            main_class: Some("example.Counter".into()),
            args: vec!["--tag".into(), "v1".into()],
            parallelism: Some(2),
            conf: [("taskmanager.numberOfTaskSlots".to_string(), "2".to_string())].into(),
            ..Params::default()
        };
        let s = settings(YarnAuth::Simple {
            user: Some("flink".into()),
        });
        let v120 = FlinkVersion::parse("1.20.3").unwrap();
        let a = argv(&s, &v120, &run(&params, Some("hdfs:///sp/savepoint-1")));
        assert_eq!(&a[..3], ["run-application", "-t", "yarn-application"]);
        for want in [
            "-Dyarn.application.name=team-a/clicks",
            "-Dyarn.application.queue=root.stream",
            "-D$internal.pipeline.job-id=0123456789abcdef0123456789abcdef",
            "-Dexecution.state-recovery.path=hdfs:///sp/savepoint-1",
            "-Dexecution.checkpointing.savepoint-dir=hdfs:///flink/savepoints",
            "-Dtaskmanager.numberOfTaskSlots=2",
            "-Dexecution.checkpointing.externalized-checkpoint-retention=RETAIN_ON_CANCELLATION",
        ] {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }
        let tags = a.iter().find(|x| x.starts_with("-Dyarn.tags=")).unwrap();
        assert!(
            tags.contains("jobkeeper,jk-job-")
                && tags.ends_with(",jk-run-0123456789abcdef0123456789abcdef"),
            "{tags}"
        );
        assert_eq!(
            &a[a.len() - 7..],
            [
                "-p",
                "2",
                "-c",
                "example.Counter",
                "/var/lib/jobkeeper/artifacts/clicks.jar",
                "--tag",
                "v1"
            ]
        );
        let v2 = FlinkVersion::parse("2.3.0").unwrap();
        assert_eq!(&argv(&s, &v2, &run(&params, None))[..1], ["run"]);
        let v119 = FlinkVersion::parse("1.19.1").unwrap();
        let old = argv(&s, &v119, &run(&params, Some("hdfs:///sp/1")));
        assert_eq!(&old[..3], ["run-application", "-t", "yarn-application"]);
        assert!(old.contains(&"-Dexecution.savepoint.path=hdfs:///sp/1".to_string()));
        assert!(old.contains(&"-Dstate.savepoints.dir=hdfs:///flink/savepoints".to_string()));
    }

    #[test]
    fn kerberos_gives_the_cli_the_keytab_and_jobkeeper_s_own_cache() {
        let s = settings(YarnAuth::Kerberos {
            principal: "jk/ops-1@EXAMPLE.COM".into(),
            keytab: "/etc/jobkeeper/jk.keytab".into(),
            krb5_conf: None,
        });
        let params = Params::default();
        let a = argv(
            &s,
            &FlinkVersion::parse("2.3.0").unwrap(),
            &run(&params, None),
        );
        assert!(
            a.contains(&"-Dsecurity.kerberos.login.keytab=/etc/jobkeeper/jk.keytab".to_string())
        );
        assert!(
            a.contains(&"-Dsecurity.kerberos.login.principal=jk/ops-1@EXAMPLE.COM".to_string())
        );
        let k = Kerberos::new(
            "jk/ops-1@EXAMPLE.COM",
            Path::new("/etc/jobkeeper/jk.keytab"),
            None,
            Path::new("/var/lib/jk"),
        );
        let e = env(&s, Some(&k));
        assert!(
            e.iter()
                .any(|(k, v)| k == "KRB5CCNAME" && v.starts_with("FILE:/var/lib/jk/krb5/"))
        );
        assert!(
            e.iter()
                .any(|(k, v)| k == "HADOOP_CONF_DIR" && v == "/etc/hadoop/conf")
        );
        assert!(!e.iter().any(|(k, _)| k == "HADOOP_USER_NAME"));
    }

    #[test]
    fn the_version_is_read_from_the_dist_jar() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("lib")).unwrap();
        assert_eq!(dist_version(tmp.path()), None);
        std::fs::write(tmp.path().join("lib/flink-dist_2.12-1.17.2.jar"), b"").unwrap();
        assert_eq!(dist_version(tmp.path()).unwrap().text, "1.17.2");
        std::fs::remove_file(tmp.path().join("lib/flink-dist_2.12-1.17.2.jar")).unwrap();
        std::fs::write(tmp.path().join("lib/flink-dist-2.3.0.jar"), b"").unwrap();
        assert_eq!(dist_version(tmp.path()).unwrap().text, "2.3.0");
    }
}
