//! `/v1/endpoints`: register, read, change and delete receivers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use hookd_store::{matching, Endpoint, EndpointId, RateLimit, Scope, SignatureScheme, Versioned};

use super::error::{ApiError, ErrorBody};
use super::etag::{self, IfMatch};
use super::json::{nullable, Body};
use super::scope::Caller;
use super::time::{rfc3339, rfc3339_opt};
use super::{AppState, Page, PageQuery};
use crate::daemon::{signing, ssrf};
use crate::duration;

/// The most an endpoint may ask for: attempts must end well inside their lease.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RETRIES: usize = 50;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Headers hookd sets itself; an endpoint cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    url: String,
    /// The tenant it belongs to, for good (absent: the provider-wide tenant). With a
    /// tenant token: that token's tenant, given or not.
    tenant_id: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    bearer_token: Option<String>,
    signature_scheme: Option<String>,
    secret: Option<String>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
    ordered: Option<bool>,
    /// Deliveries per second at most, a positive number (fractions allowed); absent or
    /// `null`: unlimited. Deliveries over the limit wait, and are not failed attempts.
    #[schema(value_type = Option<f64>, minimum = 0, exclusive_minimum = 0)]
    rate_limit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    page: PageQuery,
    tenant_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    url: Option<String>,
    /// Cannot be changed: a value other than the endpoint's answers 422.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    tenant_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    event_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    bearer_token: Option<Option<String>>,
    signature_scheme: Option<String>,
    secret: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    retry_schedule: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    timeout: Option<Option<String>>,
    headers: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
    ordered: Option<bool>,
    /// Deliveries per second at most; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>)]
    rate_limit: Option<Option<serde_json::Value>>,
}

/// An endpoint as the API shows it. Lists leave out `secret` and `bearer_token`, and so
/// does every view of an endpoint whose secrets cannot be decrypted (`unreadable`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    id: String,
    /// `null`: the provider-wide tenant.
    tenant_id: Option<String>,
    url: String,
    description: Option<String>,
    event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bearer_token: Option<String>,
    has_bearer_token: bool,
    signature_scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// `null` = the global schedule.
    retry_schedule: Option<Vec<String>>,
    /// `null` = the global timeout.
    timeout: Option<String>,
    headers: BTreeMap<String, String>,
    enabled: bool,
    disabled_reason: Option<String>,
    disabled_at: Option<String>,
    /// Deliver strictly in insertion order, one at a time.
    ordered: bool,
    /// Deliveries per second at most, across every instance; `null` = unlimited.
    rate_limit: Option<f64>,
    /// While a rotated-out secret still signs beside the current one.
    previous_secret_expires_at: Option<String>,
    last_success_at: Option<String>,
    /// Failing with no success since then; `null` while healthy.
    failing_since: Option<String>,
    /// Why its secret and bearer token cannot be decrypted (`HOOKD_SECRET_KEY` missing or
    /// wrong): its deliveries fail until they can. `null` normally.
    unreadable: Option<String>,
    created_at: String,
    updated_at: String,
}

impl EndpointView {
    pub fn new(e: Endpoint, with_secrets: bool) -> EndpointView {
        let with_secrets = with_secrets && e.unreadable.is_none();
        EndpointView {
            tenant_id: e.tenant_id.as_ref().map(|t| t.to_string()),
            has_bearer_token: e.bearer_token.is_some(),
            bearer_token: e.bearer_token.filter(|_| with_secrets),
            secret: Some(e.secret).filter(|_| with_secrets),
            signature_scheme: e.signature_scheme.as_str(),
            retry_schedule: e.retry_schedule_ms.map(|s| {
                s.into_iter()
                    .map(|ms| duration::format_duration(Duration::from_millis(ms)))
                    .collect()
            }),
            timeout: e
                .timeout_ms
                .map(|ms| duration::format_duration(Duration::from_millis(ms))),
            disabled_at: rfc3339_opt(e.disabled_at),
            ordered: e.ordered,
            rate_limit: e.rate_limit.map(f64::from),
            previous_secret_expires_at: rfc3339_opt(
                e.previous_secret_expires_at
                    .filter(|_| e.previous_secret.is_some()),
            ),
            last_success_at: rfc3339_opt(e.last_success_at),
            failing_since: rfc3339_opt(e.failing_since),
            unreadable: e.unreadable,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            id: e.id.into(),
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            headers: e.headers,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
        }
    }
}

#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = NewEndpoint, security(("admin_token" = [])), responses((status = 201, description = "the endpoint, with its secret", body = EndpointView, headers(("ETag" = String, description = "the endpoint's version, `\"v1\"`: send it as `If-Match` to change it"))), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Body(req): Body<NewEndpoint>,
) -> Result<(StatusCode, Tagged, Json<EndpointView>), ApiError> {
    let tenant_id = caller.tenant_named("tenant_id", req.tenant_id.as_deref())?;
    let scheme = parse_scheme(req.signature_scheme.as_deref())?;
    let enabled = req.enabled.unwrap_or(true);
    let endpoint = Endpoint {
        id: hookd_store::new_id("ep").into(),
        tenant_id,
        url: req.url,
        description: req.description,
        event_types: req.event_types.unwrap_or_else(|| vec!["*".to_string()]),
        bearer_token: req.bearer_token,
        signature_scheme: scheme,
        secret: req.secret.unwrap_or_else(signing::generate_secret),
        retry_schedule_ms: req
            .retry_schedule
            .as_deref()
            .map(parse_schedule)
            .transpose()?,
        timeout_ms: req.timeout.as_deref().map(parse_timeout).transpose()?,
        headers: req.headers.unwrap_or_default(),
        enabled,
        ordered: req.ordered.unwrap_or(false),
        rate_limit: req
            .rate_limit
            .as_ref()
            .map(parse_rate_limit)
            .transpose()?
            .flatten(),
        ..Endpoint::default()
    };
    validate(&endpoint, &state.targets).await?;
    let stored = state.store.insert_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %stored.id, "endpoint registered");
    Ok((
        StatusCode::CREATED,
        etag::header(stored.version),
        Json(EndpointView::new(stored, true)),
    ))
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(("tenant_id" = Option<String>, Query, description = "one tenant's endpoints only"), ("limit" = Option<u32>, Query, description = "1 to 1000, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), security(("admin_token" = [])), responses((status = 200, description = "endpoints, oldest first, without secrets", body = Page<EndpointView>), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<EndpointView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.page.limit()?;
    // The admin's filter by tenant reads as that tenant's scope.
    let scope = match caller.tenant_named("tenant_id", q.tenant_id.as_deref())? {
        Some(tenant) => Scope::Tenant(tenant),
        None => Scope::Admin,
    };
    let endpoints = state
        .store
        .endpoints_in(&scope, q.page.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (endpoints.len() == limit as usize)
        .then(|| endpoints.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(Page {
        data: endpoints
            .into_iter()
            .map(|e| EndpointView::new(e, false))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)), security(("admin_token" = [])), responses((status = 200, body = EndpointView, headers(("ETag" = String, description = "the endpoint's version, such as `\"v3\"`: send it as `If-Match` to change it"))), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)))]
pub async fn show(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<EndpointId>,
) -> Result<(Tagged, Json<EndpointView>), ApiError> {
    let endpoint = read(&state, &scope, &id).await?;
    Ok(tagged(endpoint))
}

#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC)), request_body = EndpointPatch, security(("admin_token" = [])), responses((status = 200, body = EndpointView, headers(("ETag" = String, description = "the endpoint's new version"))), (status = 404, description = "unknown id", body = ErrorBody), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 409, description = "without If-Match: the endpoint kept changing while the change was applied; or the endpoint is unreadable and the patch changes some of its secrets, not all", body = ErrorBody), (status = 412, description = "the endpoint changed since the If-Match version was read; nothing was changed", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn update(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<EndpointId>,
    headers: HeaderMap,
    Body(patch): Body<EndpointPatch>,
) -> Result<(Tagged, Json<EndpointView>), ApiError> {
    let condition = IfMatch::from_headers(&headers);
    for tries in 1.. {
        let mut e = read(&state, &scope, &id).await?;
        let version = condition.check(&id, e.version)?;
        let disabling = apply(&mut e, &patch)?;
        validate(&e, &state.targets).await?;
        match state
            .store
            .update_endpoint_in(&scope, &e, Some(version))
            .await?
        {
            Versioned::Done(updated) => {
                if disabling {
                    state
                        .metrics
                        .endpoint_disables
                        .with_label_values(&["operator"])
                        .inc();
                }
                if updated.enabled {
                    state.dispatch_wake.notify_one(); // parked deliveries may be due now
                }
                return Ok(tagged(updated));
            }
            Versioned::NotFound => return Err(ApiError::not_found("endpoint", &id)),
            Versioned::Changed => condition.retry(&id, tries)?,
        }
    }
    unreachable!("the tries end in an answer")
}

/// Applies a `PATCH` to an endpoint as read; returns whether it disables the endpoint.
fn apply(e: &mut Endpoint, patch: &EndpointPatch) -> Result<bool, ApiError> {
    if let Some(tenant) = &patch.tenant_id {
        if tenant.as_deref() != e.tenant_id.as_ref().map(|t| t.as_str()) {
            return Err(ApiError::invalid(
                "tenant_id cannot be changed: create the endpoint again under the other tenant",
            ));
        }
    }
    if let Some(reason) = &e.unreadable {
        // Its stored secrets are kept as they are (they cannot be read back): they can be
        // replaced all at once, not changed one by one.
        if patch.secret.is_some() && patch.bearer_token.is_some() {
            e.unreadable = None;
        } else if patch.secret.is_some()
            || patch.bearer_token.is_some()
            || patch.signature_scheme.is_some()
        {
            return Err(ApiError::Conflict(format!(
                "{reason}; or replace them: send both secret and bearer_token (null for none)"
            )));
        }
    }
    if let Some(url) = &patch.url {
        e.url = url.clone();
    }
    if let Some(description) = &patch.description {
        e.description = description.clone();
    }
    if let Some(types) = &patch.event_types {
        e.event_types = types.clone();
    }
    if let Some(token) = &patch.bearer_token {
        e.bearer_token = token.clone();
    }
    if patch.signature_scheme.is_some() || patch.secret.is_some() {
        // A new scheme or a secret set by hand ends any rotation: the previous secret may
        // not even be valid for the new scheme.
        e.previous_secret = None;
        e.previous_secret_expires_at = None;
    }
    if let Some(scheme) = &patch.signature_scheme {
        e.signature_scheme = parse_scheme(Some(scheme))?;
    }
    if let Some(secret) = &patch.secret {
        e.secret = secret.clone();
    }
    if let Some(schedule) = &patch.retry_schedule {
        e.retry_schedule_ms = schedule.as_deref().map(parse_schedule).transpose()?;
    }
    if let Some(timeout) = &patch.timeout {
        e.timeout_ms = timeout.as_deref().map(parse_timeout).transpose()?;
    }
    if let Some(headers) = &patch.headers {
        e.headers = headers.clone();
    }
    if let Some(ordered) = patch.ordered {
        e.ordered = ordered;
    }
    if let Some(rate_limit) = &patch.rate_limit {
        e.rate_limit = rate_limit
            .as_ref()
            .map(parse_rate_limit)
            .transpose()?
            .flatten();
    }
    let mut disabling = false;
    if let Some(enabled) = patch.enabled {
        if enabled && !e.enabled {
            e.disabled_reason = None;
            e.disabled_at = None;
        } else if !enabled && e.enabled {
            e.disabled_reason = Some("disabled by an operator".into());
            e.disabled_at = Some(chrono::Utc::now().timestamp_millis());
            disabling = true;
        }
        e.enabled = enabled;
    }
    Ok(disabling)
}

/// `rate_limit`: a positive number of deliveries per second; `null`: none.
fn parse_rate_limit(value: &serde_json::Value) -> Result<Option<RateLimit>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    value
        .as_f64()
        .and_then(RateLimit::new)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "rate_limit must be a number of deliveries per second above 0 \
                 (null or absent: unlimited), not {value}"
            ))
        })
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC)), security(("admin_token" = [])), responses((status = 204, description = "deleted; its history stays readable"), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 412, description = "the endpoint changed since the If-Match version was read; it was not deleted", body = ErrorBody)))]
pub async fn delete(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<EndpointId>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let condition = IfMatch::from_headers(&headers);
    let version = match condition {
        IfMatch::Any => None,
        IfMatch::Versions(_) => {
            Some(condition.check(&id, read(&state, &scope, &id).await?.version)?)
        }
    };
    match state.store.delete_endpoint_in(&scope, &id, version).await? {
        Versioned::Done(()) => {
            tracing::info!(endpoint_id = %id, "endpoint deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Versioned::NotFound => Err(ApiError::not_found("endpoint", &id)),
        Versioned::Changed => Err(etag::changed(&id, None)),
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The new secret; generated when absent.
    secret: Option<String>,
    /// How long the old secret keeps signing beside the new one (default 24h, at most 30
    /// days; `0s` retires it at once).
    grace: Option<String>,
}

/// The longest a rotated-out secret may keep signing.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[utoipa::path(post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints", params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC)), request_body(content = Option<Rotation>), security(("admin_token" = [])), responses((status = 200, body = EndpointView, headers(("ETag" = String, description = "the endpoint's new version"))), (status = 412, description = "the endpoint changed since the If-Match version was read; nothing was changed", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "a rotation is in progress, or the endpoint is unreadable", body = ErrorBody), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "missing or wrong admin token", body = ErrorBody), (status = 422, description = "invalid fields", body = ErrorBody)))]
/// `POST /v1/endpoints/{id}/rotate-secret`: a new secret now; with `standard`, the old one
/// keeps signing beside it for the grace period, so receivers switch keys without losing an
/// event. `409` while an earlier rotation's grace period runs, or while its secret cannot
/// be decrypted.
pub async fn rotate_secret(
    Caller(scope): Caller,
    State(state): State<AppState>,
    Path(id): Path<EndpointId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(Tagged, Json<EndpointView>), ApiError> {
    let rotation: Rotation = if body.iter().all(u8::is_ascii_whitespace) {
        Rotation::default()
    } else {
        super::json::parse(&body)?
    };
    let grace = match rotation.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(text) => {
            duration::parse_duration(text).map_err(|e| ApiError::invalid(format!("grace: {e}")))?
        }
    };
    if grace > MAX_GRACE {
        return Err(ApiError::invalid("grace must be at most 30 days"));
    }
    let condition = IfMatch::from_headers(&headers);
    let new_secret = rotation.secret.unwrap_or_else(signing::generate_secret);
    for tries in 1.. {
        let mut e = read(&state, &scope, &id).await?;
        let version = condition.check(&id, e.version)?;
        if let Some(reason) = &e.unreadable {
            return Err(ApiError::Conflict(format!(
                "{reason}; an endpoint whose secret cannot be read cannot be rotated"
            )));
        }
        let now = chrono::Utc::now().timestamp_millis();
        if e.previous_secret.is_some()
            && e.previous_secret_expires_at
                .is_some_and(|until| until > now)
        {
            return Err(ApiError::Conflict(
                "a rotation is in progress: its previous secret is still in its grace period"
                    .into(),
            ));
        }
        if new_secret == e.secret {
            return Err(ApiError::invalid(
                "secret: the new secret is the current one",
            ));
        }
        let old = std::mem::replace(&mut e.secret, new_secret.clone());
        // Only Standard Webhooks can carry two signatures; other schemes switch at once.
        let overlap = e.signature_scheme == SignatureScheme::Standard && !grace.is_zero();
        (e.previous_secret, e.previous_secret_expires_at) = if !overlap {
            (None, None)
        } else {
            (Some(old), Some(now + grace.as_millis() as i64))
        };
        validate(&e, &state.targets).await?;
        match state
            .store
            .update_endpoint_in(&scope, &e, Some(version))
            .await?
        {
            Versioned::Done(rotated) => {
                tracing::info!(endpoint_id = %id, grace = %duration::format_duration(grace), "endpoint secret rotated");
                return Ok(tagged(rotated));
            }
            Versioned::NotFound => return Err(ApiError::not_found("endpoint", &id)),
            Versioned::Changed => condition.retry(&id, tries)?,
        }
    }
    unreachable!("the tries end in an answer")
}

/// The `ETag` header of an answer that carries one endpoint.
type Tagged = [(HeaderName, HeaderValue); 1];

const IF_MATCH_DOC: &str = "an ETag of the endpoint (`\"v3\"`, or a list): the change is made only if the endpoint is still at one of them, else 412; `*` or none: whatever its version";

/// A live endpoint, or `404`.
/// A live endpoint visible in `scope`; another tenant's answers 404 like a missing one.
async fn read(state: &AppState, scope: &Scope, id: &EndpointId) -> Result<Endpoint, ApiError> {
    state
        .store
        .endpoint_in(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint", id))
}

/// One endpoint as the API answers it: secrets included, with its `ETag`.
fn tagged(e: Endpoint) -> (Tagged, Json<EndpointView>) {
    (etag::header(e.version), Json(EndpointView::new(e, true)))
}

fn parse_scheme(text: Option<&str>) -> Result<SignatureScheme, ApiError> {
    match text {
        None => Ok(SignatureScheme::Standard),
        Some(s) => s.parse().map_err(|_| {
            ApiError::invalid(format!(
                "signature_scheme must be standard, toss or none, not {s:?}"
            ))
        }),
    }
}

fn parse_schedule(items: &[String]) -> Result<Vec<u64>, ApiError> {
    if items.len() > MAX_RETRIES {
        return Err(ApiError::invalid(format!(
            "retry_schedule has more than {MAX_RETRIES} entries"
        )));
    }
    items
        .iter()
        .map(|item| {
            let d = duration::parse_duration(item)
                .map_err(|e| ApiError::invalid(format!("retry_schedule: {e}")))?;
            if d > MAX_RETRY_DELAY {
                return Err(ApiError::invalid(format!(
                    "retry_schedule: {item:?} is longer than 7 days"
                )));
            }
            Ok(d.as_millis() as u64)
        })
        .collect()
}

fn parse_timeout(text: &str) -> Result<u64, ApiError> {
    let d =
        duration::parse_duration(text).map_err(|e| ApiError::invalid(format!("timeout: {e}")))?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(ApiError::invalid(format!(
            "timeout must be more than 0 and at most {}",
            duration::format_duration(MAX_TIMEOUT)
        )));
    }
    Ok(d.as_millis() as u64)
}

/// Every rule an endpoint must satisfy, for create and update alike.
async fn validate(e: &Endpoint, targets: &ssrf::TargetPolicy) -> Result<(), ApiError> {
    let url = ssrf::check_url(&e.url, targets).map_err(ApiError::Invalid)?;
    if e.event_types.is_empty() {
        return Err(ApiError::invalid(
            "event_types must name at least one event type (or \"*\")",
        ));
    }
    if let Some(bad) = e.event_types.iter().find(|p| !matching::valid_pattern(p)) {
        return Err(ApiError::invalid(format!(
            "event_types: {bad:?} is not an event type, \"*\", or a prefix such as \"payment.*\""
        )));
    }
    // An unreadable endpoint's secrets are blanks standing for the stored values, which an
    // update keeps.
    if e.unreadable.is_none() {
        signing::validate_secret(e.signature_scheme, &e.secret)
            .map_err(|m| ApiError::invalid(format!("secret: {m}")))?;
    }
    if let Some(token) = e.bearer_token.as_ref().filter(|_| e.unreadable.is_none()) {
        if token.is_empty() || token.len() > 4096 || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "bearer_token must be 1 to 4096 visible ASCII characters",
            ));
        }
    }
    if let Some(d) = &e.description {
        if d.len() > 1024 {
            return Err(ApiError::invalid("description is longer than 1024 bytes"));
        }
    }
    for (name, value) in &e.headers {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(ApiError::invalid(format!(
                "headers: {name:?} is not a valid header"
            )));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("tosspayments-")
        {
            return Err(ApiError::invalid(format!(
                "headers: {name} is set by hookd itself"
            )));
        }
    }
    if !targets.allow_private {
        resolves_publicly(&url, targets).await?;
    }
    Ok(())
}

/// A registered name that resolves only to non-public addresses is refused now, with a
/// clear message, rather than failing every attempt later. A name that does not resolve
/// yet is accepted: the send-time guard still checks whatever it resolves to then.
async fn resolves_publicly(url: &url::Url, targets: &ssrf::TargetPolicy) -> Result<(), ApiError> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(()); // literals were checked by check_url
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let Ok(Ok(addrs)) = lookup else {
        return Ok(());
    };
    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    if !addrs.is_empty() && addrs.iter().all(|ip| !targets.permits(*ip)) {
        return Err(ApiError::invalid(format!(
            "url: {host} resolves to non-public addresses only; set HOOKD_ALLOW_PRIVATE_TARGETS=true to allow it"
        )));
    }
    Ok(())
}
