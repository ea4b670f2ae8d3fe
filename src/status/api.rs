//! The gateway's status API, blocking (the engine is synchronous): `GET /v1/sms/status/list`
//! (statuses not returned before) and `POST /v1/sms/status/search` (by correlation id), with
//! the `username` and `authenticationtoken` headers.
//!
//! Polite whatever the settings: requests start at least [`MIN_SPACING`] apart (the gateway
//! allows one a second per address). After HTTP 429 or 5xx the caller waits [`StatusApi::backoff`]
//! (growing, with jitter; a `Retry-After` is honoured). The token is read from its variable or
//! file when the client is made and never appears in a log, an error or Debug output.
//!
//! No redirect is followed: the credentials go to `[status] api_url` and nowhere else; a redirect
//! is an error naming where it pointed. Answers are read as they arrive, keeping only the fields
//! used and handing statuses on in slices ([`super::SLICE`]), up to [`MAX_ANSWER`] bytes.

use crate::config::{StatusConfig, TokenSource};
use crate::journal::StatusUpdate;
use backon::BackoffBuilder;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The least time between two requests' starts.
pub const MIN_SPACING: Duration = Duration::from_millis(1100);
/// The most ids asked in one `search`.
pub const SEARCH_CHUNK: usize = 100;
/// Largest answer read (64 MiB); a longer one is an error after what came before it was
/// handed on. Memory does not grow with the answer (measured: a 63 MB `list` answer in
/// `tests/statuses.rs`).
pub const MAX_ANSWER: u64 = 64 * 1024 * 1024;

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
    #[error("the status API answered HTTP {code} redirecting to {location}; smsdrop follows no redirect (the credentials go to [status] api_url only): fix [status] api_url")]
    Redirect { code: u16, location: String },
    #[error("cannot reach the status API: {0}")]
    Transport(String),
    #[error("the status API's answer is not usable: {0}")]
    Body(String),
    /// The statuses could not be recorded (the sink said why, and logged it).
    #[error("the statuses could not be recorded: {0}")]
    NotRecorded(String),
    #[error("stopping")]
    Stopped,
}

impl ApiError {
    /// Whether waiting longer than usual before the next request is called for.
    pub fn backs_off(&self) -> bool {
        !matches!(
            self,
            ApiError::Stopped | ApiError::Body(_) | ApiError::Http(..) | ApiError::NotRecorded(_)
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
    zone: crate::config::Zone,
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
            .max_redirects(0)
            .user_agent(concat!("smsdrop/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(StatusApi {
            agent,
            base: cfg.api_url.clone(),
            username,
            token,
            token_source,
            zone: crate::config::Zone::Local,
            last: None,
            backoff: backoff(),
            requests: 0,
        })
    }

    /// Reads times without an offset in `zone` (`[batch] timezone`; the machine's by default).
    pub fn in_zone(mut self, zone: crate::config::Zone) -> StatusApi {
        self.zone = zone;
        self
    }

    /// Statuses not returned before (`GET list`), handed to `sink` in slices as they are read.
    ///
    /// # Errors
    /// [`ApiError`]: the caller waits [`StatusApi::backoff`] when [`ApiError::backs_off`].
    pub fn list(&mut self, stop: &AtomicBool, sink: &mut super::Sink<'_>) -> Result<(), ApiError> {
        self.pace(stop)?;
        let r = self.get("/v1/sms/status/list").call();
        self.answer(r, sink)
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
        let mut out = Vec::new();
        self.search_each(ids, stop, &mut |s| {
            out.extend(s);
            Ok(())
        })?;
        Ok(out)
    }

    /// As [`StatusApi::search`], handing the statuses to `sink` in slices as they are read.
    ///
    /// # Errors
    /// As [`StatusApi::list`].
    pub fn search_each(
        &mut self,
        ids: &[String],
        stop: &AtomicBool,
        sink: &mut super::Sink<'_>,
    ) -> Result<(), ApiError> {
        self.pace(stop)?;
        let url = format!("{}/v1/sms/status/search", self.base);
        let r = self
            .agent
            .post(&url)
            .header("username", &self.username)
            .header("authenticationtoken", &self.token)
            .header("accept", "application/json")
            .send_json(serde_json::json!({ "correlationIds": ids }));
        self.answer(r, sink)
    }

    /// A GET of `path` under the API's base, with the credentials' headers.
    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.agent
            .get(format!("{}{path}", self.base))
            .header("username", &self.username)
            .header("authenticationtoken", &self.token)
            .header("accept", "application/json")
    }

    /// How long to wait after an error that backs off (growing; `Retry-After` when longer).
    pub fn backoff(&mut self, e: &ApiError) -> Duration {
        let next = self.backoff.next().unwrap_or(Duration::from_secs(300));
        match e {
            ApiError::Unauthorized(..) | ApiError::Redirect { .. } => Duration::from_secs(300),
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

    /// Customers' replies not returned before (`GET /v1/sms/receive/list`, consuming: record
    /// what it returns before the next request), as the answer's JSON.
    ///
    /// # Errors
    /// As [`StatusApi::list`].
    pub fn replies_list(&mut self, stop: &AtomicBool) -> Result<serde_json::Value, ApiError> {
        self.pace(stop)?;
        let r = self.get("/v1/sms/receive/list").call();
        self.json_answer(r)
    }

    /// Replies received in `[start, end]` (`GET /v1/sms/receive/search`, ISO 8601 UTC; not
    /// consuming), as the answer's JSON.
    ///
    /// # Errors
    /// As [`StatusApi::list`].
    pub fn replies_search(
        &mut self,
        start: &str,
        end: &str,
        stop: &AtomicBool,
    ) -> Result<serde_json::Value, ApiError> {
        self.pace(stop)?;
        let r = self
            .get("/v1/sms/receive/search")
            .query("start", start)
            .query("end", end)
            .call();
        self.json_answer(r)
    }

    fn json_answer(
        &mut self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<serde_json::Value, ApiError> {
        let mut resp = self.checked(r)?;
        let over = std::cell::Cell::new(false);
        let body = Limited {
            inner: resp.body_mut().with_config().limit(u64::MAX).reader(),
            left: MAX_ANSWER,
            over: &over,
        };
        serde_json::from_reader(body).map_err(|e| {
            if over.get() {
                ApiError::Body(format!(
                    "the answer is longer than {} MiB, the most smsdrop reads",
                    MAX_ANSWER >> 20
                ))
            } else {
                ApiError::Body(format!("not JSON: {e}"))
            }
        })
    }

    fn answer(
        &mut self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        sink: &mut super::Sink<'_>,
    ) -> Result<(), ApiError> {
        let mut resp = self.checked(r)?;
        let over = std::cell::Cell::new(false);
        let body = Limited {
            inner: resp.body_mut().with_config().limit(u64::MAX).reader(),
            left: MAX_ANSWER,
            over: &over,
        };
        match super::read_statuses_from(body, self.zone, sink) {
            Ok(()) => Ok(()),
            Err(_) if over.get() => Err(ApiError::Body(format!(
                "the answer is longer than {} MiB, the most smsdrop reads; the statuses before \
                 that point were recorded, the rest are searched for later",
                MAX_ANSWER >> 20
            ))),
            Err(super::ReadError::Body(e)) => Err(ApiError::Body(e)),
            Err(super::ReadError::Sink(e)) => Err(ApiError::NotRecorded(e)),
        }
    }

    /// A 2xx answer, or the error its status says (redirects never followed).
    fn checked(
        &mut self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ApiError> {
        let mut resp = r.map_err(|e| ApiError::Transport(e.to_string()))?;
        let code = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_owned)
        };
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let location = header("location");
        if !(200..=299).contains(&code) {
            // Only the start of an error's body is read (shown in the error).
            let mut start = Vec::new();
            let _ = resp
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .reader()
                .take(4096)
                .read_to_end(&mut start);
            return Err(match code {
                300..=399 => ApiError::Redirect {
                    code,
                    location: location.map_or_else(
                        || "nowhere (no Location)".into(),
                        |l| l.chars().filter(|c| !c.is_control()).take(300).collect(),
                    ),
                },
                401 | 403 => ApiError::Unauthorized(code, self.token_source.clone()),
                429 => ApiError::RateLimited { retry_after },
                500..=599 => ApiError::Server(code, retry_after),
                _ => ApiError::Http(
                    code,
                    String::from_utf8_lossy(&start).chars().take(200).collect(),
                ),
            });
        }
        self.backoff = backoff();
        Ok(resp)
    }
}

/// A reader that fails once more than `left` bytes would be read, saying so in `over`.
struct Limited<'a, R> {
    inner: R,
    left: u64,
    over: &'a std::cell::Cell<bool>,
}

impl<R: std::io::Read> std::io::Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more says whether the answer goes on.
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => {
                    self.over.set(true);
                    Err(std::io::Error::other("the answer is too long"))
                }
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_over_the_limit_is_refused_and_one_at_it_is_not() {
        for (len, over) in [(5, false), (6, true), (4, false)] {
            let flag = std::cell::Cell::new(false);
            let mut r = Limited {
                inner: &vec![b' '; len][..],
                left: 5,
                over: &flag,
            };
            let mut out = Vec::new();
            assert_eq!(r.read_to_end(&mut out).is_err(), over, "{len}");
            assert_eq!(flag.get(), over, "{len}");
        }
    }

    #[test]
    fn a_redirect_names_where_it_pointed_and_what_to_fix() {
        let e = ApiError::Redirect {
            code: 307,
            location: "https://elsewhere.example/v1".into(),
        };
        let text = e.to_string();
        assert!(text.contains("307") && text.contains("https://elsewhere.example/v1"));
        assert!(text.contains("fix [status] api_url"), "{text}");
        assert!(e.backs_off());
    }
}
