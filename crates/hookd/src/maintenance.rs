//! Periodic jobs on tokio-cron-scheduler: the lease rescuer and the backlog gauges.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use hookd_store::Store;

use crate::metrics::Metrics;

/// Starts the jobs; shut the returned scheduler down to stop them.
pub async fn start(
    store: Arc<dyn Store>,
    metrics: Metrics,
    rescue_interval: Duration,
    gauge_interval: Duration,
    dispatch_wake: Arc<Notify>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;

    let (s, m) = (store.clone(), metrics.clone());
    scheduler
        .add(Job::new_repeated_async(rescue_interval, move |_, _| {
            let (store, metrics, wake) = (s.clone(), m.clone(), dispatch_wake.clone());
            Box::pin(async move { rescue(&*store, &metrics, &wake).await })
        })?)
        .await?;

    let (s, m) = (store.clone(), metrics.clone());
    scheduler
        .add(Job::new_repeated_async(gauge_interval, move |_, _| {
            let (store, metrics) = (s.clone(), m.clone());
            Box::pin(async move { refresh_gauges(&*store, &metrics).await })
        })?)
        .await?;

    refresh_gauges(&*store, &metrics).await;
    scheduler.start().await?;
    Ok(scheduler)
}

/// Returns deliveries whose lease expired to pending, and wakes the dispatcher for them.
pub async fn rescue(store: &dyn Store, metrics: &Metrics, wake: &Notify) {
    match store.rescue_expired().await {
        Ok(0) => {}
        Ok(n) => {
            metrics.lease_rescues.inc_by(n);
            tracing::warn!(
                deliveries = n,
                "rescued deliveries whose lease expired; sending them again"
            );
            wake.notify_one();
        }
        Err(e) => {
            metrics.store_error("rescue");
            tracing::warn!(error = %e, "cannot rescue expired leases");
        }
    }
}

/// Reads the backlog with two indexed queries.
pub async fn refresh_gauges(store: &dyn Store, metrics: &Metrics) {
    match store.backlog().await {
        Ok(b) => {
            metrics.pending.set(b.unfinished);
            metrics
                .oldest_pending_age
                .set(b.oldest_due_age_ms as f64 / 1000.0);
        }
        Err(e) => {
            metrics.store_error("backlog");
            tracing::warn!(error = %e, "cannot read the backlog");
        }
    }
}
