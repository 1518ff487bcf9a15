//! Config reload on SIGHUP: the file is read again; a valid config replaces the running one in
//! [`Live`] (every reader takes it at its next use), an invalid one is refused with its errors
//! and the running config stays.
//!
//! Engines are built once, at start. An env whose cluster (flink URL or savepoint folder, spark
//! master) changed, or a new env on a cluster, is therefore reported by [`cluster_changes`] as
//! needing a restart: the reload is accepted, the log says so at error level and the
//! `config_reloaded` event names the envs. Until the restart, the jobs of a changed env keep
//! the cluster the daemon started with and the jobs of a new cluster env are refused with
//! `deploy_failed`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::diag;
use crate::engine::EngineConfig;
use crate::event::JobEvent;
use crate::reconcile::{Emitter, Scope};
use crate::settings::{Live, Settings};
use crate::systemd::Notifier;

/// The envs of `new` whose engine the running daemon cannot give them before a restart: a
/// cluster env that is new, and an env whose engine kind or cluster settings changed where
/// either side is a cluster. A new or changed env that is local on both sides needs none.
pub fn cluster_changes(old: &Settings, new: &Settings) -> Vec<String> {
    new.envs
        .iter()
        .filter(|(name, env)| match old.envs.get(*name) {
            None => env.engine != EngineConfig::Local,
            Some(was) => {
                let local = env.engine == EngineConfig::Local && was.engine == EngineConfig::Local;
                !local && was.engine != env.engine
            }
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The log line and event of an accepted reload; `true` when a cluster change needs a restart.
/// `old` is the config the daemon started with: what it took at start is still in use.
fn reloaded_message(path: &std::path::Path, old: &Settings, new: &Settings) -> (String, bool) {
    let later = crate::settings::needs_restart(old, new);
    let clusters = cluster_changes(old, new);
    let mut msg = format!("config {} reloaded", path.display());
    if !later.is_empty() {
        msg.push_str(&format!(
            "; changes to {} take effect at the next start",
            later.join(", ")
        ));
    }
    if !clusters.is_empty() {
        let envs: Vec<String> = clusters.iter().map(|e| format!("`{e}`")).collect();
        msg.push_str(&format!(
            "; the cluster of env {} changed: restart the daemon to use it (until then a changed env keeps its cluster and a new one refuses its jobs)",
            envs.join(", ")
        ));
    }
    (msg, !clusters.is_empty())
}

/// Reads `path` again and puts a valid config in place; records what happened. `started` is
/// the config at start, against which fields taken only at start are compared.
async fn reload_once(
    path: &std::path::Path,
    started: &Settings,
    live: &Live,
    events: &Emitter,
    notifier: &Notifier,
) {
    notifier.reloading();
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || crate::settings::load(&p)).await;
    match loaded {
        Ok(Ok(new)) => {
            let (msg, restart) = reloaded_message(path, started, &new);
            live.replace(new);
            let event = JobEvent::ConfigReloaded {
                message: msg.clone(),
                needs_restart: restart,
            };
            events.emit(Scope::daemon(), &event);
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
            events.emit(Scope::daemon(), &event);
            notifier.ready("config reload refused; the running config stays");
        }
        Err(e) => tracing::error!("config reload failed: {e}"),
    }
}

/// Reloads the config at `path` on each SIGHUP until `cancel` fires. Fields taken only at
/// start are compared with `started`, the config the daemon started with, so a reload names
/// them for as long as they differ from what runs.
pub async fn reload_loop(
    path: PathBuf,
    started: Arc<Settings>,
    live: Live,
    events: Emitter,
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
        reload_once(&path, &started, &live, &events, &notifier).await;
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
    fn which_env_changes_need_a_restart() {
        let flink = |url: &str| format!("  f: {{engine: flink, flink: {{url: \"{url}\"}}}}\n");
        let dev = "  dev: {engine: local}\n";
        let rows: Vec<(&str, String, String, Vec<&str>)> = vec![
            (
                "nothing changed",
                flink("http://a:8081"),
                flink("http://a:8081"),
                vec![],
            ),
            (
                "flink url changed",
                flink("http://a:8081"),
                flink("http://b:8081"),
                vec!["f"],
            ),
            (
                "new cluster env",
                dev.into(),
                format!("{dev}{}", flink("http://a:8081")),
                vec!["f"],
            ),
            (
                "new local env",
                dev.into(),
                format!("{dev}  prod: {{engine: local}}\n"),
                vec![],
            ),
            (
                "cluster env removed",
                format!("{dev}{}", flink("http://a:8081")),
                dev.into(),
                vec![],
            ),
            (
                "flink env made local",
                flink("http://a:8081"),
                "  f: {engine: local}\n".into(),
                vec!["f"],
            ),
            (
                "only vars changed",
                "  dev: {engine: local, vars: {A: '1'}}\n".into(),
                "  dev: {engine: local, vars: {A: '2'}}\n".into(),
                vec![],
            ),
        ];
        for (what, old, new, want) in rows {
            let got = cluster_changes(&settings(&old), &settings(&new));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn the_reload_message_names_the_envs_that_need_a_restart() {
        let old = settings("  f: {engine: flink, flink: {url: \"http://a:8081\"}}\n");
        let new = settings("  f: {engine: flink, flink: {url: \"http://b:8081\"}}\n");
        let (msg, restart) = reloaded_message(Path::new("c.yaml"), &old, &new);
        assert!(restart);
        assert!(
            msg.starts_with(
                "config c.yaml reloaded; the cluster of env `f` changed: restart the daemon"
            ),
            "{msg}"
        );
        let (msg, restart) = reloaded_message(Path::new("c.yaml"), &old, &old);
        assert!(!restart);
        assert_eq!(msg, "config c.yaml reloaded");
    }
}
