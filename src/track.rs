//! Track: learns from the server what became of each uploaded batch file.
//!
//! One listing of `success/` and one of `error/` per poll resolves every awaited name: a batch is
//! `succeeded` in `success/`, `failed` in `error/`, `expired` after `give_up_after` with neither. A
//! job settles only once every one of its files is final (never while a part may still go out):
//! `failed` if any failed (in `error/`, or set aside by a local problem), else `expired` if any
//! expired, else `succeeded`.

use crate::journal::{Batch, JobState};
use crate::stage::{Ctx, StageError};
use crate::upload::dirs;
use std::collections::HashSet;

/// Polls once. Returns how many batches got an outcome.
///
/// # Errors
/// [`StageError::Remote`] when a listing fails; [`StageError::Journal`] when the journal fails.
pub fn poll(ctx: &mut Ctx<'_>) -> Result<usize, StageError> {
    let awaited = ctx.journal.batches_in(JobState::Uploaded)?;
    let changed = if awaited.is_empty() {
        vec![]
    } else {
        resolve(ctx, &awaited)?
    };
    // Settle every job still waiting, not only those just changed: a crash between recording
    // an outcome and settling its job must not leave the job waiting forever.
    let mut settled = vec![];
    for job in
        ctx.journal
            .jobs_in(&[JobState::Converted, JobState::Uploading, JobState::Uploaded])?
    {
        settled.extend(settle_job(ctx, job.id)?);
    }
    if !settled.is_empty() {
        // One transaction for every job settled this poll, not one each.
        ctx.journal.transaction(|t| {
            for (id, state, reason) in &settled {
                t.set_job_state(*id, *state, reason.as_deref())?;
            }
            Ok(())
        })?;
    }
    Ok(changed.len())
}

/// Records the outcome of each awaited batch the listings resolve.
fn resolve(ctx: &mut Ctx<'_>, awaited: &[Batch]) -> Result<Vec<(Batch, JobState)>, StageError> {
    let d = dirs(ctx.cfg);
    let success: HashSet<String> = ctx.remote.list(&d.success)?.into_iter().collect();
    let error: HashSet<String> = ctx.remote.list(&d.error)?.into_iter().collect();
    let give_up = ctx.cfg.track.give_up();
    let now = ctx.clock.now();
    let mut changed = vec![];
    for b in awaited {
        let state = if success.contains(&b.name) {
            JobState::Succeeded
        } else if error.contains(&b.name) {
            JobState::Failed
        } else if b.uploaded_at.is_some_and(|t| now - t > give_up) {
            JobState::Expired
        } else {
            continue;
        };
        changed.push((b.clone(), state));
    }
    if changed.is_empty() {
        return Ok(changed);
    }
    ctx.journal.transaction(|t| {
        for (b, state) in &changed {
            t.set_batch_state(b.id, *state, None)?;
        }
        Ok(())
    })?;
    crate::crash::point("outcome");
    for (b, state) in &changed {
        tracing::info!(job = b.job_id, remote = %b.name, outcome = state.as_str(), "gateway outcome");
    }
    Ok(changed)
}

/// Decides a job's outcome from its batches' states, once it has one.
fn settle_job(ctx: &mut Ctx<'_>, job_id: i64) -> Result<Option<Settled>, StageError> {
    let Some(job) = ctx.journal.job(job_id)? else {
        return Ok(None);
    };
    if job.state.is_final() {
        return Ok(None);
    }
    let batches = ctx.journal.batches(job_id)?;
    if batches.is_empty() || !batches.iter().all(|b| b.state.is_final()) {
        return Ok(None);
    }
    let names = |f: &dyn Fn(&Batch) -> bool| -> Vec<&str> {
        batches
            .iter()
            .filter(|b| f(b))
            .map(|b| b.name.as_str())
            .collect()
    };
    // Set aside locally: failed without ever being uploaded.
    let aside = names(&|b| b.state == JobState::Failed && b.uploaded_at.is_none());
    let in_error = names(&|b| b.state == JobState::Failed && b.uploaded_at.is_some());
    let expired = names(&|b| b.state == JobState::Expired);
    let (state, reason) = if !in_error.is_empty() || !aside.is_empty() {
        let mut why = vec![];
        if !in_error.is_empty() {
            why.push(format!(
                "the gateway moved {} to error/; it gives no detail: check the file's lines and \
                 the account with the gateway's support before sending it again",
                in_error.join(", ")
            ));
        }
        if !aside.is_empty() {
            why.push(format!(
                "{} could not be uploaded (see remote_files' last_error); its rows were not sent",
                aside.join(", ")
            ));
        }
        (JobState::Failed, Some(why.join("; ")))
    } else if !expired.is_empty() {
        (
            JobState::Expired,
            Some(format!(
                "the gateway did not move {} to success/ or error/ within {}; ask its support \
                 whether it was processed before sending it again",
                expired.join(", "),
                humantime(ctx.cfg.track.give_up_after)
            )),
        )
    } else {
        (JobState::Succeeded, None)
    };
    Ok(Some((job_id, state, reason)))
}

/// A job's outcome, decided from its batches.
type Settled = (i64, JobState, Option<String>);

fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
