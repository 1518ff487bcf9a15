//! What the commands share at the terminal: writing to stdout, and loading the daemon config
//! with its problems printed.

use std::path::Path;
use std::process::ExitCode;

use crate::diag;
use crate::settings::{self, Settings};

/// Writes to stdout; a reader that went away (`jobkeeper schema | head`) is not an error.
pub fn stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Loads a daemon config, printing every problem on failure.
pub fn load_settings(path: &Path) -> anyhow::Result<Result<Settings, ExitCode>> {
    match settings::load(path) {
        Ok(s) => Ok(Ok(s)),
        Err(diags) => {
            eprint!("{}", diag::render(&diags));
            eprintln!(
                "error: the daemon config {} has {} problem(s)",
                path.display(),
                diags.len()
            );
            Ok(Err(ExitCode::from(1)))
        }
    }
}
