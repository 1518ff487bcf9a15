//! The `events` table: the history of what happened to each job and to the daemon, and the
//! sink every recorded event is forwarded to (the alerter). Kinds are [`EventKind`]s and a
//! restart's attempt is kept in its own columns, so nothing reads them back out of message
//! text. Recording a job's event also updates the job's summary (its latest event and restart
//! count) in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{At, Blocking, Result, collect, now_ms};
use crate::event::{Attempt, EventKind};

/// An event in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Event id.
    pub id: i64,
    /// Unix time (ms).
    pub time: i64,
    /// Job, for job events.
    pub job: Option<String>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened (`deployed`, `failed`, ...).
    pub kind: EventKind,
    /// Config commit it happened under.
    pub commit_id: Option<String>,
    /// That commit's author.
    pub author: Option<String>,
    /// That commit's subject.
    pub subject: Option<String>,
    /// Details.
    pub message: String,
    /// The restart attempt the event names (`restarted` by the restart policy).
    pub attempt: Option<Attempt>,
}

/// A new event.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Job, for job events.
    pub job: Option<&'a str>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened.
    pub kind: EventKind,
    /// Config commit it happened under.
    pub commit_id: Option<&'a str>,
    /// Details.
    pub message: &'a str,
    /// The restart attempt it names.
    pub attempt: Option<Attempt>,
}

impl<'a> NewEvent<'a> {
    /// A daemon-wide event of `kind` (set `job`, `run_id`, ... with struct update syntax).
    pub fn new(kind: EventKind, message: &'a str) -> NewEvent<'a> {
        NewEvent {
            job: None,
            run_id: None,
            kind,
            commit_id: None,
            message,
            attempt: None,
        }
    }
}

/// The id of an event handed to the sink although its write failed
/// ([`Blocking::forward_unstored`]); recorded events have ids from 1.
pub const UNSTORED: i64 = 0;

/// A callback every recorded event is forwarded to, after its transaction committed. It must
/// not block (the alerter only queues).
pub type EventSink = Arc<dyn Fn(&EventRow) + Send + Sync>;

/// The columns of an [`EventRow`], with its commit's author and subject.
const EVENT_COLUMNS: &str = "e.id, e.time, e.job, e.run_id, e.kind, e.commit_id, c.author, \
     c.subject, e.message, e.attempt, e.attempt_of";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<EventRow>> {
    Ok((|| {
        let id: i64 = r.get(0)?;
        let at = At {
            table: "events",
            row: &id,
        };
        let word: String = r.get(4)?;
        let kind = EventKind::parse(&word)
            .ok_or_else(|| at.error("kind", format!("unknown event kind `{word}`")))?;
        let attempt = match (r.get::<_, Option<u32>>(9)?, r.get::<_, Option<u32>>(10)?) {
            (Some(n), Some(of)) => Some(Attempt { n, of }),
            _ => None,
        };
        Ok(EventRow {
            id,
            time: r.get(1)?,
            job: r.get(2)?,
            run_id: r.get(3)?,
            kind,
            commit_id: r.get(5)?,
            author: r.get(6)?,
            subject: r.get(7)?,
            message: r.get(8)?,
            attempt,
        })
    })())
}

impl Blocking {
    /// Sets the callback every later [`Blocking::event`] and [`Blocking::apply_commit`] note is
    /// forwarded to (on every clone of this store).
    pub fn set_event_sink(&self, sink: EventSink) {
        *self.sink.lock() = Some(sink);
    }

    /// Hands committed events to the sink, if one is set.
    pub(super) fn forward(&self, events: &[EventRow]) {
        let sink = self.sink.lock().clone();
        if let Some(sink) = sink {
            for e in events {
                sink(e);
            }
        }
    }

    /// Hands an event the store could not record to the sink anyway, with id
    /// [`UNSTORED`]: a full disk must not silence the alert that says so.
    pub fn forward_unstored(&self, e: &NewEvent<'_>) {
        self.forward(&[EventRow {
            id: UNSTORED,
            time: now_ms(),
            job: e.job.map(str::to_string),
            run_id: e.run_id,
            kind: e.kind,
            commit_id: e.commit_id.map(str::to_string),
            author: None,
            subject: None,
            message: e.message.to_string(),
            attempt: e.attempt,
        }]);
    }

    /// Records an event (and, for a job's event, the job's summary); returns its id.
    pub fn event(&self, e: &NewEvent<'_>) -> Result<i64> {
        let time = now_ms();
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let id = insert_event(&tx, time, e)?;
        tx.commit()?;
        drop(conn);
        self.forward(&[EventRow {
            id,
            time,
            job: e.job.map(str::to_string),
            run_id: e.run_id,
            kind: e.kind,
            commit_id: e.commit_id.map(str::to_string),
            author: None,
            subject: None,
            message: e.message.to_string(),
            attempt: e.attempt,
        }]);
        Ok(id)
    }

    /// The latest events (of one job, or all), newest first.
    pub fn events(&self, job: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let conn = self.conn()?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN commits c ON c.id = e.commit_id
             {} ORDER BY e.id DESC LIMIT ?2",
            if job.is_some() {
                "WHERE e.job = ?1"
            } else {
                "WHERE ?1 IS NULL"
            }
        );
        let mut st = conn.prepare_cached(&sql)?;
        collect(st.query_map(params![job, limit as i64], event_row)?)
    }

    /// The latest event of each job that has one, by job.
    pub fn last_events(&self) -> Result<HashMap<String, EventRow>> {
        let conn = self.conn()?;
        // `jobs.last_event_id` is kept by a trigger: one indexed lookup per job.
        let mut st = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM jobs j JOIN events e ON e.id = j.last_event_id
             LEFT JOIN commits c ON c.id = e.commit_id"
        ))?;
        let mut out = HashMap::new();
        for row in st.query_map([], event_row)? {
            let e = row??;
            if let Some(job) = e.job.clone() {
                out.insert(job, e);
            }
        }
        Ok(out)
    }

    /// The events with these ids, by id (the latest events of a page of jobs).
    pub fn events_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, EventRow>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN commits c ON c.id = e.commit_id
             WHERE e.id = ?1"
        ))?;
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = st.query_row([id], event_row).optional()? {
                let e = e?;
                out.insert(e.id, e);
            }
        }
        Ok(out)
    }

    /// The highest event id recorded so far (0 when none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .conn()?
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// The restart policy's restarts of `job` still counted at `now_ms` (Unix ms): those since
    /// `since_ms` (the window's start) and after the job's latest reset (a new version
    /// deployed, a rollback, an operator's restart), as the attempts recorded say (a restart
    /// recorded as attempt `n` had `n - 1` counted restarts before it). Unix times (ms), newest
    /// first; at most `most` of them.
    pub fn counted_restarts(&self, job: &str, since_ms: i64, most: u32) -> Result<Vec<i64>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT time, attempt FROM events
             WHERE job = ?1 AND kind = ?2 AND attempt IS NOT NULL AND time >= ?3
               AND id > (SELECT COALESCE(MAX(id), 0) FROM events
                         WHERE job = ?1 AND kind IN (?4, ?5, ?6))
             ORDER BY id DESC LIMIT ?7",
        )?;
        let rows: Vec<(i64, u32)> = st
            .query_map(
                params![
                    job,
                    EventKind::Restarted.as_str(),
                    since_ms,
                    EventKind::Deployed.as_str(),
                    EventKind::RolledBack.as_str(),
                    EventKind::RestartRequested.as_str(),
                    i64::from(most)
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<std::result::Result<_, _>>()?;
        // The newest restart counted `n - 1` before it: older ones were forgotten (a new
        // version that did not deploy, or they left the window then).
        let counted = rows.first().map_or(0, |(_, n)| *n as usize);
        Ok(rows.into_iter().take(counted).map(|(t, _)| t).collect())
    }

    /// The restart attempt that started a run, when the restart policy started it.
    pub fn run_attempt(&self, run_id: i64) -> Result<Option<Attempt>> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT attempt, attempt_of FROM events
             WHERE run_id = ?1 AND attempt IS NOT NULL ORDER BY id LIMIT 1",
        )?;
        let mut rows = st.query([run_id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(Attempt {
            n: row.get(0)?,
            of: row.get(1)?,
        }))
    }
}

/// Inserts one event inside `tx` and keeps its job's summary (latest event, restart count).
pub(super) fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    time: i64,
    e: &NewEvent<'_>,
) -> Result<i64> {
    let (attempt, attempt_of) = (e.attempt.map(|a| a.n), e.attempt.map(|a| a.of));
    tx.prepare_cached(
        "INSERT INTO events (time, job, run_id, kind, commit_id, message, attempt, attempt_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        time,
        e.job,
        e.run_id,
        e.kind.as_str(),
        e.commit_id,
        e.message,
        attempt,
        attempt_of
    ])?;
    let id = tx.last_insert_rowid();
    if let Some(job) = e.job {
        tx.prepare_cached(
            "UPDATE jobs SET last_event_id = ?2, restarts = restarts + ?3 WHERE name = ?1",
        )?
        .execute(params![job, id, i64::from(e.kind.counts_as_restart())])?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::tests::{commit, spec_update};
    use super::*;

    #[test]
    fn events_reach_the_sink_after_they_are_recorded() {
        let s = Blocking::in_memory().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        s.set_event_sink(Arc::new(move |e: &EventRow| {
            seen2.lock().unwrap().push((e.id, e.kind));
        }));
        s.apply_commit(
            &commit("c1"),
            &[],
            &[(
                "a".into(),
                crate::event::JobEvent::Invalid {
                    errors: "jobs/a.yaml:1:1: bad".into(),
                },
            )],
        )
        .unwrap();
        let id = s
            .event(&NewEvent {
                job: Some("a"),
                commit_id: Some("c1"),
                ..NewEvent::new(EventKind::Failed, "exit 1")
            })
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (id, EventKind::Failed));
        assert_eq!(s.last_event_id().unwrap(), id);
    }

    #[test]
    fn each_job_keeps_its_latest_event_and_restart_count() {
        let s = Blocking::in_memory().unwrap();
        s.apply_commit(
            &commit("c1"),
            &[spec_update("a", "dev")],
            &[(
                "a".into(),
                crate::event::JobEvent::Planned { line: "add".into() },
            )],
        )
        .unwrap();
        for kind in [
            EventKind::Restarted,
            EventKind::Failed,
            EventKind::Restarted,
        ] {
            s.event(&NewEvent {
                job: Some("a"),
                ..NewEvent::new(kind, "m")
            })
            .unwrap();
        }
        s.event(&NewEvent::new(EventKind::RepoUnreachable, "x"))
            .unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&2));
        assert_eq!(s.last_events().unwrap()["a"].kind, "restarted");
        assert_eq!(s.last_events().unwrap().len(), 1);
    }

    #[test]
    fn counted_restarts_are_those_since_the_latest_reset_as_their_attempts_say() {
        let s = Blocking::in_memory().unwrap();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        let restart = |n| {
            s.event(&NewEvent {
                job: Some("a"),
                attempt: Some(Attempt { n, of: 3 }),
                ..NewEvent::new(EventKind::Restarted, "resubmitted")
            })
            .unwrap()
        };
        let plain = |kind| {
            s.event(&NewEvent {
                job: Some("a"),
                ..NewEvent::new(kind, "m")
            })
            .unwrap()
        };
        let times = |since| s.counted_restarts("a", since, 3).unwrap().len();
        restart(1);
        restart(2);
        assert_eq!(times(0), 2);
        assert_eq!(
            times(now_ms() + 60_000),
            0,
            "none within a window starting later"
        );
        // A new version that did not deploy left no reset event, but the next restart is
        // attempt 1 again: only it counts.
        plain(EventKind::BuildFailed);
        restart(1);
        assert_eq!(times(0), 1);
        // An operator's restart and a deployed version reset the count.
        plain(EventKind::RestartRequested);
        assert_eq!(times(0), 0);
        restart(1);
        plain(EventKind::Started);
        assert_eq!(times(0), 1);
        plain(EventKind::Deployed);
        assert_eq!(times(0), 0);
    }
}
