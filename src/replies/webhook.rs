//! Pushed replies (`[replies] mode = "webhook"` or `"both"`): the gateway POSTs one reply
//! object (or an array, or the envelope) as JSON to `[replies] webhook_path`, or calls it with
//! GET and the same fields as query parameters, on the status webhook's listener with its token
//! rule. Answered 200 only once the replies are durable in the journal (503 when the journal
//! cannot record them, so the gateway tries again); a reply seen before is answered 200 again.

use crate::config::{Config, OptoutConfig};
use crate::http::{read_body, refused_token, webhook_token};
use crate::journal::{Journal, NewReply};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::on;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The largest body accepted (a push carries one reply; an array a few).
const MAX_BODY: usize = 1024 * 1024;

struct Hook {
    journal: Mutex<Journal>,
    token: Option<String>,
    optout: OptoutConfig,
    default_subaccount: String,
    country_code: String,
    national_lengths: Vec<usize>,
    wake: std::sync::mpsc::SyncSender<()>,
}

/// The replies route, on its own journal connection.
///
/// # Errors
/// When the journal cannot be opened or the token's variable is not set.
pub fn router(cfg: &Config, wake: std::sync::mpsc::SyncSender<()>) -> Result<Router, String> {
    let hook = Arc::new(Hook {
        journal: Mutex::new(Journal::open(&cfg.state.dir).map_err(|e| e.to_string())?),
        token: webhook_token(&cfg.status)?,
        optout: cfg.optout.clone(),
        default_subaccount: cfg.batch.subaccount.clone().unwrap_or_default(),
        country_code: cfg.input.default_country_code.clone(),
        national_lengths: cfg.input.national_lengths.clone(),
        wake,
    });
    Ok(Router::new()
        .route(
            &cfg.replies.webhook_path,
            on(
                axum::routing::MethodFilter::POST.or(axum::routing::MethodFilter::GET),
                receive,
            ),
        )
        .with_state(hook))
}

type QueryResult = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

async fn receive(
    State(hook): State<Arc<Hook>>,
    method: Method,
    query: QueryResult,
    body: Body,
) -> (StatusCode, String) {
    if let Some(refused) = refused_token(hook.token.as_deref(), &query) {
        return refused;
    }
    let replies: Vec<NewReply> = if method == Method::GET {
        let q = query.map(|Query(q)| q).unwrap_or_default();
        match crate::replies::reply_from_query(&q) {
            Some(r) => vec![r],
            None => {
                tracing::warn!("replies webhook: refused a GET without id and source");
                return (
                    StatusCode::BAD_REQUEST,
                    "a reply needs id and source\n".into(),
                );
            }
        }
    } else {
        let body = match read_body(body, "replies", MAX_BODY).await {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("replies webhook: refused a body that is not JSON: {e}");
                return (StatusCode::BAD_REQUEST, format!("not JSON: {e}\n"));
            }
        };
        match crate::replies::parse_replies(&value) {
            Ok((r, _)) if !r.is_empty() => r,
            Ok(_) => {
                tracing::warn!("replies webhook: refused a body without a reply (id and source)");
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no reply with an id and a source\n".into(),
                );
            }
            Err(e) => {
                tracing::warn!("replies webhook: refused a body: {e}");
                return (StatusCode::BAD_REQUEST, format!("{e}\n"));
            }
        }
    };
    let h = hook.clone();
    let n = replies.len();
    let done = tokio::task::spawn_blocking(move || {
        let mut j = h.journal.lock().unwrap_or_else(|p| p.into_inner());
        let optout = &h.optout;
        let normalize =
            |n: &str| crate::replies::normalize_number(&h.country_code, &h.national_lengths, n);
        j.record_replies(
            &replies,
            &h.default_subaccount,
            &|t| optout.is_opt_out(t),
            &normalize,
        )
    })
    .await;
    match done {
        Ok(Ok(d)) => {
            if d.new > 0 {
                let _ = hook.wake.try_send(());
                tracing::info!(
                    from = "webhook",
                    replies = n,
                    new = d.new,
                    matched = d.matched,
                    opted_out = d.opted_out.len(),
                    "replies recorded"
                );
            }
            (
                StatusCode::OK,
                format!("{{\"received\":{n},\"new\":{}}}\n", d.new),
            )
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "replies webhook: the journal could not record replies (503)");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the replies could not be recorded; try again\n".into(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "replies webhook: recording failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording failed\n".into(),
            )
        }
    }
}
