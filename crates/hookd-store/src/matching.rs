//! Which endpoints an event goes to. Pure: no I/O.

/// Whether an endpoint's `event_types` pattern list accepts `event_type`.
///
/// A pattern is `*` (everything but hookd's own types), an exact name, or a prefix wildcard
/// ending in `.*` (`payment.*` matches `payment.succeeded` and `payment.refund.created`, not
/// `payment`).
pub fn accepts(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, event_type))
}

/// The prefix of hookd's own event types (`hookd.endpoint.disabled`, ...): the operational
/// events it emits about endpoints and deliveries.
pub const OPERATIONAL_PREFIX: &str = "hookd.";

/// Whether `event_type` is one of hookd's own. `*` does not match them: an endpoint hears
/// of them only when it names them (`hookd.*`, `hookd.endpoint.*`, or a full name), so a
/// receiver of every business event is not sent operational ones it never asked for.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with(OPERATIONAL_PREFIX)
}

fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return !is_operational(event_type);
    }
    match pattern.strip_suffix('*') {
        // `.*` alone names no prefix: not a valid pattern, so it matches only itself.
        Some(prefix) if prefix.len() > 1 && prefix.ends_with('.') => {
            event_type.len() > prefix.len() && event_type.starts_with(prefix)
        }
        _ => pattern == event_type,
    }
}

/// Whether a pattern is well formed: `*`, or a non-empty name of printable characters with
/// no `*` except as a final `.*`.
pub fn valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    !name.is_empty()
        && name.len() <= 200
        && !name.contains('*')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// The part of an endpoint that fan-out needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    /// The endpoint's tenant; `None`: the provider-wide tenant.
    pub tenant_id: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub ordered: bool,
    /// It has a rate limit: its deliveries are claimed within its budget, never leased at
    /// ingest.
    pub rate_limited: bool,
}

/// A delivery to create: the endpoint, and whether it starts parked (endpoint disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub endpoint_id: String,
    pub parked: bool,
    /// The endpoint delivers in order: the delivery may have to wait for earlier ones.
    pub ordered: bool,
    /// Why the delivery can never be sent (it is created `failed`), or `None`.
    pub error: Option<&'static str>,
}

/// The error of a delivery addressed (`endpoint_id`) across tenants.
pub const ANOTHER_TENANT: &str = "endpoint belongs to another tenant";

/// The deliveries for one event of `tenant` (`None`: the provider-wide tenant). Fan-out
/// stays inside the tenant.
///
/// With `endpoint_id` the event goes to that endpoint alone (parked when it is disabled, none
/// when it does not exist, failed with [`ANOTHER_TENANT`] when it is another tenant's);
/// otherwise to every enabled endpoint of the tenant whose patterns accept it.
pub fn plan(
    event_type: &str,
    endpoint_id: Option<&str>,
    tenant: Option<&str>,
    targets: &[Target],
) -> Vec<Planned> {
    match endpoint_id {
        Some(id) => targets
            .iter()
            .filter(|t| t.id == id)
            .map(|t| {
                let error = (t.tenant_id.as_deref() != tenant).then_some(ANOTHER_TENANT);
                Planned {
                    endpoint_id: t.id.clone(),
                    parked: !t.enabled && error.is_none(),
                    ordered: t.ordered && error.is_none(),
                    error,
                }
            })
            .collect(),
        None => targets
            .iter()
            .filter(|t| {
                t.enabled && t.tenant_id.as_deref() == tenant && accepts(&t.event_types, event_type)
            })
            .map(|t| Planned {
                endpoint_id: t.id.clone(),
                parked: false,
                ordered: t.ordered,
                error: None,
            })
            .collect(),
    }
}

/// Whether any of `events` (event type, `endpoint_id`, tenant) goes to an ordered
/// endpoint: then the order in which its deliveries are created is the order they are
/// sent in.
pub fn reaches_ordered<'a>(
    events: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<&'a str>)>,
    targets: &[Target],
) -> bool {
    if !targets.iter().any(|t| t.ordered) {
        return false;
    }
    events.into_iter().any(|(event_type, endpoint_id, tenant)| {
        plan(event_type, endpoint_id, tenant, targets)
            .iter()
            .any(|p| p.ordered)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pattern_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "purchase", true),
            (&["purchase"], "purchase", true),
            (&["purchase"], "refund", false),
            (&["purchase"], "purchase.x", false),
            (&["purchase", "refund"], "refund", true),
            (&["payment.*"], "payment.succeeded", true),
            (&["payment.*"], "payment.refund.created", true),
            (&["payment.*"], "payment", false),
            (&["payment.*"], "payment.", false),
            (&["payment.*"], "payments.x", false),
            (&["PURCHASE"], "purchase", false),
            (&[".*"], "..", false),
            (&[".*"], ".x", false),
            (&[], "purchase", false),
            // hookd's own types: only by name, never by `*`.
            (&["*"], "hookd.endpoint.disabled", false),
            (&["*"], "hookd.delivery.exhausted", false),
            (&["*", "purchase"], "hookd.endpoint.failing", false),
            (&["hookd.*"], "hookd.endpoint.disabled", true),
            (&["hookd.endpoint.*"], "hookd.endpoint.enabled", true),
            (&["hookd.endpoint.*"], "hookd.delivery.exhausted", false),
            (
                &["hookd.delivery.exhausted"],
                "hookd.delivery.exhausted",
                true,
            ),
            (
                &["*", "hookd.endpoint.failing"],
                "hookd.endpoint.failing",
                true,
            ),
            // A business type that merely contains "hookd" is not one of them.
            (&["*"], "myhookd.x", true),
            (&["*"], "hookd", true),
        ];
        for (patterns, event_type, want) in cases {
            assert_eq!(
                accepts(&pats(patterns), event_type),
                *want,
                "{patterns:?} vs {event_type}"
            );
        }
    }

    #[test]
    fn valid_patterns() {
        for ok in [
            "*",
            "purchase",
            "payment.*",
            "PAYMENT_STATUS_CHANGED",
            "a.b.c",
        ] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in ["", "pay*", "*.x", "a b", ".*", "a.**", "x\n"] {
            assert!(!valid_pattern(bad), "{bad:?}");
        }
    }

    #[test]
    fn plan_fans_out_and_targets() {
        let targets = vec![
            Target {
                id: "a".into(),
                tenant_id: None,
                event_types: pats(&["*"]),
                enabled: true,
                ordered: false,
                rate_limited: false,
            },
            Target {
                id: "b".into(),
                tenant_id: None,
                event_types: pats(&["refund"]),
                enabled: true,
                ordered: false,
                rate_limited: false,
            },
            Target {
                id: "c".into(),
                tenant_id: None,
                event_types: pats(&["*"]),
                enabled: false,
                ordered: false,
                rate_limited: false,
            },
        ];
        let ids = |p: Vec<Planned>| {
            p.into_iter()
                .map(|p| (p.endpoint_id, p.parked))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(plan("purchase", None, None, &targets)),
            vec![("a".into(), false)]
        );
        assert_eq!(
            ids(plan("refund", None, None, &targets)),
            vec![("a".into(), false), ("b".into(), false)]
        );
        assert_eq!(
            ids(plan("purchase", Some("b"), None, &targets)),
            vec![("b".into(), false)]
        );
        assert_eq!(
            ids(plan("purchase", Some("c"), None, &targets)),
            vec![("c".into(), true)]
        );
        assert!(plan("purchase", Some("zz"), None, &targets).is_empty());
    }

    #[test]
    fn reaching_ordered_endpoints() {
        let target = |id: &str, types: &[&str], enabled, ordered| Target {
            id: id.into(),
            tenant_id: None,
            event_types: pats(types),
            enabled,
            ordered,
            rate_limited: false,
        };
        let targets = vec![
            target("plain", &["*"], true, false),
            target("seq", &["order.*"], true, true),
            target("seq_off", &["*"], false, true),
        ];
        type Event<'a> = (&'a str, Option<&'a str>, Option<&'a str>);
        // (events as (event type, endpoint_id), reaches an ordered endpoint)
        let cases: &[(&[Event], bool)] = &[
            (&[], false),
            (&[("purchase", None, None)], false),
            (&[("order.paid", None, None)], true),
            (
                &[("purchase", None, None), ("order.paid", None, None)],
                true,
            ),
            // A disabled ordered endpoint is no fan-out target, but a targeted row reaches it
            // (parked, still in order).
            (&[("purchase", Some("seq_off"), None)], true),
            (&[("order.paid", Some("plain"), None)], false),
            (&[("order.paid", Some("nobody"), None)], false),
            // Another tenant's ordered endpoint: not reached (the delivery fails).
            (&[("order.paid", None, Some("t1"))], false),
            (&[("purchase", Some("seq_off"), Some("t1"))], false),
        ];
        for (events, want) in cases {
            assert_eq!(
                reaches_ordered(events.iter().copied(), &targets),
                *want,
                "{events:?}"
            );
        }
        let unordered = vec![target("plain", &["*"], true, false)];
        assert!(!reaches_ordered([("order.paid", None, None)], &unordered));
    }

    #[test]
    fn fan_out_stays_inside_the_tenant() {
        let target = |id: &str, tenant: Option<&str>, enabled| Target {
            id: id.into(),
            tenant_id: tenant.map(Into::into),
            event_types: pats(&["*"]),
            enabled,
            ordered: false,
            rate_limited: false,
        };
        let targets = vec![
            target("wide", None, true),
            target("a1", Some("a"), true),
            target("a2", Some("a"), false),
            target("b1", Some("b"), true),
        ];
        type Row = (Option<&'static str>, Option<&'static str>);
        type Want = (&'static str, bool, Option<&'static str>);
        // ((tenant, endpoint_id), [(endpoint, parked, error)])
        let cases: &[(Row, &[Want])] = &[
            ((None, None), &[("wide", false, None)]),
            ((Some("a"), None), &[("a1", false, None)]),
            ((Some("b"), None), &[("b1", false, None)]),
            ((Some("c"), None), &[]),
            ((Some("a"), Some("a2")), &[("a2", true, None)]),
            (
                (Some("a"), Some("b1")),
                &[("b1", false, Some(ANOTHER_TENANT))],
            ),
            (
                (Some("a"), Some("wide")),
                &[("wide", false, Some(ANOTHER_TENANT))],
            ),
            ((None, Some("a1")), &[("a1", false, Some(ANOTHER_TENANT))]),
            ((Some("a"), Some("nobody")), &[]),
        ];
        for ((tenant, endpoint_id), want) in cases {
            let got: Vec<(String, bool, Option<&str>)> =
                plan("purchase", *endpoint_id, *tenant, &targets)
                    .into_iter()
                    .map(|p| (p.endpoint_id, p.parked, p.error))
                    .collect();
            let want: Vec<(String, bool, Option<&str>)> = want
                .iter()
                .map(|(id, parked, error)| (id.to_string(), *parked, *error))
                .collect();
            assert_eq!(got, want, "{tenant:?} {endpoint_id:?}");
        }
    }
}
