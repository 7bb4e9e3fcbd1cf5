//! Rate-limited endpoints: a claim takes a limited endpoint's deliveries only within its
//! budget (a burst of one second's worth, then its rate), across every store sharing the
//! database, rows that become due while a claim runs included; the rows over the budget stay pending, unattempted; an unlimited endpoint
//! beside it is claimed in full; an ingest leases nothing of it; the idle wait names the
//! time its budget allows the next.

use super::*;

use std::time::Instant;

hookd_testkit::each_backend!(
    the_rate_limit_is_stored_changed_and_cleared,
    a_limited_endpoint_is_claimed_within_its_budget,
    an_unlimited_endpoint_is_claimed_in_full_beside_a_limited_backlog,
    two_stores_on_one_database_share_one_budget,
    an_ingest_leases_nothing_of_a_limited_endpoint,
    the_idle_wait_is_the_budget_of_a_limited_backlog,
    rows_that_become_due_during_a_claim_stay_within_the_budget,
);

fn limited(id: &str, types: &[&str], per_second: f64) -> Endpoint {
    Endpoint {
        rate_limit: RateLimit::new(per_second),
        ..endpoint(id, types)
    }
}

/// `n` events of `event_type`, ids `{prefix}{i}`.
async fn events(store: &Arc<dyn Store>, prefix: &str, n: usize, event_type: &str) {
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| event(Some(&format!("{prefix}{i}")), event_type))
        .collect();
    store.enqueue_events(&batch, &limits()).await.unwrap();
}

fn count(claimed: &[Claimed], endpoint: &str) -> usize {
    claimed.iter().filter(|c| c.endpoint.id == endpoint).count()
}

async fn the_rate_limit_is_stored_changed_and_cleared(backend: Backend) {
    let (_db, store) = open(backend).await;
    let e = store
        .insert_endpoint(&limited("ep_1", &["*"], 2.5))
        .await
        .unwrap();
    assert_eq!(e.rate_limit, RateLimit::new(2.5));
    let read = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
    assert_eq!(read.rate_limit, RateLimit::new(2.5));
    for change in [RateLimit::new(20.0), None] {
        let updated = store
            .update_endpoint(&Endpoint {
                rate_limit: change,
                ..read.clone()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.rate_limit, change);
        let read = store.endpoint(&"ep_1".into()).await.unwrap().unwrap();
        assert_eq!(read.rate_limit, change);
    }
}

async fn a_limited_endpoint_is_claimed_within_its_budget(backend: Backend) {
    let (db, store) = open(backend).await;
    // 5/s: a burst of 5, then one every 200 ms.
    store
        .insert_endpoint(&limited("ep_5", &["five"], 5.0))
        .await
        .unwrap();
    // One every 10 s: a burst of 1, and none again within the test.
    store
        .insert_endpoint(&limited("ep_slow", &["slow"], 0.1))
        .await
        .unwrap();
    events(&store, "f", 40, "five").await;
    events(&store, "s", 40, "slow").await;
    let claimed = store.claim(100, 60_000).await.unwrap();
    assert_eq!(count(&claimed, "ep_5"), 5, "the burst, no more");
    assert_eq!(count(&claimed, "ep_slow"), 1, "the burst, no more");
    // The oldest first.
    let mut ids: Vec<&str> = claimed
        .iter()
        .filter(|c| c.endpoint.id == "ep_5")
        .map(|c| c.event_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["f0", "f1", "f2", "f3", "f4"]);
    let again = store.claim(100, 60_000).await.unwrap();
    assert_eq!(count(&again, "ep_slow"), 0, "its budget is spent for 10 s");
    // Rows over the budget wait pending, and are not attempts.
    let waiting = db
        .query_i64(
            "SELECT COUNT(*) FROM hookd_deliveries WHERE endpoint_id = 'ep_slow' \
             AND state = 'pending' AND attempts = 0",
        )
        .await;
    assert_eq!(waiting, 39);
    // The 5/s endpoint: more as time passes, at its rate (a loaded machine may be slow;
    // never faster).
    let started = Instant::now();
    let mut taken = count(&claimed, "ep_5") + count(&again, "ep_5");
    let deadline = started + Duration::from_secs(30);
    while taken < 10 {
        assert!(Instant::now() < deadline, "{taken} claimed in 30 s");
        taken += count(&store.claim(100, 60_000).await.unwrap(), "ep_5");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let allowed = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        taken <= allowed,
        "{taken} claimed, at most {allowed} allowed"
    );
}

async fn an_unlimited_endpoint_is_claimed_in_full_beside_a_limited_backlog(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&limited("ep_slow", &["slow"], 0.1))
        .await
        .unwrap();
    store
        .insert_endpoint(&endpoint("ep_fast", &["fast"]))
        .await
        .unwrap();
    // The limited backlog is older: ahead in due order.
    events(&store, "s", 300, "slow").await;
    events(&store, "f", 30, "fast").await;
    let claimed = store.claim(100, 60_000).await.unwrap();
    assert_eq!(
        (count(&claimed, "ep_fast"), count(&claimed, "ep_slow")),
        (30, 1)
    );
    // Retries of the unlimited endpoint too, while the limited backlog waits.
    let retry = Next::RetryIn(0);
    let results: Vec<Completion> = claimed
        .iter()
        .filter(|c| c.endpoint.id == "ep_fast")
        .map(|c| completion(c, Outcome::HttpError, Some(500), retry))
        .collect();
    store.complete(&results).await.unwrap();
    let (mut retried, deadline) = (0, Instant::now() + Duration::from_secs(10));
    while retried < 30 {
        assert!(
            Instant::now() < deadline,
            "{retried} retries claimed in 10 s"
        );
        let again = store.claim(100, 60_000).await.unwrap();
        assert_eq!(count(&again, "ep_slow"), 0);
        retried += count(&again, "ep_fast");
    }
}

async fn two_stores_on_one_database_share_one_budget(backend: Backend) {
    let (db, store) = open(backend).await;
    // 4/s: a burst of 4; the next one 250 ms after the burst.
    store
        .insert_endpoint(&limited("ep_1", &["*"], 4.0))
        .await
        .unwrap();
    events(&store, "e", 50, "purchase").await;
    let other = connect(&db.url).await.unwrap();
    let started = Instant::now();
    let (a, b) = tokio::join!(store.claim(100, 60_000), other.claim(100, 60_000));
    let (a, b) = (a.unwrap().len(), b.unwrap().len());
    let allowed = 4 + (started.elapsed().as_secs_f64() * 4.0).ceil() as usize;
    assert!(
        a + b >= 4 && a + b <= allowed,
        "{a} + {b} claimed, one budget allows {allowed}"
    );
}

async fn an_ingest_leases_nothing_of_a_limited_endpoint(backend: Backend) {
    let (db, store) = open(backend).await;
    store
        .insert_endpoint(&limited("ep_slow", &["*"], 0.1))
        .await
        .unwrap();
    store
        .insert_endpoint(&endpoint("ep_fast", &["*"]))
        .await
        .unwrap();
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e1', 'purchase', '{}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e2', 'purchase', '{}');",
    )
    .await;
    let ingested = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(ingested.rows, 2);
    let leased: Vec<&str> = ingested
        .claimed
        .iter()
        .map(|c| c.endpoint.id.as_str())
        .collect();
    assert_eq!(leased, ["ep_fast", "ep_fast"]);
    assert!(
        ingested.due,
        "the limited endpoint's deliveries wait for a claim"
    );
    let claimed = store.claim(100, 60_000).await.unwrap();
    assert_eq!(count(&claimed, "ep_slow"), 1, "within its budget");
}

async fn the_idle_wait_is_the_budget_of_a_limited_backlog(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&limited("ep_slow", &["*"], 0.1))
        .await
        .unwrap();
    events(&store, "e", 5, "purchase").await;
    // Due, and the budget allows one: at once, or at the next recheck.
    let now = store.next_due_in_ms().await.unwrap().unwrap();
    assert!(now <= 10, "{now}");
    assert_eq!(store.claim(100, 60_000).await.unwrap().len(), 1);
    // The others are overdue, but the budget allows the next in about 10 s.
    let wait = store.next_due_in_ms().await.unwrap().unwrap();
    assert!((5_000..=10_000).contains(&wait), "{wait}");
}

/// A claim reads which endpoints have rows due, then claims in a second statement: rows of
/// a limited endpoint that arrive in between must not be taken past its budget. Events
/// arrive one commit at a time while claims run back to back for a second.
async fn rows_that_become_due_during_a_claim_stay_within_the_budget(backend: Backend) {
    let (db, store) = open(backend).await;
    // One every 10 s: a burst of 1, and no more within the test.
    store
        .insert_endpoint(&limited("ep_slow", &["slow"], 0.1))
        .await
        .unwrap();
    let producer = connect(&db.url).await.unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    let producing = async {
        let mut i = 0;
        while Instant::now() < until {
            events(&producer, &format!("p{i}-"), 1, "slow").await;
            i += 1;
        }
        i
    };
    let claiming = async {
        let mut taken = 0;
        while Instant::now() < until {
            taken += count(&store.claim(100, 60_000).await.unwrap(), "ep_slow");
        }
        taken
    };
    let (produced, taken) = tokio::join!(producing, claiming);
    assert!(produced > 10, "only {produced} events in a second");
    assert!(
        taken <= 1,
        "{taken} of {produced} deliveries of an endpoint limited to one per 10 s were claimed"
    );
}
