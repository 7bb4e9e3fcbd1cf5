//! `/v1/event-types`: the event-type catalog, provider-wide. Anyone with a token reads it
//! (the tenant portal offers it as a pick-list); only the admin changes it. A type's JSON
//! Schema is checked when it is given (`422` when it is not a JSON Schema), and from then
//! on `POST /v1/events` and the outbox check payloads of that type against it
//! ([`crate::daemon::catalog`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use hookd_store::{EventType, StoreError};

use super::error::{ApiError, ErrorBody};
use super::events::check_name;
use super::json::{nullable, raw_payload, Body};
use super::scope::{AdminOnly, Caller};
use super::time::rfc3339;
use super::{AppState, Page, PageQuery};
use crate::daemon::catalog;

/// A description longer than this is refused: it is shown in a pick-list.
const MAX_DESCRIPTION: usize = 1000;
/// A schema larger than this is refused: every instance compiles and holds it.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEventType {
    /// The event type, as events carry it: 1 to 200 visible ASCII characters.
    name: String,
    description: Option<String>,
    /// A JSON Schema (draft from `$schema`, else 2020-12) that payloads of this type must
    /// match. Self-contained: a `$ref` to another document is refused.
    #[schema(value_type = Option<Object>)]
    schema: Option<Box<RawValue>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypePatch {
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// `null` removes the schema: payloads of this type are no longer checked.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    schema: Option<Option<Box<RawValue>>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventTypeView {
    name: String,
    description: Option<String>,
    #[schema(value_type = Option<Object>)]
    schema: Option<Box<RawValue>>,
    created_at: String,
    updated_at: String,
}

impl From<EventType> for EventTypeView {
    fn from(t: EventType) -> Self {
        EventTypeView {
            name: t.name,
            description: t.description,
            schema: t.schema.map(raw_payload),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    match description {
        Some(d) if d.len() > MAX_DESCRIPTION => Err(ApiError::invalid(format!(
            "description is {} bytes, over the limit of {MAX_DESCRIPTION}",
            d.len()
        ))),
        _ => Ok(()),
    }
}

/// The schema's text to store, once it compiles.
fn check_schema(schema: Option<&RawValue>) -> Result<Option<String>, ApiError> {
    let Some(raw) = schema else { return Ok(None) };
    let text = raw.get();
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(format!(
            "schema is {} bytes, over the limit of {MAX_SCHEMA_BYTES}",
            text.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("schema: {e}")))?;
    catalog::compile(&value)
        .map_err(|e| ApiError::invalid(format!("schema is not a valid JSON Schema: {e}")))?;
    Ok(Some(text.to_string()))
}

/// After a change: this instance checks with the new schemas at once (others within
/// [`catalog::REFRESH`]). The change is stored either way; a failed reload is retried by
/// the periodic one.
async fn reload(state: &AppState) {
    if let Err(e) = state.schemas.reload(state.store.as_ref()).await {
        tracing::warn!(error = %e, "cannot reload the event-type catalog after a change");
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no event type named {name:?}"))
}

#[utoipa::path(get, path = "/v1/event-types", tag = "event-types", params(("limit" = Option<u32>, Query, description = "1 to 1000, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), security(("admin_token" = [])), responses((status = 200, description = "event types by name; a tenant token reads them too", body = Page<EventTypeView>), (status = 401, description = "missing or wrong token", body = ErrorBody), (status = 422, description = "invalid limit", body = ErrorBody)))]
pub async fn list(
    _: Caller,
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<EventTypeView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit()?;
    let types = state.store.event_types(q.cursor.as_deref(), limit).await?;
    let next_cursor = (types.len() == limit as usize)
        .then(|| types.last().map(|t| t.name.clone()))
        .flatten();
    Ok(Json(Page {
        data: types.into_iter().map(EventTypeView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", request_body = NewEventType, security(("admin_token" = [])), responses((status = 201, body = EventTypeView), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 403, description = "a tenant token cannot change the catalog", body = ErrorBody), (status = 409, description = "an event type of this name exists", body = ErrorBody), (status = 422, description = "invalid name or description, or a schema that is not a JSON Schema", body = ErrorBody)))]
pub async fn create(
    _: AdminOnly,
    State(state): State<AppState>,
    Body(req): Body<NewEventType>,
) -> Result<(StatusCode, Json<EventTypeView>), ApiError> {
    check_name("name", &req.name)?;
    check_description(req.description.as_deref())?;
    let schema = check_schema(req.schema.as_deref())?;
    let created = match state
        .store
        .insert_event_type(&EventType {
            name: req.name,
            description: req.description,
            schema,
            ..EventType::default()
        })
        .await
    {
        Err(StoreError::Conflict(what)) => {
            return Err(ApiError::Conflict(format!("{what} already exists")))
        }
        other => other?,
    };
    reload(&state).await;
    tracing::info!(event_type = %created.name, schema = created.schema.is_some(), "event type created");
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(get, path = "/v1/event-types/{name}", tag = "event-types", params(("name" = String, Path)), security(("admin_token" = [])), responses((status = 200, body = EventTypeView), (status = 401, description = "missing or wrong token", body = ErrorBody), (status = 404, description = "unknown name", body = ErrorBody)))]
pub async fn show(
    _: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EventTypeView>, ApiError> {
    let t = state
        .store
        .event_type(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(t.into()))
}

#[utoipa::path(patch, path = "/v1/event-types/{name}", tag = "event-types", params(("name" = String, Path)), request_body = EventTypePatch, security(("admin_token" = [])), responses((status = 200, body = EventTypeView), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 403, description = "a tenant token cannot change the catalog", body = ErrorBody), (status = 404, description = "unknown name", body = ErrorBody), (status = 422, description = "invalid description, or a schema that is not a JSON Schema", body = ErrorBody)))]
pub async fn update(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(patch): Body<EventTypePatch>,
) -> Result<Json<EventTypeView>, ApiError> {
    let mut t = state
        .store
        .event_type(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if let Some(description) = patch.description {
        check_description(description.as_deref())?;
        t.description = description;
    }
    if let Some(schema) = patch.schema {
        t.schema = check_schema(schema.as_deref())?;
    }
    // Two admins patching the same type at once: the last write wins, field by field as
    // each read it; the catalog has no versions.
    let updated = state
        .store
        .update_event_type(&t)
        .await?
        .ok_or_else(|| not_found(&name))?;
    reload(&state).await;
    tracing::info!(event_type = %updated.name, schema = updated.schema.is_some(), "event type updated");
    Ok(Json(updated.into()))
}

#[utoipa::path(delete, path = "/v1/event-types/{name}", tag = "event-types", params(("name" = String, Path)), security(("admin_token" = [])), responses((status = 204, description = "deleted: payloads of this type are no longer checked; endpoints subscribed to it keep their subscription"), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 403, description = "a tenant token cannot change the catalog", body = ErrorBody), (status = 404, description = "unknown name", body = ErrorBody)))]
pub async fn delete(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_event_type(&name).await? {
        return Err(not_found(&name));
    }
    reload(&state).await;
    tracing::info!(event_type = %name, "event type deleted");
    Ok(StatusCode::NO_CONTENT)
}
