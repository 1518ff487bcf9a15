//! Keeping the lease: as a standby, trying to take it every `retry` and at once when the
//! leader releases it; as the leader, renewing it every `retry`, and stepping down when it has
//! not renewed by `renew_deadline`. The deadline is counted on this host's monotonic clock from
//! when the last good renewal was *sent*, so the leader always gives up before the database can
//! see the lease expire (`renew_deadline` < `lease_ttl`), whatever the network did to the
//! answer.
//!
//! The keeper is the one writer of the daemon's [`Leadership`] watch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Leadership;
use super::lease::{Holder, LeaseDb, Me, REQUESTED, Taken};
use crate::settings::ha::HaSettings;
use crate::store::postgres::Target;

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// No good renewal for `renew_deadline`.
    Deadline(Duration),
    /// The row names another holder or an expired lease: another daemon took over.
    Taken,
    /// A store write was refused for a stale epoch.
    Fenced(i64),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Deadline(d) => write!(
                f,
                "the lease was not renewed within renew_deadline ({})",
                humantime::format_duration(*d)
            ),
            Lost::Taken => write!(
                f,
                "the lease row names another holder: another daemon took over"
            ),
            Lost::Fenced(e) => write!(
                f,
                "a store write was refused: epoch {e} is stale, another daemon took over"
            ),
        }
    }
}

/// How the leader's term ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The daemon is stopping (SIGTERM): it releases the lease once its runs are handled.
    Stopping,
    /// Leadership was lost: the daemon must step down now.
    Lost(Lost),
}

/// The lease's keeper.
pub struct Keeper {
    target: Target,
    settings: HaSettings,
    me: Me,
    db: Option<LeaseDb>,
    tx: watch::Sender<Leadership>,
    /// Pinged on each try as a standby (the leader's sweep pings it then).
    watchdog: Option<crate::systemd::Watchdog>,
    /// When the take that won the lease was sent: the first renewal's stand-in.
    taken_at: Option<Instant>,
}

/// A fresh holder id: 16 random bytes in hex.
fn holder_id() -> String {
    use std::io::Read;
    let mut bytes = [0_u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (t ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keeper {
    /// A keeper for this daemon (`settings.node`, answering at `api_url`), a standby until it
    /// takes the lease, and the watch it writes.
    pub fn new(
        target: Target,
        settings: HaSettings,
        api_url: String,
        watchdog: Option<crate::systemd::Watchdog>,
    ) -> (Keeper, super::LeaderWatch) {
        let (tx, rx) = watch::channel(Leadership {
            leader: false,
            node: String::new(),
            epoch: 0,
            since_ms: 0,
            ha: true,
        });
        let me = Me {
            holder: holder_id(),
            node: settings.node.clone(),
            api_url,
        };
        let keeper = Keeper {
            target,
            settings,
            me,
            db: None,
            tx,
            watchdog,
            taken_at: None,
        };
        (keeper, rx)
    }

    /// This daemon's holder id.
    pub fn holder(&self) -> &str {
        &self.me.holder
    }

    /// This daemon's node name.
    pub fn node(&self) -> &str {
        &self.me.node
    }

    /// The lease's connection, opened again after a failure.
    async fn db(&mut self) -> Option<&mut LeaseDb> {
        if self.db.is_none() {
            let connected =
                tokio::time::timeout(self.settings.retry.max(Duration::from_secs(1)), async {
                    LeaseDb::connect(&self.target).await
                })
                .await;
            match connected {
                Ok(Ok(db)) => self.db = Some(db),
                Ok(Err(e)) => tracing::warn!("ha: the lease's connection failed: {e}"),
                Err(_) => tracing::warn!("ha: the lease's connection did not open in time"),
            }
        }
        self.db.as_mut()
    }

    fn show_holder(&self, h: &Holder) {
        let shown = Leadership {
            leader: false,
            node: if h.held {
                h.node.clone()
            } else {
                String::new()
            },
            epoch: h.epoch,
            since_ms: h.since_ms,
            ha: true,
        };
        self.tx.send_if_modified(|old| {
            let changed = *old != shown;
            *old = shown;
            changed
        });
    }

    /// A standby until this daemon takes the lease; `None` when `cancel` fires first.
    pub async fn wait_for_lease(&mut self, cancel: &CancellationToken) -> Option<Taken> {
        let (ttl, retry) = (self.settings.lease_ttl, self.settings.retry);
        loop {
            if let Some(w) = &self.watchdog {
                w.ping();
            }
            let me = self.me.clone();
            let sent = Instant::now();
            let tried = match self.db().await {
                Some(db) => {
                    let tried = tokio::time::timeout(retry, async {
                        match db.take(&me, ttl).await? {
                            Some(t) => Ok(Ok(t)),
                            None => db.holder().await.map(Err),
                        }
                    })
                    .await;
                    match tried {
                        Ok(Ok(r)) => Some(r),
                        Ok(Err(e)) => {
                            tracing::warn!("ha: the lease could not be read: {e}");
                            self.db = None;
                            None
                        }
                        Err(_) => {
                            tracing::warn!("ha: the lease did not answer within retry");
                            self.db = None;
                            None
                        }
                    }
                }
                None => None,
            };
            match tried {
                Some(Ok(taken)) => {
                    self.taken_at = Some(sent);
                    let _ = self.tx.send(Leadership {
                        leader: true,
                        node: self.me.node.clone(),
                        epoch: taken.epoch,
                        since_ms: taken.since_ms,
                        ha: true,
                    });
                    return Some(taken);
                }
                Some(Err(holder)) => self.show_holder(&holder),
                None => {}
            }
            let pause = self
                .watchdog
                .as_ref()
                .map_or(retry, |w| w.period().min(retry));
            let note = async {
                match self.db.as_mut() {
                    Some(db) => db.notes.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
                // A release (or a request, which changes nothing here): try again at once.
                _ = note => {}
            }
        }
    }

    /// Leads until the lease is lost or `cancel` fires, renewing it every `retry`.
    /// `requests` is notified when a standby records a request; `fenced` receives the epochs
    /// of refused store writes.
    pub async fn lead(
        &mut self,
        epoch: i64,
        cancel: &CancellationToken,
        requests: &Arc<Notify>,
        fenced: &mut mpsc::UnboundedReceiver<i64>,
    ) -> Ended {
        let (ttl, retry, deadline) = (
            self.settings.lease_ttl,
            self.settings.retry,
            self.settings.renew_deadline,
        );
        // The take's send time stands for the first renewal: the deadline counts from there,
        // whatever the daemon did since (recording `leader_changed`).
        let mut last_good = self.taken_at.unwrap_or_else(Instant::now);
        let mut tick = tokio::time::interval_at(Instant::now() + retry, retry);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = last_good + deadline;
            let note = async {
                match self.db.as_mut() {
                    Some(db) => db.notes.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ended::Stopping,
                Some(e) = fenced.recv() => return self.lost(Lost::Fenced(e)),
                () = tokio::time::sleep_until(due) => return self.lost(Lost::Deadline(deadline)),
                n = note => {
                    match n {
                        Some(channel) if channel == REQUESTED => requests.notify_one(),
                        Some(_) => {}
                        // The connection closed: opened again at the next renewal.
                        None => self.db = None,
                    }
                }
                _ = tick.tick() => {
                    let sent = Instant::now();
                    let me = self.me.clone();
                    let renewed = match self.db().await {
                        Some(db) => tokio::time::timeout_at(due, db.renew(&me, epoch, ttl)).await,
                        None => continue,
                    };
                    match renewed {
                        Ok(Ok(true)) => last_good = sent,
                        Ok(Ok(false)) => return self.lost(Lost::Taken),
                        Ok(Err(e)) => {
                            tracing::warn!("ha: the lease was not renewed: {e}");
                            self.db = None;
                        }
                        Err(_) => return self.lost(Lost::Deadline(deadline)),
                    }
                }
            }
        }
    }

    fn lost(&self, why: Lost) -> Ended {
        self.tx.send_modify(|l| l.leader = false);
        Ended::Lost(why)
    }

    /// Gives the lease held at `epoch` up (the daemon is stopping), so a standby takes it at
    /// once; a failure is logged (the lease then expires after `lease_ttl`).
    pub async fn release(&mut self, epoch: i64) {
        self.tx.send_modify(|l| l.leader = false);
        let me = self.me.clone();
        let Some(db) = self.db().await else {
            tracing::warn!("ha: the lease was not released: no connection; it expires on its own");
            return;
        };
        match tokio::time::timeout(Duration::from_secs(2), db.release(&me, epoch)).await {
            Ok(Ok(true)) => tracing::info!(epoch, "ha: lease released"),
            Ok(Ok(false)) => tracing::info!(epoch, "ha: the lease was no longer ours to release"),
            Ok(Err(e)) => tracing::warn!("ha: the lease was not released: {e}"),
            Err(_) => tracing::warn!("ha: the lease was not released in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(node: &str) -> HaSettings {
        HaSettings {
            lease_ttl: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(1000),
            retry: Duration::from_millis(200),
            node: node.into(),
        }
    }

    #[test]
    fn one_leader_at_a_time_a_release_hands_over_at_once_and_a_lost_lease_is_seen() {
        let Some(target) = crate::store::tests::postgres_target() else {
            eprintln!("JOBKEEPER_TEST_POSTGRES_URL is not set: the lease needs PostgreSQL");
            return;
        };
        // The schema (and its lease row) as a daemon's start makes it.
        let store = crate::store::tests::postgres_store_at(&target);
        drop(store);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let cancel = CancellationToken::new();
            let (mut a, wa) = Keeper::new(target.clone(), settings("ops-1"), "a".into(), None);
            let (mut b, wb) = Keeper::new(target.clone(), settings("ops-2"), "b".into(), None);
            let first = a.wait_for_lease(&cancel).await.unwrap();
            assert_eq!((first.epoch, first.previous.as_str()), (1, ""));
            assert!(wa.borrow().leader);

            // b waits while a leads and renews; a's release hands over at once (NOTIFY).
            let (requests, (_ftx, mut frx)) = (Arc::new(Notify::new()), mpsc::unbounded_channel());
            let stop = CancellationToken::new();
            let waiting = tokio::spawn(async move {
                let t = b.wait_for_lease(&CancellationToken::new()).await;
                (b, t, Instant::now())
            });
            let lead = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let ended = a.lead(first.epoch, &stop, &requests, &mut frx).await;
                    (a, ended)
                })
            };
            // Past the TTL: b still waits, a renewed.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            assert!(!waiting.is_finished(), "b took a renewed lease");
            assert_eq!(wb.borrow().node, "ops-1", "b shows who leads");
            stop.cancel();
            let (mut a, ended) = lead.await.unwrap();
            assert_eq!(ended, Ended::Stopping);
            let released = Instant::now();
            a.release(first.epoch).await;
            let (mut b, taken, at) = waiting.await.unwrap();
            let taken = taken.unwrap();
            assert_eq!(
                (taken.epoch, taken.previous.as_str(), taken.released),
                (2, "ops-1", true)
            );
            assert!(
                at - released < Duration::from_millis(150),
                "taken {:?} after the release, not at the next retry",
                at - released
            );

            // b does not renew (as if paused): a, a standby now, takes the lease only once it
            // expired on the database's clock, and b then finds it lost.
            let (requests, (_ftx, mut frx)) = (Arc::new(Notify::new()), mpsc::unbounded_channel());
            let t = a.wait_for_lease(&CancellationToken::new()).await.unwrap();
            let waited = at.elapsed();
            assert!(
                waited >= Duration::from_millis(1300),
                "a took the lease {waited:?} after b did, before its 1.5 s expiry"
            );
            assert_eq!(
                (t.epoch, t.previous.as_str(), t.released),
                (3, "ops-2", false)
            );
            let ended = b
                .lead(taken.epoch, &CancellationToken::new(), &requests, &mut frx)
                .await;
            assert!(matches!(ended, Ended::Lost(_)), "{ended:?}");
            assert!(!wb.borrow().leader);
            let _ = cancel;
        });
    }
}
