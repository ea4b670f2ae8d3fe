//! Host keys: reading the server's key and its `SHA256:` fingerprint, checking it against
//! `cfg.known_hosts`, recording a new one, and the messages for an unknown or a changed key.
//!
//! This file must never trust a key by itself: only [`accept_new_host_key`] writes to
//! known_hosts, only for a host with no entry yet, and it never replaces or removes a recorded
//! key. Nothing here sends credentials, and nothing may panic on what the server sends.

use super::errors::describe;
use super::session::{handshake, target};
use crate::config::SftpConfig;
use crate::remote::RemoteError;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

/// The server's host key, with its type and fingerprint.
pub(super) struct HostKey {
    key: Vec<u8>,
    kind: HostKeyType,
    fingerprint: String,
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

pub(super) fn host_key(cfg: &SftpConfig, session: &Session) -> Result<HostKey, RemoteError> {
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
pub(super) fn check_host_key(
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

pub(super) fn unknown_host_key(cfg: &SftpConfig, key: &HostKey) -> RemoteError {
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

pub(super) fn changed_host_key(cfg: &SftpConfig, key: &HostKey) -> RemoteError {
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

/// The host's name in known_hosts: `[host]:port` unless the port is 22.
fn host_entry(cfg: &SftpConfig) -> String {
    if cfg.port == 22 {
        cfg.host.clone()
    } else {
        format!("[{}]:{}", cfg.host, cfg.port)
    }
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
}
