//! One owner per state folder (DESIGN.md, invariant 7): whoever writes the journal, spools and
//! uploads holds an exclusive OS lock on `<state>/lock`. The kernel releases it when the process
//! dies, however it dies, so no stale file can block a restart.
//!
//! The lock file holds the owner's pid, for the message a second process prints. This module
//! never removes the lock file (removing it would let two owners lock two different files).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
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
    path: PathBuf,
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(LockError::Held {
                    pid: s.trim().parse().ok(),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
                assert_eq!(path, first.path());
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(d.path()).expect("free again once released");
    }
}
