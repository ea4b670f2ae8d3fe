//! The gateway's status API, blocking (the engine is synchronous): `GET /v1/sms/status/list`
//! (statuses not returned before) and `POST /v1/sms/status/search` (by correlation id), with
//! the `username` and `authenticationtoken` headers.
//!
//! Polite whatever the settings: requests start at least [`MIN_SPACING`] apart (the gateway
//! allows one a second per address). After HTTP 429 or 5xx the caller waits [`StatusApi::backoff`]
//! (growing, with jitter; a `Retry-After` is honoured). The token is read from its variable or
//! file when the client is made and never appears in a log, an error or Debug output.

use crate::config::{StatusConfig, TokenSource};
use crate::journal::StatusUpdate;
use backon::BackoffBuilder;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The least time between two requests' starts.
pub const MIN_SPACING: Duration = Duration::from_millis(1100);
/// The most ids asked in one `search`.
pub const SEARCH_CHUNK: usize = 100;
/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Why a request got no statuses.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the gateway refused the credentials (HTTP {0}): check [status] username and the token in {1}")]
    Unauthorized(u16, String),
    #[error("the gateway asks to slow down (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the gateway had a problem (HTTP {0})")]
    Server(u16, Option<Duration>),
    #[error("unexpected answer HTTP {0}: {1}")]
    Http(u16, String),
    #[error("cannot reach the status API: {0}")]
    Transport(String),
    #[error("the status API's answer is not usable: {0}")]
    Body(String),
    #[error("stopping")]
    Stopped,
}

impl ApiError {
    /// Whether waiting longer than usual before the next request is called for.
    pub fn backs_off(&self) -> bool {
        !matches!(
            self,
            ApiError::Stopped | ApiError::Body(_) | ApiError::Http(..)
        )
    }
}

/// A client for the status API.
pub struct StatusApi {
    agent: ureq::Agent,
    base: String,
    username: String,
    token: String,
    token_source: String,
    last: Option<Instant>,
    backoff: backon::ExponentialBackoff,
    /// Requests sent (for tests and logs).
    pub requests: u64,
}

impl fmt::Debug for StatusApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusApi")
            .field("base", &self.base)
            .field("username", &self.username)
            .field("token", &"***")
            .finish()
    }
}

fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl StatusApi {
    /// A client for `cfg`'s API, its token loaded.
    ///
    /// # Errors
    /// A message saying what to set, when the username or token is missing or unreadable.
    pub fn new(cfg: &StatusConfig) -> Result<StatusApi, String> {
        let username = cfg.username.clone().ok_or("[status] username is not set")?;
        let (token, token_source) = match &cfg.token {
            Some(TokenSource::Env(var)) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => {
                    (v.trim().to_owned(), format!("environment variable {var}"))
                }
                _ => {
                    return Err(format!(
                        "the environment variable {var} ([status] token_env) is not set or empty; \
                         set it to the authentication token from the gateway's portal"
                    ))
                }
            },
            Some(TokenSource::File(p)) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    format!(
                        "cannot read the token file {} ([status] token_file): {e}",
                        p.display()
                    )
                })?;
                let first = text.lines().next().unwrap_or("").trim().to_owned();
                if first.is_empty() {
                    return Err(format!(
                        "the first line of {} is empty; write the portal's authentication token there",
                        p.display()
                    ));
                }
                (first, format!("file {}", p.display()))
            }
            None => return Err("[status] token_env or token_file is not set".into()),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .user_agent(concat!("smsdrop/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(StatusApi {
            agent,
            base: cfg.api_url.clone(),
            username,
            token,
            token_source,
            last: None,
            backoff: backoff(),
            requests: 0,
        })
    }

    /// Statuses not returned before (`GET list`).
    ///
    /// # Errors
    /// [`ApiError`]: the caller waits [`StatusApi::backoff`] when [`ApiError::backs_off`].
    pub fn list(&mut self, stop: &AtomicBool) -> Result<Vec<StatusUpdate>, ApiError> {
        self.pace(stop)?;
        let url = format!("{}/v1/sms/status/list", self.base);
        let r = self
            .agent
            .get(&url)
            .header("username", &self.username)
            .header("authenticationtoken", &self.token)
            .header("accept", "application/json")
            .call();
        self.answer(r)
    }

    /// Statuses of these correlation ids (`POST search`); at most [`SEARCH_CHUNK`] at once.
    ///
    /// # Errors
    /// As [`StatusApi::list`].
    pub fn search(
        &mut self,
        ids: &[String],
        stop: &AtomicBool,
    ) -> Result<Vec<StatusUpdate>, ApiError> {
        self.pace(stop)?;
        let url = format!("{}/v1/sms/status/search", self.base);
        let r = self
            .agent
            .post(&url)
            .header("username", &self.username)
            .header("authenticationtoken", &self.token)
            .header("accept", "application/json")
            .send_json(serde_json::json!({ "correlationIds": ids }));
        self.answer(r)
    }

    /// How long to wait after an error that backs off (growing; `Retry-After` when longer).
    pub fn backoff(&mut self, e: &ApiError) -> Duration {
        let next = self.backoff.next().unwrap_or(Duration::from_secs(300));
        match e {
            ApiError::Unauthorized(..) => Duration::from_secs(300),
            ApiError::RateLimited {
                retry_after: Some(r),
            }
            | ApiError::Server(_, Some(r)) => next.max(*r).min(Duration::from_secs(3600)),
            _ => next,
        }
    }

    /// Waits until a request may start, at least [`MIN_SPACING`] after the last one.
    fn pace(&mut self, stop: &AtomicBool) -> Result<(), ApiError> {
        if let Some(last) = self.last {
            let until = last + MIN_SPACING;
            while Instant::now() < until {
                if stop.load(Ordering::SeqCst) {
                    return Err(ApiError::Stopped);
                }
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                );
            }
        }
        self.last = Some(Instant::now());
        self.requests += 1;
        Ok(())
    }

    fn answer(
        &mut self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<StatusUpdate>, ApiError> {
        let mut resp = r.map_err(|e| ApiError::Transport(e.to_string()))?;
        let code = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        match code {
            200..=299 => {}
            401 | 403 => return Err(ApiError::Unauthorized(code, self.token_source.clone())),
            429 => return Err(ApiError::RateLimited { retry_after }),
            500..=599 => return Err(ApiError::Server(code, retry_after)),
            _ => {
                let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                return Err(ApiError::Http(code, text));
            }
        }
        self.backoff = backoff();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(vec![]);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::Body(e.to_string()))?;
        super::parse_statuses(&value).map_err(ApiError::Body)
    }
}
