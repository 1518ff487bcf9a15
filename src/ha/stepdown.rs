//! Stepping down: a leader that lost its lease stops acting at once and comes back as a
//! standby. It ends its local-engine children (the new leader starts those jobs on its own
//! node), then re-executes its own binary in place, with the same arguments and the same pid
//! (systemd, and its watchdog, see one service throughout), plus `--stepped-down WHY` for the
//! new image's first log line. Every descriptor is close-on-exec: the new image listens again
//! on the same address (the gap is the new image's start, well under a second), and serves
//! reads as a standby.
//!
//! Starting afresh is the one way to be sure that nothing the former leader had in flight (an
//! actor's timer, a build, a retry) acts after it lost the lease; the store's fence refuses the
//! writes of whatever is caught mid-way.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// The hidden `run` flag that carries why the previous image stepped down.
pub const STEPPED_DOWN_FLAG: &str = "--stepped-down";

/// This process's arguments with `--stepped-down WHY` set to `why` (any earlier one dropped).
fn args_with(args: impl Iterator<Item = OsString>, why: &str) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == STEPPED_DOWN_FLAG {
            skip = true;
            continue;
        }
        if a.to_string_lossy()
            .starts_with(&format!("{STEPPED_DOWN_FLAG}="))
        {
            continue;
        }
        out.push(a);
    }
    out.push(STEPPED_DOWN_FLAG.into());
    out.push(why.into());
    out
}

/// Re-executes this binary in place as a standby; returns only when that failed (the caller
/// then exits, and systemd starts it again).
pub fn reexec(why: &str) -> std::io::Error {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| program.clone().into());
    std::process::Command::new(exe)
        .arg0(program)
        .args(args_with(args, why))
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_replaces_an_earlier_one_and_keeps_every_other_argument() {
        let args = ["run", "--config", "/etc/jk.yaml", "--stepped-down", "old"]
            .map(OsString::from)
            .into_iter();
        let out = args_with(args, "new");
        assert_eq!(
            out,
            ["run", "--config", "/etc/jk.yaml", "--stepped-down", "new"].map(OsString::from)
        );
    }
}
