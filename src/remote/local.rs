//! A local folder standing in for the SFTP server, with the same no-clobber semantics. For unit
//! tests only: integration tests use a real OpenSSH server.

use super::{Remote, RemoteError};
use std::io;
use std::path::{Path, PathBuf};

/// Serves `root` as the remote home.
#[derive(Debug, Clone)]
pub struct LocalRemote {
    pub root: PathBuf,
}

impl LocalRemote {
    pub fn new(root: &Path) -> Self {
        LocalRemote {
            root: root.to_owned(),
        }
    }

    fn op(op: &'static str, path: &str, e: io::Error) -> RemoteError {
        RemoteError::Op {
            op,
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}

impl Remote for LocalRemote {
    fn list(&mut self, dir: &str) -> Result<Vec<String>, RemoteError> {
        let rd = std::fs::read_dir(self.root.join(dir)).map_err(|e| Self::op("list", dir, e))?;
        rd.map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| Self::op("list", dir, e))
        })
        .collect()
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        match std::fs::metadata(self.root.join(path)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::op("stat", path, e)),
        }
    }

    fn read_small(&mut self, path: &str, max: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        match std::fs::metadata(self.root.join(path)) {
            Ok(m) if m.len() <= max => std::fs::read(self.root.join(path))
                .map(Some)
                .map_err(|e| Self::op("read", path, e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::op("read", path, e)),
        }
    }

    fn upload_with(
        &mut self,
        local: &Path,
        temp: &str,
        dest: &str,
        before_rename: &mut dyn FnMut() -> Result<(), RemoteError>,
    ) -> Result<u64, RemoteError> {
        let temp_path = self.root.join(temp);
        let n = std::fs::copy(local, &temp_path).map_err(|e| Self::op("write", temp, e))?;
        before_rename()?;
        let result = match std::fs::hard_link(&temp_path, self.root.join(dest)) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(RemoteError::Exists {
                path: dest.to_owned(),
            }),
            Err(e) => Err(Self::op("rename", dest, e)),
        };
        let _ = std::fs::remove_file(&temp_path);
        result
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        match std::fs::remove_file(self.root.join(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::op("remove", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("upload")).unwrap();
        let src = dir.path().join("src.txt");
        std::fs::write(&src, "abc").unwrap();
        let mut r = LocalRemote::new(dir.path());
        assert_eq!(r.upload(&src, "upload/.a.part", "upload/a.txt").unwrap(), 3);
        assert_eq!(r.size("upload/a.txt").unwrap(), Some(3));
        assert!(matches!(
            r.upload(&src, "upload/.a.part", "upload/a.txt"),
            Err(RemoteError::Exists { .. })
        ));
        assert_eq!(r.list("upload").unwrap(), vec!["a.txt"]);
        r.remove("upload/a.txt").unwrap();
        r.remove("upload/a.txt").unwrap();
        assert_eq!(r.size("upload/a.txt").unwrap(), None);
    }
}
