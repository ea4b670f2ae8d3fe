//! The exactly-once steps of an upload, written once for both ways requests travel: the
//! pipelined channel (`pipe.rs`, many requests in flight) and libssh2's own SFTP channel, one
//! request at a time ([`OneAtATime`], for servers that allow one channel per session).
//!
//! Per file, in this order and no other: create the temporary name (a refused create removes
//! whatever sits there and creates once more), write, close, `stat` the temporary name: the
//! size the server stored must equal the bytes read and sent; a file failing any step has its
//! temporary file removed and is never renamed. Then the caller records its intent (the
//! journal) for every file that passed, and only then are they renamed, never over an existing
//! name (SFTP v3 sends no overwrite flag); a refused rename is looked into: the name taken
//! ([`RemoteError::Exists`]) or a refusal, the temporary file removed either way.
//!
//! `Err` means the channel itself failed (the session is then dropped by the caller): a file
//! whose result is still `None` was not renamed, and the next round's look-ups decide, as after
//! a crash.

use super::errors::{describe, local_error, refusal, session_lost};
use super::pipe::{Answer, Pipe, Request, WRITE_SIZE};
use crate::fsutil::read_full;
use crate::remote::{RemoteError, Upload};
use ssh2::{OpenFlags, OpenType, RenameFlags, Session, Sftp};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// SFTP status "no such file".
const NO_SUCH_FILE: u32 = 2;

/// Requests on some channel: sent now, answered when waited for (in any order).
pub(super) trait Requests {
    /// Sends `req`; its id for [`Requests::wait`].
    ///
    /// # Errors
    /// The channel failed.
    fn send(&mut self, req: &Request<'_>) -> Result<u32, String>;

    /// The answer to request `id`.
    ///
    /// # Errors
    /// The channel failed.
    fn wait(&mut self, id: u32) -> Result<Answer, String>;
}

impl<S: Read + Write> Requests for Pipe<S> {
    fn send(&mut self, req: &Request<'_>) -> Result<u32, String> {
        Pipe::send(self, req)
    }

    fn wait(&mut self, id: u32) -> Result<Answer, String> {
        Pipe::wait(self, id)
    }
}

/// What the steps know of one file.
#[derive(Default)]
struct Progress {
    /// Bytes sent, and the local size when the upload began.
    sent: u64,
    expected: u64,
    /// Whether the temporary name was created (and must be removed on failure).
    created: bool,
    /// Request ids still to be checked: writes and close (status OK expected), stat (the size).
    writes: Vec<u32>,
    stat: Option<u32>,
    /// The first thing that went wrong (the temporary file is then removed).
    error: Option<RemoteError>,
}

/// Uploads `files` through `reqs`, calling `before_rename` with the indices of the files about
/// to be renamed; fills `results` (one per file, `None` where the channel failed first).
///
/// # Errors
/// The channel failed (a file's own failure is in `results`).
pub(super) fn run(
    reqs: &mut dyn Requests,
    files: &[Upload],
    before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
    results: &mut [Option<Result<u64, RemoteError>>],
) -> Result<(), String> {
    let mut progress: Vec<Progress> = files.iter().map(|_| Progress::default()).collect();
    // 1. Open every local file and create every temporary name.
    let mut locals: Vec<Option<fs::File>> = Vec::with_capacity(files.len());
    let mut creates: Vec<Option<u32>> = Vec::with_capacity(files.len());
    for (f, p) in files.iter().zip(&mut progress) {
        let opened = fs::File::open(&f.local).and_then(|l| Ok((l.metadata()?.len(), l)));
        match opened {
            Ok((len, l)) => {
                p.expected = len;
                locals.push(Some(l));
                creates.push(Some(reqs.send(&Request::Create { path: &f.temp })?));
            }
            Err(e) => {
                p.error = Some(local_error(&f.local, &f.temp, &e));
                locals.push(None);
                creates.push(None);
            }
        }
    }
    // 2. As each handle comes back: the data, close, and the size as stored.
    let mut buf = vec![0u8; WRITE_SIZE];
    for i in 0..files.len() {
        let (Some(id), Some(local)) = (creates[i], locals[i].as_mut()) else {
            continue;
        };
        let f = &files[i];
        let p = &mut progress[i];
        let Some(handle) = created(reqs, id, &f.temp, p)? else {
            continue;
        };
        loop {
            let n = match read_full(local, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    p.error = Some(local_error(&f.local, &f.temp, &e));
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let write = Request::Write {
                handle: &handle,
                offset: p.sent,
                data: &buf[..n],
            };
            p.writes.push(reqs.send(&write)?);
            p.sent += n as u64;
            crate::liveness::progress();
        }
        p.writes
            .push(reqs.send(&Request::Close { handle: &handle })?);
        p.stat = Some(reqs.send(&Request::Stat { path: &f.temp })?);
    }
    drop(locals);
    for (f, p) in files.iter().zip(&mut progress) {
        for &id in &p.writes {
            if let Err(message) = reqs.wait(id)?.ok() {
                p.error
                    .get_or_insert_with(|| refusal("write", &f.temp, message));
            }
        }
        let Some(stat) = p.stat else { continue };
        let stored = match reqs.wait(stat)? {
            Answer::Attrs { size } => size,
            _ => None,
        };
        if p.error.is_none() && (p.sent != p.expected || stored != Some(p.sent)) {
            p.error = Some(RemoteError::Op {
                op: "upload",
                path: f.temp.clone(),
                message: format!(
                    "size mismatch: local file {} had {} bytes, sent {}, server has {}",
                    f.local.display(),
                    p.expected,
                    p.sent,
                    stored.map_or_else(|| "no file".to_owned(), |s| s.to_string())
                ),
            });
        }
    }
    // A failed file's temporary file goes.
    let mut removes = vec![];
    for (i, (f, p)) in files.iter().zip(&mut progress).enumerate() {
        if let Some(e) = p.error.take() {
            if p.created {
                removes.push(reqs.send(&Request::Remove { path: &f.temp })?);
            }
            results[i] = Some(Err(e));
        }
    }
    for id in removes {
        reqs.wait(id)?;
    }
    let ready: Vec<usize> = (0..files.len()).filter(|&i| results[i].is_none()).collect();
    if ready.is_empty() {
        return Ok(());
    }
    // Crash points count files.
    for _ in &ready {
        crate::crash::point("temp-uploaded");
    }
    // 3. The caller's intent, then the renames (SFTP v3: never onto an existing name).
    if let Err(e) = before_rename(&ready) {
        for &i in &ready {
            results[i] = Some(Err(e.clone()));
        }
        return Ok(());
    }
    let mut renames = Vec::with_capacity(ready.len());
    for &i in &ready {
        let f = &files[i];
        renames.push(reqs.send(&Request::Rename {
            from: &f.temp,
            to: &f.dest,
        })?);
    }
    let mut refused = vec![];
    for (&i, id) in ready.iter().zip(renames) {
        match reqs.wait(id)? {
            Answer::Status { code: 0, .. } => {
                results[i] = Some(Ok(progress[i].sent));
                crate::crash::point("renamed");
            }
            other => refused.push((i, other)),
        }
    }
    // A refused rename: the name is taken (ours after all, or someone else's), or the server
    // said no (rare: looked into one at a time).
    for (i, answer) in refused {
        let f = &files[i];
        results[i] = Some(Err(rename_refused(reqs, &f.temp, &f.dest, &answer)?));
    }
    Ok(())
}

/// The handle of a create: a refused create removes what sits under the name and creates once
/// more; refused again, the file fails.
fn created(
    reqs: &mut dyn Requests,
    id: u32,
    temp: &str,
    p: &mut Progress,
) -> Result<Option<Vec<u8>>, String> {
    let mut answer = reqs.wait(id)?;
    if !matches!(answer, Answer::Handle(_)) {
        tracing::debug!(temp, answer = %answer.describe(), "create refused; removing the name and trying once more");
        let removed = reqs.send(&Request::Remove { path: temp })?;
        reqs.wait(removed)?;
        let again = reqs.send(&Request::Create { path: temp })?;
        answer = reqs.wait(again)?;
    }
    match answer {
        Answer::Handle(h) => {
            p.created = true;
            Ok(Some(h))
        }
        other => {
            p.error = Some(refusal("create", temp, other.describe()));
            Ok(None)
        }
    }
}

/// After a refused rename: [`RemoteError::Exists`] when `dest` exists, else the refusal; the
/// temporary file is removed either way.
fn rename_refused(
    reqs: &mut dyn Requests,
    temp: &str,
    dest: &str,
    answer: &Answer,
) -> Result<RemoteError, String> {
    let stat = reqs.send(&Request::Stat { path: dest })?;
    let exists = matches!(reqs.wait(stat)?, Answer::Attrs { .. });
    let removed = reqs.send(&Request::Remove { path: temp })?;
    match reqs.wait(removed)? {
        // Gone already: what removing it wanted.
        Answer::Status {
            code: 0 | NO_SUCH_FILE,
            ..
        } => {}
        other => return Ok(refusal("remove", temp, other.describe())),
    }
    Ok(if exists {
        RemoteError::Exists {
            path: dest.to_owned(),
        }
    } else {
        RemoteError::Op {
            op: "rename",
            path: dest.to_owned(),
            message: format!("from {temp}: {}", answer.describe()),
        }
    })
}

/// libssh2's SFTP channel as [`Requests`]: each request is carried out when sent (writes are
/// gathered into 1 MiB calls, which libssh2 pipelines itself), its answer kept for `wait`.
pub(super) struct OneAtATime<'s> {
    sftp: &'s Sftp,
    session: &'s Session,
    open: HashMap<Vec<u8>, Open>,
    answers: HashMap<u32, Answer>,
    next_id: u32,
    next_handle: u32,
}

/// A file open for writing, and what is gathered for it.
struct Open {
    file: ssh2::File,
    /// Where `pending` begins.
    at: u64,
    pending: Vec<u8>,
    /// The first failure of a gathered write, told on close.
    failed: Option<String>,
}

/// Bytes gathered before one write call.
const GATHER: usize = 1 << 20;

impl<'s> OneAtATime<'s> {
    pub(super) fn new(sftp: &'s Sftp, session: &'s Session) -> Self {
        OneAtATime {
            sftp,
            session,
            open: HashMap::new(),
            answers: HashMap::new(),
            next_id: 0,
            next_handle: 0,
        }
    }

    /// An SFTP refusal as an answer; a lost session as `Err`.
    fn refused(&self, e: &ssh2::Error) -> Result<Answer, String> {
        match e.code() {
            _ if session_lost(e) => Err(describe(e)),
            ssh2::ErrorCode::SFTP(code) => Ok(Answer::Status {
                code: code.unsigned_abs(),
                message: e.message().to_owned(),
            }),
            ssh2::ErrorCode::Session(_) => Ok(Answer::Status {
                code: 4,
                message: describe(e),
            }),
        }
    }

    /// An `io::Error` of `ssh2::File` (which loses the code: the session's last error tells a
    /// refusal from a dead connection).
    fn io_refused(&self, e: &io::Error) -> Result<String, String> {
        let lost = match e.kind() {
            io::ErrorKind::TimedOut => true,
            io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists => false,
            _ => ssh2::Error::last_session_error(self.session).is_none_or(|l| session_lost(&l)),
        };
        if lost {
            Err(e.to_string())
        } else {
            Ok(e.to_string())
        }
    }

    fn flush(&mut self, handle: &[u8]) -> Result<(), String> {
        let Some(open) = self.open.get_mut(handle) else {
            return Ok(());
        };
        if open.pending.is_empty() || open.failed.is_some() {
            open.pending.clear();
            return Ok(());
        }
        let wrote = open
            .file
            .seek(SeekFrom::Start(open.at))
            .and_then(|_| open.file.write_all(&open.pending));
        open.at += open.pending.len() as u64;
        open.pending.clear();
        if let Err(e) = wrote {
            let why = self.io_refused(&e)?;
            if let Some(open) = self.open.get_mut(handle) {
                open.failed = Some(why);
            }
        }
        Ok(())
    }

    fn carry_out(&mut self, req: &Request<'_>) -> Result<Answer, String> {
        let ok = Answer::Status {
            code: 0,
            message: String::new(),
        };
        match *req {
            Request::Create { path } => {
                let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
                match self
                    .sftp
                    .open_mode(Path::new(path), flags, 0o644, OpenType::File)
                {
                    Ok(file) => {
                        let handle = self.next_handle.to_be_bytes().to_vec();
                        self.next_handle += 1;
                        let open = Open {
                            file,
                            at: 0,
                            pending: Vec::with_capacity(GATHER),
                            failed: None,
                        };
                        self.open.insert(handle.clone(), open);
                        Ok(Answer::Handle(handle))
                    }
                    Err(e) => self.refused(&e),
                }
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                let Some(open) = self.open.get_mut(handle) else {
                    return Ok(Answer::Status {
                        code: 4,
                        message: "write to a handle that is not open".into(),
                    });
                };
                if offset != open.at + open.pending.len() as u64 {
                    self.flush(handle)?;
                    if let Some(open) = self.open.get_mut(handle) {
                        open.at = offset;
                    }
                }
                if let Some(open) = self.open.get_mut(handle) {
                    open.pending.extend_from_slice(data);
                    if open.pending.len() >= GATHER {
                        self.flush(handle)?;
                    }
                }
                Ok(ok)
            }
            Request::Close { handle } => {
                self.flush(handle)?;
                let Some(mut open) = self.open.remove(handle) else {
                    return Ok(ok);
                };
                if let Some(why) = open.failed {
                    return Ok(Answer::Status {
                        code: 4,
                        message: why,
                    });
                }
                match open.file.close() {
                    Ok(()) => Ok(ok),
                    Err(e) => self.refused(&e),
                }
            }
            Request::Stat { path } => match self.sftp.stat(Path::new(path)) {
                Ok(st) => Ok(Answer::Attrs { size: st.size }),
                Err(e) => self.refused(&e),
            },
            Request::Rename { from, to } => {
                // No overwrite flag: OpenSSH refuses a rename onto an existing name.
                let flags = Some(RenameFlags::ATOMIC | RenameFlags::NATIVE);
                match self.sftp.rename(Path::new(from), Path::new(to), flags) {
                    Ok(()) => Ok(ok),
                    Err(e) => self.refused(&e),
                }
            }
            Request::Remove { path } => match self.sftp.unlink(Path::new(path)) {
                Ok(()) => Ok(ok),
                Err(e) => self.refused(&e),
            },
        }
    }
}

impl Requests for OneAtATime<'_> {
    fn send(&mut self, req: &Request<'_>) -> Result<u32, String> {
        let answer = self.carry_out(req)?;
        let id = self.next_id;
        self.next_id += 1;
        self.answers.insert(id, answer);
        Ok(id)
    }

    fn wait(&mut self, id: u32) -> Result<Answer, String> {
        self.answers
            .remove(&id)
            .ok_or_else(|| format!("no answer for request {id}"))
    }
}
