//! Masking a run's log in place once the run ended: the log (and its rotated part
//! `<run>.log.1`) is streamed line by line through [`RunSecrets::mask`] into a temporary file
//! in the same folder, which then replaces it (`rename`), so a reader sees either the whole
//! old file or the whole masked one, and no temporary file is left behind. The run's row then
//! records that its log is masked, and the values can be forgotten.
//!
//! [`seal_left_logs`] does it at start for the runs a previous daemon could not (it stopped
//! while they ran, or masking failed), with the values read again from `secrets_dir` and only
//! when their fingerprint matches the one recorded at submit.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Held, RunSecrets};
use crate::store::Store;

/// The files of a run's log: `<run>.log` and its rotated part.
pub fn log_files(log: &Path) -> [PathBuf; 2] {
    [log.to_path_buf(), crate::runlogs::rotated_path(log)]
}

/// Rewrites `path` with `secrets` masked (see the module doc); a missing file is nothing to do,
/// and anything but a regular file (a FIFO would block) is an error.
pub fn mask_file(path: &Path, secrets: &RunSecrets) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let input = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".masking");
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        let mut reader = io::BufReader::new(input);
        // Whole lines, so a value's lines are each found (a multi-line value is masked line by
        // line, see `spec::mask_secrets`); a window of lines keeps a value written whole across
        // lines found too.
        let mut window: Vec<u8> = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            window.extend_from_slice(&line);
            if n == 0 || window.len() >= WINDOW {
                let text = String::from_utf8_lossy(&window);
                out.write_all(secrets.mask(&text).as_bytes())?;
                window.clear();
            }
            if n == 0 {
                break;
            }
        }
        out.flush()?;
        out.get_ref().sync_all()
    })();
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Bytes of whole lines masked at once.
const WINDOW: usize = 1 << 20;

/// Masks run `run_id`'s log files with `secrets` and records it in the store.
pub fn seal_log(store: &Store, run_id: i64, log: &Path, secrets: &RunSecrets) -> io::Result<()> {
    for f in log_files(log) {
        mask_file(&f, secrets)?;
    }
    store
        .blocking()
        .set_log_masked(run_id)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Masks the log of held run `run_id` (which ended) in the background, then forgets its
/// values; when masking fails they stay held (the log is served masked from memory) and the
/// next start masks it ([`seal_left_logs`]).
pub fn seal_ended(held: &Held, store: &Store, job: &str, run_id: i64) {
    let Some((secrets, log)) = held.log_of(run_id) else {
        return;
    };
    let (held, store, job) = (held.clone(), store.clone(), job.to_string());
    tokio::task::spawn_blocking(move || match seal_log(&store, run_id, &log, &secrets) {
        Ok(()) => {
            held.release(run_id);
            tracing::debug!(job = %job, run = run_id, "log masked");
        }
        Err(e) => {
            tracing::warn!(job = %job, run = run_id, "cannot mask the log {}: {e}; its secrets stay in memory to mask it when served", log.display());
        }
    });
}

/// At start: masks the logs of ended runs whose log was not masked, when their secrets read
/// again match the recorded fingerprint; the others stay withheld. Returns (masked, withheld).
pub fn seal_left_logs(store: &Store, held: &Held, secrets_dir: Option<&Path>) -> (usize, usize) {
    let runs = store.blocking().unmasked_ended_runs();
    let Some(runs) = store.read_or_log(None, "runs whose log is not masked", runs) else {
        return (0, 0);
    };
    let (mut masked, mut withheld) = (0, 0);
    for run in runs {
        match trusted(&run, held, secrets_dir) {
            Some(secrets) => match seal_log(store, run.id, Path::new(&run.log_path), &secrets) {
                Ok(()) => masked += 1,
                Err(e) => {
                    withheld += 1;
                    tracing::warn!(job = %run.job, run = run.id, "cannot mask the log: {e}");
                }
            },
            None => withheld += 1,
        }
    }
    (masked, withheld)
}

/// The secrets of `run` read again from `secrets_dir`, when they match its recorded
/// fingerprint.
pub fn trusted(run: &crate::store::RunRow, held: &Held, dir: Option<&Path>) -> Option<RunSecrets> {
    let names = run.secrets.as_ref()?;
    let recorded = run.secrets_mac.as_deref()?;
    let secrets = RunSecrets::read(names, dir).ok()?;
    let fp = secrets.fingerprint(held.key());
    // Both are hex of one length: compared in constant time all the same.
    use subtle::ConstantTimeEq;
    bool::from(fp.as_bytes().ct_eq(recorded.as_bytes())).then_some(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SecretValue;

    #[test]
    fn a_log_is_masked_in_place_with_nothing_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("12.log");
        let pem = "-----BEGIN-----\nAAAABBBBCCCC\n-----END-----";
        std::fs::write(&log, format!("a hunter22 b\n{pem}\nlast\n")).unwrap();
        std::fs::write(crate::runlogs::rotated_path(&log), "old hunter22\n").unwrap();
        let s = RunSecrets::new(vec![
            SecretValue {
                name: "pw".into(),
                value: "hunter22".into(),
            },
            SecretValue {
                name: "key".into(),
                value: pem.into(),
            },
        ]);
        for f in log_files(&log) {
            mask_file(&f, &s).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "a *** b\n***\nlast\n"
        );
        assert_eq!(
            std::fs::read_to_string(crate::runlogs::rotated_path(&log)).unwrap(),
            "old ***\n"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["12.log", "12.log.1"]);
        mask_file(&dir.path().join("nope.log"), &s).unwrap();
    }
}
