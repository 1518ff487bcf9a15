//! The `max_removals` safety valve: a commit that removes more of the jobs than the daemon
//! config allows is held (nothing of it applied, every job keeps running) until a commit not yet
//! applied carries the trailer `Jobkeeper-Allow-Removals: <reason>`. The check is pure; the
//! daemon ([`crate::sync`]) and `jobkeeper plan` give it the same facts.

use serde::Serialize;

use crate::repo::RawCommit;
use crate::settings::MaxRemovals;

/// The trailer that lets a commit remove more than `max_removals` of the jobs.
pub const ALLOW_TRAILER: &str = "Jobkeeper-Allow-Removals";

/// A commit that carries [`ALLOW_TRAILER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// The commit's short id.
    pub commit: String,
    /// The trailer's reason.
    pub reason: String,
}

/// What a commit's removals come to against `max_removals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removals {
    /// Jobs the commit removes.
    pub removed: usize,
    /// Jobs there were before it.
    pub of: usize,
    /// The `max_removals` setting, as written (`50%`, `20`).
    pub max_removals: String,
    /// The most jobs the setting lets one commit remove out of `of`.
    pub limit: usize,
    /// The first commit (tip first) carrying the trailer, when one does.
    pub allowed: Option<Allowance>,
}

impl Removals {
    /// True when more jobs are removed than allowed.
    pub fn over(&self) -> bool {
        self.removed > self.limit
    }

    /// True when the commit is held: over the limit and no trailer allows it.
    pub fn held(&self) -> bool {
        self.over() && self.allowed.is_none()
    }

    /// What `plan` says about it, when it is over the limit.
    pub fn line(&self) -> Option<String> {
        if !self.over() {
            return None;
        }
        let (removed, of, max) = (self.removed, self.of, &self.max_removals);
        Some(match &self.allowed {
            None => format!(
                "held: removes {removed} of {of} jobs, more than max_removals ({max}); the daemon \
                 applies nothing of it until a commit carries the trailer \
                 `{ALLOW_TRAILER}: <reason>`"
            ),
            Some(a) => format!(
                "removes {removed} of {of} jobs, more than max_removals ({max}): allowed by \
                 commit {} (`{ALLOW_TRAILER}: {}`)",
                a.commit, a.reason
            ),
        })
    }
}

/// Checks `removed` of `of` jobs against `max`, looking for the trailer in `commits` (the
/// commits not yet applied, tip first).
pub fn check(max: MaxRemovals, removed: usize, of: usize, commits: &[RawCommit]) -> Removals {
    let limit = max.limit(of);
    let allowed = if removed > limit {
        commits.iter().find_map(|c| {
            c.trailer(ALLOW_TRAILER).map(|reason| Allowance {
                commit: c.id.to_string()[..8].to_string(),
                reason,
            })
        })
    } else {
        None
    };
    Removals {
        removed,
        of,
        max_removals: max.to_string(),
        limit,
        allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Oid;

    fn commit(message: &str) -> RawCommit {
        RawCommit {
            id: Oid::from_str("1234567890abcdef1234567890abcdef12345678").unwrap(),
            tree: Oid::zero(),
            parents: Vec::new(),
            author: "a <a@x>".into(),
            time: 0,
            message: message.into(),
            problem: None,
        }
    }

    #[test]
    fn half_of_the_jobs_is_the_default_and_one_job_may_always_go() {
        let max = MaxRemovals::default();
        assert!(!check(max, 5, 10, &[]).held());
        assert!(check(max, 6, 10, &[]).held());
        assert!(!check(max, 1, 1, &[]).held(), "one of one is not held");
        assert!(check(max, 2, 2, &[]).held());
        assert!(!check(MaxRemovals::Percent(100), 10, 10, &[]).held());
        assert!(check(MaxRemovals::Count(3), 4, 100, &[]).held());
        assert!(!check(MaxRemovals::Count(3), 3, 4, &[]).held());
    }

    #[test]
    fn a_trailer_in_any_new_commit_allows_and_names_itself() {
        let max = MaxRemovals::default();
        let plain = commit("move jobs\n");
        let allow = commit("ok\n\nJobkeeper-Allow-Removals: retiring team-a\n");
        let r = check(max, 10, 10, &[plain.clone(), allow]);
        assert!(!r.held());
        assert_eq!(r.allowed.as_ref().unwrap().reason, "retiring team-a");
        assert!(
            r.line().unwrap().contains("allowed by commit 12345678"),
            "{r:?}"
        );
        let r = check(
            max,
            10,
            10,
            &[plain, commit("x\n\nJobkeeper-Allow-Removals:  \n")],
        );
        assert!(r.held(), "an empty reason does not count");
        assert!(r.line().unwrap().starts_with("held: removes 10 of 10 jobs"));
        assert_eq!(check(max, 1, 10, &[]).line(), None);
    }
}
