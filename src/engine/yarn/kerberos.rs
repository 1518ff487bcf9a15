//! Kerberos for a YARN env: SPNEGO tokens for the RM, and the environment the Flink CLI gets,
//! from tickets jobkeeper takes from the env's keytab into a credential cache of its own under
//! the state folder (`state_dir/krb5/<principal>.cc`), never the host's default cache, so a
//! `kinit` run on the host cannot break it.
//!
//! GSSAPI reads the cache and keytab only from its process environment (`KRB5CCNAME`,
//! `KRB5_CLIENT_KTNAME`), which a running daemon cannot change safely; so each token is made
//! by jobkeeper's own binary in a child process (`jobkeeper gss-token`, [`super::gss`], MIT
//! GSSAPI through the `libgssapi` crate) started with exactly that environment. MIT's client
//! keytab support takes new tickets when the cached ones are past half their life or expired,
//! so tickets are renewed before they run out. The RM's `hadoop.auth` cookie makes handshakes
//! rare ([`super::rm`]): one per cookie lifetime, not one per request.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one token may take (the KDC is asked when the cache holds no valid ticket).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The name of the hidden command that makes a token.
pub const COMMAND: &str = "gss-token";

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum KerberosError {
    /// The keytab is missing or unreadable.
    #[error("kerberos: cannot read the keytab {path}: {reason}")]
    Keytab {
        /// The keytab.
        path: String,
        /// Why.
        reason: String,
    },
    /// GSSAPI or the KDC refused (a principal not in the keytab or the KDC, no KDC).
    #[error("kerberos: no SPNEGO token for {service} as {principal}: {reason}")]
    Refused {
        /// The client principal.
        principal: String,
        /// The service (`HTTP@rm1`).
        service: String,
        /// What GSSAPI said.
        reason: String,
    },
    /// The token maker could not be started or did not finish.
    #[error("kerberos: {0}")]
    Helper(String),
}

/// The Kerberos identity of one env.
#[derive(Debug, Clone)]
pub struct Kerberos {
    /// The client principal.
    pub principal: String,
    /// Its keytab.
    pub keytab: PathBuf,
    /// jobkeeper's own credential cache for it.
    pub ccache: PathBuf,
    /// The krb5.conf GSSAPI reads (`KRB5_CONFIG`); `None`: the daemon's own, else the host's.
    pub krb5_conf: Option<PathBuf>,
}

impl Kerberos {
    /// The identity `principal` with `keytab`, its cache under `state_dir/krb5`.
    pub fn new(
        principal: &str,
        keytab: &Path,
        krb5_conf: Option<&Path>,
        state_dir: &Path,
    ) -> Kerberos {
        let file: String = principal
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Kerberos {
            principal: principal.to_string(),
            keytab: keytab.to_path_buf(),
            ccache: state_dir.join("krb5").join(format!("{file}.cc")),
            krb5_conf: krb5_conf.map(Path::to_path_buf),
        }
    }

    /// The environment a Kerberos client of this identity runs with: jobkeeper's cache and
    /// the keytab GSSAPI takes new tickets from (plus the daemon's own `KRB5_CONFIG`, if set).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "KRB5CCNAME".to_string(),
                format!("FILE:{}", self.ccache.display()),
            ),
            (
                "KRB5_CLIENT_KTNAME".to_string(),
                format!("FILE:{}", self.keytab.display()),
            ),
        ];
        match &self.krb5_conf {
            Some(conf) => env.push(("KRB5_CONFIG".into(), conf.display().to_string())),
            None => {
                if let Ok(conf) = std::env::var("KRB5_CONFIG") {
                    env.push(("KRB5_CONFIG".into(), conf));
                }
            }
        }
        env
    }

    /// Checks the keytab can be read.
    pub fn check_keytab(&self) -> Result<(), KerberosError> {
        std::fs::File::open(&self.keytab)
            .map(|_| ())
            .map_err(|e| KerberosError::Keytab {
                path: self.keytab.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// A SPNEGO token (base64) for `HTTP@host`.
    pub async fn token(&self, host: &str) -> Result<String, KerberosError> {
        self.check_keytab()?;
        if let Some(dir) = self.ccache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let service = format!("HTTP@{host}");
        let helper = helper_path().ok_or_else(|| {
            KerberosError::Helper("cannot find the jobkeeper binary to make a token".into())
        })?;
        let mut cmd = tokio::process::Command::new(&helper);
        cmd.arg(COMMAND)
            .arg("--principal")
            .arg(&self.principal)
            .arg("--service")
            .arg(&service)
            .env_clear()
            .envs(self.env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(TOKEN_TIMEOUT, cmd.output())
            .await
            .map_err(|_| {
                KerberosError::Helper(format!(
                    "no token for {service} within {TOKEN_TIMEOUT:?} (is the KDC answering?)"
                ))
            })?
            .map_err(|e| KerberosError::Helper(format!("cannot run {}: {e}", helper.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !stdout.is_empty() {
            return Ok(stdout);
        }
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(KerberosError::Refused {
            principal: self.principal.clone(),
            service,
            reason: if reason.is_empty() {
                format!("exit {}", out.status)
            } else {
                reason
            },
        })
    }
}

/// The jobkeeper binary: this process when it is jobkeeper, else the `jobkeeper` beside it or
/// one folder up (a test binary under `target/debug/deps`).
fn helper_path() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    if me.file_name().is_some_and(|n| n == "jobkeeper") {
        return Some(me);
    }
    let dir = me.parent()?;
    [dir.join("jobkeeper"), dir.parent()?.join("jobkeeper")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Tokens for a JobManager behind a gateway that demands SPNEGO; a token that cannot be made
/// means waiting, like an RM that cannot be asked.
#[async_trait::async_trait]
impl crate::engine::flink::negotiate::TokenSource for Kerberos {
    async fn token(&self, host: &str) -> Result<String, crate::engine::EngineError> {
        Kerberos::token(self, host)
            .await
            .map_err(|e| crate::engine::EngineError::Unreachable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_jobkeeper_s_own_under_the_state_folder() {
        let k = Kerberos::new(
            "jobkeeper/ops-1@EXAMPLE.COM",
            Path::new("/etc/jk.keytab"),
            None,
            Path::new("/var/lib/jobkeeper"),
        );
        assert_eq!(
            k.ccache,
            Path::new("/var/lib/jobkeeper/krb5/jobkeeper_ops-1_EXAMPLE.COM.cc")
        );
        let env = k.env();
        assert!(env.contains(&(
            "KRB5CCNAME".into(),
            "FILE:/var/lib/jobkeeper/krb5/jobkeeper_ops-1_EXAMPLE.COM.cc".into()
        )));
        assert!(env.contains(&("KRB5_CLIENT_KTNAME".into(), "FILE:/etc/jk.keytab".into())));
    }

    #[test]
    fn a_missing_keytab_is_named() {
        let k = Kerberos::new(
            "a@B",
            Path::new("/nonexistent/jk.keytab"),
            None,
            Path::new("/tmp"),
        );
        let e = k.check_keytab().unwrap_err().to_string();
        assert!(
            e.starts_with("kerberos: cannot read the keytab /nonexistent/jk.keytab"),
            "{e}"
        );
    }
}
