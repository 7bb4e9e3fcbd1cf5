//! The scripted HTTP receiver on 127.0.0.1 that every test suite delivers to.
//!
//! It records every request, answers each as a script says (a status, headers, a body, a
//! delay to hang past the sender's timeout), and counts what the at-least-once audit needs:
//! requests per `webhook-id`, 2xx answers actually given, the most answered at once.
//!
//! A 2xx counts as given when the handler answers it, before the bytes reach the sender: if
//! the sender dies in between, the receiver has the event and the resend that follows is a
//! duplicate. A request whose sender goes away during the delay gets no answer, and none is
//! counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names are lower case.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    /// When it arrived (monotonic clock).
    pub at: Instant,
    /// When it arrived, unix seconds of this machine's real clock (to compare with the
    /// sender's `webhook-timestamp`).
    pub unix: i64,
    /// This is the `nth` request (1-based) carrying its `webhook-id`; 0 without one.
    pub nth: u32,
    /// The status answered, once it was (after any delay); `None` before that, and for
    /// good when the sender went away first.
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    /// `webhook-timestamp` (the sender's clock, unix seconds), when sent.
    pub fn timestamp(&self) -> Option<i64> {
        self.header("webhook-timestamp")?.parse().ok()
    }

    /// Whether a 2xx was answered.
    pub fn got_2xx(&self) -> bool {
        self.answered.is_some_and(|s| (200..300).contains(&s))
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

    /// 200 after `delay`.
    pub fn hang(delay: Duration) -> Reply {
        Reply::ok().after(delay)
    }

    /// This answer, given after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
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

#[derive(Default)]
struct Log {
    all: Vec<Received>,
    per_id: HashMap<String, u32>,
}

struct Inner {
    log: Mutex<Log>,
    /// Requests recorded so far (what `wait_for` waits on).
    count: watch::Sender<usize>,
    script: Mutex<Arc<Script>>,
    ok: AtomicUsize,
    answering: AtomicUsize,
    max_answering: AtomicUsize,
}

/// A real HTTP server recording what it receives. Stops when the last clone is dropped.
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
            log: Mutex::default(),
            count: watch::channel(0).0,
            script: Mutex::new(Arc::new(script)),
            ok: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            max_answering: AtomicUsize::new(0),
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

    /// A receiver that answers by event: `behaviour(webhook-id, nth request for that id)`;
    /// a request without `webhook-id` gets 400.
    pub async fn per_event(
        behaviour: impl Fn(&str, u32) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Self::start(move |_, r| match r.webhook_id() {
            Some(id) => behaviour(id, r.nth),
            None => Reply::status(400),
        })
        .await
    }

    /// Replaces the script (a receiver that "recovers").
    pub fn set_script(&self, script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.inner.script.lock().unwrap() = Arc::new(script);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base())
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.log.lock().unwrap().all.clone()
    }

    /// The requests so far by `webhook-id`, each list in arrival order.
    pub fn by_id(&self) -> HashMap<String, Vec<Received>> {
        let mut by_id: HashMap<String, Vec<Received>> = HashMap::new();
        for r in &self.inner.log.lock().unwrap().all {
            if let Some(id) = r.webhook_id() {
                by_id.entry(id.to_string()).or_default().push(r.clone());
            }
        }
        by_id
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        *self.inner.count.borrow()
    }

    /// 2xx answers given so far.
    pub fn ok_count(&self) -> usize {
        self.inner.ok.load(Ordering::SeqCst)
    }

    /// Requests that carried no `webhook-id`.
    pub fn without_id(&self) -> usize {
        let log = self.inner.log.lock().unwrap();
        log.all.iter().filter(|r| r.webhook_id().is_none()).count()
    }

    /// The most requests it was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_answering.load(Ordering::SeqCst)
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
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _answering = Answering::new(&inner);
    let mut req = Received {
        method: method.to_string(),
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
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        nth: 0,
        answered: None,
    };
    let script = inner.script.lock().unwrap().clone();
    let n = {
        let mut log = inner.log.lock().unwrap();
        if let Some(id) = req.webhook_id() {
            let nth = log.per_id.entry(id.to_string()).or_default();
            *nth += 1;
            req.nth = *nth;
        }
        log.all.push(req.clone());
        log.all.len() - 1
    };
    let reply = script(n, &req);
    // Count only after recording, so a waiter sees the request in `received()`.
    inner.count.send_modify(|c| *c += 1);
    if !reply.delay.is_zero() {
        // If the sender goes away meanwhile, this future is dropped: no answer is recorded.
        tokio::time::sleep(reply.delay).await;
    }
    inner.log.lock().unwrap().all[n].answered = Some(reply.status);
    if (200..300).contains(&reply.status) {
        inner.ok.fetch_add(1, Ordering::SeqCst);
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

/// Counts a request being answered, until dropped (even if the handler is cancelled).
struct Answering<'a>(&'a Inner);

impl<'a> Answering<'a> {
    fn new(inner: &'a Inner) -> Self {
        let now = inner.answering.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_answering.fetch_max(now, Ordering::SeqCst);
        Answering(inner)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::SeqCst);
    }
}
