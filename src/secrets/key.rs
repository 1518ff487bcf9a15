//! The per-install key of secret fingerprints: 32 random bytes in `state_dir/secrets.key`
//! (mode 0600), made at the first start and read at every later one.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The key file's name in `state_dir`.
pub const KEY_FILE: &str = "secrets.key";

/// Length of the key in bytes.
const KEY_LEN: usize = 32;

/// The per-install key (its `Debug` never shows it).
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// Reads `state_dir/secrets.key`, making it first (from `/dev/urandom`, mode 0600) when
    /// there is none. A file of another length is an error: it is not replaced, since runs'
    /// fingerprints were keyed with it.
    pub fn load_or_create(state_dir: &Path) -> io::Result<Key> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_LEN => return Ok(Key(bytes)),
            Ok(bytes) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {} bytes, not {KEY_LEN}; remove it to make a new one (runs \
                         recorded with the old key then have their logs withheld after a restart)",
                        path.display(),
                        bytes.len()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = vec![0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let tmp = state_dir.join(format!("{KEY_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Key(bytes))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}
