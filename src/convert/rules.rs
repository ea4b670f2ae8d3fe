//! The field rules of the gateway's batch format (SPEC.md): number normalisation, text and
//! correlation-id sanitising and limits. One place for them: `convert` applies them to ERP rows and
//! the sandbox's gateway simulator checks uploaded files with them.

use crate::config::Sanitize;
use std::fmt;

/// Most characters in a message text.
pub const MAX_TEXT_CHARS: usize = 1280;
/// Most characters in a correlation id.
pub const MAX_ID_CHARS: usize = 64;
/// Fewest digits in a number with its country code.
pub const MIN_NUMBER_DIGITS: usize = 10;
/// Most digits in a number with its country code (E.164).
pub const MAX_NUMBER_DIGITS: usize = 15;

/// How national numbers become international.
#[derive(Debug, Clone, Copy)]
pub struct NumberRules<'a> {
    /// Prefixed to national numbers; empty turns prefixing off.
    pub country_code: &'a str,
    /// Digit counts that mark a number as national.
    pub national_lengths: &'a [usize],
}

/// Why a field cannot be sent. The message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    NumberEmpty,
    NumberScientific(String),
    NumberBadChar(String, char),
    NumberLength(String, usize),
    TextEmpty,
    TooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
    Unsafe {
        field: &'static str,
        what: &'static str,
    },
    Control {
        field: &'static str,
        ch: char,
    },
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::NumberEmpty => write!(f, "number is empty"),
            FieldProblem::NumberScientific(raw) => write!(
                f,
                "number {raw:?} is in scientific notation (a spreadsheet rounded it); \
                 format the column as text in the export"
            ),
            FieldProblem::NumberBadChar(raw, c) => write!(
                f,
                "number {raw:?} contains {c:?}; only digits, spaces and + ( ) - . are allowed"
            ),
            FieldProblem::NumberLength(raw, n) => write!(
                f,
                "number {raw:?} has {n} digits; a number needs {MIN_NUMBER_DIGITS} to \
                 {MAX_NUMBER_DIGITS} digits with its country code"
            ),
            FieldProblem::TextEmpty => write!(f, "text is empty"),
            FieldProblem::TooLong { field, chars, max } => write!(
                f,
                "{field} has {chars} characters; the gateway allows at most {max}"
            ),
            FieldProblem::Unsafe { field, what } => write!(
                f,
                "{field} contains {what}, which the batch format cannot carry \
                 (sanitize = \"reject\"; use \"replace\" to send it changed)"
            ),
            FieldProblem::Control { field, ch } => write!(
                f,
                "{field} contains the control character U+{:04X}; remove it in the export",
                *ch as u32
            ),
        }
    }
}

/// Normalises a phone number to digits with country code.
///
/// Spaces, `+`, `(`, `)`, `-` and `.` are removed. A number written with `+` or `00` is already
/// international; otherwise a national number (one of `national_lengths`, optionally after a
/// trunk `0`) gets the country code in front.
///
/// # Errors
/// A [`FieldProblem`] saying what is wrong with the number.
pub fn normalize_number(raw: &str, rules: NumberRules<'_>) -> Result<String, FieldProblem> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(FieldProblem::NumberEmpty);
    }
    let mut digits = String::with_capacity(16);
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            c if is_number_separator(c) => {}
            _ if looks_scientific(raw) => {
                return Err(FieldProblem::NumberScientific(clip(raw)));
            }
            _ => return Err(FieldProblem::NumberBadChar(clip(raw), c)),
        }
    }
    let international = raw.starts_with('+') || digits.starts_with("00");
    let mut number = if digits.starts_with("00") {
        digits.split_off(2)
    } else {
        digits
    };
    if !international && !rules.country_code.is_empty() {
        if number.starts_with('0') && rules.national_lengths.contains(&(number.len() - 1)) {
            number.remove(0);
        }
        if rules.national_lengths.contains(&number.len()) {
            number.insert_str(0, rules.country_code);
        }
    }
    if !(MIN_NUMBER_DIGITS..=MAX_NUMBER_DIGITS).contains(&number.len()) {
        return Err(FieldProblem::NumberLength(clip(raw), number.len()));
    }
    Ok(number)
}

/// What [`normalize_number`] removes between a number's digits.
fn is_number_separator(c: char) -> bool {
    matches!(c, ' ' | '+' | '(' | ')' | '-' | '.' | '\t' | '\u{a0}')
}

/// Where free text (a reason, a note) holds a phone number as [`normalize_number`] reads one,
/// for masking: a run of digits and the separators it removes (a leading `+` included), up to
/// its last digit, that normalises under `rules` or holds at least [`MIN_NUMBER_DIGITS`] digits
/// (a number too long to send is still someone's number).
pub fn find_numbers(text: &str, rules: NumberRules<'_>) -> Vec<std::ops::Range<usize>> {
    let mut found = vec![];
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !(c.is_ascii_digit() || c == '+') {
            continue;
        }
        let mut digits = usize::from(c.is_ascii_digit());
        let mut end = start + usize::from(c.is_ascii_digit());
        while let Some(&(i, d)) = chars.peek() {
            if d.is_ascii_digit() {
                digits += 1;
                end = i + 1;
            } else if !is_number_separator(d) {
                break;
            }
            chars.next();
        }
        if digits > 0
            && (digits >= MIN_NUMBER_DIGITS || normalize_number(&text[start..end], rules).is_ok())
        {
            found.push(start..end);
        }
    }
    found
}

/// `5.51199E+12`, `5,51199e12`: what a spreadsheet makes of a long number.
fn looks_scientific(raw: &str) -> bool {
    let upper = raw.to_ascii_uppercase();
    let Some((mantissa, exp)) = upper.split_once('E') else {
        return false;
    };
    let exp = exp.strip_prefix('+').unwrap_or(exp);
    !mantissa.is_empty()
        && mantissa
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        && !exp.is_empty()
        && exp.chars().all(|c| c.is_ascii_digit())
}

/// At most 40 characters of a raw value, for messages.
pub(super) fn clip(raw: &str) -> String {
    if raw.chars().count() <= 40 {
        raw.to_owned()
    } else {
        let mut s: String = raw.chars().take(40).collect();
        s.push('…');
        s
    }
}

/// Makes a text or correlation id safe for the batch format, appending it to `out`.
///
/// Leading and trailing white space is dropped. With [`Sanitize::Replace`], `;` becomes `,` and each
/// line break (CR, LF, CRLF, NEL, U+2028, U+2029) or tab becomes one space; the return value says
/// whether anything was replaced. With [`Sanitize::Reject`] such a field is an error. Other control
/// characters are always an error.
///
/// # Errors
/// A [`FieldProblem`] naming `field`.
pub fn sanitize_into(
    field: &'static str,
    raw: &str,
    mode: Sanitize,
    out: &mut String,
) -> Result<bool, FieldProblem> {
    // Most fields start and end with a visible ASCII character: nothing to trim.
    let raw = match (raw.as_bytes().first(), raw.as_bytes().last()) {
        (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => raw,
        _ => raw.trim_matches(|c: char| c == ' ' || c.is_whitespace()),
    };
    if !needs_care(raw.as_bytes()) {
        out.push_str(raw);
        return Ok(false);
    }
    let mut changed = false;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        let replacement = match c {
            ';' => ',',
            '\r' | '\n' | '\t' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                ' '
            }
            c if c.is_control() => return Err(FieldProblem::Control { field, ch: c }),
            c => {
                out.push(c);
                continue;
            }
        };
        if mode == Sanitize::Reject {
            let what = if c == ';' {
                "';'"
            } else {
                "a line break or tab"
            };
            return Err(FieldProblem::Unsafe { field, what });
        }
        changed = true;
        out.push(replacement);
    }
    Ok(changed)
}

/// Bytes that start something the slow path must look at: C0 controls, `;`, DEL, and the lead
/// bytes of C1 controls (C2) and U+2028/U+2029 (E2).
const CARE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b';' as usize] = true;
    t[0x7f] = true;
    t[0xC2] = true;
    t[0xE2] = true;
    t
};

/// True when `b` may hold `;`, a control character or a Unicode line break: the slow path.
fn needs_care(b: &[u8]) -> bool {
    for (i, &c) in b.iter().enumerate() {
        if !CARE[c as usize] {
            continue;
        }
        let care = match c {
            // C1 controls and NEL: U+0080..U+009F are C2 80..C2 9F.
            0xC2 => b.get(i + 1).is_some_and(|&n| n < 0xA0),
            // U+2028, U+2029: E2 80 A8, E2 80 A9.
            0xE2 => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)),
            _ => true,
        };
        if care {
            return true;
        }
    }
    false
}

/// Checks a sanitised field's length in characters.
///
/// # Errors
/// [`FieldProblem::TooLong`] over `max`.
pub fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), FieldProblem> {
    // Most texts are short: a byte count at or under `max` cannot hold more characters.
    if value.len() <= max {
        return Ok(());
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(FieldProblem::TooLong { field, chars, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: NumberRules<'static> = NumberRules {
        country_code: "55",
        national_lengths: &[10, 11],
    };

    #[test]
    fn numbers_normalise() {
        let ok = [
            ("+55 (19) 99771-2322", "5519997712322"),
            ("(19) 99771-2322", "5519997712322"),
            ("19 3232.1234", "551932321234"),
            ("5519997712322", "5519997712322"),
            ("019997712322", "5519997712322"),
            ("0055 19 99771 2322", "5519997712322"),
            ("+1 415 555 2671", "14155552671"),
            (" 11\u{a0}98888-7777 ", "5511988887777"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_number(raw, BR).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn bad_numbers_say_why() {
        let bad = [
            ("", "empty"),
            ("   ", "empty"),
            ("5.51199E+12", "scientific notation"),
            ("5,51199e12", "scientific notation"),
            ("11 9888A-7777", "contains 'A'"),
            ("ligar depois", "contains 'l'"),
            ("99771-2322", "has 9 digits"),
            ("1234567890123456", "has 16 digits"),
            ("+55 19", "has 4 digits"),
        ];
        for (raw, want) in bad {
            let msg = normalize_number(raw, BR).unwrap_err().to_string();
            assert!(msg.contains(want), "{raw}: {msg}");
        }
    }

    #[test]
    fn no_country_code_means_no_prefix() {
        let rules = NumberRules {
            country_code: "",
            national_lengths: &[10, 11],
        };
        assert_eq!(
            normalize_number("19997712322", rules).as_deref(),
            Ok("19997712322")
        );
        assert!(normalize_number("997712322", rules).is_err());
    }

    #[test]
    fn numbers_are_found_in_free_text_as_the_parser_reads_them() {
        fn found(text: &str) -> Vec<&str> {
            find_numbers(text, BR)
                .into_iter()
                .map(|r| &text[r])
                .collect()
        }
        let cases: [(&str, &[&str]); 6] = [
            (
                "number \"+55 (11) 98765.0006 x\" contains 'x'",
                &["+55 (11) 98765.0006"],
            ),
            ("a 19 3232.1234. b", &["19 3232.1234"]),
            ("0055 19 99771\u{a0}2322", &["0055 19 99771\u{a0}2322"]),
            ("has 16 digits: 1234567890123456", &["1234567890123456"]),
            ("line 12: 3 rows; 99771-2322 is short", &[]),
            ("+ 55 -", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(found(text), want, "{text}");
        }
        let short = NumberRules {
            country_code: "351",
            national_lengths: &[9],
        };
        let text = "ligar 912 345 678";
        assert_eq!(
            find_numbers(text, short),
            vec![text.find('9').unwrap()..text.len()]
        );
    }

    fn sanitize(raw: &str, mode: Sanitize) -> Result<(String, bool), FieldProblem> {
        let mut out = String::new();
        sanitize_into("text", raw, mode, &mut out).map(|c| (out, c))
    }

    #[test]
    fn replace_mode_table() {
        let cases = [
            ("Olá, tudo bem?", "Olá, tudo bem?", false),
            ("  padded  ", "padded", false),
            ("R$ 150;00", "R$ 150,00", true),
            ("a\r\nb", "a b", true),
            ("a\nb\rc", "a b c", true),
            ("a\tb", "a b", true),
            ("a\u{2028}b", "a b", true),
            ("a;b\r\n\r\nc", "a,b  c", true),
            ("a\u{85}b", "a b", true),
            ("a\u{2029}b", "a b", true),
            ("°C º ª £ ✓", "°C º ª £ ✓", false),
        ];
        for (raw, want, changed) in cases {
            assert_eq!(
                sanitize(raw, Sanitize::Replace),
                Ok((want.into(), changed)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn reject_mode_and_controls() {
        assert!(sanitize("a;b", Sanitize::Reject)
            .unwrap_err()
            .to_string()
            .contains("';'"));
        assert!(sanitize("a\nb", Sanitize::Reject)
            .unwrap_err()
            .to_string()
            .contains("line break"));
        assert_eq!(
            sanitize("plain", Sanitize::Reject),
            Ok(("plain".into(), false))
        );
        for mode in [Sanitize::Replace, Sanitize::Reject] {
            for (raw, code) in [
                ("a\0b", "U+0000"),
                ("a\u{7f}", "U+007F"),
                ("a\u{9b}b", "U+009B"),
            ] {
                let msg = sanitize(raw, mode).unwrap_err().to_string();
                assert!(msg.contains(code), "{msg}");
            }
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let accented = "á".repeat(MAX_TEXT_CHARS);
        assert!(check_length("text", &accented, MAX_TEXT_CHARS).is_ok());
        let over = "a".repeat(MAX_TEXT_CHARS + 1);
        let msg = check_length("text", &over, MAX_TEXT_CHARS)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1281 characters"), "{msg}");
    }
}
