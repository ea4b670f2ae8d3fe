//! `[status]`: message-level statuses from the gateway's HTTP interface (SPEC.md, "Per-message
//! statuses"): how they are fetched or received, when tracking gives up, and whether smsdrop
//! gives rows correlation ids of its own.

use super::delivery::{parse_duration, ranged};
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The gateway's production API.
pub const DEFAULT_API_URL: &str = "https://api-messaging.wavy.global";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStatus {
    pub mode: String,
    pub api_url: String,
    pub username: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub poll_secs: i64,
    pub search_after: String,
    pub give_up_after: String,
    pub correlation_ids: Option<String>,
    pub webhook_listen: Option<String>,
    pub webhook_path: String,
    pub webhook_token_env: Option<String>,
    pub no_dlr_carriers: Vec<String>,
}

impl Default for RawStatus {
    fn default() -> Self {
        RawStatus {
            mode: "off".into(),
            api_url: DEFAULT_API_URL.into(),
            username: None,
            token_env: None,
            token_file: None,
            poll_secs: 60,
            search_after: "15m".into(),
            give_up_after: "72h".into(),
            correlation_ids: None,
            webhook_listen: None,
            webhook_path: "/sms-status".into(),
            webhook_token_env: None,
            no_dlr_carriers: vec!["OI".into(), "SERCOMTEL".into()],
        }
    }
}

/// How statuses reach smsdrop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMode {
    /// No message tracking.
    Off,
    /// `GET list` every `poll_secs`, `POST search` for what stays pending.
    Poll,
    /// The gateway pushes to smsdrop's listener.
    Webhook,
    /// The listener, and `search` for what it missed.
    Both,
}

impl StatusMode {
    /// Whether the API is queried (and so needs credentials).
    pub fn queries(self) -> bool {
        matches!(self, StatusMode::Poll | StatusMode::Both)
    }

    /// Whether the webhook listener runs.
    pub fn listens(self) -> bool {
        matches!(self, StatusMode::Webhook | StatusMode::Both)
    }
}

/// Whose correlation ids go into the batch files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// The ERP's ids only; rows without one cannot be tracked.
    Keep,
    /// Rows without an id get one of smsdrop's.
    GenerateMissing,
    /// Every row gets smsdrop's id; the ERP's is kept in the reports.
    Generate,
}

impl IdMode {
    /// The name the config uses.
    pub fn as_str(self) -> &'static str {
        match self {
            IdMode::Keep => "keep",
            IdMode::GenerateMissing => "generate-missing",
            IdMode::Generate => "generate",
        }
    }
}

/// Where the API token comes from (never inline in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

/// `[status]`, validated.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub mode: StatusMode,
    /// Base URL of the status API, without a trailing `/`.
    pub api_url: String,
    pub username: Option<String>,
    pub token: Option<TokenSource>,
    /// How often `list` is asked (poll mode).
    pub poll: Duration,
    /// How long a sent message may stay without a final status before `search` asks for it (and
    /// asks again after as long).
    pub search_after: Duration,
    /// When a job's message tracking ends even with messages still pending.
    pub give_up_after: Duration,
    pub correlation_ids: IdMode,
    pub webhook_listen: Option<SocketAddr>,
    pub webhook_path: String,
    pub webhook_token_env: Option<String>,
    /// Carriers that send no delivery report (compared case-insensitively).
    pub no_dlr_carriers: Vec<String>,
    /// Whether `correlation_ids` was written in the config (not defaulted).
    pub correlation_ids_set: bool,
    /// Whether each sent row is recorded (message tracking, or replies to match).
    pub record_messages: bool,
}

impl StatusConfig {
    /// Whether message tracking is on.
    pub fn tracks(&self) -> bool {
        self.mode != StatusMode::Off
    }

    /// Whether `carrier` sends no delivery reports.
    pub fn no_dlr(&self, carrier: &str) -> bool {
        let c = carrier.trim();
        self.no_dlr_carriers
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(c))
    }
}

pub(super) fn validate(
    s: RawStatus,
    path: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<StatusConfig, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("status.{key}"),
        message,
    };
    let mode = match s.mode.as_str() {
        "off" => StatusMode::Off,
        "poll" => StatusMode::Poll,
        "webhook" => StatusMode::Webhook,
        "both" => StatusMode::Both,
        other => {
            return Err(bad(
                "mode",
                format!("{other:?} is not allowed; use \"off\", \"poll\", \"webhook\" or \"both\""),
            ))
        }
    };
    let correlation_ids_set = s.correlation_ids.is_some();
    let correlation_ids = match s.correlation_ids.as_deref() {
        None if mode == StatusMode::Off => IdMode::Keep,
        None => IdMode::GenerateMissing,
        Some("keep") => IdMode::Keep,
        Some("generate-missing") => IdMode::GenerateMissing,
        Some("generate") => IdMode::Generate,
        Some(other) => {
            return Err(bad(
                "correlation_ids",
                format!(
                    "{other:?} is not allowed; use \"keep\", \"generate-missing\" or \"generate\""
                ),
            ))
        }
    };
    let api_url = s.api_url.trim().trim_end_matches('/').to_owned();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(bad(
            "api_url",
            format!(
                "{:?} is not an http(s) URL; the default is {DEFAULT_API_URL}",
                s.api_url
            ),
        ));
    }
    let token = match (s.token_env, s.token_file) {
        (Some(v), None) if !v.is_empty() => Some(TokenSource::Env(v)),
        (None, Some(f)) if !f.is_empty() => Some(TokenSource::File(resolve(&f))),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(bad(
                "token_env",
                "set only one of token_env and token_file".into(),
            ))
        }
        _ => return Err(bad("token_env", "empty; name a variable or a file".into())),
    };
    let username = s.username.filter(|u| !u.trim().is_empty());
    if mode.queries() && (username.is_none() || token.is_none()) {
        return Err(bad(
            "username",
            format!(
                "mode {:?} queries the gateway's API: set username (the portal user or e-mail) \
                 and token_env or token_file (the portal's authentication token)",
                s.mode
            ),
        ));
    }
    let poll_secs = ranged(
        &bad,
        "poll_secs",
        s.poll_secs,
        1..=86_400,
        "1 to 86400 seconds",
    )?;
    let dur = |key: &str, v: &str, max_secs: u64| -> Result<Duration, ConfigError> {
        match parse_duration(v) {
            Ok(d) if d.as_secs() <= max_secs => Ok(d),
            _ => Err(bad(
                key,
                format!(
                    "{v:?} is not a duration from 0s to {}d; write e.g. \"90s\", \"15m\", \"72h\"",
                    max_secs / 86_400
                ),
            )),
        }
    };
    let search_after = dur("search_after", &s.search_after, 3 * 86_400)?;
    let give_up_after = dur("give_up_after", &s.give_up_after, 30 * 86_400)?;
    if give_up_after.is_zero() {
        return Err(bad(
            "give_up_after",
            "0 would end tracking before any status came; the gateway keeps statuses 72h".into(),
        ));
    }
    let webhook_listen = match s.webhook_listen.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            bad(
                "webhook_listen",
                format!("{a:?} is not an address and port such as \"127.0.0.1:8089\""),
            )
        })?),
    };
    if mode.listens() && webhook_listen.is_none() {
        return Err(bad(
            "webhook_listen",
            format!(
                "mode {:?} receives statuses: set the address to listen on, e.g. \
                 \"127.0.0.1:8089\" behind a reverse proxy, or \"0.0.0.0:8089\"",
                s.mode
            ),
        ));
    }
    if !s.webhook_path.starts_with('/')
        || s.webhook_path.contains(['?', '#', ' ', '{', '}', '*', ':'])
        || s.webhook_path.len() > 200
    {
        return Err(bad(
            "webhook_path",
            format!(
                "{:?} must be a path starting with '/' without '?', '#', spaces, braces, '*' or ':', e.g. \"/sms-status\"",
                s.webhook_path
            ),
        ));
    }
    let webhook_token_env = s.webhook_token_env.filter(|v| !v.is_empty());
    Ok(StatusConfig {
        mode,
        api_url,
        username,
        token,
        poll: Duration::from_secs(poll_secs),
        search_after,
        give_up_after,
        correlation_ids,
        webhook_listen,
        webhook_path: s.webhook_path,
        webhook_token_env,
        no_dlr_carriers: s.no_dlr_carriers,
        correlation_ids_set,
        record_messages: mode != StatusMode::Off,
    })
}
