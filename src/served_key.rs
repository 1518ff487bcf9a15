//! The key of the Spark artifact tokens of an installation (the jar URLs Spark workers fetch
//! from the daemon): kept in the store, so every daemon on one store (`ha`) hands out and
//! accepts the same URLs. On the first start it is the key of `state_dir/artifact.key` that
//! releases before kept, else a new random one.

use std::path::Path;

use crate::engine::spark::artifacts::{KEY_FILE, Shelf};

/// The key of a daemon's served jars could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// The key file releases before kept could not be read.
    #[error("cannot open {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not record or give the key.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The key of the Spark artifact tokens of the installation on `store` (kept there, so every
/// daemon on one store hands out and accepts the same jar URLs); on the first start, the key
/// of `state_dir/artifact.key` that releases before kept, else a new random one
/// ([`Shelf::first_key`]).
pub async fn artifact_key(
    store: &crate::store::Store,
    state_dir: &Path,
) -> Result<[u8; 32], ServedError> {
    let dir = state_dir.to_path_buf();
    let first = tokio::task::spawn_blocking(move || Shelf::first_key(&dir))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| ServedError::File {
            path: state_dir.join(KEY_FILE).display().to_string(),
            source,
        })?;
    Ok(store.artifact_key(first).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two daemons of one installation (one store, each its own state folder; the first
    /// upgraded from a release that kept the key in its folder) make the same jar URLs.
    async fn two_daemons_make_the_same_jar_urls(a: &crate::store::Store, b: &crate::store::Store) {
        const DIGEST: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(dir_a.path().join(KEY_FILE), [5u8; 32]).unwrap();
        let key_a = artifact_key(a, dir_a.path()).await.unwrap();
        assert_eq!(key_a, [5; 32], "the old file's key is kept");
        let key_b = artifact_key(b, dir_b.path()).await.unwrap();
        assert_eq!(key_b, key_a);
        let url = |dir: &Path, key| Shelf::new(dir, key).url("http://jk", DIGEST, "a.jar");
        assert_eq!(url(dir_a.path(), key_a), url(dir_b.path(), key_b));
        // The first daemon again, its old file gone: the same key.
        std::fs::remove_file(dir_a.path().join(KEY_FILE)).unwrap();
        assert_eq!(artifact_key(a, dir_a.path()).await.unwrap(), key_a);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn daemons_on_one_sqlite_store_make_the_same_jar_urls() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("jobkeeper.db");
        let a = crate::store::Store::open(&path).await.unwrap();
        let b = crate::store::Store::open(&path).await.unwrap();
        two_daemons_make_the_same_jar_urls(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn daemons_on_one_postgres_store_make_the_same_jar_urls() {
        // (It makes the schema on a runtime of its own: not from this one's worker.)
        let target = tokio::task::spawn_blocking(crate::store::tests::postgres_target)
            .await
            .unwrap()
            .expect(
                "JOBKEEPER_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
             (scripts/postgres.sh start DIR prints one)",
            );
        let a = crate::store::Store::open_postgres(&target).await.unwrap();
        let b = crate::store::Store::open_postgres(&target).await.unwrap();
        two_daemons_make_the_same_jar_urls(&a, &b).await;
    }
}
