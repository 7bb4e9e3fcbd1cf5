//! `--forward URL`: relays each request to the developer's own app and answers with its
//! answer, so hookd's deliveries can reach an app that is not listening on a public address.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Answer, Forwarded};

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

pub async fn forward(
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
