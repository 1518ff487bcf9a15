//! The `yarn` engine end to end: the real daemon, a REAL Flink 1.20.3 session cluster running
//! the jobs (it stands as each application's JobManager), a STAND-IN ResourceManager
//! (tests/support/yarn_rm.rs, written from Hadoop's ResourceManagerRest documentation: no
//! Hadoop can be installed here) and a STAND-IN `flink` CLI (tests/support/flink_standin.py,
//! which checks its argv as the real CLI of its version would, records argv and environment,
//! runs the job on the real Flink cluster and registers the application in the stand-in RM).
//!
//! Needs `JOBKEEPER_FLINK_1_20_URL` and `JOBKEEPER_FLINK_1_20_LIB` (scripts/test.sh starts the
//! cluster); without them these tests fail (they do not skip).

mod common;
#[path = "support/yarn_rm.rs"]
mod yarn_rm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::Value;
use yarn_rm::StandinRm;

const LIMIT: Duration = Duration::from_secs(90);

/// The Flink 1.20.3 cluster and its lib folder.
fn cluster() -> (String, String) {
    (
        need("JOBKEEPER_FLINK_1_20_URL"),
        need("JOBKEEPER_FLINK_1_20_LIB"),
    )
}

/// A Flink home for the stand-in CLI: `bin/flink` is the stand-in, `lib/` holds the real
/// distribution's dist jar (its version is read from the name).
fn flink_home(root: &Path, lib: &str, rm: &StandinRm, flink: &str) -> PathBuf {
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
fn calls(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A config repo with the flink-counter project and a daemon config whose `yarn` env has
/// `yarn_extra` in its block (`rm`, `flink_home` and savepoints are set here).
fn setup(root: &Path, rms: &[String], home: &Path, yarn_extra: &str) -> (Git, String) {
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
fn counter(lib: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n\
         env: yarn\nparams:\n  main_class: example.Counter\n  args: [{}]\n  parallelism: 1\n\
         \x20 conf: {{execution.checkpointing.interval: \"500ms\"}}\n",
        args.join(", ")
    )
}

/// Cancels, on drop, the Flink jobs of every application the stand-in RM knows.
struct CancelApps(StandinRm);
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
async fn running_app(
    d: &Daemon,
    rm: &StandinRm,
    flink: &str,
    name: &str,
    not: &[String],
) -> (i64, String, String) {
    let start = std::time::Instant::now();
    loop {
        if let [run] = d.live_runs(name).as_slice() {
            let id = engine_id(run);
            if let Some((app, jid)) = id.split_once('/')
                && !not.contains(&id)
                && rm.app(app).is_some_and(|a| a.state == "RUNNING")
                && flink_state(flink, jid).await.as_deref() == Some("RUNNING")
            {
                return (run.id, app.to_string(), jid.to_string());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_mode_deploys_upgrades_through_a_savepoint_and_removal_stops_it() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    git.write("jobs/counter.yaml", &counter(&lib, &["--tag", "v1"]));
    git.commit_push("a yarn job");
    let d = start(tmp.path(), &cfg).await;
    let (run1, app1, jid1) = running_app(&d, &rm, &flink, "counter", &[]).await;
    assert_eq!(d.job("counter").unwrap().state, "running");

    // What the CLI got: Flink 1.20's `run -t yarn-application`, the job's name, tags, queue
    // and fixed job id; HADOOP_USER_NAME for simple auth; nothing of Kerberos.
    let call = &calls(&home)[0];
    let argv: Vec<&str> = call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&argv[..3], ["run", "-t", "yarn-application"], "{argv:?}");
    for want in [
        "-Dyarn.application.name=counter".to_string(),
        "-Dyarn.application.queue=root.stream".to_string(),
        format!("-D$internal.pipeline.job-id={jid1}"),
    ] {
        assert!(argv.contains(&want.as_str()), "{want} in {argv:?}");
    }
    let app = rm.app(&app1).unwrap();
    assert!(
        app.tags.contains(&"jobkeeper".to_string()),
        "{:?}",
        app.tags
    );
    assert!(
        app.tags.contains(&format!("jk-run-{jid1}")),
        "{:?}",
        app.tags
    );
    assert_eq!(app.queue, "root.stream");
    assert_eq!(call["env"]["HADOOP_USER_NAME"], "flink");
    assert!(
        call["env"]["HADOOP_CONF_DIR"]
            .as_str()
            .unwrap()
            .ends_with("hadoop-conf")
    );
    assert!(call["env"].get("KRB5CCNAME").is_none(), "{}", call["env"]);
    assert!(rm.with(|s| s.users.iter().all(|u| u == "flink") && !s.users.is_empty()));

    // Health sweeps: one apps list per sweep, no lookups of a live application.
    let lookups = rm.lookups.load(std::sync::atomic::Ordering::Relaxed);
    d.sweeps_pass(3, LIMIT).await;
    assert_eq!(
        rm.lookups.load(std::sync::atomic::Ordering::Relaxed),
        lookups,
        "a live app is never looked up alone"
    );

    // Upgrade: stop with a savepoint at the application's JobManager; the application
    // finishes; the new one starts from the savepoint.
    git.write("jobs/counter.yaml", &counter(&lib, &["--tag", "v2"]));
    git.commit_push("new args");
    let first = format!("{app1}/{jid1}");
    let (run2, app2, jid2) =
        running_app(&d, &rm, &flink, "counter", std::slice::from_ref(&first)).await;
    assert_ne!((run1, &app1), (run2, &app2));
    let old = rm.app(&app1).unwrap();
    assert_eq!(
        (old.state.as_str(), old.final_status.as_str()),
        ("FINISHED", "SUCCEEDED")
    );
    let sps = d.store.savepoints("counter", 10).unwrap();
    assert_eq!(sps.len(), 1, "{sps:?}");
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str())
    );
    let argv2 = calls(&home)[1]["argv"].to_string();
    assert!(
        argv2.contains(&format!(
            "-Dexecution.state-recovery.path={}",
            sps[0].location
        )),
        "{argv2}"
    );

    // Removal: stopped with a savepoint; the application is over.
    git.remove("jobs/counter.yaml");
    git.commit_push("remove it");
    wait_for("counter stopped", LIMIT, || {
        d.job("counter").is_some_and(|j| j.state == "stopped")
    })
    .await;
    wait_for("app2 over", LIMIT, || {
        rm.app(&app2).is_some_and(|a| a.state != "RUNNING")
    })
    .await;
    assert_eq!(
        flink_state(&flink, &jid2).await.as_deref(),
        Some("FINISHED")
    );
    assert_eq!(d.store.savepoints("counter", 10).unwrap().len(), 2);
}
