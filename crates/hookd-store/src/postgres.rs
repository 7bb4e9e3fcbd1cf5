//! The production store: PostgreSQL, shared by any number of hookd instances.
//!
//! Claims take due rows with `FOR UPDATE SKIP LOCKED` inside a single statement, so
//! instances never wait on each other and no lock outlives the claim. A trigger on
//! `hookd_outbox` sends `NOTIFY hookd` when a producer commits, and ingestion sends one when
//! it creates deliveries, so every instance wakes at once; polling remains as a fallback.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::common::{push_filter, store_impl};
use crate::rows::{ClaimRow, OutboxRow};
use crate::sql;
use crate::{Result, Sealer, WakeSource};

/// A write transaction: on PostgreSQL, any pooled connection's.
type WriteTx = Transaction<'static, Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The NOTIFY channel.
const CHANNEL: &str = "hookd";
/// Connections per instance: the dispatcher (its claims and outbox reads), the recorder and
/// the API share them.
const MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
    sealer: Option<Arc<dyn Sealer>>,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool, sealer: None })
    }

    const LOCK_ENDPOINT: Option<&'static str> =
        Some("SELECT 1 FROM hookd_endpoints WHERE id = $1 FOR UPDATE");
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn sql(statement: &'static str) -> Cow<'static, str> {
        Cow::Borrowed(statement)
    }

    fn sealer(&self) -> Option<&dyn Sealer> {
        self.sealer.as_deref()
    }

    /// Encrypts endpoint secrets at rest with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn writer(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        Ok(self.pool.begin().await?)
    }

    /// Writes go through the pool, which replaces a broken connection: the read that
    /// readiness makes already says whether the server answers.
    async fn check_writer(&self) -> Result<()> {
        Ok(())
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

/// One claim round in one statement: retries ahead ($5), first attempts ($6), then the
/// retries after those ahead ($7, read in the same order past the first $5), $3 in all.
/// The `UNION ALL` under the `LIMIT` reads an arm only while the ones before it leave room,
/// so rows an arm never reaches are never locked. Each arm reads its own partial index.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let due = |name: &str, kind: &str, limit: &str| {
        format!(
            "{name} AS (SELECT id FROM hookd_deliveries \
             WHERE state = 'pending' AND {kind} AND next_attempt_at <= hookd_now_ms() \
             AND endpoint_id <> ALL($4) \
             ORDER BY next_attempt_at {limit} FOR UPDATE SKIP LOCKED)"
        )
    };
    format!(
        "WITH {}, {}, {}, \
         due AS (SELECT id FROM ahead UNION ALL SELECT id FROM first UNION ALL \
             SELECT id FROM after LIMIT $3), \
         claimed AS ( \
             UPDATE hookd_deliveries d SET state = 'in_flight', lease_token = $1, \
                 lease_expires_at = hookd_now_ms() + $2, attempts = d.attempts + 1, \
                 auto_attempts = d.auto_attempts + CASE WHEN d.next_trigger = 'auto' THEN 1 ELSE 0 END, \
                 updated_at = hookd_now_ms() \
             FROM due WHERE d.id = due.id \
             RETURNING d.id, d.lease_token, d.event_id, d.event_type, d.endpoint_id, d.attempts, \
                 d.next_trigger, d.auto_attempts, d.manual_only, d.next_attempt_at \
         ) \
         SELECT c.id, c.lease_token, c.event_id, c.event_type, c.endpoint_id, c.attempts, \
             c.next_trigger, c.auto_attempts, c.manual_only, c.next_attempt_at, e.payload, \
             e.payload_error \
         FROM claimed c JOIN hookd_events e ON e.event_id = c.event_id \
         ORDER BY c.next_attempt_at, c.id",
        due("ahead", "attempts > 0", "LIMIT $5"),
        due("first", "attempts = 0", "LIMIT $6"),
        due("after", "attempts > 0", "LIMIT $7 OFFSET $5"),
    )
});

impl PgStore {
    /// Records results; returns the delivery ids recorded.
    async fn complete_rows(
        conn: &mut sqlx::PgConnection,
        batch: &[crate::Completion],
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(&COMPLETE)
            .bind(crate::rows::completions_json(batch))
            .fetch_all(conn)
            .await?)
    }

    /// The same, as one statement in a transaction of its own: one round trip.
    async fn complete_unordered(&self, batch: &[crate::Completion]) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(&COMPLETE)
            .bind(crate::rows::completions_json(batch))
            .fetch_all(&self.pool)
            .await?)
    }

    /// New events, as one JSON array; returns the ids inserted.
    async fn insert_events(
        tx: &mut WriteTx,
        rows: &[crate::ingest::PreparedEvent<'_>],
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql::INSERT_EVENTS.postgres())
            .bind(crate::ingest::events_json(rows))
            .fetch_all(&mut **tx)
            .await?)
    }

    /// New deliveries, as one JSON array, in order.
    async fn insert_deliveries(
        tx: &mut WriteTx,
        rows: &[crate::ingest::NewDelivery<'_>],
    ) -> Result<()> {
        sqlx::query(sql::INSERT_DELIVERIES.postgres())
            .bind(serde_json::to_string(rows).expect("deliveries serialize"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// New deliveries created leased; returns each one's id, event and endpoint.
    async fn insert_leased_deliveries(
        tx: &mut WriteTx,
        rows: &[crate::ingest::NewDelivery<'_>],
    ) -> Result<Vec<(i64, String, String)>> {
        Ok(sqlx::query_as(sql::INSERT_LEASED_DELIVERIES.postgres())
            .bind(serde_json::to_string(rows).expect("deliveries serialize"))
            .fetch_all(&mut **tx)
            .await?)
    }
}

struct PgWake(PgListener);

#[async_trait]
impl WakeSource for PgWake {
    async fn wait(&mut self) -> Result<()> {
        // PgListener reconnects (and re-LISTENs) by itself on the next call after an error.
        self.0.recv().await?;
        Ok(())
    }
}

store_impl!(PgStore, Postgres, {
    async fn endpoint_summaries(
        &self,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<crate::Summaries> {
        let endpoints = self.endpoints(after, limit).await?;
        crate::summary::summarize(self.reader(), Self::sql, endpoints, window_ms).await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Box::new(PgWake(listener))))
    }

    async fn ingest_leasing(
        &self,
        max_rows: u32,
        limits: &crate::IngestLimits,
        lease: Option<crate::IngestLease<'_>>,
    ) -> Result<crate::Ingested> {
        let window = crate::ingest::window(max_rows, lease.as_ref());
        let mut tx = self.begin_write().await?;
        // SKIP LOCKED: several instances ingest disjoint rows side by side.
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, event_type, payload, endpoint_id FROM hookd_outbox \
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(window as i64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(crate::Ingested::default());
        }
        let full = rows.len() == window as usize;
        let targets = Self::targets(&mut tx).await?;
        let ordered = crate::matching::reaches_ordered(
            rows.iter()
                .map(|r| (r.event_type.as_str(), r.endpoint_id.as_deref())),
            &targets,
        );
        if ordered {
            // An ordered endpoint's deliveries go in the order they are created, so they
            // must be created in outbox order. Earlier rows skipped above are being ingested
            // by another instance: wait for it to commit (they are gone then), and take any
            // it left (or a producer committed late) ahead of ours. Waits only on earlier
            // rows, so ingestions never wait on each other in a circle.
            let earlier: Vec<OutboxRow> = sqlx::query_as(
                "SELECT seq, event_id, event_type, payload, endpoint_id FROM hookd_outbox \
                 WHERE seq < $1 ORDER BY seq FOR UPDATE",
            )
            .bind(rows[0].seq)
            .fetch_all(&mut *tx)
            .await?;
            if !earlier.is_empty() {
                rows.splice(0..0, earlier);
            }
        }
        let read = rows.len();
        let (rows, mut leasing) = crate::ingest::lease_rows(rows, &targets, lease);
        let more = full || rows.len() < read;
        let incoming: Vec<crate::ingest::Incoming> = rows.iter().map(OutboxRow::incoming).collect();
        Self::store_events(&mut tx, &targets, &incoming, limits, leasing.as_mut()).await?;
        // The rows not taken stay locked until the commit, then wait for the next ingest.
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sqlx::query("DELETE FROM hookd_outbox WHERE seq = ANY($1)")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        // Deliveries leased here are taken: other instances are woken only for the rest.
        if leasing.as_ref().is_none_or(|l| l.due) {
            sqlx::query("SELECT pg_notify($1, 'deliveries')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.ingested(rows.len(), more, leasing).await
    }

    async fn claim_due(
        &self,
        plan: crate::ClaimPlan,
        exclude_endpoints: &[String],
        lease_ms: u64,
    ) -> Result<Vec<crate::Claimed>> {
        let (ahead, first, after) = plan.limits();
        let rows: Vec<ClaimRow> = sqlx::query_as(&CLAIM)
            .bind(crate::token())
            .bind(lease_ms as i64)
            .bind(plan.max as i64)
            .bind(exclude_endpoints)
            .bind(ahead)
            .bind(first)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        self.with_endpoints(rows).await
    }

    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<crate::Purged> {
        let mut tx = self.begin_write().await?;
        // One statement: both deletes see the same doomed rows, and rows a resend is
        // reopening right now are skipped, not waited for.
        let deliveries = sqlx::query(
            "WITH doomed AS ( \
                 SELECT id FROM hookd_deliveries WHERE state IN ('succeeded', 'failed') \
                 AND finished_at < $1 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), attempts AS ( \
                 DELETE FROM hookd_attempts WHERE delivery_id IN (SELECT id FROM doomed) \
             ) \
             DELETE FROM hookd_deliveries WHERE id IN (SELECT id FROM doomed)",
        )
        .bind(before_ms)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(sql::PURGE_EVENTS)
            .bind(before_ms)
            .bind(batch as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(crate::Purged { deliveries, events })
    }

    async fn rescue_expired(&self) -> Result<u64> {
        let rescued = sqlx::query(
            "WITH expired AS ( \
                 SELECT id, attempts, next_trigger, updated_at FROM hookd_deliveries \
                 WHERE state = 'in_flight' AND lease_expires_at < hookd_now_ms() \
                 FOR UPDATE SKIP LOCKED \
             ), returned AS ( \
                 UPDATE hookd_deliveries d SET state = 'pending', lease_token = NULL, \
                     lease_expires_at = NULL, next_attempt_at = hookd_now_ms(), \
                     last_status_code = NULL, last_error = $1, \
                     next_trigger = CASE WHEN d.resend_requested THEN 'manual' ELSE d.next_trigger END, \
                     resend_requested = FALSE, updated_at = hookd_now_ms() \
                 FROM expired WHERE d.id = expired.id \
             ) \
             INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
                 outcome, error) \
             SELECT id, attempts, next_trigger, updated_at, hookd_now_ms() - updated_at, 'lost', $1 \
             FROM expired",
        )
        .bind(sql::LOST_ERROR)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(rescued)
    }
});
