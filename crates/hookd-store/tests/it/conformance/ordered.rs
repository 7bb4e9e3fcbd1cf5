//! Ordered endpoints: one delivery on its way at a time, in order.

use super::*;

hookd_testkit::each_backend!(
    ordered_endpoints_hold_the_next_delivery,
    the_safety_net_lets_one_go_per_idle_ordered_endpoint,
    one_batch_of_results_lets_one_held_delivery_go,
);

/// The safety net lets the oldest held delivery go of each ordered endpoint that has
/// nothing else on its way, and only those.
async fn the_safety_net_lets_one_go_per_idle_ordered_endpoint(backend: Backend) {
    let (_db, store) = open(backend).await;
    for id in ["ep_a", "ep_b", "ep_c"] {
        add_ordered_endpoint(&store, id).await;
    }
    enqueue_numbered(&store, 0..3, "x").await;
    let heads = store.claim(10, 60_000).await.unwrap();
    assert_eq!(heads.len(), 3, "one head per endpoint");
    // ep_a's and ep_b's heads finish without promoting (as when the endpoint was unordered
    // when they were claimed); ep_c's is still in flight.
    let unpromoted: Vec<Completion> = heads
        .iter()
        .filter(|c| c.endpoint.id != "ep_c")
        .map(|c| Completion {
            ordered: false,
            ..succeeded(c)
        })
        .collect();
    store.complete(&unpromoted).await.unwrap();
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "all held"
    );

    assert_eq!(store.promote_stranded().await.unwrap(), 2);
    assert_eq!(
        store.promote_stranded().await.unwrap(),
        0,
        "each has one on its way"
    );
    let mut next: Vec<(String, String)> = store
        .claim(10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.endpoint.id.to_string(), c.event_id.into()))
        .collect();
    next.sort();
    assert_eq!(
        next,
        [
            ("ep_a".to_string(), "e1".to_string()),
            ("ep_b".to_string(), "e1".to_string())
        ]
    );
}

async fn ordered_endpoints_hold_the_next_delivery(backend: Backend) {
    let (_db, store) = open(backend).await;
    add_ordered_endpoint(&store, "ep_o").await;
    add_endpoint(&store, "ep_u", &["*"]).await;
    enqueue_numbered(&store, 0..3, "x").await;
    let first = store.claim(10, 60_000).await.unwrap();
    let ordered: Vec<&Claimed> = first.iter().filter(|c| c.endpoint.id == "ep_o").collect();
    assert_eq!(first.len(), 4, "3 unordered + the ordered head");
    assert_eq!(ordered.len(), 1);
    assert_eq!(ordered[0].event_id, "e0");
    // The head fails and is retried: the next still waits.
    store
        .complete(&[completion(
            ordered[0],
            Outcome::HttpError,
            Some(500),
            Next::RetryIn(0),
        )])
        .await
        .unwrap();
    let again = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e0"]
    );
    store.complete(&[succeeded(&again[0])]).await.unwrap();
    let next = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e1"]
    );
    // A final failure lets the next go too.
    store
        .complete(&[completion(
            &next[0],
            Outcome::HttpError,
            Some(500),
            Next::Failed,
        )])
        .await
        .unwrap();
    let last = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        last.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e2"]
    );
    store.complete(&[succeeded(&last[0])]).await.unwrap();
    // A new event for an idle ordered endpoint goes at once.
    enqueue(&store, "e3", "x").await;
    let both = store.claim(10, 60_000).await.unwrap();
    assert_eq!(both.len(), 2);

    // A completion that does not promote (the endpoint was unordered when the delivery was
    // claimed) leaves the next one stranded: the safety net releases it.
    enqueue(&store, "e4", "x").await;
    let head = both.iter().find(|c| c.endpoint.id == "ep_o").unwrap();
    let mut unpromoted = succeeded(head);
    unpromoted.ordered = false;
    store.complete(&[unpromoted]).await.unwrap();
    let stranded = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        stranded.iter().filter(|c| c.endpoint.id == "ep_o").count(),
        0,
        "held"
    );
    assert_eq!(store.promote_stranded().await.unwrap(), 1);
    assert_eq!(store.promote_stranded().await.unwrap(), 0);
    let e4 = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        e4.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e4"]
    );

    // Turning ordering off lets every held delivery go.
    enqueue_numbered(&store, 5..8, "x").await;
    let ep = store.endpoint(&"ep_o".into()).await.unwrap().unwrap();
    store
        .update_endpoint(&Endpoint {
            ordered: false,
            ..ep
        })
        .await
        .unwrap();
    let released: Vec<String> = store
        .claim(20, 60_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.endpoint.id == "ep_o")
        .map(|c| c.event_id.into())
        .collect();
    assert_eq!(released, ["e5", "e6", "e7"]);
}

/// Manual resends of an ordered endpoint's finished deliveries go beside its head; when
/// their results and the head's are recorded in one batch, exactly the next held one goes.
async fn one_batch_of_results_lets_one_held_delivery_go(backend: Backend) {
    let (_db, store) = open(backend).await;
    add_ordered_endpoint(&store, "ep_o").await;
    enqueue_numbered(&store, 0..5, "x").await;
    let mut finished = Vec::new();
    for expected in ["e0", "e1"] {
        let head = store.claim(10, 60_000).await.unwrap();
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].event_id, expected);
        store.complete(&[succeeded(&head[0])]).await.unwrap();
        finished.push(head[0].delivery_id);
    }
    for id in &finished {
        assert!(store.resend(*id).await.unwrap());
    }
    let batch = store.claim(10, 60_000).await.unwrap();
    let mut events: Vec<&str> = batch.iter().map(|c| c.event_id.as_str()).collect();
    events.sort_unstable();
    assert_eq!(events, ["e0", "e1", "e2"], "two resends beside the head");
    let results: Vec<Completion> = batch.iter().map(succeeded).collect();
    assert_eq!(store.complete(&results).await.unwrap(), [true, true, true]);

    let next = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e3"],
        "one held delivery goes, the oldest"
    );
    assert_eq!(store.promote_stranded().await.unwrap(), 0, "e4 stays held");
}
