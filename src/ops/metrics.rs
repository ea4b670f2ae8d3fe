//! Prometheus metrics (`GET /metrics`), with the `metrics` facade and its Prometheus exporter.
//!
//! Two sources: what the engine observes as it works (upload durations, whether the SFTP session
//! works, when the last poll and round completed), recorded through the facade wherever it
//! happens; and totals read from the journal at each scrape (jobs by state, rows, batches,
//! bytes, the oldest pending job, messages by state), so they agree with the journal and survive
//! restarts. The recorder is process-wide and installed once.

use crate::journal::{Journal, JournalError};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Bucket bounds of `smsdrop_upload_seconds`: a small file over a LAN to a big one over a WAN.
const UPLOAD_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process); `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("smsdrop_upload_seconds".into()),
                    UPLOAD_BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(h) => {
                    describe();
                    gauge!("smsdrop_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder unavailable");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    describe_gauge!("smsdrop_build_info", "smsdrop's version (the value is 1)");
    describe_gauge!("smsdrop_jobs", "Jobs now in each state");
    describe_gauge!(
        "smsdrop_jobs_today",
        "Jobs created today (the batch timezone's day), by their state now"
    );
    describe_counter!(
        "smsdrop_rows_total",
        "Input rows sent, rejected, or not sent because their number opted out ([optout] apply)"
    );
    describe_counter!(
        "smsdrop_rows_duplicate_total",
        "Input rows not sent because they were already sent ([batch] duplicate_rows)"
    );
    describe_counter!("smsdrop_batches_uploaded_total", "Batch files uploaded");
    describe_counter!(
        "smsdrop_upload_bytes_total",
        Unit::Bytes,
        "Bytes of batch files uploaded"
    );
    describe_histogram!(
        "smsdrop_upload_seconds",
        Unit::Seconds,
        "Time to upload one batch file (write, check, rename)"
    );
    describe_gauge!(
        "smsdrop_sftp_connected",
        "0 after an SFTP failure until an operation succeeds again, else 1"
    );
    describe_gauge!(
        "smsdrop_last_successful_poll_timestamp_seconds",
        "When success/ and error/ were last listed without error"
    );
    describe_gauge!(
        "smsdrop_last_round_timestamp_seconds",
        "When the engine last completed a round"
    );
    describe_gauge!(
        "smsdrop_oldest_pending_seconds",
        "Age of the oldest job not yet final (0 when none)"
    );
    describe_gauge!(
        "smsdrop_messages",
        "Messages by state: delivered, failed, pending (tracking open), untracked"
    );
    describe_counter!(
        "smsdrop_replies_total",
        "Customers' replies (MOs) recorded, each once"
    );
    describe_gauge!(
        "smsdrop_optouts_total",
        "Numbers on the opt-out lists, by how they got there (reply, status, operator, import)"
    );
    describe_gauge!(
        "smsdrop_schedule_open",
        "Whether the subaccount's send window ([schedule]) is open now (1) or closed (0)"
    );
    // Counted where statuses are applied (the journal, through the facade: it cannot name ops).
    describe_counter!(
        "smsdrop_status_conflicts_total",
        "Message statuses that contradicted a final one and were not applied (the first is kept)"
    );
}

/// An upload took `secs`.
pub fn upload_took(secs: f64) {
    metrics::histogram!("smsdrop_upload_seconds").record(secs);
}

/// Whether the last SFTP operation succeeded.
pub fn sftp_connected(up: bool) {
    gauge!("smsdrop_sftp_connected").set(if up { 1.0 } else { 0.0 });
}

/// `success/` and `error/` were listed now.
pub fn polled(now_ms: i64) {
    gauge!("smsdrop_last_successful_poll_timestamp_seconds").set(now_ms as f64 / 1000.0);
}

/// The engine completed a round now.
pub fn round_done(now_ms: i64) {
    gauge!("smsdrop_last_round_timestamp_seconds").set(now_ms as f64 / 1000.0);
}

/// Reads the journal's totals into the metrics and renders them all.
///
/// # Errors
/// When the journal cannot be read.
pub fn render(
    handle: &PrometheusHandle,
    cfg: &crate::config::Config,
    journal: &Journal,
    today_ms: i64,
    now_ms: i64,
) -> Result<String, JournalError> {
    let s = journal.stats(today_ms)?;
    for (state, n) in &s.jobs {
        gauge!("smsdrop_jobs", "state" => *state).set(*n as f64);
    }
    for (state, n) in &s.jobs_today {
        gauge!("smsdrop_jobs_today", "state" => *state).set(*n as f64);
    }
    counter!("smsdrop_rows_total", "outcome" => "sent").absolute(s.rows_sent);
    counter!("smsdrop_rows_total", "outcome" => "rejected").absolute(s.rows_rejected);
    counter!("smsdrop_rows_total", "outcome" => "opted_out").absolute(s.rows_opted_out);
    counter!("smsdrop_rows_duplicate_total").absolute(s.rows_duplicate);
    counter!("smsdrop_batches_uploaded_total").absolute(s.batches_uploaded);
    counter!("smsdrop_upload_bytes_total").absolute(s.upload_bytes);
    let oldest = s
        .oldest_pending_ms
        .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
    gauge!("smsdrop_oldest_pending_seconds").set(oldest);
    for (state, n) in &s.messages {
        gauge!("smsdrop_messages", "state" => *state).set(*n as f64);
    }
    if cfg.replies.mode != crate::config::RepliesMode::Off || journal.optout_count()? > 0 {
        let (replies, optouts) = journal.reply_totals()?;
        counter!("smsdrop_replies_total").absolute(replies);
        for (source, n) in optouts {
            gauge!("smsdrop_optouts_total", "source" => source).set(n as f64);
        }
    }
    // Per subaccount the config names (and any with held jobs): is its send window open?
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let mut subs: std::collections::BTreeSet<String> = cfg.subaccounts.keys().cloned().collect();
    subs.extend(cfg.batch.subaccount.clone());
    subs.extend(
        journal
            .jobs_in(&[crate::journal::JobState::Held])?
            .into_iter()
            .map(|j| j.subaccount),
    );
    for sub in subs {
        let open = crate::hold::open_for(cfg, &sub, now);
        gauge!("smsdrop_schedule_open", "subaccount" => sub).set(if open { 1.0 } else { 0.0 });
    }
    Ok(handle.render())
}
