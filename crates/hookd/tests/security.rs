//! Guards against hostile input: the SSRF guard at registration and again at send time
//! (after DNS, so a name that starts resolving to a private address is still caught),
//! `https_only`, the allow-list, and request bodies built to hurt.

mod support;

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
    config.allow_targets = hookd::ssrf::parse_ranges("127.0.0.0/8").unwrap();
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

    // Without the key the secrets cannot be read, and the error says why.
    let keyless = hookd_store::connect(&db.url).await.unwrap();
    let err = keyless
        .endpoint(ep["id"].as_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HOOKD_SECRET_KEY"), "{err}");
}
