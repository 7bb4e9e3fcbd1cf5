//! What an on-call engineer relies on: exact counters after a known workload, gauges that
//! follow the backlog, and retention that keeps the tables small while deliveries flow.

use crate::support;

use std::time::Duration;

use serde_json::json;

use hookd_testkit::{wait_until, Backend, Receiver, Reply, TestDb};
use support::*;

hookd_testkit::each_backend!(
    a_known_workload_is_counted_exactly,
    gauges_follow_the_backlog,
    retention_purges_while_deliveries_flow,
);

async fn scrape(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series in a scrape, such as `hookd_attempts_total{outcome="success"}`.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{scrape}"))
        .parse()
        .unwrap()
}

async fn a_known_workload_is_counted_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let ok = Receiver::ok().await;
    let broken = Receiver::start(|_, _| Reply::status(500)).await;
    let slow = Receiver::start(|_, _| Reply::hang(Duration::from_secs(3))).await;
    app.endpoint(json!({ "url": ok.url(), "event_types": ["ok"] }))
        .await;
    app.endpoint(json!({ "url": broken.url(), "event_types": ["broken"], "retry_schedule": [] }))
        .await;
    app.endpoint(json!({ "url": slow.url(), "event_types": ["slow"], "retry_schedule": [], "timeout": "200ms" })).await;
    for (kind, n) in [("ok", 5), ("broken", 3), ("slow", 2)] {
        for _ in 0..n {
            app.event(json!({ "event_type": kind, "payload": {} }))
                .await;
        }
    }
    app.wait_all_finished(10).await;
    // The counters move just after the rows are committed: wait for them, then read all.
    wait_until(WAIT, "the results to be counted", || async {
        let done = app.metrics.finished.with_label_values(&["succeeded"]).get()
            + app.metrics.finished.with_label_values(&["failed"]).get();
        (done == 10).then_some(())
    })
    .await;
    let text = scrape(&app).await;
    let count = |s: &str| value(&text, s);
    assert_eq!(count("hookd_attempts_total{outcome=\"success\"}"), 5.0);
    assert_eq!(count("hookd_attempts_total{outcome=\"http_error\"}"), 3.0);
    assert_eq!(count("hookd_attempts_total{outcome=\"timeout\"}"), 2.0);
    assert_eq!(
        count("hookd_attempts_total{outcome=\"network_error\"}"),
        0.0
    );
    assert_eq!(count("hookd_attempts_total{outcome=\"blocked\"}"), 0.0);
    assert_eq!(count("hookd_attempt_duration_seconds_count"), 10.0);
    assert_eq!(
        count("hookd_deliveries_finished_total{state=\"succeeded\"}"),
        5.0
    );
    assert_eq!(
        count("hookd_deliveries_finished_total{state=\"failed\"}"),
        5.0
    );
    assert_eq!(count("hookd_retries_scheduled_total"), 0.0);
    assert!(count("hookd_store_query_duration_seconds_count{operation=\"claim_due\"}") > 0.0);
    assert_eq!(count("hookd_concurrency_limit"), 512.0);
    assert_eq!(count("hookd_up"), 1.0);
    // Each maintenance job's series exist from the start; the rescuer runs every second.
    assert_eq!(
        count("hookd_maintenance_runs_skipped_total{job=\"retention\"}"),
        0.0
    );
    wait_until(WAIT, "a run of the rescuer to be timed", || async {
        let text = scrape(&app).await;
        let runs = value(
            &text,
            "hookd_maintenance_job_duration_seconds_count{job=\"rescue\"}",
        );
        (runs >= 1.0).then_some(())
    })
    .await;
    // The one SQLite write connection's busy time; PostgreSQL has no such bottleneck.
    let busy = "hookd_store_writer_busy_seconds_total";
    match backend {
        Backend::Sqlite => assert!(count(busy) > 0.0, "{busy} counts the writes"),
        Backend::Postgres => assert!(!text.contains(busy), "{busy} is SQLite's only"),
    }
    app.stop().await;
}

async fn gauges_follow_the_backlog(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db);
    config.concurrency = 1; // one at a time, 500 ms each: a backlog that drains in ~5 s
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::start(|_, _| Reply::hang(Duration::from_millis(500))).await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    assert_eq!(app.metrics.pending.get(), 0);
    for _ in 0..10 {
        app.event(json!({ "event_type": "x", "payload": {} })).await;
    }
    let peak = wait_until(WAIT, "the pending gauge to see the backlog", || async {
        let p = app.metrics.pending.get();
        (p >= 6).then_some(p)
    })
    .await;
    assert!(peak <= 10);
    wait_until(WAIT, "the oldest-pending age to grow", || async {
        (app.metrics.oldest_pending_age.get() > 0.0).then_some(())
    })
    .await;
    wait_until(WAIT, "the gauges to drain to zero", || async {
        (app.metrics.pending.get() == 0 && app.metrics.oldest_pending_age.get() == 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 10);
    app.stop().await;
}

async fn retention_purges_while_deliveries_flow(backend: Backend) {
    let db = TestDb::new(backend).await;
    // What retention has to delete: on SQLite the deliveries of the test, finished one by
    // one; on PostgreSQL, whose history goes a day at a time (today's stays until the day
    // is over), a day of 100 deliveries finished three days ago, dropped while the test's
    // deliveries flow.
    let old_day = match backend {
        Backend::Sqlite => 0,
        Backend::Postgres => {
            hookd_store::connect(&db.url)
                .await
                .unwrap()
                .migrate()
                .await
                .unwrap();
            db.exec(
                "DROP TABLE hookd_deliveries_before; DROP TABLE hookd_attempts_before;
                 SELECT hookd_history_partition(hookd_now_ms() / 86400000 - 3);
                 INSERT INTO hookd_deliveries (id, event_id, endpoint_id, event_type, state,
                     attempts, created_at, updated_at, finished_at)
                 SELECT (hookd_now_ms() / 86400000 - 3) * 4294967296 + g, 'old-' || g, 'ep_old',
                     'x', 'succeeded', 1, 0, 0, hookd_now_ms() - 3 * 86400000
                 FROM generate_series(1, 100) g;",
            )
            .await;
            100
        }
    };
    let mut config = test_config(&db);
    config.retention_schedule = "* * * * * *".into(); // every second
    config.retention_period = Duration::ZERO;
    config.retention_batch = 7; // several batches per run
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    for i in 0..40 {
        app.event(
            json!({ "event_type": "x", "event_id": format!("e-{i}"), "payload": { "i": i } }),
        )
        .await;
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(400)).await; // keep events flowing across runs
        }
    }
    receiver.wait_for(40, WAIT).await;
    let (deleted, left) = match backend {
        Backend::Sqlite => (40, 0),
        Backend::Postgres => (old_day, 40),
    };
    wait_until(
        WAIT,
        "retention to delete every finished delivery it may",
        || async {
            let counted = app
                .metrics
                .retention_deleted
                .with_label_values(&["deliveries"])
                .get();
            (counted == deleted && app.deliveries("").await.len() == left).then_some(())
        },
    )
    .await;
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        40,
        "every event delivered once, none lost to retention"
    );
    assert_eq!(receiver.count(), 40);
    app.stop().await;
}

/// A retention period past what 64 bits of milliseconds hold keeps everything: the cutoff
/// never wraps around into the future, where it would delete every finished delivery.
#[tokio::test]
async fn retention_past_the_calendar_deletes_nothing() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    app.wait_all_finished(1).await;
    for period in [
        Duration::from_millis(i64::MAX as u64 + 1),
        Duration::from_millis(u64::MAX),
        Duration::MAX,
    ] {
        hookd::daemon::maintenance::purge(&*app.store, &app.metrics, period, 100).await;
        assert_eq!(app.deliveries("").await.len(), 1, "{period:?}");
    }
    app.stop().await;
}
