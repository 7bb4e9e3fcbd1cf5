//! The worker pool: claim due deliveries in batches, make each attempt in its own task, and
//! hand the results to the recorder.
//!
//! No transaction is open during an HTTP call: a claim leases rows and commits, the attempt
//! runs, and the recorder writes the result only if the lease is still held. At most
//! `concurrency` attempts run at once: a semaphore permit travels with each task, and a
//! claim never asks for more rows than there are free permits.

mod attempt;
mod isolation;
mod recorder;

pub use attempt::{AttemptResult, Sender, USER_AGENT};

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use hookd_store::{AttemptRecord, Claimed, Completion, Due, Lease, Next, Release, Store, Trigger};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::retry;

/// Backoff for transient database faults: 50 ms doubling to 5 s, with jitter, forever.
pub(crate) fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// An attempt ends this long before its lease, so that its result is written while the
/// lease still holds.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Everything the dispatcher and its tasks share.
struct Shared {
    store: Arc<dyn Store>,
    sender: Sender,
    metrics: Metrics,
    retry_schedule: Vec<Duration>,
    request_timeout: Duration,
    lease: Duration,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    concurrency: usize,
    claim_batch: u32,
    poll_interval: Duration,
    shutdown_timeout: Duration,
    disable_after: Duration,
    /// Attempts one endpoint may have in flight.
    per_endpoint: usize,
    /// Retries that may be in flight; the rest of the pool is kept for first attempts.
    retry_concurrency: usize,
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// `wake` is notified whenever new work may be due (ingestion, a resend, a NOTIFY).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Dispatcher {
        metrics.concurrency_limit.set(config.concurrency as i64);
        Dispatcher {
            shared: Arc::new(Shared {
                store,
                sender: Sender::new(
                    config.target_policy(),
                    config.max_response_bytes,
                    config.concurrency,
                ),
                metrics,
                retry_schedule: config.retry_schedule.clone(),
                request_timeout: config.request_timeout,
                lease: config.lease_duration,
            }),
            concurrency: config.concurrency,
            claim_batch: config.claim_batch,
            poll_interval: config.poll_interval,
            shutdown_timeout: config.shutdown_timeout,
            disable_after: config.disable_after,
            per_endpoint: config.endpoint_concurrency,
            retry_concurrency: config.retry_concurrency(),
            wake,
        }
    }

    /// Runs until `shutdown`; then claims nothing new, gives attempts in flight up to
    /// `shutdown_timeout` to finish, releases the rest, and records every result.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (results, rx) = mpsc::channel(self.concurrency.max(recorder::MAX_BATCH));
        let recorder = tokio::spawn(recorder::run(
            self.shared.store.clone(),
            rx,
            self.shared.metrics.clone(),
            self.disable_after,
            self.wake.clone(),
        ));
        let tasks = TaskTracker::new();
        let cut_short = CancellationToken::new();
        let in_flight = isolation::InFlight::new(self.per_endpoint, self.retry_concurrency);
        let mut delays = backoff().build();
        self.shared.metrics.up.set(1);

        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let free = 1 + permits.available_permits();
            let want = (free as u32).min(self.claim_batch);
            match self.claim(want, &in_flight).await {
                Ok(claimed) if claimed.is_empty() => {
                    drop(first);
                    delays = backoff().build();
                    self.idle(&shutdown).await;
                }
                Ok(claimed) => {
                    delays = backoff().build();
                    self.shared
                        .metrics
                        .claim_batch
                        .observe(claimed.len() as f64);
                    let mut first = Some(first);
                    let mut surplus = Vec::new();
                    for c in claimed {
                        let Some(slot) = in_flight.admit(&c) else {
                            surplus.push(c);
                            continue;
                        };
                        // Only this loop takes permits, so the ones counted free are still free.
                        let permit = first.take().unwrap_or_else(|| {
                            permits
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed no more than the free permits")
                        });
                        let shared = self.shared.clone();
                        let results = results.clone();
                        let cut_short = cut_short.clone();
                        tasks.spawn(async move {
                            shared.deliver(c, permit, results, cut_short).await;
                            drop(slot);
                        });
                    }
                    drop(first);
                    if !surplus.is_empty() {
                        // More for one endpoint than it may take: back to the queue, unsent.
                        self.shared.release_all(&surplus).await;
                    }
                }
                Err(e) => {
                    drop(first);
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot claim deliveries");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }

        tasks.close();
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = ?self.shutdown_timeout, "waiting for attempts in flight");
        }
        if tokio::time::timeout(self.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tasks.len(),
                "shutdown timeout: releasing attempts still in flight"
            );
            cut_short.cancel();
            tasks.wait().await;
        }
        drop(results);
        // Bounded too: with the database gone, the results cannot be written; their leases
        // expire and the deliveries are sent again by whoever runs next.
        let mut recorder = recorder;
        if tokio::time::timeout(self.shutdown_timeout, &mut recorder)
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown timeout: attempt results not recorded; their leases will expire"
            );
            recorder.abort();
        }
        self.shared.metrics.up.set(0);
    }

    /// Claims up to `want`: a quarter for retries (within their share of the pool), then
    /// first attempts, then more retries for what is left, all skipping endpoints already at
    /// their cap. New events are never starved by retries, nor retries by a steady stream of
    /// new events.
    async fn claim(
        &self,
        want: u32,
        in_flight: &isolation::InFlight,
    ) -> hookd_store::Result<Vec<Claimed>> {
        let lease = self.shared.lease.as_millis() as u64;
        let busy = in_flight.saturated_endpoints();
        let room = in_flight.retry_room() as u32;
        let share = (want / 4).max(1).min(room);
        let mut claimed = Vec::new();
        if share > 0 {
            claimed = self
                .shared
                .store
                .claim_due(share, Due::Retries, &busy, lease)
                .await?;
        }
        let more_retries_due = share > 0 && claimed.len() as u32 == share;
        let left = want - claimed.len() as u32;
        claimed.extend(
            self.shared
                .store
                .claim_due(left, Due::FirstAttempts, &busy, lease)
                .await?,
        );
        let more = (want - claimed.len() as u32).min(room - share);
        if more > 0 && more_retries_due {
            claimed.extend(
                self.shared
                    .store
                    .claim_due(more, Due::Retries, &busy, lease)
                    .await?,
            );
        }
        Ok(claimed)
    }

    /// Waits until the next delivery is due, a wake-up, the poll interval, or shutdown.
    async fn idle(&self, shutdown: &CancellationToken) {
        let wait = match self.shared.store.next_due_in_ms().await {
            // Overdue rows the claim did not take belong to endpoints at their cap or are
            // retries beyond their share: wait for a slot (the recorder wakes us when it
            // frees permits) rather than spin.
            Ok(Some(ms)) if ms <= 0 => self.poll_interval,
            Ok(Some(ms)) => Duration::from_millis(ms as u64).min(self.poll_interval),
            Ok(None) => self.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due time");
                self.poll_interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

impl Shared {
    /// One claimed delivery, from lease to recorded result.
    async fn deliver(
        &self,
        c: Claimed,
        permit: OwnedSemaphorePermit,
        results: mpsc::Sender<recorder::Finished>,
        cut_short: CancellationToken,
    ) {
        if let Some(reason) = &c.payload_error {
            return self.release(&c, Release::Fail(reason.clone())).await;
        }
        if c.endpoint.deleted {
            return self
                .release(&c, Release::Fail("endpoint deleted".into()))
                .await;
        }
        if !c.endpoint.enabled && c.trigger == Trigger::Auto {
            return self.release(&c, Release::Park).await;
        }
        let timeout = c
            .endpoint
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.request_timeout)
            .min(self.lease.saturating_sub(LEASE_MARGIN).max(self.lease / 2));
        let span = tracing::info_span!(
            "attempt",
            event_id = %c.event_id,
            delivery_id = c.delivery_id,
            endpoint_id = %c.endpoint.id,
            attempt = c.attempt,
            trigger = c.trigger.as_str(),
            outcome = tracing::field::Empty,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        self.metrics.in_flight.inc();
        let result = tokio::select! {
            r = self.sender.send(&c, timeout).instrument(span.clone()) => Some(r),
            _ = cut_short.cancelled() => None,
        };
        self.metrics.in_flight.dec();
        let Some(result) = result else {
            return self.release(&c, Release::Now).await;
        };

        let outcome = result.outcome;
        self.metrics
            .attempts
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.metrics
            .attempt_duration
            .observe(result.duration.as_secs_f64());
        let schedule = match &c.endpoint.retry_schedule_ms {
            Some(ms) => ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            None => self.retry_schedule.clone(),
        };
        let mut next = retry::honour_retry_after(
            retry::next_state(&c, outcome, &schedule),
            result.retry_after,
        );
        if result.status == Some(410) {
            // Standard Webhooks: 410 Gone means "stop sending". Disable the endpoint at once;
            // this delivery is over, and its siblings wait parked until it is re-enabled.
            next = Next::Failed;
            self.disable_gone(&c.endpoint.id).await;
        }
        span.record("outcome", outcome.as_str());
        span.record("duration_ms", result.duration.as_millis() as u64);
        if let Some(status) = result.status {
            span.record("status", status);
        }
        span.in_scope(|| match outcome {
            hookd_store::Outcome::Success => tracing::debug!(?next, "delivered"),
            _ => tracing::info!(
                ?next,
                error = result.error.as_deref().unwrap_or(""),
                "attempt failed"
            ),
        });

        let completion = Completion {
            delivery_id: c.delivery_id,
            lease_token: c.lease_token,
            endpoint_id: c.endpoint.id.clone(),
            ordered: c.endpoint.ordered,
            record: AttemptRecord {
                attempt: c.attempt,
                trigger: c.trigger,
                started_at: result.started_at_ms,
                duration_ms: result.duration.as_millis() as i64,
                status_code: result.status.map(i32::from),
                outcome,
                error: result.error,
                response_body: result.response_body,
            },
            next,
        };
        // Fails only when the recorder is gone (shutdown after a crash of it): the lease
        // then expires and the delivery is sent again.
        let _ = results
            .send(recorder::Finished { completion, permit })
            .await;
    }

    async fn disable_gone(&self, endpoint_id: &str) {
        let reason = "gone: the endpoint answered 410 Gone";
        match self.store.disable_endpoint(endpoint_id, reason).await {
            Ok(true) => {
                self.metrics
                    .endpoint_disables
                    .with_label_values(&["gone"])
                    .inc();
                tracing::warn!(endpoint_id, "endpoint disabled: it answered 410 Gone");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, endpoint_id, "cannot disable an endpoint that answered 410")
            }
        }
    }

    /// Hands claimed deliveries back unsent, due at once.
    async fn release_all(&self, claimed: &[Claimed]) {
        let leases: Vec<Lease> = claimed
            .iter()
            .map(|c| Lease {
                delivery_id: c.delivery_id,
                token: c.lease_token.clone(),
            })
            .collect();
        let released = (|| self.store.release(&leases, Release::Now))
            .retry(backoff().with_max_times(5))
            .when(|e| e.is_transient())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, deliveries = leases.len(), "cannot hand back deliveries; their leases will expire");
        }
    }

    async fn release(&self, c: &Claimed, how: Release) {
        let lease = [Lease {
            delivery_id: c.delivery_id,
            token: c.lease_token.clone(),
        }];
        let released = (|| self.store.release(&lease, how.clone()))
            .retry(backoff().with_max_times(5))
            .when(|e| e.is_transient())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, delivery_id = c.delivery_id, "cannot release a delivery; its lease will expire");
        }
    }
}

use backon::Retryable;
