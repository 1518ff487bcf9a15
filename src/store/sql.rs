//! The SQL the store's operations speak, whichever database holds the store: [`Sql`] runs a
//! statement with typed parameters ([`ToValue`]) and hands each row to the caller as a
//! [`RowRef`], read column by column ([`FromValue`]). The operations are written once against
//! it; SQLite (`rusqlite`, here) and PostgreSQL ([`super::postgres`]) each implement it.
//!
//! Statements are written in the SQL both databases take: numbered `?N` parameters (turned
//! into `$N` for Postgres), `INSERT .. ON CONFLICT`, `RETURNING id`, `IS NOT DISTINCT FROM`,
//! `COALESCE`, and the few SQLite functions the store uses on its JSON columns
//! (`json_valid`, `json_extract`, `instr`), which the Postgres schema defines with SQLite's
//! meaning. Where the two differ beyond that (their own catalog, pragmas), an operation asks
//! [`Sql::backend`].
//!
//! Rows are read in place, never copied into a row of values first: a list of 10,000 jobs
//! decodes straight from the database's buffers.

use rusqlite::types::{ToSqlOutput, ValueRef as SqliteRef};

use super::{Result, StoreError};

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one SQLite file under `state_dir`.
    Sqlite,
    /// A PostgreSQL database (`store.postgres` in the daemon config).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// One value as the store reads or writes it: SQLite's storage classes, which every column
/// of the store maps onto (integers and flags are 64-bit integers, text is text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// `NULL`.
    Null,
    /// A 64-bit integer (a flag is 0 or 1).
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl ValueRef<'_> {
    fn kind(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::Int(_) => "an integer",
            ValueRef::Real(_) => "a real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "bytes",
        }
    }
}

/// One value, owned: a row copied from one store into another.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `NULL`.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(t.to_string()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl ToValue for Value {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Int(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// A parameter of a statement.
pub trait ToValue {
    /// The value to bind.
    fn value(&self) -> ValueRef<'_>;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn value(&self) -> ValueRef<'_> {
                ValueRef::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8, i16);

impl ToValue for u64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl ToValue for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToValue for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.value(),
            None => ValueRef::Null,
        }
    }
}

/// A value read from a column.
pub trait FromValue: Sized {
    /// The value, or why it is not one of `Self`.
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String>;
}

fn wrong(v: ValueRef<'_>, want: &str) -> String {
    format!("{} where {want} was expected", v.kind())
}

impl FromValue for i64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Int(i) => Ok(i),
            other => Err(wrong(other, "an integer")),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, usize, u16, u8);

impl FromValue for bool {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Int(i) => Ok(i as f64),
            other => Err(wrong(other, "a number")),
        }
    }
}

impl FromValue for String {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Text(t) => Ok(t.to_string()),
            other => Err(wrong(other, "text")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(wrong(other, "bytes")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>) -> std::result::Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of an answer, read in place.
pub trait RowRef {
    /// Column `i` (from 0).
    fn value(&self, i: usize) -> Result<ValueRef<'_>>;
}

impl dyn RowRef + '_ {
    /// Column `i` as a `T`; a value of another type is an error naming the column.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        T::from_value(self.value(i)?).map_err(|detail| StoreError::Column { index: i, detail })
    }
}

/// A connection (or a transaction on one) that runs the store's statements.
pub trait Sql {
    /// Which database it is.
    fn backend(&self) -> Backend;

    /// Runs a statement; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize>;

    /// Runs a query and hands each row to `each`, in order; an error from `each` stops it.
    fn each(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<()>,
    ) -> Result<()>;

    /// Runs statements separated by `;`, with no parameters (schema changes).
    fn batch(&mut self, sql: &str) -> Result<()>;
}

impl dyn Sql + '_ {
    /// Every row, each made into a `T` by `f`.
    pub fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&dyn RowRef) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row made into a `T` by `f`; `None` when there is none.
    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&dyn RowRef) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.each(sql, params, &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row made into a `T` by `f`; no row is an error.
    pub fn query_row<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&dyn RowRef) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or(StoreError::NoRow)
    }

    /// The first column of the first row.
    pub fn one<T: FromValue>(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<T> {
        self.query_row(sql, params, |r| r.get(0))
    }
}

/// The parameters of a statement: `p![a, b]` is `&[&a, &b]` as `&[&dyn ToValue]`.
macro_rules! p {
    () => { &[] as &[&dyn $crate::store::sql::ToValue] };
    ($($v:expr),+ $(,)?) => { &[$(&$v as &dyn $crate::store::sql::ToValue),+] as &[&dyn $crate::store::sql::ToValue] };
}
pub(crate) use p;

// --- SQLite ---

/// A parameter bound through rusqlite.
struct Bind<'a>(&'a dyn ToValue);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0.value() {
            ValueRef::Null => SqliteRef::Null,
            ValueRef::Int(i) => SqliteRef::Integer(i),
            ValueRef::Real(f) => SqliteRef::Real(f),
            ValueRef::Text(t) => SqliteRef::Text(t.as_bytes()),
            ValueRef::Blob(b) => SqliteRef::Blob(b),
        }))
    }
}

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl RowRef for SqliteRow<'_, '_> {
    fn value(&self, i: usize) -> Result<ValueRef<'_>> {
        Ok(match self.0.get_ref(i)? {
            SqliteRef::Null => ValueRef::Null,
            SqliteRef::Integer(i) => ValueRef::Int(i),
            SqliteRef::Real(f) => ValueRef::Real(f),
            SqliteRef::Text(t) => {
                ValueRef::Text(std::str::from_utf8(t).map_err(|e| StoreError::Column {
                    index: i,
                    detail: e.to_string(),
                })?)
            }
            SqliteRef::Blob(b) => ValueRef::Blob(b),
        })
    }
}

fn binds<'a>(params: &'a [&'a dyn ToValue]) -> Vec<Bind<'a>> {
    params.iter().map(|p| Bind(*p)).collect()
}

/// A SQLite connection, or a transaction on one, as [`Sql`].
pub struct Lite<'a>(pub &'a rusqlite::Connection);

impl Sql for Lite<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(binds(params)))?)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.0.prepare_cached(sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(binds(params)))?;
        while let Some(row) = rows.next()? {
            each(&SqliteRow(row))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_in_and_come_out_with_their_types() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db: &mut dyn Sql = &mut Lite(&conn);
        db.batch("CREATE TABLE t (i INTEGER, s TEXT, f REAL, b BLOB)")
            .unwrap();
        let none: Option<&str> = None;
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            p![7_u32, "x", 1.5, vec![1_u8, 2]],
        )
        .unwrap();
        db.execute("INSERT INTO t VALUES (?1, ?2, NULL, NULL)", p![true, none])
            .unwrap();
        let rows = db
            .query_map("SELECT i, s, f, b FROM t ORDER BY rowid", p![], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<Option<f64>>(2)?,
                    r.get::<Option<Vec<u8>>>(3)?,
                ))
            })
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (7, Some("x".into()), Some(1.5), Some(vec![1, 2])),
                (1, None, None, None)
            ]
        );
        let err = db.one::<i64>("SELECT s FROM t", p![]).unwrap_err();
        assert!(err.to_string().contains("text where an integer"), "{err}");
        assert!(matches!(
            db.one::<i64>("SELECT i FROM t WHERE 0", p![]),
            Err(StoreError::NoRow)
        ));
    }
}
