//! The delivery sections: `[inbox]`, `[sftp]`, `[track]`, `[state]`, `[report]`, raw and validated.

use super::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInbox {
    pub dir: String,
    pub patterns: Vec<String>,
    pub watch: String,
    pub rescan_secs: u64,
    pub stable_secs: u64,
    pub done_marker: Option<String>,
    pub duplicate_days: u64,
    pub late_writes: String,
    pub late_write_secs: u64,
}

impl Default for RawInbox {
    fn default() -> Self {
        RawInbox {
            dir: "inbox".into(),
            patterns: vec!["*.csv".into(), "*.txt".into()],
            watch: "notify".into(),
            rescan_secs: 30,
            stable_secs: 5,
            done_marker: None,
            duplicate_days: 7,
            late_writes: "send".into(),
            late_write_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSftp {
    pub host: Option<String>,
    pub port: u16,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub private_key: Option<String>,
    pub passphrase_env: Option<String>,
    pub known_hosts: Option<String>,
    pub upload_dir: String,
    pub success_dir: String,
    pub error_dir: String,
    pub temp_dir: Option<String>,
    pub timeout_secs: u64,
    pub keepalive_secs: u64,
    pub strict_permissions: bool,
}

impl Default for RawSftp {
    fn default() -> Self {
        RawSftp {
            host: None,
            port: 2222,
            username: None,
            password_env: None,
            password_file: None,
            private_key: None,
            passphrase_env: None,
            known_hosts: None,
            upload_dir: "upload".into(),
            success_dir: "success".into(),
            error_dir: "error".into(),
            temp_dir: None,
            timeout_secs: 30,
            keepalive_secs: 60,
            strict_permissions: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrack {
    pub poll_secs: u64,
    pub give_up_after: String,
}

impl Default for RawTrack {
    fn default() -> Self {
        RawTrack {
            poll_secs: 30,
            give_up_after: "24h".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub dir: String,
    pub archive_dir: Option<String>,
    pub rejected_dir: Option<String>,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            dir: "state".into(),
            archive_dir: None,
            rejected_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReport {
    pub dir: Option<String>,
    pub on_outcome: Vec<String>,
    pub log_format: String,
    pub log_level: String,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            dir: None,
            on_outcome: vec![],
            log_format: "text".into(),
            log_level: "info".into(),
        }
    }
}

/// `[inbox]`: where ERP files arrive and when one is taken.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    pub dir: PathBuf,
    /// Glob patterns a file name must match (`*.csv`).
    pub patterns: Vec<glob::Pattern>,
    /// File events as hints (true) or the periodic rescan alone (false: network shares).
    pub use_events: bool,
    pub rescan: Duration,
    /// How long size and mtime must stay unchanged.
    pub stable: Duration,
    /// A file is taken only once `NAME<marker>` exists.
    pub done_marker: Option<String>,
    /// Days a content hash blocks a repeat; 0 turns the guard off.
    pub duplicate_days: u64,
    /// What to do with rows written to an input after it was taken.
    pub late_writes: LateWrites,
    /// How long a taken input is watched for late writes; zero turns the watch off.
    pub late_write_grace: Duration,
}

/// `[inbox] late_writes`: rows the ERP wrote after smsdrop took the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateWrites {
    /// Send them as a continuation job of the same input (exactly once), and report it.
    Send,
    /// Only report them (log error, report, status, hook).
    Report,
}

/// How smsdrop logs in to the SFTP server. Secrets are read when needed, never stored here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Password from this environment variable.
    PasswordEnv(String),
    /// Password from the first line of this file.
    PasswordFile(PathBuf),
    /// Private key file, with an optional passphrase from an environment variable.
    Key {
        path: PathBuf,
        passphrase_env: Option<String>,
    },
}

/// `[sftp]`: the gateway's server.
#[derive(Debug, Clone)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Auth,
    pub known_hosts: PathBuf,
    pub upload_dir: String,
    pub success_dir: String,
    pub error_dir: String,
    /// Folder for temporary upload names; `None`: the upload folder with a `.NAME.part` name.
    pub temp_dir: Option<String>,
    pub timeout: Duration,
    pub keepalive: Duration,
    /// Refuse to start when a secret file is readable by group or others.
    pub strict_permissions: bool,
}

/// `[track]`: learning outcomes.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    pub poll: Duration,
    pub give_up_after: Duration,
}

/// `[state]`: the journal and where inputs end up.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub dir: PathBuf,
    pub archive_dir: PathBuf,
    pub rejected_dir: PathBuf,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[report]`: reports, the outcome hook, logs.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub dir: PathBuf,
    /// Command and arguments run once per finished job.
    pub on_outcome: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Parses `90s`, `30m`, `24h`, `7d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

pub(super) struct Raw {
    pub inbox: RawInbox,
    pub sftp: Option<RawSftp>,
    pub track: RawTrack,
    pub state: RawState,
    pub report: RawReport,
}

pub(super) struct Validated {
    pub inbox: InboxConfig,
    pub sftp: Option<SftpConfig>,
    pub track: TrackConfig,
    pub state: StateConfig,
    pub report: ReportConfig,
}

pub(super) fn validate(raw: Raw, path: &Path) -> Result<Validated, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    // Relative paths are taken from the config file's folder, so a config works from anywhere.
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && path.exists());
    let resolve = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        }
    };
    let i = raw.inbox;
    let mut patterns = vec![];
    for p in &i.patterns {
        patterns
            .push(glob::Pattern::new(p).map_err(|e| bad("inbox.patterns", format!("{p:?}: {e}")))?);
    }
    let use_events = match i.watch.as_str() {
        "notify" => true,
        "poll" => false,
        other => {
            return Err(bad(
                "inbox.watch",
                format!("{other:?} is not allowed; use \"notify\" or \"poll\""),
            ))
        }
    };
    if i.rescan_secs == 0 || i.rescan_secs > 86_400 {
        return Err(bad("inbox.rescan_secs", "use 1 to 86400 seconds".into()));
    }
    if i.stable_secs > 3600 {
        return Err(bad("inbox.stable_secs", "use 0 to 3600 seconds".into()));
    }
    if let Some(m) = &i.done_marker {
        if m.is_empty() || m.contains('/') {
            return Err(bad(
                "inbox.done_marker",
                "use a suffix such as \".done\" (no '/')".into(),
            ));
        }
    }
    if i.duplicate_days > 3650 {
        return Err(bad(
            "inbox.duplicate_days",
            "use 0 (off) to 3650 days".into(),
        ));
    }
    let late_writes = match i.late_writes.as_str() {
        "send" => LateWrites::Send,
        "report" => LateWrites::Report,
        other => {
            return Err(bad(
                "inbox.late_writes",
                format!("{other:?} is not allowed; use \"send\" or \"report\""),
            ))
        }
    };
    if i.late_write_secs > 86_400 {
        return Err(bad(
            "inbox.late_write_secs",
            "use 0 (no watch) to 86400 seconds".into(),
        ));
    }
    let inbox = InboxConfig {
        dir: resolve(&i.dir),
        patterns,
        use_events,
        rescan: Duration::from_secs(i.rescan_secs),
        stable: Duration::from_secs(i.stable_secs),
        done_marker: i.done_marker,
        duplicate_days: i.duplicate_days,
        late_writes,
        late_write_grace: Duration::from_secs(i.late_write_secs),
    };

    let st = raw.state;
    let state_dir = resolve(&st.dir);
    let state = StateConfig {
        archive_dir: st
            .archive_dir
            .as_deref()
            .map_or_else(|| state_dir.join("archive"), resolve),
        rejected_dir: st
            .rejected_dir
            .as_deref()
            .map_or_else(|| state_dir.join("rejected"), resolve),
        dir: state_dir.clone(),
    };

    let sftp = match raw.sftp {
        None => None,
        Some(s) => Some(validate_sftp(s, &state_dir, &bad, &resolve)?),
    };

    let t = raw.track;
    if t.poll_secs == 0 {
        return Err(bad("track.poll_secs", "use at least 1 second".into()));
    }
    let give_up_after = parse_duration(&t.give_up_after)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            bad(
                "track.give_up_after",
                format!(
                    "{:?} is not a duration; use e.g. \"90m\", \"24h\", \"2d\"",
                    t.give_up_after
                ),
            )
        })?;
    let track = TrackConfig {
        poll: Duration::from_secs(t.poll_secs),
        give_up_after,
    };

    let r = raw.report;
    let log_format = match r.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(bad(
                "report.log_format",
                format!("{other:?} is not allowed; use \"text\" or \"json\""),
            ))
        }
    };
    if !["error", "warn", "info", "debug", "trace"].contains(&r.log_level.as_str()) {
        return Err(bad(
            "report.log_level",
            "use error, warn, info, debug or trace".into(),
        ));
    }
    if r.on_outcome.first().is_some_and(|c| c.is_empty()) {
        return Err(bad(
            "report.on_outcome",
            "the first element is the command to run".into(),
        ));
    }
    let report = ReportConfig {
        dir: r
            .dir
            .as_deref()
            .map_or_else(|| state_dir.join("reports"), resolve),
        on_outcome: r.on_outcome,
        log_format,
        log_level: r.log_level,
    };
    Ok(Validated {
        inbox,
        sftp,
        track,
        state,
        report,
    })
}

fn validate_sftp(
    s: RawSftp,
    state_dir: &Path,
    bad: &dyn Fn(&str, String) -> ConfigError,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<SftpConfig, ConfigError> {
    let host = s.host.filter(|h| !h.trim().is_empty()).ok_or_else(|| {
        bad(
            "sftp.host",
            "missing: the gateway's SFTP host name, e.g. \"ftp-messaging.wavy.global\"".into(),
        )
    })?;
    let username = s.username.filter(|u| !u.is_empty()).ok_or_else(|| {
        bad(
            "sftp.username",
            "missing: the SFTP user name the gateway issued".into(),
        )
    })?;
    if s.port == 0 {
        return Err(bad(
            "sftp.port",
            "use 1 to 65535 (the gateway uses 2222)".into(),
        ));
    }
    let auth = match (s.password_env, s.password_file, s.private_key) {
        (Some(env), None, None) => Auth::PasswordEnv(env),
        (None, Some(file), None) => Auth::PasswordFile(resolve(&file)),
        (None, None, Some(key)) => Auth::Key {
            path: resolve(&key),
            passphrase_env: s.passphrase_env,
        },
        (None, None, None) => {
            return Err(bad(
                "sftp.password_env",
                "no credentials: set one of password_env, password_file or private_key \
                 (passwords are never written in this file)"
                    .into(),
            ))
        }
        _ => {
            return Err(bad(
                "sftp.password_env",
                "set only one of password_env, password_file and private_key".into(),
            ))
        }
    };
    for (key, dir) in [
        ("sftp.upload_dir", &s.upload_dir),
        ("sftp.success_dir", &s.success_dir),
        ("sftp.error_dir", &s.error_dir),
    ] {
        if dir.is_empty() || dir.split('/').any(|c| c == "..") {
            return Err(bad(
                key,
                format!("{dir:?} is not a usable folder: give a name such as \"upload\""),
            ));
        }
    }
    if s.timeout_secs == 0 {
        return Err(bad("sftp.timeout_secs", "use at least 1 second".into()));
    }
    Ok(SftpConfig {
        host,
        port: s.port,
        username,
        auth,
        known_hosts: s
            .known_hosts
            .as_deref()
            .map_or_else(|| state_dir.join("known_hosts"), resolve),
        upload_dir: s.upload_dir.trim_end_matches('/').to_owned(),
        success_dir: s.success_dir.trim_end_matches('/').to_owned(),
        error_dir: s.error_dir.trim_end_matches('/').to_owned(),
        temp_dir: s.temp_dir.map(|t| t.trim_end_matches('/').to_owned()),
        timeout: Duration::from_secs(s.timeout_secs),
        keepalive: Duration::from_secs(s.keepalive_secs),
        strict_permissions: s.strict_permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        for bad in ["", "h", "1w", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
