//! Savepoints a Flink job keeps running through, and disposing of savepoints: one
//! `POST /jobs/{id}/savepoints` (`cancel-job: false`) polled at `GET /jobs/{id}/savepoints/{r}`,
//! and one `POST /savepoint-disposal` polled at `GET /savepoint-disposal/{r}`. Same fields on
//! Flink 1.19, 1.20 and 2.x.

use std::time::Duration;

use serde_json::{Value, json};

use super::{FlinkEngine, POLL, SAVEPOINT_TIMEOUT, error_text, summarize_trace};
use crate::engine::{EngineError, StatePoint};

/// How long a disposal may take.
pub const DISPOSAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The body of `POST /jobs/{id}/savepoints` for a savepoint the job keeps running through.
pub fn trigger_body(target_directory: Option<&str>) -> Value {
    let mut body = json!({"cancel-job": false, "formatType": super::version::SAVEPOINT_FORMAT});
    if let Some(dir) = target_directory {
        body["target-directory"] = json!(dir);
    }
    body
}

/// What an asynchronous operation's status answer says: still going, done with a value (the
/// savepoint's location), done, or failed with the cause's summary.
#[derive(Debug, PartialEq, Eq)]
pub enum Operation {
    /// `IN_PROGRESS`.
    Going,
    /// `COMPLETED` with nothing failing; the location when there is one.
    Done(Option<String>),
    /// `COMPLETED` with a failure cause.
    Failed(String),
}

/// Reads a `GET .../savepoints/{r}` or `GET /savepoint-disposal/{r}` answer.
pub fn operation(body: &Value) -> Operation {
    if body["status"]["id"] != "COMPLETED" {
        return Operation::Going;
    }
    let op = &body["operation"];
    if let Some(cause) = op.get("failure-cause").filter(|c| !c.is_null()) {
        let text = cause["stack-trace"]
            .as_str()
            .map(summarize_trace)
            .unwrap_or_else(|| cause.to_string());
        return Operation::Failed(text);
    }
    Operation::Done(op["location"].as_str().map(str::to_string))
}

impl FlinkEngine {
    /// Takes a savepoint of live job `jid`, which keeps running; its location.
    pub(super) async fn take_savepoint(&self, jid: &str) -> Result<StatePoint, EngineError> {
        self.wait_tasks_running(jid, super::TASKS_WAIT).await?;
        let post = self
            .http
            .post(self.url(&format!("/jobs/{jid}/savepoints")))
            .json(&trigger_body(self.savepoint_dir.as_deref()));
        let (status, answer) = self.call(post).await?;
        let Some(request) = answer["request-id"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(EngineError::Other(format!(
                "flink refused a savepoint of job {jid} ({status}): {}",
                error_text(&answer, &answer.to_string())
            )));
        };
        let path = format!("/jobs/{jid}/savepoints/{request}");
        match self.wait_operation(&path, SAVEPOINT_TIMEOUT).await? {
            Operation::Done(Some(location)) => Ok(StatePoint {
                location,
                taken_ms: Some(chrono::Utc::now().timestamp_millis()),
            }),
            Operation::Done(None) => Err(EngineError::Other(format!(
                "flink took a savepoint of job {jid} but named no location"
            ))),
            Operation::Failed(cause) => Err(EngineError::Other(format!(
                "savepoint of flink job {jid} failed: {cause}"
            ))),
            Operation::Going => Err(EngineError::Other(format!(
                "savepoint of flink job {jid} not done after {}",
                humantime::format_duration(SAVEPOINT_TIMEOUT)
            ))),
        }
    }

    /// Disposes of the savepoint at `location` (Flink deletes its metadata and state files).
    pub(super) async fn dispose(&self, location: &str) -> Result<(), EngineError> {
        let post = self
            .http
            .post(self.url("/savepoint-disposal"))
            .json(&json!({"savepoint-path": location}));
        let (status, answer) = self.call(post).await?;
        let Some(request) = answer["request-id"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(EngineError::Other(format!(
                "flink refused to dispose of savepoint {location} ({status}): {}",
                error_text(&answer, &answer.to_string())
            )));
        };
        let path = format!("/savepoint-disposal/{request}");
        match self.wait_operation(&path, DISPOSAL_TIMEOUT).await? {
            Operation::Done(_) => Ok(()),
            Operation::Failed(cause) => Err(EngineError::Other(format!(
                "flink could not dispose of savepoint {location}: {cause}"
            ))),
            Operation::Going => Err(EngineError::Other(format!(
                "disposal of savepoint {location} not done after {}",
                humantime::format_duration(DISPOSAL_TIMEOUT)
            ))),
        }
    }

    /// Polls an asynchronous operation's status at `path` until it completes, at most `limit`.
    async fn wait_operation(&self, path: &str, limit: Duration) -> Result<Operation, EngineError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let op = operation(&self.get(path).await?);
            if op != Operation::Going || tokio::time::Instant::now() >= until {
                return Ok(op);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_answers_are_read_as_going_done_or_failed() {
        assert_eq!(
            operation(&json!({"status": {"id": "IN_PROGRESS"}})),
            Operation::Going
        );
        assert_eq!(
            operation(&json!({"status": {"id": "COMPLETED"},
                "operation": {"location": "file:/sp/savepoint-1"}})),
            Operation::Done(Some("file:/sp/savepoint-1".into()))
        );
        assert_eq!(
            operation(&json!({"status": {"id": "COMPLETED"}, "operation": {}})),
            Operation::Done(None)
        );
        let failed = operation(&json!({"status": {"id": "COMPLETED"},
            "operation": {"failure-cause": {"class": "x",
                "stack-trace": "java.io.IOException: nope\n\tat a.b(C.java:1)"}}}));
        assert_eq!(
            failed,
            Operation::Failed("java.io.IOException: nope".into())
        );
        assert_eq!(
            trigger_body(Some("file:/sp")),
            json!({"cancel-job": false, "formatType": "CANONICAL", "target-directory": "file:/sp"})
        );
    }
}
