//! Writes attempt results in batches: one transaction records everything that finished
//! since the last one, so a busy dispatcher makes one write per batch, not per delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};

use hookd_store::{Completion, Outcome, Store};

use crate::metrics::Metrics;

/// Results written per transaction, at most.
pub const MAX_BATCH: usize = 512;

/// Records completions until every sender is dropped and the channel is drained.
///
/// A transient database error is retried with backoff for as long as it lasts; meanwhile
/// the channel fills and the workers wait, so nothing new is claimed. If the results cannot
/// be written at all, the leases expire and the deliveries are sent again: at least once.
pub async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Finished>,
    metrics: Metrics,
    disable_after: Duration,
    dispatch_wake: Arc<Notify>,
) {
    let mut received = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut received, MAX_BATCH).await > 0 {
        // Each result keeps its attempt's concurrency permit until it is written, so the
        // deliveries a crash would send again never exceed `concurrency`.
        let (batch, permits): (Vec<Completion>, Vec<OwnedSemaphorePermit>) =
            received.drain(..).map(|f| (f.completion, f.permit)).unzip();
        let written = (|| store.complete(&batch))
            .retry(super::backoff())
            .when(|e| e.is_transient())
            .notify(|e, delay| {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record attempt results yet");
            })
            .await;
        match written {
            Ok(recorded) => {
                for (c, ok) in batch.iter().zip(recorded.iter().copied()) {
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
                record_health(&*store, &metrics, &batch, &recorded, disable_after).await;
            }
            Err(e) if batch.len() > 1 => {
                // One bad row must not drop the others: write them one at a time.
                tracing::warn!(error = %e, "a batch of attempt results failed; writing them one by one");
                for c in &batch {
                    match store.complete(std::slice::from_ref(c)).await {
                        Ok(ok) if ok == [true] => metrics.recorded(c.next),
                        Ok(_) => metrics.stale_completions.inc(),
                        Err(e) => tracing::error!(
                            error = %e,
                            delivery_id = c.delivery_id,
                            "cannot record an attempt result; its lease will expire and it will be sent again"
                        ),
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
        drop(permits);
        // Permits are free again, and a short retry may be due before the dispatcher's idle
        // wait ends.
        dispatch_wake.notify_one();
    }
}

/// An attempt's result on its way to the database, with the permit it ran under.
pub struct Finished {
    pub completion: Completion,
    pub permit: OwnedSemaphorePermit,
}

/// Keeps each endpoint's health up to date (one write per endpoint per batch at most), and
/// disables endpoints that have failed without a single success for `disable_after`.
async fn record_health(
    store: &dyn Store,
    metrics: &Metrics,
    batch: &[Completion],
    recorded: &[bool],
    disable_after: Duration,
) {
    let mut any_success: BTreeMap<&str, bool> = BTreeMap::new();
    for (c, _) in batch.iter().zip(recorded).filter(|(_, ok)| **ok) {
        *any_success.entry(c.endpoint_id.as_str()).or_default() |=
            c.record.outcome == Outcome::Success;
    }
    let outcomes: Vec<(String, bool)> = any_success
        .into_iter()
        .map(|(id, ok)| (id.to_string(), ok))
        .collect();
    let threshold = (!disable_after.is_zero()).then_some(disable_after.as_millis() as i64);
    let reason = format!(
        "failing: no successful delivery for {}",
        crate::retry::format_duration(disable_after)
    );
    match store
        .record_endpoint_health(&outcomes, threshold, &reason)
        .await
    {
        Ok(disabled) => {
            for id in disabled {
                metrics
                    .endpoint_disables
                    .with_label_values(&["failing"])
                    .inc();
                tracing::warn!(endpoint_id = %id, "{reason}: endpoint disabled");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot record endpoint health"),
    }
}
