//! Freeze windows in a sync: which of a commit's changes are held ([`hold`], pure), the
//! windows that apply at a commit ([`freeze_at`]), and putting held changes in place when
//! their window closes ([`release_loop`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use super::StoreUpdates;
use crate::event::JobEvent;
use crate::freeze::{Freeze, Open};
use crate::plan::Change;
use crate::reconcile::{Context, Reconciler, Scope};
use crate::repo::{GitTree, Oid, RepoError};
use crate::settings::Settings;
use crate::spec::{FREEZE_FILE, JobSpec};
use crate::store::{DesiredUpdate, HeldChange};

/// How often the release loop looks for held changes whose window closed.
pub const RELEASE_EVERY: Duration = Duration::from_millis(500);

/// The windows that apply at commit `tip`: the daemon config's and those of
/// `<repo.path>/_freeze.yaml` there. A `_freeze.yaml` that does not read is left out, with an
/// error logged (`validate` names its problems).
pub fn freeze_at(tree: &GitTree, tip: Oid, settings: &Settings) -> Freeze {
    let mut windows = settings.freeze.clone();
    let top = settings.repo.path.trim_matches('/');
    let path = if top.is_empty() {
        FREEZE_FILE.to_string()
    } else {
        format!("{top}/{FREEZE_FILE}")
    };
    match tree.read_path(tip, &path) {
        Ok(bytes) => match crate::freeze::parse_freeze_file(&path, &bytes) {
            Ok(more) => windows.extend(more),
            Err(d) => tracing::error!(
                file = %path,
                "the freeze file is invalid and is left out: {}",
                crate::diag::render(&d).trim_end()
            ),
        },
        Err(RepoError::NotFound { .. }) => {}
        Err(e) => tracing::error!(file = %path, "cannot read the freeze file: {e}"),
    }
    Freeze { windows }
}

/// What [`hold`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    /// The changes held now.
    pub held: Vec<HeldChange>,
    /// The jobs whose change is put in place now (any change held for them before is stale).
    pub applied: Vec<String>,
}

/// Takes out of `out` every change to a job of a frozen env (its new env or the one it runs
/// in) while a window is open at `now`: its update and poke go, a `held` note is added, and
/// it is returned to be kept aside. With `override_reason` (the trailer), nothing is held and
/// the planned note of each job a window would have held names the override. Pure.
pub fn hold(
    out: &mut StoreUpdates,
    changes: &[Change],
    applied: &BTreeMap<String, JobSpec>,
    freeze: &Freeze,
    now: DateTime<Tz>,
    override_reason: Option<&str>,
    commit: &str,
) -> Holds {
    let new_env: BTreeMap<&str, &str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert {
                name, spec: Ok(s), ..
            } => Some((name.as_str(), s.env.as_str())),
            _ => None,
        })
        .collect();
    let frozen = |job: &str| -> Option<Open> {
        [
            new_env.get(job).copied(),
            applied.get(job).map(|s| s.env.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|env| freeze.open_for(env, now))
        .max_by_key(|o| o.until)
    };
    let mut holds = Holds::default();
    let mut kept = Vec::with_capacity(out.updates.len());
    for update in std::mem::take(&mut out.updates) {
        let (job, path, spec) = match &update {
            DesiredUpdate::Spec {
                name,
                path,
                spec,
                hash,
            } => (name, path.clone(), Some((spec.clone(), hash.clone()))),
            DesiredUpdate::Removed { name } => (name, String::new(), None),
            DesiredUpdate::Invalid { .. } => {
                kept.push(update);
                continue;
            }
        };
        let Some(open) = frozen(job) else {
            holds.applied.push(job.clone());
            kept.push(update);
            continue;
        };
        if let Some(reason) = override_reason {
            holds.applied.push(job.clone());
            for (j, note) in &mut out.notes {
                if j == job
                    && let JobEvent::Planned { line } = note
                {
                    line.push_str(&format!(
                        "; freeze `{}` overridden by `{}: {reason}`",
                        open.reason,
                        crate::freeze::OVERRIDE_TRAILER
                    ));
                }
            }
            kept.push(update);
            continue;
        }
        let until = open.until.to_rfc3339();
        out.poke.retain(|p| p != job);
        out.notes.push((
            job.clone(),
            JobEvent::Held {
                until: until.clone(),
                reason: open.reason.clone(),
            },
        ));
        holds.held.push(HeldChange {
            job: job.clone(),
            path,
            spec,
            commit: commit.to_string(),
            until_ms: open.until.timestamp_millis(),
            until,
            reason: open.reason,
        });
    }
    out.updates = kept;
    holds
}

/// Puts held changes in place when their window closes: each gets a `released` event and its
/// actor is poked. Runs until `cancel`.
pub async fn release_loop(
    ctx: Arc<Context>,
    reconciler: Arc<Reconciler>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RELEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (c, r) = (ctx.clone(), reconciler.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let released = c.store.blocking().release_held(crate::store::now_ms());
            let Some(released) = c.store.read_or_log(None, "held changes due", released) else {
                return;
            };
            for h in released {
                let event = JobEvent::Released {
                    commit: h.commit.get(..8).unwrap_or(&h.commit).to_string(),
                };
                c.events
                    .emit_blocking(Scope::job(&h.job, Some(&h.commit)), &event);
                r.poke(&h.job);
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::freeze::FreezeWindow;
    use crate::schedule::Schedule;

    fn spec(env: &str) -> JobSpec {
        let yaml = format!("env: {env}\nparams: {{command: [sleep, '1']}}\n");
        crate::spec::parse_job("a.yaml", yaml.as_bytes(), Default::default()).unwrap()
    }

    fn setup() -> (StoreUpdates, Vec<Change>, BTreeMap<String, JobSpec>, Freeze) {
        let changes = vec![
            Change::Upsert {
                name: "p".into(),
                path: "jobs/p.yaml".into(),
                spec: Ok(spec("prod")),
            },
            Change::Upsert {
                name: "d".into(),
                path: "jobs/d.yaml".into(),
                spec: Ok(spec("dev")),
            },
            // Moves off prod: its running env is frozen.
            Change::Upsert {
                name: "m".into(),
                path: "jobs/m.yaml".into(),
                spec: Ok(spec("dev")),
            },
        ];
        let applied: BTreeMap<String, JobSpec> = [
            ("m".to_string(), spec("prod")),
            ("p".to_string(), spec("prod")),
        ]
        .into();
        let plan = crate::plan::plan(&applied, &changes);
        let out = super::super::store_updates(&changes, &plan);
        let freeze = Freeze {
            windows: vec![FreezeWindow {
                schedule: Schedule::parse("0 18 * * 5").unwrap(),
                duration: Duration::from_secs(62 * 3600),
                envs: vec!["prod".into()],
                reason: "weekend".into(),
            }],
        };
        (out, changes, applied, freeze)
    }

    #[test]
    fn changes_to_jobs_of_a_frozen_env_are_held_and_the_others_go_on() {
        let (mut out, changes, applied, freeze) = setup();
        let saturday = chrono_tz::UTC
            .with_ymd_and_hms(2026, 12, 5, 12, 0, 0)
            .unwrap();
        let h = hold(&mut out, &changes, &applied, &freeze, saturday, None, "c1");
        let held: Vec<&str> = h.held.iter().map(|c| c.job.as_str()).collect();
        assert_eq!(held, ["p", "m"], "in the order of the changes");
        assert_eq!(h.applied, ["d"]);
        assert_eq!(h.held[0].until, "2026-12-07T08:00:00+00:00");
        assert_eq!(out.poke, ["d"]);
        assert_eq!(out.updates.len(), 1);
        assert!(out.notes.iter().any(|(j, e)| {
            j == "p"
                && e.message()
                    .starts_with("held until 2026-12-07T08:00:00+00:00 (freeze: weekend)")
        }));

        // Monday 08:00: nothing is held.
        let (mut out, changes, applied, freeze) = setup();
        let monday = chrono_tz::UTC
            .with_ymd_and_hms(2026, 12, 7, 8, 0, 0)
            .unwrap();
        let h = hold(&mut out, &changes, &applied, &freeze, monday, None, "c1");
        assert!(h.held.is_empty());
        assert_eq!(out.poke.len(), 3);
    }

    #[test]
    fn an_override_applies_at_once_and_its_reason_is_kept_in_the_events() {
        let (mut out, changes, applied, freeze) = setup();
        let saturday = chrono_tz::UTC
            .with_ymd_and_hms(2026, 12, 5, 12, 0, 0)
            .unwrap();
        let h = hold(
            &mut out,
            &changes,
            &applied,
            &freeze,
            saturday,
            Some("hotfix INC-42"),
            "c1",
        );
        assert!(h.held.is_empty());
        assert_eq!(out.poke.len(), 3);
        let p = out.notes.iter().find(|(j, _)| j == "p").unwrap();
        assert!(
            p.1.message().ends_with(
                "; freeze `weekend` overridden by `Jobkeeper-Freeze-Override: hotfix INC-42`"
            ),
            "{}",
            p.1.message()
        );
    }
}
