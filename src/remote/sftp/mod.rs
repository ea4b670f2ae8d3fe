//! The real client: SFTP over ssh2 (libssh2). See the module docs of `remote` for the semantics.
//!
//! One [`SftpRemote`] owns at most one SSH session and its SFTP channel, opened on first use and
//! reused for every call. Every blocking libssh2 call runs under `cfg.timeout`. A connection-level
//! failure (socket error, timeout, closed channel) drops the session and returns
//! [`RemoteError::Connect`]; the next call reconnects. Waiting and retrying is the caller's job.
//!
//! The host key is checked against `cfg.known_hosts` before any credential is sent. An unknown
//! key is never trusted here: only [`accept_new_host_key`] (`smsdrop check
//! --accept-new-host-key`) records one, and never over a changed key. A key on a `@revoked`
//! line of known_hosts is refused, whatever else the file says, and never recorded. Secrets are
//! read when connecting, held in a `Secret` (Debug prints `***`) and never put in an error or a
//! log.
//! This module must never overwrite a remote file, and never panic on what the server sends.
//!
//! One concern a file:
//! - `mod.rs` (here): [`SftpRemote`] and its [`Remote`] impl: list, stat, upload (temp file, size
//!   check, no-clobber rename), remove and keepalive, and dropping a session once it is lost.
//! - `pipe.rs`: the pipelined SFTP channel (requests in flight, answers by id).
//! - `many.rs`: uploading a group of files on that channel in about three round trips.
//! - `session.rs`: TCP connect, SSH handshake, ciphers, keepalive and timeouts; the live session.
//! - `hostkey.rs`: known_hosts checking and recording, fingerprints ([`host_key_status`],
//!   [`accept_new_host_key`], [`HostKeyStatus`]).
//! - `auth.rs`: secrets, loading credentials, logging in ([`check_secret_permissions`]).
//! - `errors.rs`: which ssh2 errors mean a lost session, a missing file or a refused login.

mod auth;
mod errors;
mod hostkey;
mod many;
mod pipe;
mod session;
mod steps;

pub use auth::check_secret_permissions;
pub use hostkey::{accept_new_host_key, host_key_status, HostKeyStatus};

use super::{Remote, RemoteError, Upload};
use crate::config::SftpConfig;
use errors::{describe, no_such_file, refusal, session_lost, ERROR_FILE};
use session::{connect, target, Conn};
use ssh2::{ErrorCode, MethodType, Sftp};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// The SFTP client: one session, opened lazily, reused, dropped on connection failure.
pub struct SftpRemote {
    cfg: SftpConfig,
    conn: Option<Conn>,
    /// Sessions opened so far: a pipelined channel goes back only to the session it came from.
    sessions: u64,
    /// Pipelined groups in a row that ended with the channel failing (see `many.rs`).
    pipe_failures: u32,
}

impl fmt::Debug for SftpRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpRemote")
            .field("target", &target(&self.cfg))
            .field("connected", &self.connected())
            .finish()
    }
}

impl SftpRemote {
    /// A client for `cfg`; connects on first use, not here.
    pub fn new(cfg: SftpConfig) -> SftpRemote {
        SftpRemote {
            cfg,
            conn: None,
            sessions: 0,
            pipe_failures: 0,
        }
    }

    /// Whether a session is open (it may still turn out dead on the next call).
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Opens the session now if none is open (the other calls do this themselves).
    ///
    /// # Errors
    /// [`RemoteError::Connect`] (transient), [`RemoteError::HostKey`] or [`RemoteError::Auth`].
    pub fn connect(&mut self) -> Result<(), RemoteError> {
        if self.conn.is_none() {
            let conn = connect(&self.cfg)?;
            let cipher = conn
                .link
                .session
                .methods(MethodType::CryptCs)
                .map(str::to_owned);
            tracing::debug!(server = %target(&self.cfg), ?cipher, "sftp session open");
            self.conn = Some(conn);
            self.sessions += 1;
        }
        Ok(())
    }

    /// Closes the session politely (SSH disconnect); the next call reconnects.
    pub fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.link.session.disconnect(None, "smsdrop done", None);
        }
    }

    /// The SFTP channel, connecting first if needed. `op` and `path` name what it is for.
    fn sftp(&mut self, op: &str, path: &str) -> Result<&Sftp, RemoteError> {
        if let Err(e) = self.connect() {
            return Err(match e {
                RemoteError::Connect { target, message } => RemoteError::Connect {
                    target,
                    message: format!("{op} {path}: {message}"),
                },
                other => other,
            });
        }
        match &self.conn {
            Some(conn) => Ok(&conn.sftp),
            None => Err(self.connect_error(format!("{op} {path}: no session"))),
        }
    }

    /// Turns an ssh2 error into a [`RemoteError`], dropping the session if it is gone.
    fn fail(&mut self, op: &'static str, path: &str, e: &ssh2::Error) -> RemoteError {
        self.fail_with(op, path, session_lost(e), describe(e))
    }

    /// Like [`SftpRemote::fail`] for the `io::Error`s of `ssh2::File` (which lose the code:
    /// the session's last error tells a server refusal from a dead connection).
    fn fail_io(&mut self, op: &'static str, path: &str, e: &io::Error) -> RemoteError {
        let lost = match e.kind() {
            io::ErrorKind::TimedOut => true,
            io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists => false,
            _ => self
                .conn
                .as_ref()
                .and_then(|c| ssh2::Error::last_session_error(&c.link.session))
                .is_none_or(|l| session_lost(&l)),
        };
        self.fail_with(op, path, lost, e.to_string())
    }

    fn fail_with(
        &mut self,
        op: &'static str,
        path: &str,
        lost: bool,
        message: String,
    ) -> RemoteError {
        if lost {
            self.conn = None;
            tracing::warn!(server = %target(&self.cfg), op, path, error = %message, "session lost");
            self.connect_error(format!("{op} {path}: connection lost: {message}"))
        } else {
            refusal(op, path, message)
        }
    }

    fn connect_error(&self, message: String) -> RemoteError {
        RemoteError::Connect {
            target: target(&self.cfg),
            message,
        }
    }
}

impl Remote for SftpRemote {
    /// Entry names, sorted. Names that are not valid UTF-8 are skipped: smsdrop only ever
    /// writes UTF-8 names, and a lossy conversion could name a different file.
    fn list(&mut self, dir: &str) -> Result<Vec<String>, RemoteError> {
        let remote_dir = if dir.is_empty() { "." } else { dir };
        let opened = self.sftp("list", dir)?.opendir(Path::new(remote_dir));
        let mut handle = opened.map_err(|e| self.fail("list", dir, &e))?;
        let mut names = vec![];
        loop {
            match handle.readdir() {
                Ok((name, _)) => names.extend(usable_name(&name)),
                // ssh2's "no more files" marker.
                Err(e) if e.code() == ErrorCode::Session(ERROR_FILE) => break,
                Err(e) => return Err(self.fail("list", dir, &e)),
            }
        }
        names.sort();
        Ok(names)
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        let stat = self.sftp("stat", path)?.stat(Path::new(path));
        match stat {
            Ok(st) => st.size.map(Some).ok_or_else(|| RemoteError::Op {
                op: "stat",
                path: path.to_owned(),
                message: "the server sent no size".into(),
            }),
            Err(e) if no_such_file(&e) => Ok(None),
            Err(e) => Err(self.fail("stat", path, &e)),
        }
    }

    fn read_small(&mut self, path: &str, max: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.size(path)? {
            Some(n) if n <= max => {}
            _ => return Ok(None),
        }
        let opened = self.sftp("read", path)?.open(Path::new(path));
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if no_such_file(&e) => return Ok(None),
            Err(e) => return Err(self.fail("read", path, &e)),
        };
        let mut buf = vec![];
        let read = io::Read::read_to_end(&mut (&mut f).take(max + 1), &mut buf);
        if let Err(e) = read {
            return Err(self.fail_io("read", path, &e));
        }
        Ok((buf.len() as u64 <= max).then_some(buf))
    }

    fn list_sized(&mut self, dir: &str) -> Result<Vec<(String, Option<u64>)>, RemoteError> {
        let remote_dir = if dir.is_empty() { "." } else { dir };
        let opened = self.sftp("list", dir)?.opendir(Path::new(remote_dir));
        let mut handle = opened.map_err(|e| self.fail("list", dir, &e))?;
        let mut entries = vec![];
        loop {
            match handle.readdir() {
                Ok((name, stat)) => {
                    if let Some(n) = usable_name(&name) {
                        entries.push((n, stat.size));
                    }
                }
                Err(e) if e.code() == ErrorCode::Session(ERROR_FILE) => break,
                Err(e) => return Err(self.fail("list", dir, &e)),
            }
        }
        entries.sort();
        Ok(entries)
    }

    fn upload_with(
        &mut self,
        local: &Path,
        temp: &str,
        dest: &str,
        before_rename: &mut dyn FnMut() -> Result<(), RemoteError>,
    ) -> Result<u64, RemoteError> {
        let files = [Upload {
            local: local.to_owned(),
            temp: temp.to_owned(),
            dest: dest.to_owned(),
        }];
        let mut results = [None];
        self.sftp("upload", temp)?;
        let ran = match &self.conn {
            Some(conn) => steps::run(
                &mut steps::OneAtATime::new(&conn.sftp, &conn.link.session),
                &files,
                &mut |_| before_rename(),
                &mut results,
            ),
            None => Err("no session".into()),
        };
        let [result] = results;
        // A failed channel drops the session, whatever became of the file.
        let lost = ran
            .err()
            .map(|message| self.fail_with("upload", temp, true, message));
        match (result, lost) {
            (Some(r), _) => r,
            (None, Some(e)) => Err(e),
            (None, None) => Err(self.connect_error(format!("upload {temp}: not attempted"))),
        }
    }

    fn upload_many(
        &mut self,
        files: &[Upload],
        before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
    ) -> Vec<Result<u64, RemoteError>> {
        self.upload_pipelined(files, before_rename)
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        let removed = self.sftp("remove", path)?.unlink(Path::new(path));
        match removed {
            Ok(()) => Ok(()),
            Err(e) if no_such_file(&e) => Ok(()),
            Err(e) => Err(self.fail("remove", path, &e)),
        }
    }

    fn warm_up(&mut self) -> Result<(), RemoteError> {
        self.warm_pipe()
    }

    fn keepalive(&mut self) -> Result<(), RemoteError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        match conn.link.session.keepalive_send() {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail_with("keepalive", ".", true, describe(&e))),
        }
    }
}

/// A listed name smsdrop can use: UTF-8, not `.`/`..`, no `/`.
fn usable_name(name: &Path) -> Option<String> {
    let name = name.to_str()?;
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/'))
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Auth;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn listed_names() {
        assert_eq!(usable_name(Path::new("a.txt")).as_deref(), Some("a.txt"));
        for bad in [".", "..", "", "a/b"] {
            assert_eq!(usable_name(Path::new(bad)), None, "{bad:?}");
        }
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            usable_name(Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"))),
            None
        );
    }

    /// A config for unit tests: a closed local port, a known_hosts that does not exist.
    pub(super) fn cfg(auth: Auth) -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: 1,
            username: "u".into(),
            auth,
            known_hosts: PathBuf::from("/nonexistent/known_hosts"),
            upload_dir: "upload".into(),
            success_dir: "success".into(),
            error_dir: "error".into(),
            temp_dir: None,
            timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
            strict_permissions: false,
            connections: 1,
            pipelining: true,
        }
    }

    #[test]
    fn unreachable_server_is_a_transient_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut c = cfg(Auth::PasswordEnv("PATH".into()));
        c.port = port;
        let mut r = SftpRemote::new(c);
        match r.size("upload/x") {
            Err(e @ RemoteError::Connect { .. }) => {
                assert!(e.is_transient());
                assert!(e.to_string().contains("stat upload/x"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.connected());
    }
}
