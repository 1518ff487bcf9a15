//! The build queue: the cache lookup, one build per key at a time (identical requests wait for
//! it), at most `max_concurrent` builds at once, and the steps of one build (fresh folder,
//! checkout, command, artifact).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};

use super::cache::{Found, LatestBuild, find_artifact, publish_log, read_cached, store_artifact};
use super::runner::run_command;
use super::{Artifact, BuildConfig, BuildError, BuildRequest, normalize_dir, validate};

/// Locks a mutex, going on with the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of one build, shared with every waiter.
type Outcome = Option<Result<Artifact, BuildError>>;

/// Runs builds: a cache, a queue and a dedup table. Create with [`Builder::new`].
pub struct Builder {
    /// Shared with the build tasks.
    inner: Arc<Inner>,
}

/// What build tasks need.
struct Inner {
    /// Settings.
    cfg: BuildConfig,
    /// One permit per running build.
    permits: Arc<Semaphore>,
    /// Builds in progress by key; waiters subscribe.
    inflight: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

impl Builder {
    /// A builder with these settings.
    pub fn new(cfg: BuildConfig) -> Arc<Builder> {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
        Arc::new(Builder {
            inner: Arc::new(Inner {
                cfg,
                permits,
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &BuildConfig {
        &self.inner.cfg
    }

    /// The cached artifact of `key`, if any (reads `meta.json`).
    pub fn cached(&self, key: &str) -> Option<Artifact> {
        read_cached(&self.inner.cfg.state_dir, key)
    }

    /// Where the latest build log of `job` is kept.
    pub fn latest_log(&self, job: &str) -> PathBuf {
        crate::runlogs::job_dir(&self.inner.cfg.state_dir.join("logs"), job)
            .join("build-latest.log")
    }

    /// The artifact of `req`: from the cache, from an identical build in progress, or built now
    /// (after waiting for a free slot). The job's `build-latest.log` then shows the build's log.
    pub async fn build(&self, req: BuildRequest) -> Result<Artifact, BuildError> {
        validate(&req)?;
        let key = req.key();
        let job = req.job.clone();
        let cached = self.cached(&key).is_some();
        let mut which = LatestBuild {
            key: key.clone(),
            repo: req.repo.clone(),
            commit: req.commit.clone(),
            dir: req.dir.clone(),
            outcome: String::new(),
            cached,
            finished_ms: None,
        };
        let result = self.build_keyed(key, req).await;
        which.outcome = match &result {
            Ok(_) => "succeeded".to_string(),
            Err(e) => format!(
                "failed: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        };
        let inner = Arc::clone(&self.inner);
        let published =
            tokio::task::spawn_blocking(move || publish_log(&inner.cfg.state_dir, &job, &which))
                .await;
        if let Ok(Err(e)) = published {
            tracing::warn!(error = %e, "cannot update build-latest.log");
        }
        result
    }

    /// Cache, then dedup, then a new build task.
    async fn build_keyed(&self, key: String, req: BuildRequest) -> Result<Artifact, BuildError> {
        if let Some(a) = self.cached(&key) {
            tracing::debug!(job = %req.job, key, "build cache hit");
            return Ok(a);
        }
        let mut rx = {
            let mut inflight = lock(&self.inner.inflight);
            if let Some(rx) = inflight.get(&key) {
                tracing::debug!(job = %req.job, key, "waiting for the same build");
                rx.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                inflight.insert(key.clone(), rx.clone());
                tokio::spawn(Inner::run(Arc::clone(&self.inner), key.clone(), req, tx));
                rx
            }
        };
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        outcome.unwrap_or_else(|| {
            Err(BuildError::io(
                "build task ended without a result",
                std::io::Error::other("aborted"),
            ))
        })
    }
}
impl Inner {
    /// Runs one build to its end and hands the outcome to every waiter.
    async fn run(self: Arc<Self>, key: String, req: BuildRequest, tx: watch::Sender<Outcome>) {
        let task = tokio::spawn(Arc::clone(&self).build_one(key.clone(), req));
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(BuildError::io(
                "build task failed",
                std::io::Error::other(e.to_string()),
            )),
        };
        let mut inflight = lock(&self.inflight);
        inflight.remove(&key);
        let _ = tx.send(Some(result));
    }

    /// One build, in a queue slot.
    async fn build_one(
        self: Arc<Self>,
        key: String,
        req: BuildRequest,
    ) -> Result<Artifact, BuildError> {
        let _permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| BuildError::io("build queue closed", std::io::Error::other(e)))?;
        let state = &self.cfg.state_dir;
        // A build of this key may have finished while this one waited.
        if let Some(a) = read_cached(state, &key) {
            return Ok(a);
        }
        let build_dir = state.join("builds").join(&key);
        let src = build_dir.join("src");
        let log = build_dir.join("build.log");
        tracing::info!(job = %req.job, key, commit = %req.commit, "build started");
        let result = self.build_in(&key, &req, &src, &log).await;
        let src2 = src.clone();
        let _ = tokio::task::spawn_blocking(move || remove_tree(&src2)).await;
        match &result {
            Ok(a) => {
                tracing::info!(job = %req.job, key, artifact = %a.path.display(), "build done")
            }
            Err(_) => tracing::debug!(job = %req.job, key, "build failed (reported by the job)"),
        }
        result.map_err(|e| e.with_log(&log))
    }

    /// Checkout, command, artifact.
    async fn build_in(
        &self,
        key: &str,
        req: &BuildRequest,
        src: &Path,
        log: &Path,
    ) -> Result<Artifact, BuildError> {
        let build_dir = src.parent().unwrap_or(src).to_path_buf();
        {
            let (src, log, build_dir) = (src.to_path_buf(), log.to_path_buf(), build_dir.clone());
            blocking(move || -> Result<(), BuildError> {
                std::fs::create_dir_all(&build_dir).map_err(|e| {
                    BuildError::io(format!("cannot create {}", build_dir.display()), e)
                })?;
                remove_tree(&src)
                    .map_err(|e| BuildError::io(format!("cannot remove {}", src.display()), e))?;
                match std::fs::remove_file(&log) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(BuildError::io(
                            format!("cannot remove {}", log.display()),
                            e,
                        ));
                    }
                }
                Ok(())
            })
            .await??;
        }
        let mut header = format!(
            "# jobkeeper build {key}\n# commit {} dir {:?}\n",
            req.commit,
            normalize_dir(&req.dir)
        );
        if let Some(c) = &req.command {
            header.push_str(&format!("$ {c}\n"));
        }
        tokio::fs::write(log, header)
            .await
            .map_err(|e| BuildError::io(format!("cannot write {}", log.display()), e))?;

        // Checkout.
        let checkout = {
            let (source, repo, commit, dest) = (
                Arc::clone(&req.source),
                req.repo.clone(),
                req.commit.clone(),
                src.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || source.checkout(&repo, &commit, &dest))
                .await
                .unwrap_or_else(|e| Err(e.into()))
        };
        if let Err(msg) = checkout {
            append(log, &format!("checkout of {} failed: {msg}\n", req.commit)).await;
            return Err(BuildError::Checkout(format!(
                "cannot check out {} of {}: {msg}",
                req.commit, req.repo
            )));
        }
        let dir = normalize_dir(&req.dir);
        let work = if dir.is_empty() {
            src.to_path_buf()
        } else {
            src.join(&dir)
        };
        if !tokio::fs::metadata(&work).await.is_ok_and(|m| m.is_dir()) {
            return Err(BuildError::Checkout(format!(
                "folder {dir:?} is not in commit {} of {}",
                req.commit, req.repo
            )));
        }

        if let Some(command) = &req.command {
            run_command(&self.cfg, command, req, &work, log).await?;
        }

        let (state, key, commit, glob, log) = (
            self.cfg.state_dir.clone(),
            key.to_string(),
            req.commit.clone(),
            req.artifact_glob.clone(),
            log.to_path_buf(),
        );
        let meta_extra = (req.repo.clone(), dir, req.command.clone());
        blocking(move || {
            let found = match &glob {
                Some(g) => Found::File(find_artifact(&work, g)?),
                None => Found::Tree(work),
            };
            store_artifact(&state, &key, &commit, &log, found, glob, meta_extra)
        })
        .await?
    }
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        BuildError::io(
            "build file task failed",
            std::io::Error::other(e.to_string()),
        )
    })
}

/// Appends a note to a log, ignoring errors (the log is for people).
pub(super) async fn append(log: &Path, text: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new().append(true).open(log).await {
        let _ = f.write_all(text.as_bytes()).await;
    }
}

/// Removes a folder tree if it is there.
pub(super) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
