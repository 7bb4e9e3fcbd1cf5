//! `/v1/events`: hand hookd an event over HTTP (the outbox table is the other way in).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use hookd_store::{EventId, NewEvent};

use super::deliveries::DeliveryView;
use super::error::{ApiError, ErrorBody};
use super::json::{raw_payload, Body};
use super::scope::{AdminOnly, Caller};
use super::time::rfc3339;
use super::AppState;
use crate::daemon::trace_context::TraceParent;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    event_type: String,
    /// Kept byte for byte: the body receivers get is exactly what was sent here.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    event_id: Option<String>,
    endpoint_id: Option<String>,
    /// The tenant it belongs to: it fans out to that tenant's endpoints only.
    tenant_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    event_id: String,
    deliveries: u64,
}

/// Checks an event type or id: 1 to 200 visible ASCII characters (an event id is sent as
/// the `webhook-id` header).
pub fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 200 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to 200 visible ASCII characters"
        )));
    }
    Ok(())
}

/// The request's W3C `traceparent`, when it is valid: the event's attempts join that trace.
/// A malformed one is ignored, as W3C asks, rather than refusing the event.
fn traceparent(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    TraceParent::parse(value).map(|_| value.trim().to_string())
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventRequest, params(("traceparent" = Option<String>, Header, description = "W3C trace context of the producer: every attempt joins that trace; a malformed one is ignored")), security(("admin_token" = [])), responses((status = 202, description = "accepted; deliveries created", body = Accepted), (status = 200, description = "a known event_id: nothing created, the first answer", body = Accepted), (status = 404, description = "unknown endpoint_id", body = ErrorBody), (status = 413, description = "payload too large", body = ErrorBody), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields, or a payload that does not match its event type's schema (the message names the first failing path)", body = ErrorBody)))]
/// `202` with the deliveries created; `200` with the first answer for a known `event_id`.
pub async fn create(
    _: AdminOnly,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Body(req): Body<EventRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let tenant = req
        .tenant_id
        .as_deref()
        .map(|t| {
            hookd_store::TenantId::parse(t)
                .map_err(|e| ApiError::invalid(format!("tenant_id: {e}")))
        })
        .transpose()?;
    check_name("event_type", &req.event_type)?;
    if hookd_store::operational::TYPES.contains(&req.event_type.as_str()) {
        // Receivers trust these to come from hookd itself.
        return Err(ApiError::invalid(format!(
            "event_type: {} is one of hookd's own operational events",
            req.event_type
        )));
    }
    if let Some(id) = &req.event_id {
        check_name("event_id", id)?;
    }
    let payload = req.payload.get();
    if payload.len() > state.limits.max_payload_bytes {
        return Err(ApiError::TooLarge(format!(
            "payload is {} bytes, over the limit of {}",
            payload.len(),
            state.limits.max_payload_bytes
        )));
    }
    let depth = hookd_store::json_depth(payload);
    if depth > hookd_store::ingest::MAX_DEPTH {
        return Err(ApiError::MalformedJson(format!(
            "payload is nested {depth} levels deep, over the limit of {}",
            hookd_store::ingest::MAX_DEPTH
        )));
    }
    if let Some(reason) = state.schemas.check_payload(&req.event_type, payload) {
        return Err(ApiError::invalid(reason));
    }
    if let Some(endpoint_id) = &req.endpoint_id {
        match state.store.endpoint(&endpoint_id.as_str().into()).await? {
            None => return Err(ApiError::not_found("endpoint", endpoint_id)),
            Some(e) if e.tenant_id != tenant => {
                return Err(ApiError::invalid(format!(
                    "endpoint_id: {}",
                    hookd_store::matching::ANOTHER_TENANT
                )))
            }
            Some(_) => {}
        }
    }
    let event = NewEvent {
        event_id: req.event_id,
        event_type: req.event_type,
        payload: payload.to_string(),
        endpoint_id: req.endpoint_id,
        tenant_id: tenant.map(|t| t.to_string()),
        traceparent: traceparent(&headers),
    };
    // The group commit wakes the dispatcher for what it did not lease to it.
    let enqueued = state.events.enqueue(event).await?;
    let status = if enqueued.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Accepted {
            event_id: enqueued.event_id.into(),
            deliveries: enqueued.deliveries,
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    event_id: String,
    event_type: String,
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    endpoint_id: Option<String>,
    tenant_id: Option<String>,
    payload_error: Option<String>,
    created_at: String,
    deliveries: Vec<DeliveryView>,
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "the event_id")), security(("admin_token" = [])), responses((status = 200, body = EventView), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)))]
pub async fn show(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<EventId>,
) -> Result<Json<EventView>, ApiError> {
    let event = state
        .store
        .event_in(&scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event", &id))?;
    let filter = hookd_store::DeliveryFilter {
        event_id: Some(id),
        ..Default::default()
    };
    let deliveries = state
        .store
        .deliveries_in(&scope, &filter, None, 1000)
        .await?;
    Ok(Json(EventView {
        event_id: event.event_id.into(),
        event_type: event.event_type,
        payload: raw_payload(event.payload),
        endpoint_id: event.endpoint_id.map(Into::into),
        tenant_id: event.tenant_id.map(|t| t.to_string()),
        payload_error: event.payload_error,
        created_at: rfc3339(event.created_at),
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
    }))
}
