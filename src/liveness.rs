//! Liveness: the engine's heartbeat, as systemd (`Type=notify`, `WatchdogSec=`, with the
//! `sd-notify` crate) and `/healthz` see it. `READY=1` once the journal is open and the first
//! inbox scan is done, `WATCHDOG=1` from the engine loop and from long operations
//! ([`progress`]), `STATUS=` a one-line summary. Outside systemd (no `NOTIFY_SOCKET`) every
//! systemd call does nothing. The ground floor: it imports no other module of the crate.

use sd_notify::NotifyState;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

static READY: AtomicBool = AtomicBool::new(false);

/// When work last made progress inside a long operation (ms; an upload moving bytes).
static PROGRESS_MS: AtomicI64 = AtomicI64::new(0);

/// Work is moving (called from long operations, e.g. each chunk of an upload): counts as the
/// engine turning for `/healthz`, and tells systemd's watchdog at most once a second.
pub fn progress() {
    let now = chrono::Utc::now().timestamp_millis();
    let last = PROGRESS_MS.load(Ordering::Relaxed);
    if now - last >= 1000 {
        PROGRESS_MS.store(now, Ordering::Relaxed);
        alive_quiet();
    }
}

/// When [`progress`] was last heard (ms since the epoch; 0 never).
pub fn last_progress_ms() -> i64 {
    PROGRESS_MS.load(Ordering::Relaxed)
}

/// Whether systemd is listening (`NOTIFY_SOCKET` set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The engine is ready.
pub fn ready(status: &str) {
    READY.store(true, Ordering::SeqCst);
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The engine is alive; `status` is the summary line.
pub fn alive(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog, NotifyState::Status(status)]);
}

/// The engine is alive (no new status line); before it is ready (a big backlog on the first
/// scan), systemd's start timeout is extended instead. Without `NOTIFY_SOCKET` this does nothing.
pub fn alive_quiet() {
    if !enabled() {
        return;
    }
    if READY.load(Ordering::SeqCst) {
        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
    } else {
        let _ = sd_notify::notify(false, &[NotifyState::ExtendTimeoutUsec(120_000_000)]);
    }
}

/// Stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// How often the engine must say it is alive: half the watchdog interval, when systemd set one.
pub fn watchdog_every() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec / 2))
}
