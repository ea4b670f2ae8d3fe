//! The outbox the ERP imports replies from: `<SUBACCOUNT>.replies.<YYYYMMDD>T<HHMMSS>.csv`,
//! written under a temporary name, synced, renamed, never changed afterwards.
//!
//! Each reply is in exactly one file, across crashes: a file's name is recorded with its replies
//! in the journal before it is written, and a file recorded but not known written is written
//! again from the journal (the same replies, the same bytes) unless it is already in place.

use crate::config::{Config, OutboxEncoding};
use crate::journal::{Journal, JournalError, Reply};
use crate::report::csv_field;
use chrono::{DateTime, TimeZone, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The header line, exactly.
pub const HEADER: &str = "received_at;number;text;correlation_id;erp_correlation_id;job;input;\
line;reply_id;carrier;short_code;opt_out";

/// What a flush did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// The files written now, in the outbox.
    pub written: Vec<PathBuf>,
    /// Characters the outbox's encoding cannot hold, written as `?`.
    pub replaced: usize,
}

/// A problem writing the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the replies outbox {path}: {source}; the replies stay in the journal and are written at the next try")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every file recorded and not yet in place, then one new file per subaccount for the
/// replies waiting (when any wait). Queues the `on_outcome` hook for each file written.
///
/// # Errors
/// [`OutboxError`]: nothing is lost, the next flush tries again.
pub fn flush(
    cfg: &Config,
    journal: &mut Journal,
    now: DateTime<Utc>,
) -> Result<Flushed, OutboxError> {
    let dir = &cfg.replies.outbox;
    let mut out = Flushed::default();
    std::fs::create_dir_all(dir).map_err(|source| OutboxError::Write {
        path: dir.clone(),
        source,
    })?;
    let mut files = journal.outbox_unwritten()?;
    if journal.replies_waiting()? > 0 {
        let stamp = local(cfg, now).format("%Y%m%dT%H%M%S").to_string();
        let name = |sub: &str, taken: &dyn Fn(&str) -> bool| {
            let sub = if sub.is_empty() { "NOSUBACCOUNT" } else { sub };
            let base = format!("{sub}.replies.{stamp}");
            (1..)
                .map(|n| {
                    if n == 1 {
                        format!("{base}.csv")
                    } else {
                        format!("{base}-{n}.csv")
                    }
                })
                .find(|n| !taken(n) && !dir.join(n).exists())
                .expect("some suffix is free")
        };
        files.extend(journal.assign_outbox(&name)?);
    }
    for f in files {
        let path = dir.join(&f.name);
        if !path.exists() {
            let replies = journal.outbox_replies(&f.name)?;
            out.replaced += write(cfg, &path, &replies).map_err(|source| OutboxError::Write {
                path: path.clone(),
                source,
            })?;
            tracing::info!(file = %path.display(), replies = replies.len(), subaccount = %f.subaccount, "replies written to the outbox");
        }
        crate::hooks::queue_replies(cfg, &path).map_err(|source| OutboxError::Write {
            path: crate::hooks::queue_dir(cfg),
            source,
        })?;
        journal.outbox_written(&f.name)?;
        out.written.push(path);
    }
    if out.replaced > 0 {
        tracing::warn!(
            characters = out.replaced,
            "characters the outbox's encoding cannot hold were written as '?' ([replies] encoding)"
        );
    }
    Ok(out)
}

fn local(cfg: &Config, t: DateTime<Utc>) -> DateTime<chrono_tz::Tz> {
    cfg.batch.zone.tz().from_utc_datetime(&t.naive_utc())
}

/// The file's bytes, durably in place; returns the characters replaced by `?`.
fn write(cfg: &Config, path: &Path, replies: &[Reply]) -> std::io::Result<usize> {
    let mut text = String::with_capacity(128 * (replies.len() + 1));
    text.push_str(HEADER);
    text.push_str("\r\n");
    for r in replies {
        let at = DateTime::from_timestamp_millis(r.received_at_ms).unwrap_or_default();
        let fields = [
            local(cfg, at).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            csv_field(&r.number),
            csv_field(&r.text),
            csv_field(&r.correlation_id),
            csv_field(r.erp_id.as_deref().unwrap_or("")),
            r.job_id.map(|j| j.to_string()).unwrap_or_default(),
            csv_field(r.input.as_deref().unwrap_or("")),
            r.line.map(|l| l.to_string()).unwrap_or_default(),
            csv_field(&r.id),
            csv_field(r.carrier.as_deref().unwrap_or("")),
            csv_field(r.short_code.as_deref().unwrap_or("")),
            if r.opt_out { "yes" } else { "no" }.to_owned(),
        ];
        text.push_str(&fields.join(";"));
        text.push_str("\r\n");
    }
    let (bytes, replaced) = match cfg.replies.encoding {
        OutboxEncoding::Utf8 => (text.into_bytes(), 0),
        OutboxEncoding::Windows1252 => {
            let mut replaced = 0;
            let mut b = Vec::with_capacity(text.len());
            let mut buf = [0u8; 4];
            for c in text.chars() {
                let s = c.encode_utf8(&mut buf);
                let (enc, _, bad) = encoding_rs::WINDOWS_1252.encode(s);
                if bad {
                    replaced += 1;
                    b.push(b'?');
                } else {
                    b.extend_from_slice(&enc);
                }
            }
            (b, replaced)
        }
    };
    crate::fsutil::write_durable_with(path, |f| f.write_all(&bytes))?;
    Ok(replaced)
}
