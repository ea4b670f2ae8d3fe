//! `smsdrop run` (the daemon) and `smsdrop send FILE...` (the same pipeline for named files).

use crate::config::{Config, SftpConfig};
use crate::daemon::{DaemonError, Engine};
use crate::journal::{Job, JobState};
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

fn engine(cfg: &Config) -> Result<Engine, DeliverError> {
    let sftp = sftp_config(cfg)?;
    Ok(Engine::new(cfg.clone(), Box::new(SftpRemote::new(sftp)))?)
}

/// Runs the daemon until SIGTERM/SIGINT.
///
/// # Errors
/// [`DeliverError`].
pub fn run(cfg: &Config) -> Result<Outcome, DeliverError> {
    let mut engine = engine(cfg)?;
    engine
        .stopper()
        .on_signals()
        .map_err(|e| DeliverError::Engine(DaemonError::Setup(format!("signal handlers: {e}"))))?;
    engine.run()?;
    Ok(Outcome::Ok)
}

/// Sends named files and waits for their outcomes (unless `wait` is false).
///
/// # Errors
/// [`DeliverError`].
pub fn send(cfg: &Config, files: &[PathBuf], wait: bool) -> Result<Outcome, DeliverError> {
    let mut engine = engine(cfg)?;
    engine
        .stopper()
        .on_signals()
        .map_err(|e| DeliverError::Engine(DaemonError::Setup(format!("signal handlers: {e}"))))?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |jobs: &[Job]| {
        if tty {
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
    };
    let jobs = engine.send(files, wait, &mut progress)?;
    if tty {
        eprintln!();
    }
    let mut out = std::io::stdout().lock();
    let mut all_good = jobs.len() == files.len();
    for j in &jobs {
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
            j.input_path.display(),
            j.state.as_str(),
            j.rows_sent,
            j.rows_rejected
        );
    }
    let _ = writeln!(out, "reports: {}", cfg.report.dir.display());
    Ok(if all_good {
        Outcome::Ok
    } else {
        Outcome::Partial
    })
}
