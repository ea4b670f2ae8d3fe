//! Message templates: `Olá {nome}, sua fatura de {valor} vence em {vencimento}.` builds each
//! row's text from its columns, for exports that carry the facts but not a finished message.
//!
//! A placeholder names a column the way the header is matched (case- and accent-insensitively)
//! or by its 1-based position (`{4}`); `{{` and `}}` are literal braces. Parsing happens once, at
//! config validation; resolving against an input's header once per input; rendering per row,
//! never allocating more than the text it writes. It must never guess a column: a name the
//! header lacks rejects the input, an empty value rejects the row.

use super::dialect::fold_name;
pub use crate::config::Template;
use crate::config::{ColumnRef, TemplatePart as Part};

/// A template resolved against one input's columns (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    parts: Vec<ResolvedPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ResolvedPart {
    Literal(String),
    /// Column index and the placeholder as written, for messages.
    Column(usize, String),
}

impl Template {
    /// Finds every placeholder's column in `header` (or by position in a row of `width` fields).
    ///
    /// # Errors
    /// A reason the whole input is rejected, naming the missing columns and the ones it has.
    pub fn resolve(&self, header: Option<&[String]>, width: usize) -> Result<Resolved, String> {
        let mut parts = Vec::with_capacity(self.parts.len());
        let mut missing = vec![];
        for part in &self.parts {
            match part {
                Part::Literal(s) => parts.push(ResolvedPart::Literal(s.clone())),
                Part::Column(col) => {
                    let (found, shown) = match col {
                        ColumnRef::Index(i) => (
                            (*i < width.max(header.map_or(0, <[String]>::len))).then_some(*i),
                            format!("{{{}}}", i + 1),
                        ),
                        ColumnRef::Name(name) => {
                            let want = fold_name(name);
                            let at =
                                header.and_then(|h| h.iter().position(|n| fold_name(n) == want));
                            (at, format!("{{{name}}}"))
                        }
                    };
                    match found {
                        Some(i) => {
                            // A position is named by its header too, for the row's message.
                            let named = match (col, header.and_then(|h| h.get(i))) {
                                (ColumnRef::Index(_), Some(name)) if !name.is_empty() => {
                                    format!("{shown} ({name:?})")
                                }
                                _ => shown,
                            };
                            parts.push(ResolvedPart::Column(i, named))
                        }
                        None if !missing.contains(&shown) => missing.push(shown),
                        None => {}
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(Resolved { parts });
        }
        let has = match header {
            Some(h) => format!("its columns are {}", h.join(", ")),
            None => format!(
                "it has no header row, so columns can only be named by position ({{1}} to {{{width}}})"
            ),
        };
        Err(format!(
            "the template ([input] template) names {} that this input lacks; {has}. Fix the \
             template or the export",
            missing.join(", ")
        ))
    }
}

impl Resolved {
    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.parts.iter().filter_map(|p| match p {
            ResolvedPart::Column(i, _) => Some(*i),
            ResolvedPart::Literal(_) => None,
        })
    }

    /// Appends the text for one row to `out`, reading column `i` with `value(i, scratch)`.
    ///
    /// # Errors
    /// A reason the row is rejected: a placeholder's value is empty, or `value` failed.
    pub fn render<'v>(
        &self,
        mut value: impl FnMut(usize, &'v mut String) -> Result<&'v str, String>,
        scratch: &'v mut [String],
        out: &mut String,
    ) -> Result<(), String> {
        let mut scratch = scratch.iter_mut();
        for part in &self.parts {
            match part {
                ResolvedPart::Literal(s) => out.push_str(s),
                ResolvedPart::Column(i, shown) => {
                    let Some(buf) = scratch.next() else {
                        return Err("the template has more placeholders than buffers".into());
                    };
                    let v = value(*i, buf)?.trim();
                    if v.is_empty() {
                        return Err(format!(
                            "the template's {shown} is empty in this row (column {}); fill it in \
                             the export",
                            i + 1
                        ));
                    }
                    out.push_str(v);
                }
            }
        }
        Ok(())
    }

    /// Placeholders in the template (each needs a scratch buffer to render).
    pub fn placeholders(&self) -> usize {
        self.columns().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn render(t: &str, header_names: &[&str], row: &[&str]) -> Result<String, String> {
        let h = header(header_names);
        let r = Template::parse(t)?.resolve(Some(&h), h.len())?;
        let mut scratch = vec![String::new(); r.placeholders()];
        let mut out = String::new();
        r.render(
            |i, _| Ok(row.get(i).copied().unwrap_or_default()),
            &mut scratch,
            &mut out,
        )?;
        Ok(out)
    }

    #[test]
    fn rendering_table() {
        let h = ["Nome", "Valor", "Vencimento", "Celular"];
        let row = ["Ana", "R$ 10,00", "05/01/2027", "11999999999"];
        let cases: [(&str, &str); 7] = [
            (
                "Olá {nome}, sua fatura de {valor} vence em {vencimento}.",
                "Olá Ana, sua fatura de R$ 10,00 vence em 05/01/2027.",
            ),
            ("{NOME} {Vencímento}", "Ana 05/01/2027"),
            ("{1}: {4}", "Ana: 11999999999"),
            ("{{literal}} {nome}", "{literal} Ana"),
            ("a }} b {{", "a } b {"),
            ("{ nome }!", "Ana!"),
            ("Sem variáveis", "Sem variáveis"),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &h, &row).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn parse_errors_name_the_place() {
        let cases: [(&str, &str); 8] = [
            ("Olá {nome", "character 5 is not closed"),
            ("Olá nome}", "character 9 closes no placeholder"),
            ("{a{b}}", "not closed"),
            ("{}", "names no column"),
            ("{  }", "names no column"),
            ("{0}", "a position is 1 to 10000"),
            ("{-}", "needs a letter"),
            ("", "empty"),
        ];
        for (t, says) in cases {
            let err = Template::parse(t).unwrap_err();
            assert!(err.contains(says), "{t}: {err}");
        }
        let many = "{a}".repeat(65);
        assert!(Template::parse(&many).unwrap_err().contains("more than 64"));
    }

    #[test]
    fn missing_columns_reject_the_input_and_empty_values_the_row() {
        let err = render("{nome} {valor} {5} {nome}", &["Nome", "Celular"], &[]).unwrap_err();
        assert!(
            err.contains("names {valor}, {5} that this input lacks")
                && err.contains("its columns are Nome, Celular"),
            "{err}"
        );
        let t = Template::parse("{nome}").unwrap();
        let err = t.resolve(None, 3).unwrap_err();
        assert!(
            err.contains("no header row") && err.contains("{1} to {3}"),
            "{err}"
        );
        let err = render("Olá {nome}", &["Nome", "Celular"], &["  ", "1"]).unwrap_err();
        assert!(
            err.contains("{nome} is empty in this row (column 1)"),
            "{err}"
        );
        let err = render("Olá {1}", &["Nome", "Celular"], &["", "1"]).unwrap_err();
        assert!(err.contains("{1} (\"Nome\") is empty"), "{err}");
    }
}
