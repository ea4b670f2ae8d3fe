//! A gateway simulator: a background thread that polls `<home>/upload/` and moves each complete
//! batch file to `success/` or `error/` (same name) by SPEC.md's rules, recording what it did so
//! tests can check exactly-once delivery.
//!
//! Self-contained on purpose (it does not use the crate's own checks, so a bug there cannot hide
//! itself). Rules:
//! - names starting with `.` are temp files still being written: ignored; directories ignored.
//! - name must be `<SUB>.<YYYYMMDD>.<SEQ>.txt` (SUB `[A-Za-z0-9_-]+`, 8-digit date, SEQ >= 2
//!   digits), else error.
//! - a file whose last line is not `EOF` (one trailing `\n` allowed) may still be being written:
//!   it goes to error only once its size is unchanged for [`GatewayBuilder::incomplete_after_polls`]
//!   polls.
//! - content: UTF-8; optional first line exactly `number;text;correlationId;`; then message lines
//!   `number;text;correlationId;` (number 10-15 digits, text 1-1280 characters, id at most 64
//!   characters, no CR); at least one message; last line `EOF`. Anything else: error.
//! - never overwrites: if the destination name exists, the file stays in `upload/` and a
//!   `duplicate name` error is recorded (once): a test failure signal in itself.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The optional header line.
pub const HEADER: &str = "number;text;correlationId;";
const MAX_TEXT_CHARS: usize = 1280;
const MAX_ID_CHARS: usize = 64;

/// One processed file: `(name, success, why)`.
pub type Processed = (String, bool, String);

/// Settings for a [`Gateway`]; start it with [`GatewayBuilder::start`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    home: PathBuf,
    poll: Duration,
    fail_every: usize,
    delay: Duration,
    incomplete_after_polls: u32,
    dirs: [String; 3],
    clean_success: bool,
}

/// A running gateway simulator; [`Gateway::stop`] or drop stops its thread.
#[derive(Debug)]
pub struct Gateway {
    home: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    processed: Vec<Processed>,
    messages: HashMap<String, usize>,
    total_messages: usize,
    polls: u64,
}

impl GatewayBuilder {
    /// How often `upload/` is listed (default 100 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Every `n`-th file that would succeed goes to `error/` instead (0 = never, the default).
    pub fn fail_every(mut self, n: usize) -> Self {
        self.fail_every = n;
        self
    }

    /// A file is moved only once it has been seen in `upload/` for at least this long
    /// (a slow gateway; default 0).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Polls with an unchanged size after which a file without `EOF` goes to error (default 2).
    pub fn incomplete_after_polls(mut self, polls: u32) -> Self {
        self.incomplete_after_polls = polls;
        self
    }

    /// Removes each file from `success/` right after moving it there (a gateway that cleans).
    pub fn clean_success(mut self) -> Self {
        self.clean_success = true;
        self
    }

    /// Folder names under home (default `upload`, `success`, `error`).
    pub fn dir_names(mut self, upload: &str, success: &str, error: &str) -> Self {
        self.dirs = [upload.into(), success.into(), error.into()];
        self
    }

    /// Starts the polling thread.
    pub fn start(self) -> Gateway {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let home = self.home.clone();
        let worker_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("gateway-sim".into())
            .spawn(move || {
                let mut worker = Worker::new(self, worker_shared);
                loop {
                    worker.poll();
                    match stop_rx.recv_timeout(worker.cfg.poll) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            })
            .expect("spawning the gateway simulator thread");
        Gateway {
            home,
            shared,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Gateway {
    /// Settings with defaults for the SFTP home at `home`.
    pub fn builder(home: impl Into<PathBuf>) -> GatewayBuilder {
        GatewayBuilder {
            home: home.into(),
            poll: Duration::from_millis(100),
            fail_every: 0,
            delay: Duration::ZERO,
            incomplete_after_polls: 2,
            dirs: ["upload".into(), "success".into(), "error".into()],
            clean_success: false,
        }
    }

    /// Starts a gateway with default settings on `home`.
    pub fn start(home: impl Into<PathBuf>) -> Gateway {
        Self::builder(home).start()
    }

    /// The home folder it watches.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Every file handled so far, in order: `(name, success, why)`. Duplicate-name refusals are
    /// recorded too (with `success == false` and a `why` starting `duplicate name`).
    pub fn processed(&self) -> Vec<Processed> {
        self.lock().processed.clone()
    }

    /// How many times each correlation id appeared across all files moved to success.
    pub fn messages(&self) -> HashMap<String, usize> {
        self.lock().messages.clone()
    }

    /// Messages in all files moved to success.
    pub fn total_messages(&self) -> usize {
        self.lock().total_messages
    }

    /// Polls completed so far.
    pub fn polls(&self) -> u64 {
        self.lock().polls
    }

    /// Waits until `name` has been handled; its `(success, why)`, or `None` on timeout.
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Option<(bool, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lock()
                .processed
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, ok, why)| (*ok, why.clone()));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `count` files have been handled (or `timeout`); returns them all.
    pub fn wait_processed(&self, count: usize, timeout: Duration) -> Vec<Processed> {
        let deadline = Instant::now() + timeout;
        while self.lock().processed.len() < count && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.processed()
    }

    /// Waits until `more` further polls have completed (e.g. to assert nothing got moved).
    pub fn wait_polls(&self, more: u64) {
        let target = self.polls() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.polls() < target && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the polling thread (idempotent).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the polling thread remembers about a file in `upload/`.
struct Seen {
    first_seen: Instant,
    size: u64,
    unchanged_polls: u32,
}

struct Worker {
    cfg: GatewayBuilder,
    shared: Arc<Mutex<Shared>>,
    seen: HashMap<String, Seen>,
    duplicates: HashSet<String>,
    succeeded: usize,
}

impl Worker {
    fn new(cfg: GatewayBuilder, shared: Arc<Mutex<Shared>>) -> Self {
        Worker {
            cfg,
            shared,
            seen: HashMap::new(),
            duplicates: HashSet::new(),
            succeeded: 0,
        }
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.cfg.home.join(&self.cfg.dirs[i])
    }

    fn poll(&mut self) {
        let mut names: Vec<String> = fs::read_dir(self.dir(0))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        self.seen.retain(|n, _| names.contains(n));
        for name in names {
            self.consider(&name);
        }
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).polls += 1;
    }

    fn consider(&mut self, name: &str) {
        let path = self.dir(0).join(name);
        let Ok(meta) = fs::metadata(&path) else {
            return;
        };
        let now = Instant::now();
        let seen = self.seen.entry(name.to_owned()).or_insert(Seen {
            first_seen: now,
            size: meta.len(),
            unchanged_polls: 0,
        });
        if seen.size == meta.len() {
            seen.unchanged_polls += 1;
        } else {
            seen.size = meta.len();
            seen.unchanged_polls = 0;
        }
        let (stale, age) = (
            seen.unchanged_polls > self.cfg.incomplete_after_polls,
            now - seen.first_seen,
        );
        let verdict = if let Err(why) = check_name(name) {
            Err(why)
        } else {
            let Ok(bytes) = fs::read(&path) else {
                return;
            };
            match check_content(&bytes) {
                Content::Done(v) => v,
                Content::Incomplete if stale => Err(incomplete_reason(&bytes)),
                Content::Incomplete => return,
            }
        };
        if age < self.cfg.delay {
            return;
        }
        let forced = verdict.is_ok()
            && self.cfg.fail_every > 0
            && (self.succeeded + 1).is_multiple_of(self.cfg.fail_every);
        let success = verdict.is_ok() && !forced;
        let dest = self.dir(if success { 1 } else { 2 }).join(name);
        if dest.exists() {
            if self.duplicates.insert(name.to_owned()) {
                let why = format!(
                    "duplicate name: {}/{name} already exists; left in upload",
                    self.cfg.dirs[if success { 1 } else { 2 }]
                );
                self.record(name, false, why, &[]);
            }
            return;
        }
        if fs::rename(&path, &dest).is_err() {
            return; // removed meanwhile (or the folder is missing): look again next poll
        }
        self.seen.remove(name);
        match verdict {
            Ok(ids) if forced => {
                self.succeeded += 1;
                let why = format!(
                    "forced failure (fail_every {}); {} messages not sent",
                    self.cfg.fail_every,
                    ids.len()
                );
                self.record(name, false, why, &[]);
            }
            Ok(ids) => {
                self.succeeded += 1;
                self.record(name, true, format!("{} messages", ids.len()), &ids);
                if self.cfg.clean_success {
                    let _ = fs::remove_file(&dest);
                }
            }
            Err(why) => self.record(name, false, why, &[]),
        }
    }

    fn record(&self, name: &str, success: bool, why: String, ids: &[String]) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            *shared.messages.entry(id.clone()).or_default() += 1;
        }
        shared.total_messages += ids.len();
        shared.processed.push((name.to_owned(), success, why));
    }
}

/// Checks `<SUB>.<YYYYMMDD>.<SEQ>.txt`.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = |what: &str| {
        Err(format!(
            "bad name {name:?}: {what} (want <SUB>.<YYYYMMDD>.<SEQ>.txt)"
        ))
    };
    let Some(stem) = name.strip_suffix(".txt") else {
        return bad("no .txt suffix");
    };
    let parts: Vec<&str> = stem.split('.').collect();
    let [sub, date, seq] = parts[..] else {
        return bad("not three dot-separated parts before .txt");
    };
    if sub.is_empty()
        || !sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("subaccount must be letters, digits, '_' or '-'");
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return bad("date must be 8 digits");
    }
    if seq.len() < 2 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return bad("sequence must be at least 2 digits");
    }
    Ok(())
}

/// Result of reading a file in `upload/`.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    /// No `EOF` last line yet: maybe still being written.
    Incomplete,
    /// Finished: the correlation ids of its messages (one per message), or why it is invalid.
    Done(Result<Vec<String>, String>),
}

/// Checks a whole batch file's bytes.
pub fn check_content(bytes: &[u8]) -> Content {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body != b"EOF" && !body.ends_with(b"\nEOF") {
        return Content::Incomplete;
    }
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return Content::Done(Err(format!("not UTF-8: {e}"))),
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // the EOF line
    let skip = usize::from(lines.first() == Some(&HEADER));
    if lines.len() == skip {
        return Content::Done(Err("no message lines before EOF".into()));
    }
    let mut ids = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate().skip(skip) {
        match check_line(line) {
            Ok(id) => ids.push(id.to_owned()),
            Err(e) => return Content::Done(Err(format!("line {}: {e}: {line:?}", i + 1))),
        }
    }
    Content::Done(Ok(ids))
}

/// Checks one message line; its correlation id.
pub fn check_line(line: &str) -> Result<&str, String> {
    if line.contains('\r') {
        return Err("contains CR (CRLF line endings?)".into());
    }
    if line.starts_with('\u{feff}') {
        return Err("starts with a UTF-8 BOM".into());
    }
    let fields: Vec<&str> = line.split(';').collect();
    let [number, text, id, ""] = fields[..] else {
        return Err(format!(
            "want `number;text;correlationId;` (3 fields and a trailing ';'), found {} ';'",
            fields.len() - 1
        ));
    };
    if !(10..=15).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("number {number:?} is not 10-15 digits"));
    }
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(format!(
            "text has {chars} characters (1 to {MAX_TEXT_CHARS})"
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "correlation id longer than {MAX_ID_CHARS} characters"
        ));
    }
    Ok(id)
}

fn incomplete_reason(bytes: &[u8]) -> String {
    let hint = if bytes.ends_with(b"EOF\r\n") || bytes.ends_with(b"EOF\r") {
        " (CRLF line endings?)"
    } else if bytes.ends_with(b"\n\n") {
        " (blank line after EOF?)"
    } else {
        ""
    };
    format!("incomplete: no EOF last line and size unchanged{hint}")
}
