//! The delivery sections: `[inbox]`, `[sftp]`, `[track]`, `[state]`, `[report]`, raw and validated.

use super::ConfigError;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInbox {
    pub dir: String,
    pub patterns: Vec<String>,
    pub watch: String,
    pub rescan_secs: i64,
    pub stable_secs: i64,
    pub done_marker: Option<String>,
    pub duplicate_days: i64,
    pub late_writes: String,
    pub late_write_secs: i64,
}

impl Default for RawInbox {
    fn default() -> Self {
        RawInbox {
            dir: "inbox".into(),
            patterns: ["*.csv", "*.txt", "*.xlsx", "*.xls", "*.ods"]
                .map(String::from)
                .to_vec(),
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
    pub port: i64,
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
    pub timeout_secs: i64,
    pub keepalive_secs: i64,
    pub strict_permissions: bool,
    pub connections: i64,
    pub pipelining: bool,
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
            connections: 1,
            pipelining: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrack {
    pub poll_secs: i64,
    pub give_up_after: String,
    pub verify_max_bytes: i64,
}

impl Default for RawTrack {
    fn default() -> Self {
        RawTrack {
            poll_secs: 30,
            give_up_after: "24h".into(),
            verify_max_bytes: 4 * 1024 * 1024,
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
    pub hook_timeout_secs: i64,
    pub log_format: String,
    pub log_level: String,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            dir: None,
            on_outcome: vec![],
            hook_timeout_secs: 60,
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

impl InboxConfig {
    /// The start of the duplicate guard's window at `now`: `duplicate_days` earlier. Never
    /// panics; saturates at the earliest time chrono represents.
    pub fn duplicate_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        i64::try_from(self.duplicate_days)
            .ok()
            .and_then(TimeDelta::try_days)
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Until when an input taken at `now` is watched for late writes. Never panics; saturates
    /// at the latest time chrono represents.
    pub fn late_watch_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        TimeDelta::from_std(self.late_write_grace)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
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
    /// The most SSH sessions open to the server at once (smsdrop needs one).
    pub connections: u32,
    /// Keep many SFTP requests in flight on a second channel (false: one at a time).
    pub pipelining: bool,
}

/// `[track]`: learning outcomes.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    pub poll: Duration,
    pub give_up_after: Duration,
    /// Files in `success/`/`error/` up to this size are read back and compared with what was
    /// sent (larger ones by size only); 0 compares sizes only.
    pub verify_max_bytes: u64,
}

impl TrackConfig {
    /// `give_up_after` for comparing chrono times; saturates instead of failing.
    pub fn give_up(&self) -> TimeDelta {
        TimeDelta::from_std(self.give_up_after).unwrap_or(TimeDelta::MAX)
    }
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
    /// How long one run of the hook may take before its process group is killed.
    pub hook_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Why a duration could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDuration {
    /// Not written as a duration.
    Syntax,
    /// Written as one, but too long for any clock.
    TooLong,
}

/// Parses `90s`, `30m`, `24h`, `7d`, `1h 30m` (humantime's syntax), or a bare number of
/// seconds.
///
/// # Errors
/// [`BadDuration`] saying whether the text is no duration or one too long.
pub fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| BadDuration::TooLong);
    }
    humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => BadDuration::TooLong,
        _ => BadDuration::Syntax,
    })
}

/// The range of `[track] give_up_after`, in seconds: one second to 30 days.
const GIVE_UP_AFTER_SECS: RangeInclusive<u64> = 1..=30 * 86_400;

/// `[track] give_up_after`: a duration (see [`parse_duration`]) from 1s to 30d.
fn validate_give_up_after(
    text: &str,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    let key = "track.give_up_after";
    let out_of_range = || bad(key, format!("{text:?} is out of range; use 1s to 30d"));
    match parse_duration(text) {
        Ok(d) if GIVE_UP_AFTER_SECS.contains(&d.as_secs()) => Ok(d),
        Ok(_) | Err(BadDuration::TooLong) => Err(out_of_range()),
        Err(BadDuration::Syntax) => Err(bad(
            key,
            format!("{text:?} is not a duration; use e.g. \"90m\", \"24h\", \"2d\""),
        )),
    }
}

/// Checks a whole-number key against its documented range. TOML integers may be negative, so
/// raw values are `i64`; `allowed` states the range with its unit, e.g. "1 to 86400 seconds".
/// Every range is small enough that no later arithmetic on an accepted value can overflow
/// (`Instant + secs`, `now - days` in chrono).
pub(super) fn ranged(
    bad: &dyn Fn(&str, String) -> ConfigError,
    key: &str,
    value: i64,
    range: RangeInclusive<i64>,
    allowed: &str,
) -> Result<u64, ConfigError> {
    match u64::try_from(value) {
        Ok(v) if range.contains(&value) => Ok(v),
        _ => Err(bad(key, format!("{value} is out of range; use {allowed}"))),
    }
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
    if i.patterns.is_empty() {
        return Err(bad(
            "inbox.patterns",
            "empty: nothing would ever be taken; give at least one, e.g. [\"*.csv\"]".into(),
        ));
    }
    let mut patterns = vec![];
    for p in &i.patterns {
        if p.is_empty() {
            return Err(bad(
                "inbox.patterns",
                "\"\" matches no file name; give a pattern such as \"*.csv\"".into(),
            ));
        }
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
    let rescan_secs = ranged(
        &bad,
        "inbox.rescan_secs",
        i.rescan_secs,
        1..=86_400,
        "1 to 86400 seconds",
    )?;
    let stable_secs = ranged(
        &bad,
        "inbox.stable_secs",
        i.stable_secs,
        0..=3600,
        "0 to 3600 seconds",
    )?;
    if let Some(m) = &i.done_marker {
        if m.is_empty() || m.contains('/') {
            return Err(bad(
                "inbox.done_marker",
                "use a suffix such as \".done\" (no '/')".into(),
            ));
        }
    }
    let duplicate_days = ranged(
        &bad,
        "inbox.duplicate_days",
        i.duplicate_days,
        0..=3650,
        "0 (off) to 3650 days",
    )?;
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
    let late_write_secs = ranged(
        &bad,
        "inbox.late_write_secs",
        i.late_write_secs,
        0..=86_400,
        "0 (no watch) to 86400 seconds",
    )?;
    let inbox = InboxConfig {
        dir: resolve(&i.dir),
        patterns,
        use_events,
        rescan: Duration::from_secs(rescan_secs),
        stable: Duration::from_secs(stable_secs),
        done_marker: i.done_marker,
        duplicate_days,
        late_writes,
        late_write_grace: Duration::from_secs(late_write_secs),
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
    let poll_secs = ranged(
        &bad,
        "track.poll_secs",
        t.poll_secs,
        1..=3600,
        "1 to 3600 seconds",
    )?;
    let give_up_after = validate_give_up_after(&t.give_up_after, &bad)?;
    let verify_max_bytes = ranged(
        &bad,
        "track.verify_max_bytes",
        t.verify_max_bytes,
        0..=64 * 1024 * 1024,
        "0 (sizes only) to 67108864 bytes",
    )?;
    let track = TrackConfig {
        poll: Duration::from_secs(poll_secs),
        give_up_after,
        verify_max_bytes,
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
    let hook_timeout = ranged(
        &bad,
        "report.hook_timeout_secs",
        r.hook_timeout_secs,
        1..=3600,
        "1 to 3600 seconds",
    )?;
    let report = ReportConfig {
        hook_timeout: Duration::from_secs(hook_timeout),
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
    let port = ranged(
        bad,
        "sftp.port",
        s.port,
        1..=65_535,
        "1 to 65535 (the gateway uses 2222)",
    )?;
    let port = u16::try_from(port).expect("checked against 1..=65535");
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
    let timeout_secs = ranged(
        bad,
        "sftp.timeout_secs",
        s.timeout_secs,
        1..=3600,
        "1 to 3600 seconds",
    )?;
    let keepalive_secs = ranged(
        bad,
        "sftp.keepalive_secs",
        s.keepalive_secs,
        0..=3600,
        "0 (off) to 3600 seconds",
    )?;
    let connections = ranged(bad, "sftp.connections", s.connections, 1..=16, "1 to 16")?;
    Ok(SftpConfig {
        host,
        port,
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
        timeout: Duration::from_secs(timeout_secs),
        keepalive: Duration::from_secs(keepalive_secs),
        strict_permissions: s.strict_permissions,
        connections: u32::try_from(connections).unwrap_or(1),
        pipelining: s.pipelining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "-1h", "soon", "5 parsecs"] {
            assert_eq!(parse_duration(bad), Err(BadDuration::Syntax), "{bad}");
        }
        for long in ["99999999999999999999", "99999999999999999999d"] {
            assert_eq!(parse_duration(long), Err(BadDuration::TooLong), "{long}");
        }
    }

    const SFTP: &str = "[sftp]\nhost = \"h\"\nusername = \"u\"\npassword_env = \"P\"\n";

    fn parse(text: &str) -> Result<super::super::Config, String> {
        super::super::Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn out_of_range_values_get_exact_messages() {
        let cases = [
            (
                "[inbox]\nduplicate_days = 4294967295",
                "key `inbox.duplicate_days`: 4294967295 is out of range; use 0 (off) to 3650 days",
            ),
            (
                "[track]\nverify_max_bytes = 67108865",
                "key `track.verify_max_bytes`: 67108865 is out of range; \
                 use 0 (sizes only) to 67108864 bytes",
            ),
            (
                "[inbox]\nrescan_secs = 0",
                "key `inbox.rescan_secs`: 0 is out of range; use 1 to 86400 seconds",
            ),
            (
                "[inbox]\nstable_secs = -1",
                "key `inbox.stable_secs`: -1 is out of range; use 0 to 3600 seconds",
            ),
            (
                "[inbox]\nlate_write_secs = 86401",
                "key `inbox.late_write_secs`: 86401 is out of range; \
                 use 0 (no watch) to 86400 seconds",
            ),
            (
                "[inbox]\npatterns = []",
                "key `inbox.patterns`: empty: nothing would ever be taken; \
                 give at least one, e.g. [\"*.csv\"]",
            ),
            (
                "[inbox]\npatterns = [\"*.csv\", \"\"]",
                "key `inbox.patterns`: \"\" matches no file name; give a pattern such as \"*.csv\"",
            ),
            (
                "[track]\npoll_secs = 9223372036854775807",
                "key `track.poll_secs`: 9223372036854775807 is out of range; use 1 to 3600 seconds",
            ),
            (
                "[track]\ngive_up_after = \"31d\"",
                "key `track.give_up_after`: \"31d\" is out of range; use 1s to 30d",
            ),
            (
                "[track]\ngive_up_after = \"0s\"",
                "key `track.give_up_after`: \"0s\" is out of range; use 1s to 30d",
            ),
            (
                "[track]\ngive_up_after = \"99999999999999999999d\"",
                "key `track.give_up_after`: \"99999999999999999999d\" is out of range; \
                 use 1s to 30d",
            ),
            (
                "[track]\ngive_up_after = \"soon\"",
                "key `track.give_up_after`: \"soon\" is not a duration; use e.g. \"90m\", \"24h\", \"2d\"",
            ),
            (
                "[batch]\nmax_rows_per_file = -5",
                "key `batch.max_rows_per_file`: -5 is out of range; use 1 to 1000000 rows",
            ),
            (
                "[input]\nnational_lengths = [10, 15]",
                "key `input.national_lengths`: 15 is out of range; use lengths from 4 to 14 digits",
            ),
            (
                "[input]\ncolumns = { text = 10001 }",
                "key `input.columns.text`: 10001 is out of range; \
                 use a position from 1 to 10000 (columns count from 1) or a header name",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse(text).unwrap_err(),
                format!("config file t.toml: {want}"),
                "{text}"
            );
        }
        let sftp_cases = [
            (
                "port = 70000",
                "key `sftp.port`: 70000 is out of range; use 1 to 65535 (the gateway uses 2222)",
            ),
            (
                "port = 0",
                "key `sftp.port`: 0 is out of range; use 1 to 65535 (the gateway uses 2222)",
            ),
            (
                "timeout_secs = 0",
                "key `sftp.timeout_secs`: 0 is out of range; use 1 to 3600 seconds",
            ),
            (
                "timeout_secs = 18446744073",
                "key `sftp.timeout_secs`: 18446744073 is out of range; use 1 to 3600 seconds",
            ),
            (
                "keepalive_secs = -9223372036854775808",
                "key `sftp.keepalive_secs`: -9223372036854775808 is out of range; \
                 use 0 (off) to 3600 seconds",
            ),
        ];
        for (line, want) in sftp_cases {
            assert_eq!(
                parse(&format!("{SFTP}{line}\n")).unwrap_err(),
                format!("config file t.toml: {want}"),
                "{line}"
            );
        }
    }

    #[test]
    fn range_ends_are_accepted() {
        for text in [
            "[inbox]\nrescan_secs = 1\nstable_secs = 0\nduplicate_days = 0\nlate_write_secs = 0",
            "[inbox]\nrescan_secs = 86400\nstable_secs = 3600\nduplicate_days = 3650\n\
             late_write_secs = 86400",
            "[track]\npoll_secs = 1\ngive_up_after = \"1s\"",
            "[track]\npoll_secs = 3600\ngive_up_after = \"30d\"",
            "[batch]\nmax_rows_per_file = 1\n[input]\nnational_lengths = [4, 14]",
            "[batch]\nmax_rows_per_file = 1000000\n[input]\ncolumns = { text = 10000 }",
        ] {
            parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        for line in [
            "port = 1\ntimeout_secs = 1\nkeepalive_secs = 0",
            "port = 65535\ntimeout_secs = 3600\nkeepalive_secs = 3600",
        ] {
            parse(&format!("{SFTP}{line}\n")).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn chrono_arithmetic_saturates() {
        let mut inbox = parse("").unwrap().inbox;
        let now = Utc::now();
        assert_eq!(
            inbox.duplicate_since(now),
            now - TimeDelta::try_days(7).unwrap()
        );
        assert_eq!(
            inbox.late_watch_until(now),
            now + TimeDelta::try_seconds(300).unwrap()
        );
        inbox.duplicate_days = u64::MAX;
        inbox.late_write_grace = Duration::MAX;
        assert_eq!(inbox.duplicate_since(now), DateTime::<Utc>::MIN_UTC);
        assert_eq!(inbox.late_watch_until(now), DateTime::<Utc>::MAX_UTC);
        let track = TrackConfig {
            poll: Duration::from_secs(1),
            give_up_after: Duration::MAX,
            verify_max_bytes: 0,
        };
        assert_eq!(track.give_up(), TimeDelta::MAX);
    }
}
