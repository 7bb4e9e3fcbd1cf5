//! The daemon assembled: `Application::build(config)` connects, migrates and binds;
//! `run_until_stopped(shutdown)` runs everything until the token is cancelled.
//!
//! Tests build it with port 0 and read `.port()`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use hookd_store::{IngestLimits, Instance, Store};

use crate::daemon::api::{self, AppState};
use crate::daemon::catalog;
use crate::daemon::config::Config;
use crate::daemon::dispatch::Dispatcher;
use crate::daemon::health::Health;
use crate::daemon::maintenance;
use crate::daemon::metered::MeteredStore;
use crate::daemon::metrics::Metrics;
use crate::daemon::otlp::Spans;
use crate::daemon::redact::redact;
use crate::daemon::resend_jobs::{Pace, ResendJobs};
use crate::daemon::supervisor::{Supervisor, Task};
use crate::daemon::wakeup;

pub struct Application {
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    metrics: Metrics,
    /// This process's hold on its work (SQLite: the database file's lock), kept until it
    /// stops.
    instance: Instance,
}

impl Application {
    /// Connects to the database, applies migrations and binds the listen address.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        if config.admin_token.is_none() && !config.listen.ip().is_loopback() {
            bail!(
                "refusing to serve the admin API on {} without HOOKD_ADMIN_TOKEN: set a token or listen on 127.0.0.1",
                config.listen
            );
        }
        let metrics = Metrics::new();
        let store = MeteredStore::wrap(
            connect_with(
                &config.database_url,
                config.database_read_url.as_deref(),
                config.secret_key.as_deref(),
            )
            .await?,
            metrics.clone(),
        );
        metrics.watch_writer(&store);
        store
            .migrate()
            .await
            .context("cannot apply database migrations")?;
        if config.secret_key.is_none() {
            refuse_sealed_without_key(&*store).await?;
        }
        let instance = store
            .start_instance()
            .await
            .context("cannot start serving the database")?;
        if instance.released > 0 {
            metrics.lease_rescues.inc_by(instance.released);
            tracing::warn!(
                deliveries = instance.released,
                "released the leases a stopped process left in the database file; sending them again"
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Application {
            config,
            listener,
            store,
            metrics,
            instance,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.address().port()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Runs the dispatcher (which reads the outbox), the maintenance jobs and the HTTP server
    /// until `shutdown` is cancelled; then stops claiming, lets attempts in flight finish
    /// (up to `shutdown_timeout`), records them, and returns.
    ///
    /// If an essential task ends unexpectedly first (see [`crate::daemon::supervisor`]), `/readyz`
    /// answers 503 with the reason at once; the rest is shut down the same way, within
    /// [`STOP_AFTER_FAILURE`] at most, and the failure is returned.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            config,
            listener,
            store,
            metrics,
            instance,
        } = self;
        let dispatch_wake = Arc::new(Notify::new());
        let outbox_wake = Arc::new(Notify::new());
        let health = Arc::new(Health::default());
        let limits = IngestLimits {
            max_payload_bytes: config.max_payload_bytes,
            ..IngestLimits::default()
        };
        let schemas = catalog::Schemas::new();
        schemas
            .reload(store.as_ref())
            .await
            .context("cannot read the event-type catalog")?;
        // What the tasks stop on: the caller's shutdown, or a failure.
        let stop = shutdown.child_token();
        let tasks = Supervisor::new(stop.clone(), health.clone(), metrics.clone());
        #[cfg(feature = "fault-injection")]
        let tasks = tasks.with_fault(config.fault.clone());

        let schedule = maintenance::Schedule {
            rescue_cron: config.rescue_schedule.clone(),
            gauge_cron: config.gauge_schedule.clone(),
            retention_cron: config.retention_schedule.clone(),
            retention_period: config.retention_period,
            retention_batch: config.retention_batch,
        };
        let mut scheduler = maintenance::start(
            store.clone(),
            metrics.clone(),
            schedule,
            dispatch_wake.clone(),
            tasks.clone(),
        )
        .await
        .context("cannot start the maintenance jobs")?;

        let spans = match &config.otlp_endpoint {
            Some(endpoint) => {
                let spans = Spans::start(endpoint, config.otlp_protocol)
                    .map_err(|e| anyhow!("{e}"))
                    .context("cannot export traces (otlp_endpoint)")?;
                tracing::info!(
                    endpoint = %crate::daemon::redact::redact(endpoint.as_str()),
                    protocol = config.otlp_protocol.as_str(),
                    "exporting a span of every attempt over OTLP"
                );
                Some(Arc::new(spans))
            }
            None => None,
        };
        let dispatcher = Dispatcher::new(
            &config,
            store.clone(),
            metrics.clone(),
            dispatch_wake.clone(),
            outbox_wake.clone(),
            spans.clone(),
        )
        .check_payloads(schemas.clone());
        let intake = api::group_commit::GroupCommit::leases_for(store.backend())
            .then(|| dispatcher.intake());
        let dispatching = tasks.spawn(
            Task::Dispatcher,
            dispatcher.run(stop.clone(), tasks.clone()),
        );
        health.dispatching.store(true, Ordering::Relaxed);
        let jobs_wake = Arc::new(Notify::new());
        let resending = tasks.spawn(
            Task::ResendJobs,
            ResendJobs {
                store: store.clone(),
                metrics: metrics.clone(),
                pace: Pace::for_claim_batch(config.claim_batch),
                poll_interval: config.poll_interval,
                wake: jobs_wake.clone(),
                dispatch_wake: dispatch_wake.clone(),
            }
            .run(stop.clone()),
        );
        let relaying = tasks.spawn(
            Task::WakeupRelay,
            wakeup::relay_wakeups(
                store.clone(),
                outbox_wake,
                vec![dispatch_wake.clone()],
                metrics.clone(),
                stop.clone(),
            ),
        );
        let beating = tasks.spawn(
            Task::Maintenance,
            maintenance::heartbeat(
                store.clone(),
                metrics.clone(),
                config.heartbeat_interval,
                config.heartbeat_timeout,
                dispatch_wake.clone(),
                stop.clone(),
            ),
        );
        // SQLite's one write connection: nothing replaces it if its thread dies.
        let writing = tasks.spawn(Task::DatabaseWriter, {
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                tokio::select! {
                    reason = store.stopped() => Err(reason),
                    _ = stop.cancelled() => Ok(()),
                }
            }
        });
        #[cfg(feature = "fault-injection")]
        crate::daemon::fault::end_writer_when_tripped(config.fault.as_ref(), store.clone());

        let state = AppState::new(api::Shared {
            store: store.clone(),
            metrics: metrics.clone(),
            dispatch_wake: dispatch_wake.clone(),
            jobs_wake,
            admin_token: config.admin_token.as_deref().map(Arc::from),
            allowed_hosts: Arc::new(config.allowed_hosts()),
            targets: Arc::new(config.target_policy()),
            limits: limits.clone(),
            schemas: schemas.clone(),
            // The API checks payloads itself (a 422): its writes need no check.
            events: api::group_commit::GroupCommit::new(
                store.clone(),
                limits,
                api::group_commit::GroupCommit::in_flight_for(store.backend()),
                dispatch_wake.clone(),
            )
            .leasing_to(intake),
            health: health.clone(),
        });
        // Not essential: while it fails, the schemas last read still apply.
        tokio::spawn(schemas.refresh(store.clone(), stop.clone()));
        // The API stays up while the dispatcher drains, answering /readyz with 503.
        let stop_serving = CancellationToken::new();
        let serving = tasks.spawn(Task::HttpServer, {
            let stop = stop_serving.clone();
            async move {
                axum::serve(listener, api::router(state))
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
        });
        tracing::info!(
            listen = %config.listen,
            database = store.backend(),
            concurrency = config.concurrency,
            "hookd is serving"
        );

        let failure = tokio::select! {
            _ = shutdown.cancelled() => None,
            failure = tasks.failed() => Some(failure),
        };
        let failed = failure.is_some();
        stop.cancel();
        health.draining.store(true, Ordering::Relaxed);
        let running = [
            beating.abort_handle(),
            relaying.abort_handle(),
            resending.abort_handle(),
            writing.abort_handle(),
            dispatching.abort_handle(),
            serving.abort_handle(),
        ];
        let stopping = async {
            let _ = beating.await;
            let _ = relaying.await;
            let _ = resending.await;
            let _ = writing.await;
            let dispatched = dispatching.await;
            health.dispatching.store(false, Ordering::Relaxed);
            let _ = scheduler.shutdown().await;
            if failed {
                // A dead dispatcher's attempts still run: their results are worth recording.
                tasks.pieces_ended().await;
            }
            stop_serving.cancel();
            if let Some(spans) = spans {
                // The attempts are over: their last spans go out (blocking, bounded).
                let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
            }
            (dispatched, serving.await)
        };
        let Some(failure) = failure else {
            tracing::info!("shutting down: claiming nothing new");
            let (dispatched, served) = stopping.await;
            dispatched.context("the dispatcher panicked")?;
            served
                .context("the HTTP server panicked")?
                .context("the HTTP server failed")?;
            if let Some(failure) = tasks.failure() {
                bail!("{failure}");
            }
            // Nothing is leased any more: the heartbeat can go.
            if let Err(e) = store.stop_instance().await {
                tracing::warn!(error = %e, "cannot remove this instance's heartbeat");
            }
            drop(instance);
            tracing::info!("hookd stopped");
            return Ok(());
        };
        let within = config.shutdown_timeout.min(STOP_AFTER_FAILURE);
        tracing::info!(timeout = ?within, "shutting down after a failure");
        if tokio::time::timeout(within, stopping).await.is_err() {
            tracing::warn!(
                "shutdown after a failure cut short: leases left behind expire, and their deliveries are sent again"
            );
            running.iter().for_each(AbortHandle::abort);
            let _ = tokio::time::timeout(Duration::from_secs(1), scheduler.shutdown()).await;
        }
        drop(instance);
        Err(anyhow!("{failure}"))
    }
}

/// Without `HOOKD_SECRET_KEY`, no endpoint whose secrets are sealed could be sent to: refuse
/// to serve, and say what to set. (A wrong key is not refused: the endpoints it cannot
/// open fail alone, logged and counted in `hookd_endpoints_unreadable`.)
async fn refuse_sealed_without_key(store: &dyn Store) -> anyhow::Result<()> {
    let sealed = store
        .unreadable_endpoints()
        .await
        .context("cannot look for encrypted endpoint secrets")?;
    if sealed.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&str> = sealed.iter().take(3).map(|(id, _)| id.as_str()).collect();
    if sealed.len() > ids.len() {
        ids.push("...");
    }
    let (count, have) = match sealed.len() {
        1 => ("1 endpoint".to_string(), "has its"),
        n => (format!("{n} endpoints"), "have their"),
    };
    bail!(
        "{count} ({}) {have} secrets encrypted at rest, and HOOKD_SECRET_KEY is not set: set HOOKD_SECRET_KEY to the key they were encrypted with",
        ids.join(", ")
    )
}

/// How long shutting down after a failure may take at most (less when `shutdown_timeout`
/// is shorter): a process that cannot deliver is restarted soon.
pub const STOP_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Opens the database, waiting out a database that is still starting (up to ~30 s).
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    connect_sealed(url, None).await
}

/// Opens the database with endpoint secrets sealed by `secret_key` (base64, 32 bytes).
pub async fn connect_sealed(url: &str, secret_key: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    connect_with(url, None, secret_key).await
}

/// Opens the database, with a read replica at `read_url` when given (PostgreSQL).
pub async fn connect_with(
    url: &str,
    read_url: Option<&str>,
    secret_key: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    use backon::Retryable;
    let sealer = secret_key
        .map(|k| {
            crate::daemon::sealing::AesGcmSealer::from_base64(k)
                .map(|s| Arc::new(s) as Arc<dyn hookd_store::Sealer>)
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    (|| hookd_store::connect_with(url, read_url, sealer.clone()))
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(200))
                .with_max_delay(std::time::Duration::from_secs(5))
                .with_max_times(8),
        )
        .when(|e| e.is_transient())
        .notify(|e, delay| tracing::warn!(error = %e, retry_in = %crate::duration::format_duration(delay), "cannot reach the database yet"))
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))
}
