//! Envs of the daemon config (`envs:`): each names its engine, whose own block the engine
//! reads ([`EngineConfig::read`]), and holds vars, default alert channels and restart fields.

use std::collections::BTreeMap;

use super::channels::{AlertChannel, check_channels};
use crate::engine::spark::DaemonAddress;
use crate::engine::{EngineConfig, EngineKind};
use crate::spec::{GuardOverride, RestartOverride, read_guard_fields, read_health, read_restart};
use crate::yaml::{Checker, Node};

/// One env.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSettings {
    /// Engine of this env, with its cluster's settings.
    pub engine: EngineConfig,
    /// Values for `${var:NAME}`.
    pub vars: BTreeMap<String, String>,
    /// Default alert channels of the env's jobs.
    pub alerts: Vec<String>,
    /// Env-wide restart policy fields.
    pub restart: RestartOverride,
    /// Env-wide `health`, `rollback`, `ready_within` and `drift`.
    pub guard: GuardOverride,
    /// Env-wide `savepoints`.
    pub savepoints: crate::spec::SavepointsOverride,
    /// `folders`: globs over job names (`payments/**`, `risk/*`) of the jobs this env is open
    /// to; `None` (no `folders`) is open to all.
    pub folders: Option<Vec<JobGlob>>,
}

/// One glob of `envs.NAME.folders`, over job names: `*` stays within a folder, `**` crosses
/// folders.
#[derive(Debug, Clone, PartialEq)]
pub struct JobGlob {
    /// As written.
    pub text: String,
    pattern: glob::Pattern,
}

impl JobGlob {
    /// The glob `text`, or why it is not one.
    pub fn new(text: &str) -> Result<JobGlob, glob::PatternError> {
        Ok(JobGlob {
            text: text.to_string(),
            pattern: glob::Pattern::new(text)?,
        })
    }

    /// True when job `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.pattern.matches_with(name, opts)
    }
}

/// Reads a list of job-name globs (`folders` of an env or a scoped token) at `n`.
pub(crate) fn read_globs(c: &mut Checker, n: &Node, name: &str) -> Vec<JobGlob> {
    let Some(items) = c.string_list(n, name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, text) in items.iter().enumerate() {
        match JobGlob::new(text) {
            Ok(g) if !text.is_empty() => out.push(g),
            Ok(_) => c.error(n, format!("`{name}[{i}]`: a glob must not be empty")),
            Err(e) => c.error(
                n,
                format!(
                    "`{name}[{i}]`: `{text}` is not a glob over job names: {}",
                    e.msg
                ),
            ),
        }
    }
    out
}

/// The fields an env may have: `engine`, each engine's block, then its own.
fn env_fields() -> Vec<&'static str> {
    let mut fields = vec!["engine"];
    fields.extend(EngineConfig::SECTIONS);
    fields.extend([
        "vars",
        "alerts",
        "restart",
        "health",
        "savepoints",
        "folders",
    ]);
    fields.extend(crate::spec::guard_fields());
    fields
}

/// The `envs:` mapping `n`; `channels` are the config's alert channels; `daemon` is how the
/// daemon is reached (spark envs check their workers can fetch jars from it).
pub(super) fn read_envs(
    c: &mut Checker,
    n: &Node,
    channels: &BTreeMap<String, AlertChannel>,
    daemon: DaemonAddress<'_>,
) -> BTreeMap<String, EnvSettings> {
    let mut envs = BTreeMap::new();
    for (k, v) in c.free_mapping(n, "envs") {
        let Some(name) = c.string(k, "envs key") else {
            continue;
        };
        if name.is_empty() {
            c.error(k, "`envs`: an env name must not be empty");
            continue;
        }
        if let Some(e) = read_env(c, v, &name, channels, daemon) {
            envs.insert(name, e);
        }
    }
    envs
}

fn read_env(
    c: &mut Checker,
    n: &Node,
    name: &str,
    channels: &BTreeMap<String, AlertChannel>,
    daemon: DaemonAddress<'_>,
) -> Option<EnvSettings> {
    let section = format!("envs.{name}");
    let f = c.mapping(n, &section, &env_fields())?;
    let kind = match f.get("engine") {
        Some(v) => c.string(v, &format!("{section}.engine")).and_then(|e| {
            match EngineKind::from_name(&e) {
                Some(kind) => Some(kind),
                None => {
                    c.error(
                        v,
                        format!(
                            "`{section}.engine`: unknown engine `{e}`; expected one of: {}",
                            EngineKind::names()
                        ),
                    );
                    None
                }
            }
        }),
        None => {
            c.missing(&f, "engine", &format!("one of: {}", EngineKind::names()));
            None
        }
    };
    let engine = EngineConfig::read(c, n, &f, name, kind, daemon);
    let vars = f
        .get("vars")
        .map(|v| read_vars(c, v, &section))
        .unwrap_or_default();
    let alerts = match f.get("alerts") {
        Some(v) => check_channels(c, v, &format!("{section}.alerts"), channels),
        None => Vec::new(),
    };
    let restart = f
        .get("restart")
        .map(|v| read_restart(c, v, &format!("{section}.restart")))
        .unwrap_or_default();
    let mut guard = GuardOverride::default();
    if let Some(v) = f.get("health") {
        read_health(c, v, &format!("{section}.health"), &[], &mut guard);
    }
    read_guard_fields(c, &f, &format!("{section}."), &mut guard);
    let savepoints = f
        .get("savepoints")
        .map(|v| crate::spec::read_savepoints(c, v, &format!("{section}.savepoints")))
        .unwrap_or_default();
    let folders = f
        .get("folders")
        .map(|v| read_globs(c, v, &format!("{section}.folders")));
    Some(EnvSettings {
        savepoints,
        folders,
        engine: engine?,
        vars,
        alerts,
        restart,
        guard,
    })
}

/// The `vars:` mapping `n` of the env `section`: names to strings, numbers or booleans as text.
fn read_vars(c: &mut Checker, n: &Node, section: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (k, val) in c.free_mapping(n, &format!("{section}.vars")) {
        let Some(key) = c.text(k, &format!("{section}.vars key")) else {
            continue;
        };
        if let Some(t) = c.text(val, &format!("{section}.vars.{key}")) {
            vars.insert(key, t);
        }
    }
    vars
}
