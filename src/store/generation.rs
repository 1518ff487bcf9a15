//! The store's generation ([`Generation`]): it changes with every row written, by the daemon
//! or by anything else that writes the store's file, so a reader that derived something from
//! the store can tell whether it may still hold ([`Store::generation`]).

use super::{Blocking, Result};

/// Where the store's writes stand; two equal generations mean no row was written in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Rows inserted, updated or deleted through the store's own connection (never goes back).
    own: u64,
    /// SQLite's `data_version`: changes when another connection (a second process, an
    /// operator's `sqlite3`) commits to the file.
    others: i64,
}

impl Blocking {
    /// Where the store's writes stand now. Read it *before* what is derived from the store,
    /// so a write made meanwhile makes the next reader derive it again.
    pub fn generation(&self) -> Result<Generation> {
        if self.backend() == super::sql::Backend::Postgres {
            // Where the server's write-ahead log stands: it moves with every write by any
            // daemon (or person) on the database.
            let lsn: i64 = self.sql(|db| {
                db.one(
                    "SELECT CAST((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_insert_lsn() END) - '0/0'::pg_lsn AS BIGINT)",
                    super::sql::p![],
                )
            })?;
            return Ok(Generation {
                own: 0,
                others: lsn,
            });
        }
        let conn = self.conn()?;
        let others = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(Generation {
            own: conn.total_changes(),
            others,
        })
    }
}

impl super::Store {
    /// See [`Blocking::generation`].
    pub async fn generation(&self) -> Result<Generation> {
        self.call(|db| db.generation()).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{commit, spec_update};
    use super::*;
    use crate::store::JobState;

    #[test]
    fn every_write_moves_the_generation_and_a_read_does_not() {
        for s in crate::store::tests::stores() {
            let g0 = s.generation().unwrap();
            s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
                .unwrap();
            let g1 = s.generation().unwrap();
            assert_ne!(g1, g0);
            s.job_state_counts().unwrap();
            // (On Postgres the log also moves with other databases' writes: only SQLite's
            // generation is known to stay put over a read.)
            if s.backend() == crate::store::sql::Backend::Sqlite {
                assert_eq!(s.generation().unwrap(), g1, "a read writes nothing");
            }
            s.set_state("a", JobState::Suspended, None).unwrap();
            assert_ne!(s.generation().unwrap(), g1);
        }
    }

    #[test]
    fn a_write_by_another_connection_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Blocking::open(&path).unwrap();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        let g = s.generation().unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute("UPDATE jobs SET state = 'stopped' WHERE name = 'a'", [])
            .unwrap();
        assert_ne!(s.generation().unwrap(), g);
    }
}
