//! Tenants over the API: portal tokens, confinement of every route to the token's tenant
//! (checked route by route from `/openapi.json`, so a route added without a decision
//! fails here), admin-only routes, and bad tenant ids.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use hookd_testkit::TestDb;
use support::*;

const ADMIN: &str = "admin-token-for-tenant-tests";

/// A request with a bearer credential (the admin token or a tenant token).
async fn call(
    app: &TestApp,
    bearer: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(bearer);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.expect("API reachable");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(app, ADMIN, method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Asserts that the answer to `what` is a 422 whose message says `words`.
fn assert_unprocessable(what: &str, status: StatusCode, v: &Value, words: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(words),
        "{what}: {v}"
    );
}

/// `PATCH /v1/endpoints/{id}` with `body`, as `bearer`.
async fn patch_endpoint(app: &TestApp, bearer: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let path = format!("/v1/endpoints/{id}");
    call(app, bearer, Method::PATCH, &path, Some(body)).await
}

/// A tenant's token, created by the admin.
async fn token(app: &TestApp, tenant: &str) -> String {
    let v = admin(
        app,
        Method::POST,
        &format!("/v1/tenants/{tenant}/tokens"),
        Some(json!({"expires_in": "1h"})),
    )
    .await;
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("hkt_"), "{v}");
    assert_eq!(
        v["portal_url"],
        format!("{}/portal#token={token}", app.base),
        "{v}"
    );
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'), "{v}");
    token
}

struct World {
    /// Tenant `a`'s endpoint, tenant `b`'s, and a provider-wide one.
    ep_a: String,
    ep_b: String,
    ep_wide: String,
    /// A delivery of each.
    d_a: i64,
    d_b: i64,
    d_wide: i64,
    job_b: String,
}

async fn world(app: &TestApp) -> World {
    let ep = |tenant: Option<&str>| {
        let mut body = json!({ "url": "http://127.0.0.1:9/hook", "enabled": false });
        if let Some(t) = tenant {
            body["tenant_id"] = json!(t);
        }
        body
    };
    let ep_a = admin(app, Method::POST, "/v1/endpoints", Some(ep(Some("a")))).await;
    let ep_b = admin(app, Method::POST, "/v1/endpoints", Some(ep(Some("b")))).await;
    let ep_wide = admin(app, Method::POST, "/v1/endpoints", Some(ep(None))).await;
    assert_eq!(
        (&ep_a["tenant_id"], &ep_wide["tenant_id"]),
        (&json!("a"), &Value::Null)
    );
    for (id, tenant) in [("ev_a", Some("a")), ("ev_b", Some("b")), ("ev_wide", None)] {
        let mut body = json!({ "event_type": "purchase", "payload": {"n": 1}, "event_id": id });
        if let Some(t) = tenant {
            body["tenant_id"] = json!(t);
        }
        let (status, v) = call(app, ADMIN, Method::POST, "/v1/events", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(
            v["deliveries"], 0,
            "disabled endpoints are no fan-out target: {v}"
        );
    }
    // Addressed deliveries (parked: the endpoints are disabled), one per tenant.
    let mut ids = Vec::new();
    for (ep, tenant, event) in [
        (&ep_a, Some("a"), "ev_a2"),
        (&ep_b, Some("b"), "ev_b2"),
        (&ep_wide, None, "ev_wide2"),
    ] {
        let mut body = json!({ "event_type": "purchase", "payload": {}, "event_id": event, "endpoint_id": ep["id"] });
        if let Some(t) = tenant {
            body["tenant_id"] = json!(t);
        }
        let v = admin(app, Method::POST, "/v1/events", Some(body)).await;
        assert_eq!(v["deliveries"], 1, "{v}");
        let page = admin(
            app,
            Method::GET,
            &format!("/v1/deliveries?event_id={event}"),
            None,
        )
        .await;
        ids.push(page["data"][0]["id"].as_i64().unwrap());
    }
    let job = admin(
        app,
        Method::POST,
        "/v1/deliveries/resend",
        Some(json!({"tenant_id": "b", "state": "failed"})),
    )
    .await;
    World {
        ep_a: ep_a["id"].as_str().unwrap().into(),
        ep_b: ep_b["id"].as_str().unwrap().into(),
        ep_wide: ep_wide["id"].as_str().unwrap().into(),
        d_a: ids[0],
        d_b: ids[1],
        d_wide: ids[2],
        job_b: job["job_id"].as_str().unwrap().into(),
    }
}

async fn spawn() -> (TestDb, TestApp) {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.admin_token = Some(ADMIN.into());
    let app = TestApp::spawn_with(config).await;
    (db, app)
}

/// Every `/v1` route of the OpenAPI document, called with tenant `a`'s token against
/// tenant `b`'s ids (and, where a route takes none, naming tenant `b`): each must refuse
/// (403, 404) or answer with nothing of `b`'s nor the provider-wide tenant's.
#[tokio::test]
async fn every_route_confines_or_refuses_a_tenant_token() {
    let (_db, app) = spawn().await;
    let w = world(&app).await;
    let token_a = token(&app, "a").await;
    let (_, doc) = app.get("/openapi.json").await;
    let foreign = [
        w.ep_b.clone(),
        w.ep_wide.clone(),
        "ev_b".to_string(),
        "ev_wide".to_string(),
        format!("\"id\":{}", w.d_b),
        format!("\"id\":{}", w.d_wide),
        "\"tenant_id\":\"b\"".to_string(),
        w.job_b.clone(),
    ];
    let mut called = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("/v1/endpoints/{id}", &format!("/v1/endpoints/{}", w.ep_b))
                .replace("/v1/deliveries/{id}", &format!("/v1/deliveries/{}", w.d_b))
                .replace("/v1/events/{id}", "/v1/events/ev_b")
                .replace(
                    "/v1/resend-jobs/{id}",
                    &format!("/v1/resend-jobs/{}", w.job_b),
                )
                .replace("{tenant_id}", "b")
                // The catalog is provider-wide: nothing of b's to name.
                .replace("{name}", "order.paid");
            assert!(
                !concrete.contains('{'),
                "no id of tenant b for {path}: add one here"
            );
            let m: Method = method.to_uppercase().parse().unwrap();
            let (query, body) = match (m.clone(), path.as_str()) {
                (Method::GET, _) => ("?tenant_id=b", None),
                (Method::POST, "/v1/endpoints") => (
                    "",
                    Some(json!({"url": "http://127.0.0.1:9/x", "tenant_id": "b"})),
                ),
                (Method::POST, "/v1/events") => (
                    "",
                    Some(json!({"event_type": "x", "payload": {}, "tenant_id": "b"})),
                ),
                (Method::POST, "/v1/deliveries/resend") => ("", Some(json!({"tenant_id": "b"}))),
                (Method::PATCH, _) => ("", Some(json!({"description": "taken over"}))),
                (Method::POST, _) => ("", Some(json!({}))),
                _ => ("", None),
            };
            let (status, v) = call(
                &app,
                &token_a,
                m.clone(),
                &format!("{concrete}{query}"),
                body,
            )
            .await;
            called += 1;
            let text = v.to_string();
            let refused = status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND;
            let confined =
                status.is_success() && !foreign.iter().any(|f| text.contains(f.as_str()));
            assert!(
                refused || confined,
                "{method} {path} with tenant a's token against tenant b: neither confined nor refused: {status} {v}"
            );
            // The summary ignores a tenant_id it does not take: confined, with a's only.
            if path == "/v1/endpoints/summary" {
                assert!(text.contains(&w.ep_a), "{v}");
            }
        }
    }
    assert!(called >= 14, "only {called} routes called");
    // Tenant b's endpoint and delivery are as they were.
    let ep_b = admin(
        &app,
        Method::GET,
        &format!("/v1/endpoints/{}", w.ep_b),
        None,
    )
    .await;
    assert_eq!(
        (ep_b["description"].clone(), ep_b["version"].clone()),
        (Value::Null, ep_b["version"].clone())
    );
    assert_eq!(ep_b["updated_at"], ep_b["created_at"], "{ep_b}");
    let d_b = admin(
        &app,
        Method::GET,
        &format!("/v1/deliveries/{}", w.d_b),
        None,
    )
    .await;
    assert_eq!(d_b["attempt_log"], json!([]), "{d_b}");
    assert_eq!(d_b["next_attempt_at"], Value::Null, "still parked: {d_b}");
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_token_manages_its_own_and_nothing_else() {
    let (_db, app) = spawn().await;
    let w = world(&app).await;
    let t = token(&app, "a").await;
    let get = |path: String| {
        let (app, t) = (&app, &t);
        async move { call(app, t, Method::GET, &path, None).await }
    };
    // Lists hold its rows only.
    let (s, page) = get("/v1/endpoints".into()).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [w.ep_a.as_str()]);
    let (_, page) = get("/v1/deliveries".into()).await;
    let ds: Vec<i64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ds, [w.d_a]);
    assert_eq!(page["data"][0]["tenant_id"], "a");
    let (s, _) = get(format!("/v1/endpoints/{}", w.ep_wide)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, ev) = get("/v1/events/ev_a2".into()).await;
    assert_eq!(
        (s, ev["tenant_id"].clone()),
        (StatusCode::OK, json!("a")),
        "{ev}"
    );
    // It creates endpoints of its own: naming itself or nobody.
    for body in [
        json!({"url": "http://127.0.0.1:9/mine"}),
        json!({"url": "http://127.0.0.1:9/mine2", "tenant_id": "a"}),
    ] {
        let (s, ep) = call(&app, &t, Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(
            (s, ep["tenant_id"].clone()),
            (StatusCode::CREATED, json!("a")),
            "{ep}"
        );
    }
    // The tenant cannot be changed.
    let (s, e) = patch_endpoint(&app, &t, &w.ep_a, json!({"tenant_id": "b"})).await;
    assert_unprocessable("a tenant's own tenant_id", s, &e, "tenant_id");
    let (s, e) = patch_endpoint(&app, ADMIN, &w.ep_a, json!({"tenant_id": null})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = patch_endpoint(
        &app,
        &t,
        &w.ep_a,
        json!({"tenant_id": "a", "description": "ours"}),
    )
    .await;
    assert_eq!(
        (s, e["description"].clone()),
        (StatusCode::OK, json!("ours")),
        "{e}"
    );
    // Resend one, and a filtered set: its own only.
    let (s, d) = call(
        &app,
        &t,
        Method::POST,
        &format!("/v1/deliveries/{}/resend", w.d_a),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let (s, job) = call(
        &app,
        &t,
        Method::POST,
        "/v1/deliveries/resend",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (s, job["matched"].clone()),
        (StatusCode::ACCEPTED, json!(1)),
        "{job}"
    );
    let (s, j) = get(format!(
        "/v1/resend-jobs/{}",
        job["job_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (s, j["filter"]["tenant_id"].clone()),
        (StatusCode::OK, json!("a")),
        "{j}"
    );
    // Admin-only routes.
    for (method, path) in [
        (Method::POST, "/v1/events"),
        (Method::POST, "/v1/tenants/a/tokens"),
        (Method::DELETE, "/v1/tenants/a/tokens"),
    ] {
        let body = (method == Method::POST).then(|| json!({"event_type": "x", "payload": {}}));
        let (s, e) = call(&app, &t, method, path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {e}");
    }
    // The admin filters by tenant.
    let page = admin(&app, Method::GET, "/v1/endpoints?tenant_id=b", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["id"], w.ep_b.as_str());
    let page = admin(&app, Method::GET, "/v1/deliveries?tenant_id=a", None).await;
    assert!(
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["tenant_id"] == "a"),
        "{page}"
    );
    // Revoked: 401, for every token of the tenant.
    let t2 = token(&app, "a").await;
    let tb = token(&app, "b").await;
    let (s, _) = call(&app, ADMIN, Method::DELETE, "/v1/tenants/a/tokens", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for gone in [&t, &t2] {
        let (s, e) = call(&app, gone, Method::GET, "/v1/endpoints", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    }
    let (s, _) = call(&app, &tb, Method::GET, "/v1/endpoints", None).await;
    assert_eq!(s, StatusCode::OK, "another tenant's token lives on");
    // Expired: 401. Unknown: 401.
    let (expired, hash) = hookd::daemon::tenant_tokens::generate();
    app.store
        .insert_tenant_token(&hash, &hookd_store::TenantId::parse("a").unwrap(), -1)
        .await
        .unwrap();
    for bad in [expired.as_str(), "hkt_not-a-token"] {
        let (s, _) = call(&app, bad, Method::GET, "/v1/endpoints", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // No tenant, and no token, on /metrics.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Store operations may be named after tenants' tables; no label may be a tenant.
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        if let Some(labels) = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
        {
            for pair in labels.0.split(',') {
                let key = pair.split_once('=').map(|(k, _)| k).unwrap_or(pair);
                assert!(!key.contains("tenant"), "a tenant label: {line}");
            }
        }
    }
    assert!(!metrics.contains(&tb[4..]), "a token in the metrics");
    app.stop().await;
}

#[tokio::test]
async fn bad_tenant_ids_answer_422_naming_the_field() {
    let (_db, app) = spawn().await;
    let w = world(&app).await;
    let long = "x".repeat(65);
    for bad in ["", long.as_str(), "a b", "a/b", "é"] {
        let cases = [
            (
                Method::POST,
                "/v1/endpoints".to_string(),
                Some(json!({"url": "http://127.0.0.1:9/x", "tenant_id": bad})),
            ),
            (
                Method::POST,
                "/v1/events".to_string(),
                Some(json!({"event_type": "x", "payload": {}, "tenant_id": bad})),
            ),
            (
                Method::POST,
                "/v1/deliveries/resend".to_string(),
                Some(json!({"tenant_id": bad})),
            ),
            (
                Method::GET,
                format!("/v1/deliveries?tenant_id={}", urlencode(bad)),
                None,
            ),
            (
                Method::GET,
                format!("/v1/endpoints?tenant_id={}", urlencode(bad)),
                None,
            ),
        ];
        for (method, path, body) in cases {
            let (s, e) = call(&app, ADMIN, method, &path, body).await;
            assert_unprocessable(&format!("{path} {bad:?}"), s, &e, "tenant_id");
        }
    }
    for bad in ["a%20b", &long] {
        let (s, e) = call(
            &app,
            ADMIN,
            Method::POST,
            &format!("/v1/tenants/{bad}/tokens"),
            None,
        )
        .await;
        assert_unprocessable(bad, s, &e, "tenant_id");
    }
    let (s, e) = call(
        &app,
        ADMIN,
        Method::POST,
        "/v1/tenants/a/tokens",
        Some(json!({"expires_in": "0s"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // An event of tenant a addressed to tenant b's endpoint, or a provider-wide one.
    for ep in [&w.ep_b, &w.ep_wide] {
        let (s, e) = call(
            &app,
            ADMIN,
            Method::POST,
            "/v1/events",
            Some(json!({"event_type": "x", "payload": {}, "tenant_id": "a", "endpoint_id": ep})),
        )
        .await;
        assert_unprocessable(ep, s, &e, "another tenant");
    }
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
