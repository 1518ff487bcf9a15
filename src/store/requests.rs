//! Requests a standby recorded for the leader (`ha`): a restart or a sync asked of a daemon that
//! does not lead is kept here, announced with `NOTIFY jobkeeper_requests`, and taken by the
//! leader, which carries it out. Taking deletes the rows in a fenced write, so only the daemon
//! that holds the lease can take them, and each is taken once.

use super::sql::{Backend, p};
use super::{Blocking, Result, now_ms};

/// What a standby was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// Restart this job's run.
    Restart(String),
    /// Fetch the config repo and apply its tip (`POST /api/v1/sync`, a git webhook).
    Sync,
}

/// A recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id.
    pub id: i64,
    /// What was asked.
    pub kind: RequestKind,
    /// Who asked (the token's name, as the audit event says).
    pub who: String,
    /// The standby that recorded it.
    pub node: String,
    /// When (ms since the Unix epoch).
    pub at: i64,
}

impl Blocking {
    /// Records `kind`, asked by `who` of this standby, for the leader; returns its id.
    pub fn record_request(&self, kind: &RequestKind, who: &str) -> Result<i64> {
        let (name, job) = match kind {
            RequestKind::Restart(job) => ("restart", Some(job.as_str())),
            RequestKind::Sync => ("sync", None),
        };
        let node = self.node().to_string();
        self.tx(|db| {
            let id: i64 = db.one(
                "INSERT INTO requests (kind, job, who, node, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 RETURNING id",
                p![name, job, who, node.as_str(), now_ms()],
            )?;
            if db.backend() == Backend::Postgres {
                db.execute("SELECT pg_notify('jobkeeper_requests', '')", p![])?;
            }
            Ok(id)
        })
    }

    /// Takes every recorded request, oldest first (a fenced write: only the leader takes them).
    pub fn take_requests(&self) -> Result<Vec<Request>> {
        self.sql(|db| {
            db.query_map(
                "DELETE FROM requests RETURNING id, kind, job, who, node, at",
                p![],
                |r| {
                    let kind: String = r.get(1)?;
                    let job: Option<String> = r.get(2)?;
                    Ok((r.get::<i64>(0)?, kind, job, r.get(3)?, r.get(4)?, r.get(5)?))
                },
            )
        })
        .map(|rows| {
            let mut out: Vec<Request> = rows
                .into_iter()
                .filter_map(|(id, kind, job, who, node, at)| {
                    let kind = match (kind.as_str(), job) {
                        ("restart", Some(job)) => RequestKind::Restart(job),
                        ("sync", _) => RequestKind::Sync,
                        _ => return None,
                    };
                    Some(Request {
                        id,
                        kind,
                        who,
                        node,
                        at,
                    })
                })
                .collect();
            out.sort_by_key(|r| r.id);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once_in_order_on_every_backend() {
        for s in crate::store::tests::stores() {
            let s = s.with_node("ops-2");
            s.record_request(&RequestKind::Restart("a".into()), "token-payments")
                .unwrap();
            s.record_request(&RequestKind::Sync, "api_token_file")
                .unwrap();
            let taken = s.take_requests().unwrap();
            let kinds: Vec<_> = taken.iter().map(|r| r.kind.clone()).collect();
            assert_eq!(kinds, [RequestKind::Restart("a".into()), RequestKind::Sync]);
            assert!(taken.iter().all(|r| r.node == "ops-2"));
            assert_eq!(taken[0].who, "token-payments");
            assert!(s.take_requests().unwrap().is_empty());
        }
    }
}
