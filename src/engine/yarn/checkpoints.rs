//! The newest completed checkpoint of each application-mode run, kept while it runs: an
//! application's JobManager ends with its application (its AM dying takes it along), and with it
//! the only place that knows the run's checkpoints. So the newest externally addressable
//! checkpoint (or savepoint) read from a RUNNING application's JobManager (when [`super::reads`]
//! says a newer one can exist, with its health figures, or for a last-state upgrade) is kept
//! here, in memory and in one small file per application under `state_dir/yarn-checkpoints/`
//! (a daemon restart keeps it). When the run ends and its JobManager no longer answers, it
//! restarts from that checkpoint.
//!
//! A kept checkpoint may have been subsumed since (Flink retains one by default): for a `file:`
//! location the newest `chk-N` with a `_metadata` in the same folder is taken instead (and none
//! when it is gone with nothing newer); other schemes cannot be listed from here, so the kept one
//! is used as it is.
//!
//! Each file names its job (the application's `jk-job-` tag): the files of a job's other
//! applications go when a new application of it runs (what the old run left is in the store's
//! savepoint history by then), and all of them when the job is removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use crate::engine::StatePoint;
use crate::engine::cluster::lock;

/// The folder under the state folder holding one file per application.
const FOLDER: &str = "yarn-checkpoints";

/// The kept checkpoints, by application id.
pub struct Kept {
    dir: PathBuf,
    points: Mutex<HashMap<String, StatePoint>>,
}

/// The `jk-job-` tag in a kept file.
fn file_job(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["job"].as_str().map(str::to_string)
}

impl Kept {
    /// Checkpoints kept under `state_dir`.
    pub fn new(state_dir: &Path) -> Kept {
        Kept {
            dir: state_dir.join(FOLDER),
            points: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, app: &str) -> Option<PathBuf> {
        let safe = !app.is_empty()
            && app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        safe.then(|| self.dir.join(format!("{app}.json")))
    }

    /// Keeps `point` as application `app`'s newest, unless an as new one is kept already; `job`
    /// is the application's `jk-job-` tag, when it has one.
    pub fn keep(&self, app: &str, job: Option<&str>, point: &StatePoint) {
        {
            let mut points = lock(&self.points);
            if let Some(old) = points.get(app)
                && (old == point || old.taken_ms > point.taken_ms)
            {
                return;
            }
            points.insert(app.to_string(), point.clone());
        }
        let Some(file) = self.file(app) else {
            return;
        };
        let body =
            json!({"location": point.location, "taken_ms": point.taken_ms, "job": job}).to_string();
        let tmp = file.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, body))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            tracing::warn!(app = %app, "cannot keep the newest checkpoint in {}: {e}", file.display());
        }
    }

    /// Whether application `app`'s kept checkpoint is a `file:` `…/chk-N`: [`Kept::newest`]
    /// then finds the newest completed one in its folder, so it need not be read again.
    pub fn followable(&self, app: &str) -> bool {
        lock(&self.points).get(app).is_some_and(|p| {
            let loc = p.location.trim_end_matches('/');
            local_path(loc).is_some_and(|path| {
                Path::new(path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(chk_number)
                    .is_some()
            })
        })
    }

    /// Deletes what is kept for the applications of job `job` (its `jk-job-` tag) but `except`:
    /// its run was replaced (`except` the new application) or the job removed (`None`).
    pub fn prune_job(&self, job: &str, except: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if Some(app) == except || file_job(&path).as_deref() != Some(job) {
                continue;
            }
            lock(&self.points).remove(app);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(app = %app, job = %job, "kept checkpoint pruned"),
                Err(e) => tracing::warn!(app = %app, "cannot prune {}: {e}", path.display()),
            }
        }
    }

    /// The newest checkpoint kept for application `app` (from memory, else its file), moved
    /// forward to the newest one in its folder when that can be listed; `None` for a `file:`
    /// one that is gone with nothing newer beside it.
    pub fn newest(&self, app: &str) -> Option<StatePoint> {
        let kept = lock(&self.points).get(app).cloned().or_else(|| {
            let text = std::fs::read_to_string(self.file(app)?).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(StatePoint {
                location: v["location"].as_str()?.to_string(),
                taken_ms: v["taken_ms"].as_i64(),
            })
        })?;
        match newest_in_folder(&kept) {
            Some(newer) => Some(newer),
            None if local_gone(&kept.location) => None,
            None => Some(kept),
        }
    }
}

/// Whether `location` is a `file:` checkpoint whose `_metadata` is not there.
fn local_gone(location: &str) -> bool {
    local_path(location.trim_end_matches('/'))
        .is_some_and(|p| !Path::new(p).join("_metadata").is_file())
}

/// The local path of a `file:` location (`file:/a`, `file:///a`).
fn local_path(location: &str) -> Option<&str> {
    let rest = location.strip_prefix("file:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    path.starts_with('/').then_some(path)
}

/// The number of a `chk-N` folder.
fn chk_number(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// For a `file:` checkpoint `…/chk-N`: the completed `chk-M` (M ≥ N, with a `_metadata`) with
/// the highest number in its folder, named as the kept one is, its time the metadata's.
fn newest_in_folder(kept: &StatePoint) -> Option<StatePoint> {
    let path = Path::new(local_path(kept.location.trim_end_matches('/'))?);
    let n = chk_number(path.file_name()?.to_str()?)?;
    let parent = path.parent()?;
    let (best, name) = std::fs::read_dir(parent)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let m = chk_number(&name)?;
            e.path().join("_metadata").is_file().then_some((m, name))
        })
        .max_by_key(|(m, _)| *m)?;
    if best <= n {
        return None;
    }
    let taken_ms = std::fs::metadata(parent.join(&name).join("_metadata"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok());
    let base = kept.location.trim_end_matches('/');
    let cut = base.rfind('/')?;
    Some(StatePoint {
        location: format!("{}/{name}", &base[..cut]),
        taken_ms: taken_ms.or(kept.taken_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(location: &str, taken_ms: i64) -> StatePoint {
        StatePoint {
            location: location.into(),
            taken_ms: Some(taken_ms),
        }
    }

    #[test]
    fn the_newest_is_kept_in_a_file_a_new_daemon_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let kept = Kept::new(tmp.path());
        kept.keep("application_1_0001", None, &point("hdfs:///ck/j/chk-4", 40));
        kept.keep("application_1_0001", None, &point("hdfs:///ck/j/chk-3", 30));
        assert_eq!(
            kept.newest("application_1_0001"),
            Some(point("hdfs:///ck/j/chk-4", 40)),
            "an older one never replaces a newer one"
        );
        let again = Kept::new(tmp.path());
        assert_eq!(
            again.newest("application_1_0001"),
            Some(point("hdfs:///ck/j/chk-4", 40))
        );
        assert_eq!(again.newest("application_1_0002"), None);
        assert_eq!(again.newest("../etc/passwd"), None);
    }

    #[test]
    fn a_file_checkpoint_moves_to_the_newest_completed_one_in_its_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let jid = tmp.path().join("ck/0123");
        for (n, complete) in [(7, true), (9, true), (10, false)] {
            let d = jid.join(format!("chk-{n}"));
            std::fs::create_dir_all(&d).unwrap();
            if complete {
                std::fs::write(d.join("_metadata"), b"m").unwrap();
            }
        }
        let kept = Kept::new(tmp.path());
        let location = format!("file:{}/chk-7", jid.display());
        kept.keep("application_1_0001", None, &point(&location, 70));
        assert!(kept.followable("application_1_0001"));
        let newest = kept.newest("application_1_0001").unwrap();
        assert_eq!(newest.location, format!("file:{}/chk-9", jid.display()));
        assert!(newest.taken_ms.unwrap() > 70);
        // Its folder gone (subsumed, nothing newer): nothing to start from.
        std::fs::remove_dir_all(&jid).unwrap();
        assert_eq!(kept.newest("application_1_0001"), None);
        assert_eq!(local_path("file:///a/b"), Some("/a/b"));
        assert_eq!(local_path("hdfs:///a/b"), None);
    }

    #[test]
    fn a_job_s_files_go_when_its_run_is_replaced_and_when_it_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let kept = Kept::new(tmp.path());
        let (a, b) = ("jk-job-00000000000000aa", "jk-job-00000000000000bb");
        kept.keep(
            "application_1_0001",
            Some(a),
            &point("hdfs:///ck/1/chk-1", 10),
        );
        kept.keep(
            "application_1_0002",
            Some(b),
            &point("hdfs:///ck/2/chk-1", 10),
        );
        kept.keep(
            "application_1_0003",
            Some(a),
            &point("hdfs:///ck/3/chk-1", 10),
        );
        let file = |app: &str| tmp.path().join(FOLDER).join(format!("{app}.json"));
        assert!(file("application_1_0001").is_file());
        // Job a's run replaced by application 3: application 1's file goes, 3's stays.
        kept.prune_job(a, Some("application_1_0003"));
        assert!(!file("application_1_0001").exists());
        assert_eq!(
            kept.newest("application_1_0001"),
            None,
            "gone from memory too"
        );
        assert!(file("application_1_0003").is_file());
        assert!(file("application_1_0002").is_file(), "another job's stays");
        // Job a removed (a new daemon, nothing in memory): every file of it goes.
        let again = Kept::new(tmp.path());
        again.prune_job(a, None);
        assert!(!file("application_1_0003").exists());
        assert_eq!(
            again.newest("application_1_0002"),
            Some(point("hdfs:///ck/2/chk-1", 10))
        );
        assert!(
            !kept.followable("application_1_0002"),
            "hdfs: cannot be listed here"
        );
    }
}
