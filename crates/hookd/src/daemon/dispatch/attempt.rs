//! One HTTP attempt: build the signed request, send it under a whole-request timeout, and
//! classify what happened. Nothing here touches the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{SecondsFormat, Utc};
use reqwest::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use url::Url;

use hookd_store::{Claimed, Outcome};

use crate::daemon::otlp::Spans;
use crate::daemon::trace_context::TraceParent;
use crate::daemon::{signing, ssrf};

/// `hookd/<version>`, sent as `user-agent`.
pub const USER_AGENT: &str = concat!("hookd/", env!("CARGO_PKG_VERSION"));

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The first `max_response_bytes` of the answer, as text.
    pub response_body: Option<String>,
    /// The receiver's `Retry-After`, on a 429 or 503.
    pub retry_after: Option<Duration>,
    /// When the request started, ms since the epoch (this machine's clock).
    pub started_at_ms: i64,
    pub duration: Duration,
}

/// Sends attempts through one shared keep-alive client.
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<ssrf::TargetPolicy>,
    max_response_bytes: usize,
    urls: ParsedUrls,
    /// Where each attempt's span goes, when traces are exported.
    spans: Option<Arc<Spans>>,
}

/// Endpoint URLs already parsed. Parsing the same text again for every attempt was 5% of
/// the runtime's CPU at saturation; a hit costs a lock and a copy.
#[derive(Default)]
struct ParsedUrls(Mutex<HashMap<String, Url>>);

impl ParsedUrls {
    /// Entries kept at most; the map starts over when full (endpoints are few, so it is
    /// full only after many URL changes).
    const MAX: usize = 4096;

    fn get(&self, text: &str) -> Result<Url, url::ParseError> {
        let mut urls = self.0.lock().expect("url cache lock");
        if let Some(url) = urls.get(text) {
            return Ok(url.clone());
        }
        let url = Url::parse(text)?;
        if urls.len() >= Self::MAX {
            urls.clear();
        }
        urls.insert(text.to_string(), url.clone());
        Ok(url)
    }
}

impl Sender {
    /// With `egress_proxy`, every request goes through that proxy, which resolves (`http`,
    /// `socks5h`) and filters the destination's name; without it, straight to the
    /// destination. Either way the environment's proxy variables are ignored.
    pub fn new(
        policy: ssrf::TargetPolicy,
        egress_proxy: Option<&Url>,
        max_response_bytes: usize,
        pool_per_host: usize,
    ) -> Sender {
        let policy = Arc::new(policy);
        let mut builder = reqwest::Client::builder()
            // A redirect is a failed attempt: following it would send the payload (and the
            // bearer token) somewhere the endpoint's owner did not register.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .pool_max_idle_per_host(pool_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .https_only(false)
            // Never `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY`: through a proxy, the guarded
            // resolver would only ever see the proxy's name, and every destination would pass.
            .no_proxy();
        if let Some(proxy) = egress_proxy {
            let proxy_all = reqwest::Proxy::all(proxy.as_str()).expect("a checked proxy URL");
            builder = builder.proxy(proxy_all);
            tracing::info!(
                proxy = %crate::daemon::redact::redact(proxy.as_str()),
                "deliveries go through the egress proxy"
            );
        }
        if !policy.allow_private {
            builder = builder.dns_resolver(match egress_proxy.and_then(Url::host_str) {
                Some(proxy_host) => ssrf::resolver_with_proxy(policy.clone(), proxy_host),
                None => ssrf::resolver(policy.clone()),
            });
        }
        Sender {
            client: builder
                .build()
                .expect("the HTTP client's settings are valid"),
            policy,
            max_response_bytes,
            urls: ParsedUrls::default(),
            spans: None,
        }
    }

    /// Records a span of every attempt with `spans`.
    pub fn with_spans(mut self, spans: Option<Arc<Spans>>) -> Sender {
        self.spans = spans;
        self
    }

    /// Makes one attempt of `claimed`, giving up after `timeout`.
    pub async fn send(&self, claimed: &Claimed, timeout: Duration) -> AttemptResult {
        let started = Instant::now();
        let now = SystemTime::now();
        let started_at_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let mut result = AttemptResult {
            outcome: Outcome::NetworkError,
            status: None,
            error: None,
            response_body: None,
            retry_after: None,
            started_at_ms,
            duration: Duration::ZERO,
        };
        // Every attempt carries a `traceparent`: the span's when traces are exported, else one
        // with ids of its own, in the producer's trace when the event has one.
        let (span, trace) = match &self.spans {
            Some(spans) => {
                let (span, trace) = spans.open(claimed, now);
                (Some(span), trace)
            }
            None => (
                None,
                TraceParent::for_attempt(
                    claimed.traceparent.as_deref(),
                    rand::random(),
                    rand::random(),
                ),
            ),
        };
        let (outcome, status, error, body, retry_after) =
            self.exchange(claimed, timeout, started, now, trace).await;
        if let Some(span) = span {
            span.close(outcome, status, error.as_deref(), SystemTime::now());
        }
        result.retry_after = retry_after;
        result.outcome = outcome;
        result.status = status;
        result.error = error;
        result.response_body = body;
        result.duration = started.elapsed();
        result
    }

    async fn exchange(
        &self,
        claimed: &Claimed,
        timeout: Duration,
        started: Instant,
        now: SystemTime,
        trace: TraceParent,
    ) -> (
        Outcome,
        Option<u16>,
        Option<String>,
        Option<String>,
        Option<Duration>,
    ) {
        let request = match self.build(claimed, now, trace) {
            Ok(r) => r,
            Err((outcome, message)) => return (outcome, None, Some(message), None, None),
        };
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return (Outcome::Timeout, None, Some(timed_out(timeout)), None, None),
            Ok(Err(e)) => {
                let (outcome, message) = classify(&e, timeout);
                return (outcome, None, Some(message), None, None);
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let retry_after = match status.as_u16() {
            429 | 503 => response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::daemon::retry::parse_retry_after(v, Utc::now())),
            _ => None,
        };
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        // The status decides the outcome; the body is kept for the log, as far as it arrives
        // within the same deadline.
        let mut body = Vec::new();
        let _ = tokio::time::timeout_at(
            deadline,
            read_prefix(&mut response, &mut body, self.max_response_bytes),
        )
        .await;
        let body = (!body.is_empty()).then(|| truncate_utf8(&body, self.max_response_bytes));
        let code = Some(status.as_u16());
        if status.is_success() {
            (Outcome::Success, code, None, body, None)
        } else if status.is_redirection() {
            let to = location.map(|l| format!(" to {l}")).unwrap_or_default();
            (
                Outcome::HttpError,
                code,
                Some(format!("HTTP {status}: redirect{to} not followed")),
                body,
                None,
            )
        } else {
            (
                Outcome::HttpError,
                code,
                Some(format!("HTTP {status}")),
                body,
                retry_after,
            )
        }
    }

    fn build(
        &self,
        c: &Claimed,
        now: SystemTime,
        trace: TraceParent,
    ) -> Result<reqwest::RequestBuilder, (Outcome, String)> {
        if let Some(reason) = &c.endpoint.unreadable {
            // Its secret and bearer token could not be decrypted: nothing to sign or send
            // with. A failed attempt on the ladder, so that fixing the key recovers it.
            return Err((Outcome::NetworkError, reason.clone()));
        }
        let url = self.urls.get(&c.endpoint.url).map_err(|e| {
            (
                Outcome::NetworkError,
                format!("endpoint URL is not valid: {e}"),
            )
        })?;
        if self.policy.https_only && url.scheme() != "https" {
            return Err((
                Outcome::Blocked,
                "https only: the endpoint URL is http".to_string(),
            ));
        }
        if !self.policy.allow_private {
            if let Some(ip) = ssrf::literal_ip(&url) {
                if !self.policy.permits(ip) {
                    let blocked = ssrf::Blocked {
                        host: ip.to_string(),
                        addrs: ip.to_string(),
                    };
                    return Err((Outcome::Blocked, blocked.to_string()));
                }
            }
        }
        let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let rfc3339 =
            chrono::DateTime::<Utc>::from(now).to_rfc3339_opts(SecondsFormat::Millis, true);
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let mut secrets = vec![c.endpoint.secret.as_str()];
        if let (Some(previous), Some(until)) = (
            &c.endpoint.previous_secret,
            c.endpoint.previous_secret_expires_at,
        ) {
            // A previous secret the scheme cannot use is skipped rather than failing the send.
            let usable = c.endpoint.signature_scheme != hookd_store::SignatureScheme::Standard
                || signing::standard_key(previous).is_ok();
            if now_ms < until && usable {
                secrets.push(previous);
            }
        }
        let signature = signing::headers(
            c.endpoint.signature_scheme,
            &secrets,
            &c.event_id,
            &c.payload,
            unix,
            &rfc3339,
        )
        .map_err(|e| {
            (
                Outcome::NetworkError,
                format!("cannot sign the request: {e}"),
            )
        })?;

        let mut request = self.client.post(url);
        // Static headers first, so that the protocol's own headers always win.
        for (name, value) in &c.endpoint.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                request = request.header(n, v);
            }
        }
        request = request
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", c.event_id.as_str())
            .header("traceparent", trace.to_string());
        if let Some(token) = &c.endpoint.bearer_token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                (
                    Outcome::NetworkError,
                    "bearer_token is not a valid header value".to_string(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        for (name, value) in signature {
            request = request.header(name, value);
        }
        Ok(request.body(c.payload.clone()))
    }
}

async fn read_prefix(response: &mut reqwest::Response, into: &mut Vec<u8>, max: usize) {
    while into.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => into.extend_from_slice(&chunk[..chunk.len().min(max - into.len())]),
            _ => return,
        }
    }
}

/// The first `max` bytes as text, cut at a character boundary.
fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    // NUL is valid UTF-8 but PostgreSQL TEXT refuses it: store U+FFFD instead.
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).replace('\0', "\u{FFFD}");
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "no answer within {}",
        crate::duration::format_duration(timeout)
    )
}

/// Outcome and message of a request that got no answer. The message names the cause but
/// never the URL (it may carry a token in its query string).
fn classify(error: &reqwest::Error, timeout: Duration) -> (Outcome, String) {
    if ssrf::is_blocked(error) {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(b) = e.downcast_ref::<ssrf::Blocked>() {
                return (Outcome::Blocked, b.to_string());
            }
            source = e.source();
        }
    }
    if error.is_timeout() {
        return (Outcome::Timeout, timed_out(timeout));
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = e.source();
    }
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "response failed"
    } else {
        "request failed"
    };
    if causes.is_empty() {
        (Outcome::NetworkError, kind.to_string())
    } else {
        (
            Outcome::NetworkError,
            format!("{kind}: {}", causes.join(": ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_urls_are_reused_and_bounded() {
        let urls = ParsedUrls::default();
        for (text, parsed) in [
            (
                "http://127.0.0.1:9/hook?a=1",
                Some("http://127.0.0.1:9/hook?a=1"),
            ),
            ("HTTPS://Example.COM/x", Some("https://example.com/x")),
            ("not a url", None),
        ] {
            for _ in 0..2 {
                assert_eq!(
                    urls.get(text).ok().as_ref().map(Url::as_str),
                    parsed,
                    "{text}"
                );
            }
        }
        // Errors are not kept; each valid text once.
        assert_eq!(urls.0.lock().unwrap().len(), 2);
        for i in 0..ParsedUrls::MAX + 1 {
            urls.get(&format!("http://h/{i}")).unwrap();
        }
        assert!(urls.0.lock().unwrap().len() <= ParsedUrls::MAX);
    }

    #[test]
    fn truncation_keeps_text_whole() {
        assert_eq!(truncate_utf8(b"hello", 10), "hello");
        assert_eq!(truncate_utf8(b"hello", 3), "hel");
        assert_eq!(truncate_utf8("héllo".as_bytes(), 2), "h");
        assert_eq!(truncate_utf8("héllo".as_bytes(), 3), "hé");
        assert_eq!(truncate_utf8(b"", 3), "");
        assert_eq!(truncate_utf8(b"bin\0ary", 10), "bin\u{FFFD}ary");
    }
}
