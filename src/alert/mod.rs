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

pub mod email;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::EventKind;
use crate::settings::{AlertChannel, Live, Settings};
use crate::spec::JobSpec;
use crate::store::{AlertStatus, EventRow, NewAlertSent, Store};

/// Events sent about the whole daemon rather than one job.
pub const DAEMON_EVENTS: [EventKind; 4] = [
    EventKind::RepoUnreachable,
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

/// A config commit as shown in an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertCommit {
    /// Full id.
    pub id: String,
    /// Short id (8 hex digits).
    pub short: String,
    /// Author, `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub subject: String,
}

/// What an alert says. Built from a recorded event by [`alert_for`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Job name, for job events.
    pub job: Option<String>,
    /// The job's env, when known.
    pub env: Option<String>,
    /// The env's engine, when known.
    pub engine: Option<String>,
    /// Alert event (`failed`, `gave_up`, ...; `test` from `jobkeeper test-alert`).
    pub event: EventKind,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The config commit it happened under.
    pub commit: Option<AlertCommit>,
    /// jobkeeper's run id, when about one run.
    pub run_id: Option<i64>,
    /// The engine's id of the run (pid, Flink job id, Spark submission id).
    pub engine_job_id: Option<String>,
    /// Restart attempt n of m, when known.
    pub attempt: Option<(u32, u32)>,
    /// Why: the last lines of the log, the engine's exception, the file's problems.
    pub reason: String,
    /// The status page of the job (or of the daemon).
    pub link: String,
    /// Repeats folded into this alert.
    pub repeats: u32,
    /// When the first folded repeat happened.
    pub repeats_since: Option<DateTime<Utc>>,
    /// The jobs an alert folding one commit's `invalid` events is about (0: one job, or none).
    pub jobs: usize,
    /// The event id in the store.
    pub event_id: i64,
}

impl Alert {
    /// `prod/clicks failed (attempt 2/5)`, with the folded repeats.
    pub fn title(&self) -> String {
        let mut t = match (&self.env, &self.job) {
            (Some(env), Some(job)) => format!("{env}/{job} {}", self.event),
            (None, Some(job)) => format!("{job} {}", self.event),
            _ if self.jobs > 1 => format!("{} jobs {}", self.jobs, self.event),
            _ => self.event.to_string(),
        };
        if let Some((n, m)) = self.attempt {
            t.push_str(&format!(" (attempt {n}/{m})"));
        }
        if let Some(more) = self.repeats_line() {
            t.push_str(&format!(", {more}"));
        }
        t
    }

    /// The email subject: `[jobkeeper] <title>`.
    pub fn subject(&self) -> String {
        format!("[jobkeeper] {}", self.title())
    }

    /// `3 more times since 10:02:03 UTC`, when repeats were folded in.
    pub fn repeats_line(&self) -> Option<String> {
        if self.repeats == 0 {
            return None;
        }
        let times = if self.repeats == 1 { "time" } else { "times" };
        Some(match self.repeats_since {
            Some(t) => format!(
                "{} more {times} since {}",
                self.repeats,
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => format!("{} more {times}", self.repeats),
        })
    }

    /// The facts as `(label, value)` pairs, in display order (only the known ones).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(job) = &self.job {
            f.push(("job", job.clone()));
        }
        if self.jobs > 1 {
            f.push(("jobs", self.jobs.to_string()));
        }
        if let Some(env) = &self.env {
            f.push(("env", env.clone()));
        }
        if let Some(engine) = &self.engine {
            f.push(("engine", engine.clone()));
        }
        f.push(("event", self.event.to_string()));
        f.push((
            "time",
            self.time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        ));
        if let Some(c) = &self.commit {
            f.push((
                "commit",
                format!("{} {} ({})", c.short, c.subject, c.author),
            ));
        }
        match (&self.engine_job_id, self.run_id) {
            (Some(id), Some(run)) => f.push(("engine job", format!("{id} (run {run})"))),
            (None, Some(run)) => f.push(("engine job", format!("run {run}"))),
            (Some(id), None) => f.push(("engine job", id.clone())),
            (None, None) => {}
        }
        if let Some((n, m)) = self.attempt {
            f.push(("attempt", format!("{n}/{m}")));
        }
        if let Some(more) = self.repeats_line() {
            f.push(("repeats", more));
        }
        f.push(("status", self.link.clone()));
        f
    }

    /// The plain-text body (email, Slack, Feishu).
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.title());
        for (k, v) in self.fields() {
            out.push_str(&format!("{:<11} {v}\n", format!("{k}:")));
        }
        if !self.reason.is_empty() {
            out.push_str("\nreason:\n");
            out.push_str(&self.reason);
            if !self.reason.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// A markdown body (DingTalk, WeCom).
    pub fn markdown(&self) -> String {
        let mut out = format!("### [jobkeeper] {}\n\n", self.title());
        for (k, v) in self.fields() {
            if k == "status" {
                out.push_str(&format!("- **{k}**: [{v}]({v})\n"));
            } else {
                out.push_str(&format!("- **{k}**: {v}\n"));
            }
        }
        if !self.reason.is_empty() {
            out.push_str("\n**reason**:\n\n```\n");
            out.push_str(self.reason.trim_end());
            out.push_str("\n```\n");
        }
        out
    }

    /// The alert `jobkeeper test-alert` sends.
    pub fn test(settings: &Settings, channel: &str) -> Alert {
        Alert {
            job: None,
            env: None,
            engine: None,
            event: EventKind::Test,
            time: Utc::now(),
            commit: None,
            run_id: None,
            engine_job_id: None,
            attempt: None,
            reason: format!(
                "A test alert from `jobkeeper test-alert {channel}`: this channel works."
            ),
            link: job_link(settings, None),
            repeats: 0,
            repeats_since: None,
            jobs: 0,
            event_id: 0,
        }
    }
}

/// The link of a job's page (`<external_url>/jobs/<job>`), or of the daemon's status page.
/// Without `external_url` it is built from `listen` (`http://<listen>/jobs/<job>`), an
/// unspecified address
/// (`0.0.0.0`) being replaced by the host's name.
pub fn job_link(settings: &Settings, job: Option<&str>) -> String {
    match &settings.external_url {
        Some(base) => {
            let base = base.trim_end_matches('/');
            match job {
                Some(job) => format!("{base}{}", job_path(job)),
                None => format!("{base}/"),
            }
        }
        None => status_link(settings.listen, job),
    }
}

/// The page of job `job`: `/jobs/<job>`, each segment of its name percent-encoded and its
/// slashes kept (the page answers at `/jobs/team-a/clicks` as at `/jobs/team-a%2Fclicks`).
fn job_path(job: &str) -> String {
    crate::spec::job_path(job)
}

/// The link of a job's page (or of the status page) built from the `listen` address (see [`job_link`]).
pub fn status_link(listen: SocketAddr, job: Option<&str>) -> String {
    let host = if listen.ip().is_unspecified() {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        match name.trim() {
            "" => "localhost".to_string(),
            n => n.to_string(),
        }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    match job {
        Some(job) => format!("http://{host}:{}{}", listen.port(), job_path(job)),
        None => format!("http://{host}:{}/", listen.port()),
    }
}

/// The spec the job runs or is to run. A store that cannot be read is logged and counted
/// ([`Store::read_or_log`]), and the job's channels are then unknown: its alert goes to every
/// channel that wants the event rather than to none.
async fn job_spec(store: &Store, job: &str) -> Option<JobSpec> {
    let row = store.read_or_log(
        Some(job),
        "job, for its alert channels",
        store.job(job).await,
    )??;
    row.desired.or(row.applied)
}

/// The channels an event goes to: the job's `alerts`, else its env's, each filtered by its
/// `on:`. Daemon-wide events, and jobs whose channels cannot be known (an invalid file that
/// never had a valid version), go to every channel that wants the event.
pub fn route(settings: &Settings, job_alerts: Option<&[String]>, event: EventKind) -> Vec<String> {
    let wanted = |ch: &&String| settings.channel_wants(ch, event);
    match job_alerts {
        Some(list) => list.iter().filter(wanted).cloned().collect(),
        None => settings.alerts.keys().filter(wanted).cloned().collect(),
    }
}

/// The job's channels: its own `alerts`, else its env's; `None` when it has no known spec.
fn job_channels(settings: &Settings, spec: Option<&JobSpec>) -> Option<Vec<String>> {
    let spec = spec?;
    if let Some(list) = &spec.alerts {
        return Some(list.clone());
    }
    Some(
        settings
            .env(&spec.env)
            .map(|e| e.alerts.clone())
            .unwrap_or_default(),
    )
}

/// Keeps the last [`MAX_REASON_CHARS`] characters of a reason.
fn clip_reason(reason: &str) -> String {
    let count = reason.chars().count();
    if count <= MAX_REASON_CHARS {
        return reason.to_string();
    }
    let tail: String = reason.chars().skip(count - MAX_REASON_CHARS).collect();
    format!("…{tail}")
}

/// An alert for a recorded event, with the channels it goes to; `None` when the event is not
/// an alert event or no channel wants it. Reads the job, run and commit from the store.
pub async fn alert_for(
    settings: &Settings,
    store: &Store,
    ev: &EventRow,
) -> Option<(Alert, Vec<String>)> {
    if !ev.kind.is_alert() {
        return None;
    }
    let event = ev.kind;
    let mut attempt = ev.attempt.map(|a| (a.n, a.of));
    let spec = match ev.job.as_deref() {
        Some(j) => job_spec(store, j).await,
        None => None,
    };
    let channels = if DAEMON_EVENTS.contains(&ev.kind) || ev.job.is_none() {
        route(settings, None, event)
    } else {
        route(
            settings,
            job_channels(settings, spec.as_ref()).as_deref(),
            event,
        )
    };
    if channels.is_empty() {
        return None;
    }
    let env = spec.as_ref().map(|s| s.env.clone());
    let mut engine = env
        .as_deref()
        .and_then(|e| settings.env(e))
        .map(|e| e.engine.as_str().to_string());
    let mut engine_job_id = None;
    // What cannot be read is logged and counted; the alert goes out without it.
    let job = ev.job.as_deref();
    if let Some(run_id) = ev.run_id {
        if let Some(run) = store
            .read_or_log(job, "run, for its alert", store.run(run_id).await)
            .flatten()
        {
            engine = Some(run.engine.as_str().to_string());
            engine_job_id = run.handle.map(|h| h.engine_id);
        }
        if attempt.is_none() {
            // A failed run: the attempt is the one that started it.
            let read = store.run_attempt(run_id).await;
            attempt = store
                .read_or_log(job, "run's attempt, for its alert", read)
                .flatten()
                .map(|a| (a.n, a.of));
        }
    }
    let mut commit = None;
    if let Some(id) = ev.commit_id.as_deref() {
        let (author, subject) = match (&ev.author, &ev.subject) {
            (Some(a), Some(s)) => (a.clone(), s.clone()),
            _ => store
                .read_or_log(job, "commit, for its alert", store.commit(id).await)
                .flatten()
                .map(|c| (c.author, c.subject))
                .unwrap_or_default(),
        };
        commit = Some(AlertCommit {
            id: id.to_string(),
            short: id.chars().take(8).collect(),
            author,
            subject,
        });
    }
    let alert = Alert {
        job: ev.job.clone(),
        env,
        engine,
        event,
        time: Utc
            .timestamp_millis_opt(ev.time)
            .single()
            .unwrap_or_else(Utc::now),
        commit,
        run_id: ev.run_id,
        engine_job_id,
        attempt,
        reason: clip_reason(&ev.message),
        link: job_link(settings, ev.job.as_deref()),
        repeats: 0,
        repeats_since: None,
        jobs: 0,
        event_id: ev.id,
    };
    Some((alert, channels))
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

type Key = (Option<String>, EventKind, Option<String>);

/// Throttle state of one (job, event, commit).
#[derive(Default)]
struct KeyState {
    /// Unix ms of the last alert fired for the key.
    last_fired: Option<i64>,
    /// Repeats waiting to be folded into one alert.
    pending: Option<Pending>,
    /// The latest event id seen for the key (an event handed over twice counts once).
    last_event: i64,
}

struct Pending {
    latest: Alert,
    channels: Vec<String>,
    count: u32,
    since: DateTime<Utc>,
    due: Instant,
}

/// The senders of each channel: (target, queue) per medium.
type Targets = HashMap<String, Vec<(String, mpsc::Sender<Alert>)>>;

struct Dispatcher {
    /// One commit's `invalid` events, gathered by [`Alerter::notify`].
    batches: Batches,
    /// When each gathering batch goes out.
    batch_due: HashMap<String, Instant>,
    /// The running config: channels, routing and throttle are read at each event.
    settings: Live,
    store: Store,
    /// One sender task per target of [`Dispatcher::channels`].
    targets: Targets,
    /// The channels `targets` were made for; `None` before the first.
    channels: Option<BTreeMap<String, AlertChannel>>,
    counters: Arc<AlertCounters>,
    first_new: i64,
    keys: HashMap<Key, KeyState>,
    /// How targets deliver (for targets made after a reload).
    opts: AlerterOptions,
    /// Stops the sender tasks.
    cancel: CancellationToken,
}

impl Dispatcher {
    /// Makes the sender tasks again when the running config's channels differ from the ones
    /// they were made for. The old senders are dropped: each old task sends what it already
    /// holds, then ends.
    fn refresh_targets(&mut self) {
        let settings = self.settings.get();
        if self.channels.as_ref() == Some(&settings.alerts) {
            return;
        }
        if self.channels.is_some() {
            tracing::info!(
                channels = settings.alerts.len(),
                "alert channels changed by a reload: senders made again"
            );
        }
        let mut targets = HashMap::new();
        for (name, channel) in &settings.alerts {
            let mut list = Vec::new();
            for (target, notifier) in notifiers(name, channel) {
                let (ttx, trx) = mpsc::channel(self.opts.target_queue.max(1));
                tokio::spawn(deliver(
                    target.clone(),
                    notifier,
                    trx,
                    self.store.clone(),
                    self.counters.clone(),
                    self.opts.clone(),
                    self.cancel.clone(),
                ));
                list.push((target, ttx));
            }
            targets.insert(name.clone(), list);
        }
        self.targets = targets;
        self.channels = Some(settings.alerts.clone());
    }

    /// The throttle of the running config, in ms.
    fn throttle_ms(&self) -> i64 {
        i64::try_from(self.settings.get().alerts_throttle.as_millis()).unwrap_or(i64::MAX)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Queued>, cancel: CancellationToken) {
        loop {
            let next_due = self
                .keys
                .values()
                .filter_map(|k| k.pending.as_ref().map(|p| p.due))
                .chain(self.batch_due.values().copied())
                .min();
            tokio::select! {
                () = cancel.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(Queued::Event(ev)) => self.on_event(&ev).await,
                    Some(Queued::Batch(commit)) => {
                        self.batch_due.insert(commit, Instant::now() + FOLD_WINDOW);
                    }
                    None => break,
                },
                () = sleep_until_opt(next_due) => {
                    self.flush_batches().await;
                    self.flush_due().await;
                }
            }
        }
        let waiting: u32 = self
            .keys
            .values()
            .filter_map(|k| k.pending.as_ref().map(|p| p.count))
            .sum();
        if waiting > 0 {
            tracing::info!(
                repeats = waiting,
                "alerter stopping: folded repeats not sent"
            );
        }
    }

    async fn on_event(&mut self, ev: &EventRow) {
        self.refresh_targets();
        // An event the store could not record (a full disk) has no id to order it by: it is
        // alerted as it comes.
        let stored = ev.id != crate::store::UNSTORED;
        if stored && ev.id <= self.first_new {
            return; // recorded before this alerter started
        }
        let Some((alert, channels)) = alert_for(&self.settings.get(), &self.store, ev).await else {
            return;
        };
        let key: Key = (ev.job.clone(), ev.kind, ev.commit_id.clone());
        let throttle = self.throttle_ms();
        let now = crate::store::now_ms();
        let state = self.keys.entry(key.clone()).or_default();
        if stored {
            if ev.id <= state.last_event {
                return;
            }
            state.last_event = ev.id;
        }
        if state.last_fired.is_none() {
            // Unread, the key counts as never fired: the alert goes out rather than be folded.
            let read = self
                .store
                .alert_last_fired(key.0.as_deref(), key.1, key.2.as_deref())
                .await;
            state.last_fired = self
                .store
                .read_or_log(key.0.as_deref(), "when its alert last fired", read)
                .flatten();
        }
        match state.last_fired {
            Some(last) if now - last < throttle => {
                self.counters.folded.fetch_add(1, Ordering::Relaxed);
                let wait = Duration::from_millis(u64::try_from(last + throttle - now).unwrap_or(0));
                match &mut state.pending {
                    Some(p) => {
                        p.count += 1;
                        p.latest = alert;
                        p.channels = channels;
                    }
                    None => {
                        state.pending = Some(Pending {
                            since: alert.time,
                            latest: alert,
                            channels,
                            count: 1,
                            due: Instant::now() + wait,
                        });
                    }
                }
            }
            _ => {
                state.last_fired = Some(now);
                self.fire(ev.kind, &alert, &channels).await;
            }
        }
    }

    /// Sends the batches whose window has passed: a batch of one event as that event's alert,
    /// a larger one as one alert per channel naming its jobs.
    async fn flush_batches(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .batch_due
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for commit in due {
            self.batch_due.remove(&commit);
            let batch = {
                let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
                batches.remove(&commit)
            };
            let Some(Batch { rows, more }) = batch else {
                continue;
            };
            if rows.len() == 1 && more == 0 {
                self.on_event(&rows[0]).await;
                continue;
            }
            self.refresh_targets();
            let settings = self.settings.get();
            let mut per_channel: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
            for row in rows.iter().filter(|r| r.id > self.first_new) {
                if let Some((alert, channels)) = alert_for(&settings, &self.store, row).await {
                    for ch in channels {
                        per_channel.entry(ch).or_default().push(alert.clone());
                    }
                }
            }
            for (channel, alerts) in per_channel {
                let alert = folded_invalid(&settings, &alerts, more);
                tracing::info!(%channel, commit = %commit, jobs = alert.jobs, "invalid job files of one commit folded into one alert");
                self.fire(EventKind::Invalid, &alert, &[channel]).await;
            }
        }
    }

    async fn flush_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for ((_, kind, _), state) in &mut self.keys {
            if state.pending.as_ref().is_some_and(|p| p.due <= now) {
                let p = state.pending.take().expect("checked above");
                state.last_fired = Some(crate::store::now_ms());
                due.push((*kind, p));
            }
        }
        for (kind, p) in due {
            // A job whose file was removed since: its repeats are news of nothing that runs.
            if let Some(job) = p.latest.job.as_deref()
                && self.job_removed(job).await
            {
                tracing::info!(job, event = %p.latest.event, repeats = p.count, "folded repeats dropped: the job was removed");
                continue;
            }
            let mut alert = p.latest;
            // The folded alert is about the latest repeat and says how many happened since
            // the last alert.
            alert.repeats = p.count;
            alert.repeats_since = Some(p.since);
            self.fire(kind, &alert, &p.channels).await;
        }
        // Forget keys with nothing pending whose throttle has passed.
        let throttle = self.throttle_ms();
        let now_ms = crate::store::now_ms();
        self.keys.retain(|_, s| {
            s.pending.is_some() || s.last_fired.is_some_and(|t| now_ms - t < throttle)
        });
    }

    /// True when the store knows `job` and its file was removed (no desired version). A store
    /// that cannot be read is logged and counted, and the job counts as not removed: its
    /// repeats are sent rather than dropped.
    async fn job_removed(&self, job: &str) -> bool {
        let row = self.store.read_or_log(
            Some(job),
            "job, for its folded alerts",
            self.store.job(job).await,
        );
        matches!(row, Some(Some(row)) if row.desired.is_none() && row.invalid.is_none())
    }

    /// Sends `alert` (of event `kind`) to every target of `channels` that has not had it yet.
    /// A claim or an end that cannot be recorded follows the failed-write rule
    /// ([`Store::record`]); an unrecorded claim sends nothing (it could be a second send),
    /// except for an event the store could not record at all, which has nothing to claim.
    async fn fire(&self, kind: EventKind, alert: &Alert, channels: &[String]) {
        for ch in channels {
            for (target, tx) in self.targets.get(ch).map(Vec::as_slice).unwrap_or_default() {
                let claim = NewAlertSent {
                    event_id: alert.event_id,
                    job: alert.job.as_deref(),
                    event: kind,
                    commit_id: alert.commit.as_ref().map(|c| c.id.as_str()),
                    target,
                    folded: i64::from(alert.repeats),
                };
                let job = alert.job.as_deref();
                // An event the store could not record cannot be sent again by a later daemon
                // (it is in no store to be found): it is sent with no claim.
                if alert.event_id != crate::store::UNSTORED {
                    let claimed = self.store.claim_alert(&claim).await;
                    match self
                        .store
                        .record(job, format_args!("alert claim {target}"), claimed)
                    {
                        Some(true) => {}
                        // Already sent (or being sent) for this event; or the claim was not
                        // recorded.
                        Some(false) | None => continue,
                    }
                }
                if tx.try_send(alert.clone()).is_err() {
                    let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(%target, event = %alert.event, job, dropped = n, "alert dropped: the channel's queue is full");
                    let dropped = AlertStatus::Dropped;
                    let end = self
                        .store
                        .finish_alert(alert.event_id, target, dropped, "queue full", 0)
                        .await;
                    self.store
                        .record(job, format_args!("alert end {target}"), end);
                }
            }
        }
    }
}

/// One alert for the `invalid` alerts of one commit going to one channel (`alerts`, at least
/// one), plus `more` events not kept: it names the first [`MAX_FOLDED_LISTED`] jobs with the
/// first line of their problems and counts the rest.
fn folded_invalid(settings: &Settings, alerts: &[Alert], more: usize) -> Alert {
    let first = &alerts[0];
    let jobs = alerts.len() + more;
    let short = first
        .commit
        .as_ref()
        .map(|c| format!(" in commit {}", c.short))
        .unwrap_or_default();
    let mut reason =
        format!("{jobs} job files are invalid{short}; each keeps its previous version:\n");
    for a in alerts.iter().take(MAX_FOLDED_LISTED) {
        let job = a.job.as_deref().unwrap_or("?");
        let line = a.reason.lines().next().unwrap_or_default();
        reason.push_str(&format!("- {job}: {line}\n"));
    }
    let unlisted = jobs.saturating_sub(MAX_FOLDED_LISTED.min(alerts.len()));
    if unlisted > 0 {
        reason.push_str(&format!(
            "… and {unlisted} more (each job's `invalid` event is in the API and on the status page)\n"
        ));
    }
    Alert {
        job: None,
        env: None,
        engine: None,
        reason: clip_reason(&reason),
        link: job_link(settings, None),
        run_id: None,
        engine_job_id: None,
        attempt: None,
        jobs,
        ..first.clone()
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One target's sender: tries each alert with a timeout, retries with doubling backoff.
async fn deliver(
    target: String,
    notifier: Arc<dyn Notifier>,
    mut rx: mpsc::Receiver<Alert>,
    store: Store,
    counters: Arc<AlertCounters>,
    opts: AlerterOptions,
    cancel: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            () = cancel.cancelled() => return,
            a = rx.recv() => match a { Some(a) => a, None => return },
        };
        let mut backoff = Backoff::uncapped(opts.backoff);
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(opts.try_timeout, notifier.send(&alert)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(AlertError::Transport(format!(
                        "no answer within {}", humantime::format_duration(opts.try_timeout)
                    ))),
                },
            };
            match result {
                Ok(d) => break Ok(d),
                Err(e) => {
                    counters.failed_tries.fetch_add(1, Ordering::Relaxed);
                    if tries >= opts.tries || !e.is_retryable() {
                        break Err(e);
                    }
                    let wait = backoff.next();
                    tracing::warn!(%target, event = %alert.event, job = alert.job.as_deref(), try_ = tries, retry_in = ?wait, "alert not delivered: {e}");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let (status, answer) = match &outcome {
            Ok(d) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%target, event = %alert.event, job = alert.job.as_deref(), tries, "alert sent: {}", d.answer);
                (AlertStatus::Sent, d.answer.clone())
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%target, event = %alert.event, job = alert.job.as_deref(), tries, "alert failed: {e}");
                (AlertStatus::Failed, e.to_string())
            }
        };
        let end = store
            .finish_alert(alert.event_id, &target, status, &answer, tries)
            .await;
        store.record(
            alert.job.as_deref(),
            format_args!("alert end {target}"),
            end,
        );
    }
}

#[cfg(test)]
mod tests;
