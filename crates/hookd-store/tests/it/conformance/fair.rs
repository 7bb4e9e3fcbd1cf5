//! Fair claims: a tenant's backlog, or one endpoint's, does not hold up the fresh events of
//! another tenant or endpoint; a claim's places are shared between the tenants with first
//! attempts due, then between their endpoints, and its retry places likewise between the
//! tenants with retries due.

use super::*;

hookd_testkit::each_backend!(
    a_fresh_event_of_another_tenant_is_claimed_ahead_of_a_backlog,
    a_fresh_event_of_another_endpoint_is_claimed_ahead_of_its_backlog,
    shares_skip_busy_endpoints_and_unused_shares_go_to_the_oldest,
    a_fair_drain_claims_every_delivery_once,
    a_retry_of_another_tenant_is_claimed_ahead_of_a_backlog_of_retries,
    a_fair_drain_of_retries_claims_every_delivery_once,
    a_backlog_in_the_outbox_does_not_hold_up_another_tenants_rows,
);

fn owned(id: &str, t: Option<&str>) -> Endpoint {
    Endpoint {
        tenant_id: t.map(|t| TenantId::parse(t).unwrap()),
        ..endpoint(id, &["*"])
    }
}

/// Events `{prefix}{i}` of tenant `t` for `i` in `ids`, one enqueue each.
async fn enqueue_of(
    store: &Arc<dyn Store>,
    prefix: &str,
    ids: std::ops::Range<usize>,
    t: Option<&str>,
) {
    for i in ids {
        let e = NewEvent {
            tenant_id: t.map(str::to_string),
            ..event(Some(&format!("{prefix}{i}")), "purchase")
        };
        store.enqueue_event(&e, &limits()).await.unwrap();
    }
}

/// Tenant `a` with endpoints `ep_a1`..`ep_a4` and a backlog of 30 events (120 deliveries),
/// then tenant `b` with `ep_b` and one fresh event.
async fn open_with_backlog(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open(backend).await;
    for id in ["ep_a1", "ep_a2", "ep_a3", "ep_a4"] {
        store.insert_endpoint(&owned(id, Some("a"))).await.unwrap();
    }
    store
        .insert_endpoint(&owned("ep_b", Some("b")))
        .await
        .unwrap();
    enqueue_of(&store, "a", 0..30, Some("a")).await;
    enqueue_of(&store, "b", 0..1, Some("b")).await;
    (db, store)
}

fn endpoints(claimed: &[Claimed]) -> Vec<&str> {
    let mut e: Vec<&str> = claimed.iter().map(|c| c.endpoint.id.as_str()).collect();
    e.sort_unstable();
    e
}

async fn a_fresh_event_of_another_tenant_is_claimed_ahead_of_a_backlog(backend: Backend) {
    let (_db, store) = open_with_backlog(backend).await;
    // Two places: one per tenant, whatever the backlog ahead in due order.
    let claimed = store.claim(2, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        endpoints(&claimed).contains(&"ep_b"),
        "{:?}",
        endpoints(&claimed)
    );
    assert_eq!(
        claimed
            .iter()
            .find(|c| c.endpoint.id == "ep_b")
            .unwrap()
            .event_id,
        "b0"
    );
}

async fn a_fresh_event_of_another_endpoint_is_claimed_ahead_of_its_backlog(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&owned("ep_x", Some("t")))
        .await
        .unwrap();
    enqueue_of(&store, "x", 0..40, Some("t")).await;
    store
        .insert_endpoint(&owned("ep_y", Some("t")))
        .await
        .unwrap();
    // Addressed to ep_y only: ep_x's backlog is 40 rows ahead of it in due order.
    let e = NewEvent {
        tenant_id: Some("t".into()),
        endpoint_id: Some("ep_y".into()),
        ..event(Some("y0"), "purchase")
    };
    store.enqueue_event(&e, &limits()).await.unwrap();
    let claimed = store.claim(2, 60_000).await.unwrap();
    assert_eq!(endpoints(&claimed), vec!["ep_x", "ep_y"]);
}

async fn shares_skip_busy_endpoints_and_unused_shares_go_to_the_oldest(backend: Backend) {
    let (_db, store) = open_with_backlog(backend).await;
    // ep_b busy: every place goes to tenant a, each of its endpoints its share.
    let claimed = store
        .claim_due(ClaimPlan::any(8), &["ep_b".into()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        endpoints(&claimed),
        vec!["ep_a1", "ep_a1", "ep_a2", "ep_a2", "ep_a3", "ep_a3", "ep_a4", "ep_a4"]
    );
    // Ten places: b's share is five, it has one; the four left go to a's oldest rows.
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 10);
    assert_eq!(
        endpoints(&claimed).iter().filter(|e| **e == "ep_b").count(),
        1
    );
}

async fn a_fair_drain_claims_every_delivery_once(backend: Backend) {
    let (_db, store) = open_with_backlog(backend).await;
    let mut seen = HashSet::new();
    loop {
        let claimed = store.claim(7, 60_000).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for c in &claimed {
            assert!(
                seen.insert(c.delivery_id),
                "claimed twice: {}",
                c.delivery_id
            );
        }
    }
    assert_eq!(seen.len(), 121);
}

/// Every delivery of `open_with_backlog` attempted once and failed, due again at once: a's
/// 120 retries first, then b's one, the youngest.
async fn open_with_retries(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open_with_backlog(backend).await;
    let retry = |c: &Claimed| completion(c, Outcome::HttpError, Some(503), Next::RetryIn(0));
    let mut b = None;
    loop {
        let claimed = store
            .claim_due(ClaimPlan::first_attempts(50), &[], 60_000)
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        let (of_b, of_a): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| c.endpoint.id == "ep_b");
        let batch: Vec<Completion> = of_a.iter().map(retry).collect();
        store.complete(&batch).await.unwrap();
        b = b.or(of_b.into_iter().next());
    }
    let b = b.expect("b's delivery claimed");
    store.complete(&[retry(&b)]).await.unwrap();
    (db, store)
}

async fn a_retry_of_another_tenant_is_claimed_ahead_of_a_backlog_of_retries(backend: Backend) {
    let (_db, store) = open_with_retries(backend).await;
    // Retries after the first attempts (none due), and retries ahead of them: two places,
    // one per tenant, whatever the backlog ahead in due order.
    for plan in [ClaimPlan::any(2), ClaimPlan::retries(2)] {
        let claimed = store.claim_due(plan, &[], 60_000).await.unwrap();
        assert_eq!(claimed.len(), 2, "{plan:?}");
        assert!(
            endpoints(&claimed).contains(&"ep_b"),
            "{plan:?}: {:?}",
            endpoints(&claimed)
        );
        assert!(claimed.iter().all(|c| c.attempt == 2), "{plan:?}");
        let leases: Vec<Lease> = claimed.iter().map(Claimed::lease).collect();
        store.release(&leases, Release::Now).await.unwrap();
    }
    // A quarter ahead of the first attempts, the rest after them: b's retry in either part.
    let plan = ClaimPlan {
        max: 8,
        retries_ahead: 2,
        retries: 8,
        first_attempts: true,
    };
    let claimed = store.claim_due(plan, &[], 60_000).await.unwrap();
    assert_eq!(claimed.len(), 8);
    assert!(endpoints(&claimed).contains(&"ep_b"));
    // ep_b busy: a's endpoints share the places.
    let claimed = store
        .claim_due(ClaimPlan::retries(8), &["ep_b".into()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        endpoints(&claimed),
        vec!["ep_a1", "ep_a1", "ep_a2", "ep_a2", "ep_a3", "ep_a3", "ep_a4", "ep_a4"]
    );
}

async fn a_fair_drain_of_retries_claims_every_delivery_once(backend: Backend) {
    let (_db, store) = open_with_retries(backend).await;
    let mut seen = HashSet::new();
    let plan = ClaimPlan {
        max: 7,
        retries_ahead: 2,
        retries: 7,
        first_attempts: true,
    };
    loop {
        let claimed = store.claim_due(plan, &[], 60_000).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        assert!(claimed.len() <= 7);
        for c in &claimed {
            assert!(
                seen.insert(c.delivery_id),
                "claimed twice: {}",
                c.delivery_id
            );
        }
    }
    assert_eq!(seen.len(), 121);
}

/// Outbox rows of `tenant` (NULL: provider-wide) numbered `ids`, for `endpoint` when given,
/// in one transaction.
async fn outbox_of(
    db: &TestDb,
    prefix: &str,
    ids: std::ops::Range<usize>,
    tenant: Option<&str>,
    endpoint: Option<&str>,
) {
    let quoted = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("'{v}'"));
    let values: Vec<String> = ids
        .map(|i| {
            format!(
                "('{prefix}{i}', 'purchase', '{{}}', {}, {})",
                quoted(tenant),
                quoted(endpoint)
            )
        })
        .collect();
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, tenant_id, endpoint_id) VALUES {}",
        values.join(", ")
    ))
    .await;
}

/// Tenant `a` committed a backlog of 600 outbox rows; then tenants `b` and the provider-wide
/// one a row each, and an ordered endpoint of `c` two. A read of 100 rows in `seq` order
/// finds the backlog and takes the fresh rows too, but not the ordered endpoint's (they wait
/// for the read in order); reading on, every row becomes exactly one delivery.
async fn a_backlog_in_the_outbox_does_not_hold_up_another_tenants_rows(backend: Backend) {
    let (db, store) = open(backend).await;
    for (id, t) in [("ep_a", Some("a")), ("ep_b", Some("b")), ("ep_p", None)] {
        store.insert_endpoint(&owned(id, t)).await.unwrap();
    }
    let ordered = Endpoint {
        ordered: true,
        ..owned("ep_c", Some("c"))
    };
    store.insert_endpoint(&ordered).await.unwrap();
    outbox_of(&db, "a-", 0..600, Some("a"), None).await;
    outbox_of(&db, "c-", 0..2, Some("c"), Some("ep_c")).await;
    outbox_of(&db, "b-", 0..1, Some("b"), None).await;
    outbox_of(&db, "p-", 0..1, None, None).await;

    assert!(store.ingest_outbox(100, &limits()).await.unwrap() > 100);
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 1000)
        .await
        .unwrap();
    let of = |ep: &str| all.iter().filter(|d| d.endpoint_id == ep).count();
    assert_eq!(of("ep_b"), 1, "b's fresh row is read with the backlog");
    assert_eq!(of("ep_p"), 1, "so is the provider-wide one");
    assert_eq!(
        of("ep_c"),
        0,
        "the ordered endpoint's rows wait for the read in order"
    );
    assert!(of("ep_a") >= 100, "the backlog's first rows, in order");
    let a: Vec<i64> = all
        .iter()
        .filter(|d| d.endpoint_id == "ep_a")
        .map(|d| d.event_id.as_str()[2..].parse().unwrap())
        .collect();
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..a.len() as i64).collect::<Vec<_>>(),
        "a prefix of a's rows"
    );

    while store.ingest_outbox(100, &limits()).await.unwrap() > 0 {}
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 604, "every row once");
    let events: std::collections::HashSet<&str> = all.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(events.len(), 604);
    let c: Vec<&str> = all
        .iter()
        .rev()
        .filter(|d| d.endpoint_id == "ep_c")
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(c, ["c-0", "c-1"], "the ordered endpoint's in outbox order");
}
