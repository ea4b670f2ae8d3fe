//! `[replies]` and `[optout]`: the customers' answers (MOs) fetched or received from the
//! gateway, written to an outbox the ERP imports, and the opt-out list later exports are
//! checked against (SPEC.md, "Replies (MO)").

use super::delivery::{parse_duration, ranged};
use super::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReplies {
    pub mode: String,
    pub poll_secs: i64,
    pub reconcile: String,
    pub outbox: Option<String>,
    pub encoding: String,
    pub flush_secs: i64,
    pub webhook_path: String,
}

impl Default for RawReplies {
    fn default() -> Self {
        RawReplies {
            mode: "off".into(),
            poll_secs: 60,
            reconcile: "1h".into(),
            outbox: None,
            encoding: "utf-8".into(),
            flush_secs: 60,
            webhook_path: "/sms-reply".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOptout {
    pub keywords: Vec<String>,
    pub from_statuses: Vec<String>,
    pub apply: bool,
}

impl Default for RawOptout {
    fn default() -> Self {
        RawOptout {
            keywords: DEFAULT_KEYWORDS.iter().map(|k| (*k).to_owned()).collect(),
            from_statuses: vec!["DESTINATION_BLOCKED_BY_OPTOUT".into()],
            apply: true,
        }
    }
}

/// Brazil's usual opt-out words, and the English one.
pub const DEFAULT_KEYWORDS: [&str; 5] = ["SAIR", "PARE", "STOP", "CANCELAR", "DESCADASTRAR"];

/// How replies reach smsdrop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepliesMode {
    Off,
    /// `GET list` every `poll_secs`, `search` at start and every `reconcile`.
    Poll,
    /// The gateway pushes them to `webhook_path` on the status webhook's listener.
    Webhook,
    /// The push, and `search` for what it missed.
    Both,
}

impl RepliesMode {
    /// Whether the API is asked (`list` and/or `search`).
    pub fn queries(self) -> bool {
        matches!(self, RepliesMode::Poll | RepliesMode::Both)
    }

    /// Whether the webhook route is served.
    pub fn listens(self) -> bool {
        matches!(self, RepliesMode::Webhook | RepliesMode::Both)
    }
}

/// The outbox files' character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxEncoding {
    Utf8,
    Windows1252,
}

/// `[replies]`, validated.
#[derive(Debug, Clone)]
pub struct RepliesConfig {
    pub mode: RepliesMode,
    pub poll: Duration,
    pub reconcile: Duration,
    /// Where reply files are written (required unless `mode = "off"`).
    pub outbox: PathBuf,
    pub encoding: OutboxEncoding,
    pub flush: Duration,
    pub webhook_path: String,
}

/// `[optout]`, validated.
#[derive(Debug, Clone)]
pub struct OptoutConfig {
    /// Folded (upper case, no accents) keywords.
    pub keywords: Vec<String>,
    /// Status codes that add the number to the list (204, and 203 when named).
    pub from_statuses: Vec<i64>,
    /// Whether later exports skip opted-out numbers.
    pub apply: bool,
}

impl OptoutConfig {
    /// Whether a reply's text opts out: trimmed, trailing punctuation removed, case and accents
    /// ignored, equal to a keyword.
    pub fn is_opt_out(&self, text: &str) -> bool {
        let t = fold(text.trim().trim_end_matches(|c: char| {
            c.is_ascii_punctuation() || c.is_whitespace() || "¡¿…".contains(c)
        }));
        !t.is_empty() && self.keywords.contains(&t)
    }
}

/// Upper case without accents (NFD, combining marks dropped), inner whitespace kept.
pub fn fold(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_uppercase)
        .collect()
}

pub(super) fn validate_replies(
    r: RawReplies,
    path: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<RepliesConfig, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("replies.{key}"),
        message,
    };
    let mode = match r.mode.as_str() {
        "off" => RepliesMode::Off,
        "poll" => RepliesMode::Poll,
        "webhook" => RepliesMode::Webhook,
        "both" => RepliesMode::Both,
        other => {
            return Err(bad(
                "mode",
                format!("{other:?} is not allowed; use \"off\", \"poll\", \"webhook\" or \"both\""),
            ))
        }
    };
    let poll_secs = ranged(
        &bad,
        "poll_secs",
        r.poll_secs,
        1..=86_400,
        "1 to 86400 seconds",
    )?;
    let flush_secs = ranged(
        &bad,
        "flush_secs",
        r.flush_secs,
        1..=86_400,
        "1 to 86400 seconds",
    )?;
    let reconcile = match parse_duration(&r.reconcile) {
        Ok(d) if (60..=5 * 86_400).contains(&d.as_secs()) => d,
        _ => {
            return Err(bad(
                "reconcile",
                format!(
                    "{:?} is not a duration from 1m to 5d (the gateway keeps replies 5 days); \
                     write e.g. \"1h\"",
                    r.reconcile
                ),
            ))
        }
    };
    let outbox = match r.outbox.as_deref().map(str::trim) {
        Some(o) if !o.is_empty() => resolve(o),
        _ if mode == RepliesMode::Off => PathBuf::new(),
        _ => {
            return Err(bad(
                "outbox",
                "replies are fetched: set the folder the ERP imports reply files from, e.g. \
                 outbox = \"/srv/erp/replies\""
                    .into(),
            ))
        }
    };
    let encoding = match r.encoding.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => OutboxEncoding::Utf8,
        "windows-1252" | "cp1252" => OutboxEncoding::Windows1252,
        other => {
            return Err(bad(
                "encoding",
                format!("{other:?} is not allowed; use \"utf-8\" or \"windows-1252\""),
            ))
        }
    };
    if !r.webhook_path.starts_with('/')
        || r.webhook_path.contains(['?', '#', ' ', '{', '}', '*', ':'])
        || r.webhook_path.len() > 200
    {
        return Err(bad(
            "webhook_path",
            format!(
                "{:?} must be a path starting with '/' without '?', '#', spaces, braces, '*' or ':', e.g. \"/sms-reply\"",
                r.webhook_path
            ),
        ));
    }
    Ok(RepliesConfig {
        mode,
        poll: Duration::from_secs(poll_secs),
        reconcile,
        outbox,
        encoding,
        flush: Duration::from_secs(flush_secs),
        webhook_path: r.webhook_path,
    })
}

pub(super) fn validate_optout(o: RawOptout, path: &Path) -> Result<OptoutConfig, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("optout.{key}"),
        message,
    };
    let mut keywords = vec![];
    for k in &o.keywords {
        let f = fold(k.trim());
        if f.is_empty() {
            return Err(bad("keywords", "a keyword cannot be empty".into()));
        }
        keywords.push(f);
    }
    let mut from_statuses = vec![];
    for s in &o.from_statuses {
        let code = match s.trim().to_ascii_uppercase().as_str() {
            "DESTINATION_BLOCKED_BY_OPTOUT" | "204" => 204,
            "BLACKLISTED" | "203" => 203,
            other => {
                return Err(bad(
                    "from_statuses",
                    format!(
                        "{other:?} is not allowed; use \"DESTINATION_BLOCKED_BY_OPTOUT\" and/or \
                         \"BLACKLISTED\""
                    ),
                ))
            }
        };
        from_statuses.push(code);
    }
    Ok(OptoutConfig {
        keywords,
        from_statuses,
        apply: o.apply,
    })
}
