//! A file name cannot forge a log line: an export named with a line break and a terminal escape
//! (`a\nERROR forged ... \x1b[31m.csv`) is logged escaped, in text and in JSON logs, by the real
//! daemon against the real sshd.

mod support;

use std::time::Duration;
use support::setup::{stop, Login, Setup};

const NAME: &str = "a\nERROR smsdrop: forged line\x1b[31m.csv";

fn run(format: &str) -> String {
    let s = Setup::with(Login::Key, &format!("[report]\nlog_format = {format:?}\n"));
    let daemon = s.daemon();
    s.drop_in(NAME, "numero;mensagem\n11999990001;Oi\n");
    s.wait_final(1, Duration::from_secs(60));
    assert!(stop(daemon).success());
    let log = s.log();
    assert!(
        log.contains("forged line"),
        "the name was never logged, so this proves nothing:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "a raw escape reached the log:\n{log}"
    );
    log
}

#[test]
fn a_file_name_cannot_start_a_text_log_line_or_colour_it() {
    let log = run("text");
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with("ERROR smsdrop: forged"),
            "a forged line:\n{log}"
        );
    }
    assert!(log.contains("\\nERROR smsdrop: forged"), "{log}");
}

#[test]
fn every_json_log_line_is_one_object() {
    let log = run("json");
    for line in log.lines().filter(|l| !l.is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"));
    }
}
