//! Maps SFTP paths onto the sandbox root and keeps them there.
//!
//! The SFTP user's home is the root (`/` in SFTP terms). A path is split on `/`; empty parts and
//! `.` are dropped, `..` removes the previous part, and a `..` that would climb above the root is
//! refused, as is any absolute path that does: `/etc/passwd` means `<root>/etc/passwd`. No
//! symbolic link is ever followed: every folder on the way must be a real folder, and the last
//! part may be a link only for operations that act on the link itself (lstat, remove, rename).
//! The server's own folder `.sandbox` (host key) is out of bounds. This module must never hand
//! out a path outside the root.

use std::io;
use std::path::{Path, PathBuf};

/// The folder under the root holding the server's own files; never served.
pub const PRIVATE_DIR: &str = ".sandbox";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// `..` above the root, a symlink, or the server's private folder.
    Denied(String),
    /// A part of the path does not exist (or cannot be inspected).
    NotFound(String),
}

/// Whether the last part of a path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// The operation would follow a link there: refuse one.
    Follow,
    /// The operation acts on the link itself (lstat, remove, rename).
    NoFollow,
}

/// Normalises an SFTP path into its parts below the root (empty: the root itself).
///
/// # Errors
/// [`PathError::Denied`] when `..` climbs above the root, the path names the private folder, or
/// contains a NUL byte.
pub fn normalise(path: &str) -> Result<Vec<String>, PathError> {
    if path.contains('\0') {
        return Err(PathError::Denied("the path contains a NUL byte".into()));
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Denied(format!(
                        "{path:?} leaves the sandbox root"
                    )));
                }
            }
            p => parts.push(p.to_owned()),
        }
    }
    if parts.first().is_some_and(|p| p == PRIVATE_DIR) {
        return Err(PathError::Denied(format!(
            "{path:?} is the server's private folder"
        )));
    }
    Ok(parts)
}

/// The SFTP form of normalised parts: `/a/b`, or `/` for the root.
pub fn display(parts: &[String]) -> String {
    format!("/{}", parts.join("/"))
}

/// The sandbox root, and the rule that resolves SFTP paths under it.
#[derive(Debug, Clone)]
pub struct Jail {
    root: PathBuf,
}

impl Jail {
    /// A jail at `root`, which must be an absolute, symlink-free path (canonicalise it first).
    pub fn new(root: PathBuf) -> Jail {
        Jail { root }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path for an SFTP path. Every folder on the way must exist and be a real folder;
    /// the last part may be missing (for create, mkdir, rename targets) and may be a symlink only
    /// with [`Last::NoFollow`].
    ///
    /// # Errors
    /// [`PathError`] as described in the module docs.
    pub fn resolve(&self, path: &str, last: Last) -> Result<PathBuf, PathError> {
        let parts = normalise(path)?;
        let mut local = self.root.clone();
        let count = parts.len();
        for (i, part) in parts.iter().enumerate() {
            local.push(part);
            let is_last = i + 1 == count;
            let meta = match std::fs::symlink_metadata(&local) {
                Ok(m) => m,
                Err(e) if is_last && e.kind() == io::ErrorKind::NotFound => break,
                Err(_) => return Err(PathError::NotFound(format!("{path:?}: no such file"))),
            };
            if meta.file_type().is_symlink() && !(is_last && last == Last::NoFollow) {
                return Err(PathError::Denied(format!(
                    "{path:?}: symbolic links are not followed in the sandbox"
                )));
            }
            if !is_last && !meta.is_dir() {
                return Err(PathError::NotFound(format!(
                    "{path:?}: not a folder on the way"
                )));
            }
        }
        Ok(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_a_chroot_but_refuses_climbing_out() {
        let ok = |p: &str, want: &str| {
            let parts = normalise(p).unwrap_or_else(|e| panic!("{p}: {e:?}"));
            assert_eq!(display(&parts), want, "{p}");
        };
        ok("", "/");
        ok(".", "/");
        ok("/", "/");
        ok("upload", "/upload");
        ok("/upload/", "/upload");
        ok("./upload//a.txt", "/upload/a.txt");
        ok("/etc/passwd", "/etc/passwd");
        ok("upload/../error/x", "/error/x");
        ok("a/b/../../c", "/c");
        ok("...", "/...");
        for bad in [
            "..",
            "../",
            "/..",
            "../etc/passwd",
            "upload/../../x",
            "a/../..",
            "/.sandbox/host_key",
            ".sandbox",
            "x/../.sandbox",
            "a\0b",
        ] {
            assert!(
                matches!(normalise(bad), Err(PathError::Denied(_))),
                "{bad:?}"
            );
        }
        // A folder merely named like the private one, deeper down, is fine.
        ok("upload/.sandbox", "/upload/.sandbox");
    }

    #[test]
    fn resolve_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("upload")).unwrap();
        std::fs::write(root.join("upload/a.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("upload/pw")).unwrap();
        let jail = Jail::new(root.clone());
        let f = Last::Follow;
        assert_eq!(jail.resolve("/", f).unwrap(), root);
        assert_eq!(
            jail.resolve("/upload/a.txt", f).unwrap(),
            root.join("upload/a.txt")
        );
        assert_eq!(
            jail.resolve("upload/new", f).unwrap(),
            root.join("upload/new")
        );
        let denied = |p: &str, last| matches!(jail.resolve(p, last), Err(PathError::Denied(_)));
        assert!(denied("out", f));
        assert!(denied("out/passwd", f));
        assert!(denied("out/passwd", Last::NoFollow));
        assert!(denied("upload/pw", f));
        assert_eq!(
            jail.resolve("upload/pw", Last::NoFollow).unwrap(),
            root.join("upload/pw")
        );
        let missing = |p: &str| matches!(jail.resolve(p, f), Err(PathError::NotFound(_)));
        assert!(missing("nope/x"));
        assert!(missing("upload/a.txt/x"));
    }
}
