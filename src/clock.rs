//! The one wall clock of the library: every timestamp mailroom stores (the ledger's unit is unix
//! milliseconds) comes from [`now_ms`]. Pacing and timeouts use `tokio::time` instead, so tests
//! can pause it.
//!
//! A run's decisions that depend on the time of day (send windows, the warm-up day and the daily
//! allowance, see `schedule`) go through a [`Clock`] injected with the run's options instead:
//! [`SystemClock`] in production, [`ManualClock`] in tests, which say what time it is and whose
//! waits return at once, so no test waits for real time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// What time it is for a run's schedule, and how to wait for a later time.
pub trait Clock: std::fmt::Debug + Send + Sync {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Returns once this clock reads `at` (unix ms) or later.
    fn sleep_until(&self, at: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock; waits are tokio sleeps (at most an hour each, then the time is read
/// again, so a clock change or a suspended machine is noticed).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn sleep_until(&self, at: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let left = at.saturating_sub(now_ms());
                if left <= 0 {
                    return;
                }
                let slice = u64::try_from(left).unwrap_or(0).min(3_600_000);
                tokio::time::sleep(std::time::Duration::from_millis(slice)).await;
            }
        })
    }
}

/// A clock a test sets: it reads `now`, then moves on by `step` ms at every reading (so a run
/// can watch a window close as it claims); a wait jumps straight to its time.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    step: i64,
}

impl ManualClock {
    /// A clock at `now` (unix ms) that advances `step` ms at each reading.
    pub fn new(now: i64, step: i64) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(now),
            step,
        }
    }

    /// Sets the time.
    pub fn set(&self, now: i64) {
        self.now.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.fetch_add(self.step, Ordering::SeqCst)
    }

    fn sleep_until(&self, at: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.now.fetch_max(at, Ordering::SeqCst);
        Box::pin(std::future::ready(()))
    }
}
