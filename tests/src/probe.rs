//! Reads hookd's tables directly (the audit's source of truth on the hookd side), on
//! connections of its own. Every read is retried for a while: a scenario may be killing
//! database connections or locking the file at that very moment.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::{Backend, TestDb};

/// One delivery row.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// One attempt-log row, with its delivery's event.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub event_id: String,
    pub attempt: i64,
    pub outcome: String,
    pub status_code: Option<i64>,
    /// Ms since the epoch. For real attempts this is the sending process's clock; for
    /// `lost` ones (written by the rescuer) the database's.
    pub started_at: i64,
    /// When the delivery was created: the database's clock.
    pub delivery_created_at: i64,
}

/// Where the work stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub outbox: i64,
    pub deliveries: i64,
    pub pending: i64,
    pub in_flight: i64,
}

impl Progress {
    pub fn unfinished(&self) -> i64 {
        self.pending + self.in_flight
    }
}

pub enum Probe {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! fetch_all {
    ($self:ident, $sql:expr, $row:ty) => {
        match $self {
            Probe::Pg(pool) => sqlx::query_as::<_, $row>($sql).fetch_all(pool).await,
            Probe::Sqlite(pool) => sqlx::query_as::<_, $row>($sql).fetch_all(pool).await,
        }
    };
}

const PROGRESS: &str = "SELECT \
    (SELECT CAST(COUNT(*) AS BIGINT) FROM hookd_outbox), \
    (SELECT CAST(COUNT(*) AS BIGINT) FROM hookd_deliveries), \
    (SELECT CAST(COUNT(*) AS BIGINT) FROM hookd_deliveries WHERE state = 'pending'), \
    (SELECT CAST(COUNT(*) AS BIGINT) FROM hookd_deliveries WHERE state = 'in_flight')";

impl Probe {
    /// Connects to the test database (which hookd has created and migrated already).
    pub async fn connect(db: &TestDb) -> Probe {
        match db.backend {
            Backend::Postgres => Probe::Pg(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(&db.url)
                    .await
                    .expect("probe connects to PostgreSQL"),
            ),
            Backend::Sqlite => Probe::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with(
                        SqliteConnectOptions::from_str(&db.url)
                            .expect("SQLite URL")
                            .busy_timeout(Duration::from_secs(30)),
                    )
                    .await
                    .expect("probe opens the SQLite file"),
            ),
        }
    }

    /// Runs `read` until it succeeds, for up to 60 s.
    async fn retry<T, F, Fut>(&self, what: &str, mut read: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match read().await {
                Ok(v) => return v,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("probe: {what}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("probe: {what}: {e}"),
            }
        }
    }

    pub async fn progress(&self) -> Progress {
        let (outbox, deliveries, pending, in_flight) = self
            .retry("progress", || async {
                let rows = fetch_all!(self, PROGRESS, (i64, i64, i64, i64))?;
                Ok(rows[0])
            })
            .await;
        Progress {
            outbox,
            deliveries,
            pending,
            in_flight,
        }
    }

    /// Deliveries `in_flight` right now.
    pub async fn in_flight(&self) -> i64 {
        self.progress().await.in_flight
    }

    /// The ids of the deliveries `in_flight` right now.
    pub async fn in_flight_ids(&self) -> std::collections::HashSet<i64> {
        let sql = "SELECT id FROM hookd_deliveries WHERE state = 'in_flight'";
        self.retry("in-flight ids", || async { fetch_all!(self, sql, (i64,)) })
            .await
            .into_iter()
            .map(|(id,)| id)
            .collect()
    }

    pub async fn deliveries(&self) -> Vec<DeliveryRow> {
        let sql = "SELECT id, event_id, endpoint_id, state, CAST(attempts AS BIGINT), last_error \
                   FROM hookd_deliveries ORDER BY id";
        let rows = self
            .retry("deliveries", || async {
                fetch_all!(
                    self,
                    sql,
                    (i64, String, String, String, i64, Option<String>)
                )
            })
            .await;
        rows.into_iter()
            .map(
                |(id, event_id, endpoint_id, state, attempts, last_error)| DeliveryRow {
                    id,
                    event_id,
                    endpoint_id,
                    state,
                    attempts,
                    last_error,
                },
            )
            .collect()
    }

    pub async fn attempts(&self) -> Vec<AttemptRow> {
        let sql = "SELECT d.event_id, CAST(a.attempt AS BIGINT), a.outcome, \
                   CAST(a.status_code AS BIGINT), a.started_at, d.created_at \
                   FROM hookd_attempts a JOIN hookd_deliveries d ON d.id = a.delivery_id \
                   ORDER BY a.id";
        let rows = self
            .retry("attempts", || async {
                fetch_all!(self, sql, (String, i64, String, Option<i64>, i64, i64))
            })
            .await;
        rows.into_iter()
            .map(
                |(event_id, attempt, outcome, status_code, started_at, delivery_created_at)| {
                    AttemptRow {
                        event_id,
                        attempt,
                        outcome,
                        status_code,
                        started_at,
                        delivery_created_at,
                    }
                },
            )
            .collect()
    }

    /// `next_attempt_at - now` (database clock) of every pending delivery that has a due
    /// time, in ms.
    pub async fn due_in_ms(&self) -> Vec<(String, i64)> {
        let sql = match self {
            Probe::Pg(_) => {
                "SELECT event_id, next_attempt_at - hookd_now_ms() FROM hookd_deliveries \
                 WHERE state = 'pending' AND next_attempt_at IS NOT NULL"
            }
            Probe::Sqlite(_) => {
                "SELECT event_id, next_attempt_at - CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) \
                 FROM hookd_deliveries WHERE state = 'pending' AND next_attempt_at IS NOT NULL"
            }
        };
        self.retry("due times", || async {
            fetch_all!(self, sql, (String, i64))
        })
        .await
    }

    /// `lease_expires_at - now` (database clock) of every delivery in flight, in ms.
    pub async fn lease_left_ms(&self) -> Vec<i64> {
        let sql = match self {
            Probe::Pg(_) => {
                "SELECT lease_expires_at - hookd_now_ms() FROM hookd_deliveries \
                 WHERE state = 'in_flight'"
            }
            Probe::Sqlite(_) => {
                "SELECT lease_expires_at - CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) \
                 FROM hookd_deliveries WHERE state = 'in_flight'"
            }
        };
        self.retry("leases", || async { fetch_all!(self, sql, (i64,)) })
            .await
            .into_iter()
            .map(|(ms,)| ms)
            .collect()
    }

    /// The PostgreSQL pool (PostgreSQL scenarios only).
    pub fn pg(&self) -> &PgPool {
        match self {
            Probe::Pg(pool) => pool,
            Probe::Sqlite(_) => panic!("not a PostgreSQL probe"),
        }
    }

    pub async fn close(&self) {
        match self {
            Probe::Pg(pool) => pool.close().await,
            Probe::Sqlite(pool) => pool.close().await,
        }
    }
}
