//! How many billable SMS parts a text costs (SPEC.md, "Billing facts"): GSM-7 texts are billed per
//! 160 characters (153 a part when concatenated), any other text as UCS-2 per 70 (67).

use serde::Serialize;

/// ASCII characters of the GSM extension table (two septets each); `€` is the other one.
const GSM_EXTENSION_ASCII: &[u8] = b"^{}\\[~]|\x0c";

/// Septets of each ASCII character in GSM-7; 0 when it has none.
const GSM_ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = 1;
        c += 1;
    }
    t[b'`' as usize] = 0;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    let mut i = 0;
    while i < GSM_EXTENSION_ASCII.len() {
        t[GSM_EXTENSION_ASCII[i] as usize] = 2;
        i += 1;
    }
    t
};

/// Septets of `c` in GSM-7, or `None` when it forces UCS-2.
fn septets(c: char) -> Option<usize> {
    if c.is_ascii() {
        return match GSM_ASCII[c as usize] {
            0 => None,
            n => Some(n as usize),
        };
    }
    match c {
        '€' => Some(2),
        // The non-ASCII characters of the GSM 03.38 basic set (a match, not a scan of a string:
        // this runs for every accented character of every message).
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ' | 'Γ'
        | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä'
        | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        _ => None,
    }
}

/// The encoding a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

/// The cost of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub encoding: SmsEncoding,
    pub parts: u32,
}

/// Counts the billable parts of `text`.
pub fn cost(text: &str) -> Cost {
    let bytes = text.as_bytes();
    let gsm_septets = if bytes.is_ascii() {
        // The common case, byte by byte.
        bytes
            .iter()
            .try_fold(0usize, |n, &b| match GSM_ASCII[b as usize] {
                0 => None,
                s => Some(n + s as usize),
            })
    } else {
        text.chars()
            .try_fold(0usize, |n, c| septets(c).map(|s| n + s))
    };
    if let Some(count) = gsm_septets {
        return Cost {
            encoding: SmsEncoding::Gsm7,
            parts: parts(count, 160, 153),
        };
    }
    // UTF-16 units: one per character (every byte but continuation bytes), two for 4-byte ones.
    // Counted in runs of 127 bytes into a u8 (at most 2 a byte), which the compiler vectorises.
    let units = bytes
        .chunks(127)
        .map(|run| {
            run.iter().fold(0u8, |n, &b| {
                n + u8::from(b & 0xC0 != 0x80) + u8::from(b >= 0xF0)
            }) as usize
        })
        .sum();
    Cost {
        encoding: SmsEncoding::Ucs2,
        parts: parts(units, 70, 67),
    }
}

fn parts(len: usize, single: usize, each: usize) -> u32 {
    if len <= single {
        1
    } else {
        len.div_ceil(each) as u32
    }
}

/// Billing totals of a batch, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Billing {
    /// Messages sent as GSM-7.
    pub gsm7_messages: u64,
    /// Messages sent as UCS-2 (accents, emoji, ...).
    pub ucs2_messages: u64,
    /// Messages longer than one part.
    pub concatenated_messages: u64,
    /// Billable parts in all.
    pub parts: u64,
}

impl Billing {
    /// Adds one message.
    pub fn add(&mut self, cost: Cost) {
        match cost.encoding {
            SmsEncoding::Gsm7 => self.gsm7_messages += 1,
            SmsEncoding::Ucs2 => self.ucs2_messages += 1,
        }
        if cost.parts > 1 {
            self.concatenated_messages += 1;
        }
        self.parts += u64::from(cost.parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_table() {
        let gsm = SmsEncoding::Gsm7;
        let ucs = SmsEncoding::Ucs2;
        let cases: Vec<(String, SmsEncoding, u32)> = vec![
            ("Hello".into(), gsm, 1),
            ("a".repeat(160), gsm, 1),
            ("a".repeat(161), gsm, 2),
            ("a".repeat(306), gsm, 2),
            ("a".repeat(307), gsm, 3),
            ("€".repeat(80), gsm, 1),
            ("€".repeat(81), gsm, 2),
            ("Você é demais".into(), ucs, 1),
            ("é à Ç ü".into(), gsm, 1),
            ("ç".repeat(70), ucs, 1),
            ("ç".repeat(71), ucs, 2),
            ("😀".repeat(35), ucs, 1),
            ("😀".repeat(36), ucs, 2),
            ("`".into(), ucs, 1),
            // Longer than one counting run of 127 bytes.
            ("ç".repeat(134), ucs, 2),
            ("ç".repeat(135), ucs, 3),
            ("😀".repeat(67), ucs, 2),
            ("😀".repeat(68), ucs, 3),
            (format!("{}ç", "a".repeat(400)), ucs, 6),
        ];
        for (text, enc, parts) in cases {
            assert_eq!(
                cost(&text),
                Cost {
                    encoding: enc,
                    parts
                },
                "{text}"
            );
        }
    }

    #[test]
    fn totals_add_up() {
        let mut b = Billing::default();
        b.add(cost("hi"));
        b.add(cost(&"ã".repeat(100)));
        assert_eq!(
            b,
            Billing {
                gsm7_messages: 1,
                ucs2_messages: 1,
                concatenated_messages: 1,
                parts: 3
            }
        );
    }
}
