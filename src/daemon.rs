//! The daemon: wiring only. [`run_with`] reads as its steps: make and lock the state folder,
//! open the store and build the shared parts (`Core`), stop runs a previous daemon left,
//! start the job loops (run exits, health sweep, whose loop pings systemd's watchdog), serve
//! HTTP, start the service loops (status, log rotation, reloads), follow the config repo
//! ([`Follower`], one [`crate::sync`] per trigger) and shut everything down in order.
//!
//! [`run`] takes its settings, listener and shutdown token, so tests run the whole daemon
//! in-process on port 0 against a temporary git repo.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Alerter;
use crate::build::{BuildConfig, Builder};
use crate::engine::Engines;
use crate::http::{self, ApiState};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Reconciler};
use crate::repo::{ConfigRepo, ProjectRepos, RepoError};
use crate::settings::{Live, Settings};
use crate::store::{Store, StoreError};
use crate::sync::Follower;
use crate::systemd::Notifier;

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
    /// An env's cluster is one jobkeeper cannot drive (a Flink older than 1.19).
    #[error("env {env}: {message}")]
    Engine {
        /// The env (the first naming the cluster).
        env: String,
        /// What the engine said.
        message: String,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
}

/// Runs the daemon until `cancel` fires; returns after the runs that end with the daemon are
/// stopped.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    run_with(settings, listener, cancel, None).await
}

/// [`run`], and with `config_path`, SIGHUP reads that file again (see [`crate::reload`]): a
/// valid config replaces the running one and every part reads it at its next use, an invalid
/// one is refused with its errors and the running config stays.
pub async fn run_with(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
    config_path: Option<PathBuf>,
) -> Result<(), DaemonError> {
    let state_dir = settings.state_dir.clone();
    make_state_dirs(&state_dir)?;
    let _lock = lock_state_dir(&state_dir)?;
    log_start(&settings, &listener);
    raise_nofile();
    let live = Live::new(settings);
    // The config at start: the fields taken only at start are read from it.
    let started = live.get();
    let store = match crate::store_start::open(&started, &listener, &cancel).await {
        Ok(store) => store,
        // Stopped (SIGTERM) while the store was being tried again: a clean stop.
        Err(StoreError::Stopped) if cancel.is_cancelled() => {
            tracing::info!("stopped while waiting for the store");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // With `ha`, the runs this daemon starts record its `ha.node`.
    let store = match &started.ha {
        Some(ha) => store.with_node(&ha.node),
        None => store,
    };
    let (engines, shelf, url) = engines_of(&started, &store, &listener).await?;
    let core = Core::open(&live, &cancel, engines, store).await?;
    crate::engine::registry::probe(&core.ctx.engines.all())
        .await
        .map_err(|r| DaemonError::Engine {
            env: r.env,
            message: r.message,
        })?;
    let tasks = TaskTracker::new();
    let reconciler = Reconciler::new(core.ctx.clone(), cancel.clone());
    let notifier = Arc::new(Notifier::from_env());
    let keeper = lease_keeper(&started, &url, &notifier)?;
    if keeper.is_none() {
        // The only daemon: the runs a previous one left are handled before anything answers.
        take_over(&core).await?;
    }
    let leadership = match &keeper {
        Some((_, watch)) => watch.clone(),
        None => crate::ha::fixed(crate::ha::Leadership::single(
            &crate::ha::host_name(),
            crate::store::now_ms(),
        )),
    };
    let api = api_state(&live, &core, &reconciler, shelf, leadership);
    let server = {
        let (api, cancel) = (api.clone(), cancel.clone());
        tasks.spawn(async move { http::serve(listener, api, cancel).await })
    };

    // The store is open and the listener serves: systemd may consider the service started.
    notifier.ready("started: applying the config repo");
    // Until the health sweep pings it: while a standby waits and while the runs are recovered.
    let early_pings = ping_until_the_sweep(&notifier);
    // With `ha`: a standby serving reads until this daemon takes the lease.
    let Some(term) = wait_to_lead(keeper, &api, &cancel).await else {
        if let Some(p) = early_pings {
            p.abort();
        }
        tracing::info!("stopped as a standby");
        return shut_down(&notifier, &reconciler, tasks, server).await;
    };
    if term.kept.is_some() {
        take_over(&core).await?;
    }
    start_job_loops(&tasks, &core, &reconciler, (&started, &notifier), &cancel);
    if let Some(p) = early_pings {
        p.abort();
    }
    let reload = config_path.map(|path| (path, started.clone()));
    let loops = ServiceLoops {
        store: &core.store,
        reconciler: &reconciler,
        live: &live,
        notifier: &notifier,
        metrics: &core.metrics,
    };
    start_service_loops(&tasks, &loops, reload, &cancel);

    let followed = follow_config_repo(&started, &core, &reconciler, api, &cancel).await;
    if followed.is_err() {
        // Every exit path stops the runs that end with the daemon, as SIGTERM does.
        cancel.cancel();
    }
    let stopped = shut_down(&notifier, &reconciler, tasks, server).await;
    // The runs are handled: the lease goes to a standby at once.
    term.release().await;
    followed.and(stopped)
}

/// What the HTTP API reads and acts through.
fn api_state(
    live: &Live,
    core: &Core,
    reconciler: &Arc<Reconciler>,
    shelf: crate::engine::spark::artifacts::Shelf,
    leadership: crate::ha::LeaderWatch,
) -> Arc<ApiState> {
    let started = live.get();
    Arc::new(ApiState {
        ready: AtomicBool::new(false),
        settings: live.clone(),
        hook_buffer: http::body::HookBuffer::new(started.http.hook_buffer),
        started,
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        reconciler: reconciler.clone(),
        alerter: Some(core.alerter.clone()),
        trigger: OnceLock::new(),
        shelf,
        counts: Default::default(),
        leadership,
        pages: Default::default(),
    })
}

/// The engines of this daemon (their ids salted with the installation's id, Spark jar URLs
/// made with its key), the jars they serve, and the daemon's own URL.
async fn engines_of(
    started: &Settings,
    store: &Store,
    listener: &TcpListener,
) -> Result<(Engines, crate::engine::spark::artifacts::Shelf, String), DaemonError> {
    let state_dir = &started.state_dir;
    // Seeded with what releases before the stored id salted with, so live runs keep their ids.
    let installation = store
        .installation_id(&state_dir.display().to_string())
        .await?;
    let url = daemon_url(started, listener);
    let artifact_key = crate::served_key::artifact_key(store, state_dir)
        .await
        .map_err(|e| match e {
            crate::served_key::ServedError::File { path, source } => {
                DaemonError::StateDir { path, source }
            }
            crate::served_key::ServedError::Store(e) => DaemonError::Store(e),
        })?;
    let envs = started.envs.iter().map(|(n, e)| (n, &e.engine));
    let (engines, shelf) = crate::engine::registry::for_daemon(
        state_dir,
        &installation,
        artifact_key,
        url.clone(),
        envs,
    );
    Ok((engines, shelf, url))
}

/// Pings systemd's watchdog from a task of its own until the health sweep takes over.
fn ping_until_the_sweep(notifier: &Arc<Notifier>) -> Option<tokio::task::JoinHandle<()>> {
    crate::systemd::Watchdog::from_env(notifier.clone()).map(|w| {
        tokio::spawn(async move {
            loop {
                w.ping();
                tokio::time::sleep(w.period()).await;
            }
        })
    })
}

/// This daemon's term as the leader: with `ha`, the task keeping the lease (with its epoch),
/// and what stops it; without, nothing to keep.
struct Term {
    kept: Option<(i64, tokio::task::JoinHandle<crate::ha::keeper::Keeper>)>,
    stop: CancellationToken,
}

impl Term {
    /// Stops keeping the lease and releases it (the daemon's runs are handled).
    async fn release(self) {
        self.stop.cancel();
        if let Some((epoch, kept)) = self.kept
            && let Ok(mut keeper) = kept.await
        {
            keeper.release(epoch).await;
        }
    }
}

/// With `ha`, waits as a standby until this daemon takes the lease, then keeps it in a task of
/// its own; `None` when `cancel` fired first. Without `ha`, the term at once.
async fn wait_to_lead(
    keeper: Option<(crate::ha::keeper::Keeper, crate::ha::LeaderWatch)>,
    api: &Arc<ApiState>,
    cancel: &CancellationToken,
) -> Option<Term> {
    let stop = CancellationToken::new();
    let Some((mut keeper, _)) = keeper else {
        return Some(Term { kept: None, stop });
    };
    let (taken, fenced) = crate::lead::take(&mut keeper, api, cancel).await?;
    let kept = crate::lead::keep(keeper, taken.epoch, api.clone(), fenced, stop.clone());
    Some(Term {
        kept: Some((taken.epoch, tokio::spawn(kept))),
        stop,
    })
}

/// With `ha`: the lease's keeper (this daemon answering at `url`) and the watch it writes.
fn lease_keeper(
    started: &Settings,
    url: &str,
    notifier: &Arc<Notifier>,
) -> Result<Option<(crate::ha::keeper::Keeper, crate::ha::LeaderWatch)>, DaemonError> {
    let (Some(ha), Some(pg)) = (&started.ha, &started.store) else {
        return Ok(None);
    };
    let target = pg.target().map_err(|source| DaemonError::StateDir {
        path: "store.postgres.password_file".into(),
        source,
    })?;
    let watchdog = crate::systemd::Watchdog::from_env(notifier.clone());
    Ok(Some(crate::ha::keeper::Keeper::new(
        target,
        ha.clone(),
        url.to_string(),
        watchdog,
    )))
}

/// Opens the config repo and follows it until `cancel` fires; an error ends the daemon, whose
/// caller still shuts down what runs.
async fn follow_config_repo(
    started: &Settings,
    core: &Core,
    reconciler: &Arc<Reconciler>,
    api: Arc<ApiState>,
    cancel: &CancellationToken,
) -> Result<(), DaemonError> {
    let repo = open_config_repo(started, &started.state_dir).await?;
    Follower::new(repo, core.ctx.clone(), reconciler.clone(), api)
        .run(&started.repo, cancel)
        .await?;
    Ok(())
}

/// Makes the folders under `state_dir`.
fn make_state_dirs(state_dir: &Path) -> Result<(), DaemonError> {
    for sub in ["logs", "repos", "builds", "artifacts"] {
        let dir = state_dir.join(sub);
        std::fs::create_dir_all(&dir).map_err(|source| DaemonError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Raises the soft file-descriptor limit to the hard one (see [`crate::host`]); a limit that
/// cannot be raised is logged and the daemon goes on with it.
fn raise_nofile() {
    match crate::host::raise_nofile() {
        Ok(r) if r.before < r.now => {
            tracing::info!(
                from = r.before,
                to = r.now,
                reserve = crate::host::FD_RESERVE,
                "file descriptor limit raised to the hard limit"
            );
        }
        Ok(r) => tracing::info!(
            limit = r.now,
            reserve = crate::host::FD_RESERVE,
            "file descriptor limit"
        ),
        Err(e) => tracing::warn!("file descriptor limit not raised: {e}"),
    }
}

fn log_start(settings: &Settings, listener: &TcpListener) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string()),
        state_dir = %settings.state_dir.display(),
        repo = %settings.repo.url,
        branch = %settings.repo.branch,
        path = %settings.repo.path,
        "jobkeeper starting"
    );
}

/// The shared parts every loop uses.
struct Core {
    /// The store, forwarding events to the alerter.
    store: Store,
    /// Alert delivery.
    alerter: Alerter,
    /// Counters.
    metrics: Arc<Metrics>,
    /// What each job's actor needs (with the engines, whose run exits feed the reconciler).
    ctx: Arc<Context>,
}

impl Core {
    /// Builds the alerter, builder and reconcile context around
    /// `engines`.
    async fn open(
        live: &Live,
        cancel: &CancellationToken,
        engines: Engines,
        store: Store,
    ) -> Result<Core, DaemonError> {
        let settings = live.get();
        let state_dir = &settings.state_dir;
        let key = crate::secrets::Key::load_or_create(state_dir).map_err(|source| {
            DaemonError::StateDir {
                path: state_dir
                    .join(crate::secrets::KEY_FILE)
                    .display()
                    .to_string(),
                source,
            }
        })?;
        // Attached to the store once this daemon leads: a standby sends no alerts.
        let alerter = Alerter::spawn(live.clone(), store.clone(), cancel.clone()).await;
        let metrics = Arc::new(Metrics::default());
        let projects = Arc::new(ProjectRepos::new(
            state_dir,
            crate::repo::Credentials::from_settings(&settings.repo),
        ));
        let builder = Builder::new(BuildConfig {
            state_dir: state_dir.clone(),
            max_concurrent: settings.build.max_concurrent,
            timeout: settings.build.timeout,
            max_log_bytes: crate::build::DEFAULT_MAX_LOG_BYTES,
            path: settings.build.path.clone(),
        });
        let ctx = Arc::new(Context {
            settings: live.clone(),
            store: store.clone(),
            events: reconcile::Emitter::new(store.clone(), metrics.clone()),
            builder,
            projects,
            engines,
            logs_dir: state_dir.join("logs"),
            metrics: metrics.clone(),
            outages: reconcile::Outages::default(),
            host: reconcile::HostWaits::new(state_dir),
            unmanaged: reconcile::unmanaged::Unmanaged::default(),
            secrets: crate::secrets::Held::new(key),
        });
        Ok(Core {
            store,
            alerter,
            metrics,
            ctx,
        })
    }
}

/// Once this daemon leads (at start without `ha`): its events are alerted, and the runs a
/// previous leader left are handled.
async fn take_over(core: &Core) -> Result<(), DaemonError> {
    core.alerter.clone().attach(&core.store);
    recover(&core.ctx).await?;
    seal_left_logs(&core.ctx).await;
    Ok(())
}

/// Before anything starts: the runs a previous daemon left behind are handed to their engines,
/// which stop those that end with the daemon and keep the others for their actors to adopt.
async fn recover(ctx: &Arc<Context>) -> Result<(), DaemonError> {
    let recovered = reconcile::recover_live_runs(ctx).await?;
    if recovered > 0 {
        tracing::info!(
            runs = recovered,
            "stopped runs left by a previous daemon before starting"
        );
    }
    Ok(())
}

/// Before anything starts: the logs of runs that ended while no daemon held their secrets are
/// masked in place when their secrets still match (see [`crate::secrets::seal`]).
async fn seal_left_logs(ctx: &Arc<Context>) {
    let ctx = ctx.clone();
    let done = tokio::task::spawn_blocking(move || {
        let dir = ctx.settings.get().secrets_dir.clone();
        crate::secrets::seal::seal_left_logs(&ctx.store, &ctx.secrets, dir.as_deref())
    })
    .await;
    if let Ok((masked, withheld)) = done
        && masked + withheld > 0
    {
        tracing::info!(
            masked,
            withheld,
            "logs of ended runs masked in place; the withheld ones' secrets changed or are gone"
        );
    }
}

/// Run exits the engines report go to their actors; the health sweep looks at every live run
/// (and pings systemd's watchdog through `notifier`).
fn start_job_loops(
    tasks: &TaskTracker,
    core: &Core,
    reconciler: &Arc<Reconciler>,
    (started, notifier): (&Settings, &Arc<Notifier>),
    cancel: &CancellationToken,
) {
    if let Some(mut exits) = core.ctx.engines.take_exits() {
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
    tasks.spawn(crate::reconcile::disposal::disposal_loop(
        core.ctx.clone(),
        cancel.clone(),
    ));
    let (ctx, r, cancel) = (core.ctx.clone(), reconciler.clone(), cancel.clone());
    let interval = started.health.interval;
    // Changes held by a freeze window are put in place when it closes.
    tasks.spawn(crate::sync::frozen::release_loop(
        ctx.clone(),
        r.clone(),
        cancel.clone(),
    ));
    // systemd's watchdog is pinged by the sweep's own loop (see `sweep_loop`).
    let watchdog = crate::systemd::Watchdog::from_env(notifier.clone());
    tasks.spawn(crate::reconcile::sweep_loop(
        ctx, r, interval, watchdog, cancel,
    ));
}

/// What the service loops share.
struct ServiceLoops<'a> {
    /// The store.
    store: &'a Store,
    /// The reconciler (a reload may move jobs to a new cluster).
    reconciler: &'a Arc<Reconciler>,
    /// The running config.
    live: &'a Live,
    /// systemd.
    notifier: &'a Arc<Notifier>,
    /// Counters (retention's).
    metrics: &'a Arc<Metrics>,
}

/// Retention, systemd's watchdog and status line, log rotation and, with a config file and the config
/// read from it at start, SIGHUP reloads.
fn start_service_loops(
    tasks: &TaskTracker,
    loops: &ServiceLoops<'_>,
    reload: Option<(PathBuf, Arc<Settings>)>,
    cancel: &CancellationToken,
) {
    let ServiceLoops {
        store,
        reconciler,
        live,
        notifier,
        metrics,
    } = *loops;
    tasks.spawn(crate::retention::retention_loop(
        store.clone(),
        live.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    tasks.spawn(status_loop(store.clone(), notifier.clone(), cancel.clone()));
    tasks.spawn(crate::runlogs::rotate_loop(
        store.clone(),
        live.clone(),
        cancel.clone(),
    ));
    if let Some((path, started)) = reload {
        tasks.spawn(crate::reload::reload_loop(
            path,
            started,
            live.clone(),
            reconciler.clone(),
            notifier.clone(),
            cancel.clone(),
        ));
    }
}

/// Opens (or clones) the config repo mirror under `state_dir/repos`.
async fn open_config_repo(
    settings: &Settings,
    state_dir: &Path,
) -> Result<Arc<ConfigRepo>, DaemonError> {
    let (repo_settings, state_dir) = (settings.repo.clone(), state_dir.to_path_buf());
    let repo = tokio::task::spawn_blocking(move || ConfigRepo::open(&repo_settings, &state_dir))
        .await
        .map_err(|e| DaemonError::StateDir {
            path: "repos".into(),
            source: std::io::Error::other(e),
        })??;
    Ok(Arc::new(repo))
}

/// Stops in order: the runs that end with the daemon, with their actors, then every loop, then
/// the HTTP server.
async fn shut_down(
    notifier: &Notifier,
    reconciler: &Reconciler,
    tasks: TaskTracker,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), DaemonError> {
    notifier.stopping();
    tracing::info!("shutting down: stopping the runs that end with the daemon");
    reconciler.wait().await;
    tasks.close();
    tasks.wait().await;
    if let Ok(Err(e)) = server.await {
        return Err(DaemonError::Http(e));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Keeps systemd's `STATUS=` line current: applied commit and jobs by state.
async fn status_loop(store: Store, notifier: Arc<Notifier>, cancel: CancellationToken) {
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
        let read =
            async { Ok::<_, StoreError>((s.applied_commit().await?, s.job_state_counts().await?)) }
                .await;
        let Some((commit, counts)) = store.read_or_log(None, "jobs by state, for systemd", read)
        else {
            continue;
        };
        let commit = commit
            .as_deref()
            .and_then(|c| c.get(..8))
            .unwrap_or("none")
            .to_string();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let by_state: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(st, n)| format!("{n} {st}"))
            .collect();
        notifier.status(&format!(
            "applied {commit}; {total} jobs: {}",
            by_state.join(", ")
        ));
    }
}

/// The daemon's base URL, where engines' workers fetch what it serves: `external_url`, else
/// the address the listener is bound to (as in alert links: an unspecified address is replaced
/// by the host's name).
fn daemon_url(settings: &Settings, listener: &TcpListener) -> String {
    if let Some(u) = &settings.external_url {
        return u.trim_end_matches('/').to_string();
    }
    let addr = listener.local_addr().unwrap_or(settings.listen);
    crate::alert::status_link(addr, None)
        .trim_end_matches('/')
        .to_string()
}

/// Fails with [`DaemonError::Locked`] when another daemon holds `state_dir`'s lock now (the
/// check takes the lock and lets it go at once: [`run_with`] takes it for good). A state folder
/// that does not exist yet is free.
pub fn check_state_dir_free(state_dir: &std::path::Path) -> Result<(), DaemonError> {
    if !state_dir.join("jobkeeper.lock").exists() {
        return Ok(());
    }
    lock_state_dir(state_dir).map(drop)
}

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
