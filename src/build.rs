//! Project builds: checkout, build command, artifact cache, build queue (SPEC reconcile rule 6).
//!
//! Owns everything under `state_dir/builds` and `state_dir/artifacts`, and the
//! `build-latest.log` of each job under `state_dir/logs/<job>/`.
//!
//! A build is keyed by a sha256 over (repo, commit id, dir, build command, artifact glob); see
//! [`build_key`]. A key is built at most once while its artifact is cached: a successful build
//! leaves `state_dir/artifacts/<key>/<file name>` (or `.../tree` when the artifact is the folder)
//! and a `meta.json`, read again by later requests and by later daemon instances. Identical
//! requests made while a build runs wait for that build. At most `max_concurrent` builds run at
//! once; the others queue. A failed build is not cached: the next request for its key builds
//! again.
//!
//! Each build gets a fresh `state_dir/builds/<key>/src` for its checkout, runs `sh -c <command>`
//! there with a clean environment in its own process group, and is killed (the whole group) after
//! `timeout`. Its output goes to `state_dir/builds/<key>/build.log`, capped at `max_log_bytes`
//! (the start and the last lines are kept); the pipes are drained to the end whatever the child
//! prints, so memory stays bounded. When the command ends, whatever it left running in its
//! process group is killed, and the checkout is removed once the artifact has been moved out.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

/// Default cap of one build log: 64 MiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// `PATH` of a build command.
pub const BUILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many log lines an error carries.
const TAIL_LINES: usize = 20;

/// How long the log pipes may stay open after the build command ended (and its group was killed).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Read buffer for build output.
const CHUNK: usize = 64 * 1024;

/// Settings of a [`Builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The daemon's state folder; builds, artifacts and logs live below it.
    pub state_dir: PathBuf,
    /// Builds running at once; more wait in a queue (0 is taken as 1).
    pub max_concurrent: usize,
    /// A build running longer is killed, with its whole process group.
    pub timeout: Duration,
    /// Cap of one build log, in bytes.
    pub max_log_bytes: u64,
}

impl BuildConfig {
    /// Defaults (2 at once, 30 minutes, 64 MiB logs) for `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            max_concurrent: 2,
            timeout: Duration::from_secs(30 * 60),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Puts a project's source at a commit into a folder. The git implementation lives in
/// [`crate::repo`]; tests use the git command line.
pub trait SourceCheckout: Send + Sync {
    /// Checks out `commit` of `repo` into `dest`, which does not exist yet (its parent does).
    /// Blocking: called on a blocking thread. The error is shown to the operator as is.
    fn checkout(&self, repo: &str, commit: &str, dest: &Path) -> Result<(), String>;
}

/// One build to do (or to find in the cache).
#[derive(Clone)]
pub struct BuildRequest {
    /// The job asking; its `build-latest.log` is updated.
    pub job: String,
    /// The project's repo (URL or path), as in the job file.
    pub repo: String,
    /// Full commit id (40 or 64 hex digits).
    pub commit: String,
    /// Folder inside the repo; empty for the root.
    pub dir: String,
    /// Shell command run in `dir`; `None` for no build.
    pub command: Option<String>,
    /// Glob in `dir` matching exactly one file; `None`: the artifact is the folder itself.
    pub artifact_glob: Option<String>,
    /// Where the source comes from.
    pub source: Arc<dyn SourceCheckout>,
}

impl fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildRequest")
            .field("job", &self.job)
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("dir", &self.dir)
            .field("command", &self.command)
            .field("artifact_glob", &self.artifact_glob)
            .finish_non_exhaustive()
    }
}

impl BuildRequest {
    /// The request's cache key; see [`build_key`].
    pub fn key(&self) -> String {
        build_key(
            &self.repo,
            &self.commit,
            &self.dir,
            self.command.as_deref(),
            self.artifact_glob.as_deref(),
        )
    }
}

/// The cache key of a build: hex sha256 over (repo, commit, dir, build command) as SPEC rule 6
/// says, and also the artifact glob, so two jobs picking different files out of the same build
/// never share an artifact. `dir` is normalised (`./a/` is `a`).
pub fn build_key(
    repo: &str,
    commit: &str,
    dir: &str,
    command: Option<&str>,
    artifact_glob: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |tag: u8, v: Option<&str>| {
        h.update([tag]);
        match v {
            None => h.update([0]),
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
    };
    field(b'v', Some("jobkeeper-build-1"));
    field(b'r', Some(repo));
    field(b'c', Some(&commit.to_ascii_lowercase()));
    field(b'd', Some(&normalize_dir(dir)));
    field(b'b', command);
    field(b'a', artifact_glob);
    hex::encode(h.finalize())
}

/// `dir` without `./` parts and trailing slashes; the root is empty.
fn normalize_dir(dir: &str) -> String {
    dir.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A built artifact, ready to submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The build key ([`build_key`]).
    pub key: String,
    /// The artifact file, or the folder (`.../tree`) when the job names no artifact.
    pub path: PathBuf,
    /// Hex sha256 of the file; for a folder, of the key.
    pub digest: String,
    /// The kept build log.
    pub log: PathBuf,
    /// The commit it was built from.
    pub commit: String,
}

/// What is stored in `artifacts/<key>/meta.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// The artifact, as it was when built.
    artifact: Artifact,
    /// The artifact's path inside `artifacts/<key>/`, so a moved state folder still works.
    file: PathBuf,
    /// The project repo, for people reading the file.
    repo: String,
    /// The folder in the repo.
    dir: String,
    /// The build command.
    command: Option<String>,
    /// The artifact glob.
    artifact_glob: Option<String>,
    /// When it was built (RFC 3339).
    built_at: String,
}

/// Why a build gave no artifact. Every message carries the last lines of the build log when
/// there is one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The build command failed.
    #[error("build command {}{}", exit_words(*code), tail_suffix(log_tail))]
    Failed {
        /// Its exit code; `None` when a signal ended it.
        code: Option<i32>,
        /// The last lines of the build log.
        log_tail: String,
    },
    /// The build command ran longer than the timeout and was killed with its process group.
    #[error("build timed out after {}{}", humantime::format_duration(*after), tail_suffix(log_tail))]
    TimedOut {
        /// The timeout.
        after: Duration,
        /// The last lines of the build log.
        log_tail: String,
    },
    /// No artifact, or more than one, or a bad artifact glob.
    #[error("artifact: {0}")]
    Artifact(String),
    /// The source could not be checked out (or the request names no valid source).
    #[error("checkout: {0}")]
    Checkout(String),
    /// A file operation of the builder failed.
    #[error("{what}: {source}{}", tail_suffix(log_tail))]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: Arc<std::io::Error>,
        /// The last lines of the build log, if any.
        log_tail: String,
    },
}

impl BuildError {
    /// An [`BuildError::Io`] without a log.
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source: Arc::new(source),
            log_tail: String::new(),
        }
    }

    /// Adds the last lines of `log` to an error that has none yet.
    fn with_log(self, log: &Path) -> Self {
        let tail = || log_tail(log, TAIL_LINES);
        match self {
            Self::Artifact(m) => Self::Artifact(format!("{m}{}", tail_suffix(&tail()))),
            Self::Checkout(m) => Self::Checkout(format!("{m}{}", tail_suffix(&tail()))),
            Self::Io {
                what,
                source,
                log_tail,
            } if log_tail.is_empty() => Self::Io {
                what,
                source,
                log_tail: tail(),
            },
            other => other,
        }
    }
}

/// "exited with code 3" / "was killed by a signal".
fn exit_words(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".into(),
    }
}

/// "\nlast lines of the build log:\n..." or nothing.
fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast lines of the build log:\n{tail}")
    }
}

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
        self.inner
            .cfg
            .state_dir
            .join("logs")
            .join(job)
            .join("build-latest.log")
    }

    /// The artifact of `req`: from the cache, from an identical build in progress, or built now
    /// (after waiting for a free slot). The job's `build-latest.log` then shows the build's log.
    pub async fn build(&self, req: BuildRequest) -> Result<Artifact, BuildError> {
        validate(&req)?;
        let key = req.key();
        let job = req.job.clone();
        let result = self.build_keyed(key.clone(), req).await;
        let inner = Arc::clone(&self.inner);
        let published =
            tokio::task::spawn_blocking(move || publish_log(&inner.cfg.state_dir, &job, &key))
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
                .unwrap_or_else(|e| Err(format!("checkout task failed: {e}")))
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
            self.run_command(command, req, &work, log).await?;
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

    /// Runs the build command with a clean environment in its own process group, its output in
    /// the capped log, killed with its group after the timeout.
    async fn run_command(
        &self,
        command: &str,
        req: &BuildRequest,
        work: &Path,
        log: &Path,
    ) -> Result<(), BuildError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(work)
            .env_clear()
            .env("PATH", BUILD_PATH)
            .env("LANG", "C.UTF-8")
            .env("JOBKEEPER_JOB", &req.job)
            .env("JOBKEEPER_COMMIT", &req.commit)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| BuildError::io("cannot start the build command (sh)", e))?;
        let pid = child.id();
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .await
            .map_err(|e| BuildError::io(format!("cannot open {}", log.display()), e))?;
        let drain = tokio::spawn(drain(
            child.stdout.take(),
            child.stderr.take(),
            file,
            self.cfg.max_log_bytes,
        ));

        let waited = tokio::time::timeout(self.cfg.timeout, child.wait()).await;
        // The command is over (or out of time): nothing of its group may stay.
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let status = match waited {
            Ok(Ok(st)) => Some(st),
            Ok(Err(e)) => return Err(BuildError::io("cannot wait for the build command", e)),
            Err(_) => {
                let _ = tokio::time::timeout(DRAIN_WAIT, child.wait()).await;
                None
            }
        };
        let mut drain = drain;
        if tokio::time::timeout(DRAIN_WAIT, &mut drain).await.is_err() {
            // Something outside the process group holds the pipes open.
            drain.abort();
            append(
                log,
                "\n[jobkeeper: output pipes still open after the build ended; stopped reading]\n",
            )
            .await;
        }
        match status {
            None => {
                append(
                    log,
                    &format!(
                        "\n[jobkeeper: build timed out after {}; killed]\n",
                        humantime::format_duration(self.cfg.timeout)
                    ),
                )
                .await;
                Err(BuildError::TimedOut {
                    after: self.cfg.timeout,
                    log_tail: log_tail(log, TAIL_LINES),
                })
            }
            Some(st) if st.success() => Ok(()),
            Some(st) => Err(BuildError::Failed {
                code: st.code(),
                log_tail: log_tail(log, TAIL_LINES),
            }),
        }
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
async fn append(log: &Path, text: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new().append(true).open(log).await {
        let _ = f.write_all(text.as_bytes()).await;
    }
}

/// Removes a folder tree if it is there.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Checks a request before anything runs.
fn validate(req: &BuildRequest) -> Result<(), BuildError> {
    let hex = req.commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || !(req.commit.len() == 40 || req.commit.len() == 64) {
        return Err(BuildError::Checkout(format!(
            "commit {:?} is not a full commit id (40 hex digits)",
            req.commit
        )));
    }
    if !is_inside(&req.dir) {
        return Err(BuildError::Checkout(format!(
            "project dir {:?} must be a relative folder inside the repo",
            req.dir
        )));
    }
    if let Some(g) = &req.artifact_glob
        && (g.trim().is_empty() || !is_inside(g))
    {
        return Err(BuildError::Artifact(format!(
            "artifact glob {g:?} must be a relative pattern inside the project folder"
        )));
    }
    if req.job.is_empty() || !is_inside(&req.job) {
        return Err(BuildError::Checkout(format!(
            "job name {:?} cannot name a log folder",
            req.job
        )));
    }
    Ok(())
}

/// A relative path with no `..`.
fn is_inside(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// What a build produced.
enum Found {
    /// The one file the glob matched.
    File(PathBuf),
    /// The project folder itself.
    Tree(PathBuf),
}

/// The one file `glob` matches in `work`.
fn find_artifact(work: &Path, glob: &str) -> Result<PathBuf, BuildError> {
    let base = work.to_str().ok_or_else(|| {
        BuildError::Artifact(format!("build folder {} is not UTF-8", work.display()))
    })?;
    let pattern = format!("{}/{glob}", glob::Pattern::escape(base));
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let paths = glob::glob_with(&pattern, opts)
        .map_err(|e| BuildError::Artifact(format!("bad artifact glob {glob:?}: {e}")))?;
    let mut first = Vec::new();
    let mut count = 0usize;
    for p in paths.flatten() {
        if !p.is_file() {
            continue;
        }
        count += 1;
        if first.len() < 5 {
            first.push(p);
        }
    }
    let shown = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| p.strip_prefix(work).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match count {
        0 => Err(BuildError::Artifact(format!(
            "artifact glob {glob:?} matched no file"
        ))),
        1 => {
            let path = first.remove(0);
            // A symlink may not lead out of the build folder.
            let real = path
                .canonicalize()
                .map_err(|e| BuildError::io(format!("cannot resolve {}", path.display()), e))?;
            let root = work
                .canonicalize()
                .map_err(|e| BuildError::io(format!("cannot resolve {}", work.display()), e))?;
            if !real.starts_with(&root) {
                return Err(BuildError::Artifact(format!(
                    "artifact {} leads outside the project folder",
                    shown(&[path])
                )));
            }
            Ok(real)
        }
        n => Err(BuildError::Artifact(format!(
            "artifact glob {glob:?} matched {n} files, it must match exactly one: {}{}",
            shown(&first),
            if n > first.len() { ", ..." } else { "" }
        ))),
    }
}

/// Moves what was built into `artifacts/<key>/`, writes `meta.json` last and publishes the folder
/// with one rename.
fn store_artifact(
    state: &Path,
    key: &str,
    commit: &str,
    log: &Path,
    found: Found,
    artifact_glob: Option<String>,
    (repo, dir, command): (String, String, Option<String>),
) -> Result<Artifact, BuildError> {
    let artifacts = state.join("artifacts");
    let tmp = artifacts.join(format!(".tmp-{key}"));
    let dest = artifacts.join(key);
    let io = |what: String| move |e| BuildError::io(what, e);
    remove_tree(&tmp).map_err(io(format!("cannot remove {}", tmp.display())))?;
    std::fs::create_dir_all(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
    let (file, digest) = match found {
        Found::File(path) => {
            let name = path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| "artifact".into());
            let file = if name == Path::new("meta.json") {
                Path::new("file").join(name)
            } else {
                name
            };
            let to = tmp.join(&file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("cannot create {}", parent.display())))?;
            }
            if std::fs::rename(&path, &to).is_err() {
                std::fs::copy(&path, &to).map_err(io(format!(
                    "cannot copy {} to {}",
                    path.display(),
                    to.display()
                )))?;
            }
            let digest = sha256_file(&to).map_err(io(format!("cannot read {}", to.display())))?;
            (file, digest)
        }
        Found::Tree(work) => {
            let file = PathBuf::from("tree");
            let to = tmp.join(&file);
            std::fs::rename(&work, &to).map_err(io(format!(
                "cannot move {} to {}",
                work.display(),
                to.display()
            )))?;
            (file, hex::encode(Sha256::digest(key.as_bytes())))
        }
    };
    let artifact = Artifact {
        key: key.to_string(),
        path: dest.join(&file),
        digest,
        log: log.to_path_buf(),
        commit: commit.to_string(),
    };
    let meta = Meta {
        artifact: artifact.clone(),
        file,
        repo,
        dir,
        command,
        artifact_glob,
        built_at: chrono::Utc::now().to_rfc3339(),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| BuildError::io("cannot encode meta.json", std::io::Error::other(e)))?;
    let meta_path = tmp.join("meta.json");
    std::fs::write(&meta_path, json)
        .map_err(io(format!("cannot write {}", meta_path.display())))?;
    remove_tree(&dest).map_err(io(format!("cannot remove {}", dest.display())))?;
    std::fs::rename(&tmp, &dest).map_err(io(format!(
        "cannot rename {} to {}",
        tmp.display(),
        dest.display()
    )))?;
    Ok(artifact)
}

/// Hex sha256 of a file, streamed.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The cached artifact of `key` under `state`, if its `meta.json` and artifact are there.
fn read_cached(state: &Path, key: &str) -> Option<Artifact> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dir = state.join("artifacts").join(key);
    let bytes = std::fs::read(dir.join("meta.json")).ok()?;
    let meta: Meta = serde_json::from_slice(&bytes).ok()?;
    if meta.artifact.key != key || !is_inside(&meta.file.to_string_lossy()) {
        return None;
    }
    let path = dir.join(&meta.file);
    if !path.exists() {
        return None;
    }
    Some(Artifact {
        path,
        log: state.join("builds").join(key).join("build.log"),
        ..meta.artifact
    })
}

/// Points `logs/<job>/build-latest.log` at the build log of `key` (a hard link, else a copy).
fn publish_log(state: &Path, job: &str, key: &str) -> std::io::Result<()> {
    let log = state.join("builds").join(key).join("build.log");
    if !log.exists() {
        return Ok(());
    }
    let dir = state.join("logs").join(job);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".build-latest.{key}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&log, &tmp).is_err() {
        std::fs::copy(&log, &tmp)?;
    }
    std::fs::rename(&tmp, dir.join("build-latest.log"))
}

/// Copies build output into the log up to the cap, then keeps only its last bytes; reads both
/// pipes to their end so the build never blocks on a full pipe.
async fn drain(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    mut file: tokio::fs::File,
    cap: u64,
) {
    let mut log = CappedLog::new(cap);
    let mut out = stdout.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
    let mut err = stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
    let mut b1 = vec![0u8; CHUNK];
    let mut b2 = vec![0u8; CHUNK];
    while out.is_some() || err.is_some() {
        tokio::select! {
            r = read_some(&mut out, &mut b1), if out.is_some() => match r {
                Some(n) => log.write(&mut file, &b1[..n]).await,
                None => out = None,
            },
            r = read_some(&mut err, &mut b2), if err.is_some() => match r {
                Some(n) => log.write(&mut file, &b2[..n]).await,
                None => err = None,
            },
        }
    }
    log.finish(&mut file).await;
}

/// One read; `None` at the end or on an error.
async fn read_some(
    r: &mut Option<Box<dyn AsyncRead + Send + Unpin>>,
    buf: &mut [u8],
) -> Option<usize> {
    match r.as_mut()?.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// A log that keeps the first bytes up to a cap and the last few bytes after it.
struct CappedLog {
    /// Bytes written to the head part.
    head: u64,
    /// How many bytes the head part may take.
    head_limit: u64,
    /// Bytes over the head limit, kept: the last `tail_keep` of them.
    tail: Vec<u8>,
    /// How many bytes the tail keeps.
    tail_keep: usize,
    /// Bytes seen after the head was full.
    over: u64,
    /// A write failed: keep draining, write nothing more.
    broken: bool,
}

impl CappedLog {
    /// A log of at most about `cap` bytes.
    fn new(cap: u64) -> Self {
        let tail_keep = (cap / 4).min(16 * 1024) as usize;
        Self {
            head: 0,
            head_limit: cap.saturating_sub(tail_keep as u64 + 512),
            tail: Vec::new(),
            tail_keep,
            over: 0,
            broken: false,
        }
    }

    /// Takes a chunk of output.
    async fn write(&mut self, file: &mut tokio::fs::File, mut data: &[u8]) {
        if self.head < self.head_limit {
            let room = (self.head_limit - self.head).min(data.len() as u64) as usize;
            self.put(file, &data[..room]).await;
            self.head += room as u64;
            data = &data[room..];
        }
        if data.is_empty() {
            return;
        }
        if self.over == 0 {
            let note = format!(
                "\n[jobkeeper: build output truncated: the log keeps its first {} bytes and \
                 its last lines]\n",
                self.head_limit
            );
            self.put(file, note.as_bytes()).await;
        }
        self.over += data.len() as u64;
        if data.len() >= self.tail_keep {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - self.tail_keep..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 2 * self.tail_keep.max(1024) {
                let cut = self.tail.len() - self.tail_keep;
                self.tail.drain(..cut);
            }
        }
    }

    /// Writes the kept tail, if output went over the cap.
    async fn finish(mut self, file: &mut tokio::fs::File) {
        if self.over > 0 {
            let cut = self.tail.len().saturating_sub(self.tail_keep);
            let mut tail = self.tail.split_off(cut);
            // Start at a line boundary when the tail is not the whole rest.
            if (tail.len() as u64) < self.over
                && let Some(nl) = tail.iter().position(|b| *b == b'\n')
            {
                tail.drain(..=nl);
            }
            let note = format!(
                "\n[jobkeeper: {} bytes of output left out; the last lines follow]\n",
                self.over - tail.len() as u64
            );
            self.put(file, note.as_bytes()).await;
            self.put(file, &tail).await;
        }
        if !self.broken {
            let _ = file.flush().await;
        }
    }

    /// Writes to the file unless a write already failed.
    async fn put(&mut self, file: &mut tokio::fs::File, data: &[u8]) {
        if !self.broken && file.write_all(data).await.is_err() {
            self.broken = true;
        }
    }
}

/// How much of the end of a log [`log_tail`] reads at most.
const TAIL_READ: u64 = 64 * 1024;

/// How long one line of a [`log_tail`] may be; longer lines are cut.
const TAIL_LINE_CHARS: usize = 400;

/// The last `lines` lines of the file at `path` (lossy UTF-8, long lines cut), reading only the
/// end of the file. A missing or unreadable file gives an empty string.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_READ);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    if f.take(TAIL_READ).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut all: Vec<&str> = text.split('\n').collect();
    // The first piece may be the middle of a line when the read did not start at the file's start.
    if start > 0 && all.len() > 1 {
        all.remove(0);
    }
    let from = all.len().saturating_sub(lines);
    all[from..]
        .iter()
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            if l.chars().count() > TAIL_LINE_CHARS {
                let cut: String = l.chars().take(TAIL_LINE_CHARS).collect();
                format!("{cut}…")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    /// Checks out with the git command line.
    struct GitCli;

    impl SourceCheckout for GitCli {
        fn checkout(&self, repo: &str, commit: &str, dest: &Path) -> Result<(), String> {
            let run = |args: &[&std::ffi::OsStr]| -> Result<(), String> {
                let out = Command::new("git")
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run git: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            };
            run(&[
                "clone".as_ref(),
                "--quiet".as_ref(),
                "--no-checkout".as_ref(),
                repo.as_ref(),
                dest.as_os_str(),
            ])?;
            run(&[
                "-C".as_ref(),
                dest.as_os_str(),
                "checkout".as_ref(),
                "--quiet".as_ref(),
                "--detach".as_ref(),
                commit.as_ref(),
            ])
        }
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A temp folder with a git repo (`repo/`, files under `app/`) and a state folder.
    struct Fixture {
        tmp: tempfile::TempDir,
        commit: String,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let repo = tmp.path().join("repo");
            std::fs::create_dir_all(repo.join("app")).unwrap();
            std::fs::write(repo.join("app/input.txt"), "hello artifact\n").unwrap();
            std::fs::write(repo.join("README"), "root\n").unwrap();
            git(&repo, &["init", "-q"]);
            git(&repo, &["add", "."]);
            git(&repo, &["commit", "-q", "-m", "first"]);
            let commit = git(&repo, &["rev-parse", "HEAD"]);
            Self { tmp, commit }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.tmp.path().join(p)
        }

        fn config(&self) -> BuildConfig {
            BuildConfig {
                timeout: Duration::from_secs(60),
                ..BuildConfig::new(self.path("state"))
            }
        }

        fn request(&self, command: Option<&str>, glob: Option<&str>) -> BuildRequest {
            BuildRequest {
                job: "team-a/clicks".into(),
                repo: self.path("repo").display().to_string(),
                commit: self.commit.clone(),
                dir: "app".into(),
                command: command.map(String::from),
                artifact_glob: glob.map(String::from),
                source: Arc::new(GitCli),
            }
        }
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
    }

    #[tokio::test]
    async fn a_build_leaves_exactly_one_artifact_and_its_log() {
        let fx = Fixture::new();
        let b = Builder::new(fx.config());
        let req = fx.request(
            Some("mkdir -p target && cp input.txt target/app-1.0.jar && echo built"),
            Some("target/app-*.jar"),
        );
        let key = req.key();
        let a = b.build(req).await.unwrap();
        assert_eq!(a.key, key);
        assert_eq!(a.commit, fx.commit);
        let state = fx.path("state");
        assert_eq!(
            a.path,
            state.join("artifacts").join(&key).join("app-1.0.jar")
        );
        assert_eq!(
            std::fs::read_to_string(&a.path).unwrap(),
            "hello artifact\n"
        );
        assert_eq!(a.digest, hex::encode(Sha256::digest(b"hello artifact\n")));
        assert!(
            state
                .join("artifacts")
                .join(&key)
                .join("meta.json")
                .is_file()
        );
        assert_eq!(a.log, state.join("builds").join(&key).join("build.log"));
        assert!(std::fs::read_to_string(&a.log).unwrap().contains("built\n"));
        let latest = std::fs::read_to_string(b.latest_log("team-a/clicks")).unwrap();
        assert!(latest.contains("built\n"));
        // The checkout is gone once the artifact is out.
        assert!(!state.join("builds").join(&key).join("src").exists());
        assert_eq!(b.cached(&key), Some(a));
    }

    #[tokio::test]
    async fn no_command_no_glob_keeps_the_folder_and_a_glob_works_without_a_command() {
        let fx = Fixture::new();
        let b = Builder::new(fx.config());
        let tree = b.build(fx.request(None, None)).await.unwrap();
        assert!(tree.path.ends_with("tree"));
        assert_eq!(
            std::fs::read_to_string(tree.path.join("input.txt")).unwrap(),
            "hello artifact\n"
        );
        assert_eq!(
            tree.digest,
            hex::encode(Sha256::digest(tree.key.as_bytes()))
        );

        let file = b.build(fx.request(None, Some("*.txt"))).await.unwrap();
        assert!(file.path.ends_with("input.txt"));
        assert_ne!(file.key, tree.key);
    }

    #[tokio::test]
    async fn the_same_key_is_built_once_even_across_restarts() {
        let fx = Fixture::new();
        let counter = fx.path("counter");
        let cmd = format!("echo run >> {}", counter.display());
        let b = Builder::new(fx.config());
        let first = b.build(fx.request(Some(&cmd), None)).await.unwrap();
        let second = b.build(fx.request(Some(&cmd), None)).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(lines(&counter), 1);

        let restarted = Builder::new(fx.config());
        let third = restarted.build(fx.request(Some(&cmd), None)).await.unwrap();
        assert_eq!(first, third);
        assert_eq!(lines(&counter), 1);

        // Another command is another key.
        let other = format!("{cmd}; true");
        restarted
            .build(fx.request(Some(&other), None))
            .await
            .unwrap();
        assert_eq!(lines(&counter), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn identical_concurrent_builds_run_once() {
        let fx = Fixture::new();
        let counter = fx.path("counter");
        let cmd = format!("echo run >> {}; sleep 0.5", counter.display());
        let b = Builder::new(fx.config());
        let (x, y, z) = tokio::join!(
            b.build(fx.request(Some(&cmd), None)),
            b.build(fx.request(Some(&cmd), None)),
            b.build(fx.request(Some(&cmd), None)),
        );
        let x = x.unwrap();
        assert_eq!(x, y.unwrap());
        assert_eq!(x, z.unwrap());
        assert_eq!(lines(&counter), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn builds_over_the_limit_queue_and_never_overlap() {
        let fx = Fixture::new();
        let lock = fx.path("lock");
        let overlap = fx.path("overlap");
        let b = Builder::new(BuildConfig {
            max_concurrent: 1,
            ..fx.config()
        });
        let cmd = |n: u32| {
            format!(
                "mkdir {l} || echo {n} >> {o}; sleep 0.3; rmdir {l}",
                l = lock.display(),
                o = overlap.display()
            )
        };
        let (c1, c2, c3) = (cmd(1), cmd(2), cmd(3));
        let started = Instant::now();
        let (x, y, z) = tokio::join!(
            b.build(fx.request(Some(&c1), None)),
            b.build(fx.request(Some(&c2), None)),
            b.build(fx.request(Some(&c3), None)),
        );
        x.unwrap();
        y.unwrap();
        z.unwrap();
        assert!(!overlap.exists(), "two builds ran at once");
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn a_failing_build_says_why_with_the_last_lines() {
        let fx = Fixture::new();
        let b = Builder::new(fx.config());
        let err = b
            .build(fx.request(
                Some("echo compiling; echo 'error: boom in Main.java' >&2; exit 3"),
                Some("*.jar"),
            ))
            .await
            .unwrap_err();
        let BuildError::Failed { code, log_tail } = &err else {
            panic!("{err}")
        };
        assert_eq!(*code, Some(3));
        // stdout and stderr are separate pipes: their relative order is not fixed.
        let last_two: Vec<&str> = log_tail.lines().rev().take(2).collect();
        assert!(
            last_two.contains(&"compiling") && last_two.contains(&"error: boom in Main.java"),
            "{log_tail}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("build command exited with code 3\n"),
            "{msg}"
        );
        assert!(msg.contains("error: boom in Main.java"), "{msg}");
        let latest = std::fs::read_to_string(b.latest_log("team-a/clicks")).unwrap();
        assert!(latest.contains("error: boom"));
    }

    #[tokio::test]
    async fn a_hanging_build_is_killed_with_its_children() {
        let fx = Fixture::new();
        let pidfile = fx.path("grandchild.pid");
        let b = Builder::new(BuildConfig {
            timeout: Duration::from_secs(1),
            ..fx.config()
        });
        let cmd = format!(
            "echo waiting; sleep 30 & echo $! > {}; sleep 30",
            pidfile.display()
        );
        let started = Instant::now();
        let err = b.build(fx.request(Some(&cmd), None)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, BuildError::TimedOut { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("build timed out after 1s\n"), "{msg}");
        assert!(msg.contains("waiting"), "{msg}");
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Gone, or a zombie waiting for a reaper.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} survived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_artifact_glob_must_match_exactly_one_file() {
        let fx = Fixture::new();
        let b = Builder::new(fx.config());
        let err = b
            .build(fx.request(Some("touch a.txt"), Some("target/*.jar")))
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::Artifact(_)), "{err}");
        assert!(
            err.to_string().contains("\"target/*.jar\" matched no file"),
            "{err}"
        );

        let err = b
            .build(fx.request(Some("touch a.jar b.jar c.jar"), Some("*.jar")))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("matched 3 files"), "{msg}");
        assert!(msg.contains("a.jar, b.jar, c.jar"), "{msg}");

        for bad in ["../*.jar", "/etc/passwd"] {
            let err = b.build(fx.request(None, Some(bad))).await.unwrap_err();
            assert!(matches!(err, BuildError::Artifact(_)), "{err}");
        }
        let mut req = fx.request(None, None);
        req.dir = "../outside".into();
        assert!(matches!(b.build(req).await, Err(BuildError::Checkout(_))));
        let mut req = fx.request(None, None);
        req.commit = "main".into();
        assert!(matches!(b.build(req).await, Err(BuildError::Checkout(_))));
        let mut req = fx.request(None, None);
        req.dir = "missing".into();
        let err = b.build(req).await.unwrap_err();
        assert!(
            err.to_string().contains("\"missing\" is not in commit"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn huge_output_is_capped_and_the_build_still_succeeds() {
        let fx = Fixture::new();
        let cap = 100_000;
        let b = Builder::new(BuildConfig {
            max_log_bytes: cap,
            ..fx.config()
        });
        let a = b
            .build(fx.request(
                Some("yes | head -c 200000000; echo; echo last-line-marker"),
                None,
            ))
            .await
            .unwrap();
        let size = std::fs::metadata(&a.log).unwrap().len();
        assert!(size <= cap, "log is {size} bytes");
        let log = std::fs::read_to_string(&a.log).unwrap();
        assert!(log.contains("build output truncated"), "no truncation note");
        assert!(
            log_tail(&a.log, 1) == "last-line-marker",
            "{}",
            log_tail(&a.log, 3)
        );
    }

    #[tokio::test]
    async fn the_build_environment_is_clean() {
        let fx = Fixture::new();
        let b = Builder::new(fx.config());
        // cargo sets this in the test process; it must not reach the build.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let a = b
            .build(fx.request(Some("env | sort > env.txt; pwd > pwd.txt"), None))
            .await
            .unwrap();
        let env = std::fs::read_to_string(a.path.join("env.txt")).unwrap();
        assert!(!env.contains("CARGO"), "{env}");
        assert!(env.contains(&format!("PATH={BUILD_PATH}\n")), "{env}");
        assert!(env.contains("LANG=C.UTF-8\n"), "{env}");
        assert!(env.contains("JOBKEEPER_JOB=team-a/clicks\n"), "{env}");
        let pwd = std::fs::read_to_string(a.path.join("pwd.txt")).unwrap();
        assert!(pwd.trim_end().ends_with("/src/app"), "{pwd}");
    }

    #[tokio::test]
    async fn the_capped_log_keeps_bounded_memory_and_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let cap = 200_000;
        let mut log = CappedLog::new(cap);
        let chunk = b"0123456789abcdef\n".repeat(1000);
        for i in 0..2_000 {
            log.write(&mut file, &chunk).await;
            // Odd-sized pieces too.
            log.write(&mut file, format!("piece {i}\n").as_bytes())
                .await;
            assert!(
                log.tail.capacity() <= 4 * CHUNK,
                "tail grew to {}",
                log.tail.capacity()
            );
        }
        log.write(&mut file, b"the end\n").await;
        log.finish(&mut file).await;
        drop(file);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= cap, "{size}");
        assert_eq!(log_tail(&path, 2), "piece 1999\nthe end");
    }

    #[test]
    fn the_key_covers_every_input() {
        let k = |repo, commit, dir, cmd, glob| build_key(repo, commit, dir, cmd, glob);
        let base = k("r", "c", "d", Some("make"), Some("*.jar"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, k("r", "c", "./d/", Some("make"), Some("*.jar")));
        for other in [
            k("r2", "c", "d", Some("make"), Some("*.jar")),
            k("r", "c2", "d", Some("make"), Some("*.jar")),
            k("r", "c", "e", Some("make"), Some("*.jar")),
            k("r", "c", "d", Some("make "), Some("*.jar")),
            k("r", "c", "d", None, Some("*.jar")),
            k("r", "c", "d", Some(""), Some("*.jar")),
            k("r", "c", "d", Some("make"), None),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn log_tail_reads_the_last_lines_of_big_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        let mut text = String::new();
        for i in 0..100_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 99998\nline 99999");
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(log_tail(&path, 20), "a\nb");
        assert_eq!(log_tail(&tmp.path().join("missing"), 20), "");
        std::fs::write(&path, "x".repeat(1000)).unwrap();
        assert_eq!(log_tail(&path, 1).chars().count(), TAIL_LINE_CHARS + 1);
    }
}
