//! The delivery log and the backlog figures.

use super::*;

hookd_testkit::each_backend!(log_filters_and_pages, backlog_figures,);

async fn log_filters_and_pages(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["refund"]).await;
    for i in 0..7 {
        let kind = if i % 2 == 0 { "purchase" } else { "refund" };
        store
            .enqueue_event(&event(Some(&format!("e{i}")), kind), &limits())
            .await
            .unwrap();
    }
    // 7 to ep_1, 3 refunds to ep_2.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .deliveries(&DeliveryFilter::default(), cursor, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|d| d.id);
        seen.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(seen.len(), 10);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seen:?}"
    );

    let count = |f: DeliveryFilter| {
        let store = store.clone();
        async move { store.deliveries(&f, None, 100).await.unwrap().len() }
    };
    assert_eq!(
        count(DeliveryFilter {
            endpoint_id: Some("ep_2".into()),
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(DeliveryFilter {
            event_type: Some("purchase".into()),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(DeliveryFilter {
            event_id: Some("e1".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..Default::default()
        })
        .await,
        0
    );
    let now = store.now_ms().await.unwrap();
    assert_eq!(
        count(DeliveryFilter {
            until: Some(now + 1),
            ..Default::default()
        })
        .await,
        10
    );
    assert_eq!(
        count(DeliveryFilter {
            since: Some(now + 60_000),
            ..Default::default()
        })
        .await,
        0
    );
}

async fn backlog_figures(backend: Backend) {
    let (_db, store) = open(backend).await;
    assert_eq!(store.backlog().await.unwrap(), Backlog::default());
    add_endpoint(&store, "ep_1", &["*"]).await;
    enqueue_numbered(&store, 0..3, "x").await;
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    let b = wait_until(Duration::from_secs(5), "the oldest due delivery to age", || {
        let store = store.clone();
        async move { Some(store.backlog().await.unwrap()).filter(|b| b.oldest_due_age_ms >= 20) }
    })
    .await;
    assert_eq!(b.unfinished, 3);
    store.complete(&[succeeded(&c)]).await.unwrap();
    assert_eq!(store.backlog().await.unwrap().unfinished, 2);

    // Rows still in the outbox are waiting too: counted, and their age is their insert's.
    let (db, store) = open(backend).await;
    db.exec("INSERT INTO hookd_outbox (event_type, payload) VALUES ('x', '{}'), ('x', '{}')")
        .await;
    let b = wait_until(Duration::from_secs(5), "the oldest outbox row to age", || {
        let store = store.clone();
        async move { Some(store.backlog().await.unwrap()).filter(|b| b.oldest_due_age_ms >= 20) }
    })
    .await;
    assert_eq!((b.unfinished, b.outbox), (2, 2));
    assert!(b.oldest_due_age_ms < 60_000, "{b:?}");
}
