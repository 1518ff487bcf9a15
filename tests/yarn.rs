//! The `yarn` engine end to end: the real daemon, a REAL Flink 1.20.3 session cluster running
//! the jobs (it stands as each application's JobManager), a STAND-IN ResourceManager
//! (tests/support/yarn_rm.rs, written from Hadoop's ResourceManagerRest documentation: no
//! Hadoop can be installed here) and a STAND-IN `flink` CLI (tests/support/flink_standin.py,
//! which checks its argv as the real CLI of its version would, records argv and environment,
//! runs the job on the real Flink cluster and registers the application in the stand-in RM).
//!
//! The application-mode test runs on 2.3.0 too. Needs `JOBKEEPER_FLINK_1_20_URL` and
//! `JOBKEEPER_FLINK_1_20_LIB`, and for 2.3.0 `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB` (scripts/test.sh starts the
//! cluster); without them these tests fail (they do not skip).

mod common;
#[path = "support/yarn_env.rs"]
mod yarn_env;
#[path = "support/yarn_rm.rs"]
mod yarn_rm;

use common::flink::*;
use common::*;
use yarn_env::*;
use yarn_rm::StandinRm;

mod application_mode_deploys_upgrades_through_a_savepoint_and_removal_stops_it {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flink_1_20() {
        let (flink, lib) = super::cluster();
        super::application_mode(flink, lib).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flink_2_3() {
        let (flink, lib) = super::cluster_2_3();
        super::application_mode(flink, lib).await
    }
}

/// Deploy, savepoint upgrade and removal in application mode on the cluster at `flink`.
async fn application_mode(flink: String, lib: String) {
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

    // What the CLI got: `run-application -t yarn-application` on 1.x, `run -t
    // yarn-application` on 2.x, the job's name, tags, queue and fixed job id; HADOOP_USER_NAME
    // for simple auth; nothing of Kerberos.
    let call = &calls(&home)[0];
    let argv: Vec<&str> = call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let major = jobkeeper::engine::yarn::submit::dist_version(&home)
        .unwrap()
        .major;
    let action = if major >= 2 { "run" } else { "run-application" };
    assert_eq!(&argv[..3], [action, "-t", "yarn-application"], "{argv:?}");
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
    let (run2, app2, jid2) =
        running_app(&d, &rm, &flink, "counter", std::slice::from_ref(&app1)).await;
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

/// A CLI that exits 1, a CLI that hangs with its application ACCEPTED (a full queue), and an RM
/// that answers HTML: each gives a clear event, and the job already running is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cli_a_hanging_cli_and_an_html_rm_are_named_and_nothing_running_stops() {
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
    git.write("jobs/keeper.yaml", &counter(&lib, &["--tag", "k"]));
    git.commit_push("a job that keeps running");
    let d = start(tmp.path(), &cfg).await;
    let (run, app, jid) = running_app(&d, &rm, &flink, "keeper", &[]).await;

    // The CLI exits 1: deploy_failed with its own words; no application is left.
    std::fs::write(home.join("mode"), "fail").unwrap();
    git.write("jobs/refused.yaml", &counter(&lib, &["--tag", "r"]));
    git.commit_push("a job the CLI refuses");
    wait_for("deploy_failed of refused", LIMIT, || {
        d.has_event("refused", "deploy_failed")
    })
    .await;
    let e = d
        .events("refused")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        e.message.contains("the Flink CLI failed (exit status: 1)"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("queue root.full does not exist"),
        "{}",
        e.message
    );
    assert!(rm.apps_named("refused").is_empty());

    // The CLI hangs with its application ACCEPTED: after accepted_timeout (4 s) the CLI is
    // stopped, the application killed, and deploy_failed says so.
    std::fs::write(home.join("mode"), "hang").unwrap();
    git.write("jobs/queued.yaml", &counter(&lib, &["--tag", "q"]));
    git.commit_push("a job that waits in a full queue");
    wait_for("deploy_failed of queued", LIMIT, || {
        d.has_event("queued", "deploy_failed")
    })
    .await;
    let e = d
        .events("queued")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        e.message
            .contains("stayed ACCEPTED in queue root.stream for 4s and was killed"),
        "{}",
        e.message
    );
    let queued = rm.apps_named("queued");
    assert!(queued.iter().all(|a| a.state == "KILLED"), "{queued:?}");
    assert!(!queued.is_empty());
    let standin_alive = std::process::Command::new("pgrep")
        .args(["-f", &home.join("bin/flink").display().to_string()])
        .output()
        .unwrap();
    assert!(
        standin_alive.stdout.is_empty(),
        "the hanging CLI was stopped"
    );
    std::fs::remove_file(home.join("mode")).unwrap();

    // The RM answers an HTML login page: engine_unreachable names it; nothing is stopped.
    rm.with(|s| s.html = true);
    wait_for("engine_unreachable", LIMIT, || {
        !events_of(&d.store, "engine_unreachable").is_empty()
    })
    .await;
    let e = &events_of(&d.store, "engine_unreachable")[0];
    assert!(
        e.message.contains("text/html") && e.message.contains("<!DOCTYPE html>"),
        "{}",
        e.message
    );
    d.sweeps_pass(2, LIMIT).await;
    rm.with(|s| s.html = false);
    wait_for("engine_reachable", LIMIT, || {
        !events_of(&d.store, "engine_reachable").is_empty()
    })
    .await;
    d.sweeps_pass(2, LIMIT).await;
    assert_eq!(
        d.live_runs("keeper")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![run]
    );
    assert_eq!(rm.app(&app).unwrap().state, "RUNNING");
    assert_eq!(flink_state(&flink, &jid).await.as_deref(), Some("RUNNING"));
    assert!(!d.has_event("keeper", "failed") && !d.has_event("keeper", "restarted"));
}

/// With several RMs the active one is found through `cluster/info` (an RM that does not answer
/// and a standby are passed over); when no RM is active the daemon waits (engine_unreachable),
/// never failing or resubmitting the running job; a forgotten application is a vanished run,
/// started again from the newest checkpoint read while it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_rm_is_found_no_active_rm_means_waiting_and_a_forgotten_app_vanished() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let active = StandinRm::start().await;
    let standby = StandinRm::start().await;
    standby.with(|s| s.standby = true);
    let _cancel = CancelApps(active.clone());
    let home = flink_home(tmp.path(), &lib, &active, &flink);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (git, cfg) = setup(
        tmp.path(),
        &[dead, standby.url(), active.url()],
        &home,
        ", auth: simple, user: flink",
    );
    git.write("jobs/ha.yaml", &counter(&lib, &["--tag", "ha"]));
    git.commit_push("a job");
    let d = start(tmp.path(), &cfg).await;
    let (run, app, _) = running_app(&d, &active, &flink, "ha", &[]).await;
    assert_eq!(
        standby.lists.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a standby is never asked for apps"
    );

    // The active RM fails over to standby: nobody is active; the daemon waits.
    active.with(|s| s.standby = true);
    wait_for("engine_unreachable", LIMIT, || {
        !events_of(&d.store, "engine_unreachable").is_empty()
    })
    .await;
    let e = &events_of(&d.store, "engine_unreachable")[0];
    assert!(
        e.message.contains("no active ResourceManager"),
        "{}",
        e.message
    );
    d.sweeps_pass(3, LIMIT).await;
    active.with(|s| s.standby = false);
    d.sweeps_pass(3, LIMIT).await;
    assert_eq!(
        d.live_runs("ha").iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run]
    );
    assert!(!d.has_event("ha", "failed"));

    // The application ends and the RM forgets it (past max-completed-applications): 404,
    // vanished, and the service job is started again from the newest checkpoint the sweeps
    // read from its JobManager while it ran (no JobManager can be asked for it any more).
    let kept = d.state_dir.join(format!("yarn-checkpoints/{app}.json"));
    wait_for("a kept checkpoint", LIMIT, || kept.is_file()).await;
    let forgotten = active.app(&app).unwrap();
    let _cancel_forgotten = CancelOnDrop(flink.clone(), vec![forgotten.jid.clone()]);
    // The stand-in AM stops following it; its Flink job ends; the RM forgets it.
    active.with(|s| {
        if let Some(a) = s.apps.iter_mut().find(|a| a.id == app) {
            a.jid.clear();
        }
    });
    reqwest::Client::new()
        .patch(format!("{flink}/jobs/{}?mode=cancel", forgotten.jid))
        .send()
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while flink_state(&flink, &forgotten.jid).await.as_deref() != Some("CANCELED") {
        assert!(t0.elapsed() < LIMIT, "the forgotten job never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    active.with(|s| s.apps.retain(|a| a.id != app));
    let (run2, _, jid2) = running_app(&d, &active, &flink, "ha", std::slice::from_ref(&app)).await;
    assert_ne!(run2, run);
    let old = d.runs("ha").into_iter().find(|r| r.id == run).unwrap();
    assert_ne!(old.state, "running", "{old:?}");
    let restored = restored_from(&flink, &jid2).await;
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert!(
        path.contains(&format!("{}/chk-", forgotten.jid)),
        "{restored}"
    );
}

/// Session mode: the env names a yarn-session application (here: the real Flink cluster,
/// registered in the stand-in RM as a RUNNING application); jobs are submitted over its
/// JobManager's REST API, upgraded through savepoints, and stopped there, with no CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_runs_jobs_in_the_yarn_session_found_through_the_rm() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let http = reqwest::Client::new();
    let reg: serde_json::Value = http
        .post(format!("{}/standin/apps", rm.url()))
        .json(&serde_json::json!({"name": "flink-session", "tags": "", "queue": "root.stream"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = reg["id"].as_str().unwrap().to_string();
    let am = flink.trim_start_matches("http://").to_string();
    http.post(format!("{}/standin/apps", rm.url()))
        .json(&serde_json::json!({"id": session, "state": "RUNNING", "am_rpc": am}))
        .send()
        .await
        .unwrap();
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink, session: flink-session",
    );
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{flink}/jobs/{{id}}?mode=cancel"),
    };
    git.write("jobs/insession.yaml", &counter(&lib, &["--tag", "s1"]));
    git.commit_push("a job in the session");
    let d = start(tmp.path(), &cfg).await;
    let (run1, jid1) = running(&d, &flink, "insession", &[]).await;
    assert!(calls(&home).is_empty(), "session mode uses no CLI");
    assert!(!jid1.contains('/'), "a Flink job id: {jid1}");
    let handle = d.runs("insession")[0].handle.clone().unwrap();
    assert_eq!(
        handle.cluster.as_deref(),
        Some(format!("yarn {}", rm.url()).as_str())
    );

    git.write("jobs/insession.yaml", &counter(&lib, &["--tag", "s2"]));
    git.commit_push("upgrade");
    let (run2, jid2) = running(&d, &flink, "insession", std::slice::from_ref(&jid1)).await;
    assert_ne!(run1, run2);
    assert_eq!(
        flink_state(&flink, &jid1).await.as_deref(),
        Some("FINISHED")
    );
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        rm.app(&session).unwrap().state,
        "RUNNING",
        "the session stays"
    );
}

/// An application started outside jobkeeper (by an operator's `flink run-application -t
/// yarn-application`, no jobkeeper tags) is listed as unmanaged, `jobkeeper import` writes a job file adopting it
/// by name, and `adopt:` takes it over without stopping or submitting it; its upgrade then goes
/// through a savepoint taken at its own JobManager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_started_outside_is_listed_imported_and_adopted_by_name() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let jar = build_counter_jar(tmp.path(), &lib);
    let out = std::process::Command::new(home.join("bin/flink"))
        .args([
            "run-application",
            "-t",
            "yarn-application",
            "-Dyarn.application.name=legacy-etl",
        ])
        .arg("-Dpipeline.name=legacy-etl")
        .arg("-Dexecution.checkpointing.interval=500ms")
        .args(["-c", "example.Counter"])
        .arg(&jar)
        .args(["--tag", "legacy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let legacy = rm.apps_named("legacy-etl").remove(0);
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    git.commit_push("nothing yet");
    let d = start(tmp.path(), &cfg).await;

    // Listed as unmanaged.
    wait_for_async_unmanaged(&d, &legacy.id).await;
    // `jobkeeper import` writes a job file adopting it.
    std::fs::write(tmp.path().join("config.yaml"), &cfg).unwrap();
    let imported = tmp.path().join("imported");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["import", "--env", "yarn", "--config"])
        .arg(tmp.path().join("config.yaml"))
        .arg("--out")
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_to_string(imported.join("legacy-etl.yaml")).unwrap();
    assert!(
        file.contains(&format!("adopt: \"{}\"", legacy.id)),
        "{file}"
    );
    assert!(file.contains("env: \"yarn\""), "{file}");
    assert!(
        file.contains("yarn application"),
        "the application is described: {file}"
    );

    // adopt: by name.
    git.write(
        "jobs/legacy.yaml",
        &format!("{}adopt: legacy-etl\n", counter(&lib, &["--tag", "legacy"])),
    );
    git.commit_push("adopt the legacy application");
    wait_for("adopted", LIMIT, || d.has_event("legacy", "adopted")).await;
    let run = d.live_runs("legacy").remove(0);
    assert_eq!(engine_id(&run), legacy.id);
    assert_eq!(calls(&home).len(), 1, "nothing submitted");
    assert_eq!(rm.app(&legacy.id).unwrap().state, "RUNNING");

    // Its upgrade: a savepoint at its JobManager, then a tagged application from it.
    git.write(
        "jobs/legacy.yaml",
        &format!("{}adopt: legacy-etl\n", counter(&lib, &["--tag", "v2"])),
    );
    git.commit_push("upgrade it");
    let (_, app2, jid2) =
        running_app(&d, &rm, &flink, "legacy", std::slice::from_ref(&legacy.id)).await;
    assert_ne!(app2, legacy.id);
    assert_eq!(
        flink_state(&flink, &legacy.jid).await.as_deref(),
        Some("FINISHED")
    );
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
}

/// Waits until `GET /api/v1/unmanaged` lists application `id`.
async fn wait_for_async_unmanaged(d: &Daemon, id: &str) {
    let start = std::time::Instant::now();
    loop {
        let (code, body) = d.get("/api/v1/unmanaged").await;
        if code == 200 && body.contains(id) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{id} never listed as unmanaged: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A Flink job cancelled outside jobkeeper ends its application FINISHED/KILLED: `drift`, and the
/// job comes back from its newest retained checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_outside_is_a_drift_and_comes_back_from_its_checkpoint() {
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
    git.write("jobs/drifty.yaml", &counter(&lib, &["--tag", "d"]));
    git.commit_push("a job");
    let d = start(tmp.path(), &cfg).await;
    let (_, app1, jid1) = running_app(&d, &rm, &flink, "drifty", &[]).await;
    // Wait for a completed checkpoint, then cancel the job in Flink's UI.
    let start_t = std::time::Instant::now();
    while rest(&flink, &format!("/jobs/{jid1}/checkpoints")).await["counts"]["completed"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        assert!(start_t.elapsed() < LIMIT, "no checkpoint");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    reqwest::Client::new()
        .patch(format!("{flink}/jobs/{jid1}?mode=cancel"))
        .send()
        .await
        .unwrap();
    let (_, app2, jid2) = running_app(&d, &rm, &flink, "drifty", std::slice::from_ref(&app1)).await;
    assert_ne!(app1, app2);
    let old = rm.app(&app1).unwrap();
    assert_eq!(
        (old.state.as_str(), old.final_status.as_str()),
        ("FINISHED", "KILLED")
    );
    assert!(d.has_event("drifty", "drift"), "{:?}", d.events("drifty"));
    let restored = restored_from(&flink, &jid2).await;
    // Started from the cancelled job's own retained checkpoint (Flink reports any restore
    // path given at submit as a savepoint).
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert!(path.contains(&format!("{jid1}/chk-")), "{restored}");
}

/// Changing a job's env from a Flink session cluster to a YARN env moves it through a
/// savepoint: stopped with a savepoint on the session cluster, submitted to YARN from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_moves_from_a_session_cluster_to_yarn_with_its_savepoint() {
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
    let cfg = cfg.replace(
        "health: {interval: 1s}\n",
        &format!(
            "  session:\n    engine: flink\n    flink: {{url: \"{flink}\", savepoint_dir: \"file://{}\"}}\nhealth: {{interval: 1s}}\n",
            tmp.path().join("savepoints").display()
        ),
    );
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{flink}/jobs/{{id}}?mode=cancel"),
    };
    git.write(
        "jobs/mover.yaml",
        &counter(&lib, &["--tag", "m"]).replace("env: yarn", "env: session"),
    );
    git.commit_push("on the session cluster");
    let d = start(tmp.path(), &cfg).await;
    let (_, jid1) = running(&d, &flink, "mover", &[]).await;
    git.write("jobs/mover.yaml", &counter(&lib, &["--tag", "m"]));
    git.commit_push("to yarn");
    let (_, _, jid2) = running_app(&d, &rm, &flink, "mover", &[]).await;
    assert_eq!(
        flink_state(&flink, &jid1).await.as_deref(),
        Some("FINISHED")
    );
    let sps = d.store.savepoints("mover", 10).unwrap();
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    assert_eq!(
        restored["external_path"].as_str(),
        Some(sps[0].location.as_str())
    );
}

/// The REAL Flink CLI of 1.20.3 and 2.3.0 (from their PyPI distributions) takes the argv
/// jobkeeper makes for it (Kerberos options, tags, fixed job id, restore path, `-p`, `-c`) and
/// gets as far as deploying to YARN, which is not installed here ("No ClusterClientFactory
/// found"); 2.3.0 refuses `run-application`, as the stand-in CLI does. (Failed before: jobkeeper
/// gave 1.20 `run -t yarn-application`, which the real 1.20.3 CLI runs as a client-side program
/// instead of deploying an application.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_flink_cli_of_each_version_takes_jobkeeper_s_argv() {
    use jobkeeper::engine::flink::FlinkVersion;
    use jobkeeper::engine::yarn::submit::{CliRun, argv, dist_version};
    use jobkeeper::engine::yarn::{YarnAuth, YarnSettings};
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("Main.java"),
        "public class Main { public static void main(String[] a) {} }\n",
    )
    .unwrap();
    for (cmd, args) in [
        ("javac", vec!["Main.java"]),
        ("jar", vec!["cf", "main.jar", "Main.class"]),
    ] {
        let ok = std::process::Command::new(cmd)
            .args(args)
            .current_dir(tmp.path())
            .status()
            .unwrap();
        assert!(ok.success(), "{cmd}");
    }
    let jar = tmp.path().join("main.jar");
    // The real CLI checks the keytab exists before anything else.
    let keytab = tmp.path().join("jk.keytab");
    std::fs::write(&keytab, b"\x05\x02").unwrap();
    for lib in [cluster().1, cluster_2_3().1] {
        let home = std::path::Path::new(&lib).parent().unwrap().to_path_buf();
        let version = dist_version(&home).unwrap();
        let settings = YarnSettings {
            rm: vec!["http://127.0.0.1:1".into()],
            flink_home: home.clone(),
            hadoop_conf_dir: None,
            queue: Some("root.stream".into()),
            savepoint_dir: Some("hdfs:///flink/savepoints".into()),
            auth: YarnAuth::Kerberos {
                principal: "jobkeeper/ops-1@TEST.LOCAL".into(),
                keytab: keytab.clone(),
                krb5_conf: None,
            },
            session: None,
            accepted_timeout: std::time::Duration::from_secs(60),
            sql_runner: None,
        };
        let params = jobkeeper::spec::Params {
            main_class: Some("Main".into()),
            args: vec!["--tag".into(), "v1".into()],
            parallelism: Some(2),
            conf: [(
                "execution.checkpointing.interval".to_string(),
                "10s".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let run = CliRun {
            job: "team-a/clicks",
            run_id: 7,
            token: "0123456789abcdef0123456789abcdef",
            params: &params,
            jar: &jar,
            restore: Some("hdfs:///flink/savepoints/savepoint-1"),
        };
        let a = argv(&settings, &version, &run);
        let out = std::process::Command::new(home.join("bin/flink"))
            .args(&a)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("No ClusterClientFactory found"),
            "Flink {version} with {a:?}:\n{text}"
        );
        assert!(
            !text.contains("Unrecognized option") && !text.contains("not a valid action"),
            "{text}"
        );
        if version >= FlinkVersion::parse("2.0.0").unwrap() {
            let mut old = a.clone();
            old[0] = "run-application".into();
            let out = std::process::Command::new(home.join("bin/flink"))
                .args(&old)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                text.contains("\"run-application\" is not a valid action"),
                "{text}"
            );
        }
    }
}

/// A daemon restart adopts the running application by its recorded id: nothing is submitted
/// again (the CLI ran once), the same run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_adopts_the_application_and_submits_nothing() {
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
    git.write("jobs/steady.yaml", &counter(&lib, &["--tag", "st"]));
    git.commit_push("a job");
    let mut d = start(tmp.path(), &cfg).await;
    let (run, app, jid) = running_app(&d, &rm, &flink, "steady", &[]).await;
    d.stop().await;
    assert_eq!(
        rm.app(&app).unwrap().state,
        "RUNNING",
        "runs survive the daemon"
    );
    let d = start(tmp.path(), &cfg).await;
    d.sweeps_pass(3, LIMIT).await;
    assert_eq!(
        d.live_runs("steady")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![run]
    );
    assert_eq!(calls(&home).len(), 1, "submitted once");
    assert_eq!(flink_state(&flink, &jid).await.as_deref(), Some("RUNNING"));
    assert_eq!(d.job("steady").unwrap().state, "running");
}

/// The application's AM dies (the RM says FAILED, and its JobManager, the only one that knew
/// its checkpoints, no longer answers): the run is restarted from the newest checkpoint the
/// sweeps read from that JobManager while it ran, not with no state. (Failed before: the run
/// restarted with no state, as "its checkpoints are known only to it".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_whose_am_died_restarts_from_the_checkpoint_read_while_it_ran() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let proxy = AmProxy::start(&flink).await;
    set_am(&home, Some(&proxy.addr()));
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    git.write("jobs/lasting.yaml", &counter(&lib, &["--tag", "l"]));
    git.commit_push("a job");
    let d = start(tmp.path(), &cfg).await;
    let (run1, app1, jid1) = running_app(&d, &rm, &flink, "lasting", &[]).await;
    assert_eq!(
        rm.app(&app1).unwrap().am_rpc,
        proxy.addr(),
        "the JobManager is reached through the AM's address"
    );
    // The sweeps keep its newest checkpoint (Flink's metrics refresh every 10 s).
    let kept = d.state_dir.join(format!("yarn-checkpoints/{app1}.json"));
    wait_for("a kept checkpoint", LIMIT, || kept.is_file()).await;
    let first: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    assert!(
        first["location"]
            .as_str()
            .unwrap()
            .contains(&format!("{jid1}/chk-")),
        "{first}"
    );

    // The kept one is not read again (its folder is listed at the restart): a newer completed
    // checkpoint than it is what the restart must find.
    let chk = |loc: &str| -> u64 {
        loc.trim_end_matches('/')
            .rsplit_once("/chk-")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or_else(|| panic!("no chk-N in {loc}"))
    };
    let first_loc = first["location"].as_str().unwrap().to_string();
    let folder = std::path::PathBuf::from(
        first_loc
            .trim_start_matches("file:")
            .trim_start_matches("//")
            .rsplit_once("/chk-")
            .unwrap()
            .0,
    );
    let newest_done = || {
        std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().join("_metadata").is_file())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("chk-")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    wait_for("a checkpoint newer than the kept one", LIMIT, || {
        newest_done() > chk(&first_loc)
    })
    .await;
    let newer = newest_done();

    // The AM dies: its JobManager's address stops answering, the job stops, the RM says FAILED.
    set_am(&home, None);
    drop(proxy);
    reqwest::Client::new()
        .patch(format!("{flink}/jobs/{jid1}?mode=cancel"))
        .send()
        .await
        .unwrap();
    rm.with(|s| {
        let a = s.apps.iter_mut().find(|a| a.id == app1).unwrap();
        a.state = "FAILED".into();
        a.final_status = "FAILED".into();
        a.diagnostics = "Application application failed 1 times due to AM Container exited with \
                         exitCode: 137"
            .into();
    });
    let (run2, app2, jid2) =
        running_app(&d, &rm, &flink, "lasting", std::slice::from_ref(&app1)).await;
    assert_ne!((run1, &app1), (run2, &app2));
    let old = d
        .runs("lasting")
        .into_iter()
        .find(|r| r.id == run1)
        .unwrap();
    assert_eq!(old.state, "failed", "{old:?}");
    let restored = restored_from(&flink, &jid2).await;
    let path = restored["external_path"].as_str().unwrap_or_default();
    assert!(path.contains(&format!("{jid1}/chk-")), "{restored}");
    assert!(
        chk(path) >= newer && chk(path) > chk(&first_loc),
        "restored from {path}, kept {first_loc}, chk-{newer} completed before the AM died"
    );
    let argv = calls(&home)[1]["argv"].to_string();
    assert!(
        argv.contains(&format!("-Dexecution.state-recovery.path={path}")),
        "{argv}"
    );

    // Its run replaced, the dead application's kept checkpoint is gone; the job removed, so is
    // the new application's. (Failed before: the files stayed for ever.)
    assert!(!kept.exists(), "{} still there", kept.display());
    let kept2 = d.state_dir.join(format!("yarn-checkpoints/{app2}.json"));
    wait_for("a kept checkpoint of the new application", LIMIT, || {
        kept2.is_file()
    })
    .await;
    git.remove("jobs/lasting.yaml");
    git.commit_push("remove it");
    wait_for("lasting stopped", LIMIT, || {
        d.job("lasting").is_some_and(|j| j.state == "stopped")
    })
    .await;
    assert!(!kept2.exists(), "{} still there", kept2.display());
}

/// SQL jobs on YARN as on a Flink session cluster: in application mode (a `sql_file` job) the
/// CLI gets the SQL runner jar (built from its source) with its entry class and the statements
/// as its arguments, and a change to the `.sql` file alone upgrades it through a savepoint; in
/// session mode (an inline `sql` job) the statements are submitted to the yarn-session's
/// JobManager. Both run on REAL Flink 1.20.3. (Failed before: `sql` was refused on a yarn env.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_jobs_run_in_application_mode_and_in_a_yarn_session() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let http = reqwest::Client::new();
    let reg: serde_json::Value = http
        .post(format!("{}/standin/apps", rm.url()))
        .json(&serde_json::json!({"name": "sql-session", "tags": "", "queue": "root.stream"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = reg["id"].as_str().unwrap().to_string();
    http.post(format!("{}/standin/apps", rm.url()))
        .json(&serde_json::json!({"id": session, "state": "RUNNING",
            "am_rpc": flink.trim_start_matches("http://")}))
        .send()
        .await
        .unwrap();
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    let cfg = cfg.replace(
        "health: {interval: 1s}\n",
        &format!(
            "  ysession:\n    engine: yarn\n    yarn: {{rm: [\"{}\"], flink_home: \"{}\", savepoint_dir: \"file://{}\", session: sql-session}}\nhealth: {{interval: 1s}}\n",
            rm.url(),
            home.display(),
            tmp.path().join("savepoints").display()
        ),
    );
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{flink}/jobs/{{id}}?mode=cancel"),
    };
    let sql = |rate: u32| {
        format!(
            "CREATE TABLE clicks (user_id INT, url STRING) WITH (\n  'connector' = 'datagen',\n  \
             'rows-per-second' = '{rate}',\n  'fields.user_id.min' = '1',\n  'fields.user_id.max' = '9'\n);\n\
             CREATE TABLE totals (user_id INT, n BIGINT) WITH ('connector' = 'blackhole');\n\
             INSERT INTO totals SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;\n"
        )
    };
    let params =
        "params:\n  parallelism: 1\n  conf: {execution.checkpointing.interval: \"500ms\"}\n";
    git.write("jobs/clicks.sql", &sql(5));
    git.write(
        "jobs/clicks.yaml",
        &format!("env: yarn\nsql_file: clicks.sql\n{params}"),
    );
    let inline: String = sql(3).lines().map(|l| format!("  {l}\n")).collect();
    git.write(
        "jobs/insession.yaml",
        &format!("env: ysession\nsql: |\n{inline}{params}"),
    );
    git.commit_push("two SQL jobs on yarn");
    let d = start(tmp.path(), &cfg).await;

    // Application mode: the CLI runs the SQL runner.
    let (_, app1, jid1) = running_app(&d, &rm, &flink, "clicks", &[]).await;
    let call = calls(&home)
        .into_iter()
        .find(|c| {
            c["argv"]
                .to_string()
                .contains("yarn.application.name=clicks")
        })
        .unwrap();
    let argv: Vec<String> = call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let c = argv.iter().position(|a| a == "-c").unwrap();
    assert_eq!(argv[c + 1], "JobkeeperSqlRunner", "{argv:?}");
    assert!(argv[c + 2].ends_with(".jar"), "{argv:?}");
    assert_eq!(argv[c + 3], "jobkeeper-sql-v1", "{argv:?}");
    let overview = common::flink::rest(&flink, "/jobs/overview").await;
    let name = overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jid"] == jid1.as_str())
        .map(|j| j["name"].as_str().unwrap().to_string());
    assert_eq!(name.as_deref(), Some("clicks"));

    // Session mode: the statements are submitted to the session's JobManager, no CLI.
    let (_, sjid) = running(&d, &flink, "insession", &[]).await;
    assert!(!sjid.starts_with("application_"), "{sjid}");
    assert!(
        !calls(&home)
            .iter()
            .any(|c| c["argv"].to_string().contains("insession")),
        "session mode uses no CLI"
    );

    // A change to the .sql file alone upgrades the application through a savepoint.
    git.write("jobs/clicks.sql", &sql(7));
    git.commit_push("faster clicks");
    let (_, app2, jid2) = running_app(&d, &rm, &flink, "clicks", std::slice::from_ref(&app1)).await;
    assert_ne!(app1, app2);
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    let start_t = std::time::Instant::now();
    while !d
        .events("clicks")
        .iter()
        .any(|e| e.kind == "deployed" && e.message.starts_with("sql_file changed"))
    {
        assert!(
            start_t.elapsed() < LIMIT,
            "no deployed: sql_file changed: {:#?}",
            d.events("clicks")
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A Flink 2.3.0 cluster with the adaptive scheduler (which alone rescales a running job in
/// place), on a free port under `dir`, stopped on drop.
struct AdaptiveCluster(std::path::PathBuf, String);

impl AdaptiveCluster {
    fn start(dir: &std::path::Path) -> AdaptiveCluster {
        let port = free_port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .args([
                "start",
                &dir.display().to_string(),
                &port.to_string(),
                "2.3.0",
            ])
            .env(
                "FLINK_EXTRA_CONF",
                "jobmanager.scheduler: adaptive\n\
                 jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling: 1s\n\
                 jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout: 1s\n\
                 jobmanager.adaptive-scheduler.resource-stabilization-timeout: 1s\n\
                 jobmanager.adaptive-scheduler.submission.resource-stabilization-timeout: 1s\n\
                 taskmanager.numberOfTaskSlots: 4",
            )
            .status()
            .unwrap();
        assert!(status.success(), "the adaptive Flink cluster did not start");
        AdaptiveCluster(dir.to_path_buf(), format!("http://127.0.0.1:{port}"))
    }
}

impl Drop for AdaptiveCluster {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/flink.sh");
        let _ = std::process::Command::new("bash")
            .arg(&script)
            .args(["stop", &self.0.display().to_string()])
            .status();
    }
}

/// Each vertex's parallelism of Flink job `jid`.
async fn vertex_parallelism(url: &str, jid: &str) -> Vec<u64> {
    rest(url, &format!("/jobs/{jid}")).await["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["parallelism"].as_u64().unwrap_or(0))
        .collect()
}

/// An application-mode job rescaled outside jobkeeper (its JobManager's
/// `PUT /jobs/{id}/resource-requirements`, REAL Flink 2.3.0 with the adaptive scheduler as the
/// application's JobManager): the sweep's task count through the application's own JobManager
/// sees it, `drift` is raised, and with `drift: correct` the job is stopped with a savepoint and
/// a new application submitted from it at the file's parallelism, then `recovered`. (Failed
/// before: application mode reported no task counts, so the rescale went unseen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_rescaled_outside_is_drift_and_corrected_at_the_file_s_parallelism() {
    let lib = need("JOBKEEPER_FLINK_LIB");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = AdaptiveCluster::start(&tmp.path().join("flink"));
    let flink = cluster.1.clone();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    let job = counter(&lib, &["--tag", "r", "--rate", "20"])
        .replace("parallelism: 1", "parallelism: 2")
        + "drift: correct\n";
    git.write("jobs/scaled.yaml", &job);
    git.commit_push("a job at parallelism 2");
    let d = start(tmp.path(), &cfg).await;
    let (run1, app1, jid1) = running_app(&d, &rm, &flink, "scaled", &[]).await;
    // The first look at the RUNNING run records what it was submitted at.
    wait_for("the first look at the run", LIMIT, || {
        d.store.run_parallelism(run1).is_ok_and(|p| !p.is_empty())
    })
    .await;
    let job = rest(&flink, &format!("/jobs/{jid1}")).await;
    let mut body = serde_json::Map::new();
    for v in job["vertices"].as_array().unwrap() {
        body.insert(
            v["id"].as_str().unwrap().to_string(),
            serde_json::json!({"parallelism": {"lowerBound": 1, "upperBound": 1}}),
        );
    }
    let answer = reqwest::Client::new()
        .put(format!("{flink}/jobs/{jid1}/resource-requirements"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");

    let (_, app2, jid2) = running_app(&d, &rm, &flink, "scaled", std::slice::from_ref(&app1)).await;
    assert_ne!(app1, app2);
    let drift = d
        .events("scaled")
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap_or_else(|| panic!("no drift: {:#?}", d.events("scaled")));
    assert!(drift.message.contains("parallelism"), "{}", drift.message);
    let restored = restored_from(&flink, &jid2).await;
    assert_eq!(restored["is_savepoint"], true, "{restored}");
    let start_t = std::time::Instant::now();
    while vertex_parallelism(&flink, &jid2)
        .await
        .iter()
        .any(|p| *p != 2)
    {
        assert!(
            start_t.elapsed() < LIMIT,
            "the new application never ran at 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait_for("recovered", LIMIT, || d.has_event("scaled", "recovered")).await;
}

/// Savepoints past `keep` in application mode: the JobManager that took one ended with its
/// application, so it is disposed of through the JobManager of an application of jobkeeper's
/// that runs (its `POST /savepoint-disposal` seen going through that application's address, a
/// proxy in front of REAL Flink 1.20.3), and Flink deletes it. (Failed before: refused in
/// application mode, the folder deleted on this host instead, which only a `file:` savepoint
/// allows.) The savepoints are kept 15 s, so the first becomes disposable after v3's
/// application runs (before, no application runs between v2's stop and v3's start, and the
/// folder on this host is deleted instead, as the docs say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_savepoint_is_disposed_of_by_a_running_application_s_jobmanager() {
    let (flink, lib) = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let rm = StandinRm::start().await;
    let _cancel = CancelApps(rm.clone());
    let home = flink_home(tmp.path(), &lib, &rm, &flink);
    let proxy = AmProxy::start(&flink).await;
    set_am(&home, Some(&proxy.addr()));
    let (git, cfg) = setup(
        tmp.path(),
        &[rm.url()],
        &home,
        ", auth: simple, user: flink",
    );
    let job = |tag: &str| {
        format!(
            "{}savepoints: {{keep: {{count: 1, age: 15s}}}}\n",
            counter(&lib, &["--tag", tag])
        )
    };
    git.write("jobs/kept.yaml", &job("v1"));
    git.commit_push("a job keeping one savepoint");
    let d = start(tmp.path(), &cfg).await;
    let (_, app1, _) = running_app(&d, &rm, &flink, "kept", &[]).await;
    git.write("jobs/kept.yaml", &job("v2"));
    git.commit_push("v2");
    let (_, app2, _) = running_app(&d, &rm, &flink, "kept", std::slice::from_ref(&app1)).await;
    let first = d.store.savepoints("kept", 10).unwrap()[0].location.clone();
    git.write("jobs/kept.yaml", &job("v3"));
    git.commit_push("v3");
    let (_, app3, _) = running_app(&d, &rm, &flink, "kept", &[app1.clone(), app2.clone()]).await;
    let row = || {
        d.store
            .savepoint_history("kept", 10)
            .unwrap()
            .into_iter()
            .find(|s| s.location == first)
            .unwrap()
    };
    wait_for("the first savepoint disposed of", LIMIT, || {
        row().disposed_at.is_some()
    })
    .await;
    assert!(row().dispose_error.is_none(), "{:?}", row());
    assert!(
        proxy.disposals.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "disposed of through the running application's JobManager, not deleted here"
    );
    let folder = first.trim_start_matches("file:").trim_start_matches("//");
    assert!(
        !std::path::Path::new(folder).exists(),
        "Flink deleted {folder}"
    );
    assert_eq!(rm.app(&app3).unwrap().state, "RUNNING");
}
