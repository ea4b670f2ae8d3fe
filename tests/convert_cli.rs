//! `smsdrop convert` driven as a user would: the built binary on the samples and on bad input.

mod util;

use std::process::Command;
use util::{root, show, Dir};

const DATE: &str = "2026-11-25";

fn convert(dir: &Dir, extra: &[&str], inputs: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        "--subaccount",
        "ACME",
        "--date",
        DATE,
        "--out",
        "out",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(inputs);
    dir.run(&args)
}

#[test]
fn samples_convert_byte_for_byte() {
    let template = root().join("config/faturas-template.toml");
    let template = template.to_str().unwrap();
    let cases = [
        ("protheus-cobranca.csv", 0, None),
        ("excel-utf8-bom.csv", 0, None),
        ("lembretes-tab.txt", 0, None),
        ("com-erros.csv", 3, None),
        // Unquoted commas in the texts, rebuilt.
        ("campanha-virgulas.csv", 0, None),
        // Phones stored as numbers in a workbook: exact digits.
        ("contatos.xlsx", 0, None),
        // Data only: the text comes from the template; the row without an amount is rejected.
        ("faturas-dados.csv", 3, Some(template)),
    ];
    for (sample, code, config) in cases {
        let dir = Dir::new();
        let input = root().join("samples").join(sample);
        let extra = match config {
            Some(c) => vec!["--config", c],
            None => vec![],
        };
        let out = convert(&dir, &extra, &[input.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(code), "{sample}: {}", show(&out));
        assert_eq!(dir.list("out"), vec!["ACME.20261125.01.txt"], "{sample}");
        let got = std::fs::read(dir.path().join("out/ACME.20261125.01.txt")).unwrap();
        let stem = sample.rsplit_once('.').unwrap().0;
        let want = std::fs::read(root().join(format!("tests/expected/{stem}.txt"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{sample}"
        );
        assert_eq!(got, want, "{sample}");
    }
}

#[test]
fn numbering_spans_inputs_and_never_overwrites() {
    let dir = Dir::new();
    dir.write("out/ACME.20261125.02.txt", "someone else's");
    let a = dir.write("a.csv", "11999999999;um\n");
    let b = dir.write("b.csv", "11999999999;dois\n");
    let out = convert(&dir, &[], &[a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        dir.list("out"),
        vec![
            "ACME.20261125.01.txt",
            "ACME.20261125.02.txt",
            "ACME.20261125.03.txt"
        ]
    );
    let kept = std::fs::read_to_string(dir.path().join("out/ACME.20261125.02.txt")).unwrap();
    assert_eq!(kept, "someone else's");
    let third = std::fs::read_to_string(dir.path().join("out/ACME.20261125.03.txt")).unwrap();
    assert!(third.contains(";dois;"), "{third}");
}

#[test]
fn config_splits_files_and_drops_the_header_line() {
    let dir = Dir::new();
    dir.write(
        "smsdrop.toml",
        "[batch]\nmax_rows_per_file = 2\nheader_line = false\nsubaccount = \"CFG\"\n",
    );
    let rows: String = (0..5)
        .map(|i| format!("1199999000{i};msg {i};id{i}\n"))
        .collect();
    dir.write("in.csv", rows);
    let out = dir.run(&["convert", "--date", DATE, "in.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        dir.list("out"),
        vec![
            "CFG.20261125.01.txt",
            "CFG.20261125.02.txt",
            "CFG.20261125.03.txt"
        ]
    );
    let first = std::fs::read_to_string(dir.path().join("out/CFG.20261125.01.txt")).unwrap();
    assert_eq!(
        first,
        "5511999990000;msg 0;id0;\n5511999990001;msg 1;id1;\nEOF\n"
    );
    let last = std::fs::read_to_string(dir.path().join("out/CFG.20261125.03.txt")).unwrap();
    assert_eq!(last, "5511999990004;msg 4;id4;\nEOF\n");
}

#[test]
fn rejected_inputs_leave_nothing_behind_and_exit_3() {
    let dir = Dir::new();
    dir.write("smsdrop.toml", "[input]\ninvalid_rows = \"reject-file\"\n");
    let bad = dir.write("bad.csv", "11999999999;ok\nabc;no\n");
    let empty = dir.write("empty.csv", "");
    let out = convert(
        &dir,
        &["--json"],
        &[
            bad.to_str().unwrap(),
            empty.to_str().unwrap(),
            "missing.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        dir.list("out"),
        Vec::<String>::new(),
        "no batch and no temp file"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    let reasons: Vec<&str> = doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["input_rejected"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains("line 2") && reasons[0].contains("reject-file"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("no data rows"), "{reasons:?}");
    assert!(reasons[2].contains("cannot open"), "{reasons:?}");
    assert!(bad.exists() && empty.exists(), "inputs are never deleted");
}

#[test]
fn json_summary_counts_rows_and_billing() {
    let dir = Dir::new();
    let input = root().join("samples/com-erros.csv");
    let out = convert(&dir, &["--json"], &[input.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let i = &doc["inputs"][0];
    assert_eq!(
        (
            i["rows_read"].as_u64(),
            i["rows_sent"].as_u64(),
            i["rows_rejected"].as_u64()
        ),
        (Some(11), Some(4), Some(7))
    );
    assert_eq!(i["rejected"][0]["line"], 3);
    assert_eq!(i["billing"]["parts"], 4);
    assert_eq!(i["outputs"][0]["rows"], 4);
    // Line 12's text held an unquoted `;`: rebuilt, and said so.
    assert_eq!(i["changed"][0]["line"], 12);
    assert_eq!(
        i["changed"][0]["note"],
        "text contained 1 unquoted ';'; rebuilt"
    );
}

#[test]
fn usage_and_config_errors_exit_2_with_a_clear_message() {
    let dir = Dir::new();
    dir.write("in.csv", "11999999999;oi\n");
    let cases: [(&[&str], &str); 4] = [
        (&["convert", "in.csv"], "no subaccount"),
        (
            &["convert", "--subaccount", "../x", "in.csv"],
            "not a valid subaccount",
        ),
        (
            &[
                "--config",
                "nope.toml",
                "convert",
                "--subaccount",
                "A",
                "in.csv",
            ],
            "nope.toml",
        ),
        (
            &["convert", "--subaccount", "A", "--bogus", "in.csv"],
            "--bogus",
        ),
    ];
    for (args, want) in cases {
        let out = dir.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: {}",
            show(&out)
        );
    }
    dir.write("bad.toml", "[input]\ndelimiter = \"#\"\n");
    let out = dir.run(&[
        "--config",
        "bad.toml",
        "convert",
        "--subaccount",
        "A",
        "in.csv",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("input.delimiter") && err.contains("\"auto\""),
        "{err}"
    );
}

#[test]
fn dates_outside_2000_to_9999_get_exact_messages_and_write_nothing() {
    let dir = Dir::new();
    dir.write("in.csv", "11999999999;oi\n");
    let cases = [
        (
            "0000-01-01",
            "year 0000 is out of range; use a year from 2000 to 9999",
        ),
        (
            "1999-12-31",
            "year 1999 is out of range; use a year from 2000 to 9999",
        ),
        (
            "10000-01-01",
            "year 10000 is out of range; use a year from 2000 to 9999",
        ),
        ("2026-02-30", "2026-02-30 is not a day of the calendar"),
        ("2026-1-05", "not a date; use YYYY-MM-DD, e.g. 2026-11-25"),
        ("+2026-01-05", "not a date; use YYYY-MM-DD, e.g. 2026-11-25"),
        ("20261125", "not a date; use YYYY-MM-DD, e.g. 2026-11-25"),
    ];
    for (date, why) in cases {
        let out = dir.run(&[
            "convert",
            "--subaccount",
            "A",
            "--date",
            date,
            "--out",
            "out",
            "in.csv",
        ]);
        assert_eq!(out.status.code(), Some(2), "{date}: {}", show(&out));
        let want = format!("invalid value '{date}' for '--date <DATE>': {why}\n");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&want),
            "{date}: want {want:?}\n{}",
            show(&out)
        );
        assert!(dir.list("out").is_empty(), "{date}");
    }
    for (date, name) in [
        ("2000-01-01", "A.20000101.01.txt"),
        ("9999-12-31", "A.99991231.01.txt"),
    ] {
        let out = dir.run(&[
            "convert",
            "--subaccount",
            "A",
            "--date",
            date,
            "--out",
            date,
            "in.csv",
        ]);
        assert_eq!(out.status.code(), Some(0), "{date}: {}", show(&out));
        assert_eq!(dir.list(date), vec![name]);
    }
}

#[test]
fn the_example_config_is_valid() {
    let dir = Dir::new();
    dir.write("in.csv", "11999999999;oi\n");
    let example = root().join("config/smsdrop.example.toml");
    let out = dir.run(&[
        "--config",
        example.to_str().unwrap(),
        "convert",
        "--subaccount",
        "A",
        "in.csv",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn a_name_that_is_not_utf8_is_reported_not_a_crash() {
    use std::os::unix::ffi::OsStrExt;
    let dir = Dir::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.csv");
    std::fs::write(dir.path().join(name), "11999999999;oi\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsdrop"))
        .args(["convert", "--json", "--subaccount", "A", "--out", "out"])
        .arg(name)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["inputs"][0]["input"], "caf\u{fffd}.csv");
}

#[test]
fn convert_shows_repairs_and_the_first_rendered_message() {
    let dir = Dir::new();
    let template = root().join("config/faturas-template.toml");
    let out = convert(
        &dir,
        &["--config", template.to_str().unwrap()],
        &[
            root().join("samples/faturas-dados.csv").to_str().unwrap(),
            root()
                .join("samples/campanha-virgulas.csv")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "  first message: Olá Maria Souza, sua fatura de R$ 89,90 vence em 10/12/2026. Código FAT-2001.",
        "  line 4: rejected: the template's {valor} is empty in this row (column 2)",
        // The template applies to every input: the campaign export lacks its columns.
        "REJECTED: the template ([input] template) names {nome}, {valor}, {vencimento}, {codigo} \
         that this input lacks; its columns are celular, texto, correlationId",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let out = convert(
        &dir,
        &[],
        &[root()
            .join("samples/campanha-virgulas.csv")
            .to_str()
            .unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  line 3: changed: text (text contained 2 unquoted ','; rebuilt)"),
        "{text}"
    );
}

/// Issue 19: the first sheet is the first visible one; a hidden sheet before it is named in the
/// summary, never sent.
#[test]
fn a_hidden_first_sheet_is_skipped_and_named() {
    use rust_xlsxwriter::Workbook;
    let mut book = Workbook::new();
    for (name, phone, text) in [
        ("Plan1", 5511900000001.0, "lista antiga"),
        ("Campanha", 5511999999999.0, "campanha"),
    ] {
        let s = book.add_worksheet().set_name(name).unwrap();
        s.write_string(0, 0, "celular").unwrap();
        s.write_string(0, 1, "texto").unwrap();
        s.write_number(1, 0, phone).unwrap();
        s.write_string(1, 1, text).unwrap();
        if name == "Plan1" {
            s.set_hidden(true);
        } else {
            s.set_active(true);
        }
    }
    let dir = Dir::new();
    let input = dir.write("campanha.xlsx", book.save_to_buffer().unwrap());
    let out = convert(&dir, &[], &[input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let want = "read as xlsx workbook, sheet \"Campanha\" (skipped hidden sheets: \"Plan1\")";
    assert!(text.contains(want), "{text}");
    let batch = std::fs::read_to_string(dir.path().join("out/ACME.20261125.01.txt")).unwrap();
    assert!(
        batch.contains("5511999999999") && !batch.contains("5511900000001"),
        "{batch}"
    );
}
