//! `ETag` and `If-Match` on endpoints: two operators' changes cannot overwrite each other.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use hookd_testkit::{Api, Backend, TestDb};
use support::*;

hookd_testkit::each_backend!(
    the_second_of_two_patches_from_one_read_is_refused,
    concurrent_patches_from_one_read_apply_once,
    delete_and_rotate_honour_if_match,
    without_if_match_or_with_a_star_changes_go_through,
    unknown_endpoints_stay_404,
    hookd_disabling_changes_the_etag_health_does_not,
);

/// One API call with optional `If-Match`: the status, the `ETag` answered, the body.
async fn call(
    api: &Api,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<String>, Value) {
    let headers: Vec<(&str, &str)> = if_match.map(|tag| ("if-match", tag)).into_iter().collect();
    let answer = api.request(method, path, &headers, body).await;
    let etag = answer.header("etag").map(str::to_string);
    (answer.status, etag, answer.body)
}

/// `GET /v1/endpoints/{id}`: the endpoint and its ETag, which must be a strong tag.
async fn read(app: &TestApp, id: &str) -> (Value, String) {
    let (status, etag, body) = call(app, Method::GET, &path(id), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let etag = etag.expect("GET of an endpoint answers an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong entity tag: {etag}"
    );
    (body, etag)
}

fn path(id: &str) -> String {
    format!("/v1/endpoints/{id}")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn setup(backend: Backend) -> (TestDb, TestApp, String) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (status, etag, ep) = call(
        &app,
        Method::POST,
        "/v1/endpoints",
        None,
        Some(json!({ "url": "http://127.0.0.1:9/hook", "description": "first" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let id = ep["id"].as_str().unwrap().to_string();
    let (_, read_tag) = read(&app, &id).await;
    assert_eq!(
        etag.as_deref(),
        Some(read_tag.as_str()),
        "create answers the ETag a read gives"
    );
    (db, app, id)
}

async fn the_second_of_two_patches_from_one_read_is_refused(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    // Two operators read the same endpoint.
    let (_, alice) = read(&app, &id).await;
    let (_, bob) = read(&app, &id).await;
    assert_eq!(alice, bob);

    let (status, etag, ep) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&alice),
        Some(json!({ "description": "alice" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ep}");
    let after_alice = etag.expect("PATCH answers the new ETag");
    assert_ne!(after_alice, alice, "a change makes a new ETag");
    assert_eq!(read(&app, &id).await.1, after_alice);

    let (status, etag, err) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&bob),
        Some(json!({ "url": "http://127.0.0.1:10/bob", "description": "bob" })),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert_eq!(code(&err), "precondition_failed", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed since"),
        "{err}"
    );
    assert_eq!(etag, None, "an error carries no ETag");
    let (now, tag) = read(&app, &id).await;
    assert_eq!(now["description"], "alice", "bob's change is not applied");
    assert_eq!(now["url"], "http://127.0.0.1:9/hook");
    assert_eq!(tag, after_alice);

    // Bob reads again and succeeds; a list of tags matches when one of them does, and a
    // weak tag never does (If-Match compares strongly).
    let (status, _, ep) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&format!("W/{after_alice}")),
        Some(json!({ "description": "bob" })),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{ep}");
    let (status, _, ep) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&format!("{alice}, {after_alice}")),
        Some(json!({ "description": "bob" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ep}");
    assert_eq!(ep["description"], "bob");
    app.stop().await;
}

async fn concurrent_patches_from_one_read_apply_once(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    let (_, tag) = read(&app, &id).await;
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8usize {
        let (api, id, tag) = (Api::clone(&app), id.clone(), tag.clone());
        writers.spawn(async move {
            let (status, _, _) = call(
                &api,
                Method::PATCH,
                &path(&id),
                Some(&tag),
                Some(json!({ "description": format!("writer {i}") })),
            )
            .await;
            (i, status)
        });
    }
    let results = writers.join_all().await;
    let won: Vec<usize> = results
        .iter()
        .filter(|(_, s)| *s == StatusCode::OK)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one change from one read: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|(_, s)| *s == StatusCode::OK || *s == StatusCode::PRECONDITION_FAILED),
        "{results:?}"
    );
    let (now, _) = read(&app, &id).await;
    assert_eq!(now["description"], format!("writer {}", won[0]));
    app.stop().await;
}

async fn delete_and_rotate_honour_if_match(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    let (before, stale) = read(&app, &id).await;
    let (status, _, _) = call(
        &app,
        Method::PATCH,
        &path(&id),
        None,
        Some(json!({ "description": "changed" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Rotate with the stale tag: refused, the secret stays.
    let rotate = format!("/v1/endpoints/{id}/rotate-secret");
    let (status, _, err) = call(
        &app,
        Method::POST,
        &rotate,
        Some(&stale),
        Some(json!({ "grace": "0s" })),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert_eq!(code(&err), "precondition_failed");
    let (now, current) = read(&app, &id).await;
    assert_eq!(now["secret"], before["secret"], "not rotated");

    // With the current tag: rotated, and a new tag answered.
    let (status, etag, rotated) = call(
        &app,
        Method::POST,
        &rotate,
        Some(&current),
        Some(json!({ "grace": "0s" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_ne!(rotated["secret"], before["secret"]);
    let after_rotation = etag.expect("rotate answers the new ETag");
    assert_ne!(after_rotation, current);
    assert_eq!(read(&app, &id).await.1, after_rotation);

    // Delete with a stale tag: refused, the endpoint stays; with the current one: deleted.
    let (status, _, err) = call(&app, Method::DELETE, &path(&id), Some(&current), None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert_eq!(code(&err), "precondition_failed");
    read(&app, &id).await;
    let (status, _, _) = call(
        &app,
        Method::DELETE,
        &path(&id),
        Some(&after_rotation),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(&app, Method::GET, &path(&id), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn without_if_match_or_with_a_star_changes_go_through(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    let (_, first) = read(&app, &id).await;
    for (i, tag) in [None, Some("*")].into_iter().enumerate() {
        let (status, etag, ep) = call(
            &app,
            Method::PATCH,
            &path(&id),
            tag,
            Some(json!({ "description": format!("change {i}") })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tag:?}: {ep}");
        assert_eq!(ep["description"], format!("change {i}"));
        assert!(etag.is_some_and(|t| t != first));
        let (status, _, ep) = call(
            &app,
            Method::POST,
            &format!("/v1/endpoints/{id}/rotate-secret"),
            tag,
            Some(json!({ "grace": "0s" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tag:?}: {ep}");
    }
    let (status, _, _) = call(&app, Method::DELETE, &path(&id), Some("*"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, other) = call(
        &app,
        Method::POST,
        "/v1/endpoints",
        None,
        Some(json!({ "url": "http://127.0.0.1:9/other" })),
    )
    .await;
    let other = other["id"].as_str().unwrap();
    let (status, _, _) = call(&app, Method::DELETE, &path(other), None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.stop().await;
}

async fn unknown_endpoints_stay_404(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    let (_, tag) = read(&app, &id).await;
    let (status, _, _) = call(&app, Method::DELETE, &path(&id), None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for missing in [id.as_str(), "ep_nope"] {
        for if_match in [None, Some("*"), Some(tag.as_str()), Some("\"v999\"")] {
            let calls = [
                (
                    Method::PATCH,
                    path(missing),
                    Some(json!({ "description": "x" })),
                ),
                (Method::DELETE, path(missing), None),
                (
                    Method::POST,
                    format!("/v1/endpoints/{missing}/rotate-secret"),
                    Some(json!({})),
                ),
            ];
            for (method, p, body) in calls {
                let (status, _, err) = call(&app, method.clone(), &p, if_match, body).await;
                assert_eq!(
                    (status, code(&err)),
                    (StatusCode::NOT_FOUND, "not_found"),
                    "{method} {p} If-Match {if_match:?}"
                );
            }
        }
    }
    app.stop().await;
}

/// The ETag stands for the settings an operator edits: hookd disabling the endpoint changes
/// it (an operator's read no longer says whether it is enabled); health figures do not.
async fn hookd_disabling_changes_the_etag_health_does_not(backend: Backend) {
    let (_db, app, id) = setup(backend).await;
    let (_, first) = read(&app, &id).await;
    app.store
        .record_endpoint_health(&[(id.as_str().into(), true)], None, "failing")
        .await
        .unwrap();
    app.store
        .record_endpoint_health(&[(id.as_str().into(), false)], None, "failing")
        .await
        .unwrap();
    let (ep, tag) = read(&app, &id).await;
    assert!(ep["failing_since"].is_string(), "{ep}");
    assert_eq!(tag, first, "health figures leave the ETag alone");
    let (status, _, _) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&first),
        Some(json!({ "description": "still current" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (_, before) = read(&app, &id).await;
    assert!(app
        .store
        .disable_endpoint(&id.as_str().into(), "gone")
        .await
        .unwrap());
    let (ep, after) = read(&app, &id).await;
    assert_eq!(ep["enabled"], false);
    assert_ne!(after, before, "disabling by hookd changes the ETag");
    let (status, _, err) = call(
        &app,
        Method::PATCH,
        &path(&id),
        Some(&before),
        Some(json!({ "description": "stale" })),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_names_etag_and_if_match() {
    let db = TestDb::sqlite();
    let app = TestApp::spawn(&db).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let one = &doc["paths"]["/v1/endpoints/{id}"];
    let rotate = &doc["paths"]["/v1/endpoints/{id}/rotate-secret"];
    for (op, ok) in [
        (&one["patch"], "200"),
        (&one["delete"], "204"),
        (&rotate["post"], "200"),
    ] {
        assert!(op["responses"]["412"].is_object(), "{op}");
        assert!(op["responses"][ok].is_object(), "{op}");
        let params = op["parameters"].as_array().unwrap();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
            "{op}"
        );
    }
    for op in [
        &one["get"],
        &one["patch"],
        &rotate["post"],
        &doc["paths"]["/v1/endpoints"]["post"],
    ] {
        let ok = op["responses"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(code, _)| code.starts_with('2'))
            .unwrap()
            .1;
        assert!(ok["headers"]["ETag"].is_object(), "{op}");
    }
    app.stop().await;
}
