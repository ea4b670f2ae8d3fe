//! The CLI's subcommands, each a function from validated arguments to an [`crate::Outcome`].

pub mod convert;

use crate::config::{Config, ConfigError};
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
