//! The store in PostgreSQL (`store.postgres` in the daemon config): a small pool of
//! `tokio-postgres` connections (TLS through rustls), each one [`Sql`] for the store's
//! operations.
//!
//! The operations are blocking calls on blocking threads (see [`super::Store`]); a Postgres
//! call runs its future on the daemon's runtime from there (`Handle::block_on`), so the
//! connection's I/O is async and no runtime worker ever waits on the database. Writing the
//! operations once for both databases is worth the one thread each call holds: the contract
//! tests run the same code on both, and the pool bounds the threads.
//!
//! A statement waits at most [`QUERY_TIMEOUT`]: a database that stops answering (a frozen
//! network link) fails the call with [`StoreError::Postgres`] instead of holding the thread,
//! and the connection is dropped. A broken connection is replaced at the next call.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::{Condvar, Mutex};
use tokio::runtime::Handle;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::sql::{Backend, RowRef, Sql, ToValue, ValueRef};
use super::{Result, StoreError};

/// What `e` says with its causes (`db error: ERROR: relation "x" does not exist`, `error
/// connecting to server: Connection refused`), on one line: `tokio_postgres` shows only its kind.
pub fn said(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string().replace('\n', "; ");
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// How long one statement may take before the call fails and its connection is dropped.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection is encrypted (`store.postgres.tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// Encrypted; the server's certificate is not checked (libpq's `sslmode=require`).
    #[default]
    Require,
    /// Encrypted, and the server's certificate must chain to the host's CA store and name
    /// the host.
    VerifyFull,
}

/// Where the store's database is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The connection URL (`postgres://user@host:port,host2:port/db?...`), password-free.
    pub url: String,
    /// The password, read from `password_file`.
    pub password: Option<String>,
    /// TLS.
    pub tls: TlsMode,
    /// The most connections open at once.
    pub pool: usize,
}

impl Target {
    /// The URL with its password (if any) hidden, for logs and errors.
    pub fn shown(&self) -> String {
        match tokio_postgres::Config::from_str(&self.url) {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
                    .map(|(h, p)| match h {
                        tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                format!(
                    "postgres://{}@{}/{}",
                    c.get_user().unwrap_or(""),
                    hosts.join(","),
                    c.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgres://(a URL that does not parse)".to_string(),
        }
    }

    fn config(&self) -> Result<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::from_str(&self.url)?;
        if let Some(p) = &self.password {
            c.password(p.as_bytes());
        }
        c.connect_timeout(CONNECT_TIMEOUT);
        c.keepalives(true);
        c.keepalives_idle(Duration::from_secs(10));
        c.application_name("jobkeeper");
        c.ssl_mode(match self.tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Require | TlsMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        Ok(c)
    }
}

impl Target {
    /// One connection of its own, outside the pool (the lease's, which must not wait behind
    /// the store's calls), whose `NOTIFY`s arrive on the receiver as their channel names.
    /// Async: call it on the runtime.
    pub async fn connect_listening(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        let config = self.config()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match self.tls {
            TlsMode::Disable => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(forward_notifications(conn, tx));
                client
            }
            mode => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(mode)?);
                let (client, conn) = config.connect(tls).await?;
                tokio::spawn(forward_notifications(conn, tx));
                client
            }
        };
        Ok((client, rx))
    }
}

/// Drives `conn` until it closes, sending each notification's channel to `tx`.
async fn forward_notifications<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message {
            let _ = tx.send(n.channel().to_string());
        }
    }
}

/// The connections of one store.
pub struct Pool {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    rt: Handle,
    size: usize,
    idle: Mutex<Idle>,
    freed: Condvar,
    shown: String,
}

#[derive(Default)]
struct Idle {
    conns: Vec<PgConn>,
    open: usize,
}

impl Pool {
    /// A pool for `target` whose calls run on `rt`; opens one connection to prove it answers.
    pub fn connect(target: &Target, rt: Handle) -> Result<Pool> {
        let tls = match target.tls {
            TlsMode::Disable => None,
            mode => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                client_config(mode)?,
            )),
        };
        let pool = Pool {
            config: target.config()?,
            tls,
            rt,
            size: target.pool.max(1),
            idle: Mutex::new(Idle::default()),
            freed: Condvar::new(),
            shown: target.shown(),
        };
        let first = pool.get()?;
        drop(first);
        Ok(pool)
    }

    /// The most connections open at once (`store.postgres.pool`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The database, for logs (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection: an idle one, a new one while fewer than `pool` are open, else the next
    /// one given back (waiting at most [`QUERY_TIMEOUT`]).
    pub fn get(&self) -> Result<Lease<'_>> {
        let mut idle = self.idle.lock();
        loop {
            while let Some(conn) = idle.conns.pop() {
                if conn.client.is_closed() {
                    idle.open -= 1;
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if idle.open < self.size {
                idle.open += 1;
                drop(idle);
                return match self.open() {
                    Ok(conn) => Ok(Lease {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.idle.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            if self.freed.wait_for(&mut idle, QUERY_TIMEOUT).timed_out() {
                return Err(StoreError::Busy(format!(
                    "all {} connections to {} stayed busy for {}s",
                    self.size,
                    self.shown,
                    QUERY_TIMEOUT.as_secs()
                )));
            }
        }
    }

    fn open(&self) -> Result<PgConn> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let client = self.rt.block_on(async move {
            let connecting = async {
                match tls {
                    Some(tls) => {
                        let (client, conn) = config.connect(tls).await?;
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                    None => {
                        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        Ok(client)
                    }
                }
            };
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
                Ok(r) => r.map_err(StoreError::from),
                Err(_) => Err(StoreError::Timeout(format!(
                    "connecting took over {}s",
                    (CONNECT_TIMEOUT * 2).as_secs()
                ))),
            }
        })?;
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
            rt: self.rt.clone(),
            broken: false,
        })
    }
}

/// The rustls client settings for `mode`, with ring as the crypto provider.
fn client_config(mode: TlsMode) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Tls(e.to_string()))?;
    Ok(match mode {
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::Tls(
                    "tls: verify-full, but the host's CA store holds no certificate".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    })
}

/// `tls: require`: encrypted, the certificate not checked (signatures still are).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection taken from the pool; given back when dropped (unless it broke).
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut idle = self.pool.idle.lock();
        if conn.broken || conn.client.is_closed() {
            idle.open -= 1;
        } else {
            idle.conns.push(conn);
        }
        drop(idle);
        self.pool.freed.notify_one();
    }
}

/// One connection, with its prepared statements.
pub struct PgConn {
    client: Client,
    stmts: HashMap<String, Statement>,
    rt: Handle,
    /// A statement timed out or the link failed: dropped rather than given back.
    broken: bool,
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(st) = self.stmts.get(sql) {
            return Ok(st.clone());
        }
        let text = numbered(sql);
        let client = &self.client;
        let st = PgWait::wait(&self.rt, &mut self.broken, client, client.prepare(&text))?;
        self.stmts.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// `?N` parameters as Postgres numbers them (`$N`); a bare `?` takes the next number.
/// Quoted text is left alone.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quoted = false;
    let mut next = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        out.push(d);
                        chars.next();
                    }
                } else {
                    next += 1;
                    out.push_str(&next.to_string());
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A parameter as tokio-postgres binds it: converted to the type the server inferred.
#[derive(Debug)]
struct Bind<'a>(ValueRef<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("a real cannot be bound as {ty}").into()),
            },
            ValueRef::Text(t) => match *ty {
                Type::INT8 => t.parse::<i64>()?.to_sql(ty, out),
                _ => t.to_sql(&Type::TEXT, out),
            },
            ValueRef::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

struct PgRow<'a>(&'a tokio_postgres::Row);

fn column(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Column {
        index: i,
        detail: e.to_string(),
    }
}

impl RowRef for PgRow<'_> {
    fn value(&self, i: usize) -> Result<ValueRef<'_>> {
        let row = self.0;
        let ty = row
            .columns()
            .get(i)
            .ok_or_else(|| column(i, "no such column"))?
            .type_()
            .clone();
        let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Int);
        Ok(match ty {
            Type::INT8 => int(row.try_get(i).map_err(|e| column(i, e))?),
            Type::INT4 => int(row
                .try_get::<_, Option<i32>>(i)
                .map_err(|e| column(i, e))?
                .map(i64::from)),
            Type::INT2 => int(row
                .try_get::<_, Option<i16>>(i)
                .map_err(|e| column(i, e))?
                .map(i64::from)),
            Type::BOOL => int(row
                .try_get::<_, Option<bool>>(i)
                .map_err(|e| column(i, e))?
                .map(i64::from)),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(|e| column(i, e))?
                .map_or(ValueRef::Null, ValueRef::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map_err(|e| column(i, e))?
                .map_or(ValueRef::Null, |f| ValueRef::Real(f64::from(f))),
            Type::BYTEA => row
                .try_get::<_, Option<&[u8]>>(i)
                .map_err(|e| column(i, e))?
                .map_or(ValueRef::Null, ValueRef::Blob),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => row
                .try_get::<_, Option<&str>>(i)
                .map_err(|e| column(i, e))?
                .map_or(ValueRef::Null, ValueRef::Text),
            other => return Err(column(i, format!("a column of type {other} is not read"))),
        })
    }
}

fn binds<'a>(params: &'a [&'a dyn ToValue]) -> Vec<Bind<'a>> {
    params.iter().map(|p| Bind(p.value())).collect()
}

impl Sql for PgConn {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        let st = self.statement(sql)?;
        let binds = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as _).collect();
        let client = &self.client;
        let fut = client.execute(&st, &refs);
        let n = PgWait::wait(&self.rt, &mut self.broken, client, fut)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        each: &mut dyn FnMut(&dyn RowRef) -> Result<()>,
    ) -> Result<()> {
        let st = self.statement(sql)?;
        let binds = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as _).collect();
        let client = &self.client;
        let fut = client.query(&st, &refs);
        let rows = PgWait::wait(&self.rt, &mut self.broken, client, fut)?;
        for row in &rows {
            each(&PgRow(row))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let client = &self.client;
        let fut = client.batch_execute(sql);
        PgWait::wait(&self.rt, &mut self.broken, client, fut)
    }
}

/// [`PgConn::wait`] with the connection's parts borrowed apart (the future borrows the
/// client while the broken flag is written).
struct PgWait;

impl PgWait {
    fn wait<T>(
        rt: &Handle,
        broken: &mut bool,
        client: &Client,
        fut: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        match rt.block_on(async { tokio::time::timeout(QUERY_TIMEOUT, fut).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_closed() || client.is_closed() {
                    *broken = true;
                }
                Err(e.into())
            }
            Err(_) => {
                *broken = true;
                Err(StoreError::Timeout(format!(
                    "the database did not answer within {}s",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_as_postgres_numbers_them() {
        assert_eq!(numbered("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(numbered("x = '?1' AND y = ?2"), "x = '?1' AND y = $2");
    }

    fn test_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_failed_connection_says_why() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rt = test_runtime();
        let t = Target {
            url: format!("postgres://jk@127.0.0.1:{port}/jobkeeper"),
            password: None,
            tls: TlsMode::Disable,
            pool: 1,
        };
        let err = Pool::connect(&t, rt.handle().clone()).err().unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with("store: postgres: error connecting to server: ")
                && text.to_lowercase().contains("refused"),
            "{text}"
        );
    }

    #[test]
    fn a_statement_the_server_refuses_is_shown_with_the_servers_message() {
        let Some(url) = std::env::var("JOBKEEPER_TEST_POSTGRES_URL").ok() else {
            panic!(
                "JOBKEEPER_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
                 (scripts/postgres.sh start DIR prints one)"
            );
        };
        let rt = test_runtime();
        let t = Target {
            url,
            password: None,
            tls: TlsMode::Disable,
            pool: 1,
        };
        let pool = Pool::connect(&t, rt.handle().clone()).unwrap();
        let err = pool
            .get()
            .unwrap()
            .batch("SELECT * FROM no_such_table_here")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("db error: ERROR: relation \"no_such_table_here\" does not exist"),
            "{text}"
        );
    }

    #[test]
    fn the_shown_url_names_the_hosts_and_never_a_password() {
        let t = Target {
            url: "postgres://jk:secret@db1:5433,db2/jobkeeper?target_session_attrs=read-write"
                .into(),
            password: None,
            tls: TlsMode::Require,
            pool: 2,
        };
        let shown = t.shown();
        assert_eq!(shown, "postgres://jk@db1:5433,db2:5432/jobkeeper");
        assert!(!shown.contains("secret"));
    }
}
