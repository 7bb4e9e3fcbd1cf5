//! Writes attempt results in batches: one transaction records everything that finished
//! since the last one, so a busy dispatcher makes one write per batch, not per delivery.
//! When a batch is written and whom it wakes is decided in `batching.rs`, which endpoints'
//! health it writes in `endpoint_health.rs`; this task does the I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};

use hookd_store::{Completion, EndpointId, Store};

use super::batching::{self, Batching, Wake, MAX_BATCH};
use super::endpoint_health::EndpointHealth;
use crate::daemon::metrics::Metrics;

/// An attempt's result on its way to the database, with the permit it ran under.
pub struct Finished {
    pub completion: Completion,
    pub permit: OwnedSemaphorePermit,
}

/// How the recorder tells the dispatcher what a recorded batch changed.
pub struct Wakes {
    /// Permits are free again: rows waiting may start, and a claim may find room.
    pub room: Arc<Notify>,
    /// Something may be due that the dispatcher's last empty claim did not see.
    pub new_work: Arc<Notify>,
    /// The dispatcher looks again within this time anyway (its poll interval).
    pub soon: Duration,
}

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
    wakes: Wakes,
    concurrency: usize,
) {
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut batching = Batching::new(concurrency);
    let mut health = EndpointHealth::new(disable_after);
    while rx.recv_many(&mut received, MAX_BATCH).await > 0 {
        let first_at = Instant::now();
        while let Some((until, room)) =
            batching.wait_for_more(received.iter().map(|f| &f.completion), first_at)
        {
            let more = tokio::time::timeout_at(until.into(), rx.recv_many(&mut received, room));
            // Out of time, or every sender gone (shutdown): write what there is.
            if !matches!(more.await, Ok(n) if n > 0) {
                break;
            }
        }
        // Each result keeps its attempt's concurrency permit until it is written, so the
        // deliveries a crash would send again never exceed `concurrency`.
        let (batch, permits): (Vec<Completion>, Vec<OwnedSemaphorePermit>) =
            received.drain(..).map(|f| (f.completion, f.permit)).unzip();
        let writing = Instant::now();
        let written = (|| store.complete(&batch))
            .retry(crate::daemon::backoff::database())
            .when(|e| e.is_transient())
            .notify(|e, delay| {
                tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "cannot record attempt results yet");
            })
            .await;
        batching.written(writing.elapsed());
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
                let news = health.news(&batch, &recorded, Instant::now());
                if !news.is_empty() && !write_health(&*store, &metrics, &news, disable_after).await
                {
                    health.not_written(&news);
                }
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
        match batching::wake_after(&batch, wakes.soon) {
            Wake::NewWork => wakes.new_work.notify_one(),
            Wake::Room => wakes.room.notify_one(),
        }
    }
}

/// Writes the endpoints' health (`news`: per endpoint, whether any attempt succeeded), and
/// disables endpoints that have failed without a single success for `disable_after`.
/// Returns whether it was written.
async fn write_health(
    store: &dyn Store,
    metrics: &Metrics,
    news: &[(EndpointId, bool)],
    disable_after: Duration,
) -> bool {
    let threshold = (!disable_after.is_zero()).then_some(disable_after.as_millis() as i64);
    let reason = format!(
        "failing: no successful delivery for {}",
        crate::duration::format_duration(disable_after)
    );
    match store.record_endpoint_health(news, threshold, &reason).await {
        Ok(disabled) => {
            for id in disabled {
                metrics
                    .endpoint_disables
                    .with_label_values(&["failing"])
                    .inc();
                tracing::warn!(endpoint_id = %id, "{reason}: endpoint disabled");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record endpoint health");
            false
        }
    }
}
