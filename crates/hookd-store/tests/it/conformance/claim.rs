//! Claims, releases and the rescue of expired leases.

use super::*;

hookd_testkit::each_backend!(
    claim_leases_and_completion_is_fenced,
    expired_leases_are_rescued,
    release_undoes_the_claim,
    concurrent_claims_never_overlap,
    claims_by_kind_and_skip_busy_endpoints,
    a_claim_round_shares_between_retries_and_first_attempts,
    a_release_after_reenabling_is_due,
);

async fn claim_leases_and_completion_is_fenced(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;

    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (1, Trigger::Auto, 1)
    );
    assert_eq!(c.payload, r#"{"orderId":"o-1","amount":9900}"#);
    assert_eq!(c.endpoint.id, "ep_1");
    assert_eq!(one_delivery(&store).await.state, DeliveryState::InFlight);
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "leased rows are not claimable"
    );

    let mut stale = succeeded(c);
    stale.lease_token = "not-the-lease".into();
    assert_eq!(store.complete(&[stale]).await.unwrap(), vec![false]);
    assert_eq!(store.complete(&[succeeded(c)]).await.unwrap(), vec![true]);
    assert_eq!(
        store.complete(&[succeeded(c)]).await.unwrap(),
        vec![false],
        "only once"
    );

    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Succeeded);
    assert_eq!(
        (d.attempts, d.last_status_code, d.next_attempt_at),
        (1, Some(200), None)
    );
    assert!(d.finished_at.is_some());
    let log = store.attempts(d.id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].attempt, log[0].outcome), (1, Outcome::Success));
    assert_eq!(log[0].response_body.as_deref(), Some("ok"));
}

async fn expired_leases_are_rescued(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    let lost = store.claim(1, 1).await.unwrap().remove(0);
    wait_until(Duration::from_secs(5), "the lease to be rescued", || {
        let store = store.clone();
        async move { (store.rescue_expired().await.unwrap() == 1).then_some(()) }
    })
    .await;
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));
    let log = store.attempts(d.id).await.unwrap();
    assert_eq!((log[0].attempt, log[0].outcome), (1, Outcome::Lost));

    let fresh = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(fresh.attempt, 2);
    assert_eq!(
        store.complete(&[succeeded(&lost)]).await.unwrap(),
        vec![false],
        "stale worker"
    );
    assert_eq!(
        store.complete(&[succeeded(&fresh)]).await.unwrap(),
        vec![true]
    );
    assert_eq!(store.rescue_expired().await.unwrap(), 0);
}

async fn release_undoes_the_claim(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    let lease = |c: &Claimed| Lease {
        delivery_id: c.delivery_id,
        token: c.lease_token.clone(),
    };

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(store.release(&[lease(&c)], Release::Now).await.unwrap(), 1);
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
    assert_eq!(
        store.release(&[lease(&c)], Release::Now).await.unwrap(),
        0,
        "fenced"
    );

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.auto_attempts),
        (1, 1),
        "the release undid the count"
    );
    // Parking is for an endpoint that is disabled (a worker finds it so after a claim).
    let ep = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    store
        .update_endpoint(&Endpoint {
            enabled: false,
            ..ep.clone()
        })
        .await
        .unwrap();
    store.release(&[lease(&c)], Release::Park).await.unwrap();
    assert_eq!(one_delivery(&store).await.next_attempt_at, None);
    assert!(store.claim(1, 60_000).await.unwrap().is_empty(), "parked");

    // A resend asked for while the claim is being parked still goes, at once.
    store.resend(d.id).await.unwrap();
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.resend(d.id).await.unwrap();
    store.release(&[lease(&c)], Release::Park).await.unwrap();
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(c.trigger, Trigger::Manual);
    store
        .release(&[lease(&c)], Release::Fail("endpoint deleted".into()))
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 0));
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
}

async fn concurrent_claims_never_overlap(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..200, "x").await;
    // Four claimers, each with its own connection pool, as four hookd processes would be.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let other = connect(&db.url).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = other.claim(7, 60_000).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.delivery_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "a delivery was claimed twice");
}

async fn claims_by_kind_and_skip_busy_endpoints(backend: Backend) {
    let (_db, store) = open(backend).await;
    add_endpoint(&store, "ep_a", &["*"]).await;
    add_endpoint(&store, "ep_b", &["*"]).await;
    enqueue(&store, "old", "x").await;
    // "old" fails once on both endpoints: two retries due now.
    let first = store
        .claim_due(ClaimPlan::first_attempts(10), &[], 60_000)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let retry_now: Vec<Completion> = first
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::RetryIn(0)))
        .collect();
    store.complete(&retry_now).await.unwrap();
    enqueue(&store, "new", "x").await;

    let fresh = store
        .claim_due(ClaimPlan::first_attempts(10), &["ep_a".into()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        fresh
            .iter()
            .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
            .collect::<Vec<_>>(),
        [("new", "ep_b")],
        "first attempts only, ep_a skipped"
    );
    let retries = store
        .claim_due(ClaimPlan::retries(10), &["ep_b".into()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        retries
            .iter()
            .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("old", "ep_a", 2)]
    );
    // `claim` takes the rest, of both kinds.
    let rest = store.claim(10, 60_000).await.unwrap();
    let mut rest: Vec<_> = rest
        .iter()
        .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
        .collect();
    rest.sort();
    assert_eq!(rest, [("new", "ep_a"), ("old", "ep_b")]);
}

async fn a_claim_round_shares_between_retries_and_first_attempts(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    for i in 0..6 {
        store
            .enqueue_event(&event(Some(&format!("r{i}")), "x"), &limits())
            .await
            .unwrap();
    }
    let first = store.claim(10, 60_000).await.unwrap();
    let retry_now: Vec<Completion> = first
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::RetryIn(0)))
        .collect();
    store.complete(&retry_now).await.unwrap();
    for i in 0..6 {
        store
            .enqueue_event(&event(Some(&format!("n{i}")), "x"), &limits())
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let mut round = |claimed: Vec<Claimed>| {
        for c in &claimed {
            assert!(seen.insert(c.delivery_id), "{} claimed twice", c.event_id);
        }
        let retries = claimed.iter().filter(|c| c.attempt > 1).count();
        (retries, claimed.len() - retries)
    };
    let plan = |max, retries_ahead, retries| ClaimPlan {
        max,
        retries_ahead,
        retries,
        first_attempts: true,
    };

    // One retry ahead, then first attempts fill the round.
    let claimed = store.claim_due(plan(4, 1, 10), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (1, 3));
    // Two retries ahead, the three first attempts left, then retries up to four in all:
    // the ones after those ahead, not those again.
    let claimed = store.claim_due(plan(10, 2, 4), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (4, 3));
    // No room for retries: the last one waits.
    let claimed = store.claim_due(plan(10, 1, 0), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (0, 0));
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(round(claimed), (1, 0));
}

async fn a_release_after_reenabling_is_due(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ep = add_endpoint(&store, "ep_1", &["*"]).await;
    enqueue(&store, "e1", "x").await;
    // Claimed while the endpoint is disabled, enabled again before the worker parks it.
    store
        .update_endpoint(&Endpoint {
            enabled: false,
            ..ep.clone()
        })
        .await
        .unwrap();
    store.resend(one_delivery(&store).await.id).await.unwrap(); // due, manual
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.update_endpoint(&ep).await.unwrap();
    let lease = Lease {
        delivery_id: c.delivery_id,
        token: c.lease_token.clone(),
    };
    store.release(&[lease], Release::Park).await.unwrap();
    assert!(
        one_delivery(&store).await.next_attempt_at.is_some(),
        "parked on an enabled endpoint"
    );
    assert_eq!(store.claim(1, 60_000).await.unwrap().len(), 1);
}
