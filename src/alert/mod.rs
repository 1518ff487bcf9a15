//! Alerts: recorded events → alert channels (SPEC "Alerts").
//!
//! - [`Notifier`] is the boundary: one implementation per medium, [`email::EmailNotifier`]
//!   (SMTP via lettre) and [`webhook::WebhookNotifier`] (chat robots via reqwest).
//! - [`Alert`] is what a notifier sends: job, env, engine, event, time, config commit, engine
//!   job id, attempt n/m, reason and a status-page link. It never carries params or secrets.
//! - [`route`] picks the channels of an event: the job's `alerts`, else its env's, filtered by
//!   each channel's `on:`; daemon-wide events go to every channel that wants them.
//! - [`Alerter`] delivers: the store forwards every recorded event to [`Alerter::notify`],
//!   which only queues (bounded; when full the event is dropped and counted). A dispatcher
//!   task keys alerts by (job, event, config commit) and folds repeats within
//!   `alerts_throttle` into one later alert with a count; one task per target (channel ×
//!   medium) sends with timeouts, retries and backoff, so a dead channel never slows
//!   reconcile, health or the other channels. What was sent is kept in the store, so a
//!   restart re-sends nothing.
//!
//! Files: this one (the boundary, the alerter's handle and counters), `message` (what an
//! alert says and its links), `route` (its channels), `dispatch` (the dispatcher and the
//! sender tasks), `email` and `webhook` (the media).

mod dispatch;
pub mod email;
mod message;
mod route;
pub mod webhook;

use dispatch::Dispatcher;
pub use message::{Alert, AlertCommit, alert_for, job_link, status_link};
pub use route::route;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::EventKind;
use crate::settings::{AlertChannel, Live};
use crate::store::{EventRow, Store};

/// Events sent about the whole daemon rather than one job.
pub const DAEMON_EVENTS: [EventKind; 5] = [
    EventKind::RepoUnreachable,
    EventKind::StoreUnreachable,
    EventKind::EngineUnreachable,
    EventKind::HostFault,
    EventKind::CommitHeld,
];

/// How long the `invalid` events of one commit are gathered before their alert goes out.
pub const FOLD_WINDOW: Duration = Duration::from_secs(1);

/// The most `invalid` events of one commit kept to route and list; more are only counted.
pub const MAX_FOLDED_EVENTS: usize = 1000;

/// The most jobs named in a folded `invalid` alert; the rest are counted.
pub const MAX_FOLDED_LISTED: usize = 50;

/// Longest reason put in an alert, in characters (the end is kept: it holds the error).
pub const MAX_REASON_CHARS: usize = 4000;

/// Alert errors.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The channel's settings cannot work (bad URL, unreadable password or secret file).
    #[error("{0}")]
    Config(String),
    /// The far end could not be reached or the exchange broke (worth retrying).
    #[error("{0}")]
    Transport(String),
    /// The far end answered with a failure.
    #[error("{0}")]
    Refused(String),
}

impl AlertError {
    /// Whether another try may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AlertError::Config(_))
    }
}

/// What the far end answered to a delivered alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The SMTP reply (`250 ...`) or the HTTP status and an excerpt of the body.
    pub answer: String,
}

/// One way of sending alerts (SMTP, a chat webhook).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends one alert; `Ok` only when the far end accepted it.
    async fn send(&self, alert: &Alert) -> Result<Delivery, AlertError>;
}

/// The notifiers of one channel, named `channel/email` and `channel/webhook`. A medium whose
/// settings cannot work gets a notifier that fails with the reason, so it is counted and
/// reported instead of silently missing.
pub fn notifiers(name: &str, channel: &AlertChannel) -> Vec<(String, Arc<dyn Notifier>)> {
    let mut out: Vec<(String, Arc<dyn Notifier>)> = Vec::new();
    if let Some(e) = &channel.email {
        let n: Arc<dyn Notifier> = match email::EmailNotifier::new(e) {
            Ok(n) => Arc::new(n),
            Err(err) => Arc::new(Broken(err.to_string())),
        };
        out.push((format!("{name}/email"), n));
    }
    if let Some(w) = &channel.webhook {
        let n: Arc<dyn Notifier> = match webhook::WebhookNotifier::new(w) {
            Ok(n) => Arc::new(n),
            Err(err) => Arc::new(Broken(err.to_string())),
        };
        out.push((format!("{name}/webhook"), n));
    }
    out
}

/// A medium whose settings cannot work.
struct Broken(String);

#[async_trait]
impl Notifier for Broken {
    async fn send(&self, _: &Alert) -> Result<Delivery, AlertError> {
        Err(AlertError::Config(self.0.clone()))
    }
}

/// Counters of the alerter, for metrics.
#[derive(Debug, Default)]
pub struct AlertCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    failed_tries: AtomicU64,
    dropped: AtomicU64,
    folded: AtomicU64,
}

/// A snapshot of [`AlertCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts the far end accepted.
    pub sent: u64,
    /// Alerts given up on after every try.
    pub failed: u64,
    /// Tries that failed (each retry counts).
    pub failed_tries: u64,
    /// Events or alerts dropped because a queue was full.
    pub dropped: u64,
    /// Repeats folded into a later alert.
    pub folded: u64,
}

/// How the alerter delivers.
#[derive(Debug, Clone)]
pub struct AlerterOptions {
    /// Events waiting for the dispatcher; more are dropped (and counted).
    pub queue: usize,
    /// Alerts waiting per target; more are dropped (and counted).
    pub target_queue: usize,
    /// Tries per alert.
    pub tries: u32,
    /// Wait after the first failed try, doubled after each.
    pub backoff: Duration,
    /// Bound of one try.
    pub try_timeout: Duration,
}

impl Default for AlerterOptions {
    fn default() -> Self {
        AlerterOptions {
            queue: 1024,
            target_queue: 256,
            tries: 5,
            backoff: Duration::from_secs(1),
            try_timeout: Duration::from_secs(15),
        }
    }
}

/// What the dispatcher's queue carries.
enum Queued {
    /// An event to alert.
    Event(EventRow),
    /// The `invalid` events of this commit are gathering in [`Batches`].
    Batch(String),
}

/// One commit's `invalid` events, gathered to go out as one alert per channel.
#[derive(Default)]
struct Batch {
    /// The first [`MAX_FOLDED_EVENTS`] events.
    rows: Vec<EventRow>,
    /// Events past those.
    more: usize,
}

/// The batches being gathered, by commit.
type Batches = Arc<std::sync::Mutex<HashMap<String, Batch>>>;

/// Delivers alerts for recorded events; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Alerter {
    tx: mpsc::Sender<Queued>,
    batches: Batches,
    counters: Arc<AlertCounters>,
}

impl Alerter {
    /// Starts the dispatcher and one sender task per target; they stop when `cancel` fires.
    /// Events recorded before this call are never alerted. Channels and throttle are read from
    /// `settings` at each event, so a reload (SIGHUP) applies to the next one.
    pub async fn spawn(settings: Live, store: Store, cancel: CancellationToken) -> Alerter {
        Alerter::spawn_with(settings, store, cancel, AlerterOptions::default()).await
    }

    /// [`Alerter::spawn`] with explicit options.
    pub async fn spawn_with(
        settings: Live,
        store: Store,
        cancel: CancellationToken,
        opts: AlerterOptions,
    ) -> Alerter {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let counters = Arc::new(AlertCounters::default());
        let first_new = store.last_event_id().await.unwrap_or(0);
        let batches = Batches::default();
        let mut dispatcher = Dispatcher {
            batches: batches.clone(),
            batch_due: HashMap::new(),
            settings,
            store,
            targets: HashMap::new(),
            channels: None,
            counters: counters.clone(),
            first_new,
            keys: HashMap::new(),
            opts,
            cancel: cancel.clone(),
        };
        dispatcher.refresh_targets();
        tokio::spawn(dispatcher.run(rx, cancel));
        Alerter {
            tx,
            batches,
            counters,
        }
    }

    /// Makes `store` (and its clones) forward every event it records from now on to this
    /// alerter; returns the alerter, so the daemon wires alerts in one line.
    pub fn attach(self, store: &Store) -> Alerter {
        let me = self.clone();
        store.set_event_sink(Arc::new(move |e: &EventRow| me.notify(e)));
        self
    }

    /// Queues a recorded event; never blocks. When the queue is full the event is dropped,
    /// counted and logged. A job's `invalid` event under a commit joins that commit's batch
    /// (one alert per channel for all of them, after [`FOLD_WINDOW`]).
    pub fn notify(&self, event: &EventRow) {
        if !event.kind.is_alert() {
            return;
        }
        if event.kind == EventKind::Invalid
            && event.job.is_some()
            && let Some(commit) = &event.commit_id
        {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = !batches.contains_key(commit);
            let batch = batches.entry(commit.clone()).or_default();
            if batch.rows.len() < MAX_FOLDED_EVENTS {
                batch.rows.push(event.clone());
            } else {
                batch.more += 1;
            }
            if !fresh {
                return;
            }
            if self.tx.try_send(Queued::Batch(commit.clone())).is_ok() {
                return;
            }
            batches.remove(commit);
        } else if self.tx.try_send(Queued::Event(event.clone())).is_ok() {
            return;
        }
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let why = if self.tx.is_closed() {
            "alerter stopped"
        } else {
            "alert queue full"
        };
        tracing::warn!(event = %event.kind, job = event.job.as_deref(), dropped = n, "{why}: event not alerted");
    }

    /// Counters so far.
    pub fn stats(&self) -> AlertStats {
        let c = &self.counters;
        AlertStats {
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            failed_tries: c.failed_tries.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            folded: c.folded.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
