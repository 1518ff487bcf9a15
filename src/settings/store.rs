//! `store:` in the daemon config: where the daemon keeps its state. Without it, SQLite under
//! `state_dir`; with `store.postgres`, a PostgreSQL database ([`crate::store::postgres`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::store::postgres::{Target, TlsMode};
use crate::yaml::{Checker, Node};

/// The default `store.postgres.pool`.
pub const DEFAULT_POOL: usize = 8;

/// `store.postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The connection URL, with no password in it.
    pub url: String,
    /// The file holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// TLS to the server.
    pub tls: TlsMode,
    /// The most connections open at once.
    pub pool: usize,
}

impl PostgresSettings {
    /// Where to connect, with the password read from `password_file`.
    pub fn target(&self) -> std::io::Result<Target> {
        let password = match &self.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("store.postgres.password_file {}: {e}", f.display()),
                        )
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Target {
            url: self.url.clone(),
            password,
            tls: self.tls,
            pool: self.pool,
        })
    }
}

/// Reads `store:`; `None` (SQLite) when it is absent or wrong (the problem is recorded).
pub(super) fn read_store(c: &mut Checker, n: &Node, base: &Path) -> Option<PostgresSettings> {
    let f = c.mapping(n, "store", &["postgres"])?;
    let Some(pg) = f.get("postgres") else {
        c.error(
            n,
            "`store`: expected `postgres:` (without `store`, the state is kept in SQLite under \
             `state_dir`)",
        );
        return None;
    };
    let p = c.mapping(
        pg,
        "store.postgres",
        &["url", "password_file", "tls", "pool"],
    )?;
    let url = match p.get("url") {
        Some(u) => c
            .string(u, "store.postgres.url")
            .and_then(|s| check_url(c, u, s)),
        None => {
            c.missing(
                &p,
                "url",
                "e.g. `postgres://jobkeeper@db1:5432/jobkeeper?target_session_attrs=read-write`",
            );
            None
        }
    };
    let password_file =
        super::read::path_field(c, &p, "password_file", "store.postgres.password_file", base);
    let tls = match p.get("tls") {
        Some(v) => match c.string(v, "store.postgres.tls")?.as_str() {
            "disable" => TlsMode::Disable,
            "require" => TlsMode::Require,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                c.error(
                    v,
                    format!(
                        "`store.postgres.tls`: expected `disable`, `require` or `verify-full`, \
                         found `{other}`"
                    ),
                );
                return None;
            }
        },
        None => TlsMode::default(),
    };
    let pool = match p.get("pool") {
        Some(v) => usize::try_from(c.integer(v, "store.postgres.pool", 1, 256)?).ok()?,
        None => DEFAULT_POOL,
    };
    Some(PostgresSettings {
        url: url?,
        password_file,
        tls,
        pool,
    })
}

/// A URL tokio-postgres reads, naming a database, with no password in it.
fn check_url(c: &mut Checker, n: &Node, url: String) -> Option<String> {
    match tokio_postgres::Config::from_str(&url) {
        Ok(cfg) if cfg.get_password().is_some() => {
            c.error(
                n,
                "`store.postgres.url` holds a password: put it in `store.postgres.password_file` \
                 instead (the config file is often committed)",
            );
            None
        }
        Ok(cfg) if cfg.get_hosts().is_empty() => {
            c.error(n, "`store.postgres.url` names no host");
            None
        }
        Ok(_) => Some(url),
        Err(e) => {
            c.error(
                n,
                format!(
                    "`store.postgres.url`: {e}; expected one like \
                     `postgres://jobkeeper@db1:5432/jobkeeper`"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    fn read(text: &str) -> Result<super::PostgresSettings, String> {
        let yaml = format!("repo: {{url: /r}}\nstate_dir: /s\n{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        match crate::settings::load(&path) {
            Ok(s) => s.store.ok_or_else(|| "no store".to_string()),
            Err(d) => Err(crate::diag::render(&d)),
        }
    }

    #[test]
    fn the_block_is_checked_and_its_defaults_filled() {
        let s = read("store:\n  postgres:\n    url: postgres://jk@db1:5432,db2/jk\n").unwrap();
        assert_eq!(s.pool, super::DEFAULT_POOL);
        assert_eq!(s.tls, crate::store::postgres::TlsMode::Require);
        let err = read("store:\n  postgres:\n    url: postgres://jk:secret@db1/jk\n").unwrap_err();
        assert!(err.contains("holds a password"), "{err}");
        assert!(
            !err.contains("secret"),
            "the password is never shown: {err}"
        );
        let err = read("store:\n  postgres:\n    url: postgres://jk@db1/jk\n    tls: maybe\n")
            .unwrap_err();
        assert!(
            err.contains("`disable`, `require` or `verify-full`"),
            "{err}"
        );
        let err =
            read("store:\n  postgres:\n    url: postgres://jk@db1/jk\n    pool: 0\n").unwrap_err();
        assert!(err.contains("store.postgres.pool"), "{err}");
        let err = read("store:\n  postgres: {}\n").unwrap_err();
        assert!(err.contains("missing required field `url`"), "{err}");
    }
}
