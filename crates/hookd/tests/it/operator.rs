//! The operator's toolkit, end to end: secret rotation without losing an event, endpoints
//! that protect themselves (410 Gone, failing too long, Retry-After), ordered endpoints.

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use hookd_testkit::{wait_until, Backend, Received, Receiver, Reply, TestDb};
use support::*;

hookd_testkit::each_backend!(
    rotation_keeps_both_keys_valid_through_the_grace_period,
    gone_disables_the_endpoint_and_enabling_resumes,
    failing_too_long_disables_the_endpoint,
    retry_after_is_honoured,
    ordered_endpoint_delivers_in_order_without_slowing_others,
);

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Whether any of the request's signatures verifies with `secret`.
fn verifies_with(r: &Received, secret: &str) -> bool {
    hookd_verify::verify_standard(secret, &r.headers, &r.body).is_ok()
}

async fn patch(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, ep) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ep}");
    ep
}

async fn rotation_keeps_both_keys_valid_through_the_grace_period(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::ok().await;
    let ep = app
        .endpoint(json!({ "url": receiver.url(), "secret": OLD }))
        .await;
    let id = ep["id"].as_str().unwrap();
    app.event(json!({ "event_type": "x", "payload": { "n": 0 } }))
        .await;
    receiver.wait_for(1, WAIT).await;

    let (status, rotated) = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            json!({ "grace": "1h" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, OLD);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let (status, err) = app
        .post(&format!("/v1/endpoints/{id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    for n in 1..=5 {
        app.event(json!({ "event_type": "x", "payload": { "n": n } }))
            .await;
    }
    let got = receiver.wait_for(6, WAIT).await;
    assert!(verifies_with(&got[0], OLD) && !verifies_with(&got[0], &new));
    for r in &got[1..] {
        // A receiver still on the old key and one already on the new key both accept.
        assert!(
            verifies_with(r, OLD),
            "old key rejected during the grace period"
        );
        assert!(verifies_with(r, &new), "new key rejected");
    }

    // A rotation with no grace retires the old key at once.
    let mut store_ep = app.store.endpoint(&id.into()).await.unwrap().unwrap();
    store_ep.previous_secret_expires_at = Some(0); // the grace period is over
    app.store.update_endpoint(&store_ep).await.unwrap();
    let (status, again) = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            json!({ "grace": "0s", "secret": OLD }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["previous_secret_expires_at"], Value::Null);
    app.event(json!({ "event_type": "x", "payload": { "n": 6 } }))
        .await;
    let got = receiver.wait_for(7, WAIT).await;
    assert!(verifies_with(&got[6], OLD) && !verifies_with(&got[6], &new));
    assert_eq!(
        got[6]
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    app.stop().await;
}

async fn gone_disables_the_endpoint_and_enabling_resumes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::start(|_, _| Reply::status(410)).await;
    let ep = app
        .endpoint(json!({ "url": receiver.url(), "retry_schedule": ["10ms", "10ms", "10ms"] }))
        .await;
    let id = ep["id"].as_str().unwrap();
    app.event(json!({ "event_type": "x", "event_id": "gone-1", "payload": {} }))
        .await;
    let first = app.deliveries("event_id=gone-1").await.remove(0);
    let first = app.wait_for_state(support::id(&first), "failed").await;
    assert_eq!(first["attempts"], 1, "no retry after 410");
    let (_, shown) = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(shown["enabled"], false);
    assert!(
        shown["disabled_reason"].as_str().unwrap().contains("410"),
        "{shown}"
    );
    assert_eq!(
        app.metrics
            .endpoint_disables
            .with_label_values(&["gone"])
            .get(),
        1
    );

    // Targeted at the disabled endpoint: kept, parked.
    app.event(json!({ "event_type": "x", "event_id": "gone-2", "payload": {}, "endpoint_id": id }))
        .await;
    let parked = app.deliveries("event_id=gone-2").await.remove(0);
    assert_eq!(
        (&parked["state"], &parked["next_attempt_at"]),
        (&json!("pending"), &Value::Null)
    );

    receiver.set_script(|_, _| Reply::ok());
    let back = patch(&app, id, json!({ "enabled": true })).await;
    assert_eq!(back["disabled_reason"], Value::Null);
    app.wait_for_state(support::id(&parked), "succeeded").await;
    assert_eq!(receiver.count(), 2);
    app.stop().await;
}

async fn failing_too_long_disables_the_endpoint(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db);
    config.disable_after = Duration::from_millis(500);
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    let ep = app
        .endpoint(json!({ "url": receiver.url(), "retry_schedule": vec!["100ms"; 30] }))
        .await;
    let id = ep["id"].as_str().unwrap();
    app.event(json!({ "event_type": "x", "event_id": "f-1", "payload": {} }))
        .await;
    let shown = wait_until(WAIT, "the failing endpoint to be disabled", || async {
        let (_, e) = app.get(&format!("/v1/endpoints/{id}")).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .starts_with("failing"),
        "{shown}"
    );
    assert!(shown["failing_since"].is_string());
    // Counted just after the disable is committed.
    wait_until(WAIT, "the disable to be counted", || async {
        (app.metrics
            .endpoint_disables
            .with_label_values(&["failing"])
            .get()
            == 1)
            .then_some(())
    })
    .await;
    // Its delivery waits, parked, and no more attempts are made.
    let d = wait_until(WAIT, "the delivery to be parked", || async {
        let d = app.deliveries("event_id=f-1").await.remove(0);
        (d["state"] == "pending" && d["next_attempt_at"].is_null()).then_some(d)
    })
    .await;
    let attempts = receiver.count();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.count(), attempts, "parked: no attempts");

    receiver.set_script(|_, _| Reply::ok());
    let back = patch(&app, id, json!({ "enabled": true })).await;
    assert_eq!(back["failing_since"], Value::Null);
    app.wait_for_state(support::id(&d), "succeeded").await;
    app.stop().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            Reply::status(503).with_header("retry-after", "1")
        } else {
            Reply::ok()
        }
    })
    .await;
    app.endpoint(json!({ "url": receiver.url(), "retry_schedule": ["20ms"] }))
        .await;
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    let got = receiver.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, before the receiver's Retry-After"
    );
    app.stop().await;
}

async fn ordered_endpoint_delivers_in_order_without_slowing_others(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    // The ordered receiver fails each event's first attempt; it records what it accepted.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let tries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (acc, tr) = (accepted.clone(), tries.clone());
    let ordered = Receiver::start(move |_, r| {
        let id = r.header("webhook-id").unwrap().to_string();
        let mut tries = tr.lock().unwrap();
        let n = tries.entry(id.clone()).or_default();
        *n += 1;
        if *n == 1 {
            Reply::status(500)
        } else {
            acc.lock().unwrap().push(id);
            Reply::ok()
        }
    })
    .await;
    let unordered = Receiver::ok().await;
    app.endpoint(
        json!({ "url": ordered.url(), "ordered": true, "retry_schedule": ["30ms", "30ms"] }),
    )
    .await;
    app.endpoint(json!({ "url": unordered.url() })).await;
    let ids: Vec<String> = (0..8).map(|i| format!("o-{i}")).collect();
    for id in &ids {
        app.event(json!({ "event_type": "x", "event_id": id, "payload": {} }))
            .await;
    }
    // The unordered endpoint gets everything while the ordered one works through retries.
    unordered.wait_for(8, WAIT).await;
    assert!(
        accepted.lock().unwrap().len() < 8,
        "the unordered endpoint did not wait for the ordered one"
    );
    ordered.wait_for(16, WAIT).await;
    assert_eq!(
        *accepted.lock().unwrap(),
        ids,
        "accepted strictly in insertion order"
    );
    // Requests, too, never ran ahead: each id's attempts come before the next id's.
    let seen: Vec<String> = ordered
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    let mut firsts = seen.clone();
    firsts.dedup();
    assert_eq!(firsts, ids, "requests interleaved: {seen:?}");
    app.stop().await;
}
