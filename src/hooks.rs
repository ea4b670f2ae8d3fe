//! The outcome hook (`[report] on_outcome`), run beside the engine, never on its thread.
//!
//! A stage *queues* a hook: one small JSON file per job and event in `<state>/hooks/`, written
//! durably before the journal records the outcome as reported. A [`Runner`] thread takes the
//! files in order, runs the command (in its own process group, with an allow-listed
//! environment), and removes each file once its command has ended. So a hook that hangs cannot
//! hold up uploads nor systemd's watchdog, and a hook that did not finish (a crash, a stop)
//! runs again after the restart: at least once, as before.
//!
//! On timeout the whole process group is killed, not only the shell. The environment holds only
//! [`PASSED_THROUGH`] and the outcome's `SMSDROP_*` variables: no secret of any kind (SFTP,
//! status API, webhook, HTTP, journal) can reach a hook, whatever its variable is called.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopping runner lets a running hook finish before it is killed (and left queued,
/// to run again at the next start).
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the runner looks for queued hooks when nothing wakes it.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The parent's variables a hook gets (when set): what a script needs to find programs, write
/// text and tell the time. Nothing else passes.
pub const PASSED_THROUGH: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// Why the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The job's file outcome is known (`SMSDROP_EVENT=file`).
    File,
    /// The job's message tracking ended (`SMSDROP_EVENT=delivery`).
    Delivery,
    /// A replies file was written to the outbox (`SMSDROP_EVENT=replies`; no job).
    Replies,
}

impl Event {
    /// Its place in a queue file's name: a job's file hook runs before its delivery hook.
    fn order(self) -> u8 {
        match self {
            Event::File => 1,
            Event::Delivery => 2,
            Event::Replies => 3,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Event::File => "file",
            Event::Delivery => "delivery",
            Event::Replies => "replies",
        }
    }
}

/// One queued run: the `SMSDROP_*` variables it gets.
#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    job: i64,
    env: BTreeMap<String, String>,
}

/// The folder of queued hooks.
pub fn queue_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("hooks")
}

/// Queues the hook for `job`'s `event` with `env` (the outcome's `SMSDROP_*` variables); does
/// nothing without `[report] on_outcome`. Durable when it returns: record the outcome after.
///
/// # Errors
/// When the file cannot be written.
pub fn queue(cfg: &Config, job: i64, event: Event, mut env: Vec<(&str, String)>) -> io::Result<()> {
    if cfg.report.on_outcome.is_empty() {
        return Ok(());
    }
    env.push(("SMSDROP_EVENT", event.as_str().to_owned()));
    let queued = Queued {
        job,
        env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    };
    let dir = queue_dir(cfg);
    std::fs::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec(&queued).map_err(io::Error::other)?;
    crate::fsutil::write_durable(
        &dir.join(format!(
            "{job:012}-{}-{}.json",
            event.order(),
            event.as_str()
        )),
        &bytes,
    )
}

/// Queues the hook for a replies file written to the outbox (`SMSDROP_EVENT=replies`,
/// `SMSDROP_REPLIES_CSV`); its queue file is named after the outbox file, so it is queued once.
///
/// # Errors
/// When the file cannot be written.
pub fn queue_replies(cfg: &Config, csv: &std::path::Path) -> io::Result<()> {
    if cfg.report.on_outcome.is_empty() {
        return Ok(());
    }
    let name = csv.file_name().unwrap_or_default().to_string_lossy();
    let queued = Queued {
        job: 0,
        env: [
            (
                "SMSDROP_EVENT".to_owned(),
                Event::Replies.as_str().to_owned(),
            ),
            (
                "SMSDROP_REPLIES_CSV".to_owned(),
                csv.to_string_lossy().into_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    };
    let dir = queue_dir(cfg);
    std::fs::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec(&queued).map_err(io::Error::other)?;
    // After every job's hook queued before it (`0…` sorts first; replies go last by name).
    crate::fsutil::write_durable(&dir.join(format!("z-replies-{name}.json")), &bytes)
}

/// The thread that runs queued hooks; stops (leaving what it has not run queued) when dropped.
pub struct Runner {
    stop: Arc<AtomicBool>,
    dir: PathBuf,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts the runner for `cfg`'s hook (none without `[report] on_outcome`).
    pub fn start(cfg: &Config) -> Option<Runner> {
        let command = cfg.report.on_outcome.clone();
        let timeout = cfg.report.hook_timeout;
        if command.is_empty() {
            return None;
        }
        let dir = queue_dir(cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            command,
            timeout,
            dir: dir.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("smsdrop-hooks".into())
            .spawn(move || worker.run());
        match thread {
            Ok(t) => Some(Runner {
                stop,
                dir,
                timeout,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::error!(error = %e, "the hook runner could not start; hooks stay queued in {}", dir.display());
                None
            }
        }
    }

    /// Waits until every queued hook has run, or one hook's timeout has passed (a one-shot
    /// `send` ends with its hooks run).
    pub fn drain(&self) {
        let until = Instant::now() + self.timeout;
        while Instant::now() < until && !pending(&self.dir).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Queued files, oldest job first.
fn pending(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

struct Worker {
    command: Vec<String>,
    timeout: Duration,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
}

/// How a hook's run ended.
enum Ended {
    /// It exited (well or not) or was killed at its timeout: done with.
    Done,
    /// The runner is stopping and the hook was cut short: it stays queued.
    Stopped,
}

impl Worker {
    fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            for file in pending(&self.dir) {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                match self.run_file(&file) {
                    Ended::Done => {
                        if let Err(e) = std::fs::remove_file(&file) {
                            tracing::warn!(file = ?file, error = %e, "a hook ran but its queue file could not be removed; it will run again");
                        }
                    }
                    Ended::Stopped => return,
                }
            }
            std::thread::sleep(LOOK_EVERY);
        }
    }

    fn run_file(&self, file: &Path) -> Ended {
        let queued: Queued = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(file = ?file, error = %e, "a queued hook could not be read; skipped");
                return Ended::Done;
            }
        };
        let span = tracing::info_span!("hook", job = queued.job);
        let _g = span.enter();
        let (cmd, args) = self
            .command
            .split_first()
            .expect("a runner exists only with a command");
        let mut c = Command::new(cmd);
        c.args(args)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(&queued.env)
            .stdin(Stdio::null())
            // Its own process group: on timeout everything it started is killed with it.
            .process_group(0);
        match c.spawn() {
            Ok(child) => self.wait(child, cmd),
            Err(e) => {
                tracing::warn!(command = %cmd, error = %e, "on_outcome hook could not start");
                Ended::Done
            }
        }
    }

    fn wait(&self, mut child: Child, cmd: &str) -> Ended {
        let start = Instant::now();
        let mut stop_seen: Option<Instant> = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ended::Done,
                Ok(Some(status)) => {
                    tracing::warn!(command = %cmd, %status, "on_outcome hook failed");
                    return Ended::Done;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(command = %cmd, error = %e, "on_outcome hook: wait failed");
                    kill_group(&mut child);
                    return Ended::Done;
                }
            }
            if start.elapsed() > self.timeout {
                kill_group(&mut child);
                tracing::warn!(command = %cmd, "on_outcome hook killed (with every process it started) after {}s ([report] hook_timeout_secs)", self.timeout.as_secs());
                return Ended::Done;
            }
            if self.stop.load(Ordering::SeqCst) {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() > STOP_GRACE {
                    kill_group(&mut child);
                    tracing::info!(command = %cmd, "stopping: on_outcome hook cut short; it runs again at the next start");
                    return Ended::Stopped;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Kills the hook's whole process group, then reaps the hook.
fn kill_group(child: &mut Child) {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}
