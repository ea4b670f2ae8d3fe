//! [`Remote::upload_many`] for [`SftpRemote`]: a group of files in about three round trips on the
//! pipelined channel (`pipe.rs`), with the same promises as one `upload_with` per file: each file
//! goes to its temporary name, its size on the server is checked, the caller records its intent,
//! and only then is it renamed to its final name, never over an existing file.
//!
//! The steps themselves are `steps.rs`'s, shared with the one-at-a-time path. When the server
//! refuses a second channel the files go one at a time on the session's ordinary SFTP channel
//! (`upload_each`). Any failure of the channel
//! itself drops the session: files not yet renamed get a [`RemoteError::Connect`] and the next
//! round's look-ups (final name, temporary file) decide, as after a crash.

use super::errors::{describe, session_lost};
use super::pipe::Pipe;
use super::session::PipeSlot;
use super::{steps, SftpRemote};
use crate::remote::{upload_each, RemoteError, Upload};
use ssh2::Channel;

/// Pipelined groups in a row whose channel failed before smsdrop stops pipelining (until it
/// restarts): a server that accepts the channel but mishandles it must not stop every upload.
const MAX_PIPE_FAILURES: u32 = 3;

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
        match steps::run(&mut pipe, files, before_rename, &mut results) {
            Ok(()) => {
                self.pipe_failures = 0;
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
}
