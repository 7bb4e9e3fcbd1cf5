//! hookd's own events, the operational webhooks: what happened to an endpoint or a
//! delivery, told to the endpoints that subscribe to these types by name (`*` does not
//! match them, [`crate::matching::is_operational`]). Pure: which state changes make an
//! event, its payload, and the tenants it goes to. The stores write the rows this decides
//! into `hookd_outbox` in the same transaction as the state change, so the usual ingest
//! fans them out, signs and retries them like any other event (docs/operational-webhooks.md).
//!
//! They never feed themselves: a `hookd.*` delivery that exhausts its ladder emits nothing,
//! and an endpoint's health changes (which an endpoint receiving only `hookd.*` events can
//! also go through) emit at most one event per change: failing at most once per
//! [`FAILING_NOTICE_INTERVAL_MS`], disabled once until enabled again.

use serde_json::{json, Map, Value};

use crate::matching::{self, Target};
use crate::model::{Completion, Endpoint, Next, Trigger};

/// An endpoint was disabled: it answered `410 Gone`, it failed for `disable_after`, or an
/// operator disabled it.
pub const ENDPOINT_DISABLED: &str = "hookd.endpoint.disabled";
/// A disabled endpoint was enabled again.
pub const ENDPOINT_ENABLED: &str = "hookd.endpoint.enabled";
/// An endpoint's first failed attempt after a success (or since it was created).
pub const ENDPOINT_FAILING: &str = "hookd.endpoint.failing";
/// A delivery gave up after its last automatic attempt.
pub const DELIVERY_EXHAUSTED: &str = "hookd.delivery.exhausted";

/// Every operational event type.
pub const TYPES: [&str; 4] = [
    ENDPOINT_DISABLED,
    ENDPOINT_ENABLED,
    ENDPOINT_FAILING,
    DELIVERY_EXHAUSTED,
];

/// An endpoint's `hookd.endpoint.failing` is emitted at most once in this long (an hour),
/// however often it recovers and fails again meanwhile.
pub const FAILING_NOTICE_INTERVAL_MS: i64 = 3_600_000;

/// The `reason` of `hookd.endpoint.failing`.
pub const FAILING_REASON: &str =
    "an attempt failed after the endpoint's last success; the delivery log has its error";

/// Something to tell, about an endpoint of `tenant_id` (`None`: the provider-wide tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    EndpointDisabled {
        endpoint_id: String,
        tenant_id: Option<String>,
        reason: String,
    },
    EndpointEnabled {
        endpoint_id: String,
        tenant_id: Option<String>,
    },
    EndpointFailing {
        endpoint_id: String,
        tenant_id: Option<String>,
    },
    DeliveryExhausted(Exhausted),
}

/// A delivery that gave up, as the database holds it after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub delivery_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub tenant_id: Option<String>,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

impl Notice {
    pub fn event_type(&self) -> &'static str {
        match self {
            Notice::EndpointDisabled { .. } => ENDPOINT_DISABLED,
            Notice::EndpointEnabled { .. } => ENDPOINT_ENABLED,
            Notice::EndpointFailing { .. } => ENDPOINT_FAILING,
            Notice::DeliveryExhausted(_) => DELIVERY_EXHAUSTED,
        }
    }

    /// The tenant of the endpoint it is about.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Notice::EndpointDisabled { tenant_id, .. }
            | Notice::EndpointEnabled { tenant_id, .. }
            | Notice::EndpointFailing { tenant_id, .. } => tenant_id.as_deref(),
            Notice::DeliveryExhausted(d) => d.tenant_id.as_deref(),
        }
    }

    /// The JSON body receivers get; `occurred_at`: when the state changed (database clock).
    pub fn payload(&self, occurred_at: &str) -> String {
        let mut body = Map::new();
        body.insert("type".into(), json!(self.event_type()));
        let (endpoint_id, tenant_id) = match self {
            Notice::EndpointDisabled {
                endpoint_id,
                tenant_id,
                ..
            }
            | Notice::EndpointEnabled {
                endpoint_id,
                tenant_id,
            }
            | Notice::EndpointFailing {
                endpoint_id,
                tenant_id,
            } => (endpoint_id, tenant_id),
            Notice::DeliveryExhausted(d) => (&d.endpoint_id, &d.tenant_id),
        };
        body.insert("endpoint_id".into(), json!(endpoint_id));
        body.insert("tenant_id".into(), json!(tenant_id));
        match self {
            Notice::EndpointDisabled { reason, .. } => {
                body.insert("reason".into(), json!(reason));
            }
            Notice::EndpointFailing { .. } => {
                body.insert("reason".into(), json!(FAILING_REASON));
            }
            Notice::EndpointEnabled { .. } => {}
            Notice::DeliveryExhausted(d) => {
                body.insert("delivery_id".into(), json!(d.delivery_id));
                body.insert("event_id".into(), json!(d.event_id));
                body.insert("event_type".into(), json!(d.event_type));
                body.insert("attempts".into(), json!(d.attempts));
                body.insert("last_status_code".into(), json!(d.last_status_code));
                body.insert("reason".into(), json!(d.last_error));
            }
        }
        body.insert("occurred_at".into(), json!(occurred_at));
        Value::Object(body).to_string()
    }
}

/// The reason of `hookd.endpoint.disabled` when an update disabled an endpoint without one.
pub const DISABLED_BY_UPDATE: &str = "disabled by an operator";

/// What an update of an endpoint that was, before it, `before` (enabled, tenant; `None`: no
/// such live endpoint) tells: `hookd.endpoint.enabled` or `.disabled` when it changes
/// `enabled`, else nothing.
pub fn enabled_change(
    updated: &Endpoint,
    before: Option<(bool, Option<String>)>,
) -> Option<Notice> {
    let (was_enabled, tenant_id) = before?;
    let endpoint_id = updated.id.to_string();
    match (was_enabled, updated.enabled) {
        (false, true) => Some(Notice::EndpointEnabled {
            endpoint_id,
            tenant_id,
        }),
        (true, false) => Some(Notice::EndpointDisabled {
            endpoint_id,
            tenant_id,
            reason: updated
                .disabled_reason
                .clone()
                .unwrap_or_else(|| DISABLED_BY_UPDATE.into()),
        }),
        _ => None,
    }
}

/// Whether a result, once recorded, may have exhausted its delivery: a final failure of an
/// automatic attempt. (A failed manual resend of a finished delivery is no news: the
/// delivery had already given up.) Only batches holding one pay for the check.
pub fn may_exhaust(c: &Completion) -> bool {
    c.next == Next::Failed && c.record.trigger == Trigger::Auto
}

/// Whether a delivery of `event_type` that gave up is told: not when it was itself an
/// operational event, so that they never trigger themselves.
pub fn tells_exhaustion(event_type: &str) -> bool {
    !matching::is_operational(event_type)
}

/// The tenants an event of `event_type` about an endpoint of `tenant` goes to: the
/// provider-wide tenant (`None`) when one of its enabled endpoints subscribes to the type,
/// and the endpoint's own tenant when one of that tenant's does. A tenant hears only about
/// its own endpoints; nobody subscribed, nothing written.
pub fn recipients(
    event_type: &str,
    tenant: Option<&str>,
    targets: &[Target],
) -> Vec<Option<String>> {
    let subscribed = |t: Option<&str>| !matching::plan(event_type, None, t, targets).is_empty();
    let mut to = Vec::new();
    if subscribed(None) {
        to.push(None);
    }
    if let Some(t) = tenant.filter(|t| subscribed(Some(t))) {
        to.push(Some(t.to_string()));
    }
    to
}

/// An outbox row of an operational event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxNotice {
    pub event_id: String,
    pub event_type: &'static str,
    pub payload: String,
    pub tenant_id: Option<String>,
}

/// The outbox rows telling `notices`, at `now_ms`, to the tenants subscribed to them.
pub fn outbox_rows(notices: &[Notice], targets: &[Target], now_ms: i64) -> Vec<OutboxNotice> {
    let occurred_at = rfc3339(now_ms);
    notices
        .iter()
        .flat_map(|n| {
            let payload = n.payload(&occurred_at);
            recipients(n.event_type(), n.tenant_id(), targets)
                .into_iter()
                .map(move |tenant_id| OutboxNotice {
                    event_id: crate::new_id("evt"),
                    event_type: n.event_type(),
                    payload: payload.clone(),
                    tenant_id,
                })
        })
        .collect()
}

/// `2026-11-22T07:00:00.123Z`, as the API writes times.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptRecord, EndpointId, Outcome};

    fn target(id: &str, tenant: Option<&str>, types: &[&str], enabled: bool) -> Target {
        Target {
            id: id.into(),
            tenant_id: tenant.map(Into::into),
            event_types: types.iter().map(|s| s.to_string()).collect(),
            enabled,
            ordered: false,
            rate_limited: false,
        }
    }

    #[test]
    fn recipients_table() {
        let targets = vec![
            target("wide_all", None, &["*"], true),
            target("wide_ops", None, &["hookd.endpoint.*"], true),
            target("a_ops", Some("a"), &["hookd.*"], true),
            target("b_off", Some("b"), &["hookd.*"], false),
            target("c_all", Some("c"), &["*"], true),
        ];
        let t = |s: &str| Some(s.to_string());
        // (event type, the endpoint's tenant, recipients)
        type Case<'a> = (&'a str, Option<&'a str>, Vec<Option<String>>);
        let cases: &[Case] = &[
            (ENDPOINT_DISABLED, None, vec![None]),
            (ENDPOINT_DISABLED, Some("a"), vec![None, t("a")]),
            // A disabled subscriber hears nothing; `*` is no subscription.
            (ENDPOINT_DISABLED, Some("b"), vec![None]),
            (ENDPOINT_DISABLED, Some("c"), vec![None]),
            // Only tenant a subscribes to exhaustion.
            (DELIVERY_EXHAUSTED, None, vec![]),
            (DELIVERY_EXHAUSTED, Some("a"), vec![t("a")]),
            (DELIVERY_EXHAUSTED, Some("c"), vec![]),
        ];
        for (event_type, tenant, want) in cases {
            assert_eq!(
                &recipients(event_type, *tenant, &targets),
                want,
                "{event_type} {tenant:?}"
            );
        }
        assert!(recipients(ENDPOINT_FAILING, Some("a"), &[]).is_empty());
    }

    #[test]
    fn payloads() {
        let at = "2026-11-22T07:00:00.000Z";
        let parse = |n: &Notice| -> Value { serde_json::from_str(&n.payload(at)).unwrap() };
        let disabled = Notice::EndpointDisabled {
            endpoint_id: "ep_1".into(),
            tenant_id: Some("acme".into()),
            reason: "gone: the endpoint answered 410 Gone".into(),
        };
        assert_eq!(
            parse(&disabled),
            json!({"type": ENDPOINT_DISABLED, "endpoint_id": "ep_1", "tenant_id": "acme",
                "reason": "gone: the endpoint answered 410 Gone", "occurred_at": at})
        );
        let enabled = Notice::EndpointEnabled {
            endpoint_id: "ep_1".into(),
            tenant_id: None,
        };
        assert_eq!(
            parse(&enabled),
            json!({"type": ENDPOINT_ENABLED, "endpoint_id": "ep_1", "tenant_id": null,
                "occurred_at": at})
        );
        let failing = Notice::EndpointFailing {
            endpoint_id: "ep_1".into(),
            tenant_id: None,
        };
        assert_eq!(parse(&failing)["reason"], json!(FAILING_REASON));
        let exhausted = Notice::DeliveryExhausted(Exhausted {
            delivery_id: 42,
            event_id: "evt_1".into(),
            event_type: "purchase".into(),
            endpoint_id: "ep_1".into(),
            tenant_id: None,
            attempts: 3,
            last_status_code: Some(503),
            last_error: Some("HTTP 503".into()),
        });
        assert_eq!(
            parse(&exhausted),
            json!({"type": DELIVERY_EXHAUSTED, "endpoint_id": "ep_1", "tenant_id": null,
                "delivery_id": 42, "event_id": "evt_1", "event_type": "purchase", "attempts": 3,
                "last_status_code": 503, "reason": "HTTP 503", "occurred_at": at})
        );
    }

    #[test]
    fn outbox_rows_one_per_recipient() {
        let targets = vec![
            target("wide", None, &["hookd.*"], true),
            target("a", Some("a"), &[ENDPOINT_ENABLED], true),
        ];
        let notice = |tenant: Option<&str>| Notice::EndpointEnabled {
            endpoint_id: "ep_x".into(),
            tenant_id: tenant.map(Into::into),
        };
        let rows = outbox_rows(&[notice(Some("a")), notice(None)], &targets, 0);
        let tenants: Vec<Option<&str>> = rows.iter().map(|r| r.tenant_id.as_deref()).collect();
        assert_eq!(tenants, vec![None, Some("a"), None]);
        assert!(rows.iter().all(|r| r.event_type == ENDPOINT_ENABLED));
        // Every copy is an event of its own.
        assert_ne!(rows[0].event_id, rows[1].event_id);
        assert!(rows[0].payload.contains("1970-01-01T00:00:00.000Z"));
        assert!(outbox_rows(&[notice(Some("b"))], &targets[1..], 0).is_empty());
    }

    #[test]
    fn enabled_changes() {
        let endpoint = |enabled: bool, reason: Option<&str>| Endpoint {
            id: "ep_1".into(),
            enabled,
            disabled_reason: reason.map(Into::into),
            ..Endpoint::default()
        };
        let t = Some("acme".to_string());
        let enabled = Notice::EndpointEnabled {
            endpoint_id: "ep_1".into(),
            tenant_id: t.clone(),
        };
        let disabled = |reason: &str| Notice::EndpointDisabled {
            endpoint_id: "ep_1".into(),
            tenant_id: t.clone(),
            reason: reason.into(),
        };
        // (after the update, before it, told)
        let cases = [
            (
                endpoint(true, None),
                Some((false, t.clone())),
                Some(enabled),
            ),
            (endpoint(true, None), Some((true, t.clone())), None),
            (
                endpoint(false, Some("maintenance")),
                Some((false, t.clone())),
                None,
            ),
            (
                endpoint(false, Some("maintenance")),
                Some((true, t.clone())),
                Some(disabled("maintenance")),
            ),
            (
                endpoint(false, None),
                Some((true, t.clone())),
                Some(disabled(DISABLED_BY_UPDATE)),
            ),
            (endpoint(true, None), None, None),
        ];
        for (updated, before, want) in cases {
            assert_eq!(enabled_change(&updated, before.clone()), want, "{before:?}");
        }
    }

    #[test]
    fn which_results_may_exhaust() {
        let result = |trigger, next| Completion {
            delivery_id: 1,
            lease_token: "t".into(),
            endpoint_id: EndpointId::from("ep".to_string()),
            ordered: false,
            record: AttemptRecord {
                attempt: 1,
                trigger,
                started_at: 0,
                duration_ms: 0,
                status_code: None,
                outcome: Outcome::HttpError,
                error: None,
                response_body: None,
            },
            next,
        };
        let cases = [
            (Trigger::Auto, Next::Failed, true),
            (Trigger::Auto, Next::RetryIn(1000), false),
            (Trigger::Auto, Next::Succeeded, false),
            (Trigger::Manual, Next::Failed, false),
        ];
        for (trigger, next, want) in cases {
            assert_eq!(
                may_exhaust(&result(trigger, next)),
                want,
                "{trigger:?} {next:?}"
            );
        }
        assert!(tells_exhaustion("purchase"));
        assert!(!tells_exhaustion(DELIVERY_EXHAUSTED));
        assert!(!tells_exhaustion(ENDPOINT_FAILING));
    }
}
