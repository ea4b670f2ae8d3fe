//! Upload: puts every converted batch file on the server exactly once.
//!
//! Batches are marked `uploading` in one transaction before any byte is sent. Each file is
//! written to a temporary name, its size checked, then renamed to its final name (a rename onto an
//! existing file fails: nothing is overwritten). A batch found `uploading` after a restart is
//! first looked for under its final name in `upload`, `success` and `error`. Successes are
//! committed in groups (one fsync for many files); a crash before the commit is covered by that
//! same look-up.

use crate::config::{Config, SftpConfig};
use crate::intake::{spool_path, Ctx, StageError};
use crate::journal::{Batch, JobState};
use crate::remote::{join, RemoteError};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// Uploads committed at once.
const COMMIT_EVERY: usize = 64;

/// The remote folders, from `[sftp]` or their defaults.
pub fn dirs(cfg: &Config) -> (String, String, String, Option<String>) {
    match &cfg.sftp {
        Some(SftpConfig {
            upload_dir,
            success_dir,
            error_dir,
            temp_dir,
            ..
        }) => (
            upload_dir.clone(),
            success_dir.clone(),
            error_dir.clone(),
            temp_dir.clone(),
        ),
        None => ("upload".into(), "success".into(), "error".into(), None),
    }
}

/// Uploads all pending batches; stops early when `shutdown` is set. Returns how many went up.
///
/// # Errors
/// [`StageError::Remote`] when the server fails (the rest waits for the next round);
/// [`StageError::Journal`] when the journal fails.
pub fn upload_pending(ctx: &mut Ctx<'_>, shutdown: &AtomicBool) -> Result<usize, StageError> {
    let resumed = ctx.journal.batches_in(JobState::Uploading)?;
    let fresh = ctx.journal.batches_in(JobState::Converted)?;
    if resumed.is_empty() && fresh.is_empty() {
        return Ok(0);
    }
    if !fresh.is_empty() {
        ctx.journal.transaction(|t| {
            let mut jobs = BTreeSet::new();
            for b in &fresh {
                t.set_batch_state(b.id, JobState::Uploading, None)?;
                jobs.insert(b.job_id);
            }
            for j in jobs {
                t.set_job_state(j, JobState::Uploading, None)?;
            }
            Ok(())
        })?;
        crate::crash::point("uploading");
    }
    let (up, ok, err, temp_dir) = dirs(ctx.cfg);
    let mut done: Vec<(Batch, Option<&'static str>)> = vec![];
    let mut sent = 0;
    let work = resumed
        .iter()
        .map(|b| (b, true))
        .chain(fresh.iter().map(|b| (b, false)));
    let mut outcome = Ok(());
    for (batch, is_resumed) in work {
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        let span = tracing::info_span!("job", id = batch.job_id, remote = %batch.name);
        let _g = span.enter();
        match upload_one(
            ctx,
            batch,
            is_resumed,
            [&up, &ok, &err],
            temp_dir.as_deref(),
        ) {
            Ok(note) => {
                sent += usize::from(note.is_none());
                done.push((batch.clone(), note));
                if done.len() >= COMMIT_EVERY {
                    commit(ctx, &mut done)?;
                }
            }
            Err(StageError::Remote(RemoteError::Exists { path })) => {
                // Someone else's file holds the name: take the next free number.
                let job = ctx.journal.job(batch.job_id)?;
                let (sub, day) = job
                    .map(|j| (j.subaccount, parse_day(&batch.name)))
                    .unwrap_or_default();
                let new = ctx
                    .journal
                    .transaction(|t| t.rename_batch(batch.id, &sub, day))?;
                tracing::warn!(taken = %path, new_name = %new, "remote name already taken by another file; renamed");
            }
            Err(e) => {
                let msg = e.to_string();
                let why = format!("upload of {} failed, retrying: {msg}", batch.name);
                ctx.journal.transaction(|t| {
                    t.batch_attempt_failed(batch.id, &msg)?;
                    t.set_reason(batch.job_id, Some(&why))
                })?;
                tracing::warn!(error = %msg, "upload failed; will retry");
                outcome = Err(e);
                break;
            }
        }
    }
    commit(ctx, &mut done)?;
    outcome.map(|()| sent)
}

fn parse_day(name: &str) -> chrono::NaiveDate {
    crate::batch::BatchName::parse(name)
        .map(|b| b.date)
        .unwrap_or_default()
}

/// Uploads one batch; `Some(note)` when it was already on the server.
fn upload_one(
    ctx: &mut Ctx<'_>,
    batch: &Batch,
    resumed: bool,
    [up, ok, err]: [&String; 3],
    temp_dir: Option<&str>,
) -> Result<Option<&'static str>, StageError> {
    if resumed {
        for dir in [up, ok, err] {
            if ctx.remote.size(&join(dir, &batch.name))?.is_some() {
                tracing::info!(found_in = %dir, "batch already on the server (upload finished before a restart)");
                return Ok(Some("found on the server after a restart"));
            }
        }
    }
    let local = spool_path(ctx.cfg, batch.job_id, batch.part);
    if !local.exists() {
        return Err(StageError::Local(format!(
            "spool file {} is missing; the input is in the archive and can be sent again",
            local.display()
        )));
    }
    let temp = match temp_dir {
        Some(t) => join(t, &format!("{}.part", batch.name)),
        None => join(up, &format!(".{}.part", batch.name)),
    };
    let dest = join(up, &batch.name);
    let bytes = ctx.remote.upload(&local, &temp, &dest)?;
    tracing::info!(bytes, "uploaded");
    Ok(None)
}

/// Records uploaded batches, and jobs whose batches are now all uploaded, in one transaction.
fn commit(
    ctx: &mut Ctx<'_>,
    done: &mut Vec<(Batch, Option<&'static str>)>,
) -> Result<(), StageError> {
    if done.is_empty() {
        return Ok(());
    }
    let jobs: BTreeSet<i64> = done.iter().map(|(b, _)| b.job_id).collect();
    let mut finished = vec![];
    for &job in &jobs {
        let uploaded_now: BTreeSet<i64> = done
            .iter()
            .filter(|(b, _)| b.job_id == job)
            .map(|(b, _)| b.id)
            .collect();
        let all_up = ctx.journal.batches(job)?.iter().all(|b| {
            uploaded_now.contains(&b.id)
                || !matches!(b.state, JobState::Uploading | JobState::Converted)
        });
        if all_up
            && ctx
                .journal
                .job(job)?
                .is_some_and(|j| j.state == JobState::Uploading)
        {
            finished.push(job);
        }
    }
    ctx.journal.transaction(|t| {
        for (b, note) in done.iter() {
            t.set_batch_state(b.id, JobState::Uploaded, *note)?;
        }
        for &job in &finished {
            t.set_reason(job, None)?;
            t.set_job_state(job, JobState::Uploaded, None)?;
        }
        Ok(())
    })?;
    done.clear();
    crate::crash::point("uploaded");
    Ok(())
}
