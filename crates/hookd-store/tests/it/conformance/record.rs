//! Attempt results: fenced by the lease, recorded in batches.

use super::*;

hookd_testkit::each_backend!(
    retry_reschedules_and_final_failure,
    a_batch_of_results_is_recorded_row_by_row,
    batches_larger_than_one_statement_are_written_whole,
    results_wait_for_another_writer,
);

async fn retry_reschedules_and_final_failure(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    let before = store.now_ms().await.unwrap();
    store
        .complete(&[completion(
            &c,
            Outcome::HttpError,
            Some(500),
            Next::RetryIn(60_000),
        )])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.last_status_code, Some(500));
    assert_eq!(d.last_error.as_deref(), Some("http_error"));
    let due = d.next_attempt_at.unwrap();
    assert!(
        due >= before + 60_000 && due < before + 70_000,
        "{due} vs {before}"
    );
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "not due yet"
    );
    let wait = store.next_due_in_ms().await.unwrap().unwrap();
    assert!(wait > 50_000 && wait <= 60_000, "{wait}");

    // A short retry becomes claimable once due.
    let c = {
        store.resend(d.id).await.unwrap(); // due now, manual
        store.claim(1, 60_000).await.unwrap().remove(0)
    };
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (2, Trigger::Manual, 1)
    );
    store
        .complete(&[completion(&c, Outcome::Timeout, None, Next::RetryIn(20))])
        .await
        .unwrap();
    let c = wait_until(Duration::from_secs(5), "the retry to come due", || {
        let store = store.clone();
        async move { store.claim(1, 60_000).await.unwrap().pop() }
    })
    .await;
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (3, Trigger::Auto, 2)
    );
    store
        .complete(&[completion(&c, Outcome::NetworkError, None, Next::Failed)])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(
        (d.state, d.attempts, d.next_attempt_at),
        (DeliveryState::Failed, 3, None)
    );
    let log = store.attempts(d.id).await.unwrap();
    let summary: Vec<_> = log
        .iter()
        .map(|a| (a.attempt, a.trigger, a.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Trigger::Auto, Outcome::HttpError),
            (2, Trigger::Manual, Outcome::Timeout),
            (3, Trigger::Auto, Outcome::NetworkError)
        ]
    );
}

/// One statement records a whole batch, yet each result stands alone: its own fence, its
/// own next state, its own attempt row; a stale or repeated one changes nothing.
async fn a_batch_of_results_is_recorded_row_by_row(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..4, "purchase").await;
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let ok = succeeded(&claimed[0]);
    let mut retry = completion(
        &claimed[1],
        Outcome::HttpError,
        Some(503),
        Next::RetryIn(60_000),
    );
    retry.record.error = Some("HTTP 503 Service Unavailable".into());
    retry.record.response_body = Some("busy, it's \"quoted\" \u{e9}".into());
    let failed = completion(&claimed[2], Outcome::Timeout, None, Next::Failed);
    let mut stale = succeeded(&claimed[3]);
    stale.lease_token = "not-the-lease".into();
    let again = succeeded(&claimed[0]);
    let recorded = store
        .complete(&[ok, retry, failed, stale, again])
        .await
        .unwrap();
    assert_eq!(recorded, vec![true, true, true, false, false]);

    let by_id = |id: i64| {
        let store = store.clone();
        async move { store.delivery(id).await.unwrap().unwrap() }
    };
    let d = by_id(claimed[0].delivery_id).await;
    assert_eq!(
        (d.state, d.last_status_code),
        (DeliveryState::Succeeded, Some(200))
    );
    assert!(d.finished_at.is_some() && d.next_attempt_at.is_none());
    let d = by_id(claimed[1].delivery_id).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(
        d.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    let due_in = d.next_attempt_at.unwrap() - store.now_ms().await.unwrap();
    assert!((50_000..=60_000).contains(&due_in), "due in {due_in} ms");
    let d = by_id(claimed[2].delivery_id).await;
    assert_eq!(
        (d.state, d.last_error.as_deref()),
        (DeliveryState::Failed, Some("timeout"))
    );
    assert_eq!(
        by_id(claimed[3].delivery_id).await.state,
        DeliveryState::InFlight
    );

    let log = store.attempts(claimed[0].delivery_id).await.unwrap();
    assert_eq!(log.len(), 1, "recorded once, not twice");
    let log = store.attempts(claimed[1].delivery_id).await.unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    assert_eq!(
        (
            a.attempt,
            a.trigger,
            a.started_at,
            a.duration_ms,
            a.status_code,
            a.outcome
        ),
        (1, Trigger::Auto, 1, 5, Some(503), Outcome::HttpError)
    );
    assert_eq!(
        a.response_body.as_deref(),
        Some("busy, it's \"quoted\" \u{e9}")
    );
    assert!(store
        .attempts(claimed[3].delivery_id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.complete(&[]).await.unwrap(), Vec::<bool>::new());
}

/// A batch larger than one statement takes (SQLite writes at most 512 rows per statement)
/// is written whole and in order: 700 events to two endpoints, then 600 results at once,
/// one of them stale, recorded row by row.
async fn batches_larger_than_one_statement_are_written_whole(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["*"]).await;
    let mut values: Vec<String> = (0..700)
        .map(|i| format!("('e{i}', 'order.paid', '{{\"i\":{i}}}')"))
        .collect();
    values.push("('e3', 'order.paid', '{\"again\":true}')".into());
    let (ingested, all) = ingest_outbox_rows(&db, &store, &values).await;
    assert_eq!(ingested, 701);
    assert_eq!(all.len(), 1400, "700 events to each of two endpoints");
    for ep in ["ep_1", "ep_2"] {
        let order: Vec<String> = all
            .iter()
            .filter(|d| d.endpoint_id == ep)
            .map(|d| d.event_id.to_string())
            .collect();
        let expected: Vec<String> = (0..700).map(|i| format!("e{i}")).collect();
        assert_eq!(order, expected, "{ep}: ids follow arrival order");
    }
    assert_eq!(
        store.event(&"e699".into()).await.unwrap().unwrap().payload,
        "{\"i\":699}"
    );

    let claimed = store
        .claim_due(ClaimPlan::first_attempts(600), &[], 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 600);
    let mut batch: Vec<Completion> = claimed.iter().map(succeeded).collect();
    batch[550].lease_token = "not-the-lease".into();
    let recorded = store.complete(&batch).await.unwrap();
    let expected: Vec<bool> = (0..600).map(|i| i != 550).collect();
    assert_eq!(recorded, expected);
    let done = store
        .deliveries(
            &DeliveryFilter {
                state: Some(DeliveryState::Succeeded),
                ..Default::default()
            },
            None,
            2000,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 599);
    for c in [&claimed[0], &claimed[511], &claimed[512], &claimed[599]] {
        let attempts = store.attempts(c.delivery_id).await.unwrap();
        assert_eq!(attempts.len(), 1, "delivery {}", c.delivery_id);
        assert_eq!(attempts[0].outcome, Outcome::Success);
    }
    assert!(store
        .attempts(claimed[550].delivery_id)
        .await
        .unwrap()
        .is_empty());
    let stale = store
        .delivery(claimed[550].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stale.state,
        DeliveryState::InFlight,
        "its lease still holds"
    );
}

/// Another process holds the write lock (a producer's long transaction): a batch of results
/// waits for it, within the busy timeout, instead of failing, and is then recorded.
async fn results_wait_for_another_writer(backend: Backend) {
    use sqlx::Connection;
    let (db, store) = open_with_event(backend).await;
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);

    enum Locker {
        Sqlite(sqlx::SqliteConnection),
        Postgres(sqlx::PgConnection),
    }
    let locker = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Locker::Sqlite(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            // Conflicts with every row write, not with reads.
            sqlx::query("LOCK TABLE hookd_deliveries IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Locker::Postgres(conn)
        }
    };

    let writing = tokio::spawn({
        let store = store.clone();
        let done = succeeded(&claimed[0]);
        async move { store.complete(&[done]).await }
    });
    match backend {
        // SQLite shows no one who waits for a lock. Failing fast (SQLITE_BUSY) would end
        // the task within this time; waiting does not.
        Backend::Sqlite => tokio::time::sleep(Duration::from_millis(300)).await,
        // PostgreSQL does: wait until the batch's lock request queues behind the locker's.
        Backend::Postgres => {
            let watcher = sqlx::PgPool::connect(&db.url).await.unwrap();
            wait_until(
                Duration::from_secs(10),
                "a lock request on the deliveries",
                || {
                    let watcher = watcher.clone();
                    async move {
                        let waiting: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM pg_locks \
                         WHERE NOT granted AND relation = 'hookd_deliveries'::regclass",
                        )
                        .fetch_one(&watcher)
                        .await
                        .unwrap();
                        (waiting > 0).then_some(())
                    }
                },
            )
            .await;
            watcher.close().await;
        }
    }
    assert!(!writing.is_finished(), "the results wait for the lock");
    match locker {
        Locker::Sqlite(mut conn) => sqlx::query("COMMIT").execute(&mut conn).await.map(drop),
        Locker::Postgres(mut conn) => sqlx::query("COMMIT").execute(&mut conn).await.map(drop),
    }
    .unwrap();
    assert_eq!(writing.await.unwrap().unwrap(), vec![true]);
    assert_eq!(one_delivery(&store).await.state, DeliveryState::Succeeded);
}
