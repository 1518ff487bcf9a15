//! What the status page and `/metrics` count over every job: jobs per state, jobs per condition
//! and the names of the jobs with one. Counting reads every job (the state counts and
//! [`crate::store::Store::problem_rows`]), so the counts are kept between requests while nothing
//! they are derived from changed ([`Inputs`]): the store's generation
//! ([`crate::store::Store::generation`], moved by every write of a job, its state, versions,
//! runs or incidents, also by another process), where each env runs jobs now and whether its cluster answers
//! ([`Envs`]), and the jobs waiting on the host. The inputs are read before counting, so a
//! change made while counting makes the next request count again: what is shown is never older
//! than the request that shows it.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::reconcile::hostwait::Waiting;
use crate::store::{Generation, JobState, StoreError};

use super::ApiState;
use super::shown::{self, ConditionCounts, Envs};

/// The counts over every job (still in the config repo).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Jobs per state, every state listed.
    pub states: Vec<(JobState, u64)>,
    /// The jobs with a condition, by name.
    pub problems: Vec<String>,
    /// Jobs per condition, every kind listed.
    pub conditions: ConditionCounts,
}

/// Everything the counts are derived from besides the store's rows.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Inputs {
    /// The store's generation.
    generation: Generation,
    /// Where each env runs jobs now.
    envs: Envs,
    /// The jobs waiting on the host, by name, and how.
    waiting: Vec<(String, Option<Waiting>)>,
}

impl Inputs {
    /// The inputs as they are now, the store's generation read first.
    pub(super) fn now(state: &ApiState) -> Result<Inputs, StoreError> {
        // The generation first: a write after it makes these inputs old.
        let generation = state.store.blocking().generation()?;
        let host = &state.reconciler.context().host;
        let mut names = host.waiting_jobs();
        names.sort();
        Ok(Inputs {
            generation,
            envs: Envs::now(state),
            waiting: names
                .into_iter()
                .map(|n| {
                    let w = host.job(&n);
                    (n, w)
                })
                .collect(),
        })
    }
}

/// A value kept with the key it was made for, made again when asked with another key.
pub struct Kept<K, V> {
    slot: Mutex<Option<(K, Arc<V>)>>,
}

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept {
            slot: Mutex::new(None),
        }
    }
}

impl<K: PartialEq, V> Kept<K, V> {
    /// The value kept for `key`, or the one `make` makes (then kept for `key`). The lock is
    /// not held while making: two requests may both make it, never wait on each other.
    pub fn get<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        if let Some((k, v)) = &*self.slot.lock()
            && *k == key
        {
            return Ok(v.clone());
        }
        let v = Arc::new(make()?);
        *self.slot.lock() = Some((key, v.clone()));
        Ok(v)
    }
}

/// The counts kept between requests (see the module doc); one per daemon, in [`ApiState`].
#[derive(Default)]
pub struct KeptCounts(Kept<Inputs, Counts>);

/// The counts over every job now: the kept ones while nothing they are derived from changed.
pub fn counts(state: &ApiState) -> Result<Arc<Counts>, StoreError> {
    counts_for(state, Inputs::now(state)?)
}

/// The counts for `inputs` read before (the kept ones when they are the kept counts' inputs).
pub(super) fn counts_for(state: &ApiState, inputs: Inputs) -> Result<Arc<Counts>, StoreError> {
    let (envs, waiting) = (inputs.envs.clone(), inputs.waiting.clone());
    state.counts.0.get(inputs, || {
        let waiting: Vec<&str> = waiting.iter().map(|(n, _)| n.as_str()).collect();
        let (problems, conditions) = shown::problems(state, &envs, &waiting)?;
        Ok(Counts {
            states: state.store.blocking().job_state_counts()?,
            problems,
            conditions,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_value_is_made_again_when_its_key_changes() {
        let kept: Kept<u64, String> = Kept::default();
        let made = std::cell::Cell::new(0);
        let get = |key: u64| {
            kept.get(key, || {
                made.set(made.get() + 1);
                Ok::<_, ()>(format!("made for {key}"))
            })
            .unwrap()
        };
        assert_eq!(*get(1), "made for 1");
        assert_eq!(*get(1), "made for 1");
        assert_eq!(
            *get(2),
            "made for 2",
            "a new key is never answered from the old"
        );
        assert_eq!(*get(2), "made for 2");
        assert_eq!(made.get(), 2);
        let failed: Result<Arc<String>, &str> = kept.get(3, || Err("store down"));
        assert_eq!(failed, Err("store down"));
        assert_eq!(
            *kept.get(2, || Err::<String, ()>(())).unwrap(),
            "made for 2"
        );
    }
}
