//! Inputs the fuzz targets (`fuzz/`, run by `.ci/fuzz.sh`) found crashing, fed through the same
//! API with the same checks, so a fixed bug stays fixed without a fuzzer.

use smsdrop::batch::{check_line, BatchName};
use smsdrop::config::{Config, EncodingChoice, HeaderChoice, InputConfig, Zone};
use smsdrop::convert::{convert, ConvertReport, SendAt};
use std::io::Cursor;

type Rows = Vec<(u64, String, String, String)>;

/// What the `reader` target checks: conversion finishes, every row sent makes a batch line the
/// gateway reads as intended, and every row read is counted once.
fn convert_checked(input: &[u8], cfg: &InputConfig) -> (ConvertReport, Rows) {
    let mut rows: Rows = vec![];
    let report = convert(
        Cursor::new(input.to_vec()),
        cfg,
        SendAt::now(Zone::Local),
        &mut rows,
    )
    .expect("in-memory input");
    for (line, number, text, id) in &rows {
        let batch_line = format!("{number};{text};{id};");
        assert!(
            check_line(&batch_line).is_ok(),
            "line {line}: {batch_line:?}: {:?}",
            check_line(&batch_line)
        );
        assert!(
            !text.chars().chain(id.chars()).any(char::is_control),
            "line {line}: control character in {batch_line:?}"
        );
    }
    assert_eq!(report.rows_sent, rows.len() as u64);
    assert_eq!(report.rows_read, report.rows_sent + report.rows_rejected);
    (report, rows)
}

fn input_config(encoding: EncodingChoice, header: HeaderChoice) -> InputConfig {
    let mut cfg = Config::defaults().input;
    cfg.encoding = encoding;
    cfg.header = header;
    cfg
}

/// `reader` crash: a record whose fields, joined without their delimiters, are valid UTF-8 although
/// a field boundary falls inside a character (`CE | B0` is `ΰ`). The whole-record UTF-8 shortcut
/// then sliced the record in the middle of the character and panicked.
#[test]
fn a_field_boundary_inside_a_utf8_character_is_not_a_panic() {
    // The fuzzer's input, minimised (it ran with header = false, encoding = utf-8).
    let found: &[u8] = b"\xCE\t\xB0";
    for encoding in [
        EncodingChoice::Auto,
        EncodingChoice::Utf8,
        EncodingChoice::Windows1252,
        EncodingChoice::Latin1,
    ] {
        for header in [HeaderChoice::Auto, HeaderChoice::Yes, HeaderChoice::No] {
            convert_checked(found, &input_config(encoding, header));
        }
    }

    // The same under the defaults, in an export's shape: "caf\xC3" ends a Windows-1252 text and
    // "\xA9" ("©") starts the next field; together they are the UTF-8 "café".
    let export = b"telefone;mensagem;id\n11987654321;caf\xC3;\xA9\n";
    let (report, rows) = convert_checked(export, &Config::defaults().input);
    assert_eq!(report.rows_sent, 1, "{report:?}");
    // Each field is read on its own: not UTF-8, so Windows-1252.
    assert_eq!(
        rows[0],
        (2, "5511987654321".into(), "cafÃ".into(), "©".into())
    );

    // With encoding = "utf-8" the row is refused as not UTF-8, not sent cut in two.
    let strict = input_config(EncodingChoice::Utf8, HeaderChoice::Auto);
    let (report, rows) = convert_checked(export, &strict);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(report.rows_rejected, 1);
    assert!(
        report.rejected[0].reason.contains("not valid UTF-8"),
        "{:?}",
        report.rejected[0]
    );
}

/// `listing` finding: `BatchName::parse` hands the 8 date characters to chrono's `%Y%m%d`, which
/// also takes a signed year and spaces: `0.-017 101.12.txt` parsed as the year -17, which formats
/// as `0.-00171001.12.txt`, a name that no longer parses.
#[test]
fn a_batch_name_date_is_eight_digits() {
    for raw in [
        "0.-017 101.12.txt",
        "E.-017 101.123.txt",
        "ACME.2017 1 1.01.txt",
        "ACME. 2017011.01.txt",
        "ACME.+0170101.01.txt",
        "ACME.-0010101.01.txt",
    ] {
        if let Some(n) = BatchName::parse(raw) {
            let formatted = n.to_string();
            assert_eq!(
                BatchName::parse(&formatted).as_ref(),
                Some(&n),
                "{raw:?} parsed as {n:?}, formatted as {formatted:?}"
            );
        }
        assert_eq!(BatchName::parse(raw), None, "{raw:?}");
    }
    let n = BatchName::parse("ACME.00000101.01.txt").expect("the year 0 is 8 digits");
    assert_eq!(n.to_string(), "ACME.00000101.01.txt");
}

/// `reader` crashes (issue 12), both `.xls` files (OLE containers) damaged by the fuzzer:
/// - a sector table pointing past the file's end made calamine panic slicing it (`cfb.rs`:
///   "slice index starts at 4096 but ends at 3826");
/// - a cyclic sector chain made calamine read it forever: 4 GB asked for by a 5 KB file.
///
/// Both are now refused by the `cfb` crate's check of the container before calamine reads it;
/// a panic inside calamine would still reject the workbook as damaged.
#[test]
fn damaged_xls_containers_are_rejected_before_calamine_reads_them() {
    for name in ["fuzz-cfb-slice.xls", "fuzz-cfb-cycle.xls"] {
        let found = std::fs::read(format!(
            "{}/tests/fixtures/sheets/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for header in [HeaderChoice::Auto, HeaderChoice::No] {
            let (report, rows) =
                convert_checked(&found, &input_config(EncodingChoice::Auto, header));
            assert!(rows.is_empty());
            let why = report.input_rejected.unwrap_or_default();
            assert!(
                why.contains("looks like an old Excel (.xls) workbook but cannot be read"),
                "{name}: {why}"
            );
        }
    }
}

/// `reader` out of memory: a 5.6 KB `.xls` (a valid container) whose sheet has cells and a
/// DIMENSIONS record far apart. calamine builds each sheet as a dense grid when it opens the
/// file, so this one took 13.7 GB and 40 s (and a failed allocation aborts the process, which no
/// `catch_unwind` stops). The grid is now counted from the records first and the workbook
/// refused with the reason, before calamine reads it; the readable `.xls` still reads.
#[test]
fn an_xls_whose_cells_span_gigabytes_is_refused_before_calamine_reads_it() {
    let dir = format!("{}/tests/fixtures/sheets", env!("CARGO_MANIFEST_DIR"));
    let found = std::fs::read(format!("{dir}/fuzz-sparse-grid.xls")).unwrap();
    let (report, rows) = convert_checked(&found, &Config::defaults().input);
    assert!(rows.is_empty());
    let why = report.input_rejected.unwrap_or_default();
    assert!(
        why.contains("cells from their first to their last used row and column")
            && why.contains("save the sheet as .xlsx or CSV"),
        "{why}"
    );

    // A real workbook is read (its header names no text column: the default config says so).
    let good = std::fs::read(format!("{dir}/contatos.xls")).unwrap();
    let (report, _) = convert_checked(&good, &Config::defaults().input);
    let why = report.input_rejected.unwrap_or_default();
    assert!(why.contains("has no message text column"), "{why}");
    assert!(report.encoding.starts_with("xls"), "{}", report.encoding);
}
