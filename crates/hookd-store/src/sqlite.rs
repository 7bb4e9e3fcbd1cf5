//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one connection (SQLite has one writer at a time anyway; queueing
//! for it is cheaper than retrying `SQLITE_BUSY`), each write transaction takes the write
//! lock before it reads anything (`BEGIN IMMEDIATE`, or a plain `BEGIN` when its first
//! statement writes) so it never has to upgrade a read lock, and a busy timeout rides out a
//! producer's write transaction. Reads use their own small pool and never block on
//! the writer (WAL). Other processes' outbox inserts are seen by polling.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, TransactionManager};
use tokio::sync::{watch, Mutex, Notify, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::common::{push_filter, store_impl};
use crate::rows::{ClaimRow, OutboxRow};
use crate::sql;
use crate::values;
use crate::{Result, Sealer, WakeSource};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections; WAL lets them all read while the writer writes.
const READERS: u32 = 4;
/// WAL pages past which the writer checkpoints in its own commit, as SQLite does by default
/// at 1,000: only a fallback here, for a checkpointer that falls behind (see [`checkpointer`]).
const WRITER_AUTOCHECKPOINT: u32 = 10_000;
/// How often at most the checkpointer runs while there are writes.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

pub struct SqliteStore {
    /// The one write connection; `None` once its thread has ended, when nothing replaces it.
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    /// Why the write connection is gone, once it is.
    writer_lost: watch::Sender<Option<String>>,
    holding: Arc<Holding>,
    reader: SqlitePool,
    sealer: Option<Arc<dyn Sealer>>,
    checkpointer: tokio::task::AbortHandle,
}

impl Drop for SqliteStore {
    /// The checkpointer's connection closes with the store, not after it.
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
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
        let writer = options
            .clone()
            // The writer touches the due indexes and the newest rows all the time: a 32 MB
            // page cache (SQLite's default is 2 MB) keeps them from being read again.
            .pragma("cache_size", "-32768")
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string())
            // Each batch statement has one text per padded size (crate::values): room for
            // all of them beside the rest, so none is prepared twice.
            .statement_cache_capacity(256)
            // Rows come back to the runtime through a bounded channel: at sqlx's 50 a claim
            // of more rows stalls the one writer until the runtime drains it.
            .row_buffer_size(1024)
            .connect()
            .await?;
        let holding = Arc::new(Holding::new());
        let checkpointer = tokio::spawn(checkpointer(
            options.clone().connect().await?,
            holding.clone(),
        ))
        .abort_handle();
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(BUSY_TIMEOUT * 3)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Some(writer))),
            writer_lost: watch::Sender::new(None),
            holding,
            reader,
            sealer: None,
            checkpointer,
        })
    }

    /// One writer: nothing to lock or skip.
    const LOCK_ENDPOINT: Option<&'static str> = None;
    const SKIP_LOCKED: &'static str = "";

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
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

    /// The write connection, once the writes queued before this one are done.
    async fn writer(&self) -> Result<WriteConn> {
        let slot = tokio::time::timeout(WRITER_WAIT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let conn = match OwnedMutexGuard::try_map(slot, Option::as_mut) {
            Ok(conn) => conn,
            Err(mut slot) => return Err(self.lose_writer(&mut slot)),
        };
        self.holding.taken();
        Ok(WriteConn {
            conn,
            holding: self.holding.clone(),
        })
    }

    /// Whether the write connection can do its work. Nothing replaces it if its thread dies
    /// (a panic inside sqlx): then it is dropped, every write fails at once, readiness fails
    /// and [`Store::stopped`](crate::Store::stopped) says so. A write that holds it longer
    /// than other writes may wait ([`WRITER_WAIT`]) makes them fail: readiness says so too
    /// instead of staying green. It never queues for the connection: while a write holds
    /// it, readiness looks only at how long (a producer's transaction can make a write wait
    /// out the busy timeout; that is not a fault).
    async fn check_writer(&self) -> Result<()> {
        self.writer_answers(READY_WAIT, WRITER_WAIT).await
    }

    async fn writer_answers(&self, wait: Duration, stuck_after: Duration) -> Result<()> {
        let Ok(mut slot) = self.writer.clone().try_lock_owned() else {
            return match self.holding.held_for() {
                Some(held) if held > stuck_after => Err(crate::StoreError::Invalid(format!(
                    "one write has held the write connection for {} ms",
                    held.as_millis()
                ))),
                _ => Ok(()),
            };
        };
        let Some(conn) = slot.as_mut() else {
            return Err(self.lose_writer(&mut slot));
        };
        match tokio::time::timeout(wait, sqlx::Connection::ping(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::Error::WorkerCrashed)) => Err(self.lose_writer(&mut slot)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(crate::StoreError::Invalid(format!(
                "the write connection did not answer within {} ms",
                wait.as_millis()
            ))),
        }
    }

    /// Drops a write connection whose thread has ended (nothing can use it again) and
    /// returns the error every write gets from now on.
    fn lose_writer(&self, slot: &mut Option<SqliteConnection>) -> crate::StoreError {
        *slot = None;
        let first = self.writer_lost.send_if_modified(|lost| {
            let first = lost.is_none();
            if first {
                *lost = Some(WRITER_THREAD_ENDED.to_string());
            }
            first
        });
        if first {
            tracing::error!("{WRITER_THREAD_ENDED}: every write fails until hookd restarts");
        }
        crate::StoreError::Stopped(WRITER_THREAD_ENDED.to_string())
    }

    /// Ends the write connection's thread, as a crash inside sqlx would, leaving the store
    /// to find out by itself.
    #[cfg(any(test, feature = "fault-injection"))]
    async fn end_writer_thread_now(&self) -> bool {
        let taken = self.writer.lock().await.take();
        match taken {
            Some(conn) => {
                let _ = sqlx::Connection::close(conn).await;
                true
            }
            None => false,
        }
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        self.begin(Some("BEGIN IMMEDIATE")).await
    }

    /// A write transaction whose first statement writes. A plain (deferred) `BEGIN` takes the
    /// write lock at that statement, which waits out the busy timeout just as `BEGIN
    /// IMMEDIATE` does, and it saves a round trip: sqlx checks that a custom `BEGIN` opened a
    /// transaction with one more message to the connection's thread.
    async fn begin_writing(&self) -> Result<WriteTx> {
        self.begin(None).await
    }

    async fn begin(&self, statement: Option<&'static str>) -> Result<WriteTx> {
        let mut conn = self.writer().await?;
        Transactions::begin(&mut conn, statement.map(Cow::Borrowed)).await?;
        Ok(WriteTx { conn, open: true })
    }
}

type Transactions = <Sqlite as sqlx::Database>::TransactionManager;

/// Copies the WAL into the database file on a connection of its own, beside the writer.
/// SQLite's automatic checkpoint runs inside the commit that crosses its mark and holds the
/// one write connection while it copies pages and waits for two fsyncs: about 10% of the
/// throughput at saturation (measured: 25,159 and 25,771 against 23,014 and 22,983
/// deliveries/s without and with it). A passive checkpoint blocks neither the writer nor
/// the readers. It runs after writes, at most every [`CHECKPOINT_EVERY`], until the store
/// is dropped. Under steady writes a checkpoint never catches up with the writer, so the
/// WAL restarts from its beginning only after the writer's own checkpoint at
/// [`WRITER_AUTOCHECKPOINT`] pages (a short one: the pages are mostly copied by then).
async fn checkpointer(mut conn: SqliteConnection, writes: Arc<Holding>) {
    // Said once per run of failures, not after every write while the database is unwell.
    let mut failing = false;
    loop {
        writes.hold_ended.notified().await;
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot checkpoint the WAL; the writer will, past {WRITER_AUTOCHECKPOINT} pages");
            }
            Err(_) => {}
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(_) => {}
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
}

/// How long readiness waits for a free write connection to answer a ping (a round trip to
/// its thread, normally microseconds).
const READY_WAIT: Duration = Duration::from_secs(5);

/// How often [`Store::stopped`](crate::Store::stopped) pings a free write connection.
const WATCH_WRITER_EVERY: Duration = Duration::from_secs(1);

/// Why writes fail once the write connection's thread has ended.
const WRITER_THREAD_ENDED: &str = "the SQLite write connection's thread ended";

/// How long a write waits for the writes queued before it.
const WRITER_WAIT: Duration = Duration::from_secs(BUSY_TIMEOUT.as_secs() * 3);

/// The write connection, held until dropped. It lives outside any pool: a pool hands a
/// connection back by spawning a task that pings it through the connection's thread and then
/// wakes the next borrower, hand-offs during which nothing can write. A FIFO mutex hands it
/// on at once. (Measured at 7,000 deliveries/s: the writer thread woke 2,700 times a second
/// instead of 4,100.) Unlike a pool, nothing replaces the connection if its thread dies (a
/// panic inside sqlx): writes then fail until hookd restarts.
pub(crate) struct WriteConn {
    conn: OwnedMappedMutexGuard<Option<SqliteConnection>, SqliteConnection>,
    holding: Arc<Holding>,
}

impl Deref for WriteConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteConn {
    fn drop(&mut self) {
        self.holding.released();
    }
}

/// Since when the write connection has been held, and for how long in all, readable
/// without queueing for it. One small lock keeps the two consistent, so that the total
/// never goes down between two readings (a Prometheus counter must not).
struct Holding {
    holds: std::sync::Mutex<Holds>,
    /// Notified as each hold ends: there may be new pages in the WAL.
    hold_ended: Notify,
}

#[derive(Default)]
struct Holds {
    /// When the current hold began; `None` while the connection is free.
    since: Option<Instant>,
    /// The holds that ended, in all.
    ended: Duration,
}

impl Holding {
    fn new() -> Holding {
        Holding {
            holds: std::sync::Mutex::new(Holds::default()),
            hold_ended: Notify::new(),
        }
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, Holds> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn taken(&self) {
        self.holds().since = Some(Instant::now());
    }

    fn released(&self) {
        let mut holds = self.holds();
        if let Some(since) = holds.since.take() {
            holds.ended += since.elapsed();
        }
        drop(holds);
        self.hold_ended.notify_one();
    }

    fn held_for(&self) -> Option<Duration> {
        self.holds().since.map(|since| since.elapsed())
    }

    /// All the time it has been held, the current hold included.
    fn busy(&self) -> Duration {
        let holds = self.holds();
        holds.ended + holds.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// A write transaction, as sqlx's `Transaction` but holding the
/// connection's lock: dropped without [`WriteTx::commit`], its rollback is queued on the
/// connection's thread before the lock is released, so the next write finds no transaction
/// and no other process waits on this one.
pub(crate) struct WriteTx {
    conn: WriteConn,
    open: bool,
}

impl WriteTx {
    pub async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        Transactions::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            Transactions::start_rollback(&mut self.conn);
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
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

/// One claim round in one statement: retries ahead ($5), first attempts ($6), then the
/// retries after those ahead ($7, read in the same order past the first $5), $3 in all.
/// SQLite runs `UNION ALL` arm by arm under the outer `LIMIT`, so an arm is read only while
/// the ones before it leave room. Each arm reads its own partial index in due order.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let due = |index: &str, kind: &str, limit: &str| {
        format!(
            "SELECT id FROM (SELECT id FROM hookd_deliveries /* {index} */ \
             WHERE state = 'pending' AND {kind} AND next_attempt_at <= hookd_now_ms() \
             AND endpoint_id NOT IN (SELECT value FROM json_each($4)) \
             ORDER BY next_attempt_at {limit})"
        )
    };
    sql::sqlite_dialect_owned(&format!(
        "UPDATE hookd_deliveries SET state = 'in_flight', lease_token = $1, \
         lease_expires_at = hookd_now_ms() + $2, attempts = attempts + 1, \
         auto_attempts = auto_attempts + CASE WHEN next_trigger = 'auto' THEN 1 ELSE 0 END, \
         updated_at = hookd_now_ms() \
         WHERE id IN ({} UNION ALL {} UNION ALL {} LIMIT $3) \
         RETURNING id, lease_token, event_id, event_type, endpoint_id, attempts, next_trigger, \
             auto_attempts, manual_only, next_attempt_at, \
             (SELECT payload FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) AS payload, \
             (SELECT payload_error FROM hookd_events e WHERE e.event_id = hookd_deliveries.event_id) \
                 AS payload_error",
        due("due_retry", "attempts > 0", "LIMIT $5"),
        due("due_first", "attempts = 0", "LIMIT $6"),
        due("due_retry", "attempts > 0", "LIMIT $7 OFFSET $5"),
    ))
});

impl SqliteStore {
    /// Records results inside the caller's transaction; returns the delivery ids recorded.
    /// Every row sent back is a hand-off between SQLite's thread and the runtime, so the
    /// usual case (every lease held) returns none.
    async fn complete_rows(
        conn: &mut sqlx::SqliteConnection,
        batch: &[crate::Completion],
    ) -> Result<Vec<i64>> {
        let rows = crate::rows::completion_rows(batch);
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

    async fn complete_unordered(&self, batch: &[crate::Completion]) -> Result<Vec<i64>> {
        // Its first statement inserts the attempt rows.
        let mut tx = self.begin_writing().await?;
        let done = Self::complete_rows(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// New events, in chunks; returns the ids inserted. It counts them instead of reading
    /// each id back (`RETURNING`, one row handed from SQLite's thread to the runtime per
    /// event while the write lock is held): all of them are new, the usual case, or the new
    /// ones are the last rows by rowid, since SQLite gives each new row the largest rowid
    /// plus one (chosen at random only once rowids reach 2^63 - 1).
    async fn insert_events(
        tx: &mut WriteTx,
        rows: &[crate::ingest::PreparedEvent<'_>],
    ) -> Result<Vec<String>> {
        let mut inserted = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_NEW_EVENTS.sqlite_bind(chunk);
            let done = sqlx::query_with(text, args).execute(&mut **tx).await?;
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
                .fetch_all(&mut **tx)
                .await?;
                if ids.len() as i64 != new {
                    return Err(crate::StoreError::Corrupt(format!(
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
        tx: &mut WriteTx,
        rows: &[crate::ingest::NewDelivery<'_>],
    ) -> Result<()> {
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_DELIVERIES.sqlite_bind(chunk);
            sqlx::query_with(text, args).execute(&mut **tx).await?;
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
        tx: &mut WriteTx,
        rows: &[crate::ingest::NewDelivery<'_>],
    ) -> Result<Vec<(i64, String, String)>> {
        let mut created = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(values::MAX_ROWS) {
            let (text, args) = sql::INSERT_DELIVERIES.sqlite_bind(chunk);
            let done = sqlx::query_with(text, args).execute(&mut **tx).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(crate::StoreError::Corrupt(format!(
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
}

store_impl!(SqliteStore, Sqlite, {
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
        "sqlite"
    }

    fn writer_busy_seconds(&self) -> Option<f64> {
        Some(self.holding.busy().as_secs_f64())
    }

    /// Looks at a free write connection every second: a thread that died while nothing
    /// wrote is found without waiting for a write or a readiness check.
    async fn stopped(&self) -> String {
        let mut lost = self.writer_lost.subscribe();
        loop {
            if let Some(reason) = lost.borrow_and_update().clone() {
                return reason;
            }
            tokio::select! {
                _ = lost.changed() => {}
                _ = tokio::time::sleep(WATCH_WRITER_EVERY) => {
                    // Only a lost connection counts here; a slow one is readiness's business.
                    let _ = self.writer_answers(READY_WAIT, WRITER_WAIT).await;
                }
            }
        }
    }

    #[cfg(feature = "fault-injection")]
    async fn end_writer_thread(&self) -> bool {
        self.end_writer_thread_now().await
    }

    async fn wake_source(&self) -> Result<Option<Box<dyn WakeSource>>> {
        Ok(None)
    }

    async fn ingest_leasing(
        &self,
        max_rows: u32,
        limits: &crate::IngestLimits,
        lease: Option<crate::IngestLease<'_>>,
    ) -> Result<crate::Ingested> {
        // Cheap check on a reader first: polling an empty outbox must not take the write lock.
        let any: Option<i64> = sqlx::query_scalar("SELECT seq FROM hookd_outbox LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        if any.is_none() {
            return Ok(crate::Ingested::default());
        }
        let window = crate::ingest::window(max_rows, lease.as_ref());
        let mut tx = self.begin_write().await?;
        // Producers may bind anything (SQLite keeps a BLOB a BLOB, and text that is not
        // UTF-8): read bytes, so that one odd row fails alone instead of stopping ingestion.
        let raw: Vec<(i64, Option<Vec<u8>>, Vec<u8>, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT seq, CAST(event_id AS BLOB), CAST(event_type AS BLOB), CAST(payload AS BLOB), \
             CAST(endpoint_id AS BLOB) FROM hookd_outbox ORDER BY seq LIMIT $1",
        )
        .bind(window as i64)
        .fetch_all(&mut *tx)
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
        if rows.is_empty() {
            return Ok(crate::Ingested::default());
        }
        let read = rows.len();
        let targets = Self::targets(&mut tx).await?;
        let (rows, mut leasing) = crate::ingest::lease_rows(rows, &targets, lease);
        let more = read == window as usize || rows.len() < read;
        let incoming: Vec<crate::ingest::Incoming> = rows.iter().map(OutboxRow::incoming).collect();
        Self::store_events(&mut tx, &targets, &incoming, limits, leasing.as_mut()).await?;
        let last = rows.last().map(|r| r.seq).unwrap_or_default();
        sqlx::query("DELETE FROM hookd_outbox WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
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
        let excluded = serde_json::to_string(exclude_endpoints).expect("strings serialize");
        let mut rows: Vec<ClaimRow> = sqlx::query_as(&CLAIM)
            .bind(crate::token())
            .bind(lease_ms as i64)
            .bind(plan.max as i64)
            .bind(excluded)
            .bind(ahead)
            .bind(first)
            .bind(after)
            .fetch_all(&mut *self.writer().await?)
            .await?;
        // RETURNING gives no order.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn readiness_fails_only_when_a_write_holds_the_connection_too_long() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store.check_ready().await.expect("ready");
        let (wait, stuck_after) = (Duration::from_secs(1), Duration::from_millis(200));
        store
            .writer_answers(wait, stuck_after)
            .await
            .expect("a free writer answers");
        // A write in progress, even a slow one, is not a fault...
        let held = store.writer().await.expect("the write connection");
        store
            .writer_answers(wait, stuck_after)
            .await
            .expect("held briefly");
        // ...but one that holds the connection longer than others may wait for it is.
        tokio::time::sleep(stuck_after + Duration::from_millis(50)).await;
        let err = store
            .writer_answers(wait, stuck_after)
            .await
            .expect_err("held too long");
        assert!(
            err.to_string().contains("has held the write connection"),
            "{err}"
        );
        drop(held);
        store
            .writer_answers(wait, stuck_after)
            .await
            .expect("answers again once released");
    }

    #[tokio::test]
    async fn a_write_connection_whose_thread_ended_fails_every_write_at_once() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store.check_ready().await.expect("ready");
        let event = |id: &str| crate::NewEvent {
            event_id: Some(id.into()),
            event_type: "purchase".into(),
            payload: "{}".into(),
            endpoint_id: None,
        };
        let limits = crate::IngestLimits {
            max_payload_bytes: 1024,
        };
        store
            .enqueue_event(&event("before"), &limits)
            .await
            .expect("a write");
        assert!(store.end_writer_thread_now().await);

        // Found by the watch, with no write and no readiness check to reveal it.
        let reason = tokio::time::timeout(WATCH_WRITER_EVERY * 3, store.stopped())
            .await
            .expect("the store says it stopped");
        assert_eq!(reason, WRITER_THREAD_ENDED);
        for _ in 0..3 {
            let err = tokio::time::timeout(
                Duration::from_secs(2),
                store.enqueue_event(&event("after"), &limits),
            )
            .await
            .expect("a write fails at once instead of waiting")
            .expect_err("no write connection");
            assert!(matches!(err, crate::StoreError::Stopped(_)), "{err:?}");
            assert!(!err.is_transient(), "retrying cannot help: {err}");
            assert!(err.to_string().contains(WRITER_THREAD_ENDED), "{err}");
        }
        let err = store.check_ready().await.expect_err("not ready");
        assert!(err.to_string().contains(WRITER_THREAD_ENDED), "{err}");
        // Reads go on, on their own connections.
        assert!(store.event("before").await.expect("a read").is_some());
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_beside_the_writer() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let path = db.sqlite_path();
        // In WAL mode the database file grows only when a checkpoint copies pages into it.
        let file_len = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let before = file_len();
        // Twice what the file must grow by: a checkpoint of the migrations may or may not
        // have been counted in `before`, and the event may reuse a few free pages.
        let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(800_000));
        let event = crate::NewEvent {
            event_id: Some("big".into()),
            event_type: "purchase".into(),
            payload,
            endpoint_id: None,
        };
        let limits = crate::IngestLimits {
            max_payload_bytes: 1 << 20,
        };
        store.enqueue_event(&event, &limits).await.expect("enqueue");
        // About 200 pages, far below the writer's own mark (WRITER_AUTOCHECKPOINT): only the
        // checkpointer copies them.
        hookd_testkit::wait_until(Duration::from_secs(10), "a checkpoint", || async {
            (file_len() >= before + 400_000).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn writer_busy_time_counts_holds_only() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let busy = || Duration::from_secs_f64(store.writer_busy_seconds().expect("SQLite"));
        let before = busy();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(busy(), before, "nothing held the connection");
        let held = store.writer().await.expect("the write connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let during = busy();
        assert!(
            during >= before + Duration::from_millis(99),
            "the current hold counts: {before:?} -> {during:?}"
        );
        drop(held);
        let after = busy();
        assert!(after >= during, "{during:?} -> {after:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(busy(), after, "released: no more time counted");
    }
}
