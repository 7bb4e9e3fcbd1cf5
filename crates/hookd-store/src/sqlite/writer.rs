//! The one write connection: how a write waits for it, what happens when its thread ends,
//! its transactions, and the WAL checkpointer beside it.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Sqlite, TransactionManager};
use tokio::sync::{watch, Mutex, Notify, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::{Result, StoreError};

/// How long a statement waits for another process's write lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL pages past which the writer checkpoints in its own commit, as SQLite does by default
/// at 1,000: only a fallback here, for a checkpointer that falls behind (see [`checkpointer`]).
const WRITER_AUTOCHECKPOINT: u32 = 10_000;
/// How often at most the checkpointer runs while there are writes.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// How long readiness waits for a free write connection to answer a ping (a round trip to
/// its thread, normally microseconds).
const READY_WAIT: Duration = Duration::from_secs(5);
/// How often [`Writer::stopped`] pings a free write connection.
const WATCH_WRITER_EVERY: Duration = Duration::from_secs(1);
/// Why writes fail once the write connection's thread has ended.
const WRITER_THREAD_ENDED: &str = "the SQLite write connection's thread ended";
/// How long a write waits for the writes queued before it.
const WRITER_WAIT: Duration = Duration::from_secs(BUSY_TIMEOUT.as_secs() * 3);

/// The store's one write connection, and the checkpointer beside it.
pub(super) struct Writer {
    /// The connection; `None` once its thread has ended, when nothing replaces it.
    slot: Arc<Mutex<Option<SqliteConnection>>>,
    /// Why the connection is gone, once it is.
    lost: watch::Sender<Option<String>>,
    holding: Arc<Holding>,
    checkpointer: tokio::task::AbortHandle,
}

impl Drop for Writer {
    /// The checkpointer's connection closes with the store, not after it.
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

impl Writer {
    /// Opens the write connection and the checkpointer's, with the store's `options`.
    pub async fn open(options: &SqliteConnectOptions) -> Result<Writer> {
        let conn = options
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
        Ok(Writer {
            slot: Arc::new(Mutex::new(Some(conn))),
            lost: watch::Sender::new(None),
            holding,
            checkpointer,
        })
    }

    /// The write connection, once the writes queued before this one are done.
    pub async fn lock(&self) -> Result<WriteConn> {
        let slot = tokio::time::timeout(WRITER_WAIT, self.slot.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let conn = match OwnedMutexGuard::try_map(slot, Option::as_mut) {
            Ok(conn) => conn,
            Err(mut slot) => return Err(self.lose(&mut slot)),
        };
        self.holding.taken();
        let mut conn = WriteConn {
            conn,
            holding: self.holding.clone(),
        };
        // A transaction dropped by its holder has its rollback queued on the connection's
        // thread, which may not have run it yet; one that slipped past its guard would have
        // none. Either way it ends here, before this write: never does a write run inside
        // another's transaction (and never gets committed).
        if Transactions::get_transaction_depth(&conn) > 0 {
            tracing::debug!("the write connection is still in a transaction; rolling it back");
            Transactions::rollback(&mut conn).await?;
        }
        Ok(conn)
    }

    /// A write transaction that takes the write lock before it reads anything (`BEGIN
    /// IMMEDIATE`), so it never has to upgrade a read lock.
    pub async fn begin(&self) -> Result<WriteTx> {
        self.begin_with(Some("BEGIN IMMEDIATE")).await
    }

    /// A write transaction whose first statement writes. A plain (deferred) `BEGIN` takes the
    /// write lock at that statement, which waits out the busy timeout just as `BEGIN
    /// IMMEDIATE` does, and it saves a round trip: sqlx checks that a custom `BEGIN` opened a
    /// transaction with one more message to the connection's thread.
    pub async fn begin_writing(&self) -> Result<WriteTx> {
        self.begin_with(None).await
    }

    async fn begin_with(&self, statement: Option<&'static str>) -> Result<WriteTx> {
        // The rollback guard exists before the BEGIN is sent: a caller cancelled between the
        // BEGIN and sqlx's check that a custom one opened a transaction (a request whose
        // client went away, a task that panicked) would otherwise leave the transaction
        // open on the one write connection, and every later write inside it, never
        // committed.
        let mut tx = WriteTx {
            conn: self.lock().await?,
            open: true,
        };
        Transactions::begin(&mut tx.conn, statement.map(Cow::Borrowed)).await?;
        Ok(tx)
    }

    /// Whether the write connection can do its work. Nothing replaces it if its thread dies
    /// (a panic inside sqlx): then it is dropped, every write fails at once, readiness fails
    /// and [`Writer::stopped`] says so. A write that holds it longer than other writes may
    /// wait ([`WRITER_WAIT`]) makes them fail: readiness says so too instead of staying
    /// green. It never queues for the connection: while a write holds it, readiness looks
    /// only at how long (a producer's transaction can make a write wait out the busy
    /// timeout; that is not a fault).
    pub async fn check(&self) -> Result<()> {
        self.answers(READY_WAIT, WRITER_WAIT).await
    }

    pub async fn answers(&self, wait: Duration, stuck_after: Duration) -> Result<()> {
        let Ok(mut slot) = self.slot.clone().try_lock_owned() else {
            return match self.holding.held_for() {
                Some(held) if held > stuck_after => Err(StoreError::WriterStuck { held }),
                _ => Ok(()),
            };
        };
        let Some(conn) = slot.as_mut() else {
            return Err(self.lose(&mut slot));
        };
        match tokio::time::timeout(wait, sqlx::Connection::ping(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::Error::WorkerCrashed)) => Err(self.lose(&mut slot)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::WriterUnresponsive { waited: wait }),
        }
    }

    /// Waits until the connection's thread has ended, and says so. Looks at a free
    /// connection every second: a thread that died while nothing wrote is found without
    /// waiting for a write or a readiness check.
    pub async fn stopped(&self) -> String {
        let mut lost = self.lost.subscribe();
        loop {
            if let Some(reason) = lost.borrow_and_update().clone() {
                return reason;
            }
            tokio::select! {
                _ = lost.changed() => {}
                _ = tokio::time::sleep(WATCH_WRITER_EVERY) => {
                    // Only a lost connection counts here; a slow one is readiness's business.
                    let _ = self.answers(READY_WAIT, WRITER_WAIT).await;
                }
            }
        }
    }

    /// All the time the connection has been held, the current hold included.
    pub fn busy(&self) -> Duration {
        self.holding.busy()
    }

    /// Drops a write connection whose thread has ended (nothing can use it again) and
    /// returns the error every write gets from now on.
    fn lose(&self, slot: &mut Option<SqliteConnection>) -> StoreError {
        *slot = None;
        let first = self.lost.send_if_modified(|lost| {
            let first = lost.is_none();
            if first {
                *lost = Some(WRITER_THREAD_ENDED.to_string());
            }
            first
        });
        if first {
            tracing::error!("{WRITER_THREAD_ENDED}: every write fails until hookd restarts");
        }
        StoreError::Stopped(WRITER_THREAD_ENDED.to_string())
    }

    /// Ends the write connection's thread, as a crash inside sqlx would, leaving the store
    /// to find out by itself.
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn end_thread(&self) -> bool {
        let taken = self.slot.lock().await.take();
        match taken {
            Some(conn) => {
                let _ = sqlx::Connection::close(conn).await;
                true
            }
            None => false,
        }
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

/// The write connection, held until dropped. It lives outside any pool: a pool hands a
/// connection back by spawning a task that pings it through the connection's thread and then
/// wakes the next borrower, hand-offs during which nothing can write. A FIFO mutex hands it
/// on at once. (Measured at 7,000 deliveries/s: the writer thread woke 2,700 times a second
/// instead of 4,100.) Unlike a pool, nothing replaces the connection if its thread dies (a
/// panic inside sqlx): writes then fail until hookd restarts.
pub(super) struct WriteConn {
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
pub(super) struct WriteTx {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteStore, Store};

    #[tokio::test]
    async fn readiness_fails_only_when_a_write_holds_the_connection_too_long() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store.check_ready().await.expect("ready");
        let (wait, stuck_after) = (Duration::from_secs(1), Duration::from_millis(200));
        store
            .writer
            .answers(wait, stuck_after)
            .await
            .expect("a free writer answers");
        // A write in progress, even a slow one, is not a fault...
        let held = store.writer.lock().await.expect("the write connection");
        store
            .writer
            .answers(wait, stuck_after)
            .await
            .expect("held briefly");
        // ...but one that holds the connection longer than others may wait for it is.
        tokio::time::sleep(stuck_after + Duration::from_millis(50)).await;
        let err = store
            .writer
            .answers(wait, stuck_after)
            .await
            .expect_err("held too long");
        assert!(
            matches!(err, StoreError::WriterStuck { held } if held > stuck_after),
            "{err:?}"
        );
        drop(held);
        store
            .writer
            .answers(wait, stuck_after)
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
            tenant_id: None,
            traceparent: None,
        };
        let limits = crate::IngestLimits {
            max_payload_bytes: 1024,
            ..crate::IngestLimits::default()
        };
        store
            .enqueue_event(&event("before"), &limits)
            .await
            .expect("a write");
        assert!(store.writer.end_thread().await);

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
            assert!(
                matches!(&err, StoreError::Stopped(why) if why == WRITER_THREAD_ENDED),
                "{err:?}"
            );
            assert!(!err.is_transient(), "retrying cannot help: {err}");
        }
        let err = store.check_ready().await.expect_err("not ready");
        assert!(
            matches!(&err, StoreError::Stopped(why) if why == WRITER_THREAD_ENDED),
            "{err:?}"
        );
        // Reads go on, on their own connections.
        assert!(store
            .event(&"before".into())
            .await
            .expect("a read")
            .is_some());
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
            tenant_id: None,
            traceparent: None,
        };
        let limits = crate::IngestLimits {
            max_payload_bytes: 1 << 20,
            ..crate::IngestLimits::default()
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
        let held = store.writer.lock().await.expect("the write connection");
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

    /// Polls `future` up to `polls` times, a moment apart (the connection's thread works
    /// meanwhile), and drops it if it has not finished: a caller cancelled mid-write, as a
    /// request whose client went away or a task that panicked.
    async fn cancel_after<F: std::future::Future>(future: F, polls: usize) {
        let mut future = std::pin::pin!(future);
        for _ in 0..polls {
            let done = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())
            })
            .await;
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_transaction_cancelled_at_any_point_leaves_the_writer_clean() {
        let db = hookd_testkit::TestDb::sqlite();
        let store = SqliteStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let limits = crate::IngestLimits {
            max_payload_bytes: 1024,
            ..crate::IngestLimits::default()
        };
        for polls in 1..=8 {
            for immediate in [true, false] {
                let begin = async {
                    let tx = if immediate {
                        store.writer.begin().await
                    } else {
                        store.writer.begin_writing().await
                    };
                    let mut tx = tx.expect("begin");
                    sqlx::query("SELECT 1")
                        .execute(&mut *tx)
                        .await
                        .expect("a statement");
                    std::future::pending::<()>().await;
                };
                cancel_after(begin, polls).await;
                // The next write is a transaction of its own, committed: readers see it.
                let id = format!("after-{polls}-{immediate}");
                let event = crate::NewEvent {
                    event_id: Some(id.clone()),
                    event_type: "purchase".into(),
                    payload: "{}".into(),
                    endpoint_id: None,
                    tenant_id: None,
                    traceparent: None,
                };
                store
                    .enqueue_event(&event, &limits)
                    .await
                    .unwrap_or_else(|e| panic!("a write after {polls} polls: {e}"));
                assert!(
                    store
                        .event(&id.as_str().into())
                        .await
                        .expect("a read")
                        .is_some(),
                    "the write after a cancelled transaction ({polls} polls, immediate: \
                     {immediate}) is committed"
                );
            }
        }
    }
}
