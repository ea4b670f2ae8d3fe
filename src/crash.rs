//! Crash points for the crash tests: with the cargo feature `crash-points` (the tests enable it;
//! a release build never has it), `SMSDROP_TEST_CRASH_AT=<point>[:<n>]` aborts the process the
//! `n`-th time (default the first) it reaches `<point>`, so tests can prove that a crash right
//! after any step of the state machine loses and duplicates nothing. Without the feature a point
//! compiles to nothing and the variable is ignored.
//!
//! Points: `detected` (job recorded), `claimed` (input renamed out of the inbox, not yet
//! recorded), `converted` (batches named), `archive` (input moved, not yet
//! recorded), `uploading` (batches marked), `temp-uploaded` (temp file complete, not renamed),
//! `renamed` (final name on the server, not yet recorded), `uploaded` (recorded), `outcome`
//! (gateway outcome recorded, job not yet settled), `reported` (report written, not recorded),
//! `replies-listed` (a `list` answer holding replies read, not yet recorded), `replies-recorded`
//! (recorded).

/// The environment variable that arms a crash point.
pub const VAR: &str = "SMSDROP_TEST_CRASH_AT";

/// Aborts here if this point is armed and reached for the armed time (feature `crash-points`).
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = SPEC.get_or_init(|| {
        let v = std::env::var(VAR).ok()?;
        Some(match v.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((armed, n)) = armed {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("smsdrop: test crash point {name:?} reached: aborting");
            std::process::abort();
        }
    }
}

/// Without the feature `crash-points`: nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}
