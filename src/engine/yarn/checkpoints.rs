//! The newest completed checkpoint of each application-mode run, kept while it runs: an
//! application's JobManager ends with its application (its AM dying takes it along), and with it
//! the only place that knows the run's checkpoints. So each status sweep reads every RUNNING
//! application's newest externally addressable checkpoint (or savepoint) from its JobManager
//! (the same `GET /jobs/{id}/metrics` answer that carries its health figures, so no request is
//! added for jobs with health rules) and keeps it here, in memory and in one small file per
//! application under `state_dir/yarn-checkpoints/` (a daemon restart keeps it). When the run
//! ends and its JobManager no longer answers, it restarts from that checkpoint.
//!
//! A checkpoint kept a sweep ago may have been subsumed since (Flink retains one by default):
//! for a `file:` location the newest `chk-N` with a `_metadata` in the same folder is taken
//! instead (and none when it is gone with nothing newer); other schemes cannot be listed from
//! here, so the kept one is used as it is.

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

    /// Keeps `point` as application `app`'s newest, unless an as new one is kept already.
    pub fn keep(&self, app: &str, point: &StatePoint) {
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
        let body = json!({"location": point.location, "taken_ms": point.taken_ms}).to_string();
        let tmp = file.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, body))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            tracing::warn!(app = %app, "cannot keep the newest checkpoint in {}: {e}", file.display());
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
        kept.keep("application_1_0001", &point("hdfs:///ck/j/chk-4", 40));
        kept.keep("application_1_0001", &point("hdfs:///ck/j/chk-3", 30));
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
        kept.keep("application_1_0001", &point(&location, 70));
        let newest = kept.newest("application_1_0001").unwrap();
        assert_eq!(newest.location, format!("file:{}/chk-9", jid.display()));
        assert!(newest.taken_ms.unwrap() > 70);
        // Its folder gone (subsumed, nothing newer): nothing to start from.
        std::fs::remove_dir_all(&jid).unwrap();
        assert_eq!(kept.newest("application_1_0001"), None);
        assert_eq!(local_path("file:///a/b"), Some("/a/b"));
        assert_eq!(local_path("hdfs:///a/b"), None);
    }
}
