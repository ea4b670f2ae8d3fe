//! Host keys: reading the server's key and its `SHA256:` fingerprint, checking it against
//! `cfg.known_hosts`, recording a new one, and the messages for an unknown, a changed or a
//! revoked key.
//!
//! This file must never trust a key by itself: only [`accept_new_host_key`] writes to
//! known_hosts, only for a host with no entry yet, and it never replaces or removes a recorded
//! key. Nothing here sends credentials, and nothing may panic on what the server sends.
//!
//! libssh2 knows no known_hosts markers, so they are read here. A key on a `@revoked` line is
//! refused before anything else is looked at, even beside a plain line with the same key, and is
//! never recorded. The line's host patterns are not consulted: a revoked key is refused for every
//! host (OpenSSH only applies the line to hosts its patterns match; we are stricter).
//! `@cert-authority` lines (host certificates, which smsdrop does not use) and unknown markers
//! are skipped with a warning, never read as plain keys.

use super::errors::describe;
use super::session::{handshake, target};
use crate::config::SftpConfig;
use crate::remote::RemoteError;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
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
        fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(hash)),
    })
}

/// Checks `key` against `cfg.known_hosts`; a missing file means "not found". Lines libssh2
/// cannot parse are skipped with a warning (they can only turn a match into "not found").
///
/// # Errors
/// [`RemoteError::HostKey`] when a `@revoked` line names `key` (see [`revoked_host_key`]), or
/// known_hosts cannot be read.
pub(super) fn check_host_key(
    cfg: &SftpConfig,
    session: &Session,
    key: &HostKey,
) -> Result<HostKeyStatus, RemoteError> {
    let path = &cfg.known_hosts;
    let err = |what: String| RemoteError::HostKey {
        message: format!("known_hosts {}: {what}", path.display()),
    };
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    };
    if let Some(line) = revoked_at(&text, &key.key) {
        return Err(revoked_host_key(cfg, key, line));
    }
    let mut known = session.known_hosts().map_err(|e| err(describe(&e)))?;
    for (i, line) in text.lines().enumerate() {
        match known_hosts_line(line) {
            KnownHostsLine::Blank | KnownHostsLine::Revoked { .. } => {}
            KnownHostsLine::Plain => {
                if known.read_str(line, KnownHostFileKind::OpenSSH).is_err() {
                    tracing::warn!(file = %path.display(), line = i + 1, "known_hosts line not understood; skipped");
                }
            }
            KnownHostsLine::Unsupported(why) => {
                tracing::warn!(file = %path.display(), line = i + 1, "known_hosts line skipped: {why}");
            }
        }
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

/// One line of a known_hosts file, as OpenSSH's `hostkeys_foreach_file` splits it.
#[derive(Debug, PartialEq, Eq)]
enum KnownHostsLine<'a> {
    /// Empty, blanks only, or a `#` comment.
    Blank,
    /// No marker: `hostpatterns keytype base64 [comment]`, for libssh2 to read.
    Plain,
    /// `@revoked hostpatterns keytype base64 [comment]`.
    Revoked { key_type: &'a str, key: &'a str },
    /// A `@cert-authority` line, an unknown or repeated marker, or a truncated `@revoked` line:
    /// never a plain key. Says why.
    Unsupported(&'static str),
}

/// Splits one known_hosts line (without its newline). Fields are separated by spaces and tabs.
fn known_hosts_line(line: &str) -> KnownHostsLine<'_> {
    let blank = |c: char| c == ' ' || c == '\t';
    let rest = line.trim_start_matches(blank);
    if rest.is_empty() || rest.starts_with('#') {
        return KnownHostsLine::Blank;
    }
    if !rest.starts_with('@') {
        return KnownHostsLine::Plain;
    }
    let mut fields = rest.split(blank).filter(|f| !f.is_empty());
    match fields.next() {
        Some("@revoked") => {}
        Some("@cert-authority") => {
            return KnownHostsLine::Unsupported(
                "@cert-authority (host certificates) is not supported",
            )
        }
        _ => return KnownHostsLine::Unsupported("unknown marker"),
    }
    match (fields.next(), fields.next(), fields.next()) {
        (Some(hosts), _, _) if hosts.starts_with('@') => {
            KnownHostsLine::Unsupported("more than one marker")
        }
        (Some(_hosts), Some(key_type), Some(key))
            if !key_type.starts_with('#') && !key.starts_with('#') =>
        {
            KnownHostsLine::Revoked { key_type, key }
        }
        _ => KnownHostsLine::Unsupported("@revoked line without a key"),
    }
}

/// The number (from 1) of the first `@revoked` line in `text` naming the key `blob` (an SSH
/// public key blob, as the server sent it), whatever its host patterns.
///
/// OpenSSH accepts only canonical, padded base64 in known_hosts, so comparing the line's text
/// with the blob's padded encoding is comparing the keys; the line's key type must be the one
/// inside the blob, as OpenSSH requires.
fn revoked_at(text: &str, blob: &[u8]) -> Option<usize> {
    let blob_type = blob_key_type(blob)?;
    let encoded = STANDARD.encode(blob);
    text.lines()
        .position(|line| {
            matches!(
                known_hosts_line(line),
                KnownHostsLine::Revoked { key_type, key } if key == encoded && key_type == blob_type
            )
        })
        .map(|i| i + 1)
}

/// The key type name an SSH public key blob starts with (`ssh-ed25519`, ...).
fn blob_key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?);
    let name = blob.get(4..4usize.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
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

/// The server's key is on a `@revoked` line: refused for good, whatever else known_hosts says.
/// Never suggests `--accept-new-host-key`: only the gateway can fix this, with a new key.
fn revoked_host_key(cfg: &SftpConfig, key: &HostKey, line: usize) -> RemoteError {
    RemoteError::HostKey {
        message: format!(
            "the host key of {} is REVOKED: the server presents the {} key with fingerprint {}, \
             which {} line {line} marks @revoked; refusing to connect, and smsdrop never records \
             a revoked key. The key may be stolen and used to impersonate the server. Contact \
             the gateway's support: the server needs a new host key, whose fingerprint they must \
             confirm to you",
            target(cfg),
            key_type_name(key.kind),
            key.fingerprint,
            cfg.known_hosts.display(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An SSH public key blob: the type name, then `fill` as the key (ed25519-shaped).
    fn blob(key_type: &str, fill: u8) -> Vec<u8> {
        let mut b = Vec::new();
        for field in [key_type.as_bytes(), &[fill; 32][..]] {
            b.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
            b.extend_from_slice(field);
        }
        b
    }

    #[test]
    fn known_hosts_lines_are_split_like_openssh() {
        use KnownHostsLine::*;
        let revoked = |key_type, key| Revoked { key_type, key };
        let cases = [
            ("", Blank),
            (" \t ", Blank),
            ("# @revoked * ssh-ed25519 AAAA", Blank),
            ("\t# indented comment", Blank),
            ("host ssh-ed25519 AAAA", Plain),
            ("|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAA comment", Plain),
            (
                "@revoked * ssh-ed25519 AAAA",
                revoked("ssh-ed25519", "AAAA"),
            ),
            (
                "  @revoked\t|1|c2FsdA==|aGFzaA==  ssh-rsa\tBBBB= old key, do not use",
                revoked("ssh-rsa", "BBBB="),
            ),
            (
                "@revoked [gw.example]:2222,10.0.0.1 ssh-ed25519 CCCC",
                revoked("ssh-ed25519", "CCCC"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(known_hosts_line(line), want, "{line:?}");
        }
        for line in [
            "@cert-authority *.example ssh-ed25519 AAAA",
            "@revoked",
            "@revoked ",
            "@revoked * ssh-ed25519",
            "@revoked * ssh-ed25519 # comment",
            "@revoked * # ssh-ed25519 AAAA",
            "@revoked @cert-authority * ssh-ed25519 AAAA",
            "@revokedhost ssh-ed25519 AAAA",
            "@Revoked * ssh-ed25519 AAAA",
            "@ * ssh-ed25519 AAAA",
        ] {
            assert!(
                matches!(known_hosts_line(line), Unsupported(_)),
                "{line:?}: {:?}",
                known_hosts_line(line)
            );
        }
    }

    #[test]
    fn a_revoked_line_names_the_key_whatever_its_hosts() {
        let key = blob("ssh-ed25519", 7);
        let b64 = STANDARD.encode(&key);
        let other = STANDARD.encode(blob("ssh-ed25519", 8));
        assert_eq!(revoked_at("", &key), None);
        let plain = format!("[gw]:2222 ssh-ed25519 {b64}\n");
        assert_eq!(
            revoked_at(&plain, &key),
            None,
            "a plain line is no revocation"
        );
        let text = format!(
            "# comment\n\n   \n\
             [gw]:2222 ssh-ed25519 {b64}\n\
             @cert-authority * ssh-ed25519 {b64}\n\
             @revoked * ssh-ed25519 {other}\n\
             @revoked * ssh-rsa {b64}\n\
             @revoked * ssh-ed25519 {b64}x\n\
             @revoked |1|c2FsdA==|aGFzaA== ssh-ed25519 {b64} leaked\n\
             @revoked * ssh-ed25519 {b64}\n"
        );
        assert_eq!(revoked_at(&text, &key), Some(9), "{text}");
        // Other keys are not affected by it.
        assert_eq!(revoked_at(&text, &blob("ssh-ed25519", 9)), None);
        assert_eq!(revoked_at(&text, &blob("ssh-ed25519", 8)), Some(6));
        // Only the marker and the key decide: any host pattern, even one for another host.
        let elsewhere = format!("@revoked other.example ssh-ed25519 {b64}");
        assert_eq!(revoked_at(&elsewhere, &key), Some(1));
        // A @cert-authority line with the key is neither a revocation nor a plain entry.
        let ca = format!("@cert-authority * ssh-ed25519 {b64}");
        assert_eq!(revoked_at(&ca, &key), None);
        assert!(matches!(
            known_hosts_line(&ca),
            KnownHostsLine::Unsupported(_)
        ));
    }

    #[test]
    fn odd_key_blobs_are_never_revoked_and_never_panic() {
        let text = "@revoked * ssh-ed25519 AAAA\n@revoked * x AAAAAXg=\n";
        for blob in [
            &b""[..],
            b"\0\0\0",
            b"\0\0\0\0",
            b"\0\0\0\x05ab",
            b"\xff\xff\xff\xffab",
        ] {
            assert_eq!(blob_key_type(blob), None, "{blob:?}");
            assert_eq!(revoked_at(text, blob), None, "{blob:?}");
        }
        assert_eq!(blob_key_type(b"\0\0\0\x01x"), Some("x"));
        assert_eq!(revoked_at(text, b"\0\0\0\x01x"), Some(2));
    }
}
