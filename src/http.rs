//! The embedded HTTP stack: axum routers served by one small tokio runtime on its own threads,
//! beside the synchronous engine. The message-status webhook (`status::webhook`) is served
//! here; routers that share an address are merged onto one listener.
//!
//! No client can starve it, nor the engine beside it (DESIGN.md invariant 13): open
//! connections are capped per listener ([`Limits::max_connections`]; one over the cap is
//! closed at once, and the cap is lowered to leave the engine its descriptors), a
//! request's header must arrive within [`Limits::header_timeout`] (hyper's timer; a half-sent
//! header or an idle connection is closed), a body within [`Limits::body_timeout`]
//! (tower-http), and handlers check a token before they read a body. Accept errors such as
//! "too many open files" pause the loop instead of spinning.
//!
//! Addresses are bound before [`HttpServer::start`] returns, so a port in use is an error at
//! startup, not a silent failure later. Dropping the server stops it (requests in flight get a
//! few seconds to finish).

use axum::http::{header, HeaderMap};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// What one client may take of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once on each listener; one more is closed at once.
    pub max_connections: usize,
    /// A request's header (and an idle connection's next one) must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Descriptors kept for the engine whatever HTTP clients do: inbox scans, the journal and its
/// WAL, the SFTP session, archive moves, hooks, a `send` handing over files.
pub const ENGINE_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open files to the hard one (as systemd's `LimitNOFILE=` or
/// `ulimit -Hn` allows), then returns `max` lowered, when it must be, so that HTTP connections
/// can never take the [`ENGINE_DESCRIPTORS`] the engine needs.
fn fit_to_descriptors(max: usize, listeners: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(soft) = limit.current else {
        return max; // unlimited
    };
    // The listeners, the runtime's own descriptors and stdio come on top of the reserve; each
    // listener has its own cap.
    let room = soft.saturating_sub(ENGINE_DESCRIPTORS + 32).max(8) / listeners.max(1) as u64;
    let fitted = max.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1);
    if fitted < max {
        tracing::warn!(
            open_files = soft,
            max_connections = fitted,
            "HTTP: only {soft} open files are allowed (ulimit -n), so at most {fitted} HTTP \
             connections per listener (not {max}) are served, keeping {ENGINE_DESCRIPTORS} for \
             the inbox, the journal and SFTP. Raise LimitNOFILE= in the unit (the packaged unit \
             sets 65536)"
        );
    }
    fitted
}

/// How long requests in flight may finish once the server is stopped.
const DRAIN: Duration = Duration::from_secs(5);
/// The largest request header read (hyper's read buffer).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The pause after an accept error (out of descriptors, aborted handshake).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A running HTTP server.
pub struct HttpServer {
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds every address and serves its routers until dropped, within `limits`.
    ///
    /// # Errors
    /// When an address cannot be bound (in use, not local, no permission) or the runtime cannot
    /// start; the message names the address.
    pub fn start(routes: Vec<(SocketAddr, Router)>, limits: Limits) -> io::Result<HttpServer> {
        let mut merged: Vec<(SocketAddr, Router)> = vec![];
        for (addr, router) in routes {
            match merged.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, r)) => *r = std::mem::take(r).merge(router),
                None => merged.push((addr, router)),
            }
        }
        let limits = Limits {
            max_connections: fit_to_descriptors(limits.max_connections, merged.len()),
            ..limits
        };
        let mut listeners = vec![];
        for (addr, router) in merged {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                limits.body_timeout,
            ));
            listeners.push((l, router));
        }
        let addrs = listeners
            .iter()
            .map(|(l, _)| l.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("smsdrop-http")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("smsdrop-http".into())
            .spawn(move || {
                rt.block_on(serve_all(listeners, limits, stopped));
                // Connections still open after the drain end with the runtime.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        for a in &addrs {
            tracing::info!(listen = %a, max_connections = limits.max_connections, "HTTP listening");
        }
        Ok(HttpServer {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound addresses (a port 0 resolved), in the order first given (the sandbox binds
    /// port 0).
    #[cfg(feature = "sandbox")]
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves every listener until `stopped`, then lets requests in flight finish for [`DRAIN`].
async fn serve_all(
    listeners: Vec<(std::net::TcpListener, Router)>,
    limits: Limits,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut tasks = vec![];
    for (l, router) in listeners {
        let l = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "HTTP listener unusable");
                continue;
            }
        };
        // Each listener its own places: a flood on the public webhook leaves /healthz served.
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let accept = accept_loop(l, router, limits, permits, graceful.clone());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = accept => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    }
}

async fn accept_loop(
    l: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    permits: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A request's header in at most 64 KiB (hyper's default is about 400 KiB): every
        // connection at the cap holding a full buffer stays far below the engine's memory.
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    loop {
        let stream = match l.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was taken: never fatal,
                // never a busy loop, never a flood of log lines.
                static LAST: AtomicI64 = AtomicI64::new(0);
                if once_a_minute(&LAST) {
                    tracing::warn!(error = %e, "HTTP: cannot accept a connection; pausing (logged at most once a minute)");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused(limits.max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Whether a warning last logged at `*last` (ms) may be logged again: at most one a minute, so
/// a flood of bad requests cannot flood the log.
fn once_a_minute(last: &AtomicI64) -> bool {
    let now = chrono::Utc::now().timestamp_millis();
    let before = last.load(Ordering::Relaxed);
    now - before >= 60_000
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn refused(max: usize) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    ::metrics::counter!("smsdrop_http_connections_refused_total").increment(1);
    if once_a_minute(&LAST) {
        tracing::warn!(
            max_connections = max,
            "HTTP: {max} connections are open; closing new ones until some end ([http] \
             max_connections; smsdrop_http_connections_refused_total counts them)"
        );
    }
}

/// A request refused for a missing or wrong token (401): counted in
/// `smsdrop_http_unauthorized_total{endpoint}`, logged at most once a minute per endpoint kind.
pub fn unauthorized(endpoint: &'static str, why: &str) {
    static LAST_OPS: AtomicI64 = AtomicI64::new(0);
    static LAST_WEBHOOK: AtomicI64 = AtomicI64::new(0);
    ::metrics::counter!("smsdrop_http_unauthorized_total", "endpoint" => endpoint).increment(1);
    let last = if endpoint == "webhook" {
        &LAST_WEBHOOK
    } else {
        &LAST_OPS
    };
    if once_a_minute(last) {
        tracing::warn!(
            endpoint,
            "HTTP: refused a request with {why} (401; smsdrop_http_unauthorized_total counts \
             them, this line is logged at most once a minute)"
        );
    }
}

/// Compares a secret a client sent with the one configured, in time independent of where
/// they differ (`subtle`).
pub fn same_secret(given: &str, want: &str) -> bool {
    given.as_bytes().ct_eq(want.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's case does not matter
/// (RFC 7235).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Warns when `addr` is reachable from other machines and nothing guards it.
pub fn warn_if_open(addr: SocketAddr, guarded: bool, what: &str, key: &str) {
    if !guarded && !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            "{what} listens on {addr}, reachable from other machines, without a token: anyone who \
             finds it can use it. Set {key}, or listen on 127.0.0.1 behind a proxy"
        );
    }
}

/// A pushed body must arrive within this, however it trickles (the stack also cuts a body that
/// sends nothing for its `body_timeout`).
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The webhook token's rule (`[status] webhook_token_env`): `None` when the request may go on,
/// else the answer (401), given before one byte of the body is read.
pub(crate) fn refused_token(
    want: Option<&str>,
    query: &Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Option<(axum::http::StatusCode, String)> {
    let want = want?;
    let given = query
        .as_ref()
        .ok()
        .and_then(|axum::extract::Query(q)| q.get("token"));
    if given.is_some_and(|g| same_secret(g, want)) {
        return None;
    }
    let why = if given.is_some() {
        "a wrong ?token="
    } else {
        "no ?token="
    };
    unauthorized("webhook", why);
    Some((
        axum::http::StatusCode::UNAUTHORIZED,
        "missing or wrong ?token=\n".into(),
    ))
}

/// A pushed body, at most `max` bytes within [`BODY_DEADLINE`]; else the answer.
pub(crate) async fn read_body(
    body: axum::body::Body,
    what: &str,
    max: usize,
) -> Result<axum::body::Bytes, (axum::http::StatusCode, String)> {
    let read = tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, max));
    match read.await {
        Ok(Ok(b)) => Ok(b),
        Err(_) => {
            tracing::warn!("{what} webhook: refused a body that took over {BODY_DEADLINE:?}");
            Err((
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n".into(),
            ))
        }
        Ok(Err(e)) => {
            let (status, why) = body_refusal(&e, max);
            tracing::warn!(
                status = status.as_u16(),
                "{what} webhook: refused a body: {why}"
            );
            Err((status, format!("{why}\n")))
        }
    }
}

/// The token the webhook wants, read from `[status] webhook_token_env`.
///
/// # Errors
/// When the variable is named but not set.
pub(crate) fn webhook_token(cfg: &crate::config::StatusConfig) -> Result<Option<String>, String> {
    match &cfg.webhook_token_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
            _ => Err(format!(
                "[status] webhook_token_env names {var}, which is not set (or empty); set it \
                 to the secret the gateway's webhook URL carries as ?token=..."
            )),
        },
        None => Ok(None),
    }
}

/// Why a body could not be read: too long (413), too slow (408), or cut off (400).
fn body_refusal(e: &axum::Error, max: usize) -> (axum::http::StatusCode, String) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {max} bytes"),
            );
        }
        if c.is::<tower_http::timeout::TimeoutError>() {
            return (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time".into(),
            );
        }
        cause = c.source();
    }
    (
        axum::http::StatusCode::BAD_REQUEST,
        format!("the body could not be read: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("abc", None),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&h), want, "{value:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3creT"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("", "s3cret"));
    }
}
