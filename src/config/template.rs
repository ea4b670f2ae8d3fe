//! Message templates as the config writes them (`[input] template`): parsed once at validation
//! into literal text and column references. Resolving against an input's header and rendering
//! per row live in `convert::template`; this module never sees an input.

use super::names::fold_name;
use super::ColumnRef;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub(crate) parts: Vec<Part>,
}

/// A piece of a template: text as written, or a column's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(String),
    Column(ColumnRef),
}

/// Placeholders a template may hold; a longer one is a mistake, not a message.
const MAX_PLACEHOLDERS: usize = 64;

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    /// A message naming the character where the template is malformed (an unclosed `{`, a
    /// `}` without `{`, an empty or nested placeholder, position 0).
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = vec![];
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        let mut placeholders = 0;
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "a '}}' at character {} closes no placeholder; write '}}}}' for a brace",
                        char_pos(source, at)
                    ))
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, '{')) | None => {
                                return Err(format!(
                                    "the '{{' at character {} is not closed by '}}'; write '{{{{' \
                                     for a brace",
                                    char_pos(source, at)
                                ))
                            }
                            Some((_, c)) => name.push(c),
                        }
                    }
                    let column = column_ref(name.trim()).map_err(|why| {
                        format!("placeholder at character {}: {why}", char_pos(source, at))
                    })?;
                    placeholders += 1;
                    if placeholders > MAX_PLACEHOLDERS {
                        return Err(format!(
                            "more than {MAX_PLACEHOLDERS} placeholders; a message needs far fewer"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Column(column));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("the template is empty".into());
        }
        Ok(Template { parts })
    }
}

/// `nome` → by name, `4` → the 4th column.
fn column_ref(name: &str) -> Result<ColumnRef, String> {
    if name.is_empty() {
        return Err("'{}' names no column; put a column name or position inside".into());
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return match name.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(ColumnRef::Index(n - 1)),
            _ => Err(format!(
                "{{{name}}}: a position is 1 to 10000 (columns count from 1)"
            )),
        };
    }
    if fold_name(name).is_empty() {
        return Err(format!(
            "{{{name}}} names no column: a name needs a letter or a digit"
        ));
    }
    Ok(ColumnRef::Name(name.to_owned()))
}

/// The 1-based character position of byte offset `at`, for messages.
fn char_pos(s: &str, at: usize) -> usize {
    s[..at].chars().count() + 1
}
