//! Operations over HTTP (`[http] listen`), on the embedded stack ([`crate::http`]):
//! - `GET /metrics`: Prometheus text ([`metrics`]);
//! - `GET /healthz`: `ok` while the engine completes rounds; 503 with the reason when it has not
//!   for `[http] health_round_secs`, or the journal cannot be written;
//! - `GET /` and `GET /jobs/{id}`: the status page ([`page`]).
//!
//! Pages read the journal through their own read-only connection, so a slow page never stalls
//! the engine. With `[http] token_env`, every path but `/healthz` needs
//! `Authorization: Bearer <token>`.

pub mod metrics;
pub mod page;

use crate::config::{Config, Zone};
use crate::journal::Journal;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{TimeZone, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the engine tells the endpoint about itself.
#[derive(Debug, Default)]
pub struct Health {
    last_round_ms: AtomicI64,
    rounds: AtomicU64,
    journal_problem: Mutex<Option<String>>,
}

impl Health {
    /// A round begins: a journal problem is reported until a round gets through without one.
    pub fn round_starts(&self) {
        *self
            .journal_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The engine completed a round. Each is logged at debug level, numbered from 1: the
    /// evidence a test waits for before it asserts that a round did *not* do something.
    pub fn round_done(&self) {
        let now = Utc::now().timestamp_millis();
        self.last_round_ms.store(now, Ordering::SeqCst);
        metrics::round_done(now);
        let round = self.rounds.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(round, "round done");
    }

    /// The journal could not be written.
    pub fn journal_failed(&self, why: &str) {
        *self
            .journal_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }

    /// `Ok` when healthy, else why not.
    pub fn check(&self, max_round: std::time::Duration) -> Result<(), String> {
        if let Some(p) = self
            .journal_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(format!("the journal cannot be written: {p}"));
        }
        let round = self.last_round_ms.load(Ordering::SeqCst);
        let progress = crate::liveness::last_progress_ms();
        if round == 0 && progress == 0 {
            return Err("starting: the engine has not completed a round yet".into());
        }
        let last = round.max(progress);
        let age = (Utc::now().timestamp_millis() - last) / 1000;
        if age > max_round.as_secs() as i64 {
            return Err(format!(
                "the engine has not completed a round for {age}s (limit {}s): is an upload \
                 stuck, or the process hung? See the log",
                max_round.as_secs()
            ));
        }
        Ok(())
    }
}

/// What the handlers share.
pub(crate) struct Ops {
    pub cfg: Config,
    pub health: Arc<Health>,
    token: Option<String>,
    state_dir: PathBuf,
}

impl Ops {
    /// Runs `f` on a read-only connection of its own (a slow page never holds up `/metrics`,
    /// and neither holds up the engine: WAL readers do not block the writer).
    pub(crate) fn with_journal<T>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, crate::journal::JournalError>,
    ) -> Result<T, String> {
        match Journal::open_read_only(&self.state_dir).map_err(|e| e.to_string())? {
            Some(journal) => f(&journal).map_err(|e| e.to_string()),
            None => Err("the journal is not there yet".into()),
        }
    }
}

/// When today began in the batch zone (what "today" means in file names), in ms.
pub fn today_start_ms(zone: &Zone, now: chrono::DateTime<Utc>) -> i64 {
    let midnight = zone
        .day_of(now)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists");
    let start = match zone {
        Zone::Local => chrono::Local
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc)),
        Zone::Named(tz) => tz
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc)),
    };
    start.unwrap_or(now).timestamp_millis()
}

/// The operations router.
///
/// # Errors
/// When `[http] token_env` names an unset variable.
pub fn router(cfg: &Config, health: Arc<Health>) -> Result<Router, String> {
    let token = match &cfg.http.token_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                return Err(format!(
                    "[http] token_env names {var}, which is not set (or empty); set it to the \
                     token clients send as `Authorization: Bearer ...`"
                ))
            }
        },
        None => None,
    };
    if let Some(addr) = cfg.http.listen {
        crate::http::warn_if_open(addr, token.is_some(), "[http] listen", "[http] token_env");
    }
    metrics::handle();
    let ops = Arc::new(Ops {
        cfg: cfg.clone(),
        health,
        token,
        state_dir: cfg.state.dir.clone(),
    });
    let guarded = Router::new()
        .route("/", get(page::index))
        .route("/jobs/{id}", get(page::job))
        .route("/metrics", get(metrics_route))
        .layer(middleware::from_fn_with_state(ops.clone(), bearer));
    Ok(guarded.route("/healthz", get(healthz)).with_state(ops))
}

async fn bearer(State(ops): State<Arc<Ops>>, req: Request, next: Next) -> Response {
    if let Some(want) = &ops.token {
        let given = crate::http::bearer_token(req.headers());
        if !given.is_some_and(|g| crate::http::same_secret(g, want)) {
            crate::http::unauthorized("ops", "no or a wrong bearer token");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "this endpoint needs Authorization: Bearer <token> ([http] token_env)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn healthz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.health.check(ops.cfg.http.health_round) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics_route(State(ops): State<Arc<Ops>>) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let Some(handle) = metrics::handle() else {
            return Err("the metrics recorder is not available".to_owned());
        };
        let now = Utc::now();
        let today = today_start_ms(&ops.cfg.batch.zone, now);
        ops.with_journal(|j| metrics::render(handle, &ops.cfg, j, today, now.timestamp_millis()))
    })
    .await;
    match r {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
