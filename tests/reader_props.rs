//! Property tests for one invariant: a reader never alters a byte.
//!
//! Whatever the encoding (UTF-8, UTF-8 with BOM, UTF-16 LE/BE with BOM, Windows-1252,
//! ISO-8859-1, or a mix of UTF-8 and Windows-1252 rows read with `encoding = "auto"`), the rows a
//! conversion yields (line, number, text, correlation id) must equal a reference made by decoding
//! the whole input with `encoding_rs` in one call and splitting it on line ends and delimiters.
//!
//! The inputs are larger than every buffer of the reader (the 64 KiB head, the 16 KiB raw buffer
//! of the UTF-16 transcoder, the 64 KiB read buffer; some over 1 MiB), multi-byte characters
//! ("ção", "é", "€", an emoji, which UTF-16 writes as a surrogate pair) are placed at every
//! alignment 0..=8 around those buffers' boundaries, and the input is also handed over by a
//! `Read` that returns short, odd-sized chunks (1, 3, 7, 4095 bytes...) and `Interrupted`.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};
use proptest::prelude::*;
use smsdrop::config::{Config, EncodingChoice, Zone};
use smsdrop::convert::{convert, ConvertReport, SendAt};
use std::io::{self, Read};

type Rows = Vec<(u64, String, String, String)>;

/// How a test input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Utf8,
    Utf8Bom,
    /// Excel's "Unicode text": UTF-16 LE with BOM, tab-separated.
    Utf16Le,
    Utf16Be,
    /// Read with `encoding = "windows-1252"`.
    Windows1252,
    /// Read with `encoding = "iso-8859-1"`.
    Latin1,
    /// Odd rows in Windows-1252, the rest UTF-8, read with `encoding = "auto"` (per field).
    Mixed,
}

const ALL: [Enc; 7] = [
    Enc::Utf8,
    Enc::Utf8Bom,
    Enc::Utf16Le,
    Enc::Utf16Be,
    Enc::Windows1252,
    Enc::Latin1,
    Enc::Mixed,
];

/// Words texts are made of; none holds a delimiter, a quote or a line break.
const UNICODE_WORDS: &[&str] = &[
    "ção", "é", "😀", "€", "ã", "𝄞", "Olá", "João", "fatura", "vence", "amanhã", "R$", "150.00",
    "id1253", "x", "ç", "õ", "º", "ação",
];
const W1252_WORDS: &[&str] = &[
    "ção", "é", "€", "ã", "Olá", "João", "fatura", "vence", "amanhã", "R$", "150.00", "id1253",
    "x", "ç", "õ", "º", "ação", "…",
];
const LATIN1_WORDS: &[&str] = &[
    "ção", "é", "ã", "Olá", "João", "fatura", "vence", "amanhã", "R$", "150.00", "id1253", "x",
    "ç", "õ", "º", "ação",
];

impl Enc {
    fn bom(self) -> &'static [u8] {
        match self {
            Enc::Utf8Bom => b"\xEF\xBB\xBF",
            Enc::Utf16Le => b"\xFF\xFE",
            Enc::Utf16Be => b"\xFE\xFF",
            _ => b"",
        }
    }

    fn utf16(self) -> bool {
        matches!(self, Enc::Utf16Le | Enc::Utf16Be)
    }

    /// Whether row `i` (0 is the header) is written in Windows-1252.
    fn row_in_1252(self, i: usize) -> bool {
        match self {
            Enc::Windows1252 => true,
            Enc::Mixed => i % 2 == 1,
            _ => false,
        }
    }

    fn words(self, row: usize) -> &'static [&'static str] {
        match self {
            Enc::Latin1 => LATIN1_WORDS,
            _ if self.row_in_1252(row) => W1252_WORDS,
            _ => UNICODE_WORDS,
        }
    }

    /// The characters that take more than one byte somewhere between file and row.
    fn multibyte(self) -> &'static [&'static str] {
        match self {
            // One byte in the file, two or three in the UTF-8 the reader passes on.
            Enc::Windows1252 => &["ç", "€", "õ"],
            Enc::Latin1 => &["ç", "ã"],
            // Rows alternate with Windows-1252, which has no emoji.
            Enc::Mixed => &["ç", "€", "ã"],
            _ => &["ç", "€", "😀"],
        }
    }

    fn config(self) -> smsdrop::config::InputConfig {
        let mut cfg = Config::defaults().input;
        cfg.encoding = match self {
            Enc::Windows1252 => EncodingChoice::Windows1252,
            Enc::Latin1 => EncodingChoice::Latin1,
            _ => EncodingChoice::Auto,
        };
        cfg
    }

    /// `s` as written in row `row`.
    fn encode(self, s: &str, row: usize) -> Vec<u8> {
        match self {
            Enc::Utf16Le => s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            Enc::Utf16Be => s.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            Enc::Latin1 => {
                assert!(s.chars().all(|c| (c as u32) < 256), "{s:?}");
                encoding_rs::mem::encode_latin1_lossy(s).into_owned()
            }
            _ if self.row_in_1252(row) => {
                let (bytes, _, unmappable) = WINDOWS_1252.encode(s);
                assert!(!unmappable, "{s:?}");
                bytes.into_owned()
            }
            _ => s.as_bytes().to_vec(),
        }
    }

    /// Bytes of `s` in the stream the record reader sees (UTF-16 is transcoded to UTF-8).
    fn stream_len(self, s: &str, encoded: &[u8]) -> usize {
        if self.utf16() {
            s.len()
        } else {
            encoded.len()
        }
    }
}

/// The reference: the whole input decoded in one call, split on line ends and delimiters.
fn reference(bytes: &[u8], enc: Enc, delim: char, eol: &str) -> Rows {
    let text: String = match enc {
        Enc::Latin1 => encoding_rs::mem::decode_latin1(bytes).into_owned(),
        Enc::Mixed => return reference_per_field(bytes, delim, eol),
        _ => {
            let want: &'static Encoding = match enc {
                Enc::Utf16Le => UTF_16LE,
                Enc::Utf16Be => UTF_16BE,
                Enc::Windows1252 => WINDOWS_1252,
                _ => UTF_8,
            };
            // `decode` sniffs and strips the BOM, as the reader does.
            let (text, used, had_errors) = want.decode(bytes);
            assert_eq!(used, want);
            assert!(!had_errors);
            text.into_owned()
        }
    };
    split(&text, delim, eol, |s| s.to_owned())
}

/// `encoding = "auto"`'s rule as the reference: each field of the whole input is UTF-8 when it is
/// valid UTF-8, else Windows-1252. Splitting the raw bytes is safe: both are ASCII-compatible.
fn reference_per_field(bytes: &[u8], delim: char, eol: &str) -> Rows {
    // Latin-1 maps bytes to chars one to one: split as text, then decode each field's bytes.
    let text = encoding_rs::mem::decode_latin1(bytes);
    split(&text, delim, eol, |field| {
        let raw = encoding_rs::mem::encode_latin1_lossy(field);
        match std::str::from_utf8(&raw) {
            Ok(s) => s.to_owned(),
            Err(_) => WINDOWS_1252
                .decode_without_bom_handling(&raw)
                .0
                .into_owned(),
        }
    })
}

fn split(text: &str, delim: char, eol: &str, decode: impl Fn(&str) -> String) -> Rows {
    let body = text.strip_suffix(eol).expect("input ends with a line end");
    let mut lines = body.split(eol);
    assert_eq!(
        lines.next().map(|h| h.split(delim).count()),
        Some(3),
        "header"
    );
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(delim).collect();
            assert_eq!(f.len(), 3, "line {}: {line:?}", i + 2);
            let number = decode(f[0]);
            assert!(
                number.len() == 11 && number.bytes().all(|b| b.is_ascii_digit()),
                "{number:?}"
            );
            // National numbers get the default country code.
            (
                i as u64 + 2,
                format!("55{number}"),
                decode(f[1]),
                decode(f[2]),
            )
        })
        .collect()
}

/// A `Read` handing out the input in chunks of the given sizes, in turn, and `Interrupted`
/// every seventh call when asked to.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    calls: usize,
    interrupt: bool,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls.is_multiple_of(7) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let size = self.sizes[self.calls % self.sizes.len()];
        let n = size.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How the input reaches `convert`.
#[derive(Debug, Clone)]
enum Feed {
    Whole,
    Chunks(Vec<usize>, bool),
}

fn run(bytes: &[u8], enc: Enc, feed: &Feed) -> Result<(Rows, ConvertReport), String> {
    let cfg = enc.config();
    let now = SendAt::now(Zone::Local);
    let mut rows = Rows::new();
    let report = match feed {
        Feed::Whole => convert(io::Cursor::new(bytes.to_vec()), &cfg, now, &mut rows),
        Feed::Chunks(sizes, interrupt) => convert(
            Chunked {
                data: bytes.to_vec(),
                pos: 0,
                sizes: sizes.clone(),
                calls: 0,
                interrupt: *interrupt,
            },
            &cfg,
            now,
            &mut rows,
        ),
    }
    .map_err(|e| format!("conversion failed: {e}"))?;
    Ok((rows, report))
}

/// Converts `doc` and compares with the reference; says what differs first.
fn check(doc: &Doc, feed: &Feed) -> Result<(), String> {
    let want = reference(&doc.bytes, doc.enc, doc.delim, doc.eol);
    assert_eq!(want, doc.rows, "the test's own reference is wrong");
    let what = format!(
        "{:?}, {} bytes, delimiter {:?}, eol {:?}, {feed:?}",
        doc.enc,
        doc.bytes.len(),
        doc.delim,
        doc.eol
    );
    let (got, report) = run(&doc.bytes, doc.enc, feed).map_err(|e| format!("{what}: {e}"))?;
    if let Some(i) = (0..want.len().min(got.len())).find(|&i| want[i] != got[i]) {
        return Err(format!(
            "{what}: row {i} differs: {}\n({} rows wanted, {} got, {} rejected, first rejected: {:?})",
            row_diff(&want[i], &got[i]),
            want.len(),
            got.len(),
            report.rows_rejected,
            report.rejected.first()
        ));
    }
    if want.len() != got.len() || report.rows_rejected != 0 || report.input_rejected.is_some() {
        return Err(format!(
            "{what}: {} rows wanted, {} got, {} rejected ({:?}), input rejected: {:?}",
            want.len(),
            got.len(),
            report.rows_rejected,
            report.rejected.first(),
            report.input_rejected
        ));
    }
    let encoding = match doc.enc {
        Enc::Utf16Le => Some("utf-16le"),
        Enc::Utf16Be => Some("utf-16be"),
        Enc::Windows1252 => Some("windows-1252"),
        Enc::Latin1 => Some("iso-8859-1"),
        _ => None,
    };
    if encoding.is_some_and(|e| e != report.encoding) {
        return Err(format!("{what}: read as {}", report.encoding));
    }
    Ok(())
}

/// Where two rows first differ, with a little context.
fn row_diff(want: &(u64, String, String, String), got: &(u64, String, String, String)) -> String {
    if want.0 != got.0 {
        return format!("line {} wanted, {} got", want.0, got.0);
    }
    let fields = [
        ("number", &want.1, &got.1),
        ("text", &want.2, &got.2),
        ("correlation id", &want.3, &got.3),
    ];
    for (name, w, g) in fields {
        if w == g {
            continue;
        }
        let at = w
            .bytes()
            .zip(g.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        let window = |s: &str| -> String {
            let start = (0..=at.saturating_sub(24))
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            s[start..].chars().take(40).collect()
        };
        return format!(
            "line {}: {name} differs from byte {at}: want …{:?}, got …{:?} ({} and {} bytes)",
            want.0,
            window(w),
            window(g),
            w.len(),
            g.len()
        );
    }
    String::new()
}

/// A small deterministic generator (SplitMix64): inputs of a mebibyte come from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Where a position is counted: in the file's bytes, or in the bytes the record reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coord {
    File,
    Stream,
}

/// A test input under construction, with the rows it holds.
struct Doc {
    enc: Enc,
    delim: char,
    eol: &'static str,
    bytes: Vec<u8>,
    stream_len: usize,
    rows: Rows,
}

impl Doc {
    fn new(enc: Enc, delim: char, eol: &'static str) -> Doc {
        let mut doc = Doc {
            enc,
            delim,
            eol,
            bytes: enc.bom().to_vec(),
            stream_len: 0,
            rows: vec![],
        };
        doc.line(&format!("telefone{delim}mensagem{delim}id{eol}"), 0);
        doc
    }

    fn pos(&self, c: Coord) -> usize {
        match c {
            Coord::File => self.bytes.len(),
            Coord::Stream => self.stream_len,
        }
    }

    /// Length of `s` counted in `c`, as the next row (`self.rows.len() + 1`) would write it.
    fn len(&self, s: &str, c: Coord) -> usize {
        let encoded = self.enc.encode(s, self.rows.len() + 1);
        match c {
            Coord::File => encoded.len(),
            Coord::Stream => self.enc.stream_len(s, &encoded),
        }
    }

    /// Appends line `row` (0 is the header).
    fn line(&mut self, s: &str, row: usize) {
        let encoded = self.enc.encode(s, row);
        self.stream_len += self.enc.stream_len(s, &encoded);
        self.bytes.extend_from_slice(&encoded);
    }

    fn number(&self) -> String {
        format!("119{:08}", self.rows.len())
    }

    fn id(&self) -> String {
        format!("id{}", self.rows.len() + 1253)
    }

    fn row(&mut self, number: String, text: String, id: String) {
        let (d, eol) = (self.delim, self.eol);
        self.line(
            &format!("{number}{d}{text}{d}{id}{eol}"),
            self.rows.len() + 1,
        );
        let line = self.rows.len() as u64 + 2;
        self.rows.push((line, format!("55{number}"), text, id));
    }

    /// A row of random words from the row's encoding, up to `max_words` of them.
    fn random_row(&mut self, rng: &mut Rng, max_words: usize) {
        let words = self.enc.words(self.rows.len() + 1);
        let n = 1 + rng.below(max_words);
        let text: Vec<&str> = (0..n).map(|_| words[rng.below(words.len())]).collect();
        let (number, id) = (self.number(), self.id());
        self.row(number, text.join(" "), id);
    }

    /// A row whose text is a run of `ch`, the run placed so that a `ch` starts `k` bytes before
    /// position `at` (counted in `coord`), with four more before it and a dozen after.
    fn aligned_row(&mut self, ch: &str, coord: Coord, at: usize, k: usize) {
        let (number, id) = (self.number(), self.id());
        let text_start = self.pos(coord) + self.len(&format!("{number}{}", self.delim), coord);
        let run_start = at - k - 4 * self.len(ch, coord);
        // A filler character is 2 bytes of UTF-16: an odd gap rounds down (the run starts a byte
        // earlier), so in UTF-16 file bytes `k` and `k + 1` give the same input.
        let pad = (run_start - text_start) / self.len("x", coord);
        let text = format!("{}{}z", "x".repeat(pad), ch.repeat(16));
        self.row(number, text, id);
    }
}

/// Buffer boundaries: every 16 KiB of the file (the UTF-16 transcoder's raw buffer; the 64 KiB
/// head and read buffer fall on them too) and, for UTF-16, every 64 KiB of transcoded UTF-8.
fn boundaries(enc: Enc, size: usize) -> Vec<(Coord, usize)> {
    let mut at: Vec<(Coord, usize)> = (1..=size / 16384)
        .map(|i| (Coord::File, i * 16384))
        .collect();
    if enc.utf16() {
        at.extend((1..=size / 65536).map(|i| (Coord::Stream, i * 65536)));
    }
    at
}

/// An input of about `size` bytes in which a `ch` starts `k` bytes before every buffer boundary;
/// the rest is random rows. Returns the boundaries so placed.
fn aligned_doc(enc: Enc, ch: &str, k: usize, size: usize, seed: u64) -> (Doc, Vec<(Coord, usize)>) {
    let delim = if enc.utf16() { '\t' } else { ';' };
    let mut doc = Doc::new(enc, delim, "\r\n");
    let mut rng = Rng(seed);
    let mut pending = boundaries(enc, size);
    let mut placed = vec![];
    // A random row is at most ~12 words of at most 8 bytes, plus number and id: under 200
    // bytes in either count. An aligned row needs ~60 bytes before its boundary.
    const ROW_MAX: usize = 200;
    const ROOM: usize = 80;
    while doc.bytes.len() < size {
        pending.retain(|&(c, at)| at >= doc.pos(c) + ROOM);
        let due = pending
            .iter()
            .position(|&(c, at)| at < doc.pos(c) + ROOM + ROW_MAX);
        match due {
            Some(i) => {
                let (c, at) = pending.remove(i);
                doc.aligned_row(ch, c, at, k);
                placed.push((c, at));
            }
            None => doc.random_row(&mut rng, 12),
        }
    }
    (doc, placed)
}

/// An input of at least `size` bytes of random rows (texts up to 150 words).
fn random_doc(enc: Enc, seed: u64, size: usize, delim: char, eol: &'static str) -> Doc {
    let mut doc = Doc::new(enc, delim, eol);
    let mut rng = Rng(seed);
    while doc.bytes.len() < size {
        // 150 words of at most 7 characters stay under the 1280 a text may hold.
        let max_words = if rng.below(4) == 0 { 150 } else { 12 };
        doc.random_row(&mut rng, max_words);
    }
    doc
}

const CHUNK_PATTERNS: [&[usize]; 4] = [
    &[1, 3, 7, 4095],
    &[1],
    &[3, 16383, 7, 65537, 2],
    &[4097, 5, 13, 1, 65535],
];

/// Every alignment 0..=8 of every multi-byte character around every buffer boundary, in every
/// encoding, read whole and in odd chunks.
#[test]
fn every_alignment_around_every_buffer_boundary_reads_faithfully() {
    let mut failures = vec![];
    let mut cases = 0;
    for enc in ALL {
        for (n, ch) in enc.multibyte().iter().enumerate() {
            for k in 0..=8 {
                let (doc, placed) = aligned_doc(enc, ch, k, 200 * 1024, k as u64);
                // The head (64 KiB of file, and of transcoded UTF-8) must be among them.
                assert!(placed.contains(&(Coord::File, 65536)), "{enc:?} {placed:?}");
                if enc.utf16() {
                    assert!(placed.contains(&(Coord::Stream, 65536)), "{placed:?}");
                }
                let chunks = CHUNK_PATTERNS[(n + k) % CHUNK_PATTERNS.len()].to_vec();
                for feed in [Feed::Whole, Feed::Chunks(chunks, k % 2 == 1)] {
                    cases += 1;
                    if let Err(e) = check(&doc, &feed) {
                        failures.push(format!("{ch:?} at -{k}: {e}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases altered bytes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Excel's "Unicode text" as the issue saw it: UTF-16 LE, tab-separated, accented Portuguese,
/// ids `id1253`..., over 64 KiB, at every one of 48 alignments of the content.
#[test]
fn excel_unicode_text_over_64_kib_at_48_alignments() {
    let mut failures = vec![];
    for shift in 0..48 {
        let mut doc = Doc::new(Enc::Utf16Le, '\t', "\r\n");
        let (number, id) = (doc.number(), doc.id());
        doc.row(number, "x".repeat(shift + 1), id);
        while doc.bytes.len() < 150 * 1024 {
            let (number, id) = (doc.number(), doc.id());
            doc.row(
                number,
                "Sua cobrança de ação vence amanhã, João é 😀".into(),
                id,
            );
        }
        if let Err(e) = check(&doc, &Feed::Whole) {
            failures.push(format!("shift {shift}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 48 alignments altered bytes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn any_enc() -> impl Strategy<Value = Enc> {
    prop::sample::select(ALL.to_vec())
}

fn any_feed() -> impl Strategy<Value = Feed> {
    let sizes = prop::collection::vec(
        prop::sample::select(vec![
            1usize, 2, 3, 4, 5, 7, 13, 4095, 4096, 4097, 16383, 65537,
        ]),
        1..6,
    );
    prop_oneof![
        Just(Feed::Whole),
        (sizes, any::<bool>()).prop_map(|(s, i)| Feed::Chunks(s, i)),
    ]
}

fn any_dialect(enc: Enc) -> impl Strategy<Value = (char, &'static str)> {
    let delims = if enc.utf16() {
        vec!['\t']
    } else {
        vec![';', ',', '\t', '|']
    };
    (
        prop::sample::select(delims),
        prop::sample::select(vec!["\r\n", "\n"]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 32, ..ProptestConfig::default() })]

    /// Random rows, 64 KiB to 400 KiB, any encoding, delimiter, line end and chunking.
    #[test]
    fn inputs_over_64_kib_read_faithfully(
        (enc, (delim, eol)) in any_enc().prop_flat_map(|e| (Just(e), any_dialect(e))),
        seed in any::<u64>(),
        size in 65 * 1024usize..400 * 1024,
        feed in any_feed(),
    ) {
        let doc = random_doc(enc, seed, size, delim, eol);
        if let Err(e) = check(&doc, &feed) {
            prop_assert!(false, "seed {}: {}", seed, e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 4, ..ProptestConfig::default() })]

    /// Random rows over 1 MiB: past the head, many read buffers and transcoder refills.
    #[test]
    fn inputs_over_1_mib_read_faithfully(
        (enc, (delim, eol)) in any_enc().prop_flat_map(|e| (Just(e), any_dialect(e))),
        seed in any::<u64>(),
        size in 1024 * 1024usize..1280 * 1024,
        feed in any_feed(),
    ) {
        let doc = random_doc(enc, seed, size, delim, eol);
        if let Err(e) = check(&doc, &feed) {
            prop_assert!(false, "seed {}: {}", seed, e);
        }
    }
}
