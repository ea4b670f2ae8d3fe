//! How many billable SMS parts a text costs (SPEC.md, "Billing facts"): GSM-7 texts are billed per
//! 160 characters (153 a part when concatenated), any other text as UCS-2 per 70 (67).

use serde::Serialize;

/// Characters of the GSM 03.38 basic set that are not printable ASCII letters/digits handled below.
const GSM_BASIC_EXTRA: &str =
    "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r";
/// Characters of the GSM extension table; each takes two septets.
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{c}";

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
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || (c != '`' && GSM_BASIC_EXTRA.contains(c)) {
            septets += 1;
        } else if GSM_EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    if gsm {
        return Cost {
            encoding: SmsEncoding::Gsm7,
            parts: parts(septets, 160, 153),
        };
    }
    let units: usize = text.chars().map(char::len_utf16).sum();
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
