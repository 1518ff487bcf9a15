//! The `events` table: the history of what happened to each job and to the daemon, and the
//! sink every recorded event is forwarded to (the alerter).

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store, now_ms};

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
    pub kind: String,
    /// Config commit it happened under.
    pub commit_id: Option<String>,
    /// That commit's author.
    pub author: Option<String>,
    /// That commit's subject.
    pub subject: Option<String>,
    /// Details.
    pub message: String,
}

/// A new event.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    /// Job, for job events.
    pub job: Option<&'a str>,
    /// Run, when about one.
    pub run_id: Option<i64>,
    /// What happened.
    pub kind: &'a str,
    /// Config commit it happened under.
    pub commit_id: Option<&'a str>,
    /// Details.
    pub message: &'a str,
}

/// A callback every recorded event is forwarded to, after its transaction committed. It must
/// not block (the alerter only queues).
pub type EventSink = Arc<dyn Fn(&EventRow) + Send + Sync>;

/// The columns of an [`EventRow`], with its commit's author and subject.
const EVENT_COLUMNS: &str =
    "e.id, e.time, e.job, e.run_id, e.kind, e.commit_id, c.author, c.subject, e.message";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        time: r.get(1)?,
        job: r.get(2)?,
        run_id: r.get(3)?,
        kind: r.get(4)?,
        commit_id: r.get(5)?,
        author: r.get(6)?,
        subject: r.get(7)?,
        message: r.get(8)?,
    })
}

impl Store {
    /// Sets the callback every later [`Store::event`] and [`Store::apply_commit`] note is
    /// forwarded to (on every clone of this store).
    pub fn set_event_sink(&self, sink: EventSink) {
        *self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sink);
    }

    /// Hands committed events to the sink, if one is set.
    pub(super) fn forward(&self, events: &[EventRow]) {
        let sink = self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(sink) = sink {
            for e in events {
                sink(e);
            }
        }
    }

    /// Records an event; returns its id.
    pub fn event(&self, e: &NewEvent<'_>) -> Result<i64> {
        let time = now_ms();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (time, job, run_id, kind, commit_id, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![time, e.job, e.run_id, e.kind, e.commit_id, e.message],
        )?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.forward(&[EventRow {
            id,
            time,
            job: e.job.map(str::to_string),
            run_id: e.run_id,
            kind: e.kind.to_string(),
            commit_id: e.commit_id.map(str::to_string),
            author: None,
            subject: None,
            message: e.message.to_string(),
        }]);
        Ok(id)
    }

    /// The latest events (of one job, or all), newest first.
    pub fn events(&self, job: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let conn = self.conn();
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
        let rows = st
            .query_map(params![job, limit as i64], event_row)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The latest event of each job that has one, by job.
    pub fn last_events(&self) -> Result<HashMap<String, EventRow>> {
        let conn = self.conn();
        // `jobs.last_event_id` is kept by a trigger: one indexed lookup per job.
        let mut st = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM jobs j JOIN events e ON e.id = j.last_event_id
             LEFT JOIN commits c ON c.id = e.commit_id"
        ))?;
        let mut out = HashMap::new();
        for row in st.query_map([], event_row)? {
            let e = row?;
            if let Some(job) = e.job.clone() {
                out.insert(job, e);
            }
        }
        Ok(out)
    }

    /// The highest event id recorded so far (0 when none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// The events recorded about one run as `kind message`, oldest first.
    pub fn run_event_kinds(&self, run_id: i64) -> Result<Vec<String>> {
        // Each as "kind message": the message of `restarted` names the attempt.
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT kind || ' ' || message FROM events WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([run_id], |r| r.get(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::tests::{commit, spec_update};
    use super::*;

    #[test]
    fn events_reach_the_sink_after_they_are_recorded() {
        let s = Store::in_memory().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        s.set_event_sink(Arc::new(move |e: &EventRow| {
            seen2.lock().unwrap().push((e.id, e.kind.clone()));
        }));
        s.apply_commit(
            &commit("c1"),
            &[],
            &[("a".into(), "invalid".into(), "jobs/a.yaml:1:1: bad".into())],
        )
        .unwrap();
        let id = s
            .event(&NewEvent {
                job: Some("a"),
                kind: "failed",
                commit_id: Some("c1"),
                message: "exit 1",
                ..NewEvent::default()
            })
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (id, "failed".to_string()));
        assert_eq!(s.last_event_id().unwrap(), id);
    }

    #[test]
    fn each_job_keeps_its_latest_event_and_restart_count() {
        let s = Store::in_memory().unwrap();
        s.apply_commit(
            &commit("c1"),
            &[spec_update("a", "dev")],
            &[("a".into(), "planned".into(), "add".into())],
        )
        .unwrap();
        for kind in ["restarted", "failed", "restarted"] {
            s.event(&NewEvent {
                job: Some("a"),
                kind,
                message: "m",
                ..NewEvent::default()
            })
            .unwrap();
        }
        s.event(&NewEvent {
            kind: "repo_unreachable",
            message: "x",
            ..NewEvent::default()
        })
        .unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&2));
        assert_eq!(s.last_events().unwrap()["a"].kind, "restarted");
        assert_eq!(s.last_events().unwrap().len(), 1);
    }
}
