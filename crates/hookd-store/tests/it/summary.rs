//! `Store::endpoint_summaries`: per endpoint, its deliveries of a window by state and its
//! backlog, the same on both stores; and the plans of its statements, which read indexes
//! bounded by the window and the backlog, never the history.

use std::sync::Arc;

use crate::query_plans::{explain, series};
use hookd_store::*;
use hookd_testkit::{Backend, TestDb};

hookd_testkit::each_backend!(
    summaries_count_the_window_by_state_and_the_backlog,
    the_window_ends_where_it_is_asked_to,
);

const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

async fn open(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(backend).await;
    let store = connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (db, store)
}

async fn add_endpoint(store: &Arc<dyn Store>, id: &str) {
    store
        .insert_endpoint(&Endpoint {
            id: id.into(),
            url: format!("http://127.0.0.1:9/{id}"),
            event_types: vec!["*".into()],
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            enabled: true,
            ..Endpoint::default()
        })
        .await
        .expect("insert endpoint");
}

/// One event for `endpoint`, with id `event_id`.
async fn send(store: &Arc<dyn Store>, endpoint: &str, event_id: &str) {
    let enqueued = store
        .enqueue_event(
            &NewEvent {
                event_id: Some(event_id.into()),
                event_type: "purchase".into(),
                payload: "{}".into(),
                endpoint_id: Some(endpoint.into()),
                tenant_id: None,
                traceparent: None,
            },
            &IngestLimits::default(),
        )
        .await
        .expect("enqueue");
    assert_eq!(enqueued.deliveries, 1, "{event_id}");
}

/// Claims every due delivery and gives each the result `next(event_id)` names: `Some`
/// records an attempt with that result, `None` hands it back untried.
async fn settle(store: &Arc<dyn Store>, next: impl Fn(&str) -> Option<Next>) {
    let claimed = store.claim(1000, 60_000).await.expect("claim");
    let mut results = Vec::new();
    let mut untried = Vec::new();
    for c in &claimed {
        match next(&c.event_id) {
            Some(next) => results.push(Completion {
                delivery_id: c.delivery_id,
                lease_token: c.lease_token.clone(),
                endpoint_id: c.endpoint.id.clone(),
                ordered: false,
                record: AttemptRecord {
                    attempt: c.attempt,
                    trigger: c.trigger,
                    started_at: 1,
                    duration_ms: 5,
                    status_code: Some(if next == Next::Succeeded { 200 } else { 500 }),
                    outcome: if next == Next::Succeeded {
                        Outcome::Success
                    } else {
                        Outcome::HttpError
                    },
                    error: None,
                    response_body: None,
                },
                next,
            }),
            None => untried.push(Lease {
                delivery_id: c.delivery_id,
                token: c.lease_token.clone(),
            }),
        }
    }
    let recorded = store.complete(&results).await.expect("complete");
    assert!(recorded.iter().all(|r| *r));
    store
        .release(&untried, Release::Now)
        .await
        .expect("release");
}

/// `(id, deliveries, succeeded, failed, retrying, pending)` of each summary.
fn figures(s: &Summaries) -> Vec<(String, u64, u64, u64, u64, u64)> {
    s.endpoints
        .iter()
        .map(|e| {
            (
                e.endpoint.id.to_string(),
                e.deliveries,
                e.succeeded,
                e.failed,
                e.retrying,
                e.pending,
            )
        })
        .collect()
}

/// Moves the deliveries of these events back in time by `ms`, as if created then.
async fn age(db: &TestDb, events: &[&str], ms: i64) {
    let list = events
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(", ");
    db.exec(&format!(
        "UPDATE hookd_deliveries SET created_at = created_at - {ms} WHERE event_id IN ({list})"
    ))
    .await;
}

async fn summaries_count_the_window_by_state_and_the_backlog(backend: Backend) {
    let (db, store) = open(backend).await;
    for id in ["ep_a", "ep_b", "ep_c", "ep_d", "ep_e"] {
        add_endpoint(&store, id).await;
    }
    // Two days old, created first as the history is: one succeeded, one still pending.
    send(&store, "ep_a", "old-ok").await;
    send(&store, "ep_a", "old-waiting").await;
    for (endpoint, event) in [
        ("ep_a", "a-ok-1"),
        ("ep_a", "a-ok-2"),
        ("ep_a", "a-failed"),
        ("ep_a", "a-retrying"),
        ("ep_b", "b-ok"),
        ("ep_b", "b-untried"),
        ("ep_c", "c-parked"),
        ("ep_d", "d-deleted"),
    ] {
        send(&store, endpoint, event).await;
    }
    settle(&store, |event| match event {
        "old-ok" | "a-ok-1" | "a-ok-2" | "b-ok" => Some(Next::Succeeded),
        "a-failed" => Some(Next::Failed),
        "a-retrying" | "old-waiting" => Some(Next::RetryIn(3_600_000)),
        _ => None,
    })
    .await;
    age(&db, &["old-ok", "old-waiting"], 2 * DAY_MS).await;
    assert!(store
        .disable_endpoint(&"ep_c".into(), "gone: the endpoint answered 410 Gone")
        .await
        .unwrap());
    assert!(store.delete_endpoint(&"ep_d".into()).await.unwrap());

    let now = store.now_ms().await.unwrap();
    let all = store.endpoint_summaries(None, 100, DAY_MS).await.unwrap();
    assert!(
        (now - DAY_MS..=now - DAY_MS + 60_000).contains(&all.since_ms),
        "since {} for now {now}",
        all.since_ms
    );
    assert_eq!(
        figures(&all),
        vec![
            // Old deliveries are outside the window, but one still waits.
            ("ep_a".into(), 4, 2, 1, 1, 2),
            ("ep_b".into(), 2, 1, 0, 0, 1),
            // Parked when hookd disabled it: pending, never tried.
            ("ep_c".into(), 1, 0, 0, 0, 1),
            // ep_d is deleted: gone from the summaries. ep_e has no delivery.
            ("ep_e".into(), 0, 0, 0, 0, 0),
        ]
    );
    let a = &all.endpoints[0];
    assert_eq!(a.success_rate(), Some(2.0 / 3.0));
    assert_eq!(all.endpoints[2].success_rate(), None, "none finished");
    let c = &all.endpoints[2].endpoint;
    assert!(!c.enabled);
    assert_eq!(
        c.disabled_reason.as_deref(),
        Some("gone: the endpoint answered 410 Gone")
    );
    assert!(c.disabled_at.is_some());

    // Pages by endpoint id, as the endpoint list.
    let first = store.endpoint_summaries(None, 2, DAY_MS).await.unwrap();
    let rest = store
        .endpoint_summaries(Some("ep_b"), 2, DAY_MS)
        .await
        .unwrap();
    let after_all = store
        .endpoint_summaries(Some("ep_e"), 2, DAY_MS)
        .await
        .unwrap();
    assert_eq!(
        [figures(&first), figures(&rest)].concat(),
        figures(&all),
        "two pages hold the same figures as one"
    );
    assert_eq!(figures(&after_all), vec![]);

    // Three days hold the old ones too.
    let three = store.endpoint_summaries(None, 1, 3 * DAY_MS).await.unwrap();
    assert_eq!(figures(&three), vec![("ep_a".into(), 6, 3, 1, 2, 2)]);
}

async fn the_window_ends_where_it_is_asked_to(backend: Backend) {
    let (db, store) = open(backend).await;
    add_endpoint(&store, "ep_a").await;
    // Created in the order of their age, as deliveries are.
    for event in ["e-3h", "e-90m", "e-now"] {
        send(&store, "ep_a", event).await;
    }
    settle(&store, |event| {
        Some(if event == "e-90m" {
            Next::Failed
        } else {
            Next::Succeeded
        })
    })
    .await;
    age(&db, &["e-3h"], 3 * HOUR_MS).await;
    age(&db, &["e-90m"], 90 * 60 * 1000).await;
    let counts = |window: i64| {
        let store = store.clone();
        async move {
            let s = store.endpoint_summaries(None, 10, window).await.unwrap();
            let e = &s.endpoints[0];
            (e.deliveries, e.succeeded, e.failed)
        }
    };
    assert_eq!(counts(HOUR_MS).await, (1, 1, 0));
    assert_eq!(counts(2 * HOUR_MS).await, (2, 1, 1));
    assert_eq!(counts(4 * HOUR_MS).await, (3, 2, 1));
    // A store without deliveries in the window, and one without endpoints.
    assert_eq!(counts(1).await.0, 0);
    let (_db2, empty) = open(backend).await;
    let none = empty.endpoint_summaries(None, 10, DAY_MS).await.unwrap();
    assert!(none.endpoints.is_empty());
}

// --- plans ------------------------------------------------------------------------------

const ROWS: i64 = 50_000;

/// 50,000 deliveries created at their id, 1% pending, spread over `ep_a` (0.5%) and `ep_b`;
/// 200 held ones of `ep_a`; endpoints `ep_0` to `ep_9` without any. The window starts at
/// 49,000.
fn seed(backend: Backend) -> String {
    let series = |n: i64| series(backend, n);
    let (s_rows, s_held, s_eps) = (series(ROWS), series(200), series(10));
    format!(
        "INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, created_at, updated_at)
         VALUES ('ep_a', 'https://a.example/', '[\"*\"]', 'standard', 's', 0, 0),
                ('ep_b', 'https://b.example/', '[\"*\"]', 'standard', 's', 0, 0);
         INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, created_at, updated_at)
         SELECT 'ep_' || (i - 1), 'https://c.example/', '[\"*\"]', 'standard', 's', 0, 0 FROM ({s_eps}) s;
         INSERT INTO hookd_events (event_id, event_type, payload, created_at) VALUES ('e', 'x', '{{}}', 0);
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, next_attempt_at, attempts, created_at, updated_at)
         SELECT 'e', CASE WHEN i % 200 = 1 THEN 'ep_a' ELSE 'ep_b' END, 'x',
                CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 500 = 7 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN i % 100 = 0 THEN i END, CASE WHEN i % 200 = 0 THEN 2 ELSE 1 END, i, i FROM ({s_rows}) s;
         INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, held, created_at, updated_at)
         SELECT 'e', 'ep_a', 'x', 'pending', TRUE, {ROWS} + i, {ROWS} + i FROM ({s_held}) s;"
    )
}

/// The store's statements with their parameters written in: the page `ep_0`..`ep_a` (the
/// few deliveries of `ep_a`, none of the many of `ep_b`), the window from 49,000 (first id
/// 49,000).
fn statements(backend: Backend) -> Vec<(&'static str, String, &'static [&'static str])> {
    let fill = |sql: &str| {
        let sql = sql
            .replace("$1", "'ep_0'")
            .replace("$2", "'ep_a'")
            .replace("$3", "49000")
            .replace("$4", "49000")
            .replace("$5", "NULL");
        match backend {
            Backend::Sqlite => sql.replace("hookd_now_ms()", "50000"),
            Backend::Postgres => sql,
        }
    };
    vec![
        (
            "the window's first delivery",
            summary::WINDOW_START
                .replace("$1", "1000")
                .replace("hookd_now_ms()", "50000"),
            &["hookd_deliveries_created"],
        ),
        (
            "the window's deliveries of each endpoint",
            fill(summary::WINDOW_COUNTS),
            // Each endpoint's range from the first id, or (PostgreSQL, when it expects the
            // page to hold most of the window) the window's range of ids.
            &["hookd_deliveries_endpoint", "hookd_deliveries_pkey"],
        ),
        (
            "each endpoint's unfinished deliveries",
            fill(&summary::UNFINISHED.replace("$3", "NULL")),
            &["hookd_deliveries_unfinished"],
        ),
    ]
}

/// Each statement reads its index and never scans or sorts the deliveries. A read of
/// `hookd_deliveries_pkey` is bounded too: it starts at the window's first id.
async fn check_plans(db: &TestDb, when: &str) {
    for (what, sql, indexes) in statements(db.backend) {
        let plan = explain(db, &sql).await;
        println!("{:?} {when}, {what}:\n{plan}\n", db.backend);
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "{what} ({when}): expected one of {indexes:?}:\n{plan}"
        );
        let bad: Vec<&str> = plan
            .lines()
            .map(str::trim)
            .filter(|line| {
                crate::query_plans::scans_history(line)
                    || line.starts_with("SCAN d")
                    || line.starts_with("SCAN c")
                    || line.contains("TEMP B-TREE")
                    || line.starts_with("->  Sort  ")
                    || line.starts_with("Sort  ")
            })
            .collect();
        assert_eq!(bad, Vec::<&str>::new(), "{what} ({when}):\n{plan}");
        if plan.contains("hookd_deliveries_pkey") {
            assert!(plan.contains("(id >= 49000)"), "{what} ({when}):\n{plan}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_summary_reads_the_window_not_the_history() {
    let (db, _store) = open(Backend::Sqlite).await;
    db.exec(&seed(Backend::Sqlite)).await;
    // hookd never runs ANALYZE: the plans must hold without statistics, and with them.
    check_plans(&db, "without statistics").await;
    db.exec("ANALYZE").await;
    check_plans(&db, "with statistics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_summary_reads_the_window_not_the_history() {
    let (db, _store) = crate::query_plans::migrated(Backend::Postgres).await;
    db.exec(&format!("{}; ANALYZE;", seed(Backend::Postgres)))
        .await;
    check_plans(&db, "with statistics").await;
}
