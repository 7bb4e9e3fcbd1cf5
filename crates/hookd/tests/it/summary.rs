//! `GET /v1/endpoints/summary`: per endpoint, its deliveries of the window by state, its
//! success rate, what is pending now, and whether it is disabled and why.

use crate::support;

use reqwest::StatusCode;
use serde_json::{json, Value};

use hookd_testkit::{Receiver, Reply, TestDb};
use support::*;

async fn app() -> (TestDb, TestApp) {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    (db, app)
}

fn by_id<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["endpoint_id"] == id)
        .unwrap_or_else(|| panic!("no summary of {id} in {page}"))
}

#[tokio::test]
async fn the_summary_counts_each_endpoint_over_the_window() {
    let (_db, app) = app().await;
    let receiver = Receiver::start(|_, req| {
        if req.path == "/fail" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let base = format!("http://{}", receiver.addr());
    let ok = app
        .endpoint(json!({ "url": format!("{base}/ok"), "description": "Orders" }))
        .await;
    let failing = app
        .endpoint(json!({ "url": format!("{base}/fail"), "retry_schedule": [] }))
        .await;
    let off = app.endpoint(json!({ "url": format!("{base}/ok") })).await;
    let idle = app.endpoint(json!({ "url": format!("{base}/ok") })).await;
    let id = |e: &Value| e["id"].as_str().unwrap().to_string();
    let (ok, failing, off, idle) = (id(&ok), id(&failing), id(&off), id(&idle));
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{off}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    for i in 0..3 {
        app.event(json!({ "event_type": "purchase", "endpoint_id": ok, "payload": {"i": i} }))
            .await;
    }
    for i in 0..2 {
        app.event(json!({ "event_type": "purchase", "endpoint_id": failing, "payload": {"i": i} }))
            .await;
    }
    // Parked: its endpoint is disabled.
    app.event(json!({ "event_type": "purchase", "endpoint_id": off, "payload": {} }))
        .await;
    hookd_testkit::wait_until(WAIT, "five finished deliveries", || async {
        let done = app.deliveries("state=succeeded").await.len()
            + app.deliveries("state=failed").await.len();
        (done == 5).then_some(())
    })
    .await;

    // Health is recorded just after the results: wait for it too.
    let now = chrono::Utc::now();
    let page = hookd_testkit::wait_until(WAIT, "the endpoints' health", || async {
        let (status, page) = app.get("/v1/endpoints/summary").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        (by_id(&page, &ok)["last_success_at"].is_string()
            && by_id(&page, &failing)["failing_since"].is_string())
        .then_some(page)
    })
    .await;
    assert_eq!(page["window"], "24h");
    assert_eq!(page["next_cursor"], Value::Null);
    let since: chrono::DateTime<chrono::Utc> = page["since"].as_str().unwrap().parse().unwrap();
    let ago = (now - since).num_seconds();
    assert!((24 * 3600 - 60..=24 * 3600 + 60).contains(&ago), "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&ok, &failing, &off, &idle], "oldest first");

    let figures = |s: &Value| {
        (
            s["deliveries"].clone(),
            s["succeeded"].clone(),
            s["failed"].clone(),
            s["retrying"].clone(),
            s["success_rate"].clone(),
            s["pending"].clone(),
        )
    };
    let s = by_id(&page, &ok);
    assert_eq!(
        figures(s),
        (json!(3), json!(3), json!(0), json!(0), json!(1.0), json!(0))
    );
    assert_eq!(
        (&s["description"], &s["enabled"]),
        (&json!("Orders"), &json!(true))
    );
    let s = by_id(&page, &failing);
    assert_eq!(
        figures(s),
        (json!(2), json!(0), json!(2), json!(0), json!(0.0), json!(0))
    );
    let s = by_id(&page, &off);
    assert_eq!(
        figures(s),
        (
            json!(1),
            json!(0),
            json!(0),
            json!(0),
            Value::Null,
            json!(1)
        )
    );
    assert_eq!(s["enabled"], false);
    assert_eq!(s["disabled_reason"], "disabled by an operator");
    assert!(s["disabled_at"].is_string());
    let s = by_id(&page, &idle);
    assert_eq!(
        figures(s),
        (
            json!(0),
            json!(0),
            json!(0),
            json!(0),
            Value::Null,
            json!(0)
        )
    );

    // Pages, as the endpoint list: the same summaries, two at a time.
    let (_, first) = app.get("/v1/endpoints/summary?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(cursor, failing);
    let (_, second) = app
        .get(&format!("/v1/endpoints/summary?limit=2&cursor={cursor}"))
        .await;
    let mut paged = first["data"].as_array().unwrap().clone();
    paged.extend(second["data"].as_array().unwrap().iter().cloned());
    assert_eq!(Value::Array(paged), page["data"]);

    // A window that starts after every delivery: nothing in it, the backlog still there.
    let (status, short) = app.get("/v1/endpoints/summary?window=1ms").await;
    assert_eq!(status, StatusCode::OK, "{short}");
    assert_eq!(short["window"], "1ms");
    assert_eq!(by_id(&short, &ok)["deliveries"], 0);
    assert_eq!(by_id(&short, &off)["pending"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_summary_refuses_bad_windows_and_pages() {
    let (_db, app) = app().await;
    for query in [
        "window=soon",
        "window=5",
        "window=0s",
        "window=31d",
        "limit=0",
        "limit=1001",
    ] {
        let (status, body) = app.get(&format!("/v1/endpoints/summary?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{query}");
    }
    let (_, body) = app.get("/v1/endpoints/summary?window=31d").await;
    assert_eq!(
        body["error"]["message"],
        "window must be more than 0 and at most 30 days"
    );
    let (status, body) = app.get("/v1/endpoints/summary?window=30d").await;
    assert_eq!((status, &body["data"]), (StatusCode::OK, &json!([])));
    // The summary's path does not hide the endpoints': an id is still an id.
    let (status, _) = app.get("/v1/endpoints/ep_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_summary_needs_the_admin_token() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.admin_token = Some("s3cret-token".into());
    let app = TestApp::spawn_with(config).await;
    let (status, body) = app.get("/v1/endpoints/summary").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
    );
    let resp = app
        .http
        .get(format!("{}/v1/endpoints/summary", app.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    app.stop().await;
}
