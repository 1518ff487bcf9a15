//! The lease row in PostgreSQL: taking it, renewing it, giving it up, and reading who holds it.
//! Every time is the database's (`now()`), never this host's, so clocks that disagree between
//! hosts cannot make two holders. The epoch grows by one with every new holder; it is the token
//! the store's writes are fenced with ([`crate::store::Fence`]).
//!
//! The lease has its own connection, outside the store's pool, so a renewal never waits behind
//! the store's calls; on it the daemon `LISTEN`s for a release (`jobkeeper_leader`) and for the
//! requests standbys record (`jobkeeper_requests`).

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Client;

use crate::store::StoreError;
use crate::store::postgres::Target;

/// The channel a released lease is announced on.
pub const RELEASED: &str = "jobkeeper_leader";
/// The channel a standby's recorded request is announced on.
pub const REQUESTED: &str = "jobkeeper_requests";

/// Who holds the lease, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding node's name (the last one's, once released or expired).
    pub node: String,
    /// The epoch.
    pub epoch: i64,
    /// Since when (ms since the Unix epoch, the database's clock) that node holds it.
    pub since_ms: i64,
    /// Whether it is held now: a holder and an expiry still ahead.
    pub held: bool,
}

/// A lease this daemon just took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The new epoch.
    pub epoch: i64,
    /// Since when (ms since the Unix epoch, the database's clock).
    pub since_ms: i64,
    /// The node that held it before (empty when none ever did).
    pub previous: String,
    /// Whether that node released it (a switchover) rather than letting it expire.
    pub released: bool,
}

/// This daemon, as the lease row names it.
#[derive(Debug, Clone)]
pub struct Me {
    /// New at each start: a restarted daemon is a new holder.
    pub holder: String,
    /// `ha.node`.
    pub node: String,
    /// Where this daemon answers, for the others to name.
    pub api_url: String,
}

/// The lease's connection.
pub struct LeaseDb {
    client: Client,
    /// Channels of the notifications heard.
    pub notes: UnboundedReceiver<String>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl LeaseDb {
    /// Connects to `target` and listens for releases and requests.
    pub async fn connect(target: &Target) -> Result<LeaseDb, StoreError> {
        let (client, notes) = target.connect_listening().await?;
        client
            .batch_execute(&format!("LISTEN {RELEASED}; LISTEN {REQUESTED}"))
            .await?;
        Ok(LeaseDb { client, notes })
    }

    /// Takes the lease for `ttl` when nobody holds it (released, or expired on the database's
    /// clock); `None` when another holds it.
    pub async fn take(&self, me: &Me, ttl: Duration) -> Result<Option<Taken>, StoreError> {
        let row = self
            .client
            .query_opt(
                "WITH old AS (SELECT node, holder, epoch, expires_at FROM leader WHERE id = 1
                     FOR UPDATE)
                 UPDATE leader l SET epoch = old.epoch + 1, holder = $1, node = $2,
                     api_url = $3,
                     since_ms = (extract(epoch FROM now()) * 1000)::BIGINT,
                     expires_at = now() + $4::FLOAT8 * interval '1 millisecond'
                 FROM old
                 WHERE l.id = 1 AND (old.holder IS NULL OR old.expires_at <= now())
                 RETURNING l.epoch, l.since_ms, old.node, old.holder IS NULL",
                &[&me.holder, &me.node, &me.api_url, &millis(ttl)],
            )
            .await?;
        Ok(row.map(|r| Taken {
            epoch: r.get(0),
            since_ms: r.get(1),
            previous: r.get(2),
            released: r.get(3),
        }))
    }

    /// Extends the lease held at `epoch` by `ttl` from now; false when it is no longer this
    /// daemon's (expired, or taken).
    pub async fn renew(&self, me: &Me, epoch: i64, ttl: Duration) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                "UPDATE leader SET expires_at = now() + $3::FLOAT8 * interval '1 millisecond'
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()",
                &[&me.holder, &epoch, &millis(ttl)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives the lease held at `epoch` up and tells the standbys at once.
    pub async fn release(&self, me: &Me, epoch: i64) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                "UPDATE leader SET holder = NULL, expires_at = now()
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&me.holder, &epoch],
            )
            .await?;
        self.client
            .batch_execute(&format!("NOTIFY {RELEASED}"))
            .await?;
        Ok(n == 1)
    }

    /// Who holds the lease now.
    pub async fn holder(&self) -> Result<Holder, StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT node, epoch, since_ms, holder IS NOT NULL AND expires_at > now()
                 FROM leader WHERE id = 1",
                &[],
            )
            .await?;
        Ok(Holder {
            node: r.get(0),
            epoch: r.get(1),
            since_ms: r.get(2),
            held: r.get(3),
        })
    }
}
