//! Who is writing a file: what the kernel says, so a file an ERP still has open for writing is
//! never taken however long it has been quiet (a slow query in the middle of an export).
//!
//! Two signals, both Linux: file events (inotify: data modified and not yet closed after
//! writing), kept by [`WriteTracker`] from the inbox watcher; and `/proc/<pid>/fd` (another
//! process holding the file open for writing), looked at only for files about to be taken, and
//! only where smsdrop may look (its own user's processes, or all as root). Where neither is
//! available (`watch = "poll"`, network shares, whose writers are on other machines), the
//! stability window alone applies. This module only reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Files with data written and not yet closed, from file events.
#[derive(Debug, Clone, Default)]
pub struct WriteTracker(Arc<Mutex<HashSet<PathBuf>>>);

impl WriteTracker {
    /// Takes one file event into account.
    pub fn event(&self, event: &notify::Event) {
        use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
        let Ok(mut open) = self.0.lock() else { return };
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
                open.extend(event.paths.iter().cloned());
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => {
                for p in &event.paths {
                    open.remove(p);
                }
            }
            _ => {}
        }
        if event.need_rescan() {
            // The kernel dropped events: what was open is unknown; the stability window applies.
            open.clear();
        }
    }

    /// True while `path` has been written and not closed since.
    pub fn writing(&self, path: &Path) -> bool {
        self.0.lock().is_ok_and(|open| open.contains(path))
    }
}

/// Of `paths`, those another process holds open for writing (as far as `/proc` shows).
pub fn open_for_writing(paths: &[PathBuf]) -> HashSet<PathBuf> {
    let mut found = HashSet::new();
    if paths.is_empty() {
        return found;
    }
    let wanted: HashMap<PathBuf, &PathBuf> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok().map(|c| (c, p)))
        .collect();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        let pid = pid.to_string_lossy();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(orig) = wanted.get(&target) else {
                continue;
            };
            let info = p.path().join("fdinfo").join(fd.file_name());
            if writable(&info) {
                found.insert((*orig).clone());
            }
        }
    }
    found
}

/// The `flags:` line of an fdinfo file says write access (O_WRONLY or O_RDWR).
fn writable(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_open_for_writing_in_another_process_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("export.csv");
        std::fs::write(&p, "a;b\n").unwrap();
        let mut writer = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3>>'{}'; exec sleep 30", p.display()))
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let mut seen = false;
        while start.elapsed() < std::time::Duration::from_secs(10) && !seen {
            seen = open_for_writing(std::slice::from_ref(&p)).contains(&p);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        writer.kill().unwrap();
        writer.wait().unwrap();
        assert!(seen, "the shell's write handle was not seen");
        assert!(open_for_writing(std::slice::from_ref(&p)).is_empty());
        // Our own handles do not count (smsdrop never writes an input).
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"1;2\n").unwrap();
        assert!(open_for_writing(std::slice::from_ref(&p)).is_empty());
    }
}
