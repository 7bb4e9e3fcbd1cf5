//! PostgreSQL's history in a partition per day: where rows live, which partitions retention
//! drops whole, which it keeps, and how it finishes a drop that stopped half way.

use std::sync::Arc;

use hookd_store::*;
use hookd_testkit::{Backend, TestDb};

use crate::conformance::completion;
use crate::query_plans::explain;

const DAY_MS: i64 = 86_400_000;
const DAY_IDS: i64 = 1 << 32;

async fn open() -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(Backend::Postgres).await;
    let store = connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
        .insert_endpoint(&Endpoint {
            id: "ep_1".into(),
            url: "http://127.0.0.1:9/ep_1".into(),
            event_types: vec!["*".into()],
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            enabled: true,
            ..Endpoint::default()
        })
        .await
        .expect("endpoint");
    (db, store)
}

fn event(id: &str, event_type: &str) -> NewEvent {
    NewEvent {
        event_id: Some(id.into()),
        event_type: event_type.into(),
        payload: "{}".into(),
        endpoint_id: None,
        tenant_id: None,
        traceparent: None,
    }
}

/// `n` deliveries, claimed and recorded as succeeded; returns their ids.
async fn delivered(store: &Arc<dyn Store>, n: usize) -> Vec<i64> {
    for i in 0..n {
        store
            .enqueue_event(&event(&format!("e{i}"), "x"), &IngestLimits::default())
            .await
            .unwrap();
    }
    let claimed = store.claim(n as u32, 60_000).await.unwrap();
    assert_eq!(claimed.len(), n);
    succeed(store, &claimed).await;
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.delivery_id).collect();
    ids.sort();
    ids
}

async fn succeed(store: &Arc<dyn Store>, claimed: &[Claimed]) {
    let done: Vec<Completion> = claimed
        .iter()
        .map(|c| completion(c, Outcome::Success, Some(200), Next::Succeeded))
        .collect();
    store.complete(&done).await.unwrap();
}

async fn today(db: &TestDb) -> i64 {
    db.query_i64("SELECT hookd_now_ms() / 86400000").await
}

/// `YYYYMMDD` of `day` (days since the Unix epoch).
async fn suffix(db: &TestDb, day: i64) -> String {
    let n = db
        .query_i64(&format!(
            "SELECT to_char(to_timestamp({day} * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD')::BIGINT"
        ))
        .await;
    n.to_string()
}

async fn exists(db: &TestDb, table: &str) -> bool {
    db.query_i64(&format!(
        "SELECT COUNT(*) FROM pg_class WHERE relname = '{table}'"
    ))
    .await
        == 1
}

/// The table delivery `id` is in.
async fn table_of(db: &TestDb, id: i64) -> String {
    let oid = db
        .query_i64(&format!(
            "SELECT tableoid::oid::BIGINT FROM hookd_deliveries WHERE id = {id}"
        ))
        .await;
    let named = |name: String| async move {
        db.query_i64(&format!(
            "SELECT COALESCE(to_regclass('{name}')::oid::BIGINT, 0)"
        ))
        .await
    };
    for name in [
        "hookd_deliveries_unfinished".to_string(),
        "hookd_deliveries_before".into(),
    ] {
        if named(name.clone()).await == oid {
            return name;
        }
    }
    let day = db.query_i64(&format!("SELECT {id} / {DAY_IDS}")).await;
    let name = format!("hookd_deliveries_p{}", suffix(db, day).await);
    assert_eq!(
        named(name.clone()).await,
        oid,
        "delivery {id} is not in {name}"
    );
    name
}

/// Moves deliveries `ids` (and their attempts) `days` days back: their ids into that
/// day's range, their finish and their events' creation as long ago. Makes the day's
/// partitions first (the tables from before, which would overlap them, must be gone).
async fn move_back(db: &TestDb, ids: &[i64], days: i64) -> Vec<i64> {
    let day = today(db).await - days;
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let shift = days * DAY_IDS;
    let ms = days * DAY_MS;
    db.exec(&format!(
        "SELECT hookd_history_partition({day});
         UPDATE hookd_attempts SET delivery_id = delivery_id - {shift} WHERE delivery_id IN ({list});
         UPDATE hookd_deliveries SET id = id - {shift}, finished_at = finished_at - {ms}
             WHERE id IN ({list});
         UPDATE hookd_events SET created_at = created_at - {ms};"
    ))
    .await;
    ids.iter().map(|id| id - shift).collect()
}

async fn purge(store: &Arc<dyn Store>) -> Purged {
    let cutoff = store.now_ms().await.unwrap() - 3_600_000;
    store.purge_finished(cutoff, 1_000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_delivery_lives_in_its_days_partition_and_the_backlog_apart() {
    let (db, store) = open().await;
    let ids = delivered(&store, 2).await;
    store
        .enqueue_event(&event("pending", "x"), &IngestLimits::default())
        .await
        .unwrap();
    let day = today(&db).await;
    let suffix = suffix(&db, day).await;
    for id in &ids {
        assert!(
            (day * DAY_IDS..(day + 1) * DAY_IDS).contains(id),
            "today's ids: {id}"
        );
        assert_eq!(
            table_of(&db, *id).await,
            format!("hookd_deliveries_p{suffix}")
        );
    }
    let pending = db
        .query_i64("SELECT id FROM hookd_deliveries WHERE state = 'pending'")
        .await;
    assert_eq!(table_of(&db, pending).await, "hookd_deliveries_unfinished");
    assert_eq!(
        db.query_i64(&format!("SELECT COUNT(*) FROM hookd_attempts_p{suffix}"))
            .await,
        2
    );
    // The days ahead are there before they begin.
    assert!(
        exists(
            &db,
            &format!("hookd_deliveries_p{}", self::suffix(&db, day + 2).await)
        )
        .await
    );
    assert!(
        exists(
            &db,
            &format!("hookd_attempts_p{}", self::suffix(&db, day + 2).await)
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_goes_whole_and_not_while_one_of_its_deliveries_is_resent() {
    let (db, store) = open().await;
    // A new database's tables from before the partitions are empty: they go at once.
    purge(&store).await;
    assert!(!exists(&db, "hookd_deliveries_before").await);
    assert!(!exists(&db, "hookd_attempts_before").await);
    let ids = delivered(&store, 3).await;
    let old = move_back(&db, &ids, 2).await;
    let name = format!("p{}", suffix(&db, today(&db).await - 2).await);

    // One is resent: the day stays, all of it.
    assert!(store.resend(old[0]).await.unwrap());
    assert_eq!(table_of(&db, old[0]).await, "hookd_deliveries_unfinished");
    assert_eq!(purge(&store).await.deliveries, 0);
    assert!(exists(&db, &format!("hookd_deliveries_{name}")).await);
    assert_eq!(store.attempts(old[1]).await.unwrap().len(), 1);

    // It finishes back into its day, just now: the day still stays.
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    succeed(&store, &claimed).await;
    assert_eq!(
        table_of(&db, old[0]).await,
        format!("hookd_deliveries_{name}")
    );
    assert_eq!(store.attempts(old[0]).await.unwrap().len(), 2);
    assert_eq!(purge(&store).await.deliveries, 0);
    assert!(exists(&db, &format!("hookd_deliveries_{name}")).await);

    // Once that finish is old too, the day goes with its attempts and its events.
    db.exec(&format!(
        "UPDATE hookd_deliveries SET finished_at = finished_at - {} WHERE id = {}",
        2 * DAY_MS,
        old[0]
    ))
    .await;
    let purged = purge(&store).await;
    assert_eq!(purged.deliveries, 3);
    assert_eq!(purged.events, 3);
    assert!(!exists(&db, &format!("hookd_deliveries_{name}")).await);
    assert!(!exists(&db, &format!("hookd_attempts_{name}")).await);
    for id in old {
        assert!(store.delivery(id).await.unwrap().is_none());
        assert!(store.attempts(id).await.unwrap().is_empty());
    }
    // Today's partitions are kept, empty or not.
    let today = format!("p{}", suffix(&db, today(&db).await).await);
    assert!(exists(&db, &format!("hookd_deliveries_{today}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_that_stopped_half_way_is_finished_or_undone() {
    let (db, store) = open().await;
    purge(&store).await; // the empty tables from before, below the days made here
    let ids = delivered(&store, 3).await;
    let two_days = move_back(&db, &ids[..1], 2).await;
    let three_days = move_back(&db, &ids[1..], 3).await;
    let two = format!("p{}", suffix(&db, today(&db).await - 2).await);
    let three = format!("p{}", suffix(&db, today(&db).await - 3).await);
    // Both detached, as a drop leaves them when it stops before it looks again, the
    // second day with a delivery of its range resent just before.
    assert!(store.resend(three_days[0]).await.unwrap());
    db.exec(&format!(
        "ALTER TABLE hookd_deliveries_finished DETACH PARTITION hookd_deliveries_{two};
         ALTER TABLE hookd_deliveries_finished DETACH PARTITION hookd_deliveries_{three};"
    ))
    .await;
    assert!(store.delivery(two_days[0]).await.unwrap().is_none());

    purge(&store).await;
    assert!(
        !exists(&db, &format!("hookd_deliveries_{two}")).await,
        "expired: dropped"
    );
    assert!(!exists(&db, &format!("hookd_attempts_{two}")).await);
    assert_eq!(
        table_of(&db, three_days[1]).await,
        format!("hookd_deliveries_{three}"),
        "a delivery of its range in the backlog: attached again"
    );
    // And the pending one can finish into it.
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    succeed(&store, &claimed).await;
    assert_eq!(
        table_of(&db, three_days[0]).await,
        format!("hookd_deliveries_{three}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_from_before_the_partitions_are_trimmed_row_by_row() {
    let (db, store) = open().await;
    let ids = delivered(&store, 3).await;
    // Into the range of the tables from before (below today's first id, no partition of
    // yesterday), two finished two days ago and one just now.
    let shift = DAY_IDS;
    db.exec(&format!(
        "UPDATE hookd_attempts SET delivery_id = delivery_id - {shift};
         UPDATE hookd_deliveries SET id = id - {shift};
         UPDATE hookd_deliveries SET finished_at = finished_at - {} WHERE id < {};",
        2 * DAY_MS,
        ids[2] - shift
    ))
    .await;
    let moved: Vec<i64> = ids.iter().map(|id| id - shift).collect();
    assert_eq!(table_of(&db, moved[0]).await, "hookd_deliveries_before");

    assert_eq!(purge(&store).await.deliveries, 2);
    assert!(exists(&db, "hookd_deliveries_before").await);
    assert!(store.delivery(moved[0]).await.unwrap().is_none());
    assert!(store.attempts(moved[1]).await.unwrap().is_empty());
    assert!(store.delivery(moved[2]).await.unwrap().is_some());
    assert_eq!(store.attempts(moved[2]).await.unwrap().len(), 1);
}

/// A resend that waits for the row of a delivery finishing at that moment: the finish moves
/// the row to the history's partition, and the resend still reopens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_waiting_for_a_delivery_that_finishes_meanwhile_reopens_it() {
    use sqlx::Connection;
    let (db, store) = open().await;
    store
        .enqueue_event(&event("e", "x"), &IngestLimits::default())
        .await
        .unwrap();
    let claimed = store.claim(1, 60_000).await.unwrap();
    let id = claimed[0].delivery_id;
    // The finish, in a transaction held open: it has moved the row, and holds it.
    let mut finishing = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(
        &mut finishing,
        format!(
            "BEGIN; UPDATE hookd_deliveries SET state = 'succeeded', finished_at = hookd_now_ms(), \
             lease_token = NULL WHERE id = {id}"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let resend = tokio::spawn({
        let store = store.clone();
        async move { store.resend(id).await }
    });
    hookd_testkit::wait_until(
        std::time::Duration::from_secs(10),
        "the resend waits for the row",
        || async {
            (db.query_i64("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                .await
                > 0)
            .then_some(())
        },
    )
    .await;
    sqlx::Executor::execute(&mut finishing, "COMMIT")
        .await
        .unwrap();
    assert!(resend.await.unwrap().expect("the resend goes through"));
    let delivery = store.delivery(id).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Pending);
    assert_eq!(table_of(&db, id).await, "hookd_deliveries_unfinished");
}

/// With a month of days, a claim reads the backlog alone, and a read by id one day's
/// partition and the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_the_backlog_alone_and_a_read_by_id_one_day() {
    let (db, store) = open().await;
    purge(&store).await; // the empty tables from before, below the days made here
    let today = today(&db).await;
    db.exec(&format!(
        "SELECT hookd_history_partition(d) FROM generate_series({} , {today}) d",
        today - 30
    ))
    .await;
    let claim = explain(
        &db,
        "SELECT id FROM hookd_deliveries WHERE state = 'pending' AND attempts = 0 \
         AND next_attempt_at <= hookd_now_ms() ORDER BY next_attempt_at LIMIT 10 \
         FOR UPDATE SKIP LOCKED",
    )
    .await;
    assert!(
        claim.contains("hookd_deliveries_unfinished") && !claim.contains("hookd_deliveries_p"),
        "{claim}"
    );
    let id = today * DAY_IDS + 7;
    let by_id = explain(
        &db,
        &format!("SELECT * FROM hookd_deliveries WHERE id = {id}"),
    )
    .await;
    let days = by_id.matches(" on hookd_deliveries_p").count();
    assert_eq!(days, 1, "{by_id}");
    assert!(by_id.contains(&format!("hookd_deliveries_p{}", suffix(&db, today).await)));
}

/// Delivery never waits for a day of the history: with an old day's partitions locked
/// (as `DROP TABLE` locks them, and as every statement that takes them into its plan would
/// wait), events are taken in, claimed, retried, finished, rescued and released, and an
/// ordered endpoint's next delivery goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_never_waits_for_a_day_of_the_history() {
    use sqlx::Connection;
    use std::time::Duration;
    let (db, store) = open().await;
    purge(&store).await; // the empty tables from before, below the days made here
    let ids = delivered(&store, 2).await;
    move_back(&db, &ids, 2).await;
    store
        .insert_endpoint(&Endpoint {
            id: "ep_ordered".into(),
            url: "http://127.0.0.1:9/ep_ordered".into(),
            event_types: vec!["ordered.*".into()],
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            enabled: true,
            ordered: true,
            ..Endpoint::default()
        })
        .await
        .unwrap();
    let day = format!("p{}", suffix(&db, today(&db).await - 2).await);
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(
        &mut locker,
        format!(
            "BEGIN; LOCK TABLE hookd_deliveries_{day}, hookd_attempts_{day} IN ACCESS EXCLUSIVE MODE"
        )
        .as_str(),
    )
    .await
    .unwrap();

    async fn quick<T>(step: &str, f: impl std::future::Future<Output = Result<T>>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{step} waited for the locked day of the history"))
            .unwrap_or_else(|e| panic!("{step}: {e}"))
    }
    let limits = IngestLimits::default();
    for (id, event_type) in [
        ("n1", "x"),
        ("n2", "x"),
        ("n3", "x"),
        ("o1", "ordered.a"),
        ("o2", "ordered.a"),
    ] {
        quick(
            "ingest",
            store.enqueue_event(&event(id, event_type), &limits),
        )
        .await;
    }
    let claimed = quick("claim", store.claim(10, 60_000)).await;
    // n1..n3 for ep_1 and ep_1's o1, o2 (it takes every type), and ep_ordered's o1; o2 is held.
    assert_eq!(claimed.len(), 6, "{claimed:?}");
    let (retried, rest) = claimed.split_first().unwrap();
    let (released, rest) = rest.split_first().unwrap();
    let mut done = vec![completion(
        retried,
        Outcome::HttpError,
        Some(500),
        Next::RetryIn(0),
    )];
    done.extend(
        rest.iter()
            .map(|c| completion(c, Outcome::Success, Some(200), Next::Succeeded)),
    );
    let recorded = quick("complete", store.complete(&done)).await;
    assert!(recorded.iter().all(|r| *r), "{recorded:?}");
    let lease = Lease {
        delivery_id: released.delivery_id,
        token: released.lease_token.clone(),
    };
    assert_eq!(
        quick("release", store.release(&[lease], Release::Now)).await,
        1
    );
    quick("promote", store.promote_stranded()).await;
    // The retry, the released one and ep_ordered's o2, let go by o1's success.
    let again = quick("claim again", store.claim(10, 1)).await;
    assert_eq!(again.len(), 3, "{again:?}");
    hookd_testkit::wait_until(Duration::from_secs(10), "the leases expire", || async {
        (db.query_i64("SELECT COUNT(*) FROM hookd_deliveries_unfinished WHERE lease_expires_at < hookd_now_ms()")
            .await
            == 3)
            .then_some(())
    })
    .await;
    assert_eq!(quick("rescue", store.rescue_expired()).await, 3);
    quick("backlog", store.backlog()).await;
    quick("next due", store.next_due_in_ms()).await;
    sqlx::Executor::execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();
}
