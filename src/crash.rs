//! Test-only crash points: `SMSDROP_TEST_CRASH_AT=<point>[:<n>]` aborts the process the `n`-th
//! time (default the first) it reaches `<point>`, so tests can prove that a crash right after any
//! step of the state machine loses and duplicates nothing. Unset, a point costs one load.
//!
//! Points: `detected` (job recorded), `converted` (batches named), `archive` (input moved, not yet
//! recorded), `uploading` (batches marked), `temp-uploaded` (temp file complete, not renamed),
//! `renamed` (final name on the server, not yet recorded), `uploaded` (recorded), `outcome`
//! (gateway outcome recorded, job not yet settled), `reported` (report written, not recorded).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a crash point.
pub const VAR: &str = "SMSDROP_TEST_CRASH_AT";

fn armed() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let v = std::env::var(VAR).ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n))
    })
    .as_ref()
}

/// Aborts here if this point is armed and reached for the armed time.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("smsdrop: test crash point {name:?} reached: aborting");
            std::process::abort();
        }
    }
}
