//! The event-type catalog over the API, on SQLite and PostgreSQL: its routes and who may
//! call them, and payloads checked against their type's JSON Schema: a `422` from
//! `POST /v1/events`, a failed delivery with the reason for an outbox row.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use hookd_store::EventType;
use hookd_testkit::{wait_until, Backend, Receiver, TestDb};
use support::*;

hookd_testkit::each_backend!(
    the_catalog_is_kept_over_the_api,
    tenants_read_the_catalog_and_cannot_change_it,
    payloads_are_checked_against_their_type_schema,
    a_change_made_elsewhere_applies_within_seconds,
);

fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0}
        }
    })
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

async fn the_catalog_is_kept_over_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (status, created) = app
        .post(
            "/v1/event-types",
            json!({"name": "order.paid", "description": "An order was paid", "schema": order_schema()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "order.paid");
    assert_eq!(created["schema"], order_schema());
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, _) = app
        .post("/v1/event-types", json!({"name": "order.created"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Refusals: a taken name, a bad name, a schema that is no schema, unknown fields.
    let (status, v) = app
        .post("/v1/event-types", json!({"name": "order.paid"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(message(&v).contains("order.paid"), "{v}");
    for (body, words) in [
        (json!({"name": "has space"}), "name"),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "schema": {"type": "no-such-type"}}),
            "not a valid JSON Schema",
        ),
        (
            json!({"name": "x", "schema": [1]}),
            "not a valid JSON Schema",
        ),
        (json!({"name": "x", "colour": "red"}), "colour"),
    ] {
        let (status, v) = app.post("/v1/event-types", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(message(&v).contains(words), "{body}: {v}");
    }
    let (_, page) = app.get("/v1/event-types").await;
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["order.created", "order.paid"], "{page}");
    let (_, page) = app.get("/v1/event-types?limit=1").await;
    assert_eq!(page["next_cursor"], "order.created", "{page}");
    let (_, page) = app
        .get("/v1/event-types?limit=1&cursor=order.created")
        .await;
    assert_eq!(page["data"][0]["name"], "order.paid", "{page}");

    // PATCH: a field given changes, one absent stays, null clears.
    let (status, v) = app
        .call(
            Method::PATCH,
            "/v1/event-types/order.paid",
            Some(json!({"description": "Paid in full"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["description"].clone(), v["schema"].clone()),
        (json!("Paid in full"), order_schema())
    );
    let (status, v) = app
        .call(
            Method::PATCH,
            "/v1/event-types/order.paid",
            Some(json!({"schema": {"minimum": "zero"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = app
        .call(
            Method::PATCH,
            "/v1/event-types/order.paid",
            Some(json!({"schema": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["schema"], Value::Null);
    assert_eq!(
        app.get_ok("/v1/event-types/order.paid").await["description"],
        "Paid in full"
    );

    // Unknown names.
    let (status, _) = app.get("/v1/event-types/order.refunded").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::PATCH,
            "/v1/event-types/order.refunded",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::DELETE, "/v1/event-types/order.paid", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(Method::DELETE, "/v1/event-types/order.paid", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn tenants_read_the_catalog_and_cannot_change_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (status, _) = app
        .post(
            "/v1/event-types",
            json!({"name": "order.paid", "description": "An order was paid"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, t) = app
        .post("/v1/tenants/acme/tokens", json!({"expires_in": "1h"}))
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let call = |method: Method, path: &'static str, body: Option<Value>| {
        let (app, token) = (&app, &token);
        async move {
            let mut req = app
                .http
                .request(method, format!("{}{path}", app.base))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            req.send().await.unwrap().status()
        }
    };
    assert_eq!(
        call(Method::GET, "/v1/event-types", None).await,
        StatusCode::OK
    );
    assert_eq!(
        call(Method::GET, "/v1/event-types/order.paid", None).await,
        StatusCode::OK
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/event-types",
            Some(json!({"name": "mine"})),
        ),
        (
            Method::PATCH,
            "/v1/event-types/order.paid",
            Some(json!({"description": "taken over"})),
        ),
        (Method::DELETE, "/v1/event-types/order.paid", None),
    ] {
        assert_eq!(
            call(method.clone(), path, body).await,
            StatusCode::FORBIDDEN,
            "{method} {path}"
        );
    }
    let kept = app.get_ok("/v1/event-types/order.paid").await;
    assert_eq!(kept["description"], "An order was paid");
    let (_, page) = app.get("/v1/event-types").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    app.stop().await;
}

async fn payloads_are_checked_against_their_type_schema(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    let (status, _) = app
        .post(
            "/v1/event-types",
            json!({"name": "order.paid", "schema": order_schema()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The API: a 422 naming the first failing path, and nothing stored.
    let (status, v) = app
        .post(
            "/v1/events",
            json!({"event_id": "api-bad", "event_type": "order.paid", "payload": {"order_id": "o-1", "amount": "9900"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(message(&v).contains("at /amount"), "{v}");
    assert!(
        !message(&v).contains("9900"),
        "the value is not quoted: {v}"
    );
    let (status, _) = app.get("/v1/events/api-bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    app.event(json!({"event_id": "api-good", "event_type": "order.paid", "payload": {"order_id": "o-1", "amount": 9900}}))
        .await;
    // A type without a schema, and a type not in the catalog, are not checked.
    app.event(json!({"event_id": "api-other", "event_type": "order.created", "payload": [1]}))
        .await;

    // The outbox: the row that fails ends failed with the reason, unsent.
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES \
         ('ob-bad', 'order.paid', '{\"order_id\":\"o-2\"}'), \
         ('ob-good', 'order.paid', '{\"order_id\":\"o-3\",\"amount\":1}')",
    )
    .await;
    let all = app.wait_all_finished(4).await;
    let state = |id: &str| {
        let d = all.iter().find(|d| d["event_id"] == id).unwrap();
        (d["state"].as_str().unwrap().to_string(), d.clone())
    };
    for id in ["api-good", "api-other", "ob-good"] {
        assert_eq!(state(id).0, "succeeded", "{id}");
    }
    let (st, bad) = state("ob-bad");
    assert_eq!(st, "failed", "{bad}");
    assert_eq!(bad["attempts"], 0, "{bad}");
    assert_eq!(
        bad["last_error"],
        "payload does not match the schema of event type \"order.paid\" at the top: \"amount\" is a required property",
        "{bad}"
    );
    let event = app.get_ok("/v1/events/ob-bad").await;
    assert_eq!(event["payload_error"], bad["last_error"], "{event}");
    assert_eq!(receiver.count(), 3, "the failing row was not sent");

    // Without its schema the type is not checked any more, at once.
    let (status, _) = app
        .call(
            Method::PATCH,
            "/v1/event-types/order.paid",
            Some(json!({"schema": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.event(
        json!({"event_id": "api-later", "event_type": "order.paid", "payload": {"amount": "9900"}}),
    )
    .await;
    app.stop().await;
}

/// Another instance sharing the database changes the catalog (here: the store, behind
/// this instance's back): the change applies here within the refresh period.
async fn a_change_made_elsewhere_applies_within_seconds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    app.store
        .insert_event_type(&EventType {
            name: "order.paid".into(),
            schema: Some(order_schema().to_string()),
            ..EventType::default()
        })
        .await
        .unwrap();
    wait_until(WAIT, "the new schema to apply", || async {
        let (status, v) = app
            .post(
                "/v1/events",
                json!({"event_type": "order.paid", "payload": {"amount": 1}}),
            )
            .await;
        (status == StatusCode::UNPROCESSABLE_ENTITY).then_some(v)
    })
    .await;
    app.stop().await;
}
