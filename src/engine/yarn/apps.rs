//! What the ResourceManager says about applications (`GET /ws/v1/cluster/apps`, `…/apps/{id}`,
//! Hadoop's `ResourceManagerRest`), read into [`App`], and what each YARN state means for a
//! jobkeeper run (pure).

use serde_json::Value;

use crate::engine::{ClusterJob, RunStatus};

/// The tag every application jobkeeper submits carries.
pub const TAG: &str = "jobkeeper";
/// Prefix of the tag naming the jobkeeper job (16 hex digits of its name's sha256).
pub const JOB_TAG: &str = "jk-job-";
/// Prefix of the tag naming the run (its 32-hex-digit token, also its Flink job id).
pub const RUN_TAG: &str = "jk-run-";
/// The YARN states of an application that is not over.
pub const LIVE_STATES: &str = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING";

/// One application as the RM reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    /// `application_1700000000000_0001`.
    pub id: String,
    /// `yarn.application.name`.
    pub name: String,
    /// NEW, NEW_SAVING, SUBMITTED, ACCEPTED, RUNNING, FINISHED, FAILED, KILLED.
    pub state: String,
    /// UNDEFINED while running; SUCCEEDED, FAILED or KILLED once over.
    pub final_status: String,
    /// What YARN or the AM said about it.
    pub diagnostics: String,
    /// Its tags (lowercased by YARN).
    pub tags: Vec<String>,
    /// `host:port` the AM registered: the Flink JobManager's REST address.
    pub am_rpc: Option<String>,
    /// When it started (ms since the epoch).
    pub started_ms: Option<i64>,
    /// `applicationType` (`Apache Flink`).
    pub app_type: String,
    /// The queue it runs in.
    pub queue: String,
}

impl App {
    /// Reads one `app` object.
    pub fn from_json(v: &Value) -> Option<App> {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let id = v["id"].as_str()?.to_string();
        let tags = v["applicationTags"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let am_rpc = v["amRPCAddress"]
            .as_str()
            .filter(|a| !a.is_empty() && *a != "N/A" && !a.ends_with(":-1"))
            .map(str::to_string);
        Some(App {
            id,
            name: s("name"),
            state: s("state"),
            final_status: s("finalStatus"),
            diagnostics: s("diagnostics"),
            tags,
            am_rpc,
            started_ms: v["startedTime"].as_i64().filter(|t| *t > 0),
            app_type: s("applicationType"),
            queue: s("queue"),
        })
    }

    /// The tag naming its jobkeeper job ([`job_tag`]), when it has one.
    pub fn job_tag(&self) -> Option<&str> {
        self.tags
            .iter()
            .map(String::as_str)
            .find(|t| t.starts_with(JOB_TAG))
    }

    /// The run token of a jobkeeper submission (its `jk-run-` tag), also its Flink job id.
    pub fn run_token(&self) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(RUN_TAG))
    }

    /// The engine id of this application's run: its application id. The Flink job id is its
    /// run token when jobkeeper submitted it, else found on its JobManager.
    pub fn engine_id(&self) -> String {
        self.id.clone()
    }

    /// Whether the application is not over yet.
    pub fn is_live(&self) -> bool {
        LIVE_STATES.split(',').any(|s| s == self.state)
    }

    /// The JobManager's REST URL (`http://host:port`), once the AM registered.
    pub fn jobmanager(&self) -> Option<String> {
        self.am_rpc.as_ref().map(|a| format!("http://{a}"))
    }

    /// The application as a live cluster job.
    pub fn cluster_job(&self) -> ClusterJob {
        ClusterJob {
            engine_id: self.engine_id(),
            name: self.name.clone(),
            state: self.state.clone(),
            since_ms: self.started_ms,
        }
    }

    /// What the application's state means for the run it carries.
    pub fn run_status(&self) -> RunStatus {
        let why = |what: &str| {
            if self.diagnostics.trim().is_empty() {
                format!("yarn application {} {what}", self.id)
            } else {
                format!(
                    "yarn application {} {what}: {}",
                    self.id,
                    self.diagnostics.trim()
                )
            }
        };
        match (self.state.as_str(), self.final_status.as_str()) {
            (_, _) if self.is_live() => RunStatus::Running,
            ("FINISHED", "SUCCEEDED") => RunStatus::Succeeded,
            ("FINISHED", "KILLED") => {
                RunStatus::CancelledOutside(why("finished KILLED (its Flink job was cancelled)"))
            }
            ("FINISHED", _) => RunStatus::Failed(why("finished FAILED")),
            ("FAILED", _) => {
                RunStatus::Failed(why("FAILED (its ApplicationMaster attempts are used up)"))
            }
            ("KILLED", _) => RunStatus::CancelledOutside(why("was KILLED outside jobkeeper")),
            (s, _) => RunStatus::Failed(why(&format!("is {s}"))),
        }
    }
}

/// The applications of a `GET /ws/v1/cluster/apps` answer (`{"apps":null}` is none); an
/// answer of another shape is an error naming what came back.
pub fn parse_list(body: &Value) -> Result<Vec<App>, String> {
    match &body["apps"] {
        Value::Null if body.get("apps").is_some() => Ok(Vec::new()),
        Value::Object(o) => Ok(o
            .get("app")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(App::from_json)
            .collect()),
        _ => Err(format!("not an apps list: {}", short(body))),
    }
}

/// The application of a `GET /ws/v1/cluster/apps/{id}` answer.
pub fn parse_one(body: &Value) -> Result<App, String> {
    App::from_json(&body["app"]).ok_or_else(|| format!("not an app: {}", short(body)))
}

/// The first 200 characters of an answer, for messages.
pub fn short(body: &Value) -> String {
    let text = match body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    text.chars().take(200).collect()
}

/// The tag naming `job`: [`JOB_TAG`] and 16 hex digits of its name's sha256.
pub fn job_tag(job: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "{JOB_TAG}{}",
        hex::encode(&Sha256::digest(job.as_bytes())[..8])
    )
}

/// The tags of run `token` of `job`: jobkeeper's own, the job's and the run's (lowercase, no
/// commas, each at most 100 characters, as YARN keeps them).
pub fn tags(job: &str, token: &str) -> Vec<String> {
    vec![
        TAG.to_string(),
        job_tag(job),
        format!("{RUN_TAG}{}", token.to_ascii_lowercase()),
    ]
}

/// Splits an engine id into the application id and the Flink job id, when it has one: a
/// submit that got no answer is recorded as `/TOKEN` (its application not known yet).
pub fn split_id(engine_id: &str) -> (&str, Option<&str>) {
    match engine_id.split_once('/') {
        Some((app, jid)) if !jid.is_empty() => (app, Some(jid)),
        Some((app, _)) => (app, None),
        None => (engine_id, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `app` example of Hadoop's ResourceManagerRest documentation, trimmed.
    fn doc_app(state: &str, final_status: &str) -> Value {
        json!({"id": "application_1326821518301_0005", "user": "user1", "name": "job",
            "queue": "a1", "state": state, "finalStatus": final_status, "progress": 100,
            "trackingUI": "History", "diagnostics": "", "clusterId": 1326821518301_i64,
            "applicationType": "Apache Flink",
            "applicationTags": "jobkeeper,jk-job-0011223344556677,jk-run-0123456789abcdef0123456789abcdef",
            "startedTime": 1326824544552_i64, "finishedTime": 0, "elapsedTime": 446748,
            "amRPCAddress": "host.domain.com:8081"})
    }

    #[test]
    fn a_list_is_read_and_an_empty_one_is_null() {
        let apps =
            parse_list(&json!({"apps": {"app": [doc_app("RUNNING", "UNDEFINED")]}})).unwrap();
        assert_eq!(apps.len(), 1);
        let a = &apps[0];
        assert_eq!(a.run_token(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(a.engine_id(), "application_1326821518301_0005");
        assert_eq!(
            a.jobmanager().as_deref(),
            Some("http://host.domain.com:8081")
        );
        assert_eq!(a.run_status(), RunStatus::Running);
        assert_eq!(parse_list(&json!({"apps": null})).unwrap(), Vec::new());
        let e = parse_list(&Value::String("<html><body>Login</body></html>".into())).unwrap_err();
        assert!(e.contains("<html>"), "{e}");
    }

    #[test]
    fn each_end_state_means_what_the_am_reported() {
        let st = |s: &str, f: &str| App::from_json(&doc_app(s, f)).unwrap().run_status();
        assert_eq!(st("ACCEPTED", "UNDEFINED"), RunStatus::Running);
        assert_eq!(st("FINISHED", "SUCCEEDED"), RunStatus::Succeeded);
        assert!(
            matches!(st("FINISHED", "FAILED"), RunStatus::Failed(r) if r.contains("finished FAILED"))
        );
        assert!(matches!(
            st("FINISHED", "KILLED"),
            RunStatus::CancelledOutside(_)
        ));
        assert!(matches!(st("FAILED", "FAILED"), RunStatus::Failed(r) if r.contains("attempts")));
        assert!(matches!(
            st("KILLED", "KILLED"),
            RunStatus::CancelledOutside(_)
        ));
    }

    #[test]
    fn tags_fit_yarn_s_limits_and_ids_split() {
        let t = tags("Team-A/Clicks", "ABCDEF0123456789ABCDEF0123456789");
        assert_eq!(t[0], "jobkeeper");
        assert!(
            t.iter()
                .all(|t| t.len() <= 100 && !t.contains(',') && *t == t.to_lowercase())
        );
        assert_eq!(t[2], "jk-run-abcdef0123456789abcdef0123456789");
        assert_eq!(
            split_id("application_1_2/ab"),
            ("application_1_2", Some("ab"))
        );
        assert_eq!(split_id("application_1_2"), ("application_1_2", None));
    }
}
