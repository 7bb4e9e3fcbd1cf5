//! A scripted HTTP receiver on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names are lower case.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Wait this long before answering (to hang past the sender's timeout).
    pub delay: Duration,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn hang(delay: Duration) -> Reply {
        Reply {
            delay,
            ..Reply::ok()
        }
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

struct Inner {
    received: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    script: Mutex<Arc<Script>>,
}

/// A real HTTP server recording what it receives. Stops when dropped.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::start(|_, _| Reply::ok()).await
    }

    /// A receiver that answers the `n`th request (0-based, across all paths) with
    /// `script(n, request)`.
    pub async fn start(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let inner = Arc::new(Inner {
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            script: Mutex::new(Arc::new(script)),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            addr,
            inner,
            _stop: Arc::new(stop),
        }
    }

    /// Replaces the script (a receiver that "recovers").
    pub fn set_script(&self, script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.inner.script.lock().unwrap() = Arc::new(script);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        *self.inner.count.borrow()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.inner.count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        if reached.is_err() {
            panic!(
                "receiver got {} requests, expected {n} within {timeout:?}",
                self.count()
            );
        }
        self.received()
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
    };
    let script = inner.script.lock().unwrap().clone();
    let n = {
        let mut all = inner.received.lock().unwrap();
        all.push(req.clone());
        all.len() - 1
    };
    let reply = script(n, &req);
    // Count only after recording, so a waiter sees the request in `received()`.
    inner.count.send_modify(|c| *c += 1);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    response
}
