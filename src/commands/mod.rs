//! The CLI's subcommands, each a function from validated arguments to an [`crate::Outcome`].

pub mod check;
pub mod convert;
pub mod decide;
pub mod deliver;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod optout;
pub mod recover;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod status;

use crate::config::{Config, ConfigError, LogFormat};
use std::path::Path;

/// The config file used when none is named.
pub const DEFAULT_CONFIG: &str = "smsdrop.toml";

/// Loads `path`, or the defaults when no path was given and `smsdrop.toml` does not exist.
///
/// # Errors
/// [`ConfigError`] for an unreadable or invalid file.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(Config::defaults()),
    }
}

/// Starts logging to stderr in the configured format and level (`RUST_LOG` overrides the level).
pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("smsdrop={}", cfg.report.log_level))
    });
    // Colours only on a terminal: the systemd journal and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match cfg.report.log_format {
        // JSON strings escape every control character already.
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
    };
}

/// Text-log fields with every control character escaped: a file name holding a line break or a
/// terminal escape (`a\nERROR forged.csv`) cannot start a log line of its own or recolour one.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let raw = format!("{value:?}");
        let shown = escape_controls(&raw);
        if field.name() == "message" {
            w.write_str(&shown)
        } else {
            write!(w, "{}={shown}", field.name())
        }
    })
    .delimited(" ")
}

/// `s` with control characters (line breaks, escapes, C1 codes) written as `\n`, `\x1b`, ...
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
