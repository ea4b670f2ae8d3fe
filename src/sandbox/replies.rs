//! The simulator's replies (SPEC.md, "Replies (MO: messages customers send back)"): which
//! customers answer a message and what they write ([`decide`]), and the gateway's store of the
//! replies ([`Inbox`]) behind `GET /v1/sms/receive/list` (consuming, at most [`LIST_MAX`] a call,
//! the last 3 days) and `GET /v1/sms/receive/search` (a period within the last 5 days), and the
//! push of each reply as it arrives.
//!
//! Bookkeeping only: [`super::statuses`] serves it over HTTP, paces it with the statuses, pushes
//! it and writes its log lines (`id, number, correlation id, text, receivedAt`, tab-separated).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The reply log under the root.
pub const LOG: &str = "replies.log";
/// The short code every reply goes to.
pub const SHORT_CODE: &str = "28128";
/// Replies one `list` call returns at most.
pub const LIST_MAX: usize = 1000;
/// Replies that opt out, spelled as customers do (punctuation, case, accents, spaces).
pub const OPT_OUTS: [&str; 6] = ["SAIR", "sair!", " Sáir. ", "PARE", "Stop", "descadastrar"];
/// Replies that answer the message.
pub const ANSWERS: [&str; 6] = [
    "SIM",
    "2",
    "Obrigado, já paguei",
    "Sim, confirmo",
    "1",
    "Quando vence?",
];

const DAY: Duration = Duration::from_secs(24 * 3600);
const LIST_DAYS: u32 = 3;
const SEARCH_DAYS: u32 = 5;

/// What the customer of `number` answers to the message with `correlation_id`, if anything:
/// about one message in four gets a reply, half of those an opt-out. Same inputs, same answer.
pub fn decide(number: &str, correlation_id: &str) -> Option<&'static str> {
    // FNV-1a, then a finaliser so the low bits depend on every byte.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in number.bytes().chain([0]).chain(correlation_id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    if !h.is_multiple_of(4) {
        return None;
    }
    let i = (h >> 8) as usize % (OPT_OUTS.len() + ANSWERS.len());
    Some(match OPT_OUTS.get(i) {
        Some(t) => t,
        None => ANSWERS[i - OPT_OUTS.len()],
    })
}

/// The message a reply answers, as the gateway knows it.
#[derive(Debug, Clone)]
pub struct Sent<'a> {
    /// The gateway's message id (the status's `id`).
    pub id: &'a str,
    pub number: &'a str,
    pub correlation_id: &'a str,
    pub subaccount: &'a str,
    pub campaign: Option<&'a str>,
    pub carrier: &'static str,
    /// The API user that sent it.
    pub username: &'a str,
}

struct Stored {
    /// When `list` and the push may hand it out.
    arrives: SystemTime,
    /// What `search` and the 3-day window of `list` go by (its `receivedAt`).
    received: SystemTime,
    reply: Value,
    listed: bool,
    pushed: bool,
}

/// The replies the gateway holds, and which were handed out.
#[derive(Default)]
pub struct Inbox {
    stored: Vec<Stored>,
    next_id: u64,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// ISO 8601 UTC to the second, as the gateway writes it (`2026-12-07T15:55:49Z`).
pub fn iso(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An ISO 8601 time as `search` takes it: `2016-09-12T00:00:00` (read as UTC), with fractions,
/// `Z` or an offset, or a bare date (midnight UTC).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.into());
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.into());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().into());
        }
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().into())
}

/// A field of a reply as text for the log (empty when absent, one line).
fn text(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.replace(['\t', '\n', '\r'], " ")
}

/// The log line of a reply.
fn log_line(reply: &Value) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        text(&reply["id"]),
        text(&reply["source"]),
        text(&reply["mt"]["correlationId"]),
        text(&reply["messageText"]),
        text(&reply["receivedAt"]),
    )
}

impl Inbox {
    /// Decides whether the customer answers `sent`; if so keeps the reply, arriving `at`, and
    /// returns its log line.
    pub fn answer(&mut self, sent: &Sent<'_>, at: SystemTime) -> Option<String> {
        let said = decide(sent.number, sent.correlation_id)?;
        self.next_id += 1;
        let email = if sent.username.contains('@') {
            sent.username.to_owned()
        } else {
            format!("{}@sandbox.invalid", sent.username)
        };
        let cid = (!sent.correlation_id.is_empty()).then_some(sent.correlation_id);
        let mut reply = json!({
            "id": format!("mo-{}", self.next_id), "subAccount": sent.subaccount,
            "carrierId": sent.carrier.len(), "carrierName": sent.carrier,
            "source": sent.number, "shortCode": SHORT_CODE, "messageText": said,
            "receivedAt": ms(at), "receivedDate": iso(at),
            "mt": {"id": sent.id, "correlationId": cid, "username": sent.username, "email": email},
        });
        // `campaignAlias` is optional: every other reply carries one, so both shapes are seen.
        if let (Some(c), true) = (sent.campaign, self.next_id.is_multiple_of(2)) {
            reply["campaignAlias"] = json!(c);
        }
        let line = log_line(&reply);
        self.keep(reply, at, at);
        Some(line)
    }

    /// Keeps `reply` as given (any JSON: unknown messages, repeated ids), arriving `now`; its
    /// `receivedAt` (epoch ms) places it for `search`, and is set to `now` when missing.
    /// Returns its log line.
    pub fn inject(&mut self, mut reply: Value, now: SystemTime) -> String {
        let mut received = now;
        if let Some(o) = reply.as_object_mut() {
            match o.get("receivedAt").and_then(Value::as_i64) {
                Some(at) => {
                    let d = Duration::from_millis(at.unsigned_abs());
                    received = if at < 0 {
                        UNIX_EPOCH - d
                    } else {
                        UNIX_EPOCH + d
                    };
                }
                None => {
                    o.insert("receivedAt".into(), json!(ms(now)));
                    o.entry("receivedDate").or_insert_with(|| json!(iso(now)));
                }
            }
        }
        let line = log_line(&reply);
        self.keep(reply, now, received);
        line
    }

    fn keep(&mut self, reply: Value, arrives: SystemTime, received: SystemTime) {
        self.stored.push(Stored {
            arrives,
            received,
            reply,
            listed: false,
            pushed: false,
        });
    }

    /// Indices of the replies arrived by `now` and `pending` by `is_pending`, by arrival.
    fn arrived(&self, now: SystemTime, is_pending: impl Fn(&Stored) -> bool) -> Vec<usize> {
        let mut due: Vec<usize> = (0..self.stored.len())
            .filter(|&i| self.stored[i].arrives <= now && is_pending(&self.stored[i]))
            .collect();
        due.sort_by_key(|&i| self.stored[i].arrives);
        due
    }

    /// `list`: the replies arrived and never listed, from the last 3 days, at most [`LIST_MAX`],
    /// marked as listed. `sub_account` keeps only that subaccount's.
    pub fn list(&mut self, now: SystemTime, sub_account: Option<&str>) -> Vec<Value> {
        let since = now - DAY * LIST_DAYS;
        let due = self.arrived(now, |s| {
            !s.listed && s.received >= since && of(&s.reply, sub_account)
        });
        due.into_iter()
            .take(LIST_MAX)
            .map(|i| {
                self.stored[i].listed = true;
                self.stored[i].reply.clone()
            })
            .collect()
    }

    /// `search`: the replies arrived by `now` and received within `start..=end`.
    pub fn search(
        &self,
        start: SystemTime,
        end: SystemTime,
        now: SystemTime,
        sub_account: Option<&str>,
    ) -> Vec<Value> {
        let due = self.arrived(now, |s| {
            (start..=end).contains(&s.received) && of(&s.reply, sub_account)
        });
        due.into_iter()
            .map(|i| self.stored[i].reply.clone())
            .collect()
    }

    /// The answer to `GET /v1/sms/receive/list` with query `q` (consumes what it returns).
    pub fn answer_list(
        &mut self,
        q: &HashMap<String, String>,
        now: SystemTime,
        bare: bool,
    ) -> Value {
        let found = self.list(now, q.get("subAccount").map(String::as_str));
        envelope(found, now - DAY * LIST_DAYS, now, bare)
    }

    /// The answer to `GET /v1/sms/receive/search` with query `q`.
    ///
    /// # Errors
    /// The reason, when `start` or `end` is not an ISO 8601 time or `start` is after `end`.
    pub fn answer_search(
        &self,
        q: &HashMap<String, String>,
        now: SystemTime,
        bare: bool,
    ) -> Result<Value, String> {
        let oldest = now - DAY * SEARCH_DAYS;
        let time = |key: &str, default: SystemTime| match q.get(key) {
            None => Ok(default),
            Some(s) => parse_time(s).ok_or_else(|| {
                format!("{key}: want ISO 8601 like 2016-09-12T00:00:00, got {s:?}\n")
            }),
        };
        let (start, end) = (time("start", oldest)?, time("end", now)?);
        if start > end {
            return Err("start is after end\n".into());
        }
        let start = start.max(oldest);
        let found = self.search(start, end, now, q.get("subAccount").map(String::as_str));
        Ok(envelope(found, start, end, bare))
    }

    /// Replies arrived and not yet pushed, by arrival: `(index, reply)`.
    pub fn due_pushes(&self, now: SystemTime) -> Vec<(usize, Value)> {
        self.arrived(now, |s| !s.pushed)
            .into_iter()
            .map(|i| (i, self.stored[i].reply.clone()))
            .collect()
    }

    /// Notes that the push of reply `index` was taken.
    pub fn mark_pushed(&mut self, index: usize) {
        if let Some(s) = self.stored.get_mut(index) {
            s.pushed = true;
        }
    }

    /// How many replies it holds (arrived or not).
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }
}

fn of(reply: &Value, sub_account: Option<&str>) -> bool {
    sub_account.is_none_or(|s| reply["subAccount"].as_str() == Some(s))
}

/// SPEC.md's answer envelope, or the bare array.
fn envelope(messages: Vec<Value>, start: SystemTime, end: SystemTime, bare: bool) -> Value {
    if bare {
        return Value::Array(messages);
    }
    let mut o = Map::new();
    o.insert("total".into(), json!(messages.len()));
    o.insert("start".into(), json!(iso(start)));
    o.insert("end".into(), json!(iso(end)));
    o.insert("messages".into(), Value::Array(messages));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent<'a>(number: &'a str, cid: &'a str) -> Sent<'a> {
        Sent {
            id: "m-1",
            number,
            correlation_id: cid,
            subaccount: "ACME",
            campaign: Some("ACME.20261207.01"),
            carrier: "VIVO",
            username: "demo",
        }
    }

    #[test]
    fn about_one_in_four_reply_the_same_way_each_time_and_half_of_them_opt_out() {
        let (mut replies, mut opt_outs) = (0, 0);
        for n in 0..4000 {
            let number = format!("55119{n:08}");
            let said = decide(&number, &format!("c{n}"));
            assert_eq!(said, decide(&number, &format!("c{n}")));
            if let Some(t) = said {
                replies += 1;
                opt_outs += usize::from(OPT_OUTS.contains(&t));
            }
        }
        assert!((800..1200).contains(&replies), "{replies} replies of 4000");
        assert!(
            (replies / 3..replies * 2 / 3).contains(&opt_outs),
            "{opt_outs}"
        );
    }

    #[test]
    fn times_search_takes() {
        let at = |s: &str| parse_time(s).map(ms);
        let t = 1_473_638_400_000; // 2016-09-12T00:00:00Z
        for (s, want) in [
            ("2016-09-12T00:00:00", Some(t)),
            ("2016-09-12T00:00:00Z", Some(t)),
            ("2016-09-12T00:00:00.000Z", Some(t)),
            ("2016-09-12T03:00:00+03:00", Some(t)),
            ("2016-09-11T21:00:00-0300", Some(t)),
            ("2016-09-12T00:00", Some(t)),
            ("2016-09-12", Some(t)),
            ("yesterday", None),
            ("2016-13-12T00:00:00", None),
            ("", None),
        ] {
            assert_eq!(at(s), want, "{s:?}");
        }
    }

    #[test]
    fn list_consumes_at_most_a_thousand_and_search_finds_them_again() {
        let now = SystemTime::now();
        let mut inbox = Inbox::default();
        for i in 0..1001 {
            inbox.inject(json!({"id": format!("x{i}"), "subAccount": "A"}), now);
        }
        let old = ms(now - DAY * 4);
        inbox.inject(json!({"id": "old", "receivedAt": old}), now);
        assert_eq!(inbox.list(now, None).len(), LIST_MAX);
        assert_eq!(
            inbox.list(now, None).len(),
            1,
            "the 4-day-old one is not listed"
        );
        assert!(inbox.list(now, None).is_empty());
        let q = HashMap::new();
        let all = inbox.answer_search(&q, now, false).unwrap();
        assert_eq!(all["total"], 1002, "search holds 5 days");
        let q = HashMap::from([("start".to_owned(), "1970-01-01T00:00:00".to_owned())]);
        assert_eq!(inbox.answer_search(&q, now, false).unwrap()["total"], 1002);
        let q = HashMap::from([("subAccount".to_owned(), "B".to_owned())]);
        assert_eq!(inbox.answer_search(&q, now, true).unwrap(), json!([]));
    }

    #[test]
    fn a_decided_reply_waits_for_its_time_and_names_the_message_it_answers() {
        let now = SystemTime::now();
        let mut inbox = Inbox::default();
        let (number, cid) = (0..)
            .map(|n| (format!("5511{n:09}"), format!("c{n}")))
            .find(|(n, c)| decide(n, c).is_some())
            .unwrap();
        let line = inbox
            .answer(&sent(&number, &cid), now + Duration::from_secs(60))
            .unwrap();
        assert!(
            line.starts_with(&format!("mo-1\t{number}\t{cid}\t")),
            "{line}"
        );
        assert!(inbox.list(now, None).is_empty(), "not arrived yet");
        assert!(inbox.due_pushes(now).is_empty());
        let later = now + Duration::from_secs(61);
        let got = inbox.list(later, Some("ACME"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["mt"]["correlationId"], cid);
        assert_eq!(got[0]["mt"]["id"], "m-1");
        assert_eq!(got[0]["shortCode"], SHORT_CODE);
        assert!(got[0]["receivedDate"].as_str().unwrap().ends_with('Z'));
        assert_eq!(inbox.due_pushes(later).len(), 1);
    }
}
