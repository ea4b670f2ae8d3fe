//! Message-level statuses (`[status]`): what became of each SMS, from the gateway's HTTP status
//! interface (SPEC.md, "Per-message statuses").
//!
//! - [`ids`]: correlation ids smsdrop gives rows, so statuses can be matched to them;
//! - [`parse`] here: the gateway's status objects, in either envelope and either spelling;
//! - [`api`]: the blocking client for `list` and `search` (rate-limited, backing off);
//! - [`poller`]: the thread that asks the API and records what it hears;
//! - [`webhook`]: the route that receives pushed statuses (on [`crate::http`]);
//! - [`settle`]: the engine stage that ends a job's tracking and reports it.

pub mod api;
pub mod ids;
pub mod poller;
pub mod settle;
pub mod webhook;

use crate::journal::StatusUpdate;
use chrono::DateTime;
use serde_json::Value;

/// What receives and fetches statuses while the daemon runs: the webhook's route (served by
/// the daemon's HTTP stack with the operations routes) and the poller (stops when dropped).
pub struct Running {
    /// Where the webhook listens, and its router.
    pub webhook: Option<(std::net::SocketAddr, axum::Router)>,
    pub poller: Option<poller::Poller>,
}

/// Prepares the webhook route and starts the poller `cfg` asks for. `wake` hears when statuses
/// were recorded (the engine then ends tracking that is complete without waiting for its round).
///
/// # Errors
/// A message saying what to fix: a token not set, a journal that cannot be opened.
pub fn start(
    cfg: &crate::config::Config,
    wake: std::sync::mpsc::SyncSender<()>,
) -> Result<Running, String> {
    let s = &cfg.status;
    if s.mode.listens()
        && s.webhook_token_env.is_none()
        && s.webhook_listen.is_some_and(|a| !a.ip().is_loopback())
    {
        tracing::warn!("[status] webhook_listen is reachable from other machines and webhook_token_env is not set: anyone who finds it can post statuses");
    }
    let loopback = ["http://127.", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| s.api_url.starts_with(p));
    if s.mode.queries() && s.api_url.starts_with("http://") && !loopback {
        tracing::warn!(api = %s.api_url, "[status] api_url is plain http: the token travels unencrypted");
    }
    let webhook = match (s.mode.listens(), s.webhook_listen) {
        (true, Some(addr)) => Some((addr, webhook::router(s, &cfg.state.dir, wake.clone())?)),
        _ => None,
    };
    let poller = poller::start(s, &cfg.state.dir, wake)?;
    Ok(Running { webhook, poller })
}

/// The gateway's status codes and their names (SPEC.md).
pub const CODES: &[(i64, &str)] = &[
    (2, "SENT_SUCCESS"),
    (4, "DELIVERED_SUCCESS"),
    (101, "EXPIRED"),
    (102, "CARRIER_COMMUNICATION_ERROR"),
    (103, "REJECTED_BY_CARRIER"),
    (104, "NOT_DELIVERED"),
    (201, "NO_CREDIT"),
    (202, "INVALID_DESTINATION_NUMBER"),
    (203, "BLACKLISTED"),
    (204, "DESTINATION_BLOCKED_BY_OPTOUT"),
    (205, "DESTINATION_MESSAGE_LIMIT_REACHED"),
    (207, "INVALID_MESSAGE_TEXT"),
    (301, "INTERNAL_ERROR"),
];

/// The name of a status code, when SPEC.md lists it.
pub fn code_name(code: i64) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The code of a status name (case-insensitive), when SPEC.md lists it.
pub fn code_of(name: &str) -> Option<i64> {
    CODES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
        .map(|(c, _)| *c)
}

/// The status objects in a body: a top-level array, one object, or an object holding one array
/// of status objects. An element without a correlation id is skipped (it cannot be matched).
///
/// # Errors
/// A message saying what shape was expected, when the body is none of these.
pub fn parse_statuses(body: &Value) -> Result<Vec<StatusUpdate>, String> {
    let items: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("correlationId") => vec![body],
        Value::Object(o) if !o.values().any(Value::is_array) && looks_like_status(o) => vec![body],
        Value::Object(o) => {
            let arrays: Vec<&Vec<Value>> = o.values().filter_map(Value::as_array).collect();
            match arrays.as_slice() {
                [one] => one.iter().collect(),
                [] => return Err("an object with no status fields and no array of statuses".into()),
                _ => {
                    return Err(
                        "an object holding several arrays; expected one array of statuses".into(),
                    )
                }
            }
        }
        _ => return Err("expected a status object or an array of them".into()),
    };
    let mut out = Vec::with_capacity(items.len());
    let mut odd = 0;
    for item in &items {
        match item {
            Value::Object(o) => out.extend(parse_one(o)),
            _ => odd += 1,
        }
    }
    // One odd element must not cost the others (`list` never returns them again).
    if odd > 0 && odd == items.len() {
        return Err("expected status objects; the array holds none".into());
    }
    if odd > 0 {
        tracing::warn!(
            skipped = odd,
            "status answer: elements that are not objects were skipped"
        );
    }
    Ok(out)
}

fn looks_like_status(o: &serde_json::Map<String, Value>) -> bool {
    [
        "correlationId",
        "sentStatusCode",
        "deliveredStatusCode",
        "id",
    ]
    .iter()
    .any(|k| o.contains_key(*k))
}

fn parse_one(o: &serde_json::Map<String, Value>) -> Option<StatusUpdate> {
    let text = |k: &str| match o.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let int = |k: &str| match o.get(k) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let correlation_id = text("correlationId")?;
    // A time: epoch milliseconds, or an ISO 8601 date (either spelling SPEC.md gives).
    let at = |ms_keys: &[&str], date_keys: &[&str]| {
        ms_keys.iter().find_map(|k| int(k)).or_else(|| {
            date_keys.iter().find_map(|k| {
                let s = text(k)?;
                DateTime::parse_from_rfc3339(&s)
                    .ok()
                    .map(|d| d.timestamp_millis())
                    .or_else(|| {
                        chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                            .ok()
                            .map(|d| d.and_utc().timestamp_millis())
                    })
            })
        })
    };
    let status = |code_key: &str, name_key: &str| {
        let name = text(name_key);
        let code = int(code_key).or_else(|| name.as_deref().and_then(code_of));
        let name = code
            .and_then(code_name)
            .map(str::to_owned)
            .or(name.map(|n| n.to_ascii_uppercase()));
        (code, name)
    };
    let (sent_code, sent_status) = status("sentStatusCode", "sentStatus");
    let (delivered_code, delivered_status) = status("deliveredStatusCode", "deliveredStatus");
    Some(StatusUpdate {
        correlation_id,
        destination: text("destination").map(|d| d.chars().filter(char::is_ascii_digit).collect()),
        carrier: text("carrierName"),
        sent_code,
        sent_status,
        sent_at: at(&["sentAt", "sentStatusAt"], &["sentDate", "sentStatusDate"]),
        delivered_code,
        delivered_status,
        delivered_at: at(&["deliveredAt"], &["deliveredDate"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_and_spellings() {
        let one = json!({"id": "u1", "correlationId": "c1", "destination": "+55 11 99999-0000",
            "carrierName": "VIVO", "sentStatusCode": 2, "sentStatus": "SENT_SUCCESS",
            "sentStatusAt": 1_700_000_000_000_i64, "extra": {"x": 1}});
        let got = parse_statuses(&one).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].correlation_id, "c1");
        assert_eq!(got[0].destination.as_deref(), Some("5511999990000"));
        assert_eq!(got[0].sent_code, Some(2));
        assert_eq!(got[0].sent_at, Some(1_700_000_000_000));
        let arr = json!([{"correlationId": "c2", "deliveredStatus": "not_delivered",
            "deliveredDate": "2026-12-01T10:00:00Z"}, {"id": "no-correlation"}]);
        let got = parse_statuses(&arr).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivered_code, Some(104));
        assert_eq!(got[0].delivered_status.as_deref(), Some("NOT_DELIVERED"));
        assert_eq!(got[0].delivered_at, Some(1_796_119_200_000));
        let wrapped =
            json!({"total": 1, "statuses": [{"correlationId": "c3", "sentStatusCode": "202"}]});
        let got = parse_statuses(&wrapped).unwrap();
        assert_eq!(
            got[0].sent_status.as_deref(),
            Some("INVALID_DESTINATION_NUMBER")
        );
        for bad in [
            json!(3),
            json!("x"),
            json!({"a": 1}),
            json!({"a": [], "b": []}),
            json!([1]),
        ] {
            assert!(parse_statuses(&bad).is_err(), "{bad}");
        }
    }
}
