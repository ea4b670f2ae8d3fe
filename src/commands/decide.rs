//! `smsdrop resolve JOB --sent | --resend` and `smsdrop retry JOB`: an operator's decisions on
//! what smsdrop must never decide alone. `resolve` settles batches whose outcome is `unknown`
//! (their rename had begun when smsdrop stopped, and their name is nowhere now); `retry` sends a
//! `failed` or `expired` job's batch files again under new names, after the operator checked
//! with the gateway that they did not go out; `release` sends a job held for its send window
//! now.
//!
//! Each decision is one journal transaction through the state machine; a running daemon picks
//! it up on its next round (it reads batch states from the journal every round). Nothing here
//! talks to the server.

use crate::config::Config;
use crate::journal::{Batch, Job, JobState, Journal, JournalError};
use crate::spool::spool_path;
use crate::Outcome;
use std::io::{BufRead, IsTerminal, Write};

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The job is not in a state this decision applies to, or the operator said no (exit 2).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn load(cfg: &Config, job_id: i64) -> Result<(Journal, Job, Vec<Batch>), DecideError> {
    if !cfg.state.dir.join("journal.db").exists() {
        return Err(DecideError::Refused(format!(
            "no journal in {}",
            cfg.state.dir.display()
        )));
    }
    let journal = Journal::open(&cfg.state.dir)?;
    let job = journal
        .job(job_id)?
        .ok_or_else(|| DecideError::Refused(format!("there is no job {job_id}")))?;
    let batches = journal.batches(job_id)?;
    Ok((journal, job, batches))
}

/// `resolve JOB --sent` (`sent`) or `--resend`: settles the job's `unknown` batches.
///
/// # Errors
/// [`DecideError`].
pub fn resolve(cfg: &Config, job_id: i64, sent: bool) -> Result<Outcome, DecideError> {
    let (mut journal, job, batches) = load(cfg, job_id)?;
    let unknown: Vec<&Batch> = batches
        .iter()
        .filter(|b| b.state == JobState::Unknown)
        .collect();
    if unknown.is_empty() {
        return Err(DecideError::Refused(format!(
            "job {job_id} has no batch waiting for a decision (it is {}); see `smsdrop status`",
            job.state.as_str()
        )));
    }
    let day = cfg.batch.zone.day_of(chrono::Utc::now());
    let renamed = journal.transaction(|t| {
        let mut renamed = vec![];
        for b in &unknown {
            if sent {
                t.set_batch_state(b.id, JobState::Succeeded, None)?;
                t.note_job(
                    job_id,
                    &format!("{}: the operator confirmed the gateway received it", b.name),
                )?;
            } else {
                t.set_batch_state(b.id, JobState::Converted, None)?;
                let new = t.rename_batch(b.id, &job.subaccount, day)?;
                t.note_job(
                    job_id,
                    &format!("{}: the operator asked to send it again, as {new}", b.name),
                )?;
                renamed.push(new);
            }
        }
        if !sent && job.state == JobState::Uploaded {
            t.set_job_state(job_id, JobState::Uploading, None)?;
        }
        t.set_reason(job_id, None)?;
        Ok(renamed)
    })?;
    let mut out = std::io::stdout().lock();
    if sent {
        let _ = writeln!(
            out,
            "job {job_id}: {} batch file(s) recorded as received by the gateway",
            unknown.len()
        );
    } else {
        let _ = writeln!(
            out,
            "job {job_id}: {} batch file(s) will be sent again as {} by the daemon",
            unknown.len(),
            renamed.join(", ")
        );
    }
    Ok(Outcome::Ok)
}

/// `retry JOB`: sends a failed or expired job's unsent batch files again under new names.
///
/// # Errors
/// [`DecideError`].
pub fn retry(cfg: &Config, job_id: i64, yes: bool) -> Result<Outcome, DecideError> {
    let (mut journal, job, batches) = load(cfg, job_id)?;
    if !matches!(job.state, JobState::Failed | JobState::Expired) {
        let hint = if batches.iter().any(|b| b.state == JobState::Unknown) {
            format!("; for its unknown batches use `smsdrop resolve {job_id} --sent | --resend`")
        } else {
            String::new()
        };
        return Err(DecideError::Refused(format!(
            "job {job_id} is {}: only a failed or expired job can be retried{hint}",
            job.state.as_str()
        )));
    }
    let again: Vec<&Batch> = batches
        .iter()
        .filter(|b| matches!(b.state, JobState::Failed | JobState::Expired))
        .collect();
    let missing: Vec<&str> = again
        .iter()
        .filter(|b| !spool_path(cfg, job_id, b.part).exists())
        .map(|b| b.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DecideError::Refused(format!(
            "the batch file(s) {} of job {job_id} are no longer in the spool; drop the input again \
             (it is in {}) — a job none of whose rows may have gone out is not a duplicate",
            missing.join(", "),
            job.stored_path
                .as_deref()
                .unwrap_or(&job.input_path)
                .display()
        )));
    }
    let rows: u64 = again.iter().map(|b| b.rows).sum();
    let names: Vec<&str> = again.iter().map(|b| b.name.as_str()).collect();
    if !yes
        && !confirm(&format!(
        "Send {} batch file(s) of job {job_id} ({rows} rows: {}) again under new names? Only if \
         the gateway confirmed they did not go out. [y/N] ",
        again.len(),
        names.join(", ")
    ))? {
        return Err(DecideError::Refused(
            "nothing recorded (answer y, or pass --yes)".into(),
        ));
    }
    let day = cfg.batch.zone.day_of(chrono::Utc::now());
    // Under the journal's write lock: a second `retry` of the same job that got this far too
    // finds the job no longer failed and records nothing (no sequence number is used).
    let renamed = journal.transaction(|t| {
        if !matches!(t.job_state(job_id)?, JobState::Failed | JobState::Expired) {
            return Ok(None);
        }
        let mut renamed = vec![];
        for b in &again {
            t.set_batch_state(b.id, JobState::Converted, None)?;
            let new = t.rename_batch(b.id, &job.subaccount, day)?;
            t.note_job(
                job_id,
                &format!("{}: retried by the operator as {new}", b.name),
            )?;
            renamed.push(new);
        }
        t.set_job_state(job_id, JobState::Uploading, Some("retried by the operator"))?;
        t.unreport(job_id)?;
        Ok(Some(renamed))
    })?;
    let Some(renamed) = renamed else {
        return Err(DecideError::Refused(format!(
            "job {job_id} was retried meanwhile (another `smsdrop retry`?): nothing recorded; \
             see `smsdrop status {job_id}`"
        )));
    };
    let _ = writeln!(
        std::io::stdout().lock(),
        "job {job_id}: {} batch file(s) ({rows} rows) will be sent again as {} by the daemon",
        renamed.len(),
        renamed.join(", ")
    );
    Ok(Outcome::Ok)
}

/// `release JOB`: sends a job waiting for its send window (`held`) now, whatever the window
/// says; recorded in the job's history.
///
/// # Errors
/// [`DecideError`].
pub fn release(cfg: &Config, job_id: i64, yes: bool) -> Result<Outcome, DecideError> {
    let (mut journal, job, batches) = load(cfg, job_id)?;
    if !matches!(job.state, JobState::Held | JobState::Converted) {
        return Err(DecideError::Refused(format!(
            "job {job_id} is {}: only a job waiting for its send window (held) can be released",
            job.state.as_str()
        )));
    }
    if job.released_at.is_some() {
        return Err(DecideError::Refused(format!(
            "job {job_id} was already released; the daemon sends it at its next round"
        )));
    }
    let rows: u64 = batches.iter().map(|b| b.rows).sum();
    if !yes
        && !confirm(&format!(
            "Send job {job_id} ({}, {rows} rows in {} batch file(s)) now, outside its send              window? [y/N] ",
            job.input_name,
            batches.len()
        ))?
    {
        return Err(DecideError::Refused(
            "nothing recorded (answer y, or pass --yes)".into(),
        ));
    }
    // Under the journal's write lock: the job may have gone out or expired meanwhile.
    let done = journal.transaction(|t| {
        if !matches!(t.job_state(job_id)?, JobState::Held | JobState::Converted) {
            return Ok(false);
        }
        t.release(job_id)?;
        Ok(true)
    })?;
    if !done {
        return Err(DecideError::Refused(format!(
            "job {job_id} is no longer waiting (it went out or expired meanwhile): nothing \
             recorded; see `smsdrop status {job_id}`"
        )));
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "job {job_id}: released; the daemon sends its {} batch file(s) ({rows} rows) at its next \
         round",
        batches.len()
    );
    Ok(Outcome::Ok)
}

fn confirm(question: &str) -> Result<bool, DecideError> {
    if !std::io::stdin().is_terminal() {
        return Err(DecideError::Refused(
            "not on a terminal: pass --yes to confirm".into(),
        ));
    }
    eprint!("{question}");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
