//! One owner per state folder (DESIGN.md, invariant 7): whoever writes the journal, spools and
//! uploads holds an exclusive OS lock on `<state>/lock`. The kernel releases it when the process
//! dies, however it dies, so no stale file can block a restart.
//!
//! The lock file holds the owner's pid, for the message a second process prints. This module
//! never removes the lock file (removing it would let two owners lock two different files).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process owns the state folder.
    #[error(
        "another smsdrop (pid {}) is using the state folder: {} is locked. Stop it first \
         (e.g. `systemctl stop smsdrop`), or use `smsdrop send`, which hands files to the \
         running daemon; `status` and `check` work beside it",
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        path.display()
    )]
    Held { path: PathBuf, pid: Option<u32> },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Proof that this process owns a state folder; released on drop (or death).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of `state_dir` (created if missing), without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] with the owner's pid when another process holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join("lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io_err)?;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            // A user who may not write the lock can still see whether it is held (flock needs
            // no write access), so `send` can hand over to the daemon.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                File::open(&path).map_err(|_| io_err(e))?
            }
            other => other.map_err(io_err)?,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    pid: holder_pid(&mut file),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // Overwrite in place, then cut: a reader never sees an empty file between the two.
        let line = format!("{}\n", std::process::id());
        file.write_all_at(line.as_bytes(), 0).map_err(io_err)?;
        file.set_len(line.len() as u64).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

/// The pid the holder wrote; it may be a moment behind taking the lock, so look a few times.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..10 {
        let mut s = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut s).is_ok() {
            if let Ok(pid) = s.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_pid_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(d.path()).unwrap();
        // A second open file description conflicts like a second process would.
        match StateLock::acquire(d.path()) {
            Err(LockError::Held { pid, path }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(path, d.path().join("lock"));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(d.path()).expect("free again once released");
    }
}
