//! Readers of the Flink REST answers the engine acts on: health metrics, checkpoint stats,
//! failure traces (of the exception history and the execution result) and error bodies, the job overview's states and task counts, a job's vertices
//! and the adaptive scheduler's resource requirements. Pure functions, tested on recorded
//! answers in the engine's tests.

use std::collections::HashMap;

use serde_json::Value;

use crate::engine::{ClusterJob, HealthFacts, StatePoint, Vertex};

/// At most this many lines of a Flink stack trace go into a reason.
pub const REASON_LINES: usize = 30;
/// At most this many characters of a Flink stack trace go into a reason.
pub const REASON_CHARS: usize = 4000;
/// At most this many characters of one line of a reason.
const LINE_CHARS: usize = 600;

/// The health figures in an answer of `GET /jobs/{id}/metrics?get=`[`HEALTH_METRICS`].
pub fn health_facts(body: &Value, started_ms: i64) -> HealthFacts {
    let metric = |id: &str| -> Option<i64> {
        body.as_array()?.iter().find(|m| m["id"] == id)?["value"]
            .as_str()?
            .parse::<f64>()
            .ok()
            .map(|v| v as i64)
    };
    let last = metric("lastCheckpointCompletedTimestamp").filter(|t| *t > 0);
    HealthFacts {
        restarts: metric("numRestarts").map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        last_checkpoint_ms: last,
        checkpoints: last.is_some() || metric("totalNumberOfCheckpoints").is_some_and(|n| n > 0),
        started_ms,
    }
}

/// The newest externally addressable completed checkpoint (or savepoint) in an answer of
/// `GET /jobs/{id}/metrics?get=lastCheckpointExternalPath,lastCheckpointCompletedTimestamp`.
pub fn checkpoint_metric(body: &Value) -> Option<StatePoint> {
    let metric = |id: &str| -> Option<&str> {
        body.as_array()?.iter().find(|m| m["id"] == id)?["value"].as_str()
    };
    let path = metric("lastCheckpointExternalPath")?;
    let addressable = !path.is_empty()
        && path != "n/a"
        && path != "<checkpoint-not-externally-addressable>"
        && path.contains(':');
    addressable.then(|| StatePoint {
        location: path.to_string(),
        taken_ms: metric("lastCheckpointCompletedTimestamp")
            .and_then(|t| t.parse::<f64>().ok())
            .map(|t| t as i64)
            .filter(|t| *t > 0),
    })
}

/// When the latest completed checkpoint (or savepoint) in an answer of
/// `GET /jobs/{id}/checkpoints` completed: its last acknowledgement, ms since the epoch.
pub fn completed_at(body: &Value) -> Option<i64> {
    body["latest"]["completed"]["latest_ack_timestamp"]
        .as_i64()
        .filter(|t| *t > 0)
}

/// The root-cause chain of a Flink stack trace: the exception's line (with the rest of its
/// message when it spans lines) and each `Caused by:` line with its message, without stack
/// frames, trimmed; capped at [`REASON_LINES`] lines and [`REASON_CHARS`] characters by leaving
/// out middle lines (the first exception and the root cause, at the end, are kept).
pub fn summarize_trace(trace: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    // True while reading an exception's message, before its first stack frame.
    let mut message = true;
    for line in trace.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("at ") || t.starts_with("...") || t.starts_with("Suppressed:") {
            message = false;
            continue;
        }
        if t.starts_with("Caused by:") {
            message = true;
        }
        if !message {
            continue;
        }
        let t = cap_line(t);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    cap_lines(out)
}

/// `line`, cut to [`LINE_CHARS`] characters.
fn cap_line(line: &str) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// `lines` joined, with middle lines left out (and counted) past [`REASON_LINES`] lines or
/// [`REASON_CHARS`] characters: the first line and the last ones stay.
pub fn cap_lines(lines: Vec<String>) -> String {
    let size = |ls: &[String]| ls.iter().map(|l| l.chars().count() + 1).sum::<usize>();
    if lines.len() <= REASON_LINES && size(&lines) <= REASON_CHARS {
        return lines.join("\n");
    }
    let Some((first, rest)) = lines.split_first() else {
        return String::new();
    };
    let mut budget = REASON_CHARS.saturating_sub(first.chars().count() + 40);
    let mut tail: Vec<&String> = Vec::new();
    for l in rest.iter().rev() {
        let n = l.chars().count() + 1;
        if tail.len() + 2 >= REASON_LINES || n > budget {
            break;
        }
        budget -= n;
        tail.push(l);
    }
    tail.reverse();
    let left_out = rest.len() - tail.len();
    let mut out = vec![first.clone()];
    if left_out > 0 {
        let s = if left_out == 1 { "" } else { "s" };
        out.push(format!("… {left_out} line{s} left out …"));
    }
    out.extend(tail.into_iter().cloned());
    out.join("\n")
}

/// The newest externally addressable completed checkpoint or savepoint in an answer of
/// `GET /jobs/{id}/checkpoints`, with when it completed.
pub fn newest_state_point(body: &Value) -> Option<StatePoint> {
    let latest = &body["latest"];
    ["completed", "savepoint"]
        .iter()
        .filter_map(|k| {
            let c = &latest[*k];
            let p = c["external_path"].as_str()?;
            let addressable = !p.is_empty() && p != "<checkpoint-not-externally-addressable>";
            let at = c["latest_ack_timestamp"].as_i64().filter(|t| *t > 0);
            addressable.then(|| StatePoint {
                location: p.to_string(),
                taken_ms: at,
            })
        })
        .max_by_key(|p| p.taken_ms.unwrap_or(0))
}

/// Whether an answer of `GET /jobs/{id}/checkpoints/config` says the job's checkpoints are
/// externalized and kept when it is cancelled.
pub fn retains_on_cancel(body: &Value) -> bool {
    let e = &body["externalization"];
    e["enabled"] == true && e["delete_on_cancellation"] == false
}

/// The stack trace of the failure cause in an answer of `GET /jobs/{id}/execution-result`: set
/// once the job has ended (`status.id` is `COMPLETED`) and only when it failed.
pub fn execution_failure(body: &Value) -> Option<&str> {
    if body["status"]["id"] != "COMPLETED" {
        return None;
    }
    body["job-execution-result"]["failure-cause"]["stack-trace"]
        .as_str()
        .filter(|t| !t.trim().is_empty())
}

/// The `errors` of a Flink error answer, summarized; the body itself when it has none.
pub fn error_text(body: &Value, raw: &str) -> String {
    match body.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .filter_map(Value::as_str)
            .map(summarize_trace)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => raw.chars().take(500).collect(),
    }
}

/// The exceptions a Flink cluster answers a submit with when the job id is taken: 1.x
/// (`DuplicateJobSubmissionException`) and 2.x (`DuplicateApplicationSubmissionException`
/// for `POST /jars/{id}/run`), while the job runs and after it ended.
const DUPLICATE_SUBMISSION: [&str; 2] = [
    "DuplicateJobSubmissionException",
    "DuplicateApplicationSubmissionException",
];

/// True when an error answer to a submit says a job with the submitted id exists (running or
/// ended): the run was submitted before.
pub fn duplicate_submission(body: &Value) -> bool {
    let text = |t: &str| DUPLICATE_SUBMISSION.iter().any(|d| t.contains(d));
    match body.get("errors").and_then(Value::as_array) {
        Some(errors) => errors.iter().filter_map(Value::as_str).any(text),
        None => body.as_str().is_some_and(text),
    }
}

/// The jobs of a `GET /jobs/overview` answer, in any state.
pub fn overview_jobs(body: &Value) -> Vec<ClusterJob> {
    body["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| {
            Some(ClusterJob {
                engine_id: j["jid"].as_str()?.to_string(),
                name: j["name"].as_str().unwrap_or_default().to_string(),
                state: j["state"].as_str()?.to_string(),
                since_ms: j["start-time"].as_i64().filter(|t| *t > 0),
            })
        })
        .collect()
}

/// Whether every task of a job's `GET /jobs/overview` entry runs or has finished.
pub fn tasks_up(job: &Value) -> bool {
    let n = |k: &str| job["tasks"][k].as_u64().unwrap_or(0);
    n("total") > 0 && n("running") + n("finished") == n("total")
}

/// The task count (`tasks.total`) of each RUNNING job of a `GET /jobs/overview` answer: the sum
/// of its vertices' parallelism.
pub fn overview_tasks(body: &Value) -> HashMap<String, u64> {
    body["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["state"] == "RUNNING")
        .filter_map(|j| {
            Some((
                j["jid"].as_str()?.to_string(),
                j["tasks"]["total"].as_u64()?,
            ))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The vertices of a `GET /jobs/{id}` answer, with their parallelism.
pub fn job_vertices(body: &Value) -> Vec<Vertex> {
    let count = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    body["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some(Vertex {
                id: v["id"].as_str()?.to_string(),
                name: v["name"].as_str().unwrap_or_default().to_string(),
                parallelism: count(&v["parallelism"]),
                max_parallelism: count(&v["maxParallelism"]),
            })
        })
        .collect()
}

/// The upper bound of each vertex's parallelism in a `GET /jobs/{id}/resource-requirements`
/// answer (the adaptive scheduler's; other schedulers answer an error).
pub fn requested_parallelism(body: &Value) -> HashMap<String, u32> {
    body.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, r)| {
            let upper = r["parallelism"]["upperBound"].as_u64()?;
            Some((id.clone(), u32::try_from(upper).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_state_point_and_the_retention_are_read_from_the_checkpoint_answers() {
        // Shapes of Flink 2.3.0 and 1.20.3, shortened.
        let body = json!({"latest": {
            "completed": {"id": 42, "external_path": "file:/cp/j/chk-42", "latest_ack_timestamp": 2000},
            "savepoint": {"id": 40, "external_path": "file:/sp/savepoint-1", "latest_ack_timestamp": 1000},
            "restored": null
        }});
        assert_eq!(
            newest_state_point(&body),
            Some(StatePoint {
                location: "file:/cp/j/chk-42".into(),
                taken_ms: Some(2000)
            })
        );
        let body = json!({"latest": {
            "completed": {"external_path": "<checkpoint-not-externally-addressable>", "latest_ack_timestamp": 3000},
            "savepoint": {"external_path": "file:/sp/savepoint-1", "latest_ack_timestamp": 1000}
        }});
        assert_eq!(
            newest_state_point(&body).map(|p| p.location),
            Some("file:/sp/savepoint-1".into())
        );
        assert_eq!(
            newest_state_point(&json!({"latest": {"completed": null}})),
            None
        );
        let kept = json!({"mode": "exactly_once", "externalization": {"enabled": true, "delete_on_cancellation": false}});
        assert!(retains_on_cancel(&kept));
        let deleted = json!({"externalization": {"enabled": true, "delete_on_cancellation": true}});
        assert!(!retains_on_cancel(&deleted));
        assert!(!retains_on_cancel(&json!({"errors": ["not found"]})));
    }

    #[test]
    fn the_failure_cause_of_an_ended_job_is_read_from_its_execution_result() {
        // Recorded from Flink 2.3.0 (1.20.3 answers the same fields), trace shortened.
        let failed = json!({
            "status": {"id": "COMPLETED"},
            "job-execution-result": {
                "id": "651dd14956bffd5fe97e29d4ba3a4048",
                "application-status": "FAILED",
                "accumulator-results": {},
                "net-runtime": 2066,
                "failure-cause": {
                    "class": "org.apache.flink.runtime.JobException",
                    "stack-trace": "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailure(ExecutionFailureHandler.java:213)\nCaused by: org.apache.flink.util.StateMigrationException: The new key serializer must be compatible with the previous key serializer.\n\tat x.y(Z.java:1)\n",
                    "serialized-throwable": "rO0ABXNy"
                }
            }
        });
        assert_eq!(
            summarize_trace(execution_failure(&failed).unwrap()),
            "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n\
             Caused by: org.apache.flink.util.StateMigrationException: The new key serializer must be compatible with the previous key serializer."
        );
        let finished = json!({
            "status": {"id": "COMPLETED"},
            "job-execution-result": {"id": "31f5", "application-status": "SUCCEEDED", "accumulator-results": {}, "net-runtime": 1930}
        });
        assert_eq!(execution_failure(&finished), None);
        assert_eq!(
            execution_failure(&json!({"status": {"id": "IN_PROGRESS"}})),
            None
        );
        assert_eq!(execution_failure(&json!({"errors": ["not found"]})), None);
    }
}
