//! What every API command shares: where the API is, the HTTP calls, errors and paging.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Config;

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The API's largest page.
const MAX_PAGE: usize = 1000;

/// Where the admin API is, how to authenticate, and how to print: on every API command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Base URL of hookd's admin API [default: http:// + HOOKD_LISTEN, i.e. http://127.0.0.1:8080]
    #[arg(long = "url", visible_alias = "api-url", value_name = "URL", value_parser = parse_base_url)]
    pub url: Option<String>,
    /// Admin token [default: HOOKD_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON answer as is, for scripts
    #[arg(long)]
    pub json: bool,
}

/// `--url`: an `http` or `https` URL with a host; kept without a trailing `/`.
pub fn parse_base_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text:?} is not an http(s) URL such as http://127.0.0.1:8080"
        ));
    }
    Ok(text.trim().trim_end_matches('/').to_string())
}

/// The API's address and token: the flags, else the daemon's own settings (the `--config`
/// file, then `HOOKD_LISTEN` and `HOOKD_ADMIN_TOKEN`), exactly as `hookd send-test`.
fn resolve(
    args: &ClientArgs,
    config_file: Option<&Path>,
) -> Result<(String, Option<String>), String> {
    let (url, token) = match (&args.url, &args.token) {
        (Some(url), Some(token)) => (url.clone(), Some(token.clone())),
        _ => {
            let config = Config::load(config_file, Vec::new()).map_err(|e| e.to_string())?;
            (
                args.url.clone().unwrap_or_else(|| base_url(config.listen)),
                args.token.clone().or(config.admin_token),
            )
        }
    };
    Ok((
        url.trim_end_matches('/').to_string(),
        token.filter(|t| !t.is_empty()),
    ))
}

/// Leaves the proxy variables (`HTTP_PROXY`...) out of `builder` when `url` is on this
/// machine's loopback: no proxy can reach it there, and the proxy would see what is sent
/// (the admin token) before failing. Other addresses go through them as any HTTP tool's do.
pub fn no_proxy_for_loopback(
    builder: reqwest::ClientBuilder,
    url: &url::Url,
) -> reqwest::ClientBuilder {
    if is_loopback(url) {
        builder.no_proxy()
    } else {
        builder
    }
}

/// Whether `url` names this machine: a loopback address, `localhost` or a `.localhost` name.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

/// What a command prints on stdout, a note for people printed after it on stderr, and its
/// exit code.
#[derive(Default)]
pub struct Output {
    pub text: String,
    pub note: Option<String>,
    pub code: u8,
}

impl From<String> for Output {
    fn from(text: String) -> Output {
        Output {
            text,
            ..Output::default()
        }
    }
}

/// Runs one API command: resolves the API, runs `command` on a small runtime, prints its
/// output. An error is printed as `hookd NAME: message` with exit code 1; a configuration
/// error exits 2.
pub fn run<F, Fut>(
    name: &str,
    args: &ClientArgs,
    config_file: Option<&Path>,
    command: F,
) -> ExitCode
where
    F: FnOnce(Api) -> Fut,
    Fut: Future<Output = anyhow::Result<Output>>,
{
    let (base, token) = match resolve(args, config_file) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("hookd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let api = match Api::new(&base, token) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("hookd {name}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookd {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(api)) {
        Ok(output) => {
            print(&output.text);
            if let Some(note) = output.note {
                eprintln!("{note}");
            }
            ExitCode::from(output.code)
        }
        Err(e) => {
            eprintln!("hookd {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` and a final newline to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) {
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// One answer of the API: its status, its body as sent, and parsed (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub body: Value,
    /// The `ETag` header, when the answer has one (a single endpoint).
    pub etag: Option<String>,
}

/// An answer with a 4xx or 5xx status, as an error: the API's message, status and code.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A page of a list, each item kept exactly as the API wrote it.
#[derive(Serialize, Deserialize)]
pub struct RawPage {
    pub data: Vec<Box<RawValue>>,
    pub next_cursor: Option<String>,
}

impl RawPage {
    /// The items, parsed.
    pub fn items(&self) -> anyhow::Result<Vec<Value>> {
        self.data
            .iter()
            .map(|raw| serde_json::from_str(raw.get()).map_err(Into::into))
            .collect()
    }

    /// `{"data": [...], "next_cursor": ...}` as the API writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a page serializes")
    }
}

/// The admin API.
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Api> {
        let base =
            url::Url::parse(base).map_err(|e| anyhow!("{base:?} is not a URL (--url): {e}"))?;
        if base.cannot_be_a_base() {
            anyhow::bail!("{base} is not an http(s) URL (--url)");
        }
        let http = reqwest::Client::builder().timeout(CALL_TIMEOUT);
        Ok(Api {
            http: no_proxy_for_loopback(http, &base).build()?,
            base,
            token,
        })
    }

    /// The API's base URL as given, without a trailing `/`.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The base URL plus path segments, each percent-encoded (an id is one segment).
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Answer> {
        self.call(Method::GET, segments, query, None).await
    }

    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> anyhow::Result<Answer> {
        self.call(Method::POST, segments, &[], body).await
    }

    pub async fn patch(&self, segments: &[&str], body: &Value) -> anyhow::Result<Answer> {
        self.call(Method::PATCH, segments, &[], Some(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Answer> {
        self.call(Method::DELETE, segments, &[], None).await
    }

    /// One call. A 4xx or 5xx answer is an error carrying the API's `error.message` (an
    /// [`ApiFailure`]); so is a failure to reach the API, naming the URL it tried.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        self.call_if(method, segments, query, body, None).await
    }

    /// [`Api::call`] with `If-Match: <if_match>` when given: the API answers 412 if the
    /// resource no longer has that ETag.
    pub async fn call_if(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(segments);
        let mut request = self.http.request(method, url.clone());
        if let Some(tag) = if_match {
            request = request.header(reqwest::header::IF_MATCH, tag);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                anyhow!(
                    "hookd at {} did not answer within {}",
                    self.base(),
                    crate::duration::format_duration(CALL_TIMEOUT)
                )
            } else {
                anyhow!(
                    "cannot reach hookd at {} ({}); is `hookd serve` running there? (--url)",
                    self.base(),
                    root_cause(&e)
                )
            }
        })?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response
            .text()
            .await
            .map_err(|e| anyhow!("reading hookd's answer from {url}: {}", root_cause(&e)))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        if status >= 400 {
            let message = api_error(status, &body);
            return Err(ApiFailure { status, message }.into());
        }
        Ok(Answer {
            status,
            text,
            body,
            etag,
        })
    }

    /// Up to `limit` items of a list (all of them when `None`), following `next_cursor`.
    /// The result's `next_cursor` is the last page's: set when more may follow.
    pub async fn list(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        limit: Option<usize>,
    ) -> anyhow::Result<RawPage> {
        let mut all = RawPage {
            data: Vec::new(),
            next_cursor: None,
        };
        loop {
            let want = match limit {
                Some(limit) => (limit - all.data.len()).min(MAX_PAGE),
                None => MAX_PAGE,
            };
            let mut q = query.to_vec();
            q.push(("limit", want.to_string()));
            if let Some(cursor) = all.next_cursor.take() {
                q.push(("cursor", cursor));
            }
            let answer = self.get(segments, &q).await?;
            let page: RawPage = serde_json::from_str(&answer.text)
                .map_err(|e| anyhow!("unexpected answer from hookd ({e}): {}", answer.text))?;
            let empty = page.data.is_empty();
            all.data.extend(page.data);
            all.next_cursor = page.next_cursor;
            let full = limit.is_some_and(|limit| all.data.len() >= limit);
            if all.next_cursor.is_none() || full || empty {
                return Ok(all);
            }
        }
    }
}

/// The API's `error.message` with its status and code; a hint for a missing token.
fn api_error(status: u16, body: &Value) -> String {
    let message = match body["error"]["message"].as_str() {
        Some(m) => m.to_string(),
        None => match body {
            Value::Null => "no details given".to_string(),
            Value::String(text) => output_snippet(text),
            other => output_snippet(&other.to_string()),
        },
    };
    let code = body["error"]["code"]
        .as_str()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    let hint = if status == 401 {
        "; set --token or HOOKD_ADMIN_TOKEN"
    } else {
        ""
    };
    format!("{message} (HTTP {status}{code}){hint}")
}

/// A short, one-line piece of an unexpected answer.
fn output_snippet(text: &str) -> String {
    super::output::first_line(text, 200)
}

/// The innermost cause of an error: `Connection refused (os error 111)` rather than
/// `error sending request`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `http://ADDR`, reaching an unspecified listen address (`0.0.0.0`) through loopback.
pub fn base_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loopback_table() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080", true),
            ("http://127.1.2.3:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("http://LOCALHOST.:8080", true),
            ("http://api.localhost", true),
            ("http://10.0.0.1:8080", false),
            ("https://hookd.example.com", false),
            ("http://localhost.example.com", false),
            ("http://[::ffff:127.0.0.1]", false),
        ] {
            assert_eq!(
                is_loopback(&url::Url::parse(url).unwrap()),
                loopback,
                "{url}"
            );
        }
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(parse_base_url("127.0.0.1:8080").is_err());
        assert!(parse_base_url("ftp://example.com").is_err());
    }

    #[test]
    fn ids_are_one_path_segment() {
        let api = Api::new("http://127.0.0.1:8080/admin", None).unwrap();
        assert_eq!(
            api.url(&["v1", "deliveries", "../x y"]).as_str(),
            "http://127.0.0.1:8080/admin/v1/deliveries/..%2Fx%20y"
        );
        let api = Api::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            api.url(&["v1", "endpoints"]).as_str(),
            "http://127.0.0.1:8080/v1/endpoints"
        );
    }

    #[test]
    fn api_errors_carry_the_message() {
        let body = json!({"error": {"code": "not_found", "message": "no delivery with id \"9\""}});
        assert_eq!(
            api_error(404, &body),
            "no delivery with id \"9\" (HTTP 404 not_found)"
        );
        assert!(api_error(
            401,
            &json!({"error": {"code": "unauthorized", "message": "m"}})
        )
        .ends_with("set --token or HOOKD_ADMIN_TOKEN"));
        assert_eq!(api_error(405, &Value::Null), "no details given (HTTP 405)");
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url("0.0.0.0:9090".parse().unwrap()),
            "http://127.0.0.1:9090"
        );
        assert_eq!(base_url("[::]:80".parse().unwrap()), "http://[::1]:80");
    }
}
