//! Endpoints: writes and reads, versions, disabling and deleting, health.

use super::*;

hookd_testkit::each_backend!(
    endpoints_round_trip,
    disable_parks_and_enable_resumes,
    delete_fails_pending,
    endpoint_health_disables_the_failing,
    endpoint_writes_compare_versions,
    concurrent_writes_from_one_version_apply_once,
);

async fn endpoints_round_trip(backend: Backend) {
    let (_db, store) = open(backend).await;
    let mut ep = endpoint("ep_a", &["purchase", "payment.*"]);
    ep.retry_schedule_ms = Some(vec![10, 20]);
    ep.timeout_ms = Some(2500);
    ep.bearer_token = Some("tok".into());
    ep.headers.insert("x-team".into(), "billing".into());
    let stored = store.insert_endpoint(&ep).await.unwrap();
    assert!(
        stored.created_at > 1_600_000_000_000,
        "database clock in ms"
    );
    assert_eq!(
        Endpoint {
            created_at: 0,
            updated_at: 0,
            ..stored.clone()
        },
        Endpoint {
            version: 1, // a new endpoint's
            ..ep.clone()
        }
    );
    assert_eq!(
        store.endpoint(&"ep_a".into()).await.unwrap().unwrap(),
        stored
    );
    assert!(store.endpoint(&"nope".into()).await.unwrap().is_none());

    add_endpoint(&store, "ep_b", &["*"]).await;
    let page1 = store.endpoints(None, 1).await.unwrap();
    let page2 = store
        .endpoints(Some(page1[0].id.as_str()), 10)
        .await
        .unwrap();
    assert_eq!(
        [page1, page2]
            .concat()
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["ep_a", "ep_b"]
    );

    let mut changed = stored.clone();
    changed.url = "https://example.com/new".into();
    changed.retry_schedule_ms = Some(vec![]);
    let updated = store.update_endpoint(&changed).await.unwrap().unwrap();
    assert_eq!(updated.url, "https://example.com/new");
    assert_eq!(updated.retry_schedule_ms, Some(vec![]));
    assert!(store
        .update_endpoint(&endpoint("ghost", &["*"]))
        .await
        .unwrap()
        .is_none());

    assert!(store.delete_endpoint(&"ep_a".into()).await.unwrap());
    assert!(!store.delete_endpoint(&"ep_a".into()).await.unwrap());
    assert!(store.endpoint(&"ep_a".into()).await.unwrap().is_none());
    assert_eq!(store.endpoints(None, 10).await.unwrap().len(), 1);
}

async fn disable_parks_and_enable_resumes(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ep = add_endpoint(&store, "ep_1", &["*"]).await;
    enqueue(&store, "e1", "purchase").await;
    let off = Endpoint {
        enabled: false,
        disabled_reason: Some("operator".into()),
        ..ep.clone()
    };
    store.update_endpoint(&off).await.unwrap().unwrap();
    assert_eq!(one_delivery(&store).await.next_attempt_at, None);
    assert!(store.claim(10, 60_000).await.unwrap().is_empty());

    // Fan-out skips a disabled endpoint; targeting it creates a parked delivery.
    assert_eq!(enqueue(&store, "e2", "x").await.deliveries, 0);
    let targeted = NewEvent {
        endpoint_id: Some("ep_1".into()),
        ..event(Some("e3"), "x")
    };
    assert_eq!(
        store
            .enqueue_event(&targeted, &limits())
            .await
            .unwrap()
            .deliveries,
        1
    );
    assert!(store.claim(10, 60_000).await.unwrap().is_empty());

    store.update_endpoint(&ep).await.unwrap().unwrap();
    assert_eq!(store.claim(10, 60_000).await.unwrap().len(), 2);
}

async fn delete_fails_pending(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    assert!(store.delete_endpoint(&"ep_1".into()).await.unwrap());
    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
    assert_eq!(store.attempts(d.id).await.unwrap().len(), 0);
    assert_eq!(enqueue(&store, "e2", "x").await.deliveries, 0);
}

async fn endpoint_health_disables_the_failing(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["*"]).await;
    enqueue(&store, "e1", "x").await;
    let fail = |id: &str| vec![(EndpointId::from(id), false)];
    assert!(store
        .record_endpoint_health(&fail("ep_1"), Some(60_000), "failing")
        .await
        .unwrap()
        .is_empty());
    let ep = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    assert!(ep.failing_since.is_some() && ep.enabled);
    // Editing an enabled endpoint does not restart its failing period.
    let edited = store
        .update_endpoint(&Endpoint {
            description: Some("edited".into()),
            ..ep.clone()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.failing_since, ep.failing_since);
    // A success ends the failing period.
    store
        .record_endpoint_health(&[("ep_1".into(), true)], Some(60_000), "failing")
        .await
        .unwrap();
    let ep = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    assert!(ep.failing_since.is_none() && ep.last_success_at.is_some());
    // Failing for longer than the threshold (0 ms here) disables it and parks its deliveries.
    store
        .record_endpoint_health(&fail("ep_1"), Some(60_000), "failing")
        .await
        .unwrap();
    let disabled = store
        .record_endpoint_health(&fail("ep_1"), Some(0), "failing for 0s")
        .await
        .unwrap();
    assert_eq!(disabled, ["ep_1"]);
    let ep = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    assert_eq!(
        (ep.enabled, ep.disabled_reason.as_deref()),
        (false, Some("failing for 0s"))
    );
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.endpoint.id.as_str())
            .collect::<Vec<_>>(),
        ["ep_2"]
    );
    assert!(
        store
            .record_endpoint_health(&fail("ep_1"), Some(0), "again")
            .await
            .unwrap()
            .is_empty(),
        "only once"
    );
    // disable_endpoint (410 Gone) parks too, once.
    assert!(store
        .disable_endpoint(&"ep_2".into(), "gone")
        .await
        .unwrap());
    assert!(!store
        .disable_endpoint(&"ep_2".into(), "gone")
        .await
        .unwrap());
    assert!(!store
        .disable_endpoint(&"nope".into(), "gone")
        .await
        .unwrap());
    // Enabling resumes the parked delivery, and clears the failing period.
    let ep = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    let back = store
        .update_endpoint(&Endpoint {
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            ..ep
        })
        .await
        .unwrap()
        .unwrap();
    assert!(back.failing_since.is_none());
    assert_eq!(store.claim(10, 60_000).await.unwrap().len(), 1);
}

/// An endpoint's version counts the changes of its settings: every update, a disabling by
/// hookd and a delete add one; health figures do not. A write given a version happens only
/// while the endpoint still has it.
async fn endpoint_writes_compare_versions(backend: Backend) {
    let (_db, store) = open(backend).await;
    let stored = add_endpoint(&store, "ep_v", &["*"]).await;
    assert_eq!(stored.version, 1);

    let mut changed = stored.clone();
    changed.description = Some("first".into());
    let Versioned::Done(v2) = store.update_endpoint_if(&changed, Some(1)).await.unwrap() else {
        panic!("version 1 is current");
    };
    assert_eq!((v2.version, v2.description.as_deref()), (2, Some("first")));

    // A second write from version 1 is refused and changes nothing.
    let mut stale = stored.clone();
    stale.url = "https://example.com/stale".into();
    assert_eq!(
        store.update_endpoint_if(&stale, Some(1)).await.unwrap(),
        Versioned::Changed
    );
    assert_eq!(
        store
            .delete_endpoint_if(&"ep_v".into(), Some(1))
            .await
            .unwrap(),
        Versioned::Changed
    );
    let now = store.endpoint(&"ep_v".into()).await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.url.as_str()),
        (2, "http://127.0.0.1:9/ep_v")
    );

    // Without a version: today's unconditional write, still counted.
    let Versioned::Done(v3) = store.update_endpoint_if(&stale, None).await.unwrap() else {
        panic!("no condition");
    };
    assert_eq!(
        (v3.version, v3.url.as_str()),
        (3, "https://example.com/stale")
    );
    assert_eq!(
        store.update_endpoint(&v3).await.unwrap().unwrap().version,
        4
    );

    // Health figures are not settings; hookd disabling the endpoint changes one.
    store
        .record_endpoint_health(&[("ep_v".into(), true)], None, "failing")
        .await
        .unwrap();
    store
        .record_endpoint_health(&[("ep_v".into(), false)], None, "failing")
        .await
        .unwrap();
    let now = store.endpoint(&"ep_v".into()).await.unwrap().unwrap();
    assert!(now.failing_since.is_some());
    assert_eq!(now.version, 4);
    assert!(store
        .disable_endpoint(&"ep_v".into(), "gone")
        .await
        .unwrap());
    assert_eq!(version_of(&store, "ep_v").await, 5);
    store
        .record_endpoint_health(&[("ep_v".into(), false)], Some(0), "failing too long")
        .await
        .unwrap();
    assert_eq!(
        version_of(&store, "ep_v").await,
        5,
        "already disabled: nothing changed"
    );
    let mut enabled = store.endpoint(&"ep_v".into()).await.unwrap().unwrap();
    enabled.enabled = true;
    enabled.disabled_reason = None;
    enabled.disabled_at = None;
    store.update_endpoint_if(&enabled, Some(5)).await.unwrap();
    let disabled = store
        .record_endpoint_health(&[("ep_v".into(), false)], Some(0), "failing too long")
        .await
        .unwrap();
    assert_eq!(disabled, ["ep_v"]);
    assert_eq!(version_of(&store, "ep_v").await, 7);

    // Deleting from the current version; then nothing is left to write.
    assert_eq!(
        store
            .delete_endpoint_if(&"ep_v".into(), Some(7))
            .await
            .unwrap(),
        Versioned::Done(())
    );
    assert_eq!(
        store
            .delete_endpoint_if(&"ep_v".into(), Some(8))
            .await
            .unwrap(),
        Versioned::NotFound
    );
    assert_eq!(
        store.update_endpoint_if(&enabled, Some(8)).await.unwrap(),
        Versioned::NotFound
    );
    assert_eq!(
        store
            .update_endpoint_if(&endpoint("ghost", &["*"]), None)
            .await
            .unwrap(),
        Versioned::NotFound
    );
    assert!(!store.delete_endpoint(&"ep_v".into()).await.unwrap());
}

/// Many writers from the same version at once: exactly one of them changes the endpoint.
async fn concurrent_writes_from_one_version_apply_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    let stored = add_endpoint(&store, "ep_c", &["*"]).await;
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let mut mine = stored.clone();
        mine.description = Some(format!("writer {i}"));
        writers.spawn(async move {
            (
                i,
                store
                    .update_endpoint_if(&mine, Some(stored.version))
                    .await
                    .unwrap(),
            )
        });
    }
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .delete_endpoint_if(&"ep_c".into(), Some(1))
                .await
                .unwrap()
        })
    };
    let mut done = Vec::new();
    for (i, result) in writers.join_all().await {
        match result {
            Versioned::Done(e) => {
                assert_eq!(e.version, 2);
                done.push(format!("writer {i}"));
            }
            Versioned::Changed => {}
            Versioned::NotFound => panic!("writer {i}: the endpoint was there"),
        }
    }
    let deleted = deleter.await.unwrap();
    match deleted {
        Versioned::Done(()) => {
            assert!(
                done.is_empty(),
                "deleted and changed from one version: {done:?}"
            );
            assert!(store.endpoint(&"ep_c".into()).await.unwrap().is_none());
        }
        Versioned::Changed => {
            assert_eq!(done.len(), 1, "exactly one writer: {done:?}");
            let now = store.endpoint(&"ep_c".into()).await.unwrap().unwrap();
            assert_eq!(now.description.as_ref(), done.first());
            assert_eq!(now.version, 2);
        }
        Versioned::NotFound => panic!("the endpoint was there"),
    }
}

/// The version of live endpoint `id`.
async fn version_of(store: &Arc<dyn Store>, id: &str) -> i64 {
    let e = store.endpoint(&id.into()).await.unwrap();
    e.unwrap_or_else(|| panic!("{id} is live")).version
}
