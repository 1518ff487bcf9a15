//! Helpers of the Flink fleet benches (`adopt`, `flink-health`): the flink-counter jar built and
//! uploaded once, jobs started on the cluster outside jobkeeper, waiting for the store, and
//! cleaning up every job a bench made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jobkeeper::store::Blocking;

/// Builds the flink-counter example (copied under `root/project`) against `lib`: the project
/// folder.
pub fn built_counter(root: &Path, lib: &str) -> PathBuf {
    let project = super::example_project(root, "flink-counter");
    let built = Command::new("sh")
        .arg("build.sh")
        .arg(lib)
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    project
}

/// Uploads the project's built jar to the cluster: its jar id.
pub async fn upload(http: &reqwest::Client, url: &str, project: &Path) -> String {
    let jar = std::fs::read(project.join("out/flink-counter.jar")).unwrap();
    let part = reqwest::multipart::Part::bytes(jar).file_name("flink-counter.jar");
    let up: serde_json::Value = http
        .post(format!("{url}/jars/upload"))
        .multipart(reqwest::multipart::Form::new().part("jarfile", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    up["filename"]
        .as_str()
        .unwrap_or_else(|| panic!("jar upload: {up}"))
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// Starts flink-counter with `args` outside jobkeeper (`POST /jars/{jar}/run`, parallelism
/// 1): the job id.
pub async fn run_outside(http: &reqwest::Client, url: &str, jar_id: &str, args: &[&str]) -> String {
    let body = serde_json::json!({
        "entryClass": "example.Counter",
        "programArgsList": args,
        "parallelism": 1,
    });
    let v: serde_json::Value = http
        .post(format!("{url}/jars/{jar_id}/run"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["jobid"]
        .as_str()
        .unwrap_or_else(|| panic!("run: {v}"))
        .to_string()
}

/// Waits (≤ `limit`) until every job of `ids` is RUNNING with all its tasks.
pub async fn all_running(http: &reqwest::Client, url: &str, ids: &[String], limit: Duration) {
    let t = Instant::now();
    loop {
        let jobs = super::flink_jobs(http, url).await;
        if ids
            .iter()
            .all(|id| jobs.iter().any(|(j, s)| j == id && s == "RUNNING"))
        {
            return;
        }
        assert!(t.elapsed() < limit, "jobs not all RUNNING: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (≤ `limit`) until each job of `names` is `running` in the store and has an event of
/// `kind`.
pub async fn supervised(store: &Blocking, names: &[String], kind: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        let done = names.iter().all(|n| {
            store
                .job(n)
                .ok()
                .flatten()
                .is_some_and(|j| j.state == "running")
                && store
                    .events(Some(n), 50)
                    .unwrap_or_default()
                    .iter()
                    .any(|e| e.kind == kind)
        });
        if done {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "jobs not all running with `{kind}`: {:#?}",
            names
                .iter()
                .filter_map(|n| Some((n, store.job(n).ok()??.state)))
                .filter(|(_, s)| *s != "running")
                .take(5)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels every job of `ids`, and every Flink job any run of `names` in `store` had.
pub async fn cancel_all(
    http: &reqwest::Client,
    url: &str,
    store: Option<&Blocking>,
    names: &[String],
    ids: &[String],
) {
    let mut all: Vec<String> = ids.to_vec();
    if let Some(store) = store {
        for n in names {
            for r in store.runs(n, 1000).unwrap_or_default() {
                if let Some(h) = r.handle {
                    all.push(h.engine_id);
                }
            }
        }
    }
    let live: Vec<String> = super::flink_jobs(http, url)
        .await
        .into_iter()
        .filter(|(_, s)| !matches!(s.as_str(), "FINISHED" | "CANCELED" | "FAILED"))
        .map(|(j, _)| j)
        .collect();
    for id in all.iter().filter(|id| live.contains(id)) {
        let _ = http
            .patch(format!("{url}/jobs/{id}?mode=cancel"))
            .send()
            .await;
    }
}

/// The daemon config of the Flink fleet benches: env `flink` on `url`, `health.interval`.
pub fn config(root: &Path, bare: &Path, url: &str, interval: &str) -> PathBuf {
    let text = format!(
        "repo: {{url: {}, branch: main, path: jobs, poll: 60s}}\nstate_dir: {}\nlisten: 127.0.0.1:0\n\
         health: {{interval: {interval}}}\nenvs:\n  flink: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}}}\n",
        bare.display(),
        root.join("state").display(),
        root.join("savepoints").display()
    );
    let cfg = root.join("config.yaml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A flink-counter job file: `args` (quoted, comma-separated), extra `conf` entries and extra
/// top-level lines.
pub fn counter_job(project: &Path, lib: &str, args: &str, conf: &str, extra: &str) -> String {
    format!(
        "project: {{repo: {}, branch: main, build: sh build.sh \"{lib}\", artifact: out/flink-counter.jar}}\n\
         env: flink\n{extra}params:\n  main_class: example.Counter\n  args: [{args}]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"1s\"{conf}}}\n",
        project.display()
    )
}

/// `git add -A`, commit and push of the work tree `work`.
pub fn push(work: &Path, msg: &str) {
    super::git(work, &["add", "-A"]);
    super::git(work, &["commit", "-qm", msg]);
    super::git(work, &["push", "-q", "origin", "main"]);
}
