//! The installation's identity, kept in the store (`meta`), so it moves with the store and not
//! with a host or a path, and every daemon on one store agrees on it:
//! - the installation id, which salts Flink job ids and run tokens. Releases before it salted
//!   them with the `state_dir` path. The first start that reads the id writes that same path as
//!   the id, so an installation upgraded in place computes the ids of its live runs as before
//!   and adopts them; from then on the stored id is used wherever the store is opened.
//! - the key of Spark artifact tokens (see [`crate::engine::spark::artifacts`]), 32 bytes in
//!   hex. Releases before it kept the key in `state_dir/artifact.key`; the first start records
//!   that file's key, so the URLs handed to running drivers keep working.

use super::sql::p;
use super::{Blocking, Result, StoreError};

/// The `meta` key of the installation id.
const KEY: &str = "installation_id";

/// The `meta` key of the key of Spark artifact tokens.
const ARTIFACT_KEY: &str = "artifact_key";

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

    /// The key of Spark artifact tokens; when the store has none yet, `seed` (the key of
    /// `state_dir/artifact.key`, or a new random one) is recorded and returned. A stored value
    /// that is not 32 bytes in hex is a [`StoreError::Decode`].
    pub fn artifact_key(&self, seed: &[u8; 32]) -> Result<[u8; 32]> {
        let stored: Option<String> = self.tx(|db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                p![ARTIFACT_KEY, hex::encode(seed)],
            )?;
            db.query_opt(
                "SELECT value FROM meta WHERE key = ?1",
                p![ARTIFACT_KEY],
                |r| r.get(0),
            )
        })?;
        let Some(stored) = stored else {
            return Ok(*seed);
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key).map_err(|e| StoreError::Decode {
            table: "meta",
            row: ARTIFACT_KEY.into(),
            column: "value",
            detail: format!("not 32 bytes in hex: {e}"),
        })?;
        Ok(key)
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
    fn the_first_artifact_key_is_kept_on_every_backend() {
        for s in crate::store::tests::stores() {
            assert_eq!(s.artifact_key(&[7; 32]).unwrap(), [7; 32]);
            assert_eq!(s.artifact_key(&[9; 32]).unwrap(), [7; 32]);
        }
    }

    #[test]
    fn a_stored_artifact_key_that_is_not_32_bytes_is_an_error() {
        for s in crate::store::tests::stores() {
            s.sql(|db| {
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, 'abcd')",
                    p![ARTIFACT_KEY],
                )
            })
            .unwrap();
            let err = s.artifact_key(&[7; 32]).err().unwrap();
            assert!(
                matches!(
                    err,
                    StoreError::Decode {
                        column: "value",
                        ..
                    }
                ),
                "{err}"
            );
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
