//! The JSON Schema of a job file (`jobkeeper schema`), and under `$defs.defaults` the schema
//! of a folder's `_defaults.yaml`.

/// The JSON Schema (draft 2020-12) of a job file, for editors and CI (`jobkeeper schema`).
///
/// `env` is required of the merged file, so a job file may leave it to a `_defaults.yaml`
/// above it: the schema does not require it. `$defs.defaults` is a defaults file's schema:
/// the job file's fields but `sql`, `sql_file` and `adopt`.
pub fn json_schema() -> serde_json::Value {
    let mut job = job_schema();
    let mut defaults = job.clone();
    if let Some(d) = defaults.as_object_mut() {
        for key in ["$schema", "$id"] {
            d.remove(key);
        }
        d.insert(
            "title".into(),
            "jobkeeper folder defaults (`_defaults.yaml`)".into(),
        );
        d.insert(
            "description".into(),
            "A partial job file merged under every job file below its folder: the nearest \
             folder's file wins, mappings merge key by key, lists and scalars replace, and the \
             job file wins over all of them."
                .into(),
        );
        if let Some(props) = d.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for key in super::NOT_DEFAULTS {
                props.remove(*key);
            }
        }
    }
    if let Some(j) = job.as_object_mut() {
        j.insert("$defs".into(), serde_json::json!({ "defaults": defaults }));
    }
    job
}

/// The job file's own schema.
fn job_schema() -> serde_json::Value {
    let duration = serde_json::json!({
        "type": "string",
        "pattern": "^\\s*([0-9]+\\s*[a-zA-Zµ]+\\s*)+$",
        "description": "A duration such as `90s`, `5m`, `2h` or `1h 30m`."
    });
    let text = serde_json::json!({"type": ["string", "number", "boolean"]});
    let savepoints = serde_json::json!({
        "description": "flink: periodic savepoints and how many are kept; unset fields come from the env, then the daemon config.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "schedule": {"type": "string", "description": "Crontab expression (five fields, or six with seconds), in the daemon's time zone: when a periodic savepoint is taken. Not with `every`."},
            "every": {"allOf": [duration], "description": "A periodic savepoint this long after the previous one. Not with `schedule`."},
            "keep": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "default": 10, "description": "Savepoints past the newest this many may be disposed of."},
                    "age": {"allOf": [duration], "default": "1d", "description": "A savepoint younger than this is never disposed of."}
                }
            }
        }
    });
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://jobkeeper.dev/schema/job.json",
        "title": "jobkeeper job file",
        "description": "One job: its project, env and params. The job's name is the file's path below `repo.path` without the extension. Merged over the `_defaults.yaml` files of its folders (see `$defs.defaults`); `env` is required of the merged file.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "project": {
                "description": "The git repo and branch (and folder) holding the job's code; optional: a job may run a command with no project.",
                "type": "object",
                "additionalProperties": false,
                "required": ["repo"],
                "properties": {
                    "repo": {"type": "string", "minLength": 1, "description": "URL, or a path to a local git repo."},
                    "branch": {"type": "string", "default": "main", "description": "Branch, tag or full commit id."},
                    "dir": {"type": "string", "default": "", "description": "Folder inside the repo (default: the root); not absolute, no `..`."},
                    "build": {"type": "string", "description": "Shell command run in that folder (default: none)."},
                    "artifact": {"type": "string", "description": "Glob in that folder; must match exactly one file."},
                    "follow": {"type": "boolean", "default": false, "description": "true: a new commit on the branch rebuilds and redeploys."}
                }
            },
            "env": {"type": "string", "minLength": 1, "description": "Required (here or in a `_defaults.yaml` above): an env of the daemon config."},
            "params": {
                "description": "Engine parameters, checked by the engine. Strings may use `${var:NAME}` (from the env's vars) and `${secret:NAME}` (read from `secrets_dir/NAME` at submit time).",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "main_class": {"type": "string", "description": "flink/spark: the entry class."},
                    "args": {"type": "array", "items": text, "description": "flink/spark: program arguments."},
                    "parallelism": {"type": "integer", "minimum": 1, "description": "flink: parallelism."},
                    "conf": {"type": "object", "additionalProperties": text, "description": "flink/spark: configuration properties."},
                    "command": {"type": "array", "items": text, "minItems": 1, "description": "local: the argv to run (never a shell); `{artifact}` is replaced by the artifact's path."},
                    "environment": {"type": "object", "additionalProperties": text, "description": "local: environment variables of the child; spark: of the driver."},
                    "workdir": {"type": "string", "description": "local: working directory."}
                }
            },
            "schedule": {"type": "string", "description": "Optional cron: crontab's five fields, or six with a leading seconds field; weekday 0 or 7 is Sunday; names (MON, JAN) and @daily-style macros work. Present = batch job."},
            "overlap": {"enum": ["forbid", "replace", "allow"], "default": "forbid", "description": "Batch: forbid (skip while a run is live) | replace | allow."},
            "timeout": {"allOf": [duration], "description": "Batch: a run taking longer is stopped and counts as failed."},
            "restart": {
                "description": "Restart policy; unset fields come from the env, then the daemon config.",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "attempts": {"type": "integer", "minimum": 0, "description": "Restarts allowed within `window` before giving up."},
                    "window": {"allOf": [duration], "description": "The window restarts are counted in."},
                    "backoff": {"allOf": [duration], "description": "First delay before a restart (doubling)."},
                    "max_backoff": {"allOf": [duration], "description": "Largest delay before a restart."}
                }
            },
            "upgrade": {"enum": ["savepoint", "stateless", "last-state"], "default": "savepoint", "description": "Flink: savepoint (stop with a savepoint, resubmit from it) | stateless | last-state (cancel keeping retained checkpoints, resubmit from the latest; a savepoint when none is younger than max_checkpoint_age)."},
            "max_checkpoint_age": {"allOf": [duration], "default": "10m", "description": "flink `upgrade: last-state`: a checkpoint older than this is not started from; a savepoint is taken instead."},
            "alerts": {"type": "array", "items": {"type": "string"}, "description": "Alert channels (default: the env's)."},
            "suspend": {"type": "boolean", "default": false, "description": "true: stop the job but keep its file and history."},
            "sql": {"type": "string", "description": "flink: the job's Flink SQL statements (CREATE, SET 'key' = 'value', INSERT INTO), run as one job instead of params.main_class."},
            "sql_file": {"type": "string", "description": "flink: a file of Flink SQL statements, relative to the job file, in the config repo; instead of sql or params.main_class."},
            "health": {
                "description": "flink: when a RUNNING job is unhealthy; unset fields come from the env, then the daemon config.",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "checkpoint_age": {"allOf": [duration], "description": "Unhealthy when the latest completed checkpoint is older (only when the job checkpoints)."},
                    "restarts": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["count", "window"],
                        "properties": {
                            "count": {"type": "integer", "minimum": 1, "description": "Restarts by Flink that make the job unhealthy."},
                            "window": {"allOf": [duration], "description": "The window they are counted in."}
                        }
                    }
                }
            },
            "rollback": {"type": "boolean", "default": false, "description": "A new version that fails, gives up or is unhealthy before ready_within is rolled back to the previous one."},
            "ready_within": {"allOf": [duration], "default": "2m", "description": "How long a new version must run before it is trusted."},
            "drift": {"enum": ["correct", "warn"], "default": "correct", "description": "What to do when the job is changed outside jobkeeper."},
            "adopt": {"type": "string", "minLength": 1, "description": "flink/spark: on the job's first apply, take over this running job (a Flink job id, a Flink job name with exactly one RUNNING match, a Spark driver id) instead of submitting; ignored once the job has runs."},
            "savepoints": savepoints,
            "restore": {"type": "string", "pattern": "^[A-Za-z0-9]+:.+", "description": "flink: a savepoint or checkpoint (file://, s3://, hdfs://, ...); a commit that sets or changes it redeploys the job from it once."}
        }
    })
}
