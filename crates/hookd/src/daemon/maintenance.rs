//! Periodic jobs on tokio-cron-scheduler, each on a cron expression from the configuration:
//! the lease rescuer, the backlog gauges (with the unreadable endpoints), and retention.
//! (Its resolution is one second.) Beside them, on a plain interval, the instance's
//! heartbeat ([`heartbeat`]), which also takes back the leases of dead instances.
//!
//! The scheduler starts a job at every tick whether or not its previous run has ended; each
//! job here runs behind a [`NoOverlap`] guard instead, so that a slow run is never joined by
//! copies of itself competing for the database.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use hookd_store::{EndpointId, Store};

use crate::daemon::metrics::Metrics;
use crate::daemon::supervisor::{Supervisor, Task};

/// What the jobs do and when.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Cron expressions with seconds (`*/5 * * * * *`: every 5 seconds).
    pub rescue_cron: String,
    pub gauge_cron: String,
    pub retention_cron: String,
    /// Finished deliveries older than this are deleted.
    pub retention_period: Duration,
    /// Rows per retention transaction.
    pub retention_batch: u32,
}

/// Starts the jobs; shut the returned scheduler down to stop them. Each run is watched by
/// `tasks`: a run that panics stops hookd.
pub async fn start(
    store: Arc<dyn Store>,
    metrics: Metrics,
    schedule: Schedule,
    dispatch_wake: Arc<Notify>,
    tasks: Supervisor,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;

    let (s, m, t) = (store.clone(), metrics.clone(), tasks.clone());
    let guard = NoOverlap::new("rescue", &metrics);
    scheduler
        .add(Job::new_async(
            schedule.rescue_cron.as_str(),
            move |_, _| {
                let (store, metrics, wake) = (s.clone(), m.clone(), dispatch_wake.clone());
                let guard = guard.clone();
                Box::pin(t.guard(Task::Maintenance, async move {
                    guard.run(rescue(&*store, &metrics, &wake)).await;
                }))
            },
        )?)
        .await?;

    let (s, m, t) = (store.clone(), metrics.clone(), tasks.clone());
    let guard = NoOverlap::new("gauges", &metrics);
    scheduler
        .add(Job::new_async(
            schedule.gauge_cron.as_str(),
            move |_, _| {
                let (store, metrics, guard) = (s.clone(), m.clone(), guard.clone());
                Box::pin(t.guard(Task::Maintenance, async move {
                    guard.run(refresh_gauges(&*store, &metrics)).await;
                }))
            },
        )?)
        .await?;

    let (s, m, t) = (store.clone(), metrics.clone(), tasks);
    let (period, batch) = (schedule.retention_period, schedule.retention_batch);
    let guard = NoOverlap::new("retention", &metrics);
    scheduler
        .add(Job::new_async(
            schedule.retention_cron.as_str(),
            move |_, _| {
                let (store, metrics, guard) = (s.clone(), m.clone(), guard.clone());
                Box::pin(t.guard(Task::Maintenance, async move {
                    guard.run(purge(&*store, &metrics, period, batch)).await;
                }))
            },
        )?)
        .await?;

    refresh_gauges(&*store, &metrics).await;
    scheduler.start().await?;
    Ok(scheduler)
}

/// Runs of one job, one at a time: a run that comes while the previous one is still going
/// is skipped (`hookd_maintenance_runs_skipped_total{job}`); each run's duration is
/// observed (`hookd_maintenance_job_duration_seconds{job}`).
#[derive(Clone)]
pub struct NoOverlap {
    job: &'static str,
    running: Arc<Mutex<()>>,
    metrics: Metrics,
}

impl NoOverlap {
    pub fn new(job: &'static str, metrics: &Metrics) -> NoOverlap {
        NoOverlap {
            job,
            running: Arc::new(Mutex::new(())),
            metrics: metrics.clone(),
        }
    }

    /// Runs `run` unless a run of the same job is going; returns whether it ran. A run that
    /// panics or is dropped ends all the same (the lock goes with it).
    pub async fn run(&self, run: impl Future<Output = ()>) -> bool {
        let Ok(_running) = self.running.try_lock() else {
            self.metrics
                .maintenance_skipped
                .with_label_values(&[self.job])
                .inc();
            tracing::debug!(
                job = self.job,
                "maintenance run skipped: the previous run is still going"
            );
            return false;
        };
        let started = Instant::now();
        run.await;
        self.metrics
            .maintenance_duration
            .with_label_values(&[self.job])
            .observe(started.elapsed().as_secs_f64());
        true
    }
}

/// Returns deliveries whose lease expired to pending, lets stranded held deliveries of
/// ordered endpoints go, and wakes the dispatcher for them.
pub async fn rescue(store: &dyn Store, metrics: &Metrics, wake: &Notify) {
    match store.promote_stranded().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                deliveries = n,
                "released held deliveries of ordered endpoints"
            );
            wake.notify_one();
        }
        Err(e) => tracing::warn!(error = %e, "cannot release held deliveries"),
    }
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
        Err(e) => tracing::warn!(error = %e, "cannot rescue expired leases"),
    }
}

/// Writes this instance's heartbeat every `interval` and takes back the leases of the
/// instances whose heartbeat is older than `timeout` (their deliveries due again at once,
/// the dispatcher woken for them), until `stop`. A failed write is logged and tried again
/// at the next tick: the other instances take this one's leases back only once its
/// heartbeat is `timeout` old.
pub async fn heartbeat(
    store: Arc<dyn Store>,
    metrics: Metrics,
    interval: Duration,
    timeout: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.heartbeat(timeout.as_millis() as u64).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.lease_rescues.inc_by(n);
                tracing::warn!(
                    deliveries = n,
                    "took back the leases of an instance whose heartbeat stopped; sending them again"
                );
                wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the heartbeat"),
        }
    }
}

/// Reads the backlog in one statement of indexed reads (and a count of the outbox).
pub async fn refresh_gauges(store: &dyn Store, metrics: &Metrics) {
    match store.backlog().await {
        Ok(b) => {
            metrics.pending.set(b.unfinished);
            metrics.outbox_rows.set(b.outbox);
            metrics
                .oldest_pending_age
                .set(b.oldest_due_age_ms as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the backlog"),
    }
    check_unreadable(store, metrics).await;
}

/// Sets `hookd_endpoints_unreadable` and logs an error once for each endpoint whose secrets
/// cannot be decrypted (again if it was readable in between): its deliveries fail until
/// `HOOKD_SECRET_KEY` is the key they were sealed with.
pub async fn check_unreadable(store: &dyn Store, metrics: &Metrics) {
    let found = match store.unreadable_endpoints().await {
        Ok(found) => found,
        Err(e) => return tracing::warn!(error = %e, "cannot look for unreadable endpoints"),
    };
    metrics.endpoints_unreadable.set(found.len() as i64);
    let mut reported = metrics
        .unreadable_reported
        .lock()
        .expect("unreadable endpoints lock");
    let (new, readable) = unreadable_changes(&reported, &found);
    for (id, reason) in new {
        tracing::error!(
            endpoint_id = %id,
            reason = %reason,
            "endpoint unreadable: its deliveries fail until its secrets can be decrypted"
        );
    }
    for id in readable {
        tracing::info!(endpoint_id = %id, "endpoint no longer unreadable");
    }
    *reported = found.into_iter().map(|(id, _)| id).collect();
}

/// Of the unreadable endpoints `found` now, those not `reported` yet; and the reported
/// ones not found any more (readable again, or deleted).
fn unreadable_changes<'a>(
    reported: &BTreeSet<EndpointId>,
    found: &'a [(EndpointId, String)],
) -> (Vec<&'a (EndpointId, String)>, Vec<EndpointId>) {
    let new = found
        .iter()
        .filter(|(id, _)| !reported.contains(id))
        .collect();
    let readable = reported
        .iter()
        .filter(|id| !found.iter().any(|(f, _)| f == *id))
        .cloned()
        .collect();
    (new, readable)
}

/// Deletes finished deliveries older than `period`, and events left without deliveries, in
/// short transactions of `batch` rows with a pause between them, so that dispatching never
/// waits long behind it.
pub async fn purge(store: &dyn Store, metrics: &Metrics, period: Duration, batch: u32) {
    let cutoff = match store.now_ms().await {
        // Saturating: a period past what 64 bits of ms hold keeps everything, never wraps
        // around into a cutoff in the future that would delete everything.
        Ok(now) => now.saturating_sub(i64::try_from(period.as_millis()).unwrap_or(i64::MAX)),
        Err(e) => {
            return tracing::warn!(error = %e, "retention skipped: cannot read the database clock")
        }
    };
    let mut total = hookd_store::Purged::default();
    loop {
        match store.purge_finished(cutoff, batch).await {
            Ok(p) => {
                metrics
                    .retention_deleted
                    .with_label_values(&["deliveries"])
                    .inc_by(p.deliveries);
                metrics
                    .retention_deleted
                    .with_label_values(&["events"])
                    .inc_by(p.events);
                total.deliveries += p.deliveries;
                total.events += p.events;
                if p.deliveries < batch as u64 && p.events < batch as u64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention stopped early; it resumes at its next run");
                break;
            }
        }
    }
    if total.total() > 0 {
        tracing::info!(
            deliveries = total.deliveries,
            events = total.events,
            "retention deleted old rows"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unreadable_endpoint_is_reported_once() {
        let found = |ids: &[&str]| -> Vec<(EndpointId, String)> {
            ids.iter()
                .map(|id| (EndpointId::from(*id), "why".to_string()))
                .collect()
        };
        let set = |ids: &[&str]| -> BTreeSet<EndpointId> {
            ids.iter().map(|s| EndpointId::from(*s)).collect()
        };
        // (reported before, found now, newly reported, readable again)
        type Ids = &'static [&'static str];
        let cases: &[(Ids, Ids, Ids, Ids)] = &[
            (&[], &[], &[], &[]),
            (&[], &["ep_1"], &["ep_1"], &[]),
            (&["ep_1"], &["ep_1"], &[], &[]),
            (&["ep_1"], &["ep_1", "ep_2"], &["ep_2"], &[]),
            (&["ep_1", "ep_2"], &["ep_2"], &[], &["ep_1"]),
            (&["ep_1"], &[], &[], &["ep_1"]),
        ];
        for (before, now, new, readable) in cases {
            let now = found(now);
            let (got_new, got_readable) = unreadable_changes(&set(before), &now);
            let got_new: Vec<&str> = got_new.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(got_new, *new, "{before:?} -> {now:?}");
            assert_eq!(got_readable, *readable, "{before:?} -> {now:?}");
        }
    }

    fn skipped(metrics: &Metrics, job: &str) -> u64 {
        metrics.maintenance_skipped.with_label_values(&[job]).get()
    }

    fn runs(metrics: &Metrics, job: &str) -> u64 {
        metrics
            .maintenance_duration
            .with_label_values(&[job])
            .get_sample_count()
    }

    #[tokio::test]
    async fn a_run_is_skipped_while_the_previous_one_is_going() {
        let metrics = Metrics::new();
        let guard = NoOverlap::new("rescue", &metrics);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let guard = guard.clone();
            async move {
                guard
                    .run(async move {
                        started_tx.send(()).unwrap();
                        finish_rx.await.ok();
                    })
                    .await
            }
        });
        started.await.unwrap();

        let mut ran = false;
        assert!(!guard.run(async { ran = true }).await, "overlapping run");
        assert!(!ran);
        assert_eq!(skipped(&metrics, "rescue"), 1);
        // Another job has a guard of its own.
        assert!(NoOverlap::new("gauges", &metrics).run(async {}).await);

        finish.send(()).unwrap();
        assert!(first.await.unwrap(), "the first run ran");
        assert!(guard.run(async {}).await, "runs again once the first ended");
        assert_eq!(
            (runs(&metrics, "rescue"), skipped(&metrics, "rescue")),
            (2, 1)
        );
    }

    #[tokio::test]
    async fn a_run_that_panics_does_not_block_the_next() {
        let metrics = Metrics::new();
        let guard = NoOverlap::new("retention", &metrics);
        let panicked = tokio::spawn({
            let guard = guard.clone();
            async move { guard.run(async { panic!("a failing run") }).await }
        })
        .await;
        assert!(panicked.is_err());
        assert!(guard.run(async {}).await);
        assert_eq!(skipped(&metrics, "retention"), 0);
    }
}
