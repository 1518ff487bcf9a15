//! Fencing: with `ha`, the leader's writes commit only while its lease is still the one the
//! `leader` row holds. Every write transaction on PostgreSQL opens with
//! `SELECT … FROM leader … FOR SHARE` on the leader's epoch and holder: a takeover's `UPDATE`
//! of that row waits for the transactions in flight, and every transaction after it finds no
//! row, rolls back and answers [`StoreError::Fenced`]. A daemon that meets that answer steps
//! down at once ([`Fences::on_fenced`]).
//!
//! Statements outside a transaction that write (anything but a `SELECT`) get the same check:
//! the first one opens a fenced transaction that the call commits at its end
//! ([`FencedSql`]). Reads are never fenced, so a deposed leader keeps serving them. Without a
//! fence set (no `ha`, or a standby) nothing changes.

use std::sync::Arc;

use parking_lot::Mutex;

use super::sql::{Backend, RowRef, Sql, ToValue, p};
use super::{Result, StoreError};

/// The lease a leader's writes are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's epoch when this daemon took it.
    pub epoch: i64,
    /// This daemon's holder id (new at each start).
    pub holder: String,
}

/// Called once when a write is fenced, with the stale epoch.
pub type OnFenced = Arc<dyn Fn(i64) + Send + Sync>;

/// The fence of one store and its clones, and who hears of a fenced write.
#[derive(Default)]
pub(super) struct Fences {
    fence: Mutex<Option<Fence>>,
    /// Set when this daemon steps down: every write is refused here, without asking the
    /// database (whose lease may not have expired yet).
    deposed: std::sync::atomic::AtomicBool,
    on_fenced: Mutex<Option<OnFenced>>,
}

impl Fences {
    /// Every write from now on is checked against `fence`.
    pub(super) fn set(&self, fence: Fence) {
        *self.fence.lock() = Some(fence);
    }

    /// Refuses every write from now on (the daemon steps down).
    pub(super) fn depose(&self) {
        self.deposed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The refusal of a write once deposed.
    pub(super) fn refused(&self) -> Result<()> {
        if !self.deposed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let epoch = self.fence.lock().as_ref().map_or(0, |f| f.epoch);
        Err(StoreError::Fenced { epoch })
    }

    /// `f` hears of every fenced write.
    pub(super) fn on_fenced(&self, f: OnFenced) {
        *self.on_fenced.lock() = Some(f);
    }

    /// The fence writes are checked against, if any.
    pub(super) fn current(&self) -> Option<Fence> {
        self.fence.lock().clone()
    }

    /// Tells the listener when `result` is a fenced write.
    pub(super) fn note<T>(&self, result: &Result<T>) {
        if let Err(StoreError::Fenced { epoch }) = result {
            let f = self.on_fenced.lock().clone();
            if let Some(f) = f {
                f(*epoch);
            }
        }
    }
}

/// The check each fenced transaction opens with.
const CHECK: &str = "SELECT 1 FROM leader WHERE id = 1 AND epoch = ?1 AND holder = ?2 \
                     AND expires_at > now() FOR SHARE";

/// Checks, inside the open transaction on `db`, that `fence` still holds the lease.
pub(super) fn check(db: &mut dyn Sql, fence: &Fence) -> Result<()> {
    let held: Option<i32> =
        db.query_opt(CHECK, p![fence.epoch, fence.holder.as_str()], |r| r.get(0))?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced { epoch: fence.epoch }),
    }
}

/// Whether `sql` may write: anything but a query.
fn writes(sql: &str) -> bool {
    let head = sql.trim_start();
    !head
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("SELECT"))
}

/// A connection outside a transaction whose first write opens a fenced transaction;
/// [`FencedSql::finish`] commits it (or rolls it back when the call failed).
pub(super) struct FencedSql<'a> {
    inner: &'a mut dyn Sql,
    fence: &'a Fence,
    fences: &'a Fences,
    open: bool,
}

impl<'a> FencedSql<'a> {
    /// `inner`, its writes checked against `fence`.
    pub(super) fn new(
        inner: &'a mut dyn Sql,
        fence: &'a Fence,
        fences: &'a Fences,
    ) -> FencedSql<'a> {
        FencedSql {
            inner,
            fence,
            fences,
            open: false,
        }
    }

    fn before(&mut self, sql: &str) -> Result<()> {
        if self.open || !writes(sql) {
            return Ok(());
        }
        self.fences.refused()?;
        self.inner.batch("BEGIN")?;
        self.open = true;
        check(self.inner, self.fence)
    }

    /// Ends the fenced transaction, if a write opened one: committed when `out` is `Ok`.
    pub(super) fn finish<T>(self, out: Result<T>) -> Result<T> {
        if !self.open {
            return out;
        }
        match out {
            Ok(v) => self.inner.batch("COMMIT").map(|()| v),
            Err(e) => {
                let _ = self.inner.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

impl Sql for FencedSql<'_> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        self.before(sql)?;
        self.inner.execute(sql, params)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<()>,
    ) -> Result<()> {
        self.before(sql)?;
        self.inner.each(sql, params, each)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.before(sql)?;
        self.inner.batch(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::p;

    fn lease(s: &crate::store::Blocking, epoch: i64, holder: &str) {
        s.sql(|db| {
            db.execute(
                "UPDATE leader SET epoch = ?1, holder = ?2,
                     expires_at = now() + interval '1 hour' WHERE id = 1",
                p![epoch, holder],
            )
        })
        .unwrap();
    }

    #[test]
    fn a_takeover_refuses_the_former_leaders_writes_and_keeps_its_reads() {
        let Some(s) = crate::store::tests::postgres_store() else {
            eprintln!("JOBKEEPER_TEST_POSTGRES_URL is not set: the fence needs PostgreSQL");
            return;
        };
        lease(&s, 1, "me");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        s.on_fenced(Arc::new(move |e| h.lock().push(e)));
        s.set_fence(Fence {
            epoch: 1,
            holder: "me".into(),
        });
        // Holding the lease: writes in and out of transactions commit, with the epoch.
        s.event(&crate::store::NewEvent::new(
            crate::event::EventKind::Deployed,
            "one",
        ))
        .unwrap();
        let applied = s.heartbeat();
        assert!(applied.is_ok(), "{applied:?}");
        let epoch: Option<i64> = s
            .sql(|db| db.query_row("SELECT MAX(epoch) FROM events", p![], |r| r.get(0)))
            .unwrap();
        assert_eq!(epoch, Some(1));

        // Another daemon takes over.
        lease(&s, 2, "other");
        let refused = s.event(&crate::store::NewEvent::new(
            crate::event::EventKind::Deployed,
            "two",
        ));
        assert!(
            matches!(refused, Err(StoreError::Fenced { epoch: 1 })),
            "{refused:?}"
        );
        let refused = s.heartbeat();
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "{refused:?}"
        );
        assert_eq!(*heard.lock(), [1, 1], "each refusal is heard");
        // Nothing of the refused writes committed; reads go on.
        let events = s.events(None, 10).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");

        // Deposed: refused here, before the database is asked.
        s.depose();
        let refused = s.event(&crate::store::NewEvent::new(
            crate::event::EventKind::Deployed,
            "three",
        ));
        assert!(matches!(refused, Err(StoreError::Fenced { .. })));
    }

    #[test]
    fn only_queries_are_reads() {
        assert!(!writes("  select 1"));
        assert!(!writes("SELECT id FROM runs"));
        assert!(writes("INSERT INTO runs VALUES (1)"));
        assert!(writes("UPDATE jobs SET state = 'x'"));
        assert!(writes("DELETE FROM events"));
        assert!(writes("WITH x AS (DELETE FROM t RETURNING 1) SELECT 1"));
    }
}
