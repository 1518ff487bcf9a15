//! The crash harness on a real Apache Flink 2.3.0 session cluster: the daemon binary is killed
//! with SIGKILL at chosen points of an adoption (`adopt`) and of a rollback, then started again,
//! and must converge with no duplicate, no lost version and no job restored from the wrong state.
//!
//! Each kill point is reached deterministically, never by a lucky sleep: the daemon talks to
//! Flink through [`Proxy`], an HTTP proxy in this test that forwards every request and, when
//! armed, holds one request (never sent) or one answer (sent, never returned), so the daemon
//! waits at a known step until it is killed. The one point with no request in it (an adopted
//! run recorded, its version not yet) is reached by making the run's log file, the next thing
//! the daemon writes, a FIFO no one reads: opening it blocks.
//!
//! Needs `JOBKEEPER_FLINK_URL` and `JOBKEEPER_FLINK_LIB` (scripts/test.sh sets them). Every
//! Flink job a test starts is cancelled, even when it fails; the daemon is killed on drop.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::flink::*;
use common::*;
use jobkeeper::store::{Blocking, EventRow, JobRow, RunRow};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// Where [`Proxy`] stops the daemon.
#[derive(Debug, Clone, PartialEq)]
enum Hold {
    /// Nothing: every request is forwarded and answered.
    Nothing,
    /// Every answer to `GET /jobs/overview` (after Flink answered it).
    Overviews,
    /// An answer to `GET /jobs/overview` in which job `.0` is no longer RUNNING: the daemon
    /// never learns that it failed.
    OverviewWithEnded(String),
    /// `POST /jars/{jar}/run`, never sent to Flink.
    SubmitUnsent,
    /// `POST /jars/{jar}/run`, sent to Flink; its answer never reaches the daemon.
    SubmitAnswer,
}

/// An HTTP proxy in front of Flink's REST API (see the module doc).
struct Proxy {
    target: String,
    hold: Mutex<Hold>,
    /// What was held, in order: when, and `METHOD path`.
    held: Mutex<Vec<(Instant, String)>>,
    http: reqwest::Client,
}

impl Proxy {
    /// A proxy to `target` listening on a free loopback port; returns it and its URL.
    async fn start(target: &str) -> (Arc<Proxy>, String) {
        let proxy = Arc::new(Proxy {
            target: target.to_string(),
            hold: Mutex::new(Hold::Nothing),
            held: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (proxy, url)
    }

    fn arm(&self, hold: Hold) {
        self.held.lock().unwrap().clear();
        *self.hold.lock().unwrap() = hold;
    }

    fn held(&self) -> Vec<(Instant, String)> {
        self.held.lock().unwrap().clone()
    }

    /// Never answers: the daemon waits here until it is killed.
    async fn keep(&self, what: String) -> ! {
        self.held.lock().unwrap().push((Instant::now(), what));
        std::future::pending::<()>().await;
        unreachable!()
    }
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 100 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let what = format!("{} {path}", parts.method);
    let is_run = parts.method == "POST" && path.starts_with("/jars/") && path.ends_with("/run");
    let hold = p.hold.lock().unwrap().clone();
    match &hold {
        Hold::SubmitUnsent if is_run => p.keep(what).await,
        _ => {}
    }
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.target))
        .body(body);
    if let Some(ct) = parts.headers.get("content-type") {
        out = out.header("content-type", ct.clone());
    }
    let Ok(resp) = out.send().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    if path == "/jobs/overview" {
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let state_of = |jid: &str| {
            answer["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|j| j["jid"] == jid)
                .and_then(|j| j["state"].as_str().map(str::to_string))
        };
        match &hold {
            Hold::Overviews => p.keep(what).await,
            Hold::OverviewWithEnded(jid)
                if state_of(jid).is_some_and(|s| s != "RUNNING" && s != "INITIALIZING") =>
            {
                p.keep(what).await
            }
            _ => {}
        }
    }
    if hold == Hold::SubmitAnswer && is_run {
        p.keep(what).await;
    }
    let mut answer = (status, bytes).into_response();
    if let Some(ct) = headers.get("content-type") {
        answer.headers_mut().insert("content-type", ct.clone());
    }
    answer
}

/// The daemon binary, killed with SIGKILL on drop.
struct Binary(Option<Child>);

impl Binary {
    fn start(cfg: &Path, log: &Path) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jobkeeper"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Binary(Some(child))
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The store of the daemon binary under test, read as the daemon writes it.
struct Db(PathBuf);

impl Db {
    fn store(&self) -> Option<Blocking> {
        self.0
            .exists()
            .then(|| Blocking::open(&self.0).ok())
            .flatten()
    }

    fn job(&self, name: &str) -> Option<JobRow> {
        self.store()?.job(name).ok()?
    }

    /// Newest first.
    fn runs(&self, name: &str) -> Vec<RunRow> {
        self.store()
            .and_then(|s| s.runs(name, 100).ok())
            .unwrap_or_default()
    }

    fn live(&self, name: &str) -> Vec<RunRow> {
        self.runs(name)
            .into_iter()
            .filter(|r| r.ended_at.is_none())
            .collect()
    }

    /// Newest first.
    fn events(&self, name: &str) -> Vec<EventRow> {
        self.store()
            .and_then(|s| s.events(Some(name), 1000).ok())
            .unwrap_or_default()
    }

    fn count(&self, name: &str, kind: &str) -> usize {
        self.events(name).iter().filter(|e| e.kind == kind).count()
    }

    /// Jobs, runs and events, for a failure message.
    fn dump(&self, name: &str) -> String {
        let mut out = format!("job: {:?}\n", self.job(name).map(|j| (j.state, j.reason)));
        for r in self.runs(name).iter().rev() {
            out.push_str(&format!(
                "run {} {} hash {} id {:?} ended {:?} {:?}\n",
                r.id,
                r.state,
                &r.spec_hash[..8],
                r.handle.as_ref().map(|h| &h.engine_id),
                r.ended_at,
                r.reason.as_deref().and_then(|s| s.lines().next())
            ));
        }
        for e in self.events(name).iter().rev() {
            out.push_str(&format!(
                "event {} run={:?} {}\n",
                e.kind,
                e.run_id,
                e.message.lines().next().unwrap_or_default()
            ));
        }
        out
    }
}

/// A job of the cluster, as `GET /jobs/overview` lists it.
#[derive(Debug, Clone)]
struct FlinkJob {
    jid: String,
    name: String,
    state: String,
    start: i64,
}

async fn overview(url: &str) -> Vec<FlinkJob> {
    rest(url, "/jobs/overview").await["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| FlinkJob {
            jid: j["jid"].as_str().unwrap_or_default().into(),
            name: j["name"].as_str().unwrap_or_default().into(),
            state: j["state"].as_str().unwrap_or_default().into(),
            start: j["start-time"].as_i64().unwrap_or(0),
        })
        .collect()
}

/// Polls every 20 ms until `cond` holds (at most [`LIMIT`]); `dump` explains a timeout.
async fn poll_until(what: &str, dump: impl Fn() -> String, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting for {what}\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config repo holding the flink-counter project and the daemon's config (its flink env on
/// `url`, the proxy) written to `root/config.yaml`; returns the repo and the config's path.
fn setup(root: &Path, url: &str) -> (Git, PathBuf) {
    let (git, cfg) = counter_repo(root, url, "", "");
    let path = root.join("config.yaml");
    std::fs::write(&path, cfg).unwrap();
    (git, path)
}

/// The project block of a flink-counter job file built against `lib`.
fn project(lib: &str) -> String {
    format!(
        "project:\n  repo: .\n  dir: projects/flink-counter\n  build: sh build.sh \"{lib}\"\n  \
         artifact: out/flink-counter.jar\n"
    )
}

/// Where an adoption is killed.
#[derive(Debug, Clone, Copy)]
enum AdoptKill {
    /// The cluster answered the daemon's look for the job (the match is made from that answer);
    /// nothing is recorded.
    Matched,
    /// The adopted run is recorded with its engine id; the job's version is not.
    RunRecorded,
}

/// The crash harness's case for `adopt` (see the module doc): the daemon is killed once as it
/// matched the outside job and once after it recorded the adopted run but not the version.
/// Started again, each time: the same Flink job (id and start time) is the only RUNNING job of
/// that name, never stopped or submitted again; the job is recorded as running with one run,
/// that job, and an `adopted` event; no `deploy_failed`, `started` or `deployed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_an_adoption_takes_the_same_job_over_once() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, proxy_url) = Proxy::start(&url).await;
    let (git, cfg) = setup(tmp.path(), &proxy_url);
    let db = Db(tmp.path().join("state/jobkeeper.db"));
    let log = tmp.path().join("daemon.log");
    let _cleanup = StopRunsOnDrop {
        db: db.0.clone(),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let mut outside = CancelOnDrop(url.clone(), Vec::new());
    let jar = upload_jar(&url, &build_counter_jar(tmp.path(), &lib)).await;
    git.commit_push("the project, no jobs yet");
    let mut daemon = Binary::start(&cfg, &log);
    poll_until("the daemon's store", String::new, async || {
        db.store().is_some()
    })
    .await;

    // The first adoption builds the job's jar, the second finds it built and looks at the
    // cluster at once.
    for (i, kill) in [AdoptKill::RunRecorded, AdoptKill::Matched]
        .into_iter()
        .enumerate()
    {
        // Unique to this test process: the cluster keeps ended jobs of earlier runs.
        let tag = format!("taken-{}-{i}", std::process::id());
        let name = format!("flink-counter {tag}");
        let job = format!("taken{i}");
        let jid = start_outside(&url, &jar, &tag).await;
        outside.1.push(jid.clone());
        let since = overview(&url)
            .await
            .into_iter()
            .find(|j| j.jid == jid)
            .unwrap()
            .start;
        let dump = || format!("{}\ndaemon log: {}", db.dump(&job), log.display());

        let fifo = tmp.path().join(format!("state/logs/{job}"));
        let next_run = db
            .store()
            .unwrap()
            .jobs()
            .unwrap()
            .iter()
            .flat_map(|j| db.runs(&j.name))
            .map(|r| r.id)
            .max()
            .unwrap_or(0)
            + 1;
        let fifo = fifo.join(format!("{next_run}.log"));
        match kill {
            AdoptKill::Matched => proxy.arm(Hold::Overviews),
            AdoptKill::RunRecorded => {
                std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
                let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
                assert!(made.success());
            }
        }
        git.write(
            &format!("jobs/{job}.yaml"),
            &format!(
                "{}env: flink\nadopt: \"{name}\"\nparams:\n  main_class: example.Counter\n  \
                 args: [\"--tag\", \"{tag}\", \"--rate\", \"20\"]\n  parallelism: 1\n  \
                 conf: {{execution.checkpointing.interval: \"500ms\"}}\n",
                project(&lib)
            ),
        );
        git.commit_push(&format!("take over {name}"));
        match kill {
            AdoptKill::Matched => {
                // The health sweep is sequential: it waits on one held overview, and asks again
                // only once its request timed out (10 s). A second overview held sooner is the
                // adoption's own look.
                poll_until(
                    "the adoption's look at the cluster held",
                    dump,
                    async || proxy.held().len() >= 2,
                )
                .await;
                let held = proxy.held();
                assert!(
                    held[1].0 - held[0].0 < Duration::from_secs(8),
                    "the second hold may be the sweep's again: {held:?}"
                );
            }
            AdoptKill::RunRecorded => {
                poll_until("the adopted run recorded", dump, async || {
                    db.runs(&job).len() == 1
                })
                .await;
                // The daemon is now blocked opening the run's log (the FIFO).
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        daemon.sigkill();
        proxy.arm(Hold::Nothing);
        let row = db.job(&job).unwrap();
        let runs = db.runs(&job);
        match kill {
            AdoptKill::Matched => assert!(runs.is_empty(), "killed as it matched: {runs:#?}"),
            AdoptKill::RunRecorded => {
                assert_eq!(runs.len(), 1, "{runs:#?}");
                assert_eq!(engine_id(&runs[0]), jid);
                assert_eq!(row.applied_hash, None, "killed before the version: {row:?}");
                std::fs::remove_file(&fifo).unwrap();
            }
        }

        daemon = Binary::start(&cfg, &log);
        poll_until("the adoption to finish", dump, async || {
            db.job(&job).is_some_and(|j| {
                j.state == "running" && j.applied_hash.is_some() && j.applied_hash == j.desired_hash
            }) && db.count(&job, "adopted") > 0
        })
        .await;
        // A few health sweeps.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let jobs = overview(&url).await;
        let same_name: Vec<&FlinkJob> = jobs.iter().filter(|j| j.name == name).collect();
        assert_eq!(
            same_name
                .iter()
                .map(|j| (j.jid.as_str(), j.state.as_str(), j.start))
                .collect::<Vec<_>>(),
            [(jid.as_str(), "RUNNING", since)],
            "killed {kill:?}: one job of that name, the same one, never restarted\n{}",
            dump()
        );
        let runs = db.runs(&job);
        assert_eq!(runs.len(), 1, "killed {kill:?}: {}", dump());
        assert_eq!(
            (engine_id(&runs[0]), runs[0].state.to_string()),
            (jid.clone(), "running".to_string()),
            "{}",
            dump()
        );
        for kind in ["deploy_failed", "started", "deployed", "failed"] {
            assert_eq!(
                db.count(&job, kind),
                0,
                "killed {kill:?}: {kind}\n{}",
                dump()
            );
        }
    }
}

/// A flink-counter service job with `args` and extra Flink `conf`, rolled back when it fails
/// within two minutes of a commit.
fn counter(lib: &str, args: &str, conf: &str) -> String {
    format!(
        "{}env: flink\nparams:\n  main_class: example.Counter\n  args: [{args}]\n  \
         parallelism: 1\n  conf: {{execution.checkpointing.interval: \"500ms\"{conf}}}\n\
         restart: {{attempts: 3, window: 1h, backoff: 1s, max_backoff: 1s}}\n\
         rollback: true\nready_within: 2m\n",
        project(lib)
    )
}

/// Where a rollback is killed.
#[derive(Debug, Clone, Copy)]
enum RollbackKill {
    /// Before the rollback: the bad version's upgrade submitted it, Flink's answer never reached
    /// the daemon (the deploy is not recorded, nor its probation).
    UpgradeAnswerLost,
    /// The bad version FAILED on the cluster; the daemon has not seen it.
    FailureUnseen,
    /// The bad run is recorded failed, the rollback is not. The daemon writes one right after
    /// the other, with no request between them to hold: it is killed as at `FailureUnseen`,
    /// then the test records the run's end as the daemon does (simulated).
    FailureRecorded,
    /// The rollback is recorded; the previous version's submit never reached the cluster.
    SubmitUnsent,
    /// The previous version was submitted; the cluster's answer never reached the daemon.
    SubmitAnswerLost,
}

/// The crash harness's case for a rollback (see the module doc). v1 runs; for each kill point
/// a new commit deploys a bad version (a savepoint upgrade from v1) that fails two seconds
/// after it starts, and the daemon is killed at that point of the rollback, then started again.
/// Each time it converges to exactly one RUNNING job, v1 (its spec hash and its Flink job
/// name), restored from the savepoint taken when that bad version's upgrade stopped v1 (read
/// from Flink's checkpoint statistics), with the job `rolled_back` and a `rolled_back` event
/// naming the bad commit; the bad version ran once and is never submitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_rollback_converges_to_the_previous_version_from_its_savepoint() {
    let (url, lib) = (need("JOBKEEPER_FLINK_URL"), need("JOBKEEPER_FLINK_LIB"));
    let tmp = tempfile::tempdir().unwrap();
    let (proxy, proxy_url) = Proxy::start(&url).await;
    let (git, cfg) = setup(tmp.path(), &proxy_url);
    let db = Db(tmp.path().join("state/jobkeeper.db"));
    let log = tmp.path().join("daemon.log");
    let _cleanup = StopRunsOnDrop {
        db: db.0.clone(),
        method: "PATCH",
        url: format!("{url}/jobs/{{id}}?mode=cancel"),
    };
    let job = "app";
    let dump = || format!("{}\ndaemon log: {}", db.dump(job), log.display());
    // Names unique to this test process: the cluster keeps ended jobs of earlier runs.
    let v1 = format!("v1-{}", std::process::id());
    git.write(
        "jobs/app.yaml",
        &counter(&lib, &format!("\"--tag\", \"{v1}\""), ""),
    );
    git.commit_push("v1");
    let mut daemon = Binary::start(&cfg, &log);
    let live_running = async |hash: Option<&str>| -> Option<RunRow> {
        let [run] = <[RunRow; 1]>::try_from(db.live(job)).ok()?;
        let ok = hash.is_none_or(|h| run.spec_hash == h)
            && flink_state(&url, &engine_id(&run)).await.as_deref() == Some("RUNNING");
        ok.then_some(run)
    };
    poll_until("v1 RUNNING", dump, async || {
        live_running(None).await.is_some()
    })
    .await;
    let v1_hash = db.job(job).unwrap().applied_hash.unwrap();
    let mut v1_run = live_running(None).await.unwrap();
    let mut names = vec![format!("flink-counter {v1}")];

    let kills = [
        RollbackKill::UpgradeAnswerLost,
        RollbackKill::FailureUnseen,
        RollbackKill::FailureRecorded,
        RollbackKill::SubmitUnsent,
        RollbackKill::SubmitAnswerLost,
    ];
    for (i, kill) in kills.into_iter().enumerate() {
        let tag = format!("bad-{}-{i}", std::process::id());
        names.push(format!("flink-counter {tag}"));
        // Throws after 40 records (two seconds at 20 a second); Flink does not restart it.
        git.write(
            "jobs/app.yaml",
            &counter(
                &lib,
                &format!(
                    "\"--tag\", \"{tag}\", \"--mode\", \"fail\", \"--failAfter\", \"40\", \
                     \"--rate\", \"20\""
                ),
                ", restart-strategy.type: none",
            ),
        );
        if let RollbackKill::UpgradeAnswerLost = kill {
            proxy.arm(Hold::SubmitAnswer);
        }
        let bad_commit = git.commit_push(&format!("{tag}: fails two seconds after it starts"));
        let mut bad = None;
        if let RollbackKill::UpgradeAnswerLost = kill {
            poll_until("the bad version's submit held", dump, async || {
                bad = db.live(job).into_iter().find(|r| r.spec_hash != v1_hash);
                bad.is_some() && !proxy.held().is_empty()
            })
            .await;
        } else {
            poll_until("the bad version RUNNING", dump, async || {
                bad = db
                    .live(job)
                    .into_iter()
                    .find(|r| r.spec_hash != v1_hash && r.handle.is_some());
                // The deploy recorded too: the daemon no longer waits on the bad version's start.
                let deployed = |r: &RunRow| {
                    db.job(job)
                        .is_some_and(|j| j.applied_hash.as_ref() == Some(&r.spec_hash))
                };
                match &bad {
                    Some(r) if deployed(r) => {
                        flink_state(&url, &engine_id(r)).await.as_deref() == Some("RUNNING")
                    }
                    _ => false,
                }
            })
            .await;
            proxy.arm(match kill {
                RollbackKill::FailureUnseen | RollbackKill::FailureRecorded => {
                    Hold::OverviewWithEnded(engine_id(bad.as_ref().unwrap()))
                }
                RollbackKill::SubmitUnsent => Hold::SubmitUnsent,
                _ => Hold::SubmitAnswer,
            });
            poll_until(&format!("the daemon held at {kill:?}"), dump, async || {
                !proxy.held().is_empty()
            })
            .await;
        }
        let bad = bad.unwrap();
        daemon.sigkill();
        proxy.arm(Hold::Nothing);
        let bad_jid = engine_id(&bad);
        if let RollbackKill::FailureRecorded = kill {
            let reason = format!("flink job {bad_jid} FAILED");
            let store = db.store().unwrap();
            store
                .finish_run(bad.id, jobkeeper::store::RunState::Failed, Some(&reason))
                .unwrap();
        }
        // The store shows the point the daemon was killed at.
        let row = db.job(job).unwrap();
        let bad_row = db.runs(job).into_iter().find(|r| r.id == bad.id).unwrap();
        let at = format!("killed at {kill:?}: {row:?}\n{}", dump());
        match kill {
            RollbackKill::UpgradeAnswerLost => {
                assert!(
                    bad_row.ended_at.is_none() && bad_row.handle.is_none(),
                    "{at}"
                );
                assert_eq!(row.applied_hash.as_deref(), Some(v1_hash.as_str()), "{at}");
            }
            RollbackKill::FailureUnseen => {
                assert!(bad_row.ended_at.is_none(), "{at}");
                assert_eq!(row.applied_hash, Some(bad.spec_hash.clone()), "{at}");
            }
            RollbackKill::FailureRecorded => {
                assert_eq!(bad_row.state, "failed", "{at}");
                assert_eq!(row.applied_hash, Some(bad.spec_hash.clone()), "{at}");
            }
            RollbackKill::SubmitUnsent | RollbackKill::SubmitAnswerLost => {
                assert_eq!(bad_row.state, "failed", "{at}");
                assert_eq!(row.applied_hash.as_deref(), Some(v1_hash.as_str()), "{at}");
            }
        }

        daemon = Binary::start(&cfg, &log);
        poll_until("v1 RUNNING again, rolled back", dump, async || {
            live_running(Some(&v1_hash)).await.is_some()
                && db.job(job).is_some_and(|j| j.state == "rolled_back")
        })
        .await;
        // A few health sweeps: nothing else starts.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let back = live_running(Some(&v1_hash))
            .await
            .unwrap_or_else(|| panic!("killed at {kill:?}: v1 no longer runs\n{}", dump()));
        let jid = engine_id(&back);
        let running: Vec<(String, String)> = overview(&url)
            .await
            .into_iter()
            .filter(|j| names.contains(&j.name) && j.state == "RUNNING")
            .map(|j| (j.jid, j.name))
            .collect();
        assert_eq!(
            running,
            [(jid.clone(), names[0].clone())],
            "killed at {kill:?}: one RUNNING job, v1\n{}",
            dump()
        );
        let bad_runs: Vec<RunRow> = db
            .runs(job)
            .into_iter()
            .filter(|r| r.spec_hash == bad.spec_hash)
            .collect();
        let bad_jobs = overview(&url)
            .await
            .into_iter()
            .filter(|j| j.name == format!("flink-counter {tag}"))
            .count();
        assert_eq!(
            (bad_runs.len(), bad_jobs),
            (1, 1),
            "killed at {kill:?}: the bad version submitted once\n{}",
            dump()
        );
        let sps = db.store().unwrap().savepoints(job, 100).unwrap();
        let upgrade = sps
            .iter()
            .find(|s| s.kind == "savepoint" && s.run_id == Some(v1_run.id))
            .unwrap_or_else(|| panic!("the upgrade stopped v1 with a savepoint: {sps:?}"));
        let start = Instant::now();
        let restored = loop {
            let c = rest(&url, &format!("/jobs/{jid}/checkpoints")).await;
            if c["latest"]["restored"].is_object() {
                break c["latest"]["restored"].clone();
            }
            assert!(start.elapsed() < LIMIT, "no restore reported: {c}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            restored["external_path"].as_str(),
            Some(upgrade.location.as_str()),
            "killed at {kill:?}: v1 restored from the savepoint its upgrade to {tag} took\n{}",
            dump()
        );
        let rolled_back: Vec<EventRow> = db
            .events(job)
            .into_iter()
            .filter(|e| e.kind == "rolled_back")
            .collect();
        assert_eq!(rolled_back.len(), i + 1, "killed at {kill:?}\n{}", dump());
        assert!(
            rolled_back[0].message.contains(&bad_commit[..8]),
            "the event names the bad commit: {:?}",
            rolled_back[0]
        );
        assert_eq!(
            db.count(job, "deploy_failed"),
            0,
            "killed at {kill:?}\n{}",
            dump()
        );
        v1_run = back;
    }
}
