//! Local runs' log files: where a job's logs live ([`job_dir`]), and each live run's output
//! (`state_dir/logs/<job>/<run>.log`) kept under `logs.max_size` by copy-and-truncate, the way logrotate's `copytruncate` does it. The
//! child holds the file open with `O_APPEND`, so after the truncation its next write lands at
//! the start of the emptied file; the part before is kept as `<run>.log.1` (replacing an older
//! one), so a run's output never takes more than twice `max_size`. Lines a run writes between
//! the copy and the truncation (microseconds) are lost.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::settings::Live;
use crate::store::Store;

/// How often live runs' logs are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The folder of job `job`'s logs (its runs' `<run>.log`, `build-latest.log`) under `logs_dir`:
/// one folder level per job, whose `/` (a job in a folder) is written `%2F`, as in the API's
/// paths (`team-a/clicks` → `logs/team-a%2Fclicks/`). No job's folder is then inside another
/// job's folder, and `%` is not allowed in job names, so no job name can make a path that is
/// another job's log: under the layout before, job `victim/2335.log` had the folder
/// `logs/victim/2335.log/`, the very path of job `victim`'s run 2335. Runs record their log's
/// path, so the logs of runs from before keep being read where they were written.
pub fn job_dir(logs_dir: &Path, job: &str) -> PathBuf {
    logs_dir.join(job.replace('/', "%2F"))
}

/// The rotated part of `log`: `<run>.log.1`.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    log.with_file_name(name)
}

/// Rotates `log` when it is larger than `max_size`; returns whether it did.
pub fn rotate_if_large(log: &Path, max_size: u64) -> io::Result<bool> {
    let size = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= max_size {
        return Ok(false);
    }
    let old = rotated_path(log);
    let tmp = old.with_extension("1.tmp");
    // A copy that fails (a full disk) or cannot be put in place leaves no `.tmp` behind.
    if let Err(e) = std::fs::copy(log, &tmp).and_then(|_| std::fs::rename(&tmp, &old)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// Every [`CHECK_INTERVAL`], rotates the logs of the store's live local runs that grew past
/// `logs.max_size`, until `cancel`.
pub async fn rotate_loop(store: Store, settings: Live, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let max = settings.get().logs.max_size;
        let read = store.live_runs().await;
        let Some(runs) = store.read_or_log(None, "live runs, for log rotation", read) else {
            continue;
        };
        let logs: Vec<(String, i64, PathBuf)> = runs
            .into_iter()
            .filter(|r| r.engine.writes_run_logs() && !r.log_path.is_empty())
            .map(|r| (r.job, r.id, PathBuf::from(r.log_path)))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (job, run, log) in logs {
                match rotate_if_large(&log, max) {
                    Ok(true) => tracing::info!(job = %job, run, "log rotated past {max} bytes"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(job = %job, run, "log rotation of {}: {e}", log.display())
                    }
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn no_job_name_makes_a_path_inside_another_jobs_log_folder() {
        let logs = Path::new("/state/logs");
        assert_eq!(job_dir(logs, "clicks"), logs.join("clicks"));
        assert_eq!(job_dir(logs, "team-a/clicks"), logs.join("team-a%2Fclicks"));
        // The collision of the layout before: `victim`'s run 2335 against the job
        // `victim/2335.log`, and `victim`'s build log against `victim/build-latest.log`.
        let victim = job_dir(logs, "victim");
        for other in ["victim/2335.log", "victim/build-latest.log", "victim/a/b"] {
            let dir = job_dir(logs, other);
            assert_eq!(dir.parent(), Some(logs), "{other}: one level per job");
            assert!(!dir.starts_with(&victim) && !victim.starts_with(&dir));
        }
    }

    #[test]
    fn a_log_past_its_size_is_copied_aside_and_emptied_and_appends_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("7.log");
        // The writer holds the file open with O_APPEND, as a run's child does.
        let mut child = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        child.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_if_large(&log, 100).unwrap(), "at the limit: kept");
        child.write_all(b"b\n").unwrap();
        assert!(rotate_if_large(&log, 100).unwrap());
        let old = rotated_path(&log);
        assert_eq!(old, tmp.path().join("7.log.1"));
        assert_eq!(std::fs::metadata(&old).unwrap().len(), 102);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        child.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
        // A second rotation replaces the older part.
        child.write_all(&[b'c'; 200]).unwrap();
        assert!(rotate_if_large(&log, 100).unwrap());
        let kept = std::fs::read(&old).unwrap();
        assert!(kept.starts_with(b"after\n") && kept.len() == 206);
        assert!(!rotate_if_large(&tmp.path().join("none.log"), 1).unwrap());
    }

    #[test]
    fn a_rotation_that_fails_leaves_no_tmp_file_and_the_log_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("7.log");
        std::fs::write(&log, [b'a'; 200]).unwrap();
        // The rotated part cannot be put in place: a folder with something in it is there.
        let old = rotated_path(&log);
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("x"), "x").unwrap();
        assert!(rotate_if_large(&log, 100).is_err());
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "a .tmp was left: {names:?}"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 200, "nothing lost");
    }

    #[test]
    fn a_rotation_onto_a_full_disk_leaves_no_tmp_file() {
        // /dev/full answers every write with ENOSPC, as a full disk does: the copy is made
        // through a link to it where the `.tmp` goes.
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("8.log");
        std::fs::write(&log, [b'a'; 200]).unwrap();
        let part = rotated_path(&log).with_extension("1.tmp");
        std::os::unix::fs::symlink("/dev/full", &part).unwrap();
        let err = rotate_if_large(&log, 100).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(
            std::fs::symlink_metadata(&part).is_err(),
            "the .tmp is removed"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 200);
    }
}
