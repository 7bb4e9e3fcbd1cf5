//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one connection (SQLite has one writer at a time anyway; queueing
//! them in the pool is cheaper than retrying `SQLITE_BUSY`), each write transaction starts
//! with `BEGIN IMMEDIATE` so it never has to upgrade a read lock, and a busy timeout rides
//! out a producer's write transaction. Reads use their own small pool and never block on
//! the writer (WAL). Other processes' outbox inserts are seen by polling.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::common::{push_filter, store_impl};
use crate::rows::{ClaimRow, OutboxRow};
use crate::sql;
use crate::{Result, Sealer, WakeSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections; WAL lets them all read while the writer writes.
const READERS: u32 = 4;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    sealer: Option<Arc<dyn Sealer>>,
}

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
        // No ping before each use (sqlx's default): a local file cannot hang up, and the
        // ping is one more hand-off to the connection's thread for every statement.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(BUSY_TIMEOUT * 3)
            // The writer touches the due indexes and the newest rows all the time: a 32 MB
            // page cache (SQLite's default is 2 MB) keeps them from being read again.
            .after_connect(|conn, _| create_scratch(conn))
            .connect_with(options.clone().pragma("cache_size", "-32768"))
            .await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(READERS)
            .acquire_timeout(BUSY_TIMEOUT * 3)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer,
            reader,
            sealer: None,
        })
    }

    /// One writer: nothing to lock or skip.
    const LOCK_ENDPOINT: Option<&'static str> = None;
    const SKIP_LOCKED: &'static str = "";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn batch_sql(statement: &'static sql::Batch) -> &'static str {
        statement.sqlite()
    }

    /// Inserts events (JSON rows); returns the ids that were new, as one answer row: the
    /// new rows are the ones above the highest rowid before the insert (one writer).
    async fn insert_events(
        tx: &mut Transaction<'static, Sqlite>,
        events: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let answers: Vec<String> = sqlx::query_scalar(&INSERT_EVENTS)
            .bind(events)
            .fetch_all(&mut **tx)
            .await?;
        let new: Vec<String> = match answers.last() {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| crate::StoreError::Corrupt(format!("new event ids: {e}")))?,
            None => {
                return Err(crate::StoreError::Corrupt(
                    "inserting events answered nothing".into(),
                ))
            }
        };
        Ok(new.into_iter().collect())
    }

    fn sql(statement: &'static str) -> Cow<'static, str> {
        sql::sqlite_dialect(statement)
    }

    fn sealer(&self) -> Option<&dyn Sealer> {
        self.sealer.as_deref()
    }

    /// Encrypts endpoint secrets at rest with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Arc<dyn Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The writer's scratch tables: `TEMP`, so private to its connection and kept in memory.
/// They let a claim or a batch of results run as one multi-statement request to the
/// connection's worker thread that answers with one row, instead of a hand-off per
/// statement and a channel message per row returned (the writer's main cost at 10,000
/// deliveries/s was waiting on those hand-offs, not SQLite's own work).
const WRITER_SCRATCH: &str = "\
    CREATE TEMP TABLE IF NOT EXISTS hookd_claimed (id INTEGER PRIMARY KEY); \
    CREATE TEMP TABLE IF NOT EXISTS hookd_mark (last INTEGER NOT NULL); \
    CREATE TEMP TABLE IF NOT EXISTS hookd_results (delivery_id INTEGER PRIMARY KEY, \
        lease_token TEXT, next_state TEXT, delay_ms INTEGER, status_code INTEGER, error TEXT, \
        attempt INTEGER, trigger TEXT, started_at INTEGER, duration_ms INTEGER, outcome TEXT, \
        response_body TEXT, done BOOLEAN NOT NULL);";

fn create_scratch(
    conn: &mut sqlx::SqliteConnection,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), sqlx::Error>> + Send + '_>,
> {
    Box::pin(async move {
        sqlx::Executor::execute(&mut *conn, WRITER_SCRATCH).await?;
        Ok(())
    })
}

/// Claims due deliveries in one request: candidates into `hookd_claimed`, the update (which
/// checks every condition again, so it needs no transaction around the candidate read),
/// then the claimed rows and their payloads as one JSON array. `{index}`/`{condition}`:
/// the kind of due rows ([`crate::Due`]). `$1` lease token, `$2` lease ms, `$3` limit, `$4`
/// JSON array of endpoint ids to skip.
const CLAIM: &str = "DELETE FROM temp.hookd_claimed; \
    INSERT INTO temp.hookd_claimed (id) SELECT id FROM hookd_deliveries INDEXED BY {index} \
        WHERE state = 'pending' AND {condition} AND next_attempt_at <= hookd_now_ms() \
        AND endpoint_id NOT IN (SELECT value FROM json_each($4)) \
        ORDER BY next_attempt_at LIMIT $3; \
    UPDATE hookd_deliveries SET state = 'in_flight', lease_token = $1, \
        lease_expires_at = hookd_now_ms() + $2, attempts = attempts + 1, \
        auto_attempts = auto_attempts + CASE WHEN next_trigger = 'auto' THEN 1 ELSE 0 END, \
        updated_at = hookd_now_ms() \
        WHERE id IN (SELECT id FROM temp.hookd_claimed) \
        AND state = 'pending' AND {condition} AND next_attempt_at <= hookd_now_ms() \
        AND endpoint_id NOT IN (SELECT value FROM json_each($4)); \
    SELECT json_group_array(json_array(d.id, d.event_id, d.event_type, d.endpoint_id, \
        d.attempts, d.next_trigger, d.auto_attempts, d.manual_only, d.next_attempt_at, \
        e.payload, e.payload_error)) \
        FROM temp.hookd_claimed c CROSS JOIN hookd_deliveries d ON d.id = c.id \
        CROSS JOIN hookd_events e ON e.event_id = d.event_id \
        WHERE d.lease_token = $1 AND d.state = 'in_flight'";

/// [`sql::INSERT_EVENTS`] answering the new event ids as one JSON array.
static INSERT_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM temp.hookd_mark; \
         INSERT INTO temp.hookd_mark (last) SELECT COALESCE(MAX(rowid), 0) FROM main.hookd_events; \
         {}; \
         SELECT json_group_array(event_id) FROM main.hookd_events \
             WHERE rowid > (SELECT last FROM temp.hookd_mark)",
        sql::INSERT_EVENTS
            .sqlite()
            .strip_suffix(" RETURNING event_id")
            .expect("INSERT_EVENTS returns the new ids")
    )
});

/// One claimed row as [`CLAIM`]'s `json_array` lists it.
type ClaimedJson = (
    i64,
    String,
    String,
    String,
    i32,
    String,
    i32,
    i64,
    Option<i64>,
    String,
    Option<String>,
);

/// Records a batch of results (`$1`, JSON rows) in one request and answers the ids recorded
/// as one JSON array: the results whose lease still holds are marked `done` first (the
/// update clears the lease), then the deliveries change and the attempt log grows from the
/// same rows. Runs inside the caller's transaction.
/// Without statistics SQLite would rather walk an index of `state` (or the whole table) and
/// test every row against every result: NOT INDEXED and the `IN` make it take the results
/// one by one and look each delivery up by id. CROSS JOIN fixes the claim's join order
/// the same way.
static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = sql::COMPLETION_COLUMNS.iter().map(|(n, _)| *n).collect();
    let fields: Vec<String> = columns
        .iter()
        .map(|name| format!("value ->> '{name}' AS {name}"))
        .collect();
    sql::sqlite_dialect_owned(&format!(
        "DELETE FROM temp.hookd_results; \
         INSERT INTO temp.hookd_results ({columns}, done) SELECT v.*, EXISTS (SELECT 1 \
             FROM main.hookd_deliveries d WHERE d.id = v.delivery_id \
             AND d.lease_token = v.lease_token AND d.state = 'in_flight') \
             FROM (SELECT {fields} FROM json_each($1)) v; \
         {update}; \
         {attempts}; \
         SELECT json_group_array(delivery_id) FROM temp.hookd_results WHERE done",
        columns = columns.join(", "),
        fields = fields.join(", "),
        update = sql::COMPLETE_BATCH
            .replacen(
                "UPDATE hookd_deliveries SET",
                "UPDATE hookd_deliveries NOT INDEXED SET",
                1
            )
            .replacen(
                "FROM v WHERE",
                "FROM temp.hookd_results v WHERE v.done \
                 AND hookd_deliveries.id IN (SELECT delivery_id FROM temp.hookd_results) AND",
                1
            )
            .replacen(" RETURNING hookd_deliveries.id", "", 1),
        attempts = sql::INSERT_ATTEMPTS_BATCH.replacen(
            "FROM v JOIN done ON done.id = v.delivery_id",
            "FROM temp.hookd_results v WHERE v.done",
            1
        ),
    ))
});

impl SqliteStore {
    /// Records results (JSON rows) inside the caller's transaction; returns the delivery
    /// ids recorded.
    async fn complete_rows(conn: &mut sqlx::SqliteConnection, rows: &str) -> Result<Vec<i64>> {
        let answers: Vec<String> = sqlx::query_scalar(&COMPLETE)
            .bind(rows)
            .fetch_all(&mut *conn)
            .await?;
        let done = answers.last().ok_or_else(|| {
            crate::StoreError::Corrupt("recording results answered nothing".into())
        })?;
        serde_json::from_str(done)
            .map_err(|e| crate::StoreError::Corrupt(format!("recorded ids: {e}")))
    }

    async fn complete_unordered(&self, rows: &str) -> Result<Vec<i64>> {
        let mut tx = self.begin_write().await?;
        let done = Self::complete_rows(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(done)
    }
}

store_impl!(SqliteStore, Sqlite, {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        Ok(None)
    }

    async fn ingest_outbox(&self, max_rows: u32, limits: &crate::IngestLimits) -> Result<u64> {
        // The rows are read on a reader, so the writer only writes. The delete below proves
        // they are still ours: seq is AUTOINCREMENT, so no new row can fall at or below the
        // last one read, and a count short of what was read means another process ingested
        // some meanwhile (then nothing happens here; the next round reads afresh).
        // Producers may bind anything (SQLite keeps a BLOB a BLOB, and text that is not
        // UTF-8): read bytes, so that one odd row fails alone instead of stopping ingestion.
        let raw: Vec<(i64, Option<Vec<u8>>, Vec<u8>, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT seq, CAST(event_id AS BLOB), CAST(event_type AS BLOB), CAST(payload AS BLOB), \
             CAST(endpoint_id AS BLOB) FROM hookd_outbox ORDER BY seq LIMIT $1",
        )
        .bind(max_rows as i64)
        .fetch_all(&self.reader)
        .await?;
        let rows: Vec<OutboxRow> = raw
            .into_iter()
            .map(|(seq, event_id, event_type, payload, endpoint_id)| {
                let text = |b: Vec<u8>| crate::ingest::lossy(b).0;
                let (mut payload, utf8) = crate::ingest::lossy(payload);
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
                }
            })
            .collect();
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(0);
        };
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("DELETE FROM hookd_outbox WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if taken != rows.len() as u64 {
            tx.rollback().await?;
            return Ok(0);
        }
        let targets = Self::targets(&mut tx).await?;
        let incoming: Vec<crate::ingest::Incoming> = rows.iter().map(OutboxRow::incoming).collect();
        Self::store_events(&mut tx, &targets, &incoming, limits).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn claim_due(
        &self,
        max: u32,
        due: crate::Due,
        exclude_endpoints: &[String],
        lease_ms: u64,
    ) -> Result<Vec<crate::Claimed>> {
        let token = crate::token();
        // Each kind reads its own partial index of pending rows in due order. SQLite has no
        // statistics unless ANALYZE runs, and without them it may prefer another index and
        // sort every pending row: INDEXED BY keeps the claim's cost flat.
        let sql = sql::sqlite_dialect_owned(
            &CLAIM
                .replace("{index}", due.index())
                .replace("{condition}", due.condition()),
        );
        let excluded = serde_json::to_string(exclude_endpoints).expect("strings serialize");
        let answers: Vec<String> = sqlx::query_scalar(&sql)
            .bind(&token)
            .bind(lease_ms as i64)
            .bind(max as i64)
            .bind(excluded)
            .fetch_all(&self.writer)
            .await?;
        let claimed: Vec<ClaimedJson> = match answers.last() {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| crate::StoreError::Corrupt(format!("claimed rows: {e}")))?,
            None => {
                return Err(crate::StoreError::Corrupt(
                    "a claim answered nothing".into(),
                ))
            }
        };
        let mut rows: Vec<ClaimRow> = claimed
            .into_iter()
            .map(|c| ClaimRow {
                id: c.0,
                lease_token: token.clone(),
                event_id: c.1,
                event_type: c.2,
                endpoint_id: c.3,
                attempts: c.4,
                next_trigger: c.5,
                auto_attempts: c.6,
                manual_only: c.7 != 0,
                next_attempt_at: c.8,
                payload: c.9,
                payload_error: c.10,
            })
            .collect();
        // json_group_array keeps no particular order.
        rows.sort_by_key(|r| (r.next_attempt_at, r.id));
        self.with_endpoints(rows).await
    }

    async fn purge_finished(&self, before_ms: i64, batch: u32) -> Result<crate::Purged> {
        // One writer: the doomed set cannot change between the two deletes.
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let now: i64 = sqlx::query_scalar(&Self::sql(sql::NOW))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
             outcome, error) SELECT id, attempts, next_trigger, updated_at, $1 - updated_at, \
             'lost', $2 FROM hookd_deliveries WHERE state = 'in_flight' AND lease_expires_at < $1",
        )
        .bind(now)
        .bind(sql::LOST_ERROR)
        .execute(&mut *tx)
        .await?;
        let rescued = sqlx::query(
            "UPDATE hookd_deliveries SET state = 'pending', lease_token = NULL, \
             lease_expires_at = NULL, next_attempt_at = $1, last_status_code = NULL, \
             last_error = $2, \
             next_trigger = CASE WHEN resend_requested THEN 'manual' ELSE next_trigger END, \
             resend_requested = FALSE, updated_at = $1 \
             WHERE state = 'in_flight' AND lease_expires_at < $1",
        )
        .bind(now)
        .bind(sql::LOST_ERROR)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(rescued)
    }
});
