//! Reading ahead: the records of a large input are read and split (file reads, any hashing or
//! UTF-16 transcoding the stream does, `csv-core`) on a thread of their own, a few chunks ahead
//! of the thread that checks and writes them, so the two halves of a conversion use two cores.
//!
//! What the caller sees is exactly what [`RecordReader::read`] returns, in the same order, with
//! the same line numbers, plus each record as text when it is valid UTF-8 (checked on the
//! reading thread too); a read error comes after every record read before it. Memory stays
//! bounded: at most [`POOL`] chunks exist, each closed at [`CHUNK_RECORDS`] records,
//! [`CHUNK_BYTES`] bytes or [`CHUNK_FIELDS`] fields (plus one record of at most
//! [`super::reader::MAX_RECORD_BYTES`]), and their buffers are reused.

use super::reader::{Next, RawRecord, RecordReader};
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// Chunks in existence: one being filled, one being taken, two waiting.
const POOL: usize = 4;
const CHUNK_RECORDS: usize = 1024;
const CHUNK_BYTES: usize = 128 * 1024;
const CHUNK_FIELDS: usize = 8 * 1024;

/// Records back to back: their bytes (in `text` when valid UTF-8, else in `bytes`), their field
/// ends, and what each one was.
#[derive(Default)]
struct Chunk {
    text: String,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    records: Vec<Held>,
    /// Bytes of records too large to hold, skipped: they count toward [`CHUNK_BYTES`] too, so
    /// the reader never runs far ahead through them.
    skipped: u64,
}

/// One record of a [`Chunk`]: what the reader said, its line, whether it is text, and where its
/// bytes (in `text` or `bytes`) and its ends stop.
#[derive(Clone, Copy)]
struct Held {
    next: Next,
    line: u64,
    utf8: bool,
    end: usize,
    ends_end: usize,
}

impl Chunk {
    fn clear(&mut self) {
        self.text.clear();
        self.bytes.clear();
        self.ends.clear();
        self.records.clear();
        self.skipped = 0;
    }

    fn push(&mut self, next: Next, rec: &RawRecord) {
        let (utf8, end) = match std::str::from_utf8(rec.bytes()) {
            Ok(text) if next == Next::Record => {
                self.text.push_str(text);
                (true, self.text.len())
            }
            _ => {
                if next == Next::Record {
                    self.bytes.extend_from_slice(rec.bytes());
                }
                (false, self.bytes.len())
            }
        };
        if next == Next::Record {
            self.ends.extend_from_slice(rec.ends());
        }
        if let Next::TooLarge { bytes, .. } = next {
            self.skipped = self.skipped.saturating_add(bytes);
        }
        self.records.push(Held {
            next,
            line: rec.line,
            utf8,
            end,
            ends_end: self.ends.len(),
        });
    }

    fn full(&self) -> bool {
        self.records.len() >= CHUNK_RECORDS
            || (self.text.len() + self.bytes.len()) as u64 + self.skipped >= CHUNK_BYTES as u64
            || self.ends.len() >= CHUNK_FIELDS
    }
}

/// Hands every record of `input` (split at `delimiter`) to `take`, in order, with the record as
/// text when it is valid UTF-8, until the end, a read error (made an `E` by `read_error`), an
/// error of `take`, or `take` answering `false` (stop reading: the reading thread stops at its
/// next read of the stream, even inside a long record).
///
/// # Errors
/// The first error of `take`, or the stream's read error.
pub(super) fn for_each<R, E>(
    input: R,
    delimiter: u8,
    mut take: impl FnMut(Next, &RawRecord, Option<&str>) -> Result<bool, E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<(), E>
where
    R: BufRead + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let input = Stoppable {
        inner: input,
        stop: Arc::clone(&stop),
    };
    let records = RecordReader::new(input, delimiter);
    let (full_tx, full_rx) = channel::<io::Result<Chunk>>();
    let (empty_tx, empty_rx) = channel::<Chunk>();
    for _ in 0..POOL {
        // The receiver is alive: it is right here.
        let _ = empty_tx.send(Chunk::default());
    }
    std::thread::scope(move |scope| {
        // The reader is handed over once the thread runs: if none can be started (a process
        // at its thread limit), the input is read here instead, not refused.
        let (give, given) = channel::<RecordReader<Stoppable<R>>>();
        let started = std::thread::Builder::new()
            .name("convert-read".into())
            .spawn_scoped(scope, move || {
                if let Ok(records) = given.recv() {
                    fill(records, full_tx, empty_rx);
                }
            });
        if started.is_err() {
            return here(records, take, read_error);
        }
        // The thread is waiting for it on the other end.
        let _ = give.send(records);
        let mut rec = RawRecord::default();
        let result = loop {
            let chunk = match full_rx.recv() {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => break Err(read_error(e)),
                // The reader sends End or an error before it stops; only a panic there (a bug)
                // ends it without one, and the scope then passes that panic on.
                Err(_) => break Err(read_error(io::Error::other("the reading thread stopped"))),
            };
            match take_chunk(&chunk, &mut rec, &mut take) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
            let _ = empty_tx.send(chunk);
        };
        // Stops the reader if it is still going: at its next read of the stream, or its next
        // send or wait for a chunk.
        stop.store(true, Ordering::Relaxed);
        drop(full_rx);
        drop(empty_tx);
        result
    })
}

/// [`for_each`] on this thread: for an input small enough that a second thread costs more than
/// it saves.
///
/// # Errors
/// As [`for_each`].
pub(super) fn for_each_here<R: BufRead, E>(
    input: R,
    delimiter: u8,
    take: impl FnMut(Next, &RawRecord, Option<&str>) -> Result<bool, E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    here(RecordReader::new(input, delimiter), take, read_error)
}

/// [`for_each_here`] with the reader made.
fn here<R: BufRead, E>(
    mut records: RecordReader<R>,
    mut take: impl FnMut(Next, &RawRecord, Option<&str>) -> Result<bool, E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let mut rec = RawRecord::default();
    loop {
        let next = records.read(&mut rec).map_err(&read_error)?;
        let text = match next {
            Next::Record => std::str::from_utf8(rec.bytes()).ok(),
            _ => None,
        };
        if !take(next, &rec, text)? || next == Next::End {
            return Ok(());
        }
    }
}

/// Takes a chunk's records; `Ok(false)` once there is nothing more to read.
fn take_chunk<E>(
    chunk: &Chunk,
    rec: &mut RawRecord,
    take: &mut impl FnMut(Next, &RawRecord, Option<&str>) -> Result<bool, E>,
) -> Result<bool, E> {
    let (mut text_at, mut bytes_at, mut ends_at) = (0, 0, 0);
    for held in &chunk.records {
        let ends = &chunk.ends[ends_at..held.ends_end];
        ends_at = held.ends_end;
        let text = if held.utf8 {
            let text = &chunk.text[text_at..held.end];
            text_at = held.end;
            rec.load(text.as_bytes(), ends, held.line);
            Some(text)
        } else {
            rec.load(&chunk.bytes[bytes_at..held.end], ends, held.line);
            bytes_at = held.end;
            None
        };
        if !take(held.next, rec, text)? || held.next == Next::End {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The reading thread: fills chunks from the pool until the end, an error, or the taker leaving.
fn fill<R: BufRead>(
    mut records: RecordReader<R>,
    full: Sender<io::Result<Chunk>>,
    empty: Receiver<Chunk>,
) {
    let mut rec = RawRecord::default();
    while let Ok(mut chunk) = empty.recv() {
        chunk.clear();
        loop {
            // A record too large to hold may be any length: what came before it is handed on
            // first, so the taker can decide (and stop reading) without waiting for its end.
            let mut hand_on = || {
                if chunk.records.is_empty() {
                    return;
                }
                if let Ok(mut fresh) = empty.recv() {
                    fresh.clear();
                    let _ = full.send(Ok(std::mem::replace(&mut chunk, fresh)));
                }
            };
            match records.read_with(&mut rec, &mut hand_on) {
                Ok(next) => {
                    chunk.push(next, &rec);
                    if next == Next::End {
                        let _ = full.send(Ok(chunk));
                        return;
                    }
                    if chunk.full() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = full.send(Ok(chunk));
                    let _ = full.send(Err(e));
                    return;
                }
            }
        }
        if full.send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// The stream, failing every read once the taker has stopped, so the reading thread does not
/// go on through a long record nobody will take.
struct Stoppable<R> {
    inner: R,
    stop: Arc<AtomicBool>,
}

impl<R> Stoppable<R> {
    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "reading stopped: the input is no longer wanted",
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Stoppable<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every record as the taker saw it: what it was, its line, its fields.
    type Seen = Vec<(Next, u64, Vec<Vec<u8>>)>;

    fn seen(next: Next, rec: &RawRecord, text: Option<&str>, out: &mut Seen) {
        let valid = std::str::from_utf8(rec.bytes()).ok();
        let expected = if next == Next::Record { valid } else { None };
        assert_eq!(
            text, expected,
            "a record's text is its bytes when they are UTF-8"
        );
        let fields = match next {
            Next::Record => (0..rec.len())
                .map(|i| rec.get(i).unwrap_or_default().to_vec())
                .collect(),
            _ => vec![],
        };
        let line = if next == Next::Record { rec.line } else { 0 };
        out.push((next, line, fields));
    }

    fn both(input: &[u8], stop_after: usize) -> (Result<Seen, String>, Result<Seen, String>) {
        let run = |ahead: bool| {
            let mut out = Seen::new();
            let take = |next, rec: &RawRecord, text: Option<&str>| {
                seen(next, rec, text, &mut out);
                Ok::<_, String>(out.len() < stop_after)
            };
            let result = if ahead {
                for_each(input, b';', take, |e| e.to_string())
            } else {
                for_each_here(input, b';', take, |e| e.to_string())
            };
            result.map(|()| out)
        };
        (run(false), run(true))
    }

    /// Rows of every kind the reader tells apart: plain, quoted with line breaks and
    /// delimiters, blank, CR and CRLF endings, and rows too long or too wide to hold.
    fn row() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => "[0-9]{11};[a-zA-Zçã ,]{0,40};[A-Z0-9]{0,8}\n".prop_map(String::into_bytes),
            2 => "\"[0-9]{11}\";\"multi\n[a;b]{0,20}\r\nline\";x\r\n".prop_map(String::into_bytes),
            1 => Just(b"\n".to_vec()),
            2 => Just(b"11999999999;Ol\xe1 Jo\xe3o;x\n".to_vec()),
            1 => Just(b"1;2;3\r".to_vec()),
            1 => (70_000usize..140_000).prop_map(|n| {
                let mut r = vec![b'a'; n];
                r.push(b'\n');
                r
            }),
            1 => (513usize..2000).prop_map(|n| {
                let mut r = b";".repeat(n);
                r.push(b'\n');
                r
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn reading_ahead_gives_what_reading_here_gives(
            rows in prop::collection::vec(row(), 1..3000),
            stop_after in prop_oneof![Just(usize::MAX), 1usize..4000],
        ) {
            let input = rows.concat();
            let (here, ahead) = both(&input, stop_after);
            prop_assert_eq!(here, ahead);
        }
    }

    #[test]
    fn a_large_input_crosses_chunks_in_order_with_its_line_numbers() {
        let input: Vec<u8> = (1..=50_000)
            .flat_map(|i| format!("{i};\"text\n{i}\";x\n").into_bytes())
            .collect();
        let (here, ahead) = both(&input, usize::MAX);
        let ahead = ahead.unwrap();
        assert_eq!(here.unwrap(), ahead);
        assert_eq!(ahead.len(), 50_001, "50,000 records and the end");
        assert_eq!(
            ahead[49_999].1,
            2 * 49_999 + 1,
            "each record spans two lines"
        );
        assert_eq!(ahead[50_000].0, Next::End);
    }

    /// A stream that gives `good` bytes, then fails.
    struct Failing {
        data: std::io::Cursor<Vec<u8>>,
    }

    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.data.read(buf)? {
                0 => Err(io::Error::other("the disk went away")),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_read_error_comes_after_every_record_read_before_it() {
        let data: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{i};t\n").into_bytes())
            .collect();
        let reader = || {
            std::io::BufReader::new(Failing {
                data: std::io::Cursor::new(data.clone()),
            })
        };
        let mut ahead = 0;
        let err = for_each(
            reader(),
            b';',
            |_, _, _| {
                ahead += 1;
                Ok(true)
            },
            |e| e.to_string(),
        );
        let mut here = 0;
        let err_here = for_each_here(
            reader(),
            b';',
            |_, _, _| {
                here += 1;
                Ok(true)
            },
            |e| e.to_string(),
        );
        assert_eq!(err, Err("the disk went away".to_string()));
        assert_eq!(err, err_here);
        assert_eq!((ahead, here), (20_000, 20_000));
    }

    #[test]
    fn an_error_of_the_taker_stops_the_reader() {
        let input: Vec<u8> = (0..100_000)
            .flat_map(|i| format!("{i};t\n").into_bytes())
            .collect();
        let mut taken = 0;
        let result = for_each(
            &input[..],
            b';',
            |_, _, _| {
                taken += 1;
                if taken == 3000 {
                    Err("full disk")
                } else {
                    Ok(true)
                }
            },
            |_| "read",
        );
        // Returning at all shows the reading thread ended (the scope waits for it).
        assert_eq!((result, taken), (Err("full disk"), 3000));
    }

    /// A header, then one line of `len` bytes, generated as it is read; counts what was read.
    struct LongLine {
        head: &'static [u8],
        len: u64,
        read: Arc<std::sync::atomic::AtomicU64>,
    }

    impl std::io::Read for LongLine {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.read.load(Ordering::Relaxed);
            let total = self.head.len() as u64 + self.len;
            if at >= total {
                return Ok(0);
            }
            let n = buf.len().min((total - at) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let pos = at + i as u64;
                *b = self.head.get(pos as usize).copied().unwrap_or(b'a');
            }
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    #[test]
    fn a_taker_that_stops_is_not_kept_waiting_for_a_long_line_to_be_read() {
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let input = std::io::BufReader::new(LongLine {
            head: b"telefone;mensagem\n",
            len: 4 << 30,
            read: Arc::clone(&read),
        });
        // The taker refuses the input at its first record (as a header without the needed
        // columns is); the 4 GB line after it must not be read through.
        let result = for_each(input, b';', |_, _, _| Ok::<_, ()>(false), |_| ());
        assert_eq!(result, Ok(()));
        let read = read.load(Ordering::Relaxed);
        assert!(read < 64 << 20, "read {read} bytes after the taker stopped");
    }
}
