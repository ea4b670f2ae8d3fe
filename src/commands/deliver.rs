//! `smsdrop run` (the daemon) and `smsdrop send FILE...` (the same pipeline for named files).

use crate::config::{Config, SftpConfig};
use crate::daemon::{job_done, DaemonError, Engine};
use crate::journal::{Job, JobState, Journal};
use crate::lock::{LockError, StateLock};
use crate::remote::sftp::{check_secret_permissions, SftpRemote};
use crate::Outcome;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Errors that stop `run` or `send`.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Bad configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// The engine stopped on a failure (exit 1).
    #[error(transparent)]
    Engine(#[from] DaemonError),
    /// Another process owns the state folder, or the lock failed (exit 1).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Handing files to the running daemon failed (exit 1).
    #[error("{0}")]
    Handoff(String),
}

/// The `[sftp]` section, or a message saying it is needed; warns about (or refuses) secret files
/// others can read.
///
/// # Errors
/// [`DeliverError::Config`].
pub fn sftp_config(cfg: &Config) -> Result<SftpConfig, DeliverError> {
    let sftp = cfg.sftp.clone().ok_or_else(|| {
        DeliverError::Config(format!(
            "config file {}: no [sftp] section: smsdrop needs the gateway's host, username and \
             credentials to deliver (see config/smsdrop.example.toml)",
            cfg.source.display()
        ))
    })?;
    let warnings = check_secret_permissions(&sftp);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if sftp.strict_permissions && !warnings.is_empty() {
        return Err(DeliverError::Config(format!(
            "{} (strict_permissions = true refuses to start)",
            warnings.join("; ")
        )));
    }
    Ok(sftp)
}

fn engine(cfg: &Config, lock: StateLock) -> Result<Engine, DeliverError> {
    let sftp = sftp_config(cfg)?;
    crate::daemon::warn_local_zone(cfg);
    let engine = Engine::new(cfg.clone(), Box::new(SftpRemote::new(sftp)), lock)?;
    engine
        .stopper()
        .on_signals()
        .map_err(|e| DeliverError::Engine(DaemonError::Setup(format!("signal handlers: {e}"))))?;
    Ok(engine)
}

/// Runs the daemon until SIGTERM/SIGINT.
///
/// # Errors
/// [`DeliverError`].
pub fn run(cfg: &Config) -> Result<Outcome, DeliverError> {
    sftp_config(cfg)?;
    let lock = StateLock::acquire(&cfg.state.dir)?;
    engine(cfg, lock)?.run()?;
    Ok(Outcome::Ok)
}

/// Sends named files and waits for their outcomes (unless `wait` is false). When a daemon owns
/// the state folder, the files are handed to it through the queue and `send` follows their jobs
/// in the journal; should that daemon stop, `send` takes the lock and finishes the work itself.
///
/// # Errors
/// [`DeliverError`].
pub fn send(cfg: &Config, files: &[PathBuf], wait: bool) -> Result<Outcome, DeliverError> {
    sftp_config(cfg)?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |jobs: &[Job]| {
        if tty {
            print_progress(jobs);
        }
    };
    let (jobs, labels) = match StateLock::acquire(&cfg.state.dir) {
        Ok(lock) => {
            let jobs = engine(cfg, lock)?.send(files, wait, &mut progress)?;
            let labels: Vec<PathBuf> = jobs.iter().map(|j| j.input_path.clone()).collect();
            (jobs, labels)
        }
        Err(LockError::Held { pid, .. }) => {
            for f in files {
                if !f.is_file() {
                    return Err(DeliverError::Handoff(format!(
                        "{}: not found or not a file; nothing was handed over",
                        f.display()
                    )));
                }
            }
            let queued = crate::handoff::enqueue(cfg, files).map_err(|e| {
                DeliverError::Handoff(format!("handing files to the running daemon: {e}"))
            })?;
            tracing::info!(
                daemon_pid = pid,
                files = queued.len(),
                "a daemon owns the state folder; handed the files to it"
            );
            let jobs = follow_queued(cfg, &queued, wait, &mut progress)?;
            let labels: Vec<PathBuf> = jobs
                .iter()
                .map(|j| {
                    queued
                        .iter()
                        .position(|q| *q == j.input_path)
                        .map_or_else(|| j.input_path.clone(), |i| files[i].clone())
                })
                .collect();
            (jobs, labels)
        }
        Err(e) => return Err(e.into()),
    };
    if tty {
        eprintln!();
    }
    Ok(print_summary(cfg, &jobs, &labels, files.len(), wait))
}

/// Follows the jobs of queued files in the journal (read-only) until each is done; takes over
/// when the daemon that owned the state folder stops.
fn follow_queued(
    cfg: &Config,
    queued: &[PathBuf],
    wait: bool,
    progress: &mut dyn FnMut(&[Job]),
) -> Result<Vec<Job>, DeliverError> {
    loop {
        if let Ok(lock) = StateLock::acquire(&cfg.state.dir) {
            tracing::info!("the daemon stopped; finishing the handed-over files here");
            return Ok(engine(cfg, lock)?.send_queued(queued, wait, progress)?);
        }
        let jobs = match Journal::open_read_only(&cfg.state.dir) {
            Ok(Some(j)) => queued
                .iter()
                .filter_map(|q| j.jobs_with_input(q).ok().and_then(|mut v| v.pop()))
                .collect(),
            _ => vec![],
        };
        progress(&jobs);
        if jobs.len() == queued.len() && jobs.iter().all(|j| job_done(j, wait)) {
            return Ok(jobs);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn print_progress(jobs: &[Job]) {
    let count = |s: &[JobState]| jobs.iter().filter(|j| s.contains(&j.state)).count();
    let up = count(&[
        JobState::Uploaded,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Expired,
    ]);
    eprint!(
        "\r{} file(s): {up} uploaded, {} succeeded, {} failed, {} rejected   ",
        jobs.len(),
        count(&[JobState::Succeeded]),
        count(&[JobState::Failed, JobState::Expired]),
        count(&[JobState::Rejected])
    );
}

/// One line per job; the exit code: 0 when every file went through with no rejected row.
fn print_summary(
    cfg: &Config,
    jobs: &[Job],
    labels: &[PathBuf],
    expected: usize,
    wait: bool,
) -> Outcome {
    let mut out = std::io::stdout().lock();
    let mut all_good = jobs.len() == expected;
    for (j, label) in jobs.iter().zip(labels) {
        let good = j.rows_rejected == 0
            && (j.state == JobState::Succeeded || (!wait && j.state == JobState::Uploaded));
        all_good &= good;
        let reason = j
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}: {} ({} rows sent, {} rejected){reason}",
            label.display(),
            j.state.as_str(),
            j.rows_sent,
            j.rows_rejected
        );
    }
    if jobs.iter().any(|j| j.state == JobState::Held) {
        let _ = writeln!(
            out,
            "held files go out when their send window opens, sent by `smsdrop run` (or a later \
             `smsdrop send`); `smsdrop release JOB` sends one now"
        );
    }
    let _ = writeln!(out, "reports: {}", cfg.report.dir.display());
    if all_good {
        Outcome::Ok
    } else {
        Outcome::Partial
    }
}
