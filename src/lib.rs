//! jobkeeper keeps a fleet of batch and streaming jobs exactly as a git config repository says.
//!
//! # Layout
//! The flow reads left to right: trigger → repo → spec → plan → reconcile → build → engine, with
//! every step recording events in the store.
//!
//! - [`diag`]: `path:line:column` diagnostics shared by every parser.
//! - [`yaml`]: a located YAML tree with limits (duplicate keys, aliases, depth).
//! - [`spec`]: job files: types, parsing, validation, `${var:..}` and `${secret:..}`.
//! - [`settings`]: the daemon config.
//! - [`schedule`]: crontab-meaning cron expressions in a time zone.
//! - [`repo`]: git: config-repo mirror, reading job files at a commit, tree diffs, project
//!   mirrors and checkouts, watch and poll triggers.
//! - [`backoff`]: doubling waits between retries.
//! - [`health`]: restart policy, batch schedule arithmetic, the engine status sweep.
//! - [`plan`]: applied specs vs new specs → actions per job (pure).
//! - [`build`]: project builds, artifact cache, build queue.
//! - [`proc`]: child processes in their own process group: spawn, wait with a timeout, kill.
//! - [`engine`]: the [`engine::Engine`] trait and its implementations.
//! - [`store`]: SQLite: applied commit, jobs, runs, events, alerts sent.
//! - [`alert`]: events → email and chat-webhook alerts: routing, throttle, delivery.
//! - [`reconcile`]: one actor per job converging what runs to what the store says is desired.
//! - [`sync`]: fetch the config repo, plan its tip and record the desired state of each job.
//! - [`reload`]: SIGHUP: read the config again and put it in place for every reader.
//! - [`daemon`]: wiring: tasks, triggers, shutdown, HTTP.
//! - [`systemd`]: sd_notify (ready, status, watchdog, reload, stop) and journald log lines.
//! - [`http`]: the HTTP API.
//! - [`metrics`]: counters and the Prometheus text format.
//! - [`http`]: the HTTP API, git webhooks, `/metrics` and the status page.
//! - [`cli`]: the command line.
//! - [`client`]: the commands that talk to a running daemon (`status`, `sync`, `restart`, `logs`).
//! - [`console`]: what the commands share at the terminal: stdout, loading the daemon config.

pub mod alert;
pub mod backoff;
pub mod build;
pub mod changes;
pub mod cli;
pub mod client;
pub mod console;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod event;
pub mod health;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod proc;
pub mod reconcile;
pub mod reload;
pub mod repo;
pub mod runlogs;
pub mod schedule;
pub mod settings;
pub mod spec;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod yaml;
