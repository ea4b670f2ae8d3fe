//! The connection: TCP connect to each resolved address under the timeout, the SSH handshake
//! with smsdrop's cipher preferences and keepalive, and the live session (`Conn`, `Link`), whose
//! socket is shut down when it is dropped so libssh2's cleanup cannot hang.
//!
//! `connect` fixes the order of a login: load the credentials, verify the host key, and only
//! then authenticate. This file must never send a credential before the host key matched, never
//! trust an unknown or changed key, and never make a blocking call without a timeout.

use super::auth::{authenticate, load_credentials};
use super::errors::describe;
use super::hostkey::{changed_host_key, check_host_key, host_key, unknown_host_key, HostKeyStatus};
use super::pipe::Pipe;
use crate::config::SftpConfig;
use crate::remote::RemoteError;
use ssh2::{Channel, MethodType, Session, Sftp};
use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Ciphers in order of preference. libssh2 1.11 encrypts AES (GCM and CTR) one 16-byte block per
/// call but chacha20-poly1305 a whole packet at a time: measured on loopback, chacha20 moved a
/// 200 MB batch faster (benches/deliver.sh). libssh2 drops names it lacks.
const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr,\
                       aes256-gcm@openssh.com,aes256-ctr";
const CIPHERS_NO_GCM: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";

/// The live session: SFTP channel, SSH session and a handle on its socket.
pub(super) struct Conn {
    pub(super) sftp: Sftp,
    pub(super) link: Link,
    /// The second, pipelined SFTP channel for uploads (`pipe.rs`), opened on first use.
    pub(super) pipe: PipeSlot,
}

/// Whether this session has a pipelined channel.
pub(super) enum PipeSlot {
    Untried,
    Open(Pipe<Channel>),
    /// The server refused a second channel: uploads go one request at a time on this session.
    Refused,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Cut the socket first so libssh2's cleanup fails fast instead of waiting for a timeout.
        let _ = self.link.socket.shutdown(Shutdown::Both);
    }
}

/// An SSH session after the handshake, plus a clone of its socket.
pub(super) struct Link {
    pub(super) session: Session,
    socket: TcpStream,
}

impl Link {
    pub(super) fn close(self) {
        let _ = self.session.disconnect(None, "smsdrop done", None);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Opens a verified, authenticated session with its SFTP channel.
pub(super) fn connect(cfg: &SftpConfig) -> Result<Conn, RemoteError> {
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
    Ok(Conn {
        sftp,
        link,
        pipe: PipeSlot::Untried,
    })
}

/// TCP connect (each resolved address, under the timeout), then the SSH handshake.
pub(super) fn handshake(cfg: &SftpConfig) -> Result<Link, RemoteError> {
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

pub(super) fn target(cfg: &SftpConfig) -> String {
    format!("{}:{}", cfg.host, cfg.port)
}
