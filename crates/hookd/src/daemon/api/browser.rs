//! Browser safety: the admin API and the dashboard listen on loopback by default, where any
//! web page the operator visits could otherwise reach them. Three checks, in this order, on
//! every request (the API, `/openapi.json`, the dashboard and the health checks alike):
//!
//! 1. `Host` must be one of `allowed_hosts` (421 otherwise): a DNS-rebinding page reaches
//!    127.0.0.1 under its own name, so its requests carry that name.
//! 2. An `Origin` header, when present, must be the server's own origin (403 otherwise):
//!    browsers send it on every cross-origin request except plain GETs of a page or image,
//!    and on same-origin requests other than GET and HEAD.
//! 3. A `POST`, `PATCH` or `PUT` under `/v1` with a body must label it
//!    `Content-Type: application/json` (415 otherwise); one without a body must carry no
//!    other content type. A cross-site form or "simple" `fetch` cannot send that label
//!    without a CORS preflight, which hookd never grants.
//!
//! The rules are pure functions below; [`guard`] applies them as middleware.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The host names the HTTP server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Every host (`*`): for a server behind its admin token on a non-loopback address.
    Any,
    /// Only these, normalised (lower case, IPv6 in brackets, no trailing dot).
    Only(Vec<String>),
}

impl AllowedHosts {
    /// `HOOKD_ALLOWED_HOSTS`: comma-separated host names or IP addresses without a port, or
    /// `*` for every host.
    pub fn parse(text: &str) -> Result<AllowedHosts, String> {
        let items: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err("name at least one host, or * for every host".into());
        }
        if items.contains(&"*") {
            return if items.len() == 1 {
                Ok(AllowedHosts::Any)
            } else {
                Err("* (every host) cannot be combined with host names".into())
            };
        }
        let mut hosts = Vec::new();
        for item in items {
            let bare = item.parse::<std::net::Ipv6Addr>().ok();
            let host = match bare {
                Some(ip) => format!("[{ip}]"),
                None => normalize_host(item).ok_or_else(|| {
                    if host_and_port(item).is_some_and(|(_, port)| port.is_some()) {
                        format!("{item:?}: give the host without a port")
                    } else {
                        format!("{item:?} is not a host name or IP address")
                    }
                })?,
            };
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Ok(AllowedHosts::Only(hosts))
    }

    /// The default: on a loopback listen address, the names of loopback (`localhost`,
    /// `127.0.0.1`, `[::1]`, and the listen address itself); on any other address, every
    /// host (the admin token is required there).
    pub fn default_for(listen: SocketAddr) -> AllowedHosts {
        if !listen.ip().is_loopback() {
            return AllowedHosts::Any;
        }
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
        let own = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        if !hosts.contains(&own) {
            hosts.push(own);
        }
        AllowedHosts::Only(hosts)
    }

    /// Whether a `Host` header value (its port ignored) is allowed.
    pub fn allows(&self, host_header: &str) -> bool {
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::Only(hosts) => host_and_port(host_header)
                .and_then(|(host, _)| normalize_host(host))
                .is_some_and(|host| hosts.contains(&host)),
        }
    }
}

impl std::fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedHosts::Any => f.write_str("*"),
            AllowedHosts::Only(hosts) => f.write_str(&hosts.join(",")),
        }
    }
}

/// Splits `host[:port]` (`[v6]` in brackets); `None` when it is not of that form.
fn host_and_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// A host the way a browser writes it in a URL: lower case, IPv4 in dotted decimal, IPv6
/// compressed in brackets, without a trailing dot. `None` if it is not a valid host.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    match url::Host::parse(host).ok()? {
        url::Host::Domain(name) => {
            let ok = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            ok.then_some(name)
        }
        ip => Some(ip.to_string()),
    }
}

/// Whether `origin` (an `Origin` header value) is the server's own origin, as the request's
/// `Host` names it: `http://` + Host, or `https://` + Host behind a TLS-terminating proxy.
/// `null` (sandboxed frames, `file:` pages, some redirects) is never the server's own.
pub fn is_own_origin(origin: &str, host_header: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https")
        || url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return false;
    }
    let Some((host, port)) = host_and_port(host_header) else {
        return false;
    };
    let same_host = match (url.host_str(), normalize_host(host)) {
        (Some(theirs), Some(ours)) => theirs
            .strip_suffix('.')
            .unwrap_or(theirs)
            .eq_ignore_ascii_case(&ours),
        _ => false,
    };
    // A Host without a port means the scheme's default, which an origin leaves out too.
    let same_port = match port {
        Some(p) => url.port_or_known_default() == Some(p),
        None => url.port().is_none(),
    };
    same_host && same_port
}

/// Whether a request body may be acted on: labelled `application/json` (parameters such as
/// `; charset=utf-8` allowed), or absent with no content type at all.
pub fn body_is_json_or_absent(content_type: Option<&str>, body_is_empty: bool) -> bool {
    match content_type {
        Some(ct) => ct
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json")),
        None => body_is_empty,
    }
}

/// Requests that change something through the API: only these carry bodies that matter.
fn is_api_write(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PATCH | Method::PUT)
        && (path == "/v1" || path.starts_with("/v1/"))
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 421: the `Host` is not one this server answers to.
    Host(String),
    /// 403: another origin's page sent it.
    Origin(String),
    /// 415: a body not labelled JSON.
    ContentType(String),
}

/// The three checks, in order, on a request's method, path and headers. `body_is_empty`:
/// the request is known to carry no body.
pub fn check(
    allowed: &AllowedHosts,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body_is_empty: bool,
) -> Result<(), Refusal> {
    let host = headers.get(HOST).map(|h| h.to_str().unwrap_or(""));
    if *allowed != AllowedHosts::Any && !host.is_some_and(|h| allowed.allows(h)) {
        return Err(Refusal::Host(match host {
            Some(h) => format!(
                "this hookd does not answer to the host {h:?}; if that is a name of this server, add it to HOOKD_ALLOWED_HOSTS"
            ),
            None => "a request must name its host (Host header)".into(),
        }));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !is_own_origin(origin, host.unwrap_or("")) {
            return Err(Refusal::Origin(format!(
                "requests from web pages of another origin ({origin:?}) are refused: hookd's API answers only its own dashboard and non-browser clients"
            )));
        }
    }
    if is_api_write(method, path) {
        let content_type = headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
        if !body_is_json_or_absent(content_type, body_is_empty) {
            return Err(Refusal::ContentType(match content_type {
                Some(ct) => format!(
                    "the request body must be JSON sent with Content-Type: application/json, not {ct:?}"
                ),
                None => "a request with a body must send it with Content-Type: application/json".into(),
            }));
        }
    }
    Ok(())
}

/// Middleware over the whole router: refuses what [`check`] refuses, in the API's error
/// format.
pub async fn guard(State(allowed): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let empty = req.body().size_hint().exact() == Some(0)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    match check(
        &allowed,
        req.method(),
        req.uri().path(),
        req.headers(),
        empty,
    ) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                reason = ?refusal,
                "refused a request a web page may have sent"
            );
            match refusal {
                Refusal::Host(m) => ApiError::MisdirectedRequest(m),
                Refusal::Origin(m) => ApiError::ForeignOrigin(m),
                Refusal::ContentType(m) => ApiError::UnsupportedMediaType(m),
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn loopback() -> AllowedHosts {
        AllowedHosts::default_for("127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn allowed_hosts_parse() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("hooks.internal", Ok(&["hooks.internal"])),
            (
                " Hooks.Internal., 10.0.0.5 ,::1,[::1]",
                Ok(&["hooks.internal", "10.0.0.5", "[::1]"]),
            ),
            ("[0:0:0:0:0:0:0:1]", Ok(&["[::1]"])),
            ("localhost:8080", Err("without a port")),
            ("a b", Err("not a host name")),
            ("evil.example/x", Err("not a host name")),
            ("*,localhost", Err("cannot be combined")),
            (" , ", Err("at least one host")),
        ];
        for (text, want) in cases {
            match (AllowedHosts::parse(text), want) {
                (Ok(AllowedHosts::Only(got)), Ok(want)) => assert_eq!(got, *want, "{text}"),
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(AllowedHosts::parse("*"), Ok(AllowedHosts::Any));
    }

    #[test]
    fn defaults_follow_the_listen_address() {
        assert_eq!(
            loopback(),
            AllowedHosts::Only(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()])
        );
        assert_eq!(
            AllowedHosts::default_for("[::1]:8080".parse().unwrap()),
            loopback()
        );
        assert_eq!(
            AllowedHosts::default_for("127.0.0.2:8080".parse().unwrap()).to_string(),
            "localhost,127.0.0.1,[::1],127.0.0.2"
        );
        for any in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            assert_eq!(
                AllowedHosts::default_for(any.parse().unwrap()),
                AllowedHosts::Any
            );
        }
    }

    #[test]
    fn hosts_match_without_their_port() {
        let internal = AllowedHosts::parse("hooks.internal").unwrap();
        let cases: &[(&AllowedHosts, &str, bool)] = &[
            (&loopback(), "127.0.0.1:8080", true),
            (&loopback(), "127.0.0.1", true),
            (&loopback(), "localhost:1", true),
            (&loopback(), "LOCALHOST.:8080", true),
            (&loopback(), "[::1]:8080", true),
            (&loopback(), "127.1:8080", true), // what a browser makes of it
            (&loopback(), "evil.example", false),
            (&loopback(), "evil.example:8080", false),
            (&loopback(), "localhost.evil.example", false),
            (&loopback(), "127.0.0.1.nip.io", false),
            (&loopback(), "[::1", false),
            (&loopback(), "127.0.0.1:80:80", false),
            (&loopback(), "127.0.0.1:x", false),
            (&loopback(), "", false),
            (&internal, "hooks.internal:443", true),
            (&internal, "localhost:8080", false),
            (&AllowedHosts::Any, "evil.example", true),
        ];
        for (allowed, host, want) in cases {
            assert_eq!(allowed.allows(host), *want, "{allowed} allows {host:?}");
        }
    }

    #[test]
    fn origins_compare_with_the_host() {
        let cases: &[(&str, &str, bool)] = &[
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
            ("https://hooks.internal", "hooks.internal", true),
            ("http://hooks.internal", "hooks.internal", true),
            ("http://hooks.internal:80", "hooks.internal", true),
            ("https://hooks.internal:443", "hooks.internal:443", true),
            ("http://Localhost:8080", "localhost:8080", true),
            ("http://[::1]:8080", "[::1]:8080", true),
            ("http://127.0.0.1:8080", "127.0.0.1:9090", false),
            ("http://127.0.0.1", "127.0.0.1:8080", false),
            ("http://hooks.internal:8080", "hooks.internal", false),
            ("http://localhost:8080", "127.0.0.1:8080", false),
            ("https://evil.example", "127.0.0.1:8080", false),
            ("http://evil.example:8080", "evil.example:8080", true), // the Host check refuses it
            ("null", "127.0.0.1:8080", false),
            ("", "127.0.0.1:8080", false),
            ("file://", "127.0.0.1:8080", false),
            ("chrome-extension://abc", "127.0.0.1:8080", false),
            ("http://127.0.0.1:8080/path", "127.0.0.1:8080", false),
            ("http://127.0.0.1:8080", "", false),
        ];
        for (origin, host, want) in cases {
            assert_eq!(
                is_own_origin(origin, host),
                *want,
                "Origin {origin:?} with Host {host:?}"
            );
        }
    }

    #[test]
    fn bodies_must_be_json_or_absent() {
        let cases: &[(Option<&str>, bool, bool)] = &[
            (Some("application/json"), false, true),
            (Some("application/json; charset=utf-8"), false, true),
            (Some("Application/JSON ;charset=UTF-8"), false, true),
            (Some("application/json"), true, true),
            (Some("text/plain"), false, false),
            (Some("text/plain"), true, false),
            (Some("text/plain; application/json"), false, false),
            (Some("application/x-www-form-urlencoded"), false, false),
            (Some("multipart/form-data; boundary=x"), false, false),
            (Some("application/jsonx"), false, false),
            (Some(""), true, false),
            (None, true, true),
            (None, false, false),
        ];
        for (content_type, empty, want) in cases {
            assert_eq!(
                body_is_json_or_absent(*content_type, *empty),
                *want,
                "{content_type:?}, empty body: {empty}"
            );
        }
    }

    type Headers<'a> = &'a [(&'static str, &'a str)];

    #[test]
    fn checks_in_order() {
        let headers = |pairs: Headers| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let own = [("host", "127.0.0.1:8080")];
        let form = [
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
            ("content-type", "text/plain"),
        ];
        let rebinding = [
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ];
        let dashboard = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("content-type", "application/json"),
        ];
        let kind = |r: Result<(), Refusal>| match r {
            Ok(()) => "ok",
            Err(Refusal::Host(_)) => "421",
            Err(Refusal::Origin(_)) => "403",
            Err(Refusal::ContentType(_)) => "415",
        };
        let cases: &[(&Method, &str, Headers, bool, &str)] = &[
            (&Method::GET, "/v1/endpoints", &own, true, "ok"),
            (&Method::POST, "/v1/endpoints", &form, false, "403"),
            (&Method::POST, "/v1/endpoints", &form[..1], false, "415"),
            (
                &Method::POST,
                "/v1/endpoints",
                &[form[0], form[2]],
                false,
                "415",
            ),
            (&Method::GET, "/v1/endpoints", &rebinding, true, "421"),
            (&Method::GET, "/healthz", &rebinding[..1], true, "421"),
            (
                &Method::GET,
                "/v1/endpoints",
                &[own[0], form[1]],
                true,
                "403",
            ),
            (&Method::POST, "/v1/endpoints", &dashboard, false, "ok"),
            (
                &Method::POST,
                "/v1/deliveries/1/resend",
                &dashboard[..2],
                true,
                "ok",
            ),
            (&Method::POST, "/v1/deliveries/1/resend", &own, true, "ok"),
            (&Method::POST, "/v1/deliveries/1/resend", &own, false, "415"),
            (
                &Method::PATCH,
                "/v1/endpoints/ep_1",
                &[form[0], form[2]],
                false,
                "415",
            ),
            (
                &Method::DELETE,
                "/v1/endpoints/ep_1",
                &dashboard[..2],
                true,
                "ok",
            ),
            (&Method::POST, "/not-api", &[form[0], form[2]], false, "ok"),
            (&Method::GET, "/v1/endpoints", &[], true, "421"),
        ];
        for (method, path, pairs, empty, want) in cases {
            let got = kind(check(&loopback(), method, path, &headers(pairs), *empty));
            assert_eq!(got, *want, "{method} {path} {pairs:?} empty={empty}");
        }
        let open = check(
            &AllowedHosts::Any,
            &Method::GET,
            "/healthz",
            &headers(&[]),
            true,
        );
        assert_eq!(open, Ok(()));
    }
}
