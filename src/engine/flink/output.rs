//! What a Flink cluster keeps of a run's output, for `jobkeeper logs`: the job's state, the
//! root cause of its newest failure and its exception history (`GET /jobs/{id}`, `GET
//! /jobs/{id}/exceptions`). Flink keeps an ended job for `jobstore.expiration-time` (1 h by
//! default); after that, the output says the cluster no longer has it.

use std::fmt::Write as _;

use reqwest::StatusCode;
use serde_json::Value;

use super::FlinkEngine;
use crate::engine::{RunHandle, RunOutput};

/// How many entries of the exception history are asked for.
const HISTORY_ASKED: usize = 20;

impl FlinkEngine {
    /// [`crate::engine::Engine::run_output`] of a Flink run.
    pub(super) async fn output(&self, handle: &RunHandle, lines: usize) -> RunOutput {
        let jid = &handle.engine_id;
        let job = match self
            .call(self.http.get(self.url(&format!("/jobs/{jid}"))))
            .await
        {
            Ok((StatusCode::NOT_FOUND, _)) => {
                return RunOutput::Gone(format!(
                    "flink cluster {} no longer has job {jid}: it forgets a job \
                     `jobstore.expiration-time` after it ends (1 h by default), and all of them \
                     when its JobManager restarts without high availability; the job's \
                     exceptions went with it (the daemon's events and the run's reason keep \
                     its failure)",
                    self.base
                ));
            }
            Ok((s, body)) if s.is_success() => body,
            Ok((s, body)) => {
                return RunOutput::Unavailable(format!(
                    "flink {}: GET /jobs/{jid} answered {s}: {body}",
                    self.base
                ));
            }
            Err(e) => return RunOutput::Unavailable(e.to_string()),
        };
        let path = format!("/jobs/{jid}/exceptions?maxExceptions={HISTORY_ASKED}");
        let exceptions = match self.get(&path).await {
            Ok(body) => body,
            Err(e) => return RunOutput::Unavailable(e.to_string()),
        };
        RunOutput::Kept {
            source: format!("flink job {jid} on {}", self.base),
            text: render(&job, &exceptions, lines),
        }
    }
}

/// The last `Caused by:` of a stack trace (the root cause), else its first line.
pub fn root_cause(trace: &str) -> &str {
    trace
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Caused by: "))
        .or_else(|| trace.lines().next())
        .unwrap_or("")
        .trim()
}

/// A job's state, root cause and exception history as `jobkeeper logs` prints them, newest
/// first, at most `lines` lines (the state and root cause always; a cut says so).
pub fn render(job: &Value, exceptions: &Value, lines: usize) -> String {
    let mut head = String::new();
    let state = job["state"].as_str().unwrap_or("UNKNOWN");
    let _ = writeln!(head, "state: {state}");
    let empty = Vec::new();
    let entries = exceptions["exceptionHistory"]["entries"]
        .as_array()
        .unwrap_or(&empty);
    // Before 2.0 a job could have a root exception outside the history.
    let legacy = exceptions["root-exception"]
        .as_str()
        .filter(|_| entries.is_empty());
    let newest = entries
        .first()
        .and_then(|e| e["stacktrace"].as_str())
        .or(legacy);
    match newest {
        Some(trace) => {
            let _ = writeln!(head, "root cause: {}", root_cause(trace));
        }
        None => head.push_str("root cause: none (no exception in the job's history)\n"),
    }
    let mut body = String::new();
    if !entries.is_empty() {
        let truncated = exceptions["exceptionHistory"]["truncated"].as_bool() == Some(true);
        let _ = writeln!(
            body,
            "exception history, newest first ({}{}):",
            entries.len(),
            if truncated {
                ", older ones left out by Flink"
            } else {
                ""
            }
        );
        for e in entries {
            let when = e["timestamp"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(
                    || "-".to_string(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            let mut at = String::new();
            if let Some(task) = e["taskName"].as_str() {
                let _ = write!(at, " in {task}");
            }
            if let Some(place) = e["endpoint"].as_str().or_else(|| e["location"].as_str()) {
                let _ = write!(at, " on {place}");
            }
            let _ = writeln!(body, "--- {when}{at}");
            let trace = e["stacktrace"]
                .as_str()
                .or_else(|| e["exceptionName"].as_str())
                .unwrap_or("");
            body.push_str(trace.trim_end());
            body.push('\n');
        }
    } else if let Some(trace) = legacy {
        body.push_str("root exception:\n");
        body.push_str(trace.trim_end());
        body.push('\n');
    }
    let room = lines.saturating_sub(head.lines().count());
    let total = body.lines().count();
    if total > room {
        let keep = room.saturating_sub(1);
        let mut cut: String = body.lines().take(keep).map(|l| format!("{l}\n")).collect();
        let _ = writeln!(
            cut,
            "… {} more line(s) of the exception history left out (ask for more with --tail)",
            total - keep
        );
        body = cut;
    }
    head + &body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_root_cause_is_the_last_caused_by() {
        let trace = "org.apache.flink.runtime.JobException: Recovery is suppressed\n\
                     \tat a.B(B.java:1)\n\
                     Caused by: java.lang.RuntimeException: wrapper\n\
                     Caused by: java.lang.IllegalStateException: failing on purpose\n\
                     \tat example.Counter.map(Counter.java:9)\n";
        assert_eq!(
            root_cause(trace),
            "java.lang.IllegalStateException: failing on purpose"
        );
        assert_eq!(
            root_cause("java.io.IOException: x\n\tat y"),
            "java.io.IOException: x"
        );
    }

    #[test]
    fn the_history_is_newest_first_and_cut_to_the_lines_asked_for() {
        let job = json!({"state": "FAILED"});
        let exc = json!({"exceptionHistory": {"truncated": false, "entries": [
            {"exceptionName": "E2", "stacktrace": "E2: two\nCaused by: R: root\n\tat x", "timestamp": 2000,
             "taskName": "Map (1/1)", "endpoint": "localhost:1234"},
            {"exceptionName": "E1", "stacktrace": "E1: one\n\tat y", "timestamp": 1000},
        ]}});
        let text = render(&job, &exc, 100);
        assert_eq!(
            text,
            "state: FAILED\nroot cause: R: root\nexception history, newest first (2):\n\
             --- 1970-01-01T00:00:02.000Z in Map (1/1) on localhost:1234\n\
             E2: two\nCaused by: R: root\n\tat x\n--- 1970-01-01T00:00:01.000Z\nE1: one\n\tat y\n"
        );
        let cut = render(&job, &exc, 5);
        assert_eq!(cut.lines().count(), 5, "{cut}");
        assert!(
            cut.starts_with("state: FAILED\nroot cause: R: root\n"),
            "{cut}"
        );
        assert!(
            cut.ends_with(
                "… 6 more line(s) of the exception history left out (ask for more with --tail)\n"
            ),
            "{cut}"
        );
        let none = render(
            &json!({"state": "RUNNING"}),
            &json!({"exceptionHistory": {"entries": []}}),
            10,
        );
        assert_eq!(
            none,
            "state: RUNNING\nroot cause: none (no exception in the job's history)\n"
        );
    }
}
