//! `/v1/deliveries`: the delivery log, each delivery's attempts, and resends.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use hookd_store::{AttemptRecord, Delivery, DeliveryFilter, DeliveryState};

use super::error::{ApiError, ErrorBody};
use super::json::raw_payload;
use super::scope::Caller;
use super::time::{parse_instant, rfc3339, rfc3339_opt};
use super::{AppState, Page, PageQuery};

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: i64,
    event_id: String,
    endpoint_id: String,
    /// The event's tenant; `null`: the provider-wide tenant.
    tenant_id: Option<String>,
    event_type: String,
    state: &'static str,
    attempts: i32,
    next_attempt_at: Option<String>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            state: d.state.as_str(),
            next_attempt_at: rfc3339_opt(d.next_attempt_at),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            finished_at: rfc3339_opt(d.finished_at),
            event_id: d.event_id.into(),
            endpoint_id: d.endpoint_id.into(),
            tenant_id: d.tenant_id.map(|t| t.to_string()),
            event_type: d.event_type,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    attempt: i32,
    trigger: &'static str,
    started_at: String,
    duration_ms: i64,
    status_code: Option<i32>,
    outcome: &'static str,
    error: Option<String>,
    response_body: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            trigger: a.trigger.as_str(),
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            outcome: a.outcome.as_str(),
            error: a.error,
            response_body: a.response_body,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// The event's payload, as sent.
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
    attempt_log: Vec<AttemptView>,
}

/// Filters shared by the log and bulk resend.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterFields {
    /// One tenant's deliveries (a tenant token: its own, given or not).
    tenant_id: Option<String>,
    /// pending, in_flight, succeeded or failed. failed = given up after the whole retry
    /// schedule; a delivery still being retried is pending (attempts > 0, last_error set).
    state: Option<String>,
    endpoint_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl FilterFields {
    fn into_filter(self, caller: &Caller, now_ms: i64) -> Result<DeliveryFilter, ApiError> {
        let tenant_id = caller.tenant_named("tenant_id", self.tenant_id.as_deref())?;
        let state = self
            .state
            .map(|s| {
                s.parse::<DeliveryState>().map_err(|_| {
                    ApiError::invalid(format!(
                        "state must be pending, in_flight, succeeded or failed, not {s:?}"
                    ))
                })
            })
            .transpose()?;
        let instant = |field: &str, v: Option<String>| {
            v.map(|t| {
                parse_instant(&t, now_ms).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
            })
            .transpose()
        };
        Ok(DeliveryFilter {
            tenant_id,
            state,
            endpoint_id: self.endpoint_id.map(Into::into),
            event_id: self.event_id.map(Into::into),
            event_type: self.event_type,
            since: instant("since", self.since)?,
            until: instant("until", self.until)?,
        })
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    page: PageQuery,
    tenant_id: Option<String>,
    state: Option<String>,
    endpoint_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(("tenant_id" = Option<String>, Query, description = "one tenant's deliveries only"), ("state" = Option<String>, Query, description = "pending, in_flight, succeeded or failed. failed = given up after the whole retry schedule; a delivery still being retried is pending (attempts > 0, last_error set)"), ("endpoint_id" = Option<String>, Query), ("event_id" = Option<String>, Query), ("event_type" = Option<String>, Query), ("since" = Option<String>, Query, description = "RFC 3339, or a duration ago such as 1h"), ("until" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"), ("cursor" = Option<String>, Query)), security(("admin_token" = [])), responses((status = 200, description = "newest first", body = Page<DeliveryView>), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.page.limit()?;
    let before = q
        .page
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!("cursor {c:?} is not a cursor from next_cursor"))
            })
        })
        .transpose()?;
    let fields = FilterFields {
        tenant_id: q.tenant_id,
        state: q.state,
        endpoint_id: q.endpoint_id,
        event_id: q.event_id,
        event_type: q.event_type,
        since: q.since,
        until: q.until,
    };
    let filter = fields.into_filter(&caller, chrono::Utc::now().timestamp_millis())?;
    let rows = state
        .store
        .deliveries_in(&caller.0, &filter, before, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(Page {
        data: rows.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// Delivery ids are numbers; anything else names no delivery.
fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("delivery", id))
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = i64, Path)), security(("admin_token" = [])), responses((status = 200, body = DeliveryDetail), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)))]
pub async fn show(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let n = parse_id(&id)?;
    let delivery = state
        .store
        .delivery_in(&scope, n)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery", &id))?;
    let attempts = state.store.attempts(n).await?;
    let payload = state
        .store
        .event_in(&scope, &delivery.event_id)
        .await?
        .map(|e| raw_payload(e.payload));
    Ok(Json(DeliveryDetail {
        delivery: delivery.into(),
        payload,
        attempt_log: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/resend", tag = "deliveries", params(("id" = i64, Path)), security(("admin_token" = [])), responses((status = 202, description = "one manual attempt now, whatever the state", body = DeliveryView), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)))]
/// One manual attempt now, whatever the state.
pub async fn resend(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let n = parse_id(&id)?;
    if !state.store.resend_in(&scope, n).await? {
        return Err(ApiError::not_found("delivery", &id));
    }
    state.metrics.manual_resends.inc();
    state.dispatch_wake.notify_one();
    let delivery = state
        .store
        .delivery_in(&scope, n)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery", &id))?;
    tracing::info!(delivery_id = n, "manual resend requested");
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

#[utoipa::path(post, path = "/v1/deliveries/resend", tag = "deliveries", request_body(content = Option<FilterFields>), security(("admin_token" = [])), responses((status = 202, description = "a durable resend job started", body = JobStarted), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
/// Starts a durable bulk resend of every delivery matching the filter now: `202` with
/// `{"matched": N, "job_id": ...}`. The job is in the database before the answer, so it
/// survives a restart; follow it at `GET /v1/resend-jobs/{id}`.
pub async fn bulk_resend(
    caller: Caller,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<JobStarted>), ApiError> {
    let fields: FilterFields = if body.iter().all(u8::is_ascii_whitespace) {
        FilterFields::default()
    } else {
        super::json::parse(&body)?
    };
    let filter = fields.into_filter(&caller, chrono::Utc::now().timestamp_millis())?;
    let job = state.store.create_resend_job_in(&caller.0, &filter).await?;
    state.jobs_wake.notify_one();
    tracing::info!(job_id = %job.id, matched = job.matched, "bulk resend started");
    Ok((
        StatusCode::ACCEPTED,
        Json(JobStarted {
            matched: job.matched,
            job_id: job.id,
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobStarted {
    matched: i64,
    job_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ResendJobView {
    id: String,
    /// `running` or `done`.
    state: &'static str,
    matched: i64,
    resent: i64,
    filter: FilterView,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FilterView {
    tenant_id: Option<String>,
    state: Option<&'static str>,
    endpoint_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

#[utoipa::path(get, path = "/v1/resend-jobs/{id}", tag = "deliveries", params(("id" = String, Path)), security(("admin_token" = [])), responses((status = 200, body = ResendJobView), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)))]
/// `GET /v1/resend-jobs/{id}`: a bulk resend's progress.
pub async fn resend_job(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ResendJobView>, ApiError> {
    let job = state
        .store
        .resend_job_in(&scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("resend job", &id))?;
    let f = job.filter;
    Ok(Json(ResendJobView {
        id: job.id,
        state: if job.done { "done" } else { "running" },
        matched: job.matched,
        resent: job.resent,
        filter: FilterView {
            tenant_id: f.tenant_id.map(|t| t.to_string()),
            state: f.state.map(|s| s.as_str()),
            endpoint_id: f.endpoint_id.map(Into::into),
            event_id: f.event_id.map(Into::into),
            event_type: f.event_type,
            since: rfc3339_opt(f.since),
            until: rfc3339_opt(f.until),
        },
        created_at: rfc3339(job.created_at),
        updated_at: rfc3339(job.updated_at),
        finished_at: rfc3339_opt(job.finished_at),
    }))
}
