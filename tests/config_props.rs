//! Property test: no config that passes validation can panic later. Every numeric and duration
//! key is drawn from a wide range (0, negative, the range ends and one past them, `u32::MAX`,
//! `i64::MAX`, ...); a config loads exactly when every value is inside the range the README
//! documents, and every config that loads runs one conversion and one scheduling round's
//! arithmetic without panicking.

use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
use smsdrop::batch::BatchWriter;
use smsdrop::config::Config;
use smsdrop::convert::{convert, SendAt};
use std::time::{Duration, Instant};

/// One whole-number key and the range the README documents for it.
struct Key {
    section: &'static str,
    name: &'static str,
    lo: i64,
    hi: i64,
}

#[rustfmt::skip]
const KEYS: &[Key] = &[
    Key { section: "inbox", name: "rescan_secs", lo: 1, hi: 86_400 },
    Key { section: "inbox", name: "stable_secs", lo: 0, hi: 3600 },
    Key { section: "inbox", name: "duplicate_days", lo: 0, hi: 3650 },
    Key { section: "inbox", name: "late_write_secs", lo: 0, hi: 86_400 },
    Key { section: "sftp", name: "port", lo: 1, hi: 65_535 },
    Key { section: "sftp", name: "timeout_secs", lo: 1, hi: 3600 },
    Key { section: "sftp", name: "keepalive_secs", lo: 0, hi: 3600 },
    Key { section: "sftp", name: "connections", lo: 1, hi: 16 },
    Key { section: "track", name: "poll_secs", lo: 1, hi: 3600 },
    Key { section: "batch", name: "max_rows_per_file", lo: 1, hi: 1_000_000 },
    Key { section: "input", name: "max_workbook_mb", lo: 1, hi: 1024 },
];

/// `[track] give_up_after`: 1s to 30d.
const GIVE_UP_MAX_SECS: u128 = 30 * 86_400;
/// `[input] national_lengths` elements and `[input] columns` positions.
const NATIONAL: (i64, i64) = (4, 14);
const COLUMN: (i64, i64) = (1, 10_000);

/// Mostly values inside `lo..=hi` (so that many whole configs load), sometimes just outside,
/// sometimes anything a TOML integer can hold.
fn value(lo: i64, hi: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        14 => prop_oneof![Just(lo), Just(hi), lo..=hi],
        1 => prop_oneof![
            Just(lo - 1),
            Just(hi + 1),
            Just(0),
            Just(-1),
            Just(i64::from(u32::MAX)),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>(),
        ],
    ]
}

/// A key's value, or `None` to leave it at its default.
fn maybe_value(lo: i64, hi: i64) -> impl Strategy<Value = Option<i64>> {
    prop_oneof![1 => Just(None), 5 => value(lo, hi).prop_map(Some)]
}

/// `give_up_after` as written: digits (up to more than `u64` holds) and a unit.
fn give_up_after() -> impl Strategy<Value = Option<(String, &'static str)>> {
    let unit = || prop::sample::select(vec!["", "s", "m", "h", "d"]);
    let inside = unit().prop_flat_map(|u| {
        let most = (GIVE_UP_MAX_SECS / unit_secs(u)) as u64;
        prop_oneof![Just(1), Just(most), 1..=most].prop_map(move |n| (n.to_string(), u))
    });
    let digits = prop_oneof![
        Just("0".to_owned()),
        Just((GIVE_UP_MAX_SECS + 1).to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("99999999999999999999".to_owned()),
    ];
    prop_oneof![
        2 => Just(None),
        12 => inside.prop_map(Some),
        1 => (digits, unit()).prop_map(Some),
    ]
}

fn unit_secs(unit: &str) -> u128 {
    match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 86_400,
    }
}

#[derive(Debug, Clone)]
struct Case {
    ints: Vec<Option<i64>>,
    give_up: Option<(String, &'static str)>,
    national_lengths: Option<Vec<i64>>,
    columns: Option<(i64, i64)>,
    patterns: Option<Vec<&'static str>>,
}

fn case() -> impl Strategy<Value = Case> {
    let ints: Vec<_> = KEYS.iter().map(|k| maybe_value(k.lo, k.hi)).collect();
    let patterns = prop::collection::vec(
        prop::sample::select(vec!["*.csv", "*.txt", "*", "", "["]),
        0..3,
    );
    (
        ints,
        give_up_after(),
        prop::option::of(prop::collection::vec(value(NATIONAL.0, NATIONAL.1), 0..3)),
        prop::option::of((value(COLUMN.0, COLUMN.1), value(COLUMN.0, COLUMN.1))),
        prop::option::weighted(0.15, patterns),
    )
        .prop_map(
            |(ints, give_up, national_lengths, columns, patterns)| Case {
                ints,
                give_up,
                national_lengths,
                columns,
                patterns,
            },
        )
}

impl Case {
    fn toml(&self) -> String {
        let mut sections: Vec<(&str, Vec<String>)> = vec![
            ("input", vec![]),
            ("batch", vec![]),
            ("inbox", vec![]),
            (
                "sftp",
                vec![
                    "host = \"gw.example\"".into(),
                    "username = \"acme\"".into(),
                    "password_env = \"SMSDROP_TEST_PASSWORD\"".into(),
                ],
            ),
            ("track", vec![]),
        ];
        let mut put = |section: &str, line: String| {
            let s = sections.iter_mut().find(|(name, _)| *name == section);
            s.expect("known section").1.push(line);
        };
        for (key, v) in KEYS.iter().zip(&self.ints) {
            if let Some(v) = v {
                put(key.section, format!("{} = {v}", key.name));
            }
        }
        if let Some((digits, unit)) = &self.give_up {
            put("track", format!("give_up_after = \"{digits}{unit}\""));
        }
        if let Some(l) = &self.national_lengths {
            put("input", format!("national_lengths = {l:?}"));
        }
        if let Some((number, text)) = self.columns {
            put("input", "header = false".into());
            put(
                "input",
                format!("columns = {{ number = {number}, text = {text} }}"),
            );
        }
        if let Some(p) = &self.patterns {
            put("inbox", format!("patterns = {p:?}"));
        }
        let mut text = String::new();
        for (name, lines) in sections {
            text += &format!("[{name}]\n");
            for l in lines {
                text += &l;
                text.push('\n');
            }
        }
        text
    }

    /// The keys holding a value outside the documented range.
    fn bad_keys(&self) -> Vec<String> {
        let mut bad = vec![];
        for (key, v) in KEYS.iter().zip(&self.ints) {
            if v.is_some_and(|v| !(key.lo..=key.hi).contains(&v)) {
                bad.push(format!("{}.{}", key.section, key.name));
            }
        }
        if let Some((digits, unit)) = &self.give_up {
            let secs = digits
                .parse::<u128>()
                .ok()
                .and_then(|n| n.checked_mul(unit_secs(unit)));
            if !secs.is_some_and(|s| (1..=GIVE_UP_MAX_SECS).contains(&s)) {
                bad.push("track.give_up_after".into());
            }
        }
        let inside = |(lo, hi): (i64, i64), v: i64| (lo..=hi).contains(&v);
        if let Some(l) = &self.national_lengths {
            if !l.iter().all(|&n| inside(NATIONAL, n)) {
                bad.push("input.national_lengths".into());
            }
        }
        if let Some((number, text)) = self.columns {
            if !inside(COLUMN, number) {
                bad.push("input.columns.number".into());
            }
            if !inside(COLUMN, text) {
                bad.push("input.columns.text".into());
            }
        }
        if let Some(p) = &self.patterns {
            if p.is_empty() || p.iter().any(|p| p.is_empty() || *p == "[") {
                bad.push("inbox.patterns".into());
            }
        }
        bad
    }
}

const SAMPLE: &[u8] = b"telefone;mensagem;id\n\
    11987654321;Ol\xc3\xa1, sua fatura vence amanh\xc3\xa3;1\n\
    (11) 98765-4322;Lembrete;2\n\
    +5511987654323;Pedido enviado;3\n\
    123;curto demais;4\n\
    11987654324;;5\n";

/// One conversion of the sample with the config's `[input]` and `[batch]`.
fn convert_sample(cfg: &Config) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = BatchWriter::new(
        dir.path(),
        cfg.batch.max_rows_per_file,
        cfg.batch.header_line,
    );
    let report = convert(
        std::io::Cursor::new(SAMPLE),
        &cfg.input,
        SendAt::now(cfg.batch.zone),
        &mut writer,
    )
    .unwrap();
    let pending = writer.finish().unwrap();
    prop_assert_eq!(report.rows_read, report.rows_sent + report.rows_rejected);
    let rows: u64 = pending.iter().map(|b| b.rows).sum();
    prop_assert_eq!(rows, report.rows_sent);
    let _ = cfg.batch.zone.day_of(chrono::Utc::now());
    // And a workbook, under the config's size limit.
    let book: &[u8] = include_bytes!("../samples/contatos.xlsx");
    let mut rows: Vec<(u64, String, String, String)> = vec![];
    let report = convert(
        std::io::Cursor::new(book),
        &cfg.input,
        SendAt::now(cfg.batch.zone),
        &mut rows,
    )
    .unwrap();
    prop_assert_eq!(report.rows_read, report.rows_sent + report.rows_rejected);
    Ok(())
}

/// What one scheduling round computes from the config, each checked instead of panicking.
fn schedule(cfg: &Config) -> Result<(), TestCaseError> {
    let now = Utc::now();
    let give_up = cfg.track.give_up();
    prop_assert_eq!(give_up.to_std().ok(), Some(cfg.track.give_up_after));
    prop_assert!(now.checked_sub_signed(give_up).is_some());
    let days = i64::try_from(cfg.inbox.duplicate_days).unwrap();
    let since = TimeDelta::try_days(days).and_then(|d| now.checked_sub_signed(d));
    prop_assert_eq!(since, Some(cfg.inbox.duplicate_since(now)));
    let grace = TimeDelta::from_std(cfg.inbox.late_write_grace).unwrap();
    prop_assert_eq!(
        now.checked_add_signed(grace),
        Some(cfg.inbox.late_watch_until(now))
    );
    let sftp = cfg.sftp.as_ref().expect("the generated config has [sftp]");
    let t0 = Instant::now();
    for (what, d) in [
        ("rescan", cfg.inbox.rescan),
        ("stable", cfg.inbox.stable.max(Duration::from_secs(1))),
        ("late_write_grace", cfg.inbox.late_write_grace),
        ("poll", cfg.track.poll),
        ("timeout", sftp.timeout),
        ("keepalive", sftp.keepalive),
    ] {
        prop_assert!(t0.checked_add(d).is_some(), "Instant + {} overflows", what);
    }
    // libssh2 takes the timeout in milliseconds and the keepalive in seconds, as u32.
    prop_assert!(u32::try_from(sftp.timeout.as_millis()).is_ok());
    prop_assert!(u32::try_from(sftp.keepalive.as_secs()).is_ok());
    Ok(())
}

/// Loads one generated config; `Ok(true)` when it was accepted (and then converted and
/// scheduled), `Ok(false)` when it was rejected with the right key and a clear message.
fn check(case: &Case) -> Result<bool, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smsdrop.toml");
    let text = case.toml();
    std::fs::write(&path, &text).unwrap();
    let bad = case.bad_keys();
    match Config::load(&path) {
        Ok(cfg) => {
            prop_assert!(bad.is_empty(), "accepted out-of-range {:?}:\n{}", bad, text);
            convert_sample(&cfg)?;
            schedule(&cfg)?;
            Ok(true)
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                !bad.is_empty(),
                "rejected a config within range: {}\n{}",
                msg,
                text
            );
            let prefix = format!("config file {}: key `", path.display());
            prop_assert!(msg.starts_with(&prefix), "{}", msg);
            let key = msg[prefix.len()..].split('`').next().unwrap_or("");
            prop_assert!(bad.iter().any(|b| b == key), "{} not among {:?}", msg, bad);
            let clear = [
                "is out of range; use ",
                "nothing would ever be taken",
                "matches no file name",
                "\"[\": ",
            ];
            prop_assert!(clear.iter().any(|c| msg.contains(c)), "{}", msg);
            Ok(false)
        }
    }
}

#[test]
fn any_accepted_config_converts_and_schedules_without_panicking() {
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    use std::cell::Cell;
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 400,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let (accepted, rejected) = (Cell::new(0u32), Cell::new(0u32));
    let result = runner.run(&case(), |case| {
        let counter = if check(&case)? { &accepted } else { &rejected };
        counter.set(counter.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Both paths must really be exercised, not one by chance.
    let (a, r) = (accepted.get(), rejected.get());
    assert!(a >= 80 && r >= 80, "{a} accepted, {r} rejected");
}
