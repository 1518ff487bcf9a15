//! The status page's answers kept between requests: building a page of 1,000 jobs reads and
//! renders every row it shows, so a page is kept, with its entity tag, for its query while
//! nothing it is derived from changed ([`Sources`]): the store's generation
//! ([`crate::store::Store::generation`], moved by every write, also by another process), where
//! each env runs jobs and whether its cluster answers, the jobs waiting on the host, the
//! clusters' and unmanaged jobs' tables, whether the daemon is ready and its config (a reload
//! is a new one). A page is also kept only until the earliest next run it shows, the one part
//! of it that moves with the clock. A refresh that finds the page kept is answered from it, or
//! 304 when it asks with the page's tag, without reading a job.
//!
//! The sources are read before the page is built and again after it: the page is kept only
//! when they did not change meanwhile, so what is kept is what the sources it is kept for
//! show, and a change shows on the next request.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::ApiState;
use super::api::ListQuery;
use super::clusters::{ClustersView, clusters_view};
use super::counts::Inputs;
use super::unmanaged::{UnmanagedView, unmanaged_view};
use crate::settings::Settings;
use crate::store::StoreError;

/// Queries whose pages are kept at once (the first page, a few searches and filters); the
/// one asked for least recently goes first.
pub const KEPT_QUERIES: usize = 8;

/// Everything a page is derived from besides its query (see the module doc).
#[derive(Clone)]
pub struct Sources {
    /// The store's generation, the envs now and the jobs waiting on the host.
    pub(super) inputs: Inputs,
    /// Whether the daemon finished its first reconcile.
    ready: bool,
    /// Who leads (`ha`): shown in the header.
    leader: crate::ha::Leadership,
    /// The daemon config (compared by identity: a reload puts a new one in place).
    pub settings: Arc<Settings>,
    /// The clusters' table.
    pub clusters: ClustersView,
    /// The unmanaged jobs' table.
    pub unmanaged: UnmanagedView,
}

impl PartialEq for Sources {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
            && self.ready == other.ready
            && self.leader == other.leader
            && Arc::ptr_eq(&self.settings, &other.settings)
            && self.clusters == other.clusters
            && self.unmanaged == other.unmanaged
    }
}

impl Sources {
    /// The sources as they are now, the config and the store's generation first.
    pub fn now(state: &ApiState) -> Result<Sources, StoreError> {
        let settings = state.settings.get();
        let inputs = Inputs::now(state)?;
        Ok(Sources {
            inputs,
            ready: state.ready.load(Ordering::Acquire),
            leader: state.leadership.borrow().clone(),
            settings,
            clusters: clusters_view(state),
            unmanaged: unmanaged_view(state),
        })
    }
}

/// One page as built: its bytes, its entity tag ([`super::page::etag`]) and until when it
/// holds.
#[derive(Debug)]
pub struct Page {
    /// The HTML.
    pub html: Bytes,
    /// Its entity tag.
    pub tag: String,
    /// The earliest next run it shows: it no longer holds from then.
    pub until: Option<DateTime<Utc>>,
}

impl Page {
    /// The page of `html`, holding until `until`.
    pub fn new(html: String, until: Option<DateTime<Utc>>) -> Page {
        Page {
            tag: super::page::etag(&html),
            html: Bytes::from(html),
            until,
        }
    }

    fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|t| now < t)
    }
}

/// The pages kept for one query each, the query asked for least recently first.
type ByQuery = Vec<(ListQuery, Arc<Page>)>;

/// The pages kept for the sources `K` (see the module doc); one per daemon, in [`ApiState`].
pub struct KeptPages<K = Sources> {
    slot: Mutex<Option<(K, ByQuery)>>,
}

impl<K> Default for KeptPages<K> {
    fn default() -> Self {
        KeptPages {
            slot: Mutex::new(None),
        }
    }
}

impl<K: PartialEq> KeptPages<K> {
    /// The page kept for `query` built from `sources`, while it holds at `now`.
    pub fn get(&self, sources: &K, query: &ListQuery, now: DateTime<Utc>) -> Option<Arc<Page>> {
        let mut slot = self.slot.lock();
        let (kept_for, pages) = slot.as_mut()?;
        if kept_for != sources {
            return None;
        }
        let i = pages.iter().position(|(q, _)| q == query)?;
        if !pages[i].1.holds_at(now) {
            pages.remove(i);
            return None;
        }
        // The most recently asked goes last.
        let hit = pages.remove(i);
        let page = hit.1.clone();
        pages.push(hit);
        Some(page)
    }

    /// Keeps `page`, built for `query` from `sources`, when the sources are still those now
    /// (`now_sources`, read after the page was built); the pages of other sources go.
    pub fn keep(&self, sources: K, now_sources: &K, query: ListQuery, page: Arc<Page>) {
        if sources != *now_sources {
            return;
        }
        let mut slot = self.slot.lock();
        match slot.as_mut() {
            Some((kept_for, pages)) if *kept_for == sources => {
                pages.retain(|(q, _)| *q != query);
                if pages.len() >= KEPT_QUERIES {
                    pages.remove(0);
                }
                pages.push((query, page));
            }
            _ => *slot = Some((sources, vec![(query, page)])),
        }
    }
}

/// The page for `query` now: the kept one while its sources are unchanged, else the one
/// `build` makes from the sources read now (then kept).
pub fn page(
    state: &ApiState,
    query: &ListQuery,
    build: impl FnOnce(&Sources) -> Result<Page, StoreError>,
) -> Result<Arc<Page>, StoreError> {
    let sources = Sources::now(state)?;
    if let Some(page) = state.pages.get(&sources, query, Utc::now()) {
        return Ok(page);
    }
    let page = Arc::new(build(&sources)?);
    let after = Sources::now(state)?;
    state
        .pages
        .keep(sources, &after, query.clone(), page.clone());
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> ListQuery {
        ListQuery {
            q: Some(q.to_string()),
            ..ListQuery::default()
        }
    }

    fn page(html: &str, until: Option<DateTime<Utc>>) -> Arc<Page> {
        Arc::new(Page::new(html.to_string(), until))
    }

    #[test]
    fn a_page_is_given_only_for_the_sources_and_query_it_was_built_from() {
        let kept: KeptPages<u64> = KeptPages::default();
        let now = Utc::now();
        assert!(kept.get(&1, &ListQuery::default(), now).is_none());
        kept.keep(1, &1, ListQuery::default(), page("<p>first</p>", None));
        let got = kept.get(&1, &ListQuery::default(), now).unwrap();
        assert_eq!(&got.html[..], b"<p>first</p>");
        assert_eq!(got.tag, super::super::page::etag("<p>first</p>"));
        assert!(
            kept.get(&2, &ListQuery::default(), now).is_none(),
            "a write since"
        );
        assert!(kept.get(&1, &query("web"), now).is_none(), "another query");
        kept.keep(2, &2, ListQuery::default(), page("<p>second</p>", None));
        assert!(
            kept.get(&1, &ListQuery::default(), now).is_none(),
            "the pages of older sources are gone"
        );
        assert_eq!(
            &kept.get(&2, &ListQuery::default(), now).unwrap().html[..],
            b"<p>second</p>"
        );
    }

    #[test]
    fn a_page_whose_sources_changed_while_it_was_built_is_not_kept() {
        let kept: KeptPages<u64> = KeptPages::default();
        kept.keep(1, &2, ListQuery::default(), page("<p>mixed</p>", None));
        assert!(kept.get(&1, &ListQuery::default(), Utc::now()).is_none());
        assert!(kept.get(&2, &ListQuery::default(), Utc::now()).is_none());
    }

    #[test]
    fn a_page_holds_until_the_earliest_next_run_it_shows() {
        let kept: KeptPages<u64> = KeptPages::default();
        let now = Utc::now();
        let next = now + chrono::Duration::seconds(30);
        kept.keep(1, &1, ListQuery::default(), page("<p>next</p>", Some(next)));
        assert!(kept.get(&1, &ListQuery::default(), now).is_some());
        assert!(kept.get(&1, &ListQuery::default(), next).is_none());
        assert!(
            kept.get(&1, &ListQuery::default(), now).is_none(),
            "a page past its time is dropped"
        );
    }

    #[test]
    fn the_query_asked_least_recently_goes_first() {
        let kept: KeptPages<u64> = KeptPages::default();
        let now = Utc::now();
        for i in 0..KEPT_QUERIES {
            kept.keep(1, &1, query(&i.to_string()), page(&i.to_string(), None));
        }
        assert!(kept.get(&1, &query("0"), now).is_some());
        kept.keep(1, &1, query("new"), page("new", None));
        assert!(kept.get(&1, &query("0"), now).is_some(), "asked last");
        assert!(
            kept.get(&1, &query("1"), now).is_none(),
            "asked least recently"
        );
        assert!(kept.get(&1, &query("new"), now).is_some());
    }
}
