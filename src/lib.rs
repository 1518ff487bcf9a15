//! jobkeeper keeps a fleet of batch and streaming jobs exactly as a git config repository says.
//!
//! # Layout
//! A commit flows trigger → repo → spec → plan → sync → reconcile → build → engine, with the
//! status sweep feeding run ends back into reconcile and every step recording typed events
//! (store, metrics, alerts) through one call. The modules are listed once each, in that order
//! within five groups: what people write, a commit to desired state, converging, the record
//! and the telling, and the wiring.
//!
//! Parsing and checking what people write:
//! - [`diag`]: `path:line:column` diagnostics shared by every parser.
//! - [`yaml`]: a located YAML tree with limits (duplicate keys, aliases, depth).
//! - [`schedule`]: crontab-meaning cron expressions in a time zone.
//! - [`spec`]: job files: types, parsing, validation, `${var:..}` and `${secret:..}`.
//! - [`settings`]: the daemon config; each engine's own block is read by its engine.
//!
//! From a commit to the desired state:
//! - [`repo`]: git: config-repo mirror, reading job files at a commit, tree diffs, project
//!   mirrors and checkouts, watch and poll triggers.
//! - [`changes`]: the job files two commits differ in, parsed into changes.
//! - [`plan`]: applied specs vs changed specs → an action per job, with reasons (pure).
//! - [`moves`]: what `plan` adds when a change of env moves a job to another cluster.
//! - [`removals`]: the `max_removals` safety valve: a commit removing too many jobs is held.
//! - [`freeze`]: freeze windows: when changes to the jobs of some envs are held.
//! - [`sync`]: fetch the config repo, plan its tip, record each job's desired state.
//!
//! Converging what runs to the desired state:
//! - [`event`]: the typed events ([`event::EventKind`], [`event::JobEvent`]).
//! - [`reconcile`]: one actor per job; pure decisions and one error policy; the status sweep;
//!   recovery of runs a previous daemon left; recording events.
//! - [`health`]: the restart policy's arithmetic and when a batch job first runs.
//! - [`backoff`]: doubling waits between retries.
//! - [`host`]: the daemon's own host: a full disk, used-up file descriptors, a store that
//!   refuses writes told apart from a job's failures; the descriptor limit and reserve.
//! - [`build`]: project builds, artifact cache, build queue.
//! - [`proc`]: child processes in their own process group: spawn, wait with a timeout, kill.
//! - [`cgroup`]: local runs' cgroups (v2), so a run's end takes every process it started.
//! - [`engine`]: the [`engine::Engine`] trait, engine kinds and configs, and one file per
//!   engine (local, flink, spark; yarn: Flink on YARN through its ResourceManager, the Flink
//!   CLI and SPNEGO).
//! - [`runlogs`]: local runs' log files kept under their size limit.
//! - [`secrets`]: the secret values of the runs the daemon holds (memory only), their keyed
//!   fingerprints, and masking a run's log in place when it ends.
//! - [`retention`]: deleting old runs, events, logs, artifacts and builds.
//!
//! Keeping the record and telling people:
//! - [`store`]: SQLite or PostgreSQL, one file per table: applied commit, jobs, runs, events,
//!   alerts sent, savepoints, the leader lease's fence; numbered migrations. Async code calls it
//!   through [`store::Store`], which runs each operation on a blocking thread.
//! - [`store_start`]: opening the store at start, a Postgres that does not answer tried again.
//! - [`served_key`]: the installation's key of the jar URLs Spark workers fetch, in the store.
//! - [`alert`]: events → email and chat-webhook alerts: routing, throttle, delivery.
//! - [`condition`]: a job's conditions (invalid file, deploy failed, rolled back, drift, ...),
//!   derived from what runs and what its file asks, and where it runs.
//! - [`metrics`]: counters and the Prometheus text format.
//! - [`http`]: the HTTP API, git webhooks, `/metrics` and the status page.
//!
//! Wiring and the command line:
//! - [`ha`]: who leads: the lease in PostgreSQL (taken, renewed, released on the database's
//!   clock), stepping down, a standby kept warm, and the [`ha::Leadership`] state `GET /leaderz`
//!   and `jobkeeper_leader` read (without `ha` the only daemon, always leading).
//! - [`lead`]: a leader's term as the daemon lives it: standby until the lease is taken, the
//!   standbys' requests carried out, the lease released or the daemon stepping down.
//! - [`reload`]: SIGHUP: read the config again and put it in place for every reader.
//! - [`systemd`]: sd_notify (ready, status, watchdog, reload, stop) and journald log lines.
//! - [`daemon`]: wiring only: tasks, triggers, shutdown.
//! - [`console`]: what the commands share at the terminal: stdout, loading the daemon config.
//! - [`client`]: the commands that talk to a running daemon (`status`, `sync`, `restart`, `logs`).
//! - [`show`]: `jobkeeper show`: a job's file merged with its folders' defaults, by source.
//! - [`import`]: `jobkeeper import`: job files for the jobs running unmanaged on a cluster.
//! - [`cli`]: the command line.

#[macro_use]
mod words;
pub mod alert;
pub mod backoff;
pub mod build;
pub mod cgroup;
pub mod changes;
pub mod cli;
pub mod client;
pub mod condition;
pub mod console;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod event;
pub mod freeze;
pub mod ha;
pub mod health;
pub mod host;
pub mod http;
pub mod import;
pub mod lead;
pub mod metrics;
pub mod moves;
pub mod plan;
pub mod proc;
pub mod reconcile;
pub mod reload;
pub mod removals;
pub mod repo;
pub mod retention;
pub mod runlogs;
pub mod schedule;
pub mod secrets;
pub mod served_key;
pub mod settings;
pub mod show;
pub mod spec;
pub mod store;
pub mod store_start;
pub mod sync;
pub mod systemd;
pub mod yaml;
