//! Writes attempt results in batches: one transaction records everything that finished
//! since the last one, so a busy dispatcher makes one write per batch, not per delivery.

use std::sync::Arc;

use backon::Retryable;
use tokio::sync::mpsc;

use hookd_store::{Completion, Store};

use crate::metrics::Metrics;

/// Results written per transaction, at most.
pub const MAX_BATCH: usize = 512;

/// Records completions until every sender is dropped and the channel is drained.
///
/// A transient database error is retried with backoff for as long as it lasts; meanwhile
/// the channel fills and the workers wait, so nothing new is claimed. If the results cannot
/// be written at all, the leases expire and the deliveries are sent again: at least once.
pub async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Completion>, metrics: Metrics) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let written = (|| store.complete(&batch))
            .retry(super::backoff())
            .when(|e| e.is_transient())
            .notify(|e, delay| {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record attempt results yet");
            })
            .await;
        match written {
            Ok(recorded) => {
                for (c, ok) in batch.iter().zip(recorded) {
                    if ok {
                        metrics.recorded(c.next);
                    } else {
                        metrics.stale_completions.inc();
                        tracing::warn!(
                            delivery_id = c.delivery_id,
                            "attempt result not recorded: the lease was lost (the delivery was rescued)"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    results = batch.len(),
                    "cannot record attempt results; their leases will expire and they will be sent again"
                );
            }
        }
        batch.clear();
    }
}
