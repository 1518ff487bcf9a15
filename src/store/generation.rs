//! The store's generation: a number that grows with every row the store writes, so a reader
//! that derived something from the store can tell whether it may still hold
//! ([`Store::generation`]).

use super::Store;

impl Store {
    /// A number that grows with every row inserted, updated or deleted through the store (its
    /// connection's count of changed rows) and never goes back while the store is open. Equal
    /// generations mean nothing was written in between; read it *before* what is derived from
    /// the store, so a write made meanwhile makes the next reader derive it again.
    pub fn generation(&self) -> u64 {
        self.conn().total_changes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{commit, spec_update};
    use super::*;
    use crate::store::JobState;

    #[test]
    fn every_write_moves_the_generation_and_a_read_does_not() {
        let s = Store::in_memory().unwrap();
        let g0 = s.generation();
        s.apply_commit(&commit("c1"), &[spec_update("a", "dev")], &[])
            .unwrap();
        let g1 = s.generation();
        assert!(g1 > g0);
        s.job_state_counts().unwrap();
        assert_eq!(s.generation(), g1, "a read writes nothing");
        s.set_state("a", JobState::Suspended, None).unwrap();
        assert!(s.generation() > g1);
    }
}
