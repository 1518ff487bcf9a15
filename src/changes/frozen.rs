//! What `plan` says of freeze windows: with the daemon config, each job of a frozen env
//! (the env its file asks for at `to`, or the one it had at `from`) gets the reason
//! `held until <time>` while a window is open now, as the daemon would hold it.

use crate::freeze::Freeze;
use crate::plan::{Action, Plan, Reason};
use crate::repo::{GitTree, Oid};
use crate::spec::{self, Context, Folders};

use super::TreeFiles;

/// Adds `held until <time> (freeze: <reason>)` to every item of `plan` (between `from` and
/// `to` of `tree`) whose job's env has a window open at `now`, unless a commit carries the
/// override trailer (`override_reason`), which is said instead.
pub fn mark_held(
    plan: &mut Plan,
    tree: &GitTree,
    (from, to): (Option<Oid>, Oid),
    freeze: &Freeze,
    now: chrono::DateTime<chrono_tz::Tz>,
    override_reason: Option<&str>,
) {
    if freeze.windows.is_empty() {
        return;
    }
    let env_at = |commit: Oid, path: &str, job: &str| -> Option<String> {
        let files = TreeFiles { tree, commit };
        let bytes = tree.read_path(commit, path).ok()?;
        let top = path
            .strip_suffix(&format!("{job}.yaml"))
            .or_else(|| path.strip_suffix(&format!("{job}.yml")))?;
        let rel = &path[top.len()..];
        let folders = Folders::new(Some(&files));
        let layers = folders.layers(path, rel, job).ok()?;
        let ctx = Context {
            settings: None,
            files: Some(&files),
        };
        spec::parse_job_in(path, Some(job), &bytes, &layers, ctx)
            .ok()
            .map(|s| s.env)
    };
    for item in &mut plan.items {
        if matches!(item.action, Action::Invalid | Action::Unchanged) {
            continue;
        }
        let envs = [
            env_at(to, &item.path, &item.job),
            from.and_then(|f| env_at(f, &item.path, &item.job)),
        ];
        let Some(open) = envs
            .iter()
            .flatten()
            .filter_map(|env| freeze.open_for(env, now))
            .max_by_key(|o| o.until)
        else {
            continue;
        };
        item.reasons.push(Reason::Line(match override_reason {
            Some(why) => format!(
                "freeze `{}` overridden by `{}: {why}`: applied at once",
                open.reason,
                crate::freeze::OVERRIDE_TRAILER
            ),
            None => format!(
                "held until {} (freeze: {}): applied when the window closes",
                open.until.to_rfc3339(),
                open.reason
            ),
        }));
    }
}
