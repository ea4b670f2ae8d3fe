//! Intake: from a complete input file to a recorded job with named batch files.
//!
//! Order of steps, each safe to crash after: (1) record the job as `detected`; (2) convert into
//! spool files `job-<id>-<part>.txt` (ours, rewritten on a retry); (3) in one transaction,
//! allocate the remote names and record the batch files (`converted`) or the rejection; (4) move
//! the input to `archive/` or `rejected/` and record where. A restart resumes a job from its
//! recorded step. Inputs are never deleted.

use crate::batch::{BatchName, BatchWriter};
use crate::config::Config;
use crate::convert::{convert, ConvertError, ConvertReport};
use crate::journal::{Job, JobState, Journal, JournalError, NewBatch, NewJob};
use crate::remote::{Remote, RemoteError};
use chrono::{Duration as Days, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why a stage could not go on.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The journal failed: stop the daemon.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The server could not be used: retry later.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A local file operation failed: retry later.
    #[error("{0}")]
    Local(String),
}

/// What intake needs.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub journal: &'a mut Journal,
    pub remote: &'a mut dyn Remote,
}

/// Where an input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Dropped into the inbox: moved to the archive when taken.
    Inbox,
    /// Named on the command line (`smsdrop send`): copied to the archive, left in place.
    Named,
}

/// The spool folder, where converted batch files wait for upload.
pub fn spool_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("spool")
}

/// The spool file of a job's batch part.
pub fn spool_path(cfg: &Config, job_id: i64, part: u32) -> PathBuf {
    spool_dir(cfg).join(format!("job-{job_id}-{part}.txt"))
}

/// Creates the state folders.
///
/// # Errors
/// When a folder cannot be created.
pub fn prepare_dirs(cfg: &Config) -> io::Result<()> {
    for d in [
        &cfg.state.dir,
        &spool_dir(cfg),
        &cfg.state.archive_dir,
        &cfg.state.rejected_dir,
        &cfg.report.dir,
    ] {
        std::fs::create_dir_all(d)?;
    }
    // Half-written spool files of a conversion a crash interrupted (it is redone).
    for e in std::fs::read_dir(spool_dir(cfg))?.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".smsdrop-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Takes a new input: records it, converts it, names its batches, archives it.
/// Returns the job id, or `None` when the file vanished before it could be read.
///
/// # Errors
/// [`StageError`]; the job is then left at its last recorded step and resumed later.
pub fn take(
    ctx: &mut Ctx<'_>,
    path: &Path,
    subaccount: Result<Option<String>, String>,
    origin: Origin,
) -> Result<Option<i64>, StageError> {
    let hash = match hash_file(path) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => format!("unreadable: {e}"),
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sub = subaccount
        .clone()
        .ok()
        .flatten()
        .or_else(|| ctx.cfg.batch.subaccount.clone());
    let stored = path.to_string_lossy().into_owned();
    let new = NewJob {
        input_name: &name,
        input_path: path,
        subaccount: sub.as_deref().unwrap_or(""),
        hash: &hash,
        size,
    };
    let id = ctx.journal.transaction(|t| t.insert_job(&new))?;
    crate::crash::point("detected");
    tracing::info!(job = id, input = %stored, "input taken");
    if let Some(reason) = hash.strip_prefix("unreadable: ") {
        let why = format!("the file could not be read ({reason}); check its permissions");
        return finish_rejected(ctx, id, path, &why, None, origin).map(|()| Some(id));
    }
    let why = match (&subaccount, &sub) {
        (Err(why), _) => Some(why.clone()),
        (Ok(_), None) => Some(
            "no subaccount: set [batch] subaccount or drop the file into inbox/<SUBACCOUNT>/"
                .into(),
        ),
        _ => None,
    };
    if let Some(why) = why {
        return finish_rejected(ctx, id, path, &why, None, origin).map(|()| Some(id));
    }
    process(ctx, id, origin).map(|()| Some(id))
}

/// Converts a `detected` job and names its batches (steps 2-4). Safe to call again after a crash.
///
/// # Errors
/// [`StageError`] leaves the job `detected`, to be resumed.
pub fn process(ctx: &mut Ctx<'_>, id: i64, origin: Origin) -> Result<(), StageError> {
    let job = ctx
        .journal
        .job(id)?
        .ok_or_else(|| StageError::Local(format!("job {id} vanished from the journal")))?;
    let path = job.input_path.clone();
    let days = ctx.cfg.inbox.duplicate_days;
    if days > 0 {
        let since = Utc::now() - Days::days(days as i64);
        if let Some(prev) = ctx
            .journal
            .accepted_with_hash(&job.hash, since)?
            .filter(|p| p.id != id)
        {
            let why = format!(
                "duplicate: the same content as {:?} (job {}, taken {}); sending it again would send \
                 every message twice. To send it anyway, set [inbox] duplicate_days = 0 or change the file",
                prev.input_name,
                prev.id,
                prev.created_at.format("%Y-%m-%d %H:%M UTC")
            );
            return finish_rejected(ctx, id, &path, &why, None, origin);
        }
    }
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let why = "the input disappeared before it was converted";
            ctx.journal.transaction(|t| {
                t.set_job_state(id, JobState::Rejected, Some(why))?;
                // Nothing to store: an empty path marks it, so a new file of that name is free.
                t.set_stored_path(id, Path::new(""))
            })?;
            return Ok(());
        }
        Err(e) => {
            return finish_rejected(
                ctx,
                id,
                &path,
                &format!("the file could not be read: {e}"),
                None,
                origin,
            )
        }
    };
    let spool = spool_dir(ctx.cfg);
    let mut writer = BatchWriter::new(
        &spool,
        ctx.cfg.batch.max_rows_per_file,
        ctx.cfg.batch.header_line,
    );
    let report = match convert(file, &ctx.cfg.input, &mut writer) {
        Ok(r) => r,
        Err(ConvertError::Read(e)) => {
            return finish_rejected(
                ctx,
                id,
                &path,
                &format!("reading the file failed: {e}"),
                None,
                origin,
            )
        }
        Err(ConvertError::Write(e)) => {
            return Err(StageError::Local(format!(
                "writing to {}: {e}",
                spool.display()
            )))
        }
    };
    let pending = writer
        .finish()
        .map_err(|e| StageError::Local(format!("writing to {}: {e}", spool.display())))?;
    if let Some(why) = &report.input_rejected {
        return finish_rejected(ctx, id, &path, why, Some(&report), origin);
    }
    let mut batches = Vec::with_capacity(pending.len());
    for (part, p) in pending.into_iter().enumerate() {
        let dest = spool_path(ctx.cfg, id, part as u32);
        let bytes = std::fs::metadata(p.path()).map(|m| m.len()).unwrap_or(0);
        batches.push(NewBatch {
            rows: p.rows,
            bytes,
        });
        p.persist(&dest)
            .map_err(|e| StageError::Local(format!("spool file {}: {e}", dest.display())))?;
    }
    let day = ctx.cfg.batch.zone.today();
    let used = match highest_remote_seq(ctx, &job.subaccount, day) {
        Ok(u) => u,
        Err(e) => {
            // Say on the job why it waits (status shows it), then let the daemon retry.
            let why = format!("waiting for the server to number its batch files: {e}");
            ctx.journal.transaction(|t| t.set_reason(id, Some(&why)))?;
            return Err(e);
        }
    };
    let report_json = serde_json::to_string(&report).expect("reports always serialise");
    let names = ctx.journal.transaction(|t| {
        if let Some(used) = used {
            t.reserve_above(&job.subaccount, day, used)?;
        }
        t.set_counts(
            id,
            report.rows_read,
            report.rows_sent,
            report.rows_rejected,
            &report_json,
        )?;
        t.record_batches(id, &job.subaccount, day, &batches)
    })?;
    crate::crash::point("converted");
    tracing::info!(job = id, remote = ?names, rows = report.rows_sent, rejected = report.rows_rejected, "converted");
    store_input(ctx, &job, JobState::Converted, origin)
}

/// Before the first allocation of a day, the highest sequence number the server already holds
/// for this subaccount and day (`Some(0)` when none), so a number used by another system or a
/// lost journal is never reused. `None` when the day was checked before.
fn highest_remote_seq(
    ctx: &mut Ctx<'_>,
    subaccount: &str,
    day: NaiveDate,
) -> Result<Option<u32>, StageError> {
    if !ctx.journal.first_of_day(subaccount, day)? {
        return Ok(None);
    }
    let s = ctx.cfg.sftp.as_ref().map(|s| {
        [
            s.upload_dir.clone(),
            s.success_dir.clone(),
            s.error_dir.clone(),
        ]
    });
    let dirs = s.unwrap_or_else(|| ["upload".into(), "success".into(), "error".into()]);
    let mut highest = 0;
    for dir in &dirs {
        for name in ctx.remote.list(dir)? {
            if let Some(b) = BatchName::parse(&name) {
                if b.subaccount == subaccount && b.date == day {
                    highest = highest.max(b.seq);
                }
            }
        }
    }
    if highest > 0 {
        tracing::info!(subaccount, %day, highest, "sequence numbers already used on the server; starting above");
    }
    Ok(Some(highest))
}

fn finish_rejected(
    ctx: &mut Ctx<'_>,
    id: i64,
    path: &Path,
    why: &str,
    report: Option<&ConvertReport>,
    origin: Origin,
) -> Result<(), StageError> {
    tracing::warn!(job = id, input = %path.display(), reason = why, "input rejected");
    let json = report.map(|r| serde_json::to_string(r).expect("reports always serialise"));
    ctx.journal.transaction(|t| {
        if let (Some(r), Some(j)) = (report, &json) {
            t.set_counts(id, r.rows_read, r.rows_sent, r.rows_rejected, j)?;
        }
        t.set_job_state(id, JobState::Rejected, Some(why))
    })?;
    let job = ctx
        .journal
        .job(id)?
        .ok_or_else(|| StageError::Local(format!("job {id} vanished")))?;
    store_input(ctx, &job, JobState::Rejected, origin)
}

/// Moves (inbox) or copies (named) the input to `archive/` or `rejected/` and records where.
///
/// # Errors
/// [`StageError::Local`] when the move fails; the job keeps no stored path and is retried.
pub fn store_input(
    ctx: &mut Ctx<'_>,
    job: &Job,
    state: JobState,
    origin: Origin,
) -> Result<(), StageError> {
    let dir = if state == JobState::Rejected {
        &ctx.cfg.state.rejected_dir
    } else {
        &ctx.cfg.state.archive_dir
    };
    // The stored name keeps the original's bytes (a name need not be UTF-8), prefixed with the job.
    let mut stored_name = std::ffi::OsString::from(format!("{}-", job.id));
    stored_name.push(job.input_path.file_name().unwrap_or_default());
    let dest = dir.join(&stored_name);
    let result = match origin {
        Origin::Inbox => move_file(&job.input_path, &dest),
        Origin::Named => copy_synced(&job.input_path, &dest),
    };
    if let Err(e) = result {
        if !dest.exists() {
            return Err(StageError::Local(format!(
                "could not move {} to {}: {e}; it stays where it is and is retried",
                job.input_path.display(),
                dest.display()
            )));
        }
    }
    if origin == Origin::Inbox {
        if let Some(m) = &ctx.cfg.inbox.done_marker {
            let marker = crate::watch::marker_path(&job.input_path, m);
            if marker.exists() {
                let mut marker_name = stored_name.clone();
                marker_name.push(m);
                let _ = move_file(&marker, &dir.join(marker_name));
            }
        }
    }
    crate::crash::point("archive");
    ctx.journal
        .transaction(|t| t.set_stored_path(job.id, &dest))?;
    Ok(())
}

/// Renames `from` to `to`; across file systems, copies, syncs, then removes the original.
///
/// # Errors
/// When neither works; `from` is then untouched.
pub fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => sync_parent(to),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_synced(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, to)?;
    sync_parent(to)
}

fn sync_parent(p: &Path) -> io::Result<()> {
    match p.parent() {
        Some(d) => File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

/// SHA-256 of a file's content, in hex, read in chunks.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
