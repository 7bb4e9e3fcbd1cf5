//! Getting work in: the outbox, and the PostgreSQL LISTEN that wakes its readers.
//!
//! The outbox row is the queue: a producer's committed INSERT is all it takes. The
//! dispatcher reads it (`dispatch`), turning rows into events and deliveries in one
//! transaction that also deletes them and leases to itself the new deliveries it has room
//! for; this module relays the wake-ups that tell it to look: PostgreSQL's LISTEN, or on
//! SQLite a watch of the write-ahead log, which every commit writes.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hookd_store::Store;

use crate::daemon::backoff;
use crate::daemon::metrics::Metrics;

/// Outbox rows per ingest transaction at most.
pub const BATCH: u32 = 500;

/// Relays the database's wake-ups to the dispatcher until `shutdown`: `outbox` (new outbox
/// rows) always, `others` (new deliveries may be due) unless the source says only that the
/// outbox may have rows (SQLite's WAL watch: a look at an empty outbox is a read, so
/// hookd's own commits, which wake it too, cost one read each and write nothing). A
/// database without wake-ups has nothing to relay.
pub async fn relay_wakeups(
    store: Arc<dyn Store>,
    outbox: Arc<Notify>,
    others: Vec<Arc<Notify>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut delays = backoff::database().build();
    let mut source = loop {
        match store.wake_source().await {
            Ok(Some(source)) => break source,
            Ok(None) => return shutdown.cancelled().await,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "cannot watch the database for wake-ups; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    let mut wakes = vec![outbox];
    if !source.outbox_only() {
        wakes.extend(others);
    }
    loop {
        tokio::select! {
            woke = source.wait() => match woke {
                Ok(()) => {
                    tracing::trace!("woken by the database");
                    delays = backoff::database().build();
                    wakes.iter().for_each(|w| w.notify_one());
                }
                Err(e) => {
                    metrics.store_error("listen_wait");
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "wake-ups lost (LISTEN connection, WAL watch); polling meanwhile");
                    // Whatever was notified while the connection was down is found by polling.
                    wakes.iter().for_each(|w| w.notify_one());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
