//! Operational webhooks end to end: hookd's own `hookd.*` events, emitted when an endpoint
//! fails, gives up a delivery, is disabled by `410 Gone` and enabled again, reach a real
//! receiver subscribed to them, signed like any other event; a tenant's subscriber hears of
//! its own endpoints only, and an endpoint subscribed to `*` hears of none.

use crate::support;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use hookd_testkit::{wait_until, Backend, Received, Receiver, Reply, TestDb};
use support::*;

hookd_testkit::each_backend!(operational_events_reach_their_subscribers);

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Each request's (type, endpoint_id), after checking its signature and headers.
fn told(received: &[Received]) -> BTreeSet<(String, String)> {
    received
        .iter()
        .map(|r| {
            hookd_verify::verify_standard(SECRET, &r.headers, &r.body)
                .unwrap_or_else(|e| panic!("signature of {}: {e}", r.body_str()));
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(
                r.webhook_id().unwrap().starts_with("evt_"),
                "{:?}",
                r.headers
            );
            assert!(body["occurred_at"].is_string(), "{body}");
            (
                body["type"].as_str().unwrap().to_string(),
                body["endpoint_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn operational_events_reach_their_subscribers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let ops = Receiver::ok().await;
    let acme_ops = Receiver::ok().await;
    let everything = Receiver::ok().await;
    let failing = Receiver::start(|_, _| Reply::status(503)).await;
    let gone = Receiver::start(|_, _| Reply::status(410)).await;
    let endpoint = |url: String, types: Value, tenant: Option<&str>| {
        json!({ "url": url, "event_types": types, "secret": SECRET, "tenant_id": tenant,
                "retry_schedule": ["10ms"] })
    };
    app.endpoint(endpoint(ops.url(), json!(["hookd.*"]), None))
        .await;
    app.endpoint(endpoint(everything.url(), json!(["*"]), None))
        .await;
    app.endpoint(endpoint(acme_ops.url(), json!(["hookd.*"]), Some("acme")))
        .await;
    let acme_ep = app
        .endpoint(endpoint(failing.url(), json!(["purchase"]), Some("acme")))
        .await;
    let gone_ep = app
        .endpoint(endpoint(gone.url(), json!(["refund"]), None))
        .await;
    let (acme_id, gone_id) = (
        acme_ep["id"].as_str().unwrap(),
        gone_ep["id"].as_str().unwrap(),
    );

    app.event(
        json!({ "event_type": "purchase", "event_id": "p-1", "tenant_id": "acme",
                      "payload": {} }),
    )
    .await;
    app.event(json!({ "event_type": "refund", "event_id": "r-1", "payload": {} }))
        .await;
    // The acme endpoint fails twice (its ladder) and gives up; the other answers 410 once,
    // gives up and is disabled.
    let want = set(&[
        ("hookd.endpoint.failing", acme_id),
        ("hookd.delivery.exhausted", acme_id),
        ("hookd.endpoint.failing", gone_id),
        ("hookd.delivery.exhausted", gone_id),
        ("hookd.endpoint.disabled", gone_id),
    ]);
    wait_until(
        WAIT,
        "the provider's subscriber to hear of both",
        || async { (told(&ops.received()) == want).then_some(()) },
    )
    .await;
    let exhausted = ops
        .received()
        .into_iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .find(|b| b["type"] == "hookd.delivery.exhausted" && b["endpoint_id"] == acme_id)
        .unwrap();
    assert_eq!(exhausted["event_id"], "p-1");
    assert_eq!(exhausted["event_type"], "purchase");
    assert_eq!(exhausted["tenant_id"], "acme");
    assert_eq!(exhausted["attempts"], 2);
    assert_eq!(exhausted["last_status_code"], 503);
    let delivery = app.deliveries("event_id=p-1").await.remove(0);
    assert_eq!(exhausted["delivery_id"], delivery["id"]);

    // Enabled again through the API: told too.
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{gone_id}"),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut want = want;
    want.insert(("hookd.endpoint.enabled".into(), gone_id.into()));
    wait_until(WAIT, "the enabling to be told", || async {
        (told(&ops.received()) == want).then_some(())
    })
    .await;
    let disabled = ops
        .received()
        .into_iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .find(|b| b["type"] == "hookd.endpoint.disabled")
        .unwrap();
    assert!(
        disabled["reason"].as_str().unwrap().contains("410"),
        "{disabled}"
    );

    // The tenant's subscriber heard of its own endpoint only.
    let acme_want = set(&[
        ("hookd.endpoint.failing", acme_id),
        ("hookd.delivery.exhausted", acme_id),
    ]);
    wait_until(
        WAIT,
        "acme's subscriber to hear of its endpoint",
        || async { (told(&acme_ops.received()) == acme_want).then_some(()) },
    )
    .await;
    // Each event once: six to the provider, two to acme.
    assert_eq!(ops.count(), 6);
    assert_eq!(acme_ops.count(), 2);
    // `*` matched the business events only.
    let business: Vec<String> = everything
        .received()
        .iter()
        .map(|r| r.webhook_id().unwrap().to_string())
        .collect();
    assert_eq!(business, ["r-1"]);
    app.stop().await;
}
