//! The production store: PostgreSQL, shared by any number of hookd instances.
//!
//! Claims take due rows with `FOR UPDATE SKIP LOCKED` inside a single statement, so
//! instances never wait on each other and no lock outlives the claim. A trigger on
//! `hookd_outbox` sends `NOTIFY hookd` when a producer commits, and ingestion sends one when
//! it creates deliveries, so every instance wakes at once; polling remains as a fallback.
//!
//! This file is the store's `Store` methods and the statements only it runs: most are shared
//! with SQLite (`crate::sql`) and run as written there.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use crate::common;
use crate::emit;
use crate::history;
use crate::ingest::{self, Incoming, NewDelivery, PreparedEvent};
use crate::limited;
use crate::matching;
use crate::outbox_share;
use crate::pg_session;
use crate::replica::Replica;
use crate::rows::{self, ClaimRow, OutboxRow, DELIVERY_COLUMNS, RESEND_JOB_COLUMNS};
use crate::shared;
use crate::sql;
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The NOTIFY channel.
const CHANNEL: &str = "hookd";
/// Connections per instance: the dispatcher (its claims and outbox reads), the recorder and
/// the API share them.
const MAX_CONNECTIONS: u32 = 16;
/// Connections of the API's event writes, apart from the rest so that neither the API nor
/// the dispatcher can starve the other: the API's group commit writes one group at a time.
const EVENT_CONNECTIONS: u32 = 2;

pub struct PgStore {
    pool: PgPool,
    /// `enqueue_events` only.
    events_pool: PgPool,
    /// This store's instance: its heartbeat's row, recorded on its leases.
    instance: String,
    sealer: Option<Arc<dyn Sealer>>,
    /// Where the log, lists and gauges are read, when there is a replica.
    replica: Option<Replica>,
    /// Where the next full outbox read's round of tenants starts.
    outbox_share: outbox_share::Cursor,
}

impl PgStore {
    /// Names this instance as the holder of the deliveries `leasing` created leased, as a
    /// claim does (the rescue of a dead instance's leases goes by it).
    async fn record_lease_instance(
        &self,
        tx: &mut sqlx::PgConnection,
        leasing: Option<&ingest::Leasing<'_>>,
    ) -> Result<()> {
        let Some(leased) = leasing.filter(|l| !l.rows.is_empty()) else {
            return Ok(());
        };
        let ids: Vec<i64> = leased.rows.iter().map(|r| r.id).collect();
        sqlx::query(
            "UPDATE hookd_deliveries SET lease_instance = $1 \
             WHERE id = ANY($2) AND state = 'in_flight'",
        )
        .bind(&self.instance)
        .bind(&ids)
        .execute(tx)
        .await?;
        Ok(())
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let options = pg_session::options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let events_pool = PgPoolOptions::new()
            .max_connections(EVENT_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            events_pool,
            instance: crate::new_id("inst"),
            sealer: None,
            replica: None,
            outbox_share: Default::default(),
        })
    }

    /// Reads the delivery log, the endpoint lists and summaries, and the backlog gauges
    /// from the streaming replica at `url` ([`Replica`]).
    pub fn with_replica(mut self, url: &str) -> Result<Self> {
        self.replica = Some(Replica::connect(url)?);
        Ok(self)
    }

    /// Runs `read` on the replica when there is one that answers, else on the primary.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn(PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match &self.replica {
            Some(replica) => replica.read(&self.pool, read).await,
            None => read(self.pool.clone()).await,
        }
    }

    fn sealer(&self) -> Option<&dyn Sealer> {
        self.sealer.as_deref()
    }

    /// Writes this instance's heartbeat, its row again if it was forgotten.
    async fn heartbeat_write(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO hookd_instances (id, started_at, heartbeat_at) \
             VALUES ($1, hookd_now_ms(), hookd_now_ms()) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
        )
        .bind(&self.instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Returns the deliveries in flight whose lease matches `leases` (SQL over the row, with
    /// `$2` = `arg`) to pending, due now, logging their attempts as lost. Returns how many.
    async fn rescue_leases(&self, leases: &str, arg: Option<u64>) -> Result<u64> {
        let statement = format!(
            "WITH expired AS ( \
                 SELECT id, attempts, next_trigger, updated_at FROM hookd_deliveries \
                 WHERE state = 'in_flight' AND {leases} \
                 FOR UPDATE SKIP LOCKED \
             ), returned AS ( \
                 UPDATE hookd_deliveries d SET state = 'pending', lease_token = NULL, \
                     lease_expires_at = NULL, lease_instance = NULL, \
                     next_attempt_at = hookd_now_ms(), \
                     last_status_code = NULL, last_error = $1, \
                     next_trigger = CASE WHEN d.resend_requested THEN 'manual' ELSE d.next_trigger END, \
                     resend_requested = FALSE, updated_at = hookd_now_ms() \
                 FROM expired WHERE d.id = expired.id AND d.state = 'in_flight' \
             ) \
             INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
                 outcome, error) \
             SELECT id, attempts, next_trigger, updated_at, hookd_now_ms() - updated_at, 'lost', $1 \
             FROM expired"
        );
        // Planned at each run, as `promote_stranded`: a job's plan kept from start, when the
        // backlog was small, would read all of it once it is large.
        let mut query = sqlx::query(&statement)
            .persistent(false)
            .bind(sql::LOST_ERROR);
        if let Some(arg) = arg {
            query = query.bind(arg as i64);
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Claims the shares of rate-limited endpoints, each within its budget, and moves the
    /// budgets on, in one transaction ([`crate::limited`]).
    async fn claim_limited(
        &self,
        shares: &[limited::LimitedShare],
        lease_ms: u64,
    ) -> Result<Vec<ClaimRow>> {
        let ids: Vec<&str> = shares.iter().map(|l| l.endpoint.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        let locked: Vec<limited::Locked> = sqlx::query_as(LOCK_LIMITED)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let token = crate::token();
        let mut rows = Vec::new();
        for take in limited::takes(locked, shares) {
            let id = &take.share.endpoint;
            let taken: Vec<ClaimRow> = sqlx::query_as(&LIMITED_CLAIM)
                .bind(id)
                .bind(take.share.firsts as i64)
                .bind(take.share.retries as i64)
                .bind(take.max as i64)
                .bind(&token)
                .bind(lease_ms as i64)
                .bind(&self.instance)
                .fetch_all(&mut *tx)
                .await?;
            if !taken.is_empty() {
                sqlx::query(limited::SET_RATE_TAT)
                    .bind(id)
                    .bind(take.tat_after(taken.len()))
                    .execute(&mut *tx)
                    .await?;
            }
            rows.extend(taken);
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Encrypts endpoint secrets at rest with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }
}

/// Records a batch of results and logs their attempts in one statement; returns the ids
/// recorded.
static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, done AS ({} RETURNING hookd_deliveries.id), \
         logged AS ({} JOIN done ON done.id = v.delivery_id) SELECT id FROM done",
        sql::json_rows(sql::COMPLETION_COLUMNS),
        sql::COMPLETE_BATCH,
        sql::INSERT_ATTEMPTS_BATCH
    )
});

/// The oldest held delivery of each live endpoint with nothing else on its way, let go,
/// looked up in the backlog's primary key. The endpoints come from the index of held rows
/// (a skip scan: one seek per endpoint that has any), not from `hookd_endpoints`: asked of
/// an endpoint with none, "its oldest held row" is planned as a walk of the backlog's
/// primary key that finds nothing (with 100,000 held and 20 other endpoints, 264 ms a run;
/// SQLite reads the index of held rows and keeps [`sql::STRANDED_HEADS`]). Planned at each
/// run (not prepared, see `promote_stranded`): a plan kept from a moment the backlog was
/// small reads the whole backlog for each endpoint, and as `id IN (...)` once more for each
/// row (7 s a run with 100,000 held).
static PROMOTE_STRANDED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE state = 'pending' AND id = ANY(ARRAY(\
         WITH RECURSIVE heads (endpoint_id, id) AS (\
             (SELECT endpoint_id, id FROM hookd_deliveries WHERE state = 'pending' AND held \
              ORDER BY endpoint_id, id LIMIT 1) \
             UNION ALL \
             SELECT n.endpoint_id, n.id FROM heads CROSS JOIN LATERAL (\
                 SELECT d.endpoint_id, d.id FROM hookd_deliveries d \
                 WHERE d.state = 'pending' AND d.held AND d.endpoint_id > heads.endpoint_id \
                 ORDER BY d.endpoint_id, d.id LIMIT 1) n) \
         SELECT heads.id FROM heads JOIN hookd_endpoints e ON e.id = heads.endpoint_id \
         WHERE e.deleted_at IS NULL AND {}))",
        sql::PROMOTE_STRANDED_SET,
        sql::nothing_on_its_way("heads.endpoint_id")
    )
});

/// One claim round in one statement, `$3` rows in all: retries ahead of the first attempts
/// (`ahead`, `$5` at most: each chosen endpoint's fair share of them, `$10` endpoints with
/// `$11` rows each, then the oldest due retries of any endpoint for the places the shares
/// left), first attempts in each chosen endpoint's fair share (`fair`: endpoints `$8`, rows
/// `$9`), the oldest due first attempts of any endpoint for the places the shares left
/// (`$6`), then retries after the first attempts (`later`, `$7` at most: the same
/// endpoints' shares, `$12` rows each, then the oldest). A share is ordered by endpoint,
/// then due time, the order of its index of pending rows by endpoint: the planner reads
/// that index rather than walk the due order filtering on the endpoint. The `UNION ALL`
/// under the `LIMIT` reads an arm only while the ones before it leave room, so rows an arm
/// never reaches are never locked. Each arm reads its own partial index.
static CLAIM: LazyLock<String> = LazyLock::new(|| claim_sql(true));

/// [`CLAIM`] without its arms that take the oldest due rows of any endpoint (`rest`): only
/// the fair shares, while a rate-limited endpoint has rows due ([`crate::limited`]).
static CLAIM_SHARES: LazyLock<String> = LazyLock::new(|| claim_sql(false));

fn claim_sql(rest: bool) -> String {
    let due = |name: &str, kind: &str, limit: &str| {
        if !rest {
            return format!("{name} AS (SELECT id FROM hookd_deliveries WHERE FALSE)");
        }
        format!(
            "{name} AS (SELECT id FROM hookd_deliveries \
             WHERE state = 'pending' AND {kind} AND next_attempt_at <= hookd_now_ms() \
             AND endpoint_id <> ALL($4) \
             ORDER BY next_attempt_at {limit} FOR UPDATE SKIP LOCKED)"
        )
    };
    let shares = |name: &str, endpoints: &str, rows: &str, kind, also: &str| {
        format!(
            "{name} AS (SELECT f.id FROM unnest({endpoints}::text[], {rows}::bigint[]) \
                 AS p(endpoint_id, n) \
             CROSS JOIN LATERAL ({} LIMIT p.n FOR UPDATE SKIP LOCKED) f)",
            sql::share_of("p.endpoint_id", kind, also)
        )
    };
    format!(
        "WITH {}, {}, {}, \
         ahead AS (SELECT id FROM retry_fair UNION ALL SELECT id FROM ahead_rest LIMIT $5), \
         {}, {}, \
         later AS (SELECT id FROM retry_later UNION ALL SELECT id FROM later_rest LIMIT $7), \
         {}, \
         due AS (SELECT id FROM ahead UNION ALL SELECT id FROM fair UNION ALL \
             SELECT id FROM first UNION ALL SELECT id FROM later LIMIT $3), \
         claimed AS ( \
             UPDATE hookd_deliveries d SET state = 'in_flight', lease_token = $1, \
                 lease_expires_at = hookd_now_ms() + $2, lease_instance = $13, \
                 attempts = d.attempts + 1, \
                 auto_attempts = d.auto_attempts + CASE WHEN d.next_trigger = 'auto' THEN 1 ELSE 0 END, \
                 updated_at = hookd_now_ms() \
             FROM due WHERE d.id = due.id AND d.state = 'pending' \
             RETURNING d.id, d.lease_token, d.event_id, d.event_type, d.endpoint_id, d.attempts, \
                 d.next_trigger, d.auto_attempts, d.manual_only, d.next_attempt_at \
         ) \
         SELECT c.id, c.lease_token, c.event_id, c.event_type, c.endpoint_id, c.attempts, \
             c.next_trigger, c.auto_attempts, c.manual_only, c.next_attempt_at, e.payload, \
             e.payload_error, e.traceparent \
         FROM claimed c JOIN hookd_events e ON e.event_id = c.event_id \
         ORDER BY c.next_attempt_at, c.id",
        shares("fair", "$8", "$9", sql::FIRST_BY_ENDPOINT, ""),
        shares("retry_fair", "$10", "$11", sql::RETRY_BY_ENDPOINT, ""),
        due(
            "ahead_rest",
            "attempts > 0 AND id NOT IN (SELECT id FROM retry_fair)",
            "LIMIT $5"
        ),
        shares(
            "retry_later",
            "$10",
            "$12",
            sql::RETRY_BY_ENDPOINT,
            " AND id NOT IN (SELECT id FROM ahead)"
        ),
        due(
            "later_rest",
            "attempts > 0 AND id NOT IN (SELECT id FROM ahead) \
             AND id NOT IN (SELECT id FROM retry_later)",
            "LIMIT $7"
        ),
        due(
            "first",
            "attempts = 0 AND id NOT IN (SELECT id FROM fair)",
            "LIMIT $6"
        ),
    )
}

/// One rate-limited endpoint's share ([`crate::limited::limited_rows`], `$1` to `$4`),
/// leased with token `$5` for `$6` ms to instance `$7`; the rows as a claim returns them.
static LIMITED_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS ({}), \
         claimed AS ( \
             UPDATE hookd_deliveries d SET state = 'in_flight', lease_token = $5, \
                 lease_expires_at = hookd_now_ms() + $6, lease_instance = $7, \
                 attempts = d.attempts + 1, \
                 auto_attempts = d.auto_attempts + CASE WHEN d.next_trigger = 'auto' THEN 1 ELSE 0 END, \
                 updated_at = hookd_now_ms() \
             FROM due WHERE d.id = due.id AND d.state = 'pending' \
             RETURNING d.id, d.lease_token, d.event_id, d.event_type, d.endpoint_id, d.attempts, \
                 d.next_trigger, d.auto_attempts, d.manual_only, d.next_attempt_at \
         ) \
         SELECT c.id, c.lease_token, c.event_id, c.event_type, c.endpoint_id, c.attempts, \
             c.next_trigger, c.auto_attempts, c.manual_only, c.next_attempt_at, e.payload, \
             e.payload_error, e.traceparent \
         FROM claimed c JOIN hookd_events e ON e.event_id = c.event_id",
        crate::limited::limited_rows(" FOR UPDATE SKIP LOCKED")
    )
});

/// The limited endpoints of a claim, locked; those another instance is claiming are
/// skipped (it spends their budget now). `NO KEY UPDATE`: the key share an ingest takes
/// of the endpoints it creates deliveries for does not stand in the way.
const LOCK_LIMITED: &str = "SELECT id, rate_limit, rate_tat, hookd_now_ms() FROM hookd_endpoints \
    WHERE id = ANY($1) AND rate_limit IS NOT NULL AND deleted_at IS NULL \
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED";

/// The payload of the NOTIFY an ingest of `instance` sends for the due deliveries it did
/// not lease.
fn deliveries_payload(instance: &str) -> String {
    format!("deliveries {instance}")
}

/// Whether a notification with `payload` is news to the instance whose own ingests send
/// `own`: its own are not, since its dispatcher claims after an ingest that left due
/// deliveries, and relaying them cost each event a second outbox read and claim.
fn wakes(payload: &str, own: &str) -> bool {
    payload != own
}

struct PgWake {
    listener: PgListener,
    /// This instance's own [`deliveries_payload`].
    own: String,
}

#[async_trait]
impl WakeSource for PgWake {
    async fn wait(&mut self) -> Result<()> {
        loop {
            // PgListener reconnects (and re-LISTENs) by itself on the next call after an error.
            let notification = self.listener.recv().await?;
            if wakes(notification.payload(), &self.own) {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn endpoint_summaries_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<crate::Summaries> {
        self.read(|pool| async move {
            let endpoints = shared::endpoints_in(&pool, self.sealer(), scope, after, limit).await?;
            crate::summary::summarize(
                &pool,
                std::borrow::Cow::Borrowed,
                endpoints,
                window_ms,
                scope.tenant().map(|t| t.to_string()),
            )
            .await
        })
        .await
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run_direct(&mut *self.pool.acquire().await?)
            .await?;
        // Today's partitions of the history and the days ahead, in case hookd was down
        // when the day began (retention makes them too, every run).
        self.prepare_history().await
    }

    async fn check_ready(&self) -> Result<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        common::all_applied(applied, &MIGRATOR)?;
        // Writes go through the pool, which replaces a broken connection: the read above
        // already says whether the server answers.
        Ok(())
    }

    async fn now_ms(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(sql::NOW).fetch_one(&self.pool).await?)
    }

    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Box::new(PgWake {
            listener,
            own: deliveries_payload(&self.instance),
        })))
    }

    // --- endpoints -------------------------------------------------------------------

    async fn insert_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        shared::bind_endpoint(sqlx::query(sql::INSERT_ENDPOINT), e, self.sealer())
            .bind(e.tenant_id.as_ref().map(|t| t.as_str()))
            .bind(e.rate_limit.map(f64::from))
            .execute(&self.pool)
            .await?;
        self.endpoint_any(&e.id).await?.ok_or_else(|| {
            StoreError::Inconsistent(format!("endpoint {} is not there after its insert", e.id))
        })
    }

    async fn endpoint_in(&self, scope: &Scope, id: &EndpointId) -> Result<Option<Endpoint>> {
        Ok(self
            .endpoint_any(id)
            .await?
            .filter(|e| !e.deleted && scope.sees(e.tenant_id.as_ref())))
    }

    async fn endpoints_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        self.read(|pool| async move {
            shared::endpoints_in(&pool, self.sealer(), scope, after, limit).await
        })
        .await
    }

    async fn unreadable_endpoints(&self) -> Result<Vec<(EndpointId, String)>> {
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as(sql::SEALED_ENDPOINTS)
                .fetch_all(&self.pool)
                .await?;
        Ok(crate::unreadable(self.sealer(), rows))
    }

    async fn update_endpoint_if(
        &self,
        e: &Endpoint,
        if_version: Option<i64>,
    ) -> Result<Versioned<Endpoint>> {
        let mut tx = self.pool.begin().await?;
        // Locked: of two concurrent writes, one sees the other's change of `enabled`.
        let before: Option<(bool, Option<String>)> = sqlx::query_as(
            "SELECT enabled, tenant_id FROM hookd_endpoints WHERE id = $1 AND deleted_at IS NULL \
             FOR UPDATE",
        )
        .bind(&e.id)
        .fetch_optional(&mut *tx)
        .await?;
        let updated = shared::bind_endpoint(sqlx::query(sql::UPDATE_ENDPOINT), e, self.sealer())
            .bind(e.unreadable.is_some())
            .bind(if_version)
            .bind(e.rate_limit.map(f64::from))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            return shared::unwritten::<Postgres, _>(&mut tx, Cow::Borrowed, &e.id).await;
        }
        let follow = if e.enabled {
            sql::UNPARK_ENDPOINT_DELIVERIES
        } else {
            sql::PARK_ENDPOINT_DELIVERIES
        };
        sqlx::query(follow).bind(&e.id).execute(&mut *tx).await?;
        if !e.ordered {
            sqlx::query(sql::UNHOLD_ENDPOINT_DELIVERIES)
                .bind(&e.id)
                .bind(e.enabled)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(notice) = operational::enabled_change(e, before) {
            emit::write::<Postgres>(&mut tx, Cow::Borrowed, &[notice]).await?;
        }
        tx.commit().await?;
        Ok(match self.endpoint_any(&e.id).await? {
            Some(updated) => Versioned::Done(updated),
            None => Versioned::NotFound,
        })
    }

    async fn delete_endpoint_if(
        &self,
        id: &EndpointId,
        if_version: Option<i64>,
    ) -> Result<Versioned<()>> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(sql::DELETE_ENDPOINT)
            .bind(id)
            .bind(if_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return shared::unwritten::<Postgres, _>(&mut tx, Cow::Borrowed, id).await;
        }
        sqlx::query(sql::FAIL_ENDPOINT_DELIVERIES)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Versioned::Done(()))
    }

    async fn disable_endpoint(&self, id: &EndpointId, reason: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let disabled = sqlx::query(sql::DISABLE_ENDPOINT)
            .bind(id)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if disabled {
            sqlx::query(sql::PARK_ENDPOINT_DELIVERIES)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let notice = emit::disabled::<Postgres>(&mut tx, id, reason).await?;
            emit::write::<Postgres>(&mut tx, Cow::Borrowed, &[notice]).await?;
        }
        tx.commit().await?;
        Ok(disabled)
    }

    async fn record_endpoint_health(
        &self,
        outcomes: &[(EndpointId, bool)],
        disable_after_ms: Option<i64>,
        reason: &str,
    ) -> Result<Vec<EndpointId>> {
        let mut disabled = Vec::new();
        if outcomes.is_empty() {
            return Ok(disabled);
        }
        let mut tx = self.pool.begin().await?;
        let mut notices = Vec::new();
        for (id, succeeded) in outcomes {
            if *succeeded {
                sqlx::query(sql::ENDPOINT_SUCCEEDED)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let began = sqlx::query(sql::ENDPOINT_FAILED)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if began {
                notices.extend(emit::failing::<Postgres>(&mut tx, Cow::Borrowed, id).await?);
            }
            let Some(after) = disable_after_ms else {
                continue;
            };
            let now_disabled = sqlx::query(sql::DISABLE_IF_FAILING)
                .bind(id)
                .bind(reason)
                .bind(after)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if now_disabled {
                sqlx::query(sql::PARK_ENDPOINT_DELIVERIES)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                notices.push(emit::disabled::<Postgres>(&mut tx, id, reason).await?);
                disabled.push(id.clone());
            }
        }
        emit::write::<Postgres>(&mut tx, Cow::Borrowed, &notices).await?;
        tx.commit().await?;
        Ok(disabled)
    }

    // --- events ----------------------------------------------------------------------

    async fn enqueue_events_leasing(
        &self,
        events: &[NewEvent],
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<(Vec<Enqueued>, Ingested)> {
        if events.is_empty() {
            return Ok((Vec::new(), Ingested::default()));
        }
        let mut tx = self.events_pool.begin().await?;
        let targets = shared::targets::<Postgres>(&mut tx, Cow::Borrowed).await?;
        let mut leasing = ingest::lease_all(&targets, lease);
        let incoming: Vec<Incoming> = events.iter().map(Incoming::from).collect();
        let stored = shared::store_events::<Self>(
            &mut tx,
            Cow::Borrowed,
            &targets,
            &incoming,
            limits,
            leasing.as_mut(),
        )
        .await?;
        self.record_lease_instance(&mut tx, leasing.as_ref())
            .await?;
        let enqueued = shared::enqueued::<Self>(&mut tx, stored).await?;
        tx.commit().await?;
        let created = enqueued.len();
        let ingested = shared::ingested(created, false, leasing, |rows| {
            shared::with_endpoints(self, &self.pool, self.sealer(), rows)
        })
        .await?;
        Ok((enqueued, ingested))
    }

    async fn ingest_leasing(
        &self,
        max_rows: u32,
        limits: &IngestLimits,
        lease: Option<IngestLease<'_>>,
    ) -> Result<Ingested> {
        let window = ingest::window(max_rows, lease.as_ref());
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: several instances ingest disjoint rows side by side.
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, event_type, payload, endpoint_id, tenant_id, traceparent \
                 FROM hookd_outbox \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(window as i64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Ingested::default());
        }
        let full = rows.len() == window as usize;
        let targets = shared::targets::<Postgres>(&mut tx, Cow::Borrowed).await?;
        let ordered = matching::reaches_ordered(
            rows.iter().map(|r| {
                (
                    r.event_type.as_str(),
                    r.endpoint_id.as_deref(),
                    r.tenant_id.as_deref(),
                )
            }),
            &targets,
        );
        if ordered {
            // An ordered endpoint's deliveries go in the order they are created, so they
            // must be created in outbox order. Earlier rows skipped above are being ingested
            // by another instance: wait for it to commit (they are gone then), and take any
            // it left (or a producer committed late) ahead of ours. Waits only on earlier
            // rows, so ingestions never wait on each other in a circle.
            let earlier: Vec<OutboxRow> = sqlx::query_as(
                "SELECT seq, event_id, event_type, payload, endpoint_id, tenant_id, traceparent \
                 FROM hookd_outbox \
                 WHERE seq < $1 ORDER BY seq FOR UPDATE",
            )
            .bind(rows[0].seq)
            .fetch_all(&mut *tx)
            .await?;
            if !earlier.is_empty() {
                rows.splice(0..0, earlier);
            }
        }
        if full && lease.is_none() {
            // A backlog: each tenant's first rows beyond it too (see `outbox_share`).
            let cut = rows.last().map(|r| r.seq).unwrap_or_default();
            let seqs =
                outbox_share::beyond::<Postgres>(&mut tx, Cow::Borrowed, cut, &self.outbox_share)
                    .await?;
            if !seqs.is_empty() {
                let more: Vec<OutboxRow> = sqlx::query_as(
                    "SELECT seq, event_id, event_type, payload, endpoint_id, tenant_id, traceparent \
                     FROM hookd_outbox WHERE seq = ANY($1) ORDER BY seq FOR UPDATE SKIP LOCKED",
                )
                .bind(&seqs)
                .fetch_all(&mut *tx)
                .await?;
                // Rows left here stay locked until the commit, then wait for a later read.
                rows.extend(outbox_share::unordered(more, &targets));
            }
        }
        let read = rows.len();
        let (rows, mut leasing) = ingest::lease_rows(rows, &targets, lease);
        let more = full || rows.len() < read;
        let incoming: Vec<Incoming> = rows.iter().map(Incoming::from).collect();
        shared::store_events::<Self>(
            &mut tx,
            Cow::Borrowed,
            &targets,
            &incoming,
            limits,
            leasing.as_mut(),
        )
        .await?;
        self.record_lease_instance(&mut tx, leasing.as_ref())
            .await?;
        // The rows not taken stay locked until the commit, then wait for the next ingest.
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sqlx::query("DELETE FROM hookd_outbox WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        // Deliveries leased here are taken: other instances are woken only for the rest.
        if leasing.as_ref().is_none_or(|l| l.due) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(deliveries_payload(&self.instance))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        shared::ingested(rows.len(), more, leasing, |rows| {
            shared::with_endpoints(self, &self.pool, self.sealer(), rows)
        })
        .await
    }

    async fn event_in(&self, scope: &Scope, event_id: &EventId) -> Result<Option<Event>> {
        Ok(sqlx::query_as::<_, rows::EventRow>(sql::EVENT)
            .bind(event_id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.pool)
            .await?
            .map(Into::into))
    }

    // --- dispatch --------------------------------------------------------------------

    async fn claim_due(
        &self,
        plan: ClaimPlan,
        exclude_endpoints: &[EndpointId],
        lease_ms: u64,
    ) -> Result<Vec<Claimed>> {
        let (ahead, first, after) = plan.limits();
        let split = if first > 0 || ahead + after > 0 {
            // Planned at each claim: the statement has no parameters, so a session would
            // keep the plan it made first, and one made while the backlog's partition was
            // empty and vacuumed reads the whole backlog in sequential scans (four per
            // claim) until autovacuum next analyzes the partition.
            let due: Vec<limited::DueRow> = sqlx::query_as(sql::DUE_ENDPOINTS.as_str())
                .persistent(false)
                .fetch_all(&self.pool)
                .await?;
            limited::split(
                due,
                exclude_endpoints,
                (first - ahead).max(0) as u32,
                ahead as u32,
                after as u32,
            )
        } else {
            limited::ClaimSplit::any(exclude_endpoints)
        };
        let (shares, rest) = (split.shares, split.rest);
        let shared_out = shares.first.is_empty() && shares.retries.is_empty();
        let (endpoints, counts): (Vec<String>, Vec<i64>) =
            shares.first.into_iter().map(|(e, n)| (e, n as i64)).unzip();
        let mut retry_endpoints = Vec::new();
        let (mut retry_ahead, mut retry_after) = (Vec::new(), Vec::new());
        for (endpoint, ahead, after) in shares.retries {
            retry_endpoints.push(endpoint);
            retry_ahead.push(ahead as i64);
            retry_after.push(after as i64);
        }
        let mut rows: Vec<ClaimRow> = if !rest && shared_out {
            Vec::new()
        } else {
            sqlx::query_as(if rest { &CLAIM } else { &CLAIM_SHARES })
                .bind(crate::token())
                .bind(lease_ms as i64)
                .bind(plan.max as i64)
                // The caller's and every rate-limited endpoint: rows of one may have
                // become due since the list was read.
                .bind(&split.exclude)
                .bind(ahead)
                .bind(first)
                .bind(after)
                .bind(endpoints)
                .bind(counts)
                .bind(retry_endpoints)
                .bind(retry_ahead)
                .bind(retry_after)
                .bind(&self.instance)
                .fetch_all(&self.pool)
                .await?
        };
        if !split.limited.is_empty() {
            rows.extend(self.claim_limited(&split.limited, lease_ms).await?);
            rows.sort_by_key(|r| (r.next_attempt_at, r.id));
        }
        shared::with_endpoints(self, &self.pool, self.sealer(), rows).await
    }

    async fn complete(&self, batch: &[Completion]) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if !batch
            .iter()
            .any(|c| c.ordered || operational::may_exhaust(c))
        {
            // One statement, in a transaction of its own: one round trip.
            let done: Vec<i64> = sqlx::query_scalar(&COMPLETE)
                .bind(rows::completions_json(batch))
                .fetch_all(&self.pool)
                .await?;
            return Ok(rows::recorded(batch, &done));
        }
        // A final result of an ordered endpoint lets its next delivery go, and a delivery
        // that gave up is told (`hookd.delivery.exhausted`), in the same transaction.
        let mut tx = self.pool.begin().await?;
        let done = Self::complete_rows(&mut tx, batch).await?;
        let recorded = shared::recorded::<Postgres>(&mut tx, Cow::Borrowed, batch, &done).await?;
        let notices = emit::exhausted::<Postgres>(&mut tx, batch, &recorded).await?;
        emit::write::<Postgres>(&mut tx, Cow::Borrowed, &notices).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn release(&self, leases: &[Lease], how: Release) -> Result<u64> {
        let (state, due_now, error) = common::release_args(&how);
        let mut tx = self.pool.begin().await?;
        let mut released = 0;
        for lease in leases {
            let n = sqlx::query(sql::RELEASE)
                .bind(lease.delivery_id)
                .bind(&lease.token)
                .bind(state)
                .bind(due_now)
                .bind(error)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 && error.is_some() {
                // A failed head of an ordered endpoint lets the next one go.
                sqlx::query(sql::PROMOTE_NEXT)
                    .bind(lease.delivery_id)
                    .execute(&mut *tx)
                    .await?;
            }
            released += n;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn rescue_expired(&self) -> Result<u64> {
        self.rescue_leases("lease_expires_at < hookd_now_ms()", None)
            .await
    }

    async fn start_instance(&self) -> Result<Instance> {
        self.heartbeat_write().await?;
        Ok(Instance::new(0, None))
    }

    async fn heartbeat(&self, dead_after_ms: u64) -> Result<u64> {
        self.heartbeat_write().await?;
        let dead = "lease_instance IN (SELECT id FROM hookd_instances \
                    WHERE heartbeat_at < hookd_now_ms() - $2)";
        let rescued = self.rescue_leases(dead, Some(dead_after_ms)).await?;
        // The dead with no lease left are forgotten (one that comes back writes its row again).
        sqlx::query(
            "DELETE FROM hookd_instances i WHERE heartbeat_at < hookd_now_ms() - $1 \
             AND NOT EXISTS (SELECT 1 FROM hookd_deliveries d \
                 WHERE d.state = 'in_flight' AND d.lease_instance = i.id)",
        )
        .bind(dead_after_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(rescued)
    }

    async fn stop_instance(&self) -> Result<()> {
        sqlx::query("DELETE FROM hookd_instances WHERE id = $1")
            .bind(&self.instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn promote_stranded(&self) -> Result<u64> {
        // Planned at each run, with the backlog's size as it is now: a maintenance job's
        // statement prepared once would keep the plan made at start, when the backlog was
        // small, until autovacuum next analyzes it (a minute or more into a burst).
        Ok(sqlx::query(&PROMOTE_STRANDED)
            .persistent(false)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn next_due_in_ms(&self) -> Result<Option<i64>> {
        let due: Option<i64> = sqlx::query_scalar(sql::NEXT_DUE)
            .fetch_one(&self.pool)
            .await?;
        let limited: Vec<limited::NextDueRow> = sqlx::query_as(limited::LIMITED_NEXT_DUE.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(limited::next_due(due, limited))
    }

    // --- the delivery log -------------------------------------------------------------

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.read(|pool| async move {
            let mut q = QueryBuilder::<Postgres>::new(format!(
                "SELECT {DELIVERY_COLUMNS} FROM hookd_deliveries WHERE TRUE"
            ));
            common::push_filter(&mut q, filter);
            if let Some(before) = before_id {
                q.push(" AND id < ").push_bind(before);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
            q.build_query_as::<rows::DeliveryRow>()
                .fetch_all(&pool)
                .await?
                .into_iter()
                .map(Delivery::try_from)
                .collect()
        })
        .await
    }

    async fn delivery_in(&self, scope: &Scope, id: i64) -> Result<Option<Delivery>> {
        sqlx::query_as::<_, rows::DeliveryRow>(sql::DELIVERY)
            .bind(id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.pool)
            .await?
            .map(Delivery::try_from)
            .transpose()
    }

    async fn attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
        sqlx::query_as::<_, rows::AttemptRow>(sql::ATTEMPTS)
            .bind(delivery_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AttemptRecord::try_from)
            .collect()
    }

    async fn resend_in(&self, scope: &Scope, id: i64) -> Result<bool> {
        // A delivery that finishes while this waits for its row has moved to the history's
        // partition: PostgreSQL then fails the statement (40001) instead of reading the row
        // again, so it is run again, and finds the row where it is now.
        let mut tries = 0;
        loop {
            let mut q = QueryBuilder::<Postgres>::new(sql::RESEND_SET);
            q.push("WHERE id = ").push_bind(id);
            if let Some(tenant) = scope.tenant() {
                q.push(" AND tenant_id = ").push_bind(tenant.as_str());
            }
            match q.build().execute(&self.pool).await {
                Ok(done) => return Ok(done.rows_affected() == 1),
                Err(e) if tries < 3 && moved_meanwhile(&e) => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn create_resend_job(&self, filter: &DeliveryFilter) -> Result<ResendJob> {
        let id = crate::new_id("rsj");
        // The job covers what exists now: ids up to the current highest, down to the
        // lowest that matches. Counted before the write transaction, through the filter's
        // index: a count of a million matches must not hold a transaction open.
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) \
             FROM hookd_deliveries WHERE TRUE",
        );
        common::push_filter(&mut q, filter);
        let (matched, max_id, min_id): (i64, i64, i64) =
            q.build_query_as().fetch_one(&self.pool).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::INSERT_RESEND_JOB)
            .bind(&id)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(&filter.endpoint_id)
            .bind(&filter.event_id)
            .bind(&filter.event_type)
            .bind(filter.since)
            .bind(filter.until)
            .bind(max_id)
            .bind(matched)
            .bind(min_id)
            .bind(filter.tenant_id.as_ref().map(|t| t.as_str()))
            .execute(&mut *tx)
            .await?;
        let job = sqlx::query_as::<_, rows::ResendJobRow>(sql::RESEND_JOB)
            .bind(&id)
            .bind(None::<&str>)
            .fetch_optional(&mut *tx)
            .await?
            .map(ResendJob::try_from)
            .transpose()?;
        tx.commit().await?;
        job.ok_or_else(|| {
            StoreError::Inconsistent(format!("resend job {id} is not there after its insert"))
        })
    }

    async fn resend_job_in(&self, scope: &Scope, id: &str) -> Result<Option<ResendJob>> {
        sqlx::query_as::<_, rows::ResendJobRow>(sql::RESEND_JOB)
            .bind(id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.pool)
            .await?
            .map(ResendJob::try_from)
            .transpose()
    }

    async fn step_resend_jobs(&self, batch: u32, max_due: u32) -> Result<u64> {
        // What reads many rows runs outside the write transaction: which job, whether the
        // dispatcher is behind, and the job's next chunk (see `ResendWindows`). The
        // write transaction then only resends the chunk by id and moves the cursor, if the
        // cursor is still where the chunk was read from. Each round either returns or moves
        // a cursor down, so the loop ends with the job.
        loop {
            let job: Option<rows::ResendJobRow> = sqlx::query_as(&format!(
                "SELECT {RESEND_JOB_COLUMNS} FROM hookd_resend_jobs \
                 WHERE state = 'running' ORDER BY created_at LIMIT 1"
            ))
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = job else { return Ok(0) };
            let due: i64 = sqlx::query_scalar(sql::DUE_MANUAL)
                .bind(max_due as i64)
                .fetch_one(&self.pool)
                .await?;
            if due >= max_due as i64 {
                return Ok(0); // the dispatcher is behind: wait rather than pile up
            }
            let (id, cursor) = (row.id.clone(), row.cursor);
            let windows = common::ResendWindows::new(batch, row.floor_id);
            let job = ResendJob::try_from(row)?;
            let (mut top, mut ids, mut next_cursor) = (cursor, Vec::<i64>::new(), cursor);
            for _ in 0..sql::RESEND_WINDOWS_PER_STEP {
                let mut q =
                    QueryBuilder::<Postgres>::new("SELECT id FROM hookd_deliveries WHERE id <= ");
                q.push_bind(top)
                    .push(" AND id >= ")
                    .push_bind(windows.low(top));
                common::push_filter(&mut q, &job.filter);
                q.push(" ORDER BY id DESC LIMIT ").push_bind(batch as i64);
                ids = q.build_query_scalar().fetch_all(&self.pool).await?;
                next_cursor = windows.next_cursor(top, &ids, batch);
                if !ids.is_empty() || next_cursor < windows.floor {
                    break;
                }
                top = next_cursor;
            }
            let finished = next_cursor < windows.floor;

            let mut tx = self.pool.begin().await?;
            let current: Option<i64> = sqlx::query_scalar(&format!(
                "{} FOR UPDATE SKIP LOCKED",
                sql::RESEND_JOB_CURSOR
            ))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            match current {
                // Done meanwhile, or another instance is taking a step of it.
                None => return Ok(0),
                // Another instance took this step: read the next chunk again.
                Some(c) if c != cursor => continue,
                Some(_) => {}
            }
            let mut resent = 0;
            if !ids.is_empty() {
                let mut update = QueryBuilder::<Postgres>::new(sql::RESEND_SET);
                update.push("WHERE id IN (");
                let mut list = update.separated(", ");
                for id in &ids {
                    list.push_bind(*id);
                }
                update.push(")");
                // Only the state can have changed since the chunk was read.
                if let Some(state) = job.filter.state {
                    update.push(" AND state = ").push_bind(state.as_str());
                }
                resent = update.build().execute(&mut *tx).await?.rows_affected();
            }
            sqlx::query(sql::ADVANCE_RESEND_JOB)
                .bind(&id)
                .bind(next_cursor)
                .bind(resent as i64)
                .bind(finished)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if resent > 0 || finished {
                return Ok(resent);
            }
        }
    }

    // --- tenant tokens --------------------------------------------------------------------

    async fn insert_tenant_token(
        &self,
        token_hash: &str,
        tenant: &TenantId,
        ttl_ms: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(sql::INSERT_TENANT_TOKEN)
            .bind(token_hash)
            .bind(tenant.as_str())
            .bind(ttl_ms)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<TenantId>> {
        let tenant: Option<String> = sqlx::query_scalar(sql::TENANT_OF_TOKEN)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(tenant.map(TenantId::stored))
    }

    async fn revoke_tenant_tokens(&self, tenant: &TenantId) -> Result<u64> {
        Ok(sqlx::query(sql::REVOKE_TENANT_TOKENS)
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    // --- the event-type catalog -----------------------------------------------------------

    async fn event_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EventType>> {
        catalog::list(&self.pool, after, limit).await
    }

    async fn event_type(&self, name: &str) -> Result<Option<EventType>> {
        let row: Option<catalog::EventTypeRow> = sqlx::query_as(catalog::GET)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(catalog::from_row))
    }

    async fn insert_event_type(&self, t: &EventType) -> Result<EventType> {
        catalog::write(&self.pool, catalog::INSERT, t)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("event type {:?}", t.name)))
    }

    async fn update_event_type(&self, t: &EventType) -> Result<Option<EventType>> {
        catalog::write(&self.pool, catalog::UPDATE, t).await
    }

    async fn delete_event_type(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query(catalog::DELETE)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    // --- gauges and retention ------------------------------------------------------------

    async fn backlog(&self) -> Result<Backlog> {
        let (unfinished, outbox, oldest): (i64, i64, Option<i64>) = self
            .read(|pool| async move { Ok(sqlx::query_as(sql::BACKLOG).fetch_one(&pool).await?) })
            .await?;
        Ok(Backlog {
            unfinished: unfinished + outbox,
            outbox,
            oldest_due_age_ms: oldest.unwrap_or(0).max(0),
        })
    }

    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<Purged> {
        self.prepare_history().await?;
        let partitions = self.drop_expired_history(before_ms).await?;
        let mut purged = Purged {
            deliveries: partitions.dropped_rows,
            events: 0,
        };
        let mut tx = self.pool.begin().await?;
        // The tables from before the partitions are trimmed row by row, as they always were;
        // a day's partition goes whole. One statement: both deletes see the same doomed
        // rows, and rows a resend is reopening right now are skipped, not waited for.
        if let Some(below) = partitions.rows_purged_below {
            purged.deliveries += sqlx::query(
                "WITH doomed AS ( \
                     SELECT id FROM hookd_deliveries WHERE state IN ('succeeded', 'failed') \
                     AND finished_at < $1 AND id < $3 \
                     ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED \
                 ), attempts AS ( \
                     DELETE FROM hookd_attempts WHERE delivery_id IN (SELECT id FROM doomed) \
                 ) \
                 DELETE FROM hookd_deliveries WHERE id IN (SELECT id FROM doomed)",
            )
            .bind(before_ms)
            .bind(batch as i64)
            .bind(below)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        purged.events = sqlx::query(sql::PURGE_EVENTS)
            .bind(before_ms)
            .bind(batch as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }
}

/// What a retention run did with the history's partitions.
struct HistoryRun {
    /// The rows of the partitions it dropped.
    dropped_rows: u64,
    /// Below which ids rows are deleted one by one ([`history::rows_purged_below`]).
    rows_purged_below: Option<i64>,
}

/// Days of partitions made ahead of today: a hookd down when a day begins finds its
/// partitions there, and ids stay in the last day prepared until one moves them on.
const DAYS_AHEAD: i32 = 2;

impl PgStore {
    /// Makes today's partitions of the history and [`DAYS_AHEAD`] days', and moves the
    /// delivery ids on to today's.
    async fn prepare_history(&self) -> Result<()> {
        sqlx::query("SELECT hookd_history_prepare($1)")
            .bind(DAYS_AHEAD)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the history's partitions that are closed and hold only deliveries that
    /// finished before `cutoff` ([`history::action`]), with their attempts. One instance at
    /// a time: the others skip their run.
    async fn drop_expired_history(&self, cutoff: i64) -> Result<HistoryRun> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('hookd_history_retention'))")
                .fetch_one(&mut *conn)
                .await?;
        let partitions: Vec<history::Partition> =
            sqlx::query_as("SELECT * FROM hookd_history_partitions()")
                .fetch_all(&mut *conn)
                .await?;
        let mut run = HistoryRun {
            dropped_rows: 0,
            rows_purged_below: history::rows_purged_below(&partitions),
        };
        if !locked {
            return Ok(run);
        }
        let result = drop_expired(&mut conn, &partitions, cutoff, &mut run).await;
        sqlx::query("SELECT pg_advisory_unlock(hashtext('hookd_history_retention'))")
            .execute(&mut *conn)
            .await?;
        result.map(|()| run)
    }
}

/// Drops or attaches again each of `partitions` as [`history::action`] says.
async fn drop_expired(
    conn: &mut sqlx::PgConnection,
    partitions: &[history::Partition],
    cutoff: i64,
    run: &mut HistoryRun,
) -> Result<()> {
    let next_id: i64 = sqlx::query_scalar("SELECT last_value FROM hookd_deliveries_id_seq")
        .fetch_one(&mut *conn)
        .await?;
    for p in partitions {
        match history::action(p, cutoff, next_id) {
            history::Action::Keep => {}
            history::Action::Reattach => attach(conn, p).await?,
            history::Action::Drop => {
                if let Some(rows) = drop_partition(conn, p, cutoff, next_id).await? {
                    run.dropped_rows += rows;
                    if p.lo.is_none() {
                        run.rows_purged_below = None;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether `e` says that the row a statement waited for was moved to another partition by
/// the transaction it waited for (SQLSTATE 40001): a delivery that finished or was reopened
/// meanwhile. Run again, the statement finds it in its new partition.
fn moved_meanwhile(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}

/// Detaches `table` from `parent` if it is attached, finishing an interrupted detach.
/// `CONCURRENTLY`: the parent stays open to reads and writes; the detach waits for the
/// transactions that could see the partition.
async fn detach(conn: &mut sqlx::PgConnection, parent: &str, table: &str) -> Result<()> {
    let pending: Option<bool> = sqlx::query_scalar(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    let mode = match pending {
        None => return Ok(()),
        Some(true) => "FINALIZE",
        Some(false) => "CONCURRENTLY",
    };
    let statement = format!("ALTER TABLE {parent} DETACH PARTITION \"{table}\" {mode}");
    sqlx::Executor::execute(&mut *conn, statement.as_str()).await?;
    Ok(())
}

/// Attaches `p` to the history again. Its `CHECK` of its range (made with it, or by the
/// detach) spares PostgreSQL the check of its rows.
async fn attach(conn: &mut sqlx::PgConnection, p: &history::Partition) -> Result<()> {
    detach(conn, "hookd_deliveries_finished", &p.name).await?;
    let lo = p.lo.map_or("MINVALUE".to_string(), |lo| lo.to_string());
    let statement = format!(
        "ALTER TABLE hookd_deliveries_finished ATTACH PARTITION \"{}\" FOR VALUES FROM ({lo}) TO ({})",
        p.name, p.hi
    );
    sqlx::Executor::execute(&mut *conn, statement.as_str()).await?;
    tracing::info!(partition = %p.name, "history partition attached again: a delivery of it was resent or finished again");
    Ok(())
}

/// Detaches `p`, looks at it again (a resend may have reopened one of its deliveries, or
/// one may have finished back into it, before the detach), and drops it with its attempts
/// if [`history::action`] still says so, or attaches it again. Returns the deliveries
/// dropped (PostgreSQL's estimate, or counted when it has none), `None` when it kept the
/// partition.
async fn drop_partition(
    conn: &mut sqlx::PgConnection,
    p: &history::Partition,
    cutoff: i64,
    next_id: i64,
) -> Result<Option<u64>> {
    detach(conn, "hookd_deliveries_finished", &p.name).await?;
    let (resent, newest): (bool, Option<i64>) = sqlx::query_as(&format!(
        "SELECT EXISTS (SELECT 1 FROM hookd_deliveries_unfinished \
             WHERE id >= COALESCE($1::BIGINT, 0) AND id < $2), \
         (SELECT max(finished_at) FROM \"{}\" WHERE state IN ('succeeded', 'failed'))",
        p.name
    ))
    .bind(p.lo)
    .bind(p.hi)
    .fetch_one(&mut *conn)
    .await?;
    let detached = history::Partition {
        attached: false,
        detach_pending: false,
        resent,
        newest_finish: newest,
        ..p.clone()
    };
    if history::action(&detached, cutoff, next_id) != history::Action::Drop {
        attach(conn, p).await?;
        return Ok(None);
    }
    let rows = if p.rows >= 0 {
        p.rows
    } else {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{}\"", p.name))
            .fetch_one(&mut *conn)
            .await?
    };
    detach(conn, "hookd_attempts", &p.attempts).await?;
    for table in [&p.attempts, &p.name] {
        let statement = format!("DROP TABLE IF EXISTS \"{table}\"");
        sqlx::Executor::execute(&mut *conn, statement.as_str()).await?;
    }
    tracing::info!(partition = %p.name, rows, "retention dropped a partition of the history");
    Ok(Some(rows.max(0) as u64))
}

impl PgStore {
    /// An endpoint, deleted or not.
    async fn endpoint_any(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        shared::endpoint_any(&self.pool, self.sealer(), id).await
    }

    /// Records results; returns the delivery ids recorded.
    async fn complete_rows(
        conn: &mut sqlx::PgConnection,
        batch: &[Completion],
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(&COMPLETE)
            .bind(rows::completions_json(batch))
            .fetch_all(conn)
            .await?)
    }
}

#[async_trait]
impl shared::IngestWrites for PgStore {
    type DB = Postgres;
    const LOCK_ORDERED: Option<&'static str> =
        Some("SELECT 1 FROM hookd_endpoints WHERE id = $1 FOR UPDATE");

    /// New events, as one JSON array; returns the ids inserted.
    async fn insert_events(
        conn: &mut sqlx::PgConnection,
        rows: &[PreparedEvent<'_>],
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql::INSERT_EVENTS.postgres())
            .bind(ingest::events_json(rows))
            .fetch_all(conn)
            .await?)
    }

    /// New deliveries, as one JSON array, in order.
    async fn insert_deliveries(
        conn: &mut sqlx::PgConnection,
        rows: &[NewDelivery<'_>],
    ) -> Result<()> {
        sqlx::query(sql::INSERT_DELIVERIES.postgres())
            .bind(serde_json::to_string(rows).expect("deliveries serialize"))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// New deliveries created leased; returns each one's id, event and endpoint.
    async fn insert_leased_deliveries(
        conn: &mut sqlx::PgConnection,
        rows: &[NewDelivery<'_>],
    ) -> Result<Vec<(i64, String, String)>> {
        Ok(sqlx::query_as(sql::INSERT_LEASED_DELIVERIES.postgres())
            .bind(serde_json::to_string(rows).expect("deliveries serialize"))
            .fetch_all(conn)
            .await?)
    }

    async fn count_deliveries(
        conn: &mut sqlx::PgConnection,
        event_ids: &[String],
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(sql::COUNT_EVENTS_DELIVERIES_POSTGRES)
            .bind(event_ids)
            .fetch_all(conn)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_woken_by_every_notification_but_its_own_ingests() {
        let own = deliveries_payload("inst_a");
        for (payload, woken) in [
            ("outbox", true),
            ("deliveries inst_b", true),
            (own.as_str(), false),
            // A notification from a build before instances named themselves.
            ("deliveries", true),
            ("", true),
        ] {
            assert_eq!(wakes(payload, &own), woken, "{payload:?}");
        }
    }
}
