//! Triggers: when to fetch the config repo. A local repository is watched (its `refs/` and
//! `packed-refs`, with a non-debounced watcher, so a push is seen at once); every repository is
//! also polled, with backoff while fetches fail. Triggers are coalesced: the channel holds at
//! most one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::local_path;
use crate::backoff::Backoff;
use crate::settings::RepoSettings;

/// The longest poll interval while fetches keep failing (unless `poll` itself is longer).
pub const MAX_POLL_BACKOFF: Duration = Duration::from_secs(300);

/// Why a fetch was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerReason {
    /// The trigger task started.
    Startup,
    /// A ref of the local repository changed.
    Watch,
    /// The poll interval passed.
    Poll,
    /// A git host's webhook arrived.
    Webhook,
    /// Someone asked (`jobkeeper sync`, the API).
    Manual,
}

impl TriggerReason {
    /// The name used in logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Startup => "startup",
            TriggerReason::Watch => "watch",
            TriggerReason::Poll => "poll",
            TriggerReason::Webhook => "webhook",
            TriggerReason::Manual => "manual",
        }
    }
}

impl std::fmt::Display for TriggerReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The poll interval: `poll` while fetches succeed, doubling with each failure in a row up to
/// [`MAX_POLL_BACKOFF`] (or `poll`, if longer), back to `poll` after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollBackoff {
    /// The interval: `base`, doubled after each failure.
    wait: Backoff,
    /// Failed fetches in a row.
    failures: u32,
}

impl PollBackoff {
    /// Starts at `base` (a zero `base` is taken as one second).
    pub fn new(base: Duration) -> PollBackoff {
        let base = base.max(Duration::from_secs(1));
        PollBackoff {
            wait: Backoff::new(base, MAX_POLL_BACKOFF.max(base)),
            failures: 0,
        }
    }

    /// The time to wait before the next poll.
    pub fn interval(&self) -> Duration {
        self.wait.peek()
    }

    /// Failed fetches in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failed fetch.
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.wait.next();
    }

    /// Records a successful fetch.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.wait.reset();
    }
}

/// The daemon's side of the trigger task: report fetch results, ask for a fetch.
#[derive(Debug, Clone)]
pub struct TriggerControl {
    /// The trigger channel.
    tx: mpsc::Sender<TriggerReason>,
    /// The poll interval.
    backoff: Arc<Mutex<PollBackoff>>,
    /// Wakes the poll loop when the interval changes.
    changed: Arc<Notify>,
}

impl TriggerControl {
    fn update(&self, f: impl FnOnce(&mut PollBackoff)) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let before = *backoff;
        f(&mut backoff);
        if *backoff != before {
            self.changed.notify_one();
        }
    }

    /// A fetch succeeded: polling returns to the configured interval.
    pub fn fetch_ok(&self) {
        self.update(PollBackoff::succeeded);
    }

    /// A fetch failed: the next poll waits longer (counted from now).
    pub fn fetch_failed(&self) {
        self.update(PollBackoff::failed);
    }

    /// The time the poll loop waits now.
    pub fn poll_interval(&self) -> Duration {
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .interval()
    }

    /// Asks for a fetch; false when one is already pending (the request is folded into it) or
    /// the receiver is gone.
    pub fn trigger(&self, reason: TriggerReason) -> bool {
        self.tx.try_send(reason).is_ok()
    }
}

/// Starts the trigger task (on the current tokio runtime) for the config repo. It sends
/// [`TriggerReason::Startup`] at once, [`TriggerReason::Watch`] when a local repository's refs
/// change, and [`TriggerReason::Poll`] every poll interval; it ends when `cancel` fires. The
/// channel holds one reason: triggers that arrive while one is pending are folded into it.
pub fn spawn_trigger(
    settings: &RepoSettings,
    cancel: CancellationToken,
) -> (mpsc::Receiver<TriggerReason>, TriggerControl) {
    let (tx, rx) = mpsc::channel(1);
    let control = TriggerControl {
        tx,
        backoff: Arc::new(Mutex::new(PollBackoff::new(settings.poll))),
        changed: Arc::new(Notify::new()),
    };
    let local = local_path(&settings.url);
    tokio::spawn(run(local, control.clone(), cancel));
    (rx, control)
}

async fn run(local: Option<PathBuf>, control: TriggerControl, cancel: CancellationToken) {
    control.trigger(TriggerReason::Startup);
    let mut watcher = local.as_deref().and_then(|p| watch(p, &control));
    loop {
        let wait = control.poll_interval();
        tokio::select! {
            () = cancel.cancelled() => break,
            () = control.changed.notified() => continue,
            () = tokio::time::sleep(wait) => {
                control.trigger(TriggerReason::Poll);
                // A repository missing at start may have appeared since.
                if watcher.is_none() {
                    watcher = local.as_deref().and_then(|p| watch(p, &control));
                }
            }
        }
    }
    drop(watcher);
}

/// Watches the refs of the repository at `path` (bare or work tree); `None` when it cannot.
fn watch(path: &Path, control: &TriggerControl) -> Option<notify::RecommendedWatcher> {
    match try_watch(path, control) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch the config repo; polling only");
            None
        }
    }
}

fn try_watch(path: &Path, control: &TriggerControl) -> Result<notify::RecommendedWatcher, String> {
    let repo = git2::Repository::open(path).map_err(|e| e.message().to_string())?;
    // Linked work trees keep their refs in the common folder.
    let common = repo.commondir().to_path_buf();
    drop(repo);
    let common = common.canonicalize().unwrap_or(common);
    let refs = common.join("refs");
    let tx = control.tx.clone();
    let root = common.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(event) if is_ref_change(&root, &event) => {
            let _ = tx.try_send(TriggerReason::Watch);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "config repo watcher error");
            let _ = tx.try_send(TriggerReason::Watch);
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&refs, RecursiveMode::Recursive)
        .map_err(|e| e.to_string())?;
    watcher
        .watch(&common, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    tracing::debug!(dir = %common.display(), "watching the config repo's refs");
    Ok(watcher)
}

/// True for an event that may mean a ref moved: a write, create, remove or rename of
/// `refs/**` or `packed-refs` (not of lock files, and not mere reads).
pub(crate) fn is_ref_change(gitdir: &Path, event: &Event) -> bool {
    if event.need_rescan() {
        return true;
    }
    let relevant_kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    };
    relevant_kind
        && event.paths.iter().any(|p| {
            let Ok(rel) = p.strip_prefix(gitdir) else {
                return false;
            };
            let lock = p.extension().is_some_and(|e| e == "lock");
            !lock && (rel == Path::new("packed-refs") || rel.starts_with("refs"))
        })
}
