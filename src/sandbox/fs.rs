//! The SFTP subsystem of the sandbox: the requests smsdrop's ssh2 client and OpenSSH's `sftp`
//! send for this work, served from the sandbox root through a [`Jail`].
//!
//! Served: init, open (read, write, append, create, truncate, exclusive), read, write, close,
//! stat, lstat, fstat, setstat/fsetstat (permissions only; times, owner and size are accepted
//! and ignored), opendir/readdir, remove, mkdir, rmdir, realpath, and rename, which never
//! replaces an existing target (SSH_FX_FAILURE, like OpenSSH's server without the posix-rename
//! extension, which this server does not offer). Anything else gets SSH_FX_OP_UNSUPPORTED.
//! Local file calls are short and run on the runtime's worker threads: one demo user, small files.

use super::jail::{display, normalise, Jail, Last, PathError};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

/// Open handles one session may hold (a client cannot exhaust the process's descriptors).
const MAX_HANDLES: usize = 64;
/// Largest read answered at once.
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per READDIR answer.
const READDIR_BATCH: usize = 100;

enum Open {
    File(fs::File),
    Dir(VecDeque<File>),
}

/// One client's SFTP session.
pub struct SftpSession {
    jail: Arc<Jail>,
    user: String,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Requests served, by name: logged when the session ends.
    ops: BTreeMap<&'static str, u64>,
}

impl SftpSession {
    /// A session for `user` serving `jail`.
    pub fn new(jail: Arc<Jail>, user: &str) -> SftpSession {
        SftpSession {
            jail,
            user: user.to_owned(),
            handles: HashMap::new(),
            next_handle: 0,
            ops: BTreeMap::new(),
        }
    }

    fn note(&mut self, op: &'static str, path: &str) {
        *self.ops.entry(op).or_default() += 1;
        tracing::trace!(op, path, "sftp request");
    }

    fn resolve(&self, path: &str, last: Last) -> Result<std::path::PathBuf, StatusReply> {
        self.jail.resolve(path, last).map_err(path_status)
    }

    fn stat_at(&self, id: u32, path: &str, last: Last) -> Result<Attrs, StatusReply> {
        let local = self.resolve(path, last)?;
        let meta = fs::symlink_metadata(local).map_err(|e| io_status(&e))?;
        let attrs = attrs(&meta);
        Ok(Attrs { id, attrs })
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        Ok(handle)
    }

    fn file(&self, handle: &str) -> Result<&fs::File, StatusReply> {
        match self.handles.get(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(StatusCode::Failure.with_message("no such file handle")),
        }
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        tracing::debug!(user = %self.user, ops = ?self.ops, "sftp session ended");
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn path_status(e: PathError) -> StatusReply {
    match e {
        PathError::Denied(m) => StatusCode::PermissionDenied.with_message(m),
        PathError::NotFound(m) => StatusCode::NoSuchFile.with_message(m),
    }
}

fn io_status(e: &io::Error) -> StatusReply {
    let code = match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        // O_NOFOLLOW met a symlink created after the path was checked.
        _ if rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::LOOP) => {
            StatusCode::PermissionDenied
        }
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

fn attrs(meta: &Metadata) -> FileAttributes {
    let secs = |t: i64| u32::try_from(t).unwrap_or(0);
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: Some(secs(meta.atime())),
        mtime: Some(secs(meta.mtime())),
    }
}

/// Permission bits a client may set (no setuid, setgid or sticky bits).
fn mode_of(attrs: &FileAttributes, default: u32) -> u32 {
    attrs.permissions.map_or(default, |m| m & 0o777)
}

fn open_options(flags: OpenFlags, mode: u32) -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    let write = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
    o.read(flags.contains(OpenFlags::READ) || !write)
        .write(write)
        .append(flags.contains(OpenFlags::APPEND))
        .truncate(flags.contains(OpenFlags::TRUNCATE))
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    if flags.contains(OpenFlags::CREATE) {
        if flags.contains(OpenFlags::EXCLUDE) {
            o.create_new(true);
        } else {
            o.create(true);
        }
    }
    o
}

impl russh_sftp::server::Handler for SftpSession {
    type Error = StatusReply;

    fn unimplemented(&self) -> StatusReply {
        StatusCode::OpUnsupported.with_message("not supported by the smsdrop sandbox")
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, StatusReply> {
        self.note("init", "");
        tracing::debug!(user = %self.user, client_version = version, "sftp session started");
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, StatusReply> {
        self.note("open", &filename);
        let path = self.resolve(&filename, Last::Follow)?;
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if !meta.is_file() {
                return Err(StatusCode::Failure.with_message("not a regular file"));
            }
        }
        let file = open_options(pflags, mode_of(&attrs, 0o644))
            .open(&path)
            .map_err(|e| io_status(&e))?;
        let handle = self.add(Open::File(file))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, StatusReply> {
        self.note("close", "");
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusReply> {
        self.note("read", "");
        let file = self.file(&handle)?;
        let mut data = vec![0u8; len.min(MAX_READ) as usize];
        let n = file.read_at(&mut data, offset).map_err(|e| io_status(&e))?;
        if n == 0 && !data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(n);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, StatusReply> {
        self.note("write", "");
        let file = self.file(&handle)?;
        file.write_all_at(&data, offset)
            .map_err(|e| io_status(&e))?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        self.note("lstat", &path);
        self.stat_at(id, &path, Last::NoFollow)
    }

    /// Like lstat: a symlink is refused rather than followed.
    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, StatusReply> {
        self.note("stat", &path);
        self.stat_at(id, &path, Last::Follow)
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, StatusReply> {
        self.note("fstat", "");
        let meta = self.file(&handle)?.metadata().map_err(|e| io_status(&e))?;
        let attrs = attrs(&meta);
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        self.note("setstat", &path);
        let local = self.resolve(&path, Last::Follow)?;
        if let Some(mode) = attrs.permissions {
            fs::set_permissions(local, fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| io_status(&e))?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        self.note("fsetstat", "");
        let file = self.file(&handle)?;
        if let Some(mode) = attrs.permissions {
            file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| io_status(&e))?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusReply> {
        self.note("opendir", &path);
        let at_root = normalise(&path).map_err(path_status)?.is_empty();
        let local = self.resolve(&path, Last::Follow)?;
        let mut entries = vec![];
        for entry in fs::read_dir(&local).map_err(|e| io_status(&e))? {
            let entry = entry.map_err(|e| io_status(&e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // SFTP names are UTF-8 here; others are not served
            };
            if at_root && name == super::jail::PRIVATE_DIR {
                continue;
            }
            if let Ok(meta) = fs::symlink_metadata(entry.path()) {
                entries.push(File::new(name, attrs(&meta)));
            }
        }
        entries.sort_by(|a, b| a.filename.cmp(&b.filename));
        let handle = self.add(Open::Dir(entries.into()))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, StatusReply> {
        self.note("readdir", "");
        let Some(Open::Dir(entries)) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure.with_message("no such directory handle"));
        };
        if entries.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        let n = entries.len().min(READDIR_BATCH);
        let files = entries.drain(..n).collect();
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, StatusReply> {
        self.note("remove", &filename);
        let local = self.resolve(&filename, Last::NoFollow)?;
        let meta = fs::symlink_metadata(&local).map_err(|e| io_status(&e))?;
        if meta.is_dir() {
            return Err(StatusCode::Failure.with_message("is a folder: use rmdir"));
        }
        fs::remove_file(local).map_err(|e| io_status(&e))?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, StatusReply> {
        self.note("mkdir", &path);
        let local = self.resolve(&path, Last::Follow)?;
        fs::DirBuilder::new()
            .mode(mode_of(&attrs, 0o755))
            .create(local)
            .map_err(|e| io_status(&e))?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, StatusReply> {
        self.note("rmdir", &path);
        if normalise(&path).map_err(path_status)?.is_empty() {
            return Err(StatusCode::PermissionDenied.with_message("cannot remove the root"));
        }
        let local = self.resolve(&path, Last::Follow)?;
        fs::remove_dir(local).map_err(|e| io_status(&e))?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, StatusReply> {
        self.note("realpath", &path);
        let parts = normalise(&path).map_err(path_status)?;
        let files = vec![File::dummy(display(&parts))];
        Ok(Name { id, files })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, StatusReply> {
        self.note("rename", &newpath);
        let roots = [&oldpath, &newpath].map(|p| normalise(p).map(|v| v.is_empty()));
        if roots.iter().any(|r| matches!(r, Ok(true))) {
            return Err(StatusCode::PermissionDenied.with_message("cannot rename the root"));
        }
        let from = self.resolve(&oldpath, Last::NoFollow)?;
        let to = self.resolve(&newpath, Last::NoFollow)?;
        rename_no_clobber(&from, &to).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StatusCode::Failure
                .with_message(format!("{newpath} exists; the sandbox never overwrites")),
            _ => io_status(&e),
        })?;
        Ok(ok(id))
    }
}

/// Renames `from` to `to` unless `to` exists. Files: a hard link (which fails on an existing
/// name, atomically) then removal of the old name. Folders: a check, then rename.
fn rename_no_clobber(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_dir() {
        if fs::symlink_metadata(to).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        return fs::rename(from, to);
    }
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}
