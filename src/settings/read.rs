//! Reading the daemon config's tree into [`Settings`]: the top-level sections (`repo`,
//! `listen`, `timezone`, `build`, `health`, `logs`, `http`, `restart`) and the path fields, which are
//! made absolute against the config's folder. Envs and alert channels have their own modules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::channels::read_channels;
use super::envs::read_envs;
use super::{
    BuildSettings, DEFAULT_LISTEN, DEFAULT_LOG_MAX_SIZE, HealthSettings, HttpSettings, LogSettings,
    MIN_HOOK_BUFFER, RepoSettings, Retention, Settings, host_timezone, is_remote_url,
};
use crate::spec::{RestartPolicy, read_restart};
use crate::yaml::{Checker, Fields, Node};

const TOP_FIELDS: &[&str] = &[
    "repo",
    "state_dir",
    "secrets_dir",
    "listen",
    "api_token_file",
    "api_tokens",
    "webhook_secret_file",
    "timezone",
    "build",
    "health",
    "logs",
    "http",
    "restart",
    "rollback",
    "ready_within",
    "drift",
    "alerts_throttle",
    "max_removals",
    "external_url",
    "retention",
    "savepoints",
    "envs",
    "alerts",
    "freeze",
    "store",
    "ha",
];
const REPO_FIELDS: &[&str] = &["url", "branch", "path", "poll", "ssh_key", "token_file"];

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A path field, made absolute.
pub(super) fn path_field(
    c: &mut Checker,
    f: &Fields<'_>,
    key: &str,
    name: &str,
    base: &Path,
) -> Option<PathBuf> {
    let n = f.get(key)?;
    let s = c.string(n, name)?;
    if s.is_empty() {
        c.error(
            n,
            format!("`{name}`: expected a path, found an empty string"),
        );
        return None;
    }
    Some(resolve_path(base, &s))
}

/// A duration that must be longer than zero.
fn positive_duration(c: &mut Checker, n: &Node, name: &str) -> Option<Duration> {
    let d = c.duration(n, name)?;
    if d.is_zero() {
        c.error(n, format!("`{name}`: must be longer than zero"));
        return None;
    }
    Some(d)
}

/// The whole config from its root node `root`; paths are resolved against `base`.
pub(super) fn read_settings(c: &mut Checker, root: &Node, base: &Path) -> Option<Settings> {
    let f = c.mapping(root, "", TOP_FIELDS)?;
    let repo = match f.get("repo") {
        Some(n) => read_repo(c, n, base),
        None => {
            c.missing(
                &f,
                "repo",
                "where job files come from, e.g. `repo: {url: ...}`",
            );
            None
        }
    };
    let state_dir = match f.get("state_dir") {
        Some(_) => path_field(c, &f, "state_dir", "state_dir", base),
        None => {
            c.missing(
                &f,
                "state_dir",
                "a folder for the store, builds and logs, e.g. `/var/lib/jobkeeper`",
            );
            None
        }
    };
    let store = f
        .get("store")
        .and_then(|n| super::store::read_store(c, n, base));
    let ha = f
        .get("ha")
        .and_then(|n| super::ha::read_ha(c, n, f.get("store").is_some()));
    let secrets_dir = path_field(c, &f, "secrets_dir", "secrets_dir", base);
    let api_token_file = path_field(c, &f, "api_token_file", "api_token_file", base);
    let freeze = f
        .get("freeze")
        .map(|n| crate::freeze::read_windows(c, n, "freeze"))
        .unwrap_or_default();
    let api_tokens = f
        .get("api_tokens")
        .map(|n| super::tokens::read_tokens(c, n, base))
        .unwrap_or_default();
    let webhook_secret_file = path_field(c, &f, "webhook_secret_file", "webhook_secret_file", base);
    let listen = f
        .get("listen")
        .and_then(|n| read_listen(c, n))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070)));
    let timezone = match f.get("timezone") {
        Some(n) => read_timezone(c, n).unwrap_or(chrono_tz::Tz::UTC),
        None => host_timezone(),
    };
    let build = read_build(c, &f);
    let health = read_health(c, &f);
    let mut guard = crate::spec::GuardOverride::default();
    if let Some(n) = f.get("health") {
        crate::spec::read_health(c, n, "health", &["interval"], &mut guard);
    }
    crate::spec::read_guard_fields(c, &f, "", &mut guard);
    let logs = read_logs(c, &f);
    let http = read_http(c, &f);
    let retention = read_retention(c, &f);
    let savepoints = f
        .get("savepoints")
        .map(|n| crate::spec::read_savepoints(c, n, "savepoints"))
        .unwrap_or_default();
    let restart = match f.get("restart") {
        Some(n) => RestartPolicy::default().with(&read_restart(c, n, "restart")),
        None => RestartPolicy::default(),
    };
    let alerts_throttle = f
        .get("alerts_throttle")
        .and_then(|n| c.duration(n, "alerts_throttle"))
        .unwrap_or(Duration::from_secs(300));
    let max_removals = f
        .get("max_removals")
        .and_then(|n| read_max_removals(c, n))
        .unwrap_or_default();
    let external_url = f.get("external_url").and_then(|n| read_external_url(c, n));
    let alerts = f
        .get("alerts")
        .map(|n| read_channels(c, n, base))
        .unwrap_or_default();
    let envs = f
        .get("envs")
        .map(|n| {
            let daemon = crate::engine::spark::DaemonAddress {
                external_url: external_url.as_deref(),
                listen,
            };
            read_envs(c, n, &alerts, daemon)
        })
        .unwrap_or_default();
    Some(Settings {
        repo: repo?,
        state_dir: state_dir?,
        store,
        ha,
        secrets_dir,
        listen,
        api_token_file,
        api_tokens,
        freeze,
        webhook_secret_file,
        timezone,
        build,
        health,
        logs,
        http,
        retention,
        savepoints,
        restart,
        guard,
        alerts_throttle,
        max_removals,
        external_url,
        envs,
        alerts,
    })
}

/// `max_removals:`: a percentage of the jobs (`50%`, from 0% to 100%) or a number of jobs.
fn read_max_removals(c: &mut Checker, n: &Node) -> Option<super::MaxRemovals> {
    if let Some(text) = n
        .scalar()
        .filter(|s| s.kind == crate::yaml::ScalarKind::String)
        .map(|s| s.text.trim().to_string())
    {
        return match text.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
            Some(Ok(p)) if p <= 100 => Some(super::MaxRemovals::Percent(p)),
            _ => {
                c.error(
                    n,
                    format!(
                        "`max_removals`: expected a percentage from 0% to 100% (`50%`) or a \
                         number of jobs (`20`), found `{text}`"
                    ),
                );
                None
            }
        };
    }
    let count = c.integer(n, "max_removals", 0, i64::from(u32::MAX))?;
    Some(super::MaxRemovals::Count(
        usize::try_from(count).unwrap_or(usize::MAX),
    ))
}

/// `external_url:`, the base of links in alerts and pages: an `http` or `https` URL people can
/// open (the daemon's own `listen` address is often loopback).
fn read_external_url(c: &mut Checker, n: &Node) -> Option<String> {
    let s = c.string(n, "external_url")?;
    match reqwest::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(s.trim_end_matches('/').to_string())
        }
        _ => {
            c.error(
                n,
                format!("`external_url`: `{s}` is not an http(s) URL; expected one like `https://jobkeeper.ops.example.com`"),
            );
            None
        }
    }
}

/// `listen:`, an IP address and port.
fn read_listen(c: &mut Checker, n: &Node) -> Option<SocketAddr> {
    let s = c.string(n, "listen")?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.error(
                n,
                format!("`listen`: invalid address `{s}`; expected an IP address and port like `{DEFAULT_LISTEN}`"),
            );
            None
        }
    }
}

/// `timezone:`, an IANA time zone name.
fn read_timezone(c: &mut Checker, n: &Node) -> Option<chrono_tz::Tz> {
    let s = c.string(n, "timezone")?;
    match s.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            c.error(
                n,
                format!("`timezone`: unknown time zone `{s}`; expected an IANA name like `Europe/Berlin`, `Asia/Shanghai` or `UTC`"),
            );
            None
        }
    }
}

/// `build:` of the top-level fields `f`, with its defaults.
fn read_build(c: &mut Checker, f: &Fields<'_>) -> BuildSettings {
    let mut build = BuildSettings {
        max_concurrent: 2,
        timeout: Duration::from_secs(30 * 60),
        path: crate::build::BUILD_PATH.to_string(),
    };
    if let Some(n) = f.get("build")
        && let Some(b) = c.mapping(n, "build", &["max_concurrent", "timeout", "path"])
    {
        if let Some(v) = b.get("max_concurrent")
            && let Some(i) = c.integer(v, "build.max_concurrent", 1, 1024)
        {
            build.max_concurrent = usize::try_from(i).unwrap_or(1);
        }
        if let Some(v) = b.get("timeout")
            && let Some(d) = positive_duration(c, v, "build.timeout")
        {
            build.timeout = d;
        }
        if let Some(v) = b.get("path")
            && let Some(p) = build_path(c, v)
        {
            build.path = p;
        }
    }
    build
}

/// `build.path`: `:`-separated absolute folders.
fn build_path(c: &mut Checker, n: &Node) -> Option<String> {
    let p = c.string(n, "build.path")?;
    let bad = p.split(':').find(|d| !d.starts_with('/'));
    match bad {
        Some(d) => {
            c.error(
                n,
                format!(
                    "`build.path`: `{d}` is not an absolute folder; expected `:`-separated \
                     absolute folders like `/opt/jdk/bin:/usr/bin:/bin`"
                ),
            );
            None
        }
        None => Some(p),
    }
}

/// `health:` of the top-level fields `f`, with its defaults.
fn read_health(c: &mut Checker, f: &Fields<'_>) -> HealthSettings {
    let mut health = HealthSettings {
        interval: Duration::from_secs(5),
    };
    if let Some(n) = f.get("health")
        && let Some(h) = c.mapping(n, "health", &["interval", "checkpoint_age", "restarts"])
        && let Some(v) = h.get("interval")
        && let Some(d) = positive_duration(c, v, "health.interval")
    {
        health.interval = d;
    }
    health
}

/// `retention:` of the top-level fields `f`, with its defaults (100 runs, 30 days).
fn read_retention(c: &mut Checker, f: &Fields<'_>) -> Retention {
    let mut retention = Retention::default();
    if let Some(n) = f.get("retention")
        && let Some(r) = c.mapping(n, "retention", &["runs", "age"])
    {
        if let Some(v) = r.get("runs")
            && let Some(runs) = c.integer(v, "retention.runs", 1, 1_000_000)
        {
            retention.runs = runs as usize;
        }
        if let Some(v) = r.get("age")
            && let Some(age) = c.duration(v, "retention.age")
        {
            retention.age = age;
        }
    }
    retention
}

/// `logs:` of the top-level fields `f`, with its defaults.
fn read_logs(c: &mut Checker, f: &Fields<'_>) -> LogSettings {
    let mut logs = LogSettings {
        max_size: DEFAULT_LOG_MAX_SIZE,
    };
    if let Some(n) = f.get("logs")
        && let Some(l) = c.mapping(n, "logs", &["max_size"])
        && let Some(v) = l.get("max_size")
        && let Some(b) = c.size(v, "logs.max_size", 64 * 1024, 1 << 40)
    {
        logs.max_size = b;
    }
    logs
}

/// `http:` of the top-level fields `f`, with its defaults.
fn read_http(c: &mut Checker, f: &Fields<'_>) -> HttpSettings {
    let mut http = HttpSettings::default();
    let Some(n) = f.get("http") else {
        return http;
    };
    let Some(h) = c.mapping(
        n,
        "http",
        &[
            "header_timeout",
            "idle_timeout",
            "body_timeout",
            "max_connections",
            "hook_buffer",
        ],
    ) else {
        return http;
    };
    for (key, field) in [
        ("header_timeout", &mut http.header_timeout),
        ("idle_timeout", &mut http.idle_timeout),
        ("body_timeout", &mut http.body_timeout),
    ] {
        if let Some(v) = h.get(key)
            && let Some(d) = positive_duration(c, v, &format!("http.{key}"))
        {
            *field = d;
        }
    }
    if let Some(v) = h.get("max_connections")
        && let Some(i) = c.integer(v, "http.max_connections", 1, 1_000_000)
    {
        http.max_connections = usize::try_from(i).unwrap_or(1);
    }
    if let Some(v) = h.get("hook_buffer")
        && let Some(b) = c.size(v, "http.hook_buffer", MIN_HOOK_BUFFER, 1 << 40)
    {
        http.hook_buffer = b;
    }
    http
}

fn read_repo(c: &mut Checker, n: &Node, base: &Path) -> Option<RepoSettings> {
    let f = c.mapping(n, "repo", REPO_FIELDS)?;
    let url = match f.get("url") {
        Some(v) => c.string(v, "repo.url").and_then(|u| {
            if u.is_empty() {
                c.error(
                    v,
                    "`repo.url`: expected a git URL or a path, found an empty string",
                );
                None
            } else if is_remote_url(&u) {
                Some(u)
            } else {
                Some(resolve_path(base, &u).to_string_lossy().into_owned())
            }
        }),
        None => {
            c.missing(
                &f,
                "url",
                "a git URL, bare repo path or local work tree path",
            );
            None
        }
    };
    let branch = f
        .get("branch")
        .and_then(|v| c.string(v, "repo.branch"))
        .unwrap_or_else(|| "main".to_string());
    let path = match f.get("path") {
        Some(v) => c.string(v, "repo.path").map(|p| {
            if p.starts_with('/') || p.split('/').any(|s| s == "..") {
                c.error(
                    v,
                    format!(
                        "`repo.path`: `{p}` must be a folder inside the repo (relative, no `..`)"
                    ),
                );
            }
            p.trim_end_matches('/').to_string()
        }),
        None => None,
    }
    .unwrap_or_else(|| "jobs".to_string());
    let poll = f
        .get("poll")
        .and_then(|v| positive_duration(c, v, "repo.poll"))
        .unwrap_or(Duration::from_secs(30));
    let ssh_key = path_field(c, &f, "ssh_key", "repo.ssh_key", base);
    let token_file = path_field(c, &f, "token_file", "repo.token_file", base);
    Some(RepoSettings {
        url: url?,
        branch,
        path,
        poll,
        ssh_key,
        token_file,
    })
}
