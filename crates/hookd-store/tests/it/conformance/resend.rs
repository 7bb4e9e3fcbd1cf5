//! Manual resends, one by one and in bulk.

use super::*;

hookd_testkit::each_backend!(
    resend_in_every_state,
    resend_jobs_work_in_batches_and_resume,
    a_bulk_resend_of_many_chunks_resends_each_match_once,
);

async fn resend_in_every_state(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    assert!(!store.resend(999_999).await.unwrap());

    // Succeeded -> one manual attempt whose failure is final.
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.complete(&[succeeded(&c)]).await.unwrap();
    let id = one_delivery(&store).await.id;
    assert!(store.resend(id).await.unwrap());
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.finished_at), (DeliveryState::Pending, None));
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.trigger, c.manual_only),
        (2, Trigger::Manual, true)
    );

    // In flight -> the running attempt finishes, then a manual one is due at once.
    assert!(store.resend(id).await.unwrap());
    assert_eq!(one_delivery(&store).await.state, DeliveryState::InFlight);
    store
        .complete(&[completion(&c, Outcome::HttpError, Some(503), Next::Failed)])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(
        d.state,
        DeliveryState::Pending,
        "the requested resend is due"
    );
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.trigger, c.manual_only),
        (3, Trigger::Manual, true)
    );
    store
        .complete(&[completion(&c, Outcome::HttpError, Some(500), Next::Failed)])
        .await
        .unwrap();
    assert_eq!(one_delivery(&store).await.state, DeliveryState::Failed);

    // Failed -> bulk resend by filter, as a job.
    let job = store
        .create_resend_job(&DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((job.matched, job.resent, job.done), (1, 0, false));
    assert_eq!(store.step_resend_jobs(10, 100).await.unwrap(), 1);
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!((c.attempt, c.trigger), (4, Trigger::Manual));
    assert_eq!(store.attempts(id).await.unwrap().len(), 3);
}

async fn resend_jobs_work_in_batches_and_resume(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..7, "x").await;
    let claimed = store.claim(7, 60_000).await.unwrap();
    let done: Vec<Completion> = claimed
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::Failed))
        .collect();
    store.complete(&done).await.unwrap();
    let failed = DeliveryFilter {
        state: Some(DeliveryState::Failed),
        ..Default::default()
    };
    let job = store.create_resend_job(&failed).await.unwrap();
    assert_eq!((job.matched, job.done), (7, false));
    // A delivery that fails after the job was created is not part of it.
    enqueue(&store, "late", "x").await;

    assert_eq!(store.step_resend_jobs(3, 100).await.unwrap(), 3);
    // Throttled while 3 manual resends are due and at most 3 may wait.
    assert_eq!(store.step_resend_jobs(3, 3).await.unwrap(), 0);
    let due: Vec<Claimed> = store.claim(10, 60_000).await.unwrap();
    assert_eq!(due.len(), 4, "3 resent + the late one");
    assert_eq!(
        due.iter().filter(|c| c.trigger == Trigger::Manual).count(),
        3
    );

    // A second store (a restarted process) continues the same job.
    let restarted = connect(&db.url).await.unwrap();
    assert_eq!(restarted.step_resend_jobs(3, 100).await.unwrap(), 3);
    assert_eq!(restarted.step_resend_jobs(3, 100).await.unwrap(), 1);
    assert_eq!(
        restarted.step_resend_jobs(3, 100).await.unwrap(),
        0,
        "nothing left"
    );
    let job = restarted.resend_job(&job.id).await.unwrap().unwrap();
    assert_eq!((job.matched, job.resent, job.done), (7, 7, true));
    assert!(job.finished_at.is_some());
    assert_eq!(job.filter, failed);
    let manual = store.claim(10, 60_000).await.unwrap();
    assert_eq!(manual.len(), 4);
    assert!(manual
        .iter()
        .all(|c| c.trigger == Trigger::Manual && c.event_id != "late"));
    // Every delivery was resent exactly once by the job.
    let mut ids: Vec<i64> = due
        .iter()
        .chain(&manual)
        .filter(|c| c.trigger == Trigger::Manual)
        .map(|c| c.delivery_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    assert!(store.resend_job("rsj_nope").await.unwrap().is_none());
    let empty = store
        .create_resend_job(&DeliveryFilter {
            event_id: Some("none".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((empty.matched, empty.done), (0, true));
}

/// A bulk resend by event type, and one by time range, over more rows than one chunk, with
/// rows that do not match in between and two processes stepping at once, and one whose two
/// matches are many windows apart: every match is resent exactly once, nothing else is
/// touched.
async fn a_bulk_resend_of_many_chunks_resends_each_match_once(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    // Between two `rare` events, 1,500 events, two in three of type `m`; each delivery
    // created one second after the one before.
    ingest_outbox_rows(&db, &store, &["('r0', 'rare', '{}')".to_string()]).await;
    let values: Vec<String> = (0..1500)
        .map(|i| {
            let t = if i % 3 == 0 { "n" } else { "m" };
            format!("('e{i}', '{t}', '{{\"i\":{i}}}')")
        })
        .collect();
    ingest_outbox_rows(&db, &store, &values).await;
    let (_, all) = ingest_outbox_rows(&db, &store, &["('r1', 'rare', '{}')".to_string()]).await;
    assert_eq!(all.len(), 1502);
    db.exec("UPDATE hookd_deliveries SET created_at = id * 1000")
        .await;
    let first_id = all[1].id;
    let other = connect(&db.url).await.unwrap();
    let run_to_the_end = |id: String| {
        let (store, other) = (store.clone(), other.clone());
        async move {
            loop {
                // Two processes step the same job at once.
                let (a, b) = tokio::join!(
                    store.step_resend_jobs(500, 100_000),
                    other.step_resend_jobs(500, 100_000)
                );
                a.unwrap();
                b.unwrap();
                let job = store.resend_job(&id).await.unwrap().unwrap();
                if job.done {
                    return job;
                }
            }
        }
    };
    let manual = |filter: &str| {
        format!("SELECT COUNT(*) FROM hookd_deliveries WHERE next_trigger = 'manual' AND {filter}")
    };

    let by_type = DeliveryFilter {
        event_type: Some("m".into()),
        ..Default::default()
    };
    let job = store.create_resend_job(&by_type).await.unwrap();
    assert_eq!((job.matched, job.done), (1000, false));
    let job = run_to_the_end(job.id).await;
    assert_eq!(job.resent, 1000, "each match resent once");
    assert_eq!(db.query_i64(&manual("event_type = 'm'")).await, 1000);
    assert_eq!(db.query_i64(&manual("event_type = 'n'")).await, 0);

    // The deliveries created in [since, until): 700 ids in the middle.
    db.exec("UPDATE hookd_deliveries SET next_trigger = 'auto'")
        .await;
    let (since, until) = ((first_id + 400) * 1000, (first_id + 1100) * 1000);
    let by_time = DeliveryFilter {
        since: Some(since),
        until: Some(until),
        ..Default::default()
    };
    let job = store.create_resend_job(&by_time).await.unwrap();
    assert_eq!(job.matched, 700);
    let job = run_to_the_end(job.id).await;
    assert_eq!(job.resent, 700);
    let inside = format!("created_at >= {since} AND created_at < {until}");
    let outside = format!("(created_at < {since} OR created_at >= {until})");
    assert_eq!(db.query_i64(&manual(&inside)).await, 700);
    assert_eq!(db.query_i64(&manual(&outside)).await, 0);

    // Batches of 2 read windows of 40 ids: the two matches are 37 windows apart.
    db.exec("UPDATE hookd_deliveries SET next_trigger = 'auto'")
        .await;
    let rare = DeliveryFilter {
        event_type: Some("rare".into()),
        ..Default::default()
    };
    let job = store.create_resend_job(&rare).await.unwrap();
    assert_eq!(job.matched, 2);
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 1);
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 1);
    let job = store.resend_job(&job.id).await.unwrap().unwrap();
    assert_eq!((job.resent, job.done), (2, true));
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 0);
    assert_eq!(db.query_i64(&manual("TRUE")).await, 2);
}
