//! Streaming, memory-bounded reading of delimited records from an ERP export.
//!
//! [`open`] looks at the first bytes (BOM, UTF-16, binary signatures) and hands back a byte stream
//! plus its head for sniffing; [`RecordReader`] splits that stream into records with `csv-core`
//! (RFC 4180 quoting, CR/LF/CRLF). A record over [`MAX_RECORD_BYTES`] or [`MAX_FIELDS`] is skipped
//! to its end without being held in memory, so a 100 MB line costs no more than a short one.

use encoding_rs::{Decoder, UTF_16BE, UTF_16LE};
use std::io::{self, BufRead, BufReader, Cursor, Read};

/// Bytes held for one record; the longest legal row is far shorter (1280 characters of text).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Fields held for one record.
pub const MAX_FIELDS: usize = 512;
/// Bytes looked at to sniff the dialect.
pub const HEAD_BYTES: usize = 64 * 1024;

/// What the first bytes said about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bom {
    None,
    Utf8,
    Utf16Le,
    Utf16Be,
}

/// An input whose first bytes show it is not a delimited text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotText(pub String);

/// A byte stream ready for [`RecordReader`], with its first [`HEAD_BYTES`] for sniffing (a head
/// that may end inside a character: `stream` repeats it and goes on from the very next byte).
pub struct Opened {
    pub stream: Box<dyn BufRead + Send>,
    pub head: Vec<u8>,
    pub bom: Bom,
}

/// Reads the head of `input`, strips a BOM, transcodes UTF-16 to UTF-8, and refuses binary files.
///
/// # Errors
/// `Ok(Err(NotText))` for a binary file; `Err` when reading fails.
pub fn open<R: Read + Send + 'static>(mut input: R) -> io::Result<Result<Opened, NotText>> {
    let mut head = read_head(&mut input)?;
    let bom = match head.as_slice() {
        [0xEF, 0xBB, 0xBF, ..] => Bom::Utf8,
        [0xFF, 0xFE, ..] => Bom::Utf16Le,
        [0xFE, 0xFF, ..] => Bom::Utf16Be,
        _ => Bom::None,
    };
    let skip = match bom {
        Bom::None => 0,
        Bom::Utf8 => 3,
        Bom::Utf16Le | Bom::Utf16Be => 2,
    };
    head.drain(..skip);
    let rest: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(input));
    let mut stream: Box<dyn Read + Send> = match bom {
        Bom::Utf16Le => Box::new(Transcoder::new(
            rest,
            UTF_16LE.new_decoder_without_bom_handling(),
        )),
        Bom::Utf16Be => Box::new(Transcoder::new(
            rest,
            UTF_16BE.new_decoder_without_bom_handling(),
        )),
        _ => rest,
    };
    let head = read_head(&mut stream)?;
    if let Some(why) = binary_signature(&head) {
        return Ok(Err(NotText(why)));
    }
    let stream = Box::new(BufReader::with_capacity(
        HEAD_BYTES,
        Cursor::new(head.clone()).chain(stream),
    ));
    Ok(Ok(Opened { stream, head, bom }))
}

fn read_head(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    input.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Names a binary format from its first bytes, with what the operator should do instead.
fn binary_signature(head: &[u8]) -> Option<String> {
    let known: [(&[u8], &str); 4] = [
        (b"PK\x03\x04", "an Excel workbook or ZIP archive"),
        (
            b"\xD0\xCF\x11\xE0",
            "an old Excel (.xls) or Office document",
        ),
        (b"%PDF", "a PDF document"),
        (b"\x1F\x8B", "a gzip archive"),
    ];
    for (magic, what) in known {
        if head.starts_with(magic) {
            return Some(format!(
                "the file is {what}, not a delimited text export; save it as CSV and drop it again"
            ));
        }
    }
    let window = &head[..head.len().min(8192)];
    if window.contains(&0) {
        return Some(
            "the file holds NUL bytes, so it is binary, not a delimited text export; \
             check what the ERP wrote and export it as CSV"
                .into(),
        );
    }
    None
}

/// Turns a UTF-16 byte stream into UTF-8 as it is read, never altering a character.
///
/// Input split anywhere (half a code unit, half a surrogate pair, a 1-byte read from `inner`)
/// waits inside the decoder, fed with `last = false` until `inner` reports its end. Output that
/// does not fit a small `read` (a `Take` near its limit asks for 1 to 3 bytes; a character takes
/// up to 4) waits in `pending` for the next call instead of being dropped.
struct Transcoder {
    inner: Box<dyn Read + Send>,
    decoder: Decoder,
    /// Raw UTF-16 read from `inner`; `raw[raw_start..raw_end]` is not yet decoded.
    raw: Box<[u8]>,
    raw_start: usize,
    raw_end: usize,
    /// UTF-8 decoded but not yet handed out: `pending[pending_start..pending_end]`.
    pending: [u8; 4],
    pending_start: usize,
    pending_end: usize,
    /// `inner` has reported its end: the decoder is now fed with `last = true`.
    eof: bool,
    /// The decoder has flushed its last character: every further read returns 0.
    finished: bool,
}

impl Transcoder {
    /// Raw bytes decoded per refill.
    const RAW_BYTES: usize = 16 * 1024;

    fn new(inner: Box<dyn Read + Send>, decoder: Decoder) -> Self {
        Transcoder {
            inner,
            decoder,
            raw: vec![0; Self::RAW_BYTES].into_boxed_slice(),
            raw_start: 0,
            raw_end: 0,
            pending: [0; 4],
            pending_start: 0,
            pending_end: 0,
            eof: false,
            finished: false,
        }
    }

    /// Decodes into `out` (at least 4 bytes: room for any one character); 0 only at the end.
    fn decode(&mut self, out: &mut [u8]) -> io::Result<usize> {
        debug_assert!(out.len() >= 4);
        while !self.finished {
            if self.raw_start == self.raw_end && !self.eof {
                // An error (`Interrupted` included) leaves the state as it was: the caller may retry.
                let n = self.inner.read(&mut self.raw)?;
                (self.raw_start, self.raw_end) = (0, n);
                self.eof = n == 0;
            }
            let (result, read, written, _) =
                self.decoder
                    .decode_to_utf8(&self.raw[self.raw_start..self.raw_end], out, self.eof);
            self.raw_start += read;
            // With `last = true`, `InputEmpty` means the input is used up and the decoder flushed.
            self.finished = self.eof && result == encoding_rs::CoderResult::InputEmpty;
            if written > 0 {
                return Ok(written);
            }
        }
        Ok(0)
    }
}

impl Read for Transcoder {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pending_start == self.pending_end {
            if out.len() >= 4 {
                return self.decode(out);
            }
            let mut one = [0u8; 4];
            let n = self.decode(&mut one)?;
            self.pending = one;
            (self.pending_start, self.pending_end) = (0, n);
        }
        let pending = &self.pending[self.pending_start..self.pending_end];
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.pending_start += n;
        Ok(n)
    }
}

/// One record's fields, as raw bytes of the source encoding.
#[derive(Debug, Default)]
pub struct RawRecord {
    /// Buffers kept at their grown size between records; `used` / `fields` say what is filled.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    used: usize,
    fields: usize,
    /// The 1-based line the record starts on.
    pub line: u64,
}

impl RawRecord {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields
    }

    /// True for a record with no fields.
    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    /// Field `i`'s bytes, if present.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.range(i).map(|r| &self.bytes[r])
    }

    /// Where field `i` lies in [`RawRecord::bytes`].
    pub fn range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let end = *self.ends[..self.fields].get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(start..end)
    }

    /// All fields' bytes, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.used]
    }

    /// Empties the record for one built field by field (a spreadsheet row) starting on `line`.
    pub fn start(&mut self, line: u64) {
        self.used = 0;
        self.fields = 0;
        self.line = line;
    }

    /// Appends a field holding `bytes`.
    pub fn push_field(&mut self, bytes: &[u8]) {
        self.bytes.truncate(self.used);
        self.bytes.extend_from_slice(bytes);
        self.used += bytes.len();
        self.ends.truncate(self.fields);
        self.ends.push(self.used);
        self.fields += 1;
    }

    /// Where each field ends in [`RawRecord::bytes`].
    pub(super) fn ends(&self) -> &[usize] {
        &self.ends[..self.fields]
    }

    /// Makes this record a copy of one held elsewhere (`ends` as [`RawRecord::ends`] gives them).
    pub(super) fn load(&mut self, bytes: &[u8], ends: &[usize], line: u64) {
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.used = bytes.len();
        self.ends.clear();
        self.ends.extend_from_slice(ends);
        self.fields = ends.len();
        self.line = line;
    }

    /// True when every field is empty or white space (a blank line, or only delimiters).
    pub fn is_blank(&self) -> bool {
        self.bytes[..self.used]
            .iter()
            .all(|b| b.is_ascii_whitespace())
    }
}

/// What [`RecordReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A record is in the buffer.
    Record,
    /// A record too large to hold was skipped; it started on `line`.
    TooLarge { line: u64, bytes: u64, fields: u64 },
    /// The stream is over.
    End,
}

/// Splits a byte stream into records with bounded memory.
pub struct RecordReader<R> {
    input: R,
    core: csv_core::Reader,
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
    /// Line feeds consumed so far.
    lf_seen: u64,
    delimiter: u8,
}

impl<R: BufRead> RecordReader<R> {
    /// Reads records separated by `delimiter`, with `"` quoting.
    pub fn new(input: R, delimiter: u8) -> Self {
        let core = built_core(delimiter);
        RecordReader {
            input,
            core,
            scratch: vec![0; 8192],
            scratch_ends: vec![0; 64],
            lf_seen: 0,
            delimiter,
        }
    }

    /// Reads the next record into `rec`.
    ///
    /// # Errors
    /// When the underlying stream fails.
    pub fn read(&mut self, rec: &mut RawRecord) -> io::Result<Next> {
        self.read_with(rec, &mut || {})
    }

    /// [`RecordReader::read`], calling `on_too_large` once the record is found too large to
    /// hold, before the rest of it is read (and skipped), however long it is.
    ///
    /// # Errors
    /// When the underlying stream fails.
    pub fn read_with(
        &mut self,
        rec: &mut RawRecord,
        on_too_large: &mut dyn FnMut(),
    ) -> io::Result<Next> {
        rec.used = 0;
        rec.fields = 0;
        let (mut out_len, mut ends_len) = (0usize, 0usize);
        let (mut spilled_bytes, mut spilled_fields, mut spilled_newlines) = (0u64, 0u64, 0u64);
        let mut lf_in_call = 0u64;
        let mut overflow = false;
        let mut last_byte = 0u8;
        loop {
            if !overflow {
                grow(&mut rec.bytes, out_len, MAX_RECORD_BYTES);
                grow(&mut rec.ends, ends_len, MAX_FIELDS);
                overflow = out_len == rec.bytes.len() || ends_len == rec.ends.len();
                if overflow {
                    on_too_large();
                }
            }
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                // A read that was interrupted before it read anything is retried, as `Read` asks.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (result, nin, nout, nend) = if overflow {
                let r = self
                    .core
                    .read_record(input, &mut self.scratch, &mut self.scratch_ends);
                spilled_bytes += r.2 as u64;
                spilled_fields += r.3 as u64;
                spilled_newlines += count_lf(&self.scratch[..r.2]);
                r
            } else {
                // csv-core's field ends count from the record's start, across calls.
                self.core
                    .read_record(input, &mut rec.bytes[out_len..], &mut rec.ends[ends_len..])
            };
            if nin > 0 {
                last_byte = input[nin - 1];
                let lf = count_lf(&input[..nin]);
                self.lf_seen += lf;
                lf_in_call += lf;
            }
            self.input.consume(nin);
            if !overflow {
                out_len += nout;
                ends_len += nend;
            }
            match result {
                csv_core::ReadRecordResult::InputEmpty
                | csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => continue,
                csv_core::ReadRecordResult::Record => {
                    // With at most one LF consumed (its terminator, or the one before it), the
                    // record holds none: skip the scan.
                    let held = if lf_in_call > 1 {
                        count_lf(&rec.bytes[..out_len])
                    } else {
                        0
                    };
                    let newlines = held + spilled_newlines;
                    // Every LF consumed so far ends a line; the record's own terminator is one
                    // of them unless it ended on CR (its LF comes with the next read) or at EOF.
                    let end_line = if last_byte == b'\n' {
                        self.lf_seen
                    } else {
                        self.lf_seen + 1
                    };
                    let line = end_line - newlines;
                    if overflow {
                        return Ok(Next::TooLarge {
                            line,
                            bytes: out_len as u64 + spilled_bytes,
                            fields: ends_len as u64 + spilled_fields,
                        });
                    }
                    rec.used = out_len;
                    rec.fields = ends_len;
                    rec.line = line;
                    return Ok(Next::Record);
                }
                csv_core::ReadRecordResult::End => return Ok(Next::End),
            }
        }
    }
}

thread_local! {
    /// Parsers of finished readers, kept for the next reader on this thread (see [`built_core`]).
    static BUILT: std::cell::RefCell<Vec<(u8, csv_core::Reader)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Parsers kept per thread: one per delimiter tried by the sniffer, and one to read.
const BUILT_KEPT: usize = 8;

/// A `csv-core` parser for `delimiter`, as new. Building one computes its transition table
/// (2,560 steps), and every input builds five (four to sniff its delimiter, one to read), which
/// was a sixth of the time to convert a small file; so a finished reader's parser is kept (see
/// `Drop`) and reset for the next. Reused, never cloned: `csv-core` 0.1's `Clone` for its DFA
/// copies only part of the table, and a cloned parser never ends.
fn built_core(delimiter: u8) -> csv_core::Reader {
    let kept = BUILT.with(|built| {
        let mut built = built.borrow_mut();
        let at = built.iter().position(|(d, _)| *d == delimiter)?;
        Some(built.swap_remove(at).1)
    });
    match kept {
        Some(mut core) => {
            core.reset();
            core
        }
        None => csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
    }
}

impl<R> Drop for RecordReader<R> {
    fn drop(&mut self) {
        let core = std::mem::take(&mut self.core);
        // Only on a thread still running (try_with): at its exit the parser is just dropped.
        let _ = BUILT.try_with(|built| {
            if let Ok(mut built) = built.try_borrow_mut() {
                if built.len() < BUILT_KEPT {
                    built.push((self.delimiter, core));
                }
            }
        });
    }
}

/// Doubles `buf` when `used` fills it, up to `cap` elements.
fn grow<T: Default + Clone>(buf: &mut Vec<T>, used: usize, cap: usize) {
    if used == buf.len() && buf.len() < cap {
        let new_len = (buf.len() * 2).clamp(256, cap);
        buf.resize(new_len, T::default());
    }
}

fn count_lf(bytes: &[u8]) -> u64 {
    // Slices here are a record or less: a plain loop beats a SIMD search's set-up.
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8], delim: u8) -> Vec<(u64, Vec<String>)> {
        let mut r = RecordReader::new(text, delim);
        let mut rec = RawRecord::default();
        let mut out = vec![];
        loop {
            match r.read(&mut rec).unwrap() {
                Next::Record => out.push((
                    rec.line,
                    (0..rec.len())
                        .map(|i| String::from_utf8_lossy(rec.get(i).unwrap()).into_owned())
                        .collect(),
                )),
                Next::TooLarge { line, .. } => out.push((line, vec!["<too large>".into()])),
                Next::End => return out,
            }
        }
    }

    #[test]
    fn a_parser_left_mid_record_reads_the_next_input_as_new() {
        // A new csv-core parser drops a UTF-8 BOM at its very start (a second one, after the one
        // `open` strips), and only there.
        let text = b"\xef\xbb\xbfa;\"b\nc\";d\n\"e;f\";g\r\nh\n";
        let fresh = records(text, b';');
        assert_eq!(fresh.len(), 3);
        assert_eq!(fresh[0].1[0], "a");
        // Readers dropped after a quoted field cut short, after a CR, and at the end, each of
        // whose parser the next reader on this thread takes back.
        for cut in [6, 17, text.len()] {
            let mut r = RecordReader::new(&text[..cut], b';');
            let mut rec = RawRecord::default();
            let _ = r.read(&mut rec).unwrap();
            drop(r);
            assert_eq!(
                records(text, b';'),
                fresh,
                "after a reader cut at byte {cut}"
            );
            // And one with another delimiter in between.
            assert_eq!(records(b"x,y\n", b',').len(), 1);
        }
    }

    #[test]
    fn lines_are_counted_for_lf_crlf_blank_and_quoted_breaks() {
        for eol in ["\n", "\r\n"] {
            let text = format!("a;b{eol}{eol}c;\"x{eol}y\"{eol}d;e{eol}\"f\";g");
            let got = records(text.as_bytes(), b';');
            let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
            assert_eq!(lines, vec![1, 3, 5, 6], "{eol:?}");
            assert_eq!(got[1].1[1], format!("x{eol}y"));
            assert_eq!(got[3].1, vec!["f", "g"]);
        }
    }

    #[test]
    fn quotes_follow_rfc4180() {
        let got = records(b"\"a;b\";\"say \"\"hi\"\"\";c\n", b';');
        assert_eq!(got[0].1, vec!["a;b", "say \"hi\"", "c"]);
    }

    #[test]
    fn oversized_records_are_skipped_not_held() {
        let mut text = b"1;ok\n2;".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD_BYTES));
        text.extend(b"\n3;ok\n");
        let got = records(&text, b';');
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (2, vec!["<too large>".to_string()]));
        assert_eq!(got[2], (3, vec!["3".to_string(), "ok".to_string()]));

        let wide = format!("{}\n1;ok\n", ";".repeat(MAX_FIELDS * 3));
        let got = records(wide.as_bytes(), b';');
        assert_eq!(got[0].1, vec!["<too large>"]);
        assert_eq!(got[1], (2, vec!["1".to_string(), "ok".to_string()]));
    }

    fn open_all(bytes: &[u8]) -> Result<(Bom, Vec<u8>), NotText> {
        let opened = open(Cursor::new(bytes.to_vec())).unwrap()?;
        let mut all = vec![];
        let mut s = opened.stream;
        s.read_to_end(&mut all).unwrap();
        assert!(all.starts_with(&opened.head));
        Ok((opened.bom, all))
    }

    #[test]
    fn boms_are_stripped_and_utf16_transcoded() {
        assert_eq!(
            open_all(b"\xEF\xBB\xBFa;b").unwrap(),
            (Bom::Utf8, b"a;b".to_vec())
        );
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("ã;b".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(
            open_all(&le).unwrap(),
            (Bom::Utf16Le, "ã;b".as_bytes().to_vec())
        );
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("ã;b".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(
            open_all(&be).unwrap(),
            (Bom::Utf16Be, "ã;b".as_bytes().to_vec())
        );
        let long = "x".repeat(HEAD_BYTES * 2);
        assert_eq!(open_all(long.as_bytes()).unwrap().1.len(), HEAD_BYTES * 2);
    }

    /// Hands out its bytes one at a time.
    struct Trickle(Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn utf16_is_transcoded_whole_whatever_the_read_sizes() {
        let text = "ação é 😀 id1253\t€\r\n".repeat(40);
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for trickle in [false, true] {
            for size in 1..=9 {
                let inner: Box<dyn Read + Send> = if trickle {
                    Box::new(Trickle(Cursor::new(le.clone())))
                } else {
                    Box::new(Cursor::new(le.clone()))
                };
                let mut t = Transcoder::new(inner, UTF_16LE.new_decoder_without_bom_handling());
                let (mut got, mut buf) = (vec![], vec![0; size]);
                loop {
                    match t.read(&mut buf).unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                assert_eq!(String::from_utf8_lossy(&got), text, "{size}, {trickle}");
            }
        }
    }

    #[test]
    fn binary_inputs_are_named() {
        for (bytes, want) in [
            (&b"PK\x03\x04rest"[..], "Excel workbook"),
            (b"\xD0\xCF\x11\xE0rest", ".xls"),
            (b"%PDF-1.4", "PDF"),
            (b"ab\0cd", "NUL"),
        ] {
            let NotText(why) = open_all(bytes).unwrap_err();
            assert!(why.contains(want), "{why}");
        }
    }
}
