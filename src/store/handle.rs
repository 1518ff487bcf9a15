//! [`Store`]: the store as the daemon's async code calls it. Each call hands its work to a
//! blocking thread (tokio's blocking pool) and awaits the answer, so no SQLite call runs on a
//! runtime worker thread: one slow disk write no longer stalls the job actors that share the
//! worker. The operations themselves are written once, as blocking calls on [`Blocking`] (one
//! connection behind a mutex); this file only moves them off the runtime.
//!
//! Why blocking threads rather than a store task of its own taking typed requests: the
//! operations keep their plain signatures (a request enum of some eighty variants would be a
//! second copy of every signature), callers read as before with `.await`, and a caller that
//! cannot be async (a command at the terminal, a test thread) calls [`Blocking`] directly. The
//! arguments are copied into the call (the blocking thread outlives no borrow), which costs a
//! few small allocations per call next to a disk write.
//!
//! A call takes a blocking thread only once one of a few permits is free ([`Store::call`]):
//! as many as the database serves at once, plus [`SPARE_PERMITS`]. Without them, 10,000 job
//! actors starting at once each handed a call to the pool, which made a thread for each
//! waiting call (up to tokio's 512), each blocked on the one SQLite connection and each
//! holding its stack: a first start over 10,000 jobs peaked at 479 threads and took some 40 MB
//! more than before the store moved here. The calls now wait as tasks, in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{
    AlertSentRow, AlertStatus, Applied, Blocking, Checkpointer, CommitRecord, ConditionRow,
    DesiredUpdate, EventRow, EventSink, Incidents, JobListRow, JobQuery, JobRow, JobState,
    NewAlertSent, NewEvent, PruneCandidate, PrunedRun, Result, RunOrigin, RunRow, RunState,
    Running, SavepointKind, SavepointRow, StoreError, VersionsRow,
};
use crate::build::Artifact;
use crate::engine::{EngineKind, RunHandle};
use crate::event::{Attempt, EventKind, JobEvent};
use crate::spec::JobSpec;

/// Handle to the store for async code; cheap to clone. Every operation runs on a blocking
/// thread; see the module docs.
#[derive(Clone)]
pub struct Store {
    db: Blocking,
    /// The calls that may hold a blocking thread at once.
    permits: Arc<Semaphore>,
}

/// Calls on blocking threads beyond the database's connections: they wait on a connection
/// while another call ends, so the next one starts without waiting for a thread.
pub const SPARE_PERMITS: usize = 2;

impl From<Blocking> for Store {
    fn from(db: Blocking) -> Store {
        let permits = Arc::new(Semaphore::new(db.connections() + SPARE_PERMITS));
        Store { db, permits }
    }
}

/// Owned copies of a borrowed `&[&str]`, and the borrowed view again inside the call.
fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn views(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

impl Store {
    /// Opens (creating) the store file and brings its schema up to date, on a blocking thread.
    pub async fn open(path: &Path) -> Result<Store> {
        let path = path.to_path_buf();
        run(move || Blocking::open(&path)).await.map(Store::from)
    }

    /// Opens the store in PostgreSQL and brings its schema up to date, on a blocking thread;
    /// its statements' I/O runs on the current runtime.
    pub async fn open_postgres(target: &super::postgres::Target) -> Result<Store> {
        let target = target.clone();
        let rt = tokio::runtime::Handle::current();
        run(move || Blocking::open_postgres(&target, rt))
            .await
            .map(Store::from)
    }

    /// This host's name, as the runs it starts record it.
    pub fn node(&self) -> &str {
        self.db.node()
    }

    /// This store, recording `node` with the runs it starts (see [`Blocking::with_node`]).
    pub fn with_node(self, node: &str) -> Store {
        Store {
            db: self.db.with_node(node),
            permits: self.permits,
        }
    }

    /// Fences every later write (see [`Blocking::set_fence`]).
    pub fn set_fence(&self, fence: super::Fence) {
        self.db.set_fence(fence);
    }

    /// Refuses every later write (see [`Blocking::depose`]).
    pub fn depose(&self) {
        self.db.depose();
    }

    /// `f` hears of each fenced write (see [`Blocking::on_fenced`]).
    pub fn on_fenced(&self, f: super::OnFenced) {
        self.db.on_fenced(f);
    }

    /// Which database holds the store.
    pub fn backend(&self) -> super::sql::Backend {
        self.db.backend()
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store> {
        Blocking::in_memory().map(Store::from)
    }

    /// The blocking operations, for a caller on a thread of its own (never a runtime worker).
    pub fn blocking(&self) -> &Blocking {
        &self.db
    }

    /// Runs `f` on a blocking thread with the store and awaits its answer.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Blocking) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        // Given back once the blocking thread is done with the call, so the next call finds
        // it idle (given back on that thread, the next call often found none idle and the pool
        // made another). A caller that stops waiting gives it back at once.
        // On Postgres a call fails within the statement limit when the database does not
        // answer: the wait for a permit is bounded the same way (the calls holding them are
        // each waiting at most that long). SQLite's calls wait for the one connection, as
        // before.
        let acquire = self.permits.acquire();
        let permit = if self.db.backend() == super::sql::Backend::Postgres {
            let limit = super::postgres::QUERY_TIMEOUT;
            match tokio::time::timeout(limit, acquire).await {
                Ok(permit) => permit,
                Err(_) => {
                    return Err(StoreError::Busy(format!(
                        "every store call stayed busy for {}s",
                        limit.as_secs()
                    )));
                }
            }
        } else {
            acquire.await
        };
        let _permit = permit.map_err(|_| StoreError::Stopped)?;
        run(move || f(&db)).await
    }

    /// See [`Blocking::record`].
    pub fn record<T>(
        &self,
        job: Option<&str>,
        what: impl std::fmt::Display,
        result: Result<T>,
    ) -> Option<T> {
        self.db.record(job, what, result)
    }

    /// See [`Blocking::read_or_log`].
    pub fn read_or_log<T>(
        &self,
        job: Option<&str>,
        what: impl std::fmt::Display,
        result: Result<T>,
    ) -> Option<T> {
        self.db.read_or_log(job, what, result)
    }

    /// See [`Blocking::write_errors`].
    pub fn write_errors(&self) -> u64 {
        self.db.write_errors()
    }

    /// See [`Blocking::read_errors`].
    pub fn read_errors(&self) -> u64 {
        self.db.read_errors()
    }

    /// See [`Blocking::set_event_sink`].
    pub fn set_event_sink(&self, sink: EventSink) {
        self.db.set_event_sink(sink)
    }

    /// See [`Blocking::forward_unstored`] (no store call: the sink only).
    pub fn forward_unstored(&self, e: &NewEvent<'_>) {
        self.db.forward_unstored(e)
    }

    /// See [`Blocking::installation_id`].
    pub async fn installation_id(&self, seed: &str) -> Result<String> {
        let seed = seed.to_string();
        self.call(move |db| db.installation_id(&seed)).await
    }

    /// See [`Blocking::record_request`].
    pub async fn record_request(&self, kind: super::RequestKind, who: &str) -> Result<i64> {
        let who = who.to_string();
        self.call(move |db| db.record_request(&kind, &who)).await
    }

    /// See [`Blocking::take_requests`].
    pub async fn take_requests(&self) -> Result<Vec<super::Request>> {
        self.call(|db| db.take_requests()).await
    }

    /// See [`Blocking::artifact_key`].
    pub async fn artifact_key(&self, seed: [u8; 32]) -> Result<[u8; 32]> {
        self.call(move |db| db.artifact_key(&seed)).await
    }

    /// See [`Blocking::heartbeat`].
    pub async fn heartbeat(&self) -> Result<()> {
        self.call(|db| db.heartbeat()).await
    }

    /// See [`Blocking::integrity_check`].
    pub async fn integrity_check(&self) -> Result<String> {
        self.call(|db| db.integrity_check()).await
    }

    // alerts

    /// See [`Blocking::claim_alert`].
    pub async fn claim_alert(&self, a: &NewAlertSent<'_>) -> Result<bool> {
        let (event_id, event, folded) = (a.event_id, a.event, a.folded);
        let job = a.job.map(str::to_string);
        let commit_id = a.commit_id.map(str::to_string);
        let target = a.target.to_string();
        self.call(move |db| {
            db.claim_alert(&NewAlertSent {
                event_id,
                job: job.as_deref(),
                event,
                commit_id: commit_id.as_deref(),
                target: &target,
                folded,
            })
        })
        .await
    }

    /// See [`Blocking::finish_alert`].
    pub async fn finish_alert(
        &self,
        event_id: i64,
        target: &str,
        status: AlertStatus,
        answer: &str,
        attempts: u32,
    ) -> Result<()> {
        let (target, answer) = (target.to_string(), answer.to_string());
        self.call(move |db| db.finish_alert(event_id, &target, status, &answer, attempts))
            .await
    }

    /// See [`Blocking::alert_last_fired`].
    pub async fn alert_last_fired(
        &self,
        job: Option<&str>,
        event: EventKind,
        commit_id: Option<&str>,
    ) -> Result<Option<i64>> {
        let job = job.map(str::to_string);
        let commit_id = commit_id.map(str::to_string);
        self.call(move |db| db.alert_last_fired(job.as_deref(), event, commit_id.as_deref()))
            .await
    }

    /// See [`Blocking::alerts_sent`].
    pub async fn alerts_sent(&self, limit: usize) -> Result<Vec<AlertSentRow>> {
        self.call(move |db| db.alerts_sent(limit)).await
    }

    // commits

    /// See [`Blocking::applied_commit`].
    pub async fn applied_commit(&self) -> Result<Option<String>> {
        self.call(|db| db.applied_commit()).await
    }

    /// See [`Blocking::apply_commit`].
    pub async fn apply_commit(
        &self,
        commit: &CommitRecord,
        updates: &[DesiredUpdate],
        notes: &[(String, JobEvent)],
    ) -> Result<()> {
        let (commit, updates, notes) = (commit.clone(), updates.to_vec(), notes.to_vec());
        self.call(move |db| db.apply_commit(&commit, &updates, &notes))
            .await
    }

    /// See [`Blocking::commit`].
    pub async fn commit(&self, id: &str) -> Result<Option<CommitRecord>> {
        let id = id.to_string();
        self.call(move |db| db.commit(&id)).await
    }

    /// See [`Blocking::commits`].
    pub async fn commits(&self) -> Result<HashMap<String, CommitRecord>> {
        self.call(|db| db.commits()).await
    }

    // conditions

    /// See [`Blocking::condition_rows`].
    pub async fn condition_rows(
        &self,
        names: Option<&[&str]>,
    ) -> Result<HashMap<String, ConditionRow>> {
        let names = names.map(owned);
        self.call(move |db| db.condition_rows(names.as_deref().map(views).as_deref()))
            .await
    }

    /// See [`Blocking::problem_rows`].
    pub async fn problem_rows(
        &self,
        envs: &[&str],
        names: &[&str],
    ) -> Result<HashMap<String, ConditionRow>> {
        let (envs, names) = (owned(envs), owned(names));
        self.call(move |db| db.problem_rows(&views(&envs), &views(&names)))
            .await
    }

    /// See [`Blocking::set_incidents`].
    pub async fn set_incidents(&self, name: &str, incidents: &Incidents) -> Result<()> {
        let (name, incidents) = (name.to_string(), incidents.clone());
        self.call(move |db| db.set_incidents(&name, &incidents))
            .await
    }

    /// See [`Blocking::incidents`].
    pub async fn incidents(&self, name: &str) -> Result<Incidents> {
        let name = name.to_string();
        self.call(move |db| db.incidents(&name)).await
    }

    // events

    /// See [`Blocking::event`].
    pub async fn event(&self, e: &NewEvent<'_>) -> Result<i64> {
        let (run_id, kind, attempt) = (e.run_id, e.kind, e.attempt);
        let job = e.job.map(str::to_string);
        let commit_id = e.commit_id.map(str::to_string);
        let message = e.message.to_string();
        self.call(move |db| {
            db.event(&NewEvent {
                job: job.as_deref(),
                run_id,
                kind,
                commit_id: commit_id.as_deref(),
                message: &message,
                attempt,
            })
        })
        .await
    }

    /// See [`Blocking::events`].
    pub async fn events(&self, job: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let job = job.map(str::to_string);
        self.call(move |db| db.events(job.as_deref(), limit)).await
    }

    /// See [`Blocking::last_events`].
    pub async fn last_events(&self) -> Result<HashMap<String, EventRow>> {
        self.call(|db| db.last_events()).await
    }

    /// See [`Blocking::events_by_ids`].
    pub async fn events_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, EventRow>> {
        let ids = ids.to_vec();
        self.call(move |db| db.events_by_ids(&ids)).await
    }

    /// See [`Blocking::last_event_id`].
    pub async fn last_event_id(&self) -> Result<i64> {
        self.call(|db| db.last_event_id()).await
    }

    /// See [`Blocking::counted_restarts`].
    pub async fn counted_restarts(&self, job: &str, since_ms: i64, most: u32) -> Result<Vec<i64>> {
        let job = job.to_string();
        self.call(move |db| db.counted_restarts(&job, since_ms, most))
            .await
    }

    /// See [`Blocking::run_attempt`].
    pub async fn run_attempt(&self, run_id: i64) -> Result<Option<Attempt>> {
        self.call(move |db| db.run_attempt(run_id)).await
    }

    // jobs

    /// See [`Blocking::jobs`].
    pub async fn jobs(&self) -> Result<Vec<JobRow>> {
        self.call(|db| db.jobs()).await
    }

    /// See [`Blocking::job`].
    pub async fn job(&self, name: &str) -> Result<Option<JobRow>> {
        let name = name.to_string();
        self.call(move |db| db.job(&name)).await
    }

    /// See [`Blocking::desired_jobs`].
    pub async fn desired_jobs(&self) -> Result<Vec<(String, String)>> {
        self.call(|db| db.desired_jobs()).await
    }

    /// See [`Blocking::applied_specs`].
    pub async fn applied_specs(&self, names: &[&str]) -> Result<Vec<(String, JobSpec)>> {
        let names = owned(names);
        self.call(move |db| db.applied_specs(&views(&names))).await
    }

    /// See [`Blocking::set_state`].
    pub async fn set_state(&self, name: &str, state: JobState, reason: Option<&str>) -> Result<()> {
        let (name, reason) = (name.to_string(), reason.map(str::to_string));
        self.call(move |db| db.set_state(&name, state, reason.as_deref()))
            .await
    }

    /// See [`Blocking::set_applied`].
    pub async fn set_applied(&self, name: &str, applied: Option<Applied<'_>>) -> Result<()> {
        let name = name.to_string();
        let applied: Option<(JobSpec, String, Option<Artifact>, Option<String>)> =
            applied.map(|a| {
                (
                    a.spec.clone(),
                    a.hash.to_string(),
                    a.artifact.cloned(),
                    a.commit.map(str::to_string),
                )
            });
        self.call(move |db| {
            let applied = applied
                .as_ref()
                .map(|(spec, hash, artifact, commit)| Applied {
                    spec,
                    hash,
                    artifact: artifact.as_ref(),
                    commit: commit.as_deref(),
                });
            db.set_applied(&name, applied)
        })
        .await
    }

    /// See [`Blocking::job_list`].
    pub async fn job_list(&self) -> Result<Vec<JobListRow>> {
        self.call(|db| db.job_list()).await
    }

    /// See [`Blocking::job_page`].
    pub async fn job_page(&self, q: &JobQuery) -> Result<Vec<JobListRow>> {
        let q = q.clone();
        self.call(move |db| db.job_page(&q)).await
    }

    /// See [`Blocking::unreadable_jobs`].
    pub async fn unreadable_jobs(&self) -> Result<u64> {
        self.call(|db| db.unreadable_jobs()).await
    }

    /// See [`Blocking::job_state_counts`].
    pub async fn job_state_counts(&self) -> Result<Vec<(JobState, u64)>> {
        self.call(|db| db.job_state_counts()).await
    }

    /// See [`Blocking::restart_counts`].
    pub async fn restart_counts(&self) -> Result<HashMap<String, u64>> {
        self.call(|db| db.restart_counts()).await
    }

    // retention

    /// See [`Blocking::checkpointer`].
    pub async fn checkpointer(&self) -> Result<Checkpointer> {
        self.call(|db| db.checkpointer()).await
    }

    /// Runs [`Checkpointer::checkpoint`] on a blocking thread; the checkpointer comes back with
    /// the answer.
    pub async fn checkpoint_with(
        &self,
        checkpointer: Checkpointer,
    ) -> (Checkpointer, Result<(i64, i64)>) {
        let slot = std::sync::Arc::new(parking_lot::Mutex::new(Some(checkpointer)));
        let inner = slot.clone();
        let answer = run(move || match inner.lock().as_ref() {
            Some(c) => c.checkpoint(),
            None => Ok((0, 0)),
        })
        .await;
        let checkpointer = slot.lock().take().expect("the checkpointer comes back");
        (checkpointer, answer)
    }

    /// See [`Blocking::prune_candidates`].
    pub async fn prune_candidates(
        &self,
        after: &str,
        limit: usize,
        keep: usize,
        before_ms: i64,
    ) -> Result<Vec<PruneCandidate>> {
        let after = after.to_string();
        self.call(move |db| db.prune_candidates(&after, limit, keep, before_ms))
            .await
    }

    /// See [`Blocking::prune_runs`].
    pub async fn prune_runs(
        &self,
        job: &str,
        keep: usize,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PrunedRun>> {
        let job = job.to_string();
        self.call(move |db| db.prune_runs(&job, keep, before_ms, limit))
            .await
    }

    /// See [`Blocking::prune_events`].
    pub async fn prune_events(
        &self,
        job: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize> {
        let job = job.map(str::to_string);
        self.call(move |db| db.prune_events(job.as_deref(), before_ms, limit))
            .await
    }

    /// See [`Blocking::prune_checkpoints`].
    pub async fn prune_checkpoints(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<SavepointRow>> {
        self.call(move |db| db.prune_checkpoints(before_ms, limit))
            .await
    }

    /// See [`Blocking::prune_alerts_sent`].
    pub async fn prune_alerts_sent(&self, before_ms: i64, limit: usize) -> Result<usize> {
        self.call(move |db| db.prune_alerts_sent(before_ms, limit))
            .await
    }

    /// See [`Blocking::needed_artifacts`].
    pub async fn needed_artifacts(&self) -> Result<HashSet<String>> {
        self.call(|db| db.needed_artifacts()).await
    }

    /// See [`Blocking::page_bytes`].
    pub async fn page_bytes(&self) -> Result<u64> {
        self.call(|db| db.page_bytes()).await
    }

    // runs

    /// See [`Blocking::insert_run`].
    pub async fn insert_run(
        &self,
        job: &str,
        origin: RunOrigin<'_>,
        spec_hash: &str,
        (engine, env): (EngineKind, &str),
        log_dir: &Path,
    ) -> Result<i64> {
        let (job, spec_hash, env) = (job.to_string(), spec_hash.to_string(), env.to_string());
        let config_commit = origin.config_commit.map(str::to_string);
        let project_commit = origin.project_commit.map(str::to_string);
        let artifact_key = origin.artifact_key.map(str::to_string);
        let log_dir: PathBuf = log_dir.to_path_buf();
        self.call(move |db| {
            let origin = RunOrigin {
                config_commit: config_commit.as_deref(),
                project_commit: project_commit.as_deref(),
                artifact_key: artifact_key.as_deref(),
            };
            db.insert_run(&job, origin, &spec_hash, (engine, &env), &log_dir)
        })
        .await
    }

    /// See [`Blocking::set_run_secrets`].
    pub async fn set_run_secrets(
        &self,
        id: i64,
        names: &[String],
        mac: Option<&str>,
    ) -> Result<()> {
        let (names, mac) = (names.to_vec(), mac.map(str::to_string));
        self.call(move |db| db.set_run_secrets(id, &names, mac.as_deref()))
            .await
    }

    /// See [`Blocking::set_log_masked`].
    pub async fn set_log_masked(&self, id: i64) -> Result<()> {
        self.call(move |db| db.set_log_masked(id)).await
    }

    /// See [`Blocking::unmasked_ended_runs`].
    pub async fn unmasked_ended_runs(&self) -> Result<Vec<RunRow>> {
        self.call(|db| db.unmasked_ended_runs()).await
    }

    /// See [`Blocking::insert_adopted_run`].
    pub async fn insert_adopted_run(
        &self,
        job: &str,
        commit: Option<&str>,
        spec_hash: &str,
        (engine, env): (EngineKind, &str),
        log_dir: &Path,
        (engine_id, cluster): (&str, Option<String>),
    ) -> Result<RunHandle> {
        let (job, spec_hash, env) = (job.to_string(), spec_hash.to_string(), env.to_string());
        let (commit, engine_id) = (commit.map(str::to_string), engine_id.to_string());
        let log_dir = log_dir.to_path_buf();
        self.call(move |db| {
            db.insert_adopted_run(
                &job,
                commit.as_deref(),
                &spec_hash,
                (engine, &env),
                &log_dir,
                (&engine_id, cluster),
            )
        })
        .await
    }

    /// See [`Blocking::set_run_running`].
    pub async fn set_run_running(&self, id: i64, handle: &RunHandle) -> Result<()> {
        let handle = handle.clone();
        self.call(move |db| db.set_run_running(id, &handle)).await
    }

    /// See [`Blocking::set_run_parallelism`].
    pub async fn set_run_parallelism(
        &self,
        id: i64,
        vertices: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let vertices = vertices.clone();
        self.call(move |db| db.set_run_parallelism(id, &vertices))
            .await
    }

    /// See [`Blocking::run_parallelism`].
    pub async fn run_parallelism(&self, id: i64) -> Result<BTreeMap<String, u32>> {
        self.call(move |db| db.run_parallelism(id)).await
    }

    /// See [`Blocking::finish_run`].
    pub async fn finish_run(&self, id: i64, state: RunState, reason: Option<&str>) -> Result<()> {
        let reason = reason.map(str::to_string);
        self.call(move |db| db.finish_run(id, state, reason.as_deref()))
            .await
    }

    /// See [`Blocking::live_runs`].
    pub async fn live_runs(&self) -> Result<Vec<RunRow>> {
        self.call(|db| db.live_runs()).await
    }

    /// See [`Blocking::running`].
    pub async fn running(&self) -> Result<HashMap<String, Running>> {
        self.call(|db| db.running()).await
    }

    /// See [`Blocking::running_of`].
    pub async fn running_of(&self, job: &str) -> Result<Option<Running>> {
        let job = job.to_string();
        self.call(move |db| db.running_of(&job)).await
    }

    /// See [`Blocking::set_run_engine_version`].
    pub async fn set_run_engine_version(&self, id: i64, version: &str) -> Result<()> {
        let version = version.to_string();
        self.call(move |db| db.set_run_engine_version(id, &version))
            .await
    }

    /// See [`Blocking::runs`].
    pub async fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRow>> {
        let job = job.to_string();
        self.call(move |db| db.runs(&job, limit)).await
    }

    /// See [`Blocking::run`].
    pub async fn run(&self, id: i64) -> Result<Option<RunRow>> {
        self.call(move |db| db.run(id)).await
    }

    // savepoints

    /// See [`Blocking::add_savepoint`].
    pub async fn add_savepoint(
        &self,
        job: &str,
        run_id: Option<i64>,
        location: &str,
        kind: SavepointKind,
    ) -> Result<i64> {
        let (job, location) = (job.to_string(), location.to_string());
        self.call(move |db| db.add_savepoint(&job, run_id, &location, kind))
            .await
    }

    /// See [`Blocking::add_savepoint_taken`].
    pub async fn add_savepoint_taken(
        &self,
        job: &str,
        run_id: Option<i64>,
        location: &str,
        kind: SavepointKind,
        time: i64,
    ) -> Result<i64> {
        let (job, location) = (job.to_string(), location.to_string());
        self.call(move |db| db.add_savepoint_taken(&job, run_id, &location, kind, time))
            .await
    }

    /// See [`Blocking::savepoint_time`].
    pub async fn savepoint_time(&self, job: &str, location: &str) -> Result<Option<i64>> {
        let (job, location) = (job.to_string(), location.to_string());
        self.call(move |db| db.savepoint_time(&job, &location))
            .await
    }

    /// See [`Blocking::savepoints`].
    pub async fn savepoints(&self, job: &str, limit: usize) -> Result<Vec<SavepointRow>> {
        let job = job.to_string();
        self.call(move |db| db.savepoints(&job, limit)).await
    }

    // versions

    /// See [`Blocking::versions`].
    pub async fn versions(&self, job: &str) -> Result<VersionsRow> {
        let job = job.to_string();
        self.call(move |db| db.versions(&job)).await
    }

    /// See [`Blocking::set_versions`].
    pub async fn set_versions(&self, job: &str, row: &VersionsRow) -> Result<()> {
        let (job, row) = (job.to_string(), row.clone());
        self.call(move |db| db.set_versions(&job, &row)).await
    }
}

/// Runs `f` on tokio's blocking pool and awaits it. A panic in `f` is raised again here (as it
/// was when the call ran in place); a call the runtime dropped while shutting down is
/// [`StoreError::Stopped`].
async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A write that waits on SQLite's lock (another connection holds it) waits on a blocking
    /// thread: the runtime's only worker keeps running the other tasks meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn a_store_call_that_waits_on_the_disk_leaves_the_runtime_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).await.unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            other.execute_batch("COMMIT").unwrap();
        });
        let write = store.set_state("a", JobState::Running, None).await;
        assert!(write.is_ok(), "{write:?}");
        holder.join().unwrap();
        ticker.abort();
        let ticked = ticks.load(Ordering::Relaxed);
        assert!(
            ticked >= 20,
            "the runtime ran other tasks while the write waited: {ticked}"
        );
    }
    /// On Postgres a call waiting for a permit behind calls that do not end fails within the
    /// statement limit, as a call on a database that does not answer does; it does not wait
    /// for them (a frozen link held every permit 15 s each, and the calls behind waited in
    /// turn).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_call_behind_stuck_calls_fails_within_the_statement_limit() {
        let limit = crate::store::postgres::QUERY_TIMEOUT;
        let target = tokio::task::spawn_blocking(crate::store::tests::postgres_target)
            .await
            .unwrap()
            .expect(
                "JOBKEEPER_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
                 (scripts/postgres.sh start DIR prints one)",
            );
        let store = Store::open_postgres(&super::super::postgres::Target { pool: 1, ..target })
            .await
            .unwrap();
        // Calls that hold every permit past the limit (as calls on a frozen link do).
        let stuck: Vec<_> = (0..1 + SPARE_PERMITS)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.call(move |_| {
                        std::thread::sleep(limit + Duration::from_secs(3));
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        let start = std::time::Instant::now();
        while store.permits.available_permits() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the calls never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let asked = std::time::Instant::now();
        let answer = store.job("a").await;
        let waited = asked.elapsed();
        assert!(matches!(answer, Err(StoreError::Busy(_))), "{answer:?}");
        assert!(waited < limit + Duration::from_secs(2), "{waited:?}");
        for s in stuck {
            s.await.unwrap().unwrap();
        }
    }
}
