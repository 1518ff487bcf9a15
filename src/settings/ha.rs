//! `ha:` in the daemon config: two or three daemons sharing one PostgreSQL store, one of which
//! leads at a time by a lease ([`crate::ha`]). Owns the block's fields, their defaults and the
//! rules between them.

use std::time::Duration;

use crate::yaml::{Checker, Node};

/// `ha.lease_ttl` by default: how long a lease lasts past its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// `ha.renew_deadline` by default: a leader that has not renewed for this long steps down.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// `ha.retry` by default: how often a leader renews and a standby tries to take the lease.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);

/// `ha`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// How long a lease lasts past its last renewal, on the database's clock.
    pub lease_ttl: Duration,
    /// A leader that has not renewed for this long (its own monotonic clock, from when its last
    /// good renewal was sent) steps down: shorter than `lease_ttl`.
    pub renew_deadline: Duration,
    /// How often the leader renews and standbys try to take the lease.
    pub retry: Duration,
    /// This daemon's name among the others (default: the host name).
    pub node: String,
}

/// This host's name (`/proc/sys/kernel/hostname`), `localhost` when it cannot be read.
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match name.trim() {
        "" => "localhost".to_string(),
        n => n.to_string(),
    }
}

/// Reads `ha:`; `None` when it is absent or wrong (the problem is recorded). `postgres` says
/// whether `store.postgres` is set, which `ha` needs.
pub(super) fn read_ha(c: &mut Checker, n: &Node, postgres: bool) -> Option<HaSettings> {
    let f = c.mapping(n, "ha", &["lease_ttl", "renew_deadline", "retry", "node"])?;
    let duration = |c: &mut Checker, key: &str, default: Duration| match f.get(key) {
        Some(v) => {
            let name = format!("ha.{key}");
            match c.duration(v, &name) {
                Some(d) if d.is_zero() => {
                    c.error(v, format!("`{name}`: must be longer than zero"));
                    None
                }
                d => d,
            }
        }
        None => Some(default),
    };
    let lease_ttl = duration(c, "lease_ttl", DEFAULT_LEASE_TTL);
    let renew_deadline = duration(c, "renew_deadline", DEFAULT_RENEW_DEADLINE);
    let retry = duration(c, "retry", DEFAULT_RETRY);
    let node = match f.get("node") {
        Some(v) => {
            let s = c.string(v, "ha.node")?;
            if s.trim().is_empty() || s.chars().any(char::is_control) {
                c.error(
                    v,
                    "`ha.node`: expected a name for this daemon, e.g. `ops-1`",
                );
                return None;
            }
            s.trim().to_string()
        }
        None => host_name(),
    };
    let (lease_ttl, renew_deadline, retry) = (lease_ttl?, renew_deadline?, retry?);
    if !postgres {
        c.error(
            n,
            "`ha` needs `store: {postgres: ...}`: the daemons share their state and their lease \
             in one PostgreSQL database",
        );
        return None;
    }
    if renew_deadline >= lease_ttl {
        c.error(
            n,
            format!(
                "`ha.renew_deadline` ({}) must be shorter than `ha.lease_ttl` ({}): a leader must \
                 step down before another can take its lease",
                humantime::format_duration(renew_deadline),
                humantime::format_duration(lease_ttl)
            ),
        );
        return None;
    }
    if retry >= renew_deadline {
        c.error(
            n,
            format!(
                "`ha.retry` ({}) must be shorter than `ha.renew_deadline` ({}): the leader renews \
                 every `retry`",
                humantime::format_duration(retry),
                humantime::format_duration(renew_deadline)
            ),
        );
        return None;
    }
    Some(HaSettings {
        lease_ttl,
        renew_deadline,
        retry,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "store: {postgres: {url: postgres://jk@db1/jk}}\n";

    fn read(text: &str) -> Result<HaSettings, String> {
        let yaml = format!("repo: {{url: /r}}\nstate_dir: /s\n{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        match crate::settings::load(&path) {
            Ok(s) => s.ha.ok_or_else(|| "no ha".to_string()),
            Err(d) => Err(crate::diag::render(&d)),
        }
    }

    #[test]
    fn defaults_are_filled_and_the_node_is_the_host_by_default() {
        let ha = read(&format!("{STORE}ha: {{}}\n")).unwrap();
        assert_eq!(
            (ha.lease_ttl, ha.renew_deadline, ha.retry),
            (DEFAULT_LEASE_TTL, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY)
        );
        assert_eq!(ha.node, host_name());
        let ha = read(&format!(
            "{STORE}ha: {{lease_ttl: 3s, renew_deadline: 2s, retry: 500ms, node: ops-2}}\n"
        ))
        .unwrap();
        assert_eq!(ha.renew_deadline, Duration::from_secs(2));
        assert_eq!(ha.node, "ops-2");
    }

    #[test]
    fn ha_needs_postgres_and_deadlines_in_order() {
        let err = read("ha: {node: ops-1}\n").unwrap_err();
        assert!(err.contains("`ha` needs `store: {postgres"), "{err}");
        let err = read(&format!(
            "{STORE}ha: {{lease_ttl: 10s, renew_deadline: 10s}}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("`ha.renew_deadline` (10s) must be shorter than `ha.lease_ttl` (10s)"),
            "{err}"
        );
        let err = read(&format!("{STORE}ha: {{retry: 12s}}\n")).unwrap_err();
        assert!(err.contains("`ha.retry` (12s) must be shorter"), "{err}");
        let err = read(&format!("{STORE}ha: {{lease_ttl: 0s}}\n")).unwrap_err();
        assert!(
            err.contains("`ha.lease_ttl`: must be longer than zero"),
            "{err}"
        );
        let err = read(&format!("{STORE}ha: {{node: \"\"}}\n")).unwrap_err();
        assert!(err.contains("`ha.node`"), "{err}");
    }
}
