//! Getting work in: the outbox poller, and the PostgreSQL LISTEN that wakes it.
//!
//! The outbox row is the queue: a producer's committed INSERT is all it takes. This loop
//! turns rows into events and deliveries (in one transaction that also deletes them) and
//! wakes the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hookd_store::{IngestLimits, Store};

use crate::dispatch::backoff;
use crate::metrics::Metrics;

/// Outbox rows per ingest transaction.
pub const BATCH: u32 = 500;

pub struct Ingester {
    pub store: Arc<dyn Store>,
    pub limits: IngestLimits,
    pub poll_interval: Duration,
    pub metrics: Metrics,
    /// Notified when a producer committed (PostgreSQL NOTIFY).
    pub outbox_wake: Arc<Notify>,
    /// Notified when deliveries were created.
    pub dispatch_wake: Arc<Notify>,
}

impl Ingester {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = backoff().build();
        loop {
            let wait = match self.store.ingest_outbox(BATCH, &self.limits).await {
                Ok(n) => {
                    delays = backoff().build();
                    if n > 0 {
                        self.metrics.outbox_ingested.inc_by(n);
                        self.dispatch_wake.notify_one();
                    }
                    if n == BATCH as u64 {
                        continue; // more may be waiting
                    }
                    self.poll_interval
                }
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot read the outbox");
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.outbox_wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Relays the database's wake-ups (PostgreSQL LISTEN) to the ingester and the dispatcher.
/// Returns at once for a database without them.
pub async fn relay_wakeups(
    store: Arc<dyn Store>,
    wakes: Vec<Arc<Notify>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut delays = backoff().build();
    let mut source = loop {
        match store.wake_source().await {
            Ok(Some(source)) => break source,
            Ok(None) => return,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot LISTEN; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        tokio::select! {
            woke = source.wait() => match woke {
                Ok(()) => {
                    delays = backoff().build();
                    wakes.iter().for_each(|w| w.notify_one());
                }
                Err(e) => {
                    metrics.store_error("listen_wait");
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = ?delay, "LISTEN connection lost; polling meanwhile");
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
