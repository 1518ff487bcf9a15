//! Jobs waiting on the host: one `host_fault` event per episode of each resource (the disk of
//! `state_dir`, file descriptors, the store), whoever meets it first, and one `host_recovered`
//! when a job's start or record goes through again; and each waiting job's condition, which the
//! API, `status` and the pages show over what the store holds (a store that refuses writes
//! cannot hold it itself).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::emit::{Emitter, Scope};
use crate::event::JobEvent;
use crate::host::{HostFault, Resource};
use crate::store::{JobState, RunState};

/// A job waiting on the host, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// What it waits for.
    pub resource: Resource,
    /// Since when (ms since the epoch).
    pub since: i64,
    /// Runs that ended while their end could not be recorded, and how they ended: never shown
    /// as running.
    pub unrecorded: Vec<(i64, RunState)>,
    /// A run of the job is live.
    pub live: bool,
}

impl Waiting {
    /// The state shown: `running` while a run is live, else `pending` (it starts when the host
    /// allows).
    pub fn state(&self) -> JobState {
        if self.live {
            JobState::Running
        } else {
            JobState::Pending
        }
    }

    /// The reason shown with the state.
    pub fn reason(&self) -> String {
        let since = chrono::DateTime::from_timestamp_millis(self.since)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let what = match &self.resource {
            Resource::Disk(_) => format!("{} is full", self.resource),
            Resource::FileDescriptors => "out of file descriptors".to_string(),
            Resource::Store => "the store refuses writes".to_string(),
        };
        format!("waiting on the host since {since}: {what}; restart attempts are not spent")
    }
}

#[derive(Default)]
struct Inner {
    /// Resources in a fault now.
    down: BTreeSet<Resource>,
    /// Jobs waiting, by name.
    jobs: HashMap<String, Waiting>,
}

/// The host faults open now and the jobs waiting on them.
pub struct HostWaits {
    /// The state folder: a full disk below it is named by it.
    state_dir: PathBuf,
    inner: Mutex<Inner>,
}

impl HostWaits {
    /// No faults; disks below `state_dir` are named as `state_dir`'s.
    pub fn new(state_dir: &Path) -> HostWaits {
        HostWaits {
            state_dir: state_dir.to_path_buf(),
            inner: Mutex::default(),
        }
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fault with a full disk below the state folder named as the state folder's, so one
    /// disk is one episode whichever file met it.
    pub fn named(&self, mut fault: HostFault) -> HostFault {
        if let Resource::Disk(path) = &fault.resource
            && path.starts_with(&self.state_dir)
        {
            fault.resource = Resource::Disk(self.state_dir.clone());
        }
        fault
    }

    /// `fault` was met: the first meeting of an episode raises `host_fault`.
    pub async fn fault(&self, events: &Emitter, fault: &HostFault) {
        let new = self.lock().down.insert(fault.resource.clone());
        if new {
            let event = JobEvent::HostFault {
                fault: fault.clone(),
            };
            events.emit(Scope::daemon(), &event).await;
        }
    }

    /// `resource` works again: the episode ends with `host_recovered`.
    pub async fn recovered(&self, events: &Emitter, resource: &Resource) {
        let was = self.lock().down.remove(resource);
        if was {
            let event = JobEvent::HostRecovered {
                resource: resource.clone(),
            };
            events.emit(Scope::daemon(), &event).await;
        }
    }

    /// Shows `job` as waiting, or no longer waiting (`None`).
    pub fn set_job(&self, job: &str, waiting: Option<Waiting>) {
        let mut inner = self.lock();
        match waiting {
            Some(w) => {
                inner.jobs.insert(job.to_string(), w);
            }
            None => {
                inner.jobs.remove(job);
            }
        }
    }

    /// How `job` waits on the host, if it does.
    pub fn job(&self, job: &str) -> Option<Waiting> {
        self.lock().jobs.get(job).cloned()
    }

    /// The jobs waiting on the host now.
    pub fn waiting_jobs(&self) -> Vec<String> {
        self.lock().jobs.keys().cloned().collect()
    }

    /// The resources in a fault now.
    pub fn down(&self) -> Vec<Resource> {
        self.lock().down.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::EventKind;
    use crate::store::Store;

    #[tokio::test]
    async fn an_episode_is_one_host_fault_and_one_host_recovered_per_resource() {
        let store = Store::in_memory().unwrap();
        let events = Emitter::new(store.clone(), Arc::default());
        let waits = HostWaits::new(Path::new("/srv/state"));
        let log = HostFault::new(
            Resource::Disk("/srv/state/logs/app".into()),
            "No space left on device",
        );
        let disk = waits.named(log);
        assert_eq!(disk.resource, Resource::Disk("/srv/state".into()));
        let elsewhere = waits.named(HostFault::new(Resource::Disk("/tmp".into()), "full"));
        assert_eq!(elsewhere.resource, Resource::Disk("/tmp".into()));
        for _ in 0..5 {
            waits.fault(&events, &disk).await;
        }
        let fds = HostFault::new(Resource::FileDescriptors, "Too many open files");
        waits.fault(&events, &fds).await;
        waits.recovered(&events, &disk.resource).await;
        waits.recovered(&events, &disk.resource).await;
        assert_eq!(waits.down(), [Resource::FileDescriptors]);
        let kinds: Vec<EventKind> = store
            .events(None, 10)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::HostFault,
                EventKind::HostFault,
                EventKind::HostRecovered
            ]
        );
        let first = &store.events(None, 10).await.unwrap()[2];
        assert!(first.job.is_none(), "a daemon-wide event");
        assert!(
            first.message.contains("the disk of /srv/state is full"),
            "{}",
            first.message
        );
    }

    #[test]
    fn a_waiting_job_is_shown_pending_unless_a_run_is_live() {
        let waits = HostWaits::new(Path::new("/s"));
        let w = Waiting {
            resource: Resource::FileDescriptors,
            since: 0,
            unrecorded: vec![(7, RunState::Failed)],
            live: false,
        };
        waits.set_job("a", Some(w.clone()));
        let shown = waits.job("a").unwrap();
        assert_eq!(shown.state(), JobState::Pending);
        assert!(
            shown.reason().contains("out of file descriptors"),
            "{}",
            shown.reason()
        );
        waits.set_job("a", Some(Waiting { live: true, ..w }));
        assert_eq!(waits.job("a").unwrap().state(), JobState::Running);
        waits.set_job("a", None);
        assert_eq!(waits.job("a"), None);
    }
}
