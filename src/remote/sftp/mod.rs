//! The real client: SFTP over ssh2 (libssh2). See the module docs of `remote` for the semantics.
//!
//! One [`SftpRemote`] owns at most one SSH session and its SFTP channel, opened on first use and
//! reused for every call. Every blocking libssh2 call runs under `cfg.timeout`. A connection-level
//! failure (socket error, timeout, closed channel) drops the session and returns
//! [`RemoteError::Connect`]; the next call reconnects. Waiting and retrying is the caller's job.
//!
//! The host key is checked against `cfg.known_hosts` before any credential is sent. An unknown
//! key is never trusted here: only [`accept_new_host_key`] (`smsdrop check
//! --accept-new-host-key`) records one, and never over a changed key. Secrets are read when
//! connecting, held in a `Secret` (Debug prints `***`) and never put in an error or a log.
//! This module must never overwrite a remote file, and never panic on what the server sends.

use super::{Remote, RemoteError};
use crate::config::{Auth, SftpConfig};
use ssh2::{CheckResult, ErrorCode, HashType, HostKeyType, KnownHostFileKind, MethodType};
use ssh2::{KeyboardInteractivePrompt, OpenFlags, OpenType, Prompt, RenameFlags, Session, Sftp};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

// libssh2 codes we act on (libssh2-sys is not a direct dependency, so they are copied here).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_NO_CONNECTION: i32 = 6;
const FX_CONNECTION_LOST: i32 = 7;
const FX_NO_SUCH_PATH: i32 = 10;
const ERROR_PASSWORD_EXPIRED: i32 = -15;
const ERROR_FILE: i32 = -16;
const ERROR_AUTHENTICATION_FAILED: i32 = -18;
const ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;
const ERROR_SFTP_PROTOCOL: i32 = -31;
const ERROR_INVAL: i32 = -34;
const ERROR_KEYFILE_AUTH_FAILED: i32 = -48;

/// Ciphers in order of preference. libssh2 1.11 encrypts AES (GCM and CTR) one 16-byte block per
/// call but chacha20-poly1305 a whole packet at a time: measured on loopback, chacha20 moved a
/// 200 MB batch faster (benches/deliver.sh). libssh2 drops names it lacks.
const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr,\
                       aes256-gcm@openssh.com,aes256-ctr";
const CIPHERS_NO_GCM: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";
/// Upload write size: libssh2 pipelines one big write into many packets (2x faster than 32 KiB).
const CHUNK: usize = 1 << 20;

/// Whether the server's host key is the one recorded in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// Recorded and equal: connecting is safe.
    Match,
    /// No entry for this host and port: an operator must confirm and accept it.
    NotFound,
    /// Recorded with another key: possible man-in-the-middle, refuse.
    Mismatch,
}

/// A password or passphrase. Debug prints `***`; the bytes are overwritten on drop (best effort).
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// The SFTP client: one session, opened lazily, reused, dropped on connection failure.
pub struct SftpRemote {
    cfg: SftpConfig,
    conn: Option<Conn>,
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
        SftpRemote { cfg, conn: None }
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
            RemoteError::Op {
                op,
                path: path.to_owned(),
                message,
            }
        }
    }

    fn connect_error(&self, message: String) -> RemoteError {
        RemoteError::Connect {
            target: target(&self.cfg),
            message,
        }
    }

    /// Creates `temp` and copies `local` into it; returns the bytes sent.
    fn write_temp(
        &mut self,
        local: &mut fs::File,
        local_path: &Path,
        temp: &str,
    ) -> Result<u64, RemoteError> {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        let opened =
            self.sftp("create", temp)?
                .open_mode(Path::new(temp), flags, 0o644, OpenType::File);
        let mut remote = opened.map_err(|e| self.fail("create", temp, &e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = read_full(local, &mut buf).map_err(|e| local_error(local_path, temp, &e))?;
            if n == 0 {
                break;
            }
            if let Err(e) = remote.write_all(&buf[..n]) {
                return Err(self.fail_io("write", temp, &e));
            }
            sent += n as u64;
        }
        remote.close().map_err(|e| self.fail("close", temp, &e))?;
        Ok(sent)
    }

    /// Renames `temp` to `dest` without overwriting: SFTP v3 sends no flags and OpenSSH then
    /// refuses a rename onto an existing name, which is what we want.
    fn rename_no_clobber(&mut self, temp: &str, dest: &str) -> Result<(), RemoteError> {
        let flags = Some(RenameFlags::ATOMIC | RenameFlags::NATIVE);
        let renamed = self
            .sftp("rename", dest)?
            .rename(Path::new(temp), Path::new(dest), flags);
        let e = match renamed {
            Ok(()) => return Ok(()),
            Err(e) if session_lost(&e) => return Err(self.fail("rename", dest, &e)),
            Err(e) => e,
        };
        let exists = self.size(dest)?.is_some();
        self.remove(temp)?;
        if exists {
            Err(RemoteError::Exists {
                path: dest.to_owned(),
            })
        } else {
            Err(RemoteError::Op {
                op: "rename",
                path: dest.to_owned(),
                message: format!("from {temp}: {}", describe(&e)),
            })
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

    fn upload(&mut self, local: &Path, temp: &str, dest: &str) -> Result<u64, RemoteError> {
        let mut file = fs::File::open(local).map_err(|e| local_error(local, temp, &e))?;
        let expected = file
            .metadata()
            .map_err(|e| local_error(local, temp, &e))?
            .len();
        // A stale temp file from an interrupted attempt is truncated by the open; only when the
        // open itself fails (e.g. something odd under that name) is it removed and tried again.
        let first = self.write_temp(&mut file, local, temp);
        let first = match first {
            Err(RemoteError::Op { op: "create", .. }) if self.connected() => {
                self.remove(temp)?;
                file = fs::File::open(local).map_err(|e| local_error(local, temp, &e))?;
                self.write_temp(&mut file, local, temp)
            }
            other => other,
        };
        let sent = match first {
            Ok(sent) => sent,
            Err(e) => {
                if self.connected() {
                    let _ = self.remove(temp);
                }
                return Err(e);
            }
        };
        let remote_size = self.size(temp)?;
        if sent != expected || remote_size != Some(sent) {
            self.remove(temp)?;
            let message = format!(
                "size mismatch: local file {} had {expected} bytes, sent {sent}, server has {}",
                local.display(),
                remote_size.map_or_else(|| "no file".to_owned(), |s| s.to_string())
            );
            return Err(RemoteError::Op {
                op: "upload",
                path: temp.to_owned(),
                message,
            });
        }
        crate::crash::point("temp-uploaded");
        self.rename_no_clobber(temp, dest)?;
        crate::crash::point("renamed");
        Ok(sent)
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        let removed = self.sftp("remove", path)?.unlink(Path::new(path));
        match removed {
            Ok(()) => Ok(()),
            Err(e) if no_such_file(&e) => Ok(()),
            Err(e) => Err(self.fail("remove", path, &e)),
        }
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

/// Reads the server's host key and compares it with `cfg.known_hosts`, for `smsdrop check`.
/// Returns the key's `SHA256:` fingerprint and the verdict. Sends no credentials.
///
/// # Errors
/// [`RemoteError::Connect`] when the server cannot be reached; [`RemoteError::HostKey`] when
/// known_hosts cannot be read.
pub fn host_key_status(cfg: &SftpConfig) -> Result<(String, HostKeyStatus), RemoteError> {
    let link = handshake(cfg)?;
    let key = host_key(cfg, &link.session)?;
    let status = check_host_key(cfg, &link.session, &key)?;
    link.close();
    Ok((key.fingerprint, status))
}

/// Records the server's host key in `cfg.known_hosts` if the host has no entry yet (creating
/// the file, mode 0600), and returns its fingerprint. An operator must have confirmed the
/// fingerprint with the gateway. Sends no credentials.
///
/// # Errors
/// [`RemoteError::HostKey`] when a different key is recorded (never replaced here) or the file
/// cannot be written; [`RemoteError::Connect`] when the server cannot be reached.
pub fn accept_new_host_key(cfg: &SftpConfig) -> Result<String, RemoteError> {
    let link = handshake(cfg)?;
    let key = host_key(cfg, &link.session)?;
    match check_host_key(cfg, &link.session, &key)? {
        HostKeyStatus::Match => {}
        HostKeyStatus::Mismatch => return Err(changed_host_key(cfg, &key)),
        HostKeyStatus::NotFound => {
            record_host_key(cfg, &link.session, &key)?;
            tracing::info!(server = %target(cfg), fingerprint = %key.fingerprint, "host key recorded");
        }
    }
    link.close();
    Ok(key.fingerprint)
}

/// Warnings for secret files (password file, private key) that group or others may access.
/// The caller decides whether to refuse (`strict_permissions`).
pub fn check_secret_permissions(cfg: &SftpConfig) -> Vec<String> {
    let (what, path) = match &cfg.auth {
        Auth::PasswordEnv(_) => return vec![],
        Auth::PasswordFile(path) => ("password file", path),
        Auth::Key { path, .. } => ("private key", path),
    };
    let Ok(meta) = fs::metadata(path) else {
        return vec![]; // missing: connecting reports it
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return vec![];
    }
    let how = if mode & 0o044 != 0 {
        "readable"
    } else {
        "accessible"
    };
    let p = path.display();
    vec![format!(
        "{what} {p} is {how} by group or others (mode {mode:04o}); run chmod 600 {p}"
    )]
}

/// The live session: SFTP channel, SSH session and a handle on its socket.
struct Conn {
    sftp: Sftp,
    link: Link,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Cut the socket first so libssh2's cleanup fails fast instead of waiting for a timeout.
        let _ = self.link.socket.shutdown(Shutdown::Both);
    }
}

/// An SSH session after the handshake, plus a clone of its socket.
struct Link {
    session: Session,
    socket: TcpStream,
}

impl Link {
    fn close(self) {
        let _ = self.session.disconnect(None, "smsdrop done", None);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The server's host key, with its type and fingerprint.
struct HostKey {
    key: Vec<u8>,
    kind: HostKeyType,
    fingerprint: String,
}

/// Credentials loaded for one connect (Debug is safe: secrets print as `***`).
#[derive(Debug)]
struct Credentials {
    login: Login,
    /// Where they come from, for messages (never the secret itself).
    source: String,
}

#[derive(Debug)]
enum Login {
    Password(Secret),
    Key {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
}

/// Opens a verified, authenticated session with its SFTP channel.
fn connect(cfg: &SftpConfig) -> Result<Conn, RemoteError> {
    let creds = load_credentials(&cfg.auth)?;
    let link = handshake(cfg)?;
    let key = host_key(cfg, &link.session)?;
    match check_host_key(cfg, &link.session, &key)? {
        HostKeyStatus::Match => {}
        HostKeyStatus::NotFound => return Err(unknown_host_key(cfg, &key)),
        HostKeyStatus::Mismatch => return Err(changed_host_key(cfg, &key)),
    }
    authenticate(cfg, &link.session, &creds)?;
    let sftp = link.session.sftp().map_err(|e| RemoteError::Connect {
        target: target(cfg),
        message: format!("cannot start the SFTP subsystem: {}", describe(&e)),
    })?;
    Ok(Conn { sftp, link })
}

/// TCP connect (each resolved address, under the timeout), then the SSH handshake.
fn handshake(cfg: &SftpConfig) -> Result<Link, RemoteError> {
    let err = |message: String| RemoteError::Connect {
        target: target(cfg),
        message,
    };
    let timeout = cfg.timeout.max(Duration::from_millis(100));
    let addrs = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {}: {e}", cfg.host)))?;
    let mut last = format!("{} resolved to no address", cfg.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let stream = stream.ok_or_else(|| err(format!("TCP connect failed: {last}")))?;
    let socket_setup = |s: &TcpStream| -> io::Result<TcpStream> {
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        s.try_clone()
    };
    let socket = socket_setup(&stream).map_err(|e| err(format!("socket setup: {e}")))?;
    let mut session = Session::new()
        .map_err(|e| err(format!("cannot create an SSH session: {}", describe(&e))))?;
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    for method in [MethodType::CryptCs, MethodType::CryptSc] {
        if session.method_pref(method, CIPHERS).is_err() {
            let _ = session.method_pref(method, CIPHERS_NO_GCM);
        }
    }
    session.set_tcp_stream(stream);
    let mut link = Link { session, socket };
    link.session
        .handshake()
        .map_err(|e| err(format!("SSH handshake failed: {}", describe(&e))))?;
    link.session.set_keepalive(
        true,
        u32::try_from(cfg.keepalive.as_secs()).unwrap_or(u32::MAX),
    );
    Ok(link)
}

fn host_key(cfg: &SftpConfig, session: &Session) -> Result<HostKey, RemoteError> {
    let missing = || RemoteError::HostKey {
        message: format!("{} sent no usable host key", target(cfg)),
    };
    let (key, kind) = session.host_key().ok_or_else(missing)?;
    let hash = session
        .host_key_hash(HashType::Sha256)
        .ok_or_else(missing)?;
    Ok(HostKey {
        key: key.to_vec(),
        kind,
        fingerprint: format!("SHA256:{}", base64_unpadded(hash)),
    })
}

/// Checks `key` against `cfg.known_hosts`; a missing file means "not found". Lines libssh2
/// cannot parse are skipped with a warning (they can only turn a match into "not found").
fn check_host_key(
    cfg: &SftpConfig,
    session: &Session,
    key: &HostKey,
) -> Result<HostKeyStatus, RemoteError> {
    let path = &cfg.known_hosts;
    let err = |what: String| RemoteError::HostKey {
        message: format!("known_hosts {}: {what}", path.display()),
    };
    let mut known = session.known_hosts().map_err(|e| err(describe(&e)))?;
    match fs::read(path) {
        Ok(bytes) => {
            for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                if known.read_str(line, KnownHostFileKind::OpenSSH).is_err() {
                    tracing::warn!(file = %path.display(), line = i + 1, "known_hosts line not understood; skipped");
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    }
    if cfg.host.contains('\0') {
        return Err(err("the host name contains a NUL byte".into()));
    }
    match known.check_port(&cfg.host, cfg.port, &key.key) {
        CheckResult::Match => Ok(HostKeyStatus::Match),
        CheckResult::NotFound => Ok(HostKeyStatus::NotFound),
        CheckResult::Mismatch => Ok(HostKeyStatus::Mismatch),
        CheckResult::Failure => Err(err(format!("cannot check the host key of {}", target(cfg)))),
    }
}

/// Appends the host's entry to known_hosts.
fn record_host_key(cfg: &SftpConfig, session: &Session, key: &HostKey) -> Result<(), RemoteError> {
    let entry = host_entry(cfg);
    let path = &cfg.known_hosts;
    let err = |what: String| RemoteError::HostKey {
        message: format!(
            "cannot record the host key of {entry} in {}: {what}",
            path.display()
        ),
    };
    let mut fresh = session.known_hosts().map_err(|e| err(describe(&e)))?;
    fresh
        .add(&entry, &key.key, "added by smsdrop", key.kind.into())
        .map_err(|e| err(describe(&e)))?;
    let host = fresh
        .hosts()
        .map_err(|e| err(describe(&e)))?
        .into_iter()
        .next();
    let host = host.ok_or_else(|| err("libssh2 did not keep the entry".into()))?;
    let line = fresh
        .write_string(&host, KnownHostFileKind::OpenSSH)
        .map_err(|e| err(describe(&e)))?;
    append_line(path, &line).map_err(|e| err(e.to_string()))
}

fn append_line(path: &Path, line: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let needs_newline = match fs::read(path) {
        Ok(old) => old.last().is_some_and(|&b| b != b'\n'),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mut text = String::from(if needs_newline { "\n" } else { "" });
    text.push_str(line.trim_end_matches('\n'));
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn unknown_host_key(cfg: &SftpConfig, key: &HostKey) -> RemoteError {
    RemoteError::HostKey {
        message: format!(
            "the SFTP server {} is not in {} (its {} host key has fingerprint {}); confirm this \
             fingerprint with the gateway, then run `smsdrop check --accept-new-host-key`",
            target(cfg),
            cfg.known_hosts.display(),
            key_type_name(key.kind),
            key.fingerprint
        ),
    }
}

fn changed_host_key(cfg: &SftpConfig, key: &HostKey) -> RemoteError {
    let file = cfg.known_hosts.display();
    let entry = host_entry(cfg);
    RemoteError::HostKey {
        message: format!(
            "the host key of {} has CHANGED: the server now presents an {} key with fingerprint \
             {}, not the one recorded in {file}; refusing to connect. This may be a \
             man-in-the-middle attack. Only after the gateway confirms the new fingerprint, remove \
             the old entry (ssh-keygen -R '{entry}' -f {file}) and run `smsdrop check \
             --accept-new-host-key`",
            target(cfg),
            key_type_name(key.kind),
            key.fingerprint,
        ),
    }
}

/// Reads the secret named by `auth` (environment variable or file); never returns it in an error.
fn load_credentials(auth: &Auth) -> Result<Credentials, RemoteError> {
    let from_env = |var: &str, what: &str| match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        _ => Err(RemoteError::Auth {
            message: format!("set the environment variable {var} to the {what}"),
        }),
    };
    let unreadable = |what: &str, path: &Path, e: io::Error| RemoteError::Auth {
        message: format!("cannot read the {what} {}: {e}", path.display()),
    };
    Ok(match auth {
        Auth::PasswordEnv(var) => Credentials {
            login: Login::Password(from_env(var, "SFTP password")?),
            source: format!("the password from environment variable {var}"),
        },
        Auth::PasswordFile(path) => {
            let text =
                Secret(fs::read_to_string(path).map_err(|e| unreadable("password file", path, e))?);
            let first = text.0.lines().next().unwrap_or("");
            if first.is_empty() {
                let message = format!(
                    "the first line of {} is empty; write the password there",
                    path.display()
                );
                return Err(RemoteError::Auth { message });
            }
            Credentials {
                login: Login::Password(Secret(first.to_owned())),
                source: format!("the password from file {}", path.display()),
            }
        }
        Auth::Key {
            path,
            passphrase_env,
        } => {
            fs::File::open(path).map_err(|e| unreadable("private key", path, e))?;
            let passphrase = passphrase_env
                .as_deref()
                .map(|v| from_env(v, "private key's passphrase"));
            let source = match passphrase_env {
                Some(var) => format!("private key {} (passphrase from {var})", path.display()),
                None => format!("private key {} (no passphrase)", path.display()),
            };
            Credentials {
                login: Login::Key {
                    path: path.clone(),
                    passphrase: passphrase.transpose()?,
                },
                source,
            }
        }
    })
}

fn authenticate(
    cfg: &SftpConfig,
    session: &Session,
    creds: &Credentials,
) -> Result<(), RemoteError> {
    let (user, source) = (cfg.username.as_str(), &creds.source);
    let result = match &creds.login {
        Login::Password(secret) => password_login(session, user, secret),
        Login::Key { path, passphrase } => session.userauth_pubkey_file(
            user,
            None,
            path,
            passphrase.as_ref().map(|s| s.0.as_str()),
        ),
    };
    let e = match result {
        Ok(()) if session.authenticated() => return Ok(()),
        Ok(()) => {
            let message = format!("user {user} at {} with {source}: not accepted", target(cfg));
            return Err(RemoteError::Auth { message });
        }
        Err(e) => e,
    };
    if !auth_refused(&e) {
        return Err(RemoteError::Connect {
            target: target(cfg),
            message: format!("login: {}", describe(&e)),
        });
    }
    // libssh2 reports a wrong passphrase as an unreadable key ("unsupported format").
    let hint = match (&creds.login, e.code()) {
        (Login::Key { .. }, ErrorCode::Session(ERROR_FILE)) => {
            "; check the passphrase, and that the key is an OpenSSH or PEM private key"
        }
        _ => "",
    };
    let message = format!(
        "user {user} at {} with {source}: {}{hint}",
        target(cfg),
        describe(&e)
    );
    Err(RemoteError::Auth { message })
}

/// Password auth, or keyboard-interactive when the server offers only that (some SFTP
/// appliances do); the password answers every hidden prompt.
fn password_login(session: &Session, user: &str, secret: &Secret) -> Result<(), ssh2::Error> {
    struct Answer<'a>(&'a str);
    impl KeyboardInteractivePrompt for Answer<'_> {
        fn prompt<'b>(&mut self, _: &str, _: &str, prompts: &[Prompt<'b>]) -> Vec<String> {
            prompts
                .iter()
                .map(|p| {
                    if p.echo {
                        String::new()
                    } else {
                        self.0.to_owned()
                    }
                })
                .collect()
        }
    }
    let methods = match session.auth_methods(user) {
        Ok(m) => m.to_owned(),
        Err(_) if session.authenticated() => return Ok(()),
        Err(e) => return Err(e),
    };
    let offers = |name: &str| methods.split(',').any(|m| m == name);
    if !offers("password") && offers("keyboard-interactive") {
        session.userauth_keyboard_interactive(user, &mut Answer(&secret.0))
    } else {
        session.userauth_password(user, &secret.0)
    }
}

fn auth_refused(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Session(
            ERROR_AUTHENTICATION_FAILED
                | ERROR_PUBLICKEY_UNVERIFIED
                | ERROR_PASSWORD_EXPIRED
                | ERROR_FILE
                | ERROR_KEYFILE_AUTH_FAILED
        )
    )
}

/// Whether an error leaves the session unusable (socket, timeout, EAGAIN, closed channel,
/// protocol) rather than being the server's answer to one request.
fn session_lost(e: &ssh2::Error) -> bool {
    match e.code() {
        ErrorCode::SFTP(c) => c == FX_NO_CONNECTION || c == FX_CONNECTION_LOST,
        ErrorCode::Session(c) => !matches!(c, ERROR_SFTP_PROTOCOL | ERROR_INVAL),
    }
}

fn no_such_file(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH))
}

fn describe(e: &ssh2::Error) -> String {
    match e.code() {
        ErrorCode::SFTP(c) => format!("{} (SFTP status {c})", e.message()),
        ErrorCode::Session(c) => format!("{} (libssh2 error {c})", e.message()),
    }
}

fn local_error(local: &Path, temp: &str, e: &io::Error) -> RemoteError {
    RemoteError::Op {
        op: "upload",
        path: temp.to_owned(),
        message: format!("reading {}: {e}", local.display()),
    }
}

/// A listed name smsdrop can use: UTF-8, not `.`/`..`, no `/`.
fn usable_name(name: &Path) -> Option<String> {
    let name = name.to_str()?;
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/'))
        .then(|| name.to_owned())
}

/// Fills `buf` unless the end of the file comes first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The host's name in known_hosts: `[host]:port` unless the port is 22.
fn host_entry(cfg: &SftpConfig) -> String {
    if cfg.port == 22 {
        cfg.host.clone()
    } else {
        format!("[{}]:{}", cfg.host, cfg.port)
    }
}

fn target(cfg: &SftpConfig) -> String {
    format!("{}:{}", cfg.host, cfg.port)
}

fn key_type_name(kind: HostKeyType) -> &'static str {
    match kind {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown-type",
    }
}

/// Standard base64 without `=` padding, as OpenSSH prints fingerprints.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_without_padding() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_unpadded(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64_unpadded(&[0xfb, 0xff]), "+/8");
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "***");
    }

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

    fn cfg(auth: Auth) -> SftpConfig {
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
        }
    }

    #[test]
    fn secret_files_open_to_others_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        fs::write(&key, "k").unwrap();
        let auth = Auth::Key {
            path: key.clone(),
            passphrase_env: None,
        };
        for (mode, warned) in [
            (0o600, false),
            (0o400, false),
            (0o644, true),
            (0o640, true),
            (0o602, true),
        ] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            let warnings = check_secret_permissions(&cfg(auth.clone()));
            assert_eq!(!warnings.is_empty(), warned, "{mode:o}: {warnings:?}");
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let w = check_secret_permissions(&cfg(auth)).join("");
        assert!(
            w.contains("private key") && w.contains("0644") && w.contains("chmod 600"),
            "{w}"
        );
        let pw = dir.path().join("pw");
        fs::write(&pw, "secret\n").unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o604)).unwrap();
        let w = check_secret_permissions(&cfg(Auth::PasswordFile(pw))).join("");
        assert!(w.contains("password file") && w.contains("readable"), "{w}");
        assert!(check_secret_permissions(&cfg(Auth::PasswordEnv("X".into()))).is_empty());
    }

    #[test]
    fn credentials_come_from_env_and_files_and_errors_name_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        fs::write(&pw, "s3cret-line\r\nsecond\n").unwrap();
        match load_credentials(&Auth::PasswordFile(pw.clone()))
            .unwrap()
            .login
        {
            Login::Password(secret) => assert_eq!(secret.0, "s3cret-line"),
            Login::Key { .. } => panic!("not a password"),
        }
        fs::write(&pw, "\nx\n").unwrap();
        assert!(matches!(
            load_credentials(&Auth::PasswordFile(pw)),
            Err(RemoteError::Auth { .. })
        ));
        let var = "SMSDROP_SFTP_UNIT_TEST_UNSET_VAR";
        match load_credentials(&Auth::PasswordEnv(var.into())) {
            Err(RemoteError::Auth { message }) => assert!(message.contains(var), "{message}"),
            other => panic!("{other:?}"),
        }
        let auth = Auth::Key {
            path: "/k".into(),
            passphrase_env: Some(var.into()),
        };
        assert!(matches!(
            load_credentials(&auth),
            Err(RemoteError::Auth { .. })
        ));
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
