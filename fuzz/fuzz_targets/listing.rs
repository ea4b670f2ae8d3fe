//! Any remote listing: each line a file name for `BatchName::parse`, and the same bytes as a
//! whole batch file for `check_batch`. Neither may panic; a parsed name must be a plain file name
//! that formats back to itself, and a batch judged valid must really be one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsdrop::batch::{check_batch, check_line, BatchCheck, BatchName};
use smsdrop::config::check_subaccount;
use smsdrop::batch::{HEADER_LINE, TRAILER};

fn name(raw: &str) {
    let Some(n) = BatchName::parse(raw) else {
        return;
    };
    // A listed name is joined to a remote folder: it must never leave it.
    assert!(
        !raw.contains(['/', '\\', '\0']) && !raw.starts_with('.'),
        "{raw:?} parsed as {n:?}"
    );
    assert!(check_subaccount(&n.subaccount).is_ok(), "{raw:?}: {n:?}");
    let formatted = n.to_string();
    assert_eq!(
        BatchName::parse(&formatted).as_ref(),
        Some(&n),
        "{raw:?} parsed as {n:?}, formatted as {formatted:?}"
    );
    assert!(
        !formatted.contains(['/', '\\', '\0']),
        "{raw:?} formatted as {formatted:?}"
    );
}

fn batch(bytes: &[u8]) {
    match check_batch(bytes) {
        BatchCheck::Incomplete => {
            let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            assert!(
                body != TRAILER.as_bytes() && !body.ends_with(b"\nEOF"),
                "a batch ending in EOF judged incomplete"
            );
        }
        BatchCheck::Invalid(why) => assert!(!why.is_empty()),
        BatchCheck::Valid { messages } => {
            let text = std::str::from_utf8(bytes).expect("a valid batch is UTF-8");
            let text = text.strip_suffix('\n').unwrap_or(text);
            let mut lines: Vec<&str> = text.split('\n').collect();
            assert_eq!(lines.pop(), Some(TRAILER));
            if lines.first() == Some(&HEADER_LINE) {
                lines.remove(0);
            }
            assert!(
                messages > 0 && messages == lines.len(),
                "{messages} messages"
            );
            for line in lines {
                assert!(check_line(line).is_ok(), "valid batch with line {line:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    name(&text);
    for line in text.split('\n') {
        name(line);
        if let Some(l) = line.strip_suffix('\r') {
            name(l);
        }
    }
    batch(data);
});
