//! Purging old finished deliveries and events.

use super::*;

hookd_testkit::each_backend!(retention_purges_only_old_finished,);

async fn retention_purges_only_old_finished(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..4, "x").await;
    let claimed = store.claim(3, 60_000).await.unwrap();
    store
        .complete(&[
            succeeded(&claimed[0]),
            succeeded(&claimed[1]),
            completion(&claimed[2], Outcome::HttpError, Some(500), Next::Failed),
        ])
        .await
        .unwrap();
    // Two finished deliveries and every event are a day old; one finished one is fresh,
    // one delivery is still pending.
    let old = [claimed[0].delivery_id, claimed[2].delivery_id];
    db.exec(&format!(
        "UPDATE hookd_deliveries SET finished_at = finished_at - 86400000 WHERE id IN ({}, {});
         UPDATE hookd_events SET created_at = created_at - 86400000;",
        old[0], old[1]
    ))
    .await;
    let cutoff = store.now_ms().await.unwrap() - 3_600_000;

    let first = store.purge_finished(cutoff, 1).await.unwrap();
    assert_eq!(
        first,
        Purged {
            deliveries: 1,
            events: 1
        },
        "bounded by the batch"
    );
    let second = store.purge_finished(cutoff, 1).await.unwrap();
    assert_eq!(
        second,
        Purged {
            deliveries: 1,
            events: 1
        }
    );
    assert_eq!(
        store.purge_finished(cutoff, 10).await.unwrap(),
        Purged::default()
    );

    let left = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = left.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(
        left.len(),
        2,
        "the fresh finished one and the pending one stay: {left:?}"
    );
    assert!(!ids.contains(&old[0]) && !ids.contains(&old[1]));
    assert!(
        store.attempts(old[0]).await.unwrap().is_empty(),
        "attempts go with their delivery"
    );
    assert_eq!(
        store.attempts(claimed[1].delivery_id).await.unwrap().len(),
        1
    );
    assert!(store.event(&claimed[0].event_id).await.unwrap().is_none());
    assert!(store.event(&claimed[1].event_id).await.unwrap().is_some());
}
