//! `GET /api/v1/clusters`: each cluster the daemon drives (one per flink cluster or spark master,
//! shared by the envs naming it), with the version it runs and whether it answers now.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;

/// One cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterView {
    /// The envs running their jobs on it, sorted.
    pub envs: Vec<String>,
    /// Its engine (`flink`, `spark`).
    pub engine: String,
    /// Its REST URL (as the engine names its location).
    pub url: String,
    /// The version it runs, once read (flink: `GET /config`).
    pub version: Option<String>,
    /// False while the daemon counts it in an outage.
    pub reachable: bool,
}

/// `GET /api/v1/clusters`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClustersView {
    /// Every cluster, by URL.
    pub clusters: Vec<ClusterView>,
}

/// The clusters of the daemon's engines (the local engine is none).
pub fn clusters_view(state: &ApiState) -> ClustersView {
    let ctx = state.reconciler.context();
    let mut by_location: BTreeMap<String, ClusterView> = BTreeMap::new();
    for (env, engine) in ctx.engines.all() {
        if !engine.runs_survive_daemon() {
            continue;
        }
        let location = engine.location();
        let view = by_location
            .entry(location.clone())
            .or_insert_with(|| ClusterView {
                envs: Vec::new(),
                engine: engine.kind().as_str().to_string(),
                url: url_of(&location),
                version: engine.version(),
                reachable: !ctx.outages.is_down(&location),
            });
        view.envs.push(env);
        view.envs.sort();
    }
    ClustersView {
        clusters: by_location.into_values().collect(),
    }
}

/// The URL in an engine's location (`flink cluster http://...`): its last word.
fn url_of(location: &str) -> String {
    location.rsplit(' ').next().unwrap_or(location).to_string()
}

/// `GET /api/v1/clusters`.
pub async fn clusters(State(state): State<Arc<ApiState>>) -> Response {
    Json(clusters_view(&state)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_last_word_of_the_location() {
        assert_eq!(
            url_of("flink cluster http://127.0.0.1:8081"),
            "http://127.0.0.1:8081"
        );
        assert_eq!(url_of("spark"), "spark");
    }
}
