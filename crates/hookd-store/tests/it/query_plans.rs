//! The hot queries read narrow indexes whose cost does not grow with the table: the
//! claim reads the partial index of pending rows in due order, and the delivery log pages
//! by keyset on an index, never sorting. Checked with each database's own EXPLAIN on
//! 50,000 rows (1% pending, 0.2% failed, 0.5% for the endpoint looked at), so the planner
//! has a real choice to make. With a common state or a busy endpoint PostgreSQL may walk
//! the primary key backwards instead: also an index, also no sort, and also bounded.
//!
//! The SQL here has the shape the store runs (see `claim` in sqlite.rs/postgres.rs and
//! `deliveries` in common.rs).
//!
//! The questions whose cost once grew with the history, asked of an endpoint with 50,000
//! deliveries behind it: whether an ordered endpoint has a delivery on its way (at ingest,
//! on each final result, and in the safety net every few seconds), and a bulk resend's
//! count and chunks by event type or time. Each reads an index of unfinished rows or of the
//! filter, never the table; on SQLite also without planner statistics, as hookd runs.

use hookd_testkit::{Backend, TestDb};
use sqlx::Connection;
use std::time::Duration;

const ROWS: &str = "50000";

const SEED: &str = "
INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, created_at, updated_at)
VALUES ('ep_a', 'https://a.example/', '[\"*\"]', 'standard', 's', 0, 0),
       ('ep_b', 'https://b.example/', '[\"*\"]', 'standard', 's', 0, 0);
INSERT INTO hookd_events (event_id, event_type, payload, created_at) VALUES ('e', 'x', '{}', 0);";

/// A query of the numbers 1 to `n` as the column `i`, in `backend`'s words.
pub(crate) fn series(backend: Backend, n: impl std::fmt::Display) -> String {
    match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n"
        ),
        Backend::Postgres => format!("SELECT i FROM generate_series(1, {n}) AS i"),
    }
}

/// A migrated database of `backend`, and its store. On PostgreSQL, delivery ids are
/// numbered from 1 again, below today's first id, so that the finished rows seeded land in
/// one partition of the history (the one of the tables from before the partitions, with a
/// day's indexes) and the SQL here can name ids as small numbers.
pub(crate) async fn migrated(backend: Backend) -> (TestDb, std::sync::Arc<dyn hookd_store::Store>) {
    let db = TestDb::new(backend).await;
    let store = hookd_store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    if backend == Backend::Postgres {
        db.exec("SELECT setval('hookd_deliveries_id_seq', 1, false)")
            .await;
    }
    (db, store)
}

/// Whether a line of a plan scans a table of deliveries that holds rows: PostgreSQL's
/// empty partitions (the days ahead) cost nothing to scan.
pub(crate) fn scans_deliveries(line: &str) -> bool {
    line.contains("Seq Scan on hookd_deliveries") && !line.contains("cost=0.00..0.00")
}

/// Whether a line of a plan scans the history: as [`scans_deliveries`], but PostgreSQL's
/// backlog is a partition apart from the history, and with a small backlog a scan is its
/// cheapest read (the claim's plans are held to the stricter rule).
pub(crate) fn scans_history(line: &str) -> bool {
    scans_deliveries(line) && !line.contains("Seq Scan on hookd_deliveries_unfinished")
}

/// Whether a plan sorts rows: a `Sort` node, not the order a `Merge Append` of the
/// partitions keeps (its `Sort Key`).
pub(crate) fn sorts(plan: &str) -> bool {
    plan.lines().any(|l| {
        let l = l.trim_start().trim_start_matches("->").trim_start();
        l.starts_with("Sort  (") || l.starts_with("Incremental Sort")
    })
}

/// (what, SQL, index it must use)
fn queries() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "claim: due first attempts, oldest due first",
            "SELECT id FROM hookd_deliveries WHERE state = 'pending' AND attempts = 0 \
             AND next_attempt_at <= 40000 ORDER BY next_attempt_at LIMIT 128"
                .into(),
            "hookd_deliveries_due_first",
        ),
        (
            "claim: due retries, oldest due first",
            "SELECT id FROM hookd_deliveries WHERE state = 'pending' AND attempts > 0 \
             AND next_attempt_at <= 40000 ORDER BY next_attempt_at LIMIT 128"
                .into(),
            "hookd_deliveries_due_retry",
        ),
        (
            "log: one endpoint's deliveries, a page after a cursor",
            "SELECT id, event_id, state FROM hookd_deliveries WHERE TRUE AND endpoint_id = 'ep_a' \
             AND id < 30000 ORDER BY id DESC LIMIT 50"
                .into(),
            "hookd_deliveries_endpoint",
        ),
        (
            "log: failed deliveries, a page after a cursor",
            "SELECT id, event_id, state FROM hookd_deliveries WHERE TRUE AND state = 'failed' \
             AND state IN ('succeeded', 'failed') AND id < 30000 ORDER BY id DESC LIMIT 50"
                .into(),
            "hookd_deliveries_state",
        ),
    ]
}

/// (what, SQL, an index it must use: any of these). As the store spells them in sql.rs
/// and common.rs, with `hookd_now_ms()` as 0 and values bound.
/// A bulk resend's chunk is read from a window of 10,000 ids below its cursor (20 batches of
/// 500): through the filter's index or the primary key, either way a bounded read.
const CHUNK: &[&str] = &[
    "hookd_deliveries_event_type",
    "INTEGER PRIMARY KEY",
    "hookd_deliveries_pkey",
    "hookd_deliveries_created",
];

fn history_queries() -> Vec<(&'static str, String, &'static [&'static str])> {
    const UNFINISHED: &[&str] = &["hookd_deliveries_unfinished"];
    const BY_TYPE: &[&str] = &["hookd_deliveries_event_type"];
    const BY_ID: &[&str] = &["INTEGER PRIMARY KEY", "hookd_deliveries_pkey"];
    // A chunk of ids the job read, resent by id.
    let ids: Vec<String> = (29_000..29_500).map(|i| i.to_string()).collect();
    vec![
        (
            "ordered: has the endpoint a delivery on its way (ingest)",
            "SELECT EXISTS (SELECT 1 FROM hookd_deliveries \
             WHERE endpoint_id = 'ep_b' AND state IN ('pending', 'in_flight') AND held IS NOT NULL)"
                .into(),
            UNFINISHED,
        ),
        (
            "ordered: the next goes after a final result",
            "UPDATE hookd_deliveries SET held = FALSE, next_attempt_at = 0, updated_at = 0 \
             WHERE id = (SELECT MIN(h.id) FROM hookd_deliveries h WHERE h.held AND h.state = 'pending' \
                 AND h.endpoint_id = (SELECT d.endpoint_id FROM hookd_deliveries d \
                     WHERE d.id = 7 AND d.state IN ('succeeded', 'failed'))) \
             AND (SELECT 1 FROM hookd_deliveries o \
                 WHERE o.endpoint_id = hookd_deliveries.endpoint_id \
                 AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL AND o.held = FALSE \
                 LIMIT 1) IS NULL"
                .into(),
            UNFINISHED,
        ),
        (
            "ordered: the next goes after a batch of results",
            "UPDATE hookd_deliveries SET held = FALSE, next_attempt_at = 0, updated_at = 0 \
             WHERE id = (SELECT MIN(h.id) FROM hookd_deliveries h \
                 WHERE h.endpoint_id = 'ep_b' AND h.held AND h.state = 'pending') \
             AND (SELECT 1 FROM hookd_deliveries o WHERE o.endpoint_id = 'ep_b' \
                 AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL AND o.held = FALSE \
                 LIMIT 1) IS NULL"
                .into(),
            UNFINISHED,
        ),
        (
            "ordered: the safety net (promote stranded)",
            "UPDATE hookd_deliveries SET held = FALSE, next_attempt_at = 0, updated_at = 0 \
             WHERE id IN (SELECT (SELECT MIN(h.id) FROM hookd_deliveries h \
                     WHERE h.endpoint_id = e.id AND h.held AND h.state = 'pending') \
                 FROM hookd_endpoints e WHERE e.deleted_at IS NULL \
                 AND (SELECT 1 FROM hookd_deliveries o WHERE o.endpoint_id = e.id \
                     AND o.state IN ('pending', 'in_flight') AND o.held IS NOT NULL \
                     AND o.held = FALSE LIMIT 1) IS NULL)"
                .into(),
            UNFINISHED,
        ),
        (
            "bulk resend: count by event type",
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM hookd_deliveries \
             WHERE TRUE AND event_type = 'y'"
                .into(),
            BY_TYPE,
        ),
        (
            "bulk resend: a chunk by event type",
            "SELECT id FROM hookd_deliveries WHERE id <= 40000 AND id >= 30001 AND event_type = 'y' \
             ORDER BY id DESC LIMIT 500"
                .into(),
            CHUNK,
        ),
        (
            "bulk resend: count by time",
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM hookd_deliveries \
             WHERE TRUE AND created_at >= 20000 AND created_at < 21000"
                .into(),
            &["hookd_deliveries_created"],
        ),
        (
            "bulk resend: a chunk by time",
            "SELECT id FROM hookd_deliveries WHERE id <= 40000 AND id >= 30001 \
             AND created_at >= 20000 AND created_at < 45000 ORDER BY id DESC LIMIT 500"
                .into(),
            CHUNK,
        ),
        (
            "bulk resend: a chunk by event type and time",
            "SELECT id FROM hookd_deliveries WHERE id <= 40000 AND id >= 30001 AND event_type = 'y' \
             AND created_at >= 3 AND created_at < 40001 ORDER BY id DESC LIMIT 500"
                .into(),
            CHUNK,
        ),
        (
            "bulk resend: the chunk resent by id",
            format!(
                "UPDATE hookd_deliveries SET resend_requested = (state = 'in_flight'), held = FALSE, \
                 next_attempt_at = 0, updated_at = 0 WHERE id IN ({})",
                ids.join(", ")
            ),
            BY_ID,
        ),
        (
            // PostgreSQL reads the few failed rows instead when that is cheaper.
            "bulk resend: the chunk resent by id, its state checked again",
            format!(
                "UPDATE hookd_deliveries SET resend_requested = (state = 'in_flight'), held = FALSE, \
                 next_attempt_at = 0, updated_at = 0 WHERE id IN ({}) AND state = 'failed'",
                ids.join(", ")
            ),
            &["INTEGER PRIMARY KEY", "hookd_deliveries_pkey", "hookd_deliveries_state"],
        ),
    ]
}

/// Rows whose cost the history queries must not pay: 50,000 deliveries (2% of type `y`),
/// created at their id, 1% pending, and 200 held deliveries of `ep_a`. `now` is 0.
fn history_seed(backend: Backend) -> String {
    let (series, held) = (series(backend, ROWS), series(backend, 200));
    format!(
        "{SEED}
         UPDATE hookd_endpoints SET ordered = TRUE;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
         SELECT 'e', CASE WHEN i % 200 = 1 THEN 'ep_a' ELSE 'ep_b' END, CASE WHEN i % 50 = 3 THEN 'y' ELSE 'x' END,
                CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 500 = 7 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN i % 100 = 0 THEN i END, CASE WHEN i % 200 = 0 THEN 2 ELSE 0 END, i, i FROM ({series}) s;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held, created_at, updated_at)
         SELECT 'e', 'ep_a', 'x', 'pending', TRUE, {ROWS} + i, {ROWS} + i FROM ({held}) s;"
    )
}

/// The plan `db` chooses for `sql`, one line a step.
pub(crate) async fn explain(db: &TestDb, sql: &str) -> String {
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    }
}

/// Every history query reads its index, sorts nothing and scans no table of deliveries
/// (SQLite may scan the endpoints, a table of a few rows).
async fn check_history(db: &TestDb, when: &str) {
    for (what, sql, indexes) in history_queries() {
        let plan = explain(db, &sql).await;
        println!("{:?} {when}, {what}:\n{plan}\n", db.backend);
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "{what} ({when}): expected one of {indexes:?}:\n{plan}"
        );
        // PostgreSQL may sort a chunk it expects to be small: at most a window's rows.
        let chunk = indexes == CHUNK;
        assert!(
            !plan.contains("TEMP B-TREE") && (chunk || !sorts(&plan)),
            "{what} ({when}) sorts:\n{plan}"
        );
        let scans = plan.lines().filter(|line| {
            scans_history(line)
                || (line.starts_with("SCAN ") && !["SCAN e", "SCAN CONSTANT ROW"].contains(line))
        });
        assert_eq!(
            scans.collect::<Vec<_>>(),
            Vec::<&str>::new(),
            "{what} ({when}) scans a table:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_queries_read_indexes_not_history() {
    let (db, _store) = migrated(Backend::Sqlite).await;
    db.exec(&history_seed(Backend::Sqlite)).await;
    // hookd never runs ANALYZE: the plans must hold without statistics, and with them.
    check_history(&db, "without statistics").await;
    db.exec("ANALYZE").await;
    check_history(&db, "with statistics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_history_queries_read_indexes_not_history() {
    let (db, _store) = migrated(Backend::Postgres).await;
    db.exec(&format!("{}; ANALYZE;", history_seed(Backend::Postgres)))
        .await;
    check_history(&db, "with statistics").await;
}

async fn plans(backend: Backend) -> Vec<(String, String)> {
    let (db, _store) = migrated(backend).await;
    db.exec(&format!(
        "{SEED}
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
         SELECT 'e', CASE WHEN i % 200 = 1 THEN 'ep_a' ELSE 'ep_b' END, 'x',
                CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 500 = 7 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN i % 100 = 0 THEN i END, CASE WHEN i % 200 = 0 THEN 2 ELSE 0 END, i, i FROM ({}) s;
         ANALYZE;",
        series(backend, ROWS)
    ))
    .await;
    let mut out = Vec::new();
    for (what, sql, _) in queries() {
        out.push((what.to_string(), explain(&db, &sql).await));
    }
    out
}

async fn check(backend: Backend) {
    let plans = plans(backend).await;
    for ((what, plan), (_, _, index)) in plans.iter().zip(queries()) {
        println!("{backend:?} {what}:\n{plan}\n");
        assert!(plan.contains(index), "{what}: expected {index}:\n{plan}");
        assert!(
            !plan.contains("TEMP B-TREE") && !sorts(plan),
            "{what} sorts:\n{plan}"
        );
        assert!(
            !plan.lines().any(scans_deliveries) && !plan.contains("SCAN hookd_deliveries\n"),
            "{what} scans the table:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hot_queries_use_their_indexes() {
    check(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hot_queries_use_their_indexes() {
    check(Backend::Postgres).await;
}

/// Statistics gathered while almost nothing was pending (the usual state when a burst
/// arrives after autovacuum's last ANALYZE) must not turn the claim into a read and sort of
/// every pending row: the only index that holds pending rows in any order is the due one
/// (the index of unfinished rows takes only queries that spell out its predicate). Checked
/// as in `queries()` and with the endpoints a claim skips, as the store's claim reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_ignores_stale_statistics() {
    let (db, _store) = migrated(Backend::Postgres).await;
    db.exec(&format!(
        "{SEED}
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, attempts, created_at, updated_at, finished_at)
         SELECT 'e', 'ep_b', 'x', 'succeeded', 1, i, i, i FROM generate_series(1, {ROWS}) AS i;
         ANALYZE;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, created_at, updated_at)
         SELECT 'e', 'ep_a', 'x', 'pending', i, i, i FROM generate_series(1, 20000) AS i;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held, created_at, updated_at)
         SELECT 'e', 'ep_b', 'x', 'pending', TRUE, i, i FROM generate_series(1, 20000) AS i;"
    ))
    .await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (_, claim, index) = &queries()[0];
    let skipping = claim.replace(
        "AND next_attempt_at <= 40000",
        "AND next_attempt_at <= 40000 AND endpoint_id <> ALL('{ep_c}'::text[])",
    );
    assert_ne!(&skipping, claim);
    for claim in [claim, &skipping] {
        let plan: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {claim}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = plan.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
        println!("claim with stale statistics:\n{plan}");
        assert!(plan.contains(index), "expected {index}:\n{plan}");
        assert!(!sorts(&plan), "the claim sorts:\n{plan}");
    }
}

/// 100 tenants with 20 endpoints each and 500 deliveries each (of 50,000: a page is a tenth
/// of a tenant's history), 1 in 4 of them failed, 1 in 5 of type `y`; the tenant looked
/// at is `t7`. A tenant's endpoint list, its
/// delivery log with each filter, and its bulk resend's count and chunks read the partial
/// tenant indexes (or a bounded window of the primary key), as the store spells them
/// (`endpoints_in`, `push_filter`).
fn tenant_seed(backend: Backend) -> String {
    let series = |n: u32| series(backend, n);
    format!(
        "{SEED}
         INSERT INTO hookd_endpoints (id, tenant_id, url, event_types, signature_scheme, secret, created_at, updated_at)
         SELECT 'ep_' || (i - 1), 't' || ((i - 1) % 100), 'https://t.example/', '[\"*\"]', 'standard', 's', 0, 0
         FROM ({}) s;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, tenant_id, event_type, state, created_at, updated_at)
         SELECT 'e', 'ep_' || (i % 2000), 't' || (i % 100), CASE WHEN (i / 100) % 5 = 2 THEN 'y' ELSE 'x' END,
                CASE WHEN (i / 100) % 4 = 1 THEN 'failed' ELSE 'succeeded' END, i, i FROM ({}) s;",
        series(2000),
        series(50_000),
    )
}

fn tenant_queries() -> Vec<(&'static str, String, &'static [&'static str])> {
    const T: &str = "AND tenant_id IS NOT NULL AND tenant_id = 't7'";
    const ANY: &[&str] = &[
        "hookd_deliveries_tenant",
        "hookd_deliveries_tenant_state",
        "hookd_deliveries_tenant_event_type",
    ];
    vec![
        (
            "a tenant's endpoints, a page after a cursor",
            format!(
                "SELECT id FROM hookd_endpoints WHERE deleted_at IS NULL AND id > 'ep_100' {T} \
                 ORDER BY id LIMIT 50"
            ),
            &["hookd_endpoints_tenant"],
        ),
        (
            "a tenant's delivery log, a page after a cursor",
            format!("SELECT id FROM hookd_deliveries WHERE TRUE {T} AND id < 40000 ORDER BY id DESC LIMIT 50"),
            &["hookd_deliveries_tenant"],
        ),
        (
            "a tenant's failed deliveries",
            format!(
                "SELECT id FROM hookd_deliveries WHERE TRUE {T} AND state = 'failed' \
                 AND state IN ('succeeded', 'failed') AND id < 40000 ORDER BY id DESC LIMIT 50"
            ),
            ANY,
        ),
        (
            "a tenant's deliveries of one event type",
            format!(
                "SELECT id FROM hookd_deliveries WHERE TRUE {T} AND event_type = 'y' \
                 AND id < 40000 ORDER BY id DESC LIMIT 50"
            ),
            ANY,
        ),
        (
            "a tenant's deliveries to one endpoint",
            format!(
                "SELECT id FROM hookd_deliveries WHERE TRUE {T} AND endpoint_id = 'ep_7' \
                 AND id < 40000 ORDER BY id DESC LIMIT 50"
            ),
            &["hookd_deliveries_endpoint", "hookd_deliveries_tenant"],
        ),
        (
            "a tenant's bulk resend: the count",
            format!(
                "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM hookd_deliveries \
                 WHERE TRUE {T} AND state = 'failed' AND state IN ('succeeded', 'failed')"
            ),
            &["hookd_deliveries_tenant_state"],
        ),
        (
            "a tenant's bulk resend: a chunk",
            format!(
                "SELECT id FROM hookd_deliveries WHERE id <= 40000 AND id >= 30001 {T} \
                 ORDER BY id DESC LIMIT 500"
            ),
            &[
                "hookd_deliveries_tenant",
                "INTEGER PRIMARY KEY",
                "hookd_deliveries_pkey",
            ],
        ),
    ]
}

/// The rows PostgreSQL estimates a plan's first `Sort` node sorts, if it has one.
fn sorted_rows(plan: &str) -> Option<u64> {
    let line = plan
        .lines()
        .find(|l| l.trim_start().starts_with("->  Sort") || l.starts_with("Sort"))?;
    let rows = line.split("rows=").nth(1)?;
    rows.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn sorted_rows_reads_the_estimate() {
    let plan = "Limit  (cost=230.92..231.04 rows=50 width=8)\n  ->  Sort  (cost=230.92..231.11 rows=76 width=8)\n        Sort Key: id DESC";
    assert_eq!(sorted_rows(plan), Some(76));
    assert_eq!(
        sorted_rows("Index Scan using x  (cost=0.1..2 rows=9 width=8)"),
        None
    );
}

async fn check_tenants(db: &TestDb, when: &str) {
    for (what, sql, indexes) in tenant_queries() {
        let plan = explain(db, &sql).await;
        println!("{:?} {when}, {what}:\n{plan}\n", db.backend);
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "{what} ({when}): expected one of {indexes:?}:\n{plan}"
        );
        // A tenant's endpoints, and one endpoint's deliveries here, are few: a planner may
        // sort those (the index range holds only them); and a bulk resend's chunk, at most
        // a window's rows (as in `check_history`).
        // PostgreSQL may also sort what it estimates to be few rows read through a tenant
        // index (ANALYZE samples, so the estimate moves from run to run): a sort bounded by
        // the index range, not by the table.
        let few = what.contains("endpoint")
            || what.contains("chunk")
            || sorted_rows(&plan).is_some_and(|rows| rows <= 1_000);
        assert!(
            few || (!plan.contains("TEMP B-TREE") && !sorts(&plan)),
            "{what} ({when}) sorts:\n{plan}"
        );
        assert!(
            !plan
                .lines()
                .any(|l| l.contains("Seq Scan") && !l.contains("cost=0.00..0.00"))
                && !plan.lines().any(|l| l.starts_with("SCAN ")),
            "{what} ({when}) scans a table:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tenant_queries_read_tenant_indexes() {
    let (db, _store) = migrated(Backend::Sqlite).await;
    db.exec(&tenant_seed(Backend::Sqlite)).await;
    check_tenants(&db, "without statistics").await;
    db.exec("ANALYZE").await;
    check_tenants(&db, "with statistics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_queries_read_tenant_indexes() {
    let (db, _store) = migrated(Backend::Postgres).await;
    db.exec(&format!("{}; ANALYZE;", tenant_seed(Backend::Postgres)))
        .await;
    check_tenants(&db, "with statistics").await;
}

/// A fair claim with 50,000 first attempts (`attempts` 0) or retries (1) due over 20
/// endpoints of one tenant and one due of another: the list of endpoints with due work is a
/// skip scan of the index of pending first attempts (retries) by endpoint (a seek per
/// endpoint, never a scan of the backlog), and each endpoint's share is read from the same
/// index in due order. As `DUE_ENDPOINTS` in sql.rs and the per-endpoint arms of the claim
/// in sqlite/mod.rs and postgres.rs spell them, `hookd_now_ms()` as 10^12 (SQLite's with
/// its index hint).
fn fair_seed(backend: Backend, attempts: i32) -> String {
    let series = |n: u32| series(backend, n);
    format!(
        "INSERT INTO hookd_endpoints (id, tenant_id, url, event_types, signature_scheme, secret, created_at, updated_at)
         SELECT 'a_' || i, 'a', 'https://a.example/', '[\"*\"]', 'standard', 's', 0, 0 FROM ({}) s;
         INSERT INTO hookd_endpoints (id, tenant_id, url, event_types, signature_scheme, secret, created_at, updated_at)
         VALUES ('b_0', 'b', 'https://b.example/', '[\"*\"]', 'standard', 's', 0, 0);
         INSERT INTO hookd_events (event_id, event_type, payload, created_at) VALUES ('e', 'x', '{{}}', 0);
         INSERT INTO hookd_deliveries (event_id, endpoint_id, tenant_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
         SELECT 'e', 'a_' || (i % 20 + 1), 'a', 'x', CASE WHEN i % 7 = 0 THEN 'succeeded' ELSE 'pending' END,
                i, {attempts}, i, i FROM ({}) s;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, tenant_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
         VALUES ('e', 'b_0', 'b', 'x', 'pending', 60000, {attempts}, 60000, 60000);",
        series(20),
        series(55_000),
    )
}

/// The index of pending first attempts (retries) by endpoint, and its statements' predicate.
fn fair_index(retry: bool) -> (&'static str, &'static str) {
    if retry {
        (
            "hookd_deliveries_due_retry_endpoint",
            "state = 'pending' AND attempts <> 0 AND NOT held",
        )
    } else {
        (
            "hookd_deliveries_due_endpoint",
            "state = 'pending' AND attempts < 1 AND NOT held",
        )
    }
}

fn fair_queries(backend: Backend, retry: bool) -> Vec<(&'static str, String)> {
    let (index, kind) = fair_index(retry);
    let hint = match backend {
        Backend::Sqlite => format!("INDEXED BY {index}"),
        Backend::Postgres => String::new(),
    };
    vec![
        (
            "fair claim: the endpoints with first attempts due",
            format!(
                "WITH RECURSIVE eps(endpoint_id) AS ( \
                 SELECT (SELECT endpoint_id FROM hookd_deliveries {hint} \
                     WHERE {kind} ORDER BY endpoint_id LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT endpoint_id FROM hookd_deliveries {hint} \
                     WHERE {kind} AND endpoint_id > eps.endpoint_id \
                     ORDER BY endpoint_id LIMIT 1) \
                 FROM eps WHERE eps.endpoint_id IS NOT NULL) \
                 SELECT e.id, e.tenant_id FROM eps JOIN hookd_endpoints e ON e.id = eps.endpoint_id \
                 WHERE (SELECT next_attempt_at FROM hookd_deliveries {hint} \
                     WHERE endpoint_id = eps.endpoint_id AND {kind} \
                     AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1) <= 1000000000000"
            ),
        ),
        (
            "fair claim: one endpoint's share, oldest due first",
            format!(
                "SELECT id FROM hookd_deliveries {hint} WHERE endpoint_id = 'a_7' \
                 AND {kind} AND next_attempt_at <= 1000000000000 \
                 ORDER BY next_attempt_at LIMIT 25"
            ),
        ),
    ]
}

async fn check_fair(db: &TestDb, when: &str, retry: bool) {
    let (index, _) = fair_index(retry);
    for (what, sql) in fair_queries(db.backend, retry) {
        let plan = explain(db, &sql).await;
        println!("{:?} {when}, {what}:\n{plan}\n", db.backend);
        let other = "hookd_deliveries_due_endpoint";
        assert!(
            plan.contains(index) && (retry || !plan.contains("due_retry_endpoint")),
            "{what} ({when}): expected {index}:\n{plan}"
        );
        assert!(
            !retry || !plan.contains(&format!("{other} ")),
            "{what} ({when}): read through {other}:\n{plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE") && !sorts(&plan),
            "{what} ({when}) sorts:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on hookd_deliveries")
                && !plan
                    .lines()
                    .any(|l| l.contains("SCAN hookd_deliveries") && !l.contains("INDEX")),
            "{what} ({when}) scans the deliveries:\n{plan}"
        );
    }
    // The skip scan reads the endpoints with due work, not the backlog: 21 of them.
    let (_, sql) = &fair_queries(db.backend, retry)[0];
    let count = format!("SELECT COUNT(*) FROM ({sql}) x");
    let n: i64 = match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(&count)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(&count)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(n, 21, "{when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fair_claim_reads_endpoints_not_the_backlog() {
    for retry in [false, true] {
        let (db, _store) = migrated(Backend::Sqlite).await;
        db.exec(&fair_seed(Backend::Sqlite, i32::from(retry))).await;
        check_fair(&db, "without statistics", retry).await;
        db.exec("ANALYZE").await;
        check_fair(&db, "with statistics", retry).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fair_claim_reads_endpoints_not_the_backlog() {
    for retry in [false, true] {
        let (db, _store) = migrated(Backend::Postgres).await;
        db.exec(&format!(
            "{}; ANALYZE;",
            fair_seed(Backend::Postgres, i32::from(retry))
        ))
        .await;
        check_fair(&db, "with statistics", retry).await;
    }
}

/// A rate-limited endpoint's part of a claim and of the idle wait, on the fair seed (55,000
/// rows pending over 20 endpoints, `a_7` limited): its share within its budget is read
/// through its own indexes of pending rows by endpoint (the outer sort orders at most the
/// two limits' rows), and the idle wait's look at each limited endpoint is a seek per
/// index (the endpoints are a small table, which a planner may scan). As `limited_rows` and
/// `LIMITED_NEXT_DUE` in limited.rs spell them, `hookd_now_ms()` as 10^12.
fn limited_queries(backend: Backend) -> Vec<(&'static str, String, &'static [&'static str])> {
    let hint = |index: &str| match backend {
        Backend::Sqlite => format!("INDEXED BY {index}"),
        Backend::Postgres => String::new(),
    };
    let (first, first_kind) = fair_index(false);
    let (retry, retry_kind) = fair_index(true);
    let (h1, h2) = (hint(first), hint(retry));
    const BOTH: &[&str] = &[
        "hookd_deliveries_due_endpoint",
        "hookd_deliveries_due_retry_endpoint",
    ];
    vec![
        (
            "limited claim: one endpoint's rows within its budget",
            format!(
                "SELECT id FROM (SELECT id, next_attempt_at FROM (SELECT id, next_attempt_at \
                 FROM hookd_deliveries {h1} WHERE endpoint_id = 'a_7' AND {first_kind} \
                 AND next_attempt_at <= 1000000000000 ORDER BY next_attempt_at LIMIT 25) f \
                 UNION ALL SELECT id, next_attempt_at FROM (SELECT id, next_attempt_at \
                 FROM hookd_deliveries {h2} WHERE endpoint_id = 'a_7' AND {retry_kind} \
                 AND next_attempt_at <= 1000000000000 ORDER BY next_attempt_at LIMIT 25) r) x \
                 ORDER BY next_attempt_at LIMIT 20"
            ),
            BOTH,
        ),
        (
            "idle wait: each limited endpoint's first pending rows",
            format!(
                "SELECT e.rate_limit, e.rate_tat - 1000000000000, \
                 (SELECT next_attempt_at FROM hookd_deliveries {h1} WHERE endpoint_id = e.id \
                 AND {first_kind} AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1) \
                 - 1000000000000, \
                 (SELECT next_attempt_at FROM hookd_deliveries {h2} WHERE endpoint_id = e.id \
                 AND {retry_kind} AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1) \
                 - 1000000000000 \
                 FROM hookd_endpoints e WHERE e.rate_limit IS NOT NULL AND e.deleted_at IS NULL"
            ),
            BOTH,
        ),
    ]
}

async fn check_limited(db: &TestDb, when: &str) {
    for (what, sql, indexes) in limited_queries(db.backend) {
        let plan = explain(db, &sql).await;
        println!("{:?} {when}, {what}:\n{plan}\n", db.backend);
        for index in indexes {
            assert!(
                plan.contains(index),
                "{what} ({when}): expected {index}:\n{plan}"
            );
        }
        assert!(
            !plan.contains("Seq Scan on hookd_deliveries")
                && !plan
                    .lines()
                    .any(|l| l.contains("SCAN hookd_deliveries") && !l.contains("INDEX")),
            "{what} ({when}) scans the deliveries:\n{plan}"
        );
        // Only the outer order of the two limited reads may sort.
        let sorts = plan
            .lines()
            .filter(|l| l.contains("Sort  (") || l.contains("TEMP B-TREE"))
            .count();
        assert!(
            sorts <= 1,
            "{what} ({when}) sorts more than the limited rows:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_limited_claim_reads_the_endpoint_not_the_backlog() {
    for retry in [false, true] {
        let (db, _store) = migrated(Backend::Sqlite).await;
        db.exec(&fair_seed(Backend::Sqlite, i32::from(retry))).await;
        db.exec("UPDATE hookd_endpoints SET rate_limit = 20 WHERE id = 'a_7'")
            .await;
        check_limited(&db, "without statistics").await;
        db.exec("ANALYZE").await;
        check_limited(&db, "with statistics").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_limited_claim_reads_the_endpoint_not_the_backlog() {
    for retry in [false, true] {
        let (db, _store) = migrated(Backend::Postgres).await;
        db.exec(&format!(
            "{}; UPDATE hookd_endpoints SET rate_limit = 20 WHERE id = 'a_7'; ANALYZE;",
            fair_seed(Backend::Postgres, i32::from(retry))
        ))
        .await;
        check_limited(&db, "with statistics").await;
    }
}

/// The backlog partition's statistic `column` in `pg_stat_user_tables`.
async fn backlog_stat(db: &TestDb, column: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT {column} FROM pg_stat_user_tables WHERE relname = 'hookd_deliveries_unfinished'"
    ))
    .await
}

/// How much `reads` (a query of one number from PostgreSQL's statistics) grows while `work`
/// runs, `work` updating `updates` rows of the backlog, once the `inserted` rows before it
/// are counted. A session reports its counts together: once the updates show, its reads do.
async fn reads_during(
    db: &TestDb,
    inserted: i64,
    reads: &str,
    updates: i64,
    work: impl std::future::Future<Output = ()>,
) -> i64 {
    hookd_testkit::wait_until(Duration::from_secs(20), "the inserts counted", || async {
        (backlog_stat(db, "n_tup_ins").await >= inserted).then_some(())
    })
    .await;
    let (read_before, updated_before) = (
        db.query_i64(reads).await,
        backlog_stat(db, "n_tup_upd").await,
    );
    work.await;
    hookd_testkit::wait_until(Duration::from_secs(20), "the work counted", || async {
        (backlog_stat(db, "n_tup_upd").await >= updated_before + updates).then_some(())
    })
    .await;
    db.query_i64(reads).await - read_before
}

/// Rows of the backlog read in sequential scans.
const SEQUENTIAL_READS: &str =
    "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'hookd_deliveries_unfinished'";

/// The safety net (`promote_stranded`) runs every few seconds from hookd's start, when the
/// backlog is small; a plan kept from then would read the whole backlog, for every
/// endpoint, once it is large. Counted in PostgreSQL's statistics of the backlog's
/// partition: the run after 100,000 held deliveries arrived reads none of them in a
/// sequential scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_safety_net_plans_for_the_backlog_it_finds() {
    let (db, store) = migrated(Backend::Postgres).await;
    let held = |n: u32| {
        format!(
            "INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held,
                 created_at, updated_at)
             SELECT 'e', 'ep_' || (i % 20 + 1), 'x', 'pending', TRUE, i, i
             FROM generate_series(1, {n}) i;"
        )
    };
    db.exec(&format!(
        "INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, ordered,
             created_at, updated_at)
         SELECT 'ep_' || i, 'https://a.example/', '[\"*\"]', 'standard', 's', TRUE, 0, 0
         FROM generate_series(1, 20) i;
         {} ANALYZE;",
        held(20)
    ))
    .await;
    const HOLD_AGAIN: &str = "UPDATE hookd_deliveries SET held = TRUE WHERE NOT held";
    // Runs on the small backlog, on each connection the pool may hand out.
    for _ in 0..8 {
        assert_eq!(store.promote_stranded().await.unwrap(), 20);
        db.exec(HOLD_AGAIN).await;
    }
    db.exec(&held(100_000)).await;
    let read = reads_during(&db, 100_020, SEQUENTIAL_READS, 20, async {
        assert_eq!(store.promote_stranded().await.unwrap(), 20);
    })
    .await;
    assert!(
        read < 100_000,
        "the run read {read} rows of the backlog in sequential scans"
    );
}

/// The safety net looks only at endpoints with held deliveries. Asked of every endpoint,
/// "its oldest held delivery" was planned as a walk of the backlog's primary key for an
/// endpoint that has none (PostgreSQL expects one soon): the whole backlog read once per
/// idle endpoint, every run (264 ms a run with 20 idle endpoints and 100,000 held).
/// Counted in PostgreSQL's statistics of the backlog's partition: with 100,000 held
/// deliveries of one ordered endpoint, 20,000 due ones of an unordered endpoint and 20
/// endpoints that have nothing, a run reads a few index entries, not the backlog for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_safety_net_reads_only_endpoints_with_held_deliveries() {
    let (db, store) = migrated(Backend::Postgres).await;
    db.exec(
        "INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, ordered,
             created_at, updated_at)
         SELECT 'idle_' || i, 'https://a.example/', '[\"*\"]', 'standard', 's', FALSE, 0, 0
         FROM generate_series(1, 20) i
         UNION ALL SELECT 'busy', 'https://a.example/', '[\"*\"]', 'standard', 's', TRUE, 0, 0
         UNION ALL SELECT 'stranded', 'https://a.example/', '[\"*\"]', 'standard', 's', TRUE, 0, 0
         UNION ALL SELECT 'flow', 'https://a.example/', '[\"*\"]', 'standard', 's', FALSE, 0, 0;
         -- busy: a head waiting for its retry, 100,000 held behind it; stranded: one held;
         -- flow: 20,000 due.
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held,
             next_attempt_at, created_at, updated_at)
         VALUES ('e0', 'busy', 'x', 'pending', FALSE, hookd_now_ms() + 86400000, 0, 0),
                ('e0', 'stranded', 'x', 'pending', TRUE, NULL, 0, 0);
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held,
             created_at, updated_at)
         SELECT 'e' || i, 'busy', 'x', 'pending', TRUE, i, i FROM generate_series(1, 100000) i;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held,
             next_attempt_at, created_at, updated_at)
         SELECT 'f' || i, 'flow', 'x', 'pending', FALSE, 0, i, i FROM generate_series(1, 20000) i;
         ANALYZE;",
    )
    .await;
    const READ: &str = "SELECT (SELECT COALESCE(SUM(idx_tup_read), 0)::bigint
             FROM pg_stat_user_indexes WHERE relname = 'hookd_deliveries_unfinished')
         + (SELECT seq_tup_read FROM pg_stat_user_tables
             WHERE relname = 'hookd_deliveries_unfinished')";
    let read = reads_during(&db, 120_002, READ, 1, async {
        assert_eq!(
            store.promote_stranded().await.unwrap(),
            1,
            "the stranded one"
        );
    })
    .await;
    assert!(
        read < 1_000,
        "the run read {read} entries of the backlog for 2 endpoints with held deliveries"
    );
}

/// A claim first asks which endpoints have due rows, a statement without parameters that a
/// session plans once. Planned while the backlog's partition is empty and vacuumed (an idle
/// hour), that plan read the whole backlog four times in sequential scans at every claim
/// of the burst that followed, until autovacuum next analyzed the partition. Counted in
/// PostgreSQL's statistics: the claim after 20,000 deliveries arrived reads none of them
/// in a sequential scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_plans_for_the_backlog_it_finds() {
    let (db, store) = migrated(Backend::Postgres).await;
    db.exec(
        "INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret,
             created_at, updated_at)
         VALUES ('ep', 'https://a.example/', '[\"*\"]', 'standard', 's', 0, 0);
         INSERT INTO hookd_events (event_id, event_type, payload, created_at)
         VALUES ('e', 'x', '{}', 0);",
    )
    .await;
    db.exec("VACUUM ANALYZE hookd_deliveries").await;
    // Claims on the empty backlog, on each connection the pool may hand out.
    for _ in 0..8 {
        assert!(store.claim(50, 60_000).await.unwrap().is_empty());
    }
    db.exec(
        "INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state,
             next_attempt_at, created_at, updated_at)
         SELECT 'e', 'ep', 'x', 'pending', 0, i, i FROM generate_series(1, 20000) i;",
    )
    .await;
    let read = reads_during(&db, 20_000, SEQUENTIAL_READS, 50, async {
        assert_eq!(store.claim(50, 60_000).await.unwrap().len(), 50);
    })
    .await;
    assert!(
        read < 20_000,
        "the claim read {read} rows of the backlog in sequential scans"
    );
}
