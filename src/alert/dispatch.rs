//! The alerter's dispatcher and senders: the dispatcher keys alerts by (job, event, config
//! commit), folds repeats within `alerts_throttle` and one commit's `invalid` events into one
//! alert, and hands each alert to one sender task per target ([`deliver`]), which sends with
//! timeouts, retries and backoff and records what was sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::EventKind;
use crate::settings::{AlertChannel, Live, Settings};
use crate::store::{AlertStatus, EventRow, NewAlertSent, Store};

use super::message::clip_reason;
use super::{
    Alert, AlertCounters, AlertError, AlerterOptions, Batch, Batches, FOLD_WINDOW,
    MAX_FOLDED_LISTED, Notifier, Queued, alert_for, job_link, notifiers,
};

pub(super) type Key = (Option<String>, EventKind, Option<String>);

/// Throttle state of one (job, event, commit).
#[derive(Default)]
pub(super) struct KeyState {
    /// Unix ms of the last alert fired for the key.
    pub(super) last_fired: Option<i64>,
    /// Repeats waiting to be folded into one alert.
    pub(super) pending: Option<Pending>,
    /// The latest event id seen for the key (an event handed over twice counts once).
    pub(super) last_event: i64,
}

pub(super) struct Pending {
    pub(super) latest: Alert,
    pub(super) channels: Vec<String>,
    pub(super) count: u32,
    pub(super) since: DateTime<Utc>,
    pub(super) due: Instant,
}

/// The senders of each channel: (target, queue) per medium.
pub(super) type Targets = HashMap<String, Vec<(String, mpsc::Sender<Alert>)>>;

pub(super) struct Dispatcher {
    /// One commit's `invalid` events, gathered by [`Alerter::notify`].
    pub(super) batches: Batches,
    /// When each gathering batch goes out.
    pub(super) batch_due: HashMap<String, Instant>,
    /// The running config: channels, routing and throttle are read at each event.
    pub(super) settings: Live,
    pub(super) store: Store,
    /// One sender task per target of [`Dispatcher::channels`].
    pub(super) targets: Targets,
    /// The channels `targets` were made for; `None` before the first.
    pub(super) channels: Option<BTreeMap<String, AlertChannel>>,
    pub(super) counters: Arc<AlertCounters>,
    pub(super) first_new: i64,
    pub(super) keys: HashMap<Key, KeyState>,
    /// How targets deliver (for targets made after a reload).
    pub(super) opts: AlerterOptions,
    /// Stops the sender tasks.
    pub(super) cancel: CancellationToken,
}

impl Dispatcher {
    /// Makes the sender tasks again when the running config's channels differ from the ones
    /// they were made for. The old senders are dropped: each old task sends what it already
    /// holds, then ends.
    pub(super) fn refresh_targets(&mut self) {
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
    pub(super) fn throttle_ms(&self) -> i64 {
        i64::try_from(self.settings.get().alerts_throttle.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Queued>, cancel: CancellationToken) {
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

    pub(super) async fn on_event(&mut self, ev: &EventRow) {
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
            Some(last) if now - last < throttle && ev.kind.folds() => {
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
    pub(super) async fn flush_batches(&mut self) {
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

    pub(super) async fn flush_due(&mut self) {
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
    pub(super) async fn job_removed(&self, job: &str) -> bool {
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
    pub(super) async fn fire(&self, kind: EventKind, alert: &Alert, channels: &[String]) {
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
pub(super) fn folded_invalid(settings: &Settings, alerts: &[Alert], more: usize) -> Alert {
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

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One target's sender: tries each alert with a timeout, retries with doubling backoff.
pub(super) async fn deliver(
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
