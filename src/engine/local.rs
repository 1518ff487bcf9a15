//! The `local` engine: runs are supervised child processes of the daemon.
//!
//! Owns spawning runs (an argv, never a shell), their process groups and log files, seeing their
//! exits at once, and stopping them: SIGTERM to the whole group, SIGKILL after the grace period.
//!
//! A run is identified by its pid *and* its start time in clock ticks since boot
//! (`/proc/<pid>/stat` field 22), both kept in the [`RunHandle`]. A fresh engine (after a daemon
//! crash) can therefore find, report and stop the runs a previous instance recorded, and a pid
//! that was recycled by another process is never signalled.
//!
//! Exits of this instance's children are sent on the exit channel ([`Engine::take_exits`]) as
//! soon as they happen, including exits caused by [`Engine::stop`]: those are reported as
//! `Failed("stopped")` ([`STOPPED`]) whatever the exit code, so callers that stopped a run can
//! ignore them. Runs adopted from a previous instance are not children of this one; their end is
//! seen by [`Engine::status`] as [`RunStatus::Vanished`].
//!
//! When a run's main process ends, whatever it left running in its process group is killed: a
//! run owns its group, and nothing of an old run outlives it. An engine made with
//! [`LocalEngine::with_cgroups`] also gives each run a cgroup of its own ([`crate::cgroup`]):
//! when the run's main process ends, or `stop`'s grace is over, every process of the cgroup is
//! killed (`cgroup.kill`), those that left the process group (`setsid`) too, and the cgroup is
//! removed before the run's end is told. A run a previous daemon left is found by its run id in
//! the cgroups and ended the same way. Without cgroups, a process that leaves the run's process
//! group outlives the run.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::{
    Engine, EngineError, NEVER_STARTED, RecordedRun, Recovery, RunExit, RunHandle, RunStatus,
    STOP_GRACE, SubmitRequest,
};
use crate::cgroup::{self, RunCgroups};
use crate::proc::{self, GroupChild, is_same_live};
use crate::spec::Params;

/// The reason given for a run that ended because [`Engine::stop`] stopped it.
pub const STOPPED: &str = "stopped";

/// How many log lines a failure reason carries.
const TAIL_LINES: usize = 20;

/// How many ended children are remembered for [`Engine::status`].
const KEEP_EXITED: usize = 512;

/// How long `stop` waits for a run to go after SIGKILL before it gives up.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often `stop` looks whether a process that is not our child is gone.
const POLL: Duration = Duration::from_millis(25);

/// The `local` engine. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct LocalEngine {
    /// Children of this instance, by pid.
    children: Arc<Mutex<Children>>,
    /// Where child exits are sent.
    exits_tx: mpsc::UnboundedSender<RunExit>,
    /// Handed out once by [`Engine::take_exits`].
    exits_rx: Mutex<Option<mpsc::UnboundedReceiver<RunExit>>>,
    /// Where each run gets a cgroup of its own; `None`: runs have only their process group.
    cgroups: Option<RunCgroups>,
}

/// The children this instance started, live and recently ended.
#[derive(Default)]
struct Children {
    /// By pid.
    by_pid: HashMap<u32, Child>,
    /// Pids of ended children, oldest first, for pruning.
    ended: VecDeque<(u32, u64)>,
}

/// One child of this instance.
struct Child {
    /// The store's run id.
    run_id: i64,
    /// Its start time in ticks since boot (0 if `/proc` could not be read at spawn).
    start_ticks: u64,
    /// `None` while running; how it ended once it has.
    ended: watch::Receiver<Option<RunStatus>>,
    /// Set by `stop`: the exit is reported as [`STOPPED`].
    stopping: bool,
    /// Its cgroup, when it has one.
    cgroup: Option<PathBuf>,
}

impl Default for LocalEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalEngine {
    /// A new engine with no children.
    pub fn new() -> Self {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        Self {
            children: Arc::new(Mutex::new(Children::default())),
            exits_tx,
            exits_rx: Mutex::new(Some(exits_rx)),
            cgroups: None,
        }
    }

    /// A new engine whose runs each get a cgroup of their own in `cgroups`.
    pub fn with_cgroups(cgroups: RunCgroups) -> Self {
        Self {
            cgroups: Some(cgroups),
            ..Self::new()
        }
    }

    /// Kills what is left in run `run_id`'s cgroup and removes it (a run of a previous daemon,
    /// or one whose cgroup outlived it); nothing without cgroups.
    async fn end_cgroup(&self, run_id: i64) {
        let Some(dir) = self.cgroups.as_ref().and_then(|c| c.find(run_id)) else {
            return;
        };
        end_cgroup(run_id, dir).await;
    }

    /// Handles of the children of this instance that are still running (for a graceful
    /// shutdown of the daemon).
    pub fn running(&self) -> Vec<RunHandle> {
        let children = lock(&self.children);
        children
            .by_pid
            .iter()
            .filter(|(_, c)| c.ended.borrow().is_none())
            .map(|(pid, c)| RunHandle {
                run_id: c.run_id,
                engine_id: pid.to_string(),
                start_ticks: Some(c.start_ticks),
                cluster: None,
            })
            .collect()
    }

    /// This instance's child with that pid and start time, if any.
    fn own_child(
        &self,
        pid: u32,
        start_ticks: Option<u64>,
    ) -> Option<(watch::Receiver<Option<RunStatus>>, u64, Option<PathBuf>)> {
        let children = lock(&self.children);
        let child = children.by_pid.get(&pid)?;
        match start_ticks {
            Some(t) if t != child.start_ticks => None,
            _ => Some((child.ended.clone(), child.start_ticks, child.cgroup.clone())),
        }
    }
}

/// Kills every process of run `run_id`'s cgroup `dir` and removes it, off the async threads;
/// a failure is logged (the processes were sent SIGKILL).
async fn end_cgroup(run_id: i64, dir: PathBuf) {
    let shown = dir.display().to_string();
    let ended = tokio::task::spawn_blocking(move || cgroup::end(&dir, KILL_WAIT)).await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(run = run_id, "cgroup {shown}: {e}"),
        Err(e) => tracing::warn!(run = run_id, "cgroup {shown}: {e}"),
    }
}

/// Whether `program` is an executable file, looked up in `search` (the run's `PATH`) when it
/// has no `/`: the errors a direct spawn gives, for a run started through its cgroup's shell.
fn check_program(program: &Path, search: Option<&std::ffi::OsStr>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        vec![program.to_path_buf()]
    } else {
        std::env::split_paths(search.unwrap_or_default())
            .map(|d| d.join(program))
            .collect()
    };
    let mut denied = None;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
            Ok(_) => {
                denied = Some(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{} is not an executable file", c.display()),
                ));
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
}

/// What the local engine finds wrong with the params of a job in env `env`: it needs
/// `params.command`.
pub fn check_params(env: &str, params: &Params) -> Result<(), crate::spec::ParamsError> {
    if params.command.is_empty() {
        return Err(crate::spec::ParamsError::NoCommand { env: env.into() });
    }
    Ok(())
}

/// Locks a mutex, going on with the data if a holder panicked (the data stays consistent: every
/// critical section is a few map operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live processes a previous daemon spawned for run `run_id` but was killed before it could
/// record their pid: the process-group leaders whose stdout or stderr is the run's log file
/// (unique to the state folder, the job and the run). Their start times are read now, so they
/// can be stopped like recorded runs.
pub fn find_unrecorded(run_id: i64, log_path: &Path) -> Vec<RunHandle> {
    let log = std::fs::canonicalize(log_path).unwrap_or_else(|_| log_path.to_path_buf());
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(info) = proc::stat(pid) else {
            continue;
        };
        if !info.alive() || info.pgrp != pid {
            continue;
        }
        let writes_log = [1, 2]
            .iter()
            .any(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|p| p == log));
        if writes_log {
            out.push(RunHandle {
                run_id,
                engine_id: pid.to_string(),
                start_ticks: Some(info.start_ticks),
                cluster: None,
            });
        }
    }
    out
}

/// Sends `sig` to the process group `pgid`. A group that is gone is not an error.
fn signal_group(pgid: u32, sig: Signal) -> Result<(), EngineError> {
    proc::signal_group(pgid, sig).map_err(|e| EngineError::Other(e.to_string()))
}

/// The pid in a handle's `engine_id`.
fn handle_pid(handle: &RunHandle) -> Result<u32, EngineError> {
    handle
        .engine_id
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| {
            EngineError::Other(format!(
                "run {}: engine id {:?} is not a pid",
                handle.run_id, handle.engine_id
            ))
        })
}

/// Replaces `{artifact}` in `s`.
fn substitute(s: &str, artifact: Option<&Path>, what: &str) -> Result<String, EngineError> {
    if !s.contains("{artifact}") {
        return Ok(s.to_string());
    }
    let artifact = artifact.ok_or_else(|| {
        EngineError::Refused(format!(
            "{what} uses {{artifact}} but the job has no artifact"
        ))
    })?;
    Ok(s.replace("{artifact}", &artifact.to_string_lossy()))
}

/// The working directory of a run.
fn workdir(req: &SubmitRequest) -> Result<PathBuf, EngineError> {
    let dir = match (&req.params.workdir, &req.checkout) {
        (Some(w), Some(checkout)) => checkout.join(w),
        (Some(w), None) => {
            let p = PathBuf::from(w);
            if !p.is_absolute() {
                return Err(EngineError::Refused(format!(
                    "params.workdir {w:?} must be an absolute path when the job has no project"
                )));
            }
            p
        }
        (None, Some(checkout)) => checkout.clone(),
        (None, None) => req
            .log_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    if !dir.is_dir() {
        return Err(EngineError::Refused(format!(
            "working directory {} does not exist",
            dir.display()
        )));
    }
    Ok(dir)
}

/// How a child ended, in words, with the last lines of its log (`secrets` masked before the
/// cut).
fn describe_exit(status: ExitStatus, log: &Path, secrets: &[String]) -> RunStatus {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return RunStatus::Succeeded;
    }
    let mut reason = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => format!("ended: {status}"),
    };
    let tail = crate::build::log_tail_masked(log, TAIL_LINES, secrets);
    if !tail.trim().is_empty() {
        reason.push_str("\nlast lines:\n");
        reason.push_str(&tail);
    }
    RunStatus::Failed(reason)
}

/// The command of a run, ready to spawn (argv with `{artifact}` replaced, a clean environment,
/// output appended to the run's log), and its program as the job file names it.
fn run_command(
    req: &SubmitRequest,
    cgroup: Option<&Path>,
) -> Result<(tokio::process::Command, String), EngineError> {
    let artifact = req.artifact.as_deref();
    let mut argv = Vec::with_capacity(req.params.command.len());
    for (i, arg) in req.params.command.iter().enumerate() {
        argv.push(substitute(arg, artifact, &format!("params.command[{i}]"))?);
    }
    let Some(program) = argv.first().cloned() else {
        return Err(EngineError::Refused(
            "params.command is empty: the local engine needs an argv list".into(),
        ));
    };
    if let Some(parent) = req.log_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            let what = format!("cannot create log folder {}: {e}", parent.display());
            host_or_other(&e, parent, what)
        })?;
    }
    let dir = workdir(req)?;
    // A relative program path with a slash is relative to the working directory.
    let program_path = if program.contains('/') && !program.starts_with('/') {
        dir.join(&program)
    } else {
        PathBuf::from(&program)
    };
    let (log, log_err) = open_log(&req.log_path)?;

    let mut cmd = match cgroup {
        Some(cg) => {
            let search = match req.params.environment.get("PATH") {
                Some(p) => Some(substitute(p, artifact, "params.environment.PATH")?.into()),
                None => std::env::var_os("PATH"),
            };
            check_program(&program_path, search.as_deref())
                .map_err(|e| spawn_error(&program, e))?;
            RunCgroups::command(cg, &program_path, &argv[1..])
        }
        None => {
            let mut cmd = tokio::process::Command::new(&program_path);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    cmd.current_dir(&dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    for var in ["PATH", "HOME", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in &req.params.environment {
        cmd.env(
            k,
            substitute(v, artifact, &format!("params.environment.{k}"))?,
        );
    }
    cmd.env("JOBKEEPER_JOB", &req.job)
        .env("JOBKEEPER_RUN", req.run_id.to_string());
    Ok((cmd, program))
}

/// An I/O error of the daemon's own files: a host fault when the disk holding `path` is full
/// or descriptors are used up ([`crate::host::of_io`]), else `what`.
fn host_or_other(e: &std::io::Error, path: &Path, what: String) -> EngineError {
    let disk = path.parent().unwrap_or(path);
    match crate::host::of_io(e, disk) {
        Some(resource) => EngineError::Host(crate::host::HostFault::new(resource, what)),
        None => EngineError::Other(what),
    }
}

/// The run's log opened for appending, twice (stdout and stderr).
fn open_log(path: &Path) -> Result<(std::fs::File, std::fs::File), EngineError> {
    let cannot = |e: std::io::Error| {
        host_or_other(&e, path, format!("cannot open log {}: {e}", path.display()))
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(cannot)?;
    let log_err = log.try_clone().map_err(cannot)?;
    Ok((log, log_err))
}

/// Why `program` could not be started, refused when the job file is at fault.
fn spawn_error(program: &str, e: std::io::Error) -> EngineError {
    match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::Refused(format!(
            "program {program:?} (params.command[0]) not found{}",
            if program.contains('/') {
                String::new()
            } else {
                format!(
                    " in PATH={}",
                    std::env::var("PATH").unwrap_or_else(|_| "(unset)".into())
                )
            }
        )),
        std::io::ErrorKind::PermissionDenied => EngineError::Refused(format!(
            "program {program:?} (params.command[0]) is not executable: {e}"
        )),
        std::io::ErrorKind::InvalidInput => EngineError::Refused(format!(
            "params.command or params.environment cannot be passed to a process: {e}"
        )),
        _ => match crate::host::of_io(&e, Path::new("/")) {
            // A program cannot be started without descriptors (its pipes); a full disk is
            // not the daemon's to wait for here.
            Some(r @ crate::host::Resource::FileDescriptors) => EngineError::Host(
                crate::host::HostFault::new(r, format!("cannot start {program:?}: {e}")),
            ),
            _ => EngineError::Other(format!("cannot start {program:?}: {e}")),
        },
    }
}

/// Where the end of one child is told: its entry in the children, its watchers, the exit
/// channel.
struct Ended {
    /// The engine's children.
    children: Arc<Mutex<Children>>,
    /// The engine's exit channel.
    exits: mpsc::UnboundedSender<RunExit>,
    /// The child's `ended`.
    ended_tx: watch::Sender<Option<RunStatus>>,
    /// Its job.
    job: String,
    /// Its run id.
    run_id: i64,
    /// Its pid.
    pid: u32,
    /// Its start time.
    start_ticks: u64,
    /// Its cgroup, ended before the end is told.
    cgroup: Option<PathBuf>,
}

impl Ended {
    /// Records that the child ended with `status` (or [`STOPPED`], when `stop` ended it), forgets
    /// the oldest ended children and sends the exit.
    fn report(self, status: RunStatus) {
        let (pid, start_ticks) = (self.pid, self.start_ticks);
        let status = {
            let mut c = lock(&self.children);
            let stopping = c
                .by_pid
                .get(&pid)
                .is_some_and(|ch| ch.start_ticks == start_ticks && ch.stopping);
            let status = if stopping {
                RunStatus::Failed(STOPPED.into())
            } else {
                status
            };
            c.ended.push_back((pid, start_ticks));
            while c.ended.len() > KEEP_EXITED {
                if let Some((old, ticks)) = c.ended.pop_front()
                    && c.by_pid
                        .get(&old)
                        .is_some_and(|ch| ch.start_ticks == ticks && ch.ended.borrow().is_some())
                {
                    c.by_pid.remove(&old);
                }
            }
            status
        };
        tracing::debug!(job = %self.job, run = self.run_id, pid, "local run ended");
        let _ = self.ended_tx.send(Some(status.clone()));
        let _ = self.exits.send(RunExit {
            job: self.job,
            run_id: self.run_id,
            status,
        });
    }
}

#[async_trait::async_trait]
impl Engine for LocalEngine {
    fn kind(&self) -> super::EngineKind {
        super::EngineKind::Local
    }

    async fn submit(&self, req: SubmitRequest) -> Result<RunHandle, EngineError> {
        let cgroup = match &self.cgroups {
            Some(c) => match c.create(req.run_id, &req.job) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::warn!(
                        job = %req.job,
                        run = req.run_id,
                        "cannot create the run's cgroup in {}: {e}; it runs in its process \
                         group only",
                        c.root().display()
                    );
                    None
                }
            },
            None => None,
        };
        let spawned = run_command(&req, cgroup.as_deref()).and_then(|(mut cmd, program)| {
            GroupChild::spawn(&mut cmd).map_err(|e| spawn_error(&program, e))
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(dir) = cgroup {
                    end_cgroup(req.run_id, dir).await;
                }
                return Err(e);
            }
        };
        let program = req.params.command.first().cloned().unwrap_or_default();
        let Some(pid) = child.pid() else {
            return Err(EngineError::Other(format!(
                "{program:?} ended before its pid was known"
            )));
        };
        // The child is not reaped before `wait` below, so its stat is there even if it ended.
        let start_ticks = proc::stat(pid).map_or(0, |p| p.start_ticks);

        let (ended_tx, ended_rx) = watch::channel(None);
        lock(&self.children).by_pid.insert(
            pid,
            Child {
                run_id: req.run_id,
                start_ticks,
                ended: ended_rx,
                stopping: false,
                cgroup: cgroup.clone(),
            },
        );
        tracing::info!(job = %req.job, run = req.run_id, pid, "local run started");

        let ended = Ended {
            children: Arc::clone(&self.children),
            exits: self.exits_tx.clone(),
            ended_tx,
            job: req.job.clone(),
            run_id: req.run_id,
            pid,
            start_ticks,
            cgroup,
        };
        let (log_path, secrets) = (req.log_path.clone(), req.secrets.clone());
        tokio::spawn(async move {
            // Whatever the run left in its group, and in its cgroup, goes with it.
            let waited = child.wait().await;
            if let Some(dir) = ended.cgroup.clone() {
                end_cgroup(ended.run_id, dir).await;
            }
            let status = match waited {
                Ok(st) => {
                    tokio::task::spawn_blocking(move || describe_exit(st, &log_path, &secrets))
                        .await
                        .unwrap_or_else(|e| RunStatus::Failed(format!("ended ({e})")))
                }
                Err(e) => RunStatus::Failed(format!("cannot wait for the process: {e}")),
            };
            ended.report(status);
        });

        Ok(RunHandle {
            run_id: req.run_id,
            engine_id: pid.to_string(),
            start_ticks: Some(start_ticks),
            cluster: None,
        })
    }

    async fn status(&self, handles: &[RunHandle]) -> Result<Vec<RunStatus>, EngineError> {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            let Ok(pid) = handle_pid(h) else {
                out.push(RunStatus::Vanished);
                continue;
            };
            if let Some((ended, _, _)) = self.own_child(pid, h.start_ticks) {
                out.push(ended.borrow().clone().unwrap_or(RunStatus::Running));
                continue;
            }
            let alive = h.start_ticks.is_some_and(|t| is_same_live(pid, t));
            out.push(if alive {
                RunStatus::Running
            } else {
                RunStatus::Vanished
            });
        }
        Ok(out)
    }

    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), EngineError> {
        let pid = handle_pid(handle)?;

        if let Some((mut ended, ticks, cgroup)) = self.own_child(pid, handle.start_ticks) {
            if ended.borrow().is_some() {
                return Ok(());
            }
            if let Some(c) = lock(&self.children).by_pid.get_mut(&pid) {
                c.stopping = true;
            }
            // Our child is not reaped before `ended` is set, so while it is alive with its start
            // time the pid (and group id) is its own. Not alive: it is ending by itself.
            if is_same_live(pid, ticks) {
                signal_group(pid, Signal::SIGTERM)?;
            }
            let gone = tokio::time::timeout(grace, ended.wait_for(|e| e.is_some()))
                .await
                .is_ok();
            if gone {
                return Ok(());
            }
            tracing::warn!(
                run = handle.run_id,
                pid,
                ?grace,
                "run ignored SIGTERM; killing"
            );
            if ended.borrow().is_none() && is_same_live(pid, ticks) {
                signal_group(pid, Signal::SIGKILL)?;
            }
            if let Some(dir) = &cgroup {
                let _ = cgroup::kill(dir);
            }
            return match tokio::time::timeout(KILL_WAIT, ended.wait_for(|e| e.is_some())).await {
                Ok(_) => Ok(()),
                Err(_) => Err(EngineError::Other(format!(
                    "pid {pid} still running {KILL_WAIT:?} after SIGKILL"
                ))),
            };
        }

        // Not a child of this instance: a run recorded by a previous one. Whatever is left in
        // its cgroup goes with it, however its process group was stopped.
        let stopped = self.stop_foreign(handle, pid, grace).await;
        self.end_cgroup(handle.run_id).await;
        stopped
    }

    fn runs_survive_daemon(&self) -> bool {
        false
    }

    /// Local runs are children of the daemon: a run a previous daemon left is found by its pid
    /// and start time (or, when its pid was never recorded, by its log file) and stopped; its
    /// job's actor starts it again. What is left in its cgroup is killed and the cgroup removed.
    async fn recover(&self, run: &RecordedRun<'_>) -> Recovery {
        let outcome = self.recover_group(run).await;
        self.end_cgroup(run.run_id).await;
        outcome
    }

    fn take_exits(&self) -> Option<mpsc::UnboundedReceiver<RunExit>> {
        lock(&self.exits_rx).take()
    }
}

impl LocalEngine {
    /// [`Engine::stop`] of a run a previous instance started: SIGTERM to its group, SIGKILL
    /// after `grace`, never signalling a pid that was recycled.
    async fn stop_foreign(
        &self,
        handle: &RunHandle,
        pid: u32,
        grace: Duration,
    ) -> Result<(), EngineError> {
        let Some(ticks) = handle.start_ticks else {
            return Err(EngineError::Other(format!(
                "run {}: no start time recorded for pid {pid}; not signalling a process that \
                 cannot be told from a recycled pid",
                handle.run_id
            )));
        };
        if !is_same_live(pid, ticks) {
            return Ok(());
        }
        signal_group(pid, Signal::SIGTERM)?;
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !is_same_live(pid, ticks) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // Still the same process (or a zombie of it, whose pid cannot be reused): kill the group,
        // which also takes whatever the run left behind.
        let same = proc::stat(pid).is_none_or(|p| p.start_ticks == ticks);
        if same {
            signal_group(pid, Signal::SIGKILL)?;
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while is_same_live(pid, ticks) {
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Other(format!(
                    "pid {pid} still running {KILL_WAIT:?} after SIGKILL"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// [`Engine::recover`] of a run's process group: by its pid and start time, or by its log
    /// file when its pid was never recorded.
    async fn recover_group(&self, run: &RecordedRun<'_>) -> Recovery {
        if let Some(h) = run.handle {
            return match self.stop(h, STOP_GRACE).await {
                Ok(()) => Recovery::Stopped(
                    "stopped after a daemon restart (found by pid and start time)".to_string(),
                ),
                Err(err) => Recovery::Stopped(format!(
                    "could not be stopped after a daemon restart: {err}"
                )),
            };
        }
        // Killed between spawning the run and recording its pid: found by its log file.
        let mut outcome = Recovery::NeverStarted(NEVER_STARTED.to_string());
        for h in &find_unrecorded(run.run_id, run.log_path) {
            outcome = Recovery::Stopped(match self.stop(h, STOP_GRACE).await {
                Ok(()) => "stopped after a daemon restart (its pid was not recorded yet; \
                           found by its log file)"
                    .to_string(),
                Err(err) => format!("could not be stopped after a daemon restart: {err}"),
            });
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Params;
    use std::time::Instant;

    /// Kills the process groups of a test when it ends, whatever happened.
    struct Reaper(Vec<u32>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            for pgid in &self.0 {
                let _ = signal_group(*pgid, Signal::SIGKILL);
            }
        }
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn request(dir: &Path, run_id: i64, command: Vec<String>) -> SubmitRequest {
        SubmitRequest {
            job: "team-a/clicks".into(),
            run_id,
            params: Params {
                command,
                ..Params::default()
            },
            artifact: None,
            checkout: None,
            log_path: dir.join("logs/team-a/clicks").join(format!("{run_id}.log")),
            digest: None,
            restore: None,
            secrets: Vec::new(),
        }
    }

    /// Gone, or a zombie nobody has reaped yet (the test host's init may not reap).
    fn gone(pid: u32) -> bool {
        proc::stat(pid).is_none_or(|p| !p.alive())
    }

    async fn wait_gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits (bounded) until `path` holds a line, and returns it.
    async fn wait_line(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(path)
                && s.ends_with('\n')
            {
                return s.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn next_exit(rx: &mut mpsc::UnboundedReceiver<RunExit>) -> RunExit {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no exit within 10s")
            .expect("exit channel closed")
    }

    fn pid_of(h: &RunHandle) -> u32 {
        h.engine_id.parse().unwrap()
    }

    #[tokio::test]
    async fn failing_command_reports_its_code_and_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        assert!(engine.take_exits().is_none());
        let req = request(tmp.path(), 7, argv(&["sh", "-c", "echo boom; exit 3"]));
        let h = engine.submit(req).await.unwrap();
        let _reaper = Reaper(vec![pid_of(&h)]);
        assert!(h.start_ticks.is_some());
        let exit = next_exit(&mut rx).await;
        assert_eq!(exit.run_id, 7);
        assert_eq!(exit.job, "team-a/clicks");
        let RunStatus::Failed(reason) = &exit.status else {
            panic!("{exit:?}")
        };
        assert!(
            reason.starts_with("exited with code 3\nlast lines:\n"),
            "{reason}"
        );
        assert!(reason.ends_with("boom"), "{reason}");
        assert_eq!(engine.status(&[h]).await.unwrap(), vec![exit.status]);
    }

    #[tokio::test]
    async fn success_and_signal_deaths_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        engine
            .submit(request(tmp.path(), 1, argv(&["true"])))
            .await
            .unwrap();
        assert_eq!(next_exit(&mut rx).await.status, RunStatus::Succeeded);
        engine
            .submit(request(tmp.path(), 2, argv(&["sh", "-c", "kill -9 $$"])))
            .await
            .unwrap();
        assert_eq!(
            next_exit(&mut rx).await.status,
            RunStatus::Failed("killed by signal SIGKILL".into())
        );
    }

    #[tokio::test]
    async fn stop_takes_the_whole_process_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("grandchild.pid");
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        let script = format!("sleep 100 & echo $! > {}; sleep 100", pidfile.display());
        let h = engine
            .submit(request(tmp.path(), 3, argv(&["sh", "-c", &script])))
            .await
            .unwrap();
        let pid = pid_of(&h);
        let _reaper = Reaper(vec![pid]);
        let grandchild: u32 = wait_line(&pidfile).await.parse().unwrap();
        assert!(!gone(pid) && !gone(grandchild));
        assert_eq!(
            engine.status(std::slice::from_ref(&h)).await.unwrap(),
            vec![RunStatus::Running]
        );

        let started = Instant::now();
        engine.stop(&h, Duration::from_secs(5)).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "SIGTERM was enough"
        );
        assert!(wait_gone(pid).await, "pid {pid} still there");
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} still there"
        );
        let exit = next_exit(&mut rx).await;
        assert_eq!(exit.status, RunStatus::Failed(STOPPED.into()));
        // Stopping again, or a run that already ended, is fine.
        engine.stop(&h, Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn what_a_run_leaves_behind_goes_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("left.pid");
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        let script = format!("sleep 100 & echo $! > {}", pidfile.display());
        let h = engine
            .submit(request(tmp.path(), 12, argv(&["sh", "-c", &script])))
            .await
            .unwrap();
        let _reaper = Reaper(vec![pid_of(&h)]);
        assert_eq!(engine.running().len(), 1);
        assert_eq!(engine.running()[0].run_id, 12);
        assert_eq!(next_exit(&mut rx).await.status, RunStatus::Succeeded);
        let left: u32 = wait_line(&pidfile).await.parse().unwrap();
        assert!(wait_gone(left).await, "pid {left} outlived its run");
        assert!(engine.running().is_empty());
    }

    #[tokio::test]
    async fn a_run_ignoring_sigterm_is_killed_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let ready = tmp.path().join("ready");
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        let script = format!(
            "trap '' TERM; echo ok > {}; while true; do sleep 0.05; done",
            ready.display()
        );
        let h = engine
            .submit(request(tmp.path(), 4, argv(&["sh", "-c", &script])))
            .await
            .unwrap();
        let pid = pid_of(&h);
        let _reaper = Reaper(vec![pid]);
        wait_line(&ready).await;

        let grace = Duration::from_millis(500);
        let started = Instant::now();
        engine.stop(&h, grace).await.unwrap();
        assert!(started.elapsed() >= grace, "killed before the grace ended");
        assert!(wait_gone(pid).await);
        assert_eq!(
            next_exit(&mut rx).await.status,
            RunStatus::Failed(STOPPED.into())
        );
    }

    #[tokio::test]
    async fn artifact_env_and_output_reach_the_child_and_its_log() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        let artifact = tmp.path().join("app.jar");
        let mut req = request(
            tmp.path(),
            5,
            argv(&[
                "sh",
                "-c",
                "echo \"arg=$1 env=$A\"; echo \"job=$JOBKEEPER_JOB run=$JOBKEEPER_RUN\"; \
                 echo \"cargo=${CARGO_MANIFEST_DIR:-none}\"; pwd; echo err >&2",
                "sh",
                "--jar={artifact}",
            ]),
        );
        req.artifact = Some(artifact.clone());
        req.params
            .environment
            .insert("A".into(), "{artifact}.env".into());
        let log = req.log_path.clone();
        engine.submit(req).await.unwrap();
        assert_eq!(next_exit(&mut rx).await.status, RunStatus::Succeeded);

        let out = std::fs::read_to_string(&log).unwrap();
        let a = artifact.display();
        assert!(
            out.contains(&format!("arg=--jar={a} env={a}.env\n")),
            "{out}"
        );
        assert!(out.contains("job=team-a/clicks run=5\n"), "{out}");
        // The daemon's environment does not leak (cargo sets this for the test process).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(out.contains("cargo=none\n"), "{out}");
        // No checkout and no workdir: the run starts in its log's folder.
        let logdir = log.parent().unwrap().canonicalize().unwrap();
        assert!(out.contains(&format!("{}\n", logdir.display())), "{out}");
        assert!(out.contains("err\n"), "{out}");
    }

    #[tokio::test]
    async fn arguments_are_never_read_by_a_shell() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = LocalEngine::new();
        let mut rx = engine.take_exits().unwrap();
        let mut req = request(
            tmp.path(),
            6,
            argv(&[
                "echo",
                "$(touch pwned)",
                ";",
                "touch",
                "pwned2",
                "`touch pwned3`",
            ]),
        );
        req.checkout = Some(tmp.path().to_path_buf());
        let log = req.log_path.clone();
        engine.submit(req).await.unwrap();
        assert_eq!(next_exit(&mut rx).await.status, RunStatus::Succeeded);
        let out = std::fs::read_to_string(&log).unwrap();
        assert_eq!(out, "$(touch pwned) ; touch pwned2 `touch pwned3`\n");
        for f in ["pwned", "pwned2", "pwned3"] {
            assert!(!tmp.path().join(f).exists(), "{f} was created");
        }
    }

    #[tokio::test]
    async fn bad_submissions_are_refused_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = LocalEngine::new();
        let cases = [
            (argv(&["no-such-program-jk"]), "not found"),
            (argv(&[]), "params.command is empty"),
            (argv(&["echo", "{artifact}"]), "no artifact"),
        ];
        for (command, want) in cases {
            let err = engine
                .submit(request(tmp.path(), 8, command))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, EngineError::Refused(m) if m.contains(want)),
                "{err}"
            );
        }
        let mut req = request(tmp.path(), 9, argv(&["true"]));
        req.params.workdir = Some("relative".into());
        let err = engine.submit(req).await.unwrap_err();
        assert!(
            matches!(&err, EngineError::Refused(m) if m.contains("absolute")),
            "{err}"
        );
    }

    /// Starts `sh -c script` the way a previous daemon instance did (own process group), and
    /// returns it with the handle that instance would have stored.
    fn spawn_foreign(script: &str) -> (proc::SyncGroupChild, RunHandle) {
        let child = proc::SyncGroupChild::spawn(
            std::process::Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null()),
        )
        .unwrap();
        let ticks = proc::stat(child.pid()).unwrap().start_ticks;
        let handle = RunHandle {
            run_id: 11,
            engine_id: child.pid().to_string(),
            start_ticks: Some(ticks),
            cluster: None,
        };
        (child, handle)
    }

    /// Reaps a child of the test process, bounded.
    async fn reap(mut child: proc::SyncGroupChild) {
        let pid = child.pid();
        let waited =
            tokio::task::spawn_blocking(move || child.wait_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .unwrap();
        assert!(waited.is_some(), "child {pid} not reaped");
    }

    #[tokio::test]
    async fn a_run_of_a_previous_instance_is_found_and_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("grandchild.pid");
        let (child, h) = spawn_foreign(&format!(
            "sleep 100 & echo $! > {}; wait",
            pidfile.display()
        ));
        let pid = child.pid();
        let _reaper = Reaper(vec![pid]);
        let grandchild: u32 = wait_line(&pidfile).await.parse().unwrap();

        let engine = LocalEngine::new();
        assert_eq!(
            engine.status(std::slice::from_ref(&h)).await.unwrap(),
            vec![RunStatus::Running]
        );
        engine.stop(&h, Duration::from_secs(5)).await.unwrap();
        reap(child).await;
        assert!(wait_gone(pid).await);
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} survived"
        );
        assert_eq!(
            engine.status(std::slice::from_ref(&h)).await.unwrap(),
            vec![RunStatus::Vanished]
        );
        engine.stop(&h, Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_recycled_pid_is_never_signalled() {
        let (mut child, mut h) = spawn_foreign("sleep 30");
        let pid = child.pid();
        let _reaper = Reaper(vec![pid]);
        let real = h.start_ticks.unwrap();
        h.start_ticks = Some(real + 1);

        let engine = LocalEngine::new();
        assert_eq!(
            engine.status(std::slice::from_ref(&h)).await.unwrap(),
            vec![RunStatus::Vanished]
        );
        engine.stop(&h, Duration::from_millis(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(is_same_live(pid, real), "pid {pid} was signalled");

        // Without a recorded start time nothing is signalled either.
        h.start_ticks = None;
        assert!(engine.stop(&h, Duration::from_millis(100)).await.is_err());
        assert!(is_same_live(pid, real));

        tokio::task::spawn_blocking(move || child.kill_group())
            .await
            .unwrap();
    }
}
