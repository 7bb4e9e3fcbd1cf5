//! PostgreSQL: a streaming replica for the reads that need not see the latest write (the
//! delivery log, lists, summaries, the backlog gauges). Whatever changes state, and every
//! read a change depends on, stays on the primary.
//!
//! A replica that fails a read (gone, restarting, not yet caught up with a migration) is
//! left alone for [`REST`]: that read and the next ones go to the primary, with one warning
//! when the replica drops out and one when it is back. Delivery never reads from it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::Result;

/// How long a replica that failed a read is passed over.
pub const REST: Duration = Duration::from_secs(5);

/// Connections to the replica: the reads are the API's and the gauges', a few at a time.
const CONNECTIONS: u32 = 4;

/// How long a read waits for a replica connection before it goes to the primary.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Replica {
    pool: PgPool,
    /// Until when (ms since the epoch) reads skip the replica.
    resting_until: AtomicI64,
    /// Whether the last read found it failing: warnings only when that changes.
    failing: AtomicBool,
}

impl Replica {
    /// Connects lazily: a replica that is down at start costs a warning at the first read,
    /// not the start.
    pub fn connect(url: &str) -> Result<Replica> {
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(crate::pg_session::options(url)?);
        Ok(Replica {
            pool,
            resting_until: AtomicI64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Runs `read` on the replica unless it is resting, else (or when it fails there) on
    /// `primary`.
    pub async fn read<T, F, Fut>(&self, primary: &PgPool, read: F) -> Result<T>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if now_ms() >= self.resting_until.load(Ordering::Relaxed) {
            match read(self.pool.clone()).await {
                Ok(rows) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the read replica answers again; reads go to it");
                    }
                    return Ok(rows);
                }
                Err(e) => {
                    self.resting_until
                        .store(now_ms() + REST.as_millis() as i64, Ordering::Relaxed);
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?REST,
                            "the read replica failed a read; reads go to the primary meanwhile"
                        );
                    }
                }
            }
        }
        read(primary.clone()).await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}
