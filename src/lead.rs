//! A leader's term, as the daemon lives it: taking the lease (a standby until then), then
//! keeping it while the daemon acts, carrying out the requests standbys recorded, and at its
//! end either releasing it (SIGTERM) or stepping down (lost: [`crate::ha::stepdown`]). The
//! lease itself is [`crate::ha`]'s; this module joins it to the daemon's parts (the API state,
//! the reconciler, the engines).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::event::JobEvent;
use crate::ha::keeper::{Ended, Keeper};
use crate::ha::lease::Taken;
use crate::http::ApiState;
use crate::reconcile::Scope;
use crate::repo::trigger::TriggerReason;
use crate::store::{Fence, RequestKind};

/// How long a stepping-down leader gives each local run after SIGTERM.
const STEP_DOWN_GRACE: Duration = Duration::from_secs(1);

/// Waits as a standby until this daemon takes the lease, then fences the store's writes with
/// it and records `leader_changed`. `None` when `cancel` fired first.
pub async fn take(
    keeper: &mut Keeper,
    api: &Arc<ApiState>,
    cancel: &CancellationToken,
) -> Option<(Taken, mpsc::UnboundedReceiver<i64>)> {
    tracing::info!(node = %keeper.node(), "ha: standby, waiting for the leader lease");
    let warm_stop = cancel.child_token();
    let warm = tokio::spawn(crate::ha::warm::keep_warm(
        api.reconciler.context().clone(),
        warm_stop.clone(),
    ));
    let taken = keeper.wait_for_lease(cancel).await;
    warm_stop.cancel();
    // A fetch in flight ends first (the follower then opens the same mirror), within bounds.
    let _ = tokio::time::timeout(Duration::from_secs(2), warm).await;
    let taken = taken?;
    let store = &api.store;
    store.set_fence(Fence {
        epoch: taken.epoch,
        holder: keeper.holder().to_string(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    store.on_fenced(Arc::new(move |epoch| {
        let _ = tx.send(epoch);
    }));
    api.metrics.took_over();
    tracing::info!(
        epoch = taken.epoch,
        from = %taken.previous,
        "ha: this daemon leads"
    );
    // Alerts from here on (a standby sends none): `leader_changed` is the first.
    if let Some(alerter) = &api.alerter {
        alerter.clone().attach(store);
    }
    let event = JobEvent::LeaderChanged {
        from: taken.previous.clone(),
        to: keeper.node().to_string(),
        epoch: taken.epoch,
        released: taken.released,
    };
    api.reconciler
        .context()
        .events
        .emit(Scope::daemon(), &event)
        .await;
    Some((taken, rx))
}

/// Keeps the lease taken at `epoch` while the daemon acts, until `cancel` fires (the keeper
/// is handed back, to release the lease once the runs are handled) or the lease is lost (the
/// daemon steps down: this never returns then).
pub async fn keep(
    mut keeper: Keeper,
    epoch: i64,
    api: Arc<ApiState>,
    mut fenced: mpsc::UnboundedReceiver<i64>,
    cancel: CancellationToken,
) -> Keeper {
    let requests = Arc::new(Notify::new());
    let carry = tokio::spawn(carry_out_requests(
        api.clone(),
        requests.clone(),
        cancel.clone(),
    ));
    let ended = keeper.lead(epoch, &cancel, &requests, &mut fenced).await;
    carry.abort();
    match ended {
        Ended::Stopping => keeper,
        Ended::Lost(why) => step_down(&api, &why.to_string()).await,
    }
}

/// Stops acting at once: every write refused, the local runs ended, then the binary runs again
/// in place as a standby.
async fn step_down(api: &ApiState, why: &str) -> ! {
    tracing::error!("ha: stepping down: {why}");
    api.store.depose();
    let ended = api
        .reconciler
        .context()
        .engines
        .end_local_runs(STEP_DOWN_GRACE)
        .await;
    // A start caught between the fence and the first sweep: looked for once more.
    let late = api
        .reconciler
        .context()
        .engines
        .end_local_runs(STEP_DOWN_GRACE)
        .await;
    tracing::warn!(
        local_runs = ended + late,
        "ha: stepped down; local runs ended, starting again as a standby"
    );
    let err = crate::ha::stepdown::reexec(why);
    tracing::error!("ha: could not start again as a standby: {err}; exiting");
    std::process::exit(75)
}

/// Carries out the requests standbys recorded, when one is announced and every few seconds.
async fn carry_out_requests(api: Arc<ApiState>, note: Arc<Notify>, cancel: CancellationToken) {
    // Not before the runs a former leader left are handled and the config repo is followed.
    while api.trigger.get().is_none() {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    loop {
        match api.store.take_requests().await {
            Ok(requests) => {
                for r in requests {
                    tracing::info!(
                        request = r.id,
                        from = %r.node,
                        who = %r.who,
                        "ha: carrying out a request recorded by a standby"
                    );
                    match r.kind {
                        RequestKind::Restart(job) => api.reconciler.restart(&job, &r.who),
                        RequestKind::Sync => {
                            if let Some(t) = api.trigger.get() {
                                t.trigger(TriggerReason::Manual);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("ha: the standbys' requests could not be read: {e}"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = note.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
