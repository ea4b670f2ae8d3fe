//! Durability helpers: nothing is recorded in the journal as existing before it is on disk
//! (DESIGN.md, invariant 9). Each helper says what it has made durable when it returns.
//!
//! This module must never remove a file it has not first made durable elsewhere.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Whether `e` says more about the machine than about the file: out of descriptors
/// (`EMFILE`, `ENFILE`) or memory, interrupted, timed out, a network share's stale handle or I/O
/// error. Such an input is left where it is and tried again; only an error about the file itself
/// (permissions, not a file, bad data) rejects it.
pub fn is_transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    if matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::StaleNetworkFileHandle
            | io::ErrorKind::ResourceBusy
    ) {
        return true;
    }
    e.raw_os_error().is_some_and(|code| {
        [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::NOBUFS,
            Errno::IO,
            Errno::AGAIN,
            Errno::INTR,
            Errno::TIMEDOUT,
            Errno::STALE,
            Errno::BUSY,
            Errno::HOSTDOWN,
            Errno::CONNRESET,
            Errno::NOLCK,
        ]
        .iter()
        .any(|x| x.raw_os_error() == code)
    })
}

/// Flushes the whole file system holding `dir`: one call for a group of files written without
/// their own `fsync`.
///
/// # Errors
/// When `dir` cannot be opened or the flush fails.
pub fn sync_fs(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

/// Makes a folder's entries (creations, renames, removals) durable.
///
/// # Errors
/// When the folder cannot be opened or synced.
pub fn sync_dir(d: &Path) -> io::Result<()> {
    File::open(d)?.sync_all()
}

/// The folder holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` durably: a temporary file beside it, synced, renamed into place, and
/// the folder synced. On return the file exists with that content even after a power cut.
///
/// # Errors
/// When any step fails; `path` then holds its old content (or nothing).
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_durable_with(path, |f| f.write_all(bytes))
}

/// Like [`write_durable`], with the content written by `fill` into a buffered writer.
///
/// # Errors
/// When `fill` or any step fails; `path` then holds its old content (or nothing).
pub fn write_durable_with(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    write_replacing(path, fill, true)
}

/// Writes `path` through a temporary file renamed into place (a reader never sees half a
/// file); synced (file and folder) when `sync`, else the caller flushes the file system once for
/// a group ([`sync_fs`]) before recording the files.
///
/// # Errors
/// When `fill` or any step fails; `path` then holds its old content (or nothing).
pub fn write_replacing(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
    sync: bool,
) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".smsdrop-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    {
        let mut w = io::BufWriter::new(tmp.as_file_mut().try_clone()?);
        fill(&mut w)?;
        w.flush()?;
    }
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Copies `from` to `to` durably (temporary name, data synced, renamed, folder synced).
///
/// # Errors
/// When reading or writing fails; `to` is then absent or complete.
pub fn copy_durable(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    write_durable_with(to, |w| io::copy(&mut src, w).map(drop))
}

/// Moves `from` to `to`. A rename when both are on one file system; across file systems, a
/// durable copy first, and only then the original is removed (and its folder synced). The caller
/// syncs `to`'s folder after a rename.
///
/// # Errors
/// When neither works (`from` is then untouched), or when the original could not be removed
/// after the copy (both then exist).
pub fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::XDEV) => {
            copy_durable(from, to)?;
            std::fs::remove_file(from)?;
            sync_dir(parent(from))
        }
        Err(e) => Err(e),
    }
}

/// True when `a` and `b` are on the same file system (a rename between them is atomic).
pub fn same_fs(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // A folder that is gone (an emptied queue folder removed) is on its nearest parent's file
    // system: the answer must not change because a folder was tidied away.
    let existing = |p: &Path| p.ancestors().find_map(|d| std::fs::metadata(d).ok());
    match (existing(a), existing(b)) {
        (Some(x), Some(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

/// SHA-256 of a file's content, in hex, read in chunks.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Fills `buf` unless the end of the input comes first (interrupted reads retried); returns the
/// bytes read.
///
/// # Errors
/// When reading fails.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_machines_trouble_is_transient() {
        use rustix::io::Errno;
        let os = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        for e in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::IO,
            Errno::STALE,
        ] {
            assert!(is_transient(&os(e)), "{e:?}");
        }
        for e in [Errno::ACCESS, Errno::ISDIR, Errno::NAMETOOLONG, Errno::LOOP] {
            assert!(!is_transient(&os(e)), "{e:?}");
        }
        assert!(!is_transient(&io::Error::from(io::ErrorKind::InvalidData)));
    }

    #[test]
    fn durable_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_durable(&p, b"one").unwrap();
        write_durable(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn move_within_one_fs_renames() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        move_file(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
    }

    /// Across file systems (the temp dir and /dev/shm, a tmpfs): the copy is complete and the
    /// original gone. Fails, rather than passing vacuously, when they are one file system.
    #[test]
    fn move_across_file_systems_copies_then_removes() {
        let d = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs) is needed");
        assert!(
            !same_fs(d.path(), shm.path()),
            "the test needs two file systems: {} and {}",
            d.path().display(),
            shm.path().display()
        );
        let a = d.path().join("in.csv");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &content).unwrap();
        let b = shm.path().join("1-in.csv");
        move_file(&a, &b).unwrap();
        assert!(!a.exists(), "original removed after the copy");
        assert_eq!(std::fs::read(&b).unwrap(), content);
        let left: Vec<_> = std::fs::read_dir(shm.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }
}
