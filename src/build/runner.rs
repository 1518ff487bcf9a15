//! The build command: `sh -c <command>` with a clean environment in its own process group,
//! its output drained into the capped build log, killed with its whole group after the timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::log::drain;
use super::queue::append;
use super::{BuildConfig, BuildError, BuildRequest, TAIL_LINES, log_tail};
use crate::proc::GroupChild;

/// How long the log pipes may stay open after the build command ended (and its group was killed).
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Runs the build command with a clean environment in its own process group, its output in
/// the capped log, killed with its group after the timeout.
pub(super) async fn run_command(
    cfg: &BuildConfig,
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
        .env("PATH", &cfg.path)
        .env("LANG", "C.UTF-8")
        .env("JOBKEEPER_JOB", &req.job)
        .env("JOBKEEPER_COMMIT", &req.commit)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let mut child = GroupChild::spawn(&mut cmd)
        .map_err(|e| BuildError::io("cannot start the build command (sh)", e))?;
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .await
        .map_err(|e| BuildError::io(format!("cannot open {}", log.display()), e))?;
    let (stdout, stderr) = child.take_output();
    let mut drain = tokio::spawn(drain(stdout, stderr, file, cfg.max_log_bytes));

    // Past the timeout the whole group is killed; either way nothing of it stays.
    let status = child
        .wait_timeout(cfg.timeout)
        .await
        .map_err(|e| BuildError::io("cannot wait for the build command", e))?;
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
                    humantime::format_duration(cfg.timeout)
                ),
            )
            .await;
            Err(BuildError::TimedOut {
                after: cfg.timeout,
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
