//! What the unit tests of reconcile share: a context on a store file with one local env, and
//! a job whose row a test can make unreadable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::time::Instant;

use super::Context;
use crate::store::{CommitRecord, DesiredUpdate, Store};

/// A context on a store file in `dir`, with one local env `dev`.
pub(super) fn context(dir: &Path) -> Arc<Context> {
    let yaml = format!(
        "repo: {{url: /tmp/none}}\nstate_dir: {}\nlisten: 127.0.0.1:0\nenvs:\n  dev: {{engine: local}}\n",
        dir.display()
    );
    let settings = crate::settings::parse("config.yaml", yaml.as_bytes(), dir).unwrap();
    let store = Store::from(crate::store::Blocking::open(&dir.join("jobkeeper.db")).unwrap());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let engines = crate::engine::Engines::build(
        &dir.display().to_string(),
        settings.envs.iter().map(|(n, e)| (n, &e.engine)),
        None,
    );
    let projects = crate::repo::ProjectRepos::new(dir, Default::default());
    Arc::new(Context {
        settings: crate::settings::Live::new(settings),
        events: super::Emitter::new(store.clone(), metrics.clone()),
        store,
        builder: crate::build::Builder::new(crate::build::BuildConfig::new(dir)),
        projects: Arc::new(projects),
        engines,
        logs_dir: dir.join("logs"),
        metrics,
        outages: super::Outages::default(),
        host: super::HostWaits::new(dir),
        unmanaged: super::unmanaged::Unmanaged::default(),
        secrets: crate::secrets::Held::new(crate::secrets::Key::load_or_create(dir).unwrap()),
    })
}

/// Job `a` in env `dev`, a service that sleeps.
pub(super) fn desire_a(store: &Store) {
    let yaml = "env: dev\nparams:\n  command: [sleep, \"60\"]\n";
    let spec = crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap();
    let commit = CommitRecord {
        id: "c1".into(),
        author: "Ann <ann@example.com>".into(),
        subject: "s".into(),
    };
    let update = DesiredUpdate::Spec {
        name: "a".into(),
        path: "jobs/a.yaml".into(),
        spec: serde_json::to_string(&spec).unwrap(),
        hash: "h1".into(),
    };
    store
        .blocking()
        .apply_commit(&commit, &[update], &[])
        .unwrap();
}

/// Sets job `a`'s desired spec text from another connection (a value that does not decode
/// stands for a row the store cannot read).
pub(super) fn set_desired(dir: &Path, json: &str) {
    Connection::open(dir.join("jobkeeper.db"))
        .unwrap()
        .execute("UPDATE jobs SET desired = ?1 WHERE name = 'a'", [json])
        .unwrap();
}

pub(super) fn desired_text(dir: &Path) -> String {
    Connection::open(dir.join("jobkeeper.db"))
        .unwrap()
        .query_row("SELECT desired FROM jobs WHERE name = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// Waits (at most 10 s) until `done`.
pub(super) async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
