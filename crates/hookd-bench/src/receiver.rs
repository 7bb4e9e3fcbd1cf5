//! The fast receiver: a bare hyper HTTP/1.1 server on 127.0.0.1 that answers at once,
//! verifies every Standard Webhooks signature, and records when each expected delivery first
//! succeeded.
//!
//! Endpoint `k` is the path `/ep/{k}`, and the event ids are `{prefix}{i}` with `i` in
//! `0..events`, so every (endpoint, event) pair has a slot in flat arrays of atomics: no
//! lock and no allocation per request beyond the body.
//!
//! `/sink` answers 200 to anything, unchecked and only counted: the destination of
//! deliveries a scenario makes besides the measured ones (a bulk resend of history).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Standard Webhooks receivers reject timestamps further than this from their clock.
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// What the receiver is told to expect.
pub struct Expect {
    /// Event ids are `{prefix}{i}`.
    pub prefix: String,
    pub events: usize,
    /// One signing key per endpoint (the bytes after `whsec_`, decoded).
    pub keys: Vec<Vec<u8>>,
    /// Requests answered 500, in thousandths; a delivery is failed at most
    /// `max_failures` times so that it always succeeds within hookd's retry schedule.
    pub fail_permille: u32,
    pub max_failures: u8,
}

/// Counters and per-delivery receipt times, shared with the request handlers.
pub struct State {
    /// Time zero of every `*_ns` value (shared with the producers).
    base: Instant,
    expect: Expect,
    /// Per (endpoint, event): ns since `base` + 1 of the first 2xx answer; 0 = not yet.
    first_ok: Vec<AtomicU64>,
    failures: Vec<AtomicU8>,
    pub requests: AtomicU64,
    pub delivered: AtomicU64,
    pub answered_500: AtomicU64,
    pub duplicates: AtomicU64,
    pub invalid_signatures: AtomicU64,
    pub unexpected: AtomicU64,
    /// Requests to `/sink`.
    pub sink: AtomicU64,
    pub last_ok_ns: AtomicU64,
    pub first_request_ns: AtomicU64,
}

impl State {
    pub fn expected(&self) -> u64 {
        (self.expect.events * self.expect.keys.len()) as u64
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Receipt time (ns since base) of each delivered (endpoint, event), by event index.
    pub fn receipts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let n = self.expect.events;
        self.first_ok
            .iter()
            .enumerate()
            .filter_map(move |(slot, t)| {
                let t = t.load(Ordering::Acquire);
                (t != 0).then(|| (slot % n, t - 1))
            })
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    fn handle(
        &self,
        endpoint: Option<usize>,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> StatusCode {
        let now = self.now_ns();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let _ =
            self.first_request_ns
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(k), Some(id)) = (
            endpoint.filter(|k| *k < self.expect.keys.len()),
            header("webhook-id"),
        ) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return StatusCode::NOT_FOUND;
        };
        if !verify(
            &self.expect.keys[k],
            id,
            header("webhook-timestamp"),
            header("webhook-signature"),
            body,
        ) {
            // Counted, but answered 200: a broken signature is a failed run, and retrying
            // it would only make the run time out instead of finishing and reporting it.
            self.invalid_signatures.fetch_add(1, Ordering::Relaxed);
        }
        let index = id
            .strip_prefix(self.expect.prefix.as_str())
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < self.expect.events);
        let Some(i) = index else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return StatusCode::OK;
        };
        let slot = k * self.expect.events + i;
        if self.expect.fail_permille > 0 {
            let failed = self.failures[slot].load(Ordering::Relaxed);
            if failed < self.expect.max_failures
                && mix((slot as u64) << 8 | failed as u64) % 1000 < self.expect.fail_permille as u64
            {
                self.failures[slot].fetch_add(1, Ordering::Relaxed);
                self.answered_500.fetch_add(1, Ordering::Relaxed);
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
        }
        if self.first_ok[slot]
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.last_ok_ns.fetch_max(now - 1, Ordering::AcqRel);
            self.delivered.fetch_add(1, Ordering::AcqRel);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        StatusCode::OK
    }
}

/// splitmix64: a deterministic, well-spread choice of which requests fail.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Checks `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
/// (several space-separated signatures allowed) and the timestamp's freshness.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> bool {
    let (Some(ts), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Ok(ts_secs) = ts.parse::<i64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    if (now - ts_secs).abs() > TIMESTAMP_TOLERANCE_SECS {
        return false;
    }
    let expected = sign(key, id, ts, body);
    signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

/// The base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// A running receiver. Dropping it stops accepting; open connections end when their
/// clients close them.
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Receiver {
    pub async fn start(base: Instant, expect: Expect) -> anyhow::Result<Receiver> {
        let slots = expect.events * expect.keys.len();
        let state = Arc::new(State {
            base,
            first_ok: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            failures: (0..if expect.fail_permille > 0 { slots } else { 0 })
                .map(|_| AtomicU8::new(0))
                .collect(),
            expect,
            requests: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            answered_500: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            invalid_signatures: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            sink: AtomicU64::new(0),
            last_ok_ns: AtomicU64::new(0),
            first_request_ns: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            state,
            accept,
        })
    }

    pub fn url(&self, endpoint: usize) -> String {
        format!("http://{}/ep/{endpoint}", self.addr)
    }

    pub fn sink_url(&self) -> String {
        format!("http://{}/sink", self.addr)
    }
}

async fn respond(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/sink" {
        let _ = req.into_body().collect().await;
        state.sink.fetch_add(1, Ordering::Relaxed);
        return Response::new(Full::new(Bytes::new()));
    }
    let endpoint = req
        .uri()
        .path()
        .strip_prefix("/ep/")
        .and_then(|k| k.parse::<usize>().ok());
    let (parts, body) = req.into_parts();
    let status = match body.collect().await {
        Ok(body) => state.handle(endpoint, &parts.headers, &body.to_bytes()),
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify() {
        let key = b"0123456789abcdef0123456789abcdef";
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let good = format!("v1,{}", sign(key, "e-1", &now, b"{}"));
        assert!(verify(key, "e-1", Some(&now), Some(&good), b"{}"));
        assert!(verify(
            key,
            "e-1",
            Some(&now),
            Some(&format!("v1,AAAA {good}")),
            b"{}"
        ));
        assert!(!verify(key, "e-2", Some(&now), Some(&good), b"{}"));
        assert!(!verify(key, "e-1", Some(&now), Some(&good), b"{ }"));
        assert!(!verify(key, "e-1", Some("1000"), Some(&good), b"{}"));
        assert!(!verify(key, "e-1", None, Some(&good), b"{}"));
    }

    #[test]
    fn failures_are_spread() {
        let failed = (0..100_000u64).filter(|s| mix(s << 8) % 1000 < 100).count();
        assert!((9_000..11_000).contains(&failed), "{failed}");
    }
}
