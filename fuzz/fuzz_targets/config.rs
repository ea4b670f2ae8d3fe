//! Any config text: `Config::parse` returns a config or an error, never panics, and a config it
//! accepts holds only values validation allows and converts a small export without panicking.
//! Each line also goes through `parse_duration`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsdrop::batch::check_line;
use smsdrop::config::check_subaccount;
use smsdrop::config::{parse_duration, Config};
use smsdrop::convert::{convert, SendAt};
use std::io::Cursor;
use std::path::Path;

/// A few rows in the shapes the column settings can pick from.
const EXPORT: &[u8] = b"Telefone;Mensagem;ID;Celular\n\
    (11) 98765-4321;Ola, fatura;NF-1;11987654321\n\
    +1 415 555 2671;hi;;0055 19 99771 2322\n\
    1234;x;y;z\n";

fn accepted(cfg: &Config) {
    let i = &cfg.input;
    assert!(
        i.default_country_code.len() <= 3
            && i.default_country_code.bytes().all(|b| b.is_ascii_digit()),
        "country code {:?}",
        i.default_country_code
    );
    assert!(
        i.national_lengths.iter().all(|n| (4..=14).contains(n)),
        "national lengths {:?}",
        i.national_lengths
    );
    assert!((1..=1_000_000).contains(&cfg.batch.max_rows_per_file));
    if let Some(s) = &cfg.batch.subaccount {
        assert!(check_subaccount(s).is_ok(), "subaccount {s:?}");
    }
    assert!(!cfg.track.give_up_after.is_zero());
    let mut rows: Vec<(u64, String, String, String)> = vec![];
    convert(
        Cursor::new(EXPORT),
        i,
        SendAt::now(cfg.batch.zone),
        &mut rows,
    )
    .expect("in-memory conversion");
    for (line, number, text, id) in rows {
        let batch_line = format!("{number};{text};{id};");
        assert!(
            check_line(&batch_line).is_ok(),
            "line {line}: {batch_line:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text, Path::new("fuzz.toml")) {
        accepted(&cfg);
    }
    for line in text.lines() {
        // Never a panic, whatever the text (humantime reads fractions and sub-second units).
        let _ = parse_duration(line);
        if let Some((_, value)) = line.split_once('=') {
            let _ = parse_duration(value.trim().trim_matches('"'));
        }
    }
});
