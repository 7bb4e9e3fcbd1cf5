//! A client of hookd's admin API, for tests: every call returns the status and the JSON
//! body, and the common steps (register an endpoint, enqueue an event, list deliveries)
//! check their status.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// What the API answered to [`Api::request`].
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// A header's value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The admin API at `base` (`http://127.0.0.1:PORT`), reached directly whatever the
/// proxy variables say.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Calls `method path` with these extra headers and an optional JSON body; returns the
    /// whole answer, its body as JSON (`Null` when empty, a string when not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("admin API reachable");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("admin API body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Calls `method path` with an optional JSON body; returns the status and the body
    /// (`Null` when empty, a string when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.request(method, path, &[], body).await;
        (answer.status, answer.body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `GET path`, checked to answer 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `GET /readyz`: its status and body, or `None` when nothing answers.
    pub async fn readyz(&self) -> Option<(StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = resp.status();
        Some((status, resp.json().await.ok()?))
    }

    /// Registers an endpoint; panics unless 201. Returns it.
    pub async fn endpoint(&self, body: Value) -> Value {
        let (status, ep) = self.post("/v1/endpoints", body).await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        ep
    }

    /// Enqueues an event; panics unless 202 (or 200, a duplicate). Returns the answer.
    pub async fn event(&self, body: Value) -> Value {
        let (status, accepted) = self.post("/v1/events", body).await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status} {accepted}"
        );
        accepted
    }

    /// Every delivery matching `query` (`event_id=e1`, `state=failed`...), following
    /// `next_cursor`.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/deliveries?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get_ok(&path).await;
            all.extend(page["data"].as_array().expect("data").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
        panic!("more than 10,000 pages of deliveries");
    }
}
