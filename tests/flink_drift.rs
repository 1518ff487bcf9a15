//! A Flink job rescaled outside jobkeeper, on a real Flink 2.3.0 cluster. Flink rescales a
//! running job in place (`PUT /jobs/{id}/resource-requirements`) only under its adaptive
//! scheduler, which the shared test cluster (`JOBKEEPER_FLINK_URL`) does not run: each test
//! starts its own small cluster with `jobmanager.scheduler: adaptive` (scripts/flink.sh, free
//! port, its own temp folder, stopped at the end). It needs `JOBKEEPER_FLINK_LIB` to build the
//! flink-counter job, as tests/flink.rs does.
//!
//! Jobs at `params.parallelism: 2` are rescaled through Flink's REST API: one with
//! `drift: correct`, rescaled to 1, raises `drift` and is redeployed through a savepoint at 2 (a
//! new Flink job, restored from that savepoint, each vertex back at 2), then `recovered`; another
//! rescaled up to 3 (one of its source's subtasks then finishes) is redeployed at 2 the same way;
//! one with `drift: warn` raises `drift` once and keeps running at 1, untouched, until it is
//! rescaled back to 2 outside jobkeeper (`recovered`). A rescale made while the daemon is
//! stopped is seen by the next one, which adopts the run. A job that Flink runs at 1 on its own
//! after a TaskManager is lost (short of slots, still asking for 2) is no drift; set to 1
//! through the REST API it is.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::{Value, json};

/// A Flink 2.3.0 session cluster with the adaptive scheduler, stopped on drop.
struct AdaptiveCluster {
    dir: PathBuf,
    url: String,
}

impl AdaptiveCluster {
    /// Starts one under `dir` on a free port with `taskmanagers` TaskManagers of `slots` slots
    /// each (scripts/flink.sh waits at most 60 s for them).
    fn start(dir: &Path, taskmanagers: u32, slots: u32) -> AdaptiveCluster {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
        // Rescales take effect within a second or two instead of Flink's 10-30 s defaults.
        let extra = format!(
            "jobmanager.scheduler: adaptive\n\
             jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling: 1s\n\
             jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout: 1s\n\
             jobmanager.adaptive-scheduler.resource-stabilization-timeout: 1s\n\
             jobmanager.adaptive-scheduler.submission.resource-stabilization-timeout: 1s\n\
             taskmanager.numberOfTaskSlots: {slots}"
        );
        let cluster = AdaptiveCluster {
            dir: dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = Command::new("bash")
            .arg(&script)
            .args([
                "start",
                &dir.display().to_string(),
                &port.to_string(),
                "2.3.0",
            ])
            .env("FLINK_EXTRA_CONF", extra)
            .env("FLINK_TASKMANAGERS", taskmanagers.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "the adaptive Flink cluster did not start");
        cluster
    }

    /// Stops the TaskManager started last (SIGTERM to its pid), as a lost host would.
    fn lose_a_taskmanager(&self) {
        let pids = std::fs::read_dir(self.dir.join("pid"))
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with("taskexecutor.pid")
            })
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .unwrap();
        let pid = pids.lines().last().unwrap().trim().to_string();
        let status = Command::new("kill").arg(&pid).status().unwrap();
        assert!(status.success(), "kill {pid}");
    }
}

impl Drop for AdaptiveCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .args(["stop", &self.dir.display().to_string()])
            .status();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Flink's parallelism of each vertex of job `jid`, by vertex name.
async fn parallelism(url: &str, jid: &str) -> Vec<(String, u64)> {
    let job = rest(url, &format!("/jobs/{jid}")).await;
    job["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            (name, v["parallelism"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// Waits until job `jid` is RUNNING with every task running and each vertex at `p`.
async fn running_at(url: &str, jid: &str, p: u64) {
    let start = std::time::Instant::now();
    loop {
        let overview = rest(url, "/jobs/overview").await;
        let job = overview["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["jid"] == jid)
            .cloned()
            .unwrap_or(Value::Null);
        let all_running =
            job["state"] == "RUNNING" && job["tasks"]["running"] == job["tasks"]["total"];
        let vertices = parallelism(url, jid).await;
        if all_running && !vertices.is_empty() && vertices.iter().all(|(_, n)| *n == p) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for job {jid} RUNNING at parallelism {p}: {job} {vertices:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets every vertex of job `jid` to parallelism `p` through Flink's REST API, as an operator
/// would outside jobkeeper.
async fn rescale(url: &str, jid: &str, p: u64) {
    let job = rest(url, &format!("/jobs/{jid}")).await;
    let mut body = serde_json::Map::new();
    for v in job["vertices"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap().to_string();
        body.insert(
            id,
            json!({"parallelism": {"lowerBound": 1, "upperBound": p}}),
        );
    }
    let answer = client()
        .put(format!("{url}/jobs/{jid}/resource-requirements"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
}

/// The one live run of `name` once the daemon recorded one that is none of `not`: its Flink
/// job id.
async fn live_job(d: &Daemon, name: &str, not: &[String]) -> String {
    let start = std::time::Instant::now();
    loop {
        if let [run] = d.live_runs(name).as_slice() {
            let jid = engine_id(run);
            if !jid.is_empty() && !not.contains(&jid) {
                return jid;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for a run of {name}: {:#?}",
            d.events(name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the daemon recorded what each vertex of `name`'s live run must run at (its first
/// look at the run).
async fn first_look(d: &Daemon, name: &str) {
    wait_for("the first look at the run", Duration::from_secs(30), || {
        d.live_runs(name)
            .first()
            .is_some_and(|r| !d.store.run_parallelism(r.id).unwrap().is_empty())
    })
    .await;
}

fn counter(lib: &str, tag: &str, drift: &str) -> String {
    counter_with(lib, tag, drift, "")
}

/// [`counter`] with more Flink `conf` entries.
fn counter_with(lib: &str, tag: &str, drift: &str, conf: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
         artifact: out/flink-counter.jar\nenv: flink\nparams:\n  main_class: example.Counter\n  \
         args: [\"--tag\", \"{tag}\", \"--rate\", \"20\"]\n  parallelism: 2\n  \
         conf: {{execution.checkpointing.interval: \"500ms\"{conf}}}\n\
         restart: {{attempts: 3, window: 1h, backoff: 1s, max_backoff: 1s}}\ndrift: {drift}\n"
    )
}

/// A config repo with the flink-counter project, and a daemon config whose env `flink` is the
/// cluster at `url`.
fn setup(root: &Path, url: &str) -> (Git, String) {
    counter_repo(root, url, "", "")
}

fn count(d: &Daemon, job: &str, kind: &str) -> usize {
    d.events(job).iter().filter(|e| e.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescale_outside_jobkeeper_is_drift_corrected_or_only_warned() {
    let lib = need("JOBKEEPER_FLINK_LIB");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = AdaptiveCluster::start(&tmp.path().join("flink"), 1, 8);
    let url = cluster.url.clone();
    let (git, cfg) = setup(tmp.path(), &url);
    git.write("jobs/fixed.yaml", &counter(&lib, "fixed", "correct"));
    git.write("jobs/watched.yaml", &counter(&lib, "watched", "warn"));
    git.write("jobs/grown.yaml", &counter(&lib, "grown", "correct"));
    git.commit_push("three jobs at parallelism 2");
    let d = start(tmp.path(), &cfg).await;
    let fixed1 = live_job(&d, "fixed", &[]).await;
    let watched = live_job(&d, "watched", &[]).await;
    let grown1 = live_job(&d, "grown", &[]).await;
    running_at(&url, &fixed1, 2).await;
    running_at(&url, &watched, 2).await;
    running_at(&url, &grown1, 2).await;
    // The daemon's first look at a RUNNING run records what it was submitted at; a rescale
    // before it would be taken for the submitted figures.
    for job in ["fixed", "watched", "grown"] {
        first_look(&d, job).await;
    }
    assert_eq!(count(&d, "fixed", "drift"), 0, "{:#?}", d.events("fixed"));

    rescale(&url, &fixed1, 1).await;
    rescale(&url, &watched, 1).await;
    // Up to 3: the source's 2 splits leave its third subtask with nothing to read, and it
    // finishes; the job is still stopped with a savepoint and redeployed at 2.
    rescale(&url, &grown1, 3).await;

    // drift: correct → a new Flink job from a savepoint of the rescaled one, at 2 again.
    let fixed2 = live_job(&d, "fixed", std::slice::from_ref(&fixed1)).await;
    running_at(&url, &fixed2, 2).await;
    let drift = d
        .events("fixed")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap_or_else(|| panic!("no drift: {:#?}", d.events("fixed")));
    assert!(
        drift.message.contains("rescaled outside jobkeeper")
            && drift.message.contains("runs at 1, not 2")
            && drift.message.contains("drift: correct"),
        "{drift:?}"
    );
    let old = d
        .runs("fixed")
        .into_iter()
        .find(|r| engine_id(r) == fixed1)
        .unwrap();
    let savepoint = d
        .store
        .savepoints("fixed", 10)
        .unwrap()
        .into_iter()
        .find(|s| s.kind == "savepoint" && s.run_id == Some(old.id))
        .unwrap_or_else(|| panic!("the rescaled run was stopped with a savepoint: {old:?}"));
    let since = std::time::Instant::now();
    let restored = loop {
        let c = rest(&url, &format!("/jobs/{fixed2}/checkpoints")).await;
        if c["latest"]["restored"].is_object() {
            break c["latest"]["restored"].clone();
        }
        assert!(since.elapsed() < Duration::from_secs(60), "no restore: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        restored["external_path"].as_str(),
        Some(savepoint.location.as_str()),
        "{restored}"
    );
    assert_eq!(
        rest(&url, &format!("/jobs/{fixed1}")).await["state"],
        "FINISHED",
        "the rescaled job was stopped with a savepoint"
    );
    wait_for("recovered", Duration::from_secs(30), || {
        d.has_event("fixed", "recovered")
    })
    .await;
    assert_eq!(count(&d, "fixed", "drift"), 1, "{:#?}", d.events("fixed"));
    assert!(!d.has_event("fixed", "failed"), "{:#?}", d.events("fixed"));
    assert_eq!(d.job("fixed").unwrap().state, "running");

    let grown2 = live_job(&d, "grown", std::slice::from_ref(&grown1)).await;
    running_at(&url, &grown2, 2).await;
    let drift = d
        .events("grown")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap_or_else(|| panic!("no drift: {:#?}", d.events("grown")));
    assert!(drift.message.contains("runs at 3, not 2"), "{drift:?}");
    // Its state comes along: the stop's savepoint, or, when Flink could not take one of the
    // upscaled job (its idle source subtask finished while it was busy rescaling), the latest
    // checkpoint the rescaled run left. Never an empty start.
    let grown_old = d
        .runs("grown")
        .into_iter()
        .find(|r| engine_id(r) == grown1)
        .unwrap();
    let kept = d
        .store
        .savepoints("grown", 10)
        .unwrap()
        .into_iter()
        .find(|s| s.run_id == Some(grown_old.id))
        .unwrap_or_else(|| panic!("no state kept: {:#?}", d.events("grown")));
    let restored = restored_from(&url, &grown2).await;
    assert_eq!(
        restored["external_path"].as_str(),
        Some(kept.location.as_str()),
        "{restored}"
    );

    // drift: warn → one drift, the job left running at 1.
    wait_for("drift on watched", Duration::from_secs(60), || {
        d.has_event("watched", "drift")
    })
    .await;
    let drift = d
        .events("watched")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap();
    assert!(
        drift.message.contains("runs at 1, not 2") && drift.message.contains("drift: warn"),
        "{drift:?}"
    );
    // Several sweeps later: still the same run at 1, one drift for the incident.
    d.sweeps_pass(4, FLINK_LIMIT).await;
    running_at(&url, &watched, 1).await;
    assert_eq!(d.runs("watched").len(), 1, "{:#?}", d.runs("watched"));
    assert_eq!(engine_id(&d.live_runs("watched")[0]), watched);
    assert_eq!(
        count(&d, "watched", "drift"),
        1,
        "{:#?}",
        d.events("watched")
    );
    assert!(!d.has_event("watched", "recovered"));

    // Rescaled back outside jobkeeper: the incident clears.
    rescale(&url, &watched, 2).await;
    wait_for("recovered on watched", Duration::from_secs(60), || {
        d.has_event("watched", "recovered")
    })
    .await;
    assert_eq!(d.runs("watched").len(), 1, "{:#?}", d.runs("watched"));

    // A rescale while no daemon watches: the next daemon adopts the run and compares it with
    // what the store kept of it.
    let mut d = d;
    d.stop().await;
    rescale(&url, &fixed2, 1).await;
    running_at(&url, &fixed2, 1).await;
    let d = start(tmp.path(), &cfg).await;
    let fixed3 = live_job(&d, "fixed", &[fixed1.clone(), fixed2.clone()]).await;
    running_at(&url, &fixed3, 2).await;
    assert_eq!(count(&d, "fixed", "drift"), 2, "{:#?}", d.events("fixed"));
    assert_eq!(
        count(&d, "watched", "drift"),
        1,
        "{:#?}",
        d.events("watched")
    );
    assert_eq!(engine_id(&d.live_runs("watched")[0]), watched);
    drop(d);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_short_of_slots_after_a_taskmanager_is_lost_is_no_drift_a_rescale_then_is() {
    let lib = need("JOBKEEPER_FLINK_LIB");
    let tmp = tempfile::tempdir().unwrap();
    // Two TaskManagers of one slot each: the job at 2 needs both.
    let cluster = AdaptiveCluster::start(&tmp.path().join("flink"), 2, 1);
    let url = cluster.url.clone();
    let (git, cfg) = setup(tmp.path(), &url);
    // Flink restarts the job itself when a TaskManager goes (the adaptive scheduler then runs
    // it with the slots left).
    let restarts = ", restart-strategy.type: fixed-delay, \
                    restart-strategy.fixed-delay.attempts: \"1000\", \
                    restart-strategy.fixed-delay.delay: \"500ms\"";
    git.write(
        "jobs/elastic.yaml",
        &counter_with(&lib, "elastic", "correct", restarts),
    );
    git.commit_push("a job on two TaskManagers");
    let d = start(tmp.path(), &cfg).await;
    let jid = live_job(&d, "elastic", &[]).await;
    running_at(&url, &jid, 2).await;
    first_look(&d, "elastic").await;

    cluster.lose_a_taskmanager();
    running_at(&url, &jid, 1).await;
    // Several sweeps later: Flink runs it at 1 for want of slots, still asking for 2: no drift.
    d.sweeps_pass(4, FLINK_LIMIT).await;
    assert_eq!(
        count(&d, "elastic", "drift"),
        0,
        "{:#?}",
        d.events("elastic")
    );
    assert_eq!(d.runs("elastic").len(), 1, "{:#?}", d.runs("elastic"));
    assert_eq!(engine_id(&d.live_runs("elastic")[0]), jid);

    // Now set to 1 through Flink's REST API: the figure it runs at, so its task count does
    // not change, but it no longer asks for 2: a rescale, corrected through a savepoint.
    rescale(&url, &jid, 1).await;
    let jid2 = live_job(&d, "elastic", std::slice::from_ref(&jid)).await;
    let drift = d
        .events("elastic")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap_or_else(|| panic!("no drift: {:#?}", d.events("elastic")));
    assert!(drift.message.contains("runs at 1, not 2"), "{drift:?}");
    // One slot left: the cluster runs the corrected job at 1 too; it asks for 2 again.
    running_at(&url, &jid2, 1).await;
    let requested = rest(&url, &format!("/jobs/{jid2}/resource-requirements")).await;
    assert!(
        requested
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["parallelism"]["upperBound"] == 2),
        "{requested}"
    );
    wait_for("recovered", Duration::from_secs(30), || {
        d.has_event("elastic", "recovered")
    })
    .await;
    assert_eq!(
        count(&d, "elastic", "drift"),
        1,
        "{:#?}",
        d.events("elastic")
    );
    drop(d);
    drop(cluster);
}
