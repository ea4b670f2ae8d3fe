//! The gateway simulator: every `poll` it looks at `<root>/upload` and moves each finished batch
//! file to `success/` or `error/`, the way SPEC.md says the real gateway answers.
//!
//! A file is judged once its modification time is `delay` old. Names starting with `.` (upload
//! temporaries) and anything but regular files are ignored. The rules come from
//! [`crate::batch`], shared with `convert`: the name must parse as a [`BatchName`], the content
//! must pass [`check_batch`]. A file without the `EOF` trailer waits until its size has not
//! changed for [`STALE_POLLS`] polls, then fails as incomplete. `error_rate` and `fail_every`
//! fail otherwise good files on purpose. A file is never moved over an existing one. Every
//! decision is appended to `<root>/gateway.log` (time, file, outcome, reason) and logged.

use crate::batch::{check_batch, BatchCheck, BatchName};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

/// Polls without a size change after which a file lacking `EOF` is judged incomplete.
pub const STALE_POLLS: u32 = 3;
/// The decision log under the root.
pub const LOG_FILE: &str = "gateway.log";

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub root: PathBuf,
    pub delay: Duration,
    pub poll: Duration,
    pub error_rate: f64,
    pub fail_every: Option<u32>,
    pub seed: u64,
    /// Per-message statuses for the files taken (the status interface), when it runs.
    pub statuses: Option<std::sync::Arc<std::sync::Mutex<super::statuses::Book>>>,
}

/// What becomes of a file, by the rules alone (before forced failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not finished yet: look again next poll.
    Wait,
    /// Processed; the detail for the log.
    Success(String),
    /// Refused, and why.
    Error(String),
}

/// Judges one file by SPEC.md's rules: its name, its bytes, and whether its size has stayed the
/// same long enough to call a file without `EOF` abandoned.
pub fn judge(name: Option<&str>, bytes: &[u8], stale: bool) -> Verdict {
    if name.and_then(BatchName::parse).is_none() {
        return Verdict::Error(
            "bad name: want <SUBACCOUNT>.<YYYYMMDD>.<SEQ>.txt (the real gateway would bill the \
             default subaccount)"
                .into(),
        );
    }
    match check_batch(bytes) {
        BatchCheck::Valid { messages } => Verdict::Success(format!("{messages} messages")),
        BatchCheck::Invalid(why) => Verdict::Error(why),
        BatchCheck::Incomplete if stale => Verdict::Error(incomplete_reason(bytes)),
        BatchCheck::Incomplete => Verdict::Wait,
    }
}

fn incomplete_reason(bytes: &[u8]) -> String {
    let hint = if bytes.ends_with(b"EOF\r\n") || bytes.ends_with(b"EOF\r") {
        " (CRLF line endings?)"
    } else if bytes.ends_with(b"\n\n") {
        " (blank line after EOF?)"
    } else {
        ""
    };
    format!("incomplete: no EOF last line and the size stopped changing{hint}")
}

/// A tiny xorshift64* generator: reproducible forced failures without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The running simulator; stops on [`Gateway::stop`] or drop.
pub struct Gateway {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts polling on a thread of its own.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(cfg: GatewayConfig) -> io::Result<Gateway> {
        let (tx, rx) = mpsc::channel::<()>();
        let poll = cfg.poll;
        let mut worker = Worker::new(cfg);
        let thread = thread::Builder::new()
            .name("sandbox-gateway".into())
            .spawn(move || loop {
                worker.poll();
                match rx.recv_timeout(poll) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            })?;
        Ok(Gateway {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the polling thread (idempotent).
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Size seen at the last poll, and for how many polls it stayed the same.
struct Seen {
    size: u64,
    unchanged: u32,
}

struct Worker {
    cfg: GatewayConfig,
    rng: XorShift,
    good: u64,
    seen: HashMap<OsString, Seen>,
    /// Files left in upload because their destination exists: judged and logged once, then
    /// left alone while that destination is there.
    stuck: HashMap<OsString, PathBuf>,
}

impl Worker {
    fn new(cfg: GatewayConfig) -> Worker {
        Worker {
            rng: XorShift::new(cfg.seed),
            cfg,
            good: 0,
            seen: HashMap::new(),
            stuck: HashMap::new(),
        }
    }

    fn poll(&mut self) {
        let upload = self.cfg.root.join("upload");
        let mut names: Vec<OsString> = match fs::read_dir(&upload) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
                .collect(),
            Err(_) => return,
        };
        names.sort();
        self.seen.retain(|n, _| names.contains(n));
        self.stuck
            .retain(|n, dest| names.contains(n) && fs::symlink_metadata(dest).is_ok());
        for name in names {
            self.consider(&upload, name);
        }
    }

    fn consider(&mut self, upload: &Path, name: OsString) {
        let path = upload.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return;
        };
        if !meta.is_file() || self.stuck.contains_key(&name) {
            return;
        }
        let seen = self.seen.entry(name.clone()).or_insert(Seen {
            size: meta.len(),
            unchanged: 0,
        });
        if seen.size == meta.len() {
            seen.unchanged += 1;
        } else {
            (seen.size, seen.unchanged) = (meta.len(), 0);
        }
        let stale = seen.unchanged > STALE_POLLS;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age < self.cfg.delay {
            return;
        }
        let Ok(bytes) = fs::read(&path) else {
            return;
        };
        let verdict = match judge(name.to_str(), &bytes, stale) {
            Verdict::Wait => return,
            Verdict::Success(detail) => match self.forced_failure() {
                Some(why) => Verdict::Error(format!("{why} ({detail} not sent)")),
                None => Verdict::Success(detail),
            },
            error => error,
        };
        let taken = matches!(verdict, Verdict::Success(_));
        if self.settle(&path, name.clone(), verdict) && taken {
            if let Some(book) = &self.cfg.statuses {
                book.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .add_file(name.to_str().unwrap_or(""), &bytes, SystemTime::now());
            }
        }
    }

    /// Counts a good file and says whether to fail it anyway.
    fn forced_failure(&mut self) -> Option<String> {
        self.good += 1;
        if let Some(n) = self.cfg.fail_every {
            if n > 0 && self.good.is_multiple_of(u64::from(n)) {
                return Some(format!("forced failure (fail_every {n})"));
            }
        }
        if self.cfg.error_rate > 0.0 && self.rng.next_f64() < self.cfg.error_rate {
            return Some(format!(
                "forced failure (error_rate {})",
                self.cfg.error_rate
            ));
        }
        None
    }

    /// Moves the file to its outcome folder, never over an existing file, and logs the decision.
    /// True when moved.
    fn settle(&mut self, path: &Path, name: OsString, verdict: Verdict) -> bool {
        let (dir, outcome, reason) = match verdict {
            Verdict::Success(r) => ("success", "success", r),
            Verdict::Error(r) => ("error", "error", r),
            Verdict::Wait => return false,
        };
        let dest = self.cfg.root.join(dir).join(&name);
        let shown = name.to_string_lossy().escape_debug().to_string();
        // A hard link fails when the destination exists: the gateway never overwrites.
        match fs::hard_link(path, &dest) {
            Ok(()) => {
                if let Err(e) = fs::remove_file(path) {
                    tracing::warn!(file = %shown, error = %e, "gateway: cannot remove from upload");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let why = format!("{dir}/{shown} already exists; left in upload");
                self.record(&shown, "stuck", &why);
                self.stuck.insert(name, dest);
                return false;
            }
            Err(e) => {
                tracing::warn!(file = %shown, error = %e, "gateway: cannot move the file");
                return false;
            }
        }
        self.seen.remove(&name);
        self.record(&shown, outcome, &reason);
        true
    }

    fn record(&self, file: &str, outcome: &str, reason: &str) {
        tracing::info!(file, outcome, reason, "gateway: decided");
        let time = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let line = format!("{time}\t{file}\t{outcome}\t{}\n", reason.escape_debug());
        let log = self.cfg.root.join(LOG_FILE);
        let written = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(log = %log.display(), error = %e, "gateway: cannot write its log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"number;text;correlationId;\n5511900000000;oi;a;\nEOF\n";

    #[test]
    fn judges_name_then_content() {
        let ok = Some("ACME.20260101.01.txt");
        assert_eq!(
            judge(ok, GOOD, false),
            Verdict::Success("1 messages".into())
        );
        for bad in [
            None,
            Some("ACME.txt"),
            Some("a b.20260101.01.txt"),
            Some("ACME.20261301.01.txt"),
        ] {
            assert!(
                matches!(judge(bad, GOOD, false), Verdict::Error(e) if e.starts_with("bad name"))
            );
        }
        assert_eq!(judge(ok, b"5511900000000;oi;;\n", false), Verdict::Wait);
        let Verdict::Error(e) = judge(ok, b"5511900000000;oi;;\n", true) else {
            panic!("stale incomplete file not refused");
        };
        assert!(e.starts_with("incomplete"), "{e}");
        let Verdict::Error(e) = judge(ok, b"5511900000000;oi;;\nEOF\r\n", true) else {
            panic!("CRLF file not refused");
        };
        assert!(e.contains("CRLF"), "{e}");
        let Verdict::Error(e) = judge(ok, b"5511900000000;oi;;\n123;x;;\nEOF\n", false) else {
            panic!("bad line not refused");
        };
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn forced_failures_follow_fail_every_and_error_rate() {
        let cfg = |fail_every, error_rate| GatewayConfig {
            root: PathBuf::new(),
            delay: Duration::ZERO,
            poll: Duration::from_millis(10),
            error_rate,
            fail_every,
            seed: 7,
            statuses: None,
        };
        let mut w = Worker::new(cfg(Some(3), 0.0));
        let fails: Vec<bool> = (0..6).map(|_| w.forced_failure().is_some()).collect();
        assert_eq!(fails, [false, false, true, false, false, true]);
        let mut w = Worker::new(cfg(None, 1.0));
        assert!((0..20).all(|_| w.forced_failure().is_some()));
        let mut w = Worker::new(cfg(None, 0.0));
        assert!((0..20).all(|_| w.forced_failure().is_none()));
        let mut w = Worker::new(cfg(None, 0.5));
        let n = (0..1000).filter(|_| w.forced_failure().is_some()).count();
        assert!((400..600).contains(&n), "{n}");
    }

    #[test]
    fn xorshift_stays_in_unit_interval_and_is_seeded() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        for _ in 0..1000 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x.to_bits(), b.next_f64().to_bits());
        }
        assert_ne!(XorShift::new(1).next_f64(), XorShift::new(2).next_f64());
    }
}
