//! [`Remote::upload_many`] for [`SftpRemote`]: a group of files in about three round trips on the
//! pipelined channel (`pipe.rs`), with the same promises as one `upload_with` per file: each file
//! goes to its temporary name, its size on the server is checked, the caller records its intent,
//! and only then is it renamed to its final name, never over an existing file.
//!
//! When the server refuses a second channel the files go one at a time on the session's
//! ordinary SFTP channel. A file whose temporary name cannot be created is retried alone the
//! same way (that path removes whatever sits under the name first). Any failure of the channel
//! itself drops the session: files not yet renamed get a [`RemoteError::Connect`] and the next
//! round's look-ups (final name, temporary file) decide, as after a crash.

use super::errors::{describe, local_error, session_lost};
use super::pipe::{Answer, Pipe, Request, WRITE_SIZE};
use super::session::PipeSlot;
use super::SftpRemote;
use crate::fsutil::read_full;
use crate::remote::{upload_each, Remote, RemoteError, Upload};
use ssh2::Channel;
use std::fs;

/// Pipelined groups in a row whose channel failed before smsdrop stops pipelining (until it
/// restarts): a server that accepts the channel but mishandles it must not stop every upload.
const MAX_PIPE_FAILURES: u32 = 3;

/// What the pipeline knows of one file.
#[derive(Default)]
struct Progress {
    /// Bytes sent, and the local size when the upload began.
    sent: u64,
    expected: u64,
    /// Request ids still to be checked: writes and close (status OK expected), stat (the size).
    writes: Vec<u32>,
    stat: Option<u32>,
    /// The first thing that went wrong (the temporary file is then removed).
    error: Option<RemoteError>,
    /// The create failed: retry alone, the careful way.
    retry_alone: bool,
}

impl SftpRemote {
    /// The pipelined channel of the current session, opened on first use; `None` when the
    /// server refused it (or a channel failed too often: see [`MAX_PIPE_FAILURES`]).
    fn take_pipe(&mut self) -> Result<Option<Pipe<Channel>>, RemoteError> {
        self.connect()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.connect_error("upload: no session".into()));
        };
        match std::mem::replace(&mut conn.pipe, PipeSlot::Untried) {
            PipeSlot::Open(p) => return Ok(Some(p)),
            PipeSlot::Refused => {
                conn.pipe = PipeSlot::Refused;
                return Ok(None);
            }
            PipeSlot::Untried => {}
        }
        if self.pipe_failures >= MAX_PIPE_FAILURES {
            conn.pipe = PipeSlot::Refused;
            return Ok(None);
        }
        let opened = conn.link.session.channel_session().and_then(|mut ch| {
            // As libssh2's own SFTP does: the server's stderr is dropped, not queued.
            ch.handle_extended_data(ssh2::ExtendedData::Ignore)?;
            ch.subsystem("sftp")?;
            Ok(ch)
        });
        let channel = match opened {
            Ok(ch) => ch,
            // CHANNEL_FAILURE (-21), REQUEST_DENIED (-22): a refusal, not a lost link.
            Err(e) if matches!(e.code(), ssh2::ErrorCode::Session(-21 | -22)) => {
                tracing::info!(error = %describe(&e), "the server allows one channel per session; uploads go one request at a time");
                conn.pipe = PipeSlot::Refused;
                return Ok(None);
            }
            Err(e) if session_lost(&e) => return Err(self.fail("upload", "(channel)", &e)),
            Err(e) => {
                tracing::info!(error = %describe(&e), "no second SFTP channel; uploads go one request at a time");
                conn.pipe = PipeSlot::Refused;
                return Ok(None);
            }
        };
        match Pipe::start(channel) {
            Ok(p) => Ok(Some(p)),
            Err(message) => {
                // A channel that opens but does not speak SFTP v3 as expected: this session's
                // uploads go one request at a time (if the link itself is gone, they fail and
                // the session is replaced).
                tracing::warn!(error = %message, "the second SFTP channel did not start; uploads go one request at a time on this session");
                self.pipe_failures += 1;
                if let Some(conn) = self.conn.as_mut() {
                    conn.pipe = PipeSlot::Refused;
                }
                Ok(None)
            }
        }
    }

    /// Connects and opens the pipelined channel now (when pipelining is on).
    pub(super) fn warm_pipe(&mut self) -> Result<(), RemoteError> {
        self.connect()?;
        if self.cfg.pipelining {
            if let Some(pipe) = self.take_pipe()? {
                if let Some(conn) = self.conn.as_mut() {
                    conn.pipe = PipeSlot::Open(pipe);
                }
            }
        }
        Ok(())
    }

    pub(super) fn upload_pipelined(
        &mut self,
        files: &[Upload],
        before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
    ) -> Vec<Result<u64, RemoteError>> {
        if !self.cfg.pipelining {
            return upload_each(self, files, before_rename);
        }
        let mut pipe = match self.take_pipe() {
            Ok(Some(p)) => p,
            Ok(None) => return upload_each(self, files, before_rename),
            Err(e) => return files.iter().map(|_| Err(e.clone())).collect(),
        };
        let session = self.sessions;
        let mut results: Vec<Option<Result<u64, RemoteError>>> = vec![None; files.len()];
        let mut alone = vec![];
        match self.run_group(&mut pipe, files, before_rename, &mut results) {
            Ok(retry) => {
                alone = retry;
                self.pipe_failures = 0;
                // Back to its own session only (a refused rename's look-up may have replaced it).
                if self.sessions == session {
                    if let Some(conn) = self.conn.as_mut() {
                        conn.pipe = PipeSlot::Open(pipe);
                    }
                }
            }
            Err(message) => {
                self.pipe_failures += 1;
                if self.pipe_failures == MAX_PIPE_FAILURES {
                    tracing::warn!(
                        failures = MAX_PIPE_FAILURES,
                        "the pipelined SFTP channel failed {MAX_PIPE_FAILURES} groups in a row; \
                         uploads go one request at a time until smsdrop restarts (if the \
                         server mishandles requests in flight, set [sftp] pipelining = false)"
                    );
                }
                let e = self.fail_with("upload", "(pipelined)", true, message);
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(e.clone()));
                }
            }
        }
        for i in alone {
            if !self.connected() {
                break;
            }
            let f = &files[i];
            results[i] =
                Some(self.upload_with(&f.local, &f.temp, &f.dest, &mut || before_rename(&[i])));
            if matches!(results[i], Some(Err(RemoteError::Connect { .. }))) {
                break;
            }
        }
        let lost = results.iter().flatten().find_map(|r| match r {
            Err(e @ RemoteError::Connect { .. }) => Some(e.clone()),
            _ => None,
        });
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(lost
                        .clone()
                        .unwrap_or_else(|| self.connect_error("upload: not attempted".into())))
                })
            })
            .collect()
    }

    /// The three steps on the pipe. `Err` only when the channel failed; a file's own failure is
    /// in `results`. Returns the files whose create was refused, to be retried alone; a file
    /// left `None` otherwise met a lost session.
    fn run_group(
        &mut self,
        pipe: &mut Pipe<Channel>,
        files: &[Upload],
        before_rename: &mut dyn FnMut(&[usize]) -> Result<(), RemoteError>,
        results: &mut [Option<Result<u64, RemoteError>>],
    ) -> Result<Vec<usize>, String> {
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
                    creates.push(Some(pipe.send(&Request::Create { path: &f.temp })?));
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
            let handle = match pipe.wait(id)? {
                Answer::Handle(h) => h,
                other => {
                    tracing::debug!(temp = %f.temp, answer = %other.describe(), "create refused; retrying alone");
                    p.retry_alone = true;
                    continue;
                }
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
                p.writes.push(pipe.send(&write)?);
                p.sent += n as u64;
                crate::liveness::progress();
            }
            p.writes
                .push(pipe.send(&Request::Close { handle: &handle })?);
            p.stat = Some(pipe.send(&Request::Stat { path: &f.temp })?);
        }
        drop(locals);
        for (f, p) in files.iter().zip(&mut progress) {
            for &id in &p.writes {
                if let Err(message) = pipe.wait(id)?.ok() {
                    p.error
                        .get_or_insert_with(|| self.fail_with("write", &f.temp, false, message));
                }
            }
            let Some(stat) = p.stat else { continue };
            let stored = match pipe.wait(stat)? {
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
        // A failed file's temporary file goes (a create that failed is retried alone instead).
        let mut removes = vec![];
        for (i, (f, p)) in files.iter().zip(&mut progress).enumerate() {
            if p.retry_alone {
                continue;
            }
            if let Some(e) = p.error.take() {
                if creates[i].is_some() {
                    removes.push(pipe.send(&Request::Remove { path: &f.temp })?);
                }
                results[i] = Some(Err(e));
            }
        }
        for id in removes {
            pipe.wait(id)?;
        }
        let retry: Vec<usize> = (0..files.len())
            .filter(|&i| progress[i].retry_alone)
            .collect();
        let ready: Vec<usize> = (0..files.len())
            .filter(|&i| results[i].is_none() && !progress[i].retry_alone)
            .collect();
        if ready.is_empty() {
            return Ok(retry);
        }
        // Crash points count files, as in `upload_with`.
        for _ in &ready {
            crate::crash::point("temp-uploaded");
        }
        // 3. The caller's intent, then the renames (SFTP v3: never onto an existing name).
        if let Err(e) = before_rename(&ready) {
            for &i in &ready {
                results[i] = Some(Err(e.clone()));
            }
            return Ok(retry);
        }
        let mut renames = Vec::with_capacity(ready.len());
        for &i in &ready {
            let f = &files[i];
            renames.push(pipe.send(&Request::Rename {
                from: &f.temp,
                to: &f.dest,
            })?);
        }
        let mut refused = vec![];
        for (&i, id) in ready.iter().zip(renames) {
            match pipe.wait(id)? {
                Answer::Status { code: 0, .. } => {
                    results[i] = Some(Ok(progress[i].sent));
                    crate::crash::point("renamed");
                }
                other => refused.push((i, other)),
            }
        }
        // A refused rename: the name is taken (ours after all, or someone else's), or the
        // server said no. Looked into one at a time on the ordinary channel (rare).
        for (i, answer) in refused {
            if !self.connected() {
                break; // left `None`: the caller gives them the lost session's error
            }
            let f = &files[i];
            results[i] = Some(Err(self.rename_refused(
                &f.temp,
                &f.dest,
                &answer.describe(),
            )));
        }
        Ok(retry)
    }

    /// After a refused rename: [`RemoteError::Exists`] when `dest` exists, else the refusal;
    /// the temporary file is removed either way (also for one request at a time, `mod.rs`).
    pub(super) fn rename_refused(&mut self, temp: &str, dest: &str, why: &str) -> RemoteError {
        let exists = match self.size(dest) {
            Ok(size) => size.is_some(),
            Err(e) => return e,
        };
        if let Err(e) = self.remove(temp) {
            return e;
        }
        if exists {
            RemoteError::Exists {
                path: dest.to_owned(),
            }
        } else {
            RemoteError::Op {
                op: "rename",
                path: dest.to_owned(),
                message: format!("from {temp}: {why}"),
            }
        }
    }
}
