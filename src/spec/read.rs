//! Reading a job file's tree into a [`JobSpec`], with every problem reported at its node.

use std::collections::BTreeMap;
use std::time::Duration;

use super::placeholders::Expand;
use super::*;
use crate::schedule::Schedule;
use crate::yaml::{Checker, Fields, Node, Value};

/// Reads the whole job; problems go to `c`, fields with problems keep their defaults.
pub(super) fn read_job(c: &mut Checker, root: &Node, src: &str, ctx: Context) -> JobSpec {
    let mut spec = JobSpec {
        project: None,
        env: String::new(),
        params: Params::default(),
        schedule: None,
        overlap: Overlap::default(),
        timeout: None,
        restart: RestartOverride::default(),
        upgrade: Upgrade::default(),
        alerts: None,
        suspend: false,
        sql: None,
        guard: GuardOverride::default(),
        adopt: None,
        savepoints: SavepointsOverride::default(),
        restore: None,
        max_checkpoint_age: None,
    };
    let Some(f) = c.mapping(root, "", JOB_FIELDS) else {
        return spec;
    };

    // env first: it decides which vars apply.
    let vars = match f.get("env") {
        None => {
            c.missing(
                &f,
                "env",
                "the env of the daemon config to run in, e.g. `env: prod`",
            );
            None
        }
        Some(n) => c.string(n, "env").and_then(|env| {
            let vars = ctx.settings.and_then(|s| env_vars(c, n, s, &env));
            spec.env = env;
            vars
        }),
    };
    let env = spec.env.clone();
    let ex = Expand {
        vars,
        env: &env,
        no_secrets_dir: ctx.settings.is_some_and(|s| !s.has_secrets_dir()),
    };

    if let Some(n) = f.get("project") {
        spec.project = read_project(c, n, &ex);
    }
    if let Some(n) = f.get("params") {
        spec.params = read_params(c, n, &ex);
    }
    let engine = ctx.settings.and_then(|s| s.engine(ex.env));
    let sql = super::sql_read::read_sql(c, &f, src, &ex, ctx, engine);
    spec.sql = sql;
    read_run_fields(c, &f, &mut spec);
    if let Some(n) = f.get("alerts") {
        spec.alerts = read_alerts(c, n, ctx.settings);
    }
    if let Some(n) = f.get("health") {
        read_health(c, n, "health", &[], &mut spec.guard);
    }
    read_guard_fields(c, &f, "", &mut spec.guard);
    if let Some(n) = f.get("suspend") {
        spec.suspend = c.boolean(n, "suspend").unwrap_or(false);
    }
    if let Some(n) = f.get("adopt") {
        spec.adopt = read_adopt(c, n, engine);
    }
    if let Some(n) = f.get("savepoints") {
        spec.savepoints = read_savepoints(c, n, "savepoints");
    }
    if let Some(n) = f.get("restore") {
        spec.restore = super::state::read_restore(c, n);
        if let Some(e) = engine.filter(|e| !e.keeps_state).map(|e| e.name)
            && spec.restore.is_some()
        {
            c.error(
                n,
                format!(
                    "`restore`: the env's engine is {e}, whose jobs have no savepoints or \
                     checkpoints to start from; only flink and yarn jobs can be restored"
                ),
            );
        }
    }

    if let Some(s) = ctx.settings
        && vars.is_some()
        && let Err(msg) = s.check_params(&spec.env, &spec.params)
    {
        c.error(f.get("params").unwrap_or(root), msg.to_string());
    }
    spec
}

/// The vars of env `env` (the value of `env:` at `n`); an env the config lacks is reported.
fn env_vars<'a>(
    c: &mut Checker,
    n: &Node,
    settings: &'a dyn DaemonConfig,
    env: &str,
) -> Option<&'a BTreeMap<String, String>> {
    let vars = settings.env_vars(env);
    if vars.is_none() {
        let known = settings.env_names();
        c.error(
            n,
            format!(
                "unknown env `{env}`; known envs: {}",
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    vars
}

/// The fields saying when and how the job runs: `schedule`, `overlap`, `upgrade`, `timeout`
/// and `restart`.
fn read_run_fields(c: &mut Checker, f: &Fields<'_>, spec: &mut JobSpec) {
    if let Some(n) = f.get("schedule")
        && let Some(s) = c.string(n, "schedule")
    {
        match Schedule::parse(&s) {
            Ok(_) => spec.schedule = Some(s),
            Err(e) => c.error(n, format!("`schedule`: invalid cron `{s}`: {e}")),
        }
    }
    if let Some(n) = f.get("overlap")
        && let Some(v) = one_of(c, n, "overlap", &["forbid", "replace", "allow"])
    {
        spec.overlap = match v {
            "replace" => Overlap::Replace,
            "allow" => Overlap::Allow,
            _ => Overlap::Forbid,
        };
    }
    if let Some(n) = f.get("upgrade")
        && let Some(v) = one_of(c, n, "upgrade", &["savepoint", "stateless", "last-state"])
    {
        spec.upgrade = match v {
            "stateless" => Upgrade::Stateless,
            "last-state" => Upgrade::LastState,
            _ => Upgrade::Savepoint,
        };
    }
    if let Some(n) = f.get("max_checkpoint_age") {
        spec.max_checkpoint_age = c.duration(n, "max_checkpoint_age");
        if spec.max_checkpoint_age == Some(Duration::ZERO) {
            c.error(n, "`max_checkpoint_age`: must be longer than zero");
        }
    }
    if let Some(n) = f.get("timeout") {
        spec.timeout = c.duration(n, "timeout");
        if spec.timeout == Some(Duration::ZERO) {
            c.error(n, "`timeout`: must be longer than zero");
        }
    }
    if let Some(n) = f.get("restart") {
        spec.restart = read_restart(c, n, "restart");
    }
}

/// `adopt`: a non-empty id or name, on an env whose engine runs jobs on a cluster.
fn read_adopt(c: &mut Checker, n: &Node, engine: Option<EngineFacts>) -> Option<String> {
    let v = c.text(n, "adopt")?;
    if v.trim().is_empty() {
        c.error(
            n,
            "`adopt`: must not be empty; expected a Flink job id or name, or a Spark driver id",
        );
        return None;
    }
    if let Some(e) = engine.filter(|e| !e.runs_on_cluster).map(|e| e.name) {
        c.error(
            n,
            format!(
                "`adopt`: the env's engine is {e}; only flink and spark jobs running on a \
                 cluster can be taken over"
            ),
        );
    }
    Some(v.trim().to_string())
}

/// A string that must be one of `allowed`.
fn one_of<'a>(c: &mut Checker, n: &Node, name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let v = c.string(n, name)?;
    match allowed.iter().find(|a| **a == v) {
        Some(a) => Some(a),
        None => {
            c.error(
                n,
                format!(
                    "`{name}`: unknown value `{v}`; expected one of: {}",
                    allowed.join(", ")
                ),
            );
            None
        }
    }
}

/// The `alerts` list; with a daemon config, every name must be a channel.
fn read_alerts(
    c: &mut Checker,
    n: &Node,
    settings: Option<&dyn DaemonConfig>,
) -> Option<Vec<String>> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!(
                "`alerts`: expected a list of channel names, found {}",
                n.kind_name()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = c.string(item, &format!("alerts[{i}]")) else {
            continue;
        };
        if let Some(s) = settings
            && !s.has_channel(&name)
        {
            let known = s.channel_names();
            c.error(
                item,
                format!(
                    "unknown alert channel `{name}`; known channels: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        out.push(name);
    }
    Some(out)
}

/// A `restart` mapping (shared with the daemon config).
pub(crate) fn read_restart(c: &mut Checker, n: &Node, name: &str) -> RestartOverride {
    let mut r = RestartOverride::default();
    let Some(f) = c.mapping(n, name, RESTART_FIELDS) else {
        return r;
    };
    if let Some(v) = f.get("attempts") {
        r.attempts = c
            .integer(v, &format!("{name}.attempts"), 0, i64::from(u32::MAX))
            .and_then(|i| u32::try_from(i).ok());
    }
    for (key, slot) in [
        ("window", &mut r.window),
        ("backoff", &mut r.backoff),
        ("max_backoff", &mut r.max_backoff),
    ] {
        if let Some(v) = f.get(key) {
            *slot = c.duration(v, &format!("{name}.{key}"));
        }
    }
    if let (Some(b), Some(m)) = (r.backoff, r.max_backoff)
        && b > m
        && let Some(v) = f.get("max_backoff")
    {
        c.error(
            v,
            format!("`{name}.max_backoff`: must not be shorter than `{name}.backoff`"),
        );
    }
    r
}

/// A string field that may hold placeholders.
fn expanded_string(c: &mut Checker, n: &Node, name: &str, ex: &Expand<'_>) -> Option<String> {
    let s = c.string(n, name)?;
    Some(ex.apply(c, n, s))
}

/// A string of `project`: like [`expanded_string`], and `${secret:..}` is an error, since
/// builds are never given secrets (it would reach the build's shell as literal text).
fn project_string(c: &mut Checker, n: &Node, name: &str, ex: &Expand<'_>) -> Option<String> {
    let s = expanded_string(c, n, name, ex)?;
    if let Some(i) = s.find("${secret:") {
        let end = s[i..].find('}').map_or(s.len(), |e| i + e + 1);
        c.error(
            n,
            format!(
                "`{}` in `{name}`: builds are not given secrets; use `${{secret:..}}` in \
                 `params` (e.g. `params.environment`) of the run instead",
                &s[i..end]
            ),
        );
    }
    Some(s)
}

fn read_project(c: &mut Checker, n: &Node, ex: &Expand<'_>) -> Option<Project> {
    let f = c.mapping(n, "project", PROJECT_FIELDS)?;
    let repo = match f.get("repo") {
        Some(v) => project_string(c, v, "project.repo", ex),
        None => {
            c.missing(&f, "repo", "a git URL or a path to a local git repo");
            None
        }
    };
    if repo.as_deref() == Some("")
        && let Some(v) = f.get("repo")
    {
        c.error(v, "`project.repo`: must not be empty");
    }
    let branch = f
        .get("branch")
        .and_then(|v| project_string(c, v, "project.branch", ex))
        .unwrap_or_else(|| "main".to_string());
    let dir = match f.get("dir") {
        Some(v) => {
            let d = project_string(c, v, "project.dir", ex).unwrap_or_default();
            if d.starts_with('/') {
                c.error(
                    v,
                    format!("`project.dir`: `{d}` is absolute; expected a folder inside the repo"),
                );
            } else if d.split(['/', '\\']).any(|seg| seg == "..") {
                c.error(
                    v,
                    format!(
                        "`project.dir`: `{d}` contains `..`; expected a folder inside the repo"
                    ),
                );
            }
            d.trim_end_matches('/').to_string()
        }
        None => String::new(),
    };
    let build = f
        .get("build")
        .and_then(|v| project_string(c, v, "project.build", ex));
    let artifact = f.get("artifact").and_then(|v| {
        let a = project_string(c, v, "project.artifact", ex)?;
        // The artifact is found in the build folder; it may not name a file outside it.
        if a.starts_with('/') {
            c.error(
                v,
                format!(
                    "`project.artifact`: `{a}` is absolute; expected a glob inside `project.dir`"
                ),
            );
        } else if a.split(['/', '\\']).any(|seg| seg == "..") {
            c.error(
                v,
                format!(
                    "`project.artifact`: `{a}` contains `..`; expected a glob inside `project.dir`"
                ),
            );
        }
        Some(a)
    });
    let follow = f
        .get("follow")
        .and_then(|v| c.boolean(v, "project.follow"))
        .unwrap_or(false);
    Some(Project {
        repo: repo?,
        branch,
        dir,
        build,
        artifact,
        follow,
    })
}

/// A list of strings/numbers/booleans as text, each expanded.
fn expanded_list(c: &mut Checker, n: &Node, name: &str, ex: &Expand<'_>) -> Vec<String> {
    let Value::Seq(items) = &n.value else {
        c.error(
            n,
            format!("`{name}`: expected a list, found {}", n.kind_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = c.text(item, &format!("{name}[{i}]")) {
            out.push(ex.apply(c, item, s));
        }
    }
    out
}

/// A mapping of names to strings/numbers/booleans as text, values expanded.
fn expanded_map(
    c: &mut Checker,
    n: &Node,
    name: &str,
    ex: &Expand<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in c.free_mapping(n, name) {
        let Some(key) = c.text(k, &format!("{name} key")) else {
            continue;
        };
        if let Some(val) = c.text(v, &format!("{name}.{key}")) {
            let val = ex.apply(c, v, val);
            out.insert(key, val);
        }
    }
    out
}

fn read_params(c: &mut Checker, n: &Node, ex: &Expand<'_>) -> Params {
    let mut p = Params::default();
    let Some(f) = c.mapping(n, "params", PARAMS_FIELDS) else {
        return p;
    };
    p.main_class = f
        .get("main_class")
        .and_then(|v| expanded_string(c, v, "params.main_class", ex));
    if let Some(v) = f.get("args") {
        p.args = expanded_list(c, v, "params.args", ex);
    }
    if let Some(v) = f.get("parallelism") {
        p.parallelism = c
            .integer(v, "params.parallelism", 1, i64::from(u32::MAX))
            .and_then(|i| u32::try_from(i).ok());
    }
    if let Some(v) = f.get("conf") {
        p.conf = expanded_map(c, v, "params.conf", ex);
    }
    if let Some(v) = f.get("command") {
        p.command = expanded_list(c, v, "params.command", ex);
        if p.command.first().is_some_and(|s| s.is_empty()) {
            c.error(
                v,
                "`params.command`: the program (first item) must not be empty",
            );
        }
    }
    if let Some(v) = f.get("environment") {
        p.environment = expanded_map(c, v, "params.environment", ex);
        for key in p.environment.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                c.error(
                    v,
                    format!("`params.environment`: invalid variable name `{key}`"),
                );
            }
        }
    }
    p.workdir = f
        .get("workdir")
        .and_then(|v| expanded_string(c, v, "params.workdir", ex));
    p
}
