//! What the cluster engines ([`super::flink`], [`super::spark`]) share: the token that names a
//! run on a cluster, the jar a run needs, how a failed request is told, and the note a submit
//! leaves in the run's log.

use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::{EngineError, SubmitRequest};

/// A token unique to run `run_id` of `job` of the daemon whose state folder is `salt`: 32 hex
/// digits (flink: the job id; spark: the `spark.jobkeeper.run` property).
pub fn run_token(salt: &str, job: &str, run_id: i64) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(job.as_bytes());
    h.update([0]);
    h.update(run_id.to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Checks that the run has a jar to submit (`engine` names the engine in the message).
pub fn require_jar(engine: &str, req: &SubmitRequest) -> Result<(), EngineError> {
    match &req.artifact {
        Some(a) if a.is_file() => Ok(()),
        Some(a) => Err(EngineError::Refused(format!(
            "{engine} runs a jar: the artifact {} is not a file (set `project.artifact` to the jar)",
            a.display()
        ))),
        None => Err(EngineError::Refused(format!(
            "{engine} runs a jar: the job needs a `project` whose build makes one"
        ))),
    }
}

/// A request to `what` (`flink http://...`) that got no answer: the cluster is unreachable.
pub fn unreachable(what: &str, e: &reqwest::Error) -> EngineError {
    let how = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    EngineError::Unreachable(format!("{what}: {how} ({e})"))
}

/// Locks a mutex, taking it over from a thread that panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends a note to a run's log (where it was submitted, or why it was refused).
pub async fn write_log(path: &Path, note: &str) {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        // tokio's file hands the bytes to a blocking task: flushed, they are in the file when
        // this returns (a reader right after would miss them otherwise).
        let _ = f.write_all(note.as_bytes()).await;
        let _ = f.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(artifact: Option<std::path::PathBuf>) -> SubmitRequest {
        SubmitRequest {
            job: "j".into(),
            run_id: 1,
            params: Default::default(),
            artifact,
            checkout: None,
            log_path: "/nonexistent/1.log".into(),
            digest: None,
            restore: None,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn a_run_needs_a_jar_file() {
        let tmp = tempfile::tempdir().unwrap();
        let jar = tmp.path().join("a.jar");
        std::fs::write(&jar, b"PK").unwrap();
        assert!(require_jar("spark", &req(Some(jar))).is_ok());
        let e = require_jar("spark", &req(Some(tmp.path().to_path_buf()))).unwrap_err();
        assert!(e.to_string().contains("is not a file"), "{e}");
        let e = require_jar("flink", &req(None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused: flink runs a jar: the job needs a `project` whose build makes one"
        );
    }
}
