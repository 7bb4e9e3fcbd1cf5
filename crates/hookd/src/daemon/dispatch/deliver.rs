//! One started delivery, in its own task: checks, the attempt, what comes next, and the
//! result on its way to the recorder, with the permit it ran under.

use std::time::Duration;

use backon::Retryable;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use hookd_store::{AttemptRecord, Claimed, Completion, EndpointId, Next, Release, Trigger};

use super::ready::Waiting;
use super::recorder::Finished;
use super::Shared;
use crate::daemon::{backoff, retry};

/// An attempt ends this long before its lease, so that its result is written while the
/// lease still holds.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl Shared {
    /// One claimed delivery, from lease to recorded result.
    pub(super) async fn deliver(
        &self,
        waiting: Waiting,
        permit: OwnedSemaphorePermit,
        results: mpsc::Sender<Finished>,
        cut_short: CancellationToken,
    ) {
        let Waiting { claimed: c, since } = waiting;
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
        // The lease runs from the claim: what is left must cover the attempt and its record.
        let lease_left = self.lease.saturating_sub(since.elapsed());
        let timeout = c
            .endpoint
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.request_timeout)
            .min(lease_left.saturating_sub(LEASE_MARGIN).max(lease_left / 2));
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
        // Jitter first: a receiver's `Retry-After` stays a floor.
        let mut next = retry::honour_retry_after(
            retry::with_jitter(
                retry::next_state(&c, outcome, &schedule),
                self.retry_jitter,
                rand::random::<f64>(),
            ),
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
            hookd_store::Outcome::Success => {
                tracing::debug!(next = %retry::describe_next(next), "delivered")
            }
            _ => tracing::info!(
                next = %retry::describe_next(next),
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
        let _ = results.send(Finished { completion, permit }).await;
    }

    async fn disable_gone(&self, endpoint_id: &EndpointId) {
        let reason = "gone: the endpoint answered 410 Gone";
        match self.store.disable_endpoint(endpoint_id, reason).await {
            Ok(true) => {
                self.metrics
                    .endpoint_disables
                    .with_label_values(&["gone"])
                    .inc();
                tracing::warn!(%endpoint_id, "endpoint disabled: it answered 410 Gone");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, %endpoint_id, "cannot disable an endpoint that answered 410")
            }
        }
    }

    async fn release(&self, c: &Claimed, how: Release) {
        let lease = [c.lease()];
        let released = (|| self.store.release(&lease, how.clone()))
            .retry(backoff::database().with_max_times(5))
            .when(|e| e.is_transient())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, delivery_id = c.delivery_id, "cannot release a delivery; its lease will expire");
        }
    }
}
