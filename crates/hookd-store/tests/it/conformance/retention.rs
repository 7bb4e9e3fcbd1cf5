//! Purging old finished deliveries and events.
//!
//! How old rows go differs by layout: SQLite deletes them one by one; PostgreSQL keeps its
//! history in a partition per day of the delivery's id and drops a day whole once all of
//! it is past the cutoff. So "a day old" here means, on PostgreSQL, moved into yesterday's
//! range of ids as well ([`age_by_a_day`]), and the cases count what a purge removes in
//! all, calling it again while it says there may be more.

use super::*;

hookd_testkit::each_backend!(retention_purges_only_old_finished,);

const DAY_MS: i64 = 86_400_000;

/// Makes finished deliveries `ids` and every event a day older; returns the deliveries'
/// ids as they are now (on PostgreSQL a day's ids lower: the ids of a day are a range, its
/// partition's).
async fn age_by_a_day(db: &TestDb, ids: &[i64]) -> Vec<i64> {
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let shift = match db.backend {
        Backend::Sqlite => 0,
        Backend::Postgres => 1_i64 << 32,
    };
    db.exec(&format!(
        "UPDATE hookd_attempts SET delivery_id = delivery_id - {shift} WHERE delivery_id IN ({list});
         UPDATE hookd_deliveries SET finished_at = finished_at - {DAY_MS}, id = id - {shift}
             WHERE id IN ({list});
         UPDATE hookd_events SET created_at = created_at - {DAY_MS};"
    ))
    .await;
    ids.iter().map(|id| id - shift).collect()
}

/// Purges until a pass deletes less than `batch` of each; returns the total, and checks
/// that no pass deleted more than `batch` events.
async fn purge_all(store: &Arc<dyn Store>, cutoff: i64, batch: u32) -> Purged {
    let mut total = Purged::default();
    for _ in 0..20 {
        let pass = store.purge_finished(cutoff, batch).await.unwrap();
        assert!(
            pass.events <= batch as u64,
            "bounded by the batch: {pass:?}"
        );
        total.deliveries += pass.deliveries;
        total.events += pass.events;
        if pass.deliveries < batch as u64 && pass.events < batch as u64 {
            return total;
        }
    }
    panic!("retention did not finish in 20 passes");
}

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
    let old = age_by_a_day(&db, &[claimed[0].delivery_id, claimed[2].delivery_id]).await;
    assert_eq!(store.attempts(old[0]).await.unwrap().len(), 1);
    let cutoff = store.now_ms().await.unwrap() - 3_600_000;

    assert_eq!(
        purge_all(&store, cutoff, 1).await,
        Purged {
            deliveries: 2,
            events: 2
        }
    );
    assert_eq!(
        store.purge_finished(cutoff, 10).await.unwrap(),
        Purged::default(),
        "nothing more to purge"
    );

    let left = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<i64> = left.iter().map(|d| d.id).collect();
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
