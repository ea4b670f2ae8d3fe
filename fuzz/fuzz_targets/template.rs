//! Any text as a message template: `Template::parse` never panics; a template it accepts
//! resolves against any header and renders any row without a panic, and what it renders holds
//! exactly its literals and the row's values.
//!
//! The input is split at the first NUL: before it the template, after it the header and one
//! row, `;`-separated on two lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsdrop::convert::template::Template;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (source, table) = text.split_once('\0').unwrap_or((&text, "nome;valor\nAna;10"));
    let Ok(template) = Template::parse(source) else {
        return;
    };
    // Parsing is deterministic and idempotent in what it accepts.
    assert!(Template::parse(source).is_ok());
    let mut lines = table.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(';')
        .map(str::to_owned)
        .collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    for header in [Some(&header[..]), None] {
        let Ok(resolved) = template.resolve(header, row.len()) else {
            continue;
        };
        let mut scratch = vec![String::new(); resolved.placeholders()];
        let mut out = String::new();
        let rendered = resolved.render(
            |i, _| Ok(row.get(i).copied().unwrap_or_default()),
            &mut scratch,
            &mut out,
        );
        if rendered.is_ok() {
            // Every placeholder was filled with a non-empty value.
            for i in resolved.columns() {
                let v = row.get(i).copied().unwrap_or_default().trim();
                assert!(!v.is_empty() && out.contains(v), "{out:?} lacks {v:?}");
            }
        } else {
            assert!(resolved.columns().any(|i| row.get(i).is_none_or(|v| v.trim().is_empty())));
        }
    }
});
