//! The admin REST API, `/metrics` and the health checks, on one axum router.
//!
//! - `endpoints`: register and manage receivers.
//! - `events`: accept events over HTTP; `group_commit` writes concurrent ones together.
//! - `event_types`: the event-type catalog, with the JSON Schemas payloads are checked
//!   against.
//! - `deliveries`: the delivery log with every attempt, and resends.
//! - `summary`: per endpoint, how its recent deliveries went (the dashboard's overview).
//! - `tenants`: tenants' portal tokens.
//! - `scope`: who is calling: the admin or one tenant, resolved from the bearer token;
//!   every data handler hands the scope to the store, admin-only ones refuse tenants.
//! - `error`, `json`, `time`: the error format, body parsing, and RFC 3339 times.
//! - `etag`: endpoints' `ETag` and `If-Match`.
//! - `openapi`: the OpenAPI document, generated from the handlers' annotations;
//!   `webhooks`: its `webhooks`, the requests of hookd's operational events.
//! - `browser`: `Host`, `Origin` and content-type checks that keep web pages out.

pub mod browser;
mod deliveries;
mod endpoints;
pub mod error;
mod etag;
mod event_types;
mod events;
#[cfg(test)]
mod fuzz;
pub mod group_commit;
mod json;
pub mod openapi;
pub mod scope;
mod summary;
mod tenants;
mod time;
mod webhooks;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use hookd_store::{IngestLimits, Store};

use crate::daemon::metrics::Metrics;
use error::ApiError;

/// What the handlers share: one reference count to clone per request (axum clones the
/// state into every extractor that asks for it).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handlers' shared parts.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Notified when deliveries may be due (an event, a resend, an endpoint enabled).
    pub dispatch_wake: Arc<Notify>,
    /// Notified when a bulk resend job is created.
    pub jobs_wake: Arc<Notify>,
    pub admin_token: Option<Arc<str>>,
    /// The `Host` names the server answers to.
    pub allowed_hosts: Arc<browser::AllowedHosts>,
    /// Which endpoint URLs may be registered.
    pub targets: Arc<crate::daemon::ssrf::TargetPolicy>,
    pub limits: IngestLimits,
    /// The catalog's compiled schemas: `POST /v1/events` checks payloads against them.
    pub schemas: Arc<crate::daemon::catalog::Schemas>,
    /// Writes `POST /v1/events` in shared transactions.
    pub events: group_commit::GroupCommit,
    pub health: Arc<crate::daemon::health::Health>,
}

/// A page of a list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    const DEFAULT: u32 = 50;
    const MAX: u32 = 1000;

    fn limit(&self) -> Result<u32, ApiError> {
        match &self.limit {
            None => Ok(Self::DEFAULT),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=Self::MAX).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid(format!(
                    "limit must be 1 to {}, not {text:?}",
                    Self::MAX
                ))),
            },
        }
    }
}

/// The whole HTTP surface. The `/v1` routes and `/openapi.json` come from the same
/// handler annotations, so the document cannot drift from the routes that exist.
pub fn router(state: AppState) -> Router {
    let (v1, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(endpoints::list, endpoints::create))
        .routes(routes!(
            endpoints::show,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(summary::endpoints))
        .routes(routes!(events::create))
        .routes(routes!(events::show))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::bulk_resend))
        .routes(routes!(deliveries::show))
        .routes(routes!(deliveries::resend))
        .routes(routes!(deliveries::resend_job))
        .routes(routes!(tenants::create_token, tenants::revoke_tokens))
        .routes(routes!(event_types::list, event_types::create))
        .routes(routes!(
            event_types::show,
            event_types::update,
            event_types::delete
        ))
        .split_for_parts();
    let (open, open_doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .split_for_parts();
    doc.merge(open_doc);
    let doc = Arc::new(doc);
    let v1 = v1.route_layer(middleware::from_fn_with_state(
        state.clone(),
        scope::authenticate,
    ));
    // Room for the largest payload plus the request's other fields.
    let body_limit = state.limits.max_payload_bytes + 64 * 1024;
    Router::new()
        .merge(v1)
        .merge(open)
        .merge(crate::daemon::dashboard::routes())
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.allowed_hosts.clone(),
            browser::guard,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: no essential task has failed, the database answers, migrations are applied, the
/// dispatcher runs, and the process is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "ready"), (status = 503, description = "not ready, with the reason")))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason })),
        )
    };
    if let Some(failure) = state.health.failure() {
        return not_ready(failure.to_string());
    }
    if state.health.draining.load(Ordering::Relaxed) {
        return not_ready("shutting down".into());
    }
    if !state.health.dispatching.load(Ordering::Relaxed) {
        return not_ready("the dispatcher is not running".into());
    }
    if let Err(e) = state.store.check_ready().await {
        return not_ready(format!("database: {e}"));
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
