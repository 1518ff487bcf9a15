//! Helpers for the tests that run against real Apache Flink clusters: the cluster's env vars,
//! its REST answers, a job's state and restore, and a jobkeeper job's RUNNING Flink job.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Daemon, Git, config, engine_id};

/// How long a Flink job may take to reach what a test waits for (a savepoint, a restore).
pub const FLINK_LIMIT: Duration = Duration::from_secs(120);

/// The env var `var` (the cluster's URL or Flink lib folder); a clear panic when unset.
pub fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: the flink tests need running Flink clusters. Run scripts/test.sh, \
             or: scripts/flink.sh start /tmp/jk-flink 18081 2.3.0 && export \
             JOBKEEPER_FLINK_URL=http://127.0.0.1:18081 \
             JOBKEEPER_FLINK_LIB=$(scripts/flink.sh lib 2.3.0) (see scripts/test.sh for 1.20)"
        )
    })
}

/// A client for requests that may be slow (jar uploads, runs): 60 s per request.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `GET {url}{path}` as JSON; `Null` when the cluster does not answer (10 s) or with no JSON.
pub async fn rest(url: &str, path: &str) -> Value {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match client.get(format!("{url}{path}")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A job's state in the cluster's overview (`None` when the cluster does not list it).
pub async fn flink_state(url: &str, jid: &str) -> Option<String> {
    let o = rest(url, "/jobs/overview").await;
    o["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["jid"] == jid)
        .and_then(|j| j["state"].as_str().map(str::to_string))
}

/// What a job was restored from (`latest.restored` of its checkpoint stats), once it says.
pub async fn restored_from(url: &str, jid: &str) -> Value {
    let start = Instant::now();
    loop {
        let c = rest(url, &format!("/jobs/{jid}/checkpoints")).await;
        let r = &c["latest"]["restored"];
        if r.is_object() {
            return r.clone();
        }
        assert!(
            start.elapsed() < FLINK_LIMIT,
            "timed out waiting for job {jid} to report its restore: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The run id and Flink job id of `name`'s one live run once that job is RUNNING on the
/// cluster, skipping the job ids in `not` (earlier runs).
pub async fn running(d: &Daemon, url: &str, name: &str, not: &[String]) -> (i64, String) {
    let start = Instant::now();
    loop {
        if let [run] = d.live_runs(name).as_slice() {
            let jid = engine_id(run);
            if !not.contains(&jid) && flink_state(url, &jid).await.as_deref() == Some("RUNNING") {
                return (run.id, jid);
            }
        }
        assert!(
            start.elapsed() < FLINK_LIMIT,
            "timed out after {FLINK_LIMIT:?} waiting for {name} RUNNING on flink; events: {:#?}",
            d.events(name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cancels, on drop, the Flink jobs (`.1`) a test started outside jobkeeper on cluster `.0`.
pub struct CancelOnDrop(pub String, pub Vec<String>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        for jid in &self.1 {
            let _ = std::process::Command::new("curl")
                .args(["-s", "-m", "5", "-o", "/dev/null", "-X", "PATCH"])
                .arg(format!("{}/jobs/{jid}?mode=cancel", self.0))
                .status();
        }
    }
}

/// A config repo holding the example's flink-counter project (its build script and source) and
/// a daemon config with a `flink` env on `url` (savepoints to `root/savepoints`, then
/// `env_extra` inside the env's mapping: `, savepoints: {...}`), a 1 s `health.interval`, then
/// the `top_extra` lines.
pub fn counter_repo(root: &Path, url: &str, env_extra: &str, top_extra: &str) -> (Git, String) {
    let git = Git::new(root, "config");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/flink-counter");
    for f in ["build.sh", "src/example/Counter.java"] {
        git.write(
            &format!("projects/flink-counter/{f}"),
            &std::fs::read_to_string(src.join(f)).unwrap(),
        );
    }
    let extra = format!(
        "  flink: {{engine: flink, flink: {{url: \"{url}\", savepoint_dir: \"file://{}\"}}{env_extra}}}\n\
         health: {{interval: 1s}}\n{top_extra}",
        root.join("savepoints").display()
    );
    let cfg = config(root, &git, &extra);
    (git, cfg)
}

/// The example's flink-counter jar, built under `root/outside` against the Flink `lib` folder.
pub fn build_counter_jar(root: &Path, lib: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/flink-counter");
    let dir = root.join("outside");
    std::fs::create_dir_all(dir.join("src/example")).unwrap();
    std::fs::copy(src.join("build.sh"), dir.join("build.sh")).unwrap();
    std::fs::copy(
        src.join("src/example/Counter.java"),
        dir.join("src/example/Counter.java"),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("build.sh")
        .arg(lib)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("out/flink-counter.jar")
}

/// Uploads `jar` to the cluster as a script would; the cluster's jar id.
pub async fn upload_jar(url: &str, jar: &Path) -> String {
    let bytes = std::fs::read(jar).unwrap();
    let part = reqwest::multipart::Part::bytes(bytes).file_name("flink-counter.jar");
    let up: Value = http()
        .post(format!("{url}/jars/upload"))
        .multipart(reqwest::multipart::Form::new().part("jarfile", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = up["filename"].as_str().unwrap_or_else(|| panic!("{up}"));
    file.rsplit('/').next().unwrap().to_string()
}

/// Deletes an uploaded jar (running jobs keep running).
pub async fn delete_jar(url: &str, jar_id: &str) {
    let _ = http().delete(format!("{url}/jars/{jar_id}")).send().await;
}

/// Runs flink-counter `--tag tag` from the uploaded jar `jar_id` outside jobkeeper, as a
/// script would (parallelism 1, checkpoints every 500 ms); its job id once it is RUNNING.
pub async fn start_outside(url: &str, jar_id: &str, tag: &str) -> String {
    let body = serde_json::json!({
        "entryClass": "example.Counter",
        "programArgsList": ["--tag", tag, "--rate", "20"],
        "parallelism": 1,
        "flinkConfiguration": {"execution.checkpointing.interval": "500ms"},
    });
    let run: Value = http()
        .post(format!("{url}/jars/{jar_id}/run"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jid = run["jobid"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}"))
        .to_string();
    let start = Instant::now();
    while flink_state(url, &jid).await.as_deref() != Some("RUNNING") {
        assert!(start.elapsed() < FLINK_LIMIT, "job {jid} not RUNNING");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    jid
}
