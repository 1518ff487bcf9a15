//! `GET /api/v1/unmanaged`: jobs live on a managed cluster that no job file owns (cluster,
//! engine id, name, since), as the health sweep last saw them, and their table on the page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::page::escape;
use crate::reconcile::unmanaged::UnmanagedJob;

/// `GET /api/v1/unmanaged`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnmanagedView {
    /// Every unmanaged job, by cluster then engine id.
    pub jobs: Vec<UnmanagedJob>,
}

/// The unmanaged jobs the health sweep last saw.
pub fn unmanaged_view(state: &ApiState) -> UnmanagedView {
    UnmanagedView {
        jobs: state.reconciler.context().unmanaged.all(),
    }
}

/// `GET /api/v1/unmanaged`.
pub async fn unmanaged(State(state): State<Arc<ApiState>>) -> Response {
    Json(unmanaged_view(&state)).into_response()
}

/// The page's table of unmanaged jobs (nothing when there are none).
pub fn unmanaged_html(view: &UnmanagedView) -> String {
    if view.jobs.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Unmanaged jobs</h2><p>Running on a managed cluster, owned by no job file \
         (<code>jobkeeper import</code> writes job files for them).</p>\
         <table id=\"unmanaged\"><thead><tr><th>Cluster</th><th>Engine id</th><th>Name</th>\
         <th>State</th><th>Since</th><th>Note</th></tr></thead><tbody>",
    );
    for j in &view.jobs {
        let note = match &j.duplicate_of {
            Some(job) => format!("drift: a second copy of {job}"),
            None => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td data-label=\"Cluster\"><div>{}</div></td>\
             <td data-label=\"Engine id\"><div>{}</div></td><td data-label=\"Name\"><div>{}</div></td>\
             <td data-label=\"State\"><div>{}</div></td><td data-label=\"Since\"><div>{}</div></td>\
             <td data-label=\"Note\"><div>{}</div></td></tr>",
            escape(&j.cluster),
            escape(&j.engine_id),
            escape(&j.name),
            escape(&j.state),
            escape(j.since.as_deref().unwrap_or("–")),
            escape(&note),
        );
    }
    h.push_str("</tbody></table>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_escapes_names_and_marks_duplicates() {
        assert_eq!(unmanaged_html(&UnmanagedView { jobs: vec![] }), "");
        let job = |dup: Option<&str>| UnmanagedJob {
            cluster: "http://f".into(),
            engine: "flink".into(),
            engine_id: "abc".into(),
            name: "<b>x</b>".into(),
            state: "RUNNING".into(),
            since: None,
            duplicate_of: dup.map(Into::into),
        };
        let h = unmanaged_html(&UnmanagedView {
            jobs: vec![job(None), job(Some("clicks"))],
        });
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;"), "{h}");
        assert!(h.contains("drift: a second copy of clicks"), "{h}");
        assert_eq!(h.matches("<tr><td").count(), 2);
    }
}
