//! The remote side: the gateway's SFTP folders behind the [`Remote`] trait.
//!
//! [`sftp::SftpRemote`] is the real client (ssh2, host key verified, one session reused and
//! reconnected on failure, every call under a timeout). [`local::LocalRemote`] serves a local
//! folder with the same semantics for unit tests. Paths are relative to the remote home, `/`
//! separated, e.g. `upload/ACME.20261125.01.txt`. Never overwrites: [`Remote::upload`] fails with
//! [`RemoteError::Exists`] when the final name is taken.

pub mod local;
pub mod sftp;

use std::path::{Path, PathBuf};

/// What went wrong talking to the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// TCP connect, handshake, a dropped session or a timeout: retry later.
    #[error("cannot reach {target}: {message}")]
    Connect { target: String, message: String },
    /// The host key is unknown or changed: refuse until an operator acts.
    #[error("{message}")]
    HostKey { message: String },
    /// The server refused the credentials, or they could not be read.
    #[error("login failed: {message}")]
    Auth { message: String },
    /// An SFTP operation failed on `path`.
    #[error("{op} {path}: {message}")]
    Op {
        op: &'static str,
        path: String,
        message: String,
    },
    /// The final name already exists on the server (never overwritten).
    #[error("{path} already exists on the server")]
    Exists { path: String },
}

impl RemoteError {
    /// True when waiting and retrying may help (network, server busy), false when an operator
    /// must act (host key, credentials).
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Connect { .. } | RemoteError::Op { .. })
    }
}

/// The operations smsdrop needs from the gateway's server.
pub trait Remote: Send {
    /// Names of the entries in `dir` (not `.` or `..`).
    ///
    /// # Errors
    /// [`RemoteError`] when the folder cannot be listed.
    fn list(&mut self, dir: &str) -> Result<Vec<String>, RemoteError>;

    /// The size of `path`, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`RemoteError`] for anything but "no such file".
    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError>;

    /// Names and sizes of the entries in `dir` (the size `None` when the server gives none).
    ///
    /// # Errors
    /// [`RemoteError`] when the folder cannot be listed.
    fn list_sized(&mut self, dir: &str) -> Result<Vec<(String, Option<u64>)>, RemoteError> {
        let names = self.list(dir)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let size = self.size(&join(dir, &n))?;
            out.push((n, size));
        }
        Ok(out)
    }

    /// The content of `path` when it holds at most `max` bytes (`None` when larger or gone).
    ///
    /// # Errors
    /// [`RemoteError`] when reading fails.
    fn read_small(&mut self, path: &str, max: u64) -> Result<Option<Vec<u8>>, RemoteError>;

    /// Writes `local` to `temp`, checks the remote size equals the local size, calls
    /// `before_rename` (the journal records the intent: after a crash from here on, the file may
    /// be under its final name), then renames `temp` to `dest`. A rename onto an existing `dest`
    /// fails with [`RemoteError::Exists`] (and `temp` is removed). Returns the bytes sent.
    ///
    /// # Errors
    /// [`RemoteError`] on any failure; `dest` then either does not exist or is complete.
    fn upload_with(
        &mut self,
        local: &Path,
        temp: &str,
        dest: &str,
        before_rename: &mut dyn FnMut() -> Result<(), RemoteError>,
    ) -> Result<u64, RemoteError>;

    /// Uploads several files as [`Remote::upload_with`] does one, calling `before_rename` with
    /// the indices of the files about to be renamed (complete, size checked) before any of them
    /// is. A client may keep many requests in flight (the SFTP client sends a whole group in
    /// about three round trips); this default uploads one file after the other and stops at the
    /// first lost connection. Returns one result per file, in order.
    fn upload_many(
        &mut self,
        files: &[Upload],
        before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
    ) -> Vec<Result<u64, RemoteError>> {
        upload_each(self, files, before_rename)
    }

    /// [`Remote::upload_with`] with nothing to do before the rename.
    ///
    /// # Errors
    /// As [`Remote::upload_with`].
    fn upload(&mut self, local: &Path, temp: &str, dest: &str) -> Result<u64, RemoteError> {
        self.upload_with(local, temp, dest, &mut || Ok(()))
    }

    /// Removes `path`; a missing file is not an error.
    ///
    /// # Errors
    /// [`RemoteError`] when removal fails.
    fn remove(&mut self, path: &str) -> Result<(), RemoteError>;

    /// Opens the session (and whatever uploads will use) ahead of need, so the first file does
    /// not wait for a login; a no-op for a remote without sessions.
    ///
    /// # Errors
    /// As any call that connects.
    fn warm_up(&mut self) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Keeps an idle session open (SSH keepalive); a no-op without a session.
    ///
    /// # Errors
    /// [`RemoteError::Connect`] when the session turned out to be dead (it is dropped).
    fn keepalive(&mut self) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// One file for [`Remote::upload_many`]: the local file, its temporary and its final name.
#[derive(Debug, Clone)]
pub struct Upload {
    pub local: PathBuf,
    pub temp: String,
    pub dest: String,
}

/// [`Remote::upload_many`] one file at a time with [`Remote::upload_with`]; after a lost
/// connection the remaining files get the same error without being tried.
pub fn upload_each<R: Remote + ?Sized>(
    remote: &mut R,
    files: &[Upload],
    before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
) -> Vec<Result<u64, RemoteError>> {
    let mut out: Vec<Result<u64, RemoteError>> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        if let Some(Err(e)) = out.last() {
            if !matches!(e, RemoteError::Op { .. } | RemoteError::Exists { .. }) {
                let e = e.clone();
                out.extend((i..files.len()).map(|_| Err(e.clone())));
                break;
            }
        }
        out.push(remote.upload_with(&f.local, &f.temp, &f.dest, &mut || before_rename(&[i])));
    }
    out
}

/// `dir/name`, or `name` when `dir` is empty.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir == "." {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}
