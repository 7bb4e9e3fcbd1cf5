//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one connection (SQLite has one writer at a time anyway; queueing
//! for it is cheaper than retrying `SQLITE_BUSY`), each write transaction takes the write
//! lock before it reads anything (`BEGIN IMMEDIATE`, or a plain `BEGIN` when its first
//! statement writes) so it never has to upgrade a read lock, and a busy timeout rides out a
//! producer's write transaction. Reads use their own small pool and never block on
//! the writer (WAL). Other processes' outbox inserts are seen at once by a watch of the
//! write-ahead log (`wal_watch`), and by polling besides.
//!
//! This file is the store's `Store` methods and the statements only it runs: most are shared
//! with PostgreSQL (`crate::sql`), run through [`dialect`]. `writer` is the one write
//! connection: how a write waits for it, its transactions, and the WAL checkpointer beside
//! it.

mod wal_watch;
mod writer;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use crate::common;
use crate::emit;
use crate::outbox_share;

use crate::ingest::{self, Incoming, NewDelivery, PreparedEvent};
use crate::limited;
use crate::rows::{self, ClaimRow, OutboxRow, DELIVERY_COLUMNS, RESEND_JOB_COLUMNS};
use crate::shared;
use crate::sql;
use crate::values;
use crate::*;
use writer::{Writer, BUSY_TIMEOUT};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Read connections; WAL lets them all read while the writer writes.
const READERS: u32 = 4;

pub struct SqliteStore {
    /// The database file; `None` in memory.
    path: Option<std::path::PathBuf>,
    writer: Writer,
    reader: SqlitePool,
    sealer: Option<Arc<dyn Sealer>>,
    /// Where the next full outbox read's round of tenants starts.
    outbox_share: outbox_share::Cursor,
}

/// [`sql::STRANDED_HEADS`] let go.
static PROMOTE_STRANDED: LazyLock<String> = LazyLock::new(|| {
    sql::sqlite_dialect_owned(&format!(
        "{} WHERE id IN ({})",
        sql::PROMOTE_STRANDED_SET,
        *sql::STRANDED_HEADS
    ))
});

impl SqliteStore {
    /// Opens (creating if missing) `sqlite://REL/PATH` or `sqlite:///ABS/PATH`.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives any process crash; only an OS crash can lose the
            // last commits, and then WAL's ordering loses outbox rows and their ingestion
            // together, never one without the other.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let file = options.get_filename();
        let path = (!file.as_os_str().is_empty() && file.as_os_str() != ":memory:")
            .then(|| file.to_path_buf());
        let writer = Writer::open(&options).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(BUSY_TIMEOUT * 3)
            .connect_with(options)
            .await?;
        Ok(Self {
            path,
            writer,
            reader,
            sealer: None,
            outbox_share: Default::default(),
        })
    }

    fn sealer(&self) -> Option<&dyn Sealer> {
        self.sealer.as_deref()
    }

    /// Returns the deliveries in flight whose lease matches `leases` (SQL over the row,
    /// `$1` = now) to pending, due now, logging their attempts as lost. Returns how many.
    async fn rescue_leases(&self, leases: &str) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let now: i64 = sqlx::query_scalar(&dialect(sql::NOW))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
             outcome, error) SELECT id, attempts, next_trigger, updated_at, $1 - updated_at, \
             'lost', $2 FROM hookd_deliveries WHERE state = 'in_flight' AND {leases}"
        ))
        .bind(now)
        .bind(sql::LOST_ERROR)
        .execute(&mut *tx)
        .await?;
        let rescued = sqlx::query(&format!(
            "UPDATE hookd_deliveries SET state = 'pending', lease_token = NULL, \
             lease_expires_at = NULL, next_attempt_at = $1, last_status_code = NULL, \
             last_error = $2, \
             next_trigger = CASE WHEN resend_requested THEN 'manual' ELSE next_trigger END, \
             resend_requested = FALSE, updated_at = $1 \
             WHERE state = 'in_flight' AND {leases}"
        ))
        .bind(now)
        .bind(sql::LOST_ERROR)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(rescued)
    }

    /// Encrypts endpoint secrets at rest with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }
}

/// Outbox rows, `tail` (`$1`: `bind`) after the `FROM`. Producers may bind anything (SQLite
/// keeps a BLOB a BLOB, and text that is not UTF-8): bytes are read, so that one odd row
/// fails alone instead of stopping ingestion.
async fn outbox_rows(
    conn: &mut sqlx::SqliteConnection,
    tail: &str,
    bind: Option<i64>,
) -> Result<Vec<OutboxRow>> {
    type Raw = (
        i64,
        Option<Vec<u8>>,
        Vec<u8>,
        Vec<u8>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let statement = format!(
        "SELECT seq, CAST(event_id AS BLOB), CAST(event_type AS BLOB), CAST(payload AS BLOB), \
         CAST(endpoint_id AS BLOB), CAST(tenant_id AS BLOB), CAST(traceparent AS BLOB) \
         FROM hookd_outbox {tail}"
    );
    let mut query = sqlx::query_as::<_, Raw>(&statement);
    if let Some(value) = bind {
        query = query.bind(value);
    }
    let raw = query.fetch_all(&mut *conn).await?;
    Ok(raw
        .into_iter()
        .map(
            |(seq, event_id, event_type, payload, endpoint_id, tenant_id, traceparent)| {
                let text = |b: Vec<u8>| ingest::lossy(b).0;
                let (mut payload, utf8) = ingest::lossy(payload);
                if !utf8 {
                    // Not JSON either way; make sure it is refused as such.
                    payload.insert_str(0, "\u{FFFD}not UTF-8: ");
                }
                OutboxRow {
                    seq,
                    event_id: event_id.map(text),
                    event_type: text(event_type),
                    payload,
                    endpoint_id: endpoint_id.map(text),
                    tenant_id: tenant_id.map(text),
                    traceparent: traceparent.map(text),
                }
            },
        )
        .collect())
}

/// SQLite's text of a statement shared with PostgreSQL (`crate::sql`): `hookd_now_ms()`
/// spelled out, index hints applied.
fn dialect(statement: &'static str) -> Cow<'static, str> {
    sql::sqlite_dialect(statement)
}

/// The attempt log rows of a batch of results whose leases still hold. Written first: when
/// every row was written, every result will be recorded and [`COMPLETE`] need return nothing
/// (SQLite has no data-modifying CTE to do both in one statement, as PostgreSQL does).
static INSERT_ATTEMPTS: sql::Batch = sql::Batch::with_suffix(
    sql::COMPLETION_COLUMNS,
    sql::INSERT_ATTEMPTS_BATCH,
    " CROSS JOIN hookd_deliveries d ON d.id = v.delivery_id \
     AND d.lease_token = v.lease_token AND d.state = 'in_flight'",
);
/// Records a batch of results, each only if its lease still holds.
static COMPLETE: sql::Batch = sql::Batch::new(sql::COMPLETION_COLUMNS, sql::COMPLETE_BATCH);
/// The same, naming the deliveries recorded: for a batch in which some leases were lost.
static COMPLETE_RETURNING: sql::Batch = sql::Batch::with_suffix(
    sql::COMPLETION_COLUMNS,
    sql::COMPLETE_BATCH,
    " RETURNING hookd_deliveries.id",
);

/// One claim round in one statement, `$3` rows in all: retries ahead of the first attempts
/// (`$5` at most: each chosen endpoint's fair share of them, then the oldest due retries of
/// any endpoint for the places the shares left), first attempts in each chosen endpoint's
/// fair share, then the oldest due first attempts of any endpoint for the places the
/// shares left (`$6`), then retries after the first attempts (`$7` at most, shared in the
/// same way). `fair` first-attempt arms (endpoint `$N`, `$N+1` rows, from `$8` on), then
/// `retries` retry arms (endpoint `$M`, `$M+1` rows ahead, `$M+2` after). SQLite runs
/// `UNION ALL` arm by arm under the outer `LIMIT`, so an arm is read only while the ones
/// before it leave room. Each arm reads its own partial index in due order.
/// Without `rest`, the arms that take the oldest due rows of any endpoint read nothing:
/// only the fair shares, while a rate-limited endpoint has rows due ([`crate::limited`]).
fn claim_sql(fair: usize, retries: usize, rest: bool) -> String {
    let due = |index: &str, kind: &str, limit: &str| {
        if !rest {
            return "SELECT NULL WHERE FALSE".to_string();
        }
        format!(
            "SELECT id FROM (SELECT id FROM hookd_deliveries /* {index} */ \
             WHERE state = 'pending' AND {kind} AND next_attempt_at <= hookd_now_ms() \
             AND endpoint_id NOT IN (SELECT value FROM json_each($4)) \
             ORDER BY next_attempt_at {limit})"
        )
    };
    let arms = |arms: Vec<String>| {
        if arms.is_empty() {
            "SELECT NULL WHERE FALSE".to_string()
        } else {
            arms.join(" UNION ALL ")
        }
    };
    let first_shares = arms(
        (0..fair)
            .map(|n| {
                let (endpoint, rows) = (8 + 2 * n, 9 + 2 * n);
                format!(
                    "SELECT id FROM ({} LIMIT ${rows})",
                    sql::share_of(&format!("${endpoint}"), sql::FIRST_BY_ENDPOINT, "")
                )
            })
            .collect(),
    );
    let retry_shares = |later: bool| {
        arms(
            (0..retries)
                .map(|n| {
                    let base = 8 + 2 * fair + 3 * n;
                    let (also, rows) = if later {
                        (" AND id NOT IN (SELECT id FROM ahead)", base + 2)
                    } else {
                        ("", base + 1)
                    };
                    format!(
                        "SELECT id FROM ({} LIMIT ${rows})",
                        sql::share_of(&format!("${base}"), sql::RETRY_BY_ENDPOINT, also)
                    )
                })
                .collect(),
        )
    };
    sql::sqlite_dialect_owned(&format!(
        "WITH fair(id) AS ({first_shares}), \
         retry_fair(id) AS ({}), \
         ahead(id) AS (SELECT id FROM (SELECT id FROM retry_fair UNION ALL {}) LIMIT $5), \
         retry_later(id) AS ({}), \
         later(id) AS (SELECT id FROM (SELECT id FROM retry_later UNION ALL {}) LIMIT $7) \
         UPDATE hookd_deliveries SET state = 'in_flight', lease_token = $1, \
         lease_expires_at = hookd_now_ms() + $2, attempts = attempts + 1, \
         auto_attempts = auto_attempts + CASE WHEN next_trigger = 'auto' THEN 1 ELSE 0 END, \
         updated_at = hookd_now_ms() \
         WHERE id IN (SELECT id FROM ahead UNION ALL SELECT id FROM fair UNION ALL {} \
             UNION ALL SELECT id FROM later LIMIT $3) \
         RETURNING id, lease_token, event_id, event_type, endpoint_id, attempts, next_trigger, \
             auto_attempts, manual_only, next_attempt_at, \
             (SELECT payload FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) AS payload, \
             (SELECT payload_error FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) \
                 AS payload_error, \
             (SELECT traceparent FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) \
                 AS traceparent",
        retry_shares(false),
        due(
            "due_retry",
            "attempts > 0 AND id NOT IN (SELECT id FROM retry_fair)",
            "LIMIT $5"
        ),
        retry_shares(true),
        due(
            "due_retry",
            "attempts > 0 AND id NOT IN (SELECT id FROM ahead) \
             AND id NOT IN (SELECT id FROM retry_later)",
            "LIMIT $7"
        ),
        due(
            "due_first",
            "attempts = 0 AND id NOT IN (SELECT id FROM fair)",
            "LIMIT $6"
        ),
    ))
}

/// The endpoints with first attempts or retries due, for a fair claim.
static DUE_ENDPOINTS: LazyLock<String> =
    LazyLock::new(|| sql::sqlite_dialect_owned(&sql::DUE_ENDPOINTS));

/// The claim statements by number of first-attempt and retry arms, each built when first
/// used.
static CLAIMS: LazyLock<Mutex<ClaimStatements>> = LazyLock::new(Default::default);

/// Claim statements by (first-attempt arms, retry arms, rest).
type ClaimStatements = std::collections::HashMap<(usize, usize, bool), Arc<str>>;

fn claim_statement(fair: usize, retries: usize, rest: bool) -> Arc<str> {
    CLAIMS
        .lock()
        .expect("no panic while it is held")
        .entry((fair, retries, rest))
        .or_insert_with(|| claim_sql(fair, retries, rest).into())
        .clone()
}

/// One rate-limited endpoint's share ([`crate::limited::limited_rows`], `$1` to `$4`),
/// leased with token `$5` for `$6` ms; the rows as a claim returns them.
static LIMITED_CLAIM: LazyLock<String> = LazyLock::new(|| {
    sql::sqlite_dialect_owned(&format!(
        "UPDATE hookd_deliveries SET state = 'in_flight', lease_token = $5, \
         lease_expires_at = hookd_now_ms() + $6, attempts = attempts + 1, \
         auto_attempts = auto_attempts + CASE WHEN next_trigger = 'auto' THEN 1 ELSE 0 END, \
         updated_at = hookd_now_ms() \
         WHERE id IN ({}) \
         RETURNING id, lease_token, event_id, event_type, endpoint_id, attempts, next_trigger, \
             auto_attempts, manual_only, next_attempt_at, \
             (SELECT payload FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) AS payload, \
             (SELECT payload_error FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) \
                 AS payload_error, \
             (SELECT traceparent FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) \
                 AS traceparent",
        crate::limited::limited_rows("")
    ))
});

static LOCK_LIMITED: LazyLock<String> = LazyLock::new(|| {
    sql::sqlite_dialect_owned(
        "SELECT id, rate_limit, rate_tat, hookd_now_ms() FROM hookd_endpoints \
         WHERE id IN (SELECT value FROM json_each($1)) AND rate_limit IS NOT NULL \
         AND deleted_at IS NULL ORDER BY id",
    )
});

static LIMITED_NEXT_DUE: LazyLock<String> =
    LazyLock::new(|| sql::sqlite_dialect_owned(&crate::limited::LIMITED_NEXT_DUE));

impl SqliteStore {
    /// The claim statement for the fair `shares` (and, with `rest`, the oldest due rows of
    /// any endpoint for the places they leave).
    async fn claim_shares(
        &self,
        plan: ClaimPlan,
        exclude_endpoints: &[EndpointId],
        lease_ms: u64,
        shares: common::FairShares,
        rest: bool,
    ) -> Result<Vec<ClaimRow>> {
        let (ahead, first, after) = plan.limits();
        let excluded = serde_json::to_string(exclude_endpoints).expect("strings serialize");
        let statement = claim_statement(shares.first.len(), shares.retries.len(), rest);
        let mut claim = sqlx::query_as(&statement)
            .bind(crate::token())
            .bind(lease_ms as i64)
            .bind(plan.max as i64)
            .bind(excluded)
            .bind(ahead)
            .bind(first)
            .bind(after);
        for (endpoint, rows) in shares.first {
            claim = claim.bind(endpoint).bind(rows as i64);
        }
        for (endpoint, ahead, after) in shares.retries {
            claim = claim.bind(endpoint).bind(ahead as i64).bind(after as i64);
        }
        Ok(claim.fetch_all(&mut *self.writer.lock().await?).await?)
    }

    /// Claims the shares of rate-limited endpoints, each within its budget, and moves the
    /// budgets on, in one write transaction ([`crate::limited`]).
    async fn claim_limited(
        &self,
        shares: &[limited::LimitedShare],
        lease_ms: u64,
    ) -> Result<Vec<ClaimRow>> {
        let ids: Vec<&str> = shares.iter().map(|l| l.endpoint.as_str()).collect();
        let ids = serde_json::to_string(&ids).expect("strings serialize");
        let mut tx = self.writer.begin().await?;
        let locked: Vec<limited::Locked> = sqlx::query_as(&LOCK_LIMITED)
            .bind(ids)
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
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn endpoint_summaries_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
        window_ms: i64,
    ) -> Result<crate::Summaries> {
        let endpoints = self.endpoints_in(scope, after, limit).await?;
        crate::summary::summarize(
            &self.reader,
            dialect,
            endpoints,
            window_ms,
            scope.tenant().map(|t| t.to_string()),
        )
        .await
    }

    fn writer_busy_seconds(&self) -> Option<f64> {
        Some(self.writer.busy().as_secs_f64())
    }

    async fn stopped(&self) -> String {
        self.writer.stopped().await
    }

    #[cfg(feature = "fault-injection")]
    async fn end_writer_thread(&self) -> bool {
        self.writer.end_thread().await
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run_direct(&mut *self.writer.lock().await?).await?;
        Ok(())
    }

    async fn check_ready(&self) -> Result<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.reader)
                .await?;
        common::all_applied(applied, &MIGRATOR)?;
        self.writer.check().await
    }

    async fn now_ms(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(&dialect(sql::NOW))
            .fetch_one(&self.reader)
            .await?)
    }

    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        match &self.path {
            Some(path) => {
                let conn = self.reader.acquire().await?.detach();
                Ok(Some(Box::new(
                    wal_watch::WalWatch::start(path, conn).await?,
                )))
            }
            None => Ok(None),
        }
    }

    // --- endpoints -------------------------------------------------------------------

    async fn insert_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let insert = dialect(sql::INSERT_ENDPOINT);
        shared::bind_endpoint(sqlx::query(&insert), e, self.sealer())
            .bind(e.tenant_id.as_ref().map(|t| t.as_str()))
            .bind(e.rate_limit.map(f64::from))
            .execute(&mut *self.writer.lock().await?)
            .await?;
        self.endpoint_any(&mut *self.writer.lock().await?, &e.id)
            .await?
            .ok_or_else(|| {
                StoreError::Inconsistent(format!("endpoint {} is not there after its insert", e.id))
            })
    }

    async fn endpoint_in(&self, scope: &Scope, id: &EndpointId) -> Result<Option<Endpoint>> {
        Ok(self
            .endpoint_any(&self.reader, id)
            .await?
            .filter(|e| !e.deleted && scope.sees(e.tenant_id.as_ref())))
    }

    async fn endpoints_in(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        shared::endpoints_in(&self.reader, self.sealer(), scope, after, limit).await
    }

    async fn unreadable_endpoints(&self) -> Result<Vec<(EndpointId, String)>> {
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as(&dialect(sql::SEALED_ENDPOINTS))
                .fetch_all(&self.reader)
                .await?;
        Ok(crate::unreadable(self.sealer(), rows))
    }

    async fn update_endpoint_if(
        &self,
        e: &Endpoint,
        if_version: Option<i64>,
    ) -> Result<Versioned<Endpoint>> {
        let update = dialect(sql::UPDATE_ENDPOINT);
        let mut tx = self.writer.begin().await?;
        let before: Option<(bool, Option<String>)> = sqlx::query_as(
            "SELECT enabled, tenant_id FROM hookd_endpoints WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(&e.id)
        .fetch_optional(&mut *tx)
        .await?;
        let updated = shared::bind_endpoint(sqlx::query(&update), e, self.sealer())
            .bind(e.unreadable.is_some())
            .bind(if_version)
            .bind(e.rate_limit.map(f64::from))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            return shared::unwritten::<Sqlite, _>(&mut tx, dialect, &e.id).await;
        }
        let follow = if e.enabled {
            sql::UNPARK_ENDPOINT_DELIVERIES
        } else {
            sql::PARK_ENDPOINT_DELIVERIES
        };
        sqlx::query(&dialect(follow))
            .bind(&e.id)
            .execute(&mut *tx)
            .await?;
        if !e.ordered {
            sqlx::query(&dialect(sql::UNHOLD_ENDPOINT_DELIVERIES))
                .bind(&e.id)
                .bind(e.enabled)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(notice) = operational::enabled_change(e, before) {
            emit::write::<Sqlite>(&mut tx, dialect, &[notice]).await?;
        }
        tx.commit().await?;
        Ok(
            match self
                .endpoint_any(&mut *self.writer.lock().await?, &e.id)
                .await?
            {
                Some(updated) => Versioned::Done(updated),
                None => Versioned::NotFound,
            },
        )
    }

    async fn delete_endpoint_if(
        &self,
        id: &EndpointId,
        if_version: Option<i64>,
    ) -> Result<Versioned<()>> {
        let mut tx = self.writer.begin().await?;
        let deleted = sqlx::query(&dialect(sql::DELETE_ENDPOINT))
            .bind(id)
            .bind(if_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return shared::unwritten::<Sqlite, _>(&mut tx, dialect, id).await;
        }
        sqlx::query(&dialect(sql::FAIL_ENDPOINT_DELIVERIES))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Versioned::Done(()))
    }

    async fn disable_endpoint(&self, id: &EndpointId, reason: &str) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let disabled = sqlx::query(&dialect(sql::DISABLE_ENDPOINT))
            .bind(id)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if disabled {
            sqlx::query(&dialect(sql::PARK_ENDPOINT_DELIVERIES))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let notice = emit::disabled::<Sqlite>(&mut tx, id, reason).await?;
            emit::write::<Sqlite>(&mut tx, dialect, &[notice]).await?;
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
        let mut tx = self.writer.begin().await?;
        let mut notices = Vec::new();
        for (id, succeeded) in outcomes {
            if *succeeded {
                sqlx::query(&dialect(sql::ENDPOINT_SUCCEEDED))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let began = sqlx::query(&dialect(sql::ENDPOINT_FAILED))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if began {
                notices.extend(emit::failing::<Sqlite>(&mut tx, dialect, id).await?);
            }
            let Some(after) = disable_after_ms else {
                continue;
            };
            let now_disabled = sqlx::query(&dialect(sql::DISABLE_IF_FAILING))
                .bind(id)
                .bind(reason)
                .bind(after)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if now_disabled {
                sqlx::query(&dialect(sql::PARK_ENDPOINT_DELIVERIES))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                notices.push(emit::disabled::<Sqlite>(&mut tx, id, reason).await?);
                disabled.push(id.clone());
            }
        }
        emit::write::<Sqlite>(&mut tx, dialect, &notices).await?;
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
        let mut tx = self.writer.begin().await?;
        let targets = shared::targets::<Sqlite>(&mut tx, dialect).await?;
        let mut leasing = ingest::lease_all(&targets, lease);
        let incoming: Vec<Incoming> = events.iter().map(Incoming::from).collect();
        let stored = shared::store_events::<Self>(
            &mut tx,
            dialect,
            &targets,
            &incoming,
            limits,
            leasing.as_mut(),
        )
        .await?;
        let enqueued = shared::enqueued::<Self>(&mut tx, stored).await?;
        tx.commit().await?;
        let created = enqueued.len();
        let ingested = shared::ingested(created, false, leasing, |rows| {
            shared::with_endpoints(self, &self.reader, self.sealer(), rows)
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
        // Cheap check on a reader first: polling an empty outbox must not take the write lock.
        let any: Option<i64> = sqlx::query_scalar("SELECT seq FROM hookd_outbox LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        if any.is_none() {
            return Ok(Ingested::default());
        }
        let window = ingest::window(max_rows, lease.as_ref());
        let mut tx = self.writer.begin().await?;
        let mut rows = outbox_rows(&mut tx, "ORDER BY seq LIMIT $1", Some(window as i64)).await?;
        if rows.is_empty() {
            return Ok(Ingested::default());
        }
        let read = rows.len();
        let full = read == window as usize;
        let targets = shared::targets::<Sqlite>(&mut tx, dialect).await?;
        // The rows consumed: those up to `cut`, and those taken beyond it.
        let cut = rows.last().map(|r| r.seq).unwrap_or_default();
        let mut beyond = Vec::new();
        if full && lease.is_none() {
            let seqs =
                outbox_share::beyond::<Sqlite>(&mut tx, dialect, cut, &self.outbox_share).await?;
            if !seqs.is_empty() {
                let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
                let more = outbox_rows(
                    &mut tx,
                    &format!("WHERE seq IN ({}) ORDER BY seq", list.join(",")),
                    None,
                )
                .await?;
                let more = outbox_share::unordered(more, &targets);
                beyond = more.iter().map(|r| r.seq).collect();
                rows.extend(more);
            }
        }
        let read = rows.len();
        let (rows, mut leasing) = ingest::lease_rows(rows, &targets, lease);
        let more = full || rows.len() < read;
        let incoming: Vec<Incoming> = rows.iter().map(Incoming::from).collect();
        shared::store_events::<Self>(
            &mut tx,
            dialect,
            &targets,
            &incoming,
            limits,
            leasing.as_mut(),
        )
        .await?;
        // Without rows taken beyond the cut, what was taken is a prefix of what was read.
        let last = match beyond.is_empty() {
            true => rows.last().map(|r| r.seq).unwrap_or_default(),
            false => cut,
        };
        sqlx::query("DELETE FROM hookd_outbox WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        if !beyond.is_empty() {
            let list: Vec<String> = beyond.iter().map(i64::to_string).collect();
            sqlx::query(&format!(
                "DELETE FROM hookd_outbox WHERE seq IN ({})",
                list.join(",")
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        shared::ingested(rows.len(), more, leasing, |rows| {
            shared::with_endpoints(self, &self.reader, self.sealer(), rows)
        })
        .await
    }

    async fn event_in(&self, scope: &Scope, event_id: &EventId) -> Result<Option<Event>> {
        Ok(sqlx::query_as::<_, rows::EventRow>(&dialect(sql::EVENT))
            .bind(event_id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.reader)
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
            let due: Vec<limited::DueRow> = sqlx::query_as(&DUE_ENDPOINTS)
                .fetch_all(&self.reader)
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
        let mut rows = if !rest && shares.first.is_empty() && shares.retries.is_empty() {
            Vec::new()
        } else {
            self.claim_shares(plan, &split.exclude, lease_ms, shares, rest)
                .await?
        };
        if !split.limited.is_empty() {
            rows.extend(self.claim_limited(&split.limited, lease_ms).await?);
        }
        // RETURNING gives no order.
        rows.sort_by_key(|r| (r.next_attempt_at, r.id));
        shared::with_endpoints(self, &self.reader, self.sealer(), rows).await
    }

    async fn complete(&self, batch: &[Completion]) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if !batch
            .iter()
            .any(|c| c.ordered || operational::may_exhaust(c))
        {
            // Its first statement inserts the attempt rows.
            let mut tx = self.writer.begin_writing().await?;
            let done = Self::complete_rows(&mut tx, batch).await?;
            tx.commit().await?;
            return Ok(rows::recorded(batch, &done));
        }
        // A final result of an ordered endpoint lets its next delivery go, and a delivery
        // that gave up is told (`hookd.delivery.exhausted`), in the same transaction.
        let mut tx = self.writer.begin().await?;
        let done = Self::complete_rows(&mut tx, batch).await?;
        let recorded = shared::recorded::<Sqlite>(&mut tx, dialect, batch, &done).await?;
        let notices = emit::exhausted::<Sqlite>(&mut tx, batch, &recorded).await?;
        emit::write::<Sqlite>(&mut tx, dialect, &notices).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn release(&self, leases: &[Lease], how: Release) -> Result<u64> {
        let (state, due_now, error) = common::release_args(&how);
        let release = dialect(sql::RELEASE);
        let mut tx = self.writer.begin().await?;
        let mut released = 0;
        for lease in leases {
            let n = sqlx::query(&release)
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
                sqlx::query(&dialect(sql::PROMOTE_NEXT))
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
        self.rescue_leases("lease_expires_at < $1").await
    }

    async fn start_instance(&self) -> Result<Instance> {
        let hold = match &self.path {
            Some(path) => Some(lock_file(path)?),
            None => None,
        };
        // Whoever held these leases is gone: the lock was free.
        let released = self.rescue_leases("TRUE").await?;
        Ok(Instance::new(released, hold))
    }

    async fn heartbeat(&self, _dead_after_ms: u64) -> Result<u64> {
        Ok(0)
    }

    async fn stop_instance(&self) -> Result<()> {
        Ok(())
    }

    async fn promote_stranded(&self) -> Result<u64> {
        Ok(sqlx::query(&PROMOTE_STRANDED)
            .execute(&mut *self.writer.lock().await?)
            .await?
            .rows_affected())
    }

    async fn next_due_in_ms(&self) -> Result<Option<i64>> {
        let due: Option<i64> = sqlx::query_scalar(&dialect(sql::NEXT_DUE))
            .fetch_one(&self.reader)
            .await?;
        let limited: Vec<limited::NextDueRow> = sqlx::query_as(&LIMITED_NEXT_DUE)
            .fetch_all(&self.reader)
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
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM hookd_deliveries WHERE TRUE"
        ));
        common::push_filter(&mut q, filter);
        if let Some(before) = before_id {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
        q.build_query_as::<rows::DeliveryRow>()
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(Delivery::try_from)
            .collect()
    }

    async fn delivery_in(&self, scope: &Scope, id: i64) -> Result<Option<Delivery>> {
        sqlx::query_as::<_, rows::DeliveryRow>(&dialect(sql::DELIVERY))
            .bind(id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.reader)
            .await?
            .map(Delivery::try_from)
            .transpose()
    }

    async fn attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRecord>> {
        sqlx::query_as::<_, rows::AttemptRow>(&dialect(sql::ATTEMPTS))
            .bind(delivery_id)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(AttemptRecord::try_from)
            .collect()
    }

    async fn resend_in(&self, scope: &Scope, id: i64) -> Result<bool> {
        let mut q = QueryBuilder::<Sqlite>::new(dialect(sql::RESEND_SET));
        q.push("WHERE id = ").push_bind(id);
        if let Some(tenant) = scope.tenant() {
            q.push(" AND tenant_id = ").push_bind(tenant.as_str());
        }
        Ok(q.build()
            .execute(&mut *self.writer.lock().await?)
            .await?
            .rows_affected()
            == 1)
    }

    async fn create_resend_job(&self, filter: &DeliveryFilter) -> Result<ResendJob> {
        let id = crate::new_id("rsj");
        // The job covers what exists now: ids up to the current highest, down to the
        // lowest that matches. Counted on a reader, through the filter's index: a count of
        // a million matches must not hold the write lock (SQLite has one writer, and
        // delivery needs it).
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) \
             FROM hookd_deliveries WHERE TRUE",
        );
        common::push_filter(&mut q, filter);
        let (matched, max_id, min_id): (i64, i64, i64) =
            q.build_query_as().fetch_one(&self.reader).await?;
        let mut tx = self.writer.begin().await?;
        sqlx::query(&dialect(sql::INSERT_RESEND_JOB))
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
        let job = sqlx::query_as::<_, rows::ResendJobRow>(&dialect(sql::RESEND_JOB))
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
        sqlx::query_as::<_, rows::ResendJobRow>(&dialect(sql::RESEND_JOB))
            .bind(id)
            .bind(scope.tenant().map(|t| t.as_str()))
            .fetch_optional(&self.reader)
            .await?
            .map(ResendJob::try_from)
            .transpose()
    }

    async fn step_resend_jobs(&self, batch: u32, max_due: u32) -> Result<u64> {
        // What reads many rows runs on a reader, outside the write lock: which job, whether
        // the dispatcher is behind, and the job's next chunk (see `ResendWindows`). The
        // write transaction then only resends the chunk by id and moves the cursor, if the
        // cursor is still where the chunk was read from. Each round either returns or moves
        // a cursor down, so the loop ends with the job.
        loop {
            let job: Option<rows::ResendJobRow> = sqlx::query_as(&format!(
                "SELECT {RESEND_JOB_COLUMNS} FROM hookd_resend_jobs \
                 WHERE state = 'running' ORDER BY created_at LIMIT 1"
            ))
            .fetch_optional(&self.reader)
            .await?;
            let Some(row) = job else { return Ok(0) };
            let due: i64 = sqlx::query_scalar(&dialect(sql::DUE_MANUAL))
                .bind(max_due as i64)
                .fetch_one(&self.reader)
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
                    QueryBuilder::<Sqlite>::new("SELECT id FROM hookd_deliveries WHERE id <= ");
                q.push_bind(top)
                    .push(" AND id >= ")
                    .push_bind(windows.low(top));
                common::push_filter(&mut q, &job.filter);
                q.push(" ORDER BY id DESC LIMIT ").push_bind(batch as i64);
                ids = q.build_query_scalar().fetch_all(&self.reader).await?;
                next_cursor = windows.next_cursor(top, &ids, batch);
                if !ids.is_empty() || next_cursor < windows.floor {
                    break;
                }
                top = next_cursor;
            }
            let finished = next_cursor < windows.floor;

            let mut tx = self.writer.begin().await?;
            // One writer: no other instance can be taking a step of this job.
            let current: Option<i64> = sqlx::query_scalar(&dialect(sql::RESEND_JOB_CURSOR))
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
            match current {
                // Done meanwhile.
                None => return Ok(0),
                // Another step moved it: read the next chunk again.
                Some(c) if c != cursor => continue,
                Some(_) => {}
            }
            let mut resent = 0;
            if !ids.is_empty() {
                let mut update = QueryBuilder::<Sqlite>::new(dialect(sql::RESEND_SET));
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
            sqlx::query(&dialect(sql::ADVANCE_RESEND_JOB))
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
        Ok(sqlx::query_scalar(&dialect(sql::INSERT_TENANT_TOKEN))
            .bind(token_hash)
            .bind(tenant.as_str())
            .bind(ttl_ms)
            .fetch_one(&mut *self.writer.lock().await?)
            .await?)
    }

    async fn tenant_of_token(&self, token_hash: &str) -> Result<Option<TenantId>> {
        let tenant: Option<String> = sqlx::query_scalar(&dialect(sql::TENANT_OF_TOKEN))
            .bind(token_hash)
            .fetch_optional(&self.reader)
            .await?;
        Ok(tenant.map(TenantId::stored))
    }

    async fn revoke_tenant_tokens(&self, tenant: &TenantId) -> Result<u64> {
        Ok(sqlx::query(&dialect(sql::REVOKE_TENANT_TOKENS))
            .bind(tenant.as_str())
            .execute(&mut *self.writer.lock().await?)
            .await?
            .rows_affected())
    }

    // --- the event-type catalog -----------------------------------------------------------

    async fn event_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EventType>> {
        catalog::list(&self.reader, after, limit).await
    }

    async fn event_type(&self, name: &str) -> Result<Option<EventType>> {
        let row: Option<catalog::EventTypeRow> = sqlx::query_as(catalog::GET)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(catalog::from_row))
    }

    async fn insert_event_type(&self, t: &EventType) -> Result<EventType> {
        catalog::write(
            &mut *self.writer.lock().await?,
            &dialect(catalog::INSERT),
            t,
        )
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("event type {:?}", t.name)))
    }

    async fn update_event_type(&self, t: &EventType) -> Result<Option<EventType>> {
        catalog::write(
            &mut *self.writer.lock().await?,
            &dialect(catalog::UPDATE),
            t,
        )
        .await
    }

    async fn delete_event_type(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query(catalog::DELETE)
            .bind(name)
            .execute(&mut *self.writer.lock().await?)
            .await?
            .rows_affected()
            > 0)
    }

    // --- gauges and retention ------------------------------------------------------------

    async fn backlog(&self) -> Result<Backlog> {
        let (unfinished, outbox, oldest): (i64, i64, Option<i64>) =
            sqlx::query_as(&dialect(sql::BACKLOG))
                .fetch_one(&self.reader)
                .await?;
        Ok(Backlog {
            unfinished: unfinished + outbox,
            outbox,
            oldest_due_age_ms: oldest.unwrap_or(0).max(0),
        })
    }

    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<Purged> {
        // One writer: the doomed set cannot change between the two deletes.
        let mut tx = self.writer.begin().await?;
        // INDEXED BY: without statistics SQLite would rather read every finished row through
        // the state index and sort them.
        let doomed = "SELECT id FROM hookd_deliveries INDEXED BY hookd_deliveries_finished \
                      WHERE state IN ('succeeded', 'failed') \
                      AND finished_at < $1 ORDER BY finished_at LIMIT $2";
        sqlx::query(&format!(
            "DELETE FROM hookd_attempts WHERE delivery_id IN ({doomed})"
        ))
        .bind(before_ms)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?;
        let deliveries = sqlx::query(&format!(
            "DELETE FROM hookd_deliveries WHERE id IN ({doomed})"
        ))
        .bind(before_ms)
        .bind(batch as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(&dialect(sql::PURGE_EVENTS))
            .bind(before_ms)
            .bind(batch as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Purged { deliveries, events })
    }
}

impl SqliteStore {
    /// An endpoint, deleted or not.
    async fn endpoint_any<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = Sqlite>,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>> {
        shared::endpoint_any(executor, self.sealer(), id).await
    }

    /// Records results inside the caller's transaction; returns the delivery ids recorded.
    /// Every row sent back is a hand-off between SQLite's thread and the runtime, so the
    /// usual case (every lease held) returns none.
    async fn complete_rows(
        conn: &mut sqlx::SqliteConnection,
        batch: &[Completion],
    ) -> Result<Vec<i64>> {
        let rows = rows::completion_rows(batch);
        let mut done = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = INSERT_ATTEMPTS.sqlite_bind(chunk);
            let logged = sqlx::query_with(text, args)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            // Same transaction, same lease condition: the rows logged are the rows recorded.
            if logged == chunk.len() as u64 {
                let (text, args) = COMPLETE.sqlite_bind(chunk);
                sqlx::query_with(text, args).execute(&mut *conn).await?;
                done.extend(chunk.iter().map(|r| r.delivery_id));
            } else if logged > 0 {
                let (text, args) = COMPLETE_RETURNING.sqlite_bind(chunk);
                let recorded: Vec<i64> = sqlx::query_scalar_with(text, args)
                    .fetch_all(&mut *conn)
                    .await?;
                done.extend(recorded);
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl shared::IngestWrites for SqliteStore {
    type DB = Sqlite;
    // The single writer serialises ingestion: nothing to lock.
    const LOCK_ORDERED: Option<&'static str> = None;

    /// New events, in chunks; returns the ids inserted. It counts them instead of reading
    /// each id back (`RETURNING`, one row handed from SQLite's thread to the runtime per
    /// event while the write lock is held): all of them are new, the usual case, or the new
    /// ones are the last rows by rowid, since SQLite gives each new row the largest rowid
    /// plus one (chosen at random only once rowids reach 2^63 - 1).
    async fn insert_events(
        conn: &mut sqlx::SqliteConnection,
        rows: &[PreparedEvent<'_>],
    ) -> Result<Vec<String>> {
        let mut inserted = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_NEW_EVENTS.sqlite_bind(chunk);
            let done = sqlx::query_with(text, args).execute(&mut *conn).await?;
            let new = done.rows_affected() as i64;
            if new == chunk.len() as i64 {
                inserted.extend(chunk.iter().map(|r| r.event_id.clone()));
            } else if new > 0 {
                let last = done.last_insert_rowid();
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT event_id FROM hookd_events WHERE rowid > $1 AND rowid <= $2",
                )
                .bind(last - new)
                .bind(last)
                .fetch_all(&mut *conn)
                .await?;
                if ids.len() as i64 != new {
                    return Err(crate::StoreError::Inconsistent(format!(
                        "{new} new events, but {} rows by rowid",
                        ids.len()
                    )));
                }
                inserted.extend(ids);
            }
        }
        Ok(inserted)
    }

    /// New deliveries, in chunks, in order.
    async fn insert_deliveries(
        conn: &mut sqlx::SqliteConnection,
        rows: &[NewDelivery<'_>],
    ) -> Result<()> {
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_DELIVERIES.sqlite_bind(chunk);
            sqlx::query_with(text, args).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// New deliveries created leased; returns each one's id, event and endpoint. The ids are
    /// not read back either: the statement inserts in `ord` order and AUTOINCREMENT gives
    /// each row the next id, so a chunk's ids are the `rows_affected` up to
    /// `last_insert_rowid`. (SQLite inserts the rows of `INSERT ... SELECT ... ORDER BY` in
    /// that order; the conformance case `a_large_ingest_hands_out_the_id_of_each_new_delivery`
    /// checks every id against its row.)
    async fn insert_leased_deliveries(
        conn: &mut sqlx::SqliteConnection,
        rows: &[NewDelivery<'_>],
    ) -> Result<Vec<(i64, String, String)>> {
        let mut created = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_DELIVERIES.sqlite_bind(chunk);
            let done = sqlx::query_with(text, args).execute(&mut *conn).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(crate::StoreError::Inconsistent(format!(
                    "{} of {} new deliveries inserted",
                    done.rows_affected(),
                    chunk.len()
                )));
            }
            let mut in_order: Vec<_> = chunk.iter().collect();
            in_order.sort_by_key(|d| d.ord);
            let first = done.last_insert_rowid() - chunk.len() as i64 + 1;
            created.extend(
                in_order
                    .into_iter()
                    .zip(first..)
                    .map(|(d, id)| (id, d.event_id.to_string(), d.endpoint_id.clone())),
            );
        }
        Ok(created)
    }

    async fn count_deliveries(
        conn: &mut sqlx::SqliteConnection,
        event_ids: &[String],
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(sql::COUNT_EVENTS_DELIVERIES_SQLITE)
            .bind(serde_json::to_string(event_ids).expect("strings serialise"))
            .fetch_all(conn)
            .await?)
    }
}

/// Takes the exclusive lock of the side file `<db>.lock` (created if missing), held while
/// the returned file is open: the lock ends with the process, however it ends.
fn lock_file(db: &std::path::Path) -> Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = db.display().to_string();
    let failed = |reason: String| StoreError::LockFailed {
        path: path.clone(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| failed(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e.to_string())),
    }
}
