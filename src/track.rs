//! Track: learns from the server what became of each uploaded batch file.
//!
//! One listing of `success/` and one of `error/` (names and sizes) per poll resolves every
//! awaited name. A file there counts for a batch only when it is ours: the size we wrote and,
//! for files up to `[track] verify_max_bytes`, the same content read back; another system's file under
//! our name is reported and the batch goes on being tracked. A batch is `succeeded` in
//! `success/`, `failed` in `error/`, `expired` after `give_up_after` with neither (saying whether
//! it still sits in `upload/`, never taken, or is gone, outcome unknown); an expired batch is
//! still looked for [`LATE_OUTCOME_DAYS`], and a late outcome updates the job, its reports and
//! runs the hook again. A job settles only once every one of its files is final: `failed` if
//! any failed (in `error/`, or set aside by a local problem), else `expired` if any expired, else
//! `succeeded`.

use crate::journal::{Batch, JobState};
use crate::remote::join;
use crate::spool::spool_path;
use crate::stage::{Ctx, StageError};
use crate::upload::dirs;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};

/// How long an expired batch is still looked for in `success/` and `error/`.
pub const LATE_OUTCOME_DAYS: i64 = 7;

/// Polls once. Returns how many batches got an outcome, and whether the server was asked
/// (with nothing awaited, no listing is needed).
///
/// # Errors
/// [`StageError::Remote`] when a listing fails; [`StageError::Journal`] when the journal fails.
pub fn poll_listed(ctx: &mut Ctx<'_>) -> Result<(usize, bool), StageError> {
    let mut awaited = ctx.journal.batches_in(JobState::Uploaded)?;
    let since = ctx.clock.now() - chrono::Duration::days(LATE_OUTCOME_DAYS);
    awaited.extend(
        ctx.journal
            .batches_in(JobState::Expired)?
            .into_iter()
            .filter(|b| b.uploaded_at.is_some_and(|t| t > since)),
    );
    let listed = !awaited.is_empty();
    let changed = if awaited.is_empty() {
        vec![]
    } else {
        resolve(ctx, &awaited)?
    };
    // Settle every job still waiting, not only those just changed: a crash between recording
    // an outcome and settling its job must not leave the job waiting forever. Jobs already
    // expired are settled again when a late outcome arrived.
    let late: BTreeSet<i64> = changed
        .iter()
        .filter(|(b, _)| b.state == JobState::Expired)
        .map(|(b, _)| b.job_id)
        .collect();
    let mut ids: Vec<i64> = ctx
        .journal
        .jobs_in(&[
            JobState::Converted,
            JobState::Held,
            JobState::Uploading,
            JobState::Uploaded,
        ])?
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.extend(late.iter().copied());
    let mut settled = vec![];
    for id in ids {
        settled.extend(settle_job(ctx, id)?);
    }
    if !settled.is_empty() {
        // One transaction for every job settled this poll, not one each.
        ctx.journal.transaction(|t| {
            for (id, state, reason) in &settled {
                t.set_job_state(*id, *state, reason.as_deref())?;
                if late.contains(id) {
                    t.unreport(*id)?;
                    t.note_job(*id, "a late outcome arrived after the job had expired")?;
                }
            }
            Ok(())
        })?;
    }
    Ok((changed.len(), listed))
}

/// The server's answer for one batch.
enum Seen {
    Ours(JobState),
    /// Another system's file under our name: where, and why it is not ours.
    Foreign(String),
    Nothing,
}

/// Records the outcome of each awaited batch the listings resolve.
fn resolve(ctx: &mut Ctx<'_>, awaited: &[Batch]) -> Result<Vec<(Batch, JobState)>, StageError> {
    let d = dirs(ctx.cfg);
    let success: HashMap<String, Option<u64>> =
        ctx.remote.list_sized(&d.success)?.into_iter().collect();
    let error: HashMap<String, Option<u64>> =
        ctx.remote.list_sized(&d.error)?.into_iter().collect();
    let give_up = ctx.cfg.track.give_up();
    let now = ctx.clock.now();
    let mut upload: Option<HashMap<String, Option<u64>>> = None;
    let mut changed = vec![];
    let mut notes = vec![];
    for b in awaited {
        let mut seen = Seen::Nothing;
        for (dir, listing, state) in [
            (&d.success, &success, JobState::Succeeded),
            (&d.error, &error, JobState::Failed),
        ] {
            if let Some(size) = listing.get(&b.name) {
                match ours(ctx, b, &join(dir, &b.name), *size)? {
                    Ok(()) => {
                        seen = Seen::Ours(state);
                        break;
                    }
                    Err(why) => seen = Seen::Foreign(why),
                }
            }
        }
        let state = match seen {
            Seen::Ours(state) => state,
            Seen::Foreign(why) => {
                notes.push((b.clone(), why));
                continue;
            }
            Seen::Nothing
                if b.state == JobState::Uploaded
                    && b.uploaded_at.is_some_and(|t| now - t > give_up) =>
            {
                if upload.is_none() {
                    upload = Some(ctx.remote.list_sized(&d.upload)?.into_iter().collect());
                }
                let still = upload
                    .as_ref()
                    .and_then(|u| u.get(&b.name))
                    .is_some_and(|s| *s == Some(b.bytes));
                let why = if still {
                    format!("still in {}/: the gateway never took it", d.upload)
                } else {
                    format!(
                        "gone from {}/ and in neither {}/ nor {}/: the gateway took it, its \
                         outcome is unknown",
                        d.upload, d.success, d.error
                    )
                };
                notes.push((b.clone(), why));
                JobState::Expired
            }
            Seen::Nothing => continue,
        };
        changed.push((b.clone(), state));
    }
    if changed.is_empty() && notes.is_empty() {
        return Ok(changed);
    }
    let fresh_notes = ctx.journal.transaction(|t| {
        let mut fresh = vec![];
        for (b, why) in &notes {
            if t.note_batch(b.id, why)? {
                if why.contains("not ours") {
                    t.note_job(b.job_id, why)?;
                }
                fresh.push((b.clone(), why.clone()));
            }
        }
        for (b, state) in &changed {
            t.set_batch_state(b.id, *state, None)?;
        }
        Ok(fresh)
    })?;
    crate::crash::point("outcome");
    for (b, why) in fresh_notes.iter().filter(|(_, w)| w.contains("not ours")) {
        tracing::warn!(job = b.job_id, remote = %b.name, reason = %why, "another system's file under our name; still tracking ours");
    }
    for (b, state) in &changed {
        tracing::info!(job = b.job_id, remote = %b.name, outcome = state.as_str(), late = b.state == JobState::Expired, "gateway outcome");
    }
    Ok(changed)
}

/// Whether the file at `path` (of `size`) is the batch we sent: our size, and for small files
/// our bytes (read back, compared with the spool file while it exists).
fn ours(
    ctx: &mut Ctx<'_>,
    b: &Batch,
    path: &str,
    size: Option<u64>,
) -> Result<Result<(), String>, StageError> {
    let foreign = |what: String| {
        Err(format!(
            "{path} is not ours ({what}): another system's file"
        ))
    };
    if let Some(s) = size.filter(|s| *s != b.bytes) {
        return Ok(foreign(format!("{s} bytes, ours has {}", b.bytes)));
    }
    let max = ctx.cfg.track.verify_max_bytes;
    if b.bytes > max {
        return Ok(Ok(()));
    }
    let Ok(local) = std::fs::read(spool_path(ctx.cfg, b.job_id, b.part)) else {
        return Ok(Ok(())); // the size is all there is to compare
    };
    match ctx.remote.read_small(path, max)? {
        Some(remote) if Sha256::digest(&remote) != Sha256::digest(&local) => {
            Ok(foreign("same size, other content".into()))
        }
        // Ours, or gone again between the listing and the read: the listing counts.
        _ => Ok(Ok(())),
    }
}

/// Decides a job's outcome from its batches' states, once it has one.
fn settle_job(ctx: &mut Ctx<'_>, job_id: i64) -> Result<Option<Settled>, StageError> {
    let Some(job) = ctx.journal.job(job_id)? else {
        return Ok(None);
    };
    // An expired job is settled again when a late outcome arrived; other final jobs never.
    if job.state.is_final() && job.state != JobState::Expired {
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
                 the account with the gateway's support, then `smsdrop retry {job_id}` sends \
                 it again under a new name",
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
        let wheres: Vec<String> = batches
            .iter()
            .filter(|b| b.state == JobState::Expired)
            .map(|b| format!("{}: {}", b.name, b.note.as_deref().unwrap_or("not found")))
            .collect();
        (
            JobState::Expired,
            Some(format!(
                "the gateway did not move {} to success/ or error/ within {} ({}); smsdrop \
                 keeps looking for {LATE_OUTCOME_DAYS} days. Ask its support whether it was \
                 processed; only if not, `smsdrop retry {job_id}` sends it again",
                expired.join(", "),
                humantime(ctx.cfg.track.give_up_after),
                wheres.join("; ")
            )),
        )
    } else {
        (JobState::Succeeded, None)
    };
    if state == job.state {
        return Ok(None);
    }
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
