//! What the yarn tests share: the stand-in CLI's Flink home, the config repo and daemon config
//! with a `yarn` env, the flink-counter job file, and waits on the stand-in RM.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::flink::*;
use super::common::*;
use super::yarn_rm::StandinRm;
use serde_json::Value;

pub const LIMIT: Duration = Duration::from_secs(90);

/// The Flink 1.20.3 cluster and its lib folder.
pub fn cluster() -> (String, String) {
    (
        need("JOBKEEPER_FLINK_1_20_URL"),
        need("JOBKEEPER_FLINK_1_20_LIB"),
    )
}

/// The Flink 2.3.0 cluster and its lib folder.
pub fn cluster_2_3() -> (String, String) {
    (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"))
}

/// A Flink home for the stand-in CLI: `bin/flink` is the stand-in, `lib/` holds the real
/// distribution's dist jar (its version is read from the name).
pub fn flink_home(root: &Path, lib: &str, rm: &StandinRm, flink: &str) -> PathBuf {
    let home = root.join("flink-home");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::create_dir_all(home.join("lib")).unwrap();
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/flink_standin.py");
    std::os::unix::fs::symlink(standin, home.join("bin/flink")).unwrap();
    let dist = std::fs::read_dir(lib)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("flink-dist"))
        .expect("a flink-dist jar");
    std::os::unix::fs::symlink(dist.path(), home.join("lib").join(dist.file_name())).unwrap();
    let cfg = serde_json::json!({"rm": rm.url(), "flink": flink});
    std::fs::write(home.join("standin.json"), cfg.to_string()).unwrap();
    home
}

/// The stand-in CLI's recorded calls.
pub fn calls(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A config repo with the flink-counter project and a daemon config whose `yarn` env has
/// `yarn_extra` in its block (`rm`, `flink_home` and savepoints are set here).
pub fn setup(root: &Path, rms: &[String], home: &Path, yarn_extra: &str) -> (Git, String) {
    let git = Git::new(root, "config");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo/projects/flink-counter");
    git.write(
        "projects/flink-counter/build.sh",
        &std::fs::read_to_string(src.join("build.sh")).unwrap(),
    );
    git.write(
        "projects/flink-counter/src/example/Counter.java",
        &std::fs::read_to_string(src.join("src/example/Counter.java")).unwrap(),
    );
    let rms: Vec<String> = rms.iter().map(|r| format!("\"{r}\"")).collect();
    let extra = format!(
        "  yarn:\n    engine: yarn\n    yarn: {{rm: [{}], flink_home: \"{}\", hadoop_conf_dir: \"{}\", \
         queue: root.stream, savepoint_dir: \"file://{}\", accepted_timeout: 4s{yarn_extra}}}\n\
         health: {{interval: 1s}}\n",
        rms.join(", "),
        home.display(),
        root.join("hadoop-conf").display(),
        root.join("savepoints").display(),
    );
    let cfg = config(root, &git, &extra);
    (git, cfg)
}

/// A flink-counter job file on the yarn env.
pub fn counter(lib: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n\
         env: yarn\nparams:\n  main_class: example.Counter\n  args: [{}]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"500ms\"}}\n",
        args.join(", ")
    )
}

/// Cancels, on drop, the Flink jobs of every application the stand-in RM knows.
pub struct CancelApps(pub StandinRm);
impl Drop for CancelApps {
    fn drop(&mut self) {
        for a in self.0.with(|s| s.apps.clone()) {
            if !a.jid.is_empty() {
                let _ = std::process::Command::new("curl")
                    .args(["-s", "-m", "5", "-o", "/dev/null", "-X", "PATCH"])
                    .arg(format!("{}/jobs/{}?mode=cancel", a.flink, a.jid))
                    .status();
            }
        }
    }
}

/// The application id and Flink job id of `name`'s one live run once its application is
/// RUNNING and its Flink job RUNNING, skipping the engine ids in `not`.
pub async fn running_app(
    d: &Daemon,
    rm: &StandinRm,
    flink: &str,
    name: &str,
    not: &[String],
) -> (i64, String, String) {
    let start = std::time::Instant::now();
    loop {
        if let [run] = d.live_runs(name).as_slice() {
            let app = engine_id(run);
            if let Some(a) = rm
                .app(&app)
                .filter(|a| a.state == "RUNNING" && !not.contains(&app))
                && flink_state(flink, &a.jid).await.as_deref() == Some("RUNNING")
            {
                return (run.id, app, a.jid);
            }
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {name} RUNNING on yarn; events: {:#?}",
            d.events(name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP proxy on a free loopback port in front of a Flink cluster, standing as one
/// application's AM: dropping it is the AM dying (its JobManager's address stops answering). It
/// counts the savepoint disposals (`POST /savepoint-disposal`) sent through it.
pub struct AmProxy {
    pub port: u16,
    pub disposals: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl AmProxy {
    pub async fn start(flink: &str) -> AmProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = flink.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let disposals = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = disposals.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let counter = counter.clone();
                conns.spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.split();
                    let (mut ro, mut wo) = out.split();
                    let up = async {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let n = ri.read(&mut buf).await?;
                            if n == 0 {
                                break;
                            }
                            let needle = b"POST /savepoint-disposal ";
                            if buf[..n].windows(needle.len()).any(|w| w == needle) {
                                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            wo.write_all(&buf[..n]).await?;
                        }
                        wo.shutdown().await
                    };
                    let down = tokio::io::copy(&mut ro, &mut wi);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        AmProxy {
            port,
            disposals,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for AmProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets (or with `None` removes) the address the stand-in CLI registers as an application's
/// JobManager.
pub fn set_am(home: &Path, am: Option<&str>) {
    let file = home.join("standin.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    match am {
        Some(a) => cfg["am"] = Value::String(a.to_string()),
        None => {
            cfg.as_object_mut().unwrap().remove("am");
        }
    }
    std::fs::write(file, cfg.to_string()).unwrap();
}
