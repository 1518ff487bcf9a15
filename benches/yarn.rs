//! The yarn engine's health sweep against the stand-in ResourceManager
//! (tests/support/yarn_rm.rs, written from Hadoop's ResourceManagerRest documentation; no
//! Hadoop runs here) and a counting stand-in JobManager answering `/jobs/{id}/metrics` and `/jobs/overview`
//! (`cargo bench --bench yarn`; `cargo test --benches` runs 1 and 100 once). For 1, 100 and
//! 1,000 running applications of jobkeeper's, one sweep's status ([`Engine::survey`]) and
//! health figures ([`Engine::health`]): requests to the RM and to JobManagers, and time, the median of `BENCH_TICKS` (default 5) sweeps. Baseline in
//! the same run: the per-application status a watcher asking `GET /ws/v1/cluster/apps/{id}`
//! for each application makes (StreamPark's `FlinkAppHttpWatcher` fallback), timed against the
//! same RM. Prints a markdown table for docs/BENCHMARKS.md.

#[path = "../tests/support/yarn_rm.rs"]
mod yarn_rm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use jobkeeper::engine::yarn::{YarnAuth, YarnEngine, YarnSettings};
use jobkeeper::engine::{Engine, RunHandle};
use yarn_rm::{RmApp, StandinRm};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: a small smoke run keeps it working.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let ticks: usize = std::env::var("BENCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 1 } else { 5 });
    let sizes: &[usize] = if smoke { &[1, 100] } else { &[1, 100, 1000] };
    // A JobManager that answers every job's metrics and counts the requests.
    let jm_requests = Arc::new(AtomicU64::new(0));
    let counter = jm_requests.clone();
    let overview_counter = jm_requests.clone();
    let jm = Router::new()
        .route(
            "/jobs/{id}/metrics",
            get(move || {
                let c = counter.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    axum::Json(serde_json::json!([
                        {"id": "numRestarts", "value": "0"},
                        {"id": "lastCheckpointCompletedTimestamp", "value": "1796298334442"},
                        {"id": "totalNumberOfCheckpoints", "value": "3"},
                        {"id": "lastCheckpointExternalPath", "value": "hdfs:///ck/j/chk-3"}
                    ]))
                }
            }),
        )
        .route(
            "/jobs/overview",
            get(move || {
                let c = overview_counter.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    axum::Json(serde_json::json!({"jobs": []}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jm_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, jm).await });
    let tmp = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    println!(
        "| applications | RM requests per sweep | JobManager requests per sweep (status + health) | status sweep | health sweep | per-app status baseline: requests, time |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in sizes {
        let rm = StandinRm::start().await;
        let ids: Vec<String> = rm.with(|s| {
            (0..n)
                .map(|i| {
                    let id = format!("application_1700000000000_{:04}", i + 1);
                    s.apps.push(RmApp {
                        id: id.clone(),
                        name: format!("job-{i}"),
                        state: "RUNNING".into(),
                        final_status: "UNDEFINED".into(),
                        tags: vec!["jobkeeper".into(), format!("jk-run-{i:032x}")],
                        queue: "default".into(),
                        app_type: "Apache Flink".into(),
                        am_rpc: jm_addr.to_string(),
                        started: 1,
                        ..RmApp::default()
                    });
                    id
                })
                .collect()
        });
        let settings = YarnSettings {
            rm: vec![rm.url()],
            flink_home: tmp.path().to_path_buf(),
            hadoop_conf_dir: None,
            queue: None,
            savepoint_dir: None,
            auth: YarnAuth::Simple {
                user: Some("bench".into()),
            },
            session: None,
            accepted_timeout: Duration::from_secs(60),
            sql_runner: None,
        };
        let engine = YarnEngine::new(&settings, &tmp.path().display().to_string()).unwrap();
        let handles: Vec<RunHandle> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| RunHandle {
                run_id: i as i64,
                engine_id: id.clone(),
                start_ticks: None,
                cluster: engine.cluster(),
            })
            .collect();
        // One sweep to find the active RM (its `cluster/info`), not counted.
        engine.survey(&handles).await.unwrap();
        let (mut status_t, mut health_t, mut rm_reqs, mut jm_reqs) = (vec![], vec![], 0, 0);
        for _ in 0..ticks {
            let (before, _) = engine.rm_counts();
            let jm_before = jm_requests.load(Ordering::Relaxed);
            let t = Instant::now();
            let survey = engine.survey(&handles).await.unwrap();
            status_t.push(t.elapsed());
            assert_eq!(survey.statuses.len(), n);
            rm_reqs = engine.rm_counts().0 - before;
            let t = Instant::now();
            let facts = engine
                .health(&handles, survey.live.as_deref())
                .await
                .unwrap();
            health_t.push(t.elapsed());
            assert!(facts.iter().all(Option::is_some));
            jm_reqs = jm_requests.load(Ordering::Relaxed) - jm_before;
            assert_eq!(
                engine.rm_counts().0 - before,
                rm_reqs,
                "health asks the RM nothing"
            );
        }
        // Baseline: one `GET apps/{id}` per application.
        let mut base_t = vec![];
        for _ in 0..ticks {
            let t = Instant::now();
            for id in &ids {
                let r = http
                    .get(format!(
                        "{}/ws/v1/cluster/apps/{id}?user.name=bench",
                        rm.url()
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await.unwrap();
            }
            base_t.push(t.elapsed());
        }
        println!(
            "| {n} | {rm_reqs} | {jm_reqs} | {} | {} | {n}, {} |",
            ms(median(status_t)),
            ms(median(health_t)),
            ms(median(base_t))
        );
    }
}
