//! Which channels an event goes to ([`route`]): the job's `alerts`, else its env's, each
//! filtered by its `on:`; every channel that wants it when the job's channels cannot be known.

use crate::event::EventKind;
use crate::settings::Settings;
use crate::spec::JobSpec;
use crate::store::Store;

/// The spec the job runs or is to run. A store that cannot be read is logged and counted
/// ([`Store::read_or_log`]), and the job's channels are then unknown: its alert goes to every
/// channel that wants the event rather than to none.
pub(super) async fn job_spec(store: &Store, job: &str) -> Option<JobSpec> {
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
pub(super) fn job_channels(settings: &Settings, spec: Option<&JobSpec>) -> Option<Vec<String>> {
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
