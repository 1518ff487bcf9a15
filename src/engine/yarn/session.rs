//! Session mode (`session:`): the env's jobs run in a long-running yarn-session application,
//! found through the RM by its id (`application_…`) or its name (exactly one RUNNING), and are
//! driven at its JobManager exactly as on a Flink session cluster ([`crate::engine::flink`]).
//! The JobManager's address is kept until it stops answering, then the RM is asked again
//! (the session may have been restarted elsewhere).

use std::sync::Arc;

use super::YarnEngine;
use super::apps::App;
use crate::engine::cluster::lock;
use crate::engine::flink::FlinkEngine;
use crate::engine::{EngineError, RunHandle};

impl YarnEngine {
    /// The session engine of the env's yarn-session, found through the RM when not known.
    pub(super) async fn session(&self, name: &str) -> Result<Arc<FlinkEngine>, EngineError> {
        let known = lock(&self.session_jm).clone();
        if let Some(jm) = known {
            return Ok(jm);
        }
        let app = self.find_session(name).await?;
        let url = app.jobmanager().ok_or_else(|| {
            EngineError::Unreachable(format!(
                "yarn-session {} ({name}) has no JobManager address yet",
                app.id
            ))
        })?;
        let jm = self.jm(&url)?;
        tracing::info!(session = %name, app = %app.id, jobmanager = %url, "yarn-session found");
        *lock(&self.session_jm) = Some(jm.clone());
        Ok(jm)
    }

    /// Forgets the session's JobManager after it did not answer.
    pub(super) fn session_lost(&self, e: &EngineError) {
        if matches!(e, EngineError::Unreachable(_)) {
            *lock(&self.session_jm) = None;
        }
    }

    /// The RUNNING application `name` names: by id, or the one RUNNING application of that
    /// name.
    async fn find_session(&self, name: &str) -> Result<App, EngineError> {
        if name.starts_with("application_") {
            return match self.app(name).await? {
                Some(a) if a.state == "RUNNING" => Ok(a),
                Some(a) => Err(EngineError::Unreachable(format!(
                    "yarn-session {name} is {} ({})",
                    a.state, a.diagnostics
                ))),
                None => Err(EngineError::Unreachable(format!(
                    "yarn-session {name} is not known to the RM"
                ))),
            };
        }
        let live = self.list_live().await?;
        let mut found: Vec<App> = live
            .into_iter()
            .filter(|a| a.name == name && a.state == "RUNNING")
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(EngineError::Unreachable(format!(
                "no RUNNING yarn-session named {name} on {}",
                self.rm.names()
            ))),
            _ => Err(EngineError::Other(format!(
                "several RUNNING yarn-sessions are named {name}: {}; name one by its id",
                found
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A handle as the session engine knows it (its cluster is the JobManager).
    pub(super) fn to_session(jm: &FlinkEngine, h: &RunHandle) -> RunHandle {
        use crate::engine::Engine as _;
        RunHandle {
            cluster: jm.cluster(),
            ..h.clone()
        }
    }

    /// A handle of the session engine as this env records it (its cluster is the env's RMs).
    pub(super) fn recorded(&self, h: RunHandle) -> RunHandle {
        use crate::engine::Engine as _;
        RunHandle {
            cluster: self.cluster(),
            ..h
        }
    }
}
