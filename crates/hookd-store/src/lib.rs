//! hookd's durable state.
//!
//! Everything hookd knows lives in the database; a hookd process is disposable. This crate
//! is the only code that talks to the database. Its parts:
//!
//! - `lib.rs` (here): [`Store`], the one interface the daemon uses, with the types it takes
//!   and returns ([`ClaimPlan`], [`IngestLease`], [`Ingested`], [`Release`], ...);
//!   [`connect`], which picks a store by URL; and the sealing of secrets at rest
//!   ([`Sealer`]).
//! - `sqlite/`: [`SqliteStore`], the embedded default (WAL, one writer connection).
//!   `sqlite/mod.rs` is its `Store` methods and the statements only it runs; `sqlite/writer.rs`
//!   is the one write connection: how writes queue for it, its transactions, readiness
//!   when its thread ends, and the WAL checkpointer beside it; `sqlite/wal_watch.rs` the
//!   inotify watch of the WAL that wakes the dispatcher when a producer commits.
//! - `postgres.rs`: [`PgStore`], for production and several instances (`FOR UPDATE SKIP
//!   LOCKED`, LISTEN/NOTIFY): its `Store` methods and the statements only it runs.
//! - `replica.rs`: reads on a streaming replica, falling back to the primary while it fails.
//! - `pg_session.rs`: how hookd opens its PostgreSQL sessions (JIT off).
//! - `shared.rs`: the Rust both stores run around their statements, generic over sqlx's
//!   `Database`: the endpoint's bound values, endpoint lookups and pages, claimed rows
//!   joined with their endpoints, storing events and their deliveries, what an ingest did,
//!   the ordered endpoints a batch of results lets go.
//! - `emit.rs`: the writes of operational events, inside the transaction of the state
//!   change that causes them.
//! - [`catalog`]: the event-type catalog's record and statements, and [`PayloadCheck`],
//!   how an ingest checks payloads against their type's schema.
//! - `history.rs`: retention of PostgreSQL's history, kept in a partition per day: which
//!   partitions go whole. Pure.
//! - `limited.rs`: the rate-limited endpoints' part of a claim and of the idle wait, and
//!   the statements for them.
//! - `common.rs`: small pure helpers both stores call (the delivery-log filter, the
//!   windows a bulk resend reads, ...).
//! - [`ingest`]: what both stores do with incoming events around the statements that write
//!   them: ids, payload checks, fan-out, held and leased deliveries, which outbox rows an
//!   ingest takes. Pure.
//! - `sql.rs`: the statements both stores run, written once in PostgreSQL's words (SQLite's
//!   dialect replaces `hookd_now_ms()` and the index hints), and `Batch`, a statement over
//!   many rows.
//! - `rows.rs`: rows as the database returns them, and their conversion into the model.
//! - `values.rs`: how SQLite binds the rows of a batch statement.
//! - [`fair`]: how a claim shares its places between tenants, then endpoints. Pure.
//! - [`operational`]: hookd's own events (`hookd.endpoint.disabled`, ...): which state
//!   changes make one, its payload, the tenants it goes to. Pure.
//! - [`matching`]: the pure rules that pick the endpoints an event goes to.
//! - [`model`]: the records: endpoints, events, deliveries and their attempts.
//! - `error.rs`: [`StoreError`], one variant per kind of failure.
//! - [`summary`]: per endpoint, how its recent deliveries went (the dashboard's overview).
//! - [`tenant`]: tenant ids and the [`Scope`] every confined call takes.
//! - [`rate`]: an endpoint's rate limit and the budget arithmetic behind it. Pure.
//!
//! Dependencies run down this list: a module uses only modules below it (and any of them
//! the types of the interface above), so the shared modules know neither store. One
//! conformance suite (`tests/it/conformance/`) holds both stores to the same behaviour.
//!
//! The state machine of a delivery, fenced by leases, is drawn in `docs/state-machine.md`.
//! Times are integer milliseconds since the Unix epoch, always read from the database's
//! clock, so instances whose clocks disagree still agree on when a delivery is due.

pub mod matching;
pub mod model;

pub mod catalog;
mod common;
mod emit;
mod error;
pub mod fair;
mod history;
pub mod ingest;
mod limited;
pub mod operational;
mod outbox_share;
mod pg_session;
mod postgres;
pub mod rate;
mod replica;
mod rows;
mod shared;
mod sql;
mod sqlite;
pub mod summary;
pub mod tenant;
mod values;

use async_trait::async_trait;

pub use catalog::{EventType, PayloadCheck};
pub use error::{Result, StoreError};
pub use ingest::{json_depth, payload_error, storable_traceparent, IngestLimits};
pub use model::*;
pub use postgres::PgStore;
pub use rate::RateLimit;
pub use sqlite::SqliteStore;
pub use summary::{EndpointSummary, Summaries};
pub use tenant::{Scope, TenantId};

/// Which due deliveries one claim takes, in one statement. First attempts and retries are
/// read from their own partial indexes in due order, so that a storm of retries cannot
/// starve new events (the dispatcher caps the retries in flight) nor a steady stream of new
/// events starve retries: up to `retries_ahead` retries first, then first attempts, then
/// more retries while `max` and `retries` leave room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPlan {
    /// Deliveries in all.
    pub max: u32,
    /// Retries taken before any first attempt (clamped to `retries` and `max`).
    pub retries_ahead: u32,
    /// Retries in all.
    pub retries: u32,
    /// Whether first attempts are taken at all.
    pub first_attempts: bool,
}

impl ClaimPlan {
    /// Up to `max` first attempts, no retries.
    pub fn first_attempts(max: u32) -> Self {
        ClaimPlan {
            max,
            retries_ahead: 0,
            retries: 0,
            first_attempts: true,
        }
    }

    /// Up to `max` retries, no first attempts.
    pub fn retries(max: u32) -> Self {
        ClaimPlan {
            max,
            retries_ahead: max,
            retries: max,
            first_attempts: false,
        }
    }

    /// Up to `max` of any kind, first attempts first.
    pub fn any(max: u32) -> Self {
        ClaimPlan {
            max,
            retries_ahead: 0,
            retries: max,
            first_attempts: true,
        }
    }

    /// The three row limits of the claim statement: retries ahead, first attempts, and
    /// retries after them (which skip the ones ahead, read in the same order).
    pub(crate) fn limits(&self) -> (i64, i64, i64) {
        let retries = self.retries.min(self.max);
        let ahead = self.retries_ahead.min(retries);
        let first = if self.first_attempts { self.max } else { 0 };
        (ahead as i64, first as i64, (retries - ahead) as i64)
    }
}

/// What an ingest may lease straight to its caller as it creates deliveries: the
/// dispatcher's free room. A delivery leased this way skips the claim statement, about half
/// of the SQLite writer's time per delivery at saturation (docs/benchmarks.md).
#[derive(Debug, Clone, Copy)]
pub struct IngestLease<'a> {
    /// Deliveries to lease at most. Outbox rows are consumed in order until this many are
    /// leased: the rest stay in the outbox, the queue, until there is room for them.
    pub max: u32,
    /// Endpoints at their cap: their deliveries are not leased.
    pub exclude_endpoints: &'a [EndpointId],
    /// Which outbox rows it consumes.
    pub consume: Consume,
    pub lease_ms: u64,
}

/// Which outbox rows an ingest under an [`IngestLease`] consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    /// Rows up to the one that fills the room. Rows at the end whose deliveries all go to
    /// endpoints at their cap stay in the outbox too, until those have room (rows of theirs
    /// before a row that can go are taken along, as pending deliveries).
    ToRoom,
    /// Rows up to the one that fills the room; busy endpoints' rows become pending
    /// deliveries, for a claim.
    ToRoomPastBusy,
}

/// What one ingest did.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Outbox rows consumed.
    pub rows: u64,
    /// Deliveries created leased to the caller (see [`IngestLease`]).
    pub claimed: Vec<Claimed>,
    /// Whether it created deliveries due now that it did not lease: a claim must take them.
    pub due: bool,
    /// Whether the outbox may hold more rows now: it read all it could, or stopped at the
    /// lease's `max`.
    pub more: bool,
    /// Whether it left rows in the outbox only because their endpoints are busy
    /// ([`Consume::ToRoom`]): worth reading again once one of those has room.
    pub blocked: bool,
}

/// How `release` hands back a claimed delivery whose attempt was never made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Due again at once (shutdown, or the attempt could not start).
    Now,
    /// Pending with no due time until its endpoint is enabled again.
    Park,
    /// Finished as failed with this reason (its endpoint was deleted).
    Fail(String),
}

/// A claimed delivery's identity and fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub delivery_id: i64,
    pub token: String,
}

/// A started instance (see [`Store::start_instance`]): what it released at start, and, on
/// SQLite, the lock that makes it the one process serving the file, held while this lives.
#[derive(Debug)]
pub struct Instance {
    /// Leases of a dead process released at start (SQLite), due again at once.
    pub released: u64,
    hold: Option<std::fs::File>,
}

impl Instance {
    /// An instance holding `hold` (its lock) while it lives.
    pub(crate) fn new(released: u64, hold: Option<std::fs::File>) -> Self {
        Self { released, hold }
    }

    /// Whether it holds a lock on a file.
    pub fn holds_lock(&self) -> bool {
        self.hold.is_some()
    }
}

/// Something that wakes the dispatcher when another process added work.
#[async_trait]
pub trait WakeSource: Send {
    /// Waits for the next wake-up. An error means the source broke; the caller backs off
    /// and calls again (it reconnects).
    async fn wait(&mut self) -> Result<()>;
    /// Whether a wake-up says only that the outbox may have new rows (SQLite's WAL watch,
    /// which hookd's own commits trigger too), not that deliveries may be due.
    fn outbox_only(&self) -> bool {
        false
    }
}

/// hookd's state, behind one interface with a SQLite and a PostgreSQL implementation.
///
/// The same conformance suite (`tests/it/conformance/`) runs against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// How long, in all, the one write connection has been held by an operation, for a
    /// store that has one (SQLite); `None` for a store that does not (PostgreSQL). Its rate
    /// is the share of the time during which every other write had to wait.
    fn writer_busy_seconds(&self) -> Option<f64> {
        None
    }
    /// Waits until a part of the store that nothing in this process replaces has stopped,
    /// and says which: SQLite's one write connection, once its thread has ended. Every
    /// write then fails at once with [`StoreError::Stopped`] and `check_ready` fails; only
    /// a restart helps (the state is in the database). Never returns for a store without
    /// such a part (PostgreSQL's pool replaces a broken connection).
    async fn stopped(&self) -> String {
        std::future::pending().await
    }
    /// Test seam (feature `fault-injection`): ends the thread of the store's one write
    /// connection, as a crash inside the driver would. `false` for a store without one.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    async fn end_writer_thread(&self) -> bool {
        false
    }
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Ok when the database answers and every migration is applied.
    async fn check_ready(&self) -> Result<()>;
    /// The database clock, in ms.
    async fn now_ms(&self) -> Result<i64>;
    /// A source of wake-ups from other processes: PostgreSQL's LISTEN; on SQLite a watch of
    /// the write-ahead log, which every commit writes (none for a database in memory). The
    /// dispatcher polls besides.
    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>>;

    // --- endpoints -------------------------------------------------------------------
    //
    // The calls the API makes for data take a [`Scope`] (`..._in`) and build it into their
    // SQL: in a tenant's scope, another tenant's rows do not exist. The unscoped forms are
    // the admin's scope, for the daemon's own work.

    /// Stores a new endpoint; `created_at`/`updated_at` are set from the database clock.
    async fn insert_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint>;
    /// A live (not deleted) endpoint visible in `scope`.
    async fn endpoint_in(&self, scope: &Scope, id: &EndpointId) -> Result<Option<Endpoint>>;
    /// A live (not deleted) endpoint.
    async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        self.endpoint_in(&Scope::Admin, id).await
    }
    /// Live endpoints visible in `scope`, ordered by id, after `after`.
    async fn endpoints_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Endpoint>>;
    /// Live endpoints ordered by id, after `after`.
    async fn endpoints(&self, after: Option<&str>, limit: u32) -> Result<Vec<Endpoint>> {
        self.endpoints_in(&Scope::Admin, after, limit).await
    }
    /// [`Store::update_endpoint_if`] of an endpoint visible in `scope` (else `NotFound`).
    /// An endpoint's tenant never changes, so the check cannot race the write.
    async fn update_endpoint_in(
        &self,
        scope: &Scope,
        endpoint: &Endpoint,
        if_version: Option<i64>,
    ) -> Result<Versioned<Endpoint>> {
        if self.endpoint_in(scope, &endpoint.id).await?.is_none() {
            return Ok(Versioned::NotFound);
        }
        self.update_endpoint_if(endpoint, if_version).await
    }
    /// [`Store::delete_endpoint_if`] of an endpoint visible in `scope` (else `NotFound`).
    async fn delete_endpoint_in(
        &self,
        scope: &Scope,
        id: &EndpointId,
        if_version: Option<i64>,
    ) -> Result<Versioned<()>> {
        if self.endpoint_in(scope, id).await?.is_none() {
            return Ok(Versioned::NotFound);
        }
        self.delete_endpoint_if(id, if_version).await
    }
    /// Replaces an endpoint's mutable fields and adds one to its version; with `if_version`,
    /// only while the endpoint still has that version (compared in the same statement).
    /// Disabling parks its pending deliveries; enabling makes parked ones due at once. A
    /// change of `enabled` writes `hookd.endpoint.enabled` or `.disabled` ([`operational`]).
    async fn update_endpoint_if(
        &self,
        endpoint: &Endpoint,
        if_version: Option<i64>,
    ) -> Result<Versioned<Endpoint>>;
    /// [`Store::update_endpoint_if`] with no condition. `None` when there is no such live
    /// endpoint.
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<Option<Endpoint>> {
        Ok(match self.update_endpoint_if(endpoint, None).await? {
            Versioned::Done(e) => Some(e),
            Versioned::NotFound | Versioned::Changed => None,
        })
    }
    /// Live endpoints whose stored secrets this store cannot decrypt (no key, or another
    /// key than they were sealed with), as `(id, reason)`, ordered by id. Without a key,
    /// every live endpoint holding a sealed value. One read of the endpoints table.
    async fn unreadable_endpoints(&self) -> Result<Vec<(EndpointId, String)>>;
    /// Deletes an endpoint (its history stays readable) and fails its pending deliveries;
    /// with `if_version`, only while the endpoint still has that version.
    async fn delete_endpoint_if(
        &self,
        id: &EndpointId,
        if_version: Option<i64>,
    ) -> Result<Versioned<()>>;
    /// [`Store::delete_endpoint_if`] with no condition: `false` when there is no such live
    /// endpoint.
    async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool> {
        Ok(self.delete_endpoint_if(id, None).await? == Versioned::Done(()))
    }
    /// Disables a live endpoint with a reason and parks its pending deliveries, writing
    /// `hookd.endpoint.disabled`. `false` when it was already disabled (or does not exist).
    async fn disable_endpoint(&self, id: &EndpointId, reason: &str) -> Result<bool>;
    /// Notes, per endpoint, whether a batch of attempts had a success; an endpoint failing
    /// with no success for `disable_after_ms` or more is disabled with `reason`. Returns the
    /// endpoints disabled now. A failing period that begins writes `hookd.endpoint.failing`
    /// (at most once an hour per endpoint), a disabling `hookd.endpoint.disabled`.
    async fn record_endpoint_health(
        &self,
        outcomes: &[(EndpointId, bool)],
        disable_after_ms: Option<i64>,
        reason: &str,
    ) -> Result<Vec<EndpointId>>;

    // --- events ----------------------------------------------------------------------
    /// Stores an event and its deliveries in one transaction. A known `event_id` creates
    /// nothing and reports the first enqueue's delivery count.
    async fn enqueue_event(&self, event: &NewEvent, limits: &IngestLimits) -> Result<Enqueued> {
        let mut done = self
            .enqueue_events(std::slice::from_ref(event), limits)
            .await?;
        Ok(done.pop().expect("one event in, one answer out"))
    }
    /// Stores a group of events and their deliveries in one transaction (the API's group
    /// commit), one answer per event in order, each as [`Store::enqueue_event`] would give
    /// it: a known `event_id`, or one repeated within the group, creates nothing and reports
    /// the first enqueue's delivery count. Statements per group: a constant, not per event.
    async fn enqueue_events(
        &self,
        events: &[NewEvent],
        limits: &IngestLimits,
    ) -> Result<Vec<Enqueued>> {
        Ok(self.enqueue_events_leasing(events, limits, None).await?.0)
    }
    /// Like [`Store::enqueue_events`], and in the same transaction leases to the caller the
    /// new deliveries due now, up to `lease.max`, as [`Store::ingest_leasing`] does (every
    /// event is stored whatever the room: `lease.consume` does not apply). The [`Ingested`]
    /// says what was leased and whether deliveries due now were left for a claim.
    async fn enqueue_events_leasing(
        &self,
        events: &[NewEvent],
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<(Vec<Enqueued>, Ingested)>;
    /// Moves up to `max_rows` rows from `hookd_outbox` into events and deliveries, in one
    /// transaction. Returns the number of outbox rows consumed.
    async fn ingest_outbox(&self, max_rows: u32, limits: &IngestLimits) -> Result<u64> {
        Ok(self.ingest_leasing(max_rows, limits, None).await?.rows)
    }
    /// Like [`Store::ingest_outbox`], and in the same transaction leases to the caller the
    /// new deliveries that are due now, up to `lease.max`: they are created `in_flight`, as
    /// a claim would leave them, with their first attempt counted. With a lease it stops
    /// consuming rows once `lease.max` deliveries are leased (see [`Consume`]). The
    /// dispatcher leases on SQLite; on PostgreSQL it ingests without a lease, for claims.
    async fn ingest_leasing(
        &self,
        max_rows: u32,
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<Ingested>;
    /// An event visible in `scope`.
    async fn event_in(&self, scope: &Scope, event_id: &EventId) -> Result<Option<Event>>;
    async fn event(&self, event_id: &EventId) -> Result<Option<Event>> {
        self.event_in(&Scope::Admin, event_id).await
    }

    // --- dispatch --------------------------------------------------------------------
    /// Leases the due deliveries `plan` names for `lease_ms`, skipping the endpoints in
    /// `exclude_endpoints`, and counts the attempt. First attempts are shared fairly between
    /// the tenants with some due, then between each tenant's endpoints ([`fair`]), oldest due
    /// first within an endpoint; retries go oldest due first. A read of the endpoints with
    /// due work, then one claim statement; nothing stays locked after it returns.
    async fn claim_due(
        &self,
        plan: ClaimPlan,
        exclude_endpoints: &[EndpointId],
        lease_ms: u64,
    ) -> Result<Vec<Claimed>>;
    /// Leases up to `max` due deliveries of any kind, first attempts first.
    async fn claim(&self, max: u32, lease_ms: u64) -> Result<Vec<Claimed>> {
        self.claim_due(ClaimPlan::any(max), &[], lease_ms).await
    }
    /// Records attempt results in one transaction, each only if its lease is still held.
    /// Returns, per completion, whether it was recorded. A delivery that gives up (a final
    /// automatic failure) writes `hookd.delivery.exhausted`, unless it was a `hookd.*` one.
    async fn complete(&self, batch: &[Completion]) -> Result<Vec<bool>>;
    /// Hands back claimed deliveries whose attempt was never made; the claim's attempt
    /// count is undone.
    async fn release(&self, leases: &[Lease], how: Release) -> Result<u64>;
    /// Returns deliveries whose lease expired to pending (due now), logging the lost
    /// attempt. Returns how many.
    async fn rescue_expired(&self) -> Result<u64>;
    /// Starts this store's instance: the process that serves from it from now on, whose
    /// leases are its own. SQLite: takes the database file's exclusive lock (a side file
    /// `<db>.lock`, held until the returned [`Instance`] is dropped; another process holding
    /// it is [`StoreError::Locked`]) and, since no other process can have a live lease in
    /// the file, releases every lease in it at once as a rescue would. PostgreSQL: writes
    /// the instance's first heartbeat; its claims record the instance on their leases.
    async fn start_instance(&self) -> Result<Instance>;
    /// Writes this instance's heartbeat (database clock) and takes back, as a rescue would,
    /// the leases of every instance whose heartbeat is older than `dead_after_ms`. Returns
    /// how many it took back. SQLite: nothing to do (one process owns the file).
    async fn heartbeat(&self, dead_after_ms: u64) -> Result<u64>;
    /// Forgets this instance's heartbeat after a graceful stop, which left it no lease.
    async fn stop_instance(&self) -> Result<()>;
    /// Lets the oldest held delivery of each ordered endpoint go when nothing else of that
    /// endpoint is on its way (the safety net behind the promotion on completion). Returns
    /// how many.
    async fn promote_stranded(&self) -> Result<u64>;
    /// Milliseconds until the earliest pending delivery is due (≤ 0: due now). A
    /// rate-limited endpoint's rows count as due once its budget allows one more: while
    /// rows are overdue and such an endpoint waits for its budget, that wait.
    async fn next_due_in_ms(&self) -> Result<Option<i64>>;

    // --- the delivery log -------------------------------------------------------------
    /// Newest first, with ids below `before_id`.
    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// [`Store::deliveries`] visible in `scope`: the filter confined to its tenant.
    async fn deliveries_in(
        &self,
        scope: &Scope,
        filter: &DeliveryFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.deliveries(&filter.confined(scope), before_id, limit)
            .await
    }
    /// A delivery visible in `scope`.
    async fn delivery_in(&self, scope: &Scope, id: i64) -> Result<Option<Delivery>>;
    async fn delivery(&self, id: i64) -> Result<Option<Delivery>> {
        self.delivery_in(&Scope::Admin, id).await
    }
    /// Oldest first.
    async fn attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>>;
    /// Asks for one manual attempt now, whatever the state (after the running one, when in
    /// flight), of a delivery visible in `scope`. `false` when there is no such delivery.
    async fn resend_in(&self, scope: &Scope, id: i64) -> Result<bool>;
    async fn resend(&self, id: i64) -> Result<bool> {
        self.resend_in(&Scope::Admin, id).await
    }
    /// Records a bulk resend of everything matching `filter` now, to be worked through by
    /// `step_resend_jobs`. `filter.tenant_id` confines it to that tenant.
    async fn create_resend_job(&self, filter: &DeliveryFilter) -> Result<ResendJob>;
    /// [`Store::create_resend_job`] of the deliveries visible in `scope`.
    async fn create_resend_job_in(
        &self,
        scope: &Scope,
        filter: &DeliveryFilter,
    ) -> Result<ResendJob> {
        self.create_resend_job(&filter.confined(scope)).await
    }
    /// A bulk resend job created in `scope` (a tenant sees its own only).
    async fn resend_job_in(&self, scope: &Scope, id: &str) -> Result<Option<ResendJob>>;
    async fn resend_job(&self, id: &str) -> Result<Option<ResendJob>> {
        self.resend_job_in(&Scope::Admin, id).await
    }
    /// Resends the next `batch` deliveries of the oldest running job, in one transaction that
    /// also moves its cursor, unless `max_due` manual resends are already waiting to be
    /// sent. The chunk is read beforehand, outside the write transaction, so a step holds
    /// the write lock for the resends only. Returns how many were resent.
    async fn step_resend_jobs(&self, batch: u32, max_due: u32) -> Result<u64>;

    // --- summaries ------------------------------------------------------------------------
    /// Live endpoints ordered by id after `after` (at most `limit`), each with its figures
    /// over the last `window_ms`: its deliveries created since then by their state now, and
    /// its unfinished deliveries of any age. The cost follows the window's deliveries of
    /// these endpoints and their backlog, never the older history (see [`summary`]).
    async fn endpoint_summaries_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<Summaries>;
    async fn endpoint_summaries(
        &self,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<Summaries> {
        self.endpoint_summaries_in(&Scope::Admin, after, limit, window_ms)
            .await
    }

    // --- tenant tokens --------------------------------------------------------------------
    /// Stores a tenant token by its hash, valid for `ttl_ms` from now (database clock).
    /// Returns when it expires (ms).
    async fn insert_tenant_token(
        &self,
        token_hash: &str,
        tenant: &TenantId,
        ttl_ms: i64,
    ) -> Result<i64>;
    /// The tenant of an unexpired token with this hash, if any.
    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<TenantId>>;
    /// Deletes every token of `tenant`; returns how many.
    async fn revoke_tenant_tokens(&self, tenant: &TenantId) -> Result<u64>;

    // --- the event-type catalog -----------------------------------------------------------
    //
    // Provider-wide: no scope. The catalog is small (a few hundred types at most).

    /// Catalogued event types ordered by name, after `after`.
    async fn event_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EventType>>;
    async fn event_type(&self, name: &str) -> Result<Option<EventType>>;
    /// Adds an event type; `created_at`/`updated_at` are set from the database clock. A
    /// name already there is [`StoreError::Conflict`].
    async fn insert_event_type(&self, event_type: &EventType) -> Result<EventType>;
    /// Replaces a type's description and schema. `None` when there is no such type.
    async fn update_event_type(&self, event_type: &EventType) -> Result<Option<EventType>>;
    /// `false` when there is no such type.
    async fn delete_event_type(&self, name: &str) -> Result<bool>;

    // --- gauges and retention ------------------------------------------------------------
    async fn backlog(&self) -> Result<Backlog>;
    /// Deletes up to `batch` finished deliveries (and their attempts) that finished before
    /// `before_ms`, and up to `batch` events older than that with no delivery left. One
    /// short transaction; call again while it returns `batch`.
    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<Purged>;
}

/// Opens the store a database URL names: `sqlite://...` or `postgres://...`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    connect_sealed(url, None).await
}

/// Like [`connect`], encrypting endpoint secrets and bearer tokens at rest with `sealer`.
pub async fn connect_sealed(
    url: &str,
    sealer: Option<std::sync::Arc<dyn Sealer>>,
) -> Result<std::sync::Arc<dyn Store>> {
    connect_with(url, None, sealer).await
}

/// Like [`connect_sealed`], reading the delivery log, lists and gauges from the PostgreSQL
/// streaming replica at `read_url`, when given (ignored for SQLite, which has no replica:
/// the daemon's configuration refuses that pair).
pub async fn connect_with(
    url: &str,
    read_url: Option<&str>,
    sealer: Option<std::sync::Arc<dyn Sealer>>,
) -> Result<std::sync::Arc<dyn Store>> {
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if let Some(read_url) = read_url.filter(|_| postgres) {
        let store = PgStore::connect(url).await?.with_replica(read_url)?;
        return Ok(std::sync::Arc::new(store.with_sealer(sealer)));
    }
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            SqliteStore::connect(url).await?.with_sealer(sealer),
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            PgStore::connect(url).await?.with_sealer(sealer),
        ))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// Encrypts secrets for storage. The store calls it for an endpoint's `secret`,
/// `previous_secret` and `bearer_token`, with the endpoint's id as context so that a
/// sealed value cannot be moved to another endpoint.
pub trait Sealer: Send + Sync {
    /// The stored form; it must start with [`SEALED_PREFIX`].
    fn seal(&self, plaintext: &str, context: &str) -> String;
    /// The plaintext of a value `seal` produced.
    fn open(&self, sealed: &str, context: &str) -> std::result::Result<String, String>;
}

/// How sealed values start; anything else is stored plaintext (written before sealing was
/// turned on) and is read as is, then sealed at the endpoint's next update.
pub const SEALED_PREFIX: &str = "sealed:";

pub(crate) fn seal(sealer: Option<&dyn Sealer>, value: &str, context: &str) -> String {
    match sealer {
        Some(s) => s.seal(value, context),
        None => value.to_string(),
    }
}

/// The plaintext of a stored value, or why this store cannot read it (the reason an
/// endpoint is `unreadable`).
pub(crate) fn open(
    sealer: Option<&dyn Sealer>,
    value: String,
    context: &str,
) -> std::result::Result<String, String> {
    if !value.starts_with(SEALED_PREFIX) {
        return Ok(value);
    }
    match sealer {
        Some(s) => s
            .open(&value, context)
            .map_err(|e| format!("the endpoint's secrets cannot be decrypted: {e}")),
        None => Err(
            "the endpoint's secrets are encrypted and HOOKD_SECRET_KEY is not set: set it to the key they were encrypted with"
                .into(),
        ),
    }
}

/// Of the live endpoints holding a sealed value (id, secret, previous secret, bearer token),
/// those whose values this store cannot decrypt, with the reason.
pub(crate) fn unreadable(
    sealer: Option<&dyn Sealer>,
    sealed: Vec<(String, String, Option<String>, Option<String>)>,
) -> Vec<(EndpointId, String)> {
    sealed
        .into_iter()
        .filter_map(|(id, secret, previous, token)| {
            [Some(secret), previous, token]
                .into_iter()
                .flatten()
                .find_map(|value| open(sealer, value, &id).err())
                .map(|reason| (EndpointId::from(id), reason))
        })
        .collect()
}

/// Decrypts the secrets of an endpoint read from the database. One that cannot be
/// decrypted comes back `unreadable`, its secret values blanked, instead of failing the
/// read: a claim or a list holding it must still serve every other endpoint.
pub(crate) fn open_endpoint(sealer: Option<&dyn Sealer>, mut e: Endpoint) -> Endpoint {
    let has_token = e.bearer_token.is_some();
    let secret = open(sealer, std::mem::take(&mut e.secret), e.id.as_str());
    let previous = e
        .previous_secret
        .take()
        .map(|p| open(sealer, p, e.id.as_str()))
        .transpose();
    let token = e
        .bearer_token
        .take()
        .map(|t| open(sealer, t, e.id.as_str()))
        .transpose();
    match (secret, previous, token) {
        (Ok(secret), Ok(previous), Ok(token)) => {
            e.secret = secret;
            e.previous_secret = previous;
            e.bearer_token = token;
        }
        (secret, previous, token) => {
            e.unreadable = secret.err().or(previous.err()).or(token.err());
            e.bearer_token = has_token.then(String::new);
        }
    }
    e
}

/// A fresh random token (lease tokens).
pub(crate) fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh time-ordered id with a prefix: `evt_0192...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::ClaimPlan;

    #[test]
    fn claim_plan_limits() {
        let plan = |max, retries_ahead, retries, first_attempts| ClaimPlan {
            max,
            retries_ahead,
            retries,
            first_attempts,
        };
        // (plan, (retries ahead, first attempts, retries after))
        let cases = [
            (ClaimPlan::first_attempts(10), (0, 10, 0)),
            (ClaimPlan::retries(10), (10, 0, 0)),
            (ClaimPlan::any(10), (0, 10, 10)),
            // The dispatcher's round: a quarter ahead, the rest of the retry room after.
            (plan(128, 32, 100, true), (32, 128, 68)),
            // No room for retries: none ahead either.
            (plan(128, 32, 0, true), (0, 128, 0)),
            // Room smaller than the share ahead.
            (plan(128, 32, 5, true), (5, 128, 0)),
            // More retry room than the round: never more retries than the round.
            (plan(8, 2, 1000, true), (2, 8, 6)),
        ];
        for (plan, limits) in cases {
            assert_eq!(plan.limits(), limits, "{plan:?}");
        }
    }
}
