//! Local runs' cgroups (v2): where the cgroup v2 hierarchy is writable, each local run lives in
//! a cgroup of its own, `<the daemon's cgroup>/jobkeeper-runs/<state>/<run>-<job>`, so ending
//! the run ends every process it started, also one that left the run's process group
//! (`setsid`, a daemonizing double fork), which a signal to the group never reaches.
//!
//! - `<state>` is a digest of the state folder, so daemons of different state folders in one
//!   cgroup never share a run's cgroup; `<job>` is the job name with `/` written `%2F`, for
//!   people reading `systemd-cgls`; the run id alone finds it ([`RunCgroups::find`]).
//! - The child joins its cgroup itself before its program starts: it is spawned as
//!   `/bin/sh -c 'echo $$ > <cgroup>/cgroup.procs && exec "$@"' <cgroup.procs> <program>
//!   <args>...` ([`RunCgroups::command`]), and `exec` keeps the pid, so nothing the program
//!   forks can start outside. Moving the child from the daemon after the spawn would race with
//!   the program's first fork; a `pre_exec` hook or `clone3(CLONE_INTO_CGROUP)` needs unsafe
//!   code, which the crate forbids. The shell reads none of the run's arguments: they are
//!   passed on as `"$@"`.
//! - No controller is enabled anywhere: only `cgroup.procs`, `cgroup.events` and `cgroup.kill`
//!   (Linux 5.14 or later) are used. So the rule of cgroup v2 that a cgroup giving controllers
//!   to its children holds no process itself does not bear on the daemon's own cgroup.
//! - [`RunCgroups::open`] checks all this at start by moving a probe process into a cgroup
//!   and removes the empty cgroups a previous daemon left; an error says why runs get no
//!   cgroup (the daemon logs it and runs them as before: only their process group is
//!   signalled).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::backoff::Backoff;

/// The folder of the daemon's cgroup that holds its runs' cgroups.
pub const RUNS_DIR: &str = "jobkeeper-runs";

/// The shell that moves a run into its cgroup before its program starts.
const SHELL: &str = "/bin/sh";

/// What the shell runs: `$0` is the cgroup's `cgroup.procs`, `"$@"` the run's argv.
const JOIN: &str = "{ echo $$ > \"$0\"; } 2>/dev/null || { echo \"jobkeeper: cannot move the \
run into its cgroup ($0)\" >&2; exit 126; }; exec \"$@\"";

/// Why local runs get no cgroup of their own.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup v2 hierarchy in `/proc/self/mountinfo`.
    #[error("no cgroup v2 hierarchy is mounted")]
    NotMounted,
    /// A file of `/proc` or of the hierarchy could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The daemon's cgroup is not in the mounted part of the hierarchy.
    #[error("the daemon's cgroup {own} is not below the mounted cgroup v2 root {root}")]
    Outside {
        /// The daemon's cgroup, from `/proc/self/cgroup`.
        own: String,
        /// The part of the hierarchy mounted.
        root: String,
    },
    /// A cgroup could not be made (a read-only mount, no permission).
    #[error("cannot create the cgroup {path}: {source}")]
    Create {
        /// The cgroup's folder.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The kernel has no `cgroup.kill` (before 5.14).
    #[error("{0} has no cgroup.kill (Linux 5.14 or later is needed)")]
    NoKill(String),
    /// A process could not be moved into a cgroup.
    #[error("a process cannot be moved into {path}: {why}")]
    Probe {
        /// The cgroup.
        path: String,
        /// What happened.
        why: String,
    },
}

/// The cgroups of one daemon's local runs (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RunCgroups {
    /// `<the daemon's cgroup>/jobkeeper-runs/<state>`.
    root: PathBuf,
}

/// The mount point and mounted root of the cgroup v2 hierarchy, from `mountinfo`'s text.
fn v2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split_whitespace();
        let root = f.nth(3)?;
        let point = f.next()?;
        Some((PathBuf::from(point), root.to_string()))
    })
}

/// The daemon's cgroup v2 path (`0::/system.slice/jobkeeper.service`), from `/proc/self/cgroup`.
fn own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

fn read(path: &str) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_string(),
        source,
    })
}

/// The name of run `run_id` of `job`'s cgroup.
fn name(run_id: i64, job: &str) -> String {
    let job: String = job.replace('/', "%2F").chars().take(100).collect();
    format!("{run_id}-{job}")
}

/// Whether a cgroup holds a live process (`cgroup.events`: `populated 1`); a cgroup that is
/// gone holds none.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
}

/// SIGKILL to every process of the cgroup `dir` and of the cgroups below it; a cgroup that is
/// gone is not an error.
pub fn kill(dir: &Path) -> io::Result<()> {
    match std::fs::write(dir.join("cgroup.kill"), "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Kills every process of the cgroup `dir`, waits up to `wait` for them to be gone and removes
/// the cgroup. A cgroup that is gone is not an error.
pub fn end(dir: &Path, wait: Duration) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    kill(dir)?;
    let deadline = Instant::now() + wait;
    let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        if !populated(dir) {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        } else if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} still holds processes {wait:?} after cgroup.kill",
                dir.display()
            )));
        }
        std::thread::sleep(pause.next());
    }
}

impl RunCgroups {
    /// The runs' cgroups of the daemon of `state_dir` below the daemon's own cgroup: made, checked
    /// by moving a probe process in, and cleared of the empty cgroups a previous daemon left.
    pub fn open(state_dir: &Path) -> Result<RunCgroups, CgroupError> {
        let (mount, mounted) =
            v2_mount(&read("/proc/self/mountinfo")?).ok_or(CgroupError::NotMounted)?;
        let own = own_cgroup(&read("/proc/self/cgroup")?).ok_or(CgroupError::NotMounted)?;
        let below = if mounted == "/" {
            Some(own.as_str())
        } else {
            own.strip_prefix(mounted.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))
        };
        let Some(below) = below else {
            return Err(CgroupError::Outside { own, root: mounted });
        };
        let digest = sha2::Sha256::digest(state_dir.to_string_lossy().as_bytes());
        let root = mount
            .join(below.trim_start_matches('/'))
            .join(RUNS_DIR)
            .join(&hex::encode(digest)[..12]);
        std::fs::create_dir_all(&root).map_err(|source| CgroupError::Create {
            path: root.display().to_string(),
            source,
        })?;
        if !root.join("cgroup.kill").exists() {
            return Err(CgroupError::NoKill(root.display().to_string()));
        }
        let cgroups = RunCgroups { root };
        cgroups.remove_empty();
        cgroups.probe()?;
        Ok(cgroups)
    }

    /// Where the runs' cgroups are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Moves a probe shell into a fresh cgroup the way a run joins its own.
    fn probe(&self) -> Result<(), CgroupError> {
        let dir = self.root.join("probe");
        let fail = |why: String| CgroupError::Probe {
            path: dir.display().to_string(),
            why,
        };
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        let out = std::process::Command::new(SHELL)
            .args(["-c", JOIN])
            .arg(dir.join("cgroup.procs"))
            .arg("true")
            .stdin(std::process::Stdio::null())
            .output();
        let moved = match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_string())),
            Err(e) => Err(fail(format!("cannot run {SHELL}: {e}"))),
        };
        let _ = end(&dir, Duration::from_secs(1));
        moved
    }

    /// Removes the empty cgroups below the root (those of runs a previous daemon left ended).
    fn remove_empty(&self) {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) && !populated(&e.path()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }

    /// A new cgroup for run `run_id` of `job`.
    pub fn create(&self, run_id: i64, job: &str) -> io::Result<PathBuf> {
        let dir = self.root.join(name(run_id, job));
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(dir),
        }
    }

    /// The cgroup of run `run_id`, if it has one.
    pub fn find(&self, run_id: i64) -> Option<PathBuf> {
        let prefix = format!("{run_id}-");
        std::fs::read_dir(&self.root)
            .ok()?
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .map(|e| e.path())
    }

    /// `program args...` started in the cgroup `dir`: the command's other settings
    /// (environment, folder, output) are the caller's.
    pub fn command(dir: &Path, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(SHELL);
        cmd.arg("-c")
            .arg(JOIN)
            .arg(dir.join("cgroup.procs"))
            .arg(program)
            .args(args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy_and_own_cgroup_are_read_from_proc() {
        let info = "25 30 0:22 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                    41 31 0:38 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(
            v2_mount(info),
            Some((PathBuf::from("/sys/fs/cgroup"), "/".into()))
        );
        assert_eq!(v2_mount("41 31 0:38 / /x rw - cgroup cgroup rw,cpu"), None);
        assert_eq!(
            own_cgroup("1:cpu:/\n0::/system.slice/jobkeeper.service\n").as_deref(),
            Some("/system.slice/jobkeeper.service")
        );
        assert_eq!(own_cgroup("1:cpu:/\n"), None);
        assert_eq!(name(42, "team-a/clicks"), "42-team-a%2Fclicks");
    }

    /// Needs root and a writable cgroup v2 hierarchy (the test machines have both).
    #[test]
    fn a_run_cgroup_takes_what_left_the_process_group() {
        assert!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
            "this test needs root (to make cgroups)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let cgroups = RunCgroups::open(tmp.path()).expect("cgroup v2 is writable here");
        let dir = cgroups.create(7, "team-a/clicks").unwrap();
        assert_eq!(cgroups.find(7), Some(dir.clone()));
        assert_eq!(cgroups.find(70), None);
        let pidfile = tmp.path().join("escaped");
        let script = format!("setsid sleep 1000 & echo $! > {}", pidfile.display());
        let status = std::process::Command::new(SHELL)
            .args(["-c", JOIN])
            .arg(dir.join("cgroup.procs"))
            .args(["sh", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
        let escaped: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(populated(&dir), "the escaped sleep is in the run's cgroup");
        end(&dir, Duration::from_secs(5)).unwrap();
        assert!(
            crate::proc::stat(escaped).is_none_or(|s| !s.alive()),
            "{escaped} outlived its cgroup"
        );
        assert!(!dir.exists());
        end(&dir, Duration::from_secs(1)).unwrap();
    }
}
