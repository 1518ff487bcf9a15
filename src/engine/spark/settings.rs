//! The `spark:` block of an env: the master's addresses and where its workers fetch a run's jar
//! from ([`ArtifactSource`]), with the start-up check that they can reach it.
//!
//! A worker runs the driver, so it must read the jar itself. By default the daemon serves the
//! jar over HTTP (see [`super::artifacts`]) at a base URL the workers reach: the env's
//! `artifact_url`, else the daemon's `external_url`, else its `listen` address. An env may name
//! a folder every host mounts (`artifact_dir`) instead. A base on a loopback address with a
//! master on another host is refused when the config is read: such workers could never fetch it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::yaml::{Checker, Node};

/// The key of an env holding its Spark cluster.
pub const SECTION: &str = "spark";
/// What an env on this engine without [`SECTION`] needs, for messages.
pub const MISSING: &str =
    "uses engine spark and needs `spark: {url: http://...:6066, master: spark://...:7077}`";

/// `spark:` of an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkSettings {
    /// REST submission server (port 6066).
    pub url: String,
    /// The `spark://` master URL.
    pub master: String,
    /// Master web UI, for batched status, drivers' stderr, and the workers' UIs.
    pub ui: Option<String>,
    /// The base URL the workers fetch jars from, when not the daemon's own.
    pub artifact_url: Option<String>,
    /// A folder every host of the cluster mounts at this path: jars are copied there.
    pub artifact_dir: Option<PathBuf>,
}

/// How the daemon itself is reached, from its config: the default base of artifact URLs.
#[derive(Debug, Clone, Copy)]
pub struct DaemonAddress<'a> {
    /// `external_url`, when set.
    pub external_url: Option<&'a str>,
    /// `listen`.
    pub listen: SocketAddr,
}

/// Where the workers of an env fetch a run's jar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Served by the daemon over HTTP, below this base URL (no trailing `/`).
    Http(String),
    /// Copied into this folder, which every host mounts.
    Dir(PathBuf),
}

impl SparkSettings {
    /// Where this env's workers fetch jars; `daemon_url` is the daemon's own base URL
    /// (`external_url`, else built from the address it listens on).
    pub fn artifact_source(&self, daemon_url: &str) -> ArtifactSource {
        match (&self.artifact_dir, &self.artifact_url) {
            (Some(dir), _) => ArtifactSource::Dir(dir.clone()),
            (None, Some(url)) => ArtifactSource::Http(url.trim_end_matches('/').to_string()),
            (None, None) => ArtifactSource::Http(daemon_url.trim_end_matches('/').to_string()),
        }
    }
}

/// Reads the `spark:` block `n` of an env (`section` in messages); problems go to `c`. `daemon`
/// is how the daemon is reached, for the check that the workers can fetch jars from it.
pub fn read_settings(
    c: &mut Checker,
    n: &Node,
    section: &str,
    daemon: DaemonAddress<'_>,
) -> Option<SparkSettings> {
    let f = c.mapping(
        n,
        section,
        &["url", "master", "ui", "artifact_url", "artifact_dir"],
    )?;
    let url = c.required_string(
        &f,
        "url",
        &format!("{section}.url"),
        "the REST submission server, e.g. `http://spark-master:6066`",
    );
    let master = c.required_string(
        &f,
        "master",
        &format!("{section}.master"),
        "the master URL, e.g. `spark://spark-master:7077`",
    );
    let ui = f
        .get("ui")
        .and_then(|s| c.string(s, &format!("{section}.ui")));
    let artifact_url = f.get("artifact_url").and_then(|s| {
        let name = format!("{section}.artifact_url");
        let v = c.string(s, &name)?;
        match reqwest::Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(v.trim_end_matches('/').to_string())
            }
            _ => {
                c.error(
                    s,
                    format!(
                        "`{name}`: `{v}` is not an http(s) URL; expected the base the Spark \
                         workers reach the daemon at, like `http://jobkeeper.internal:7070`"
                    ),
                );
                None
            }
        }
    });
    let artifact_dir = f.get("artifact_dir").and_then(|s| {
        let name = format!("{section}.artifact_dir");
        let v = c.string(s, &name)?;
        if v.starts_with('/') {
            Some(PathBuf::from(v))
        } else {
            c.error(
                s,
                format!(
                    "`{name}`: `{v}` is not an absolute path; expected the folder every Spark \
                     host mounts, like `/mnt/shared/jobkeeper-jars`"
                ),
            );
            None
        }
    });
    if let (Some(_), Some(_), Some(s)) = (&artifact_url, &artifact_dir, f.get("artifact_dir")) {
        c.error(
            s,
            format!(
                "`{section}`: set `artifact_url` or `artifact_dir`, not both (workers fetch a \
                 jar either over HTTP or from the shared folder)"
            ),
        );
        return None;
    }
    // A bad artifact field was reported already: the check would only repeat it.
    let bad = (f.get("artifact_url").is_some() && artifact_url.is_none())
        || (f.get("artifact_dir").is_some() && artifact_dir.is_none());
    let settings = SparkSettings {
        url: url?,
        master: master?,
        ui,
        artifact_url,
        artifact_dir,
    };
    if bad {
        return None;
    }
    if let Err(msg) = check_reachable(&settings, daemon, section) {
        c.error(n, msg);
        return None;
    }
    Some(settings)
}

/// Refuses an env whose workers could not fetch a jar: served on a loopback address while the
/// master runs on another host. A daemon listening on every address (`0.0.0.0`) without
/// `external_url` is reached by the host's name, as in alert links.
pub fn check_reachable(
    s: &SparkSettings,
    daemon: DaemonAddress<'_>,
    section: &str,
) -> Result<(), String> {
    if s.artifact_dir.is_some() || !remote_master(&s.master) {
        return Ok(());
    }
    let (base, from) = match (&s.artifact_url, daemon.external_url) {
        (Some(u), _) => (u.clone(), format!("`{section}.artifact_url`")),
        (None, Some(u)) => (u.to_string(), "`external_url`".to_string()),
        // An unspecified `listen` (0.0.0.0) is reached by the host's name.
        (None, None) if daemon.listen.ip().is_unspecified() => return Ok(()),
        (None, None) => (
            format!("http://{}", daemon.listen),
            "`listen` (no `external_url` is set)".to_string(),
        ),
    };
    let host = reqwest::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    if local_host(&host) {
        return Err(format!(
            "`{section}`: the Spark workers of {} run on other hosts and fetch each jar from \
             {base}, taken from {from}, which only this host reaches; set `external_url` (or \
             `{section}.artifact_url`) to an address the workers reach, or \
             `{section}.artifact_dir` to a folder every host mounts",
            s.master
        ));
    }
    Ok(())
}

/// Whether a `spark://` master URL (one or several `host:port`, comma separated) names a host
/// other than this one.
fn remote_master(master: &str) -> bool {
    let hosts = master.strip_prefix("spark://").unwrap_or(master);
    hosts.split(',').any(|hp| {
        let host = match hp.rsplit_once(':') {
            Some((h, _)) => h,
            None => hp,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !host.is_empty() && !local_host(host)
    })
}

/// Whether `host` (a name or an address) is this host only: loopback, unspecified or empty.
fn local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(master: &str) -> SparkSettings {
        SparkSettings {
            url: "http://m:6066".into(),
            master: master.into(),
            ui: None,
            artifact_url: None,
            artifact_dir: None,
        }
    }

    fn daemon(external_url: Option<&str>) -> DaemonAddress<'_> {
        DaemonAddress {
            external_url,
            listen: "127.0.0.1:7070".parse().unwrap(),
        }
    }

    #[test]
    fn masters_are_remote_unless_every_host_is_this_one() {
        assert!(!remote_master("spark://127.0.0.1:7077"));
        assert!(!remote_master("spark://localhost:7077"));
        assert!(!remote_master("spark://[::1]:7077"));
        assert!(remote_master("spark://10.0.0.5:7077"));
        assert!(remote_master("spark://spark-master:7077"));
        assert!(remote_master("spark://127.0.0.1:7077,spark-m2:7077"));
    }

    #[test]
    fn a_loopback_base_for_a_remote_master_is_refused() {
        let remote = settings("spark://spark-master:7077");
        let err = check_reachable(&remote, daemon(None), "envs.batch.spark").unwrap_err();
        assert_eq!(
            err,
            "`envs.batch.spark`: the Spark workers of spark://spark-master:7077 run on other \
             hosts and fetch each jar from http://127.0.0.1:7070, taken from `listen` (no \
             `external_url` is set), which only this host reaches; set `external_url` (or \
             `envs.batch.spark.artifact_url`) to an address the workers reach, or \
             `envs.batch.spark.artifact_dir` to a folder every host mounts"
        );
        let err = check_reachable(&remote, daemon(Some("http://localhost:7070")), "s").unwrap_err();
        assert!(err.contains("taken from `external_url`"), "{err}");
        // A reachable external_url, an env's own base or a shared folder is fine.
        assert!(check_reachable(&remote, daemon(Some("http://jk.internal:7070")), "s").is_ok());
        let own = SparkSettings {
            artifact_url: Some("http://10.0.0.2:7070".into()),
            ..remote.clone()
        };
        assert!(check_reachable(&own, daemon(None), "s").is_ok());
        let own_loopback = SparkSettings {
            artifact_url: Some("http://127.0.0.1:7070".into()),
            ..remote.clone()
        };
        let err = check_reachable(&own_loopback, daemon(Some("http://jk:1")), "s").unwrap_err();
        assert!(err.contains("taken from `s.artifact_url`"), "{err}");
        let shared = SparkSettings {
            artifact_dir: Some("/mnt/jars".into()),
            ..remote
        };
        assert!(check_reachable(&shared, daemon(None), "s").is_ok());
        // A master on this host reaches a loopback base.
        assert!(check_reachable(&settings("spark://127.0.0.1:7077"), daemon(None), "s").is_ok());
        let any = DaemonAddress {
            external_url: None,
            listen: "0.0.0.0:7070".parse().unwrap(),
        };
        assert!(check_reachable(&settings("spark://m:7077"), any, "s").is_ok());
    }

    #[test]
    fn the_source_is_the_shared_folder_then_the_envs_base_then_the_daemons() {
        let mut s = settings("spark://m:7077");
        assert_eq!(
            s.artifact_source("http://jk:7070/"),
            ArtifactSource::Http("http://jk:7070".into())
        );
        s.artifact_url = Some("http://10.0.0.2:8080".into());
        assert_eq!(
            s.artifact_source("http://jk:7070"),
            ArtifactSource::Http("http://10.0.0.2:8080".into())
        );
        s.artifact_url = None;
        s.artifact_dir = Some("/mnt/jars".into());
        assert_eq!(
            s.artifact_source("http://jk:7070"),
            ArtifactSource::Dir("/mnt/jars".into())
        );
    }
}
