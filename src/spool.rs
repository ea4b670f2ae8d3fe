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
