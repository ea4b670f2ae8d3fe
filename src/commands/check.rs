//! `smsdrop check`: one line per check of what delivery needs: config, credentials, host key,
//! login, remote folders, local folders and free disk.

use crate::config::{Auth, Config};
use crate::remote::sftp::{
    accept_new_host_key, check_secret_permissions, host_key_status, HostKeyStatus, SftpRemote,
};
use crate::remote::Remote;
use crate::Outcome;
use std::io::Write;
use std::path::Path;

/// The credentials line for `password_env = "VAR"`, given the variable's value: not set, empty
/// and not UTF-8 are told apart.
fn password_env(var: &str, value: Result<String, std::env::VarError>) -> Result<String, String> {
    let problem = match value {
        Ok(p) if !p.is_empty() => return Ok(format!("password from ${var}")),
        Ok(_) => "is empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err(format!(
        "environment variable {var} {problem} (it holds the SFTP password)"
    ))
}

/// Runs every check and prints `ok`, `WARN` or `FAIL` lines.
pub fn run(cfg: &Config, accept_new_host_key_flag: bool) -> Outcome {
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    let mut say = |status: &str, what: &str, detail: String| {
        failed |= status == "FAIL";
        let _ = writeln!(out, "{status:<4}  {what}: {detail}");
    };
    say("ok", "config", cfg.source.display().to_string());
    for (what, dir) in [("inbox", &cfg.inbox.dir), ("state", &cfg.state.dir)] {
        match std::fs::create_dir_all(dir).and_then(|()| writable(dir)) {
            Ok(()) => say("ok", what, format!("{} is writable", dir.display())),
            Err(e) => say("FAIL", what, format!("{}: {e}", dir.display())),
        }
    }
    journal_check(cfg, &mut say);
    match free_bytes(&cfg.state.dir) {
        Some(free) if free < 100 << 20 => say(
            "WARN",
            "disk",
            format!(
                "only {} MiB free under {}",
                free >> 20,
                cfg.state.dir.display()
            ),
        ),
        Some(free) => say(
            "ok",
            "disk",
            format!("{} MiB free under {}", free >> 20, cfg.state.dir.display()),
        ),
        None => say("WARN", "disk", "free space unknown".into()),
    }
    status_check(cfg, &mut say);
    schedule_check(cfg, &mut say);
    if cfg.replies.mode != crate::config::RepliesMode::Off {
        let dir = &cfg.replies.outbox;
        match std::fs::create_dir_all(dir).and_then(|()| writable(dir)) {
            Ok(()) => say(
                "ok",
                "replies",
                format!(
                    "mode {:?}; outbox {} is writable",
                    cfg.replies.mode,
                    dir.display()
                ),
            ),
            Err(e) => say("FAIL", "replies", format!("outbox {}: {e}", dir.display())),
        }
    }
    let Some(sftp) = &cfg.sftp else {
        say(
            "FAIL",
            "sftp",
            "no [sftp] section: set host, username and credentials".into(),
        );
        return Outcome::Failure;
    };
    let creds = match &sftp.auth {
        Auth::PasswordEnv(v) => password_env(v, std::env::var(v)),
        Auth::PasswordFile(p) => std::fs::metadata(p)
            .map(|_| format!("password file {}", p.display()))
            .map_err(|e| format!("password file {}: {e}", p.display())),
        Auth::Key { path, .. } => std::fs::metadata(path)
            .map(|_| format!("private key {}", path.display()))
            .map_err(|e| format!("private key {}: {e}", path.display())),
    };
    match creds {
        Ok(d) => say("ok", "credentials", d),
        Err(d) => say("FAIL", "credentials", d),
    }
    for w in check_secret_permissions(sftp) {
        say(
            if sftp.strict_permissions {
                "FAIL"
            } else {
                "WARN"
            },
            "permissions",
            w,
        );
    }
    let target = format!("{}:{}", sftp.host, sftp.port);
    let hk = if accept_new_host_key_flag {
        accept_new_host_key(sftp).map(|f| (f, HostKeyStatus::Match))
    } else {
        host_key_status(sftp)
    };
    match hk {
        Ok((fp, HostKeyStatus::Match)) => say("ok", "host key", format!("{target} {fp} matches {}", sftp.known_hosts.display())),
        Ok((fp, HostKeyStatus::NotFound)) => say(
            "FAIL",
            "host key",
            format!("{target} offers {fp}, not in {}; confirm it with the gateway, then run `smsdrop check --accept-new-host-key`", sftp.known_hosts.display()),
        ),
        Ok((fp, HostKeyStatus::Mismatch)) => say(
            "FAIL",
            "host key",
            format!("{target} now offers {fp}, which differs from {}: refusing (possible man-in-the-middle)", sftp.known_hosts.display()),
        ),
        Err(e) => say("FAIL", "host key", e.to_string()),
    }
    let mut remote = SftpRemote::new(sftp.clone());
    match remote.connect() {
        Ok(()) => say("ok", "login", format!("{} at {target}", sftp.username)),
        Err(e) => {
            say("FAIL", "login", e.to_string());
            return Outcome::Failure;
        }
    }
    let home = remote.list(".").unwrap_or_default();
    for dir in [&sftp.upload_dir, &sftp.success_dir, &sftp.error_dir] {
        match remote.list(dir) {
            Ok(names) => say(
                "ok",
                "remote folder",
                format!("{dir}/ ({} entries)", names.len()),
            ),
            Err(e) => {
                let other = home
                    .iter()
                    .find(|h| h.eq_ignore_ascii_case(dir) && *h != dir);
                let hint = other
                    .map(|o| format!("; the server has {o:?}: set it in [sftp]"))
                    .unwrap_or_default();
                say("FAIL", "remote folder", format!("{e}{hint}"));
            }
        }
    }
    if failed {
        Outcome::Failure
    } else {
        Outcome::Ok
    }
}

fn writable(dir: &Path) -> std::io::Result<()> {
    tempfile::tempfile_in(dir).map(drop)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The journal: readable, intact (SQLite's quick check), of a schema this smsdrop knows; or
/// missing while an earlier journal's files are still in the state folder.
fn journal_check(cfg: &Config, say: &mut dyn FnMut(&str, &str, String)) {
    let path = cfg.state.dir.join("journal.db");
    if !path.exists() {
        let left = crate::spool::leftovers(cfg);
        if left.is_empty() {
            say(
                "ok",
                "journal",
                format!("{} will be created", path.display()),
            );
        } else {
            say(
                "FAIL",
                "journal",
                format!(
                    "{} is missing but the state folder holds {}; run `smsdrop recover`",
                    path.display(),
                    left.describe()
                ),
            );
        }
        return;
    }
    match crate::journal::Journal::open_read_only(&cfg.state.dir) {
        Ok(Some(j)) => match j.quick_check() {
            Ok(r) if r == "ok" => say("ok", "journal", format!("{} is intact", path.display())),
            Ok(r) => say(
                "FAIL",
                "journal",
                format!(
                    "{} is damaged ({r}); stop smsdrop and restore it from a backup",
                    path.display()
                ),
            ),
            Err(e) => say("FAIL", "journal", format!("{e}; restore it from a backup")),
        },
        Ok(None) => say(
            "ok",
            "journal",
            format!("{} is being created or upgraded", path.display()),
        ),
        Err(e) => say("FAIL", "journal", format!("{e}; restore it from a backup")),
    }
}

/// `[status]`: the webhook token is set, and the API takes the credentials (one `search` for an
/// id that does not exist: it costs nothing and, unlike `list`, takes no status from the daemon).
fn status_check(cfg: &Config, say: &mut dyn FnMut(&str, &str, String)) {
    let s = &cfg.status;
    if !s.tracks() {
        return;
    }
    if let Some(var) = &s.webhook_token_env {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => say("ok", "webhook token", format!("from ${var}")),
            _ => say(
                "FAIL",
                "webhook token",
                format!(
                    "environment variable {var} is not set or empty ([status] webhook_token_env)"
                ),
            ),
        }
    }
    if !s.mode.queries() {
        return;
    }
    let mut api = match crate::status::api::StatusApi::new(s) {
        Ok(api) => api,
        Err(e) => return say("FAIL", "status API", e),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    match api.search(&["smsdrop-check".to_owned()], &stop) {
        Ok(_) => say(
            "ok",
            "status API",
            format!(
                "{} accepts user {:?}",
                s.api_url,
                s.username.as_deref().unwrap_or("")
            ),
        ),
        Err(e @ crate::status::api::ApiError::RateLimited { .. }) => say(
            "WARN",
            "status API",
            format!("{}: {e}; the credentials were not refused", s.api_url),
        ),
        Err(e) => say("FAIL", "status API", format!("{}: {e}", s.api_url)),
    }
}

/// One line per send window: open or closed now, its next opening and closing.
fn schedule_check(cfg: &Config, say: &mut dyn FnMut(&str, &str, String)) {
    let now = chrono::Utc::now();
    let tz = cfg.batch.zone.tz();
    for w in crate::hold::windows_now(cfg, now) {
        let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or_else(
                || "never".to_owned(),
                |t| {
                    t.with_timezone(&tz)
                        .format("%a %Y-%m-%d %H:%M %Z")
                        .to_string()
                },
            )
        };
        let detail = format!(
            "{} for {}: {}; next opening {}, next closing {} ({})",
            w.schedule,
            w.subaccounts.join(", "),
            if w.open { "open now" } else { "closed now" },
            if w.open {
                "now".to_owned()
            } else {
                when(w.next_open)
            },
            when(w.next_close),
            tz.name()
        );
        let status = if w.next_open.is_none() { "WARN" } else { "ok" };
        say(status, "send window", detail);
    }
    if cfg.schedule.max_hold.is_some() {
        say(
            "ok",
            "send window",
            format!(
                "a batch held longer than {} is not sent (max_hold)",
                cfg.schedule.max_hold_text
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::password_env;
    use std::env::VarError;

    #[test]
    fn an_empty_variable_is_not_reported_as_unset() {
        assert_eq!(
            password_env("PW", Err(VarError::NotPresent)).unwrap_err(),
            "environment variable PW is not set (it holds the SFTP password)"
        );
        assert_eq!(
            password_env("PW", Ok(String::new())).unwrap_err(),
            "environment variable PW is empty (it holds the SFTP password)"
        );
        assert_eq!(
            password_env("PW", Ok("x".into())).unwrap(),
            "password from $PW"
        );
    }
}
