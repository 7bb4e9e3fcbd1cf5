//! Egress: the proxy variables of hookd's environment (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY`) never carry a delivery, so they cannot take it past the SSRF guard, and
//! `HOOKD_EGRESS_PROXY` sends every delivery through the proxy it names. hookd runs as a
//! child process: the proxy variables are its real environment.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{json, Value};

use hookd_store::Endpoint;
use hookd_testkit::{wait_until, Api, Process, Receiver, Spec, TestDb};
use support::WAIT;

const HOOKD: &str = env!("CARGO_BIN_EXE_hookd");
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// A forwarding HTTP proxy on 127.0.0.1: counts every connection it accepts, records the
/// target of every request it is asked to carry (absolute-form `POST http://host:port/path`,
/// as a client sends through an HTTP proxy; a `CONNECT` is recorded and refused), and
/// forwards plain-http requests to their target.
struct RecordingProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    connections: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

impl RecordingProxy {
    async fn start() -> RecordingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared::default());
        let counted = shared.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        // The proxy's own client goes straight to the target, whatever the environment.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((shared.clone(), client));
        tokio::spawn(async move { axum::serve(listener, app).await });
        RecordingProxy { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn forward(
    State((shared, client)): State<(Arc<ProxyShared>, reqwest::Client)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    shared
        .requests
        .lock()
        .unwrap()
        .push(format!("{} {}", parts.method, parts.uri));
    if parts.method == Method::CONNECT || parts.uri.scheme_str() != Some("http") {
        return (
            StatusCode::BAD_GATEWAY,
            "this proxy forwards plain http only",
        )
            .into_response();
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        let hop = matches!(
            name.as_str(),
            "host" | "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive"
        );
        if !hop {
            headers.append(name.clone(), value.clone());
        }
    }
    let answer = client
        .request(parts.method, parts.uri.to_string())
        .headers(headers)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(r) => {
            let status = r.status();
            let bytes: Bytes = r.bytes().await.unwrap_or_default();
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// `hookd serve` on `db` with `env` (`HOOKD_*` and proxy variables), private targets refused
/// unless `env` says otherwise, no retry; nothing of the test's own environment that could
/// change egress leaks in. Returns the process and its admin API.
async fn serve(db: &TestDb, env: &[(&str, &str)]) -> (Process, Api) {
    let mut spec = support::serve(db)
        .env("HOOKD_RETRY_SCHEDULE", "")
        .env("HOOKD_POLL_INTERVAL", "20ms")
        .env("HOOKD_ALLOW_PRIVATE_TARGETS", "false")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for name in PROXY_VARIABLES {
        spec = spec.env_remove(name);
    }
    let hookd = spec.envs(env.iter().copied()).start().await;
    let api = hookd.api().clone();
    (hookd, api)
}

/// Registers an endpoint behind the API's back, as if its name had resolved publicly at
/// registration: the send-time guard is what is tested.
async fn insert_endpoint(db: &TestDb, id: &str, url: &str) {
    let store = hookd_store::connect(&db.url).await.unwrap();
    store
        .insert_endpoint(&Endpoint {
            id: id.into(),
            url: url.into(),
            event_types: vec!["*".into()],
            secret: SECRET.into(),
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Enqueues `n` events through the API and waits until every delivery is finished.
async fn deliver(api: &Api, n: usize, deliveries: usize) -> Vec<Value> {
    for i in 0..n {
        let (status, body) = api
            .post(
                "/v1/events",
                json!({ "event_type": "order.paid", "event_id": format!("e-{i}"), "payload": { "i": i } }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    wait_until(WAIT, "every delivery to finish", || async {
        let (_, page) = api.get("/v1/deliveries?limit=1000").await;
        let all = page["data"].as_array().cloned().unwrap_or_default();
        let done = all
            .iter()
            .all(|d| d["state"] == "succeeded" || d["state"] == "failed");
        (all.len() == deliveries && done).then_some(all)
    })
    .await
}

async fn attempt_log(api: &Api, delivery: &Value) -> Vec<Value> {
    let (_, detail) = api.get(&format!("/v1/deliveries/{}", delivery["id"])).await;
    detail["attempt_log"].as_array().cloned().unwrap()
}

fn proxy_env(url: &str) -> Vec<(&'static str, String)> {
    PROXY_VARIABLES
        .iter()
        .map(|v| (*v, url.to_string()))
        .collect()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_cannot_carry_a_delivery_past_the_ssrf_guard() {
    let proxy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let db = TestDb::sqlite();
    let mut env = proxy_env(&proxy.url());
    env.push(("HOOKD_ALLOW_PRIVATE_TARGETS", "false".into()));
    let (_hookd, api) = serve(&db, &env_refs(&env)).await;
    // `localhost` resolves to loopback: the guard must refuse it. Through the proxy, hookd
    // would only ever resolve the proxy's address, and the proxy would carry the request.
    let port = receiver.addr().port();
    insert_endpoint(&db, "ep_private", &format!("http://localhost:{port}/hook")).await;

    let all = deliver(&api, 1, 1).await;
    assert_eq!(all[0]["state"], "failed", "{}", all[0]);
    let log = attempt_log(&api, &all[0]).await;
    assert_eq!(log[0]["outcome"], "blocked", "{log:?}");
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{log:?}"
    );
    assert_eq!(receiver.count(), 0, "nothing reached the private address");
    assert_eq!(
        proxy.connections(),
        0,
        "the proxy saw {:?}",
        proxy.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_are_ignored_and_deliveries_go_direct() {
    let proxy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let db = TestDb::sqlite();
    let mut env = proxy_env(&proxy.url());
    env.push(("HOOKD_ALLOW_PRIVATE_TARGETS", "true".into()));
    let (_hookd, api) = serve(&db, &env_refs(&env)).await;
    api.endpoint(json!({ "url": receiver.url(), "secret": SECRET }))
        .await;

    let all = deliver(&api, 3, 3).await;
    assert!(all.iter().all(|d| d["state"] == "succeeded"), "{all:?}");
    assert_eq!(receiver.count(), 3);
    assert_eq!(
        proxy.connections(),
        0,
        "the proxy saw {:?}",
        proxy.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_proxy_carries_every_delivery() {
    let egress = RecordingProxy::start().await;
    let decoy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let db = TestDb::sqlite();
    // The production shape: private targets refused, the proxy named by a host name that
    // hookd's guard would refuse as a destination (`localhost`), and the proxy variables
    // pointing elsewhere.
    let mut env = proxy_env(&decoy.url());
    let egress_url = format!("http://localhost:{}", egress.addr.port());
    env.push(("HOOKD_EGRESS_PROXY", egress_url));
    let (_hookd, api) = serve(&db, &env_refs(&env)).await;
    let port = receiver.addr().port();
    // The proxy resolves and filters host names (this one filters nothing; Smokescreen
    // would refuse `localhost`). An address literal hookd refuses itself, before any proxy.
    insert_endpoint(&db, "ep_name", &format!("http://localhost:{port}/by-name")).await;
    insert_endpoint(
        &db,
        "ep_literal",
        &format!("http://127.0.0.1:{port}/literal"),
    )
    .await;

    let all = deliver(&api, 3, 6).await;
    let by_endpoint =
        |id: &str| -> Vec<&Value> { all.iter().filter(|d| d["endpoint_id"] == id).collect() };
    assert!(
        by_endpoint("ep_name")
            .iter()
            .all(|d| d["state"] == "succeeded"),
        "{all:?}"
    );
    for d in by_endpoint("ep_literal") {
        assert_eq!(d["state"], "failed", "{d}");
        assert_eq!(attempt_log(&api, d).await[0]["outcome"], "blocked");
    }

    let through = egress.requests();
    assert_eq!(
        through,
        vec![format!("POST http://localhost:{port}/by-name"); 3],
        "only the named endpoint's deliveries, each through the proxy"
    );
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.path, "/by-name");
        let headers: HashMap<String, String> = r.headers.clone();
        hookd_verify::Verifier::new()
            .verify_standard(SECRET, &headers, &r.body)
            .expect("the signature survives the proxy");
    }
    assert_eq!(
        decoy.connections(),
        0,
        "the decoy saw {:?}",
        decoy.requests()
    );
}

#[tokio::test]
async fn an_egress_proxy_must_be_http_or_socks5() {
    let db = TestDb::sqlite();
    for (value, accepted) in [
        ("http://127.0.0.1:4750", true),
        ("socks5://127.0.0.1:1080", true),
        ("socks5h://proxy.internal:1080", true),
        ("https://127.0.0.1:4750", false),
        ("ftp://127.0.0.1:21", false),
        ("127.0.0.1:4750", false),
        ("http://", false),
    ] {
        let out = Spec::new(HOOKD)
            .arg("migrate")
            .env("HOOKD_DATABASE_URL", &db.url)
            .env("HOOKD_EGRESS_PROXY", value)
            .output()
            .await;
        let stderr = &out.stderr;
        assert_eq!(out.status.success(), accepted, "{value}: {stderr}");
        if !accepted {
            assert!(
                stderr.contains("egress_proxy") && stderr.contains("HOOKD_EGRESS_PROXY"),
                "{value}: {stderr}"
            );
        }
    }
}
