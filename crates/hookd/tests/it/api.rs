//! The admin API's contract: shapes, status codes and errors. On SQLite, with the PostgreSQL
//! store covered by the conformance suite and the delivery tests.

use crate::support;

use reqwest::StatusCode;
use serde_json::{json, Value};

use hookd_testkit::{Receiver, TestDb};
use support::*;

async fn app() -> (TestDb, TestApp) {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    (db, app)
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an API error: {body}"))
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (_db, app) = app().await;
    for path in ["/v1/endpoints", "/v1/events", "/v1/deliveries/resend"] {
        let resp = app
            .http
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .body("{\"url\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "malformed_json");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"));
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let (_db, app) = app().await;
    for path in [
        "/v1/endpoints/ep_nope",
        "/v1/deliveries/999999",
        "/v1/deliveries/not-a-number",
        "/v1/events/evt_nope",
        "/v1/nothing-here",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    let (status, body) = app.call(reqwest::Method::DELETE, "/v1/events", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (status, _) = app.post("/v1/deliveries/999999/resend", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(reqwest::Method::DELETE, "/v1/endpoints/ep_nope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/endpoints/ep_nope",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            "/v1/events",
            json!({"event_type": "x", "payload": {}, "endpoint_id": "ep_nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_422() {
    let (_db, app) = app().await;
    let cases = [
        json!({}),
        json!({ "url": 42 }),
        json!({ "url": "not a url" }),
        json!({ "url": "ftp://example.com/" }),
        json!({ "url": "https://example.com/", "signature_scheme": "md5" }),
        json!({ "url": "https://example.com/", "retry_schedule": ["1m", "soon"] }),
        json!({ "url": "https://example.com/", "retry_schedule": "1m" }),
        json!({ "url": "https://example.com/", "timeout": "ten seconds" }),
        json!({ "url": "https://example.com/", "timeout": "5m" }),
        json!({ "url": "https://example.com/", "event_types": [] }),
        json!({ "url": "https://example.com/", "event_types": ["pay*"] }),
        json!({ "url": "https://example.com/", "secret": "whsec_c2hvcnQ=" }),
        json!({ "url": "https://example.com/", "bearer_token": "two words" }),
        json!({ "url": "https://example.com/", "headers": { "webhook-id": "x" } }),
        json!({ "url": "https://example.com/", "unknown_field": true }),
    ];
    for body in cases {
        let (status, err) = app.post("/v1/endpoints", body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{body}"
        );
    }
    for body in [
        json!({ "payload": {} }),
        json!({ "event_type": "", "payload": {} }),
        json!({ "event_type": "x" }),
        json!({ "event_type": "x", "payload": {}, "event_id": "has space" }),
        json!({ "event_type": "hookd.endpoint.disabled", "payload": {} }),
    ] {
        let (status, _) = app.post("/v1/events", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    for query in [
        "state=lost",
        "limit=0",
        "limit=abc",
        "cursor=xyz",
        "since=yesterday",
    ] {
        let (status, _) = app.get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
    }
    let (status, _) = app
        .post("/v1/deliveries/resend", json!({ "state": "weird" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.allow_private_targets = false;
    let app = TestApp::spawn_with(config).await;
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://10.1.2.3/",
    ] {
        let (status, err) = app.post("/v1/endpoints", json!({ "url": url })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("non-public"),
            "{err}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn endpoint_lifecycle() {
    let (_db, app) = app().await;
    let receiver = Receiver::ok().await;
    let ep = app
        .endpoint(json!({
            "url": receiver.url(), "event_types": ["purchase"], "bearer_token": "tok",
            "retry_schedule": ["1s", "90s"], "timeout": "2500ms", "headers": { "x-team": "billing" }
        }))
        .await;
    let id = ep["id"].as_str().unwrap();
    assert!(id.starts_with("ep_"));
    assert!(
        ep["secret"].as_str().unwrap().starts_with("whsec_"),
        "generated"
    );
    assert_eq!(ep["signature_scheme"], "standard");
    assert_eq!(ep["retry_schedule"], json!(["1s", "1m 30s"]));
    assert_eq!(ep["timeout"], "2s 500ms");
    assert_eq!(ep["enabled"], true);

    let (status, list) = app.get("/v1/endpoints").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_cursor"], Value::Null);
    assert!(
        list["data"][0].get("secret").is_none(),
        "lists never show secrets"
    );
    assert!(list["data"][0].get("bearer_token").is_none());
    assert_eq!(list["data"][0]["has_bearer_token"], true);

    let (status, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!((status, &shown["secret"]), (StatusCode::OK, &ep["secret"]));

    let (status, patched) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({ "enabled": false, "bearer_token": null, "retry_schedule": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["disabled_reason"], "disabled by an operator");
    assert!(patched["disabled_at"].is_string());
    assert_eq!(patched["has_bearer_token"], false);
    assert_eq!(patched["retry_schedule"], Value::Null);
    assert_eq!(patched["timeout"], "2s 500ms", "absent fields are kept");

    // Disabled: fan-out skips it.
    let accepted = app
        .event(json!({ "event_type": "purchase", "payload": {} }))
        .await;
    assert_eq!(accepted["deliveries"], 0);

    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let accepted = app
        .event(json!({ "event_type": "purchase", "payload": {"x": 1} }))
        .await;
    assert_eq!(accepted["deliveries"], 1);
    receiver.wait_for(1, WAIT).await;
    assert_eq!(receiver.received()[0].header("x-team"), Some("billing"));

    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let log = app.deliveries(&format!("endpoint_id={id}")).await;
    assert_eq!(log.len(), 1, "history stays readable");
    app.stop().await;
}

#[tokio::test]
async fn delivery_log_pages_and_filters() {
    let (_db, app) = app().await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    for i in 0..7 {
        let kind = if i % 2 == 0 { "purchase" } else { "refund" };
        app.event(json!({ "event_type": kind, "event_id": format!("e{i}"), "payload": {"i": i} }))
            .await;
    }
    app.wait_all_finished(7).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/deliveries?limit=3&cursor={c}"),
            None => "/v1/deliveries?limit=3".to_string(),
        };
        let (_, page) = app.get(&q).await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["event_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["e6", "e5", "e4", "e3", "e2", "e1", "e0"],
        "newest first, nothing lost or repeated"
    );
    assert_eq!(app.deliveries("event_type=refund").await.len(), 3);
    assert_eq!(
        app.deliveries("state=succeeded&event_type=purchase")
            .await
            .len(),
        4
    );
    assert_eq!(app.deliveries("state=failed").await.len(), 0);
    assert_eq!(app.deliveries("since=1h").await.len(), 7);
    assert_eq!(app.deliveries("until=2000-01-01T00:00:00Z").await.len(), 0);

    let (_, event) = app.get("/v1/events/e3").await;
    assert_eq!(event["payload"], json!({"i": 3}));
    assert_eq!(event["deliveries"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn admin_token_guards_v1_only() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.admin_token = Some("s3cret-token".into());
    let app = TestApp::spawn_with(config).await;
    let (status, body) = app.get("/v1/endpoints").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let wrong = app
        .http
        .get(format!("{}/v1/endpoints", app.base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app
        .http
        .get(format!("{}/v1/endpoints", app.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = app.get(open).await;
        assert_eq!(status, StatusCode::OK, "{open} needs no token");
    }
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.max_payload_bytes = 1024;
    let app = TestApp::spawn_with(config).await;
    let big = "x".repeat(2048);
    let (status, body) = app
        .post(
            "/v1/events",
            json!({ "event_type": "x", "payload": { "big": big } }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let huge = "x".repeat(200 * 1024);
    let (status, _) = app
        .post(
            "/v1/events",
            json!({ "event_type": "x", "payload": { "big": huge } }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let (_db, app) = app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    assert_eq!(
        app.get("/readyz").await,
        (StatusCode::OK, json!({ "status": "ready" }))
    );
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    app.wait_all_finished(1).await;
    hookd_testkit::wait_until(WAIT, "the result to be counted", || async {
        (app.metrics.finished.with_label_values(&["succeeded"]).get() == 1).then_some(())
    })
    .await;
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "hookd_attempts_total{outcome=\"success\"} 1",
        "hookd_attempts_total{outcome=\"blocked\"} 0",
        "hookd_attempt_duration_seconds_count 1",
        "hookd_deliveries_pending",
        "hookd_oldest_pending_age_seconds",
        "hookd_deliveries_finished_total{state=\"succeeded\"} 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    app.stop().await;
}

/// The OpenAPI document lists exactly the routes that exist, and every documented
/// operation is routed (answers something other than "no such route" or 405).
#[tokio::test]
async fn openapi_matches_the_routes() {
    let (_db, app) = app().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected = vec![
        "GET /v1/endpoints",
        "POST /v1/endpoints",
        "GET /v1/endpoints/{id}",
        "PATCH /v1/endpoints/{id}",
        "DELETE /v1/endpoints/{id}",
        "POST /v1/endpoints/{id}/rotate-secret",
        "GET /v1/endpoints/summary",
        "POST /v1/events",
        "GET /v1/events/{id}",
        "GET /v1/deliveries",
        "POST /v1/deliveries/resend",
        "GET /v1/deliveries/{id}",
        "POST /v1/deliveries/{id}/resend",
        "GET /v1/resend-jobs/{id}",
        "POST /v1/tenants/{tenant_id}/tokens",
        "DELETE /v1/tenants/{tenant_id}/tokens",
        "GET /v1/event-types",
        "POST /v1/event-types",
        "GET /v1/event-types/{name}",
        "PATCH /v1/event-types/{name}",
        "DELETE /v1/event-types/{name}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    ];
    expected.sort();
    assert_eq!(documented, expected);
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "1")
            .replace("{tenant_id}", "t1")
            .replace("{name}", "order.paid");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != reqwest::Method::GET && method != reqwest::Method::DELETE)
            .then(|| json!({}));
        let (status, answer) = app.call(method, &path, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{op}");
        assert_ne!(
            answer["error"]["message"], "no such route",
            "{op} is documented but not routed"
        );
    }
    assert!(doc["components"]["schemas"]["EndpointView"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    app.stop().await;
}

/// `since`/`until` past what a time can be (a five-digit year, a duration ago longer than
/// the calendar, a number past 64 bits) are a 422 naming the field, on the log and on bulk
/// resend alike, never a 500 or a dropped connection.
#[tokio::test]
async fn times_out_of_range_are_422() {
    let (_db, app) = app().await;
    let far = [
        "99999-01-01T00:00:00Z",
        "+99999-01-01T00:00:00Z",
        "300000000years",
        "9223372036854775807ms",
        "9223372036854775808ms",
        "18446744073709551615s",
        "99999999999999999999999years",
    ];
    let mut wrong = Vec::new();
    for field in ["since", "until"] {
        for value in far {
            let query = format!("{field}={}", urlencode(value));
            let get = app.get(&format!("/v1/deliveries?{query}")).await;
            let resend = app
                .post("/v1/deliveries/resend", json!({ field: value }))
                .await;
            for (call, (status, body)) in [("GET /v1/deliveries", get), ("bulk resend", resend)] {
                let named = body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(field));
                if status != StatusCode::UNPROCESSABLE_ENTITY || !named {
                    wrong.push(format!("{call} {field}={value}: {status} {body}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The far ends of what is accepted still work.
    for query in [
        "since=0001-01-01T00:00:00Z",
        "until=9999-12-31T23:59:59Z",
        "since=1000years",
    ] {
        let (status, body) = app.get(&format!("/v1/deliveries?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `POST /v1/events` from many clients at once: the requests share transactions, and each
/// is answered as it would be alone (202 once per event id, 200 for a repeat with the first
/// count, 422 for a bad one, which fails alone). On both stores.
#[tokio::test]
async fn concurrent_events_are_answered_each_as_alone() {
    for db in [TestDb::sqlite(), TestDb::postgres().await] {
        let app = TestApp::spawn(&db).await;
        let receiver = Receiver::ok().await;
        app.endpoint(json!({ "url": receiver.url() })).await;
        let bodies: Vec<Value> = (0..60)
            .map(|i| match i % 3 {
                0 => json!({ "event_type": "x", "event_id": format!("u{i}"), "payload": {} }),
                1 => json!({ "event_type": "x", "event_id": "dup", "payload": {} }),
                _ => json!({ "event_type": "x", "event_id": "has space", "payload": {} }),
            })
            .collect();
        let answers = futures_util::future::join_all(
            bodies.iter().map(|b| app.post("/v1/events", b.clone())),
        )
        .await;
        let mut dup_created = 0;
        for (i, (status, body)) in answers.iter().enumerate() {
            match i % 3 {
                0 => {
                    assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
                    assert_eq!(body["event_id"], format!("u{i}"));
                    assert_eq!(body["deliveries"], 1);
                }
                1 => {
                    assert!(
                        [StatusCode::ACCEPTED, StatusCode::OK].contains(status),
                        "{status} {body}"
                    );
                    dup_created += usize::from(*status == StatusCode::ACCEPTED);
                    assert_eq!(body["event_id"], "dup");
                    assert_eq!(body["deliveries"], 1, "the first answer's count");
                }
                _ => assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}"),
            }
        }
        assert_eq!(dup_created, 1, "one 202 for a repeated event id");
        app.wait_all_finished(21).await;
        app.stop().await;
    }
}
