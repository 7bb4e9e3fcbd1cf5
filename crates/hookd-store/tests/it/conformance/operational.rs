//! Operational events: the state changes that write `hookd.*` events in their own
//! transaction, their payloads, the tenants they go to, failing told at most once an hour,
//! and an exhausted `hookd.*` delivery telling nothing.

use serde_json::Value;

use super::*;

hookd_testkit::each_backend!(
    disabling_is_told_to_the_provider_and_the_tenant,
    failing_is_told_once_an_hour_and_the_failure_limit_disables,
    enabling_and_disabling_by_update_are_told,
    an_exhausted_delivery_is_told_but_never_an_operational_one,
    nothing_is_written_without_a_subscriber,
);

fn owned(id: &str, tenant: Option<&str>, types: &[&str]) -> Endpoint {
    Endpoint {
        tenant_id: tenant.map(|t| TenantId::parse(t).unwrap()),
        ..endpoint(id, types)
    }
}

/// `ops` (provider-wide, `hookd.*`), `all` (provider-wide, `*`), `acme_ops` (tenant acme,
/// `hookd.endpoint.*`), `acme_1` (acme, `*`), `beta_1` (tenant beta, `*`, no subscriber).
async fn open_with_subscribers(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open(backend).await;
    for e in [
        owned("ops", None, &["hookd.*"]),
        owned("all", None, &["*"]),
        owned("acme_ops", Some("acme"), &["hookd.endpoint.*"]),
        owned("acme_1", Some("acme"), &["*"]),
        owned("beta_1", Some("beta"), &["*"]),
    ] {
        store.insert_endpoint(&e).await.unwrap();
    }
    (db, store)
}

/// Ingests the outbox, then every delivery of `event_type` created so far, oldest first, as
/// (receiving endpoint, the event's tenant, payload).
async fn told(store: &Arc<dyn Store>, event_type: &str) -> Vec<(String, Option<String>, Value)> {
    store.ingest_outbox(1000, &limits()).await.unwrap();
    let filter = DeliveryFilter {
        event_type: Some(event_type.into()),
        ..DeliveryFilter::default()
    };
    let mut all = store.deliveries(&filter, None, 1000).await.unwrap();
    all.sort_by_key(|d| d.id);
    let mut out = Vec::new();
    for d in all {
        let e = store.event(&d.event_id).await.unwrap().unwrap();
        assert_eq!(e.event_type, event_type);
        out.push((
            d.endpoint_id.to_string(),
            d.tenant_id.map(|t| t.to_string()),
            serde_json::from_str(&e.payload).unwrap(),
        ));
    }
    out
}

fn receivers(told: &[(String, Option<String>, Value)]) -> Vec<(&str, Option<&str>)> {
    told.iter()
        .map(|(ep, t, _)| (ep.as_str(), t.as_deref()))
        .collect()
}

/// 410 Gone (`disable_endpoint`) tells the provider-wide subscribers and the endpoint's own
/// tenant's, never another tenant nor an endpoint subscribed to `*`; once per change.
async fn disabling_is_told_to_the_provider_and_the_tenant(backend: Backend) {
    let (_db, store) = open_with_subscribers(backend).await;
    let reason = "gone: the endpoint answered 410 Gone";
    assert!(store
        .disable_endpoint(&"acme_1".into(), reason)
        .await
        .unwrap());
    let got = told(&store, "hookd.endpoint.disabled").await;
    assert_eq!(
        receivers(&got),
        [("ops", None), ("acme_ops", Some("acme"))],
        "{got:?}"
    );
    for (_, _, payload) in &got {
        assert_eq!(payload["type"], "hookd.endpoint.disabled");
        assert_eq!(payload["endpoint_id"], "acme_1");
        assert_eq!(payload["tenant_id"], "acme");
        assert_eq!(payload["reason"], reason);
        assert!(payload["occurred_at"].as_str().unwrap().ends_with('Z'));
    }
    // Already disabled: no change, nothing told.
    assert!(!store
        .disable_endpoint(&"acme_1".into(), reason)
        .await
        .unwrap());
    // A tenant with no subscriber: the provider hears of it, the tenant does not.
    assert!(store
        .disable_endpoint(&"beta_1".into(), reason)
        .await
        .unwrap());
    let got = told(&store, "hookd.endpoint.disabled").await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(receivers(&got[2..]), [("ops", None)]);
    assert_eq!(got[2].2["endpoint_id"], "beta_1");
    assert_eq!(got[2].2["tenant_id"], "beta");
}

/// The first failure after a success tells `hookd.endpoint.failing`; failing again after a
/// recovery within the hour does not. The failure limit tells `hookd.endpoint.disabled`
/// with its reason.
async fn failing_is_told_once_an_hour_and_the_failure_limit_disables(backend: Backend) {
    let (_db, store) = open_with_subscribers(backend).await;
    let fail = |id: &str| vec![(EndpointId::from(id), false)];
    let ok = |id: &str| vec![(EndpointId::from(id), true)];
    store
        .record_endpoint_health(&fail("acme_1"), None, "x")
        .await
        .unwrap();
    // Still failing: no new period, nothing told.
    store
        .record_endpoint_health(&fail("acme_1"), None, "x")
        .await
        .unwrap();
    let got = told(&store, "hookd.endpoint.failing").await;
    assert_eq!(
        receivers(&got),
        [("ops", None), ("acme_ops", Some("acme"))],
        "{got:?}"
    );
    assert_eq!(got[0].2["endpoint_id"], "acme_1");
    assert_eq!(got[0].2["tenant_id"], "acme");
    assert_eq!(got[0].2["reason"], hookd_store::operational::FAILING_REASON);
    // Recovers, fails again right after: within the hour, not told again.
    store
        .record_endpoint_health(&ok("acme_1"), None, "x")
        .await
        .unwrap();
    store
        .record_endpoint_health(&fail("acme_1"), None, "x")
        .await
        .unwrap();
    assert_eq!(told(&store, "hookd.endpoint.failing").await.len(), 2);
    // Another endpoint's failing is its own news.
    store
        .record_endpoint_health(&fail("all"), None, "x")
        .await
        .unwrap();
    let got = told(&store, "hookd.endpoint.failing").await;
    assert_eq!(receivers(&got[2..]), [("ops", None)]);
    // The failure limit (0 ms here) disables it, with its reason.
    let disabled = store
        .record_endpoint_health(
            &fail("all"),
            Some(0),
            "failing: no successful delivery for 0s",
        )
        .await
        .unwrap();
    assert_eq!(disabled, ["all"]);
    let got = told(&store, "hookd.endpoint.disabled").await;
    assert_eq!(receivers(&got), [("ops", None)]);
    assert_eq!(got[0].2["endpoint_id"], "all");
    assert_eq!(got[0].2["tenant_id"], Value::Null);
    assert_eq!(got[0].2["reason"], "failing: no successful delivery for 0s");
}

/// An update that enables a disabled endpoint tells `hookd.endpoint.enabled`; one that
/// disables tells `hookd.endpoint.disabled` with the endpoint's reason; other updates tell
/// nothing.
async fn enabling_and_disabling_by_update_are_told(backend: Backend) {
    let (_db, store) = open_with_subscribers(backend).await;
    let mut e = store.endpoint(&"acme_1".into()).await.unwrap().unwrap();
    e.description = Some("renamed".into());
    store.update_endpoint(&e).await.unwrap().unwrap();
    e.enabled = false;
    e.disabled_reason = Some("disabled by an operator".into());
    store.update_endpoint(&e).await.unwrap().unwrap();
    // Disabled again (no change of `enabled`): nothing.
    store.update_endpoint(&e).await.unwrap().unwrap();
    let got = told(&store, "hookd.endpoint.disabled").await;
    assert_eq!(
        receivers(&got),
        [("ops", None), ("acme_ops", Some("acme"))],
        "{got:?}"
    );
    assert_eq!(got[0].2["reason"], "disabled by an operator");
    e.enabled = true;
    e.disabled_reason = None;
    store.update_endpoint(&e).await.unwrap().unwrap();
    let got = told(&store, "hookd.endpoint.enabled").await;
    assert_eq!(
        receivers(&got),
        [("ops", None), ("acme_ops", Some("acme"))],
        "{got:?}"
    );
    let payload = got[0].2.as_object().unwrap();
    assert_eq!(payload["endpoint_id"], "acme_1");
    assert_eq!(payload["tenant_id"], "acme");
    assert!(!payload.contains_key("reason"), "{payload:?}");
    // A failed conditional update changes nothing and tells nothing.
    assert_eq!(
        store.update_endpoint_if(&e, Some(1)).await.unwrap(),
        Versioned::Changed
    );
    assert_eq!(told(&store, "hookd.endpoint.enabled").await.len(), 2);
    assert_eq!(told(&store, "hookd.endpoint.disabled").await.len(), 2);
}

/// A delivery that gives up after its last automatic attempt is told with its id, event,
/// attempts and last error (to its tenant too when it subscribes); a `hookd.*` delivery
/// that gives up tells nothing; a retry or a success tells nothing.
async fn an_exhausted_delivery_is_told_but_never_an_operational_one(backend: Backend) {
    let (_db, store) = open(backend).await;
    for e in [
        owned("ops", None, &["hookd.*"]),
        owned("acme_ops", Some("acme"), &["hookd.delivery.exhausted"]),
        owned("acme_1", Some("acme"), &["*"]),
    ] {
        store.insert_endpoint(&e).await.unwrap();
    }
    store
        .enqueue_event(
            &NewEvent {
                tenant_id: Some("acme".into()),
                ..event(Some("e1"), "purchase")
            },
            &limits(),
        )
        .await
        .unwrap();
    let c = store.claim(10, 60_000).await.unwrap().remove(0);
    assert_eq!(c.endpoint.id.as_str(), "acme_1");
    let mut retry = completion(&c, Outcome::HttpError, Some(503), Next::RetryIn(0));
    retry.record.error = Some("HTTP 503".into());
    store.complete(&[retry]).await.unwrap();
    assert!(told(&store, "hookd.delivery.exhausted").await.is_empty());

    let c = wait_until(Duration::from_secs(10), "the retry due", || {
        let store = store.clone();
        async move { store.claim(10, 60_000).await.unwrap().pop() }
    })
    .await;
    let mut last = completion(&c, Outcome::HttpError, Some(500), Next::Failed);
    last.record.error = Some("HTTP 500 Internal Server Error".into());
    assert_eq!(store.complete(&[last]).await.unwrap(), [true]);
    let got = told(&store, "hookd.delivery.exhausted").await;
    assert_eq!(
        receivers(&got),
        [("ops", None), ("acme_ops", Some("acme"))],
        "{got:?}"
    );
    let p = &got[0].2;
    assert_eq!(p["delivery_id"], c.delivery_id);
    assert_eq!(p["event_id"], "e1");
    assert_eq!(p["event_type"], "purchase");
    assert_eq!(p["endpoint_id"], "acme_1");
    assert_eq!(p["tenant_id"], "acme");
    assert_eq!(p["attempts"], 2);
    assert_eq!(p["last_status_code"], 500);
    assert_eq!(p["reason"], "HTTP 500 Internal Server Error");

    // The operational deliveries themselves give up: nothing more is told.
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let finals: Vec<Completion> = claimed
        .iter()
        .map(|c| completion(c, Outcome::NetworkError, None, Next::Failed))
        .collect();
    assert_eq!(store.complete(&finals).await.unwrap(), [true, true]);
    assert_eq!(told(&store, "hookd.delivery.exhausted").await.len(), 2);
    assert_eq!(store.backlog().await.unwrap().outbox, 0);
}

/// With no endpoint subscribed to a type, its state changes write no row at all.
async fn nothing_is_written_without_a_subscriber(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue(&store, "e1", "purchase").await;
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store
        .complete(&[completion(&c, Outcome::HttpError, Some(500), Next::Failed)])
        .await
        .unwrap();
    store
        .record_endpoint_health(&[("ep_1".into(), false)], Some(0), "failing")
        .await
        .unwrap();
    let mut e = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    e.enabled = true;
    store.update_endpoint(&e).await.unwrap().unwrap();
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM hookd_outbox").await, 0);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM hookd_events").await, 1);
}
