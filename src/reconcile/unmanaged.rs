//! Unmanaged jobs: jobs live on a managed cluster that no job file owns, as the health sweep
//! last saw them. The sweep's one batched status request per cluster also lists every live job
//! of that cluster ([`crate::engine::Engine::survey`]); [`classify`] (pure) sorts that list into
//! the runs jobkeeper records and the rest. A job among the rest that bears the name of a
//! managed job is a second copy of it: it is kept in the list with `duplicate_of` set, and
//! raises `drift` on the managed job once per engine id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::engine::ClusterJob;

/// One job live on a managed cluster that no job file owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedJob {
    /// The cluster's URL.
    pub cluster: String,
    /// Its engine (`flink`, `spark`).
    pub engine: String,
    /// The engine's id (flink: job id; spark: driver id).
    pub engine_id: String,
    /// Its name (flink: job name; spark: main class).
    pub name: String,
    /// Its state on the cluster.
    pub state: String,
    /// When it started (RFC 3339), when the cluster says.
    pub since: Option<String>,
    /// The managed job whose name it bears: a second live copy of that job (`drift`).
    pub duplicate_of: Option<String>,
}

/// The unmanaged jobs of every cluster, as last seen. Cheap to share.
#[derive(Debug, Default)]
pub struct Unmanaged {
    /// Cluster URL → its unmanaged jobs; a cluster not answering keeps its last list.
    by_cluster: Mutex<BTreeMap<String, Vec<UnmanagedJob>>>,
    /// Engine ids already reported as `drift`.
    drifted: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Unmanaged {
    /// Puts a cluster's list in place.
    pub fn set(&self, cluster: &str, jobs: Vec<UnmanagedJob>) {
        lock(&self.by_cluster).insert(cluster.to_string(), jobs);
    }

    /// Every unmanaged job, by cluster then engine id.
    pub fn all(&self) -> Vec<UnmanagedJob> {
        lock(&self.by_cluster).values().flatten().cloned().collect()
    }

    /// How many unmanaged jobs each cluster has (clusters seen with none are listed with 0).
    pub fn counts(&self) -> Vec<(String, u64)> {
        lock(&self.by_cluster)
            .iter()
            .map(|(c, jobs)| (c.clone(), jobs.len() as u64))
            .collect()
    }

    /// True the first time `engine_id` is reported as a duplicate.
    pub fn first_drift(&self, engine_id: &str) -> bool {
        lock(&self.drifted).insert(engine_id.to_string())
    }
}

/// What jobkeeper manages on one cluster: the engine ids of its live runs (job name by id).
#[derive(Debug, Default)]
pub struct Managed {
    /// Engine id → the jobkeeper job whose run it is.
    pub ids: HashMap<String, String>,
}

/// The cluster's `live` jobs that `managed` does not own, sorted by engine id, each with the
/// managed job it duplicates (same name as that job, or as the cluster name of its live run).
pub fn classify(
    cluster: &str,
    engine: &str,
    live: &[ClusterJob],
    managed: &Managed,
) -> Vec<UnmanagedJob> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    for j in live {
        if let Some(job) = managed.ids.get(&j.engine_id) {
            names.insert(j.name.as_str(), job.as_str());
            names.insert(job.as_str(), job.as_str());
        }
    }
    let mut out: Vec<UnmanagedJob> = live
        .iter()
        .filter(|j| !managed.ids.contains_key(&j.engine_id))
        .map(|j| UnmanagedJob {
            cluster: cluster.to_string(),
            engine: engine.to_string(),
            engine_id: j.engine_id.clone(),
            name: j.name.clone(),
            state: j.state.clone(),
            since: j.since_ms.and_then(rfc3339),
            duplicate_of: names.get(j.name.as_str()).map(|s| (*s).to_string()),
        })
        .collect();
    out.sort_by(|a, b| a.engine_id.cmp(&b.engine_id));
    out
}

/// A time in ms since the epoch as RFC 3339 (UTC).
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, name: &str) -> ClusterJob {
        ClusterJob {
            engine_id: id.into(),
            name: name.into(),
            state: "RUNNING".into(),
            since_ms: Some(1_796_294_560_097),
        }
    }

    #[test]
    fn what_no_run_owns_is_unmanaged_and_a_managed_name_is_a_duplicate() {
        let live = [
            job("b", "clicks"),
            job("a", "views"),
            job("m", "flink-counter v1"),
            job("c", "flink-counter v1"),
            job("d", "totals"),
        ];
        let managed = Managed {
            ids: HashMap::from([
                ("m".to_string(), "counter".to_string()),
                ("x".to_string(), "totals".to_string()),
            ]),
        };
        let out = classify("http://f", "flink", &live, &managed);
        let ids: Vec<(&str, Option<&str>)> = out
            .iter()
            .map(|u| (u.engine_id.as_str(), u.duplicate_of.as_deref()))
            .collect();
        // `totals` has no live run on this cluster: a job named so is not a duplicate here.
        assert_eq!(
            ids,
            [
                ("a", None),
                ("b", None),
                ("c", Some("counter")),
                ("d", None)
            ]
        );
        assert_eq!(
            out[0].since.as_deref(),
            Some("2026-12-03T10:42:40.097+00:00")
        );
        assert_eq!(out[0].cluster, "http://f");
    }

    #[test]
    fn counts_cover_clusters_with_none_and_drift_is_reported_once() {
        let u = Unmanaged::default();
        u.set("http://a", vec![]);
        let one = classify(
            "http://b",
            "spark",
            &[job("d1", "x.Main")],
            &Managed::default(),
        );
        u.set("http://b", one);
        assert_eq!(
            u.counts(),
            [("http://a".to_string(), 0), ("http://b".to_string(), 1)]
        );
        assert_eq!(u.all().len(), 1);
        assert!(u.first_drift("c"));
        assert!(!u.first_drift("c"));
    }
}
