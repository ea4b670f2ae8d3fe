//! Property tests: any bytes in never panic, and whatever comes out is a batch file the gateway
//! reads as intended (every message line `number;text;correlationId;`, `EOF` last).

use proptest::prelude::*;
use smsdrop::batch::{check_line, BatchWriter, HEADER_LINE, TRAILER};
use smsdrop::config::{Config, InvalidRows, Sanitize, Zone};
use smsdrop::convert::{convert, SendAt};

fn check_output(input: Vec<u8>, sanitize: Sanitize, max_rows: usize) -> Result<(), TestCaseError> {
    let mut cfg = Config::defaults().input;
    cfg.sanitize = sanitize;
    cfg.invalid_rows = InvalidRows::Skip;
    let dir = tempfile::tempdir().unwrap();
    let mut writer = BatchWriter::new(dir.path(), max_rows, true);
    let report = convert(
        std::io::Cursor::new(input),
        &cfg,
        SendAt::now(Zone::Local),
        &mut writer,
    )
    .unwrap();
    let pending = writer.finish().unwrap();
    prop_assert_eq!(report.rows_read, report.rows_sent + report.rows_rejected);
    let mut rows_in_files = 0;
    for batch in &pending {
        let text = std::fs::read_to_string(batch.path()).expect("batch files are UTF-8");
        prop_assert!(
            text.ends_with(&format!("\n{TRAILER}\n")),
            "no EOF trailer: {:?}",
            text
        );
        let lines: Vec<&str> = text.lines().collect();
        prop_assert_eq!(lines[0], HEADER_LINE);
        let messages = &lines[1..lines.len() - 1];
        prop_assert!(!messages.is_empty() && messages.len() <= max_rows);
        for line in messages {
            prop_assert!(
                check_line(line).is_ok(),
                "bad line {:?}: {:?}",
                line,
                check_line(line)
            );
        }
        rows_in_files += messages.len() as u64;
    }
    prop_assert_eq!(rows_in_files, report.rows_sent);
    Ok(())
}

/// Bytes that look like an ERP export: digits, phone punctuation, delimiters, quotes, line
/// breaks, accents in two encodings, control characters.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let atoms: Vec<&'static [u8]> = vec![
        b"1",
        b"9",
        b"55",
        b"11987654321",
        b"(11) 9",
        b"+",
        b"-",
        b" ",
        b";",
        b",",
        b"\t",
        b"|",
        b"\"",
        b"\"\"",
        b"\n",
        b"\r\n",
        b"\r",
        b"a",
        b"Ol\xc3\xa1",
        b"amanh\xe3",
        b"\xef\xbb\xbf",
        b"\x00",
        b"\x1b",
        b"E+12",
        b"telefone;mensagem;id\n",
        b"\xe2\x80\xa8",
        b"\xf0\x9f\x98\x80",
    ];
    prop::collection::vec(prop::sample::select(atoms), 0..200).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_the_format(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        check_output(input, Sanitize::Replace, 3)?;
    }

    #[test]
    fn csv_like_bytes_never_break_the_format(input in csvish(), reject in any::<bool>()) {
        let mode = if reject { Sanitize::Reject } else { Sanitize::Replace };
        check_output(input, mode, 2)?;
    }
}
