//! The installation id: who this store's jobs belong to, kept in the store (`meta`), so it moves
//! with the store and not with a host or a path. It salts Flink job ids and run tokens.
//!
//! Releases before it salted them with the `state_dir` path. The first start that reads the id
//! writes that same path as the id, so an installation upgraded in place computes the ids of
//! its live runs as before and adopts them; from then on the stored id is used wherever the
//! store is opened.

use super::sql::p;
use super::{Blocking, Result};

/// The `meta` key of the installation id.
const KEY: &str = "installation_id";

impl Blocking {
    /// The installation id; when the store has none yet, `seed` (what the caller salted with
    /// before: the `state_dir` path) is recorded and returned.
    pub fn installation_id(&self, seed: &str) -> Result<String> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                p![KEY, seed],
            )?;
            let id: Option<String> =
                db.query_opt("SELECT value FROM meta WHERE key = ?1", p![KEY], |r| {
                    r.get(0)
                })?;
            Ok(id.unwrap_or_else(|| seed.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_seed_is_kept_on_every_backend() {
        for s in crate::store::tests::stores() {
            assert_eq!(s.installation_id("/var/lib/jk").unwrap(), "/var/lib/jk");
            assert_eq!(s.installation_id("/elsewhere").unwrap(), "/var/lib/jk");
        }
    }

    #[test]
    fn the_first_seed_is_kept_and_moves_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let old_dir = "/var/lib/jobkeeper";
        let s = Blocking::open(&path).unwrap();
        assert_eq!(s.installation_id(old_dir).unwrap(), old_dir);
        assert_eq!(s.installation_id("/elsewhere").unwrap(), old_dir);
        drop(s);
        // The file copied to another host, under another state folder.
        let moved = dir.path().join("moved.db");
        std::fs::copy(&path, &moved).unwrap();
        let s = Blocking::open(&moved).unwrap();
        assert_eq!(s.installation_id("/srv/jobkeeper").unwrap(), old_dir);
    }
}
