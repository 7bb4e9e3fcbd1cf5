//! `hookd listen` and `hookd send-test` as a developer runs them: the real binary receiving
//! real deliveries from a real `hookd serve` (SQLite), checked through `--json` output and
//! `GET /_requests`.

use crate::support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use hookd_testkit::{wait_until, Api, Process, Receiver, Reply, Spec, TestDb};

const HOOKD: &str = env!("CARGO_BIN_EXE_hookd");
const WAIT: Duration = Duration::from_secs(20);
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOSS_SECRET: &str = "toss-secret-for-the-listen-test";

/// `hookd listen --json` on a free port; its stdout lines are read as JSON.
struct Listener {
    process: Process,
    base: String,
    http: reqwest::Client,
}

impl Listener {
    async fn start(args: &[&str]) -> Listener {
        let process = Spec::new(HOOKD)
            .name("listen")
            .args(["listen", "--json"])
            .args(args.iter().copied())
            .port_arg("--port")
            .ready_at("/_requests")
            .start()
            .await;
        Listener {
            base: process.base(),
            http: process.api().http.clone(),
            process,
        }
    }

    fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    async fn requests(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/_requests", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.json().await.unwrap()
    }

    /// Waits until `GET /_requests` lists at least `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        wait_until(WAIT, &format!("{n} requests at {}", self.base), || async {
            let all = self.requests().await;
            (all.len() >= n).then_some(all)
        })
        .await
    }

    /// Waits until `--json` printed at least `n` lines.
    async fn wait_for_lines(&self, n: usize) -> Vec<Value> {
        wait_until(WAIT, "--json output", || async {
            let lines: Vec<Value> = self
                .process
                .stdout_lines()
                .iter()
                .map(|line| {
                    serde_json::from_str(line).unwrap_or_else(|e| {
                        panic!("--json printed a line that is not JSON ({e}): {line}")
                    })
                })
                .collect();
            (lines.len() >= n).then_some(lines)
        })
        .await
    }
}

/// `hookd serve` on a temporary SQLite database with fast retries.
struct Hookd {
    _process: Process,
    _db: TestDb,
    api: Api,
    base: String,
}

impl Hookd {
    async fn start() -> Hookd {
        let db = TestDb::sqlite();
        let process = support::serve(&db)
            .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
            .env("HOOKD_RETRY_SCHEDULE", "100ms,100ms")
            .env("HOOKD_POLL_INTERVAL", "50ms")
            .env("HOOKD_LOG_LEVEL", "warn")
            .start()
            .await;
        let api = process.api().clone();
        Hookd {
            base: api.base.clone(),
            api,
            _process: process,
            _db: db,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.api.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    async fn endpoint(&self, url: &str, scheme: &str, secret: &str) -> String {
        let ep = self
            .call(
                reqwest::Method::POST,
                "/v1/endpoints",
                Some(json!({ "url": url, "signature_scheme": scheme, "secret": secret })),
            )
            .await;
        ep["id"].as_str().unwrap().to_string()
    }

    async fn send(&self, endpoint: &str, payload: Value) -> String {
        let accepted = self
            .call(
                reqwest::Method::POST,
                "/v1/events",
                Some(json!({
                    "event_type": "purchase",
                    "payload": payload,
                    "endpoint_id": endpoint,
                })),
            )
            .await;
        assert_eq!(accepted["deliveries"], 1, "{accepted}");
        accepted["event_id"].as_str().unwrap().to_string()
    }
}

/// Resends `original` (a recorded request) to `listener` with a different body.
async fn send_tampered(listener: &Listener, original: &Value, body: &str) {
    let mut request = listener.http.post(listener.url()).body(body.to_string());
    for (name, value) in original["headers"].as_object().unwrap() {
        if !matches!(name.as_str(), "host" | "content-length") {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_standard_and_toss_deliveries_and_spots_tampering() {
    let hookd = Hookd::start().await;
    let standard = Listener::start(&["--secret", STANDARD_SECRET]).await;
    let toss = Listener::start(&["--scheme", "toss", "--secret", TOSS_SECRET]).await;
    let unchecked = Listener::start(&[]).await;

    let ep_standard = hookd
        .endpoint(&standard.url(), "standard", STANDARD_SECRET)
        .await;
    let ep_toss = hookd.endpoint(&toss.url(), "toss", TOSS_SECRET).await;
    let ep_unchecked = hookd
        .endpoint(&unchecked.url(), "standard", STANDARD_SECRET)
        .await;
    let payload = json!({ "orderId": "o-1", "amount": 9900, "note": "한글" });
    let id_standard = hookd.send(&ep_standard, payload.clone()).await;
    let id_toss = hookd.send(&ep_toss, payload.clone()).await;
    hookd.send(&ep_unchecked, payload.clone()).await;

    // standard: valid, in GET /_requests and in the --json line alike.
    let got = standard.wait_for(1).await;
    let r = &got[0];
    assert_eq!(r["verdict"]["result"], "valid", "{r}");
    assert_eq!(r["verdict"]["scheme"], "standard", "{r}");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/hook");
    assert_eq!(r["headers"]["webhook-id"], id_standard.as_str());
    assert_eq!(r["json"], payload);
    assert_eq!(r["answer"]["status"], 200);
    assert!(r["since_previous_ms"].is_null(), "{r}");
    let line = &standard.wait_for_lines(1).await[0];
    assert_eq!(line["verdict"]["result"], "valid", "{line}");
    assert_eq!(line["headers"]["webhook-id"], id_standard.as_str());

    // toss: valid.
    let got = toss.wait_for(1).await;
    let t = &got[0];
    assert_eq!(t["verdict"]["result"], "valid", "{t}");
    assert_eq!(t["verdict"]["scheme"], "toss", "{t}");
    assert_eq!(t["headers"]["webhook-id"], id_toss.as_str());
    assert!(t["headers"]["tosspayments-webhook-signature"].is_string());

    // Without --secret: not checked.
    let got = unchecked.wait_for(1).await;
    assert_eq!(got[0]["verdict"]["result"], "not_checked", "{}", got[0]);

    // The same headers with a tampered body: invalid, for each scheme.
    send_tampered(&standard, r, r#"{"orderId":"o-1","amount":1}"#).await;
    let got = standard.wait_for(2).await;
    let bad = &got[1];
    assert_eq!(bad["verdict"]["result"], "invalid", "{bad}");
    assert_eq!(bad["verdict"]["reason"], "no matching signature", "{bad}");
    assert!(bad["since_previous_ms"].is_u64(), "{bad}");
    let line = &standard.wait_for_lines(2).await[1];
    assert_eq!(line["verdict"]["result"], "invalid", "{line}");

    send_tampered(&toss, t, r#"{"orderId":"o-1","amount":1}"#).await;
    let got = toss.wait_for(2).await;
    assert_eq!(got[1]["verdict"]["result"], "invalid", "{}", got[1]);
    assert_eq!(got[1]["verdict"]["reason"], "no matching signature");

    // send-test: a sample event through the admin API, its outcome printed.
    let out = Spec::new(HOOKD)
        .args([
            "send-test",
            "--endpoint",
            &ep_standard,
            "--url",
            &hookd.base,
        ])
        .output()
        .await;
    let stdout = &out.stdout;
    assert!(out.status.success(), "{stdout}{}", out.stderr);
    assert!(stdout.contains("event evt_"), "{stdout}");
    assert!(stdout.contains("succeeded: HTTP 200"), "{stdout}");
    let got = standard.wait_for(3).await;
    assert_eq!(got[2]["json"]["sample"]["amount"], 9900, "{}", got[2]);
    assert_eq!(got[2]["verdict"]["result"], "valid", "{}", got[2]);

    // send-test to an unknown endpoint: the API's 404, and a failure exit code.
    let out = Spec::new(HOOKD)
        .args(["send-test", "--endpoint", "ep_nope", "--url", &hookd.base])
        .output()
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("404"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_500_makes_hookd_retry() {
    let hookd = Hookd::start().await;
    let listener = Listener::start(&["--status", "500", "--secret", STANDARD_SECRET]).await;
    let ep = hookd
        .endpoint(&listener.url(), "standard", STANDARD_SECRET)
        .await;
    let event_id = hookd.send(&ep, json!({ "n": 1 })).await;

    // Three attempts (the first and two retries), each answered 500, each signed anew.
    let got = listener.wait_for(3).await;
    for r in &got {
        assert_eq!(r["headers"]["webhook-id"], event_id.as_str(), "{r}");
        assert_eq!(r["answer"]["status"], 500, "{r}");
        assert_eq!(r["verdict"]["result"], "valid", "{r}");
    }

    let list = hookd
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries?event_id={event_id}"),
            None,
        )
        .await;
    let id = list["data"][0]["id"].as_i64().unwrap();
    let delivery = wait_until(WAIT, "the delivery to fail for good", || async {
        let d = hookd
            .call(reqwest::Method::GET, &format!("/v1/deliveries/{id}"), None)
            .await;
        (d["state"] == "failed").then_some(d)
    })
    .await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    let log = delivery["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{delivery}");
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1, "{a}");
        assert_eq!(a["status_code"], 500, "{a}");
        assert_eq!(a["trigger"], "auto", "{a}");
    }
    assert_eq!(listener.requests().await.len(), 3);
    assert_eq!(listener.wait_for_lines(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_the_app_and_answers_with_its_status() {
    let app = Receiver::start(|_, _| Reply::status(201).with_body("created by the app")).await;
    let app_url = app.url();
    let listener = Listener::start(&["--forward", &app_url, "--secret", STANDARD_SECRET]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = r#"{"hello":"app"}"#;
    let signature =
        hookd_verify::sign_standard(STANDARD_SECRET, "msg_fwd", now, body.as_bytes()).unwrap();
    let response = listener
        .http
        .post(format!("{}/some/path", listener.base))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_fwd")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", &signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.text().await.unwrap(), "created by the app");

    let got = app.wait_for(1, WAIT).await;
    assert_eq!(got[0].body_str(), body);
    assert_eq!(got[0].header("webhook-id"), Some("msg_fwd"));
    assert_eq!(got[0].header("webhook-signature"), Some(signature.as_str()));
    assert_eq!(got[0].header("content-type"), Some("application/json"));

    let r = &listener.wait_for(1).await[0];
    assert_eq!(r["path"], "/some/path");
    assert_eq!(r["verdict"]["result"], "valid", "{r}");
    assert_eq!(r["answer"]["status"], 201, "{r}");
    assert_eq!(r["answer"]["because"], "forwarded", "{r}");
    assert_eq!(r["answer"]["forward"]["status"], 201, "{r}");
    assert_eq!(r["answer"]["forward"]["body"], "created by the app", "{r}");

    // --fail-rate 1.0 always answers 500, and never forwards.
    let failing = Listener::start(&["--fail-rate", "1.0", "--forward", &app_url]).await;
    let response = failing
        .http
        .post(failing.url())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let r = &failing.wait_for(1).await[0];
    assert_eq!(r["answer"]["because"], "fail_rate", "{r}");
    assert_eq!(app.count(), 1);
}

#[test]
fn listen_and_send_test_have_help_and_check_their_flags() {
    for (command, flags) in [
        (
            "listen",
            &[
                "--port",
                "--secret",
                "--scheme",
                "--status",
                "--delay",
                "--fail-rate",
                "--forward",
                "--json",
            ][..],
        ),
        ("send-test", &["--endpoint", "--url", "--token"][..]),
    ] {
        let out = Command::new(HOOKD)
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(text.contains(flag), "{command} --help lacks {flag}: {text}");
        }
    }
    for bad in [
        &["--scheme", "none"][..],
        &["--status", "42"],
        &["--delay", "soon"],
        &["--fail-rate", "2"],
    ] {
        let out = Command::new(HOOKD)
            .arg("listen")
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
