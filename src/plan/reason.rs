//! A plan item's reasons, typed: what later steps read back (an env change, what an adoption
//! takes over and what the cluster said of it) is kept in fields, and every reason is made
//! text only where it is shown ([`std::fmt::Display`], and as a string in JSON).

use serde::{Serialize, Serializer};

/// What `plan` knows of the job an adoption takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptCheck {
    /// The cluster was not asked: it is checked when the daemon applies the commit.
    Unchecked,
    /// The cluster holds this job (as [`crate::reconcile::takeover::describe`] says it).
    Found(String),
    /// The apply would be refused as the cluster stands now: why.
    Refused(String),
}

/// One reason of a plan item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `env` changed: the job moves from env `old` to env `new`.
    EnvChanged {
        /// The env it runs in.
        old: String,
        /// The env the file asks for.
        new: String,
    },
    /// `adopt`: the job takes over `target`, running on the cluster of env `env`.
    Adopt {
        /// The engine's job id or name.
        target: String,
        /// The env.
        env: String,
        /// What the cluster said of it.
        check: AdoptCheck,
    },
    /// A folder's `_defaults.yaml` above the job changed, and with it the job's merged file.
    DefaultsChanged {
        /// The defaults file (`jobs/team-a/_defaults.yaml`).
        file: String,
    },
    /// Any other line, written from typed facts where it is made and never read back.
    Line(String),
}

impl Reason {
    /// The envs of an env change.
    pub fn env_change(&self) -> Option<(&str, &str)> {
        match self {
            Reason::EnvChanged { old, new } => Some((old, new)),
            _ => None,
        }
    }

    /// The target and env of an adoption.
    pub fn adoption(&self) -> Option<(&str, &str)> {
        match self {
            Reason::Adopt { target, env, .. } => Some((target, env)),
            _ => None,
        }
    }
}

/// `reasons` as one line, `; ` between them.
pub fn joined(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::EnvChanged { old, new } => write!(f, "env: `{old}` → `{new}`"),
            Reason::Adopt { target, env, check } => {
                write!(
                    f,
                    "takes over `{target}` running on the cluster of env `{env}`, without a restart "
                )?;
                match check {
                    AdoptCheck::Unchecked => f.write_str(super::ADOPT_UNCHECKED),
                    AdoptCheck::Found(job) => write!(f, "(found: {job})"),
                    AdoptCheck::Refused(why) => {
                        write!(f, "(refused at apply as the cluster stands now: {why})")
                    }
                }
            }
            Reason::DefaultsChanged { file } => write!(f, "defaults changed: `{file}`"),
            Reason::Line(line) => f.write_str(line),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<String> for Reason {
    fn from(line: String) -> Reason {
        Reason::Line(line)
    }
}

impl From<&str> for Reason {
    fn from(line: &str) -> Reason {
        Reason::Line(line.to_string())
    }
}
