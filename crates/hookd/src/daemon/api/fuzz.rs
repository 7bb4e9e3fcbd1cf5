//! Property tests of everything that parses untrusted input: request bodies, query
//! values, URLs, durations and patterns. Bounded (proptest's default 256 cases each) so
//! they run in every `cargo test`. Each property: no panic, and the error class is right.

use proptest::prelude::*;

use super::endpoints::{EndpointPatch, NewEndpoint, Rotation};
use super::error::ApiError;
use super::events::EventRequest;
use super::json::parse;

/// Arbitrary JSON values, a few levels deep.
fn values() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "1s",
            "10m",
            "http://127.0.0.1/",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "*",
            "toss"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary JSON-ish text: real JSON values, mangled, and raw bytes.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let json = values().prop_map(|v| v.to_string().into_bytes());
    let object = || {
        prop::collection::btree_map(
            prop::sample::select(vec![
                "url",
                "event_types",
                "secret",
                "signature_scheme",
                "retry_schedule",
                "timeout",
                "headers",
                "enabled",
                "ordered",
                "rate_limit",
                "event_type",
                "payload",
                "event_id",
                "endpoint_id",
                "grace",
                "bearer_token",
                "description",
            ]),
            values(),
            0..6,
        )
        .prop_map(|m| serde_json::to_vec(&m).unwrap())
    };
    let mangled =
        (object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, byte)| {
            if !b.is_empty() {
                let at = i.index(b.len());
                b[at] = byte;
            }
            b
        });
    prop_oneof![
        json,
        object(),
        mangled,
        prop::collection::vec(any::<u8>(), 0..64)
    ]
}

fn classified<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bool {
    match parse::<T>(bytes) {
        Ok(_) => true,
        Err(ApiError::MalformedJson(_)) => {
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
        }
        Err(ApiError::Invalid(_)) => serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(),
        Err(_) => false,
    }
}

proptest! {
    #[test]
    fn bodies_are_parsed_or_classified(bytes in bodies()) {
        prop_assert!(classified::<NewEndpoint>(&bytes));
        prop_assert!(classified::<EndpointPatch>(&bytes));
        prop_assert!(classified::<EventRequest>(&bytes));
        prop_assert!(classified::<Rotation>(&bytes));
        prop_assert!(classified::<super::deliveries::FilterFields>(&bytes));
    }

    #[test]
    fn urls_never_panic(text in ".{0,80}", allow in any::<bool>(), https in any::<bool>()) {
        let policy = crate::daemon::ssrf::TargetPolicy { allow_private: allow, https_only: https, ..Default::default() };
        if let Ok(url) = crate::daemon::ssrf::check_url(&text, &policy) {
            prop_assert!(matches!(url.scheme(), "http" | "https"));
            prop_assert!(url.host().is_some());
        }
    }

    #[test]
    fn durations_and_instants_never_panic(text in ".{0,40}", now in any::<i64>()) {
        let _ = crate::duration::parse_schedule(&text);
        let _ = super::time::parse_instant(&text, now / 2);
        let _ = crate::daemon::retry::parse_retry_after(&text, chrono::Utc::now());
        let _ = crate::daemon::ssrf::parse_ranges(&text);
    }

    #[test]
    fn patterns_never_panic(pattern in ".{0,20}", event_type in "[a-z._*]{0,20}") {
        let valid = hookd_store::matching::valid_pattern(&pattern);
        let accepted = hookd_store::matching::accepts(std::slice::from_ref(&pattern), &event_type);
        prop_assert!(!accepted || valid || pattern == event_type, "{pattern:?} accepted {event_type:?}");
    }
}
