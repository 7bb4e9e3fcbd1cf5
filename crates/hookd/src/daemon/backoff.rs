//! How hookd retries its own calls to the database when they fail for a reason that passes
//! (the database restarting, a broken connection, a busy SQLite file).

use std::time::Duration;

use backon::ExponentialBuilder;

/// Backoff for transient database faults: 50 ms doubling to 5 s, with jitter, forever.
pub fn database() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}
