//! Late writes: after an input is taken, its claimed file (the one a writer still holding it
//! open writes into) is watched for `[inbox] late_write_secs`. Rows appended after the bytes a
//! job read become a continuation job of the same input (`late_writes = "send"`), once the
//! appended part is quiet and the bytes already read are unchanged; or are only reported
//! (`"report"`). A file truncated or rewritten after the pickup is reported, never sent again.
//! Whatever is found is recorded loudly: log error, the job's report (written again, with the
//! hook), `status`.
//!
//! This module never sends a byte twice: a continuation starts where the last job's bytes end,
//! and only after those bytes are proven unchanged.

use crate::archive::{store_inputs, Origin};
use crate::claim::ends_a_line;
use crate::config::LateWrites;
use crate::journal::Job;
use crate::stage::{Ctx, StageError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

/// Appended parts seen growing: job → (size, since when).
#[derive(Debug, Default)]
pub struct LateWatch {
    growing: HashMap<i64, (u64, Instant)>,
}

impl LateWatch {
    /// Looks at every watched input once. Returns the continuation jobs it recorded (`detected`,
    /// for intake to convert).
    ///
    /// # Errors
    /// [`StageError::Journal`]; a file that cannot be read is looked at again next round.
    pub fn check(
        &mut self,
        ctx: &mut Ctx<'_>,
        writing: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<i64>, StageError> {
        let mut continuations = vec![];
        let mut ended = vec![];
        for job in ctx.journal.watched()? {
            match self.look(ctx, &job, writing)? {
                Look::Nothing => {}
                Look::Ended => ended.push(job.id),
                Look::Continued(id) => continuations.push(id),
            }
        }
        if !ended.is_empty() {
            // Claimed into the inbox's hidden folder: archived now that the watch is over.
            store_inputs(ctx, &ended, Origin::Inbox)?;
        }
        Ok(continuations)
    }

    fn look(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        writing: &dyn Fn(&Path) -> bool,
    ) -> Result<Look, StageError> {
        let path = job.source().to_owned();
        let end = job.start_offset + job.consumed.unwrap_or(0);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let why = format!(
                    "{} disappeared while it was watched for late writes",
                    path.display()
                );
                return self.stop(ctx, job, Some(&why));
            }
            Err(_) => return Ok(Look::Nothing),
        };
        let over = job.watch_until.is_some_and(|t| ctx.clock.now() >= t);
        if size == end {
            self.growing.remove(&job.id);
            return if over {
                self.stop(ctx, job, None)
            } else {
                Ok(Look::Nothing)
            };
        }
        if size < end {
            let why = format!(
                "the input was truncated after smsdrop took it ({size} bytes now, {end} were \
                 read): nothing was sent again; check what the ERP meant to send and drop a new \
                 export if rows are missing"
            );
            return self.stop(ctx, job, Some(&why));
        }
        // It grew: wait until the appended part is quiet and no one writes it.
        let seen = self.growing.entry(job.id).or_insert((size, Instant::now()));
        if seen.0 != size {
            *seen = (size, Instant::now());
        }
        if seen.1.elapsed() < ctx.cfg.inbox.stable || writing(&path) {
            return Ok(Look::Nothing);
        }
        self.growing.remove(&job.id);
        let unchanged = hash_range(&path, job.start_offset, job.consumed.unwrap_or(0))
            .is_ok_and(|h| h == job.hash);
        if !unchanged {
            let why = "the input was rewritten after smsdrop took it (the bytes it had read \
                       changed): nothing was sent again; check what the ERP meant to send and \
                       drop a new export if rows are missing";
            return self.stop(ctx, job, Some(why));
        }
        self.appended(ctx, job, &path, end, size)
    }

    /// Rows were appended after `end`: a continuation (or a report only).
    fn appended(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        path: &Path,
        end: u64,
        size: u64,
    ) -> Result<Look, StageError> {
        let late = size - end;
        let rows = count_lines(path, end).unwrap_or(0);
        // A row cut at the pickup (the writer paused inside it): its rest is not a row.
        let (start, cut) = if ends_a_line(path, end).unwrap_or(true) {
            (end, String::new())
        } else {
            let skip = next_line(path, end).unwrap_or(late);
            (
                end + skip,
                format!(
                    "; the row being written at the pickup was cut at byte {end}: its first part \
                     went out with job {} (or was rejected, see its report), its rest ({skip} \
                     bytes) is not sent",
                    job.id
                ),
            )
        };
        let name = &job.input_name;
        let (continued, msg) = match ctx.cfg.inbox.late_writes {
            LateWrites::Send if start < size => {
                let id = ctx.journal.transaction(|t| {
                    let id = t.insert_continuation(job, start)?;
                    t.set_watch(job.id, None)?;
                    t.set_late(
                        job.id,
                        &format!(
                            "late write: {late} bytes (about {rows} rows) were written to {name} \
                             after smsdrop took it; they are sent as job {id}{cut}"
                        ),
                    )?;
                    Ok(id)
                })?;
                (Some(id), format!("sent as job {id}"))
            }
            _ => {
                let why = format!(
                    "late write: {late} bytes (about {rows} rows) were written to {name} after \
                     smsdrop took it and were NOT sent ([inbox] late_writes = \"report\"){cut}; \
                     send them in a new file"
                );
                ctx.journal.transaction(|t| {
                    t.set_watch(job.id, None)?;
                    t.set_late(job.id, &why)
                })?;
                (None, "not sent".to_owned())
            }
        };
        tracing::error!(job = job.id, input = %job.input_path.display(), late_bytes = late, rows, outcome = %msg, "rows were written to the input after it was taken");
        Ok(match continued {
            Some(id) => Look::Continued(id),
            None => Look::Nothing,
        })
    }

    /// Ends a job's watch, recording why when something went wrong.
    fn stop(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        why: Option<&str>,
    ) -> Result<Look, StageError> {
        self.growing.remove(&job.id);
        ctx.journal.transaction(|t| {
            t.set_watch(job.id, None)?;
            match why {
                Some(w) => t.set_late(job.id, w),
                None => Ok(()),
            }
        })?;
        if let Some(w) = why {
            tracing::error!(job = job.id, input = %job.input_path.display(), reason = w, "the input changed after it was taken");
        }
        Ok(if job.stored_path.is_none() {
            Look::Ended
        } else {
            Look::Nothing
        })
    }
}

enum Look {
    Nothing,
    /// The watch is over and the input waits to be archived.
    Ended,
    Continued(i64),
}

/// SHA-256 (hex) of `len` bytes of `path` from `start`.
fn hash_range(path: &Path, start: u64, len: u64) -> io::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut h = Sha256::new();
    let copied = io::copy(&mut f.take(len), &mut HashWriter(&mut h))?;
    if copied != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(crate::fsutil::hex(&h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Line breaks from `from` to the end.
fn count_lines(path: &Path, from: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..r]).count() as u64;
    }
}

/// Bytes from `from` up to and including the next line break (all that is left if none).
fn next_line(path: &Path, from: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            return Ok(seen);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..r]) {
            // UTF-16 LE: the code unit "\n\0" ends one byte later.
            let extra = u64::from(buf.get(i + 1) == Some(&0));
            return Ok(seen + i as u64 + 1 + extra);
        }
        seen += r as u64;
    }
}
