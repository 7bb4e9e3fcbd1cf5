//! Prometheus metrics. Every label is bounded: outcomes, states and operations, never an
//! event id, endpoint id or URL.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use hookd_store::{Next, Outcome, Store};

/// The daemon's metrics: one shared set, cloned cheaply (one reference count) into every
/// task and every API request.
#[derive(Clone)]
pub struct Metrics(Arc<Series>);

impl std::ops::Deref for Metrics {
    type Target = Series;
    fn deref(&self) -> &Series {
        &self.0
    }
}

/// Every series hookd exports.
pub struct Series {
    registry: Registry,
    /// `hookd_attempts_total{outcome}`.
    pub attempts: IntCounterVec,
    /// `hookd_attempt_duration_seconds`.
    pub attempt_duration: Histogram,
    /// `hookd_deliveries_pending`: pending or in flight.
    pub pending: IntGauge,
    /// `hookd_oldest_pending_age_seconds`: how long the oldest due delivery has waited.
    pub oldest_pending_age: Gauge,
    /// `hookd_outbox_rows`: producers' rows not yet turned into deliveries.
    pub outbox_rows: IntGauge,
    /// `hookd_deliveries_finished_total{state}`.
    pub finished: IntCounterVec,
    pub retries_scheduled: IntCounter,
    pub manual_resends: IntCounter,
    pub in_flight: IntGauge,
    pub concurrency_limit: IntGauge,
    pub claim_batch: Histogram,
    pub outbox_ingested: IntCounter,
    pub ingest_leased: IntCounter,
    pub lease_rescues: IntCounter,
    pub stale_completions: IntCounter,
    /// `hookd_store_errors_total{operation}`.
    pub store_errors: IntCounterVec,
    /// `hookd_store_query_duration_seconds{operation}`.
    pub store_query_duration: HistogramVec,
    /// `hookd_endpoint_disables_total{reason}`.
    pub endpoint_disables: IntCounterVec,
    /// `hookd_retention_deleted_total{table}`.
    pub retention_deleted: IntCounterVec,
    /// `hookd_endpoints_unreadable`: endpoints whose secrets cannot be decrypted now.
    pub endpoints_unreadable: IntGauge,
    /// The endpoints behind `endpoints_unreadable` whose error was already logged: once
    /// each, not once per attempt or per refresh.
    pub unreadable_reported: Arc<Mutex<BTreeSet<hookd_store::EndpointId>>>,
    /// `hookd_task_failures_total{task}`: essential tasks that ended unexpectedly.
    pub task_failures: IntCounterVec,
    /// `hookd_maintenance_job_duration_seconds{job}`.
    pub maintenance_duration: HistogramVec,
    /// `hookd_maintenance_runs_skipped_total{job}`: a run due while the previous one ran.
    pub maintenance_skipped: IntCounterVec,
    pub up: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).unwrap());
        let counter_vec = |name: &str, help: &str, label: &str| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), &[label]).unwrap(),
            )
        };
        let m = Series {
            attempts: counter_vec(
                "hookd_attempts_total",
                "HTTP attempts made, by outcome (success, http_error, timeout, network_error, blocked).",
                "outcome",
            ),
            attempt_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hookd_attempt_duration_seconds",
                        "Duration of HTTP attempts, from sending to the answer (or the timeout).",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        30.0,
                    ]),
                )
                .unwrap(),
            ),
            pending: register(
                &r,
                IntGauge::new(
                    "hookd_deliveries_pending",
                    "Deliveries not finished: due, scheduled for a retry, or in flight; and outbox rows not yet turned into deliveries.",
                )
                .unwrap(),
            ),
            outbox_rows: register(
                &r,
                IntGauge::new(
                    "hookd_outbox_rows",
                    "Outbox rows not yet turned into deliveries (also counted in hookd_deliveries_pending).",
                )
                .unwrap(),
            ),
            oldest_pending_age: register(
                &r,
                Gauge::new(
                    "hookd_oldest_pending_age_seconds",
                    "How long the oldest due, unfinished delivery (or outbox row) has been waiting to be sent.",
                )
                .unwrap(),
            ),
            finished: counter_vec(
                "hookd_deliveries_finished_total",
                "Deliveries that reached a final state, by state (succeeded, failed).",
                "state",
            ),
            retries_scheduled: counter("hookd_retries_scheduled_total", "Failed attempts scheduled for an automatic retry."),
            manual_resends: counter("hookd_manual_resends_total", "Deliveries resent by an operator."),
            in_flight: register(&r, IntGauge::new("hookd_in_flight_attempts", "HTTP attempts running now.").unwrap()),
            concurrency_limit: register(
                &r,
                IntGauge::new("hookd_concurrency_limit", "The most HTTP attempts that may run at once.").unwrap(),
            ),
            claim_batch: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("hookd_claim_batch_size", "Deliveries leased per claim that found work.")
                        .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
                )
                .unwrap(),
            ),
            outbox_ingested: counter("hookd_outbox_ingested_total", "Rows taken from hookd_outbox."),
            ingest_leased: counter(
                "hookd_ingest_leased_total",
                "Deliveries leased by the write that created them (an outbox read or a group of API events, SQLite), with no claim.",
            ),
            lease_rescues: counter(
                "hookd_lease_rescues_total",
                "Deliveries returned to pending because their lease expired (a worker died).",
            ),
            stale_completions: counter(
                "hookd_stale_completions_total",
                "Attempt results not recorded because the lease had been lost.",
            ),
            store_errors: counter_vec(
                "hookd_store_errors_total",
                "Database operations that failed, by operation.",
                "operation",
            ),
            store_query_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "hookd_store_query_duration_seconds",
                        "Duration of database operations, by operation (one operation may be several statements in one transaction).",
                    )
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
                    &["operation"],
                )
                .unwrap(),
            ),
            endpoint_disables: counter_vec(
                "hookd_endpoint_disables_total",
                "Endpoints disabled, by reason (operator, gone, failing).",
                "reason",
            ),
            retention_deleted: counter_vec(
                "hookd_retention_deleted_total",
                "Rows deleted by retention, by table (deliveries, events).",
                "table",
            ),
            endpoints_unreadable: register(
                &r,
                IntGauge::new(
                    "hookd_endpoints_unreadable",
                    "Endpoints whose secret or bearer token cannot be decrypted with HOOKD_SECRET_KEY (missing or wrong): their deliveries fail.",
                )
                .unwrap(),
            ),
            unreadable_reported: Arc::default(),
            task_failures: counter_vec(
                "hookd_task_failures_total",
                "Essential tasks that ended unexpectedly (a panic, an error, or a return while running), by task; hookd then exits with an error.",
                "task",
            ),
            maintenance_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "hookd_maintenance_job_duration_seconds",
                        "Duration of each run of a maintenance job, by job (rescue, gauges, retention).",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ]),
                    &["job"],
                )
                .unwrap(),
            ),
            maintenance_skipped: counter_vec(
                "hookd_maintenance_runs_skipped_total",
                "Runs of a maintenance job skipped because its previous run was still going, by job.",
                "job",
            ),
            up: register(&r, IntGauge::new("hookd_up", "1 while the dispatcher runs.").unwrap()),
            registry: r,
        };
        // Zero every labelled series up front so dashboards and alerts see them at once.
        for o in Outcome::ALL.iter().filter(|o| **o != Outcome::Lost) {
            m.attempts.with_label_values(&[o.as_str()]);
        }
        for s in ["succeeded", "failed"] {
            m.finished.with_label_values(&[s]);
        }
        for r in ["operator", "gone", "failing"] {
            m.endpoint_disables.with_label_values(&[r]);
        }
        for t in ["deliveries", "events"] {
            m.retention_deleted.with_label_values(&[t]);
        }
        for t in crate::daemon::task::Task::ALL {
            m.task_failures.with_label_values(&[t.as_str()]);
        }
        for job in ["rescue", "gauges", "retention"] {
            m.maintenance_duration.with_label_values(&[job]);
            m.maintenance_skipped.with_label_values(&[job]);
        }
        // The hot operations' error series exist from the start, so `increase()` sees the
        // first error.
        for op in [
            "claim_due",
            "complete",
            "ingest_outbox",
            "release",
            "rescue_expired",
            "backlog",
        ] {
            m.store_errors.with_label_values(&[op]);
        }
        Metrics(Arc::new(m))
    }

    /// Counts what one recorded attempt did.
    pub fn recorded(&self, next: Next) {
        match next {
            Next::Succeeded => self.finished.with_label_values(&["succeeded"]).inc(),
            Next::Failed => self.finished.with_label_values(&["failed"]).inc(),
            Next::RetryIn(_) => self.retries_scheduled.inc(),
        }
    }

    pub fn store_error(&self, operation: &str) {
        self.store_errors.with_label_values(&[operation]).inc();
    }

    /// Exposes `hookd_store_writer_busy_seconds_total`, read from `store` at each scrape,
    /// when the store has one write connection (SQLite). Holds the store weakly: the store
    /// holds these metrics.
    pub fn watch_writer(&self, store: &Arc<dyn Store>) {
        if store.writer_busy_seconds().is_none() {
            return;
        }
        self.registry
            .register(Box::new(WriterBusy::new(Arc::downgrade(store))))
            .expect("registered once");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// `hookd_store_writer_busy_seconds_total`: a counter kept by the store, not by us.
struct WriterBusy {
    store: Weak<dyn Store>,
    desc: Vec<Desc>,
}

const WRITER_BUSY: &str = "hookd_store_writer_busy_seconds_total";
const WRITER_BUSY_HELP: &str = "Time the SQLite write connection was held by an operation; \
     a rate near 1 means every write waits for the one before it.";

impl WriterBusy {
    fn new(store: Weak<dyn Store>) -> WriterBusy {
        let desc = Opts::new(WRITER_BUSY, WRITER_BUSY_HELP)
            .describe()
            .expect("a valid name");
        WriterBusy {
            store,
            desc: vec![desc],
        }
    }
}

impl Collector for WriterBusy {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(seconds) = self.store.upgrade().and_then(|s| s.writer_busy_seconds()) else {
            return Vec::new();
        };
        let counter = Counter::new(WRITER_BUSY, WRITER_BUSY_HELP).expect("a valid name");
        counter.inc_by(seconds);
        counter.collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
