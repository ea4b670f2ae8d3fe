//! Configuration: the TOML schema, its defaults, and validation into typed values.
//!
//! The file is parsed "raw" with serde (unknown keys are errors), then validated into [`Config`]
//! before any work starts; stages never see TOML. Every error names the file, the key and what is
//! allowed, so an operator can fix it without reading the code.

mod delivery;
mod http;
mod names;
mod raw;
mod replies;
mod schedule;
mod status;
mod template;
mod validate;

pub use delivery::{
    parse_duration, Auth, InboxConfig, LateWrites, LogFormat, ReportConfig, SftpConfig,
    StateConfig, TrackConfig,
};
pub use http::HttpConfig;
pub use names::{check_subaccount, fold_name};
pub use replies::{fold, OptoutConfig, OutboxEncoding, RepliesConfig, RepliesMode};
pub use schedule::ScheduleConfig;
pub use status::{IdMode, StatusConfig, StatusMode, TokenSource, DEFAULT_API_URL};
pub(crate) use template::Part as TemplatePart;
pub use template::Template;
pub use validate::{
    BatchConfig, ColumnRef, Columns, Config, Delimiter, DuplicateRows, EncodingChoice, ExtraFields,
    HeaderChoice, InputConfig, InvalidRows, Sanitize, SubaccountConfig, Zone, DELIMITERS,
};

use std::path::{Path, PathBuf};

/// A configuration problem: the file, the key and what is wrong, ready to print.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key has a value that is not allowed.
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Loads and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is unreadable, malformed, or holds a bad value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// # Errors
    /// [`ConfigError`] when the text is malformed or holds a bad value.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate::validate(raw, path)
    }

    /// The configuration used when no file exists: every key at its default.
    pub fn defaults() -> Config {
        validate::validate(raw::RawConfig::default(), Path::new("(defaults)"))
            .expect("the built-in defaults are valid")
    }
}
