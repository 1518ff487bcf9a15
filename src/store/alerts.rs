//! The `alerts_sent` table: each alert delivery claimed and how it ended (used by
//! `crate::alert`), so nothing is ever sent twice, across restarts too.

use serde::Serialize;

use super::sql::p;
use super::{At, Blocking, Result, now_ms};
use crate::event::EventKind;

/// Where an alert delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Claimed, being sent.
    Sending,
    /// The far end took it.
    Sent,
    /// Every try failed.
    Failed,
    /// Not sent: the target's queue was full.
    Dropped,
}

words!(AlertStatus {
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
    Dropped => "dropped",
});

/// One alert delivery, as kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSentRow {
    /// Row id.
    pub id: i64,
    /// The event that fired it (the latest one, for a folded alert).
    pub event_id: i64,
    /// Job, for job events.
    pub job: Option<String>,
    /// The alert's event.
    pub event: EventKind,
    /// Config commit of the event.
    pub commit_id: Option<String>,
    /// `channel/email` or `channel/webhook`.
    pub target: String,
    /// How many repeats this alert folded in (0: none).
    pub folded: i64,
    /// Where the delivery is.
    pub status: AlertStatus,
    /// What the far end answered last (or why it could not be reached).
    pub answer: String,
    /// Delivery tries made.
    pub attempts: i64,
    /// Unix time (ms) it was fired.
    pub sent_at: i64,
}

/// A new alert delivery, claimed before it is sent.
#[derive(Debug, Clone)]
pub struct NewAlertSent<'a> {
    /// The event that fired it.
    pub event_id: i64,
    /// Job, for job events.
    pub job: Option<&'a str>,
    /// The alert's event.
    pub event: EventKind,
    /// Config commit of the event.
    pub commit_id: Option<&'a str>,
    /// `channel/email` or `channel/webhook`.
    pub target: &'a str,
    /// Repeats folded in.
    pub folded: i64,
}

impl Blocking {
    /// Claims the delivery of an alert to one target; false when that event was already
    /// claimed for it (so nothing is ever sent twice, across restarts too).
    pub fn claim_alert(&self, a: &NewAlertSent<'_>) -> Result<bool> {
        let n = self.sql(|db| {
            db.execute(
                "INSERT INTO alerts_sent
                     (event_id, job, event, commit_id, target, folded, status, sent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7) ON CONFLICT DO NOTHING",
                p![
                    a.event_id,
                    a.job,
                    a.event.as_str(),
                    a.commit_id,
                    a.target,
                    a.folded,
                    now_ms(),
                    AlertStatus::Sending.as_str(),
                ],
            )
        })?;
        Ok(n == 1)
    }

    /// Records how a claimed delivery ended.
    pub fn finish_alert(
        &self,
        event_id: i64,
        target: &str,
        status: AlertStatus,
        answer: &str,
        attempts: u32,
    ) -> Result<()> {
        self.sql(|db| {
            db.execute(
                "UPDATE alerts_sent SET status = ?3, answer = ?4, attempts = ?5
                 WHERE event_id = ?1 AND target = ?2",
                p![event_id, target, status.as_str(), answer, attempts],
            )
        })?;
        Ok(())
    }

    /// When an alert for (job, event, commit) was last fired, to any target.
    pub fn alert_last_fired(
        &self,
        job: Option<&str>,
        event: EventKind,
        commit_id: Option<&str>,
    ) -> Result<Option<i64>> {
        // `= ?1` or `IS NULL` rather than `IS NOT DISTINCT FROM ?1`, which PostgreSQL cannot
        // look up in an index.
        let is = |column: &str, n: u8, some: bool| {
            if some {
                format!("{column} = ?{n}")
            } else {
                format!("{column} IS NULL AND CAST(?{n} AS TEXT) IS NULL")
            }
        };
        let sql = format!(
            "SELECT MAX(sent_at) FROM alerts_sent WHERE {} AND event = ?2 AND {}",
            is("job", 1, job.is_some()),
            is("commit_id", 3, commit_id.is_some())
        );
        self.sql(|db| db.one(&sql, p![job, event.as_str(), commit_id]))
    }

    /// The latest alert deliveries, newest first.
    pub fn alerts_sent(&self, limit: usize) -> Result<Vec<AlertSentRow>> {
        self.sql(|db| {
            db.query_map(
                "SELECT id, event_id, job, event, commit_id, target, folded, status, answer,
                     attempts, sent_at FROM alerts_sent ORDER BY id DESC LIMIT ?1",
                p![limit as i64],
                |r| {
                    let id: i64 = r.get(0)?;
                    let at = At {
                        table: "alerts_sent",
                        row: &id,
                    };
                    Ok(AlertSentRow {
                        id,
                        event_id: r.get(1)?,
                        job: r.get(2)?,
                        event: at.word("event", &r.get::<String>(3)?, EventKind::parse)?,
                        commit_id: r.get(4)?,
                        target: r.get(5)?,
                        folded: r.get(6)?,
                        status: at.word("status", &r.get::<String>(7)?, AlertStatus::parse)?,
                        answer: r.get(8)?,
                        attempts: r.get(9)?,
                        sent_at: r.get(10)?,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_claims_are_unique_and_their_end_is_kept() {
        for s in crate::store::tests::stores() {
            let claim = NewAlertSent {
                event_id: 7,
                job: Some("a"),
                event: EventKind::Failed,
                commit_id: Some("c1"),
                target: "oncall/email",
                folded: 0,
            };
            assert!(s.claim_alert(&claim).unwrap());
            assert!(!s.claim_alert(&claim).unwrap(), "claimed once");
            let daemon = NewAlertSent {
                event_id: 8,
                job: None,
                event: EventKind::RepoUnreachable,
                commit_id: None,
                target: "oncall/webhook",
                folded: 2,
            };
            assert!(s.claim_alert(&daemon).unwrap());
            s.finish_alert(7, "oncall/email", AlertStatus::Sent, "250 ok", 1)
                .unwrap();
            assert!(
                s.alert_last_fired(Some("a"), EventKind::Failed, Some("c1"))
                    .unwrap()
                    .is_some()
            );
            assert_eq!(
                s.alert_last_fired(Some("a"), EventKind::Failed, None)
                    .unwrap(),
                None
            );
            assert!(
                s.alert_last_fired(None, EventKind::RepoUnreachable, None)
                    .unwrap()
                    .is_some(),
                "NULL job and commit match NULL"
            );
            let rows = s.alerts_sent(5).unwrap();
            assert_eq!(
                (rows[0].event_id, rows[0].folded, rows[0].status),
                (8, 2, AlertStatus::Sending)
            );
            let row = &rows[1];
            assert_eq!(
                (row.event, row.status, row.answer.as_str(), row.attempts),
                (EventKind::Failed, AlertStatus::Sent, "250 ok", 1)
            );
            for st in AlertStatus::ALL {
                assert_eq!(AlertStatus::parse(st.as_str()), Some(st));
            }
            // A row damaged on purpose.
            s.sql(|db| db.execute("UPDATE alerts_sent SET status = 'lost'", p![]))
                .unwrap();
            let err = s.alerts_sent(5).unwrap_err();
            assert!(err.to_string().contains("unknown status `lost`"), "{err}");
        }
    }
}
