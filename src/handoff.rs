//! The send queue: how `smsdrop send` hands files to the daemon that owns the state folder.
//!
//! `send` copies each file into a hidden folder `<state>/queue/.new-*`, syncs it, then renames
//! the folder to a visible name: the daemon sees a queued file complete or not at all. The owner
//! of the state folder takes queued files like inbox files (moved to the archive as a job), and
//! `send` finds their jobs in the journal by path. A file is taken once: the journal records it
//! before it moves. Nothing here deletes a queued file; only empty folders are removed.

use crate::config::Config;
use crate::fsutil::{copy_durable, sync_dir};
use crate::spool::queue_dir;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A hidden folder older than this was left by a `send` that died while copying.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The queue folder, created and resolved to an absolute path (the daemon and `send` may have
/// been started from different folders).
///
/// # Errors
/// When it cannot be created.
pub fn queue(cfg: &Config) -> io::Result<PathBuf> {
    let q = queue_dir(cfg);
    std::fs::create_dir_all(&q)?;
    std::fs::canonicalize(&q)
}

/// Copies `files` into the queue; returns where each now is (the path its job will carry).
///
/// # Errors
/// When a file cannot be read or the queue written; nothing is then queued for that file.
pub fn enqueue(cfg: &Config, files: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let q = queue(cfg)?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // Every file copied into its hidden folder first, then all made visible: a command hands
    // over all its files or none.
    let mut hidden = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file", f.display()),
            )
        })?;
        let id = format!("{}-{stamp}-{i}", std::process::id());
        let dir = q.join(format!(".new-{id}"));
        std::fs::create_dir(&dir)?;
        hidden.push((dir.clone(), id, name.to_owned()));
        if let Err(e) = copy_durable(f, &dir.join(name)) {
            for (d, _, _) in &hidden {
                let _ = std::fs::remove_dir_all(d);
            }
            return Err(io::Error::new(e.kind(), format!("{}: {e}", f.display())));
        }
    }
    let mut out = Vec::with_capacity(files.len());
    for (dir, id, name) in hidden {
        let visible = q.join(&id);
        std::fs::rename(&dir, &visible)?;
        out.push(visible.join(name));
    }
    sync_dir(&q)?;
    Ok(out)
}

/// Queued files ready to take, oldest first; removes empty folders and stale hidden ones.
///
/// # Errors
/// When the queue cannot be read.
pub fn pending(cfg: &Config) -> io::Result<Vec<PathBuf>> {
    let q = queue(cfg)?;
    let mut dirs: Vec<PathBuf> = vec![];
    for e in std::fs::read_dir(&q)?.flatten() {
        let path = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if hidden {
            if is_stale(&path) {
                tracing::warn!(folder = %path.display(), "removing a queue folder a dead `smsdrop send` left half-written");
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    let mut files = vec![];
    for d in dirs {
        let mut inside: Vec<PathBuf> = std::fs::read_dir(&d)?.flatten().map(|e| e.path()).collect();
        if inside.is_empty() {
            let _ = std::fs::remove_dir(&d);
        }
        inside.sort();
        files.extend(inside);
    }
    Ok(files)
}

fn is_stale(p: &Path) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE)
}
