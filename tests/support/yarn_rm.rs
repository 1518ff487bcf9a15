//! A stand-in YARN ResourceManager for tests and benchmarks. No Hadoop distribution can be
//! installed from the registries this project reaches, so this is a small server written from
//! Hadoop's published `ResourceManagerRest` documentation (hadoop-yarn-site
//! `ResourceManagerRest.md`), not a real RM:
//! - `GET /ws/v1/cluster/info` (`clusterInfo.haState`: ACTIVE or STANDBY);
//! - `GET /ws/v1/cluster/apps?states=&applicationTags=&applicationTypes=` (tags match any;
//!   an empty list is `{"apps":null}`);
//! - `GET /ws/v1/cluster/apps/{id}`, a forgotten one answering 404 with a `RemoteException`;
//! - `PUT /ws/v1/cluster/apps/{id}/state` `{"state":"KILLED"}`: 202 while the kill is under
//!   way, 200 once the application is KILLED;
//! - a standby answers 307 to everything but `cluster/info`, as `RMWebAppFilter` does.
//!
//! Its applications are registered by the stand-in `flink` CLI (tests/support/flink_standin.py)
//! through `POST /standin/apps` (not an RM endpoint), which runs each job on a real Flink
//! session cluster; the RM then follows that Flink job as an application-mode AM would: FINISHED
//! with SUCCEEDED, FAILED or KILLED when the job ends.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

/// One application.
#[derive(Debug, Clone, Default)]
pub struct RmApp {
    pub id: String,
    pub name: String,
    pub state: String,
    pub final_status: String,
    pub diagnostics: String,
    pub tags: Vec<String>,
    pub queue: String,
    pub app_type: String,
    pub am_rpc: String,
    pub started: i64,
    /// The real Flink cluster and job id the stand-in CLI ran it as.
    pub flink: String,
    pub jid: String,
    /// PUT KILLED seen once (the next one answers 200).
    pub killing: bool,
}

impl RmApp {
    fn json(&self) -> Value {
        json!({"id": self.id, "user": "flink", "name": self.name, "queue": self.queue,
            "state": self.state, "finalStatus": self.final_status, "progress": 100.0,
            "trackingUI": "ApplicationMaster", "diagnostics": self.diagnostics,
            "clusterId": 1_700_000_000_000_i64, "applicationType": self.app_type,
            "applicationTags": self.tags.join(","), "startedTime": self.started,
            "finishedTime": 0, "elapsedTime": 0, "amRPCAddress": self.am_rpc,
            "trackingUrl": format!("http://rm/proxy/{}/", self.id)})
    }

    fn live(&self) -> bool {
        ["NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING"].contains(&self.state.as_str())
    }
}

/// What tests switch and read.
#[derive(Default)]
pub struct RmState {
    pub apps: Vec<RmApp>,
    pub seq: u64,
    /// Answer as a standby.
    pub standby: bool,
    /// Answer every `/ws/` request with an HTML login page (a gateway in front).
    pub html: bool,
    /// `user.name` values seen, and the `X-Remote-User` apache passed on.
    pub users: Vec<String>,
    pub remote_users: Vec<String>,
}

/// A running stand-in RM.
#[derive(Clone)]
pub struct StandinRm {
    pub state: Arc<Mutex<RmState>>,
    pub port: u16,
    /// Requests to `/ws/v1/cluster/apps` lists, app lookups, kills, `cluster/info`.
    pub lists: Arc<AtomicU64>,
    pub lookups: Arc<AtomicU64>,
    pub kills: Arc<AtomicU64>,
    pub infos: Arc<AtomicU64>,
}

type S = StandinRm;

impl StandinRm {
    /// Starts on a free loopback port, following the Flink jobs of its applications.
    pub async fn start() -> StandinRm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rm = StandinRm {
            state: Arc::new(Mutex::new(RmState::default())),
            port,
            lists: Arc::default(),
            lookups: Arc::default(),
            kills: Arc::default(),
            infos: Arc::default(),
        };
        let app = Router::new()
            .route("/ws/v1/cluster/info", get(info))
            .route("/ws/v1/cluster/apps", get(list))
            .route("/ws/v1/cluster/apps/{id}", get(one))
            .route("/ws/v1/cluster/apps/{id}/state", put(kill))
            .route("/standin/apps", post(register))
            .with_state(rm.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let follow = rm.clone();
        tokio::spawn(async move { follow.follow_flink().await });
        rm
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut RmState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn app(&self, id: &str) -> Option<RmApp> {
        self.with(|s| s.apps.iter().find(|a| a.id == id).cloned())
    }

    pub fn apps_named(&self, name: &str) -> Vec<RmApp> {
        self.with(|s| s.apps.iter().filter(|a| a.name == name).cloned().collect())
    }

    /// Adds `n` RUNNING applications with no Flink job behind them (benchmarks).
    pub fn add_idle(&self, n: usize) {
        self.with(|s| {
            for _ in 0..n {
                s.seq += 1;
                let id = format!("application_1700000000000_{:04}", s.seq);
                s.apps.push(RmApp {
                    id,
                    name: format!("other-{}", s.seq),
                    state: "RUNNING".into(),
                    final_status: "UNDEFINED".into(),
                    app_type: "Apache Flink".into(),
                    queue: "default".into(),
                    started: 1,
                    ..RmApp::default()
                });
            }
        });
    }

    /// The AM's part: an application whose Flink job ended finishes with its status.
    async fn follow_flink(&self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let running: Vec<(String, String, String)> = self.with(|s| {
                s.apps
                    .iter()
                    .filter(|a| a.state == "RUNNING" && !a.jid.is_empty())
                    .map(|a| (a.id.clone(), a.flink.clone(), a.jid.clone()))
                    .collect()
            });
            let mut overviews: HashMap<String, Value> = HashMap::new();
            for (id, flink, jid) in running {
                if !overviews.contains_key(&flink) {
                    let o = match http.get(format!("{flink}/jobs/overview")).send().await {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    overviews.insert(flink.clone(), o);
                }
                let state = overviews[&flink]["jobs"]
                    .as_array()
                    .and_then(|j| j.iter().find(|j| j["jid"] == jid.as_str()))
                    .and_then(|j| j["state"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let end = match state.as_str() {
                    "FINISHED" => Some(("SUCCEEDED", "")),
                    "FAILED" => Some((
                        "FAILED",
                        "The Flink job failed: see the JobManager's exceptions",
                    )),
                    "CANCELED" => Some(("KILLED", "The Flink job was cancelled")),
                    _ => None,
                };
                if let Some((status, diag)) = end {
                    self.with(|s| {
                        if let Some(a) = s
                            .apps
                            .iter_mut()
                            .find(|a| a.id == id && a.state == "RUNNING")
                        {
                            a.state = "FINISHED".into();
                            a.final_status = status.into();
                            a.diagnostics = diag.into();
                        }
                    });
                }
            }
        }
    }
}

fn standby_redirect() -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, "http://other-rm:8088/")],
        "This is standby RM. The redirect url is: http://other-rm:8088/",
    )
        .into_response()
}

fn html() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Login</body></html>",
    )
        .into_response()
}

/// Records who asked; `Some` answer when the RM answers the same to everything.
fn gate(rm: &S, q: &HashMap<String, String>, h: &HeaderMap, standby_too: bool) -> Option<Response> {
    rm.with(|s| {
        if let Some(u) = q.get("user.name") {
            s.users.push(u.clone());
        }
        if let Some(u) = h.get("X-Remote-User").and_then(|v| v.to_str().ok()) {
            s.remote_users.push(u.to_string());
        }
        if s.html {
            return Some(html());
        }
        (standby_too && s.standby).then(standby_redirect)
    })
}

async fn info(
    State(rm): State<S>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    rm.infos.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = gate(&rm, &q, &h, false) {
        return r;
    }
    let ha = if rm.with(|s| s.standby) {
        "STANDBY"
    } else {
        "ACTIVE"
    };
    axum::Json(
        json!({"clusterInfo": {"id": 1_700_000_000_000_i64, "state": "STARTED",
        "haState": ha, "resourceManagerVersion": "3.4.1 (stand-in)"}}),
    )
    .into_response()
}

async fn list(
    State(rm): State<S>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    rm.lists.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = gate(&rm, &q, &h, true) {
        return r;
    }
    let split = |k: &str| -> Option<Vec<String>> {
        q.get(k).map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let (states, tags, types) = (
        split("states"),
        split("applicationTags"),
        split("applicationTypes"),
    );
    let apps: Vec<Value> = rm.with(|s| {
        s.apps
            .iter()
            .filter(|a| {
                states
                    .as_ref()
                    .is_none_or(|st| st.iter().any(|x| x.eq_ignore_ascii_case(&a.state)))
            })
            .filter(|a| {
                tags.as_ref()
                    .is_none_or(|t| t.iter().any(|x| a.tags.contains(&x.to_lowercase())))
            })
            .filter(|a| {
                types
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|x| x.eq_ignore_ascii_case(&a.app_type)))
            })
            .map(RmApp::json)
            .collect()
    });
    if apps.is_empty() {
        return axum::Json(json!({"apps": null})).into_response();
    }
    axum::Json(json!({"apps": {"app": apps}})).into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"RemoteException": {"exception": "NotFoundException",
            "message": format!("java.lang.Exception: app with id: {id} not found"),
            "javaClassName": "org.apache.hadoop.yarn.webapp.NotFoundException"}})),
    )
        .into_response()
}

async fn one(
    State(rm): State<S>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    rm.lookups.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = gate(&rm, &q, &h, true) {
        return r;
    }
    match rm.app(&id) {
        Some(a) => axum::Json(json!({"app": a.json()})).into_response(),
        None => not_found(&id),
    }
}

async fn kill(
    State(rm): State<S>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    rm.kills.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = gate(&rm, &q, &h, true) {
        return r;
    }
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if asked["state"] != "KILLED" {
        return (StatusCode::BAD_REQUEST, "only KILLED").into_response();
    }
    if !q.contains_key("user.name") && !h.contains_key("X-Remote-User") {
        // Writes need a user (`simple`: user.name; kerberos: the authenticated one).
        return (StatusCode::FORBIDDEN, axum::Json(json!({"RemoteException": {"exception": "AuthorizationException", "message": "Unable to obtain user name, user not authenticated"}}))).into_response();
    }
    let Some(app) = rm.app(&id) else {
        return not_found(&id);
    };
    if !app.live() {
        return axum::Json(json!({"state": app.state})).into_response();
    }
    if !app.killing {
        rm.with(|s| {
            if let Some(a) = s.apps.iter_mut().find(|a| a.id == id) {
                a.killing = true;
            }
        });
        // The AM goes down with its JobManager's job.
        if !app.jid.is_empty() {
            let _ = reqwest::Client::new()
                .patch(format!("{}/jobs/{}?mode=cancel", app.flink, app.jid))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
        }
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"state": app.state})),
        )
            .into_response();
    }
    rm.with(|s| {
        if let Some(a) = s.apps.iter_mut().find(|a| a.id == id) {
            a.state = "KILLED".into();
            a.final_status = "KILLED".into();
            a.diagnostics = "Application killed by user.".into();
        }
    });
    axum::Json(json!({"state": "KILLED"})).into_response()
}

/// The stand-in CLI's registration: `{name, tags, queue}` makes an ACCEPTED application (its
/// id answered); `{id, state, am_rpc, flink, jid, diagnostics, final_status}` updates one.
async fn register(State(rm): State<S>, axum::Json(b): axum::Json<Value>) -> Response {
    let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
    if let Some(id) = b["id"].as_str() {
        let found = rm.with(|st| {
            let a = st.apps.iter_mut().find(|a| a.id == id)?;
            for (k, field) in [
                ("state", &mut a.state),
                ("am_rpc", &mut a.am_rpc),
                ("flink", &mut a.flink),
                ("jid", &mut a.jid),
                ("diagnostics", &mut a.diagnostics),
                ("final_status", &mut a.final_status),
            ] {
                if let Some(v) = b[k].as_str() {
                    *field = v.to_string();
                }
            }
            Some(())
        });
        return match found {
            Some(()) => axum::Json(json!({"id": id})).into_response(),
            None => not_found(id),
        };
    }
    let id = rm.with(|st| {
        st.seq += 1;
        let id = format!("application_1700000000000_{:04}", st.seq);
        let queue = s("queue");
        st.apps.push(RmApp {
            id: id.clone(),
            name: s("name"),
            state: "ACCEPTED".into(),
            final_status: "UNDEFINED".into(),
            tags: s("tags")
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.to_lowercase())
                .collect(),
            queue: if queue.is_empty() {
                "default".into()
            } else {
                queue
            },
            app_type: "Apache Flink".into(),
            started: chrono_ms(),
            ..RmApp::default()
        });
        id
    });
    axum::Json(json!({"id": id})).into_response()
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
