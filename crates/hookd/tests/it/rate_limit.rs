//! A rate-limited endpoint receives its rate, and no more, while an unlimited endpoint on the
//! same hookd runs at full speed; `rate_limit` through the API.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use hookd_testkit::{Backend, Receiver, TestDb};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_set_shown_changed_cleared_and_checked() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let ep = app
        .endpoint(json!({ "url": "http://127.0.0.1:9/", "rate_limit": 20 }))
        .await;
    assert_eq!(ep["rate_limit"], 20.0);
    let path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    assert_eq!(app.get_ok(&path).await["rate_limit"], 20.0);
    let listed = app.get_ok("/v1/endpoints").await;
    assert_eq!(listed["data"][0]["rate_limit"], 20.0);
    let patch = |body| app.call(reqwest::Method::PATCH, &path, Some(body));
    let (status, changed) = patch(json!({ "rate_limit": 0.5 })).await;
    assert_eq!(
        (status, &changed["rate_limit"]),
        (StatusCode::OK, &json!(0.5))
    );
    let (_, kept) = patch(json!({ "description": "x" })).await;
    assert_eq!(kept["rate_limit"], 0.5, "absent: kept");
    let (status, cleared) = patch(json!({ "rate_limit": null })).await;
    assert_eq!(
        (status, &cleared["rate_limit"]),
        (StatusCode::OK, &json!(null))
    );
    let unlimited = app.endpoint(json!({ "url": "http://127.0.0.1:9/" })).await;
    assert_eq!(unlimited["rate_limit"], json!(null));

    for bad in [json!(0), json!(-3), json!("20"), json!(true), json!([20])] {
        let (status, answer) = app
            .post(
                "/v1/endpoints",
                json!({ "url": "http://127.0.0.1:9/", "rate_limit": bad }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        assert!(answer.to_string().contains("rate_limit"), "{bad}: {answer}");
        let (status, answer) = patch(json!({ "rate_limit": bad })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        assert!(answer.to_string().contains("rate_limit"), "{bad}: {answer}");
    }
    assert_eq!(
        app.get_ok(&path).await["rate_limit"],
        json!(null),
        "nothing changed"
    );

    let doc = app.get_ok("/openapi.json").await;
    for schema in ["NewEndpoint", "EndpointPatch", "EndpointView"] {
        let field = &doc["components"]["schemas"][schema]["properties"]["rate_limit"];
        assert!(
            field.to_string().contains("number"),
            "{schema}.rate_limit in the OpenAPI document: {field}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_limited_endpoint_gets_its_rate_beside_a_full_speed_one() {
    a_limited_endpoint_gets_its_rate_beside_a_full_speed_one(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_limited_endpoint_gets_its_rate_beside_a_full_speed_one() {
    a_limited_endpoint_gets_its_rate_beside_a_full_speed_one(Backend::Postgres).await;
}

/// 20/s: a backlog of 260 events, written to the outbox at once, arrives at 20/s ± 10% over the 10 s
/// after the first second's burst; 300 events to an unlimited endpoint, written right after
/// that backlog, are all delivered while the limited endpoint is still working through it
/// (it needs 9 s to reach 200). The poll interval is
/// long (5 s), so the limited endpoint keeps its rate only if the dispatcher wakes when its
/// budget allows the next delivery.
async fn a_limited_endpoint_gets_its_rate_beside_a_full_speed_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db);
    config.poll_interval = Duration::from_secs(5);
    let app = TestApp::spawn_with(config).await;
    let limited = Receiver::ok().await;
    let unlimited = Receiver::ok().await;
    app.endpoint(json!({ "url": limited.url(), "event_types": ["slow"], "rate_limit": 20 }))
        .await;
    app.endpoint(json!({ "url": unlimited.url(), "event_types": ["fast"] }))
        .await;
    // The backlog arrives at once, one producer transaction, then the unlimited endpoint's
    // batch, another.
    let numbers = |n: u32| match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             SELECT i FROM n"
        ),
        Backend::Postgres => format!("SELECT i FROM generate_series(1, {n}) AS i"),
    };
    for (event_type, n) in [("slow", 260), ("fast", 300)] {
        db.exec(&format!(
            "INSERT INTO hookd_outbox (event_id, event_type, payload) \
             SELECT '{event_type}-' || i, '{event_type}', '{{}}' FROM ({}) n",
            numbers(n)
        ))
        .await;
    }
    let fast_sent = Instant::now();
    unlimited.wait_for(300, WAIT).await;
    let fast_took = fast_sent.elapsed();
    let slow_by_then = limited.count();
    // The limited backlog needs 12 s (a burst of 20, then 240 at 20/s): no more than
    // 200 in the first 9 s, whatever the load.
    assert!(
        slow_by_then < 200,
        "the unlimited endpoint finished after {slow_by_then} of the limited one's 260"
    );

    limited.wait_for(221, Duration::from_secs(60)).await;
    let mut at: Vec<Instant> = limited.received().iter().map(|r| r.at).collect();
    at.sort();
    // 200 deliveries after the burst: the 21st to the 221st.
    let window = at[220] - at[20];
    let rate = 200.0 / window.as_secs_f64();
    println!(
        "{backend:?}: limited endpoint {rate:.2}/s over {window:?}; unlimited: 300 in {fast_took:?}"
    );
    assert!(
        (18.0..=22.0).contains(&rate),
        "{rate:.2}/s over {window:?}, not 20/s ± 10%"
    );
    // Nothing waited as a failed attempt: one attempt each.
    let slow_received = limited.count();
    assert!(
        slow_received <= 260,
        "{slow_received} requests for 260 events"
    );
    app.stop().await;
}

/// Two instances on one PostgreSQL database share the limit: together they send a backlog
/// of 260 at 20/s ± 10% over the 10 s after the first second's burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_share_one_limit() {
    let db = TestDb::postgres().await;
    let mut config = test_config(&db);
    config.poll_interval = Duration::from_secs(5);
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let limited = Receiver::ok().await;
    a.endpoint(json!({ "url": limited.url(), "event_types": ["slow"], "rate_limit": 20 }))
        .await;
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) \
         SELECT 'slow-' || i, 'slow', '{}' FROM generate_series(1, 260) AS i",
    )
    .await;
    limited.wait_for(221, Duration::from_secs(60)).await;
    let mut at: Vec<Instant> = limited.received().iter().map(|r| r.at).collect();
    at.sort();
    let window = at[220] - at[20];
    let rate = 200.0 / window.as_secs_f64();
    let sent = |app: &TestApp| app.metrics.attempts.with_label_values(&["success"]).get();
    let (by_a, by_b) = (sent(&a), sent(&b));
    println!("two instances: limited endpoint {rate:.2}/s over {window:?}, sent {by_a} + {by_b}");
    assert!(
        (18.0..=22.0).contains(&rate),
        "{rate:.2}/s over {window:?}, not 20/s ± 10%"
    );
    a.stop().await;
    b.stop().await;
}
