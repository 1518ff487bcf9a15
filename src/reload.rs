//! Config reload on SIGHUP: the file is read again; a valid config replaces the running one in
//! [`Live`] (every reader takes it at its next use), an invalid one is refused with its errors
//! and the running config stays.
//!
//! The engines follow the new config ([`crate::engine::Engines::apply`]): a new cluster env
//! gets its engine at once, and the jobs of a flink env whose cluster changed move to the new
//! cluster through a savepoint (every actor is asked to look again). An env that changes its
//! engine kind or its spark master keeps its engine until a restart: the reload is accepted,
//! the log says so at error level and the `config_reloaded` event names the envs.
//!
//! A config whose `secrets_dir` lacks a secret that a running job was given is refused
//! (`config_reload_refused`, naming the secret), like an invalid one.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::diag;
use crate::engine::registry::Applied;
use crate::event::JobEvent;
use crate::reconcile::{Reconciler, Scope};
use crate::settings::{Live, Settings};
use crate::systemd::Notifier;

/// The log line and event of an accepted reload; `true` when a change needs a restart.
/// `old` is the config the daemon started with: what it took at start is still in use.
/// `engines` says which envs' clusters changed now and which wait for a restart.
fn reloaded_message(
    path: &std::path::Path,
    old: &Settings,
    new: &Settings,
    engines: &Applied,
) -> (String, bool) {
    let later = crate::settings::needs_restart(old, new);
    let mut msg = format!("config {} reloaded", path.display());
    if !later.is_empty() {
        msg.push_str(&format!(
            "; changes to {} take effect at the next start",
            later.join(", ")
        ));
    }
    let names = |envs: &[String]| {
        envs.iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !engines.changed.is_empty() {
        msg.push_str(&format!(
            "; the cluster of env {} changed: its jobs move to the new cluster through a savepoint",
            names(&engines.changed)
        ));
    }
    if !engines.needs_restart.is_empty() {
        msg.push_str(&format!(
            "; the engine of env {} changed: restart the daemon to use it (until then its jobs keep the engine the daemon has)",
            names(&engines.needs_restart)
        ));
    }
    (msg, !engines.needs_restart.is_empty())
}

/// Reads `path` again and puts a valid config in place; records what happened. `started` is
/// the config at start, against which fields taken only at start are compared.
async fn reload_once(
    path: &std::path::Path,
    started: &Settings,
    live: &Live,
    reconciler: &Reconciler,
    notifier: &Notifier,
) {
    let ctx = reconciler.context();
    let events = &ctx.events;
    notifier.reloading();
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || crate::settings::load(&p)).await;
    match loaded {
        Ok(Ok(new)) if !missing_secrets(&ctx.secrets, &new).is_empty() => {
            let missing = missing_secrets(&ctx.secrets, &new);
            for m in &missing {
                tracing::error!("{m}");
            }
            let msg = format!(
                "config reload refused ({} problem(s)); the running config stays:\n{}",
                missing.len(),
                missing.join("\n")
            );
            let event = JobEvent::ConfigReloadRefused { errors: msg };
            events.emit(Scope::daemon(), &event).await;
            notifier.ready("config reload refused; the running config stays");
        }
        Ok(Ok(new)) => {
            let engines = ctx
                .engines
                .apply(new.envs.iter().map(|(n, e)| (n, &e.engine)), true);
            let (msg, restart) = reloaded_message(path, started, &new, &engines);
            live.replace(new);
            if !engines.changed.is_empty() {
                // The new clusters are asked their version before the jobs move there.
                let moved: Vec<_> = ctx
                    .engines
                    .all()
                    .into_iter()
                    .filter(|(env, _)| engines.changed.contains(env))
                    .collect();
                if let Err(e) = crate::engine::registry::probe(&moved).await {
                    tracing::error!("{e}");
                }
                reconciler.poke_all();
            }
            let event = JobEvent::ConfigReloaded {
                message: msg.clone(),
                needs_restart: restart,
            };
            events.emit(Scope::daemon(), &event).await;
            notifier.ready(&msg);
        }
        Ok(Err(diags)) => {
            for d in &diags {
                tracing::error!("{d}");
            }
            let msg = format!(
                "config reload refused ({} problem(s)); the running config stays:\n{}",
                diags.len(),
                diag::render(&diags)
            );
            let event = JobEvent::ConfigReloadRefused { errors: msg };
            events.emit(Scope::daemon(), &event).await;
            notifier.ready("config reload refused; the running config stays");
        }
        Err(e) => tracing::error!("config reload failed: {e}"),
    }
}

/// The secrets that runs the daemon holds were given and that `new`'s `secrets_dir` cannot give
/// (missing, unreadable, or no `secrets_dir`), one message each (names and paths, never values):
/// such a config is refused, so no running job loses the secret it runs with, and no log of
/// theirs is left without the values to mask it.
fn missing_secrets(held: &crate::secrets::Held, new: &Settings) -> Vec<String> {
    held.names_in_use()
        .into_iter()
        .filter_map(|(name, run)| {
            crate::spec::read_secret(&name, new.secrets_dir.as_deref())
                .err()
                .map(|e| format!("secrets_dir: {e}; run {run}, which runs now, was given it"))
        })
        .collect()
}

/// Reloads the config at `path` on each SIGHUP until `cancel` fires. Fields taken only at
/// start are compared with `started`, the config the daemon started with, so a reload names
/// them for as long as they differ from what runs.
pub async fn reload_loop(
    path: PathBuf,
    started: Arc<Settings>,
    live: Live,
    reconciler: Arc<Reconciler>,
    notifier: Arc<Notifier>,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: reload needs a restart");
        return;
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hup.recv() => {}
        }
        reload_once(&path, &started, &live, &reconciler, &notifier).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(envs: &str) -> Settings {
        let text = format!(
            "repo: {{url: /tmp/r.git, branch: main, path: jobs}}\nstate_dir: /tmp/s\nenvs:\n{envs}"
        );
        crate::settings::parse("c.yaml", text.as_bytes(), Path::new("/tmp")).unwrap()
    }

    #[test]
    fn the_reload_message_names_the_envs_that_move_or_need_a_restart() {
        let old = settings("  f: {engine: flink, flink: {url: \"http://a:8081\"}}\n");
        let new = settings("  f: {engine: flink, flink: {url: \"http://b:8081\"}}\n");
        let moved = Applied {
            changed: vec!["f".into()],
            needs_restart: vec![],
        };
        let (msg, restart) = reloaded_message(Path::new("c.yaml"), &old, &new, &moved);
        assert!(!restart, "a flink env moves at once");
        assert_eq!(
            msg,
            "config c.yaml reloaded; the cluster of env `f` changed: its jobs move to the new cluster through a savepoint"
        );
        let kept = Applied {
            changed: vec![],
            needs_restart: vec!["s".into()],
        };
        let (msg, restart) = reloaded_message(Path::new("c.yaml"), &old, &new, &kept);
        assert!(restart);
        assert!(
            msg.ends_with("the engine of env `s` changed: restart the daemon to use it (until then its jobs keep the engine the daemon has)"),
            "{msg}"
        );
        let (msg, restart) = reloaded_message(Path::new("c.yaml"), &old, &old, &Applied::default());
        assert!(!restart);
        assert_eq!(msg, "config c.yaml reloaded");
    }
}
