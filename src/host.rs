//! The daemon's own host: which of its resources an error says ran out, the file-descriptor
//! limit raised at start, and the reserve of descriptors kept for the daemon's own files.
//!
//! A full disk, exhausted file descriptors or a store that cannot be written are faults of the
//! host, not of a job: a run that cannot start or whose end cannot be recorded because of one
//! *waits on the host* (see [`crate::reconcile::HostWaits`]) and never spends its job's restart
//! attempts. [`of_io`] and [`of_store`] tell such an error by its errno or SQLite code, never by
//! its text.
//!
//! The reserve: before a run starts, [`fds_short`] dups a descriptor, which the kernel gives
//! the lowest free number; when that number is within [`FD_RESERVE`] of the soft
//! `RLIMIT_NOFILE`, the start waits on the host without opening anything, so the descriptors
//! left stay for the store, logs, alerts and the listener. The check costs one `dup` and one
//! `getrlimit`, whatever the number of open descriptors; it can only err towards starting (when
//! low descriptors were freed while high ones stay open), and an `EMFILE` the start then meets is
//! still a host fault.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource as Limit, getrlimit, setrlimit};

use crate::store::StoreError;

/// Descriptors kept free for the daemon's own files: a run does not start while fewer are left.
pub const FD_RESERVE: u64 = 64;

/// A resource of the host that can run out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The disk holding `state_dir` (the path named) is full.
    Disk(PathBuf),
    /// The daemon's file descriptors are used up (its own limit or the system's).
    FileDescriptors,
    /// The store refuses writes for another reason.
    Store,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Disk(path) => write!(f, "the disk of {}", path.display()),
            Resource::FileDescriptors => f.write_str("file descriptors"),
            Resource::Store => f.write_str("the store"),
        }
    }
}

/// A resource of the host that ran out, with the error that said so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {error}")]
pub struct HostFault {
    /// What ran out.
    pub resource: Resource,
    /// The error, as the failing call gave it.
    pub error: String,
}

impl HostFault {
    /// A fault of `resource` with `error`'s text.
    pub fn new(resource: Resource, error: impl std::fmt::Display) -> HostFault {
        HostFault {
            resource,
            error: error.to_string(),
        }
    }
}

/// The resource an I/O error says ran out: a full disk (`ENOSPC`, `EDQUOT`; `disk` is the
/// state folder it is on) or descriptors (`EMFILE`, `ENFILE`); `None` for any other error.
pub fn of_io(err: &io::Error, disk: &Path) -> Option<Resource> {
    match err.raw_os_error()? {
        libc::ENOSPC | libc::EDQUOT => Some(Resource::Disk(disk.to_path_buf())),
        libc::EMFILE | libc::ENFILE => Some(Resource::FileDescriptors),
        _ => None,
    }
}

/// The resource a failed store write names: SQLite's "database or disk is full" is the disk of
/// the state folder `disk`, an I/O error is read as [`of_io`] reads it, and anything else is the
/// store itself.
pub fn of_store(err: &StoreError, disk: &Path) -> Resource {
    match err {
        StoreError::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => {
            Resource::Disk(disk.to_path_buf())
        }
        StoreError::Io(e) => of_io(e, disk).unwrap_or(Resource::Store),
        _ => Resource::Store,
    }
}

/// A store write's failure as a host fault (see [`of_store`]).
pub fn store_fault(err: &StoreError, disk: &Path) -> HostFault {
    HostFault::new(of_store(err, disk), err)
}

/// The soft and hard `RLIMIT_NOFILE` before and after raising the soft limit to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileRaised {
    /// The soft limit found.
    pub before: u64,
    /// The soft limit now (the hard limit, when raising worked).
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (called once at start).
pub fn raise_nofile() -> io::Result<NofileRaised> {
    let (soft, hard) = getrlimit(Limit::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Limit::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    let (now, _) = getrlimit(Limit::RLIMIT_NOFILE).map_err(io::Error::from)?;
    Ok(NofileRaised { before: soft, now })
}

/// A fault when the daemon's free descriptors are within [`FD_RESERVE`] of its soft limit
/// (see the module doc), or none are left at all; `None` when a run may open its files.
pub fn fds_short() -> Option<HostFault> {
    let (soft, _) = getrlimit(Limit::RLIMIT_NOFILE).ok()?;
    fds_short_under(soft, FD_RESERVE)
}

/// [`fds_short`] against a soft limit and a reserve.
fn fds_short_under(soft: u64, reserve: u64) -> Option<HostFault> {
    let lowest = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => u64::try_from(fd.as_raw_fd()).unwrap_or(0),
        Err(e) if of_io(&e, Path::new("")) == Some(Resource::FileDescriptors) => {
            return Some(HostFault::new(Resource::FileDescriptors, e));
        }
        // No stderr to copy (closed): nothing to measure with.
        Err(_) => return None,
    };
    (lowest.saturating_add(reserve) >= soft).then(|| {
        HostFault::new(
            Resource::FileDescriptors,
            format!(
                "the lowest free file descriptor is {lowest} of a limit of {soft}; \
                 {reserve} are kept for the daemon's own files"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> io::Error {
        io::Error::from_raw_os_error(n)
    }

    #[test]
    fn a_full_disk_and_used_up_descriptors_are_host_faults_and_nothing_else_is() {
        let disk = Path::new("/var/lib/jobkeeper");
        let full = Some(Resource::Disk(disk.into()));
        assert_eq!(of_io(&errno(libc::ENOSPC), disk), full);
        assert_eq!(of_io(&errno(libc::EDQUOT), disk), full);
        assert_eq!(
            of_io(&errno(libc::EMFILE), disk),
            Some(Resource::FileDescriptors)
        );
        assert_eq!(
            of_io(&errno(libc::ENFILE), disk),
            Some(Resource::FileDescriptors)
        );
        for other in [libc::ENOENT, libc::EACCES, libc::EIO, libc::EINVAL] {
            assert_eq!(of_io(&errno(other), disk), None, "errno {other}");
        }
        assert_eq!(of_io(&io::Error::other("made up"), disk), None);
        assert_eq!(
            Resource::Disk(disk.into()).to_string(),
            "the disk of /var/lib/jobkeeper",
            "the resource is named"
        );
    }

    #[test]
    fn the_store_s_disk_full_is_the_disk_and_other_store_errors_are_the_store() {
        let disk = Path::new("/s");
        let full = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        ));
        assert_eq!(full.to_string(), "store: database or disk is full");
        assert_eq!(of_store(&full, disk), Resource::Disk(disk.into()));
        let f = store_fault(&full, disk);
        assert_eq!(
            f.to_string(),
            "the disk of /s: store: database or disk is full"
        );
        let io_full = StoreError::Io(errno(libc::ENOSPC));
        assert_eq!(of_store(&io_full, disk), Resource::Disk(disk.into()));
        let fds = StoreError::Io(errno(libc::EMFILE));
        assert_eq!(of_store(&fds, disk), Resource::FileDescriptors);
        let locked = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            None,
        ));
        assert_eq!(of_store(&locked, disk), Resource::Store);
        assert_eq!(Resource::Store.to_string(), "the store");
    }

    #[test]
    fn a_real_full_sqlite_file_is_read_as_the_disk() {
        // SQLite's own answer when a write would pass `max_page_count` is SQLITE_FULL, the
        // code a full disk gives ("database or disk is full").
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB); PRAGMA max_page_count = 2;")
            .unwrap();
        let err = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .map(|_| ())
            .map_err(StoreError::from)
            .expect_err("a file capped at its size refuses writes");
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(
            of_store(&err, dir.path()),
            Resource::Disk(dir.path().into())
        );
    }

    #[test]
    fn descriptors_within_the_reserve_of_the_limit_are_short() {
        let lowest = io::stderr().as_fd().try_clone_to_owned().unwrap();
        let n = u64::try_from(lowest.as_raw_fd()).unwrap();
        drop(lowest);
        assert!(fds_short_under(n + 1000, 10).is_none(), "plenty left");
        let short = fds_short_under(n + 5, 10).expect("within the reserve");
        assert_eq!(short.resource, Resource::FileDescriptors);
        assert!(short.error.contains("kept for the daemon"), "{short}");
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let raised = raise_nofile().unwrap();
        let (soft, hard) = getrlimit(Limit::RLIMIT_NOFILE).unwrap();
        assert_eq!((raised.now, soft), (hard, hard));
        assert!(raised.before <= raised.now);
    }
}
