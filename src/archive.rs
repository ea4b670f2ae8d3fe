//! Archiving: where an input goes once its job is recorded. Inbox files are moved to
//! `archive/` (used) or `rejected/` (not used) as `<job>-<original name>`; files named on the
//! command line are copied there and left in place. The new location is made durable before the
//! journal records it.
//!
//! This module must never delete an input: a move across file systems removes the original only
//! after the copy is synced.

use crate::fsutil::{move_file, parent, same_fs, sync_dir, sync_fs};
use crate::journal::JobState;
use crate::stage::{Ctx, StageError};
use std::io;
use std::path::{Path, PathBuf};

/// Where an input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Dropped into the inbox (or handed over through the queue): moved when taken.
    Inbox,
    /// Named on the command line (`smsdrop send`): copied to the archive, left in place.
    Named,
}

/// Moves (inbox) or copies (named) each job's input to `archive/` or `rejected/`, syncs those
/// folders once, and records where each went in one transaction.
///
/// # Errors
/// [`StageError::Journal`], or [`StageError::Local`] when a folder cannot be synced; a file that
/// cannot be moved is logged and left for the next round.
pub fn store_inputs(ctx: &mut Ctx<'_>, ids: &[i64], origin: Origin) -> Result<(), StageError> {
    let mut stored: Vec<(i64, PathBuf, PathBuf)> = vec![];
    let mut dirs: Vec<PathBuf> = vec![];
    for &id in ids {
        let Some(job) = ctx.journal.job(id)? else {
            continue;
        };
        let dir = if job.state == JobState::Rejected {
            &ctx.cfg.state.rejected_dir
        } else {
            &ctx.cfg.state.archive_dir
        };
        let source = job.source().to_owned();
        let claimed = job.claimed_path.is_some();
        // Claimed straight into its folder, or a continuation (it shares its first job's file):
        // nothing to move.
        if claimed && (parent(&source) == dir.as_path() || job.parent_job.is_some()) {
            stored.push((job.id, source.clone(), source));
            continue;
        }
        // Claimed into a hidden folder and still watched for late writes, or read by a job not
        // yet converted (the archive is on another file system, where a writer's handle would
        // not follow): moved when nothing needs it there.
        if claimed
            && !same_fs(parent(&source), dir)
            && (job.watch_until.is_some() || ctx.journal.claimed_file_busy(&source)?)
        {
            continue;
        }
        let stored_name = match (claimed, source.file_name()) {
            (true, Some(n)) => n.to_owned(),
            _ => {
                // The stored name keeps the original's bytes (a name need not be UTF-8).
                let mut n = std::ffi::OsString::from(format!("{}-", job.id));
                n.push(job.input_path.file_name().unwrap_or_default());
                n
            }
        };
        let mut dest = dir.join(&stored_name);
        let source_there = source.exists();
        if claimed && !source_there && !dest.exists() {
            // The claimed file vanished (removed by hand): say so once, never retry forever.
            tracing::error!(job = job.id, file = %source.display(), "the taken input disappeared before it was archived");
            ctx.journal.transaction(|t| {
                t.note_job(
                    job.id,
                    &format!("{} disappeared before it was archived", source.display()),
                )?;
                t.set_stored_path(job.id, Path::new(""))
            })?;
            continue;
        }
        let mut stored_name = stored_name;
        if source_there && dest.exists() {
            // Never replace an archived file (a journal restored from a backup repeats job ids;
            // an earlier cross-file-system move left its copy): keep both.
            (stored_name, dest) = free_name(dir, &stored_name);
        }
        let moves = claimed || origin == Origin::Inbox;
        let result = if moves {
            move_file(&source, &dest)
        } else {
            copy_unsynced(&source, &dest)
        };
        if let Err(e) = result {
            // Stored only when the copy is there and (for a move) the original is gone: an input
            // still in the inbox would otherwise be taken again.
            let done = dest.exists() && (!moves || !source.exists());
            if !done {
                tracing::error!(
                    job = job.id,
                    error = %format!("could not move {} to {}: {e}; it stays where it is and is retried", source.display(), dest.display()),
                    "input not stored"
                );
                continue;
            }
        }
        if origin == Origin::Inbox {
            move_marker(ctx, &job.input_path, &stored_name, dir);
        }
        for d in [dir.clone(), parent(&source).to_owned()] {
            if (moves || d == *dir) && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        stored.push((job.id, source, dest));
    }
    if stored.is_empty() {
        return Ok(());
    }
    let local = |d: &Path, e| StageError::local(format!("syncing {}", d.display()), e);
    if origin == Origin::Named || dirs.iter().any(|d| !same_fs(d, &ctx.cfg.inbox.dir)) {
        // Copies: flush their data once for the group (one `syncfs`, not one `fsync` a file).
        for d in &dirs {
            sync_fs(d).map_err(|e| local(d, e))?;
        }
    }
    for d in &dirs {
        sync_dir(d).map_err(|e| local(d, e))?;
    }
    crate::crash::point("archive");
    ctx.journal.transaction(|t| {
        for (id, from, dest) in &stored {
            t.set_stored_path(*id, dest)?;
            if from != dest {
                t.relocate(from, dest)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Archives a done-marker file beside its input.
fn move_marker(ctx: &Ctx<'_>, input: &Path, stored_name: &std::ffi::OsStr, dir: &Path) {
    let Some(m) = &ctx.cfg.inbox.done_marker else {
        return;
    };
    let marker = crate::watch::marker_path(input, m);
    if marker.exists() {
        let mut marker_name = stored_name.to_owned();
        marker_name.push(m);
        let _ = move_file(&marker, &dir.join(marker_name));
    }
}

/// Copies `from` to `to` through a temporary name, without syncing: [`store_inputs`] flushes the
/// file system once for the group before recording the copies.
fn copy_unsynced(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)
}

/// `name.1`, `name.2`, ... : the first that does not exist in `dir`.
fn free_name(dir: &Path, name: &std::ffi::OsStr) -> (std::ffi::OsString, PathBuf) {
    (1..)
        .map(|n| {
            let mut candidate = name.to_owned();
            candidate.push(format!(".{n}"));
            let path = dir.join(&candidate);
            (candidate, path)
        })
        .find(|(_, p)| !p.exists())
        .expect("some name is free")
}
