//! The simulator's HTTP status interface (SPEC.md, "Per-message statuses"): for every message of
//! a file the gateway moved to `success/`, a first status after `delay` and, for carriers that
//! send them, a delivery report after twice that, decided by the number alone ([`decide`]).
//!
//! Served on the embedded HTTP stack: `GET /v1/sms/status/list` (statuses not returned before,
//! a top-level array), `POST /v1/sms/status/search` (`{"correlationIds": [...]}`, answered in an
//! object holding one array). Both want the `username` and `authenticationtoken` headers; like
//! the real gateway, a request less than a second after the previous one gets 429, and
//! `fail_first` answers the first requests 429 whatever their pace. With `webhook` set, every
//! status is also POSTed there as it happens (retried until taken).
//!
//! The same service plays the gateway's replies ([`super::replies`]): with `replies` on, some
//! customers answer `reply_delay` after their message's first status, served on
//! `GET /v1/sms/receive/list` (consuming) and `GET /v1/sms/receive/search`, under the same
//! headers and the same one-request-a-second budget, and POSTed to `reply_webhook` when set.
//! [`Service::inject_reply`] adds any reply a test wants.
//!
//! Every decision is appended to `<root>/statuses.log` (`correlation id, number, sent status,
//! delivered status, carrier`, tab-separated), every reply to `<root>/replies.log` (`id, number,
//! correlation id, text, receivedAt`), and every request to `<root>/status-requests.log`
//! (milliseconds since the epoch, method, path, answer), for tests to check against.

use super::replies::{self, Inbox, Sent};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The decision log under the root.
pub const DECISIONS: &str = "statuses.log";
/// The request log under the root.
pub const REQUESTS: &str = "status-requests.log";

/// What the gateway does with a message to a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub carrier: &'static str,
    pub sent: i64,
    /// The delivery report, when one comes.
    pub delivered: Option<i64>,
}

/// The outcome for a number, by its last digit: mostly delivered, and each kind of failure the
/// demo should show (SPEC.md's codes).
pub fn decide(number: &str) -> Decision {
    let d = |carrier, sent, delivered| Decision {
        carrier,
        sent,
        delivered,
    };
    match number.bytes().last().unwrap_or(b'0') {
        b'0' => d("VIVO", 2, Some(4)),
        b'1' => d("CLARO", 2, Some(4)),
        b'2' => d("TIM", 2, Some(4)),
        b'3' => d("VIVO", 2, Some(4)),
        b'4' => d("TIM", 2, Some(104)),
        b'5' => d("OI", 2, None),
        b'6' => d("CLARO", 202, None),
        b'7' => d("CLARO", 103, None),
        b'8' => d("VIVO", 204, None),
        _ => d("SERCOMTEL", 2, None),
    }
}

/// How the status interface behaves. (Debug hides the token.)
#[derive(Clone)]
pub struct StatusOptions {
    pub username: String,
    pub token: String,
    /// First status this long after the file is judged; the delivery report after twice this.
    pub delay: Duration,
    /// Answer the first this many requests 429.
    pub fail_first: u32,
    /// Where to POST statuses as they happen.
    pub webhook: Option<String>,
    /// Whether customers reply to some of the messages the carrier took (first status 2), as
    /// [`replies::decide`] says. Injected replies are served either way.
    pub replies: bool,
    /// A reply arrives this long after its message's first status; `None`: `delay`.
    pub reply_delay: Option<Duration>,
    /// The receive endpoints answer a top-level array instead of SPEC.md's envelope.
    pub bare_array: bool,
    /// Where to POST each reply (one JSON object) as it arrives.
    pub reply_webhook: Option<String>,
}

impl Default for StatusOptions {
    /// No credentials (set them), statuses after 2 s, replies on, no pushes.
    fn default() -> Self {
        StatusOptions {
            username: String::new(),
            token: String::new(),
            delay: Duration::from_secs(2),
            fail_first: 0,
            webhook: None,
            replies: true,
            reply_delay: None,
            bare_array: false,
            reply_webhook: None,
        }
    }
}

impl std::fmt::Debug for StatusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusOptions")
            .field("username", &self.username)
            .field("token", &"***")
            .field("delay", &self.delay)
            .field("fail_first", &self.fail_first)
            .field("webhook", &self.webhook)
            .field("replies", &self.replies)
            .field("reply_delay", &self.reply_delay)
            .field("bare_array", &self.bare_array)
            .field("reply_webhook", &self.reply_webhook)
            .finish()
    }
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("opts", &self.opts)
            .field("events", &self.events.len())
            .field("replies", &self.replies.len())
            .field("requests", &self.requests)
            .finish()
    }
}

struct Event {
    at: SystemTime,
    status: Value,
}

/// The statuses the gateway has decided, and who was told what.
pub struct Book {
    opts: StatusOptions,
    root: PathBuf,
    events: Vec<Event>,
    /// Events `list` returned so far (a prefix of those due, in order).
    listed: Vec<bool>,
    pushed: usize,
    last_request: Option<SystemTime>,
    requests: u32,
    next_id: u64,
    replies: Inbox,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn iso(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn name(code: i64) -> &'static str {
    crate::status::code_name(code).unwrap_or("UNKNOWN")
}

impl Book {
    pub fn new(opts: StatusOptions, root: &Path) -> Book {
        Book {
            opts,
            root: root.to_owned(),
            events: vec![],
            listed: vec![],
            pushed: 0,
            last_request: None,
            requests: 0,
            next_id: 1,
            replies: Inbox::default(),
        }
    }

    /// The messages of a file just moved to `success/`, its name unknown (replies then name
    /// the subaccount `default`).
    pub fn add_batch(&mut self, bytes: &[u8], now: SystemTime) {
        self.add_file("", bytes, now);
    }

    /// The messages of the file `file_name` just moved to `success/`: their statuses, and the
    /// replies of those customers who answer (for the subaccount the name gives).
    pub fn add_file(&mut self, file_name: &str, bytes: &[u8], now: SystemTime) {
        let text = String::from_utf8_lossy(bytes);
        let batch = crate::batch::BatchName::parse(file_name);
        let subaccount = batch.as_ref().map_or("default", |b| b.subaccount.as_str());
        let campaign = file_name.strip_suffix(".txt").filter(|_| batch.is_some());
        let reply_delay = self.opts.reply_delay.unwrap_or(self.opts.delay);
        let (mut log, mut replied) = (String::new(), String::new());
        for line in text.lines() {
            let f: Vec<&str> = line.split(';').collect();
            if f.len() < 3 || line == "EOF" || line.starts_with("number;") {
                continue;
            }
            let (number, correlation_id) = (f[0], f[2]);
            let (id, d, sent_at) = self.add_message(number, correlation_id, now);
            log.push_str(&format!(
                "{correlation_id}\t{number}\t{}\t{}\t{}\n",
                name(d.sent),
                d.delivered.map_or("", name),
                d.carrier
            ));
            if self.opts.replies && d.sent == 2 {
                let sent = Sent {
                    id: &id,
                    number,
                    correlation_id,
                    subaccount,
                    campaign,
                    carrier: d.carrier,
                    username: &self.opts.username,
                };
                if let Some(line) = self.replies.answer(&sent, sent_at + reply_delay) {
                    replied.push_str(&line);
                }
            }
        }
        self.listed.resize(self.events.len(), false);
        append(&self.root.join(DECISIONS), &log);
        append(&self.root.join(replies::LOG), &replied);
    }

    /// Decides one message's statuses and keeps them: its gateway id, the decision, and when
    /// its first status comes.
    fn add_message(
        &mut self,
        number: &str,
        correlation_id: &str,
        now: SystemTime,
    ) -> (String, Decision, SystemTime) {
        let d = decide(number);
        let id = format!("00000000-0000-4000-8000-{:012}", self.next_id);
        self.next_id += 1;
        let sent_at = now + self.opts.delay;
        let mut first = json!({
            "id": id, "correlationId": correlation_id, "destination": number,
            "carrierId": d.carrier.len(), "carrierName": d.carrier,
            "sentStatusCode": d.sent, "sentStatus": name(d.sent),
            "sentAt": ms(sent_at), "sentDate": iso(sent_at),
            "campaignId": null, "extraInfo": "",
        });
        // Half the first statuses use the other spelling of the time (SPEC.md allows both).
        if self.next_id.is_multiple_of(2) {
            let o = first.as_object_mut().expect("an object");
            o.remove("sentAt");
            o.remove("sentDate");
            o.insert("sentStatusAt".into(), json!(ms(sent_at)));
            o.insert("sentStatusDate".into(), json!(iso(sent_at)));
        }
        self.events.push(Event {
            at: sent_at,
            status: first.clone(),
        });
        if let Some(dr) = d.delivered {
            let at = now + self.opts.delay * 2;
            let mut report = first;
            let o = report.as_object_mut().expect("an object");
            o.insert("deliveredStatusCode".into(), json!(dr));
            o.insert("deliveredStatus".into(), json!(name(dr)));
            o.insert("deliveredAt".into(), json!(ms(at)));
            o.insert("deliveredDate".into(), json!(iso(at)));
            self.events.push(Event { at, status: report });
        }
        (id, d, sent_at)
    }

    /// Adds `reply` as the gateway would hold it, arrived now (see [`Inbox::inject`]).
    pub fn inject_reply(&mut self, reply: Value) {
        let line = self.replies.inject(reply, SystemTime::now());
        append(&self.root.join(replies::LOG), &line);
    }

    /// Whether a request may be answered (credentials, pace, forced 429s); the refusal if not.
    fn admit(&mut self, headers: &HeaderMap, what: &str) -> Result<(), (StatusCode, String)> {
        let now = SystemTime::now();
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        let answer = if header("username") != self.opts.username
            || header("authenticationtoken") != self.opts.token
        {
            Err((
                StatusCode::UNAUTHORIZED,
                "bad username or authenticationtoken\n".into(),
            ))
        } else if self.requests < self.opts.fail_first {
            Err((StatusCode::TOO_MANY_REQUESTS, "slow down (forced)\n".into()))
        } else if self
            .last_request
            .is_some_and(|l| now.duration_since(l).unwrap_or_default() < Duration::from_secs(1))
        {
            Err((
                StatusCode::TOO_MANY_REQUESTS,
                "1 request per second\n".into(),
            ))
        } else {
            Ok(())
        };
        self.requests += 1;
        self.last_request = Some(now);
        let code = answer.as_ref().map_or_else(|(c, _)| c.as_u16(), |()| 200);
        append(
            &self.root.join(REQUESTS),
            &format!("{}\t{what}\t{code}\n", ms(now)),
        );
        answer
    }

    fn list(&mut self) -> Vec<Value> {
        let now = SystemTime::now();
        let mut out = vec![];
        for (i, e) in self.events.iter().enumerate() {
            if e.at <= now && !self.listed[i] {
                self.listed[i] = true;
                out.push(e.status.clone());
            }
        }
        out
    }

    fn search(&self, ids: &[String]) -> Vec<Value> {
        let now = SystemTime::now();
        // The latest status of each message asked for.
        let mut latest: Vec<(String, Value)> = vec![];
        for e in self.events.iter().filter(|e| e.at <= now) {
            let id = e.status["correlationId"].as_str().unwrap_or("").to_owned();
            if !ids.contains(&id) {
                continue;
            }
            let msg = e.status["id"].as_str().unwrap_or("").to_owned();
            match latest.iter_mut().find(|(m, _)| *m == msg) {
                Some((_, v)) => *v = e.status.clone(),
                None => latest.push((msg, e.status.clone())),
            }
        }
        latest.into_iter().map(|(_, v)| v).collect()
    }

    /// Statuses due and not yet pushed to the webhook.
    fn due_pushes(&self) -> Vec<(usize, Value)> {
        let now = SystemTime::now();
        self.events
            .iter()
            .enumerate()
            .skip(self.pushed)
            .take_while(|(_, e)| e.at <= now)
            .map(|(i, e)| (i, e.status.clone()))
            .collect()
    }
}

fn append(path: &Path, text: &str) {
    if text.is_empty() {
        return;
    }
    let r = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = r {
        tracing::warn!(log = %path.display(), error = %e, "status simulator: cannot write its log");
    }
}

/// The book, shared by the gateway, the HTTP routes and the pusher.
pub type Shared = Arc<Mutex<Book>>;

fn lock(b: &Shared) -> std::sync::MutexGuard<'_, Book> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The status interface's routes.
pub fn router(book: Shared) -> Router {
    Router::new()
        .route("/v1/sms/status/list", get(list))
        .route("/v1/sms/status/search", post(search))
        .route("/v1/sms/receive/list", get(receive_list))
        .route("/v1/sms/receive/search", get(receive_search))
        .with_state(book)
}

async fn list(State(book): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut b = lock(&book);
    if let Err(refused) = b.admit(&headers, "GET list") {
        return refused;
    }
    (StatusCode::OK, Value::Array(b.list()).to_string())
}

async fn search(
    State(book): State<Shared>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> (StatusCode, String) {
    let mut b = lock(&book);
    if let Err(refused) = b.admit(&headers, "POST search") {
        return refused;
    }
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            "want JSON {\"correlationIds\": [...]}\n".into(),
        );
    };
    let ids: Vec<String> = body["correlationIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let found = b.search(&ids);
    (
        StatusCode::OK,
        json!({ "total": found.len(), "statuses": found }).to_string(),
    )
}

async fn receive_list(
    State(book): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mut b = lock(&book);
    if let Err(refused) = b.admit(&headers, "GET receive/list") {
        return refused;
    }
    let bare = b.opts.bare_array;
    let found = b.replies.answer_list(&q, SystemTime::now(), bare);
    (StatusCode::OK, found.to_string())
}

async fn receive_search(
    State(book): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mut b = lock(&book);
    if let Err(refused) = b.admit(&headers, "GET receive/search") {
        return refused;
    }
    match b
        .replies
        .answer_search(&q, SystemTime::now(), b.opts.bare_array)
    {
        Ok(found) => (StatusCode::OK, found.to_string()),
        Err(why) => (StatusCode::BAD_REQUEST, why),
    }
}

/// Pushes due statuses to the webhook, one POST each, in order; a refusal or an unreachable
/// webhook is tried again next time. Returns how many were taken.
pub fn push_due(book: &Shared, agent: &ureq::Agent, url: &str) -> usize {
    let due = lock(book).due_pushes();
    let mut taken = 0;
    for (i, status) in due {
        let ok = agent
            .post(url)
            .send_json(&status)
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 422);
        if !ok {
            break;
        }
        lock(book).pushed = i + 1;
        taken += 1;
    }
    taken
}

/// Pushes arrived replies to `url`, one POST each, by arrival; a refusal (but 422, a reply
/// the receiver will never take) or an unreachable URL is tried again next time. Returns how
/// many were taken.
pub fn push_due_replies(book: &Shared, agent: &ureq::Agent, url: &str) -> usize {
    let due = lock(book).replies.due_pushes(SystemTime::now());
    let mut taken = 0;
    for (i, reply) in due {
        let ok = agent
            .post(url)
            .send_json(&reply)
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 422);
        if !ok {
            break;
        }
        lock(book).replies.mark_pushed(i);
        taken += 1;
    }
    taken
}

/// Runs `push` every 200 ms on its own thread until `stop`.
fn spawn_pusher(
    name: &str,
    stop: Arc<AtomicBool>,
    push: impl Fn(&ureq::Agent) + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                push(&agent);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
}

/// The status interface running: its HTTP server, and the webhook pushers when asked for.
pub struct Service {
    book: Shared,
    http: crate::http::HttpServer,
    stop: Arc<AtomicBool>,
    pushers: Vec<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Serves the interface on `addr`, logging under `root`.
    ///
    /// # Errors
    /// When the address cannot be bound or a thread cannot start.
    pub fn start(addr: SocketAddr, opts: &StatusOptions, root: &Path) -> io::Result<Service> {
        let book = Arc::new(Mutex::new(Book::new(opts.clone(), root)));
        let http = crate::http::HttpServer::start(
            vec![(addr, router(book.clone()))],
            crate::http::Limits::default(),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut service = Service {
            book: book.clone(),
            http,
            stop: stop.clone(),
            pushers: vec![],
        };
        if let Some(url) = opts.webhook.clone() {
            let book = book.clone();
            service.pushers.push(spawn_pusher(
                "sandbox-webhook",
                stop.clone(),
                move |agent| {
                    push_due(&book, agent, &url);
                },
            )?);
        }
        if let Some(url) = opts.reply_webhook.clone() {
            service
                .pushers
                .push(spawn_pusher("sandbox-replies", stop, move |agent| {
                    push_due_replies(&book, agent, &url);
                })?);
        }
        Ok(service)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.http.addrs()[0]
    }

    /// The statuses decided so far (the gateway adds to it).
    pub fn book(&self) -> Shared {
        self.book.clone()
    }

    /// Adds a reply as the gateway would hold it, arrived now: any JSON, so tests can send
    /// replies to unknown messages, the same `id` twice, or an old `receivedAt` (epoch ms; set
    /// to now when missing). Listed, searched, pushed and logged like a decided reply.
    pub fn inject_reply(&self, reply: Value) {
        lock(&self.book).inject_reply(reply);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for p in self.pushers.drain(..) {
            let _ = p.join();
        }
    }
}
