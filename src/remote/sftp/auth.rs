//! Credentials and login: the `Secret` type, loading the password or private key the config
//! names (environment variable or file) when connecting, the permission check on secret files,
//! and authenticating an SSH session by password, keyboard-interactive or public key.
//!
//! This file never logs a secret and must never put one in an error, a message or Debug output:
//! messages name where a secret comes from (variable, file), never its value. Secrets live in a
//! `Secret`, which prints `***` and overwrites its bytes when dropped.

use super::errors::{auth_refused, describe, ERROR_FILE};
use super::session::target;
use crate::config::{Auth, SftpConfig};
use crate::remote::RemoteError;
use ssh2::{ErrorCode, KeyboardInteractivePrompt, Prompt, Session};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Credentials loaded for one connect (Debug is safe: secrets print as `***`).
#[derive(Debug)]
pub(super) struct Credentials {
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

/// The secret in environment variable `var` (its value `value`), or why there is none: not set,
/// empty, or not UTF-8.
fn env_secret(
    var: &str,
    what: &str,
    value: Result<String, std::env::VarError>,
) -> Result<Secret, RemoteError> {
    let problem = match value {
        Ok(v) if !v.is_empty() => return Ok(Secret(v)),
        Ok(_) => "is empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err(RemoteError::Auth {
        message: format!("the environment variable {var} {problem}; set it to the {what}"),
    })
}

/// Reads the secret named by `auth` (environment variable or file); never returns it in an error.
pub(super) fn load_credentials(auth: &Auth) -> Result<Credentials, RemoteError> {
    let from_env = |var: &str, what: &str| env_secret(var, what, std::env::var(var));
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

pub(super) fn authenticate(
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
    // A login left unanswered (the connection dropped) is not a refusal: see auth_refused.
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

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "***");
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
        let message = |value| match env_secret("PW", "SFTP password", value) {
            Err(RemoteError::Auth { message }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(Err(std::env::VarError::NotPresent)),
            "the environment variable PW is not set; set it to the SFTP password"
        );
        assert_eq!(
            message(Ok(String::new())),
            "the environment variable PW is empty; set it to the SFTP password"
        );
        assert_eq!(env_secret("PW", "x", Ok("pw".into())).unwrap().0, "pw");
        let auth = Auth::Key {
            path: "/k".into(),
            passphrase_env: Some(var.into()),
        };
        assert!(matches!(
            load_credentials(&auth),
            Err(RemoteError::Auth { .. })
        ));
    }
}
