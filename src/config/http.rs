//! `[http]`: the embedded operations endpoint (metrics, health, status page).

use super::delivery::ranged;
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub token_env: Option<String>,
    pub show_messages: bool,
    pub health_round_secs: i64,
    pub refresh_secs: i64,
    pub max_connections: i64,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: None,
            token_env: None,
            show_messages: false,
            health_round_secs: 300,
            refresh_secs: 30,
            max_connections: 256,
        }
    }
}

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where the endpoint listens; off when `None`.
    pub listen: Option<SocketAddr>,
    /// When set, every path but `/healthz` needs `Authorization: Bearer <its value>`.
    pub token_env: Option<String>,
    /// Whether the status page shows message texts.
    pub show_messages: bool,
    /// `/healthz` answers 503 when the engine has not completed a round this long.
    pub health_round: Duration,
    /// How often the status page reloads itself.
    pub refresh: Duration,
    /// Connections open at once on each listener (webhook, operations); more are closed at
    /// once, so no client can take the descriptors the engine needs.
    pub max_connections: usize,
}

pub(super) fn validate(h: RawHttp, path: &Path) -> Result<HttpConfig, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("http.{key}"),
        message,
    };
    let listen = match h.listen.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            bad(
                "listen",
                format!("{a:?} is not an address and port such as \"127.0.0.1:9187\""),
            )
        })?),
    };
    let health = ranged(
        &bad,
        "health_round_secs",
        h.health_round_secs,
        10..=86_400,
        "10 to 86400 seconds",
    )?;
    let refresh = ranged(
        &bad,
        "refresh_secs",
        h.refresh_secs,
        0..=3600,
        "0 (never) to 3600 seconds",
    )?;
    let max_connections = ranged(
        &bad,
        "max_connections",
        h.max_connections,
        1..=16_384,
        "1 to 16384 connections",
    )?;
    Ok(HttpConfig {
        listen,
        max_connections: max_connections as usize,
        token_env: h.token_env.filter(|v| !v.is_empty()),
        show_messages: h.show_messages,
        health_round: Duration::from_secs(health),
        refresh: Duration::from_secs(refresh),
    })
}
