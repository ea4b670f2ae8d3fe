//! Claiming: before a byte of an input is read, the file is taken out of the inbox: renamed into
//! the archive folder when it is on the inbox's file system (else into `<inbox>/.smsdrop-claimed/`),
//! or, for a file named to `smsdrop send`, copied there. Whatever happens at the inbox path
//! afterwards (a new export renamed over it, a rewrite, a deletion) is a new file and becomes its
//! own job; a writer that still holds the file open writes into the claimed file, where the
//! late-write watch sees it.
//!
//! The claimed name is `<job>-<original name>`, so a crash between the rename and the journal
//! write is recognised on restart. This module never deletes an input.

use crate::archive::Origin;
use crate::config::Config;
use crate::fsutil::same_fs;
use crate::journal::Job;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The longest header line carried into a continuation.
const MAX_HEADER: u64 = 64 * 1024;

/// Where an input is now.
#[derive(Debug)]
pub enum Claimed {
    /// Claimed: the file's path, device and inode.
    At { path: PathBuf, dev: u64, ino: u64 },
    /// Gone before it could be claimed.
    Vanished,
}

/// The folder inputs from `input`'s folder are claimed into: the archive when a rename there is
/// atomic, else a hidden folder in the inbox (same file system as the input).
pub fn claim_dir(cfg: &Config, input: &Path) -> PathBuf {
    let from = input.parent().unwrap_or(Path::new("."));
    if same_fs(from, &cfg.state.archive_dir) {
        cfg.state.archive_dir.clone()
    } else {
        cfg.inbox.dir.join(".smsdrop-claimed")
    }
}

/// The claimed name of a job's input.
pub fn claim_path(cfg: &Config, job: &Job) -> PathBuf {
    let mut name = std::ffi::OsString::from(format!("{}-", job.id));
    name.push(job.input_path.file_name().unwrap_or_default());
    claim_dir(cfg, &job.input_path).join(name)
}

/// Claims a job's input (a rename; a copy for a named file). Safe to call again after a crash:
/// a claimed file already at its claimed name is the one.
///
/// # Errors
/// When the rename or copy fails for another reason than the input being gone.
pub fn claim(cfg: &Config, job: &Job, origin: Origin) -> io::Result<Claimed> {
    let dest = claim_path(cfg, job);
    let dir = crate::fsutil::parent(&dest).to_owned();
    std::fs::create_dir_all(&dir)?;
    if dest.exists() {
        match job.input_path.try_exists() {
            // A rename a crash interrupted before the journal knew: that file is this input.
            Ok(false) if origin == Origin::Inbox => return at(dest),
            // A copy a crash interrupted: redone below. Or another file holds the name (a journal
            // restored from a backup hands out job ids again): claim beside it, never over it.
            _ if origin == Origin::Named => {}
            _ => return claim_beside(job, &dest, origin),
        }
    }
    let result = match origin {
        Origin::Inbox => std::fs::rename(&job.input_path, &dest),
        Origin::Named => copy(&job.input_path, &dest),
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Claimed::Vanished),
        Err(e) => return Err(e),
    }
    if origin == Origin::Inbox {
        move_marker(cfg, &job.input_path, &dest);
    }
    // The caller syncs the folders (both ends of the rename) once for its group before the
    // journal records the claim; a copy's data is flushed with the group's spool (`syncfs`).
    at(dest)
}

/// A done-marker goes with its input, to the archive.
fn move_marker(cfg: &Config, input: &Path, claimed: &Path) {
    let Some(m) = &cfg.inbox.done_marker else {
        return;
    };
    let marker = crate::watch::marker_path(input, m);
    if marker.exists() {
        let name = crate::watch::marker_path(Path::new(claimed.file_name().unwrap_or_default()), m);
        let _ = crate::fsutil::move_file(&marker, &cfg.state.archive_dir.join(name));
    }
}

fn claim_beside(job: &Job, taken: &Path, origin: Origin) -> io::Result<Claimed> {
    let dest = (1..)
        .map(|n| {
            let mut p = taken.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        })
        .find(|p| !p.exists())
        .expect("some name is free");
    let result = match origin {
        Origin::Inbox => std::fs::rename(&job.input_path, &dest),
        Origin::Named => copy(&job.input_path, &dest),
    };
    match result {
        Ok(()) => at(dest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Claimed::Vanished),
        Err(e) => Err(e),
    }
}

fn at(path: PathBuf) -> io::Result<Claimed> {
    let m = std::fs::metadata(&path)?;
    Ok(Claimed::At {
        dev: m.dev(),
        ino: m.ino(),
        path,
    })
}

fn copy(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)
}

/// The bytes a job converts: its range of the claimed file (from `start_offset`, at most
/// `limit` bytes when given), after the input's first line when `header` (a continuation's rows
/// need their header to be read the same way).
///
/// # Errors
/// When the file cannot be opened or read.
pub fn open_range(
    path: &Path,
    start: u64,
    limit: Option<u64>,
    header: bool,
) -> io::Result<(Box<dyn Read>, Box<dyn Read>)> {
    let prefix: Box<dyn Read> = if header && start > 0 {
        Box::new(io::Cursor::new(first_line(path)?))
    } else {
        Box::new(io::empty())
    };
    let mut f = File::open(path)?;
    if start > 0 {
        f.seek(SeekFrom::Start(start))?;
    }
    let body: Box<dyn Read> = match limit {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    Ok((prefix, body))
}

/// The input's first line with its line break (and byte order mark), as raw bytes: UTF-16
/// lines end on a whole code unit.
///
/// # Errors
/// When the file cannot be read.
pub fn first_line(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = vec![];
    BufReader::new(File::open(path)?.take(MAX_HEADER)).read_to_end(&mut head)?;
    let end = match head.get(..2) {
        Some([0xFF, 0xFE]) => find_unit(&head, [b'\n', 0]),
        Some([0xFE, 0xFF]) => find_unit(&head, [0, b'\n']),
        _ => head.iter().position(|&b| b == b'\n').map(|i| i + 1),
    };
    head.truncate(end.unwrap_or(head.len()));
    Ok(head)
}

fn find_unit(head: &[u8], unit: [u8; 2]) -> Option<usize> {
    (2..head.len().saturating_sub(1))
        .step_by(2)
        .find(|&i| head[i..i + 2] == unit)
        .map(|i| i + 2)
}

/// True when the byte before `offset` ends a line (a continuation then starts on a row).
///
/// # Errors
/// When the file cannot be read.
pub fn ends_a_line(path: &Path, offset: u64) -> io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    let mut f = BufReader::new(File::open(path)?);
    f.seek(SeekFrom::Start(offset - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    let _ = f.fill_buf();
    // UTF-16 LE ends a line with "\n\0": the last byte is 0 and the one before it is '\n'.
    Ok(b[0] == b'\n'
        || b[0] == b'\r'
        || (b[0] == 0 && offset >= 2 && {
            let mut p = [0u8; 1];
            f.seek(SeekFrom::Start(offset - 2))?;
            f.read_exact(&mut p)?;
            p[0] == b'\n' || p[0] == b'\r'
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_in_every_encoding() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "a;b\r\n1;2\n").unwrap();
        assert_eq!(first_line(&p).unwrap(), b"a;b\r\n");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a\tb\n1\t2\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        std::fs::write(&p, &utf16).unwrap();
        assert_eq!(first_line(&p).unwrap(), &utf16[..2 + 8]);
        std::fs::write(&p, "no line break").unwrap();
        assert_eq!(first_line(&p).unwrap(), b"no line break");
        std::fs::write(&p, "ab\ncd").unwrap();
        assert!(ends_a_line(&p, 3).unwrap());
        assert!(!ends_a_line(&p, 2).unwrap());
    }
}
