//! The state folder's layout: the spool (converted batch files waiting for upload, named
//! `job-<id>-<part>.txt`), the archive and rejected folders, the reports, and the queue through
//! which `smsdrop send` hands files to a running daemon.
//!
//! Spool files are ours: rewritten when a conversion is redone, removed only once their batch is
//! final. This module never touches an input.

use crate::config::Config;
use std::io;
use std::path::PathBuf;

/// The spool folder, where converted batch files wait for upload.
pub fn spool_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("spool")
}

/// The spool file of a job's batch part.
pub fn spool_path(cfg: &Config, job_id: i64, part: u32) -> PathBuf {
    spool_dir(cfg).join(format!("job-{job_id}-{part}.txt"))
}

/// The folder where `smsdrop send` leaves files for the running daemon (see `handoff`).
pub fn queue_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("queue")
}

/// Creates the state folders and clears temporary files a crash left in the spool (their
/// conversion is redone).
///
/// # Errors
/// When a folder cannot be created.
pub fn prepare_dirs(cfg: &Config) -> io::Result<()> {
    for d in [
        &cfg.state.dir,
        &spool_dir(cfg),
        &queue_dir(cfg),
        &cfg.state.archive_dir,
        &cfg.state.rejected_dir,
        &cfg.report.dir,
    ] {
        std::fs::create_dir_all(d)?;
    }
    for e in std::fs::read_dir(spool_dir(cfg))?.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".smsdrop-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Removes a final batch's spool file (a missing one is fine).
pub fn remove(cfg: &Config, job_id: i64, part: u32) {
    let _ = std::fs::remove_file(spool_path(cfg, job_id, part));
}

/// What an earlier journal left in the state folder.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Converted batch files that may still be waiting to be sent.
    pub spool: Vec<PathBuf>,
    /// Files in the archive, rejected and reports folders.
    pub archived: usize,
    pub rejected: usize,
    pub reports: usize,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.spool.is_empty() && self.archived == 0 && self.rejected == 0 && self.reports == 0
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} spool batch file(s) that may never have been sent, {} archived and {} rejected \
             input(s), {} report file(s)",
            self.spool.len(),
            self.archived,
            self.rejected,
            self.reports
        )
    }
}

/// What the state folder holds from an earlier journal, when the journal itself is missing
/// (deleted, or a wrong `[state] dir`): empty when the journal exists.
pub fn leftovers(cfg: &Config) -> Leftovers {
    if cfg.state.dir.join("journal.db").exists() {
        return Leftovers::default();
    }
    let files = |d: &std::path::Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut spool: Vec<PathBuf> = files(&spool_dir(cfg))
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("job-") && n.ends_with(".txt")
        })
        .collect();
    spool.sort();
    Leftovers {
        spool,
        archived: files(&cfg.state.archive_dir).len(),
        rejected: files(&cfg.state.rejected_dir).len(),
        reports: files(&cfg.report.dir).len(),
    }
}
