//! Opening the store at start: SQLite under `state_dir`, or the PostgreSQL database
//! `store.postgres` names. A Postgres that does not answer is tried again with a backoff (1 s
//! doubling to 30 s), each failure logged, while the daemon's address answers `/readyz` with why
//! ([`crate::http::waiting`]): never a crash loop. A schema newer than this build and TLS
//! settings that cannot work are refused at once: waiting would not change them. From the first
//! try on, the address answers (`/healthz` 200, the rest 503 with why) and systemd's watchdog
//! is pinged.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// The first wait after a failed try; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The store `settings` name, open. `listener` is the daemon's (it answers `/readyz` while
/// Postgres is tried again); `cancel` ends the waiting with [`StoreError::Stopped`].
pub async fn open(
    settings: &Settings,
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Result<Store, StoreError> {
    let Some(pg) = &settings.store else {
        return Store::open(&settings.state_dir.join("jobkeeper.db")).await;
    };
    let target = pg.target()?;
    let shown = target.shown();
    let mut backoff = FIRST_BACKOFF;
    // The address answers, and systemd's watchdog is pinged, from the first try on: a try can
    // take seconds (a link that holds its bytes), and a daemon that starts again as a standby
    // must not look hung meanwhile.
    let mut waiting = Some(serve_waiting(
        listener,
        format!("opening the store ({shown})"),
    )?);
    let pings = crate::systemd::Watchdog::from_env(std::sync::Arc::new(
        crate::systemd::Notifier::from_env(),
    ))
    .map(|w| {
        tokio::spawn(async move {
            loop {
                w.ping();
                tokio::time::sleep(w.period()).await;
            }
        })
    });
    let mut tries = 0_u32;
    let opened = loop {
        tries += 1;
        let err = match Store::open_postgres(&target).await {
            Ok(store) => break Ok(store),
            Err(e) if !retried(&e) => break Err(e),
            Err(e) => e,
        };
        let why = format!(
            "the store ({shown}) cannot be reached: {err}; try {tries} failed, trying again in {}s",
            backoff.as_secs()
        );
        tracing::warn!(store = %shown, tries, "{why}");
        match &waiting {
            Some((tx, _)) => {
                let _ = tx.send(why);
            }
            None => waiting = Some(serve_waiting(listener, why)?),
        }
        tokio::select! {
            () = cancel.cancelled() => break Err(StoreError::Stopped),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    if let Some((_, stop)) = waiting {
        stop.cancel();
    }
    if let Some(p) = pings {
        p.abort();
    }
    if opened.is_ok() {
        tracing::info!(store = %shown, tries, "store opened (PostgreSQL)");
    }
    opened
}

/// Whether a failed open is worth trying again (the database or the link), rather than a
/// setting or a schema that waiting does not change.
fn retried(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Postgres(_) | StoreError::Timeout(_) | StoreError::Busy(_) | StoreError::Io(_)
    )
}

/// Starts answering `/readyz` with `why` on a second handle of `listener`.
fn serve_waiting(
    listener: &TcpListener,
    why: String,
) -> Result<(watch::Sender<String>, CancellationToken), StoreError> {
    let fd = listener.as_fd().try_clone_to_owned()?;
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    let second = TcpListener::from_std(std)?;
    let (tx, rx) = watch::channel(why);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::http::waiting::serve_until(second, rx, s).await {
            tracing::warn!("the address could not answer while waiting for the store: {e}");
        }
    });
    Ok((tx, stop))
}
