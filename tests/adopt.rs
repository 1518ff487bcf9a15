//! Taking over a running fleet, end to end against a real Apache Flink 2.3.0 session cluster:
//! jobs started outside jobkeeper through the REST API are listed as unmanaged, `jobkeeper
//! import` writes their job files, a completed file is adopted without a restart (same job id,
//! same start time, one RUNNING job of that name) and later upgraded through a savepoint;
//! adopting a job that does not exist, or a name two RUNNING jobs bear, is `deploy_failed`; a
//! second live copy of a managed job is `drift`.
//!
//! Needs `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB` (scripts/test.sh sets them); the Spark
//! side is in tests/spark.rs. Every job a test starts is cancelled, even when it fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::flink::*;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// `(jid, name, state, start-time)` of every job of the cluster.
async fn overview(url: &str) -> Vec<(String, String, String, i64)> {
    rest(url, "/jobs/overview").await["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| {
            let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
            (
                s("jid"),
                s("name"),
                s("state"),
                j["start-time"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Uploads `jar`, runs flink-counter `--tag tag` from it outside jobkeeper and deletes the
/// upload again, as a script would (so the cluster holds no jar naming an entry class); the
/// job id once it is RUNNING.
async fn run_outside(url: &str, jar: &Path, tag: &str) -> String {
    let jar_id = upload_jar(url, jar).await;
    let jid = start_outside(url, &jar_id, tag).await;
    delete_jar(url, &jar_id).await;
    jid
}

/// A config repo holding the flink-counter project and a daemon config with a `flink` env.
fn setup(root: &Path, url: &str) -> (Git, String) {
    counter_repo(root, url, "", "")
}

/// The project block of a flink-counter job file.
fn project(lib: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  artifact: out/flink-counter.jar\n"
    )
}

/// The unmanaged jobs the daemon lists: (engine id, name, duplicate_of).
async fn unmanaged(d: &Daemon) -> Vec<(String, String, Option<String>)> {
    let (code, body) = d.get("/api/v1/unmanaged").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["engine_id"].as_str().unwrap().to_string(),
                j["name"].as_str().unwrap().to_string(),
                j["duplicate_of"].as_str().map(str::to_string),
            )
        })
        .collect()
}

async fn wait_unmanaged(
    d: &Daemon,
    what: &str,
    cond: impl Fn(&[(String, String, Option<String>)]) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let list = unmanaged(d).await;
        if cond(&list) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_started_outside_are_listed_imported_adopted_without_a_restart_then_upgraded() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let jar = build_counter_jar(tmp.path(), &lib);
    let a = run_outside(&url, &jar, "adopt-a").await;
    let b = run_outside(&url, &jar, "adopt-b").await;
    let mut outside = CancelOnDrop(url.clone(), vec![a.clone(), b.clone()]);
    let a_start = overview(&url)
        .await
        .into_iter()
        .find(|j| j.0 == a)
        .unwrap()
        .3;

    git.commit_push("the project, no jobs yet");
    let d = start(tmp.path(), &cfg).await;

    // 1. Both are listed as unmanaged: the API, the page and the metric.
    wait_unmanaged(&d, "both jobs unmanaged", |l| {
        [&a, &b]
            .iter()
            .all(|id| l.iter().any(|u| &u.0 == *id && u.2.is_none()))
    })
    .await;
    let (_, page) = d.get("/").await;
    assert!(
        page.contains("Unmanaged jobs") && page.contains(&a),
        "{page}"
    );
    let (_, metrics) = d.get("/metrics").await;
    let n = metric(
        &metrics,
        &format!("jobkeeper_unmanaged_jobs{{cluster=\"{url}\"}}"),
    );
    assert!(n >= 2.0, "{metrics}");

    // 2. import writes a file with `adopt` per job (and never overwrites one).
    let out = tmp.path().join("imported");
    let cfg_path = tmp.path().join("config.yaml");
    let import = || {
        Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["import", "--env", "flink", "--config"])
            .arg(&cfg_path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let run = import();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file_a = out.join("flink-counter-adopt-a.yaml");
    let file_b = out.join("flink-counter-adopt-b.yaml");
    let text_a = std::fs::read_to_string(&file_a).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let text_b = std::fs::read_to_string(&file_b).unwrap();
    assert!(
        text_a.contains(&format!("adopt: \"{a}\"\nenv: \"flink\"\n")),
        "{text_a}"
    );
    assert!(text_b.contains(&format!("adopt: \"{b}\"")), "{text_b}");
    assert!(text_a.contains("  parallelism: 1\n"), "{text_a}");
    assert!(text_a.contains("# TODO project"), "{text_a}");
    // validate refuses the unfinished file.
    let v = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .arg("validate")
        .arg(&file_b)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("unfinished job file: `# TODO project"));
    let again = import();
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(
        again_out.contains(&format!(
            "{} exists and is not overwritten",
            file_a.display()
        )),
        "{again_out}"
    );
    assert_eq!(std::fs::read_to_string(&file_a).unwrap(), text_a);

    // 3. Complete one file and commit it: taken over as it runs.
    let done: String = text_a
        .lines()
        .filter(|l| !l.trim_start().starts_with("# TODO"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "params:\n",
            "params:\n  main_class: example.Counter\n  args: [\"--tag\", \"adopt-a\", \"--rate\", \"20\"]\n",
        );
    let job = "flink-counter-adopt-a";
    git.write(
        &format!("jobs/{job}.yaml"),
        &format!("{}{done}", project(&lib)),
    );
    git.commit_push("take over flink-counter adopt-a");
    wait_for("adopted", LIMIT, || d.has_event(job, "adopted")).await;
    d.sweeps_pass(3, LIMIT).await;
    let runs = d.runs(job);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (engine_id(&runs[0]), runs[0].state.as_str()),
        (a.clone(), "running")
    );
    let jobs = overview(&url).await;
    let same_name: Vec<_> = jobs
        .iter()
        .filter(|j| j.1 == "flink-counter adopt-a" && j.2 == "RUNNING")
        .collect();
    assert_eq!(same_name.len(), 1, "{jobs:?}");
    assert_eq!(
        (&same_name[0].0, same_name[0].3),
        (&a, a_start),
        "same job, same start"
    );
    let (_, body) = d.get(&format!("/api/v1/jobs/{job}")).await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["state"], "running", "{body}");
    let adopted = d
        .events(job)
        .into_iter()
        .find(|e| e.kind == "adopted")
        .unwrap();
    assert!(adopted.message.contains(&a), "{}", adopted.message);
    wait_unmanaged(&d, "only the other job unmanaged", |l| {
        !l.iter().any(|u| u.0 == a) && l.iter().any(|u| u.0 == b)
    })
    .await;
    assert!(!d.has_event(job, "deployed") && !d.has_event(job, "started"));

    // 4. A change of args: a savepoint upgrade.
    git.write(
        &format!("jobs/{job}.yaml"),
        &format!(
            "{}{}",
            project(&lib),
            done.replace("\"adopt-a\"", "\"adopt-a2\"")
        ),
    );
    git.commit_push("new args");
    let start_wait = std::time::Instant::now();
    let jid2 = loop {
        if let [run] = d.live_runs(job).as_slice() {
            let id = engine_id(run);
            if id != a && flink_state(&url, &id).await.as_deref() == Some("RUNNING") {
                break id;
            }
        }
        assert!(start_wait.elapsed() < LIMIT, "{:#?}", d.events(job));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(flink_state(&url, &a).await.as_deref(), Some("FINISHED"));
    let sps = d.store.savepoints(job, 10).unwrap();
    assert_eq!(
        (sps.len(), sps[0].kind.as_str()),
        (1, "savepoint"),
        "{sps:?}"
    );
    let start_wait = std::time::Instant::now();
    loop {
        let c = rest(&url, &format!("/jobs/{jid2}/checkpoints")).await;
        if c["latest"]["restored"].is_object() {
            assert_eq!(c["latest"]["restored"]["is_savepoint"], true, "{c}");
            break;
        }
        assert!(start_wait.elapsed() < LIMIT, "{c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A second live job bearing the managed job's name: drift, listed with whom it copies.
    let copy = run_outside(&url, &jar, "adopt-a2").await;
    outside.1.push(copy.clone());
    wait_for("drift", LIMIT, || d.has_event(job, "drift")).await;
    let drift = d
        .events(job)
        .into_iter()
        .find(|e| e.kind == "drift")
        .unwrap();
    assert!(drift.message.contains(&copy), "{}", drift.message);
    wait_unmanaged(&d, "the copy listed as a duplicate", |l| {
        l.iter().any(|u| u.0 == copy && u.2.as_deref() == Some(job))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_a_missing_job_or_an_ambiguous_name_is_deploy_failed_and_submits_nothing() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), &url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let jar = build_counter_jar(tmp.path(), &lib);
    let t1 = run_outside(&url, &jar, "twin").await;
    let t2 = run_outside(&url, &jar, "twin").await;
    let _outside = CancelOnDrop(url.clone(), vec![t1.clone(), t2.clone()]);

    let file = |adopt: &str| {
        format!(
            "{}env: flink\nadopt: \"{adopt}\"\nparams:\n  main_class: example.Counter\n  args: [\"--tag\", \"x\"]\n  parallelism: 1\n",
            project(&lib)
        )
    };
    git.write("jobs/missing.yaml", &file("no-such-job"));
    git.write("jobs/twin.yaml", &file("flink-counter twin"));
    git.commit_push("adopt what is not there, and a name two jobs bear");
    // `plan --config` asks the cluster and says what the apply will find.
    let cfg_path = tmp.path().join("plan-config.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .arg("plan")
        .arg("--repo")
        .arg(&git.work)
        .args([
            "--from",
            jobkeeper::changes::EMPTY_TREE,
            "--to",
            "HEAD",
            "--config",
        ])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("2 adopt"), "{text}");
    assert!(
        text.contains("refused at apply as the cluster stands now: adopt: no job with id or RUNNING name `no-such-job`"),
        "{text}"
    );
    assert!(
        text.contains("adopt: 2 RUNNING jobs named `flink-counter twin`"),
        "{text}"
    );
    let d = start(tmp.path(), &cfg).await;
    for job in ["missing", "twin"] {
        wait_for("deploy_failed", LIMIT, || d.has_event(job, "deploy_failed")).await;
    }
    d.sweeps_pass(3, LIMIT).await;
    let missing = d
        .events("missing")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        missing
            .message
            .contains("no job with id or RUNNING name `no-such-job`"),
        "{}",
        missing.message
    );
    let twin = d
        .events("twin")
        .into_iter()
        .find(|e| e.kind == "deploy_failed")
        .unwrap();
    assert!(
        twin.message
            .contains("2 RUNNING jobs named `flink-counter twin`")
            && twin.message.contains(&t1)
            && twin.message.contains(&t2),
        "{}",
        twin.message
    );
    for job in ["missing", "twin"] {
        assert!(d.runs(job).is_empty(), "{job}: nothing recorded");
        assert_eq!(d.job(job).unwrap().state, "failed");
    }
    // Nothing was submitted: no job of the files' own (`--tag x`), still two twins.
    let jobs = overview(&url).await;
    assert!(!jobs.iter().any(|j| j.1 == "flink-counter x"), "{jobs:?}");
    assert_eq!(
        jobs.iter()
            .filter(|j| j.1 == "flink-counter twin" && j.2 == "RUNNING")
            .count(),
        2,
        "{jobs:?}"
    );
    assert_eq!(flink_state(&url, &t1).await.as_deref(), Some("RUNNING"));
    assert_eq!(flink_state(&url, &t2).await.as_deref(), Some("RUNNING"));
}

/// Uploads `jar` under the file name `name`; the cluster's jar id.
async fn upload_as(url: &str, jar: &Path, name: &str) -> String {
    let part =
        reqwest::multipart::Part::bytes(std::fs::read(jar).unwrap()).file_name(name.to_string());
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

/// Two different jars uploaded to Flink `url` (built against `lib`), one run over REST with
/// args: `import` names its jar and entry class, says args cannot be read from Flink, and the
/// completed file validates and is adopted without a restart.
async fn import_names_the_jar_and_entry_class(url: &str, lib: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (git, cfg) = setup(tmp.path(), url);
    let _cleanup = StopRunsOnDrop {
        db: tmp.path().join("state/jobkeeper.db"),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    // Two jars with manifests naming their entry classes, as a build tool makes them.
    build_counter_jar(tmp.path(), lib);
    let outside = tmp.path().join("outside");
    std::fs::write(
        outside.join("src/example/Other.java"),
        "package example;\npublic class Other { public static void main(String[] a) {} }\n",
    )
    .unwrap();
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(&outside)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("javac --release 17 -nowarn -d out/classes src/example/Other.java");
    sh(
        "jar cfe out/a.jar example.Counter -C out/classes . && jar cfe out/b.jar example.Other -C out/classes .",
    );
    // Unique names: the cluster is shared with other tests.
    let u = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 0xffff_ffff
    );
    let tag = format!("imp-{u}");
    let a_name = format!("flink-counter-{tag}-1.0.jar");
    let b_name = format!("other-{u}-2.0.jar");
    let a_id = upload_as(url, &outside.join("out/a.jar"), &a_name).await;
    let b_id = upload_as(url, &outside.join("out/b.jar"), &b_name).await;
    let jid = start_outside(url, &a_id, &tag).await;
    let _outside = CancelOnDrop(url.to_string(), vec![jid.clone()]);
    let start_time = overview(url)
        .await
        .into_iter()
        .find(|j| j.0 == jid)
        .unwrap()
        .3;

    git.commit_push("the project, no jobs yet");
    let d = start(tmp.path(), &cfg).await;
    let out = tmp.path().join("imported");
    let cfg_path = tmp.path().join("config.yaml");
    let run = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .args(["import", "--env", "flink", "--config"])
        .arg(&cfg_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    delete_jar(url, &a_id).await;
    delete_jar(url, &b_id).await;
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let job = format!("flink-counter-{tag}");
    let file = out.join(format!("{job}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(text.contains(&format!("adopt: \"{jid}\"\n")), "{text}");
    assert!(
        text.contains("  main_class: \"example.Counter\"\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# The cluster runs it from the jar \"{a_name}\": `project.artifact` is where"
        )),
        "{text}"
    );
    assert!(
        text.contains("# TODO project: ")
            && text.contains("no engine records where a jar was built from"),
        "{text}"
    );
    assert!(
        text.contains(
            "  # TODO params.args: the job's program arguments: they could not be read from Flink"
        ),
        "{text}"
    );
    assert!(!text.contains(&b_name), "{text}");

    // Completed (project and args), it validates and is taken over as it runs.
    let done: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("# TODO"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "params:\n",
            &format!("params:\n  args: [\"--tag\", \"{tag}\", \"--rate\", \"20\"]\n"),
        );
    git.write(
        &format!("jobs/{job}.yaml"),
        &format!("{}{done}", project(lib)),
    );
    let v = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
        .arg("validate")
        .arg(git.work.join("jobs"))
        .arg("--config")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    git.commit_push("take over the imported job");
    wait_for("adopted", LIMIT, || d.has_event(&job, "adopted")).await;
    let runs = d.runs(&job);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (engine_id(&runs[0]), runs[0].state.as_str()),
        (jid.clone(), "running")
    );
    let now = overview(url)
        .await
        .into_iter()
        .find(|j| j.0 == jid)
        .unwrap();
    assert_eq!(
        (now.2.as_str(), now.3),
        ("RUNNING", start_time),
        "same job, same start"
    );
    assert!(!d.has_event(&job, "deployed") && !d.has_event(&job, "started"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_names_the_jar_and_entry_class_of_a_rest_run_job_on_flink_2_3() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    import_names_the_jar_and_entry_class(&url, &lib).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_names_the_jar_and_entry_class_of_a_rest_run_job_on_flink_1_20() {
    let (url, lib) = (
        need("JOBKEEPER_FLINK_1_20_URL"),
        need("JOBKEEPER_FLINK_1_20_LIB"),
    );
    import_names_the_jar_and_entry_class(&url, &lib).await;
}
