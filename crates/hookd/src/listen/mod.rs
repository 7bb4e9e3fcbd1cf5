//! `hookd listen`: a local webhook receiver for development.
//!
//! It listens on 127.0.0.1, prints every request readably (or as one JSON object per line
//! with `--json`), checks its signature with [`hookd_verify`] when given the secret, and
//! answers as told: a fixed status, after a delay, failing at random, or with whatever the
//! developer's own app answers when the request is forwarded there. The last 100 requests
//! are kept in memory and served at `GET /_requests` (oldest first; `DELETE` empties it).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use hookd_verify::{Scheme, Verifier};

use crate::duration;

mod forward;
mod print;

use forward::forward;
use print::print;

/// How many requests `GET /_requests` keeps.
pub const KEEP: usize = 100;

/// The largest body accepted (hookd's own payload limit is far below this).
const MAX_BODY: usize = 16 * 1024 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(parse_status("204"), Ok(204));
        assert!(parse_status("99").is_err());
        assert!(parse_status("abc").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
    }
}
