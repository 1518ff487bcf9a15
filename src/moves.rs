//! What `plan` says when a change of `env` moves a job to another cluster: the job is stopped
//! with a savepoint on the old cluster and started on the new one from it. Offline the plan
//! knows the env names; with the daemon config it names the clusters, and with clusters that
//! answer their Flink versions ("moves from flink 1.20.3 to 2.3.0"). A stateful move to a
//! cluster whose Flink cannot read the old cluster's savepoints (an older version) is refused
//! ([`state_check`]); without the versions the plan says it could not check.

use std::collections::HashMap;

use crate::client::AskError;
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
        .flat_map(|i| i.reasons.iter().filter_map(crate::plan::Reason::env_change))
        .flat_map(|(a, b)| [a, b])
        .collect();
    envs.sort_unstable();
    envs.dedup();
    envs
}

/// Whether a stateful job can move from env `old` to env `new` with its savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateCheck {
    /// It can, or no savepoint moves (the same cluster, not flink).
    Fine,
    /// It cannot: why, and what to do instead.
    Refused(String),
    /// Not known: why.
    Unchecked(String),
}

/// Whether the cluster of env `new` can read a savepoint taken on the cluster of env `old`
/// (flink reads its own and older versions' savepoints only).
pub fn state_check(old: &str, new: &str, clusters: &HashMap<String, EnvCluster>) -> StateCheck {
    let (Some(a), Some(b)) = (clusters.get(old), clusters.get(new)) else {
        return StateCheck::Unchecked(
            "could not check that the new cluster can read the savepoint: `--config` names \
             the clusters and asks their versions"
                .into(),
        );
    };
    if a.engine != "flink" || b.engine != "flink" || a.url == b.url {
        return StateCheck::Fine;
    }
    let parse = |c: &EnvCluster| {
        c.version
            .as_deref()
            .and_then(crate::engine::flink::FlinkVersion::parse)
    };
    match (parse(a), parse(b)) {
        (Some(va), Some(vb)) => vb
            .cannot_read(&va)
            .map_or(StateCheck::Fine, StateCheck::Refused),
        (va, _) => {
            let silent = if va.is_none() { a } else { b };
            StateCheck::Unchecked(format!(
                "could not check that the new cluster can read the savepoint: flink cluster {} \
                 did not name its version",
                silent.url.as_deref().unwrap_or("?")
            ))
        }
    }
}

/// Adds a move line after each env change of `plan` that moves a job across clusters; a
/// stateful move the new cluster cannot read the savepoint of is refused, and one whose
/// versions are unknown is said to be unchecked.
pub fn describe_moves(plan: &mut Plan, clusters: &HashMap<String, EnvCluster>) {
    for item in &mut plan.items {
        let moves: Vec<(String, String)> = item
            .reasons
            .iter()
            .filter_map(crate::plan::Reason::env_change)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        for (old, new) in moves {
            let Some(line) = move_line(&old, &new, clusters) else {
                continue;
            };
            item.reasons.push(line.into());
            if !item.keeps_state {
                continue;
            }
            match state_check(&old, &new, clusters) {
                StateCheck::Fine => {}
                StateCheck::Refused(why) => {
                    item.refused = true;
                    item.reasons.push(
                        format!("refused: {why}; the daemon keeps the job running where it is")
                            .into(),
                    );
                }
                StateCheck::Unchecked(why) => item.reasons.push(format!("warning: {why}").into()),
            }
        }
    }
}

/// The env each of `jobs` is applied in by the daemon of `settings` (asked over its API;
/// a job it does not know is left out), or why the daemon could not be asked.
pub async fn applied_envs(
    settings: &Settings,
    jobs: &[String],
) -> Result<HashMap<String, String>, AskError> {
    let base = crate::client::daemon_base(settings);
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .build()
        .map_err(AskError::Client)?;
    let mut out = HashMap::new();
    for (job, detail) in crate::client::job_details(&client, &base, jobs).await? {
        if let Some(env) = detail["env"].as_str() {
            out.insert(job, env.to_string());
        }
    }
    Ok(out)
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
    fn a_stateful_move_to_an_older_flink_is_refused_and_an_unknown_version_is_unchecked() {
        let mut c = HashMap::from([
            ("new".to_string(), flink("http://a:8081", Some("2.3.0"))),
            ("old".to_string(), flink("http://b:8081", Some("1.20.3"))),
        ]);
        let refused = state_check("new", "old", &c);
        assert_eq!(
            refused,
            StateCheck::Refused(
                "Flink 1.20.3 cannot read a savepoint taken on 2.3.0; move with `upgrade: \
                 stateless` or to a cluster at 2.3.0 or newer"
                    .into()
            )
        );
        assert_eq!(state_check("old", "new", &c), StateCheck::Fine);
        c.get_mut("old").unwrap().version = None;
        let unchecked = state_check("new", "old", &c);
        assert!(
            matches!(&unchecked, StateCheck::Unchecked(w) if w.contains("http://b:8081 did not name its version")),
            "{unchecked:?}"
        );
        assert!(matches!(
            state_check("new", "old", &HashMap::new()),
            StateCheck::Unchecked(_)
        ));
        // In a plan: the item is refused, with the reason; a stateless job is not.
        let c = HashMap::from([
            ("new".to_string(), flink("http://a:8081", Some("2.3.0"))),
            ("old".to_string(), flink("http://b:8081", Some("1.20.3"))),
        ]);
        let item = |keeps_state| crate::plan::Item {
            job: "counter".into(),
            path: "jobs/counter.yaml".into(),
            action: crate::plan::Action::Redeploy,
            reasons: vec![crate::plan::Reason::EnvChanged {
                old: "new".into(),
                new: "old".into(),
            }],
            errors: Vec::new(),
            hash: None,
            keeps_state,
            refused: false,
        };
        let mut plan = Plan {
            items: vec![item(true), item(false)],
            removals: None,
        };
        describe_moves(&mut plan, &c);
        assert!(plan.items[0].refused && !plan.items[1].refused);
        assert!(plan.has_refused());
        assert!(
            plan.items[0].reasons[2]
                .to_string()
                .starts_with("refused: Flink 1.20.3 cannot read"),
            "{:?}",
            plan.items[0].reasons
        );
        assert_eq!(
            plan.items[1].reasons.len(),
            2,
            "{:?}",
            plan.items[1].reasons
        );
    }

    #[test]
    fn env_changes_are_read_from_their_typed_reason() {
        let changed = crate::plan::Reason::EnvChanged {
            old: "old".into(),
            new: "new".into(),
        };
        assert_eq!(changed.env_change(), Some(("old", "new")));
        assert_eq!(changed.to_string(), "env: `old` → `new`");
        let line = crate::plan::Reason::from("params.args changed");
        assert_eq!(line.env_change(), None);
        // A line that reads like an env change is not one: nothing is parsed back.
        assert_eq!(
            crate::plan::Reason::from("env: `a` → `b`").env_change(),
            None
        );
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
