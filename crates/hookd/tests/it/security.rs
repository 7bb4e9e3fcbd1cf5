//! Guards against hostile input: the SSRF guard at registration and again at send time
//! (after DNS, so a name that starts resolving to a private address is still caught),
//! `https_only`, the allow-list, and request bodies built to hurt.

use crate::support;

use reqwest::StatusCode;
use serde_json::{json, Value};

use hookd_store::{Endpoint, NewEvent};
use hookd_testkit::{wait_until, Receiver, TestDb};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_blocked_at_send_time() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.allow_private_targets = false;
    config.retry_schedule = Vec::new();
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    // Registered behind the API's back, as if DNS had said "public" at registration and
    // changed since: a literal loopback address, and a name that resolves to loopback.
    let port = receiver.addr().port();
    for (id, url) in [
        ("ep_literal", format!("http://127.0.0.1:{port}/hook")),
        ("ep_name", format!("http://localhost:{port}/hook")),
    ] {
        let ep = Endpoint {
            id: id.into(),
            url,
            event_types: vec!["*".into()],
            secret: signing_secret(),
            enabled: true,
            ..Default::default()
        };
        app.store.insert_endpoint(&ep).await.unwrap();
    }
    let event = NewEvent {
        event_id: Some("e-ssrf".into()),
        event_type: "x".into(),
        payload: "{}".into(),
        endpoint_id: None,
        tenant_id: None,
        traceparent: None,
    };
    app.store
        .enqueue_event(&event, &Default::default())
        .await
        .unwrap();
    let all = app.wait_all_finished(2).await;
    for d in &all {
        assert_eq!(d["state"], "failed", "{d}");
        let (_, detail) = app.get(&format!("/v1/deliveries/{}", id(d))).await;
        assert_eq!(detail["attempt_log"][0]["outcome"], "blocked", "{detail}");
        assert!(detail["last_error"]
            .as_str()
            .unwrap()
            .contains("not a public address"));
    }
    assert_eq!(receiver.count(), 0, "nothing reached the private address");
    assert_eq!(
        app.metrics.attempts.with_label_values(&["blocked"]).get(),
        2
    );
    app.stop().await;
}

fn signing_secret() -> String {
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_listed_ranges_only() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.allow_private_targets = false;
    config.allow_targets = hookd::daemon::ssrf::parse_ranges("127.0.0.0/8").unwrap();
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    let (status, _) = app
        .post("/v1/endpoints", json!({ "url": "http://10.0.0.1/hook" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    receiver.wait_for(1, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_refuses_plain_http() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.https_only = true;
    config.retry_schedule = Vec::new();
    let app = TestApp::spawn_with(config).await;
    let (status, err) = app
        .post("/v1/endpoints", json!({ "url": "http://example.com/hook" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["error"]["message"].as_str().unwrap().contains("https"));
    // One stored before the option was turned on is refused at send time.
    let ep = Endpoint {
        id: "ep_http".into(),
        url: "http://127.0.0.1:9/".into(),
        event_types: vec!["*".into()],
        secret: signing_secret(),
        enabled: true,
        ..Default::default()
    };
    app.store.insert_endpoint(&ep).await.unwrap();
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    let d = app.wait_all_finished(1).await.remove(0);
    let (_, detail) = app.get(&format!("/v1/deliveries/{}", id(&d))).await;
    assert_eq!(detail["attempt_log"][0]["outcome"], "blocked");
    app.stop().await;
}

#[tokio::test]
async fn bodies_built_to_hurt_are_refused_cleanly() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let send = |body: String| {
        let (http, url) = (app.http.clone(), format!("{}/v1/events", app.base));
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    // Nested far past any sane payload: refused as malformed, the server unharmed.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, err) = send(format!("{{\"event_type\":\"x\",\"payload\":{deep}}}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nested 100000 levels"),
        "{err}"
    );
    // Not UTF-8, a lone surrogate, a NUL, trailing garbage.
    for body in [
        "\u{0}",
        "{\"event_type\":\"x\",\"payload\":{}} trailing",
        "{\"event_type\":\"\\ud800\",\"payload\":{}}",
    ] {
        let (status, _) = send(body.to_string()).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body:?}: {status}"
        );
    }
    let (status, _) = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Still serving.
    wait_until(WAIT, "the API to answer", || async {
        (app.get("/healthz").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest() {
    use sqlx::Connection;
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.secret_key = Some("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=".into());
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    let ep = app
        .endpoint(json!({ "url": receiver.url(), "secret": signing_secret(), "bearer_token": "tok-at-rest-123" }))
        .await;
    assert_eq!(
        ep["secret"],
        signing_secret().as_str(),
        "the API shows the plaintext"
    );
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer tok-at-rest-123")
    );

    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let (secret, token): (String, String) =
        sqlx::query_as("SELECT secret, bearer_token FROM hookd_endpoints")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    for stored in [&secret, &token] {
        assert!(stored.starts_with("sealed:v1:"), "{stored}");
        assert!(
            !stored.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                && !stored.contains("tok-at-rest-123")
        );
    }
    app.stop().await;

    // Without the key the secrets cannot be read: the endpoint is unreadable, says why,
    // and holds nothing of them.
    let keyless = hookd_store::connect(&db.url).await.unwrap();
    let read = keyless
        .endpoint(&ep["id"].as_str().unwrap().into())
        .await
        .unwrap()
        .unwrap();
    let why = read.unreadable.expect("unreadable without the key");
    assert!(why.contains("HOOKD_SECRET_KEY"), "{why}");
    assert_eq!(read.secret, "");
    assert_eq!(
        read.bearer_token.as_deref(),
        Some(""),
        "one is stored, unread"
    );
}

const KEY_A: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
const KEY_B: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The deliveries to `endpoint_id`, with their attempt logs.
async fn deliveries_to(app: &TestApp, endpoint_id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for d in app.deliveries(&format!("endpoint_id={endpoint_id}")).await {
        all.push(app.get(&format!("/v1/deliveries/{}", id(&d))).await.1);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_sealed_with_another_key_fails_only_its_own_deliveries() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.secret_key = Some(KEY_A.into());
    // One retry, 50 ms after the first attempt: the ladder still applies to an unreadable
    // endpoint, so the test sees both attempts end.
    config.retry_schedule = vec![std::time::Duration::from_millis(50)];
    let app = TestApp::spawn_with(config.clone()).await;
    let stranded = Receiver::ok().await;
    let sealed = app
        .endpoint(json!({ "url": stranded.url(), "bearer_token": "tok-sealed-with-a" }))
        .await;
    let sealed_id = sealed["id"].as_str().unwrap().to_string();
    app.stop().await;

    // Restarted with another key: that endpoint's secrets no longer open.
    config.secret_key = Some(KEY_B.into());
    let app = TestApp::spawn_with(config.clone()).await;
    let receiver = Receiver::ok().await;
    let good = app.endpoint(standard_endpoint(&receiver.url())).await;
    for i in 0..3 {
        app.event(json!({ "event_type": "x", "event_id": format!("e-{i}"), "payload": {"i": i} }))
            .await;
    }
    // Every event still reaches the endpoint that can be read.
    receiver.wait_for(3, WAIT).await;
    let good_done = wait_until(
        WAIT,
        "the good endpoint's deliveries to succeed",
        || async {
            let all = app
                .deliveries(&format!("endpoint_id={}", good["id"].as_str().unwrap()))
                .await;
            (all.len() == 3 && all.iter().all(|d| d["state"] == "succeeded")).then_some(all)
        },
    )
    .await;
    assert_eq!(good_done.len(), 3);

    // The unreadable one's fail, each attempt with the reason, and nothing was sent.
    let failed = wait_until(
        WAIT,
        "the unreadable endpoint's deliveries to fail",
        || async {
            let all = deliveries_to(&app, &sealed_id).await;
            (all.len() == 3 && all.iter().all(|d| d["state"] == "failed")).then_some(all)
        },
    )
    .await;
    for d in &failed {
        let log = d["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 2, "attempted on the ladder: {d}");
        for attempt in log {
            assert!(
                attempt["error"]
                    .as_str()
                    .unwrap()
                    .contains("HOOKD_SECRET_KEY"),
                "{attempt}"
            );
            assert!(attempt["status_code"].is_null(), "{attempt}");
        }
    }
    assert_eq!(stranded.count(), 0, "nothing was sent without its token");

    // The API still lists every endpoint, and shows why that one cannot be sent to.
    let (status, list) = app.get("/v1/endpoints").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let (status, shown) = app.get(&format!("/v1/endpoints/{sealed_id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(
        shown["unreadable"]
            .as_str()
            .unwrap()
            .contains("HOOKD_SECRET_KEY"),
        "{shown}"
    );
    assert!(
        shown.get("secret").is_none() && shown.get("bearer_token").is_none(),
        "{shown}"
    );
    assert_eq!(shown["has_bearer_token"], true, "{shown}");
    assert!(
        !shown["failing_since"].is_null(),
        "its health shows it: {shown}"
    );
    let (_, readable) = app
        .get(&format!("/v1/endpoints/{}", good["id"].as_str().unwrap()))
        .await;
    assert!(readable["unreadable"].is_null(), "{readable}");

    // The gauge counts it.
    wait_until(WAIT, "hookd_endpoints_unreadable to be 1", || async {
        let (_, text) = app.get("/metrics").await;
        text.as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l == "hookd_endpoints_unreadable 1")
            .then_some(())
    })
    .await;

    // Fields other than its secrets can still be changed; its secrets cannot be, except
    // by replacing them all.
    let (status, patched) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{sealed_id}"),
            Some(json!({ "description": "sealed with key A" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (status, refused) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{sealed_id}"),
            Some(json!({ "secret": signing_secret() })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let (status, refused) = app
        .post(
            &format!("/v1/endpoints/{sealed_id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    app.stop().await;

    // With the key it was sealed with, the endpoint is whole again (the update above kept
    // its sealed token): a resend reaches it, with the token.
    config.secret_key = Some(KEY_A.into());
    let app = TestApp::spawn_with(config.clone()).await;
    let (_, shown) = app.get(&format!("/v1/endpoints/{sealed_id}")).await;
    assert_eq!(shown["bearer_token"], "tok-sealed-with-a", "{shown}");
    assert_eq!(shown["description"], "sealed with key A", "{shown}");
    let (status, _) = app
        .post(
            &format!("/v1/deliveries/{}/resend", id(&failed[0])),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = stranded.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer tok-sealed-with-a")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_without_the_key_of_sealed_secrets() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.secret_key = Some(KEY_A.into());
    let app = TestApp::spawn_with(config.clone()).await;
    app.endpoint(json!({ "url": "http://127.0.0.1:9/hook" }))
        .await;
    app.stop().await;

    config.secret_key = None;
    let err = match hookd::Application::build(config.clone()).await {
        Ok(_) => panic!("serve started without the key of its sealed secrets"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("HOOKD_SECRET_KEY"), "{err}");
    assert!(err.contains("1 endpoint"), "{err}");

    // A wrong key is not refused at start: the endpoints it cannot open fail alone.
    config.secret_key = Some(KEY_B.into());
    let app = TestApp::spawn_with(config).await;
    app.stop().await;
}
