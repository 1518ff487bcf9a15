//! What `plan` says when a change of `env` moves a job to another cluster: the job is stopped
//! with a savepoint on the old cluster and started on the new one from it. Offline the plan
//! knows the env names; with the daemon config it names the clusters, and with clusters that
//! answer their Flink versions ("moves from flink 1.20.3 to 2.3.0").

use std::collections::HashMap;

use crate::plan::Plan;
use crate::settings::Settings;

/// How long `plan` waits for a cluster to name its version.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the plan knows about an env's cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvCluster {
    /// Its engine (`flink`, `spark`, `local`).
    pub engine: String,
    /// Its cluster's URL (`None` for local).
    pub url: Option<String>,
    /// The version its cluster runs, when it answered.
    pub version: Option<String>,
}

/// The envs of an `env: \`a\` → \`b\`` reason.
pub fn env_change(reason: &str) -> Option<(&str, &str)> {
    let rest = reason.strip_prefix("env: `")?;
    let (old, rest) = rest.split_once("` → `")?;
    let new = rest.strip_suffix('`')?;
    Some((old, new))
}

/// The line saying how a job moves from env `old` to env `new`; `None` when both envs name the
/// same cluster (nothing moves) or neither is a cluster.
pub fn move_line(old: &str, new: &str, clusters: &HashMap<String, EnvCluster>) -> Option<String> {
    let (Some(a), Some(b)) = (clusters.get(old), clusters.get(new)) else {
        return Some(format!(
            "moves from env `{old}` to env `{new}`: stopped with a savepoint on the old \
             cluster, started on the new one from it (`--config` names the clusters)"
        ));
    };
    if a.url.is_none() && b.url.is_none() || a.url == b.url {
        return None;
    }
    let how = "through a savepoint; if the new cluster refuses it, it runs again on the old one from that savepoint";
    let url = |c: &EnvCluster| c.url.clone().unwrap_or_else(|| c.engine.clone());
    Some(match (&a.version, &b.version) {
        (Some(va), Some(vb)) if a.engine == b.engine => format!(
            "moves from {} {va} to {vb} ({} → {}), {how}",
            a.engine,
            url(a),
            url(b)
        ),
        _ => format!(
            "moves from {} cluster {} to {} cluster {}, {how}",
            a.engine,
            url(a),
            b.engine,
            url(b)
        ),
    })
}

/// The clusters of the envs of `settings`; the flink clusters of `asked` envs are asked their
/// version (a cluster that does not answer within a few seconds has none).
pub async fn env_clusters(settings: &Settings, asked: &[&str]) -> HashMap<String, EnvCluster> {
    let mut out = HashMap::new();
    for (name, env) in &settings.envs {
        let url = env.engine.cluster_url();
        let version = if asked.contains(&name.as_str()) {
            crate::engine::registry::cluster_version(&env.engine, PROBE_TIMEOUT).await
        } else {
            None
        };
        let engine = env.engine.as_str().to_string();
        out.insert(
            name.clone(),
            EnvCluster {
                engine,
                url,
                version,
            },
        );
    }
    out
}

/// The envs the env changes of `plan` name.
pub fn moved_envs(plan: &Plan) -> Vec<&str> {
    let mut envs: Vec<&str> = plan
        .items
        .iter()
        .flat_map(|i| i.reasons.iter().filter_map(|r| env_change(r)))
        .flat_map(|(a, b)| [a, b])
        .collect();
    envs.sort_unstable();
    envs.dedup();
    envs
}

/// Adds a move line after each env change of `plan` that moves a job across clusters.
pub fn describe_moves(plan: &mut Plan, clusters: &HashMap<String, EnvCluster>) {
    for item in &mut plan.items {
        let lines: Vec<String> = item
            .reasons
            .iter()
            .filter_map(|r| env_change(r))
            .filter_map(|(old, new)| move_line(old, new, clusters))
            .collect();
        item.reasons.extend(lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flink(url: &str, version: Option<&str>) -> EnvCluster {
        EnvCluster {
            engine: "flink".into(),
            url: Some(url.into()),
            version: version.map(str::to_string),
        }
    }

    #[test]
    fn env_changes_are_read_back_from_their_reason() {
        assert_eq!(env_change("env: `old` → `new`"), Some(("old", "new")));
        assert_eq!(env_change("params.args changed"), None);
    }

    #[test]
    fn a_move_names_envs_offline_clusters_with_a_config_and_versions_when_they_answer() {
        let none = HashMap::new();
        let offline = move_line("a", "b", &none).unwrap();
        assert!(
            offline.starts_with("moves from env `a` to env `b`"),
            "{offline}"
        );
        let mut c = HashMap::from([
            ("a".to_string(), flink("http://a:8081", Some("1.20.3"))),
            ("b".to_string(), flink("http://b:8081", Some("2.3.0"))),
            ("a2".to_string(), flink("http://a:8081", None)),
        ]);
        assert_eq!(
            move_line("a", "b", &c).unwrap(),
            "moves from flink 1.20.3 to 2.3.0 (http://a:8081 → http://b:8081), through a savepoint; \
             if the new cluster refuses it, it runs again on the old one from that savepoint"
        );
        assert_eq!(
            move_line("a", "a2", &c),
            None,
            "the same cluster: nothing moves"
        );
        c.get_mut("b").unwrap().version = None;
        assert_eq!(
            move_line("a", "b", &c).unwrap(),
            "moves from flink cluster http://a:8081 to flink cluster http://b:8081, through a savepoint; \
             if the new cluster refuses it, it runs again on the old one from that savepoint"
        );
    }
}
