//! Spreadsheet inputs end to end through [`convert`]: workbooks generated with
//! `rust_xlsxwriter`, and committed `.ods` / `.xls` / encrypted fixtures
//! (`tests/fixtures/sheets/make.py`).

use super::*;
use crate::config::{Config, Zone};
use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};

type Rows = Vec<(u64, String, String, String)>;

fn run_with(input: Vec<u8>, cfg: &InputConfig) -> (Rows, ConvertReport) {
    let mut rows = Rows::new();
    let report = convert(
        std::io::Cursor::new(input),
        cfg,
        SendAt::now(Zone::Local),
        &mut rows,
    )
    .unwrap();
    (rows, report)
}

fn row(line: u64, n: &str, t: &str, id: &str) -> (u64, String, String, String) {
    (line, n.into(), t.into(), id.into())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/sheets/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A billing export as people save it: phones as numbers, amounts, dates, a formula, gaps.
fn billing_workbook() -> Vec<u8> {
    let mut book = Workbook::new();
    let date = Format::new().set_num_format("dd/mm/yyyy");
    let s = book.add_worksheet().set_name("Cobrança").unwrap();
    for (c, h) in ["Nome", "Valor", "Vencimento", "Celular", "Código", "Obs"]
        .iter()
        .enumerate()
    {
        s.write_string(0, c as u16, *h).unwrap();
    }
    // Row 2: everything as numbers, as Excel stores them.
    s.write_string(1, 0, "Ana").unwrap();
    s.write_number(1, 1, 150.5).unwrap();
    let d = ExcelDateTime::from_ymd(2027, 1, 5).unwrap();
    s.write_datetime_with_format(1, 2, &d, &date).unwrap();
    s.write_number(1, 3, 5511999999999.0).unwrap();
    s.write_number(1, 4, 1001.0).unwrap();
    // Rows 3 and 4 empty (row 4 only formatted): skipped.
    s.write_string(3, 0, "").unwrap();
    // Row 5: a formula with its cached value; a national number as text.
    s.write_string(4, 0, "Bruno").unwrap();
    s.write_formula(4, 1, Formula::new("=100+20").set_result("120"))
        .unwrap();
    let d = ExcelDateTime::from_ymd(2027, 2, 28).unwrap();
    s.write_datetime_with_format(4, 2, &d, &date).unwrap();
    s.write_string(4, 3, "(21) 98888-7777").unwrap();
    s.write_string(4, 4, "B-2").unwrap();
    // Row 6: a formula that failed, in a column the template uses.
    s.write_string(5, 0, "Carla").unwrap();
    s.write_formula(5, 1, Formula::new("=1/0").set_result("#DIV/0!"))
        .unwrap();
    s.write_datetime_with_format(5, 2, &d, &date).unwrap();
    s.write_number(5, 3, 5531977776666.0).unwrap();
    // Row 7: a formula error in a column nobody reads, and a note past the header.
    s.write_string(6, 0, "Dora").unwrap();
    s.write_number(6, 1, 7.0).unwrap();
    s.write_datetime_with_format(6, 2, &d, &date).unwrap();
    s.write_number(6, 3, 5531966665555.0).unwrap();
    s.write_string(6, 4, "D-4").unwrap();
    s.write_formula(6, 5, Formula::new("=NA()").set_result("#N/A"))
        .unwrap();
    s.write_string(6, 7, "nota, solta").unwrap();
    let other = book.add_worksheet().set_name("Resumo").unwrap();
    other.write_string(0, 0, "celular").unwrap();
    other.write_string(0, 1, "texto").unwrap();
    other.write_number(1, 0, 5511911112222.0).unwrap();
    other.write_string(1, 1, "resumo").unwrap();
    book.save_to_buffer().unwrap()
}

fn billing_cfg() -> InputConfig {
    let mut cfg = Config::defaults().input;
    cfg.template = Some(
        template::Template::parse("Olá {nome}, sua fatura de R$ {valor} vence em {vencimento}.")
            .unwrap(),
    );
    cfg
}

#[test]
fn xlsx_numbers_dates_formulas_and_empty_rows() {
    let (rows, rep) = run_with(billing_workbook(), &billing_cfg());
    assert_eq!(
        rows,
        vec![
            row(
                2,
                "5511999999999",
                "Olá Ana, sua fatura de R$ 150.5 vence em 05/01/2027.",
                "1001"
            ),
            row(
                5,
                "5521988887777",
                "Olá Bruno, sua fatura de R$ 120 vence em 28/02/2027.",
                "B-2"
            ),
            row(
                7,
                "5531966665555",
                "Olá Dora, sua fatura de R$ 7 vence em 28/02/2027.",
                "D-4"
            ),
        ]
    );
    assert_eq!(rep.encoding, "xlsx workbook, sheet \"Cobrança\"");
    assert_eq!(rep.delimiter, "");
    assert_eq!((rep.rows_read, rep.rows_rejected), (4, 1));
    assert!(
        rep.rejected[0].reason.contains("holds the error #DIV/0!") && rep.rejected[0].line == 6,
        "{:?}",
        rep.rejected
    );
    assert_eq!(rep.rows_changed, 0);
}

#[test]
fn the_date_format_and_the_sheet_are_settings() {
    let mut cfg = billing_cfg();
    cfg.date_format = "%Y-%m-%d".into();
    let (rows, _) = run_with(billing_workbook(), &cfg);
    assert!(rows[0].2.ends_with("vence em 2027-01-05."), "{rows:?}");

    let mut cfg = Config::defaults().input;
    cfg.sheet = Some("Resumo".into());
    let (rows, rep) = run_with(billing_workbook(), &cfg);
    assert_eq!(rows, vec![row(2, "5511911112222", "resumo", "")]);
    assert_eq!(rep.encoding, "xlsx workbook, sheet \"Resumo\"");

    // A sheet name is matched as written, else as header names are (case, accents).
    cfg.sheet = Some("RESUMO".into());
    let (rows, _) = run_with(billing_workbook(), &cfg);
    assert_eq!(rows.len(), 1);

    cfg.sheet = Some("Plan9".into());
    let (rows, rep) = run_with(billing_workbook(), &cfg);
    assert!(rows.is_empty());
    let why = rep.input_rejected.unwrap();
    assert!(
        why.contains("no sheet named \"Plan9\"") && why.contains("\"Cobrança\", \"Resumo\""),
        "{why}"
    );
}

#[test]
fn ods_and_xls_read_the_same_way() {
    let mut cfg = Config::defaults().input;
    cfg.template = Some(template::Template::parse("{nome}: vence {vencimento}").unwrap());
    for name in ["contatos.ods", "contatos.xls"] {
        let (rows, rep) = run_with(fixture(name), &cfg);
        assert_eq!(
            rows,
            vec![
                row(2, "5511999999999", "Ana: vence 05/01/2027", "A1"),
                row(4, "5521988887777", "Bruno: vence 28/02/2027", "B2"),
            ],
            "{name}: {rep:?}"
        );
        assert!(rep.encoding.contains("sheet \"Contatos\""), "{name}");
        let mut other = cfg.clone();
        other.sheet = Some("Outra".into());
        other.template = None;
        other.columns.text = Some(crate::config::ColumnRef::Name("nome".into()));
        let (rows, _) = run_with(fixture(name), &other);
        assert_eq!(
            rows,
            vec![row(2, "5531977776666", "Outra", "")],
            "{name}: {rep:?}"
        );
    }
}

#[test]
fn unusable_workbooks_are_rejected_with_what_to_do() {
    let cfg = Config::defaults().input;
    let mut truncated = billing_workbook();
    truncated.truncate(truncated.len() / 2);
    let mut zip_no_book = b"PK\x03\x04".to_vec();
    zip_no_book.extend([0u8; 64]);
    let mut ole_garbage = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
    ole_garbage.extend([0u8; 600]);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("encrypted", fixture("protegida.xlsx"), "password-protected"),
        ("truncated", truncated, "save it again"),
        ("zip", zip_no_book, "Excel workbook or ZIP archive"),
        ("ole", ole_garbage, "old Excel (.xls)"),
    ];
    for (what, bytes, says) in cases {
        let (rows, rep) = run_with(bytes, &cfg);
        assert!(rows.is_empty(), "{what}");
        let why = rep.input_rejected.unwrap_or_default();
        assert!(why.contains(says), "{what}: {why}");
    }
    let mut small = cfg.clone();
    small.max_workbook_bytes = 1000;
    let (_, rep) = run_with(billing_workbook(), &small);
    assert!(
        rep.input_rejected
            .unwrap()
            .contains("larger than [input] max_workbook_mb"),
        "size limit"
    );
    // A small file whose shared strings unpack to far more (a bomb, or just too much): refused
    // before calamine unpacks them.
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.write_string(0, 0, "celular").unwrap();
    s.write_string(0, 1, "texto").unwrap();
    for i in 1..200u32 {
        s.write_number(i, 0, 5511900000000.0 + f64::from(i))
            .unwrap();
        s.write_string(i, 1, format!("{i} {}", "a".repeat(1000)))
            .unwrap();
    }
    let bytes = book.save_to_buffer().unwrap();
    let mut tight = cfg.clone();
    tight.max_workbook_bytes = bytes.len() as u64 * 2;
    let (rows, rep) = run_with(bytes, &tight);
    assert!(rows.is_empty());
    let why = rep.input_rejected.unwrap();
    assert!(why.contains("xl/sharedStrings.xml unpacks to"), "{why}");
}

#[test]
fn huge_and_odd_sheets_stay_bounded() {
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.write_string(0, 0, "celular").unwrap();
    s.write_string(0, 1, "texto").unwrap();
    s.write_number(1, 0, 5511999999999.0).unwrap();
    s.write_string(1, 1, "ok").unwrap();
    // A value in the last column of the last row: no grid is allocated for the gap.
    s.write_string(1_048_575, 16_383, "longe").unwrap();
    // A row with a cell past 512 columns: rejected as too large, like a CSV row.
    s.write_number(2, 0, 5511988888888.0).unwrap();
    s.write_string(2, 1, "largo").unwrap();
    s.write_string(2, 600, "x").unwrap();
    let (rows, rep) = run_with(book.save_to_buffer().unwrap(), &Config::defaults().input);
    assert_eq!(rows, vec![row(2, "5511999999999", "ok", "")]);
    assert_eq!(rep.rows_rejected, 2, "{:?}", rep.rejected);
    assert!(rep.rejected.iter().all(|r| r.reason.contains("too large")));

    // A cell's own line breaks are sanitised, never taken for a row an unclosed quote swallowed.
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.write_number(0, 0, 11999999999.0).unwrap();
    s.write_string(0, 1, "Pedido:\n11988888888;1 item").unwrap();
    let (rows, rep) = run_with(book.save_to_buffer().unwrap(), &Config::defaults().input);
    assert_eq!(
        rows,
        vec![row(1, "5511999999999", "Pedido: 11988888888,1 item", "")]
    );
    assert_eq!(rep.rows_changed, 1);

    // A headerless sheet, booleans and a text that is all spaces.
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.write_number(0, 0, 11999999999.0).unwrap();
    s.write_boolean(0, 1, true).unwrap();
    s.write_number(1, 0, 11988888888.0).unwrap();
    s.write_string(1, 1, "   ").unwrap();
    let (rows, rep) = run_with(book.save_to_buffer().unwrap(), &Config::defaults().input);
    assert_eq!(rows, vec![row(1, "5511999999999", "TRUE", "")]);
    assert!(rep.rejected[0].reason.contains("text is empty"));
}

#[test]
fn a_time_of_day_is_written_as_one() {
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    s.write_string(0, 0, "celular").unwrap();
    s.write_string(0, 1, "hora").unwrap();
    s.write_number(1, 0, 11999999999.0).unwrap();
    let t = ExcelDateTime::from_hms(9, 30, 0).unwrap();
    s.write_datetime_with_format(1, 1, &t, &Format::new().set_num_format("hh:mm"))
        .unwrap();
    let mut cfg = Config::defaults().input;
    cfg.template = Some(template::Template::parse("Sua consulta é às {hora}.").unwrap());
    let (rows, _) = run_with(book.save_to_buffer().unwrap(), &cfg);
    assert_eq!(
        rows,
        vec![row(2, "5511999999999", "Sua consulta é às 09:30.", "")]
    );
}

/// Writes the workbook the README's memory figure was measured on (`ROWS` rows, every text a
/// distinct shared string: the worst case for calamine's in-memory string table):
/// `SMSDROP_BIG_XLSX=/tmp/big.xlsx ROWS=500000 cargo test --lib big_workbook -- --ignored`,
/// then `/usr/bin/time -v smsdrop convert --subaccount X --out /tmp/o /tmp/big.xlsx`.
#[test]
#[ignore = "a measuring aid, not a test"]
fn big_workbook_for_measuring() {
    let path = std::env::var("SMSDROP_BIG_XLSX").unwrap_or_else(|_| "/tmp/big.xlsx".into());
    let rows: u32 = std::env::var("ROWS").map_or(500_000, |r| r.parse().unwrap());
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    for (c, h) in ["celular", "nome", "valor", "mensagem", "id"]
        .iter()
        .enumerate()
    {
        s.write_string(0, c as u16, *h).unwrap();
    }
    for i in 1..=rows {
        s.write_number(i, 0, 5511900000000.0 + f64::from(i))
            .unwrap();
        s.write_string(i, 1, format!("Cliente {i}")).unwrap();
        s.write_number(i, 2, 100.5 + f64::from(i)).unwrap();
        s.write_string(
            i,
            3,
            format!("Sua fatura número {i} vence amanhã, pague pelo app"),
        )
        .unwrap();
        s.write_string(i, 4, format!("ID-{i}")).unwrap();
    }
    book.save(&path).unwrap();
}

/// An `.xlsb` is read cell by cell, like an `.xlsx` (never as a whole grid, which cells far apart
/// would make huge). The fixture is calamine's own `tests/date.xlsb` (MIT): three rows of a date,
/// a number and a time; with dates written as `%d/%m/%Y` they are numbers no phone has.
#[test]
fn xlsb_is_read_cell_by_cell() {
    let mut cfg = Config::defaults().input;
    cfg.header = crate::config::HeaderChoice::No;
    cfg.columns.number = Some(crate::config::ColumnRef::Index(0));
    cfg.columns.text = Some(crate::config::ColumnRef::Index(1));
    let (rows, rep) = run_with(fixture("calamine-date.xlsb"), &cfg);
    assert_eq!(rep.encoding, "xlsb workbook, sheet \"Sheet1\"");
    assert_eq!((rep.rows_read, rep.rows_rejected), (3, 2));
    assert_eq!(rows, vec![row(3, "106320601851852", "17", "")]);
    assert!(rep.rejected[0].reason.contains("\"01/01/2021\""), "{rep:?}");
}

/// A campaign workbook as people keep one: an old list on a hidden first sheet (hidden or, by a
/// macro, very hidden), the campaign on the first visible one, and a hidden sheet after it.
fn campaign_behind_hidden_sheet(very: bool) -> Vec<u8> {
    let mut book = Workbook::new();
    let old = book.add_worksheet().set_name("Plan1").unwrap();
    old.write_string(0, 0, "celular").unwrap();
    old.write_string(0, 1, "texto").unwrap();
    old.write_number(1, 0, 5511900000001.0).unwrap();
    old.write_string(1, 1, "lista antiga").unwrap();
    if very {
        old.set_very_hidden(true);
    } else {
        old.set_hidden(true);
    }
    let campaign = book.add_worksheet().set_name("Campanha").unwrap();
    campaign.write_string(0, 0, "celular").unwrap();
    campaign.write_string(0, 1, "texto").unwrap();
    campaign.write_number(1, 0, 5511999999999.0).unwrap();
    campaign.write_string(1, 1, "campanha").unwrap();
    campaign.set_active(true);
    let after = book.add_worksheet().set_name("Notas").unwrap();
    after.write_number(0, 0, 5511900000002.0).unwrap();
    after.set_hidden(true);
    book.save_to_buffer().unwrap()
}

/// Issue 19: a hidden first sheet's rows were sent and the visible campaign's were not.
#[test]
fn the_first_sheet_is_the_first_visible_one() {
    let cfg = Config::defaults().input;
    for very in [false, true] {
        let (rows, rep) = run_with(campaign_behind_hidden_sheet(very), &cfg);
        assert_eq!(
            rows,
            vec![row(2, "5511999999999", "campanha", "")],
            "{very}"
        );
        assert_eq!(
            rep.encoding,
            "xlsx workbook, sheet \"Campanha\" (skipped hidden sheets: \"Plan1\")"
        );
    }
    // Named by [input] sheet, a hidden sheet is read.
    let mut named = cfg.clone();
    named.sheet = Some("plan1".into());
    let (rows, rep) = run_with(campaign_behind_hidden_sheet(true), &named);
    assert_eq!(rows, vec![row(2, "5511900000001", "lista antiga", "")]);
    assert_eq!(rep.encoding, "xlsx workbook, sheet \"Plan1\"");
    // A missing name lists every sheet, hidden ones said so.
    named.sheet = Some("Plan9".into());
    let (_, rep) = run_with(campaign_behind_hidden_sheet(true), &named);
    let why = rep.input_rejected.unwrap();
    assert!(
        why.contains("\"Plan1\" (very hidden), \"Campanha\", \"Notas\" (hidden)"),
        "{why}"
    );
}

#[test]
fn a_workbook_with_no_visible_sheet_is_refused() {
    // rust_xlsxwriter keeps one sheet visible: hide it in the workbook's XML.
    let mut book = Workbook::new();
    let s = book.add_worksheet().set_name("Plan1").unwrap();
    s.write_number(0, 0, 5511999999999.0).unwrap();
    s.write_string(0, 1, "oculta").unwrap();
    let bytes = patch_zip(&book.save_to_buffer().unwrap(), "xl/workbook.xml", |x| {
        x.replace(
            "<sheet name=\"Plan1\"",
            "<sheet state=\"hidden\" name=\"Plan1\"",
        )
    });
    let (rows, rep) = run_with(bytes.clone(), &Config::defaults().input);
    assert!(rows.is_empty());
    let why = rep.input_rejected.unwrap();
    assert!(
        why.contains("no visible sheet (its sheets are \"Plan1\" (hidden))")
            && why.contains("unhide the sheet")
            && why.contains("[input] sheet"),
        "{why}"
    );
    let mut named = Config::defaults().input;
    named.sheet = Some("Plan1".into());
    let (rows, _) = run_with(bytes, &named);
    assert_eq!(rows, vec![row(1, "5511999999999", "oculta", "")]);
}

#[test]
fn ods_and_xls_skip_hidden_sheets_too() {
    let mut cfg = Config::defaults().input;
    cfg.columns.text = Some(crate::config::ColumnRef::Name("nome".into()));
    let ods = patch_zip(&fixture("contatos.ods"), "content.xml", |x| {
        x.replace(
            "<office:automatic-styles/>",
            "<office:automatic-styles><style:style style:name=\"ta1\" style:family=\"table\">\
             <style:table-properties table:display=\"false\"/></style:style>\
             </office:automatic-styles>",
        )
        .replace(
            "table:name=\"Contatos\"",
            "table:name=\"Contatos\" table:style-name=\"ta1\"",
        )
    });
    for (name, bytes) in [
        ("ods", ods),
        ("xls", hide_first_xls_sheet(fixture("contatos.xls"))),
    ] {
        let (rows, rep) = run_with(bytes, &cfg);
        assert_eq!(
            rows,
            vec![row(2, "5531977776666", "Outra", "")],
            "{name}: {rep:?}"
        );
        assert_eq!(
            rep.encoding,
            format!("{name} workbook, sheet \"Outra\" (skipped hidden sheets: \"Contatos\")")
        );
    }
}

/// Issue 19: ids stored as numbers of more than 15 digits all read alike
/// (`12345678901234567890` and `…891` both `12345678901234567168`), so outcomes could not be
/// told apart. A number or id of 15 digits or fewer reads as before; other columns keep theirs.
#[test]
fn numbers_past_15_digits_reject_their_row_where_digits_matter() {
    let mut book = Workbook::new();
    let s = book.add_worksheet();
    for (c, h) in ["celular", "texto", "id", "valor"].iter().enumerate() {
        s.write_string(0, c as u16, *h).unwrap();
    }
    let rows: [(f64, f64, f64); 5] = [
        (5511999999999.0, 12345678901234567890.0, 1.0),
        (5511999999999.0, 12345678901234567891.0, 1.0),
        (5511999999999.0, 999_999_999_999_999.0, 1e16),
        (55119999999999999.0, 1.0, 1.0),
        (5511999999999.0, -1e15, 1.0),
    ];
    for (r, (number, id, amount)) in (1u32..).zip(rows) {
        s.write_number(r, 0, number).unwrap();
        s.write_string(r, 1, "oi {valor}").unwrap();
        s.write_number(r, 2, id).unwrap();
        s.write_number(r, 3, amount).unwrap();
    }
    let mut cfg = Config::defaults().input;
    cfg.template = Some(template::Template::parse("oi {valor}").unwrap());
    let (sent, rep) = run_with(book.save_to_buffer().unwrap(), &cfg);
    assert_eq!(
        sent,
        vec![row(
            4,
            "5511999999999",
            "oi 10000000000000000",
            "999999999999999"
        )]
    );
    let said: Vec<_> = rep
        .rejected
        .iter()
        .map(|r| (r.line, r.correlation_id.as_str(), r.reason.as_str()))
        .collect();
    let id =
        "the correlation id in column 3 was stored as a number of more than 15 digits, digits \
              lost (a spreadsheet keeps 15): format the column as text in the spreadsheet and \
              type the digits again";
    let number = id.replace("correlation id in column 3", "number in column 1");
    assert_eq!(
        said,
        vec![
            (2, "12345678901234567168", id),
            (3, "12345678901234567168", id),
            (5, "1", number.as_str()),
            (6, "-1000000000000000", id),
        ]
    );
}

/// `bytes` (a ZIP) with the text of `part` passed through `edit`.
fn patch_zip(bytes: &[u8], part: &str, edit: impl Fn(String) -> String) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut from = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut to = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..from.len() {
        let mut file = from.by_index(i).unwrap();
        let name = file.name().unwrap().into_owned();
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        if name == part {
            data = edit(String::from_utf8(data).unwrap()).into_bytes();
        }
        to.start_file(name, stored).unwrap();
        to.write_all(&data).unwrap();
    }
    to.finish().unwrap().into_inner()
}

/// An `.xls` with its first sheet hidden: the first BoundSheet8 record's `hsState` set to 1.
fn hide_first_xls_sheet(bytes: Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut book = cfb::CompoundFile::open(std::io::Cursor::new(bytes)).unwrap();
    let mut data = Vec::new();
    let mut stream = book.open_stream("/Workbook").unwrap();
    stream.read_to_end(&mut data).unwrap();
    let mut at = 0;
    loop {
        let typ = u16::from_le_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_le_bytes([data[at + 2], data[at + 3]]));
        if typ == 0x0085 {
            data[at + 4 + 4] = 1; // after lbPlyPos (4 bytes)
            break;
        }
        at += 4 + len;
    }
    let mut stream = book.open_stream("/Workbook").unwrap();
    stream.write_all(&data).unwrap();
    stream.flush().unwrap();
    drop(stream);
    book.flush().unwrap();
    book.into_inner().into_inner()
}
