//! Rows as both databases return them, and their conversion into the model.
//!
//! The derives are generic over the database, so SQLite and PostgreSQL share them; column
//! types are chosen so that both decode into the same Rust types (BIGINT/INTEGER -> i64,
//! INTEGER -> i32, BOOLEAN -> bool).

use std::collections::BTreeMap;

use crate::model::*;
use crate::StoreError;

fn parse<T: std::str::FromStr>(column: &'static str, value: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| StoreError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

fn json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    value: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|e| StoreError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

/// `SELECT` list for [`EndpointRow`].
pub(crate) const ENDPOINT_COLUMNS: &str =
    "id, tenant_id, url, description, event_types, bearer_token, \
    signature_scheme, secret, previous_secret, previous_secret_expires_at, ordered, \
    retry_schedule, timeout_ms, headers, enabled, disabled_reason, disabled_at, \
    last_success_at, failing_since, deleted_at, version, created_at, updated_at, rate_limit";

#[derive(sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: EndpointId,
    tenant_id: Option<String>,
    url: String,
    description: Option<String>,
    event_types: String,
    bearer_token: Option<String>,
    signature_scheme: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    ordered: bool,
    retry_schedule: Option<String>,
    timeout_ms: Option<i64>,
    headers: String,
    enabled: bool,
    disabled_reason: Option<String>,
    disabled_at: Option<i64>,
    last_success_at: Option<i64>,
    failing_since: Option<i64>,
    pub deleted_at: Option<i64>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    rate_limit: Option<f64>,
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = StoreError;
    fn try_from(r: EndpointRow) -> Result<Self, StoreError> {
        Ok(Endpoint {
            event_types: json("event_types", &r.event_types)?,
            signature_scheme: parse("signature_scheme", &r.signature_scheme)?,
            retry_schedule_ms: r
                .retry_schedule
                .as_deref()
                .map(|s| json("retry_schedule", s))
                .transpose()?,
            timeout_ms: r.timeout_ms.map(|t| t.max(0) as u64),
            headers: json::<BTreeMap<String, String>>("headers", &r.headers)?,
            id: r.id,
            tenant_id: r.tenant_id.map(crate::TenantId::stored),
            url: r.url,
            description: r.description,
            bearer_token: r.bearer_token,
            secret: r.secret,
            previous_secret: r.previous_secret,
            previous_secret_expires_at: r.previous_secret_expires_at,
            ordered: r.ordered,
            // A limit stored out of range (written by hand) counts as none.
            rate_limit: r.rate_limit.and_then(crate::RateLimit::new),
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            disabled_at: r.disabled_at,
            last_success_at: r.last_success_at,
            failing_since: r.failing_since,
            deleted: r.deleted_at.is_some(),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            unreadable: None,
        })
    }
}

/// The endpoint's JSON-encoded columns, in bind order: event_types, retry_schedule, headers.
pub(crate) fn endpoint_json(e: &Endpoint) -> (String, Option<String>, String) {
    (
        serde_json::to_string(&e.event_types).expect("strings serialize"),
        e.retry_schedule_ms
            .as_ref()
            .map(|s| serde_json::to_string(s).expect("numbers serialize")),
        serde_json::to_string(&e.headers).expect("strings serialize"),
    )
}

pub(crate) const DELIVERY_COLUMNS: &str =
    "id, event_id, endpoint_id, tenant_id, event_type, state, \
    attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, finished_at";

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    event_id: EventId,
    endpoint_id: EndpointId,
    tenant_id: Option<String>,
    event_type: String,
    state: String,
    attempts: i32,
    next_attempt_at: Option<i64>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(Delivery {
            state: parse("state", &r.state)?,
            id: r.id,
            event_id: r.event_id,
            endpoint_id: r.endpoint_id,
            tenant_id: r.tenant_id.map(crate::TenantId::stored),
            event_type: r.event_type,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    attempt: i32,
    trigger: String,
    started_at: i64,
    duration_ms: i64,
    status_code: Option<i32>,
    outcome: String,
    error: Option<String>,
    response_body: Option<String>,
}

impl TryFrom<AttemptRow> for AttemptRecord {
    type Error = StoreError;
    fn try_from(r: AttemptRow) -> Result<Self, StoreError> {
        Ok(AttemptRecord {
            attempt: r.attempt,
            trigger: parse("trigger", &r.trigger)?,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
            status_code: r.status_code,
            outcome: parse("outcome", &r.outcome)?,
            error: r.error,
            response_body: r.response_body,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    event_id: EventId,
    event_type: String,
    payload: String,
    endpoint_id: Option<EndpointId>,
    tenant_id: Option<String>,
    payload_error: Option<String>,
    created_at: i64,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event {
            event_id: r.event_id,
            event_type: r.event_type,
            payload: r.payload,
            endpoint_id: r.endpoint_id,
            tenant_id: r.tenant_id.map(crate::TenantId::stored),
            payload_error: r.payload_error,
            created_at: r.created_at,
        }
    }
}

/// A freshly claimed delivery with its event's payload; the endpoint is joined in Rust.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub id: i64,
    pub lease_token: String,
    pub event_id: EventId,
    pub event_type: String,
    pub endpoint_id: String,
    pub attempts: i32,
    pub next_trigger: String,
    pub auto_attempts: i32,
    pub manual_only: bool,
    pub next_attempt_at: Option<i64>,
    pub payload: String,
    pub payload_error: Option<String>,
    pub traceparent: Option<String>,
}

impl ClaimRow {
    /// The lease the claim holds.
    pub fn lease(&self) -> crate::Lease {
        crate::Lease {
            delivery_id: self.id,
            token: self.lease_token.clone(),
        }
    }

    pub fn into_claimed(self, endpoint: std::sync::Arc<Endpoint>) -> Result<Claimed, StoreError> {
        Ok(Claimed {
            trigger: parse("next_trigger", &self.next_trigger)?,
            delivery_id: self.id,
            lease_token: self.lease_token,
            event_id: self.event_id,
            event_type: self.event_type,
            attempt: self.attempts,
            auto_attempts: self.auto_attempts,
            manual_only: self.manual_only,
            payload: self.payload.into(),
            payload_error: self.payload_error,
            traceparent: self.traceparent,
            endpoint,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub seq: i64,
    pub event_id: Option<String>,
    pub event_type: String,
    pub payload: String,
    pub endpoint_id: Option<String>,
    pub tenant_id: Option<String>,
    pub traceparent: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TargetRow {
    id: String,
    tenant_id: Option<String>,
    event_types: String,
    enabled: bool,
    ordered: bool,
    rate_limited: bool,
}

impl TryFrom<TargetRow> for crate::matching::Target {
    type Error = StoreError;
    fn try_from(r: TargetRow) -> Result<Self, StoreError> {
        Ok(crate::matching::Target {
            event_types: json("event_types", &r.event_types)?,
            id: r.id,
            tenant_id: r.tenant_id,
            enabled: r.enabled,
            ordered: r.ordered,
            rate_limited: r.rate_limited,
        })
    }
}

pub(crate) const RESEND_JOB_COLUMNS: &str = "id, state, f_state, f_endpoint_id, f_event_id, \
    f_event_type, f_since, f_until, f_tenant_id, cursor, floor_id, matched, resent, created_at, updated_at, \
    finished_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ResendJobRow {
    pub id: String,
    state: String,
    f_state: Option<String>,
    f_endpoint_id: Option<EndpointId>,
    f_event_id: Option<EventId>,
    f_event_type: Option<String>,
    f_since: Option<i64>,
    f_until: Option<i64>,
    f_tenant_id: Option<String>,
    pub cursor: i64,
    pub floor_id: i64,
    matched: i64,
    resent: i64,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<ResendJobRow> for ResendJob {
    type Error = StoreError;
    fn try_from(r: ResendJobRow) -> Result<Self, StoreError> {
        Ok(ResendJob {
            done: r.state == "done",
            filter: DeliveryFilter {
                tenant_id: r.f_tenant_id.map(crate::TenantId::stored),
                state: r
                    .f_state
                    .as_deref()
                    .map(|s| parse("f_state", s))
                    .transpose()?,
                endpoint_id: r.f_endpoint_id,
                event_id: r.f_event_id,
                event_type: r.f_event_type,
                since: r.f_since,
                until: r.f_until,
            },
            id: r.id,
            matched: r.matched,
            resent: r.resent,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        })
    }
}

/// One attempt result, a row with [`crate::sql::COMPLETION_COLUMNS`].
#[derive(serde::Serialize)]
pub(crate) struct CompletionRow<'a> {
    pub delivery_id: i64,
    lease_token: &'a str,
    next_state: &'static str,
    delay_ms: i64,
    status_code: Option<i32>,
    error: Option<&'a str>,
    attempt: i32,
    trigger: &'static str,
    started_at: i64,
    duration_ms: i64,
    outcome: &'static str,
    response_body: Option<&'a str>,
}

impl crate::values::Row for CompletionRow<'_> {
    fn add_to<'q>(&'q self, v: &mut crate::values::Values<'q>) {
        v.add(self.delivery_id)
            .add(self.lease_token)
            .add(self.next_state)
            .add(self.delay_ms)
            .add(self.status_code)
            .add(self.error)
            .add(self.attempt)
            .add(self.trigger)
            .add(self.started_at)
            .add(self.duration_ms)
            .add(self.outcome)
            .add(self.response_body);
    }
}

/// The rows of a batch of results. A delivery named twice is recorded once: later
/// duplicates are left out (their lease is spent by the first).
pub(crate) fn completion_rows(batch: &[crate::Completion]) -> Vec<CompletionRow<'_>> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    batch
        .iter()
        .filter(|c| seen.insert(c.delivery_id))
        .map(|c| {
            let (next_state, delay_ms) = match c.next {
                crate::Next::Succeeded => ("succeeded", 0),
                crate::Next::RetryIn(ms) => ("pending", ms as i64),
                crate::Next::Failed => ("failed", 0),
            };
            let r = &c.record;
            let error = match (&r.error, r.outcome) {
                (Some(e), _) => Some(e.as_str()),
                (None, crate::Outcome::Success) => None,
                (None, outcome) => Some(outcome.as_str()),
            };
            CompletionRow {
                delivery_id: c.delivery_id,
                lease_token: &c.lease_token,
                next_state,
                delay_ms,
                status_code: r.status_code,
                error,
                attempt: r.attempt,
                trigger: r.trigger.as_str(),
                started_at: r.started_at,
                duration_ms: r.duration_ms,
                outcome: r.outcome.as_str(),
                response_body: r.response_body.as_deref(),
            }
        })
        .collect()
}

/// A batch of results as the JSON array PostgreSQL's one statement reads.
pub(crate) fn completions_json(batch: &[crate::Completion]) -> String {
    serde_json::to_string(&completion_rows(batch)).expect("results serialize")
}

/// Which completions of `batch` were recorded, given the ids the statement returned.
pub(crate) fn recorded(batch: &[crate::Completion], done: &[i64]) -> Vec<bool> {
    let done: std::collections::HashSet<i64> = done.iter().copied().collect();
    let mut first = std::collections::HashSet::with_capacity(batch.len());
    batch
        .iter()
        .map(|c| first.insert(c.delivery_id) && done.contains(&c.delivery_id))
        .collect()
}

/// The ordered endpoints with a result recorded in `batch`, each once, in the order of
/// their first result: each may let its next held delivery go.
pub(crate) fn ordered_endpoints<'a>(
    batch: &'a [crate::Completion],
    recorded: &[bool],
) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    batch
        .iter()
        .zip(recorded)
        .filter(|(c, ok)| **ok && c.ordered)
        .map(|(c, _)| c.endpoint_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// The answers of a group commit, in the order of its events: `stored` as the ingest
/// returned it (event id, created now), `counts` each event's deliveries.
pub(crate) fn enqueued(
    stored: Vec<(String, bool)>,
    counts: &std::collections::HashMap<String, u64>,
) -> Vec<crate::Enqueued> {
    stored
        .into_iter()
        .map(|(event_id, created)| crate::Enqueued {
            deliveries: counts.get(&event_id).copied().unwrap_or(0),
            event_id: event_id.into(),
            created,
        })
        .collect()
}
