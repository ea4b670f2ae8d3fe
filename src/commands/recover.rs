//! `smsdrop recover [--yes]`: after the journal was lost (deleted, or the state folder restored
//! without it), lists what the state folder still holds; with `--yes`, sets it all aside in
//! `<state>/recovered-<time>/` (nothing is deleted) and queues every spool batch file again as a
//! new job, under a new name checked against the server. Those batch files may already have gone
//! out: run it only after checking with the gateway (the list says which files they are).

use crate::config::Config;
use crate::journal::{JobState, Journal, NewBatch, NewJob};
use crate::lock::StateLock;
use crate::remote::sftp::SftpRemote;
use crate::spool::{leftovers, spool_path};
use crate::stage::{Ctx, SystemClock};
use crate::Outcome;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why recovery stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Nothing to do, a daemon running, or a setting missing (exit 2).
    #[error("{0}")]
    Refused(String),
    /// A file operation, the journal or the server failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Lists the leftovers of a lost journal; with `yes`, recovers them.
///
/// # Errors
/// [`RecoverError`].
pub fn run(cfg: &Config, yes: bool) -> Result<Outcome, RecoverError> {
    let _lock = StateLock::acquire(&cfg.state.dir)
        .map_err(|e| RecoverError::Refused(format!("{e}; stop it before recovering")))?;
    let left = leftovers(cfg);
    let mut out = std::io::stdout().lock();
    if left.is_empty() {
        let _ = writeln!(
            out,
            "nothing to recover: the journal is there, or the state folder holds nothing"
        );
        return Ok(Outcome::Ok);
    }
    let _ = writeln!(
        out,
        "the journal is missing; the state folder holds {}",
        left.describe()
    );
    for p in &left.spool {
        let (rows, bytes) = batch_rows(p);
        let _ = writeln!(
            out,
            "  pending: {} ({rows} rows, {bytes} bytes)",
            p.display()
        );
    }
    if !yes {
        let _ = writeln!(
            out,
            "check with the gateway whether those files went out; then `smsdrop recover --yes` \
             sets everything aside in {} and sends the pending ones again as new jobs",
            cfg.state.dir.join("recovered-<time>").display()
        );
        return Ok(Outcome::Partial);
    }
    let sub = cfg.batch.subaccount.clone().ok_or_else(|| {
        RecoverError::Refused(
            "[batch] subaccount is not set: spool files do not say which subaccount they were \
             for; set it (or move the files yourself)"
                .into(),
        )
    })?;
    let aside = set_aside(cfg)?;
    let moved: Vec<PathBuf> = left
        .spool
        .iter()
        .map(|p| aside.join("spool").join(p.file_name().unwrap_or_default()))
        .collect();
    let ids = requeue(cfg, &sub, &moved)?;
    let _ = writeln!(
        out,
        "set aside in {}; {} pending batch file(s) queued again as job(s) {:?}: `smsdrop run` \
         sends them",
        aside.display(),
        ids.len(),
        ids
    );
    Ok(Outcome::Ok)
}

/// Moves spool, archive, rejected and reports into `<state>/recovered-<time>/`.
fn set_aside(cfg: &Config) -> Result<PathBuf, RecoverError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let aside = cfg.state.dir.join(format!("recovered-{stamp}"));
    let fail = |what: &Path, e: std::io::Error| {
        RecoverError::Failed(format!("moving {} aside: {e}", what.display()))
    };
    for (name, dir) in [
        ("spool", crate::spool::spool_dir(cfg)),
        ("archive", cfg.state.archive_dir.clone()),
        ("rejected", cfg.state.rejected_dir.clone()),
        ("reports", cfg.report.dir.clone()),
    ] {
        let dest = aside.join(name);
        std::fs::create_dir_all(&dest).map_err(|e| fail(&dest, e))?;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let to = dest.join(e.file_name());
            crate::fsutil::move_file(&e.path(), &to).map_err(|err| fail(&e.path(), err))?;
        }
        crate::fsutil::sync_dir(&dest).map_err(|e| fail(&dest, e))?;
    }
    Ok(aside)
}

/// A new journal, and one `converted` job per pending batch file, named above what the server
/// holds.
fn requeue(cfg: &Config, sub: &str, files: &[PathBuf]) -> Result<Vec<i64>, RecoverError> {
    let failed = |e: &dyn std::fmt::Display| RecoverError::Failed(e.to_string());
    crate::spool::prepare_dirs(cfg).map_err(|e| failed(&e))?;
    let mut journal = Journal::open(&cfg.state.dir).map_err(|e| failed(&e))?;
    let day = cfg.batch.zone.day_of(chrono::Utc::now());
    if let Some(sftp) = cfg.sftp.clone() {
        let mut remote = SftpRemote::new(sftp);
        let clock = SystemClock;
        let mut ctx = Ctx {
            cfg,
            journal: &mut journal,
            remote: &mut remote,
            clock: &clock,
        };
        crate::upload::probe_sequences(&mut ctx, &[(sub.to_owned(), day)])
            .map_err(|e| failed(&format!("listing the server to number the batches: {e}")))?;
    }
    let mut ids = vec![];
    for f in files {
        let (rows, bytes) = batch_rows(f);
        let meta = std::fs::metadata(f).map_err(|e| failed(&e))?;
        let name = format!(
            "recovered-{}",
            f.file_name().unwrap_or_default().to_string_lossy()
        );
        let id = journal
            .transaction(|t| {
                let id = t.insert_job(&NewJob {
                    input_name: &name,
                    input_path: f,
                    subaccount: sub,
                    hash: "",
                    size: meta.len(),
                    dev_ino: Some((meta.dev(), meta.ino())),
                })?;
                t.set_claimed(id, f, meta.dev(), meta.ino())?;
                t.set_stored_path(id, f)?;
                t.set_counts(id, rows, rows, 0, "null")?;
                t.note_job(
                    id,
                    "re-created by `smsdrop recover` from a lost journal's spool",
                )?;
                Ok(id)
            })
            .map_err(|e| failed(&e))?;
        std::fs::copy(f, spool_path(cfg, id, 0)).map_err(|e| failed(&e))?;
        crate::fsutil::sync_fs(&crate::spool::spool_dir(cfg)).map_err(|e| failed(&e))?;
        journal
            .transaction(|t| {
                t.record_batches(id, sub, day, &[NewBatch { rows, bytes }])
                    .map(drop)
            })
            .map_err(|e| failed(&e))?;
        debug_assert!(journal
            .job(id)
            .ok()
            .flatten()
            .is_some_and(|j| j.state == JobState::Converted));
        ids.push(id);
    }
    Ok(ids)
}

/// Message lines and bytes of a batch file (its header line and `EOF` not counted).
fn batch_rows(p: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let rows = text
        .lines()
        .filter(|l| *l != "EOF" && !l.starts_with("number;text;"))
        .filter(|l| !l.is_empty())
        .count() as u64;
    (rows, text.len() as u64)
}
