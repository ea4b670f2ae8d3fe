//! Customers' replies (MOs, SPEC.md "Replies (MO)"): the gateway's reply objects read into
//! [`NewReply`] ([`parse_replies`], [`reply_from_query`]), and the outbox the ERP imports
//! ([`outbox`]). Fetching (`list`, `search`) runs on the status poller's thread, sharing its
//! one-request-per-second budget; pushed replies arrive on the status webhook's listener.

pub mod outbox;
pub mod webhook;

use crate::journal::NewReply;
use serde_json::Value;

/// Reads an answer or a push: the envelope (`{"messages": [...]}`), a bare array, or one reply
/// object. Objects without an id or a number are skipped and counted.
///
/// # Errors
/// When the body is none of those shapes.
pub fn parse_replies(body: &Value) -> Result<(Vec<NewReply>, usize), String> {
    let list: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => match o.get("messages") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(Value::Null) => vec![],
            Some(_) => return Err("\"messages\" is not an array".into()),
            None if o.contains_key("id") || o.contains_key("source") => vec![body],
            None if o.contains_key("total") => vec![],
            None => return Err("neither a reply object nor {\"messages\": [...]}".into()),
        },
        _ => return Err("not a JSON object or array".into()),
    };
    let mut out = Vec::with_capacity(list.len());
    let mut skipped = 0;
    for v in list {
        match reply_from(&|k| field(v, k)) {
            Some(r) => out.push(r),
            None => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// A reply pushed by GET: the same fields as query parameters (`mt.correlationId`, or
/// `correlationId`).
pub fn reply_from_query(q: &std::collections::HashMap<String, String>) -> Option<NewReply> {
    reply_from(&|k| {
        q.get(k)
            .cloned()
            .or_else(|| k.strip_prefix("mt.").and_then(|s| q.get(s).cloned()))
            .or_else(|| (k == "mt.correlationId").then(|| q.get("mt_correlationId").cloned())?)
    })
}

/// `number` normalised by `[input]`'s rules (digits, the country code first), as rows are; as
/// given when they do not apply.
pub fn normalize_number(country_code: &str, national_lengths: &[usize], number: &str) -> String {
    crate::convert::rules::normalize_number(
        number,
        crate::convert::rules::NumberRules {
            country_code,
            national_lengths,
        },
    )
    .unwrap_or_else(|_| number.to_owned())
}

/// A field as text: strings as they are, numbers written out; `mt.x` looks inside `mt`.
fn field(v: &Value, key: &str) -> Option<String> {
    let found = match key.split_once('.') {
        Some((a, b)) => v.get(a)?.get(b)?,
        None => v.get(key)?,
    };
    match found {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn reply_from(get: &dyn Fn(&str) -> Option<String>) -> Option<NewReply> {
    let id = get("id").filter(|s| !s.trim().is_empty())?;
    let number: String = get("source")?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if number.is_empty() {
        return None;
    }
    let received_at_ms = get("receivedAt")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| get("receivedDate").and_then(|d| utc_ms(d.trim())))
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let nonempty = |k: &str| {
        get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    Some(NewReply {
        id: id.trim().chars().take(200).collect(),
        received_at_ms,
        number,
        text: get("messageText")
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect(),
        subaccount: nonempty("subAccount").unwrap_or_default(),
        correlation_id: nonempty("mt.correlationId").unwrap_or_default(),
        carrier: nonempty("carrierName"),
        short_code: nonempty("shortCode"),
    })
}

/// `receivedDate`: ISO 8601, in UTC when it carries no offset (SPEC.md).
fn utc_ms(s: &str) -> Option<i64> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
    .map(|n| n.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_arrays_objects_and_queries() {
        let one = json!({"id": "mo-1", "subAccount": "ACME", "carrierName": "VIVO",
            "source": "5511999990001", "shortCode": "28128", "messageText": "Sair!",
            "receivedAt": 1_765_000_000_000_i64, "receivedDate": "2025-12-06T05:46:40Z",
            "mt": {"id": "u1", "correlationId": "c-1", "username": "x"}, "other": [1]});
        let (r, skipped) = parse_replies(&json!({"total": 1, "start": "", "end": "",
            "messages": [one.clone(), {"id": "no-number"}]}))
        .unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(
            r,
            vec![NewReply {
                id: "mo-1".into(),
                received_at_ms: 1_765_000_000_000,
                number: "5511999990001".into(),
                text: "Sair!".into(),
                subaccount: "ACME".into(),
                correlation_id: "c-1".into(),
                carrier: Some("VIVO".into()),
                short_code: Some("28128".into()),
            }]
        );
        assert_eq!(parse_replies(&json!([one.clone()])).unwrap().0, r);
        assert_eq!(parse_replies(&one).unwrap().0, r);
        assert_eq!(parse_replies(&json!({"total": 0})).unwrap().0, vec![]);
        assert!(parse_replies(&json!("x")).is_err());
        let mut no_ms = one.clone();
        no_ms.as_object_mut().unwrap().remove("receivedAt");
        assert_eq!(
            parse_replies(&no_ms).unwrap().0[0].received_at_ms,
            1_765_000_000_000
        );
        let q: std::collections::HashMap<String, String> = [
            ("id", "mo-2"),
            ("source", "+55 11 99999-0002"),
            ("messageText", "SIM"),
            ("correlationId", "c-2"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let g = reply_from_query(&q).unwrap();
        assert_eq!(
            (g.number.as_str(), g.correlation_id.as_str()),
            ("5511999990002", "c-2")
        );
    }
}
