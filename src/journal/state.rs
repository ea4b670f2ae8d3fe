//! The state machine: where a job (one input) and a batch (one remote file) can be, and the one
//! table of moves between those states. The journal checks every state change against it; an
//! unknown stored state is an error, never a guess.

use serde::Serialize;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Detected,
    Converted,
    /// A job only: converted, its batches waiting for the send window (`[schedule]`).
    Held,
    Uploading,
    Uploaded,
    Succeeded,
    Failed,
    Expired,
    Rejected,
    /// A batch only: it may or may not be on the server (a crash after its rename began, and
    /// its name is nowhere now); an operator decides (`smsdrop resolve`).
    Unknown,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Detected => "detected",
            JobState::Converted => "converted",
            JobState::Held => "held",
            JobState::Uploading => "uploading",
            JobState::Uploaded => "uploaded",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Rejected => "rejected",
            JobState::Unknown => "unknown",
        }
    }

    /// The state a stored name stands for; an unknown name is an error, never a guess.
    ///
    /// # Errors
    /// [`UnknownState`] names what was found.
    pub fn parse(s: &str) -> std::result::Result<JobState, UnknownState> {
        Ok(match s {
            "detected" => JobState::Detected,
            "converted" => JobState::Converted,
            "held" => JobState::Held,
            "uploading" => JobState::Uploading,
            "uploaded" => JobState::Uploaded,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            "rejected" => JobState::Rejected,
            "unknown" => JobState::Unknown,
            other => return Err(UnknownState(other.to_owned())),
        })
    }

    /// The transition table of a job (DESIGN.md). Staying in a state is not a transition.
    pub fn job_may_become(self, to: JobState) -> bool {
        use JobState::*;
        match self {
            Detected => matches!(to, Converted | Rejected),
            // `failed` before any upload: every batch was set aside (e.g. its spool file lost).
            Converted => matches!(to, Held | Uploading | Failed),
            // Waiting for the send window: it opens (or an operator releases it), `max_hold`
            // passes, or every batch is set aside.
            Held => matches!(to, Uploading | Expired | Failed),
            // Back to `uploading`: an operator resends a batch (`resolve --resend`, `retry`).
            Uploading => matches!(to, Uploaded | Succeeded | Failed | Expired),
            Uploaded => matches!(to, Uploading | Succeeded | Failed | Expired),
            // A late outcome after expiry; an operator's `retry`.
            Expired => matches!(to, Succeeded | Failed | Uploading),
            Failed => matches!(to, Uploading),
            Succeeded | Rejected | Unknown => false,
        }
    }

    /// The transition table of a batch file. `failed` from `converted` or `uploading` is a batch
    /// set aside by a local problem (its reason says which).
    ///
    /// After `expired`, a late move to `success/` or `error/` still counts. `unknown` waits for an
    /// operator: `resolve --sent` makes it `succeeded`, `--resend` or `retry` make it
    /// (or a `failed`/`expired` one) `converted` again under a new name.
    pub fn batch_may_become(self, to: JobState) -> bool {
        use JobState::*;
        match self {
            // `expired`: held past `[schedule] max_hold`, never sent.
            Converted => matches!(to, Uploading | Failed | Expired),
            Uploading => matches!(to, Uploaded | Failed | Unknown),
            Uploaded => matches!(to, Succeeded | Failed | Expired),
            Expired => matches!(to, Succeeded | Failed | Converted),
            Failed => matches!(to, Converted),
            Unknown => matches!(to, Succeeded | Converted),
            Succeeded | Detected | Held | Rejected => false,
        }
    }

    /// True once nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Expired | JobState::Rejected
        )
    }
}

/// A state name in the journal that this smsdrop does not know (a newer release, or an edit).
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?} in the journal: was it written by a newer smsdrop? Upgrade, or restore the journal from a backup")]
pub struct UnknownState(pub String);

/// A state change the state machine does not allow: a bug, never silently applied.
#[derive(Debug, thiserror::Error)]
#[error("illegal state change of {what} {id}: {from} -> {to}")]
pub struct IllegalTransition {
    pub what: &'static str,
    pub id: i64,
    pub from: &'static str,
    pub to: &'static str,
}

impl rusqlite::types::FromSql for JobState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        JobState::parse(s).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

pub(super) fn illegal(
    what: &'static str,
    id: i64,
    from: JobState,
    to: JobState,
) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(IllegalTransition {
        what,
        id,
        from: from.as_str(),
        to: to.as_str(),
    }))
}
