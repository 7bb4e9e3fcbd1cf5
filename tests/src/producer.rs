//! A producer service: inserts outbox rows with plain SQL, in batches, one transaction per
//! batch, with explicit `event_id`s, on a connection of its own.
//!
//! A batch whose commit failed is inserted again with the same ids until it commits: if the
//! first commit did land after all (the connection died during COMMIT), hookd's `event_id`
//! dedupe makes the second one a no-op. An id counts as committed once a commit of its batch
//! returned success.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

use crate::{Backend, TestDb};

/// The event type every workload row has.
pub const EVENT_TYPE: &str = "order.paid";

/// A running producer.
pub struct Producer {
    committed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Report>,
}

/// What a producer did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every id whose batch committed.
    pub committed: Vec<String>,
    /// Batches that had to be tried again.
    pub retried_batches: usize,
}

enum Conn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl Conn {
    async fn open(backend: Backend, url: &str) -> Result<Conn, sqlx::Error> {
        Ok(match backend {
            Backend::Postgres => Conn::Pg(PgConnection::connect(url).await?),
            Backend::Sqlite => Conn::Sqlite(
                SqliteConnection::connect_with(
                    &sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                        .busy_timeout(Duration::from_secs(30)),
                )
                .await?,
            ),
        })
    }

    async fn run(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Conn::Pg(c) => c.execute(sql).await.map(|_| ()),
            Conn::Sqlite(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::Sqlite(c) => c.close().await,
        };
    }
}

/// One transaction inserting `ids` into the outbox (optionally for one endpoint).
pub fn insert_sql(backend: Backend, ids: &[String], endpoint_id: Option<&str>) -> String {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    let endpoint = endpoint_id
        .map(|e| format!("'{e}'"))
        .unwrap_or_else(|| "NULL".into());
    let values: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "('{id}', '{EVENT_TYPE}', '{{\"id\":\"{id}\",\"amount\":{}}}', {endpoint})",
                crate::event_number(id)
            )
        })
        .collect();
    format!(
        "{begin}; INSERT INTO hookd_outbox (event_id, event_type, payload, endpoint_id) VALUES {}; COMMIT;",
        values.join(", ")
    )
}

impl Producer {
    /// Starts inserting `ids` in batches of `batch`, pausing `pause` between batches.
    pub fn start(db: &TestDb, ids: Vec<String>, batch: usize, pause: Duration) -> Producer {
        Producer::start_for(db, ids, batch, pause, None)
    }

    /// The same, every row for endpoint `endpoint_id` when given.
    pub fn start_for(
        db: &TestDb,
        ids: Vec<String>,
        batch: usize,
        pause: Duration,
        endpoint_id: Option<String>,
    ) -> Producer {
        let committed = Arc::new(AtomicUsize::new(0));
        let (backend, url) = (db.backend, db.url.clone());
        let count = committed.clone();
        let task = tokio::spawn(async move {
            let mut report = Report::default();
            let mut conn: Option<Conn> = None;
            for chunk in ids.chunks(batch) {
                let sql = insert_sql(backend, chunk, endpoint_id.as_deref());
                let mut tries = 0;
                loop {
                    tries += 1;
                    let result = match conn.as_mut() {
                        Some(c) => c.run(&sql).await,
                        None => match Conn::open(backend, &url).await {
                            Ok(mut c) => {
                                let r = c.run(&sql).await;
                                conn = Some(c);
                                r
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match result {
                        Ok(()) => break,
                        Err(e) => {
                            if tries == 1 {
                                report.retried_batches += 1;
                            }
                            assert!(tries < 60, "producer: a batch failed 60 times: {e}");
                            // Whatever state the connection is in, start over on a new one.
                            if let Some(c) = conn.take() {
                                c.close().await;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                report.committed.extend(chunk.iter().cloned());
                count.fetch_add(chunk.len(), Ordering::SeqCst);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            if let Some(c) = conn.take() {
                c.close().await;
            }
            report
        });
        Producer { committed, task }
    }

    /// Ids committed so far.
    pub fn committed(&self) -> usize {
        self.committed.load(Ordering::SeqCst)
    }

    /// Waits (bounded) for the producer to finish.
    pub async fn finish(self) -> Report {
        tokio::time::timeout(crate::LONG, self.task)
            .await
            .expect("the producer finishes in time")
            .expect("the producer does not panic")
    }
}
