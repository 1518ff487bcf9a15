//! Moving an installation: every table of a SQLite store copied into an empty PostgreSQL one
//! (`jobkeeper migrate-store`), in one transaction on the target, ids kept (runs, events,
//! savepoints and alert deliveries keep their numbers, and the id sequences continue after
//! them). The installation id and the key of Spark jar URLs move with `meta`, replacing what a
//! daemon started on the empty target wrote, so the daemon started on the copy computes the
//! same Flink job ids, run tokens and jar URLs, and adopts the same live runs.

use super::sql::{Backend, Sql, ToValue, Value, p};
use super::{Blocking, Result, StoreError};

/// The tables copied, parents first; with `true` when its `id` comes from a sequence.
pub const TABLES: [(&str, bool); 10] = [
    ("meta", false),
    ("commits", false),
    ("jobs", false),
    ("versions", false),
    ("held", false),
    ("runs", true),
    ("run_starts", false),
    ("events", true),
    ("savepoints", true),
    ("alerts_sent", true),
];

/// Rows inserted per statement.
const BATCH: usize = 200;

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, u64)>;

impl Blocking {
    /// Copies every table of this (SQLite) store into `to` (PostgreSQL), which must hold no
    /// job yet; both are at the schema this build writes.
    pub fn copy_into(&self, to: &Blocking) -> Result<Copied> {
        if self.backend() != Backend::Sqlite || to.backend() != Backend::Postgres {
            return Err(StoreError::Unsupported(
                "copying a store other than SQLite into PostgreSQL",
            ));
        }
        // A daemon started on the empty target first may have written `meta` (its own
        // installation id: the copy's replaces it), never jobs, runs or events worth keeping.
        for table in ["jobs", "runs", "events"] {
            let count: i64 = to.sql(|db| db.one(&format!("SELECT COUNT(*) FROM {table}"), p![]))?;
            if count > 0 {
                return Err(StoreError::TargetNotEmpty { count, table });
            }
        }
        let source = self.conn()?;
        let mut from = super::sql::Lite(&source);
        to.tx(|db| {
            let mut out = Vec::new();
            for (table, identity) in TABLES {
                let n = copy_table(&mut from, db, table)?;
                if identity {
                    db.execute(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                             (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                        ),
                        p![],
                    )?;
                }
                out.push((table, n));
            }
            Ok(out)
        })
    }
}

/// The columns of `table` in the SQLite store.
fn columns(from: &mut dyn Sql, table: &str) -> Result<Vec<String>> {
    from.query_map(
        &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
        p![],
        |r| r.get(0),
    )
}

fn copy_table(from: &mut dyn Sql, to: &mut dyn Sql, table: &str) -> Result<u64> {
    let cols = columns(from, table)?;
    let list = cols.join(", ");
    let mut rows: Vec<Vec<Value>> = Vec::new();
    from.each(&format!("SELECT {list} FROM {table}"), p![], &mut |r| {
        let mut row = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            row.push(Value::from(r.value(i)?));
        }
        rows.push(row);
        Ok(())
    })?;
    let n = rows.len() as u64;
    for chunk in rows.chunks(BATCH) {
        let mut sql = format!("INSERT INTO {table} ({list}) VALUES ");
        let mut params: Vec<&dyn ToValue> = Vec::with_capacity(chunk.len() * cols.len());
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, v) in row.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("?{}", params.len() + 1));
                params.push(v);
            }
            sql.push(')');
        }
        if table == "meta" {
            // The source's installation id wins over one a daemon wrote on the empty target.
            sql.push_str(" ON CONFLICT (key) DO UPDATE SET value = excluded.value");
        }
        to.execute(&sql, &params)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{commit, postgres_store, spec_update};
    use super::*;

    #[test]
    fn the_copy_keeps_the_sources_installation_id_and_artifact_key_and_refuses_a_used_target() {
        let to = postgres_store().expect(
            "JOBKEEPER_TEST_POSTGRES_URL is not set: copying a store needs a PostgreSQL server \
             (scripts/test.sh starts one; or scripts/postgres.sh start DIR)",
        );
        let from = Blocking::in_memory().unwrap();
        assert_eq!(from.installation_id("/var/lib/a").unwrap(), "/var/lib/a");
        assert_eq!(from.artifact_key(&[5; 32]).unwrap(), [5; 32]);
        from.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        // A daemon started on the empty target first wrote its own id.
        assert_eq!(to.installation_id("/elsewhere").unwrap(), "/elsewhere");
        assert_eq!(to.artifact_key(&[9; 32]).unwrap(), [9; 32]);
        let copied = from.copy_into(&to).unwrap();
        assert!(copied.contains(&("jobs", 1)), "{copied:?}");
        assert_eq!(to.installation_id("/elsewhere").unwrap(), "/var/lib/a");
        assert_eq!(to.artifact_key(&[9; 32]).unwrap(), [5; 32]);
        assert!(to.job("a").unwrap().is_some());
        let err = from.copy_into(&to).unwrap_err();
        assert!(err.to_string().contains("already holds 1 jobs"), "{err}");
    }
}
