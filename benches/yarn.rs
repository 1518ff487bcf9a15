//! The yarn engine's health sweep against the stand-in ResourceManager
//! (tests/support/yarn_rm.rs, written from Hadoop's ResourceManagerRest documentation; no
//! Hadoop runs here) and a counting stand-in JobManager answering `/jobs/{id}/metrics`,
//! `/jobs/overview`, `/jobs/{id}/checkpoints` and `/jobs/{id}/checkpoints/config` (an hdfs:
//! checkpoint every 10 minutes, the latest triggered a second before each answer)
//! (`cargo bench --profile dev --bench yarn`; `cargo test --benches` runs 1 and 100 once). For
//! 1, 100 and 1,000 running applications of jobkeeper's:
//! - jobs with health rules: one sweep's status ([`Engine::survey`]) and health figures
//!   ([`Engine::health`]): requests to the RM and to JobManagers, and time, the median of
//!   `BENCH_TICKS` (default 5) sweeps after the first;
//! - jobs without: the JobManager requests of each sweep of one whole cycle of
//!   [`reads::TASKS_EVERY`] sweeps once the first reads are done.
//!
//! It asserts the targets, so a regression fails it: one RM request per sweep; with health
//! rules at most one JobManager request per application per sweep (none asked twice); without,
//! only each application's task count, once per cycle.
//!
//! Baseline in the same run: the per-application status a watcher asking
//! `GET /ws/v1/cluster/apps/{id}` for each application makes (StreamPark's
//! `FlinkAppHttpWatcher` fallback), timed against the same RM. Prints a markdown table for
//! docs/BENCHMARKS.md.

#[path = "../tests/support/yarn_rm.rs"]
mod yarn_rm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use jobkeeper::engine::yarn::{YarnAuth, YarnEngine, YarnSettings, reads};
use jobkeeper::engine::{Engine, RunHandle};
use yarn_rm::{RmApp, StandinRm};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// What the stand-in JobManager was asked: every request, and those naming a Flink job by job.
#[derive(Default)]
struct Asked {
    total: AtomicU64,
    by_job: Mutex<HashMap<String, u64>>,
}

impl Asked {
    fn count(&self, jid: Option<&str>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(j) = jid {
            *self
                .by_job
                .lock()
                .unwrap()
                .entry(j.to_string())
                .or_default() += 1;
        }
    }

    /// The requests since the last call: (all, the most any one job was named in).
    fn take(&self) -> (u64, u64) {
        let most = self
            .by_job
            .lock()
            .unwrap()
            .drain()
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0);
        (self.total.swap(0, Ordering::Relaxed), most)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A JobManager that answers every job and counts what it is asked.
async fn standin_jobmanager(asked: Arc<Asked>) -> std::net::SocketAddr {
    let (a, b, c, d) = (asked.clone(), asked.clone(), asked.clone(), asked);
    let jm = Router::new()
        .route(
            "/jobs/{id}/metrics",
            get(move |Path(id): Path<String>| async move {
                a.count(Some(&id));
                axum::Json(serde_json::json!([
                    {"id": "numRestarts", "value": "0"},
                    {"id": "lastCheckpointCompletedTimestamp", "value": now_ms().to_string()},
                    {"id": "totalNumberOfCheckpoints", "value": "3"},
                    {"id": "lastCheckpointExternalPath", "value": "hdfs:///ck/j/chk-3"}
                ]))
            }),
        )
        .route(
            "/jobs/overview",
            get(move || async move {
                b.count(None);
                axum::Json(serde_json::json!({"jobs": []}))
            }),
        )
        .route(
            "/jobs/{id}/checkpoints",
            get(move |Path(id): Path<String>| async move {
                c.count(Some(&id));
                let at = now_ms();
                axum::Json(serde_json::json!({
                    "counts": {"in_progress": 0, "completed": 3},
                    "latest": {"completed": {
                        "id": 3, "is_savepoint": false, "trigger_timestamp": at - 1000,
                        "latest_ack_timestamp": at, "external_path": "hdfs:///ck/j/chk-3"
                    }},
                    "history": []
                }))
            }),
        )
        .route(
            "/jobs/{id}/checkpoints/config",
            get(move |Path(id): Path<String>| async move {
                d.count(Some(&id));
                axum::Json(serde_json::json!({"mode": "exactly_once", "interval": 600_000}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, jm).await });
    addr
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
    let asked = Arc::new(Asked::default());
    let jm_addr = standin_jobmanager(asked.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let cycle = reads::TASKS_EVERY as usize;

    println!(
        "| applications | RM requests per sweep | JobManager requests per sweep, jobs with health rules (status + health; most to one application) | JobManager requests per sweep, jobs without (mean, most, over {cycle} sweeps) | status sweep | health sweep | per-app status baseline: requests, time |"
    );
    println!("|---|---|---|---|---|---|---|");
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
        let handles: Vec<RunHandle> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| RunHandle {
                run_id: i as i64,
                engine_id: id.clone(),
                start_ticks: None,
                cluster: Some(format!("yarn {}", rm.url())),
            })
            .collect();

        // Jobs with health rules: status and health each sweep.
        let state = tempfile::tempdir().unwrap();
        let engine = YarnEngine::new(&settings, &state.path().display().to_string()).unwrap();
        // One sweep to find the active RM (its `cluster/info`), not counted.
        let survey = engine.survey(&handles).await.unwrap();
        engine
            .health(&handles, survey.live.as_deref())
            .await
            .unwrap();
        asked.take();
        let (mut status_t, mut health_t, mut rm_reqs, mut jm_most, mut one_most) =
            (vec![], vec![], 0, 0, 0);
        let rounds = ticks.div_ceil(cycle);
        let mut missed = 0;
        for _ in 0..rounds * cycle {
            let (before, _) = engine.rm_counts();
            let t = Instant::now();
            let survey = engine.survey(&handles).await.unwrap();
            status_t.push(t.elapsed());
            assert_eq!(survey.statuses.len(), n);
            rm_reqs = engine.rm_counts().0 - before;
            assert_eq!(rm_reqs, 1, "one RM request per sweep");
            let t = Instant::now();
            let facts = engine
                .health(&handles, survey.live.as_deref())
                .await
                .unwrap();
            health_t.push(t.elapsed());
            assert_eq!(
                engine.rm_counts().0 - before,
                rm_reqs,
                "health asks the RM nothing"
            );
            let (jm, most) = asked.take();
            assert_eq!(
                jm, n as u64,
                "one JobManager request per application per sweep"
            );
            assert!(most <= 1, "a job's figures asked {most} times in one sweep");
            missed += facts.iter().filter(|f| f.is_none()).count();
            jm_most = jm_most.max(jm);
            one_most = one_most.max(most);
        }
        // Its task-count sweep is the one sweep of a cycle an application has no figures.
        assert_eq!(missed, rounds * n, "figures missed over {rounds} cycles");

        // Jobs without health rules: the status sweep alone, after the first reads.
        let state = tempfile::tempdir().unwrap();
        let engine = YarnEngine::new(&settings, &state.path().display().to_string()).unwrap();
        for _ in 0..cycle {
            engine.survey(&handles).await.unwrap();
        }
        asked.take();
        let mut per_sweep = vec![];
        for _ in 0..cycle {
            engine.survey(&handles).await.unwrap();
            let (jm, most) = asked.take();
            assert_eq!(
                most, 0,
                "no checkpoint is read before a newer one can exist"
            );
            per_sweep.push(jm);
        }
        let total: u64 = per_sweep.iter().sum();
        assert_eq!(
            total, n as u64,
            "each application's task count once per cycle: {per_sweep:?}"
        );
        let quiet_mean = total as f64 / cycle as f64;
        let quiet_most = per_sweep.iter().copied().max().unwrap_or(0);

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
            "| {n} | {rm_reqs} | {jm_most} (to one: {one_most}) | {quiet_mean:.1}, {quiet_most} | {} | {} | {n}, {} |",
            ms(median(status_t)),
            ms(median(health_t)),
            ms(median(base_t))
        );
    }
}
