//! Spark jars for workers on other hosts: the daemon's shelf of jars served over HTTP
//! ([`Shelf`]), and the copy into a folder every host mounts ([`copy_to_shared`]).
//!
//! The shelf is `state_dir/served/<digest>`, one hard link (or copy) per artifact digest, so it
//! outlives the build cache's folders and a daemon restart. A jar is served at
//! `<base>/artifacts/<digest>/<token>/<file name>` (see `http::artifacts`): the token is an
//! HMAC-SHA256 of the digest under the installation's random key, kept in the store (where
//! releases before kept it in `state_dir/artifact.key`, the first start records that key), so
//! it is unguessable, differs per artifact, and stays the same across restarts and on every
//! daemon of one store (a driver relaunched later, or an executor started later, or one
//! started by another daemon that took over, fetches the same URL). Nothing is ever
//! listed: a request that does not name a digest and its token gets 404, as does a wrong token.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The file under `state_dir` where releases before kept the key of artifact tokens; read once,
/// when the store has no key yet.
pub const KEY_FILE: &str = "artifact.key";
/// The folder under `state_dir` holding the jars served over HTTP.
pub const SERVED_DIR: &str = "served";
/// The path below a base URL where artifacts are served.
pub const URL_PATH: &str = "artifacts";

/// The jars the daemon serves, and the key of their tokens.
#[derive(Clone)]
pub struct Shelf {
    /// `state_dir/served`.
    dir: PathBuf,
    /// The HMAC key of tokens.
    key: [u8; 32],
}

impl std::fmt::Debug for Shelf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Shelf").field("dir", &self.dir).finish()
    }
}

impl Shelf {
    /// The shelf of the daemon whose state folder is `state_dir`, its tokens made with `key`:
    /// the installation's key, kept in the store ([`crate::store::Blocking::artifact_key`]), so
    /// every daemon on one store hands out and accepts the same URLs.
    pub fn new(state_dir: &Path, key: [u8; 32]) -> Shelf {
        Shelf {
            dir: state_dir.join(SERVED_DIR),
            key,
        }
    }

    /// What the installation's key starts as when its store has none: the key of
    /// `state_dir/artifact.key` that releases before kept there (so the URLs handed to running
    /// drivers keep working), else 32 new bytes of `/dev/urandom`. Blocking.
    pub fn first_key(state_dir: &Path) -> std::io::Result<[u8; 32]> {
        let path = state_dir.join(KEY_FILE);
        let mut key = [0u8; 32];
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not 32 bytes long; remove it and a new key is made (artifact URLs \
                     handed out before then stop working)",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Read;
                std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
            }
            Err(e) => return Err(e),
        }
        Ok(key)
    }

    /// A shelf that serves nothing (its key is all zeros and nothing is written): for tools
    /// that only read a cluster (`jobkeeper import`) and never submit.
    pub fn read_only(state_dir: &Path) -> Shelf {
        Shelf {
            dir: state_dir.join(SERVED_DIR),
            key: [0; 32],
        }
    }

    fn mac(&self, digest: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"jobkeeper spark artifact\0");
        mac.update(digest.as_bytes());
        mac
    }

    /// The token of the artifact `digest`: 64 hex digits.
    pub fn token(&self, digest: &str) -> String {
        hex::encode(self.mac(digest).finalize().into_bytes())
    }

    /// The URL of the artifact `digest` below `base`, ending in the jar's file `name`.
    pub fn url(&self, base: &str, digest: &str, name: &str) -> String {
        format!(
            "{}/{URL_PATH}/{digest}/{}/{}",
            base.trim_end_matches('/'),
            self.token(digest),
            url_safe_name(name)
        )
    }

    /// The served file of `digest` when `token` is its token (compared in constant time) and the
    /// shelf holds it; `None` otherwise, whatever was wrong.
    pub fn find(&self, digest: &str, token: &str) -> Option<PathBuf> {
        if !is_digest(digest) {
            return None;
        }
        let given = hex::decode(token).ok()?;
        self.mac(digest).verify_slice(&given).ok()?;
        let path = self.dir.join(digest);
        path.is_file().then_some(path)
    }

    /// Puts the jar `file` of `digest` on the shelf, once per digest: a hard link, or a copy
    /// when linking fails. Blocking.
    pub fn publish(&self, file: &Path, digest: &str) -> std::io::Result<()> {
        if !is_digest(digest) {
            return Err(std::io::Error::other(format!(
                "artifact digest {digest:?} is not a sha256"
            )));
        }
        let dest = self.dir.join(digest);
        if dest.is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".tmp-{digest}-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(file, &tmp).is_err() {
            std::fs::copy(file, &tmp)?;
        }
        std::fs::rename(&tmp, &dest)
    }
}

/// Copies the jar `file` of `digest` into the shared folder `dir`, once per digest, as
/// `dir/<digest>/<file name>` (written under a temporary name, then renamed, so a worker never
/// reads half a jar). Returns its path. Blocking.
pub fn copy_to_shared(dir: &Path, file: &Path, digest: &str) -> std::io::Result<PathBuf> {
    if !is_digest(digest) {
        return Err(std::io::Error::other(format!(
            "artifact digest {digest:?} is not a sha256"
        )));
    }
    let name = file
        .file_name()
        .map(|n| url_safe_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "app.jar".into());
    let folder = dir.join(digest);
    let dest = folder.join(&name);
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&folder)?;
    let tmp = folder.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::copy(file, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// Whether `s` is a sha256 in lowercase hex.
fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file name safe in a URL path and a folder: other characters become `_`; a name not ending
/// in `.jar` gets it (Spark names the fetched file after the URL).
fn url_safe_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_') {
                ch
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        s.insert_str(0, "app");
    }
    if !s.ends_with(".jar") {
        s.push_str(".jar");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

    #[test]
    fn tokens_are_per_artifact_and_per_key() {
        let tmp = tempfile::tempdir().unwrap();
        let shelf = Shelf::new(tmp.path(), [1; 32]);
        let t = shelf.token(DIGEST);
        assert_eq!(t.len(), 64);
        assert_ne!(t, shelf.token(&DIGEST.replace('3', "4")));
        // Another state folder, the same key (another daemon of the installation): the same.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(Shelf::new(other.path(), [1; 32]).token(DIGEST), t);
        // Another key gives other tokens.
        assert_ne!(Shelf::new(tmp.path(), [2; 32]).token(DIGEST), t);
        assert!(!format!("{shelf:?}").contains("key"));
    }

    #[test]
    fn the_first_key_is_the_old_files_else_random() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Shelf::first_key(tmp.path()).unwrap();
        assert_ne!(
            a,
            Shelf::first_key(tmp.path()).unwrap(),
            "random, nothing written"
        );
        assert!(!tmp.path().join(KEY_FILE).exists());
        std::fs::write(tmp.path().join(KEY_FILE), [5u8; 32]).unwrap();
        assert_eq!(Shelf::first_key(tmp.path()).unwrap(), [5; 32]);
        std::fs::write(tmp.path().join(KEY_FILE), [5u8; 31]).unwrap();
        let err = Shelf::first_key(tmp.path()).err().unwrap();
        assert!(err.to_string().contains("not 32 bytes long"), "{err}");
    }

    #[test]
    fn a_published_jar_is_found_with_its_token_only() {
        let tmp = tempfile::tempdir().unwrap();
        let shelf = Shelf::new(tmp.path(), [3; 32]);
        let jar = tmp.path().join("app.jar");
        std::fs::write(&jar, b"PK jar").unwrap();
        let token = shelf.token(DIGEST);
        assert_eq!(shelf.find(DIGEST, &token), None, "not published yet");
        shelf.publish(&jar, DIGEST).unwrap();
        shelf.publish(&jar, DIGEST).unwrap();
        let found = shelf.find(DIGEST, &token).unwrap();
        assert_eq!(std::fs::read(found).unwrap(), b"PK jar");
        let mut wrong = token.clone();
        wrong.replace_range(..1, if token.starts_with('0') { "1" } else { "0" });
        assert_eq!(shelf.find(DIGEST, &wrong), None);
        assert_eq!(shelf.find(DIGEST, "zz"), None);
        assert_eq!(shelf.find(DIGEST, ""), None);
        assert_eq!(shelf.find("../artifact.key", &token), None);
        assert_eq!(shelf.find(&DIGEST.to_uppercase(), &token), None);
        assert!(shelf.publish(&jar, "../x").is_err());
        assert_eq!(
            shelf.url("http://jk:7070/", DIGEST, "spark totals.jar"),
            format!("http://jk:7070/artifacts/{DIGEST}/{token}/spark_totals.jar")
        );
    }

    #[test]
    fn a_shared_copy_is_made_once_per_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let jar = tmp.path().join("totals.jar");
        std::fs::write(&jar, b"PK one").unwrap();
        let shared = tmp.path().join("shared");
        let p = copy_to_shared(&shared, &jar, DIGEST).unwrap();
        assert_eq!(p, shared.join(DIGEST).join("totals.jar"));
        std::fs::write(&jar, b"PK two").unwrap();
        assert_eq!(copy_to_shared(&shared, &jar, DIGEST).unwrap(), p);
        assert_eq!(std::fs::read(&p).unwrap(), b"PK one", "copied once");
        assert_eq!(std::fs::read_dir(shared.join(DIGEST)).unwrap().count(), 1);
        assert!(copy_to_shared(&shared, &jar, "nope").is_err());
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(url_safe_name("a b/c.jar"), "a_b_c.jar");
        assert_eq!(url_safe_name(".hidden"), "app.hidden.jar");
        assert_eq!(url_safe_name(""), "app.jar");
    }
}
