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
    // libssh2 reports a connection lost while it waits for the server's answer with the same
    // codes as a refusal (PUBLICKEY_UNVERIFIED for a key, AUTHENTICATION_FAILED for
    // keyboard-interactive), told apart only by the message: every such one in userauth.c
    // starts "Waiting for" ("... USERAUTH response", "... publickey USERAUTH response",
    // "... keyboard USERAUTH response", "... password response"). That is the network, not a
    // refusal, which would wait five minutes for an operator.
    !e.message().starts_with("Waiting for")
        && matches!(
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

/// A request the server refused (the session is fine). SFTP v3 has no "disk full" status: a
/// refused write says only "failure", so the message says what it may mean.
pub(super) fn refusal(op: &'static str, path: &str, message: String) -> RemoteError {
    let message = if matches!(op, "write" | "close" | "create") {
        format!(
            "{message} (the server refused to store the file: its disk may be full or the \
             account over its quota; ask the gateway's support)"
        )
    } else {
        message
    };
    RemoteError::Op {
        op,
        path: path.to_owned(),
        message,
    }
}

pub(super) fn local_error(local: &Path, temp: &str, e: &io::Error) -> RemoteError {
    RemoteError::Op {
        op: "upload",
        path: temp.to_owned(),
        message: format!("reading {}: {e}", local.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_error(code: i32, message: &'static str) -> ssh2::Error {
        ssh2::Error::new(ErrorCode::Session(code), message)
    }

    #[test]
    fn a_login_left_unanswered_is_the_network_not_a_refusal() {
        // Every message libssh2's userauth.c gives when the answer never came.
        for (code, message) in [
            (ERROR_PUBLICKEY_UNVERIFIED, "Waiting for USERAUTH response"),
            (
                ERROR_PUBLICKEY_UNVERIFIED,
                "Waiting for publickey USERAUTH response",
            ),
            (
                ERROR_AUTHENTICATION_FAILED,
                "Waiting for keyboard USERAUTH response",
            ),
            (ERROR_AUTHENTICATION_FAILED, "Waiting for password response"),
        ] {
            assert!(!auth_refused(&session_error(code, message)), "{message}");
        }
    }

    #[test]
    fn a_server_answer_of_no_is_a_refusal() {
        for (code, message) in [
            (
                ERROR_AUTHENTICATION_FAILED,
                "Username/PublicKey combination invalid",
            ),
            (
                ERROR_AUTHENTICATION_FAILED,
                "Authentication failed (username/password)",
            ),
            (
                ERROR_AUTHENTICATION_FAILED,
                "Authentication failed (keyboard-interactive)",
            ),
            (
                ERROR_PUBLICKEY_UNVERIFIED,
                "Invalid signature for supplied public key, or bad username/public key combination",
            ),
            (
                ERROR_FILE,
                "Unable to extract public key from private key file",
            ),
        ] {
            assert!(auth_refused(&session_error(code, message)), "{message}");
        }
    }
}
