//! Pipelined uploads: many SFTP requests in flight on one channel.
//!
//! libssh2 waits for each SFTP answer before it sends the next request, so one small file costs
//! five round trips (open, write, close, stat, rename); across the internet that, not the cipher,
//! decides how fast a backlog goes out. SFTP itself lets a client send requests without waiting
//! (every request carries an id, every answer names it), which is what OpenSSH's `sftp`, lftp and
//! rclone do. This file speaks that part of SFTP version 3 (draft-ietf-secsh-filexfer-02) on a
//! second `sftp` subsystem channel of the same SSH session, so uploads of a whole group of files
//! take about three round trips in all:
//! 1. `OPEN` (create, truncate) of every file's temporary name;
//! 2. as each handle comes back: its `WRITE`s, `CLOSE`, then `STAT` of the temporary name (the
//!    size check, as the server stored it after the close);
//! 3. after the caller recorded its intent for the files whose size matched: `RENAME` of each to
//!    its final name (SFTP v3 sends no flags: OpenSSH refuses to rename onto an existing name).
//!
//! Handles are opaque bytes (OpenSSH's are four binary bytes), never text. Requests are
//! buffered and sent in as few channel writes as possible; at most [`MAX_IN_FLIGHT`] are
//! unanswered at once, so the answers never fill the channel's window and a slow server only
//! slows us down. Every channel read and write runs under the session's timeout; any failure of
//! the channel itself (timeout, EOF, an answer that does not parse) ends the pipe, and the
//! caller drops the session.
//!
//! This file must never send a `RENAME` for a file whose size check failed or before the caller's
//! intent callback succeeded, and never panic on what the server sends.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};

/// The SFTP version spoken (v3: what OpenSSH and every gateway speak).
const VERSION: u32 = 3;

/// Data per `WRITE` request: every server must accept 32 KiB (the draft's minimum for reads,
/// and what OpenSSH's `sftp` sends by default).
pub(super) const WRITE_SIZE: usize = 32 * 1024;

/// Unanswered requests at most. Answers to writes are ~30 bytes: 1,024 of them stay far below
/// the 2 MiB channel window, and 1,024 x 32 KiB of writes keeps a 100 ms link busy at 300 MB/s.
pub(super) const MAX_IN_FLIGHT: usize = 1024;

/// The largest answer accepted (OpenSSH's own limit is 256 KiB).
const MAX_ANSWER: usize = 256 * 1024 + 1024;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_WRITE: u8 = 6;
const FXP_REMOVE: u8 = 13;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_ATTRS: u8 = 105;

const FXF_WRITE: u32 = 0x02;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The SFTP status "ok".
const FX_OK: u32 = 0;

/// A request smsdrop sends.
#[derive(Debug)]
pub(super) enum Request<'a> {
    /// Create or truncate `path` for writing, mode 0644.
    Create {
        path: &'a str,
    },
    Write {
        handle: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Close {
        handle: &'a [u8],
    },
    Stat {
        path: &'a str,
    },
    Rename {
        from: &'a str,
        to: &'a str,
    },
    Remove {
        path: &'a str,
    },
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Status {
        code: u32,
        message: String,
    },
    Handle(Vec<u8>),
    /// File attributes; the size when the server sent one.
    Attrs {
        size: Option<u64>,
    },
}

impl Answer {
    /// `Ok(())` for status OK, else a readable description of the answer.
    pub(super) fn ok(&self) -> Result<(), String> {
        match self {
            Answer::Status { code: FX_OK, .. } => Ok(()),
            other => Err(other.describe()),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Answer::Status { code, message } if message.is_empty() => {
                format!("{} (SFTP status {code})", status_name(*code))
            }
            Answer::Status { code, message } => format!("{message} (SFTP status {code})"),
            Answer::Handle(_) => "unexpected handle in the answer".into(),
            Answer::Attrs { .. } => "unexpected attributes in the answer".into(),
        }
    }
}

fn status_name(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1 => "end of file",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        8 => "operation unsupported",
        _ => "error",
    }
}

/// Encodes `req` with request id `id` as one SFTP packet (length, type, id, fields).
pub(super) fn encode(id: u32, req: &Request<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let kind = match req {
        Request::Create { .. } => FXP_OPEN,
        Request::Write { .. } => FXP_WRITE,
        Request::Close { .. } => FXP_CLOSE,
        Request::Stat { .. } => FXP_STAT,
        Request::Rename { .. } => FXP_RENAME,
        Request::Remove { .. } => FXP_REMOVE,
    };
    out.push(kind);
    put_u32(out, id);
    match req {
        Request::Create { path } => {
            put_bytes(out, path.as_bytes());
            put_u32(out, FXF_WRITE | FXF_CREAT | FXF_TRUNC);
            put_u32(out, ATTR_PERMISSIONS);
            put_u32(out, 0o644);
        }
        Request::Write {
            handle,
            offset,
            data,
        } => {
            put_bytes(out, handle);
            out.extend_from_slice(&offset.to_be_bytes());
            put_bytes(out, data);
        }
        Request::Close { handle } => put_bytes(out, handle),
        Request::Stat { path } | Request::Remove { path } => put_bytes(out, path.as_bytes()),
        Request::Rename { from, to } => {
            put_bytes(out, from.as_bytes());
            put_bytes(out, to.as_bytes());
        }
    }
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

/// Reads big-endian fields off an answer; every read checks the length.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("answer cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes one answer (the packet after its length): its request id and what it says.
pub(super) fn decode(packet: &[u8]) -> Result<(u32, Answer), String> {
    let mut f = Fields(packet);
    let kind = f.take(1)?[0];
    let id = f.u32()?;
    let answer = match kind {
        FXP_STATUS => {
            let code = f.u32()?;
            // Version 3 servers may omit the message and language tag.
            let message = f
                .bytes()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            Answer::Status { code, message }
        }
        FXP_HANDLE => Answer::Handle(f.bytes()?.to_vec()),
        FXP_ATTRS => {
            let flags = f.u32()?;
            let size = if flags & ATTR_SIZE != 0 {
                Some(f.u64()?)
            } else {
                None
            };
            // The rest (owner, mode, times, extensions) is not needed; checked only for shape.
            if flags & ATTR_UIDGID != 0 {
                f.take(8)?;
            }
            if flags & ATTR_PERMISSIONS != 0 {
                f.take(4)?;
            }
            if flags & ATTR_ACMODTIME != 0 {
                f.take(8)?;
            }
            if flags & ATTR_EXTENDED != 0 {
                for _ in 0..f.u32()? {
                    f.bytes()?;
                    f.bytes()?;
                }
            }
            Answer::Attrs { size }
        }
        other => return Err(format!("unexpected SFTP answer type {other}")),
    };
    Ok((id, answer))
}

/// A raw SFTP channel with requests in flight. `S` is the channel (an ssh2 `Channel`; any
/// `Read + Write` stream in the tests).
pub(super) struct Pipe<S> {
    stream: S,
    next_id: u32,
    out: Vec<u8>,
    /// Sent and not yet answered, in the order sent.
    in_flight: VecDeque<u32>,
    /// Answers read while waiting for another one.
    answered: HashMap<u32, Answer>,
}

impl<S: Read + Write> Pipe<S> {
    /// Speaks `INIT`/`VERSION` on a freshly started `sftp` subsystem.
    ///
    /// # Errors
    /// The channel failed, or the server does not speak version 3 or later.
    pub(super) fn start(mut stream: S) -> Result<Pipe<S>, String> {
        let mut init = vec![];
        put_u32(&mut init, 5);
        init.push(FXP_INIT);
        put_u32(&mut init, VERSION);
        // Never `flush()` an ssh2 channel: libssh2's channel flush discards unread answers.
        stream
            .write_all(&init)
            .map_err(|e| format!("SFTP init: {e}"))?;
        let packet = read_packet(&mut stream)?;
        let mut f = Fields(&packet);
        let kind = f.take(1)?[0];
        let version = f.u32()?;
        // A server answers with the client's version or lower; only 3 is understood here.
        if kind != FXP_VERSION || version != VERSION {
            return Err(format!(
                "the server answered SFTP init with type {kind}, version {version}"
            ));
        }
        Ok(Pipe {
            stream,
            next_id: 1,
            out: Vec::with_capacity(64 * 1024),
            in_flight: VecDeque::new(),
            answered: HashMap::new(),
        })
    }

    /// Queues `req` and returns its id; sends the queue when it is large. Waits for the oldest
    /// answers first when [`MAX_IN_FLIGHT`] requests are unanswered.
    ///
    /// # Errors
    /// The channel failed.
    pub(super) fn send(&mut self, req: &Request<'_>) -> Result<u32, String> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.read_one()?;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        encode(id, req, &mut self.out);
        self.in_flight.push_back(id);
        if self.out.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(id)
    }

    /// Sends everything queued (a write; an ssh2 channel sends it at once).
    ///
    /// # Errors
    /// The channel failed.
    pub(super) fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        r.map_err(|e| format!("sending SFTP requests: {e}"))
    }

    /// The answer to request `id` (sending what is queued first).
    ///
    /// # Errors
    /// The channel failed, or `id` was never sent.
    pub(super) fn wait(&mut self, id: u32) -> Result<Answer, String> {
        self.flush()?;
        loop {
            if let Some(a) = self.answered.remove(&id) {
                return Ok(a);
            }
            if !self.in_flight.contains(&id) {
                return Err(format!("no SFTP request {id} is waiting for an answer"));
            }
            self.read_one()?;
        }
    }

    /// Reads one answer off the channel and files it under its request id.
    fn read_one(&mut self) -> Result<(), String> {
        self.flush()?;
        let packet = read_packet(&mut self.stream)?;
        let (id, answer) = decode(&packet)?;
        let Some(pos) = self.in_flight.iter().position(|&i| i == id) else {
            return Err(format!(
                "the server answered request {id}, which was not sent"
            ));
        };
        self.in_flight.remove(pos);
        self.answered.insert(id, answer);
        Ok(())
    }

    /// The channel (the tests read what was sent).
    #[cfg(test)]
    fn into_inner(self) -> S {
        self.stream
    }
}

fn read_packet(stream: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    read_exact(stream, &mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_ANSWER {
        return Err(format!("an SFTP answer of {len} bytes"));
    }
    let mut packet = vec![0u8; len];
    read_exact(stream, &mut packet)?;
    Ok(packet)
}

fn read_exact(stream: &mut impl Read, buf: &mut [u8]) -> Result<(), String> {
    stream.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "the server closed the SFTP channel".to_owned(),
        _ => format!("reading SFTP answers: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_as_the_draft_says() {
        let mut out = vec![];
        encode(7, &Request::Stat { path: "up/a" }, &mut out);
        assert_eq!(
            out,
            [0, 0, 0, 13, FXP_STAT, 0, 0, 0, 7, 0, 0, 0, 4, b'u', b'p', b'/', b'a']
        );
        out.clear();
        let handle = [0u8, 0, 0, 200]; // binary, not UTF-8
        encode(
            1,
            &Request::Write {
                handle: &handle,
                offset: 1 << 32 | 5,
                data: b"xy",
            },
            &mut out,
        );
        assert_eq!(
            out,
            [
                0, 0, 0, 27, FXP_WRITE, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0,
                5, 0, 0, 0, 2, b'x', b'y'
            ]
        );
        out.clear();
        encode(2, &Request::Create { path: "t" }, &mut out);
        assert_eq!(&out[4..5], &[FXP_OPEN]);
        assert_eq!(
            &out[out.len() - 12..],
            &[0, 0, 0, 0x1a, 0, 0, 0, 4, 0, 0, 1, 0o244]
        );
    }

    #[test]
    fn answers_decode_and_bad_ones_are_errors() {
        let status = [FXP_STATUS, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2, b'n', b'o'];
        assert_eq!(
            decode(&status).unwrap(),
            (
                9,
                Answer::Status {
                    code: 2,
                    message: "no".into()
                }
            )
        );
        // A v3 status without message or language tag.
        assert_eq!(
            decode(&[FXP_STATUS, 0, 0, 0, 1, 0, 0, 0, 0])
                .unwrap()
                .1
                .ok(),
            Ok(())
        );
        let handle = [FXP_HANDLE, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xff];
        assert_eq!(
            decode(&handle).unwrap(),
            (3, Answer::Handle(vec![0, 0, 0, 0xff]))
        );
        let mut attrs = vec![FXP_ATTRS, 0, 0, 0, 4];
        attrs.extend_from_slice(&(ATTR_SIZE | ATTR_PERMISSIONS | ATTR_EXTENDED).to_be_bytes());
        attrs.extend_from_slice(&(5_000_000_000u64).to_be_bytes());
        attrs.extend_from_slice(&0o644u32.to_be_bytes());
        attrs.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 0]);
        assert_eq!(
            decode(&attrs).unwrap(),
            (
                4,
                Answer::Attrs {
                    size: Some(5_000_000_000)
                }
            )
        );
        for bad in [
            &[][..],
            &[FXP_HANDLE, 0, 0][..],
            &[FXP_HANDLE, 0, 0, 0, 3, 0, 0, 0, 9, 1][..],
            &[FXP_ATTRS, 0, 0, 0, 4, 0, 0, 0, 1, 0][..],
            &[99, 0, 0, 0, 1][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    /// A scripted server: answers are queued up front, requests are recorded.
    struct Scripted {
        answers: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.answers.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn packet(body: &[u8]) -> Vec<u8> {
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn answers_out_of_order_reach_their_requests() {
        let mut answers = packet(&[FXP_VERSION, 0, 0, 0, 3]);
        answers.extend(packet(&[FXP_STATUS, 0, 0, 0, 2, 0, 0, 0, 4]));
        answers.extend(packet(&[FXP_STATUS, 0, 0, 0, 1, 0, 0, 0, 0]));
        let s = Scripted {
            answers: io::Cursor::new(answers),
            sent: vec![],
        };
        let mut p = Pipe::start(s).unwrap();
        let a = p.send(&Request::Remove { path: "a" }).unwrap();
        let b = p.send(&Request::Remove { path: "b" }).unwrap();
        assert_eq!(p.wait(a).unwrap().ok(), Ok(()));
        assert!(p.wait(b).unwrap().ok().unwrap_err().contains("failure"));
        assert!(p.wait(a).is_err(), "answered once only");
        // Then the server hangs up: an error, not a hang or a panic.
        let c = p.send(&Request::Remove { path: "c" }).unwrap();
        assert!(p.wait(c).unwrap_err().contains("closed"));
        let sent = p.into_inner().sent;
        assert_eq!(&sent[..9], &[0, 0, 0, 5, FXP_INIT, 0, 0, 0, 3]);
    }

    #[test]
    fn an_old_or_odd_server_is_refused() {
        for body in [
            &[FXP_VERSION, 0, 0, 0, 2][..],
            &[FXP_STATUS, 0, 0, 0, 3][..],
        ] {
            let s = Scripted {
                answers: io::Cursor::new(packet(body)),
                sent: vec![],
            };
            assert!(Pipe::start(s).is_err(), "{body:?}");
        }
        let huge = Scripted {
            answers: io::Cursor::new(vec![0x7f, 0, 0, 0]),
            sent: vec![],
        };
        match Pipe::start(huge) {
            Err(e) => assert!(e.contains("bytes"), "{e}"),
            Ok(_) => panic!("a 2 GB answer was accepted"),
        }
    }
}
