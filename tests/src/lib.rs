//! Shared harness of the fault-injection suite.
//!
//! Every scenario runs the REAL `hookd` binary as child processes ([`Process`], started by
//! [`Options::start`]) against a fresh database ([`TestDb`]), feeds it a workload through
//! the outbox with plain SQL the way a producer service would ([`Producer`]), delivers to a
//! receiver on 127.0.0.1 that counts every request and every 2xx per `webhook-id`
//! ([`Receiver::per_event`], answering as [`standard_mix`] says), injects a fault, and ends with an [`audit`]: every committed event was delivered or is `failed`
//! after its full schedule, the receiver saw nothing that was never committed, and every
//! duplicate is accounted for by an attempt whose result hookd could not have known.
//!
//! The binary is `target/<profile>/hookd`, next to the test executable's `deps/` folder:
//! `cargo test --workspace` builds it first; with `-p hookd-fault-tests` alone, run
//! `cargo build -p hookd` first (or set `HOOKD_BIN`).

pub mod audit;
pub mod order;
pub mod probe;
pub mod process;
pub mod producer;
pub mod raw;
pub mod receiver;

pub use audit::{audit, duplicates_outside, record, report, say, wait_finished, Audit, Expect};
pub use hookd_testkit::{hookd_bin, wait_until, Backend, Process, Receiver, Reply, TestDb};
pub use order::Order;
pub use probe::Probe;
pub use process::{log_dir, Options};
pub use producer::Producer;
pub use receiver::standard_mix;

use std::time::Duration;

/// Attempts per delivery with the suite's global ladder `100ms,200ms,400ms`.
pub const FULL_SCHEDULE: i64 = 4;

/// Generous: other engineers run tests on this 2-core machine at the same time.
pub const LONG: Duration = Duration::from_secs(120);

/// The scenarios are heavy: inside one test binary they run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the suite's "one heavy scenario at a time" lock while alive.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// `prefix-00042`: the ids the producer inserts and the receiver's behaviours parse.
pub fn event_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// The number at the end of an event id made by [`event_ids`].
pub fn event_number(id: &str) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Waits until the receiver has answered at least `n` requests with 2xx.
pub async fn wait_delivered(receiver: &Receiver, n: usize, what: &str) {
    wait_until(LONG, what, || async move {
        (receiver.ok_count() >= n).then_some(())
    })
    .await
}

/// Waits for the next fault's moment: at least `n` deliveries answered 2xx and at least
/// `gap` since `since` (so that a restarted process gets to claim, and to rescue).
pub async fn wait_fault_point(
    receiver: &Receiver,
    n: usize,
    since: std::time::Instant,
    gap: Duration,
) {
    wait_delivered(
        receiver,
        n,
        &format!("{n} deliveries before the next fault"),
    )
    .await;
    let elapsed = since.elapsed();
    if elapsed < gap {
        tokio::time::sleep(gap - elapsed).await;
    }
}

/// Waits (up to 10 s) until some delivery is in flight, so that a fault strikes mid-attempt;
/// returns whether one was.
pub async fn wait_some_in_flight(probe: &Probe) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if probe.in_flight().await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The backend's name, for output.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}
