//! The worker pool: claim due deliveries in batches, make each attempt in its own task, and
//! hand the results to the recorder.
//!
//! No transaction is open during an HTTP call: a claim leases rows and commits, the attempt
//! runs, and the recorder writes the result only if the lease is still held. At most
//! `concurrency` attempts run at once: a semaphore permit travels with each task, and a
//! claim never asks for more rows than there are free permits.
//!
//! The dispatcher also reads the outbox. On SQLite an ingest creates the new deliveries it
//! has room for already leased to this dispatcher, in its own transaction, so that a new
//! event costs no claim; and while the pool is full it leaves the outbox alone: rows wait
//! there, in the queue the producer wrote them to, instead of becoming deliveries a claim
//! must read back. On PostgreSQL it reads the outbox as it comes, for claims.
//!
//! The parts; each depends only on parts below it (and `deliver.rs` on `mod.rs`'s `Shared`):
//!
//! - `mod.rs`: the loop, [`Dispatcher::run`]: starts the waiting rows that may start, shows
//!   the planner a [`planner::View`], runs the claim and the outbox read the plan names
//!   beside it, sleeps until something happens, tells the planner; and the drain at
//!   shutdown.
//! - `deliver.rs`: one started delivery's task: checks, the attempt, what comes next, the
//!   result sent to the recorder.
//! - `recorder.rs`: the task that writes results in batches, then the endpoints' health.
//! - `planner.rs`: the loop's decisions, without I/O: what to claim and read, how much, when
//!   to look again.
//! - `batching.rs`, `endpoint_health.rs`: the recorder's decisions, without I/O: when a
//!   batch is written and whom it wakes; which endpoints' health it writes.
//! - `intake.rs`: the handover of deliveries leased by the API's group commit: the room it
//!   may lease for, and the rows it hands over.
//! - `ready.rs`: claimed rows waiting for a place, started in turn per tenant, then per
//!   endpoint of the tenant.
//! - `isolation.rs`: the caps on attempts in flight, per endpoint and for retries.
//! - `attempt.rs`: one HTTP attempt; no database.

mod attempt;
mod batching;
mod deliver;
mod endpoint_health;
mod intake;
mod isolation;
mod planner;
mod ready;
mod recorder;

pub use attempt::{AttemptResult, Sender, USER_AGENT};
pub use intake::{Grant, Intake};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use hookd_store::{Claimed, IngestLease, IngestLimits, Ingested, Lease, Release, Store};

use crate::daemon::backoff;
use crate::daemon::config::Config;
use crate::daemon::metrics::Metrics;
use crate::daemon::otlp::Spans;
use crate::daemon::supervisor::{Supervisor, Task};
use crate::duration;
use isolation::InFlight;
use planner::{Planner, View};
use ready::Ready;
use recorder::Finished;

/// Everything the dispatcher and its tasks share.
struct Shared {
    store: Arc<dyn Store>,
    sender: Sender,
    metrics: Metrics,
    retry_schedule: Vec<Duration>,
    /// See [`crate::daemon::config::Config::retry_jitter`].
    retry_jitter: f64,
    request_timeout: Duration,
    lease: Duration,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    concurrency: usize,
    claim_batch: u32,
    poll_interval: Duration,
    wake_gap: Duration,
    shutdown_timeout: Duration,
    disable_after: Duration,
    /// Attempts one endpoint may have in flight.
    per_endpoint: usize,
    /// Retries that may be in flight; the rest of the pool is kept for first attempts.
    retry_concurrency: usize,
    wake: Arc<Notify>,
    limits: IngestLimits,
    /// Notified when a producer committed (PostgreSQL NOTIFY).
    outbox_wake: Arc<Notify>,
    /// Whether each outbox read takes every row it reads (up to `wakeup::BATCH`), room or
    /// not, and leases none, leaving them all to claims. PostgreSQL: its ingests and claims
    /// run side by side on their own connections, and each ingest's commit waits for a WAL
    /// flush, so big ingests with claims beside them go faster than ingests sized to the
    /// room (measured: 12,719 against 10,320 deliveries/s; 13,187 against 12,309 with big
    /// ingests leasing what room there was). SQLite: one writer, for which every claim saved
    /// counts: reads sized to the room, leasing all they create.
    read_whole_outbox: bool,
    /// Deliveries the API's group commit leased and hands over.
    intake: Intake,
    handed: mpsc::UnboundedReceiver<intake::Handed>,
}

impl Dispatcher {
    /// `wake` is notified whenever new work may be due (an API event, a resend, a NOTIFY);
    /// `outbox_wake` when a producer committed an outbox row (PostgreSQL NOTIFY; SQLite is
    /// polled every `poll_interval`).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Metrics,
        wake: Arc<Notify>,
        outbox_wake: Arc<Notify>,
        spans: Option<Arc<Spans>>,
    ) -> Dispatcher {
        metrics.concurrency_limit.set(config.concurrency as i64);
        let read_whole_outbox = store.backend() == "postgres";
        let (intake, handed) = Intake::new(config.lease_duration);
        Dispatcher {
            shared: Arc::new(Shared {
                store,
                sender: Sender::new(
                    config.target_policy(),
                    config.egress_proxy.as_ref(),
                    config.max_response_bytes,
                    config.concurrency,
                )
                .with_spans(spans),
                metrics,
                retry_schedule: config.retry_schedule.clone(),
                retry_jitter: config.retry_jitter,
                request_timeout: config.request_timeout,
                lease: config.lease_duration,
            }),
            concurrency: config.concurrency,
            claim_batch: config.claim_batch,
            poll_interval: config.poll_interval,
            wake_gap: config.wake_gap,
            shutdown_timeout: config.shutdown_timeout,
            disable_after: config.disable_after,
            per_endpoint: config.endpoint_concurrency,
            retry_concurrency: config.retry_concurrency(),
            wake,
            limits: IngestLimits {
                max_payload_bytes: config.max_payload_bytes,
                ..IngestLimits::default()
            },
            outbox_wake,
            read_whole_outbox,
            intake,
            handed,
        }
    }

    /// Where writers outside the loop (the API's group commit) take room and hand over the
    /// deliveries they leased.
    pub fn intake(&self) -> Intake {
        self.intake.clone()
    }

    /// Checks the payloads it ingests from the outbox with `check` (the catalog's
    /// schemas): one that fails ends `failed` with the reason.
    pub fn check_payloads(mut self, check: Arc<dyn hookd_store::PayloadCheck>) -> Dispatcher {
        self.limits.check = Some(check);
        self
    }

    /// Runs until `shutdown`; then claims nothing new, hands back what waits, gives
    /// attempts in flight up to `shutdown_timeout` to finish, releases the rest, and records
    /// every result. The recorder runs under `tasks`: its panic stops hookd.
    pub async fn run(mut self, shutdown: CancellationToken, tasks: Supervisor) {
        let freed = Arc::new(Notify::new());
        let (results, rx) = mpsc::channel(self.concurrency.max(batching::MAX_BATCH));
        let recorder = tokio::spawn(tasks.guard(
            Task::Recorder,
            recorder::run(
                self.shared.store.clone(),
                rx,
                self.shared.metrics.clone(),
                self.disable_after,
                recorder::Wakes {
                    room: freed.clone(),
                    new_work: self.wake.clone(),
                    soon: self.poll_interval,
                },
                self.concurrency,
            ),
        ));
        let pool = Pool {
            shared: self.shared.clone(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
            in_flight: InFlight::new(self.per_endpoint, self.retry_concurrency, freed.clone()),
            tasks: TaskTracker::new(),
            results,
            cut_short: CancellationToken::new(),
            max_wait: self.max_wait(),
        };
        let mut ready = Ready::default();
        let mut planner = Planner::new(self.planner_settings(), Instant::now());
        // The claim and the outbox read run beside the loop, so that rows already claimed
        // keep starting the moment a place frees while the next batch is fetched.
        let mut claiming: Option<OnItsWay<Vec<Claimed>>> = None;
        let mut ingesting: Option<OnItsWay<Ingested>> = None;
        self.shared.metrics.up.set(1);

        while !shutdown.is_cancelled() {
            let now = Instant::now();
            pool.start_waiting(&mut ready, now);
            let mut view = pool.view(&ready);
            // Places granted to writers are taken, for claims as for further grants.
            let outstanding = self.intake.outstanding();
            let room = intake::room(view.free_permits, view.waiting, outstanding);
            self.intake.publish(room, &view.busy);
            view.free_permits = view.free_permits.saturating_sub(outstanding);
            let plan = planner.plan(view, now);
            if let Some(ingest) = plan.ingest {
                let (shared, limits) = (self.shared.clone(), self.limits.clone());
                let call = async move { shared.ingest(&ingest, &limits).await };
                ingesting = Some(OnItsWay::start(now, call));
            }
            if let Some(claim) = plan.claim {
                let shared = self.shared.clone();
                let call = async move { shared.claim(&claim).await };
                claiming = Some(OnItsWay::start(Instant::now(), call));
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {}
                (started, claimed) = OnItsWay::end(&mut claiming) => {
                    self.claim_ended(claimed, started, &mut planner, &mut ready).await
                }
                Some(handed) = self.handed.recv() => self.take_handed(handed, &mut ready),
                (started, ingested) = OnItsWay::end(&mut ingesting) => {
                    self.ingest_ended(ingested, started, &mut planner, &mut ready)
                }
                _ = self.outbox_wake.notified() => planner.outbox_written(Instant::now()),
                // New work: ingestion, a resend, a NOTIFY, or recorded results that made
                // something due.
                _ = self.wake.notified() => planner.new_work(),
                // An attempt ended, or its result was recorded and its permit freed: a
                // waiting row may start; a claim may find room.
                _ = freed.notified() => {}
                _ = tokio::time::sleep_until(plan.wake_at.into()) => {}
            }
        }

        // A claim or an ingest cut short by shutdown may have leased rows: hand them back
        // with the rest. Both are awaited together: one may hold the SQLite writer that the
        // other waits for.
        let (claimed, ingested) =
            tokio::join!(OnItsWay::finish(claiming), OnItsWay::finish(ingesting));
        if let Some((started, Ok(claimed))) = claimed {
            for c in claimed {
                ready.push(c, started);
            }
        }
        if let Some((started, Ok(ingested))) = ingested {
            self.take_ingested(ingested, started, &mut ready);
        }
        // Writers lease nothing more once this is closed; what they handed over is released
        // with the rest.
        self.handed.close();
        while let Ok(handed) = self.handed.try_recv() {
            self.take_handed(handed, &mut ready);
        }
        let waiting = ready.drain();
        if !waiting.is_empty() {
            self.shared.release_all(&waiting).await;
        }
        pool.stop(self.shutdown_timeout).await;
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

    fn planner_settings(&self) -> planner::Settings {
        planner::Settings {
            claim_batch: self.claim_batch,
            poll_interval: self.poll_interval,
            wake_gap: self.wake_gap,
            max_wait: self.max_wait(),
            read_whole_outbox: self.read_whole_outbox,
            backoff: backoff::database(),
        }
    }

    /// Tells the planner how the claim started at `started` ended, and queues its rows.
    async fn claim_ended(
        &self,
        claimed: hookd_store::Result<Vec<Claimed>>,
        started: Instant,
        planner: &mut Planner,
        ready: &mut Ready,
    ) {
        match claimed {
            Ok(claimed) if claimed.is_empty() => {
                if let Some(empty) = planner.claimed_nothing() {
                    let wait = self.idle_wait(started).await;
                    planner.idle_until(empty, Instant::now() + wait);
                }
            }
            Ok(claimed) => {
                planner.claimed();
                self.shared
                    .metrics
                    .claim_batch
                    .observe(claimed.len() as f64);
                for c in claimed {
                    ready.push(c, started);
                }
            }
            Err(e) => {
                let delay = planner.claim_failed(Instant::now());
                tracing::warn!(error = %e, retry_in = %duration::format_duration(delay), "cannot claim deliveries");
            }
        }
    }

    /// Tells the planner how the outbox read started at `started` ended, and queues the
    /// deliveries it leased.
    fn ingest_ended(
        &self,
        ingested: hookd_store::Result<Ingested>,
        started: Instant,
        planner: &mut Planner,
        ready: &mut Ready,
    ) {
        match ingested {
            Ok(ingested) => {
                planner.ingested(&ingested, Instant::now());
                self.take_ingested(ingested, started, ready);
            }
            Err(e) => {
                let delay = planner.ingest_failed(Instant::now());
                tracing::warn!(error = %e, retry_in = %duration::format_duration(delay), "cannot read the outbox");
            }
        }
    }

    /// Counts an ingest and queues the deliveries it leased, as of `started`.
    fn take_ingested(&self, ingested: Ingested, started: Instant, ready: &mut Ready) {
        let metrics = &self.shared.metrics;
        metrics.outbox_ingested.inc_by(ingested.rows);
        metrics.ingest_leased.inc_by(ingested.claimed.len() as u64);
        for c in ingested.claimed {
            ready.push(c, started);
        }
    }

    /// Queues the deliveries a writer leased and handed over.
    fn take_handed(&self, handed: intake::Handed, ready: &mut Ready) {
        self.intake.received(&handed);
        self.shared
            .metrics
            .ingest_leased
            .inc_by(handed.claimed.len() as u64);
        for c in handed.claimed {
            ready.push(c, handed.leased_at);
        }
    }

    /// How long a claimed row may wait for a place: a quarter of its lease, so that its
    /// attempt still has most of the lease to run and be recorded in.
    fn max_wait(&self) -> Duration {
        self.shared.lease / 4
    }

    /// How long to wait after the empty claim that began at `started` ([`planner::idle_wait`]).
    async fn idle_wait(&self, started: Instant) -> Duration {
        let next_due = match self.shared.store.next_due_in_ms().await {
            Ok(next_due) => next_due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due time");
                return self.poll_interval;
            }
        };
        planner::idle_wait(next_due, started.elapsed(), self.poll_interval)
    }
}

/// A claim or an outbox read on its way, and when it started: the rows it leases have
/// their leases run from about then.
struct OnItsWay<T> {
    started: Instant,
    call: Pin<Box<dyn Future<Output = hookd_store::Result<T>> + Send>>,
}

impl<T> OnItsWay<T> {
    fn start(
        started: Instant,
        call: impl Future<Output = hookd_store::Result<T>> + Send + 'static,
    ) -> Self {
        OnItsWay {
            started,
            call: Box::pin(call),
        }
    }

    /// Waits for the call in `slot` to end, and empties it; never ends while `slot` is
    /// empty. Dropped unfinished, it leaves the call in `slot`.
    async fn end(slot: &mut Option<Self>) -> (Instant, hookd_store::Result<T>) {
        let Some(on) = slot else {
            return std::future::pending().await;
        };
        let result = (&mut on.call).await;
        let started = on.started;
        *slot = None;
        (started, result)
    }

    /// Waits for the call, if there is one.
    async fn finish(slot: Option<Self>) -> Option<(Instant, hookd_store::Result<T>)> {
        match slot {
            Some(on) => Some((on.started, on.call.await)),
            None => None,
        }
    }
}

/// The attempts: the permits they hold, their places under the caps, their tasks.
struct Pool {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    in_flight: InFlight,
    tasks: TaskTracker,
    results: mpsc::Sender<Finished>,
    /// Cancelled when the attempts still running at the shutdown timeout must stop.
    cut_short: CancellationToken,
    /// How long a claimed row may wait for a place.
    max_wait: Duration,
}

impl Pool {
    /// Starts each waiting row that may start at `now`, in a task of its own, and hands
    /// back those that waited `max_wait`.
    fn start_waiting(&self, ready: &mut Ready, now: Instant) {
        // Only this loop takes permits, so the ones counted available are still available
        // when taken.
        let free = self.permits.available_permits();
        let (start, stale) = ready.take(free, now, self.max_wait, |c| self.in_flight.admit(c));
        for (waiting, slot) in start {
            let permit = self
                .permits
                .clone()
                .try_acquire_owned()
                .expect("started no more than the available permits");
            let shared = self.shared.clone();
            let results = self.results.clone();
            let cut_short = self.cut_short.clone();
            self.tasks.spawn(async move {
                shared.deliver(waiting, permit, results, cut_short).await;
                drop(slot);
            });
        }
        if !stale.is_empty() {
            // Waited a quarter of the lease behind a slow endpoint: back to the queue. In
            // a task of its own: the loop must keep polling the claim and the ingest on
            // their way, which may be next in line for the SQLite writer (awaiting the
            // release here deadlocked the fault suite's locked-database scenario).
            let shared = self.shared.clone();
            self.tasks
                .spawn(async move { shared.release_all(&stale).await });
        }
    }

    /// What the planner needs to see of the pool and of the rows waiting in `ready`.
    fn view(&self, ready: &Ready) -> View {
        let per_endpoint = self.in_flight.per_endpoint();
        View {
            waiting: ready.len(),
            waiting_retries: ready.retries(),
            oldest_waiting: ready.oldest(),
            free_permits: self.permits.available_permits(),
            retry_places: self.in_flight.retry_room(),
            busy: self.in_flight.running(|running| {
                planner::busy_endpoints(running, ready.endpoints(), per_endpoint)
            }),
        }
    }

    /// Gives the attempts in flight up to `timeout` to finish, then cuts the rest short
    /// (each hands its delivery back); every result is then on its way to the recorder.
    async fn stop(self, timeout: Duration) {
        self.tasks.close();
        let in_flight = self.tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = %duration::format_duration(timeout), "waiting for attempts in flight");
        }
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "shutdown timeout: releasing attempts still in flight"
            );
            self.cut_short.cancel();
            self.tasks.wait().await;
        }
    }
}

impl Shared {
    /// Claims what `claim` says in one statement, skipping its busy endpoints.
    async fn claim(&self, claim: &planner::Claim) -> hookd_store::Result<Vec<Claimed>> {
        let lease = self.lease.as_millis() as u64;
        self.store.claim_due(claim.plan, &claim.busy, lease).await
    }

    /// Moves outbox rows into deliveries, leasing up to `ingest.want` of the new ones to
    /// this dispatcher; its `lease` says which rows it takes (`None`: all it reads, up to
    /// `wakeup::BATCH`, none leased). Its busy endpoints lease nothing.
    async fn ingest(
        &self,
        ingest: &planner::Ingest,
        limits: &IngestLimits,
    ) -> hookd_store::Result<Ingested> {
        let lease = ingest.lease.map(|consume| IngestLease {
            max: ingest.want,
            exclude_endpoints: &ingest.busy,
            consume,
            lease_ms: self.lease.as_millis() as u64,
        });
        self.store
            .ingest_leasing(crate::daemon::wakeup::BATCH, limits, lease)
            .await
    }

    /// Hands claimed deliveries back unsent, due at once ([`release_now`]).
    async fn release_all(&self, claimed: &[Claimed]) {
        release_now(self.store.as_ref(), claimed).await
    }
}

/// Hands leased deliveries back to the database unsent, due at once, retrying a database
/// that is briefly away; if it stays away, their leases expire and they are sent again.
pub async fn release_now(store: &dyn Store, claimed: &[Claimed]) {
    let leases: Vec<Lease> = claimed.iter().map(Claimed::lease).collect();
    let released = (|| store.release(&leases, Release::Now))
        .retry(backoff::database().with_max_times(5))
        .when(|e| e.is_transient())
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, deliveries = leases.len(), "cannot hand back deliveries; their leases will expire");
    }
}
