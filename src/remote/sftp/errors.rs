//! Classifying ssh2 (libssh2) errors: which ones mean the session is gone, which mean "no such
//! file", which mean the server refused the login, and how to word any of them in a message.
//!
//! Owns the libssh2 codes smsdrop acts on. Everything here is a pure function of the error: it
//! must never drop a session, retry, log or touch the network; the callers decide what a
//! classification means for them.

use crate::remote::RemoteError;
use ssh2::ErrorCode;
use std::io;
use std::path::Path;

// libssh2 codes we act on (libssh2-sys is not a direct dependency, so they are copied here).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_NO_CONNECTION: i32 = 6;
const FX_CONNECTION_LOST: i32 = 7;
const FX_NO_SUCH_PATH: i32 = 10;
const ERROR_PASSWORD_EXPIRED: i32 = -15;
pub(super) const ERROR_FILE: i32 = -16;
const ERROR_AUTHENTICATION_FAILED: i32 = -18;
const ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;
const ERROR_SFTP_PROTOCOL: i32 = -31;
const ERROR_INVAL: i32 = -34;
const ERROR_KEYFILE_AUTH_FAILED: i32 = -48;

pub(super) fn auth_refused(e: &ssh2::Error) -> bool {
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
pub(super) fn session_lost(e: &ssh2::Error) -> bool {
    match e.code() {
        ErrorCode::SFTP(c) => c == FX_NO_CONNECTION || c == FX_CONNECTION_LOST,
        ErrorCode::Session(c) => !matches!(c, ERROR_SFTP_PROTOCOL | ERROR_INVAL),
    }
}

pub(super) fn no_such_file(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH))
}

pub(super) fn describe(e: &ssh2::Error) -> String {
    match e.code() {
        ErrorCode::SFTP(c) => format!("{} (SFTP status {c})", e.message()),
        ErrorCode::Session(c) => format!("{} (libssh2 error {c})", e.message()),
    }
}

pub(super) fn local_error(local: &Path, temp: &str, e: &io::Error) -> RemoteError {
    RemoteError::Op {
        op: "upload",
        path: temp.to_owned(),
        message: format!("reading {}: {e}", local.display()),
    }
}
