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
use crate::fsutil::{read_full, same_fs};
use crate::journal::Job;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
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

/// The folder an input is claimed into: the archive when a rename there is atomic (or for a
/// copy), else a hidden folder beside the input, on its own file system.
pub fn claim_dir(cfg: &Config, input: &Path, origin: Origin) -> PathBuf {
    let from = input.parent().unwrap_or(Path::new("."));
    if origin == Origin::Named || same_fs(from, &cfg.state.archive_dir) {
        cfg.state.archive_dir.clone()
    } else {
        from.join(".smsdrop-claimed")
    }
}

/// The claimed name of a job's input.
pub fn claim_path(cfg: &Config, job: &Job, origin: Origin) -> PathBuf {
    let mut name = std::ffi::OsString::from(format!("{}-", job.id));
    name.push(job.input_path.file_name().unwrap_or_default());
    claim_dir(cfg, &job.input_path, origin).join(name)
}

/// Claims a job's input (a rename; a copy for a named file). Safe to call again after a crash:
/// a claimed file already at its claimed name is the one.
///
/// # Errors
/// When the rename or copy fails for another reason than the input being gone.
pub fn claim(cfg: &Config, job: &Job, origin: Origin) -> io::Result<Claimed> {
    let dest = claim_path(cfg, job, origin);
    let dir = crate::fsutil::parent(&dest).to_owned();
    if origin == Origin::Inbox {
        if let Some(found) = renamed_elsewhere(cfg, job, &dest) {
            // Claimed by an earlier owner into the other of the two claim folders (the answer
            // to "same file system?" may differ between processes): that file is this input.
            return at(found);
        }
    }
    std::fs::create_dir_all(&dir)?;
    if let Ok(m) = std::fs::metadata(&dest) {
        let found = Some((m.dev(), m.ino()));
        if origin == Origin::Inbox && job.dev_ino.is_some_and(|d| Some(d) == found) {
            // A rename a crash interrupted before the journal knew: that file is this input.
            return at(dest);
        }
        if origin == Origin::Inbox && job.dev_ino.is_none() && !job.input_path.exists() {
            // The same, for a job recorded before inodes were: the input is gone from its path.
            return at(dest);
        }
        // A copy a crash interrupted is redone below; another file holding the name (a journal
        // restored from a backup hands out job ids again) is kept: claim beside it.
        if origin == Origin::Inbox {
            return claim_beside(job, &dest, origin);
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

/// The job's input already renamed into the claim folder `dest` is not in, found by its inode.
fn renamed_elsewhere(cfg: &Config, job: &Job, dest: &Path) -> Option<PathBuf> {
    let want = job.dev_ino?;
    let name = dest.file_name()?;
    let other = [
        cfg.state.archive_dir.join(name),
        parent_of(&job.input_path)
            .join(".smsdrop-claimed")
            .join(name),
    ]
    .into_iter()
    .find(|p| p != dest)?;
    let m = std::fs::metadata(&other).ok()?;
    (Some((m.dev(), m.ino())) == Some(want) && !job.input_path.exists()).then_some(other)
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
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
/// `limit` bytes when given). A continuation's range comes after the input's first line when
/// `header` (its rows need their header to be read the same way), else after its byte order
/// mark (its encoding).
///
/// # Errors
/// When the file cannot be opened or read.
pub fn open_range(
    path: &Path,
    start: u64,
    limit: Option<u64>,
    header: bool,
) -> io::Result<(Box<dyn Read + Send>, Box<dyn Read + Send>)> {
    let prefix: Box<dyn Read + Send> = match (start > 0, header) {
        (true, true) => Box::new(io::Cursor::new(first_line(path)?)),
        (true, false) => Box::new(io::Cursor::new(bom(path)?)),
        (false, _) => Box::new(io::empty()),
    };
    let mut f = File::open(path)?;
    if start > 0 {
        f.seek(SeekFrom::Start(start))?;
    }
    let body: Box<dyn Read + Send> = match limit {
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
        Some([0xFF, 0xFE]) => line_end_utf16(&head, false),
        Some([0xFE, 0xFF]) => line_end_utf16(&head, true),
        _ => head
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|i| {
                // CRLF, LF or CR alone.
                if head[i] == b'\r' && head.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                }
            }),
    };
    head.truncate(end.unwrap_or(head.len()));
    Ok(head)
}

/// Where the first UTF-16 line (after the BOM) ends, on whole code units.
fn line_end_utf16(head: &[u8], big_endian: bool) -> Option<usize> {
    let unit = |i: usize| -> Option<u16> {
        let b = head.get(i..i + 2)?;
        Some(if big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let mut i = 2;
    while let Some(u) = unit(i) {
        if u == u16::from(b'\n') {
            return Some(i + 2);
        }
        if u == u16::from(b'\r') {
            return Some(if unit(i + 2) == Some(u16::from(b'\n')) {
                i + 4
            } else {
                i + 2
            });
        }
        i += 2;
    }
    None
}

/// The input's byte order mark, if any (a continuation needs it to be read in its encoding).
///
/// # Errors
/// When the file cannot be read.
pub fn bom(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 3];
    let mut f = File::open(path)?;
    let n = io::Read::read(&mut f, &mut head)?;
    Ok(match &head[..n] {
        [0xEF, 0xBB, 0xBF] => head.to_vec(),
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] => head[..2].to_vec(),
        _ => vec![],
    })
}

/// True when `offset` starts a line (the byte or UTF-16 unit before it is a line break).
///
/// # Errors
/// When the file cannot be read.
pub fn ends_a_line(path: &Path, offset: u64) -> io::Result<bool> {
    let u = units(path)?;
    let width = if u == Units::Bytes { 1 } else { 2 };
    if offset < width + if u == Units::Bytes { 0 } else { 2 } {
        return Ok(true);
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset - width))?;
    let mut b = [0u8; 2];
    let n = read_full(&mut f, &mut b[..width as usize])?;
    Ok(match (u, n) {
        (Units::Bytes, 1) => b[0] == b'\n' || b[0] == b'\r',
        (Units::Utf16 { big_endian }, 2) => {
            let unit = if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            };
            unit == 0x0A || unit == 0x0D
        }
        _ => true,
    })
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
        std::fs::write(&p, "a;b\r1;2\r").unwrap();
        assert_eq!(first_line(&p).unwrap(), b"a;b\r", "CR alone ends a line");
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("h\r\n1\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        std::fs::write(&p, &be).unwrap();
        assert_eq!(first_line(&p).unwrap(), &be[..2 + 6]);
        assert_eq!(bom(&p).unwrap(), [0xFE, 0xFF]);
        std::fs::write(&p, "no line break").unwrap();
        assert_eq!(first_line(&p).unwrap(), b"no line break");
        std::fs::write(&p, "ab\ncd").unwrap();
        assert!(ends_a_line(&p, 3).unwrap());
        assert!(!ends_a_line(&p, 2).unwrap());
    }
}

/// How line breaks are spelled in a file: bytes (UTF-8, Windows-1252...) or UTF-16 code units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    Bytes,
    Utf16 { big_endian: bool },
}

fn units(path: &Path) -> io::Result<Units> {
    Ok(match bom(path)?.as_slice() {
        [0xFF, 0xFE] => Units::Utf16 { big_endian: false },
        [0xFE, 0xFF] => Units::Utf16 { big_endian: true },
        _ => Units::Bytes,
    })
}

/// Offsets (from the start of `buf`, which starts at file offset `at`) just past each line
/// break in `buf`: `\n`, or `\r` not followed by `\n`; whole code units for UTF-16.
fn breaks(buf: &[u8], at: u64, u: Units) -> Vec<usize> {
    match u {
        Units::Bytes => (0..buf.len())
            .filter(|&i| buf[i] == b'\n' || (buf[i] == b'\r' && buf.get(i + 1) != Some(&b'\n')))
            .map(|i| i + 1)
            .collect(),
        Units::Utf16 { big_endian } => {
            let first = usize::from(at % 2 == 1);
            let unit = |i: usize| -> Option<u16> {
                let b = buf.get(i..i + 2)?;
                Some(if big_endian {
                    u16::from_be_bytes([b[0], b[1]])
                } else {
                    u16::from_le_bytes([b[0], b[1]])
                })
            };
            (first..buf.len())
                .step_by(2)
                .filter(|&i| match unit(i) {
                    Some(0x0A) => true,
                    Some(0x0D) => unit(i + 2) != Some(0x0A),
                    _ => false,
                })
                .map(|i| i + 2)
                .collect()
        }
    }
}

/// Bytes from `start` through the last line break of the file, when the file does not end on
/// one (its last row may still be being written); `None` when it ends on a line break or has
/// none after `start`.
///
/// # Errors
/// When the file cannot be read.
pub fn last_line_break(path: &Path, start: u64) -> io::Result<Option<u64>> {
    let u = units(path)?;
    let size = std::fs::metadata(path)?.len();
    let mut f = File::open(path)?;
    let mut end = size;
    while end > start {
        let from = end.saturating_sub(64 * 1024).max(start);
        let mut buf = vec![0u8; (end - from) as usize + 2];
        f.seek(SeekFrom::Start(from))?;
        let n = read_full(&mut f, &mut buf)?;
        buf.truncate(n);
        if let Some(&last) = breaks(&buf, from, u)
            .iter()
            .filter(|&&b| from + b as u64 <= end)
            .max()
        {
            let through = from + last as u64;
            return Ok((through < size).then_some(through - start));
        }
        end = from;
    }
    Ok(None)
}

/// Bytes from `from` through the next line break; `None` when there is none yet.
///
/// # Errors
/// When the file cannot be read.
pub fn next_line(path: &Path, from: u64) -> io::Result<Option<u64>> {
    let u = units(path)?;
    let mut f = File::open(path)?;
    let mut at = from;
    loop {
        let mut buf = vec![0u8; 64 * 1024 + 2];
        f.seek(SeekFrom::Start(at))?;
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        let full = n == 64 * 1024 + 2;
        if let Some(&b) = breaks(&buf, at, u)
            .iter()
            .find(|&&b| !full || b <= 64 * 1024)
        {
            return Ok(Some(at - from + b as u64));
        }
        if !full {
            return Ok(None);
        }
        at += 64 * 1024;
    }
}

/// Line breaks in the file between `from` and `to`.
///
/// # Errors
/// When the file cannot be read.
pub fn count_breaks(path: &Path, from: u64, to: u64) -> io::Result<u64> {
    let u = units(path)?;
    let mut f = File::open(path)?;
    let mut at = from;
    let mut count = 0;
    while at < to {
        let len = (to - at).min(64 * 1024);
        let mut buf = vec![0u8; len as usize + 2];
        f.seek(SeekFrom::Start(at))?;
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        count += breaks(&buf, at, u)
            .iter()
            .filter(|&&b| b as u64 <= len)
            .count() as u64;
        at += len;
    }
    Ok(count)
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn line_breaks_in_every_spelling() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "h\n1;a\n2;b").unwrap();
        assert_eq!(last_line_break(&p, 0).unwrap(), Some(6));
        assert_eq!(
            next_line(&p, 6).unwrap(),
            None,
            "no break after the cut row yet"
        );
        assert_eq!(next_line(&p, 2).unwrap(), Some(4));
        assert_eq!(count_breaks(&p, 0, 9).unwrap(), 2);
        std::fs::write(&p, "h\r1;a\r").unwrap();
        assert_eq!(last_line_break(&p, 0).unwrap(), None, "ends on a break");
        assert_eq!(next_line(&p, 0).unwrap(), Some(2));
        std::fs::write(&p, "h\r\n1;a\r\n2").unwrap();
        assert_eq!(last_line_break(&p, 0).unwrap(), Some(8));
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("h\n1\n2".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        std::fs::write(&p, &le).unwrap();
        assert_eq!(last_line_break(&p, 0).unwrap(), Some(10));
        assert_eq!(next_line(&p, 2).unwrap(), Some(4));
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("h\n1\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        std::fs::write(&p, &be).unwrap();
        assert_eq!(next_line(&p, 2).unwrap(), Some(4), "BE: the unit 0x000A");
        assert_eq!(next_line(&p, 6).unwrap(), Some(4));
        assert_eq!(count_breaks(&p, 0, be.len() as u64).unwrap(), 2);
    }
}
