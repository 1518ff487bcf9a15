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
                url: engine.url().unwrap_or_else(|| location.clone()),
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

/// `GET /api/v1/clusters`.
pub async fn clusters(State(state): State<Arc<ApiState>>) -> Response {
    Json(clusters_view(&state)).into_response()
}
