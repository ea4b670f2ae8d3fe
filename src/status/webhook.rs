//! The webhook receiver (`[status] mode = "webhook"` or `"both"`): the gateway POSTs status
//! objects (first statuses and delivery reports alike, one object or an array) to
//! `webhook_path`. A status is answered 200 only once it is durable in the journal.
//!
//! Refused, with a log line and nothing changed: a missing or wrong `?token=` when
//! `webhook_token_env` is set (401, before any of the body is read), a body over [`MAX_BODY`]
//! (413) or slower than its deadline (408), a body that is not JSON or
//! not status objects (400), and statuses none of which is a message smsdrop tracks (422). A
//! journal that cannot be written answers 503, so the gateway tries again.

use crate::config::StatusConfig;
use crate::journal::{Applied, Journal};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The largest body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
struct Hook {
    journal: Mutex<Journal>,
    token: Option<String>,
    cfg: StatusConfig,
    /// `[optout] from_statuses`.
    optout_codes: Vec<i64>,
    zone: crate::config::Zone,
    wake: std::sync::mpsc::SyncSender<()>,
}

/// The webhook's router, on its own journal connection. A message whose first status is one of
/// `optout_codes` (`[optout] from_statuses`) puts its number on the opt-out list.
///
/// # Errors
/// When the journal cannot be opened or `webhook_token_env` names an unset variable.
pub fn router(
    cfg: &StatusConfig,
    zone: crate::config::Zone,
    state_dir: &Path,
    optout_codes: Vec<i64>,
    wake: std::sync::mpsc::SyncSender<()>,
) -> Result<Router, String> {
    let token = crate::http::webhook_token(cfg)?;
    let journal = Journal::open(state_dir).map_err(|e| e.to_string())?;
    let hook = Arc::new(Hook {
        journal: Mutex::new(journal),
        token,
        cfg: cfg.clone(),
        optout_codes,
        zone,
        wake,
    });
    Ok(Router::new()
        .route(&cfg.webhook_path, post(receive))
        .with_state(hook))
}

async fn receive(
    State(hook): State<Arc<Hook>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> (StatusCode, String) {
    // The token first: a request without it is answered before one byte of its body is read.
    if let Some(refused) = crate::http::refused_token(hook.token.as_deref(), &query) {
        return refused;
    }
    let body = match crate::http::read_body(body, "status", MAX_BODY).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("status webhook: refused a body that is not JSON: {e}");
            return (StatusCode::BAD_REQUEST, format!("not JSON: {e}\n"));
        }
    };
    let updates = match super::parse_statuses(&value, hook.zone) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("status webhook: refused a body: {e}");
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    if updates.is_empty() {
        tracing::warn!("status webhook: refused a body without a correlationId");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "no status with a correlationId\n".into(),
        );
    }
    let h = hook.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let no_dlr = |c: &str| h.cfg.no_dlr(c);
        let mut j = h.journal.lock().unwrap_or_else(|p| p.into_inner());
        j.apply_statuses(&updates, &no_dlr, &h.optout_codes)
            .map(|a| (a, updates.len()))
    })
    .await;
    match applied {
        Ok(Ok((a, n))) => {
            super::log_optouts(&a);
            if a.changed > 0 {
                let _ = hook.wake.try_send(());
            }
            answer(&a, n)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "status webhook: the journal could not record statuses (503)");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the statuses could not be recorded; try again\n".into(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "status webhook: recording failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording failed\n".into(),
            )
        }
    }
}

fn answer(a: &Applied, n: usize) -> (StatusCode, String) {
    let body = serde_json::to_string(a).expect("counts serialise") + "\n";
    if a.matched == 0 && a.closed == 0 {
        tracing::warn!(
            unknown = a.unknown.len(),
            ambiguous = a.ambiguous.len(),
            "status webhook: none of {n} statuses is a message smsdrop tracks (422)"
        );
        return (StatusCode::UNPROCESSABLE_ENTITY, body);
    }
    if !a.unknown.is_empty() || !a.ambiguous.is_empty() {
        tracing::warn!(
            unknown = a.unknown.len(),
            ambiguous = a.ambiguous.len(),
            "status webhook: some statuses matched no single message"
        );
    }
    tracing::debug!(
        matched = a.matched,
        changed = a.changed,
        "status webhook: recorded"
    );
    (StatusCode::OK, body)
}
