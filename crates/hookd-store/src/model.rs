//! The records the store keeps, as the rest of hookd sees them.
//!
//! Times are milliseconds since the Unix epoch, read from the database's clock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A newtype over a `String` id: serialized, stored and bound as the bare text, so that the
/// JSON and the columns are those of a plain string; what it adds is that one kind of id
/// cannot be passed where another is expected.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// An endpoint's id (`ep_...` when hookd made it).
    EndpointId
);
string_id!(
    /// An event's id: the producer's, or `evt_...` when hookd made it.
    EventId
);

/// Where a delivery is in its life. See `docs/state-machine.md` for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for `next_attempt_at` (or parked with none while its endpoint is disabled).
    Pending,
    /// Claimed by a worker under a lease; an HTTP attempt is running.
    InFlight,
    /// A 2xx was received. Final until a manual resend.
    Succeeded,
    /// The last allowed attempt failed, or the event can never be sent. Final until a manual resend.
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] =
        [Self::Pending, Self::InFlight, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// What started an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The dispatcher, on the delivery's schedule.
    Auto,
    /// An operator's resend.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

/// How an endpoint's requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-timestamp` + `webhook-signature: v1,<base64>`.
    #[default]
    Standard,
    /// Toss Payments: `tosspayments-webhook-transmission-time` + hex HMAC of `body:time`.
    Toss,
    /// No signature headers.
    None,
}

impl SignatureScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Toss => "toss",
            Self::None => "none",
        }
    }
}

/// The result class of one attempt; also the `outcome` label of `hookd_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Any 2xx within the timeout.
    Success,
    /// The receiver answered with a non-2xx status (redirects included: they are not followed).
    HttpError,
    /// No complete answer within the timeout.
    Timeout,
    /// Connection refused or reset, DNS failure, TLS failure.
    NetworkError,
    /// The destination address is not allowed (SSRF guard).
    Blocked,
    /// The worker holding the lease vanished; the result is unknown.
    Lost,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::Success,
        Self::HttpError,
        Self::Timeout,
        Self::NetworkError,
        Self::Blocked,
        Self::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::NetworkError => "network_error",
            Self::Blocked => "blocked",
            Self::Lost => "lost",
        }
    }
}

/// Error for a stored string that names no known variant.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! impl_str_enum {
    ($ty:ty, $kind:literal, $variants:expr) => {
        impl FromStr for $ty {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $variants
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| ParseEnumError {
                        kind: $kind,
                        value: s.to_string(),
                    })
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

impl_str_enum!(DeliveryState, "delivery state", DeliveryState::ALL);
impl_str_enum!(Trigger, "trigger", [Trigger::Auto, Trigger::Manual]);
impl_str_enum!(
    SignatureScheme,
    "signature scheme",
    [
        SignatureScheme::Standard,
        SignatureScheme::Toss,
        SignatureScheme::None
    ]
);
impl_str_enum!(Outcome, "outcome", Outcome::ALL);

/// A registered receiver of webhooks. Its `Debug` shows `"***"` for the secrets, the bearer
/// token and the values of the static headers (often credentials too).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub id: EndpointId,
    /// The tenant it belongs to; `None`: the provider-wide tenant. Set at creation, never
    /// changed (`update_endpoint` leaves it).
    pub tenant_id: Option<crate::TenantId>,
    pub url: String,
    pub description: Option<String>,
    /// Patterns: an exact event type, `*` for all, or a prefix wildcard such as `payment.*`.
    pub event_types: Vec<String>,
    pub bearer_token: Option<String>,
    pub signature_scheme: SignatureScheme,
    pub secret: String,
    /// After a rotation, the old secret also signs (`standard`) until this expires.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    /// Deliver strictly in insertion order, one at a time.
    pub ordered: bool,
    /// Deliveries per second at most, across every instance; `None` = unlimited.
    pub rate_limit: Option<crate::RateLimit>,
    /// Delays before each retry, in ms. `None` = the global schedule; empty = no automatic retry.
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// Whole-request timeout in ms. `None` = the global timeout.
    pub timeout_ms: Option<u64>,
    /// Static headers added to every request.
    pub headers: BTreeMap<String, String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    /// The last successful attempt (kept up to date within a minute).
    pub last_success_at: Option<i64>,
    /// Failing without a success since then; `None` while healthy.
    pub failing_since: Option<i64>,
    /// Deleted endpoints are kept so that their deliveries' history stays readable.
    pub deleted: bool,
    /// Counts the changes of the settings above (1 when created): every update, a disabling
    /// by hookd, the delete. Health figures (`last_success_at`, `failing_since`) leave it.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why its stored secrets cannot be decrypted with this store's key (`HOOKD_SECRET_KEY`
    /// missing or wrong); `None` when they can. While set, `secret` is empty,
    /// `previous_secret` is `None` and `bearer_token` is `Some("")` when one is stored:
    /// nothing can be signed or sent, and `update_endpoint` keeps the stored values as
    /// they are.
    pub unreadable: Option<String>,
}

/// Every field, the secret ones as `"***"` when set. Written out field by field so that a new
/// field cannot be added without deciding whether it is a secret.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Endpoint {
            id,
            tenant_id,
            url,
            description,
            event_types,
            bearer_token,
            signature_scheme,
            secret: _,
            previous_secret,
            previous_secret_expires_at,
            ordered,
            rate_limit,
            retry_schedule_ms,
            timeout_ms,
            headers,
            enabled,
            disabled_reason,
            disabled_at,
            last_success_at,
            failing_since,
            deleted,
            created_at,
            updated_at,
            unreadable,
            version,
        } = self;
        let hidden = |s: &Option<String>| s.as_ref().map(|_| Hidden);
        let headers: BTreeMap<&str, Hidden> =
            headers.keys().map(|k| (k.as_str(), Hidden)).collect();
        f.debug_struct("Endpoint")
            .field("id", id)
            .field("tenant_id", tenant_id)
            .field("url", url)
            .field("description", description)
            .field("event_types", event_types)
            .field("bearer_token", &hidden(bearer_token))
            .field("signature_scheme", signature_scheme)
            .field("secret", &Hidden)
            .field("previous_secret", &hidden(previous_secret))
            .field("previous_secret_expires_at", previous_secret_expires_at)
            .field("ordered", ordered)
            .field("rate_limit", rate_limit)
            .field("retry_schedule_ms", retry_schedule_ms)
            .field("timeout_ms", timeout_ms)
            .field("headers", &headers)
            .field("enabled", enabled)
            .field("disabled_reason", disabled_reason)
            .field("disabled_at", disabled_at)
            .field("last_success_at", last_success_at)
            .field("failing_since", failing_since)
            .field("deleted", deleted)
            .field("created_at", created_at)
            .field("updated_at", updated_at)
            .field("unreadable", unreadable)
            .field("version", version)
            .finish()
    }
}

/// A secret in `Debug` output.
struct Hidden;

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// What a write conditional on an endpoint's version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioned<T> {
    /// Written; the endpoint as it is now.
    Done(T),
    /// No such live endpoint.
    NotFound,
    /// The endpoint no longer has the version named: it changed since it was read.
    Changed,
}

/// An event handed to hookd through the API (the outbox path builds the same from a row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// `None` = generate one.
    pub event_id: Option<String>,
    pub event_type: String,
    /// The exact bytes to POST; must be JSON.
    pub payload: String,
    /// Deliver to this endpoint only, instead of fanning out by event type.
    pub endpoint_id: Option<String>,
    /// The tenant it belongs to, as given (checked at ingest: an invalid one fails the
    /// event's deliveries); `None`: the provider-wide tenant.
    pub tenant_id: Option<String>,
    /// The producer's W3C trace context: every attempt joins that trace. Kept when it is
    /// short printable ASCII (see [`crate::storable_traceparent`]); read by the daemon.
    pub traceparent: Option<String>,
}

/// What `enqueue_event` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub event_id: EventId,
    /// Deliveries the event has (created now, or by the first enqueue of this `event_id`).
    pub deliveries: u64,
    /// `false` when the `event_id` was already known and nothing was created.
    pub created: bool,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: EventId,
    pub event_type: String,
    pub payload: String,
    pub endpoint_id: Option<EndpointId>,
    pub tenant_id: Option<crate::TenantId>,
    pub payload_error: Option<String>,
    pub created_at: i64,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    /// The event's tenant.
    pub tenant_id: Option<crate::TenantId>,
    pub event_type: String,
    pub state: DeliveryState,
    /// Attempts made, the running one included.
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// One recorded HTTP attempt (or a lost one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based.
    pub attempt: i32,
    pub trigger: Trigger,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i32>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// A delivery handed to a worker: everything needed to make the attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    /// Fences the completion write: only the holder of this token may record the result.
    pub lease_token: String,
    pub event_id: EventId,
    pub event_type: String,
    /// The number of this attempt, 1-based.
    pub attempt: i32,
    pub trigger: Trigger,
    /// Automatic attempts made so far, this one included when it is automatic.
    pub auto_attempts: i32,
    /// A failure of this attempt is final (a resend of a finished delivery).
    pub manual_only: bool,
    /// The body as stored. Shared, not copied, by the request that sends it.
    pub payload: bytes::Bytes,
    /// Why the event can never be sent (not JSON, too large, a bad id): such a delivery is
    /// failed without an attempt, even when resent by hand.
    pub payload_error: Option<String>,
    /// The event's W3C trace context, as the producer gave it.
    pub traceparent: Option<String>,
    /// Shared by every row of a claim that goes to this endpoint: one copy per claim, not
    /// one per delivery.
    pub endpoint: std::sync::Arc<Endpoint>,
}

impl Claimed {
    /// The lease this claim holds.
    pub fn lease(&self) -> crate::Lease {
        crate::Lease {
            delivery_id: self.delivery_id,
            token: self.lease_token.clone(),
        }
    }
}

/// A durable bulk resend, worked through in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendJob {
    pub id: String,
    /// `running` or `done`.
    pub done: bool,
    pub filter: DeliveryFilter,
    /// Deliveries that matched when the job was created.
    pub matched: i64,
    /// Deliveries resent so far.
    pub resent: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Back to pending, due after this many ms.
    RetryIn(u64),
    Failed,
}

/// The result of one attempt, to be recorded if the lease is still held.
#[derive(Debug, Clone)]
pub struct Completion {
    pub delivery_id: i64,
    pub lease_token: String,
    pub endpoint_id: EndpointId,
    /// The endpoint is ordered: a final result lets the next held delivery go.
    pub ordered: bool,
    pub record: AttemptRecord,
    pub next: Next,
}

/// Filters of the delivery log. Every `Some` narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// One tenant's deliveries only. A confined store call sets it from its scope.
    pub tenant_id: Option<crate::TenantId>,
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<EndpointId>,
    pub event_id: Option<EventId>,
    pub event_type: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
}

impl DeliveryFilter {
    /// The filter confined to `scope`: a tenant's scope replaces the filter's tenant with
    /// its own (a caller asking for another tenant's rows is refused before this).
    pub fn confined(&self, scope: &crate::Scope) -> DeliveryFilter {
        let mut f = self.clone();
        if let Some(t) = scope.tenant() {
            f.tenant_id = Some(t.clone());
        }
        f
    }
}

/// Backlog figures for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries pending or in flight, plus the outbox rows not yet turned into deliveries
    /// (one each, whatever their fan-out): while every attempt slot is taken, new events
    /// wait in the outbox.
    pub unfinished: i64,
    /// Of which outbox rows.
    pub outbox: i64,
    /// How long the oldest due pending delivery, or the oldest outbox row, has waited past
    /// its due time (an outbox row's is its insert), in ms.
    pub oldest_due_age_ms: i64,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub deliveries: u64,
    pub events: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.deliveries + self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_debug_hides_secrets() {
        let endpoint = Endpoint {
            id: "ep_1".into(),
            url: "https://example.com/hook".into(),
            bearer_token: Some("bearer-token-text".into()),
            secret: "whsec_secret-text".into(),
            previous_secret: Some("whsec_previous-secret-text".into()),
            headers: BTreeMap::from([("x-api-key".into(), "header-value-text".into())]),
            ..Default::default()
        };
        let claimed = Claimed {
            delivery_id: 1,
            lease_token: "lease".into(),
            event_id: "e1".into(),
            event_type: "x".into(),
            attempt: 1,
            trigger: Trigger::Auto,
            auto_attempts: 1,
            manual_only: false,
            payload: bytes::Bytes::from_static(b"{}"),
            traceparent: None,
            payload_error: None,
            endpoint: std::sync::Arc::new(endpoint.clone()),
        };
        for shown in [
            format!("{endpoint:?}"),
            format!("{endpoint:#?}"),
            format!("{claimed:?}"),
        ] {
            for secret in [
                "bearer-token-text",
                "secret-text",
                "previous-secret-text",
                "header-value-text",
            ] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(
                shown.contains("ep_1") && shown.contains("x-api-key"),
                "{shown}"
            );
        }
        let shown = format!("{endpoint:?}");
        assert!(shown.contains(r#"secret: "***""#), "{shown}");
        assert!(shown.contains(r#"bearer_token: Some("***")"#), "{shown}");
        let plain = format!(
            "{:?}",
            Endpoint {
                secret: "s".into(),
                ..Default::default()
            }
        );
        assert!(plain.contains("bearer_token: None"), "{plain}");
    }
}
