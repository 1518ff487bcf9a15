//! The status page's job rows kept between builds: a page is built again after every write to
//! the store ([`super::kept_page`]), and most writes change one job or none of the 1,000 rows
//! shown, so each row's HTML is kept with what it was rendered from (the job as shown, a
//! [`JobView`], and the daemon config, whose time zone its next run is shown in) and rendered
//! again only when that changed. A row showing a next run is kept only until that run, the one
//! part of it that moves with the clock.
//!
//! What a row is rendered from is compared whole, so a kept row is always the row its job's
//! view renders now: a change shows on the next build.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::api::JobView;
use crate::settings::Settings;

/// Rows kept at most; past this, the rows the latest build did not use go.
pub const KEPT_ROWS: usize = 4096;

/// One row as rendered.
struct Row {
    /// What it was rendered from.
    view: JobView,
    /// Its HTML.
    html: String,
    /// Its next run: it no longer holds from then.
    until: Option<DateTime<Utc>>,
    /// The build that used it last.
    used: u64,
}

#[derive(Default)]
struct Rows {
    /// The config the rows were rendered with.
    settings: Option<Arc<Settings>>,
    by_name: HashMap<String, Row>,
    /// Builds so far.
    builds: u64,
}

/// The rows kept (see the module doc); one per daemon, in [`super::kept_page::KeptPages`].
#[derive(Default)]
pub struct KeptRows {
    rows: Mutex<Rows>,
}

/// Rows rendered and reused by one build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Rows taken as kept.
    pub kept: usize,
    /// Rows rendered.
    pub rendered: usize,
}

/// One build's use of the kept rows: [`Build::row`] per row, then dropped.
pub struct Build<'a> {
    kept: &'a KeptRows,
    settings: Arc<Settings>,
    now: DateTime<Utc>,
    build: u64,
    /// What this build reused.
    pub reuse: Reuse,
}

impl KeptRows {
    /// A build with `settings` at `now`: rows kept with another config are dropped.
    pub fn build(&self, settings: &Arc<Settings>, now: DateTime<Utc>) -> Build<'_> {
        let mut rows = self.rows.lock();
        if !rows
            .settings
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, settings))
        {
            rows.by_name.clear();
            rows.settings = Some(settings.clone());
        }
        rows.builds += 1;
        Build {
            kept: self,
            settings: settings.clone(),
            now,
            build: rows.builds,
            reuse: Reuse::default(),
        }
    }

    /// How many rows are kept.
    pub fn len(&self) -> usize {
        self.rows.lock().by_name.len()
    }

    /// Whether no row is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Build<'_> {
    /// Appends to `h` the row of `view`: the kept one when it was rendered from an equal view
    /// and still holds, else the one `render` makes (HTML and next run), then kept. The row's
    /// next run, when earlier, goes into `until`.
    pub fn row(
        &mut self,
        h: &mut String,
        view: &JobView,
        until: &mut Option<DateTime<Utc>>,
        render: impl FnOnce(&Settings, &mut String) -> Option<DateTime<Utc>>,
    ) {
        let mut earliest = |at: Option<DateTime<Utc>>| {
            if let Some(at) = at
                && until.is_none_or(|u| at < u)
            {
                *until = Some(at);
            }
        };
        {
            let mut rows = self.kept.rows.lock();
            let same_config = rows
                .settings
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.settings));
            if let Some(row) = rows.by_name.get_mut(&view.name)
                && same_config
                && row.until.is_none_or(|t| self.now < t)
                && row.view == *view
            {
                row.used = self.build;
                h.push_str(&row.html);
                earliest(row.until);
                self.reuse.kept += 1;
                return;
            }
        }
        let mut html = String::with_capacity(1200);
        let at = render(&self.settings, &mut html);
        h.push_str(&html);
        earliest(at);
        self.reuse.rendered += 1;
        let mut rows = self.kept.rows.lock();
        if rows
            .settings
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.settings))
        {
            rows.by_name.insert(
                view.name.clone(),
                Row {
                    view: view.clone(),
                    html,
                    until: at,
                    used: self.build,
                },
            );
        }
    }
}

impl Drop for Build<'_> {
    fn drop(&mut self) {
        let mut rows = self.kept.rows.lock();
        if rows.by_name.len() > KEPT_ROWS {
            let build = self.build;
            rows.by_name.retain(|_, r| r.used >= build);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: &str) -> JobView {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "path": format!("jobs/{name}.yaml"),
            "restarts": 0, "invalid": false,
        }))
        .unwrap()
    }

    fn settings() -> Arc<Settings> {
        let text = "repo: {url: /tmp/r.git, branch: main, path: jobs}\nstate_dir: /tmp/s\n\
                    envs:\n  dev: {engine: local}\n";
        Arc::new(
            crate::settings::parse("c.yaml", text.as_bytes(), std::path::Path::new("/tmp"))
                .unwrap(),
        )
    }

    /// Renders `v` as `<state>` with next run `at`, counting renders.
    fn rows(
        kept: &KeptRows,
        settings: &Arc<Settings>,
        now: DateTime<Utc>,
        views: &[JobView],
        at: Option<DateTime<Utc>>,
    ) -> (String, Reuse, Option<DateTime<Utc>>) {
        let mut b = kept.build(settings, now);
        let mut h = String::new();
        let mut until = None;
        for v in views {
            b.row(&mut h, v, &mut until, |_, out| {
                out.push_str(&format!("<{}:{}>", v.name, v.state));
                at
            });
        }
        (h, b.reuse, until)
    }

    #[test]
    fn a_row_is_rendered_again_only_when_its_job_changed() {
        let kept = KeptRows::default();
        let s = settings();
        let now = Utc::now();
        let (h, reuse, _) = rows(
            &kept,
            &s,
            now,
            &[view("a", "running"), view("b", "failed")],
            None,
        );
        assert_eq!(h, "<a:running><b:failed>");
        assert_eq!(
            reuse,
            Reuse {
                kept: 0,
                rendered: 2
            }
        );
        let (h, reuse, _) = rows(
            &kept,
            &s,
            now,
            &[view("a", "running"), view("b", "stopped")],
            None,
        );
        assert_eq!(h, "<a:running><b:stopped>", "the change shows");
        assert_eq!(
            reuse,
            Reuse {
                kept: 1,
                rendered: 1
            }
        );
        let (_, reuse, _) = rows(
            &kept,
            &s,
            now,
            &[view("a", "running"), view("b", "stopped")],
            None,
        );
        assert_eq!(
            reuse,
            Reuse {
                kept: 2,
                rendered: 0
            }
        );
    }

    #[test]
    fn a_new_config_renders_every_row_again() {
        let kept = KeptRows::default();
        let now = Utc::now();
        rows(&kept, &settings(), now, &[view("a", "running")], None);
        let (_, reuse, _) = rows(&kept, &settings(), now, &[view("a", "running")], None);
        assert_eq!(
            reuse,
            Reuse {
                kept: 0,
                rendered: 1
            }
        );
    }

    #[test]
    fn a_row_holds_until_the_next_run_it_shows() {
        let kept = KeptRows::default();
        let s = settings();
        let now = Utc::now();
        let next = now + chrono::Duration::seconds(30);
        let (_, _, until) = rows(&kept, &s, now, &[view("a", "pending")], Some(next));
        assert_eq!(until, Some(next));
        let (_, reuse, until) = rows(&kept, &s, now, &[view("a", "pending")], Some(next));
        assert_eq!(
            reuse,
            Reuse {
                kept: 1,
                rendered: 0
            }
        );
        assert_eq!(until, Some(next), "a kept row's next run counts too");
        let (_, reuse, _) = rows(&kept, &s, next, &[view("a", "pending")], None);
        assert_eq!(
            reuse,
            Reuse {
                kept: 0,
                rendered: 1
            },
            "past its next run"
        );
    }

    #[test]
    fn rows_no_build_used_lately_go_past_the_cap() {
        let kept = KeptRows::default();
        let s = settings();
        let now = Utc::now();
        let many: Vec<JobView> = (0..KEPT_ROWS)
            .map(|i| view(&format!("j{i:05}"), "stopped"))
            .collect();
        rows(&kept, &s, now, &many, None);
        assert_eq!(kept.len(), KEPT_ROWS);
        rows(&kept, &s, now, &[view("new", "stopped")], None);
        assert_eq!(kept.len(), 1, "only the latest build's rows stay");
    }
}
