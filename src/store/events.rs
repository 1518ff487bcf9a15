//! The `events` table: the history of what happened to each job and to the daemon, and the
//! sink every recorded event is forwarded to (the alerter). Kinds are [`EventKind`]s and a
//! restart's attempt is kept in its own columns, so nothing reads them back out of message
//! text. Recording a job's event also updates the job's summary (its latest event and restart
//! count) in the same transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::sql::{Backend, RowRef, Sql, ToValue, p};
use super::{At, Blocking, Result, StoreError, now_ms};
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
/// Event ids one statement of [`Blocking::events_by_ids`] asks for.
pub const IDS_AT_ONCE: usize = 500;

const EVENT_COLUMNS: &str = "e.id, e.time, e.job, e.run_id, e.kind, e.commit_id, c.author, \
     c.subject, e.message, e.attempt, e.attempt_of";

fn event_row(r: &dyn RowRef) -> Result<EventRow> {
    let id: i64 = r.get(0)?;
    let at = At {
        table: "events",
        row: &id,
    };
    let word: String = r.get(4)?;
    let kind = EventKind::parse(&word)
        .ok_or_else(|| at.error("kind", format!("unknown event kind `{word}`")))?;
    let attempt = match (r.get::<Option<u32>>(9)?, r.get::<Option<u32>>(10)?) {
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
        let epoch = self.epoch();
        let id = self.tx(|db| insert_event(db, time, e, epoch))?;
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
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN commits c ON c.id = e.commit_id
             {} ORDER BY e.id DESC LIMIT ?2",
            if job.is_some() {
                "WHERE e.job = ?1"
            } else {
                "WHERE CAST(?1 AS TEXT) IS NULL"
            }
        );
        self.sql(|db| db.query_map(&sql, p![job, limit as i64], event_row))
    }

    /// The latest event of each job that has one, by job.
    pub fn last_events(&self) -> Result<HashMap<String, EventRow>> {
        // `jobs.last_event_id` is kept by the event writes: one indexed lookup per job.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM jobs j JOIN events e ON e.id = j.last_event_id
             LEFT JOIN commits c ON c.id = e.commit_id"
        );
        let rows = self.sql(|db| db.query_map(&sql, p![], event_row))?;
        Ok(rows
            .into_iter()
            .filter_map(|e| Some((e.job.clone()?, e)))
            .collect())
    }

    /// The events with these ids, by id (the latest events of a page of jobs): one statement
    /// per [`IDS_AT_ONCE`] ids.
    pub fn events_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, EventRow>> {
        self.sql(|db| {
            let mut out = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_AT_ONCE) {
                let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN commits c ON c.id = e.commit_id
                     WHERE e.id IN ({})",
                    marks.join(", ")
                );
                let args: Vec<&dyn ToValue> = chunk.iter().map(|id| id as &dyn ToValue).collect();
                for e in db.query_map(&sql, &args, event_row)? {
                    out.insert(e.id, e);
                }
            }
            Ok(out)
        })
    }

    /// The highest event id recorded so far (0 when none).
    pub fn last_event_id(&self) -> Result<i64> {
        self.sql(|db| db.one("SELECT COALESCE(MAX(id), 0) FROM events", p![]))
    }

    /// The restart policy's restarts of `job` still counted at `now_ms` (Unix ms): those since
    /// `since_ms` (the window's start) and after the job's latest reset (a new version
    /// deployed, a rollback, an operator's restart), as the attempts recorded say (a restart
    /// recorded as attempt `n` had `n - 1` counted restarts before it). Unix times (ms), newest
    /// first; at most `most` of them.
    pub fn counted_restarts(&self, job: &str, since_ms: i64, most: u32) -> Result<Vec<i64>> {
        let rows: Vec<(i64, u32)> = self.sql(|db| {
            db.query_map(
                "SELECT time, attempt FROM events
                 WHERE job = ?1 AND kind = ?2 AND attempt IS NOT NULL AND time >= ?3
                   AND id > (SELECT COALESCE(MAX(id), 0) FROM events
                             WHERE job = ?1 AND kind IN (?4, ?5, ?6))
                 ORDER BY id DESC LIMIT ?7",
                p![
                    job,
                    EventKind::Restarted.as_str(),
                    since_ms,
                    EventKind::Deployed.as_str(),
                    EventKind::RolledBack.as_str(),
                    EventKind::RestartRequested.as_str(),
                    i64::from(most)
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        // The newest restart counted `n - 1` before it: older ones were forgotten (a new
        // version that did not deploy, or they left the window then).
        let counted = rows.first().map_or(0, |(_, n)| *n as usize);
        Ok(rows.into_iter().take(counted).map(|(t, _)| t).collect())
    }

    /// The restart attempt that started a run, when the restart policy started it.
    pub fn run_attempt(&self, run_id: i64) -> Result<Option<Attempt>> {
        self.sql(|db| {
            db.query_opt(
                "SELECT attempt, attempt_of FROM events
                 WHERE run_id = ?1 AND attempt IS NOT NULL ORDER BY id LIMIT 1",
                p![run_id],
                |r| {
                    Ok(Attempt {
                        n: r.get(0)?,
                        of: r.get(1)?,
                    })
                },
            )
        })
    }
}

/// Inserts one event inside a transaction and keeps its job's summary (latest event, restart
/// count).
/// `epoch` is the lease's under which it is written (`ha`), `None` without one.
pub(super) fn insert_event(
    db: &mut dyn Sql,
    time: i64,
    e: &NewEvent<'_>,
    epoch: Option<i64>,
) -> Result<i64> {
    let (attempt, attempt_of) = (e.attempt.map(|a| a.n), e.attempt.map(|a| a.of));
    let id: i64 = db.one(
        "INSERT INTO events (time, job, run_id, kind, commit_id, message, attempt, attempt_of,
             epoch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
        p![
            time,
            e.job,
            e.run_id,
            e.kind.as_str(),
            e.commit_id,
            e.message,
            attempt,
            attempt_of,
            epoch
        ],
    )?;
    if let Some(job) = e.job {
        db.execute(
            "UPDATE jobs SET last_event_id = ?2, restarts = restarts + ?3 WHERE name = ?1",
            p![job, id, i64::from(e.kind.counts_as_restart())],
        )?;
    }
    Ok(id)
}

/// Events per statement in [`insert_events`] (8 parameters each).
const EVENT_BATCH: usize = 500;

/// Inserts `events`, all at `time`, as [`insert_event`] does each, and keeps each job's
/// summary; their ids, in order. On Postgres every statement is a round trip, so the events go
/// in multi-row statements and the summaries in one update per batch: a first commit of 10,000
/// jobs records its 10,000 plan lines in 40 statements, not 20,000.
pub(super) fn insert_events(
    db: &mut dyn Sql,
    time: i64,
    events: &[NewEvent<'_>],
    epoch: Option<i64>,
) -> Result<Vec<i64>> {
    if db.backend() != Backend::Postgres {
        return events
            .iter()
            .map(|e| insert_event(db, time, e, epoch))
            .collect();
    }
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(EVENT_BATCH) {
        let cols: Vec<(&str, Option<u32>, Option<u32>)> = chunk
            .iter()
            .map(|e| {
                let (n, of) = (e.attempt.map(|a| a.n), e.attempt.map(|a| a.of));
                (e.kind.as_str(), n, of)
            })
            .collect();
        let mut sql = String::from(
            "INSERT INTO events (time, job, run_id, kind, commit_id, message, attempt, \
             attempt_of, epoch) VALUES ",
        );
        let mut params: Vec<&dyn ToValue> = Vec::with_capacity(chunk.len() * 9);
        for (i, (e, (kind, n, of))) in chunk.iter().zip(&cols).enumerate() {
            let at = params.len();
            if i > 0 {
                sql.push_str(", ");
            }
            let marks: Vec<String> = (1..=9).map(|k| format!("?{}", at + k)).collect();
            sql.push_str(&format!("({})", marks.join(", ")));
            params.extend([
                &time as &dyn ToValue,
                &e.job,
                &e.run_id,
                kind,
                &e.commit_id,
                &e.message,
                n,
                of,
                &epoch,
            ]);
        }
        sql.push_str(" RETURNING id");
        let mut made: Vec<i64> = db.query_map(&sql, &params, |r| r.get(0))?;
        if made.len() != chunk.len() {
            return Err(StoreError::NoRow);
        }
        // Identity values are drawn row by row in the order of the VALUES list.
        made.sort_unstable();
        ids.extend(made);
    }
    // Each job's latest event and the restarts among them, one row a job.
    let mut summary: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (e, id) in events.iter().zip(&ids) {
        if let Some(job) = e.job {
            let s = summary.entry(job).or_insert((*id, 0));
            s.0 = s.0.max(*id);
            s.1 += i64::from(e.kind.counts_as_restart());
        }
    }
    let rows: Vec<(&str, i64, i64)> = summary.into_iter().map(|(j, (id, r))| (j, id, r)).collect();
    for chunk in rows.chunks(EVENT_BATCH) {
        let mut sql = String::from(
            "UPDATE jobs SET last_event_id = v.id, restarts = jobs.restarts + v.r FROM (VALUES ",
        );
        let mut params: Vec<&dyn ToValue> = Vec::with_capacity(chunk.len() * 3);
        for (i, (job, id, r)) in chunk.iter().enumerate() {
            let at = params.len();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(?{}::text, ?{}::bigint, ?{}::bigint)",
                at + 1,
                at + 2,
                at + 3
            ));
            params.extend([job as &dyn ToValue, id, r]);
        }
        sql.push_str(") AS v(name, id, r) WHERE jobs.name = v.name");
        db.execute(&sql, &params)?;
    }
    Ok(ids)
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Mutex;

    use super::super::tests::{commit, spec_update};
    use super::*;

    /// Rows for jobs `names` (pending, no spec), written straight into `jobs` so the tests of
    /// this part of the store need none of the job operations.
    pub(crate) fn add_jobs(s: &Blocking, names: &[&str]) {
        s.sql(|db| {
            for name in names {
                db.execute(
                    "INSERT INTO jobs (name, path, state, updated_at) VALUES (?1, ?2, ?3, 0)",
                    p![name, format!("jobs/{name}.yaml"), "pending"],
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    /// A commit row, written straight into `commits`.
    pub(crate) fn add_commit(s: &Blocking, id: &str) {
        s.sql(|db| {
            db.execute(
                "INSERT INTO commits (id, author, subject, seen_at) VALUES (?1, ?2, ?3, 0)",
                p![id, "Ann <ann@example.com>", "s"],
            )
        })
        .unwrap();
    }

    #[test]
    fn events_inserted_together_keep_their_order_and_each_jobs_summary() {
        for s in crate::store::tests::stores() {
            add_jobs(&s, &["a", "b", "c"]);
            // More than one batch; every seventh a restart; one daemon event.
            let messages: Vec<String> = (0..1_203).map(|i| format!("line {i}")).collect();
            let jobs = ["a", "b", "c"];
            let mut events: Vec<NewEvent<'_>> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| NewEvent {
                    job: Some(jobs[i % 3]),
                    ..NewEvent::new(
                        if i % 7 == 0 {
                            EventKind::Restarted
                        } else {
                            EventKind::Failed
                        },
                        m,
                    )
                })
                .collect();
            events.push(NewEvent::new(EventKind::RepoReachable, "daemon"));
            let ids = s.sql(|db| insert_events(db, 5, &events, None)).unwrap();
            assert_eq!(ids.len(), events.len(), "{:?}", s.backend());
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{:?}", s.backend());
            let stored: HashMap<i64, EventRow> = s
                .events(None, 2_000)
                .unwrap()
                .into_iter()
                .map(|e| (e.id, e))
                .collect();
            for (e, id) in events.iter().zip(&ids) {
                let row = &stored[id];
                assert_eq!(
                    (row.job.as_deref(), row.message.as_str()),
                    (e.job, e.message)
                );
                assert_eq!(row.kind, e.kind);
            }
            let last = s.last_events().unwrap();
            assert_eq!(last["a"].message, "line 1200", "{:?}", s.backend());
            assert_eq!(last["b"].message, "line 1201");
            assert_eq!(last["c"].message, "line 1202");
            let restarts = s.restart_counts().unwrap();
            let want = |r: usize| (0..1_203).filter(|i| i % 3 == r && i % 7 == 0).count() as u64;
            assert_eq!(restarts.get("a"), Some(&want(0)), "{:?}", s.backend());
            assert_eq!(restarts.get("b"), Some(&want(1)));
            assert_eq!(restarts.get("c"), Some(&want(2)));
        }
    }

    #[test]
    fn events_are_recorded_read_back_and_forwarded_on_every_backend() {
        for s in crate::store::tests::stores() {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            s.set_event_sink(Arc::new(move |e: &EventRow| {
                seen2.lock().unwrap().push((e.id, e.kind));
            }));
            add_jobs(&s, &["a", "b"]);
            add_commit(&s, "c1");
            assert_eq!(s.last_event_id().unwrap(), 0);
            let failed = s
                .event(&NewEvent {
                    job: Some("a"),
                    commit_id: Some("c1"),
                    ..NewEvent::new(EventKind::Failed, "exit 1")
                })
                .unwrap();
            let restarted = s
                .event(&NewEvent {
                    job: Some("a"),
                    run_id: Some(7),
                    attempt: Some(Attempt { n: 2, of: 3 }),
                    ..NewEvent::new(EventKind::Restarted, "resubmitted")
                })
                .unwrap();
            let daemon = s
                .event(&NewEvent::new(EventKind::RepoUnreachable, "x"))
                .unwrap();
            assert_eq!(
                *seen.lock().unwrap(),
                [
                    (failed, EventKind::Failed),
                    (restarted, EventKind::Restarted),
                    (daemon, EventKind::RepoUnreachable)
                ]
            );
            assert_eq!(s.last_event_id().unwrap(), daemon);
            let all = s.events(None, 10).unwrap();
            assert_eq!(
                all.iter().map(|e| e.id).collect::<Vec<_>>(),
                [daemon, restarted, failed]
            );
            let of_a = s.events(Some("a"), 1).unwrap();
            assert_eq!(
                (of_a.len(), of_a[0].attempt, of_a[0].run_id),
                (1, Some(Attempt { n: 2, of: 3 }), Some(7))
            );
            let by_id = s.events_by_ids(&[failed, daemon, daemon + 100]).unwrap();
            assert_eq!(by_id.len(), 2);
            let f = &by_id[&failed];
            assert_eq!(
                (
                    f.commit_id.as_deref(),
                    f.author.as_deref(),
                    f.message.as_str()
                ),
                (Some("c1"), Some("Ann <ann@example.com>"), "exit 1")
            );
            assert_eq!(s.run_attempt(7).unwrap(), Some(Attempt { n: 2, of: 3 }));
            assert_eq!(s.run_attempt(8).unwrap(), None);
            let last = s.last_events().unwrap();
            assert_eq!(
                (last.len(), last["a"].id, last.contains_key("b")),
                (1, restarted, false)
            );
            // A kind this build does not know is an error naming the row.
            s.sql(|db| {
                db.execute(
                    "UPDATE events SET kind = 'exploded' WHERE id = ?1",
                    p![daemon],
                )
            })
            .unwrap();
            let err = s.events(None, 10).unwrap_err();
            assert!(err.to_string().contains("`exploded`"), "{err}");
        }
    }

    #[test]
    fn more_ids_than_one_statement_takes_are_all_read() {
        for s in crate::store::tests::stores() {
            add_jobs(&s, &["a"]);
            let ids: Vec<i64> = (0..IDS_AT_ONCE + 7)
                .map(|i| {
                    s.event(&NewEvent {
                        job: Some("a"),
                        ..NewEvent::new(EventKind::Failed, &format!("exit {i}"))
                    })
                    .unwrap()
                })
                .collect();
            let by_id = s.events_by_ids(&ids).unwrap();
            assert_eq!(by_id.len(), ids.len());
            let last = ids[ids.len() - 1];
            assert_eq!(by_id[&last].message, format!("exit {}", IDS_AT_ONCE + 6));
            assert!(s.events_by_ids(&[]).unwrap().is_empty());
        }
    }

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
    fn events_written_in_an_operations_transaction_are_all_kept() {
        for s in crate::store::tests::stores() {
            add_jobs(&s, &["a"]);
            let ids = s
                .tx(|db| {
                    let mut ids = Vec::new();
                    for kind in [EventKind::Restarted, EventKind::Failed] {
                        let e = NewEvent {
                            job: Some("a"),
                            ..NewEvent::new(kind, "m")
                        };
                        ids.push(insert_event(&mut *db, 5, &e, None)?);
                    }
                    Ok(ids)
                })
                .unwrap();
            let stored: Vec<i64> = s
                .events(Some("a"), 10)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(stored, [ids[1], ids[0]]);
            assert_eq!(s.last_events().unwrap()["a"].id, ids[1]);
        }
    }

    #[test]
    fn each_job_keeps_its_latest_event_and_restart_count() {
        for s in crate::store::tests::stores() {
            add_jobs(&s, &["a"]);
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
            let restarts: i64 = s
                .sql(|db| db.one("SELECT restarts FROM jobs WHERE name = ?1", p!["a"]))
                .unwrap();
            assert_eq!(restarts, 2);
            assert_eq!(s.last_events().unwrap()["a"].kind, "restarted");
            assert_eq!(s.last_events().unwrap().len(), 1);
        }
    }

    #[test]
    fn each_job_keeps_its_restart_count_through_a_commit() {
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
        s.event(&NewEvent {
            job: Some("a"),
            ..NewEvent::new(EventKind::Restarted, "m")
        })
        .unwrap();
        assert_eq!(s.restart_counts().unwrap().get("a"), Some(&1));
        assert_eq!(s.last_events().unwrap()["a"].kind, "restarted");
    }

    #[test]
    fn counted_restarts_are_those_since_the_latest_reset_as_their_attempts_say() {
        for s in crate::store::tests::stores() {
            counted_restarts_on(&s);
        }
    }

    fn counted_restarts_on(s: &Blocking) {
        add_jobs(s, &["a"]);
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
