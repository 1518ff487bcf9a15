//! Events: one typed value per thing that happens to a job or to the daemon.
//!
//! [`EventKind`] is the closed list of event words the store, the API, the metrics and the alert
//! routing know; it is the only place those words are spelled. [`JobEvent`] carries an event's
//! typed fields (the restart attempt, the engine id, the reason) and renders its message; the
//! alerter reads the fields, never the message text. Recording an event (log line, metric,
//! store row, alert) is one call: [`crate::reconcile::Emitter::emit`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// What happened, as one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new version runs (or, for a batch job, is scheduled).
    Deployed,
    /// A run was started (first start, after a daemon restart, a scheduled run, an operator's
    /// restart, the running version again after a failed deploy or a refused move).
    Started,
    /// The restart policy started a run again after a failure (it names its attempt).
    Restarted,
    /// A run failed, or could not be stopped.
    Failed,
    /// Too many restarts: no more until a new commit or an operator's restart.
    GaveUp,
    /// A job that failed runs again.
    Recovered,
    /// A batch run succeeded.
    Succeeded,
    /// A new version did not build.
    BuildFailed,
    /// A new version was refused by its engine.
    DeployFailed,
    /// A job file is invalid.
    Invalid,
    /// The config repo could not be fetched.
    RepoUnreachable,
    /// The config repo answers again.
    RepoReachable,
    /// A cluster does not answer.
    EngineUnreachable,
    /// A cluster answers again.
    EngineReachable,
    /// A run left by a previous daemon was taken over.
    Adopted,
    /// A scheduled run was not started.
    Skipped,
    /// A project was built.
    Built,
    /// A change applied in place, with no new run.
    Updated,
    /// `suspend: true`: the job was stopped, its history kept.
    Suspended,
    /// The job or one of its runs was stopped.
    Stopped,
    /// A commit changed the job: the plan line.
    Planned,
    /// An operator asked for a restart of the job.
    RestartRequested,
    /// An operator asked for a sync.
    ApiSync,
    /// The daemon config was reloaded.
    ConfigReloaded,
    /// A daemon config reload was refused; the old config stays.
    ConfigReloadRefused,
    /// A RUNNING job is not healthy (stale checkpoints, restarts by its engine).
    Unhealthy,
    /// A new version failed before it was ready: the previous one runs again.
    RolledBack,
    /// The job was changed outside jobkeeper (cancelled, rescaled, a second copy).
    Drift,
    /// A stateful job that ran before started with no state: nothing was left to restore from.
    StartedEmpty,
    /// A resource of the daemon's host ran out (a full disk, file descriptors, the store): runs
    /// that start or end wait on the host.
    HostFault,
    /// The resource of a host fault works again.
    HostRecovered,
    /// A test alert (`jobkeeper test-alert`): sent, never recorded.
    Test,
    /// A config commit libgit2 cannot parse (its author, say) was read leniently.
    CommitMalformed,
    /// A config commit that removes more jobs than `max_removals` is held.
    CommitHeld,
    /// A savepoint was taken while the job runs (periodic, or an operator's `jobkeeper
    /// savepoint`).
    SavepointTaken,
    /// A savepoint (periodic, or an operator's) failed; the job keeps running.
    SavepointFailed,
    /// A change to a job of a frozen env is held until its freeze window closes.
    Held,
    /// A held change is applied (its window closed).
    Released,
    /// A live cluster run of the job that is not its current run (a submit that arrived after
    /// its run was given up, a former leader's late submit) was found and killed.
    StrayKilled,
    /// The store (PostgreSQL) did not answer; recorded once it answers again.
    StoreUnreachable,
    /// The store answers again.
    StoreReachable,
    /// Another daemon took the leader lease (`ha`).
    LeaderChanged,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 42] = [
        EventKind::Deployed,
        EventKind::Started,
        EventKind::Restarted,
        EventKind::Failed,
        EventKind::GaveUp,
        EventKind::Recovered,
        EventKind::Succeeded,
        EventKind::BuildFailed,
        EventKind::DeployFailed,
        EventKind::Invalid,
        EventKind::RepoUnreachable,
        EventKind::RepoReachable,
        EventKind::EngineUnreachable,
        EventKind::EngineReachable,
        EventKind::Adopted,
        EventKind::Skipped,
        EventKind::Built,
        EventKind::Updated,
        EventKind::Suspended,
        EventKind::Stopped,
        EventKind::Planned,
        EventKind::RestartRequested,
        EventKind::ApiSync,
        EventKind::ConfigReloaded,
        EventKind::ConfigReloadRefused,
        EventKind::Unhealthy,
        EventKind::RolledBack,
        EventKind::Drift,
        EventKind::StartedEmpty,
        EventKind::HostFault,
        EventKind::HostRecovered,
        EventKind::CommitMalformed,
        EventKind::CommitHeld,
        EventKind::Held,
        EventKind::Released,
        EventKind::Test,
        EventKind::SavepointTaken,
        EventKind::SavepointFailed,
        EventKind::StrayKilled,
        EventKind::StoreUnreachable,
        EventKind::StoreReachable,
        EventKind::LeaderChanged,
    ];

    /// The kinds an alert channel can ask for (SPEC "Alerts"), in SPEC's order, with
    /// `host_fault` and `commit_held` before the info ones.
    pub const ALERTS: [EventKind; 21] = [
        EventKind::Failed,
        EventKind::Restarted,
        EventKind::GaveUp,
        EventKind::Recovered,
        EventKind::BuildFailed,
        EventKind::DeployFailed,
        EventKind::Invalid,
        EventKind::RepoUnreachable,
        EventKind::EngineUnreachable,
        EventKind::Unhealthy,
        EventKind::RolledBack,
        EventKind::Drift,
        EventKind::StartedEmpty,
        EventKind::HostFault,
        EventKind::CommitHeld,
        EventKind::SavepointFailed,
        EventKind::StrayKilled,
        EventKind::StoreUnreachable,
        EventKind::LeaderChanged,
        EventKind::Deployed,
        EventKind::Succeeded,
    ];

    /// Alert kinds a channel does not get unless it names them in `on:`.
    pub const INFO: [EventKind; 2] = [EventKind::Deployed, EventKind::Succeeded];

    /// The word used in the store, the API, metrics, logs and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deployed => "deployed",
            EventKind::Started => "started",
            EventKind::Restarted => "restarted",
            EventKind::Failed => "failed",
            EventKind::GaveUp => "gave_up",
            EventKind::Recovered => "recovered",
            EventKind::Succeeded => "succeeded",
            EventKind::BuildFailed => "build_failed",
            EventKind::DeployFailed => "deploy_failed",
            EventKind::Invalid => "invalid",
            EventKind::RepoUnreachable => "repo_unreachable",
            EventKind::RepoReachable => "repo_reachable",
            EventKind::EngineUnreachable => "engine_unreachable",
            EventKind::EngineReachable => "engine_reachable",
            EventKind::Adopted => "adopted",
            EventKind::Skipped => "skipped",
            EventKind::Built => "built",
            EventKind::Updated => "updated",
            EventKind::Suspended => "suspended",
            EventKind::Stopped => "stopped",
            EventKind::Planned => "planned",
            EventKind::RestartRequested => "restart_requested",
            EventKind::ApiSync => "api_sync",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConfigReloadRefused => "config_reload_refused",
            EventKind::Unhealthy => "unhealthy",
            EventKind::RolledBack => "rolled_back",
            EventKind::Drift => "drift",
            EventKind::StartedEmpty => "started_empty",
            EventKind::HostFault => "host_fault",
            EventKind::HostRecovered => "host_recovered",
            EventKind::Test => "test",
            EventKind::CommitMalformed => "commit_malformed",
            EventKind::CommitHeld => "commit_held",
            EventKind::SavepointTaken => "savepoint_taken",
            EventKind::SavepointFailed => "savepoint_failed",
            EventKind::StrayKilled => "stray_killed",
            EventKind::StoreUnreachable => "store_unreachable",
            EventKind::StoreReachable => "store_reachable",
            EventKind::LeaderChanged => "leader_changed",
            EventKind::Held => "held",
            EventKind::Released => "released",
        }
    }

    /// Parses what [`EventKind::as_str`] wrote.
    pub fn parse(word: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// True for the kinds alerts are sent for.
    pub fn is_alert(self) -> bool {
        EventKind::ALERTS.contains(&self)
    }

    /// True for the alert kinds a channel gets only when it names them.
    pub fn is_info(self) -> bool {
        EventKind::INFO.contains(&self)
    }

    /// True for the kinds logged as warnings: something needs a look.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::Failed
                | EventKind::BuildFailed
                | EventKind::DeployFailed
                | EventKind::GaveUp
                | EventKind::Invalid
                | EventKind::RepoUnreachable
                | EventKind::EngineUnreachable
                | EventKind::ConfigReloadRefused
                | EventKind::Unhealthy
                | EventKind::RolledBack
                | EventKind::Drift
                | EventKind::StartedEmpty
                | EventKind::HostFault
                | EventKind::CommitMalformed
                | EventKind::CommitHeld
                | EventKind::SavepointFailed
                | EventKind::StrayKilled
                | EventKind::StoreUnreachable
        )
    }

    /// True for the kinds whose repeats within `alerts_throttle` are folded into one alert: all
    /// but `leader_changed`, whose every takeover is news (a new node, a new epoch).
    pub fn folds(self) -> bool {
        self != EventKind::LeaderChanged
    }

    /// True for the kinds a job's restart count counts: the restart policy's restarts after
    /// failures, not an operator's restart nor a version started again after a failed deploy.
    pub fn counts_as_restart(self) -> bool {
        self == EventKind::Restarted
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Restart attempt `n` of at most `of` within the restart window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// This attempt, from 1.
    pub n: u32,
    /// The most the policy allows within its window.
    pub of: u32,
}

/// One thing that happened, with its typed fields. [`JobEvent::message`] renders the text kept
/// in the store and shown in logs, the API and alerts.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A new version runs or is scheduled; why (the plan's reasons).
    Deployed {
        /// The plan's reasons, or what moved.
        why: String,
    },
    /// A run was started.
    Started {
        /// Why it started.
        why: String,
    },
    /// The restart policy started a run again after a failure. An operator's restart and a
    /// version started again after a failed deploy are [`JobEvent::Started`]: they spend no
    /// attempt and are not counted as restarts.
    Restarted {
        /// The restart-policy attempt.
        attempt: Attempt,
        /// What was restarted (`resubmitted`, `failed run retried`).
        why: String,
    },
    /// A run failed, or could not be stopped.
    Failed {
        /// Exit status, engine exception, last log lines.
        reason: String,
    },
    /// The restart policy gave up.
    GaveUp {
        /// Restarts made within the window.
        restarts: u32,
        /// The policy's window.
        window: Duration,
        /// The last failure.
        reason: String,
    },
    /// The job runs again after failures.
    Recovered {
        /// How it showed.
        why: String,
    },
    /// A batch run succeeded.
    Succeeded {
        /// How it ended.
        how: String,
    },
    /// A new version did not build.
    BuildFailed {
        /// The build's error and log tail.
        reason: String,
    },
    /// A new version was refused.
    DeployFailed {
        /// The engine's reason.
        reason: String,
    },
    /// A job file is invalid.
    Invalid {
        /// Its diagnostics, one `path:line:column: message` per line.
        errors: String,
    },
    /// A run left by a previous daemon, or a job started outside jobkeeper (`adopt`), was
    /// taken over.
    Adopted {
        /// Where it runs ([`crate::engine::Engine::location`]).
        location: String,
        /// The engine's id of the run.
        engine_id: String,
        /// `adopt`: what the job file named, when the job was started outside jobkeeper.
        named: Option<String>,
    },
    /// A scheduled run was not started.
    Skipped {
        /// Why.
        why: String,
    },
    /// A project was built.
    Built {
        /// The artifact.
        artifact: PathBuf,
    },
    /// A change applied with no new run.
    Updated {
        /// What changed.
        why: String,
    },
    /// `suspend: true`.
    Suspended,
    /// The job or a run was stopped.
    Stopped {
        /// Why, and what was kept (a savepoint).
        why: String,
    },
    /// A cluster does not answer.
    EngineUnreachable {
        /// Which ([`crate::engine::Engine::location`]).
        engine: String,
        /// The error.
        why: String,
    },
    /// A cluster answers again.
    EngineReachable {
        /// Which.
        engine: String,
    },
    /// The config repo could not be fetched.
    RepoUnreachable {
        /// The error.
        why: String,
    },
    /// The config repo answers again.
    RepoReachable {
        /// What it says now.
        message: String,
    },
    /// A commit's plan line for a job (`redeploy: params.args changed`).
    Planned {
        /// The plan line.
        line: String,
    },
    /// An operator asked for a restart.
    RestartRequested {
        /// Who asked, and how.
        who: String,
    },
    /// An operator asked for a sync.
    ApiSync {
        /// Who asked, and how.
        who: String,
    },
    /// The daemon config was reloaded.
    ConfigReloaded {
        /// What changed.
        message: String,
        /// Some change (a cluster) takes effect only after a restart of the daemon.
        needs_restart: bool,
    },
    /// A reload was refused.
    ConfigReloadRefused {
        /// The config's errors.
        errors: String,
    },
    /// A RUNNING job is not healthy.
    Unhealthy {
        /// Which check failed (`latest completed checkpoint 12m ago, more than 10m`).
        reason: String,
        /// The engine's root exception, when it has one.
        exception: Option<String>,
    },
    /// A new version failed before it was ready and the previous one runs again.
    RolledBack {
        /// The config commit of the refused version (short id), when known.
        bad_commit: Option<String>,
        /// What went wrong with it.
        why: String,
        /// What runs instead (`the previous version from savepoint ...`).
        to: String,
    },
    /// A config commit libgit2 cannot parse was read from its raw text.
    CommitMalformed {
        /// The commit's short id.
        commit: String,
        /// What libgit2 says is wrong.
        problem: String,
        /// The author as read leniently.
        author: String,
    },
    /// A change to this job is held while a freeze window of its env is open.
    Held {
        /// When the window closes (RFC 3339, in the daemon's time zone).
        until: String,
        /// The window's `reason`.
        reason: String,
    },
    /// The change held by a freeze window is applied now.
    Released {
        /// The short id of the commit whose change is applied.
        commit: String,
    },
    /// A config commit removes more jobs than `max_removals`: nothing of it is applied.
    CommitHeld {
        /// The tip's short id.
        commit: String,
        /// Jobs it removes.
        removed: usize,
        /// Jobs the daemon has.
        of: usize,
        /// The `max_removals` setting, as written.
        limit: String,
    },
    /// A savepoint was taken while the job runs.
    SavepointTaken {
        /// Where it is.
        location: String,
        /// Why (`periodic`, `manual`).
        cause: crate::engine::SavepointCause,
        /// Who asked, and how, for an operator's.
        who: Option<String>,
    },
    /// A savepoint failed; the job keeps running.
    SavepointFailed {
        /// Why (`periodic`, `manual`).
        cause: crate::engine::SavepointCause,
        /// Who asked, and how, for an operator's.
        who: Option<String>,
        /// What the engine said.
        reason: String,
    },
    /// The store did not answer from `since` until it was recorded (when it answered again).
    StoreUnreachable {
        /// The store (no password).
        store: String,
        /// When the first failed call was (ms).
        since: i64,
        /// The first error.
        why: String,
        /// Calls that failed meanwhile.
        failed: u64,
    },
    /// The store answers again.
    StoreReachable {
        /// The store.
        store: String,
    },
    /// This daemon took the leader lease (`ha`).
    LeaderChanged {
        /// The node that held it before (empty when none ever did).
        from: String,
        /// This daemon's node.
        to: String,
        /// The new epoch.
        epoch: i64,
        /// Whether the former holder released it (a switchover) rather than letting it expire.
        released: bool,
    },
    /// A live cluster run of the job that is not its current run was killed.
    StrayKilled {
        /// What was killed and why it was a stray.
        what: String,
    },
    /// The job was changed outside jobkeeper.
    Drift {
        /// What changed.
        what: String,
        /// What jobkeeper does about it.
        action: String,
    },
    /// A stateful job that ran before started with no state.
    StartedEmpty {
        /// Why nothing was left to restore from.
        why: String,
    },
    /// A resource of the daemon's host ran out.
    HostFault {
        /// The fault: what ran out and the error that said so.
        fault: crate::host::HostFault,
    },
    /// The resource of a host fault works again.
    HostRecovered {
        /// What works again.
        resource: crate::host::Resource,
    },
}

/// What a run of a job that keeps state (flink) started from, said in its start event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartedFrom {
    /// A checkpoint or savepoint.
    Point {
        /// Its name: the last part of its path (`chk-42`, `savepoint-4f1e2a-5b8c9d0e1f2a`).
        name: String,
        /// How old it was when the run started, when known.
        age: Option<Duration>,
    },
    /// No state, and why (`upgrade: stateless`, its first run, what the last run left).
    Nothing(String),
}

impl StartedFrom {
    /// The point at `location`, `age` old.
    pub fn point(location: &str, age: Option<Duration>) -> StartedFrom {
        let name = location
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(location);
        StartedFrom::Point {
            name: name.to_string(),
            age,
        }
    }
}

impl std::fmt::Display for StartedFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartedFrom::Point {
                name,
                age: Some(age),
            } => write!(f, "restored from {name}, {} old", age_words(*age)),
            StartedFrom::Point { name, age: None } => write!(f, "restored from {name}"),
            StartedFrom::Nothing(why) => write!(f, "started with no state: {why}"),
        }
    }
}

/// A duration as people say an age: `8 s`, `4 min`, `3 h`, `2 days`.
pub fn age_words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

impl JobEvent {
    /// The event's word.
    pub fn kind(&self) -> EventKind {
        match self {
            JobEvent::Deployed { .. } => EventKind::Deployed,
            JobEvent::Started { .. } => EventKind::Started,
            JobEvent::Restarted { .. } => EventKind::Restarted,
            JobEvent::Failed { .. } => EventKind::Failed,
            JobEvent::GaveUp { .. } => EventKind::GaveUp,
            JobEvent::Recovered { .. } => EventKind::Recovered,
            JobEvent::Succeeded { .. } => EventKind::Succeeded,
            JobEvent::BuildFailed { .. } => EventKind::BuildFailed,
            JobEvent::DeployFailed { .. } => EventKind::DeployFailed,
            JobEvent::Invalid { .. } => EventKind::Invalid,
            JobEvent::Adopted { .. } => EventKind::Adopted,
            JobEvent::Skipped { .. } => EventKind::Skipped,
            JobEvent::Built { .. } => EventKind::Built,
            JobEvent::Updated { .. } => EventKind::Updated,
            JobEvent::Suspended => EventKind::Suspended,
            JobEvent::Stopped { .. } => EventKind::Stopped,
            JobEvent::EngineUnreachable { .. } => EventKind::EngineUnreachable,
            JobEvent::EngineReachable { .. } => EventKind::EngineReachable,
            JobEvent::RepoUnreachable { .. } => EventKind::RepoUnreachable,
            JobEvent::RepoReachable { .. } => EventKind::RepoReachable,
            JobEvent::Planned { .. } => EventKind::Planned,
            JobEvent::RestartRequested { .. } => EventKind::RestartRequested,
            JobEvent::ApiSync { .. } => EventKind::ApiSync,
            JobEvent::ConfigReloaded { .. } => EventKind::ConfigReloaded,
            JobEvent::ConfigReloadRefused { .. } => EventKind::ConfigReloadRefused,
            JobEvent::Unhealthy { .. } => EventKind::Unhealthy,
            JobEvent::RolledBack { .. } => EventKind::RolledBack,
            JobEvent::Drift { .. } => EventKind::Drift,
            JobEvent::StrayKilled { .. } => EventKind::StrayKilled,
            JobEvent::StoreUnreachable { .. } => EventKind::StoreUnreachable,
            JobEvent::StoreReachable { .. } => EventKind::StoreReachable,
            JobEvent::LeaderChanged { .. } => EventKind::LeaderChanged,
            JobEvent::StartedEmpty { .. } => EventKind::StartedEmpty,
            JobEvent::HostFault { .. } => EventKind::HostFault,
            JobEvent::HostRecovered { .. } => EventKind::HostRecovered,
            JobEvent::CommitMalformed { .. } => EventKind::CommitMalformed,
            JobEvent::CommitHeld { .. } => EventKind::CommitHeld,
            JobEvent::SavepointTaken { .. } => EventKind::SavepointTaken,
            JobEvent::SavepointFailed { .. } => EventKind::SavepointFailed,
            JobEvent::Held { .. } => EventKind::Held,
            JobEvent::Released { .. } => EventKind::Released,
        }
    }

    /// Whether the event is logged as a warning: its kind says so, or a reload left a change
    /// that needs a restart.
    pub fn is_warning(&self) -> bool {
        match self {
            JobEvent::ConfigReloaded { needs_restart, .. } => *needs_restart,
            e => e.kind().is_warning(),
        }
    }

    /// The restart attempt the event names, when it names one.
    pub fn attempt(&self) -> Option<Attempt> {
        match self {
            JobEvent::Restarted { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The engine's id of the run the event is about, when the event carries it.
    pub fn engine_id(&self) -> Option<&str> {
        match self {
            JobEvent::Adopted { engine_id, .. } => Some(engine_id),
            _ => None,
        }
    }

    /// The text kept in the store and shown in logs, the API and alerts.
    pub fn message(&self) -> String {
        match self {
            JobEvent::Deployed { why }
            | JobEvent::Started { why }
            | JobEvent::Recovered { why }
            | JobEvent::Skipped { why }
            | JobEvent::Updated { why }
            | JobEvent::Stopped { why } => why.clone(),
            JobEvent::Restarted { attempt, why } => {
                format!("{why} (attempt {}/{})", attempt.n, attempt.of)
            }
            JobEvent::Failed { reason }
            | JobEvent::BuildFailed { reason }
            | JobEvent::DeployFailed { reason } => reason.clone(),
            JobEvent::GaveUp {
                restarts,
                window,
                reason,
            } => format!(
                "gave up after {restarts} restarts within {}: {reason}",
                humantime::format_duration(*window)
            ),
            JobEvent::Succeeded { how } => how.clone(),
            JobEvent::Invalid { errors } => errors.clone(),
            JobEvent::Adopted {
                location,
                engine_id,
                named: None,
            } => format!("{location} job {engine_id} adopted after a daemon restart"),
            JobEvent::Adopted {
                location,
                engine_id,
                named: Some(named),
            } => format!(
                "{location} job {engine_id} (adopt: {named}) taken over as it runs: not stopped, \
                 not submitted again"
            ),
            JobEvent::Built { artifact } => format!("artifact {}", artifact.display()),
            JobEvent::Suspended => "suspend: true: stopped, history kept".to_string(),
            JobEvent::EngineUnreachable { engine, why } => {
                format!("{engine} does not answer; waiting for it: {why}")
            }
            JobEvent::EngineReachable { engine } => format!("{engine} answers again"),
            JobEvent::RepoUnreachable { why } => why.clone(),
            JobEvent::RepoReachable { message } | JobEvent::ConfigReloaded { message, .. } => {
                message.clone()
            }
            JobEvent::Planned { line } => line.clone(),
            JobEvent::RestartRequested { who } => format!("restart asked for through {who}"),
            JobEvent::ApiSync { who } => format!("sync asked for through {who}"),
            JobEvent::ConfigReloadRefused { errors } => errors.clone(),
            JobEvent::Unhealthy { reason, exception } => match exception {
                Some(e) => format!("unhealthy: {reason}; root exception:\n{e}"),
                None => format!("unhealthy: {reason}"),
            },
            JobEvent::RolledBack {
                bad_commit,
                why,
                to,
            } => {
                let commit = bad_commit.as_deref().unwrap_or("(unknown commit)");
                format!("version of commit {commit} rolled back: {why}; {to}")
            }
            JobEvent::Drift { what, action } => format!("drift: {what}; {action}"),
            JobEvent::StrayKilled { what } => format!("stray killed: {what}"),
            JobEvent::StoreUnreachable {
                store,
                since,
                why,
                failed,
            } => {
                let since = chrono::DateTime::from_timestamp_millis(*since)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                format!(
                    "the store {store} did not answer from {since} ({failed} calls failed; \
                     nothing was submitted that could not be recorded): {why}"
                )
            }
            JobEvent::StoreReachable { store } => format!("the store {store} answers again"),
            JobEvent::LeaderChanged {
                from,
                to,
                epoch,
                released,
            } => match (from.as_str(), released) {
                ("", _) => format!("{to} leads (epoch {epoch}): the first leader of this store"),
                (from, true) => {
                    format!(
                        "{to} leads (epoch {epoch}), taking over from {from}, which released the lease"
                    )
                }
                (from, false) => format!(
                    "{to} leads (epoch {epoch}), taking over from {from}, whose lease expired \
                     (it stopped renewing: stopped, cut off, or frozen)"
                ),
            },
            JobEvent::StartedEmpty { why } => {
                format!("started with no state although it ran before: {why}")
            }
            JobEvent::HostFault { fault } => {
                let what = match &fault.resource {
                    r @ crate::host::Resource::Disk(_) => format!("{r} is full"),
                    crate::host::Resource::FileDescriptors => {
                        "the daemon is out of file descriptors".to_string()
                    }
                    crate::host::Resource::Store => "the store refuses writes".to_string(),
                };
                format!(
                    "{what} ({}); runs that start or end wait on the host, without spending \
                     restart attempts",
                    fault.error
                )
            }
            JobEvent::HostRecovered { resource } => {
                format!("{resource} works again; the jobs that waited on it go on")
            }
            JobEvent::CommitMalformed {
                commit,
                problem,
                author,
            } => format!(
                "commit {commit} is malformed ({problem}); its author is read as `{author}` and \
                 its tree is applied as usual (`git fsck` in the config repo shows it)"
            ),
            JobEvent::SavepointTaken {
                location,
                cause,
                who,
            } => match who {
                Some(who) => format!("{cause} savepoint {location}, asked for through {who}"),
                None => format!("{cause} savepoint {location}"),
            },
            JobEvent::SavepointFailed { cause, who, reason } => match who {
                Some(who) => format!(
                    "{cause} savepoint asked for through {who} failed (the job keeps running): \
                     {reason}"
                ),
                None => format!("{cause} savepoint failed (the job keeps running): {reason}"),
            },
            JobEvent::CommitHeld {
                commit,
                removed,
                of,
                limit,
            } => format!(
                "commit {commit} removes {removed} of {of} jobs, more than max_removals \
                 ({limit}): held, nothing of it is applied and every job keeps running; a \
                 commit with the trailer `Jobkeeper-Allow-Removals: <reason>` applies it"
            ),
            JobEvent::Held { until, reason } => format!(
                "held until {until} (freeze: {reason}): the change is applied when the window \
                 closes; the running version goes on; a commit with the trailer \
                 `Jobkeeper-Freeze-Override: <reason>` applies it now"
            ),
            JobEvent::Released { commit } => {
                format!("freeze window closed: the change of commit {commit} is applied")
            }
        }
    }

    /// A start event (`started`, `restarted`, `deployed`) saying what its run started from;
    /// any other event as it is.
    pub fn with_start(&self, from: &StartedFrom) -> JobEvent {
        let mut e = self.clone();
        match &mut e {
            JobEvent::Started { why }
            | JobEvent::Restarted { why, .. }
            | JobEvent::Deployed { why } => {
                *why = if why.is_empty() {
                    from.to_string()
                } else {
                    format!("{why}; {from}")
                };
            }
            _ => {}
        }
        e
    }
}

/// A message on one log line: its first line and, when it has more, its last (where a log tail
/// or a stack trace says what went wrong), with how many lines the store's event has between.
pub fn one_line(message: &str) -> String {
    let Some((first, rest)) = message.split_once('\n') else {
        return message.to_string();
    };
    let lines: Vec<&str> = rest.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.split_last() {
        None => first.to_string(),
        Some((last, [])) => format!("{first} | {}", last.trim()),
        Some((last, between)) => {
            let n = between.len();
            let lines = if n == 1 { "line" } else { "lines" };
            format!(
                "{first} | … {n} more {lines} in the event … | {}",
                last.trim()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_word() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn alert_kinds_are_spec_s_list_and_info_ones_are_among_them() {
        let words: Vec<&str> = EventKind::ALERTS.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            words,
            [
                "failed",
                "restarted",
                "gave_up",
                "recovered",
                "build_failed",
                "deploy_failed",
                "invalid",
                "repo_unreachable",
                "engine_unreachable",
                "unhealthy",
                "rolled_back",
                "drift",
                "started_empty",
                "host_fault",
                "commit_held",
                "savepoint_failed",
                "stray_killed",
                "store_unreachable",
                "leader_changed",
                "deployed",
                "succeeded"
            ]
        );
        assert!(EventKind::INFO.iter().all(|k| k.is_alert()));
        assert!(!EventKind::Started.is_alert());
    }

    #[test]
    fn savepoint_events_say_why_where_and_who_asked() {
        use crate::engine::SavepointCause;
        let taken = JobEvent::SavepointTaken {
            location: "file:/sp/savepoint-1".into(),
            cause: SavepointCause::Manual,
            who: Some("the API from 127.0.0.1:5000".into()),
        };
        assert_eq!(
            taken.message(),
            "manual savepoint file:/sp/savepoint-1, asked for through the API from 127.0.0.1:5000"
        );
        assert!(!taken.kind().is_alert() && !taken.is_warning());
        let failed = JobEvent::SavepointFailed {
            cause: SavepointCause::Periodic,
            who: None,
            reason: "java.io.IOException: nope".into(),
        };
        assert_eq!(
            failed.message(),
            "periodic savepoint failed (the job keeps running): java.io.IOException: nope"
        );
        assert!(failed.kind().is_alert() && failed.is_warning());
        assert_eq!(failed.kind().as_str(), "savepoint_failed");
    }

    #[test]
    fn a_restart_names_its_attempt_in_its_message_and_its_fields() {
        let e = JobEvent::Restarted {
            attempt: Attempt { n: 2, of: 5 },
            why: "resubmitted".into(),
        };
        assert_eq!(e.kind(), EventKind::Restarted);
        assert!(e.kind().counts_as_restart());
        assert_eq!(e.attempt(), Some(Attempt { n: 2, of: 5 }));
        assert_eq!(e.message(), "resubmitted (attempt 2/5)");
        // An operator's restart is a start of its own: no attempt, not counted.
        let by_hand = JobEvent::Started {
            why: "restart asked for by ops".into(),
        };
        assert_eq!(by_hand.attempt(), None);
        assert!(!by_hand.kind().counts_as_restart());
        assert_eq!(by_hand.message(), "restart asked for by ops");
    }

    #[test]
    fn give_up_and_adoption_messages() {
        let g = JobEvent::GaveUp {
            restarts: 3,
            window: Duration::from_secs(3600),
            reason: "exit 1".into(),
        };
        assert_eq!(g.message(), "gave up after 3 restarts within 1h: exit 1");
        let a = JobEvent::Adopted {
            location: "flink http://x".into(),
            engine_id: "abc".into(),
            named: None,
        };
        assert_eq!(a.engine_id(), Some("abc"));
        assert_eq!(
            a.message(),
            "flink http://x job abc adopted after a daemon restart"
        );
        let a = JobEvent::Adopted {
            location: "flink http://x".into(),
            engine_id: "abc".into(),
            named: Some("clicks-etl".into()),
        };
        assert_eq!(
            a.message(),
            "flink http://x job abc (adopt: clicks-etl) taken over as it runs: not stopped, not \
             submitted again"
        );
    }

    #[test]
    fn a_start_says_what_it_restored_from_and_how_old_it_was() {
        let cp = StartedFrom::point("file:/tmp/cp/4f1e/chk-42", Some(Duration::from_secs(8)));
        let e = JobEvent::Restarted {
            attempt: Attempt { n: 1, of: 3 },
            why: "resubmitted".into(),
        }
        .with_start(&cp);
        assert_eq!(
            e.message(),
            "resubmitted; restored from chk-42, 8 s old (attempt 1/3)"
        );
        let sp = StartedFrom::point(
            "file:/sp/savepoint-4f1e2a-5b8c9d0e1f2a/",
            Some(Duration::from_secs(250)),
        );
        let e = JobEvent::Deployed {
            why: "params.args changed".into(),
        }
        .with_start(&sp);
        assert_eq!(
            e.message(),
            "params.args changed; restored from savepoint-4f1e2a-5b8c9d0e1f2a, 4 min old"
        );
        let none = StartedFrom::Nothing("`upgrade: stateless`".into());
        let e = JobEvent::Started {
            why: "new job".into(),
        }
        .with_start(&none);
        assert_eq!(
            e.message(),
            "new job; started with no state: `upgrade: stateless`"
        );
        let other = JobEvent::Failed { reason: "x".into() };
        assert_eq!(other.with_start(&none), other);
        assert_eq!(age_words(Duration::from_secs(7300)), "2 h");
        assert_eq!(age_words(Duration::from_secs(3 * 86_400)), "3 days");
        let empty = JobEvent::StartedEmpty {
            why: "flink job 1f completed no checkpoint".into(),
        };
        assert_eq!(empty.kind(), EventKind::StartedEmpty);
        assert!(empty.is_warning() && empty.kind().is_alert() && !empty.kind().is_info());
    }

    #[test]
    fn one_line_says_how_many_lines_the_store_has() {
        assert_eq!(one_line("a"), "a");
        assert_eq!(one_line("a\n"), "a");
        assert_eq!(one_line("a\nb"), "a | b");
        assert_eq!(
            one_line("exit 1; last lines:\nx\n\n  Caused by: boom\n"),
            "exit 1; last lines: | … 1 more line in the event … | Caused by: boom"
        );
    }
}
