//! `hookd listen`: a local webhook receiver for development.
//!
//! It listens on 127.0.0.1, prints every request readably (or as one JSON object per line
//! with `--json`), checks its signature with [`hookd_verify`] when given the secret, and
//! answers as told: a fixed status, after a delay, failing at random, or with whatever the
//! developer's own app answers when the request is forwarded there. The last 100 requests
//! are kept in memory and served at `GET /_requests` (oldest first; `DELETE` empties it).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Local, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use hookd_verify::{Scheme, Verifier};

use crate::duration;

/// How many requests `GET /_requests` keeps.
pub const KEEP: usize = 100;

/// The largest body accepted (hookd's own payload limit is far below this).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How much of a body is printed in the readable output.
const PRINT_BODY: usize = 16 * 1024;

/// Run a local receiver that prints each webhook, checks its signature and answers as told.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed on stderr)
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// The endpoint's secret, to check signatures (whsec_... for standard) [env: HOOKD_LISTEN_SECRET]
    #[arg(
        long,
        value_name = "SECRET",
        env = "HOOKD_LISTEN_SECRET",
        hide_env = true
    )]
    pub secret: Option<String>,
    /// Signature scheme to check: standard or toss
    #[arg(long, value_name = "SCHEME", default_value = "standard")]
    pub scheme: Scheme,
    /// Status to answer with
    #[arg(long, default_value_t = 200, value_parser = parse_status)]
    pub status: u16,
    /// Wait this long before answering, e.g. 250ms, 10s
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration::parse_duration)]
    pub delay: Duration,
    /// Answer 500 at random with this probability (0.0 to 1.0)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Relay each request (headers and body) to this URL and answer with its answer
    #[arg(long, value_name = "URL")]
    pub forward: Option<url::Url>,
    /// Print one JSON object per request on stdout instead of the readable form
    #[arg(long)]
    pub json: bool,
}

fn parse_status(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("{text:?} is not an HTTP status (100 to 599)"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| format!("{text:?} is not a probability between 0.0 and 1.0"))
}

/// One request as `--json` prints it and `GET /_requests` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// 1, 2, 3... in order of arrival.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub received_at: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header, names in lower case (repeated headers joined with ", ").
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// The body parsed, when it is JSON.
    pub json: Option<Value>,
    pub verdict: Verdict,
    /// Milliseconds since the previous request arrived; `null` for the first.
    pub since_previous_ms: Option<u64>,
    pub answer: Answer,
}

/// The signature check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `valid`, `invalid` or `not_checked` (no `--secret`).
    pub result: &'static str,
    pub scheme: Option<&'static str>,
    /// Why it is invalid.
    pub reason: Option<String>,
}

/// What the sender was answered.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub status: u16,
    /// `status` (the --status flag), `fail_rate`, `forwarded` or `forward_failed`.
    pub because: &'static str,
    pub delay_ms: u64,
    pub forward: Option<Forwarded>,
}

/// The developer's app's answer to a forwarded request.
#[derive(Debug, Clone, Serialize)]
pub struct Forwarded {
    pub url: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub body: Option<String>,
}

struct Shared {
    args: ListenArgs,
    client: reqwest::Client,
    colour: bool,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    seq: u64,
    previous: Option<Instant>,
    recent: VecDeque<Record>,
}

/// `hookd listen`: runs until SIGINT or SIGTERM.
pub fn main(args: ListenArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookd listen: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hookd listen: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match serve(listener, args, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hookd listen: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: ListenArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let colour = !args.json
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    eprintln!("{}", banner(&args, addr));
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60));
    if let Some(url) = &args.forward {
        client = crate::cli::client::no_proxy_for_loopback(client, url);
    }
    let client = client.build().map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared {
        args,
        client,
        colour,
        log: Mutex::new(Log::default()),
    });
    let app = Router::new()
        .route("/_requests", get(list).delete(clear))
        .fallback(receive)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn banner(args: &ListenArgs, addr: SocketAddr) -> String {
    let check = match &args.secret {
        Some(_) => format!("checking {} signatures", args.scheme),
        None => "not checking signatures (no --secret)".to_string(),
    };
    let mut answer = match &args.forward {
        Some(url) => format!("forwarding to {url}"),
        None => format!("answering {}", args.status),
    };
    if !args.delay.is_zero() {
        let _ = write!(answer, " after {}", duration::format_duration(args.delay));
    }
    if args.fail_rate > 0.0 {
        let _ = write!(answer, ", 500 with probability {}", args.fail_rate);
    }
    format!(
        "hookd listen: listening on http://{addr} ({check}; {answer}); \
         GET http://{addr}/_requests lists the last {KEEP} requests"
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<Record>> {
    Json(shared.log.lock().unwrap().recent.iter().cloned().collect())
}

async fn clear(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.log.lock().unwrap().recent.clear();
    StatusCode::NO_CONTENT
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let received_at = Utc::now();
    let (seq, since_previous) = {
        let mut log = shared.log.lock().unwrap();
        log.seq += 1;
        let since = log.previous.map(|p| arrived.duration_since(p));
        log.previous = Some(arrived);
        (log.seq, since)
    };
    let args = &shared.args;

    let verdict = match &args.secret {
        None => Verdict {
            result: "not_checked",
            scheme: None,
            reason: None,
        },
        Some(secret) => match Verifier::new().verify(args.scheme, secret, &headers, &body) {
            Ok(()) => Verdict {
                result: "valid",
                scheme: Some(args.scheme.as_str()),
                reason: None,
            },
            Err(e) => Verdict {
                result: "invalid",
                scheme: Some(args.scheme.as_str()),
                reason: Some(e.to_string()),
            },
        },
    };

    if !args.delay.is_zero() {
        tokio::time::sleep(args.delay).await;
    }
    let fail = args.fail_rate > 0.0 && rand::random::<f64>() < args.fail_rate;
    let (answer, response) = if fail {
        answer_plain(
            500,
            "fail_rate",
            args.delay,
            "hookd listen: a simulated failure (--fail-rate)\n".to_string(),
        )
    } else if let Some(url) = &args.forward {
        forward(&shared.client, url, &method, &headers, &body, args.delay).await
    } else {
        let text = if args.status < 300 {
            "ok\n".to_string()
        } else {
            format!("hookd listen: answering {} (--status)\n", args.status)
        };
        answer_plain(args.status, "status", args.delay, text)
    };

    let headers_text: BTreeMap<String, String> = headers
        .keys()
        .map(|name| (name.as_str().to_string(), joined(&headers, name)))
        .collect();
    let text = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_slice::<Value>(&body).ok();
    let record = Record {
        seq,
        received_at: received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers_text,
        body: text,
        json,
        verdict,
        since_previous_ms: since_previous.map(|d| d.as_millis() as u64),
        answer,
    };
    print(&shared, &record, since_previous);
    {
        let mut log = shared.log.lock().unwrap();
        if log.recent.len() == KEEP {
            log.recent.pop_front();
        }
        log.recent.push_back(record);
    }
    response
}

fn joined(headers: &HeaderMap, name: &header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn answer_plain(
    status: u16,
    because: &'static str,
    delay: Duration,
    text: String,
) -> (Answer, Response) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        Answer {
            status: code.as_u16(),
            because,
            delay_ms: delay.as_millis() as u64,
            forward: None,
        },
        (code, text).into_response(),
    )
}

/// Headers that belong to one connection and are not relayed.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn forward(
    client: &reqwest::Client,
    url: &url::Url,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
    delay: Duration,
) -> (Answer, Response) {
    let started = Instant::now();
    let mut request = client.request(method.clone(), url.clone());
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let result = async {
        let response = request.body(body.clone()).send().await?;
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, content_type, bytes))
    }
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok((status, content_type, bytes)) => {
            let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (code, bytes.clone()).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            (
                Answer {
                    status: code.as_u16(),
                    because: "forwarded",
                    delay_ms: delay.as_millis() as u64,
                    forward: Some(Forwarded {
                        url: url.to_string(),
                        status: Some(status.as_u16()),
                        error: None,
                        duration_ms,
                        body: (!text.is_empty()).then_some(text),
                    }),
                },
                response,
            )
        }
        Err(e) => {
            let error = error_chain(&e);
            let mut response = (
                StatusCode::BAD_GATEWAY,
                format!("hookd listen: forwarding to {url} failed: {error}\n"),
            )
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            (
                Answer {
                    status: 502,
                    because: "forward_failed",
                    delay_ms: delay.as_millis() as u64,
                    forward: Some(Forwarded {
                        url: url.to_string(),
                        status: None,
                        error: Some(error),
                        duration_ms,
                        body: None,
                    }),
                },
                response,
            )
        }
    }
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "connection failed".to_string()
    } else if error.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let _ = write!(text, ": {e}");
        source = e.source();
    }
    text
}

/// Writes one request to stdout: a JSON line, or the readable form.
fn print(shared: &Shared, record: &Record, since_previous: Option<Duration>) {
    let text = if shared.args.json {
        let mut line = serde_json::to_string(record).expect("a record serializes");
        line.push('\n');
        line
    } else {
        readable(record, since_previous, shared.colour)
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`hookd listen | head`) must not take the receiver down.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

struct Paint(bool);

impl Paint {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
}

/// Whether a header is shown in the readable form (all are in `--json`).
fn shown(name: &str) -> bool {
    name.starts_with("webhook-")
        || name.starts_with("tosspayments-")
        || matches!(name, "content-type" | "user-agent" | "authorization")
}

fn readable(r: &Record, since_previous: Option<Duration>, colour: bool) -> String {
    let p = Paint(colour);
    let mut s = String::new();
    let local = chrono::DateTime::parse_from_rfc3339(&r.received_at)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|_| r.received_at.clone());
    let since = match since_previous {
        Some(d) => format!("+{} since previous", short_duration(d)),
        None => "first request".to_string(),
    };
    let target = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let _ = writeln!(
        s,
        "{} {}  {} {}  {}",
        p.dim(&format!("#{}", r.seq)),
        local,
        p.bold(&r.method),
        p.bold(&target),
        p.dim(&format!("({since})"))
    );
    // The protocol's headers in their natural order, then the rest alphabetically.
    let order = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "tosspayments-webhook-transmission-time",
        "tosspayments-webhook-signature",
    ];
    let mut names: Vec<&String> = r.headers.keys().filter(|n| shown(n)).collect();
    names.sort_by_key(|n| {
        (
            order.iter().position(|o| o == n).unwrap_or(order.len()),
            n.as_str(),
        )
    });
    for name in names {
        let value = &r.headers[name];
        let value = if name == "authorization" {
            mask(value)
        } else {
            value.clone()
        };
        let _ = writeln!(s, "  {} {}", p.cyan(&format!("{name}:")), value);
    }
    let verdict = match r.verdict.result {
        "valid" => p.green(&format!("valid ({})", r.verdict.scheme.unwrap_or_default())),
        "invalid" => p.red(&format!(
            "INVALID ({}): {}",
            r.verdict.scheme.unwrap_or_default(),
            r.verdict.reason.as_deref().unwrap_or_default()
        )),
        _ => p.yellow("not checked (no --secret)"),
    };
    let _ = writeln!(s, "  {} {verdict}", p.bold("signature:"));
    let body = match &r.json {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| r.body.clone()),
        None if r.body.is_empty() => p.dim("(empty body)"),
        None => r.body.clone(),
    };
    let body = if body.len() > PRINT_BODY {
        let mut end = PRINT_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}\n{}",
            &body[..end],
            p.dim(&format!("... ({} bytes in all)", r.body.len()))
        )
    } else {
        body
    };
    for line in body.lines() {
        let _ = writeln!(s, "  {line}");
    }
    let status = status_text(r.answer.status);
    let status = match r.answer.status {
        200..=299 => p.green(&status),
        300..=499 => p.yellow(&status),
        _ => p.red(&status),
    };
    let delay = if r.answer.delay_ms > 0 {
        format!(" after {}ms", r.answer.delay_ms)
    } else {
        String::new()
    };
    let how = match (&r.answer.forward, r.answer.because) {
        (Some(f), _) => match (&f.status, &f.error) {
            (Some(_), _) => format!(" from {} in {}ms", f.url, f.duration_ms),
            (None, Some(e)) => format!(": forwarding to {} failed: {e}", f.url),
            _ => String::new(),
        },
        (None, "fail_rate") => " (--fail-rate)".to_string(),
        _ => String::new(),
    };
    let _ = writeln!(s, "  {} {status}{how}{delay}", p.bold("answer:"));
    if let Some(body) = r.answer.forward.as_ref().and_then(|f| f.body.as_ref()) {
        let excerpt: String = body.chars().take(500).collect();
        for line in excerpt.lines() {
            let _ = writeln!(s, "    {}", p.dim(line));
        }
    }
    s.push('\n');
    s
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|c| c.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// `Bearer abcd...` with the rest hidden.
fn mask(value: &str) -> String {
    let (scheme, token) = value.split_once(' ').unwrap_or(("", value));
    let shown: String = token.chars().take(4).collect();
    let hidden = if token.chars().count() > 4 { "…" } else { "" };
    if scheme.is_empty() {
        format!("{shown}{hidden}")
    } else {
        format!("{scheme} {shown}{hidden}")
    }
}

fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        duration::format_duration(Duration::from_secs(d.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            seq: 2,
            received_at: "2026-01-01T00:00:00.000Z".into(),
            method: "POST".into(),
            path: "/hook".into(),
            query: None,
            headers: [
                ("webhook-id", "evt_1"),
                ("webhook-signature", "v1,abc"),
                ("webhook-timestamp", "1767225600"),
                ("authorization", "Bearer sekret-token"),
                ("accept", "*/*"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            body: r#"{"a":1}"#.into(),
            json: Some(serde_json::json!({"a": 1})),
            verdict: Verdict {
                result: "invalid",
                scheme: Some("standard"),
                reason: Some("no matching signature".into()),
            },
            since_previous_ms: Some(1500),
            answer: Answer {
                status: 500,
                because: "fail_rate",
                delay_ms: 0,
                forward: None,
            },
        }
    }

    #[test]
    fn readable_output_without_colour() {
        let text = readable(&record(), Some(Duration::from_millis(1500)), false);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("POST /hook"), "{text}");
        assert!(text.contains("(+1.500s since previous)"), "{text}");
        let id = text.find("webhook-id:").unwrap();
        let ts = text.find("webhook-timestamp:").unwrap();
        let sig = text.find("webhook-signature:").unwrap();
        assert!(id < ts && ts < sig, "{text}");
        assert!(text.contains("authorization: Bearer sekr…"), "{text}");
        assert!(!text.contains("sekret-token"), "{text}");
        assert!(!text.contains("accept:"), "{text}");
        assert!(
            text.contains("signature: INVALID (standard): no matching signature"),
            "{text}"
        );
        assert!(text.contains("  {\n    \"a\": 1\n  }\n"), "{text}");
        assert!(
            text.contains("answer: 500 Internal Server Error (--fail-rate)"),
            "{text}"
        );
        let coloured = readable(&record(), None, true);
        assert!(coloured.contains("\x1b[31m"), "{coloured}");
        assert!(coloured.contains("first request"), "{coloured}");
    }

    #[test]
    fn flags() {
        assert_eq!(parse_status("204"), Ok(204));
        assert!(parse_status("99").is_err());
        assert!(parse_status("abc").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert_eq!(short_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(short_duration(Duration::from_secs(90)), "1m 30s");
    }
}
