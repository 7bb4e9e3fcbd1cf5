//! The web dashboard: three static files built into the binary, served at `/` and, for a
//! tenant's people, at `/portal`.
//!
//! The page is public; everything it shows comes from the API (`/v1/...`) through the
//! browser. At `/` it sends the admin token when one is configured (the page asks for it on
//! a `401` and keeps it in `sessionStorage`). At `/portal` the same script runs as the
//! portal: it takes the token from the link's fragment (`#token=...`, which never reaches
//! a server), keeps it in `sessionStorage`, removes it from the address bar, and shows only
//! what a tenant uses. It adds no API of its own.
//!
//! | path | file |
//! |---|---|
//! | `/`, `/portal` | `assets/index.html` |
//! | `/dashboard/app.js` | `assets/app.js` (plain ES module, no build step) |
//! | `/dashboard/app.css` | `assets/app.css` |
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'`: no inline script or
//! style, no other origin. Nothing is fetched from a CDN.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The policy on every dashboard answer.
pub const CSP: &str = "default-src 'self'";

/// `/`, `/portal`, `/dashboard/app.js` and `/dashboard/app.css`, for any router state.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(index))
        .route("/portal", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 6] = [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        // Small files: always revalidate, so a new hookd is never paired with an old script.
        (CACHE_CONTROL, "no-cache"),
    ];
    (headers, body)
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_path(path: &str) -> reqwest::Response {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes::<()>()).await });
        reqwest::get(format!("http://{addr}{path}")).await.unwrap()
    }

    #[tokio::test]
    async fn serves_the_files_with_their_types_and_the_policy() {
        for (path, content_type, body) in [
            ("/", "text/html; charset=utf-8", INDEX_HTML),
            ("/portal", "text/html; charset=utf-8", INDEX_HTML),
            (
                "/dashboard/app.js",
                "text/javascript; charset=utf-8",
                APP_JS,
            ),
            ("/dashboard/app.css", "text/css; charset=utf-8", APP_CSS),
        ] {
            let res = get_path(path).await;
            assert_eq!(res.status(), 200, "{path}");
            let header = |name: &str| res.headers()[name].to_str().unwrap().to_owned();
            assert_eq!(header("content-type"), content_type, "{path}");
            assert_eq!(header("content-security-policy"), CSP, "{path}");
            assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
            assert_eq!(res.text().await.unwrap(), body, "{path}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains(r#"src="/dashboard/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/dashboard/app.css""#));
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://"), "no other origin");
            assert!(!text.contains("https://"), "no other origin");
        }
        // Inline script or style would be refused by the policy anyway.
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
    }

    #[test]
    fn tokens_stay_in_session_storage() {
        // The admin token and the portal's tenant token live in sessionStorage only.
        assert!(APP_JS.contains("sessionStorage"));
        for store in ["localStorage", "document.cookie", "indexedDB"] {
            assert!(!APP_JS.contains(store), "app.js uses {store}");
        }
        // The portal's link token leaves the address bar and this history entry.
        assert!(APP_JS.contains("history.replaceState"));
    }

    #[test]
    fn the_script_never_renders_markup_from_strings() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
