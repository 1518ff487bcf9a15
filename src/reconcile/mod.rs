//! Reconcile: one actor per job converges what runs to what the store says is desired.
//!
//! The store is the source of truth: a commit writes each changed job's desired spec there
//! (see [`crate::daemon`]), then pokes the job's actor. The actor is the only place that builds,
//! submits, stops or restarts that job, one thing at a time, so a job is never submitted twice
//! whatever races between a commit, a run's exit and a timer.
//!
//! The decisions are pure ([`decide`]): what the config repo wants and what the actor knows
//! give one [`decide::Action`]; a step that fails gives a [`StepError`] classed by what happens
//! next, and [`error_policy`] alone says what follows (STYLE habit 4): an invalid spec, a failed
//! build or a refused deploy is *stalled* until the desired spec changes; a cluster that does
//! not answer is *waiting* (look again with a backoff, one `engine_unreachable` per outage, see
//! [`Outages`]); a failed run is *transient*: the restart policy restarts it after a backoff or
//! gives up. The actor ([`actor`]) only carries out actions.
//!
//! Engines say what is theirs ([`crate::engine::Engine::runs_survive_daemon`],
//! [`crate::engine::Engine::recover`]): runs that outlive the daemon are adopted by the next
//! one by their recorded ids, their stops may keep state (a savepoint, kept in the store's
//! savepoint history, that the next run starts from), and a stop that does not reach the
//! cluster leaves the run live. Reconcile never names an engine.
//!
//! Files: [`decide`] (pure decisions), [`actor`] (the actor and its messages), [`mailbox`] (the
//! queue of a job's messages, small enough for 10,000 idle jobs), `deploy` (new
//! versions and `follow`), `runs` (submit, stop, exits, adoption), `timers` (schedules,
//! restarts, timeouts), `rollback` (a new version that fails before it is ready), `unhealthy`
//! (a RUNNING run the health sweep finds unhealthy), `rescaled` (a run rescaled outside
//! jobkeeper; [`parallelism`] says which vertices moved), [`recover`] (runs a previous daemon left),
//! [`sweep`](mod@sweep) (the health loop's status sweep), [`unmanaged`] (live jobs no job file owns), [`takeover`]
//! (`adopt`: a job started outside jobkeeper taken over), [`savepoint`] (periodic and
//! operators' savepoints), [`disposal`] (savepoints past `keep` disposed of), [`emit`] (recording events),
//! [`outages`], [`hostwait`] (jobs waiting on the host: a full disk, used-up file descriptors or
//! a store that refuses writes at a run's start or end is waited for with a backoff of its own,
//! one `host_fault` per episode, and never spends restart attempts).

pub mod actor;
pub mod decide;
mod deploy;
pub mod disposal;
pub mod emit;
pub mod hostwait;
pub mod mailbox;
mod onhost;
pub mod outages;
pub mod parallelism;
pub mod recover;
mod rescaled;
mod rollback;
mod runs;
pub mod savepoint;
pub mod sweep;
pub mod takeover;
#[cfg(test)]
mod testing;
mod timers;
mod unhealthy;
pub mod unmanaged;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::build::{Builder, SourceCheckout};
use crate::engine::{Engine, RunExit};
use crate::repo::ProjectRepos;
use crate::store::{RunRow, Store};

pub use actor::Msg;
pub use decide::{Deployed, StepError, error_policy};
pub use emit::{Emitter, Scope};
pub use hostwait::HostWaits;
pub use outages::Outages;
pub use recover::recover_live_runs;
pub use sweep::{sweep, sweep_loop};

pub use crate::spec::spec_hash;

/// Everything an actor needs, shared.
pub struct Context {
    /// The daemon config.
    pub settings: crate::settings::Live,
    /// The store.
    pub store: Store,
    /// Records events: log, metric, store, alert.
    pub events: Emitter,
    /// The build queue and artifact cache.
    pub builder: Arc<Builder>,
    /// Project mirrors.
    pub projects: Arc<ProjectRepos>,
    /// Engines by env name: the local engine is shared by every local env; each cluster
    /// (flink URL, spark master) has its own engine, shared by the envs that name it. An env missing here
    /// refuses its jobs with `deploy_failed`.
    pub engines: crate::engine::Engines,
    /// `state_dir/logs`.
    pub logs_dir: PathBuf,
    /// The daemon's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Clusters that do not answer right now.
    pub outages: Outages,
    /// Host faults open now (a full disk, file descriptors, the store) and the jobs waiting on
    /// them.
    pub host: HostWaits,
    /// Jobs live on managed clusters that no job file owns, as the health sweep last saw them.
    pub unmanaged: unmanaged::Unmanaged,
    /// The secret values of the runs the daemon holds (memory only), for masking.
    pub secrets: crate::secrets::Held,
}

impl Context {
    /// The engine a recorded run lives on (see [`crate::engine::Engines::of_run`]).
    pub fn engine_of_run(&self, run: &RunRow) -> Option<Arc<dyn Engine>> {
        self.engines
            .of_run(run.env.as_deref(), run.engine, run.handle.as_ref())
    }
}

/// How many actors take over their job at once ([`actor::Actor::run`]'s first step: reading
/// what the store holds of it). At a start over 10,000 jobs every actor is made at once; each
/// one's store calls wait in line behind the others', so without a bound all of them held
/// their half-read state together (a first start peaked at 260 MB).
pub const STARTING_AT_ONCE: usize = 32;

/// Routes work to the job actors, creating them on first use.
pub struct Reconciler {
    ctx: Arc<Context>,
    actors: Mutex<HashMap<String, mailbox::Sender<Msg>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// The turns of actors taking over their job ([`STARTING_AT_ONCE`]).
    starting: Arc<tokio::sync::Semaphore>,
}

impl Reconciler {
    /// A reconciler whose actors stop (and stop their local runs) when `cancel` fires.
    pub fn new(ctx: Arc<Context>, cancel: CancellationToken) -> Arc<Reconciler> {
        Arc::new(Reconciler {
            ctx,
            actors: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            cancel,
            starting: Arc::new(tokio::sync::Semaphore::new(STARTING_AT_ONCE)),
        })
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn send(&self, job: &str, msg: Msg) {
        let mut actors = self
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let msg = match actors.get(job) {
            Some(tx) => match tx.send(msg) {
                Ok(()) => return,
                Err(m) => m,
            },
            None => msg,
        };
        if self.cancel.is_cancelled() {
            return;
        }
        let (tx, rx) = mailbox::mailbox();
        // The receiver is alive: it was just made.
        let _ = tx.send(msg);
        actors.insert(job.to_string(), tx);
        let mut actor = actor::Actor::new(job.to_string(), self.ctx.clone(), self.cancel.clone());
        actor.starting = Some(self.starting.clone());
        self.tracker.spawn(Box::new(actor).run(rx));
    }

    /// The job's desired spec may have changed.
    pub fn poke(&self, job: &str) {
        self.send(job, Msg::Desired);
    }

    /// Asks every job's actor to look at its job again (after a config reload moved a
    /// cluster).
    pub fn poke_all(&self) {
        let actors = self
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tx in actors.values() {
            let _ = tx.send(Msg::Desired);
        }
    }

    /// Asks every job with `project.follow: true` to check whether its branch moved
    /// (the others ignore it).
    pub fn follow_all(&self) {
        let actors = self
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for tx in actors.values() {
            // An actor that ended has nothing to follow.
            let _ = tx.send(Msg::Follow);
        }
    }

    /// Redeploys the job now (an operator's `jobkeeper restart`): resets its restart policy,
    /// clears `gave_up` and a stalled version, stops the live run and submits again. `who` is
    /// recorded with the `restarted` event.
    pub fn restart(&self, job: &str, who: &str) {
        self.send(job, Msg::Restart(Box::new(who.to_string())));
    }

    /// The health sweep's figures of a live run.
    pub fn health(&self, job: &str, run_id: i64, facts: crate::engine::HealthFacts) {
        self.send(job, Msg::Health(Box::new((run_id, facts))));
    }

    /// The health sweep's task count of a RUNNING run.
    pub fn tasks(&self, job: &str, run_id: i64, tasks: u64) {
        self.send(job, Msg::Tasks(Box::new((run_id, tasks))));
    }

    /// Takes a savepoint of the job's live run now (an operator's, `who` asked): the receiver
    /// gets its location, or why none was taken. The caller checks the job exists.
    pub fn savepoint(
        &self,
        job: &str,
        who: &str,
    ) -> tokio::sync::oneshot::Receiver<Result<String, savepoint::SavepointRefused>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ask = savepoint::SavepointAsk {
            cause: crate::store::SavepointCause::Manual,
            who: Some(who.to_string()),
            reply: Some(tx),
        };
        self.send(job, Msg::Savepoint(Box::new(ask)));
        rx
    }

    /// A run ended.
    pub fn exited(&self, exit: RunExit) {
        let job = exit.job.clone();
        self.send(&job, Msg::Exit(Box::new(exit)));
    }

    /// Waits until every actor has stopped (after the cancel token fired).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A project's repo as the daemon fetches it: a relative path is relative to the config repo
/// when that is local (`repo: .` is the config repo itself).
pub fn project_url(config_repo: &str, project_repo: &str) -> String {
    let path = std::path::Path::new(project_repo);
    if crate::repo::is_local(project_repo)
        && path.is_relative()
        && crate::repo::is_local(config_repo)
    {
        let joined = std::path::Path::new(config_repo).join(path);
        return joined
            .canonicalize()
            .unwrap_or(joined)
            .to_string_lossy()
            .into_owned();
    }
    project_repo.to_string()
}

impl SourceCheckout for ProjectRepos {
    fn checkout(
        &self,
        repo: &str,
        commit: &str,
        dest: &std::path::Path,
    ) -> Result<(), crate::build::CheckoutError> {
        let id = crate::repo::Oid::from_str(commit).map_err(|e| {
            crate::build::CheckoutError::BadCommit {
                commit: commit.to_string(),
                why: e.to_string(),
            }
        })?;
        Ok(ProjectRepos::checkout(self, repo, id, dest)?)
    }
}
