//! Web pages cannot drive the admin API: the exact requests a browser sends for a
//! cross-site form, a `fetch` from another origin and a DNS-rebinding page are refused, and
//! nothing changes; the dashboard's own same-origin requests and the CLI's still work.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use hookd::daemon::api::browser::AllowedHosts;
use hookd_testkit::{wait_until, Receiver, TestDb};
use support::*;

/// One request with exactly these headers (reqwest adds only its defaults: no Origin, no
/// Content-Type).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    let resp = req.send().await.expect("hookd reachable");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or("(not an API error)")
}

fn host(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

const ATTACKER_ENDPOINT: &str =
    r#"{"url": "https://attacker.example/collect", "event_types": ["*"]}"#;

/// A delivery that has succeeded once, to see whether a refused resend touched it; with its
/// receiver, to keep while the test runs.
async fn one_succeeded_delivery(app: &TestApp) -> (i64, Receiver) {
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    app.event(json!({ "event_type": "x", "payload": {} })).await;
    let d = app.wait_all_finished(1).await.remove(0);
    assert_eq!(d["state"], "succeeded");
    (id(&d), receiver)
}

/// Nothing changed: the one endpoint is still alone, and the delivery was not resent.
async fn assert_unchanged(app: &TestApp, delivery: i64) {
    let (_, page) = app.get("/v1/endpoints").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    let (_, d) = app.get(&format!("/v1/deliveries/{delivery}")).await;
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{d}"
    );
    let (_, jobs) = app.get("/v1/deliveries?state=pending").await;
    assert_eq!(jobs["data"], json!([]), "{jobs}");
}

#[tokio::test]
async fn a_cross_site_form_post_changes_nothing() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let (delivery, _receiver) = one_succeeded_delivery(&app).await;
    let own_host = host(&app);
    let resend_one = format!("/v1/deliveries/{delivery}/resend");
    // What Chromium sends for <form method=post enctype=text/plain> on https://evil.example
    // (the body is built to parse as JSON), for the default form encoding, and for a
    // no-cors fetch; then the same from a browser that leaves Origin out.
    let forms: &[(&str, &str, Option<&str>)] = &[
        (
            "/v1/endpoints",
            "text/plain",
            Some(&ATTACKER_ENDPOINT[..ATTACKER_ENDPOINT.len() - 1]),
        ),
        ("/v1/endpoints", "text/plain", Some(ATTACKER_ENDPOINT)),
        (
            "/v1/endpoints",
            "application/x-www-form-urlencoded",
            Some("url=https%3A%2F%2Fattacker.example"),
        ),
        (
            "/v1/endpoints",
            "multipart/form-data; boundary=x",
            Some("--x--\r\n"),
        ),
        ("/v1/deliveries/resend", "text/plain", Some("{}")),
        ("/v1/deliveries/resend", "text/plain", None),
        (&resend_one, "text/plain", None),
        (&resend_one, "application/x-www-form-urlencoded", None),
    ];
    for (path, content_type, body) in forms {
        let (status, err) = send(
            &app,
            Method::POST,
            path,
            &[
                ("host", &own_host),
                ("origin", "https://evil.example"),
                ("content-type", content_type),
                ("sec-fetch-site", "cross-site"),
            ],
            *body,
        )
        .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "foreign_origin"),
            "{path} {content_type}: {err}"
        );
        let (status, err) = send(
            &app,
            Method::POST,
            path,
            &[("host", &own_host), ("content-type", content_type)],
            *body,
        )
        .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{path} {content_type} without Origin: {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{err}"
        );
    }
    // A page in a sandboxed frame sends `Origin: null`; it is foreign too.
    let (status, _) = send(
        &app,
        Method::POST,
        "/v1/endpoints",
        &[("origin", "null"), ("content-type", "application/json")],
        Some(ATTACKER_ENDPOINT),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_unchanged(&app, delivery).await;
    app.stop().await;
}

#[tokio::test]
async fn a_dns_rebinding_page_gets_421() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let (delivery, _receiver) = one_succeeded_delivery(&app).await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let evil = format!("evil.example:{port}");
    // The page at http://evil.example:<port>, its name now resolving to 127.0.0.1: its
    // fetches are same-origin to the browser, and carry its own name as Host.
    for (method, path, body) in [
        (Method::GET, "/v1/endpoints", None),
        (Method::GET, "/v1/deliveries", None),
        (Method::GET, "/openapi.json", None),
        (Method::GET, "/", None),
        (Method::GET, "/metrics", None),
        (Method::POST, "/v1/endpoints", Some(ATTACKER_ENDPOINT)),
        (Method::POST, "/v1/deliveries/resend", Some("{}")),
    ] {
        let mut headers = vec![("host", evil.as_str())];
        if method == Method::POST {
            headers.push(("content-type", "application/json"));
        }
        let (status, err) = send(&app, method.clone(), path, &headers, body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            "{method} {path}: {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("HOOKD_ALLOWED_HOSTS"),
            "{err}"
        );
    }
    assert_unchanged(&app, delivery).await;
    // The names of loopback are answered, whatever the port.
    for own in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let (status, body) =
            send(&app, Method::GET, "/v1/endpoints", &[("host", &own)], None).await;
        assert_eq!(status, StatusCode::OK, "Host {own}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_cannot_read() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    for origin in [
        "https://evil.example".to_string(),
        "null".to_string(),
        format!("http://localhost:{port}"), // another name of this server is another origin
        "http://127.0.0.1:3000".to_string(), // another local web server
    ] {
        for path in ["/v1/endpoints", "/openapi.json", "/healthz"] {
            let (status, err) = send(
                &app,
                Method::GET,
                path,
                &[("origin", origin.as_str())],
                None,
            )
            .await;
            assert_eq!(
                (status, code(&err)),
                (StatusCode::FORBIDDEN, "foreign_origin"),
                "GET {path} from {origin}: {err}"
            );
        }
    }
    app.stop().await;
}

/// Every kind of call the dashboard makes, as Chromium sends it from the dashboard's page:
/// `Origin` on everything but GET, JSON bodies labelled as such, and resends without a body.
#[tokio::test]
async fn the_dashboards_own_requests_succeed() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.admin_token = Some("dash-token".into());
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::ok().await;
    let origin = app.base.clone();
    let own_host = host(&app);
    let auth = "Bearer dash-token";
    let page = |method: &Method| {
        let mut h = vec![
            ("host", own_host.as_str()),
            ("accept", "application/json"),
            ("authorization", auth),
            ("sec-fetch-site", "same-origin"),
        ];
        if *method != Method::GET {
            h.push(("origin", origin.as_str()));
        }
        h
    };
    let json_page = |method: &Method| {
        let mut h = page(method);
        h.push(("content-type", "application/json"));
        h
    };
    let (status, ep) = send(
        &app,
        Method::POST,
        "/v1/endpoints",
        &json_page(&Method::POST),
        Some(&json!({ "url": receiver.url() }).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    let (status, body) = send(&app, Method::GET, &ep_path, &page(&Method::GET), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &app,
        Method::PATCH,
        &ep_path,
        &json_page(&Method::PATCH),
        Some(r#"{"description": "from the dashboard"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &app,
        Method::POST,
        "/v1/events",
        &json_page(&Method::POST),
        Some(r#"{"event_type": "x", "payload": {}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let d = wait_until(WAIT, "the delivery to succeed", || async {
        let (_, page) = send(
            &app,
            Method::GET,
            "/v1/deliveries",
            &page(&Method::GET),
            None,
        )
        .await;
        page["data"]
            .as_array()
            .and_then(|all| all.first().cloned())
            .filter(|d| d["state"] == "succeeded")
    })
    .await;
    // The dashboard's resend button: POST, no body, no Content-Type.
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/v1/deliveries/{}/resend", id(&d)),
        &page(&Method::POST),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_until(WAIT, "the resent delivery to succeed", || async {
        let path = format!("/v1/deliveries/{}", id(&d));
        let (_, d) = send(&app, Method::GET, &path, &page(&Method::GET), None).await;
        (d["state"] == "succeeded" && d["attempts"] == 2).then_some(())
    })
    .await;
    let (status, body) = send(
        &app,
        Method::POST,
        "/v1/deliveries/resend",
        &json_page(&Method::POST),
        Some(r#"{"state": "succeeded"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    receiver.wait_for(3, WAIT).await;
    let (status, body) = send(&app, Method::DELETE, &ep_path, &page(&Method::DELETE), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // The page itself, its assets and the API description.
    for path in ["/", "/openapi.json", "/healthz"] {
        let (status, _) = send(&app, Method::GET, path, &page(&Method::GET), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // The same behind a TLS-terminating proxy: the page's origin is https://<Host>.
    let (status, body) = send(
        &app,
        Method::POST,
        "/v1/events",
        &[
            ("host", "127.0.0.1"),
            ("origin", "https://127.0.0.1"),
            ("authorization", auth),
            ("content-type", "application/json; charset=utf-8"),
        ],
        Some(r#"{"event_type": "y", "payload": {}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.stop().await;
}

/// The CLI's and curl's requests: no Origin, JSON bodies labelled, resends without a body.
#[tokio::test]
async fn scripts_and_the_cli_still_work() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let (delivery, _receiver) = one_succeeded_delivery(&app).await;
    // `curl -X POST .../resend`: no body, no Content-Type.
    let resp = app
        .http
        .post(format!("{}/v1/deliveries/{delivery}/resend", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // `curl -H 'content-type: application/json' -d ...`
    let resp = app
        .http
        .post(format!("{}/v1/deliveries/resend", app.base))
        .header("content-type", "application/json")
        .body(r#"{"state": "failed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    app.stop().await;
}

#[tokio::test]
async fn allowed_hosts_are_honoured() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.allowed_hosts = Some(AllowedHosts::parse("hooks.internal").unwrap());
    let app = TestApp::spawn_with(config).await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let named = format!("hooks.internal:{port}");
    let (status, body) = send(
        &app,
        Method::GET,
        "/v1/endpoints",
        &[("host", &named)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &app,
        Method::POST,
        "/v1/endpoints",
        &[
            ("host", &named),
            ("origin", &format!("http://{named}")),
            ("content-type", "application/json"),
        ],
        Some(r#"{"url": "https://example.com/hook"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The list replaces the default: loopback's names are no longer answered.
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    app.stop().await;
}

/// `hookd serve` itself: HOOKD_ALLOWED_HOSTS from the environment is honoured, and without
/// an admin token it warns at start that the API is open to local processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_allowed_hosts_and_warns_without_a_token() {
    let db = TestDb::sqlite();
    let mut hookd = support::serve(&db)
        .env("HOOKD_ALLOWED_HOSTS", "hooks.internal,127.0.0.1")
        .start()
        .await;
    let (http, base, port) = (&hookd.api().http, &hookd.api().base, hookd.port());
    let status = |host: String| {
        let request = http
            .get(format!("{base}/v1/endpoints"))
            .header("host", host);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        status(format!("hooks.internal:{port}")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(format!("localhost:{port}")).await,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert!(hookd.terminate(WAIT).await.success());
    let log = hookd.stderr();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("HOOKD_ADMIN_TOKEN")
            && l.contains("open to every process")),
        "{log}"
    );
}
