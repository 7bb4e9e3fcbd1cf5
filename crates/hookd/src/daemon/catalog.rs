//! The event-type catalog's schemas, compiled and held in memory: [`Schemas`] checks a
//! payload against its type's JSON Schema (the `jsonschema` crate) for `POST /v1/events`
//! (a `422`) and, as the store's [`PayloadCheck`], for the outbox ingest (the event's
//! deliveries end `failed` with the same reason).
//!
//! The catalog lives in the database; this is a copy, reloaded at start, at once after a
//! change through this instance's API, and every [`REFRESH`] so that a change made through
//! another instance sharing the database is followed within seconds. A reload compiles only
//! the schemas that changed. With no schema in the catalog a check is one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hookd_store::{EventType, PayloadCheck, Store};
use tokio_util::sync::CancellationToken;

/// How often the catalog is read again from the database.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Types read per page when the catalog is reloaded.
const PAGE: u32 = 500;

/// A compiled schema and the text it was compiled from (to skip recompiling it).
struct Compiled {
    text: String,
    validator: jsonschema::Validator,
}

/// The compiled schemas of the catalog's types that have one.
#[derive(Default)]
pub struct Schemas {
    /// Whether any type has a schema: the check's fast path.
    any: AtomicBool,
    by_type: RwLock<Arc<HashMap<String, Arc<Compiled>>>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("types", &self.current().len())
            .finish()
    }
}

impl Schemas {
    pub fn new() -> Arc<Schemas> {
        Arc::new(Schemas::default())
    }

    fn current(&self) -> Arc<HashMap<String, Arc<Compiled>>> {
        self.by_type.read().expect("schemas lock").clone()
    }

    /// Reads the whole catalog and compiles the schemas that changed. A stored schema that
    /// no longer compiles (written by hand, or by another version) is skipped with a
    /// warning: its type goes unchecked rather than every event stopping.
    pub async fn reload(&self, store: &dyn Store) -> hookd_store::Result<()> {
        let mut types: Vec<EventType> = Vec::new();
        loop {
            let after = types.last().map(|t| t.name.clone());
            let page = store.event_types(after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE as usize;
            types.extend(page);
            if !full {
                break;
            }
        }
        let old = self.current();
        let mut next = HashMap::new();
        for t in types {
            let Some(text) = t.schema else { continue };
            if let Some(same) = old.get(&t.name).filter(|c| c.text == text) {
                next.insert(t.name, same.clone());
                continue;
            }
            match compile_text(&text) {
                Ok(validator) => {
                    next.insert(t.name, Arc::new(Compiled { text, validator }));
                }
                Err(e) => {
                    tracing::warn!(event_type = %t.name, error = %e, "stored schema does not compile; the type goes unchecked");
                }
            }
        }
        self.any.store(!next.is_empty(), Ordering::Release);
        *self.by_type.write().expect("schemas lock") = Arc::new(next);
        Ok(())
    }

    /// Reloads every [`REFRESH`] until `stop`; a failed reload keeps the schemas held and
    /// is tried again at the next one.
    pub async fn refresh(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            if let Err(e) = self.reload(store.as_ref()).await {
                tracing::warn!(error = %e, "cannot reload the event-type catalog; its schemas as last read still apply");
            }
        }
    }

    /// Why `payload` cannot be an event of `event_type` under its schema, or `None`.
    pub fn check_payload(&self, event_type: &str, payload: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let compiled = self.current().get(event_type)?.clone();
        match serde_json::from_str::<serde_json::Value>(payload) {
            Ok(value) => first_error(event_type, &compiled.validator, &value),
            // Not JSON: the payload checks that run first say so.
            Err(_) => None,
        }
    }
}

impl PayloadCheck for Schemas {
    fn check(&self, event_type: &str, payload: &str) -> Option<String> {
        self.check_payload(event_type, payload)
    }
}

/// Compiles a schema given as JSON text.
fn compile_text(text: &str) -> Result<jsonschema::Validator, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    compile(&value)
}

/// Compiles a JSON Schema (its draft from `$schema`, else 2020-12), or says why it is not
/// one. Only the document itself: a `$ref` to another document (a URL, a file) is not
/// fetched, and fails.
pub fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err("a JSON Schema is an object or a boolean".into());
    }
    jsonschema::validator_for(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("at {at}: {e}")
        }
    })
}

/// The first way `value` fails `validator`, naming its place as a JSON Pointer; the value
/// itself is not quoted (a payload may hold personal data, and this goes to the log).
pub fn first_error(
    event_type: &str,
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Option<String> {
    let e = validator.validate(value).err()?;
    let path = e.instance_path().as_str();
    let at = if path.is_empty() { "the top" } else { path };
    Some(format!(
        "payload does not match the schema of event type {event_type:?} at {at}: {}",
        e.masked()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_errors_name_the_path_and_hide_the_value() {
        let schema = json!({
            "type": "object",
            "required": ["id", "amount"],
            "properties": {
                "id": {"type": "string"},
                "amount": {"type": "integer", "minimum": 0},
                "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            }
        });
        let v = compile(&schema).unwrap();
        let cases: [(serde_json::Value, Option<&str>); 6] = [
            (json!({"id": "o-1", "amount": 5}), None),
            (
                json!({"id": "o-1", "amount": "secret-123"}),
                Some("at /amount: value is not of type \"integer\""),
            ),
            (
                json!({"id": "o-1", "amount": -1}),
                Some("at /amount: value is less than the minimum of 0"),
            ),
            (
                json!({"id": "o-1"}),
                Some("at the top: \"amount\" is a required property"),
            ),
            (
                json!({"id": "o-1", "amount": 1, "items": [{"sku": "a"}, {}]}),
                Some("at /items/1: \"sku\" is a required property"),
            ),
            (
                json!([1]),
                Some("at the top: value is not of type \"object\""),
            ),
        ];
        for (payload, want) in cases {
            let got = first_error("order.paid", &v, &payload);
            match want {
                None => assert_eq!(got, None, "{payload}"),
                Some(want) => {
                    let got = got.unwrap_or_default();
                    assert_eq!(
                        got,
                        format!(
                            "payload does not match the schema of event type \"order.paid\" {want}"
                        ),
                        "{payload}"
                    );
                    assert!(!got.contains("secret-123"));
                }
            }
        }
    }

    #[test]
    fn schemas_that_are_not_schemas_are_refused() {
        for (schema, ok) in [
            (json!({"type": "object"}), true),
            (json!(true), true),
            (json!({}), true),
            (json!({"type": "no-such-type"}), false),
            (json!({"minimum": "zero"}), false),
            (json!({"$ref": "https://example.com/schema.json"}), false),
            (json!([]), false),
            (json!("object"), false),
        ] {
            assert_eq!(
                compile(&schema).is_ok(),
                ok,
                "{schema}: {:?}",
                compile(&schema).err()
            );
        }
    }

    #[test]
    fn with_no_schema_nothing_is_checked() {
        let schemas = Schemas::default();
        assert_eq!(schemas.check_payload("order.paid", "{not json"), None);
        let compiled = Arc::new(Compiled {
            text: "{}".into(),
            validator: compile(&json!({"type": "object"})).unwrap(),
        });
        *schemas.by_type.write().unwrap() =
            Arc::new(HashMap::from([("order.paid".to_string(), compiled)]));
        schemas.any.store(true, Ordering::Release);
        assert!(schemas.check_payload("order.paid", "[]").is_some());
        assert_eq!(schemas.check_payload("order.paid", "{}"), None);
        assert_eq!(
            schemas.check_payload("order.created", "[]"),
            None,
            "no schema"
        );
    }
}
