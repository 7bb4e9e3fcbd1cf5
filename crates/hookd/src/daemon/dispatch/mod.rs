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

mod attempt;
mod isolation;
mod ready;
mod recorder;

pub use attempt::{AttemptResult, Sender, USER_AGENT};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use hookd_store::{
    AttemptRecord, ClaimPlan, Claimed, Completion, Consume, IngestLease, IngestLimits, Ingested,
    Lease, Next, Release, Store, Trigger,
};

use crate::daemon::backoff;
use crate::daemon::config::Config;
use crate::daemon::metrics::Metrics;
use crate::daemon::retry;
use crate::daemon::supervisor::{Supervisor, Task};
use crate::duration;
use ready::{Ready, Waiting};

/// An attempt ends this long before its lease, so that its result is written while the
/// lease still holds.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// An outbox ingest on its way, leasing up to `want` of the deliveries it creates.
struct Ingesting {
    want: u32,
    /// The endpoints it leased nothing to.
    busy: Vec<String>,
    /// Which rows it consumes under its lease; `None`: every row it reads, none leased.
    lease: Option<Consume>,
    started: Instant,
    ingest: Pin<Box<dyn Future<Output = hookd_store::Result<Ingested>> + Send>>,
}

/// A claim on its way, and the endpoints it skips.
struct Claiming {
    want: u32,
    busy: Vec<String>,
    /// The retries it was allowed.
    retry_room: u32,
    /// When it started: its rows' leases run from about then.
    started: Instant,
    /// A wake-up arrived while it ran: it may have read the database before the new work
    /// was committed, so finding nothing does not mean there is nothing.
    woken: bool,
    claim: Pin<Box<dyn Future<Output = hookd_store::Result<Vec<Claimed>>> + Send>>,
}

/// What the last claim that found nothing could not take, and when to look again anyway.
/// Claiming again is worth a statement only after new work (a wake-up), once one of the
/// endpoints it skipped has room again, once more retries may start, or at `until` (the
/// next due time, at most the poll interval). A claim that finds rows changes none of that:
/// it can only have taken rows of a skipped endpoint that had room. Without this memory,
/// each claim while the endpoints with due rows are all at their caps reads every due row
/// only to skip them all: with 300,000 rows due to one busy endpoint, 35 ms of PostgreSQL
/// per claim.
struct FoundNothing {
    skipped: Vec<String>,
    retry_room: u32,
    until: Instant,
}

impl FoundNothing {
    fn worth_claiming(&self, busy: &[String], retry_room: u32) -> bool {
        retry_room > self.retry_room || self.skipped.iter().any(|id| !busy.contains(id))
    }
}

/// Outbox rows left for endpoints at their cap. They are read again once one of those has
/// room, at a wake-up (new rows behind them may go, and take them along), or after
/// `poll_interval`, when they are taken anyway, as pending deliveries for a claim: rows
/// behind them never wait longer for a slow endpoint.
struct OutboxBlocked {
    skipped: Vec<String>,
    since: Instant,
}

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
    ) -> Dispatcher {
        metrics.concurrency_limit.set(config.concurrency as i64);
        let read_whole_outbox = store.backend() == "postgres";
        Dispatcher {
            shared: Arc::new(Shared {
                store,
                sender: Sender::new(
                    config.target_policy(),
                    config.egress_proxy.as_ref(),
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
            limits: IngestLimits {
                max_payload_bytes: config.max_payload_bytes,
            },
            outbox_wake,
            read_whole_outbox,
        }
    }

    /// Runs until `shutdown`; then claims nothing new, hands back what waits, gives
    /// attempts in flight up to `shutdown_timeout` to finish, releases the rest, and records
    /// every result. The recorder runs under `tasks`: its panic stops hookd.
    pub async fn run(self, shutdown: CancellationToken, tasks: Supervisor) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (results, rx) = mpsc::channel(self.concurrency.max(recorder::MAX_BATCH));
        let freed = Arc::new(Notify::new());
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
        let tasks = TaskTracker::new();
        let cut_short = CancellationToken::new();
        let in_flight =
            isolation::InFlight::new(self.per_endpoint, self.retry_concurrency, freed.clone());
        let mut ready = Ready::default();
        let mut delays = backoff::database().build();
        // The claim runs beside the loop, so that rows already claimed keep starting the
        // moment a place frees while the next batch is fetched.
        let mut claiming: Option<Claiming> = None;
        let mut found_nothing: Option<FoundNothing> = None;
        let mut no_claim_before = Instant::now();
        let mut ingesting: Option<Ingesting> = None;
        // When to read the outbox next: at once while it may hold rows, else at the next poll.
        let mut read_outbox_at = Instant::now();
        let mut outbox_blocked: Option<OutboxBlocked> = None;
        let mut ingest_delays = backoff::database().build();
        self.shared.metrics.up.set(1);

        while !shutdown.is_cancelled() {
            // Start whatever may start: only this loop takes permits, so the ones counted
            // available are still available when taken.
            let (start, stale) =
                ready.take(&in_flight, permits.available_permits(), self.max_wait());
            for (waiting, slot) in start {
                let permit = permits
                    .clone()
                    .try_acquire_owned()
                    .expect("started no more than the available permits");
                let shared = self.shared.clone();
                let results = results.clone();
                let cut_short = cut_short.clone();
                tasks.spawn(async move {
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
                tasks.spawn(async move { shared.release_all(&stale).await });
            }

            // The room not yet asked for: free places, less what a claim or an ingest on its
            // way may bring.
            let asked = claiming.as_ref().map_or(0, |c| c.want) as usize
                + ingesting.as_ref().map_or(0, |i| i.want) as usize;
            let mut room = (self.claim_batch as usize)
                .saturating_sub(ready.len())
                .min(permits.available_permits())
                .saturating_sub(asked) as u32;
            let busy = in_flight.busy_endpoints(&ready);
            let retry_room = in_flight.retry_room().saturating_sub(ready.retries()) as u32;
            let claim_may_start = claiming.is_none()
                && Instant::now() >= no_claim_before
                && found_nothing
                    .as_ref()
                    .is_none_or(|f| f.worth_claiming(&busy, retry_room));
            let now = Instant::now();
            let (read_outbox, consume) = match &outbox_blocked {
                None => (now >= read_outbox_at, Consume::ToRoom),
                // One of the endpoints it waited for has room.
                Some(b) if b.skipped.iter().any(|id| !busy.contains(id)) => (true, Consume::ToRoom),
                // Waited `poll_interval`: rows for busy endpoints are taken along.
                Some(b) if now >= b.since + self.poll_interval => {
                    (now >= read_outbox_at, Consume::ToRoomPastBusy)
                }
                Some(_) => (now >= read_outbox_at, Consume::ToRoom),
            };
            // Whether an ingest may start once the outbox is due for a read: with no room, only
            // a freed place (`freed`) makes it worth waking for.
            let may_ingest = ingesting.is_none() && (room > 0 || self.read_whole_outbox);
            // A quarter (at least one place) stays for the claim when it may find due rows
            // (retries among them): new events must not starve what is already due.
            let (want, lease) = if self.read_whole_outbox {
                (0, None)
            } else if claim_may_start {
                (room - (room / 4).max(1).min(room), Some(consume))
            } else {
                (room, Some(consume))
            };
            if may_ingest && read_outbox && (want > 0 || self.read_whole_outbox) {
                room -= want;
                let shared = self.shared.clone();
                let (skip, limits) = (busy.clone(), self.limits);
                ingesting = Some(Ingesting {
                    want,
                    busy: busy.clone(),
                    lease,
                    started: now,
                    ingest: Box::pin(
                        async move { shared.ingest(want, &skip, lease, &limits).await },
                    ),
                });
            }
            if claim_may_start && room > 0 {
                let want = room;
                let shared = self.shared.clone();
                let skip = busy.clone();
                claiming = Some(Claiming {
                    want,
                    busy,
                    retry_room,
                    started: Instant::now(),
                    woken: false,
                    claim: Box::pin(async move { shared.claim(want, &skip, retry_room).await }),
                });
            }

            let wake_at = match (&found_nothing, &claiming) {
                (_, Some(_)) => Instant::now() + self.poll_interval,
                (Some(f), None) => f.until,
                (None, None) => (Instant::now() + self.poll_interval).max(no_claim_before),
            };
            let wake_at = if may_ingest && ingesting.is_none() {
                wake_at.min(read_outbox_at.max(now))
            } else {
                wake_at
            };
            // A waiting row is handed back on time even if nothing else happens.
            let wake_at = match ready.oldest() {
                Some(since) => wake_at.min(since + self.max_wait()),
                None => wake_at,
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {}
                claimed = async { (&mut claiming.as_mut().expect("guarded").claim).await },
                    if claiming.is_some() =>
                {
                    let Claiming { busy, retry_room, started, woken, .. } =
                        claiming.take().expect("a claim was running");
                    match claimed {
                        Ok(claimed) if claimed.is_empty() => {
                            delays = backoff::database().build();
                            if !woken {
                                found_nothing = Some(FoundNothing {
                                    skipped: busy,
                                    retry_room,
                                    until: Instant::now() + self.idle_wait().await,
                                });
                            }
                        }
                        Ok(claimed) => {
                            delays = backoff::database().build();
                            self.shared
                                .metrics
                                .claim_batch
                                .observe(claimed.len() as f64);
                            for c in claimed {
                                ready.push(c, started);
                            }
                        }
                        Err(e) => {
                            let delay = delays.next().unwrap_or(Duration::from_secs(5));
                            tracing::warn!(error = %e, retry_in = %duration::format_duration(delay), "cannot claim deliveries");
                            no_claim_before = Instant::now() + delay;
                        }
                    }
                }
                ingested = async { (&mut ingesting.as_mut().expect("guarded").ingest).await },
                    if ingesting.is_some() =>
                {
                    let Ingesting { started, busy, lease, .. } =
                        ingesting.take().expect("an ingest was running");
                    match ingested {
                        Ok(ingested) => {
                            if ingested.blocked {
                                let since = outbox_blocked.take().map_or(started, |b| b.since);
                                outbox_blocked = Some(OutboxBlocked { skipped: busy, since });
                            } else if lease == Some(Consume::ToRoom) {
                                outbox_blocked = None;
                            }
                            // (One that took rows for busy endpoints along keeps the mark:
                            // the next ones do too, while those stay busy.)
                            ingest_delays = backoff::database().build();
                            if ingested.due {
                                // Deliveries it could not lease: a claim must take them.
                                found_nothing = None;
                            }
                            // Rows left for busy endpoints are not worth reading at once.
                            read_outbox_at = if ingested.more && !ingested.blocked {
                                Instant::now()
                            } else {
                                Instant::now() + self.poll_interval
                            };
                            self.take_ingested(ingested, started, &mut ready);
                        }
                        Err(e) => {
                            let delay = ingest_delays.next().unwrap_or(Duration::from_secs(5));
                            tracing::warn!(error = %e, retry_in = %duration::format_duration(delay), "cannot read the outbox");
                            read_outbox_at = Instant::now() + delay;
                            // The backoff holds even for rows waiting for a busy endpoint.
                            outbox_blocked = None;
                            // It may have committed before failing (joining the endpoints of
                            // what it leased hands those back, due).
                            found_nothing = None;
                        }
                    }
                }
                _ = self.outbox_wake.notified() => read_outbox_at = Instant::now(),
                // New work: ingestion, a resend, a NOTIFY, or recorded results that made
                // something due.
                _ = self.wake.notified() => {
                    found_nothing = None;
                    if let Some(claiming) = claiming.as_mut() {
                        claiming.woken = true;
                    }
                }
                // An attempt ended, or its result was recorded and its permit freed: a
                // waiting row may start; a claim may find room.
                _ = freed.notified() => {}
                // The wait after an empty claim ends at its own time, not at the outbox's
                // next read or a waiting row's hand-back.
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    if found_nothing.as_ref().is_some_and(|f| Instant::now() >= f.until) {
                        found_nothing = None;
                    }
                }
            }
        }

        // A claim or an ingest cut short by shutdown may have leased rows: hand them back
        // with the rest. Both are awaited together: one may hold the SQLite writer that the
        // other waits for.
        let claimed = async {
            match claiming.take() {
                Some(c) => Some((c.started, c.claim.await)),
                None => None,
            }
        };
        let ingested = async {
            match ingesting.take() {
                Some(i) => Some((i.started, i.ingest.await)),
                None => None,
            }
        };
        let (claimed, ingested) = tokio::join!(claimed, ingested);
        if let Some((started, Ok(claimed))) = claimed {
            for c in claimed {
                ready.push(c, started);
            }
        }
        if let Some((started, Ok(ingested))) = ingested {
            self.take_ingested(ingested, started, &mut ready);
        }
        let waiting = ready.drain();
        if !waiting.is_empty() {
            self.shared.release_all(&waiting).await;
        }
        tasks.close();
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout = %duration::format_duration(self.shutdown_timeout), "waiting for attempts in flight");
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

    /// Counts an ingest and queues the deliveries it leased, as of `started`.
    fn take_ingested(&self, ingested: Ingested, started: Instant, ready: &mut Ready) {
        let metrics = &self.shared.metrics;
        metrics.outbox_ingested.inc_by(ingested.rows);
        metrics.ingest_leased.inc_by(ingested.claimed.len() as u64);
        for c in ingested.claimed {
            ready.push(c, started);
        }
    }

    /// How long a claimed row may wait for a place: a quarter of its lease, so that its
    /// attempt still has most of the lease to run and be recorded in.
    fn max_wait(&self) -> Duration {
        self.shared.lease / 4
    }

    /// How long to wait after a claim found nothing: until the next delivery is due, at
    /// most the poll interval.
    async fn idle_wait(&self) -> Duration {
        match self.shared.store.next_due_in_ms().await {
            // Overdue rows the claim did not take belong to busy endpoints or are retries
            // beyond their share: an ending attempt or the recorder wakes us.
            Ok(Some(ms)) if ms <= 0 => self.poll_interval,
            Ok(Some(ms)) => Duration::from_millis(ms as u64).min(self.poll_interval),
            Ok(None) => self.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due time");
                self.poll_interval
            }
        }
    }
}

impl Shared {
    /// Claims up to `want` in one statement: a quarter for retries (within `retry_room`),
    /// then first attempts, then more retries for what is left, all skipping `busy`
    /// endpoints. New events are never starved by retries, nor retries by a steady stream
    /// of new events.
    async fn claim(
        &self,
        want: u32,
        busy: &[String],
        retry_room: u32,
    ) -> hookd_store::Result<Vec<Claimed>> {
        let plan = ClaimPlan {
            max: want,
            retries_ahead: (want / 4).max(1),
            retries: retry_room,
            first_attempts: true,
        };
        let lease = self.lease.as_millis() as u64;
        self.store.claim_due(plan, busy, lease).await
    }

    /// Moves outbox rows into deliveries, leasing up to `want` of the new ones to this
    /// dispatcher; `consume` says which rows it takes (`None`: all it reads, up to
    /// `wakeup::BATCH`, none leased). Endpoints in `busy` lease nothing.
    async fn ingest(
        &self,
        want: u32,
        busy: &[String],
        consume: Option<Consume>,
        limits: &IngestLimits,
    ) -> hookd_store::Result<Ingested> {
        let lease = consume.map(|consume| IngestLease {
            max: want,
            exclude_endpoints: busy,
            consume,
            lease_ms: self.lease.as_millis() as u64,
        });
        self.store
            .ingest_leasing(crate::daemon::wakeup::BATCH, limits, lease)
            .await
    }

    /// One claimed delivery, from lease to recorded result.
    async fn deliver(
        &self,
        waiting: Waiting,
        permit: OwnedSemaphorePermit,
        results: mpsc::Sender<recorder::Finished>,
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
            .retry(backoff::database().with_max_times(5))
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
            .retry(backoff::database().with_max_times(5))
            .when(|e| e.is_transient())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, delivery_id = c.delivery_id, "cannot release a delivery; its lease will expire");
        }
    }
}

use backon::Retryable;
