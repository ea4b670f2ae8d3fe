//! The engine stage that ends message tracking: a job whose sent messages all have their final
//! status, or whose `[status] give_up_after` has passed since its file outcome, gets its
//! `<job>-<input>.delivery.csv` (written atomically, synced; what the gateway said goes through
//! [`csv_field`], so no carrier name starts a formula), its JSON report written again with
//! the per-message outcome, and the outcome hook run with `SMSDROP_EVENT=delivery`.

use crate::fsutil::{sync_dir, sync_fs, write_replacing};
use crate::journal::{EachError, Job, Journal, Message};
use crate::report::{
    csv_field, delivery_path, line_offset, queue_hook, report_paths, write_json, Event,
};
use crate::stage::{Ctx, StageError};
use chrono::{DateTime, SecondsFormat, Utc};
use std::io::{self, Write};
use std::path::Path;

/// Ends the tracking of every job that is done or out of time. Returns how many ended.
///
/// # Errors
/// [`StageError`] when the journal fails or a file cannot be written (tried again next round).
pub fn settle(ctx: &mut Ctx<'_>) -> Result<usize, StageError> {
    if !ctx.cfg.status.tracks() && ctx.journal.tracking_open()?.is_empty() {
        return Ok(0);
    }
    let now = ctx.clock.now().timestamp_millis();
    let mut ended = vec![];
    for (id, until) in ctx.journal.tracking_open()? {
        let pending = ctx.journal.messages_pending(id)?;
        if pending && now < until {
            continue;
        }
        let Some(job) = ctx.journal.job(id)? else {
            continue;
        };
        finish(ctx, &job, pending)?;
        ended.push(job);
    }
    if ended.is_empty() {
        return Ok(0);
    }
    let dir = &ctx.cfg.report.dir;
    sync_fs(dir)
        .and_then(|()| sync_dir(dir))
        .map_err(|e| StageError::local(format!("syncing {}", dir.display()), e))?;
    // As for file outcomes, the hook is queued before the record: at least once per job.
    for job in &ended {
        let (json, csv) = report_paths(ctx.cfg, job);
        queue_hook(ctx.cfg, job, &json, &csv, Event::Delivery)?;
    }
    ctx.journal.transaction(|t| {
        for job in &ended {
            t.close_tracking(job.id)?;
        }
        Ok(())
    })?;
    Ok(ended.len())
}

fn finish(ctx: &mut Ctx<'_>, job: &Job, gave_up: bool) -> Result<(), StageError> {
    let span = tracing::info_span!("job", id = job.id, input = %job.input_name);
    let _g = span.enter();
    let header = ctx.journal.carries_header(job)?;
    let offset = line_offset(job, header);
    let path = delivery_path(ctx.cfg, job);
    write_delivery_csv(ctx.journal, job.id, &path, offset)?;
    let (json, csv) = report_paths(ctx.cfg, job);
    let batches = ctx.journal.batches(job.id)?;
    write_json(ctx.cfg, ctx.journal, job, &batches, &json, &csv, true)?;
    let counts = ctx.journal.message_counts(job.id)?.unwrap_or_default();
    tracing::info!(
        delivered = counts.delivered,
        failed = counts.failed,
        pending = counts.pending,
        untracked = counts.untracked,
        gave_up,
        delivery = %path.display(),
        "message tracking ended"
    );
    Ok(())
}

/// Whether a message went out (its file was taken by the gateway).
fn was_sent(m: &Message) -> bool {
    !m.untracked
        .as_deref()
        .is_some_and(|u| u.starts_with("not sent"))
}

fn iso(ms: Option<i64>) -> String {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Writes the job's `.delivery.csv`, reading its messages one at a time.
fn write_delivery_csv(
    journal: &Journal,
    job_id: i64,
    path: &Path,
    offset: u64,
) -> Result<(), StageError> {
    let mut failure = None;
    let written = write_replacing(
        path,
        |w| {
            writeln!(
                w,
                "line;number;correlation_id;sent_status;sent_at;delivered_status;delivered_at;carrier"
            )?;
            let each = journal.each_message(job_id, |m| {
                if !was_sent(&m) {
                    return Ok(());
                }
                writeln!(
                    w,
                    "{};{};{};{};{};{};{};{}",
                    m.line + offset,
                    m.number,
                    csv_field(&m.correlation_id),
                    csv_field(m.sent_status.as_deref().unwrap_or("")),
                    iso(m.sent_at),
                    csv_field(m.delivered_status.as_deref().unwrap_or("")),
                    iso(m.delivered_at),
                    csv_field(m.carrier.as_deref().unwrap_or(""))
                )
            });
            match each {
                Ok(()) => Ok(()),
                Err(EachError::Stopped(e)) => Err(e),
                Err(EachError::Journal(e)) => {
                    failure = Some(e);
                    Err(io::Error::other("the journal could not be read"))
                }
            }
        },
        false,
    );
    match (written, failure) {
        (_, Some(e)) => Err(StageError::Journal(e)),
        (Err(e), None) => Err(StageError::local(format!("writing {}", path.display()), e)),
        (Ok(()), None) => Ok(()),
    }
}
