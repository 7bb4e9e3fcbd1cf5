//! A hookd running in the test process against a real database, and helpers to drive it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hookd::{Application, Config};
use hookd_store::Store;
use hookd_testkit::{wait_until, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

/// The configuration tests start from: port 0, private targets allowed, a millisecond
/// retry ladder, fast polling and rescue.
pub fn test_config(db: &TestDb) -> Config {
    let mut c = Config::defaults();
    c.database_url = db.url.clone();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.allow_private_targets = true;
    c.retry_schedule = vec![Duration::from_millis(50), Duration::from_millis(100)];
    c.request_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(20);
    c.lease_duration = Duration::from_secs(10);
    c.rescue_schedule = "* * * * * *".into(); // every second: the scheduler's resolution
    c.gauge_schedule = "* * * * * *".into();
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub metrics: hookd::daemon::metrics::Metrics,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> TestApp {
        Self::spawn_with(test_config(db)).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let app = Application::build(config).await.expect("build hookd");
        let base = format!("http://127.0.0.1:{}", app.port());
        let store = app.store();
        let metrics = app.metrics();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp {
            base,
            http: reqwest::Client::new(),
            store,
            metrics,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Shuts down as SIGTERM would, and checks the shutdown was clean.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("shutdown in time")
            .expect("no panic")
            .expect("clean shutdown");
    }

    /// Waits up to `within` for hookd to stop by itself (nothing cancels it); returns what
    /// `run_until_stopped` returned.
    pub async fn stops_by_itself(mut self, within: Duration) -> anyhow::Result<()> {
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(within, handle)
            .await
            .unwrap_or_else(|_| panic!("hookd still runs {within:?} later"))
            .expect("run_until_stopped does not panic")
    }

    /// `GET /readyz`, or `None` when nothing answers (hookd stopped).
    pub async fn readyz(&self) -> Option<(StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .ok()?;
        let status = resp.status();
        Some((status, resp.json().await.ok()?))
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
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

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Registers an endpoint; panics unless 201.
    pub async fn endpoint(&self, body: Value) -> Value {
        let (status, ep) = self.post("/v1/endpoints", body).await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        ep
    }

    pub async fn event(&self, body: Value) -> Value {
        let (status, accepted) = self.post("/v1/events", body).await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status} {accepted}"
        );
        accepted
    }

    /// The deliveries matching a query string such as `event_id=e1`.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/v1/deliveries?limit=1000&{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["data"].as_array().unwrap().clone()
    }

    /// Waits until delivery `id` is in `state`, and returns it with its attempt log.
    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        wait_until(
            WAIT,
            &format!("delivery {id} to be {state}"),
            || async move {
                let (_, d) = self.get(&format!("/v1/deliveries/{id}")).await;
                (d["state"] == state).then_some(d)
            },
        )
        .await
    }

    /// Waits until every delivery is finished; returns them.
    pub async fn wait_all_finished(&self, expected: usize) -> Vec<Value> {
        wait_until(
            WAIT,
            &format!("{expected} finished deliveries"),
            || async move {
                let all = self.deliveries("").await;
                let done = all
                    .iter()
                    .filter(|d| d["state"] == "succeeded" || d["state"] == "failed")
                    .count();
                (all.len() == expected && done == expected).then_some(all)
            },
        )
        .await
    }
}

pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().expect("numeric id")
}

pub fn standard_endpoint(url: &str) -> Value {
    json!({ "url": url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" })
}

/// Kills the child on drop, so a failing test leaves no daemon behind.
pub struct Running(pub Option<std::process::Child>);

impl Running {
    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `GET url` answers 2xx (a process that is starting up).
pub async fn wait_ok(http: &reqwest::Client, url: &str, what: &str) {
    hookd_testkit::wait_until(WAIT, what, || {
        let request = http.get(url);
        async move {
            request
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
}
