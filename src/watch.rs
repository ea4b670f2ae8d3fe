//! The inbox: which files are there, which are complete ("stable"), and file-system events as
//! hints to look again.
//!
//! A file is ready when its size and mtime have not changed for `stable_secs` and, with a
//! `done_marker`, once `NAME<marker>` exists. Events are only hints: a rescan every `rescan_secs`
//! finds anything they missed (inboxes on network shares lose events). This module never moves or
//! opens a file's content.

use crate::config::check_subaccount;
use crate::config::InboxConfig;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// A file ready to be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub path: PathBuf,
    /// The subaccount its folder names (`inbox/<SUB>/file`), `Ok(None)` at the top level, or why
    /// the folder name is not a usable subaccount.
    pub subaccount: Result<Option<String>, String>,
    /// The done-marker file to archive with it.
    pub marker: Option<PathBuf>,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    since: Instant,
}

/// Remembers what each scan saw, to tell when a file stopped changing.
#[derive(Debug)]
pub struct Scanner {
    cfg: InboxConfig,
    seen: HashMap<PathBuf, Seen>,
    /// Files being written, from file events (none with `watch = "poll"`).
    writes: Option<crate::writers::WriteTracker>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub ready: Vec<Ready>,
    /// When a file still settling should be looked at again.
    pub recheck_at: Option<Instant>,
    /// Files smsdrop will never take where they are, with why.
    pub ignored: Vec<(PathBuf, String)>,
}

impl Scanner {
    pub fn new(cfg: InboxConfig) -> Self {
        Scanner {
            cfg,
            seen: HashMap::new(),
            writes: None,
        }
    }

    /// Holds back files that file events show open for writing.
    pub fn with_writes(mut self, writes: crate::writers::WriteTracker) -> Self {
        self.writes = Some(writes);
        self
    }

    /// Starts a file's stability window again (it turned out to be open for writing).
    pub fn unsettle(&mut self, path: &Path, now: Instant) {
        if let Some(s) = self.seen.get_mut(path) {
            s.since = now;
        }
    }

    /// True for names the inbox never takes: dotfiles, temp and partial files, Office lock files,
    /// done markers, and names matching none of the patterns.
    pub fn ignored(&self, name: &str) -> bool {
        self.transient(name) || !self.cfg.patterns.iter().any(|p| p.matches(name))
    }

    /// Names of files on their way (dotfiles, temp and partial files, Office lock files, done
    /// markers): never taken, and not worth reporting.
    fn transient(&self, name: &str) -> bool {
        name.starts_with('.')
            || name.starts_with("~$")
            || name.ends_with(".tmp")
            || name.ends_with(".part")
            || self
                .cfg
                .done_marker
                .as_deref()
                .is_some_and(|m| name.ends_with(m))
    }

    /// Lists the inbox and its subaccount folders. `busy` files (being handled) are skipped.
    ///
    /// # Errors
    /// When the inbox itself cannot be read.
    pub fn scan(&mut self, now: Instant, busy: &HashSet<PathBuf>) -> std::io::Result<Scan> {
        let mut present = HashSet::new();
        let mut scan = Scan::default();
        let top = std::fs::read_dir(&self.cfg.dir)?;
        for entry in top.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                if name.starts_with('.') {
                    continue;
                }
                let sub = check_subaccount(&name)
                    .map(|()| Some(name.clone()))
                    .map_err(|m| {
                        format!("the inbox folder {name:?} does not name a subaccount: {m}")
                    });
                let Ok(inner) = std::fs::read_dir(&path) else {
                    continue;
                };
                for e in inner.flatten() {
                    let Ok(t) = e.file_type() else { continue };
                    if t.is_file() {
                        self.consider(e.path(), sub.clone(), now, busy, &mut present, &mut scan);
                    } else if t.is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
                        for deeper in walk_files(&e.path()) {
                            scan.ignored.push((
                                deeper,
                                format!(
                                    "too deep: smsdrop takes files in the inbox and in \
                                     inbox/<SUBACCOUNT>/ only; move it to inbox/{name}/"
                                ),
                            ));
                        }
                    }
                }
            } else if ft.is_file() {
                self.consider(path, Ok(None), now, busy, &mut present, &mut scan);
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        Ok(scan)
    }

    fn consider(
        &mut self,
        path: PathBuf,
        subaccount: Result<Option<String>, String>,
        now: Instant,
        busy: &HashSet<PathBuf>,
        present: &mut HashSet<PathBuf>,
        scan: &mut Scan,
    ) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if busy.contains(&path) {
            return;
        }
        if self.ignored(&name) {
            if !self.transient(&name) {
                let patterns: Vec<&str> = self.cfg.patterns.iter().map(|p| p.as_str()).collect();
                scan.ignored.push((
                    path,
                    format!(
                        "the name matches none of [inbox] patterns ({}); rename it or add a \
                         pattern",
                        patterns.join(", ")
                    ),
                ));
            }
            return;
        }
        let marker = match &self.cfg.done_marker {
            Some(m) => {
                let marker = marker_path(&path, m);
                if !marker.exists() {
                    return;
                }
                Some(marker)
            }
            None => None,
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        present.insert(path.clone());
        let current = Seen {
            size: meta.len(),
            mtime: meta.modified().ok(),
            since: now,
        };
        let being_written = self.writes.as_ref().is_some_and(|w| w.writing(&path));
        let seen = self.seen.entry(path.clone()).or_insert(current);
        if seen.size != current.size || seen.mtime != current.mtime || being_written {
            // Open for writing: not stable, however long it has been quiet.
            *seen = current;
        }
        let ready_at = seen.since + self.cfg.stable;
        if now >= ready_at {
            scan.ready.push(Ready {
                path,
                subaccount,
                marker,
                size: current.size,
            });
        } else {
            scan.recheck_at = Some(scan.recheck_at.map_or(ready_at, |t| t.min(ready_at)));
        }
    }

    /// Forgets a file (it was taken), so a new file of the same name starts settling afresh.
    pub fn forget(&mut self, path: &Path) {
        self.seen.remove(path);
    }
}

/// Every file below `dir` (folders skipped when unreadable).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk_files(&e.path())),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
    out
}

/// `NAME` + `marker`, keeping the name's bytes (it need not be UTF-8).
pub fn marker_path(path: &Path, marker: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(marker);
    PathBuf::from(p)
}

/// Starts watching `dir` (and its subfolders) for changes, sending a hint on each event. Events
/// are dropped when the channel is full: the rescan catches up.
///
/// # Errors
/// When the watcher cannot be set up; the caller then relies on rescans.
pub fn watch_events(
    dir: &Path,
    hints: std::sync::mpsc::SyncSender<()>,
    writes: Option<crate::writers::WriteTracker>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let (Some(w), Ok(e)) = (&writes, &event) {
            w.event(e);
        }
        let _ = hints.try_send(());
    })?;
    watcher.watch(dir, notify::RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(dir: &Path, marker: Option<&str>) -> InboxConfig {
        InboxConfig {
            dir: dir.to_owned(),
            patterns: vec![
                glob::Pattern::new("*.csv").unwrap(),
                glob::Pattern::new("*.txt").unwrap(),
            ],
            use_events: false,
            rescan: Duration::from_secs(30),
            stable: Duration::from_secs(5),
            done_marker: marker.map(str::to_owned),
            duplicate_days: 7,
            late_writes: crate::config::LateWrites::Send,
            late_write_grace: Duration::from_secs(300),
        }
    }

    #[test]
    fn files_are_ready_once_stable() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Scanner::new(cfg(dir.path(), None));
        let t0 = Instant::now();
        let f = dir.path().join("a.csv");
        std::fs::write(&f, "1").unwrap();
        let scan = s.scan(t0, &HashSet::new()).unwrap();
        assert!(scan.ready.is_empty());
        assert_eq!(scan.recheck_at, Some(t0 + Duration::from_secs(5)));
        // It grows: the clock starts again.
        std::fs::write(&f, "12").unwrap();
        assert!(s
            .scan(t0 + Duration::from_secs(4), &HashSet::new())
            .unwrap()
            .ready
            .is_empty());
        assert!(s
            .scan(t0 + Duration::from_secs(8), &HashSet::new())
            .unwrap()
            .ready
            .is_empty());
        let ready = s
            .scan(t0 + Duration::from_secs(9), &HashSet::new())
            .unwrap()
            .ready;
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].size, &ready[0].subaccount), (2, &Ok(None)));
        // Busy files are skipped.
        let busy: HashSet<PathBuf> = [f.clone()].into();
        assert!(s
            .scan(t0 + Duration::from_secs(10), &busy)
            .unwrap()
            .ready
            .is_empty());
    }

    #[test]
    fn ignored_names_and_subaccount_folders() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".hidden.csv",
            "x.tmp",
            "x.csv.part",
            "~$book.csv",
            "notes.pdf",
            "ok.txt",
        ] {
            std::fs::write(dir.path().join(name), "1").unwrap();
        }
        std::fs::create_dir(dir.path().join("ACME_2")).unwrap();
        std::fs::write(dir.path().join("ACME_2/b.csv"), "1").unwrap();
        std::fs::create_dir(dir.path().join("bad name")).unwrap();
        std::fs::write(dir.path().join("bad name/c.csv"), "1").unwrap();
        let mut s = Scanner::new(InboxConfig {
            stable: Duration::ZERO,
            ..cfg(dir.path(), None)
        });
        let mut ready = s.scan(Instant::now(), &HashSet::new()).unwrap().ready;
        ready.sort_by(|a, b| a.path.cmp(&b.path));
        let names: Vec<_> = ready
            .iter()
            .map(|r| r.path.strip_prefix(dir.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                PathBuf::from("ACME_2/b.csv"),
                PathBuf::from("bad name/c.csv"),
                PathBuf::from("ok.txt")
            ]
        );
        assert_eq!(ready[0].subaccount, Ok(Some("ACME_2".into())));
        assert!(ready[1]
            .subaccount
            .as_ref()
            .unwrap_err()
            .contains("bad name"));
    }

    #[test]
    fn done_markers_gate_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Scanner::new(InboxConfig {
            stable: Duration::ZERO,
            ..cfg(dir.path(), Some(".done"))
        });
        std::fs::write(dir.path().join("a.csv"), "1").unwrap();
        assert!(s
            .scan(Instant::now(), &HashSet::new())
            .unwrap()
            .ready
            .is_empty());
        std::fs::write(dir.path().join("a.csv.done"), "").unwrap();
        let ready = s.scan(Instant::now(), &HashSet::new()).unwrap().ready;
        assert_eq!(ready.len(), 1, "the marker itself is not an input");
        assert_eq!(ready[0].marker, Some(dir.path().join("a.csv.done")));
    }
}
