//! The admin REST API, `/metrics` and the health checks, on one axum router.
//!
//! - `endpoints`: register and manage receivers.
//! - `events`: accept events over HTTP.
//! - `deliveries`: the delivery log with every attempt, and resends.
//! - `error`, `json`, `time`: the error format, body parsing, and RFC 3339 times.

mod deliveries;
mod endpoints;
pub mod error;
mod events;
mod json;
mod time;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use hookd_store::{IngestLimits, Store};

use crate::metrics::Metrics;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Notified when deliveries may be due (an event, a resend, an endpoint enabled).
    pub dispatch_wake: Arc<Notify>,
    /// Notified when a bulk resend job is created.
    pub jobs_wake: Arc<Notify>,
    pub admin_token: Option<Arc<str>>,
    pub allow_private: bool,
    pub limits: IngestLimits,
    pub health: Arc<Health>,
}

/// Process state behind `/readyz`.
#[derive(Default)]
pub struct Health {
    pub dispatching: AtomicBool,
    pub draining: AtomicBool,
}

/// A page of a list.
#[derive(Serialize)]
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

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/endpoints", get(endpoints::list).post(endpoints::create))
        .route(
            "/endpoints/{id}",
            get(endpoints::show)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route(
            "/endpoints/{id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route("/events", post(events::create))
        .route("/events/{id}", get(events::show))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/resend", post(deliveries::bulk_resend))
        .route("/deliveries/{id}", get(deliveries::show))
        .route("/deliveries/{id}/resend", post(deliveries::resend))
        .route("/resend-jobs/{id}", get(deliveries::resend_job))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Room for the largest payload plus the request's other fields.
    let body_limit = state.limits.max_payload_bytes + 64 * 1024;
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Every `/v1` call needs the admin token when one is configured. Compared in constant time.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.admin_token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, migrations are applied, the dispatcher runs, and the
/// process is not shutting down.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason })),
        )
    };
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
