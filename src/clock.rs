//! The one wall clock of the library: every timestamp mailroom stores (the ledger's unit is unix
//! milliseconds) comes from [`now_ms`]. Pacing and timeouts use `tokio::time` instead, so tests
//! can pause it.

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
