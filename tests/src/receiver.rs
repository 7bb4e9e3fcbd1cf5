//! The audit receiver: a real HTTP server on 127.0.0.1 that answers each request as a
//! behaviour says and counts, per `webhook-id`, every request and every 2xx it answered.
//!
//! A 2xx is counted when the handler answers it, before the bytes reach hookd: if hookd
//! dies in between, the event counts as delivered (the receiver has it) and the resend
//! that follows counts as a duplicate. That is the at-least-once contract seen from the
//! receiver's side.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use crate::event_number;

/// How to answer one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            delay: Duration::ZERO,
        }
    }

    pub fn ok() -> Answer {
        Answer::status(200)
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// `(webhook-id, 1-based number of this request for that id) -> answer`.
pub type Behaviour = dyn Fn(&str, u32) -> Answer + Send + Sync;

/// The suite's usual mix, by the number at the end of the event id:
/// - every 50th (n % 50 == 7) is "poison": 500 on every attempt, so it ends `failed`
///   after the full schedule;
/// - every 10th (n % 10 == 3) is "flaky": 503 on its first request, then 200 (a retry);
/// - the rest: 200.
pub fn standard_mix(id: &str, request: u32) -> Answer {
    let n = event_number(id);
    if n % 50 == 7 {
        Answer::status(500)
    } else if n % 10 == 3 && request == 1 {
        Answer::status(503)
    } else {
        Answer::ok()
    }
}

/// Whether [`standard_mix`] fails every attempt of this event.
pub fn is_poison(id: &str) -> bool {
    event_number(id) % 50 == 7
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// When it arrived, unix seconds (this machine's real clock).
    pub received_unix: i64,
    /// `webhook-timestamp` (the sender's clock, unix seconds), when sent.
    pub timestamp: Option<i64>,
    pub status: u16,
}

/// What the receiver saw of one event.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub requests: u32,
    /// 2xx answers given.
    pub ok: u32,
    pub arrivals: Vec<Arrival>,
}

struct Inner {
    behaviour: Box<Behaviour>,
    seen: Mutex<HashMap<String, Seen>>,
    requests: AtomicUsize,
    ok: AtomicUsize,
    without_id: AtomicUsize,
    answering: AtomicUsize,
    max_answering: AtomicUsize,
}

/// Stops when dropped.
pub struct AuditReceiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl AuditReceiver {
    pub async fn start(behaviour: impl Fn(&str, u32) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let inner = Arc::new(Inner {
            behaviour: Box::new(behaviour),
            seen: Mutex::new(HashMap::new()),
            requests: AtomicUsize::new(0),
            ok: AtomicUsize::new(0),
            without_id: AtomicUsize::new(0),
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
        AuditReceiver {
            addr,
            inner,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Requests answered with 2xx so far.
    pub fn ok_total(&self) -> usize {
        self.inner.ok.load(Ordering::SeqCst)
    }

    /// Requests so far.
    pub fn requests_total(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Requests that carried no `webhook-id`.
    pub fn without_id(&self) -> usize {
        self.inner.without_id.load(Ordering::SeqCst)
    }

    /// The most requests it was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_answering.load(Ordering::SeqCst)
    }

    /// What it saw, per `webhook-id`.
    pub fn seen(&self) -> HashMap<String, Seen> {
        self.inner.seen.lock().unwrap().clone()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let Some(id) = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        inner.without_id.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    };
    let timestamp = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let _answering = Answering::new(&inner);
    let at = Instant::now();
    let request = {
        let mut seen = inner.seen.lock().unwrap();
        let entry = seen.entry(id.clone()).or_default();
        entry.requests += 1;
        entry.requests
    };
    let answer = (inner.behaviour)(&id, request);
    inner
        .seen
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default()
        .arrivals
        .push(Arrival {
            at,
            received_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            timestamp,
            status: answer.status,
        });
    if !answer.delay.is_zero() {
        // If hookd gives up meanwhile, this future may be dropped: then no 2xx is counted.
        tokio::time::sleep(answer.delay).await;
    }
    if (200..300).contains(&answer.status) {
        inner.seen.lock().unwrap().entry(id).or_default().ok += 1;
        inner.ok.fetch_add(1, Ordering::SeqCst);
    }
    StatusCode::from_u16(answer.status).expect("valid status")
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
