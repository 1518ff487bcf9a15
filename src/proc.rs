//! Child processes in their own process group: spawn, signal, wait with a time limit, kill.
//!
//! Owns the one way jobkeeper runs a program it must be able to stop completely (build
//! commands, `git fetch`, local runs). The child leads a new process group whose id is its pid,
//! so a signal to the group reaches everything it started (shells, helpers, grandchildren):
//!
//! - [`GroupChild`] (async, tokio) and [`SyncGroupChild`] (blocking threads) spawn the child in
//!   its own group and wait for it. When the leader ends, whatever it left running in its group
//!   is killed: nothing of a finished child outlives it. [`GroupChild::wait_timeout`] and
//!   [`SyncGroupChild::wait_timeout`] kill the whole group when time is up.
//! - [`signal_group`] signals a group by id, for a group spawned by an earlier daemon.
//! - [`stat`] reads `/proc/<pid>/stat`: the state, the group and the start time in clock ticks
//!   since boot. A pid with its start time names one process for ever, so a recycled pid is
//!   never taken for the process that had it ([`is_same_live`]).
//!
//! What the child prints is the caller's business (a log file, a capped drain, a tail in memory):
//! take the pipes with [`GroupChild::take_output`] or [`SyncGroupChild::take_stderr`].

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::backoff::Backoff;

/// How long a wait that timed out waits for the killed leader to be reaped.
pub const REAP_WAIT: Duration = Duration::from_secs(5);

/// Signalling a process group failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The id cannot be a process group id.
    #[error("pid {0} is out of range")]
    OutOfRange(u32),
    /// The id is 0 or 1: the caller's own group or every process.
    #[error("refusing to signal process group {0}")]
    Refused(u32),
    /// The system refused the signal.
    #[error("cannot send {sig} to process group {pgid}: {source}")]
    Signal {
        /// The signal.
        sig: Signal,
        /// The group.
        pgid: u32,
        /// Why.
        source: Errno,
    },
}

/// Sends `sig` to the process group `pgid`. A group that is gone is not an error; groups 0 and 1
/// are refused.
pub fn signal_group(pgid: u32, sig: Signal) -> Result<(), ProcError> {
    let raw = i32::try_from(pgid).map_err(|_| ProcError::OutOfRange(pgid))?;
    if raw <= 1 {
        return Err(ProcError::Refused(pgid));
    }
    match killpg(Pid::from_raw(raw), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(ProcError::Signal { sig, pgid, source }),
    }
}

/// SIGKILL to the process group `pgid`, ignoring errors (the group may be gone).
pub fn kill_group(pgid: u32) {
    let _ = signal_group(pgid, Signal::SIGKILL);
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z, T, ...
    pub state: char,
    /// Field 5: its process group.
    pub pgrp: u32,
    /// Field 22: its start time in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcStat {
    /// Alive (a zombie has ended; it only waits to be reaped).
    pub fn alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and parentheses,
/// so the fields are read after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `state` was field 3; the group (field 5) is 2 further on, the start time (22) 17 more.
    let pgrp = fields.nth(1)?.parse().ok()?;
    let start_ticks = fields.nth(16)?.parse().ok()?;
    Some(ProcStat {
        state,
        pgrp,
        start_ticks,
    })
}

/// Whether the process `pid` is alive and is the one that started at `start_ticks`.
pub fn is_same_live(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|p| p.alive() && p.start_ticks == start_ticks)
}

/// A tokio child leading its own process group. Create with [`GroupChild::spawn`].
///
/// Dropping it does what the command's `kill_on_drop` says for the leader, and nothing to the
/// rest of the group.
#[derive(Debug)]
pub struct GroupChild {
    /// The leader.
    child: tokio::process::Child,
    /// Its pid, which is the group id (known while it is not reaped, so kept).
    pgid: Option<u32>,
}

impl GroupChild {
    /// Starts `cmd` as the leader of a new process group. Everything else (environment, pipes,
    /// `kill_on_drop`) is as the caller set it on `cmd`.
    pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<Self> {
        cmd.process_group(0);
        let child = cmd.spawn()?;
        let pgid = child.id();
        Ok(GroupChild { child, pgid })
    }

    /// The leader's pid, also the group id; `None` if it ended before it was known.
    pub fn pid(&self) -> Option<u32> {
        self.pgid
    }

    /// Takes the leader's stdout and stderr pipes (those the command set to piped).
    pub fn take_output(
        &mut self,
    ) -> (
        Option<tokio::process::ChildStdout>,
        Option<tokio::process::ChildStderr>,
    ) {
        (self.child.stdout.take(), self.child.stderr.take())
    }

    /// Sends `sig` to the whole group.
    pub fn signal_group(&self, sig: Signal) -> Result<(), ProcError> {
        match self.pgid {
            Some(pgid) => signal_group(pgid, sig),
            None => Ok(()),
        }
    }

    /// SIGKILL to the whole group, ignoring errors.
    pub fn kill_group(&self) {
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
    }

    /// Waits for the leader to end, then kills whatever it left in its group.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.kill_group();
        status
    }

    /// Waits up to `limit` for the leader to end; past it, kills the whole group, waits up to
    /// [`REAP_WAIT`] for the leader to be reaped and gives `None`. Either way nothing of the
    /// group is left running.
    pub async fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
        let waited = tokio::time::timeout(limit, self.child.wait()).await;
        self.kill_group();
        match waited {
            Ok(status) => status.map(Some),
            Err(_) => {
                let _ = tokio::time::timeout(REAP_WAIT, self.child.wait()).await;
                Ok(None)
            }
        }
    }
}

/// A `std::process` child leading its own process group, for blocking threads. Create with
/// [`SyncGroupChild::spawn`].
#[derive(Debug)]
pub struct SyncGroupChild {
    /// The leader.
    child: std::process::Child,
}

impl SyncGroupChild {
    /// Starts `cmd` as the leader of a new process group. Everything else (environment, pipes)
    /// is as the caller set it on `cmd`.
    pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Ok(SyncGroupChild {
            child: cmd.spawn()?,
        })
    }

    /// The leader's pid, also the group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the leader's stderr pipe (if the command set it to piped).
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// SIGKILL to the whole group, then reaps the leader. The leader is not reaped before the
    /// signal, so its group id cannot have been reused.
    pub fn kill_group(&mut self) {
        kill_group(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the leader to end (looking at doubling intervals up to 50 ms),
    /// then kills whatever it left in its group. Past `limit`, kills the whole group, reaps the
    /// leader and gives `None`.
    pub fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
        loop {
            if let Some(status) = self.child.try_wait()? {
                kill_group(self.pid());
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill_group();
                return Ok(None);
            }
            std::thread::sleep(pause.next().min(deadline - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// The pids of the processes in group `pgid`, from `/proc`.
    fn members(pgid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgid && s.alive()))
            .collect()
    }

    /// Waits (bounded) until group `pgid` has no live member.
    fn group_gone(pgid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if members(pgid).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until group `pgid` has at least `n` live members.
    fn group_has(pgid: u32, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if members(pgid).len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn sleepers() -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    #[test]
    fn stat_is_parsed_after_the_last_paren() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987654
            })
        );
        let line = "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_stat(line).map(|s| s.start_ticks), Some(98765));
        assert_eq!(parse_stat("garbage"), None);
        let me = stat(std::process::id()).unwrap();
        assert!(me.alive());
        assert!(is_same_live(std::process::id(), me.start_ticks));
        assert!(!is_same_live(std::process::id(), me.start_ticks + 1));
    }

    #[test]
    fn groups_zero_and_one_are_never_signalled() {
        assert!(matches!(
            signal_group(0, Signal::SIGKILL),
            Err(ProcError::Refused(0))
        ));
        assert!(matches!(
            signal_group(1, Signal::SIGKILL),
            Err(ProcError::Refused(1))
        ));
        assert!(matches!(
            signal_group(u32::MAX, Signal::SIGKILL),
            Err(ProcError::OutOfRange(_))
        ));
    }

    #[tokio::test]
    async fn a_group_out_of_time_is_killed_whole() {
        let mut child = GroupChild::spawn(&mut sleepers()).unwrap();
        let pgid = child.pid().unwrap();
        assert_eq!(stat(pgid).unwrap().pgrp, pgid, "the child leads its group");
        assert!(group_has(pgid, 2), "both sleeps (and maybe sh)");
        let waited = child
            .wait_timeout(Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(waited, None);
        assert!(group_gone(pgid), "left: {:?}", members(pgid));
    }

    #[tokio::test]
    async fn what_a_finished_leader_left_is_killed() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & exit 3"]).stdin(Stdio::null());
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        let pgid = child.pid().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(group_gone(pgid), "left: {:?}", members(pgid));
    }

    #[tokio::test]
    async fn a_signal_reaches_the_whole_group() {
        let mut child = GroupChild::spawn(&mut sleepers()).unwrap();
        let pgid = child.pid().unwrap();
        assert!(group_has(pgid, 2));
        child.signal_group(Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
        assert!(group_gone(pgid), "left: {:?}", members(pgid));
        // The group is gone: signalling it again is not an error.
        signal_group(pgid, Signal::SIGTERM).unwrap();
    }

    #[tokio::test]
    async fn output_pipes_are_the_callers() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        let (out, err) = child.take_output();
        let read = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
            let mut s = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut r.unwrap(), &mut s)
                .await
                .unwrap();
            s
        };
        let out = read(out.map(|o| Box::new(o) as _)).await;
        let err = read(err.map(|e| Box::new(e) as _)).await;
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn a_blocking_wait_kills_the_group_out_of_time() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = SyncGroupChild::spawn(&mut cmd).unwrap();
        let pgid = child.pid();
        assert!(child.take_stderr().is_some());
        assert!(group_has(pgid, 2));
        let started = Instant::now();
        assert_eq!(
            child.wait_timeout(Duration::from_millis(200)).unwrap(),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(group_gone(pgid), "left: {:?}", members(pgid));
    }

    #[test]
    fn a_blocking_wait_gives_the_status_and_clears_the_group() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & exit 4"]).stdin(Stdio::null());
        let mut child = SyncGroupChild::spawn(&mut cmd).unwrap();
        let pgid = child.pid();
        let status = child
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(4));
        assert!(group_gone(pgid), "left: {:?}", members(pgid));
    }
}
