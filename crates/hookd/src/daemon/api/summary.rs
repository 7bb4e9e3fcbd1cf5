//! `GET /v1/endpoints/summary`: per endpoint, how its deliveries of a recent window went,
//! what waits now, and whether it is disabled and why. The dashboard's overview.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use hookd_store::EndpointSummary;

use super::error::{ApiError, ErrorBody};
use super::scope::Caller;
use super::time::{rfc3339, rfc3339_opt};
use super::{AppState, PageQuery};
use crate::duration;

const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Deserialize)]
pub struct SummaryQuery {
    window: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

/// A page of endpoint summaries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SummaryPage {
    /// The window, as asked for (default `24h`).
    window: String,
    /// Its start: deliveries created at or after it count.
    since: String,
    data: Vec<EndpointSummaryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// One endpoint's figures.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointSummaryView {
    endpoint_id: String,
    url: String,
    description: Option<String>,
    enabled: bool,
    /// Why it is disabled: by an operator, `gone` (410) or `failing`.
    disabled_reason: Option<String>,
    disabled_at: Option<String>,
    last_success_at: Option<String>,
    failing_since: Option<String>,
    /// Deliveries created in the window.
    deliveries: u64,
    /// Of those, succeeded.
    succeeded: u64,
    /// Of those, failed for good (retries used up, `410 Gone`, endpoint deleted...).
    failed: u64,
    /// Of those, pending after at least one attempt: waiting for a retry, or parked.
    retrying: u64,
    /// `succeeded / (succeeded + failed)`, 0 to 1 (4 decimals); `null` when none finished.
    success_rate: Option<f64>,
    /// Deliveries pending or in flight now, whatever their age.
    pending: u64,
}

impl From<EndpointSummary> for EndpointSummaryView {
    fn from(s: EndpointSummary) -> Self {
        let success_rate = s.success_rate().map(|r| (r * 10_000.0).round() / 10_000.0);
        let e = s.endpoint;
        EndpointSummaryView {
            endpoint_id: e.id.into(),
            url: e.url,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: rfc3339_opt(e.disabled_at),
            last_success_at: rfc3339_opt(e.last_success_at),
            failing_since: rfc3339_opt(e.failing_since),
            deliveries: s.deliveries,
            succeeded: s.succeeded,
            failed: s.failed,
            retrying: s.retrying,
            success_rate,
            pending: s.pending,
        }
    }
}

#[utoipa::path(get, path = "/v1/endpoints/summary", tag = "endpoints", params(("window" = Option<String>, Query, description = "a duration, more than 0 and at most 30 days; default 24h"), ("limit" = Option<u32>, Query, description = "endpoints per page, 1 to 1000, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), security(("admin_token" = [])), responses((status = 200, description = "per endpoint, oldest first: its deliveries created in the window by state now, its success rate, what is pending now, and whether it is disabled and why", body = SummaryPage), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid window, limit or cursor", body = ErrorBody)))]
pub async fn endpoints(
    Caller(scope): Caller,
    State(state): State<AppState>,
    query: Result<Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SummaryPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.page.limit()?;
    let window_text = q.window.as_deref().map(str::trim).unwrap_or("24h");
    let window = match &q.window {
        None => DEFAULT_WINDOW,
        Some(_) => duration::parse_duration(window_text)
            .map_err(|e| ApiError::invalid(format!("window: {e}")))?,
    };
    if window.is_zero() || window > MAX_WINDOW {
        return Err(ApiError::invalid(
            "window must be more than 0 and at most 30 days",
        ));
    }
    let page = state
        .store
        .endpoint_summaries_in(
            &scope,
            q.page.cursor.as_deref(),
            limit,
            window.as_millis() as i64,
        )
        .await?;
    let next_cursor = (page.endpoints.len() == limit as usize)
        .then(|| page.endpoints.last().map(|s| s.endpoint.id.to_string()))
        .flatten();
    Ok(Json(SummaryPage {
        window: window_text.to_string(),
        since: rfc3339(page.since_ms),
        data: page.endpoints.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
