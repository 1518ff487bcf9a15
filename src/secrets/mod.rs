//! What the daemon holds of the secrets its runs were given, so that no secret value leaves
//! memory: the values of each run it holds ([`Held`], in memory only, never in the store or
//! `state_dir`), a keyed fingerprint of them recorded with the run ([`RunSecrets::fingerprint`],
//! keyed with the per-install [`Key`]), and masking a run's log in place once the run ended
//! ([`seal`]).
//!
//! A log is served masked with the values its run was given (while the daemon holds them), as
//! it is once masked in place, or not at all ("withheld"): never masked with what the secret
//! files say today. After a restart, a run's values are read again from `secrets_dir` and
//! trusted only when their fingerprint matches the recorded one.

mod key;
pub mod seal;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::Mac;

pub use self::key::{KEY_FILE, Key};
use crate::spec::{self, SecretError, SecretValue};

/// The secrets one run was given: names and values, in memory only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSecrets {
    values: Vec<SecretValue>,
}

impl RunSecrets {
    /// The secrets read for a run (a name given twice, as params and SQL may, is kept once).
    pub fn new(mut values: Vec<SecretValue>) -> Self {
        values.sort_by(|a, b| a.name.cmp(&b.name));
        values.dedup_by(|a, b| a.name == b.name);
        RunSecrets { values }
    }

    /// Reads `names` again from `secrets_dir`.
    pub fn read(
        names: &[String],
        secrets_dir: Option<&std::path::Path>,
    ) -> Result<Self, SecretError> {
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            let value = spec::read_secret(name, secrets_dir)?;
            values.push(SecretValue {
                name: name.clone(),
                value,
            });
        }
        Ok(RunSecrets::new(values))
    }

    /// True when the run was given no secret.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The secrets' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.values.iter().map(|v| v.name.clone()).collect()
    }

    /// The values, for [`spec::mask_secrets`].
    pub fn values(&self) -> Vec<String> {
        spec::values_of(&self.values)
    }

    /// `text` with the values masked (see [`spec::mask_secrets`]).
    pub fn mask(&self, text: &str) -> String {
        spec::mask_secrets(text, &self.values())
    }

    /// HMAC-SHA256 keyed with `key` of every name and value (length-prefixed, sorted by name),
    /// in hex: tells whether values read again are the ones the run was given, and without the
    /// key tells nothing of them.
    pub fn fingerprint(&self, key: &Key) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.bytes())
            .expect("HMAC takes a key of any length");
        for v in &self.values {
            for part in [v.name.as_bytes(), v.value.as_bytes()] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part);
            }
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The secrets of the runs the daemon holds, by run id, with the per-install key. Cheap to
/// clone; shared by the job actors (which hold and release) and the HTTP API (which masks).
#[derive(Clone)]
pub struct Held {
    key: Arc<Key>,
    runs: Arc<Mutex<HashMap<i64, HeldRun>>>,
}

/// One held run.
struct HeldRun {
    secrets: Arc<RunSecrets>,
    log: PathBuf,
}

impl Held {
    /// Nothing held yet; fingerprints keyed with `key`.
    pub fn new(key: Key) -> Self {
        Held {
            key: Arc::new(key),
            runs: Arc::default(),
        }
    }

    /// The per-install key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, HeldRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds run `run_id`'s secrets (its log is `log`) until [`Held::release`].
    pub fn hold(&self, run_id: i64, secrets: Arc<RunSecrets>, log: PathBuf) {
        if !secrets.is_empty() {
            self.lock().insert(run_id, HeldRun { secrets, log });
        }
    }

    /// Run `run_id`'s secrets, while held.
    pub fn get(&self, run_id: i64) -> Option<Arc<RunSecrets>> {
        self.lock().get(&run_id).map(|h| h.secrets.clone())
    }

    /// Run `run_id`'s secrets and log, while held.
    pub fn log_of(&self, run_id: i64) -> Option<(Arc<RunSecrets>, PathBuf)> {
        self.lock()
            .get(&run_id)
            .map(|h| (h.secrets.clone(), h.log.clone()))
    }

    /// Forgets run `run_id`'s secrets.
    pub fn release(&self, run_id: i64) {
        self.lock().remove(&run_id);
    }

    /// The names of the secrets of every held run, with one of those runs each.
    pub fn names_in_use(&self) -> Vec<(String, i64)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let runs = self.lock();
        let mut ids: Vec<&i64> = runs.keys().collect();
        ids.sort();
        for id in ids {
            for name in runs[id].secrets.names() {
                if seen.insert(name.clone()) {
                    out.push((name, *id));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> RunSecrets {
        RunSecrets::new(
            pairs
                .iter()
                .map(|(n, v)| SecretValue {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_fingerprint_changes_with_any_value_name_or_key_and_shows_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::load_or_create(dir.path()).unwrap();
        let a = secrets(&[("pw", "one"), ("tok", "two")]);
        let fp = a.fingerprint(&key);
        assert_eq!(fp.len(), 64);
        assert_eq!(
            fp,
            secrets(&[("tok", "two"), ("pw", "one")]).fingerprint(&key)
        );
        assert_ne!(
            fp,
            secrets(&[("pw", "one"), ("tok", "twO")]).fingerprint(&key)
        );
        assert_ne!(
            fp,
            secrets(&[("pw", "onet"), ("tok", "wo")]).fingerprint(&key)
        );
        assert_ne!(
            fp,
            secrets(&[("pW", "one"), ("tok", "two")]).fingerprint(&key)
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            fp,
            a.fingerprint(&Key::load_or_create(other.path()).unwrap())
        );
        // The same key is read back.
        assert_eq!(fp, a.fingerprint(&Key::load_or_create(dir.path()).unwrap()));
        assert!(!format!("{a:?}").contains("one"));
    }

    #[test]
    fn held_runs_are_masked_and_named_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = Held::new(Key::load_or_create(dir.path()).unwrap());
        held.hold(7, Arc::new(secrets(&[("pw", "hunter22")])), "7.log".into());
        held.hold(8, Arc::new(secrets(&[])), "8.log".into());
        assert_eq!(held.get(7).unwrap().mask("x hunter22"), "x ***");
        assert!(held.get(8).is_none(), "a run with no secrets is not held");
        assert_eq!(held.names_in_use(), vec![("pw".to_string(), 7)]);
        held.release(7);
        assert!(held.get(7).is_none());
        assert!(held.names_in_use().is_empty());
    }
}
