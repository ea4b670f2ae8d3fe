//! Message-level statuses (`[status]`): what became of each SMS, from the gateway's HTTP status
//! interface (SPEC.md, "Per-message statuses").
//!
//! - [`ids`]: correlation ids smsdrop gives rows, so statuses can be matched to them;
//! - [`parse_statuses`] and [`read_statuses_from`] here: the gateway's status objects, in either
//!   envelope and either spelling, read as they arrive (only the fields used are kept);
//! - [`api`]: the blocking client for `list` and `search` (rate-limited, backing off);
//! - [`poller`]: the thread that asks the API and records what it hears;
//! - [`webhook`]: the route that receives pushed statuses (on [`crate::http`]);
//! - [`settle`]: the engine stage that ends a job's tracking and reports it.

pub mod api;
pub mod ids;
pub mod poller;
pub mod settle;
pub mod webhook;

use crate::config::Zone;
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
    let mut router: Option<axum::Router> = None;
    if s.mode.listens() {
        router = Some(webhook::router(
            s,
            cfg.batch.zone,
            &cfg.state.dir,
            cfg.optout.from_statuses.clone(),
            wake.clone(),
        )?);
    }
    if cfg.replies.mode.listens() {
        // Replies are pushed to the same listener, on their own path.
        let replies = crate::replies::webhook::router(cfg, wake.clone())?;
        router = Some(match router {
            Some(r) => r.merge(replies),
            None => replies,
        });
    }
    let webhook = s.webhook_listen.zip(router);
    let replies = cfg.replies.mode.queries().then(|| poller::Replies {
        cfg: cfg.replies.clone(),
        optout: cfg.optout.clone(),
        default_subaccount: cfg.batch.subaccount.clone().unwrap_or_default(),
        country_code: cfg.input.default_country_code.clone(),
        national_lengths: cfg.input.national_lengths.clone(),
    });
    let poller = poller::start(
        s,
        cfg.batch.zone,
        &cfg.state.dir,
        cfg.optout.from_statuses.clone(),
        wake,
        replies,
    )?;
    Ok(Running { webhook, poller })
}

/// Logs the numbers statuses put on an opt-out list (`[optout] from_statuses`).
fn log_optouts(a: &crate::journal::Applied) {
    if !a.opted_out.is_empty() {
        tracing::info!(
            numbers = a.opted_out.len(),
            "opted out by their first status: later exports skip these numbers"
        );
    }
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

/// Statuses handed on at once while an answer is read (so memory does not grow with it).
pub const SLICE: usize = 10_000;

/// Where parsed statuses go, a slice at a time; an error stops the reading.
pub type Sink<'a> = dyn FnMut(Vec<StatusUpdate>) -> Result<(), String> + 'a;

/// Why statuses could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is not JSON, or not status objects in a shape SPEC.md allows.
    #[error("{0}")]
    Body(String),
    /// The sink refused a slice (statuses handed on before it stay handed on).
    #[error("{0}")]
    Sink(String),
}

/// The status objects in a body: a top-level array, one object, or an object holding one array
/// of status objects. An element without a correlation id is skipped (it cannot be matched).
/// A time without an offset is read in `zone` (`[batch] timezone`).
///
/// # Errors
/// A message saying what shape was expected, when the body is none of these.
pub fn parse_statuses(body: &Value, zone: Zone) -> Result<Vec<StatusUpdate>, String> {
    let mut out = Vec::new();
    let read = read_statuses(body, zone, usize::MAX, &mut |s| {
        out.extend(s);
        Ok(())
    });
    match read {
        Ok(()) => Ok(out),
        Err(ReadError::Body(e) | ReadError::Sink(e)) => Err(e),
    }
}

/// Reads a JSON body from `r` as it arrives, handing the statuses to `sink` in slices of
/// [`SLICE`]: only the fields smsdrop uses are kept, so memory stays flat however long the
/// answer. Shapes as [`parse_statuses`]; an empty body holds no statuses. When the body turns out
/// bad part way, the slices handed on before stay handed on.
///
/// # Errors
/// [`ReadError`]: a read error (e.g. a size limit) is a [`ReadError::Body`].
pub fn read_statuses_from(
    r: impl std::io::Read,
    zone: Zone,
    sink: &mut Sink<'_>,
) -> Result<(), ReadError> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
    // An empty (or blank) body: no statuses.
    loop {
        let buf = r.fill_buf().map_err(|e| ReadError::Body(e.to_string()))?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(n) => {
                r.consume(n);
                break;
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
    let mut de = serde_json::Deserializer::from_reader(r);
    read_statuses(&mut de, zone, SLICE, sink)?;
    de.end().map_err(|e| ReadError::Body(e.to_string()))
}

fn read_statuses<'de, D: serde::Deserializer<'de>>(
    de: D,
    zone: Zone,
    slice: usize,
    sink: &mut Sink<'_>,
) -> Result<(), ReadError> {
    let mut c = Collect {
        zone,
        slice,
        buf: Vec::new(),
        sink,
        items: 0,
        odd: 0,
        sink_error: None,
    };
    let shaped = serde::de::DeserializeSeed::deserialize(Top(&mut c), de);
    if let Some(e) = c.sink_error.take() {
        return Err(ReadError::Sink(e));
    }
    shaped.map_err(|e| ReadError::Body(e.to_string()))?;
    // One odd element must not cost the others (`list` never returns them again).
    if c.odd > 0 && c.odd == c.items {
        return Err(ReadError::Body(
            "expected status objects; the array holds none".into(),
        ));
    }
    if c.odd > 0 {
        tracing::warn!(
            skipped = c.odd,
            "status answer: elements that are not objects were skipped"
        );
    }
    c.flush().map_err(ReadError::Sink)
}

/// What reading gathers: statuses not yet handed on, and counts.
struct Collect<'a, 'b> {
    zone: Zone,
    slice: usize,
    buf: Vec<StatusUpdate>,
    sink: &'a mut Sink<'b>,
    items: usize,
    odd: usize,
    sink_error: Option<String>,
}

impl Collect<'_, '_> {
    fn push<E: serde::de::Error>(&mut self, raw: RawStatus) -> Result<(), E> {
        self.items += 1;
        if let Some(u) = raw.into_update(self.zone) {
            self.buf.push(u);
        }
        if self.buf.len() >= self.slice {
            if let Err(e) = self.flush() {
                self.sink_error = Some(e.clone());
                return Err(E::custom(e));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (self.sink)(std::mem::take(&mut self.buf))
    }

    /// Reads an array's elements: status objects, or odd ones (counted, skipped).
    fn elements<'de, A: serde::de::SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Element>()? {
            match item {
                Element::Status(raw) => self.push(*raw)?,
                Element::Odd => {
                    self.items += 1;
                    self.odd += 1;
                }
            }
        }
        Ok(())
    }
}

/// The whole body.
struct Top<'c, 'a, 'b>(&'c mut Collect<'a, 'b>);

impl<'de> serde::de::DeserializeSeed<'de> for Top<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Top<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a status object or an array of them")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.elements(seq)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut raw = RawStatus::default();
        let mut arrays = 0usize;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Field(f) => raw.set(f, map.next_value::<Scalar>()?),
                Key::Other => map.next_value_seed(Member {
                    c: &mut *self.0,
                    arrays: &mut arrays,
                })?,
            }
        }
        if raw.correlation_id.is_some() || (arrays == 0 && raw.looks_like_status()) {
            return self.0.push(raw);
        }
        if arrays == 0 {
            return Err(A::Error::custom(
                "an object with no status fields and no array of statuses",
            ));
        }
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom("expected a status object or an array of them"))
    }
}

/// A member of the top-level object that is not a status field: an array of statuses (at most
/// one), or anything else (skipped).
struct Member<'c, 'a, 'b, 'n> {
    c: &'c mut Collect<'a, 'b>,
    arrays: &'n mut usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Member<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Member<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        *self.arrays += 1;
        if *self.arrays > 1 {
            return Err(A::Error::custom(
                "an object holding several arrays; expected one array of statuses",
            ));
        }
        self.c.elements(seq)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An element of an array of statuses.
enum Element {
    Status(Box<RawStatus>),
    Odd,
}

impl<'de> serde::Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a status object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Element, A::Error> {
                let mut raw = RawStatus::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Field(f) => raw.set(f, map.next_value::<Scalar>()?),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Element::Status(Box::new(raw)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Element, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Element::Odd)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Element, E> {
                Ok(Element::Odd)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Element, E> {
                Ok(Element::Odd)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Element, E> {
                Ok(Element::Odd)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Element, E> {
                Ok(Element::Odd)
            }
            fn visit_str<E>(self, _: &str) -> Result<Element, E> {
                Ok(Element::Odd)
            }
            fn visit_unit<E>(self) -> Result<Element, E> {
                Ok(Element::Odd)
            }
        }
        de.deserialize_any(V)
    }
}

/// The status fields smsdrop reads (SPEC.md's names); every other key is skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    CorrelationId,
    Destination,
    CarrierName,
    SentStatusCode,
    SentStatus,
    SentAt,
    SentStatusAt,
    SentDate,
    SentStatusDate,
    DeliveredStatusCode,
    DeliveredStatus,
    DeliveredAt,
    DeliveredDate,
}

enum Key {
    Field(Field),
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                use Field::*;
                Ok(Key::Field(match k {
                    "id" => Id,
                    "correlationId" => CorrelationId,
                    "destination" => Destination,
                    "carrierName" => CarrierName,
                    "sentStatusCode" => SentStatusCode,
                    "sentStatus" => SentStatus,
                    "sentAt" => SentAt,
                    "sentStatusAt" => SentStatusAt,
                    "sentDate" => SentDate,
                    "sentStatusDate" => SentStatusDate,
                    "deliveredStatusCode" => DeliveredStatusCode,
                    "deliveredStatus" => DeliveredStatus,
                    "deliveredAt" => DeliveredAt,
                    "deliveredDate" => DeliveredDate,
                    _ => return Ok(Key::Other),
                }))
            }
        }
        de.deserialize_identifier(V)
    }
}

/// A field's value: text or a number; anything else (objects, arrays, null) counts as absent.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Absent,
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(s.to_owned()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(n).map_or(Scalar::Float(n as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(n))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Absent)
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Absent)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Scalar, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Absent)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Scalar, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Absent)
            }
        }
        de.deserialize_any(V)
    }
}

impl Scalar {
    /// As text: trimmed, not empty; a number as JSON writes it.
    fn text(&self) -> Option<String> {
        match self {
            Scalar::Text(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Float(f) => serde_json::Number::from_f64(*f).map(|n| n.to_string()),
            _ => None,
        }
    }

    /// As an integer: a whole number, or text holding one.
    fn int(&self) -> Option<i64> {
        match self {
            Scalar::Int(n) => Some(*n),
            Scalar::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// One status object's fields smsdrop reads, as given.
#[derive(Debug, Default)]
struct RawStatus {
    id: bool,
    correlation_id: Option<Scalar>,
    destination: Option<Scalar>,
    carrier_name: Option<Scalar>,
    sent_status_code: Option<Scalar>,
    sent_status: Option<Scalar>,
    sent_at: Option<Scalar>,
    sent_status_at: Option<Scalar>,
    sent_date: Option<Scalar>,
    sent_status_date: Option<Scalar>,
    delivered_status_code: Option<Scalar>,
    delivered_status: Option<Scalar>,
    delivered_at: Option<Scalar>,
    delivered_date: Option<Scalar>,
}

impl RawStatus {
    fn set(&mut self, f: Field, v: Scalar) {
        let slot = match f {
            Field::Id => {
                self.id = true;
                return;
            }
            Field::CorrelationId => &mut self.correlation_id,
            Field::Destination => &mut self.destination,
            Field::CarrierName => &mut self.carrier_name,
            Field::SentStatusCode => &mut self.sent_status_code,
            Field::SentStatus => &mut self.sent_status,
            Field::SentAt => &mut self.sent_at,
            Field::SentStatusAt => &mut self.sent_status_at,
            Field::SentDate => &mut self.sent_date,
            Field::SentStatusDate => &mut self.sent_status_date,
            Field::DeliveredStatusCode => &mut self.delivered_status_code,
            Field::DeliveredStatus => &mut self.delivered_status,
            Field::DeliveredAt => &mut self.delivered_at,
            Field::DeliveredDate => &mut self.delivered_date,
        };
        *slot = Some(v);
    }

    fn looks_like_status(&self) -> bool {
        self.id
            || self.correlation_id.is_some()
            || self.sent_status_code.is_some()
            || self.delivered_status_code.is_some()
    }

    /// The update this object says; `None` without a correlation id (it cannot be matched).
    fn into_update(self, zone: Zone) -> Option<StatusUpdate> {
        let text = |v: &Option<Scalar>| v.as_ref().and_then(Scalar::text);
        let int = |v: &Option<Scalar>| v.as_ref().and_then(Scalar::int);
        let correlation_id = text(&self.correlation_id)?;
        // A time: epoch milliseconds, or an ISO 8601 date (either spelling SPEC.md gives).
        let at = |ms: [&Option<Scalar>; 2], dates: [&Option<Scalar>; 2]| {
            ms.iter().find_map(|v| int(v)).or_else(|| {
                dates
                    .iter()
                    .find_map(|v| text(v).and_then(|s| instant(&s, zone)))
            })
        };
        // A status: its code, else its name's code by SPEC.md's table (a name the table does not
        // know says nothing); the name is the table's for a code it knows.
        let status = |code: &Option<Scalar>, name: &Option<Scalar>| {
            let name = text(name);
            let code = int(code).or_else(|| name.as_deref().and_then(code_of))?;
            let name = code_name(code)
                .map(str::to_owned)
                .or(name.map(|n| n.to_ascii_uppercase()));
            Some((code, name))
        };
        let sent = status(&self.sent_status_code, &self.sent_status);
        let delivered = status(&self.delivered_status_code, &self.delivered_status);
        let (sent_code, sent_status) = sent.map_or((None, None), |(c, n)| (Some(c), n));
        let (delivered_code, delivered_status) =
            delivered.map_or((None, None), |(c, n)| (Some(c), n));
        Some(StatusUpdate {
            correlation_id,
            destination: text(&self.destination)
                .map(|d| d.chars().filter(char::is_ascii_digit).collect()),
            carrier: text(&self.carrier_name),
            sent_code,
            sent_status,
            sent_at: at(
                [&self.sent_at, &self.sent_status_at],
                [&self.sent_date, &self.sent_status_date],
            ),
            delivered_code,
            delivered_status,
            delivered_at: at([&self.delivered_at, &None], [&self.delivered_date, &None]),
        })
    }
}

/// An ISO 8601 time in epoch milliseconds; one without an offset is read in `zone`.
pub fn instant(s: &str, zone: Zone) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())?;
    let resolve = |n: chrono::NaiveDateTime| -> Option<i64> {
        match zone {
            Zone::Local => n
                .and_local_timezone(chrono::Local)
                .earliest()
                .map(|d| d.timestamp_millis()),
            Zone::Named(tz) => n
                .and_local_timezone(tz)
                .earliest()
                .map(|d| d.timestamp_millis()),
        }
    };
    // A time in a spring-forward gap does not exist on the wall clock: read it an hour on.
    resolve(naive).or_else(|| resolve(naive + chrono::Duration::hours(1)).map(|ms| ms - 3_600_000))
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
        let got = parse_statuses(&one, Zone::Local).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].correlation_id, "c1");
        assert_eq!(got[0].destination.as_deref(), Some("5511999990000"));
        assert_eq!(got[0].sent_code, Some(2));
        assert_eq!(got[0].sent_at, Some(1_700_000_000_000));
        let arr = json!([{"correlationId": "c2", "deliveredStatus": "not_delivered",
            "deliveredDate": "2026-12-01T10:00:00Z"}, {"id": "no-correlation"}]);
        let got = parse_statuses(&arr, Zone::Local).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivered_code, Some(104));
        assert_eq!(got[0].delivered_status.as_deref(), Some("NOT_DELIVERED"));
        assert_eq!(got[0].delivered_at, Some(1_796_119_200_000));
        let wrapped =
            json!({"total": 1, "statuses": [{"correlationId": "c3", "sentStatusCode": "202"}]});
        let got = parse_statuses(&wrapped, Zone::Local).unwrap();
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
            assert!(parse_statuses(&bad, Zone::Local).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_time_without_offset_is_the_batch_zones() {
        let sp = Zone::Named("America/Sao_Paulo".parse().unwrap());
        let body = json!({"correlationId": "c", "sentStatusCode": 2,
            "sentDate": "2026-12-07T15:55:49", "deliveredDate": "2026-12-07T15:56:00-03:00"});
        let got = parse_statuses(&body, sp).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2026-12-07T18:55:49Z").unwrap();
        assert_eq!(got[0].sent_at, Some(want.timestamp_millis()));
        assert_eq!(got[0].delivered_at, Some(want.timestamp_millis() + 11_000));
        let utc = parse_statuses(&body, Zone::Named(chrono_tz::UTC)).unwrap();
        assert_eq!(
            utc[0].sent_at,
            Some(want.timestamp_millis() - 3 * 3_600_000)
        );
        // A wall-clock time that does not exist (spring forward) is read an hour on.
        let ny = Zone::Named("America/New_York".parse().unwrap());
        let gap = instant("2026-03-08T02:30:00", ny).unwrap();
        let after = instant("2026-03-08T03:30:00", ny).unwrap();
        assert_eq!(gap, after - 3_600_000);
        assert_eq!(instant("not a time", ny), None);
    }

    #[test]
    fn a_status_named_only_is_mapped_by_the_table_and_an_unknown_name_says_nothing() {
        let body = json!([
            {"correlationId": "a", "sentStatus": "delivered_success"},
            {"correlationId": "b", "sentStatus": "QUEUED", "deliveredStatus": "NOT_DELIVERED"},
            {"correlationId": "c", "sentStatus": "QUEUED"},
            {"correlationId": "d", "sentStatusCode": 999, "sentStatus": "NEW_THING"},
        ]);
        let got = parse_statuses(&body, Zone::Local).unwrap();
        assert_eq!(
            (got[0].sent_code, got[0].sent_status.as_deref()),
            (Some(4), Some("DELIVERED_SUCCESS"))
        );
        assert_eq!(
            (got[1].sent_code, got[1].sent_status.as_deref()),
            (None, None)
        );
        assert_eq!(got[1].delivered_code, Some(104));
        assert_eq!(
            (
                got[2].sent_code,
                got[2].sent_status.as_deref(),
                got[2].delivered_code
            ),
            (None, None, None)
        );
        assert_eq!(
            (got[3].sent_code, got[3].sent_status.as_deref()),
            (Some(999), Some("NEW_THING"))
        );
    }

    #[test]
    fn a_long_answer_is_handed_on_in_slices_as_it_is_read() {
        let one = r#"{"id": "u", "correlationId": "c", "carrierName": "VIVO", "sentStatusCode": 2,
            "extraInfo": {"deep": [1, 2, {"x": "y"}]}, "campaignId": null, "tags": ["a"]}"#;
        let body = format!("[{}]", vec![one; 2 * SLICE + 5].join(","));
        let mut slices = vec![];
        read_statuses_from(body.as_bytes(), Zone::Local, &mut |s| {
            slices.push(s.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(slices, vec![SLICE, SLICE, 5]);
        // The same shapes as a parsed body: an envelope with one array, one object, blank.
        for (body, n) in [
            (format!(r#"{{"total": 2, "statuses": [{one}, {one}]}}"#), 2),
            (one.to_owned(), 1),
            (" \n ".to_owned(), 0),
            (String::new(), 0),
        ] {
            let mut got = 0;
            read_statuses_from(body.as_bytes(), Zone::Local, &mut |s| {
                got += s.len();
                Ok(())
            })
            .unwrap();
            assert_eq!(got, n, "{body}");
        }
        for bad in [
            "{\"a\": [], \"b\": []}",
            "[1, 2]",
            "3",
            "{\"x\": 1}",
            "[{}",
            "[] []",
        ] {
            let r = read_statuses_from(bad.as_bytes(), Zone::Local, &mut |_| Ok(()));
            assert!(matches!(r, Err(ReadError::Body(_))), "{bad}: {r:?}");
        }
        // A sink that fails stops the reading, and says so.
        let r = read_statuses_from(body.as_bytes(), Zone::Local, &mut |_| Err("full".into()));
        assert!(
            matches!(r, Err(ReadError::Sink(ref e)) if e == "full"),
            "{r:?}"
        );
    }
}
