//! Works through durable bulk resends (`POST /v1/deliveries/resend`).
//!
//! Each step resends one batch and moves the job's cursor in the same transaction, so a
//! restart continues where the last committed step stopped and the job itself never resends
//! a delivery twice. A step waits while many manual resends are already due, so a bulk
//! resend of a million deliveries flows at the dispatcher's pace instead of flooding the
//! due queue.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use hookd_store::Store;

use crate::daemon::backoff;
use crate::daemon::metrics::Metrics;

/// Deliveries resent per step.
pub const BATCH: u32 = 500;

pub struct ResendJobs {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Steps wait while this many manual resends are due and not yet sent.
    pub max_due: u32,
    pub poll_interval: Duration,
    /// Notified when a job is created.
    pub wake: Arc<Notify>,
    /// Notified when deliveries were resent.
    pub dispatch_wake: Arc<Notify>,
}

impl ResendJobs {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = backoff::database().build();
        loop {
            let wait = match self.store.step_resend_jobs(BATCH, self.max_due).await {
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
