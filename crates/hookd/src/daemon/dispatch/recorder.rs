//! Writes attempt results in batches: one transaction records everything that finished
//! since the last one, so a busy dispatcher makes one write per batch, not per delivery.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};

use hookd_store::{Completion, Next, Outcome, Store};

use crate::daemon::metrics::Metrics;

/// Results written per transaction, at most.
pub const MAX_BATCH: usize = 512;

/// How long a small batch may wait for more results when the last write took at least as
/// long (the database is the bottleneck). On SQLite at saturation that halves the result
/// transactions (docs/benchmarks.md): each costs a `BEGIN`, a `COMMIT` and a
/// few hand-offs whatever its size. A database that answers fast never makes a result wait.
const LINGER: Duration = Duration::from_millis(4);
/// A batch this large (or half the pool, when that is smaller) is written at once.
const FULL_BATCH: usize = 256;

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
    let mut healthy = Healthy::default();
    let full = FULL_BATCH.min(concurrency / 2).max(1);
    let mut last_write = Duration::ZERO;
    while rx.recv_many(&mut received, MAX_BATCH).await > 0 {
        let until = tokio::time::Instant::now() + LINGER;
        while waits(&received, last_write, full) {
            let room = MAX_BATCH - received.len();
            let more = tokio::time::timeout_at(until, rx.recv_many(&mut received, room)).await;
            // Out of time, or every sender gone (shutdown): write what there is.
            if !matches!(more, Ok(n) if n > 0) {
                break;
            }
        }
        let writing = Instant::now();
        // Each result keeps its attempt's concurrency permit until it is written, so the
        // deliveries a crash would send again never exceed `concurrency`.
        let (batch, permits): (Vec<Completion>, Vec<OwnedSemaphorePermit>) =
            received.drain(..).map(|f| (f.completion, f.permit)).unzip();
        let written = (|| store.complete(&batch))
            .retry(crate::daemon::backoff::database())
            .when(|e| e.is_transient())
            .notify(|e, delay| {
                tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "cannot record attempt results yet");
            })
            .await;
        last_write = writing.elapsed();
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
                record_health(
                    &*store,
                    &metrics,
                    &batch,
                    &recorded,
                    disable_after,
                    &mut healthy,
                )
                .await;
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
        if makes_work_due(&batch, wakes.soon) {
            wakes.new_work.notify_one();
        } else {
            wakes.room.notify_one();
        }
    }
}

/// Whether `received` waits (up to [`LINGER`] in all) for more results before it is
/// written: when the last write took at least that long and the batch is smaller than
/// `full`; never when one of them is a result of an ordered endpoint, whose next delivery
/// waits for it.
fn waits(received: &[Finished], last_write: Duration, full: usize) -> bool {
    last_write >= LINGER && received.len() < full && !received.iter().any(|f| f.completion.ordered)
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

/// Whether recording `batch` may make a delivery due before the dispatcher looks again
/// (within `soon`): a retry due sooner, or the next delivery of an ordered endpoint, which a
/// final result lets go. Anything else only frees permits; treating it as new work would
/// make the dispatcher claim after every batch, and when the endpoints with due rows are all
/// at their caps, each such claim reads every due row only to skip them all (35 ms per claim
/// on PostgreSQL with 300,000 rows due to one busy endpoint).
fn makes_work_due(batch: &[Completion], soon: Duration) -> bool {
    batch.iter().any(|c| match c.next {
        Next::RetryIn(ms) => Duration::from_millis(ms) < soon,
        Next::Succeeded | Next::Failed => c.ordered,
    })
}

/// An attempt's result on its way to the database, with the permit it ran under.
pub struct Finished {
    pub completion: Completion,
    pub permit: OwnedSemaphorePermit,
}

/// Endpoints whose last health write was a success, and when it was made.
#[derive(Default)]
struct Healthy(HashMap<String, Instant>);

/// A healthy endpoint's success is written again after this long at the latest (30 s, or a
/// quarter of `disable_after` when that is shorter), so that a failure written meanwhile by
/// another instance is cleared long before it could disable the endpoint.
fn rewrite_success(disable_after: Duration) -> Duration {
    let cap = Duration::from_secs(30);
    if disable_after.is_zero() {
        cap
    } else {
        cap.min(disable_after / 4)
    }
}

/// Keeps each endpoint's health up to date, and disables endpoints that have failed without
/// a single success for `disable_after`. A failure is written at once; a success only when
/// the endpoint was failing or its last success was written `rewrite_success` ago, so that a
/// busy healthy endpoint costs a write every 30 s, not one per batch.
async fn record_health(
    store: &dyn Store,
    metrics: &Metrics,
    batch: &[Completion],
    recorded: &[bool],
    disable_after: Duration,
    healthy: &mut Healthy,
) {
    let mut any_success: BTreeMap<&str, bool> = BTreeMap::new();
    for (c, _) in batch.iter().zip(recorded).filter(|(_, ok)| **ok) {
        *any_success.entry(c.endpoint_id.as_str()).or_default() |=
            c.record.outcome == Outcome::Success;
    }
    let now = Instant::now();
    let outcomes: Vec<(String, bool)> = any_success
        .into_iter()
        .filter(|(id, ok)| {
            let fresh = healthy
                .0
                .get(*id)
                .is_some_and(|at| now.duration_since(*at) < rewrite_success(disable_after));
            !(*ok && fresh)
        })
        .map(|(id, ok)| (id.to_string(), ok))
        .collect();
    if outcomes.is_empty() {
        return;
    }
    for (id, ok) in &outcomes {
        if *ok {
            healthy.0.insert(id.clone(), now);
        } else {
            healthy.0.remove(id);
        }
    }
    let threshold = (!disable_after.is_zero()).then_some(disable_after.as_millis() as i64);
    let reason = format!(
        "failing: no successful delivery for {}",
        crate::duration::format_duration(disable_after)
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
        Err(e) => {
            for (id, _) in &outcomes {
                healthy.0.remove(id);
            }
            tracing::warn!(error = %e, "cannot record endpoint health")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookd_store::{AttemptRecord, Trigger};

    fn completion(next: Next, ordered: bool) -> Completion {
        Completion {
            delivery_id: 1,
            lease_token: "lease".into(),
            endpoint_id: "ep".into(),
            ordered,
            record: AttemptRecord {
                attempt: 1,
                trigger: Trigger::Auto,
                started_at: 0,
                duration_ms: 1,
                status_code: Some(200),
                outcome: Outcome::Success,
                error: None,
                response_body: None,
            },
            next,
        }
    }

    #[test]
    fn a_small_batch_waits_only_after_a_slow_write() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1_000));
        let finished = |n: usize, ordered: bool| -> Vec<Finished> {
            (0..n)
                .map(|i| Finished {
                    completion: completion(Next::Succeeded, ordered && i == 0),
                    permit: permits.clone().try_acquire_owned().expect("permit"),
                })
                .collect()
        };
        let slow = LINGER;
        let fast = LINGER - Duration::from_micros(1);
        let cases = [
            // (results, ordered among them, last write, full, waits)
            (1, false, slow, 256, true),
            (255, false, slow, 256, true),
            (256, false, slow, 256, false),
            (1, false, fast, 256, false),
            (1, false, Duration::ZERO, 256, false),
            (1, true, slow, 256, false),
            (10, false, slow * 10, 8, false),
        ];
        for (n, ordered, last_write, full, waits) in cases {
            assert_eq!(
                super::waits(&finished(n, ordered), last_write, full),
                waits,
                "{n} results, ordered: {ordered}, last write {last_write:?}, full at {full}"
            );
        }
    }

    #[test]
    fn which_results_make_work_due() {
        let soon = Duration::from_millis(100);
        let cases = [
            (Next::Succeeded, false, false),
            (Next::Failed, false, false),
            (Next::RetryIn(60_000), false, false),
            (Next::RetryIn(100), false, false),
            (Next::RetryIn(99), false, true),
            (Next::RetryIn(0), false, true),
            // A final result of an ordered endpoint lets its next delivery go.
            (Next::Succeeded, true, true),
            (Next::Failed, true, true),
            (Next::RetryIn(60_000), true, false),
        ];
        for (next, ordered, due) in cases {
            let batch = [
                completion(Next::Succeeded, false),
                completion(next, ordered),
            ];
            assert_eq!(
                makes_work_due(&batch, soon),
                due,
                "{next:?}, ordered: {ordered}"
            );
        }
        assert!(!makes_work_due(&[], soon));
    }
}
