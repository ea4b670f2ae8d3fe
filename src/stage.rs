//! What every pipeline stage shares: the context it runs in ([`Ctx`]: config, journal, server,
//! clock) and the error that tells the engine what to do next ([`StageError`]).
//!
//! A stage never decides to stop the daemon itself: it returns a [`StageError`] and the engine
//! chooses (journal failures stop it, server and local problems are retried).

use crate::config::Config;
use crate::journal::{Journal, JournalError};
use crate::remote::{Remote, RemoteError};
use chrono::{DateTime, NaiveDate, Utc};

/// Why a stage could not go on.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The journal failed: stop the daemon (unless the disk is full, then retry).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The server could not be used: retry later.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A local file operation failed: retry later.
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StageError {
    /// A local file error with what was being done (and on which path).
    pub fn local(context: impl Into<String>, source: std::io::Error) -> StageError {
        StageError::Local {
            context: context.into(),
            source,
        }
    }
}

/// Where the time comes from: the system clock in production, a settable one in tests (expiry
/// and the sending day are then tested without sleeping and without failing at midnight).
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What a stage needs.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub journal: &'a mut Journal,
    pub remote: &'a mut dyn Remote,
    pub clock: &'a dyn Clock,
}

impl Ctx<'_> {
    /// The sending day: today in `[batch] timezone`, by this context's clock.
    pub fn today(&self) -> NaiveDate {
        self.cfg.batch.zone.day_of(self.clock.now())
    }
}
