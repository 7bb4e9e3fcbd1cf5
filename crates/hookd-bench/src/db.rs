//! The database side: a fresh database per run, producers that insert into `hookd_outbox`
//! by raw SQL on connections of their own, and bulk preloads.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection, QueryBuilder, SqliteConnection};

/// application_name of the bench's own PostgreSQL sessions (so that the CPU of hookd's
/// sessions can be told apart from the producers').
pub const PRODUCER_APP: &str = "hookd-bench";

/// The event type every benchmark event has (endpoints subscribe to `*`).
pub const EVENT_TYPE: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A database that exists for one run: a SQLite file in a temporary directory, or a
/// PostgreSQL database `hookd_bench_<random>` that is dropped afterwards.
pub struct BenchDb {
    pub kind: Kind,
    /// What hookd is given as HOOKD_DATABASE_URL.
    pub url: String,
    pg_admin: Option<(String, String)>,
    pub dir: tempfile::TempDir,
}

/// `postgres://user@host:port[/db][?query]` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl BenchDb {
    /// `spec`: `sqlite`, or a PostgreSQL server URL (`postgres://postgres@127.0.0.1:5432`).
    /// `async_commit`: a what-if: the database's sessions default to
    /// `synchronous_commit = off` (the producers' sessions set it back on).
    pub async fn create(spec: &str, async_commit: bool) -> anyhow::Result<BenchDb> {
        let dir = tempfile::Builder::new()
            .prefix("hookd-bench-")
            .tempdir_in("/tmp")
            .context("cannot create a temporary directory")?;
        if spec == "sqlite" {
            let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
            return Ok(BenchDb {
                kind: Kind::Sqlite,
                url,
                pg_admin: None,
                dir,
            });
        }
        if !(spec.starts_with("postgres://") || spec.starts_with("postgresql://")) {
            bail!("--db {spec:?}: expected `sqlite` or a postgres:// URL");
        }
        let admin = with_database(spec, "postgres");
        let name = format!("hookd_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin))
            .await
            .context("connecting to PostgreSQL timed out")?
            .with_context(|| format!("cannot connect to PostgreSQL at {admin}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        if async_commit {
            sqlx::query(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ))
            .execute(&mut conn)
            .await?;
        }
        let _ = conn.close().await;
        Ok(BenchDb {
            kind: Kind::Postgres,
            url: with_database(spec, &name),
            pg_admin: Some((admin, name)),
            dir,
        })
    }

    /// Drops the PostgreSQL database (the SQLite directory goes with `self`).
    pub async fn drop_database(self) {
        if let Some((admin, name)) = &self.pg_admin {
            let dropped = async {
                let mut conn = PgConnection::connect(admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(60), dropped)
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
            {
                eprintln!("warning: cannot drop database {name}: {e}");
            }
        }
    }

    pub fn target(&self) -> Target {
        Target {
            kind: self.kind,
            url: self.url.clone(),
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Conn> {
        self.target().connect().await
    }
}

/// Where to connect: a database's kind and URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub url: String,
}

impl Target {
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let connecting = async {
            Ok::<_, anyhow::Error>(match self.kind {
                Kind::Sqlite => Conn::Sqlite(
                    SqliteConnectOptions::from_str(&self.url)?
                        .busy_timeout(Duration::from_secs(30))
                        // As hookd's own connections: WAL + NORMAL (a producer on FULL would
                        // measure its own fsyncs, not hookd).
                        .synchronous(SqliteSynchronous::Normal)
                        .connect()
                        .await?,
                ),
                Kind::Postgres => Conn::Pg(
                    PgConnectOptions::from_str(&self.url)?
                        .application_name(PRODUCER_APP)
                        .options([("synchronous_commit", "on")])
                        .connect()
                        .await?,
                ),
            })
        };
        tokio::time::timeout(Duration::from_secs(30), connecting)
            .await
            .context("connecting to the database timed out")?
    }
}

/// A producer's (or the preloader's) own connection.
pub enum Conn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// The JSON payload of event `i`, about `size` bytes.
pub fn payload(i: usize, size: usize) -> String {
    let head = format!("{{\"i\":{i},\"orderId\":\"o-{i}\",\"amount\":9900,\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

impl Conn {
    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<u64> {
        Ok(match self {
            Conn::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await?.rows_affected(),
            Conn::Pg(c) => sqlx::raw_sql(sql).execute(c).await?.rows_affected(),
        })
    }

    pub async fn scalar_i64(&mut self, sql: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await?,
            Conn::Pg(c) => sqlx::query_scalar(sql).fetch_one(c).await?,
        })
    }

    /// One transaction inserting events `ids` the way a producer does.
    pub async fn insert_batch(
        &mut self,
        prefix: &str,
        ids: std::ops::Range<usize>,
        size: usize,
    ) -> anyhow::Result<()> {
        let rows: Vec<(String, String)> = ids
            .map(|i| (format!("{prefix}{i}"), payload(i, size)))
            .collect();
        let insert = "INSERT INTO hookd_outbox (event_id, event_type, payload) ";
        match self {
            Conn::Sqlite(c) => {
                let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
                let mut q = QueryBuilder::new(insert);
                q.push_values(&rows, |mut b, (id, body)| {
                    b.push_bind(id).push_bind(EVENT_TYPE).push_bind(body);
                });
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Conn::Pg(c) => {
                let mut tx = c.begin().await?;
                let mut q = QueryBuilder::new(insert);
                q.push_values(&rows, |mut b, (id, body)| {
                    b.push_bind(id).push_bind(EVENT_TYPE).push_bind(body);
                });
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// One single-row transaction (autocommit).
    pub async fn insert_one(&mut self, prefix: &str, i: usize, size: usize) -> anyhow::Result<()> {
        let sql = "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ($1, $2, $3)";
        let (id, body) = (format!("{prefix}{i}"), payload(i, size));
        match self {
            Conn::Sqlite(c) => {
                sqlx::query(sql)
                    .bind(id)
                    .bind(EVENT_TYPE)
                    .bind(body)
                    .execute(c)
                    .await?;
            }
            Conn::Pg(c) => {
                sqlx::query(sql)
                    .bind(id)
                    .bind(EVENT_TYPE)
                    .bind(body)
                    .execute(c)
                    .await?;
            }
        }
        Ok(())
    }

    /// CPU seconds of the PostgreSQL processes serving this database (see [`PgCpu`]).
    pub async fn pg_cpu(&mut self) -> Option<PgCpu> {
        let Conn::Pg(c) = self else { return None };
        type Row = (i32, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT pid, datname::text, application_name, backend_type FROM pg_stat_activity \
             WHERE datname = current_database() OR datname IS NULL",
        )
        .fetch_all(c)
        .await
        .ok()?;
        let mut cpu = PgCpu::default();
        for (pid, datname, app, backend_type) in rows {
            let class = match (datname, backend_type.as_deref()) {
                (Some(_), Some("client backend")) => {
                    if app.as_deref().unwrap_or("").starts_with(PRODUCER_APP) {
                        1
                    } else {
                        0
                    }
                }
                _ => 2,
            };
            if let Some(secs) = crate::hookd::cpu_secs(&pid.to_string()) {
                cpu.by_pid.insert(pid, (class, secs));
            }
        }
        Some(cpu)
    }

    /// Database-wide write counters (PostgreSQL only): transactions committed and rows
    /// inserted, updated, deleted in this database; and the cluster's WAL position.
    pub async fn pg_counters(&mut self) -> Option<PgCounters> {
        let Conn::Pg(c) = self else { return None };
        let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, \
             (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut *c)
        .await
        .ok()?;
        // Statements run in this database, when the server preloads pg_stat_statements
        // (`shared_preload_libraries`); `None` otherwise.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut *c)
            .await;
        let statements: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(SUM(calls), 0)::bigint FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut *c)
        .await
        .ok();
        Some(PgCounters {
            commits: row.0,
            rollbacks: row.1,
            inserted: row.2,
            updated: row.3,
            deleted: row.4,
            wal_bytes: row.5,
            statements,
        })
    }
}

/// PostgreSQL server processes and their CPU seconds (from /proc; the server runs on this
/// machine): hookd's sessions on this database, the bench's, and the rest of this
/// database's backends (autovacuum) plus the cluster's background processes (WAL writer,
/// checkpointer, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgCpu {
    pub hookd_sessions: f64,
    pub bench_sessions: f64,
    pub background: f64,
    #[serde(skip)]
    by_pid: std::collections::HashMap<i32, (u8, f64)>,
}

impl PgCpu {
    pub fn since(&self, before: &PgCpu) -> PgCpu {
        let mut d = PgCpu::default();
        for (pid, (class, cpu)) in &self.by_pid {
            // A process that started during the window counts from zero.
            let was = before.by_pid.get(pid).map(|(_, c)| *c).unwrap_or(0.0);
            let delta = (cpu - was).max(0.0);
            match class {
                0 => d.hookd_sessions += delta,
                1 => d.bench_sessions += delta,
                _ => d.background += delta,
            }
        }
        d
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCounters {
    pub commits: i64,
    pub rollbacks: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub wal_bytes: i64,
    /// Statements run in the database (pg_stat_statements' calls), when it is loaded.
    pub statements: Option<i64>,
}

impl PgCounters {
    pub fn since(&self, before: &PgCounters) -> PgCounters {
        PgCounters {
            commits: self.commits - before.commits,
            rollbacks: self.rollbacks - before.rollbacks,
            inserted: self.inserted - before.inserted,
            updated: self.updated - before.updated,
            deleted: self.deleted - before.deleted,
            wal_bytes: self.wal_bytes - before.wal_bytes,
            statements: self.statements.zip(before.statements).map(|(a, b)| a - b),
        }
    }
}

/// How the producers insert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Insert {
    /// `batch` rows per transaction, as fast as possible.
    Batch(usize),
    /// One row per transaction, as fast as possible.
    Single,
    /// One row per transaction at a fixed rate (events/s).
    Paced(f64),
    /// `POST /v1/events` at a fixed rate (events/s); an event counts as committed when
    /// hookd answers 202 (it has stored the event and its deliveries by then).
    Api(f64),
    /// `POST /v1/events` from this many closed-loop clients, each sending its next event
    /// as soon as the last one was answered (saturation through the API).
    ApiLoop(usize),
}

impl Insert {
    /// Inserts as fast as the producers can: hookd runs at saturation.
    pub fn at_saturation(&self) -> bool {
        matches!(self, Insert::Batch(_) | Insert::Single | Insert::ApiLoop(_))
    }

    /// Events go through `POST /v1/events` rather than the outbox.
    pub fn through_api(&self) -> bool {
        matches!(self, Insert::Api(_) | Insert::ApiLoop(_))
    }

    pub fn label(&self) -> String {
        match self {
            Insert::Batch(n) => format!("batch{n}"),
            Insert::Single => "single".into(),
            Insert::Paced(r) => format!("{r:.0}/s"),
            Insert::Api(r) => format!("API {r:.0}/s"),
            Insert::ApiLoop(c) => format!("API c{c}"),
        }
    }
}

/// When each event committed: ns since the run's base + 1 (0 = not committed).
pub struct Commits {
    pub at: Vec<AtomicU64>,
    pub first_start_ns: AtomicU64,
    /// Through the API: each request's time from send to hookd's answer, ns.
    pub accept_ns: std::sync::Mutex<Vec<u64>>,
}

impl Commits {
    pub fn new(n: usize) -> Arc<Commits> {
        Arc::new(Commits {
            at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            first_start_ns: AtomicU64::new(u64::MAX),
            accept_ns: std::sync::Mutex::new(Vec::with_capacity(n)),
        })
    }
}

/// Inserts events `from..n` with `producers` connections; records each commit time.
#[allow(clippy::too_many_arguments)]
pub async fn produce(
    db: &Target,
    api: &str,
    prefix: &str,
    from: usize,
    n: usize,
    size: usize,
    insert: Insert,
    producers: usize,
    base: Instant,
    commits: Arc<Commits>,
) -> anyhow::Result<()> {
    let now_ns = move || base.elapsed().as_nanos() as u64 + 1;
    let next = Arc::new(AtomicUsize::new(from));
    let (paced_tx, paced_rx) = tokio::sync::mpsc::channel::<usize>(65_536);
    let paced_rx = Arc::new(tokio::sync::Mutex::new(paced_rx));
    let mut tasks = tokio::task::JoinSet::new();
    if insert.through_api() {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(producers.max(1))
            .build()
            .context("HTTP client")?;
        for _ in 0..producers.max(1) {
            let (http, url) = (http.clone(), format!("{api}/v1/events"));
            let (commits, prefix) = (commits.clone(), prefix.to_string());
            let (paced_rx, next) = (paced_rx.clone(), next.clone());
            tasks.spawn(async move {
                let mut accepts = Vec::new();
                loop {
                    let i = if let Insert::ApiLoop(_) = insert {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        i
                    } else {
                        let Some(i) = paced_rx.lock().await.recv().await else {
                            break;
                        };
                        i
                    };
                    let sent = now_ns();
                    commits.first_start_ns.fetch_min(sent, Ordering::Relaxed);
                    let body = format!(
                        "{{\"event_id\":\"{prefix}{i}\",\"event_type\":\"{EVENT_TYPE}\",\"payload\":{}}}",
                        payload(i, size)
                    );
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .context("POST /v1/events")?;
                    let t = now_ns();
                    if response.status().as_u16() != 202 {
                        anyhow::bail!("POST /v1/events answered {}", response.status());
                    }
                    commits.at[i].store(t, Ordering::Release);
                    accepts.push(t - sent);
                }
                commits
                    .accept_ns
                    .lock()
                    .expect("never poisoned")
                    .extend(accepts);
                Ok::<_, anyhow::Error>(())
            });
        }
    }
    let db_producers = if insert.through_api() {
        0
    } else {
        producers.max(1)
    };
    for _ in 0..db_producers {
        let mut conn = db.connect().await?;
        let (next, commits, prefix) = (next.clone(), commits.clone(), prefix.to_string());
        let paced_rx = paced_rx.clone();
        tasks.spawn(async move {
            loop {
                let range = match insert {
                    Insert::Batch(b) => {
                        let start = next.fetch_add(b, Ordering::Relaxed);
                        start..(start + b).min(n)
                    }
                    Insert::Single => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        i..i + 1
                    }
                    Insert::Paced(_) | Insert::Api(_) | Insert::ApiLoop(_) => {
                        match paced_rx.lock().await.recv().await {
                            Some(i) => i..i + 1,
                            None => break,
                        }
                    }
                };
                if range.start >= n {
                    break;
                }
                commits
                    .first_start_ns
                    .fetch_min(now_ns(), Ordering::Relaxed);
                if range.len() == 1 {
                    conn.insert_one(&prefix, range.start, size).await?;
                } else {
                    conn.insert_batch(&prefix, range.clone(), size).await?;
                }
                let t = now_ns();
                for i in range {
                    commits.at[i].store(t, Ordering::Release);
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    if let Insert::Paced(rate) | Insert::Api(rate) = insert {
        let start = tokio::time::Instant::now();
        for i in from..n {
            let due = start + Duration::from_secs_f64((i - from) as f64 / rate);
            tokio::time::sleep_until(due).await;
            if paced_tx.send(i).await.is_err() {
                break;
            }
        }
    }
    drop(paced_tx);
    while let Some(done) = tasks.join_next().await {
        done.context("a producer panicked")??;
    }
    Ok(())
}

/// What-if: gives the SQLite file planner statistics, as `ANALYZE` on a database in use
/// would: the real ones when hookd_deliveries has rows, else representative ones (most
/// deliveries finished, few pending), so that the planner knows `state = 'pending'` is not
/// selective and the partial index of due rows is small.
pub async fn sqlite_stats(conn: &mut Conn) -> anyhow::Result<()> {
    conn.execute("ANALYZE").await?;
    let rows = conn
        .scalar_i64("SELECT COUNT(*) FROM hookd_deliveries")
        .await?;
    if rows == 0 {
        conn.execute(
            "DELETE FROM sqlite_stat1 WHERE tbl = 'hookd_deliveries'; \
             INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES \
             ('hookd_deliveries', NULL, '1000000'), \
             ('hookd_deliveries', 'hookd_deliveries_state', '1000000 333334 1'), \
             ('hookd_deliveries', 'hookd_deliveries_due', '10000 2'), \
             ('hookd_deliveries', 'hookd_deliveries_due_first', '10000 2'), \
             ('hookd_deliveries', 'hookd_deliveries_due_retry', '1000 2'), \
             ('hookd_deliveries', 'hookd_deliveries_leased', '1000 2'), \
             ('hookd_deliveries', 'hookd_deliveries_event', '1000000 1'), \
             ('hookd_deliveries', 'hookd_deliveries_endpoint', '1000000 1000 1'), \
             ('hookd_deliveries', 'hookd_deliveries_finished', '990000 2');",
        )
        .await?;
    }
    Ok(())
}

/// Bytes on disk of hookd's history tables with their indexes (PostgreSQL), or of the
/// whole file (SQLite).
pub async fn table_bytes(conn: &mut Conn, kind: Kind) -> Option<i64> {
    let sql = match kind {
        Kind::Postgres => {
            "SELECT (pg_total_relation_size('hookd_events') + pg_total_relation_size('hookd_deliveries') \
             + pg_total_relation_size('hookd_attempts'))::bigint"
        }
        Kind::Sqlite => {
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        }
    };
    conn.scalar_i64(sql).await.ok()
}

/// What a preload puts into the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preload {
    /// Finished history: events, `succeeded` deliveries (finished_at set) and one attempt
    /// each; ids `pre-{i}`, never sent.
    Finished,
    /// A due backlog: events and `pending` deliveries due now, ids `{prefix}{i}`, which
    /// hookd then sends.
    PendingDue,
}

/// Fills hookd_events, hookd_deliveries (and hookd_attempts for finished history) with `n`
/// rows of `event_type` by bulk SQL, for each of `endpoint_ids`, in chunks of 100,000 rows.
#[allow(clippy::too_many_arguments)]
pub async fn preload(
    conn: &mut Conn,
    kind: Kind,
    what: Preload,
    prefix: &str,
    endpoint_ids: &[String],
    n: u64,
    size: usize,
    event_type: &str,
) -> anyhow::Result<()> {
    const CHUNK: u64 = 100_000;
    let pad = "x".repeat(size.saturating_sub(60));
    let now_ms = match kind {
        Kind::Sqlite => {
            conn.scalar_i64("SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)")
                .await?
        }
        Kind::Postgres => conn.scalar_i64("SELECT hookd_now_ms()").await?,
    };
    let prefix = match what {
        Preload::Finished => "pre-",
        Preload::PendingDue => prefix,
    };
    let mut from = 0u64;
    while from < n {
        let to = (from + CHUNK).min(n);
        // Rows g in [from, to): finished ones spread over the past (10 ms apart), well
        // inside the retention period so that retention leaves them alone.
        let series = match kind {
            Kind::Sqlite => format!(
                "WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM s WHERE g + 1 < {to}) "
            ),
            Kind::Postgres => format!("WITH s(g) AS (SELECT generate_series({from}::bigint, {to}::bigint - 1)) "),
        };
        let t = format!("({now_ms} - ({n} - g) * 10)");
        let mut sql = format!(
            "{series} INSERT INTO hookd_events (event_id, event_type, payload, created_at) \
             SELECT '{prefix}' || g, '{event_type}', \
             '{{\"i\":' || g || ',\"preloaded\":true,\"pad\":\"{pad}\"}}', {t} FROM s;\n"
        );
        for endpoint in endpoint_ids {
            let (state, due, finished, status) = match what {
                Preload::Finished => ("succeeded", "NULL".to_string(), t.clone(), "200"),
                Preload::PendingDue => ("pending", now_ms.to_string(), "NULL".into(), "NULL"),
            };
            sql.push_str(&format!(
                "{series} INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, \
                 attempts, auto_attempts, next_attempt_at, last_status_code, created_at, updated_at, finished_at) \
                 SELECT '{prefix}' || g, '{endpoint}', '{event_type}', '{state}', \
                 CASE WHEN '{state}' = 'succeeded' THEN 1 ELSE 0 END, \
                 CASE WHEN '{state}' = 'succeeded' THEN 1 ELSE 0 END, \
                 {due}, {status}, {t}, {t}, {finished} FROM s;\n"
            ));
        }
        let mut tx_sql = match kind {
            Kind::Sqlite => "BEGIN IMMEDIATE;\n".to_string(),
            Kind::Postgres => "BEGIN;\n".to_string(),
        };
        tx_sql.push_str(&sql);
        tx_sql.push_str("COMMIT;");
        conn.execute(&tx_sql).await?;
        from = to;
    }
    if what == Preload::Finished {
        conn.execute(
            "INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
             status_code, outcome) SELECT id, 1, 'auto', created_at, 1, 200, 'success' \
             FROM hookd_deliveries WHERE state = 'succeeded'",
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
                "x"
            ),
            "postgres://postgres@127.0.0.1:5432/x?sslmode=disable"
        );
    }

    #[test]
    fn payloads_are_json_of_the_asked_size() {
        let p = payload(42, 200);
        assert_eq!(p.len(), 200);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["i"], 42);
    }
}
