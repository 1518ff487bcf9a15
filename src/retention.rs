//! Retention (SPEC "Operating a fleet"): what the daemon deletes so its state folder stops
//! growing. Per job, runs past the latest `retention.runs` and older than `retention.age` go
//! with their log files (and rotated parts); events older than `age` go, each job's latest
//! kept; alert deliveries older than `age` go. Artifacts (`artifacts/<key>`) and build folders
//! (`builds/<key>`) that no deployed, previous or live version needs go once they are older
//! than [`BUILD_GRACE`] (a build just finished is not yet deployed); a build folder without an
//! artifact (a failed build) is kept for `age`, for its log.
//!
//! A pass runs at start and then every [`interval`] (at most a minute). It walks the jobs in
//! pages of [`JOBS_PER_BATCH`]: one query per page tells which of them have anything to delete,
//! so a pass with nothing to do costs a hundred queries over 10,000 jobs. Each store call
//! deletes at most [`ROWS_PER_BATCH`] rows and hands the store's lock straight to a waiting
//! writer; every [`BATCHES_PER_CHECKPOINT`] batches the pass copies the write-ahead log into
//! the database from a connection of its own, so no job's write has to. Reconcile thus never
//! waits behind more than one batch. A live run is never deleted. After each pass the state
//! folder's size is measured for `jobkeeper_state_bytes`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::settings::{Live, Retention};
use crate::store::{Store, StoreError, now_ms};

/// Jobs read per page of a pass.
pub const JOBS_PER_BATCH: usize = 100;
/// Rows one store call deletes at most.
pub const ROWS_PER_BATCH: usize = 200;
/// Batches between two checkpoints of a pass: a batch writes about 15 pages to the log, so the
/// log stays under half of SQLite's automatic checkpoint (1,000 pages), which would otherwise
/// run inside some job's write, while the `fsync` each checkpoint ends with stays rare.
pub const BATCHES_PER_CHECKPOINT: usize = 32;
/// An artifact or build folder younger than this is never deleted: it may be about to deploy.
pub const BUILD_GRACE: Duration = Duration::from_secs(3600);

/// How often a pass runs: half of `age`, between a second and a minute.
pub fn interval(r: &Retention) -> Duration {
    (r.age / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Run records.
    pub runs: u64,
    /// Events and alert deliveries.
    pub events: u64,
    /// Log files, artifacts and build folders.
    pub files: u64,
}

/// Deletes what retention allows, from the store and under `state_dir`, in small batches;
/// `pause` runs between batches (the loop yields to other tasks there).
pub fn prune(
    store: &Store,
    state_dir: &Path,
    r: &Retention,
    mut pause: impl FnMut(),
) -> Result<Pruned, StoreError> {
    let checkpointer = store.blocking().checkpointer()?;
    let mut batches = 0;
    let mut pause = || {
        batches += 1;
        if batches % BATCHES_PER_CHECKPOINT == 0 {
            // A checkpoint that cannot finish now finishes at a later one; one that fails
            // follows the failed-write rule.
            store.record(None, "WAL checkpoint", checkpointer.checkpoint());
        }
        pause();
    };
    let mut out = Pruned::default();
    let before = now_ms() - i64::try_from(r.age.as_millis()).unwrap_or(i64::MAX);
    let mut after = String::new();
    loop {
        let page = store
            .blocking()
            .prune_candidates(&after, JOBS_PER_BATCH, r.runs, before)?;
        for job in page.iter().filter(|c| c.runs) {
            loop {
                let runs = store
                    .blocking()
                    .prune_runs(&job.job, r.runs, before, ROWS_PER_BATCH)?;
                out.runs += runs.len() as u64;
                for run in &runs {
                    out.files += remove_log(Path::new(&run.log_path));
                }
                pause();
                if runs.len() < ROWS_PER_BATCH {
                    break;
                }
            }
        }
        for job in page.iter().filter(|c| c.events) {
            out.events += drain(
                || {
                    store
                        .blocking()
                        .prune_events(Some(&job.job), before, ROWS_PER_BATCH)
                },
                &mut pause,
            )?;
        }
        pause();
        match page.last() {
            Some(last) if page.len() == JOBS_PER_BATCH => after.clone_from(&last.job),
            _ => break,
        }
    }
    out.events += drain(
        || store.blocking().prune_events(None, before, ROWS_PER_BATCH),
        &mut pause,
    )?;
    out.events += drain(
        || store.blocking().prune_alerts_sent(before, ROWS_PER_BATCH),
        &mut pause,
    )?;
    loop {
        let rows = store.blocking().prune_checkpoints(before, ROWS_PER_BATCH)?;
        for row in &rows {
            out.files += remove_checkpoint(&row.location);
        }
        pause();
        if rows.len() < ROWS_PER_BATCH {
            break;
        }
    }
    store.record(None, "WAL checkpoint", checkpointer.checkpoint());
    let needed = store.blocking().needed_artifacts()?;
    out.files += prune_builds(state_dir, &needed, r.age);
    Ok(out)
}

/// Calls `step` until it deletes less than a batch, pausing after each call; the total.
fn drain(
    mut step: impl FnMut() -> Result<usize, StoreError>,
    pause: &mut impl FnMut(),
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = step()?;
        total += n as u64;
        pause();
        if n < ROWS_PER_BATCH {
            return Ok(total);
        }
    }
}

/// Deletes a run's log and its rotated part; how many files went.
fn remove_log(log: &Path) -> u64 {
    if log.as_os_str().is_empty() {
        return 0;
    }
    [log.to_path_buf(), crate::runlogs::rotated_path(log)]
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count() as u64
}

/// Deletes a retained checkpoint's folder (`chk-N`) when it is a `file:` path on this host;
/// its job's checkpoint folder goes with it once nothing else is left in it but Flink's
/// `shared` and `taskowned` folders. A checkpoint elsewhere (`s3://`, `hdfs://`) is left to
/// that store's own lifecycle rules: only its record goes. Returns the folders deleted.
pub fn remove_checkpoint(location: &str) -> u64 {
    let Some(path) = local_path(location) else {
        tracing::info!(
            "retention: checkpoint {location} is not on this host; its record goes, its files stay"
        );
        return 0;
    };
    let is_chk = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("chk-"));
    if !is_chk || !path.join("_metadata").is_file() {
        return 0;
    }
    if let Err(e) = std::fs::remove_dir_all(&path) {
        tracing::warn!(
            "retention: cannot delete checkpoint {}: {e}",
            path.display()
        );
        return 0;
    }
    let mut removed = 1;
    if let Some(job_dir) = path.parent() {
        let rest: Vec<_> = std::fs::read_dir(job_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let only_flink_folders = rest.iter().all(|n| n == "shared" || n == "taskowned");
        if only_flink_folders && std::fs::remove_dir_all(job_dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The local path of a `file:` location (`file:/a/b`, `file:///a/b`).
pub fn local_path(location: &str) -> Option<PathBuf> {
    let rest = location.strip_prefix("file:")?;
    let rest = rest.strip_prefix("//").map_or(rest, |r| {
        // `file://host/path`: only an empty host or localhost is this host.
        r.strip_prefix("localhost").unwrap_or(r)
    });
    rest.starts_with('/').then(|| PathBuf::from(rest))
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a > age)
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

/// Deletes the artifacts and build folders no version needs; how many folders went.
fn prune_builds(state_dir: &Path, needed: &HashSet<String>, age: Duration) -> u64 {
    let artifacts = state_dir.join("artifacts");
    let builds = state_dir.join("builds");
    let mut removed = 0;
    for (key, path) in subdirs(&artifacts) {
        if needed.contains(&key) || !older_than(&path, BUILD_GRACE) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
            if std::fs::remove_dir_all(builds.join(&key)).is_ok() {
                removed += 1;
            }
        }
    }
    for (key, path) in subdirs(&builds) {
        let kept = needed.contains(&key) || artifacts.join(&key).exists();
        if !kept
            && older_than(&path, BUILD_GRACE.max(age))
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// The size of everything under `dir`, in bytes (symlinks not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Runs a pass at start and then every [`interval`] until `cancel`; each pass runs on the
/// blocking pool and yields between batches.
pub async fn retention_loop(
    store: Store,
    live: Live,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        let settings = live.get();
        let (r, state_dir) = (settings.retention, settings.state_dir.clone());
        let (s, m) = (store.clone(), metrics.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let pruned = prune(&s, &state_dir, &r, std::thread::yield_now);
            m.set_state_bytes(dir_bytes(&state_dir));
            pruned
        })
        .await;
        match pass {
            Ok(Ok(p)) => {
                metrics.pruned("runs", p.runs);
                metrics.pruned("events", p.events);
                metrics.pruned("files", p.files);
                if p != Pruned::default() {
                    tracing::info!(
                        runs = p.runs,
                        events = p.events,
                        files = p.files,
                        "retention: deleted old history"
                    );
                }
            }
            Ok(Err(err)) => tracing::error!("retention: {err}; trying again at the next pass"),
            Err(err) => tracing::error!("retention: {err}"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval(&r)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_half_the_age_between_a_second_and_a_minute() {
        let r = |secs| Retention {
            runs: 1,
            age: Duration::from_secs(secs),
        };
        assert_eq!(interval(&r(0)), Duration::from_secs(1));
        assert_eq!(interval(&r(10)), Duration::from_secs(5));
        assert_eq!(interval(&Retention::default()), Duration::from_secs(60));
    }

    #[test]
    fn unneeded_old_artifacts_and_builds_go_needed_and_young_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        let mk = |p: PathBuf, aged: bool| {
            std::fs::create_dir_all(&p).unwrap();
            if aged {
                std::fs::File::open(&p).unwrap().set_modified(old).unwrap();
            }
        };
        let a = dir.path().join("artifacts");
        let b = dir.path().join("builds");
        for key in ["needed", "unneeded", "young"] {
            mk(b.join(key), key != "young");
            mk(a.join(key), key != "young");
        }
        mk(b.join("failed"), true);
        std::fs::write(a.join("needed/app.jar"), "x").unwrap();
        let needed = HashSet::from(["needed".to_string()]);
        // The failed build's log is kept for `age` (a day here), then goes.
        assert_eq!(
            prune_builds(dir.path(), &needed, Duration::from_secs(86_400)),
            2
        );
        assert!(!a.join("unneeded").exists() && !b.join("unneeded").exists());
        for p in [
            a.join("needed"),
            b.join("needed"),
            a.join("young"),
            b.join("failed"),
        ] {
            assert!(p.exists(), "{}", p.display());
        }
        assert_eq!(
            prune_builds(dir.path(), &needed, Duration::from_secs(60)),
            1
        );
        assert!(!b.join("failed").exists());
        assert_eq!(dir_bytes(dir.path()), 1);
    }

    #[test]
    fn a_pass_deletes_old_retained_checkpoints_but_the_newest_of_each_job() {
        use crate::store::SavepointKind;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let chk = |job: &str, n: u32| {
            let p = dir.path().join(format!("checkpoints/{job}/chk-{n}"));
            std::fs::create_dir_all(p.join("../shared")).unwrap();
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("_metadata"), b"x").unwrap();
            format!("file:{}", p.display())
        };
        let (a1, a2, b1) = (chk("ja", 3), chk("jb", 7), chk("jc", 9));
        let old = now_ms() - 3_600_000;
        for (job, loc) in [("a", &a1), ("a", &a2), ("b", &b1)] {
            store
                .blocking()
                .add_savepoint_taken(job, None, loc, SavepointKind::Checkpoint, old)
                .unwrap();
        }
        store
            .blocking()
            .add_savepoint_taken(
                "a",
                None,
                "s3://bucket/cp/chk-1",
                SavepointKind::Checkpoint,
                old,
            )
            .unwrap();
        store
            .blocking()
            .add_savepoint("a", None, "file:/sp/savepoint-1", SavepointKind::Savepoint)
            .unwrap();
        let r = Retention {
            runs: 1,
            age: Duration::from_secs(60),
        };
        let pruned = prune(&store, dir.path(), &r, || {}).unwrap();
        let left: Vec<String> = store
            .blocking()
            .savepoints("a", 10)
            .unwrap()
            .into_iter()
            .map(|s| s.location)
            .collect();
        assert_eq!(
            left,
            vec!["file:/sp/savepoint-1".to_string()],
            "the newest stays"
        );
        assert_eq!(
            store.blocking().savepoints("b", 10).unwrap().len(),
            1,
            "b's only one stays"
        );
        let gone = |loc: &str| !Path::new(loc.strip_prefix("file:").unwrap()).exists();
        assert!(gone(&a1) && gone(&a2), "a's folders, with their job folder");
        assert!(!dir.path().join("checkpoints/ja").exists());
        assert!(!gone(&b1));
        assert_eq!(pruned.files, 4, "two chk folders and their two job folders");
        assert_eq!(
            local_path("file:///x/chk-1"),
            Some(PathBuf::from("/x/chk-1"))
        );
        assert_eq!(local_path("file://localhost/x"), Some(PathBuf::from("/x")));
        assert_eq!(local_path("file://nas/x"), None);
        assert_eq!(local_path("hdfs:///x"), None);
    }

    #[tokio::test]
    async fn a_pass_deletes_old_runs_with_their_logs_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::in_memory().unwrap();
        let logs = dir.path().join("logs/a");
        std::fs::create_dir_all(&logs).unwrap();
        let mut ids = Vec::new();
        for _ in 0..(ROWS_PER_BATCH + 10) {
            let id = s
                .insert_run(
                    "a",
                    Default::default(),
                    "h",
                    (crate::engine::EngineKind::Local, "dev"),
                    &logs,
                )
                .await
                .unwrap();
            std::fs::write(logs.join(format!("{id}.log")), "x").unwrap();
            s.finish_run(id, crate::store::RunState::Succeeded, None)
                .await
                .unwrap();
            ids.push(id);
        }
        std::fs::write(logs.join(format!("{}.log.1", ids[0])), "x").unwrap();
        s.apply_commit(
            &crate::store::CommitRecord::default(),
            &[],
            &[(
                "a".into(),
                crate::event::JobEvent::Started { why: "x".into() },
            )],
        )
        .await
        .unwrap();
        let r = Retention {
            runs: 5,
            age: Duration::ZERO,
        };
        // A job row is what a pass walks.
        s.apply_commit(
            &crate::store::CommitRecord::default(),
            &[crate::store::DesiredUpdate::Invalid {
                name: "a".into(),
                path: "jobs/a.yaml".into(),
                errors: "e".into(),
            }],
            &[],
        )
        .await
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut pauses = 0;
        let p = prune(&s, dir.path(), &r, || pauses += 1).unwrap();
        assert_eq!(p.runs, ROWS_PER_BATCH as u64 + 5);
        assert_eq!(p.files, ROWS_PER_BATCH as u64 + 6);
        assert!(pauses >= 2, "{pauses}");
        assert_eq!(s.runs("a", 1000).await.unwrap().len(), 5);
        assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 5);
        assert_eq!(prune(&s, dir.path(), &r, || {}).unwrap(), Pruned::default());
    }
}
