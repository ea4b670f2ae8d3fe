//! Names an operator writes, checked or matched by one rule wherever they appear: subaccount
//! names (config keys, inbox folders, batch file names) and column names (headers, templates).

/// Longest subaccount name accepted.
const MAX_SUBACCOUNT_LEN: usize = 64;

/// Checks a subaccount name: letters, digits, `_` and `-` only (so never a path).
///
/// # Errors
/// A message saying what is allowed.
pub fn check_subaccount(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SUBACCOUNT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid subaccount: use 1 to {MAX_SUBACCOUNT_LEN} letters, digits, '_' \
             or '-' (the gateway bills a wrongly named file to the default subaccount)"
        ))
    }
}

/// Lower case, accents dropped, only letters and digits: `Número do Celular` → `numerodocelular`.
pub fn fold_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let base = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            c => c,
        };
        if base.is_alphanumeric() {
            out.push(base);
        }
    }
    out
}
