//! The hot queries read narrow indexes whose cost does not grow with the table: the
//! claim reads the partial index of pending rows in due order, and the delivery log pages
//! by keyset on an index, never sorting. Checked with each database's own EXPLAIN on
//! 50,000 rows (1% pending, 0.2% failed, 0.5% for the endpoint looked at), so the planner
//! has a real choice to make. With a common state or a busy endpoint PostgreSQL may walk
//! the primary key backwards instead: also an index, also no sort, and also bounded.
//!
//! The SQL here has the shape the store runs (see `claim` in sqlite.rs/postgres.rs and
//! `deliveries` in common.rs).

use hookd_testkit::{Backend, TestDb};
use sqlx::Connection;

const ROWS: &str = "50000";

const SEED: &str = "
INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, created_at, updated_at)
VALUES ('ep_a', 'https://a.example/', '[\"*\"]', 'standard', 's', 0, 0),
       ('ep_b', 'https://b.example/', '[\"*\"]', 'standard', 's', 0, 0);
INSERT INTO hookd_events (event_id, event_type, payload, created_at) VALUES ('e', 'x', '{}', 0);";

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

async fn plans(backend: Backend) -> Vec<(String, String)> {
    let db = TestDb::new(backend).await;
    let store = hookd_store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let mut out = Vec::new();
    match backend {
        Backend::Sqlite => {
            db.exec(&format!(
                "{SEED}
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
                 INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
                 SELECT 'e', CASE WHEN i % 200 = 1 THEN 'ep_a' ELSE 'ep_b' END, 'x',
                        CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 500 = 7 THEN 'failed' ELSE 'succeeded' END,
                        CASE WHEN i % 100 = 0 THEN i END, CASE WHEN i % 200 = 0 THEN 2 ELSE 0 END, i, i FROM n;
                 ANALYZE;"
            ))
            .await;
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for (what, sql, _) in queries() {
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                out.push((
                    what.to_string(),
                    rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n"),
                ));
            }
        }
        Backend::Postgres => {
            db.exec(&format!(
                "{SEED}
                 INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
                 SELECT 'e', CASE WHEN i % 200 = 1 THEN 'ep_a' ELSE 'ep_b' END, 'x',
                        CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 500 = 7 THEN 'failed' ELSE 'succeeded' END,
                        CASE WHEN i % 100 = 0 THEN i END, CASE WHEN i % 200 = 0 THEN 2 ELSE 0 END, i, i FROM generate_series(1, {ROWS}) AS i;
                 ANALYZE;"
            ))
            .await;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for (what, sql, _) in queries() {
                let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                out.push((
                    what.to_string(),
                    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n"),
                ));
            }
        }
    }
    out
}

async fn check(backend: Backend) {
    let plans = plans(backend).await;
    for ((what, plan), (_, _, index)) in plans.iter().zip(queries()) {
        println!("{backend:?} {what}:\n{plan}\n");
        assert!(plan.contains(index), "{what}: expected {index}:\n{plan}");
        assert!(
            !plan.contains("TEMP B-TREE") && !plan.contains("Sort"),
            "{what} sorts:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("SCAN hookd_deliveries\n"),
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
/// every pending row: the only index that holds pending rows in any order is the due one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claim_ignores_stale_statistics() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = hookd_store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    db.exec(&format!(
        "{SEED}
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, attempts, created_at, updated_at, finished_at)
         SELECT 'e', 'ep_b', 'x', 'succeeded', 1, i, i, i FROM generate_series(1, {ROWS}) AS i;
         ANALYZE;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, created_at, updated_at)
         SELECT 'e', 'ep_a', 'x', 'pending', i, i, i FROM generate_series(1, 20000) AS i;"
    ))
    .await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (_, claim, index) = &queries()[0];
    let plan: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {claim}"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let plan = plan.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    println!("claim with stale statistics:\n{plan}");
    assert!(plan.contains(index), "expected {index}:\n{plan}");
    assert!(!plan.contains("Sort"), "the claim sorts:\n{plan}");
}
