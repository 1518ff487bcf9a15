//! How a Flink job submitted by jobkeeper names itself to the cluster, so that anyone reading
//! the cluster (an operator, `jobkeeper import`, another jobkeeper) can tell jobkeeper's jobs
//! from others.
//!
//! Every submission carries, in its job configuration:
//! - `pipeline.name` = the jobkeeper job, unless the job file's `params.conf` sets it (a program
//!   that names itself in `execute("…")` keeps its own name);
//! - the global job parameters `jobkeeper.job` = the job and `jobkeeper.run` = the store's run
//!   id, added to any the file's `params.conf` sets. Flink shows them in `GET /jobs/{id}/config`
//!   (`execution-config.user-config`). A program that replaces its global job parameters
//!   (`setGlobalJobParameters`) drops them; the deterministic job id still identifies the run
//!   to the daemon that submitted it.

use serde_json::{Map, Value};

/// Flink's job name option.
pub const NAME_KEY: &str = "pipeline.name";
/// Flink's global job parameters option (`k1:v1,k2:v2`).
pub const PARAMS_KEY: &str = "pipeline.global-job-parameters";
/// The global job parameter naming the jobkeeper job.
pub const JOB_KEY: &str = "jobkeeper.job";
/// The global job parameter naming the jobkeeper run.
pub const RUN_KEY: &str = "jobkeeper.run";

/// Adds the job's identity to the `flinkConfiguration` of a submission.
pub fn stamp(conf: &mut Map<String, Value>, job: &str, run_id: i64) {
    conf.entry(NAME_KEY)
        .or_insert_with(|| Value::String(job.to_string()));
    // Job names are `[a-z0-9._/-]`, run ids digits: neither needs quoting in Flink's map syntax.
    let ours = format!("{JOB_KEY}:{job},{RUN_KEY}:{run_id}");
    let merged = match conf.get(PARAMS_KEY).and_then(Value::as_str) {
        Some(theirs) if !theirs.trim().is_empty() => format!("{},{ours}", theirs.trim()),
        _ => ours,
    };
    conf.insert(PARAMS_KEY.into(), Value::String(merged));
}

/// The jobkeeper job and run named by a job's `execution-config.user-config`, when it has them.
pub fn read(user_config: &Map<String, Value>) -> Option<(String, String)> {
    let job = user_config.get(JOB_KEY)?.as_str()?.to_string();
    let run = match user_config.get(RUN_KEY) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    Some((job, run))
}

/// True for a global job parameter jobkeeper set itself (not one of the program's).
pub fn is_ours(key: &str) -> bool {
    key == JOB_KEY || key == RUN_KEY
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_plain_submission_is_named_after_its_job_and_carries_job_and_run() {
        let mut c = conf(json!({}));
        stamp(&mut c, "team/clicks", 42);
        assert_eq!(c[NAME_KEY], "team/clicks");
        assert_eq!(c[PARAMS_KEY], "jobkeeper.job:team/clicks,jobkeeper.run:42");
    }

    #[test]
    fn the_files_own_name_and_parameters_are_kept() {
        let mut c = conf(json!({NAME_KEY: "Clicks v2", PARAMS_KEY: " region:eu "}));
        stamp(&mut c, "clicks", 7);
        assert_eq!(c[NAME_KEY], "Clicks v2");
        assert_eq!(
            c[PARAMS_KEY],
            "region:eu,jobkeeper.job:clicks,jobkeeper.run:7"
        );
    }

    #[test]
    fn an_identity_is_read_back_from_flinks_user_config() {
        let user = conf(json!({"jobkeeper.job": "clicks", "jobkeeper.run": "7", "region": "eu"}));
        assert_eq!(read(&user), Some(("clicks".into(), "7".into())));
        assert_eq!(read(&conf(json!({"region": "eu"}))), None);
        assert!(is_ours("jobkeeper.run") && !is_ours("region"));
    }
}
