//! The Flink restart path with retained checkpoints (`cargo bench --bench flink_restart`): a
//! job cancelled outside jobkeeper (`PATCH /jobs/{id}?mode=cancel`, as Flink's UI does) → the
//! health sweep sees it → resubmitted → all tasks RUNNING, for a job that keeps its checkpoints
//! on cancellation (so it restores from the newest) against the same job whose `params.conf`
//! deletes them (`DELETE_ON_CANCELLATION`, the earlier default: it restarts empty), samples
//! taken in turn in one sitting. The figures of docs/BENCHMARKS.md, "The restart path with
//! retained checkpoints"; `tests/flink.rs
//! a_job_cancelled_in_flink_s_ui_comes_back_from_its_newest_checkpoint` asserts the restore.
//!
//! `BENCH_ONLY=upgrade cargo bench --bench flink_restart` measures instead the upgrade of a job
//! with 100 MB of keyed state by `upgrade: savepoint` against `upgrade: last-state` (see
//! [`upgrades`]; docs/BENCHMARKS.md, "Savepoint and last-state upgrades").
//!
//! Needs a Flink 2.3.0 cluster: `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB` (as
//! scripts/test.sh exports them); without them it says so and does nothing (with `--bench`, it
//! fails). `SAMPLES` (default 10; 1 without `--bench`, the smoke run of `cargo test
//! --all-targets`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::flink::{counter_repo, http, need, rest, restored_from, running};
use common::{Git, StopRunsOnDrop, engine_id, start};

const LIMIT: Duration = Duration::from_secs(90);

/// A config repo holding the flink-counter project (copied from example-repo) and a daemon
/// config with a `flink` env on `url` and a 1 s `health.interval` (as tests/flink.rs makes it).
fn setup(root: &Path, url: &str) -> (Git, String) {
    counter_repo(root, url, "", "")
}

/// A flink-counter job file built against `lib`, a checkpoint every 500 ms, with `extra` lines.
fn counter(lib: &str, tag: &str, extra: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n\
         env: flink\nparams:\n  main_class: example.Counter\n  args: [\"--tag\", \"{tag}\"]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"500ms\"}}\n{extra}"
    )
}

/// How many checkpoints of job `jid` completed.
async fn completed_checkpoints(url: &str, jid: &str) -> u64 {
    rest(url, &format!("/jobs/{jid}/checkpoints")).await["counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
}

/// Samples of each job's restart path, in ms, taken in turn.
async fn measure(url: &str, lib: &str, samples: usize) -> Vec<(&'static str, Vec<f64>)> {
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let restart = "restart: {attempts: 100, window: 1h, backoff: 0s, max_backoff: 0s}\n";
    git.write("jobs/kept.yaml", &counter(lib, "kept", restart));
    let deleting = counter(lib, "deleted", restart).replace(
        "conf: {",
        "conf: {execution.checkpointing.externalized-checkpoint-retention: DELETE_ON_CANCELLATION, ",
    );
    git.write("jobs/deleted.yaml", &deleting);
    git.commit_push("two flink jobs");
    let mut d = start(tmp.path(), &cfg).await;
    let jobs = ["kept", "deleted"];
    let mut last = Vec::new();
    for job in jobs {
        last.push(running(&d, url, job, &[]).await.1);
    }
    let mut times = vec![Vec::new(), Vec::new()];
    for _ in 0..samples {
        for (i, job) in jobs.iter().enumerate() {
            let jid = last[i].clone();
            let t = Instant::now();
            while completed_checkpoints(url, &jid).await < 2 {
                assert!(t.elapsed() < LIMIT, "{job}: 2 checkpoints not completed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let t0 = Instant::now();
            http()
                .patch(format!("{url}/jobs/{jid}?mode=cancel"))
                .send()
                .await
                .unwrap();
            let new = loop {
                if let [run] = d.live_runs(job).as_slice() {
                    let id = engine_id(run);
                    if id != jid {
                        let o = rest(url, "/jobs/overview").await;
                        let up = o["jobs"].as_array().into_iter().flatten().any(|j| {
                            j["jid"] == id.as_str()
                                && j["state"] == "RUNNING"
                                && j["tasks"]["running"] == j["tasks"]["total"]
                        });
                        if up {
                            break id;
                        }
                    }
                }
                assert!(t0.elapsed() < LIMIT, "{job} did not come back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            times[i].push(t0.elapsed().as_secs_f64() * 1000.0);
            last[i] = new;
        }
    }
    d.stop().await;
    jobs.into_iter().zip(times).collect()
}

/// The upgrade paths of a job holding about 100 MB of keyed state (100,000 keys of 1 KiB, heap
/// state), upgraded by commits that change its args, alternately with `upgrade: savepoint` and
/// `upgrade: last-state`, in the same sitting: commit → the new run RUNNING with every task
/// running (its state restored). Before each upgrade the run has completed a checkpoint of at
/// least 90 MB. `tests/savepoints.rs a_last_state_upgrade…` asserts what each path restores.
async fn upgrades(url: &str, lib: &str, samples: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let job = |i: usize, mode: &str| {
        format!(
            "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n\
             env: flink\nparams:\n  main_class: example.Counter\n\
             \x20 args: [\"--tag\", \"s{i}\", \"--keys\", \"100000\", \"--payload\", \"1024\", \"--rate\", \"20000\"]\n\
             \x20 parallelism: 1\n\
             \x20 conf: {{execution.checkpointing.interval: \"3s\"}}\nupgrade: {mode}\n"
        )
    };
    git.write("jobs/big.yaml", &job(0, "savepoint"));
    git.commit_push("a job with 100 MB of state");
    let d = start(tmp.path(), &cfg).await;
    let (_, mut jid) = running(&d, url, "big", &[]).await;
    let mut seen = vec![jid.clone()];
    let mut times: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut sizes = Vec::new();
    for i in 1..=samples * 2 {
        let mode = if i % 2 == 1 {
            "savepoint"
        } else {
            "last-state"
        };
        // A young checkpoint holding the whole state.
        let t = std::time::Instant::now();
        let size = loop {
            let c = rest(url, &format!("/jobs/{jid}/checkpoints")).await;
            let done = &c["latest"]["completed"];
            let size = done["state_size"].as_u64().unwrap_or(0);
            let age = done["latest_ack_timestamp"]
                .as_i64()
                .map_or(i64::MAX, |at| jobkeeper::store::now_ms() - at);
            if size >= 90_000_000 && age < 2_000 {
                break size;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "no 90 MB checkpoint: {c}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        sizes.push(size);
        git.write("jobs/big.yaml", &job(i, mode));
        let t0 = std::time::Instant::now();
        git.commit_push(&format!("upgrade {i} by {mode}"));
        let new = loop {
            if let [run] = d.live_runs("big").as_slice() {
                let id = engine_id(run);
                if !seen.contains(&id) {
                    let o = rest(url, "/jobs/overview").await;
                    let up = o["jobs"].as_array().into_iter().flatten().any(|j| {
                        j["jid"] == id.as_str()
                            && j["state"] == "RUNNING"
                            && j["tasks"]["running"] == j["tasks"]["total"]
                    });
                    if up {
                        break id;
                    }
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "upgrade {i} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let restored = restored_from(url, &new).await;
        println!(
            "upgrade {i} by {mode}: {ms:.0} ms, state {:.1} MB, restored from {}",
            size as f64 / 1e6,
            restored["external_path"]
        );
        times.entry(mode).or_default().push(ms);
        seen.push(new.clone());
        jid = new;
    }
    for (mode, mut t) in times {
        t.sort_by(f64::total_cmp);
        println!(
            "{mode}: p50 {:.0} ms · min {:.0} ms · max {:.0} ms ({} samples)",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1],
            t.len()
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::var("JOBKEEPER_FLINK_URL").is_err()
        || std::env::var("JOBKEEPER_FLINK_LIB").is_err()
    {
        assert!(
            !full,
            "the flink restart bench needs JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB (see docs/BENCHMARKS.md)"
        );
        println!(
            "note: flink restart bench skipped: JOBKEEPER_FLINK_URL and JOBKEEPER_FLINK_LIB are not set"
        );
        return;
    }
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 10 } else { 1 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if full && std::env::var("BENCH_ONLY").is_ok_and(|o| o == "upgrade") {
        rt.block_on(upgrades(&url, &lib, samples));
        return;
    }
    let rows = rt.block_on(measure(&url, &lib, samples));
    println!("| cancelled outside jobkeeper → resubmitted → all tasks RUNNING | p50 | max |");
    println!("|---|---|---|");
    for (job, mut t) in rows {
        t.sort_by(f64::total_cmp);
        let what = if job == "kept" {
            "checkpoints retained on cancellation (restores from the newest)"
        } else {
            "checkpoints deleted on cancellation (restarts empty)"
        };
        println!(
            "| {what}, {} samples | {:.1} ms | {:.1} ms |",
            t.len(),
            t[t.len() / 2],
            t[t.len() - 1]
        );
    }
}
