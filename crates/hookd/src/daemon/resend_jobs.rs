//! Works through durable bulk resends (`POST /v1/deliveries/resend`).
//!
//! Each step resends one batch and moves the job's cursor in the same transaction, so a
//! restart continues where the last committed step stopped and the job itself never resends
//! a delivery twice. The job is paced by the dispatcher ([`Pace`]): it makes at most half a
//! claim's worth of deliveries due per step, and takes no step while a claim's worth are due
//! and unsent, so a bulk resend of a million deliveries flows at the dispatcher's pace
//! instead of flooding the due queue (a flood of due rows makes every claim and every
//! result batch around it longer, and other endpoints wait that long).

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hookd_store::Store;

use crate::daemon::backoff;
use crate::daemon::metrics::Metrics;

/// Deliveries resent per step, at most.
pub const MAX_STEP: u32 = 500;

/// How fast a bulk resend makes deliveries due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Deliveries resent per step.
    pub step: u32,
    /// No step while this many manual resends are due and not yet sent.
    pub max_due: u32,
}

impl Pace {
    /// From the dispatcher's claim size: half a claim per step (at most [`MAX_STEP`]), and
    /// a claim's worth due at the most, so one claim can always take everything due.
    pub fn for_claim_batch(claim_batch: u32) -> Pace {
        let max_due = claim_batch.max(1);
        Pace {
            step: (max_due / 2).clamp(1, MAX_STEP),
            max_due,
        }
    }
}

pub struct ResendJobs {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub pace: Pace,
    pub poll_interval: Duration,
    /// Notified when a job is created.
    pub wake: Arc<Notify>,
    /// Notified when deliveries were resent.
    pub dispatch_wake: Arc<Notify>,
}

impl ResendJobs {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = backoff::database().build();
        let Pace { step, max_due } = self.pace;
        loop {
            let wait = match self.store.step_resend_jobs(step, max_due).await {
                Ok(0) => {
                    delays = backoff::database().build();
                    self.poll_interval * 5
                }
                Ok(n) => {
                    delays = backoff::database().build();
                    self.metrics.manual_resends.inc_by(n);
                    self.dispatch_wake.notify_one();
                    continue;
                }
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "cannot work on resend jobs");
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_follows_the_claim_size() {
        let cases = [
            // (claim_batch, step, max_due)
            (512, 256, 512),
            (1, 1, 1),
            (2, 1, 2),
            (3, 1, 3),
            (1000, 500, 1000),
            (10_000, MAX_STEP, 10_000),
        ];
        for (claim_batch, step, max_due) in cases {
            assert_eq!(
                Pace::for_claim_batch(claim_batch),
                Pace { step, max_due },
                "claim_batch {claim_batch}"
            );
        }
    }
}
