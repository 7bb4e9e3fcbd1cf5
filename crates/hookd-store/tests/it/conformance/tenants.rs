//! Tenants: fan-out inside the tenant, outbox rows naming a bad tenant or another tenant's
//! endpoint, every confined read and write in a tenant's scope, and tenant tokens.

use super::*;

hookd_testkit::each_backend!(
    fan_out_stays_inside_the_tenant,
    outbox_rows_with_bad_tenants_fail_alone,
    a_tenant_scope_sees_only_its_own_rows,
    a_tenant_bulk_resend_matches_only_its_deliveries,
    tenant_tokens_expire_and_are_revoked,
);

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn owned(id: &str, t: Option<&str>) -> Endpoint {
    Endpoint {
        tenant_id: t.map(tenant),
        ..endpoint(id, &["*"])
    }
}

fn event_of(id: &str, t: Option<&str>) -> NewEvent {
    NewEvent {
        tenant_id: t.map(str::to_string),
        ..event(Some(id), "purchase")
    }
}

/// `ep_wide` (no tenant), `ep_a1`, `ep_a2` (tenant `a`), `ep_b` (tenant `b`), all `*`.
async fn open_with_tenants(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open(backend).await;
    for (id, t) in [
        ("ep_wide", None),
        ("ep_a1", Some("a")),
        ("ep_a2", Some("a")),
        ("ep_b", Some("b")),
    ] {
        store.insert_endpoint(&owned(id, t)).await.unwrap();
    }
    (db, store)
}

/// Every delivery, as (event id, endpoint id, tenant, state, last error), by id.
async fn all(
    store: &Arc<dyn Store>,
) -> Vec<(
    String,
    String,
    Option<String>,
    DeliveryState,
    Option<String>,
)> {
    let mut all = store
        .deliveries(&DeliveryFilter::default(), None, 1000)
        .await
        .unwrap();
    all.sort_by_key(|d| d.id);
    all.into_iter()
        .map(|d| {
            (
                d.event_id.into(),
                d.endpoint_id.into(),
                d.tenant_id.map(|t| t.to_string()),
                d.state,
                d.last_error,
            )
        })
        .collect()
}

async fn fan_out_stays_inside_the_tenant(backend: Backend) {
    let (_db, store) = open_with_tenants(backend).await;
    let cases: [(&str, Option<&str>, u64); 4] = [
        ("e_wide", None, 1),
        ("e_a", Some("a"), 2),
        ("e_b", Some("b"), 1),
        ("e_c", Some("c"), 0),
    ];
    for (id, t, n) in cases {
        let done = store
            .enqueue_event(&event_of(id, t), &limits())
            .await
            .unwrap();
        assert_eq!(done.deliveries, n, "{id}");
        let stored = store.event(&id.into()).await.unwrap().unwrap();
        assert_eq!(stored.tenant_id.map(|t| t.to_string()).as_deref(), t);
    }
    let got = all(&store).await;
    let pending = DeliveryState::Pending;
    let row = |e: &str, ep: &str, t: Option<&str>| {
        (
            e.to_string(),
            ep.to_string(),
            t.map(str::to_string),
            pending,
            None,
        )
    };
    assert_eq!(
        got,
        vec![
            row("e_wide", "ep_wide", None),
            row("e_a", "ep_a1", Some("a")),
            row("e_a", "ep_a2", Some("a")),
            row("e_b", "ep_b", Some("b")),
        ]
    );
    // Addressed to another tenant's endpoint: failed, and seen by the provider only.
    let mut cross = event_of("e_cross", Some("a"));
    cross.endpoint_id = Some("ep_b".into());
    assert_eq!(
        store
            .enqueue_event(&cross, &limits())
            .await
            .unwrap()
            .deliveries,
        1
    );
    let d = all(&store).await.pop().unwrap();
    assert_eq!(
        d,
        (
            "e_cross".into(),
            "ep_b".into(),
            None,
            DeliveryState::Failed,
            Some(matching::ANOTHER_TENANT.into())
        )
    );
    // A claim takes only the pending ones.
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 4);
}

async fn outbox_rows_with_bad_tenants_fail_alone(backend: Backend) {
    let (db, store) = open_with_tenants(backend).await;
    let long = "x".repeat(65);
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, tenant_id, endpoint_id) VALUES \
         ('o_empty', 'purchase', '{{}}', '', NULL), \
         ('o_long', 'purchase', '{{}}', '{long}', 'ep_a1'), \
         ('o_chars', 'purchase', '{{}}', 'a b', 'ep_wide'), \
         ('o_cross', 'purchase', '{{}}', 'b', 'ep_a1'), \
         ('o_wide_to_tenant', 'purchase', '{{}}', NULL, 'ep_b'), \
         ('o_ok', 'purchase', '{{}}', 'a', NULL), \
         ('o_targeted', 'purchase', '{{}}', 'b', 'ep_b')"
    ))
    .await;
    assert_eq!(store.ingest_outbox(100, &limits()).await.unwrap(), 7);
    let got = all(&store).await;
    let by_event = |id: &str| -> Vec<_> { got.iter().filter(|d| d.0 == id).cloned().collect() };
    assert!(
        by_event("o_empty").is_empty(),
        "no endpoint of an invalid tenant"
    );
    for (id, ep) in [("o_long", "ep_a1"), ("o_chars", "ep_wide")] {
        let d = by_event(id);
        assert_eq!(d.len(), 1, "{id}: {d:?}");
        assert_eq!(
            (d[0].1.as_str(), d[0].2.as_deref(), d[0].3),
            (ep, None, DeliveryState::Failed)
        );
        assert!(d[0].4.as_deref().unwrap().contains("tenant_id"), "{d:?}");
        let e = store.event(&id.into()).await.unwrap().unwrap();
        assert_eq!(e.tenant_id, None);
        assert!(e.payload_error.unwrap().contains("tenant_id"));
    }
    for id in ["o_cross", "o_wide_to_tenant"] {
        let d = by_event(id);
        assert_eq!(d.len(), 1, "{id}");
        assert_eq!(d[0].3, DeliveryState::Failed);
        assert_eq!(d[0].4.as_deref(), Some(matching::ANOTHER_TENANT));
    }
    let ok: Vec<_> = by_event("o_ok")
        .into_iter()
        .map(|d| (d.1, d.2, d.3))
        .collect();
    assert_eq!(
        ok,
        vec![
            (
                "ep_a1".to_string(),
                Some("a".to_string()),
                DeliveryState::Pending
            ),
            (
                "ep_a2".to_string(),
                Some("a".to_string()),
                DeliveryState::Pending
            ),
        ]
    );
    let targeted = by_event("o_targeted");
    assert_eq!((targeted.len(), targeted[0].3), (1, DeliveryState::Pending));
}

async fn a_tenant_scope_sees_only_its_own_rows(backend: Backend) {
    let (_db, store) = open_with_tenants(backend).await;
    for (id, t) in [("e_wide", None), ("e_a", Some("a")), ("e_b", Some("b"))] {
        store
            .enqueue_event(&event_of(id, t), &limits())
            .await
            .unwrap();
    }
    let a = Scope::Tenant(tenant("a"));
    let b = Scope::Tenant(tenant("b"));
    let ids = |v: Vec<Endpoint>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.endpoints_in(&a, None, 10).await.unwrap()),
        ["ep_a1", "ep_a2"]
    );
    assert_eq!(
        ids(store.endpoints_in(&b, None, 10).await.unwrap()),
        ["ep_b"]
    );
    assert_eq!(
        ids(store.endpoints_in(&a, Some("ep_a1"), 10).await.unwrap()),
        ["ep_a2"]
    );
    assert_eq!(
        store
            .endpoints_in(&Scope::Admin, None, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(store
        .endpoint_in(&a, &"ep_a1".into())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .endpoint_in(&a, &"ep_b".into())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .endpoint_in(&a, &"ep_wide".into())
        .await
        .unwrap()
        .is_none());

    // Writes to another tenant's endpoint find nothing, and change nothing.
    let mut other = store.endpoint(&"ep_b".into()).await.unwrap().unwrap();
    other.url = "http://127.0.0.1:9/changed".into();
    assert_eq!(
        store.update_endpoint_in(&a, &other, None).await.unwrap(),
        Versioned::NotFound
    );
    assert_eq!(
        store
            .delete_endpoint_in(&a, &"ep_b".into(), None)
            .await
            .unwrap(),
        Versioned::NotFound
    );
    let still = store.endpoint(&"ep_b".into()).await.unwrap().unwrap();
    assert_eq!(
        (still.url.as_str(), still.deleted),
        ("http://127.0.0.1:9/ep_b", false)
    );
    // An update in the tenant's scope keeps the tenant.
    let mut mine = store.endpoint(&"ep_a1".into()).await.unwrap().unwrap();
    mine.tenant_id = None;
    mine.description = Some("mine".into());
    let Versioned::Done(updated) = store.update_endpoint_in(&a, &mine, None).await.unwrap() else {
        panic!("not updated");
    };
    assert_eq!(updated.tenant_id, Some(tenant("a")));
    assert_eq!(
        store
            .delete_endpoint_in(&a, &"ep_a2".into(), None)
            .await
            .unwrap(),
        Versioned::Done(())
    );

    let log = store
        .deliveries_in(&a, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        log.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["e_a", "e_a"]
    );
    // A filter naming another tenant is overridden by the scope.
    let other_filter = DeliveryFilter {
        tenant_id: Some(tenant("b")),
        ..Default::default()
    };
    assert_eq!(
        store
            .deliveries_in(&a, &other_filter, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .deliveries_in(&Scope::Admin, &other_filter, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let theirs = store
        .deliveries_in(&b, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(store.delivery_in(&a, theirs.id).await.unwrap().is_none());
    assert!(store.delivery_in(&b, theirs.id).await.unwrap().is_some());
    assert!(!store.resend_in(&a, theirs.id).await.unwrap());
    assert!(store.resend_in(&b, theirs.id).await.unwrap());
    assert!(store.event_in(&a, &"e_b".into()).await.unwrap().is_none());
    assert!(store
        .event_in(&a, &"e_wide".into())
        .await
        .unwrap()
        .is_none());
    assert!(store.event_in(&a, &"e_a".into()).await.unwrap().is_some());
    assert!(store
        .event_in(&Scope::Admin, &"e_b".into())
        .await
        .unwrap()
        .is_some());

    let summaries = store
        .endpoint_summaries_in(&a, None, 10, 3_600_000)
        .await
        .unwrap();
    let ids: Vec<_> = summaries
        .endpoints
        .iter()
        .map(|s| s.endpoint.id.as_str())
        .collect();
    assert_eq!(ids, ["ep_a1"]);
    assert_eq!(summaries.endpoints[0].pending, 1);
}

async fn a_tenant_bulk_resend_matches_only_its_deliveries(backend: Backend) {
    let (_db, store) = open_with_tenants(backend).await;
    for (id, t) in [("e_wide", None), ("e_a", Some("a")), ("e_b", Some("b"))] {
        store
            .enqueue_event(&event_of(id, t), &limits())
            .await
            .unwrap();
    }
    let a = Scope::Tenant(tenant("a"));
    let job = store
        .create_resend_job_in(&a, &DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(job.matched, 2);
    assert_eq!(job.filter.tenant_id, Some(tenant("a")));
    assert!(store.resend_job_in(&a, &job.id).await.unwrap().is_some());
    assert!(store
        .resend_job_in(&Scope::Tenant(tenant("b")), &job.id)
        .await
        .unwrap()
        .is_none());
    assert!(store.resend_job(&job.id).await.unwrap().is_some());
    assert_eq!(store.step_resend_jobs(100, 1000).await.unwrap(), 2);
    let mut triggers: Vec<(String, Trigger)> = store
        .claim(10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.event_id.into(), c.trigger))
        .collect();
    triggers.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        triggers,
        [
            ("e_a".to_string(), Trigger::Manual),
            ("e_a".to_string(), Trigger::Manual),
            ("e_b".to_string(), Trigger::Auto),
            ("e_wide".to_string(), Trigger::Auto),
        ]
    );
    // The admin's bulk resend by tenant: the same filter, given.
    let by_admin = store
        .create_resend_job(&DeliveryFilter {
            tenant_id: Some(tenant("b")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_admin.matched, 1);
}

async fn tenant_tokens_expire_and_are_revoked(backend: Backend) {
    let (_db, store) = open(backend).await;
    let now = store.now_ms().await.unwrap();
    let expires = store
        .insert_tenant_token("hash_a1", &tenant("a"), 3_600_000)
        .await
        .unwrap();
    assert!(
        (expires - now - 3_600_000).abs() < 60_000,
        "{expires} {now}"
    );
    store
        .insert_tenant_token("hash_a2", &tenant("a"), 3_600_000)
        .await
        .unwrap();
    store
        .insert_tenant_token("hash_b", &tenant("b"), 3_600_000)
        .await
        .unwrap();
    store
        .insert_tenant_token("hash_old", &tenant("b"), -1)
        .await
        .unwrap();
    assert_eq!(
        store.tenant_of_token("hash_a1").await.unwrap(),
        Some(tenant("a"))
    );
    assert_eq!(
        store.tenant_of_token("hash_b").await.unwrap(),
        Some(tenant("b"))
    );
    assert_eq!(
        store.tenant_of_token("hash_old").await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.tenant_of_token("nope").await.unwrap(), None);
    assert_eq!(store.revoke_tenant_tokens(&tenant("a")).await.unwrap(), 2);
    assert_eq!(store.tenant_of_token("hash_a1").await.unwrap(), None);
    assert_eq!(store.tenant_of_token("hash_a2").await.unwrap(), None);
    assert_eq!(
        store.tenant_of_token("hash_b").await.unwrap(),
        Some(tenant("b"))
    );
}
