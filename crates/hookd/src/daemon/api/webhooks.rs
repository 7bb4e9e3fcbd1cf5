//! The OpenAPI document's `webhooks` (OpenAPI 3.1): the requests hookd itself sends for its
//! operational events (docs/operational-webhooks.md), one per event type, each with the
//! schema of its payload. utoipa 5 has no typed `webhooks` field, so they are written as a
//! top-level entry of the document's extensions, which serialize flattened into its root.

use hookd_store::operational::{
    DELIVERY_EXHAUSTED, ENDPOINT_DISABLED, ENDPOINT_ENABLED, ENDPOINT_FAILING,
};
use serde_json::{json, Value};
use utoipa::Modify;

/// Adds `webhooks` to the document.
pub struct OperationalWebhooks;

impl Modify for OperationalWebhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .insert("webhooks".into(), webhooks());
    }
}

/// The `webhooks` object: per event type, the `POST` hookd makes to a subscribed endpoint.
fn webhooks() -> Value {
    let endpoint = json!({
        "type": {"type": "string", "description": "the event type"},
        "endpoint_id": {"type": "string", "description": "the endpoint it is about"},
        "tenant_id": {"type": ["string", "null"], "description": "that endpoint's tenant; null: provider-wide"},
        "occurred_at": {"type": "string", "format": "date-time", "description": "when the change happened (the database's clock)"},
    });
    let with = |extra: Value| {
        let mut props = endpoint.clone();
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        props
    };
    let reason = |about: &str| json!({"type": "string", "description": about});
    let common = ["type", "endpoint_id", "tenant_id", "occurred_at"];
    let required = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let hooks = [
        (
            ENDPOINT_FAILING,
            "An endpoint's first failed attempt after a success; at most once an hour per endpoint.",
            with(json!({"reason": reason("why it is told; the attempt's error is in the delivery log")})),
            required(&["reason"]),
        ),
        (
            DELIVERY_EXHAUSTED,
            "A delivery gave up after its last automatic attempt (never told for a hookd.* delivery).",
            with(json!({
                "delivery_id": {"type": "integer", "format": "int64", "description": "the delivery, as in GET /v1/deliveries/{id}"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "attempts": {"type": "integer", "format": "int32", "description": "attempts made"},
                "last_status_code": {"type": ["integer", "null"], "format": "int32", "description": "the last attempt's HTTP status; null without an answer"},
                "reason": {"type": ["string", "null"], "description": "the last attempt's error"},
            })),
            required(&[
                "delivery_id",
                "event_id",
                "event_type",
                "attempts",
                "last_status_code",
                "reason",
            ]),
        ),
        (
            ENDPOINT_DISABLED,
            "An endpoint was disabled: 410 Gone, failing for disable_after, or a PATCH.",
            with(json!({"reason": reason("the endpoint's disabled_reason")})),
            required(&["reason"]),
        ),
        (
            ENDPOINT_ENABLED,
            "A disabled endpoint was enabled again.",
            endpoint.clone(),
            required(&[]),
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, summary, properties, required) in hooks {
        out.insert(
            name.to_string(),
            json!({
                "post": {
                    "summary": summary,
                    "description": "Sent to the endpoints subscribed to this type by name (`*` does not match it): the provider-wide tenant's, and the endpoint's own tenant's. Signed and retried like any other event.",
                    "tags": ["operational webhooks"],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": {
                            "type": "object",
                            "properties": properties,
                            "required": required,
                        }}},
                    },
                    "responses": {"2XX": {"description": "received; any other answer is a failed attempt, retried"}},
                }
            }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookd_store::operational::{Exhausted, Notice, TYPES};

    /// Every payload hookd builds has exactly the documented properties, the required ones
    /// included.
    #[test]
    fn the_documented_payloads_are_the_built_ones() {
        let doc = webhooks();
        let notices = [
            Notice::EndpointFailing {
                endpoint_id: "ep".into(),
                tenant_id: None,
            },
            Notice::DeliveryExhausted(Exhausted {
                delivery_id: 1,
                event_id: "e".into(),
                event_type: "purchase".into(),
                endpoint_id: "ep".into(),
                tenant_id: Some("acme".into()),
                attempts: 2,
                last_status_code: None,
                last_error: Some("timeout".into()),
            }),
            Notice::EndpointDisabled {
                endpoint_id: "ep".into(),
                tenant_id: None,
                reason: "gone".into(),
            },
            Notice::EndpointEnabled {
                endpoint_id: "ep".into(),
                tenant_id: None,
            },
        ];
        assert_eq!(doc.as_object().unwrap().len(), TYPES.len());
        for notice in notices {
            let schema = &doc[notice.event_type()]["post"]["requestBody"]["content"]
                ["application/json"]["schema"];
            let payload: Value =
                serde_json::from_str(&notice.payload("2026-11-22T07:00:00.000Z")).unwrap();
            let mut built: Vec<&String> = payload.as_object().unwrap().keys().collect();
            let mut documented: Vec<&String> =
                schema["properties"].as_object().unwrap().keys().collect();
            built.sort();
            documented.sort();
            assert_eq!(built, documented, "{}", notice.event_type());
            for field in schema["required"].as_array().unwrap() {
                assert!(payload.get(field.as_str().unwrap()).is_some(), "{field}");
            }
        }
    }
}
