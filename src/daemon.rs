//! The daemon: wires the store, engines, builder, reconciler, triggers and HTTP server together,
//! applies new config commits, and shuts everything down in order.
//!
//! [`run`] takes its settings, listener and shutdown token, so tests run the whole daemon
//! in-process on port 0 against a temporary git repo.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{BuildConfig, Builder};
use crate::changes::changes_of;
use crate::diag;
use crate::engine::flink::FlinkEngine;
use crate::engine::local::LocalEngine;
use crate::engine::spark::SparkEngine;
use crate::engine::{Engine, EngineConfig};
use crate::http::{self, ApiState};
use crate::plan::{self, Change};
use crate::reconcile::{self, Context, Reconciler, spec_hash};
use crate::repo::{ConfigRepo, JobFileChange, Oid, ProjectRepos, RepoError, spawn_trigger};
use crate::settings::Settings;
use crate::spec::{self, JobSpec};
use crate::store::{CommitRecord, DesiredUpdate, NewEvent, Store, StoreError};

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config repo mirror could not be set up.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A folder under `state_dir` could not be made.
    #[error("cannot create {path}: {source}")]
    StateDir {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the state folder.
    #[error(
        "another jobkeeper daemon (pid {pid}) uses the state folder {path}; stop it first, or give this one its own `state_dir`"
    )]
    Locked {
        /// The state folder.
        path: String,
        /// The pid written by the daemon holding it.
        pid: String,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The tip is the applied commit.
    UpToDate,
    /// A new commit was applied; the jobs it changed.
    Applied {
        /// The commit.
        commit: String,
        /// Changed jobs.
        jobs: usize,
    },
}

/// Runs the daemon until `cancel` fires; returns after local runs are stopped.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    run_with(settings, listener, cancel, None).await
}

/// [`run`], and with `config_path`, SIGHUP reads that file again: a valid config replaces the
/// running one (fields only taken at start are named in a warning), an invalid one is refused
/// with its errors and the running config stays.
pub async fn run_with(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
    config_path: Option<std::path::PathBuf>,
) -> Result<(), DaemonError> {
    let live = crate::settings::Live::new(settings.clone());
    let settings = Arc::new(settings);
    let state_dir = settings.state_dir.clone();
    for sub in ["logs", "repos", "builds", "artifacts"] {
        let dir = state_dir.join(sub);
        std::fs::create_dir_all(&dir).map_err(|source| DaemonError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let _lock = lock_state_dir(&state_dir)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string()),
        state_dir = %state_dir.display(),
        repo = %settings.repo.url,
        branch = %settings.repo.branch,
        path = %settings.repo.path,
        "jobkeeper starting"
    );
    let store = Store::open(&state_dir.join("jobkeeper.db"))?;
    let alerter = crate::alert::Alerter::spawn(settings.clone(), store.clone(), cancel.clone())
        .attach(&store);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let local = Arc::new(LocalEngine::new());
    let engines = engines_by_env(&settings, &local);
    let projects = Arc::new(ProjectRepos::new(
        &state_dir,
        crate::repo::Credentials::from_settings(&settings.repo),
    ));
    let builder = Builder::new(BuildConfig {
        state_dir: state_dir.clone(),
        max_concurrent: settings.build.max_concurrent,
        timeout: settings.build.timeout,
        max_log_bytes: crate::build::DEFAULT_MAX_LOG_BYTES,
    });
    let ctx = Arc::new(Context {
        settings: live.clone(),
        store: store.clone(),
        builder,
        projects,
        engines,
        logs_dir: state_dir.join("logs"),
        metrics: metrics.clone(),
        outages: reconcile::Outages::default(),
    });

    // Before anything starts: local runs a previous daemon left behind are found and stopped;
    // cluster runs are kept for their actors to adopt.
    let recovered = reconcile::recover_live_runs(&ctx).await?;
    if recovered > 0 {
        tracing::info!(
            runs = recovered,
            "stopped runs left by a previous daemon before starting"
        );
    }

    let tasks = TaskTracker::new();
    let reconciler = Reconciler::new(ctx.clone(), cancel.clone());
    if let Some(mut exits) = local.take_exits() {
        let (r, cancel) = (reconciler.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    exit = exits.recv() => match exit {
                        Some(exit) => r.exited(exit),
                        None => break,
                    },
                }
            }
        });
    }
    {
        let (ctx, r, cancel) = (ctx.clone(), reconciler.clone(), cancel.clone());
        let interval = settings.health.interval;
        tasks.spawn(crate::health::sweep_loop(ctx, r, interval, cancel));
    }
    let notifier = Arc::new(crate::systemd::Notifier::from_env());
    let api = Arc::new(ApiState {
        ready: std::sync::atomic::AtomicBool::new(false),
        settings: settings.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        reconciler: reconciler.clone(),
        alerter: Some(alerter),
        trigger: std::sync::OnceLock::new(),
    });
    let server = {
        let (api, cancel) = (api.clone(), cancel.clone());
        tasks.spawn(async move { http::serve(listener, api, cancel).await })
    };

    // The store is open and the listener serves: systemd may consider the service started.
    notifier.ready("started: applying the config repo");
    if let Some(interval) = crate::systemd::watchdog_interval() {
        tasks.spawn(watchdog_loop(
            store.clone(),
            notifier.clone(),
            interval,
            cancel.clone(),
        ));
    }
    tasks.spawn(status_loop(store.clone(), notifier.clone(), cancel.clone()));
    tasks.spawn(crate::runlogs::rotate_loop(
        store.clone(),
        live.clone(),
        cancel.clone(),
    ));
    if let Some(path) = config_path {
        tasks.spawn(reload_loop(
            path,
            live.clone(),
            store.clone(),
            notifier.clone(),
            cancel.clone(),
        ));
    }

    let repo_settings = settings.repo.clone();
    let repo = {
        let state_dir = state_dir.clone();
        tokio::task::spawn_blocking(move || ConfigRepo::open(&repo_settings, &state_dir))
            .await
            .map_err(|e| DaemonError::StateDir {
                path: "repos".into(),
                source: std::io::Error::other(e),
            })??
    };
    let repo = Arc::new(repo);
    let (mut triggers, control) = spawn_trigger(&settings.repo, cancel.clone());
    let _ = api.trigger.set(control.clone());
    let mut unreachable = false;
    let mut started_jobs = false;
    loop {
        let reason = tokio::select! {
            () = cancel.cancelled() => break,
            r = triggers.recv() => match r { Some(r) => r, None => break },
        };
        let started = Instant::now();
        metrics.fetch_started(reason.as_str());
        // At start, the tip is applied before stored jobs start, so a commit made while the
        // daemon was down is not preceded by a run of the old version; a repo that does not
        // answer in time does not keep the stored jobs from starting.
        let result = if started_jobs {
            sync(&repo, &ctx, &reconciler).await
        } else {
            match tokio::time::timeout(STARTUP_SYNC_WAIT, sync(&repo, &ctx, &reconciler)).await {
                Ok(r) => r,
                Err(_) => Err(SyncError::Task(format!(
                    "no answer within {}s at start; starting the stored jobs, still trying",
                    STARTUP_SYNC_WAIT.as_secs()
                ))),
            }
        };
        metrics.fetch_done(result.is_ok(), started.elapsed());
        match result {
            Ok(outcome) => {
                control.fetch_ok();
                if unreachable {
                    unreachable = false;
                    record(&store, "repo_reachable", "the config repo answers again");
                }
                if let SyncOutcome::Applied { commit, jobs } = &outcome {
                    tracing::info!(%commit, jobs, trigger = %reason, took = ?started.elapsed(), "applied config commit");
                }
                if !api.ready.swap(true, Ordering::AcqRel) {
                    let applied = store.applied_commit().ok().flatten().unwrap_or_default();
                    tracing::info!(commit = %applied.get(..8).unwrap_or(""), "ready");
                }
                reconciler.follow_all();
            }
            Err(err) => {
                control.fetch_failed();
                if err.is_unreachable() {
                    if !unreachable {
                        unreachable = true;
                        record(&store, "repo_unreachable", &err.to_string());
                    }
                    tracing::warn!(trigger = %reason, retry_in = ?control.poll_interval(), "config repo unreachable: {err}");
                } else {
                    tracing::error!(trigger = %reason, "cannot apply the config repo: {err}");
                }
            }
        }
        if !started_jobs {
            started_jobs = true;
            for row in store.jobs()? {
                if row.desired.is_some() {
                    reconciler.poke(&row.name);
                }
            }
        }
    }

    notifier.stopping();
    tracing::info!("shutting down: stopping local runs");
    reconciler.wait().await;
    tasks.close();
    tasks.wait().await;
    if let Ok(Err(e)) = server.await {
        return Err(DaemonError::Http(e));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sends `WATCHDOG=1` every half interval while the store takes writes within that time; a
/// stuck store (hung disk, a lock held elsewhere) stops the pings, and systemd restarts the
/// service after `WatchdogSec`.
async fn watchdog_loop(
    store: Store,
    notifier: Arc<crate::systemd::Notifier>,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let beat = tokio::time::timeout(period, tokio::task::spawn_blocking(move || s.heartbeat()));
        match beat.await {
            Ok(Ok(Ok(()))) => notifier.watchdog(),
            Ok(Ok(Err(e))) => tracing::error!("watchdog: the store takes no writes: {e}"),
            Ok(Err(e)) => tracing::error!("watchdog: heartbeat task failed: {e}"),
            Err(_) => tracing::error!("watchdog: the store did not answer within {period:?}"),
        }
    }
}

/// Keeps systemd's `STATUS=` line current: applied commit and jobs by state.
async fn status_loop(
    store: Store,
    notifier: Arc<crate::systemd::Notifier>,
    cancel: CancellationToken,
) {
    if !notifier.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let Ok(Ok((commit, counts))) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((s.applied_commit()?, s.state_counts()?))
        })
        .await
        else {
            continue;
        };
        let commit = commit
            .as_deref()
            .and_then(|c| c.get(..8))
            .unwrap_or("none")
            .to_string();
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        let by_state: Vec<String> = counts.iter().map(|(st, n)| format!("{n} {st}")).collect();
        notifier.status(&format!(
            "applied {commit}; {total} jobs: {}",
            by_state.join(", ")
        ));
    }
}

/// SIGHUP: reload the config (see [`run_with`]).
async fn reload_loop(
    path: std::path::PathBuf,
    live: crate::settings::Live,
    store: Store,
    notifier: Arc<crate::systemd::Notifier>,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: reload needs a restart");
        return;
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hup.recv() => {}
        }
        notifier.reloading();
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::settings::load(&p)).await;
        match loaded {
            Ok(Ok(new)) => {
                let old = live.get();
                let later = crate::settings::needs_restart(&old, &new);
                live.replace(new);
                let msg = if later.is_empty() {
                    format!("config {} reloaded", path.display())
                } else {
                    format!(
                        "config {} reloaded; changes to {} take effect at the next start",
                        path.display(),
                        later.join(", ")
                    )
                };
                tracing::info!(event = "config_reloaded", "{msg}");
                let _ = store.event(&NewEvent {
                    kind: "config_reloaded",
                    message: &msg,
                    ..NewEvent::default()
                });
                notifier.ready(&msg);
            }
            Ok(Err(diags)) => {
                for d in &diags {
                    tracing::error!(event = "config_reload_refused", "{d}");
                }
                let msg = format!(
                    "config reload refused ({} problem(s)); the running config stays:\n{}",
                    diags.len(),
                    diag::render(&diags)
                );
                let _ = store.event(&NewEvent {
                    kind: "config_reload_refused",
                    message: &msg,
                    ..NewEvent::default()
                });
                notifier.ready("config reload refused; the running config stays");
            }
            Err(e) => tracing::error!("config reload failed: {e}"),
        }
    }
}

/// The engine of each env: the local engine is shared; each flink cluster (URL and savepoint
/// folder) and each spark master (REST URL, master URL and UI) gets one engine, shared by the
/// envs naming it.
fn engines_by_env(
    settings: &Settings,
    local: &Arc<LocalEngine>,
) -> HashMap<String, Arc<dyn Engine>> {
    let salt = settings.state_dir.display().to_string();
    let mut clusters: HashMap<String, Arc<dyn Engine>> = HashMap::new();
    let mut engines: HashMap<String, Arc<dyn Engine>> = HashMap::new();
    type Make<'a> = Box<dyn Fn() -> Result<Arc<dyn Engine>, crate::engine::EngineError> + 'a>;
    for (name, env) in &settings.envs {
        let (key, made): (String, Make) = match &env.engine {
            EngineConfig::Local => {
                engines.insert(name.clone(), local.clone());
                continue;
            }
            EngineConfig::Flink(f) => (
                format!("flink {} {:?}", f.url, f.savepoint_dir),
                Box::new(|| FlinkEngine::new(f, &salt).map(|e| Arc::new(e) as Arc<dyn Engine>)),
            ),
            EngineConfig::Spark(s) => (
                format!("spark {} {} {:?}", s.url, s.master, s.ui),
                Box::new(|| SparkEngine::new(s, &salt).map(|e| Arc::new(e) as Arc<dyn Engine>)),
            ),
        };
        if let Some(e) = clusters.get(&key) {
            engines.insert(name.clone(), e.clone());
            continue;
        }
        match made() {
            Ok(e) => {
                clusters.insert(key, e.clone());
                engines.insert(name.clone(), e);
            }
            Err(err) => tracing::error!(env = %name, "engine unavailable: {err}"),
        }
    }
    engines
}

/// How long the first sync may take before the stored jobs start anyway.
pub const STARTUP_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes an exclusive lock on `state_dir/jobkeeper.lock` for the daemon's life, so two daemons
/// never share a state folder (they would stop each other's runs and start every job twice).
fn lock_state_dir(
    state_dir: &std::path::Path,
) -> Result<nix::fcntl::Flock<std::fs::File>, DaemonError> {
    use std::io::{Read, Seek, Write};
    let path = state_dir.join("jobkeeper.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| DaemonError::StateDir {
            path: path.display().to_string(),
            source,
        })?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = writeln!(lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(DaemonError::Locked {
                path: state_dir.display().to_string(),
                pid: pid.trim().to_string(),
            })
        }
    }
}

fn record(store: &Store, kind: &str, message: &str) {
    tracing::warn!(event = kind, "{message}");
    let _ = store.event(&NewEvent {
        kind,
        message,
        ..NewEvent::default()
    });
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Git said no.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The store said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task died.
    #[error("sync task failed: {0}")]
    Task(String),
}

impl SyncError {
    /// True when the repo could not be reached (retry with backoff).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Repo(e) if e.is_unreachable())
    }
}

/// Fetches the config repo and applies its tip if it is new (SPEC reconcile rules 1–4, 7).
pub async fn sync(
    repo: &Arc<ConfigRepo>,
    ctx: &Arc<Context>,
    reconciler: &Arc<Reconciler>,
) -> Result<SyncOutcome, SyncError> {
    let (repo, ctx2) = (repo.clone(), ctx.clone());
    let applied = tokio::task::spawn_blocking(move || apply_tip(&repo, &ctx2))
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
    match applied {
        None => Ok(SyncOutcome::UpToDate),
        Some((commit, jobs)) => {
            for job in &jobs {
                reconciler.poke(job);
            }
            Ok(SyncOutcome::Applied {
                commit,
                jobs: jobs.len(),
            })
        }
    }
}

/// Blocking part of a sync: fetch, diff against the applied commit, parse the changed files,
/// and record the new desired state in one transaction. Returns the jobs to poke.
fn apply_tip(repo: &ConfigRepo, ctx: &Context) -> Result<Option<(String, Vec<String>)>, SyncError> {
    let tip = repo.fetch()?;
    let applied = ctx.store.applied_commit()?;
    if applied.as_deref() == Some(tip.to_string().as_str()) {
        return Ok(None); // rule 7: the same commit twice does nothing
    }
    let settings = ctx.settings.get();
    let path = &settings.repo.path;
    let sctx = spec::Context {
        settings: Some(&*settings),
    };
    let tree = repo.tree();
    let from = applied
        .as_deref()
        .and_then(|a| Oid::from_str(a).ok())
        .filter(|id| tree.repository().find_commit(*id).is_ok());
    let diff = tree.diff_job_files(from, tip, path)?;
    let mut changes = changes_of(&tree, &diff, sctx);
    if from.is_none() {
        // Nothing applied yet, or the applied commit is unknown to this mirror: every job the
        // store knows that the tip does not have is removed.
        let present: std::collections::HashSet<String> = diff
            .iter()
            .filter_map(|c| match c {
                JobFileChange::Added(f) => spec::job_name_of(&f.rel_path).map(str::to_string),
                _ => None,
            })
            .collect();
        for row in ctx.store.jobs()? {
            if row.desired.is_some() && !present.contains(&row.name) {
                changes.push(Change::Remove {
                    name: row.name,
                    path: row.path,
                });
            }
        }
    }
    if !crate::changes::path_exists(&tree, tip, path) {
        tracing::warn!(path = %path, "the config repo has no folder `{path}` at its tip: no jobs (check `repo.path`)");
    }
    let info = tree.commit_info(tip)?;
    drop(tree);

    let names: Vec<&str> = changes.iter().map(Change::name).collect();
    let applied_specs: std::collections::BTreeMap<String, JobSpec> = ctx
        .store
        .applied_specs(&names)?
        .into_iter()
        .filter_map(|(n, json)| serde_json::from_str(&json).ok().map(|s| (n, s)))
        .collect();
    let the_plan = plan::plan(&applied_specs, &changes);

    let mut updates = Vec::with_capacity(changes.len());
    for change in &changes {
        updates.push(match change {
            Change::Upsert {
                name,
                path,
                spec: Ok(spec),
            } => {
                let json = serde_json::to_string(spec).unwrap_or_default();
                let hash = spec_hash(&json);
                DesiredUpdate::Spec {
                    name: name.clone(),
                    path: path.clone(),
                    spec: json,
                    hash,
                }
            }
            Change::Upsert {
                name,
                path,
                spec: Err(errors),
            } => DesiredUpdate::Invalid {
                name: name.clone(),
                path: path.clone(),
                errors: diag::render(errors),
            },
            Change::Remove { name, .. } => DesiredUpdate::Removed { name: name.clone() },
        });
    }
    let mut notes = Vec::with_capacity(the_plan.items.len());
    for item in &the_plan.items {
        let (kind, message) = match item.action {
            plan::Action::Invalid => {
                let msg = format!(
                    "{}\n{}",
                    item.reasons.join("; "),
                    diag::render(&item.errors)
                );
                for e in &item.errors {
                    tracing::warn!(job = %item.job, commit = %info.short, event = "invalid", "{e}");
                }
                ("invalid", msg)
            }
            action => {
                let msg = format!("{}: {}", action.as_str(), item.reasons.join("; "));
                tracing::info!(job = %item.job, commit = %info.short, author = %info.author, "plan: {msg}");
                ("planned", msg)
            }
        };
        notes.push((item.job.clone(), kind.to_string(), message));
    }
    let commit = CommitRecord {
        id: info.id.clone(),
        author: info.author.clone(),
        subject: info.subject.clone(),
    };
    ctx.store.apply_commit(&commit, &updates, &notes)?;
    let poke = the_plan
        .items
        .iter()
        .filter(|i| i.action != plan::Action::Invalid)
        .map(|i| i.job.clone())
        .collect();
    Ok(Some((info.short, poke)))
}

/// SIGTERM or SIGINT cancels `cancel` (a graceful stop); a second one exits at once.
pub fn spawn_signal_handler(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if stopping {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
            stopping = true;
            tracing::info!("signal received: stopping gracefully (send again to force)");
            cancel.cancel();
        }
    });
}
