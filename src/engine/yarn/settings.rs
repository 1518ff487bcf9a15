//! `yarn:` of an env: the ResourceManagers, the Flink distribution whose CLI submits, the
//! queue, where savepoints go, how jobkeeper authenticates to YARN, and the yarn-session a
//! session-mode env runs its jobs in.

use std::path::PathBuf;
use std::time::Duration;

use crate::yaml::{Checker, Node};

/// The key of an env holding its YARN cluster.
pub const SECTION: &str = "yarn";
/// What an env on this engine without [`SECTION`] needs, for messages.
pub const MISSING: &str =
    "uses engine yarn and needs `yarn: {rm: [http://rm1:8088], flink_home: /opt/flink}`";

/// How long an application may stay ACCEPTED (a full queue) before its submit is given up,
/// unless `accepted_timeout` says otherwise.
pub const ACCEPTED_TIMEOUT: Duration = Duration::from_secs(600);

/// How jobkeeper proves who it is to YARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YarnAuth {
    /// `hadoop.http.authentication.type: simple`: `user.name=USER` on every request.
    Simple {
        /// The user (`user`); `None`: no `user.name` is sent (an RM with no authentication).
        user: Option<String>,
    },
    /// SPNEGO with tickets from a keytab, kept in jobkeeper's own credential cache.
    Kerberos {
        /// The client principal, `jobkeeper/ops-1@EXAMPLE.COM`.
        principal: String,
        /// The keytab holding its keys.
        keytab: PathBuf,
        /// The krb5.conf to use instead of the host's (`KRB5_CONFIG`), when set.
        krb5_conf: Option<PathBuf>,
    },
}

/// `yarn:` of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YarnSettings {
    /// The ResourceManagers' web addresses (`http://rm1:8088`), without a trailing `/`; with
    /// HA the active one is found through `GET /ws/v1/cluster/info`.
    pub rm: Vec<String>,
    /// The Flink distribution whose `bin/flink` submits (its version is read from
    /// `lib/flink-dist-*.jar`).
    pub flink_home: PathBuf,
    /// `HADOOP_CONF_DIR` of the CLI.
    pub hadoop_conf_dir: Option<PathBuf>,
    /// `yarn.application.queue`.
    pub queue: Option<String>,
    /// Where savepoints go (`hdfs:///flink/savepoints`).
    pub savepoint_dir: Option<String>,
    /// How jobkeeper authenticates to the RM (and the CLI to YARN).
    pub auth: YarnAuth,
    /// Session mode: the name or id of the yarn-session application the env's jobs run in.
    pub session: Option<String>,
    /// How long an application may stay ACCEPTED while its CLI waits.
    pub accepted_timeout: Duration,
    /// The pre-built SQL runner jar SQL jobs run (as a flink env's `sql_runner`); `None`: built
    /// from its source.
    pub sql_runner: Option<PathBuf>,
}

/// Reads the `yarn:` block `n` of an env (`section` in messages); problems go to `c`.
pub fn read_settings(c: &mut Checker, n: &Node, section: &str) -> Option<YarnSettings> {
    let f = c.mapping(
        n,
        section,
        &[
            "rm",
            "flink_home",
            "hadoop_conf_dir",
            "queue",
            "savepoint_dir",
            "auth",
            "user",
            "kerberos",
            "session",
            "accepted_timeout",
            "sql_runner",
        ],
    )?;
    let rm = match f.get("rm") {
        Some(v) => c.string_list(v, &format!("{section}.rm")),
        None => {
            c.missing(
                &f,
                "rm",
                "the ResourceManagers' web addresses, e.g. `[http://rm1:8088]`",
            );
            None
        }
    };
    if let (Some(rm), Some(v)) = (&rm, f.get("rm")) {
        if rm.is_empty() {
            c.error(
                v,
                format!("`{section}.rm`: name at least one ResourceManager"),
            );
        }
        for u in rm {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                c.error(
                    v,
                    format!("`{section}.rm`: `{u}` must start with `http://` or `https://`"),
                );
            }
        }
    }
    let path = |c: &mut Checker, key: &str| {
        let v = f.get(key)?;
        let p = c.string(v, &format!("{section}.{key}"))?;
        if !p.starts_with('/') {
            c.error(
                v,
                format!("`{section}.{key}`: `{p}` must be an absolute path"),
            );
        }
        Some(PathBuf::from(p))
    };
    let flink_home = path(c, "flink_home");
    if f.get("flink_home").is_none() {
        c.missing(
            &f,
            "flink_home",
            "the Flink distribution whose CLI submits, e.g. `/opt/flink-1.20.3`",
        );
    }
    let hadoop_conf_dir = path(c, "hadoop_conf_dir");
    let sql_runner = path(c, "sql_runner");
    if let (Some(p), Some(v)) = (&sql_runner, f.get("sql_runner"))
        && p.extension().is_none_or(|e| e != "jar")
    {
        c.error(
            v,
            format!(
                "`{section}.sql_runner`: `{}` must be an absolute path to a jar",
                p.display()
            ),
        );
    }
    let text = |c: &mut Checker, key: &str| {
        f.get(key)
            .filter(|v| !v.is_null())
            .and_then(|v| c.string(v, &format!("{section}.{key}")))
    };
    let queue = text(c, "queue");
    let savepoint_dir = text(c, "savepoint_dir");
    let session = text(c, "session");
    let user = text(c, "user");
    let accepted_timeout = f
        .get("accepted_timeout")
        .and_then(|v| c.duration(v, &format!("{section}.accepted_timeout")))
        .unwrap_or(ACCEPTED_TIMEOUT);
    let auth_name = text(c, "auth").unwrap_or_else(|| "simple".into());
    let auth = match auth_name.as_str() {
        "simple" => {
            if let Some(k) = f.get("kerberos") {
                c.error(
                    k,
                    format!("`{section}.kerberos` is read only with `auth: kerberos`"),
                );
            }
            Some(YarnAuth::Simple { user })
        }
        "kerberos" => read_kerberos(c, &f, section, user.is_some()),
        other => {
            let at = f.get("auth").unwrap_or(n);
            c.error(
                at,
                format!("`{section}.auth`: unknown `{other}`; expected simple or kerberos"),
            );
            None
        }
    };
    Some(YarnSettings {
        rm: rm?
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect(),
        flink_home: flink_home?,
        hadoop_conf_dir,
        queue,
        savepoint_dir,
        auth: auth?,
        session,
        accepted_timeout,
        sql_runner,
    })
}

/// `kerberos: {principal, keytab}` of an env with `auth: kerberos`.
fn read_kerberos(
    c: &mut Checker,
    f: &crate::yaml::Fields<'_>,
    section: &str,
    has_user: bool,
) -> Option<YarnAuth> {
    if has_user && let Some(u) = f.get("user") {
        c.error(
            u,
            format!(
                "`{section}.user` is read only with `auth: simple`; kerberos uses the principal"
            ),
        );
    }
    let Some(k) = f.get("kerberos") else {
        c.missing(
            f,
            "kerberos",
            "`{principal: jobkeeper/host@REALM, keytab: /etc/jobkeeper/jobkeeper.keytab}` with `auth: kerberos`",
        );
        return None;
    };
    let name = format!("{section}.kerberos");
    let kf = c.mapping(k, &name, &["principal", "keytab", "krb5_conf"])?;
    let principal = c.required_string(
        &kf,
        "principal",
        &format!("{name}.principal"),
        "the client principal, e.g. `jobkeeper/ops-1@EXAMPLE.COM`",
    );
    let keytab = c.required_string(
        &kf,
        "keytab",
        &format!("{name}.keytab"),
        "the keytab's absolute path",
    );
    if let (Some(p), Some(v)) = (&principal, kf.get("principal"))
        && !p.contains('@')
    {
        c.error(
            v,
            format!("`{name}.principal`: `{p}` needs its realm, e.g. `{p}@EXAMPLE.COM`"),
        );
    }
    if let (Some(p), Some(v)) = (&keytab, kf.get("keytab"))
        && !p.starts_with('/')
    {
        c.error(
            v,
            format!("`{name}.keytab`: `{p}` must be an absolute path"),
        );
    }
    let krb5_conf = kf.get("krb5_conf").and_then(|v| {
        let p = c.string(v, &format!("{name}.krb5_conf"))?;
        if !p.starts_with('/') {
            c.error(
                v,
                format!("`{name}.krb5_conf`: `{p}` must be an absolute path"),
            );
        }
        Some(PathBuf::from(p))
    });
    Some(YarnAuth::Kerberos {
        principal: principal?,
        keytab: PathBuf::from(keytab?),
        krb5_conf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use std::path::Path;

    fn parse(envs: &str) -> Result<crate::settings::Settings, String> {
        let src =
            format!("repo: {{url: /srv/jobs.git}}\nstate_dir: /var/lib/jobkeeper\nenvs:\n{envs}");
        crate::settings::parse("config.yaml", src.as_bytes(), Path::new("/etc/jobkeeper"))
            .map_err(|d| crate::diag::render(&d))
    }

    #[test]
    fn the_issue_s_example_is_read() {
        let s = parse(
            "  prod-yarn:\n    engine: yarn\n    yarn:\n      rm: [http://rm1:8088, http://rm2:8088/]\n      \
             flink_home: /opt/flink-1.20.3\n      hadoop_conf_dir: /etc/hadoop/conf\n      queue: root.stream\n      \
             savepoint_dir: hdfs:///flink/savepoints\n      auth: kerberos\n      \
             kerberos: {principal: jobkeeper/ops-1@EXAMPLE.COM, keytab: /etc/jobkeeper/jobkeeper.keytab}\n      \
             session: null\n",
        )
        .unwrap();
        let EngineConfig::Yarn(y) = &s.envs["prod-yarn"].engine else {
            panic!("not yarn");
        };
        assert_eq!(y.rm, ["http://rm1:8088", "http://rm2:8088"]);
        assert_eq!(y.session, None);
        assert_eq!(y.accepted_timeout, ACCEPTED_TIMEOUT);
        assert_eq!(
            y.auth,
            YarnAuth::Kerberos {
                principal: "jobkeeper/ops-1@EXAMPLE.COM".into(),
                keytab: "/etc/jobkeeper/jobkeeper.keytab".into(),
                krb5_conf: None,
            }
        );
        let s = parse(
            "  y:\n    engine: yarn\n    yarn: {rm: [http://rm:8088], flink_home: /opt/flink, auth: simple, \
             user: flink, session: flink-session, accepted_timeout: 90s, \
             sql_runner: /opt/jobkeeper/sql-runner.jar}\n",
        )
        .unwrap();
        let EngineConfig::Yarn(y) = &s.envs["y"].engine else {
            panic!("not yarn");
        };
        assert_eq!(
            y.auth,
            YarnAuth::Simple {
                user: Some("flink".into())
            }
        );
        assert_eq!(y.session.as_deref(), Some("flink-session"));
        assert_eq!(y.accepted_timeout, Duration::from_secs(90));
        assert_eq!(
            y.sql_runner.as_deref(),
            Some(std::path::Path::new("/opt/jobkeeper/sql-runner.jar"))
        );
        let bad = parse(
            "  y:\n    engine: yarn\n    yarn: {rm: [http://rm:8088], flink_home: /opt/flink, \
             sql_runner: /opt/runner.zip}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("must be an absolute path to a jar"), "{bad}");
    }

    #[test]
    fn every_problem_of_a_yarn_block_is_named_at_its_place() {
        let e = parse(
            "  y:\n    engine: yarn\n    yarn: {rm: [rm1:8088], flink_home: opt/flink, auth: kerberos,\n      \
             kerberos: {principal: jobkeeper, keytab: jk.keytab}}\n  z:\n    engine: yarn\n    \
             yarn: {flink_home: /opt/flink, auth: ldap}\n  w:\n    engine: yarn\n",
        )
        .unwrap_err();
        for want in [
            "`envs.y.yarn.rm`: `rm1:8088` must start with `http://` or `https://`",
            "`envs.y.yarn.flink_home`: `opt/flink` must be an absolute path",
            "`envs.y.yarn.kerberos.principal`: `jobkeeper` needs its realm",
            "`envs.y.yarn.kerberos.keytab`: `jk.keytab` must be an absolute path",
            "`envs.z.yarn.auth`: unknown `ldap`; expected simple or kerberos",
            "rm",
            "env `w` uses engine yarn and needs `yarn:",
        ] {
            assert!(e.contains(want), "{want} in:\n{e}");
        }
        let e = parse(
            "  y:\n    engine: yarn\n    yarn: {rm: [http://rm:8088], flink_home: /opt/flink, auth: kerberos}\n",
        )
        .unwrap_err();
        assert!(e.contains("kerberos"), "{e}");
    }
}
