//! Any text through the field rules: number normalisation, sanitising in both modes, length checks
//! and billing. None may panic, and what they let through must be safe for the batch format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsdrop::config::Sanitize;
use smsdrop::convert::billing::{cost, SmsEncoding};
use smsdrop::convert::rules::{
    check_length, normalize_number, sanitize_into, FieldProblem, NumberRules, MAX_ID_CHARS,
    MAX_NUMBER_DIGITS, MAX_TEXT_CHARS, MIN_NUMBER_DIGITS,
};

const BR: NumberRules<'static> = NumberRules {
    country_code: "55",
    national_lengths: &[10, 11],
};
const NO_PREFIX: NumberRules<'static> = NumberRules {
    country_code: "",
    national_lengths: &[10, 11],
};
const WIDE: NumberRules<'static> = NumberRules {
    country_code: "999",
    national_lengths: &[4, 5, 12, 13, 14],
};

fn numbers(raw: &str) {
    for rules in [BR, NO_PREFIX, WIDE] {
        if let Ok(n) = normalize_number(raw, rules) {
            assert!(
                (MIN_NUMBER_DIGITS..=MAX_NUMBER_DIGITS).contains(&n.len())
                    && n.bytes().all(|b| b.is_ascii_digit()),
                "{raw:?} normalised to {n:?}"
            );
        }
    }
}

/// Characters no sanitised field may hold: they break the line or the field.
fn unsafe_char(c: char) -> bool {
    c == ';' || c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn sanitize(raw: &str) {
    let mut replaced = String::from("keep:");
    let r = sanitize_into("text", raw, Sanitize::Replace, &mut replaced);
    let mut strict = String::from("keep:");
    let s = sanitize_into("text", raw, Sanitize::Reject, &mut strict);
    for (out, result) in [(&replaced, &r), (&strict, &s)] {
        // It appends: what was in `out` stays.
        assert!(out.starts_with("keep:"), "{raw:?}: prefix lost: {out:?}");
        if result.is_ok() {
            let added = &out["keep:".len()..];
            assert!(
                !added.chars().any(unsafe_char),
                "{raw:?} sanitised to {added:?}"
            );
            assert_eq!(added.trim(), added, "{raw:?}: not trimmed");
        }
    }
    match (&r, &s) {
        // Nothing to replace: both modes agree on the output.
        (Ok(false), _) | (_, Ok(_)) => {
            assert_eq!(s, Ok(false), "{raw:?}: reject {s:?} vs replace {r:?}");
            assert_eq!(r, Ok(false), "{raw:?}: replace {r:?} vs reject {s:?}");
            assert_eq!(replaced, strict, "{raw:?}");
        }
        // Replaced (so no control character): reject mode refuses it.
        (Ok(true), Err(FieldProblem::Unsafe { .. })) => {}
        // A control character is refused in both modes.
        (Err(FieldProblem::Control { .. }), Err(_)) => {}
        _ => panic!("{raw:?}: replace {r:?}, reject {s:?}"),
    }
}

fn lengths(raw: &str, max_byte: u8) {
    let chars = raw.chars().count();
    for max in [
        MAX_TEXT_CHARS,
        MAX_ID_CHARS,
        usize::from(max_byte),
        0,
        raw.len(),
    ] {
        assert_eq!(
            check_length("text", raw, max).is_ok(),
            chars <= max,
            "{raw:?} ({chars} chars), max {max}"
        );
    }
}

/// The spec's billing rule, written the slow and obvious way to compare against.
fn reference_parts(text: &str) -> (SmsEncoding, u32) {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    let septets: Option<usize> = text.chars().try_fold(0, |n, c| {
        if BASIC.contains(c) {
            Some(n + 1)
        } else if EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let parts = |len: usize, single: usize, each: usize| {
        if len <= single {
            1
        } else {
            len.div_ceil(each) as u32
        }
    };
    match septets {
        Some(n) => (SmsEncoding::Gsm7, parts(n, 160, 153)),
        None => (
            SmsEncoding::Ucs2,
            parts(text.encode_utf16().count(), 70, 67),
        ),
    }
}

fn billing(text: &str) {
    let c = cost(text);
    assert_eq!(
        (c.encoding, c.parts),
        reference_parts(text),
        "cost of {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    numbers(&text);
    sanitize(&text);
    lengths(&text, data.first().copied().unwrap_or(0));
    billing(&text);
    // A UTF-8 prefix as it is, without replacement characters.
    if let Err(e) = std::str::from_utf8(data) {
        let prefix = std::str::from_utf8(&data[..e.valid_up_to()]).expect("valid prefix");
        numbers(prefix);
        sanitize(prefix);
        billing(prefix);
    }
});
