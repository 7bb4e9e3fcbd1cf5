//! One bad endpoint cannot take the pool, and retries cannot starve new events.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;

use hookd_testkit::{wait_until, Receiver, Reply, TestDb};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_holds_at_most_its_cap() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 8;
    config.endpoint_concurrency = 2;
    config.retry_schedule = Vec::new();
    let app = TestApp::spawn_with(config).await;
    // Every request hangs past the endpoint's timeout.
    let hanging = Receiver::start(|_, _| Reply::hang(Duration::from_secs(2))).await;
    let healthy = Receiver::ok().await;
    app.endpoint(json!({ "url": hanging.url(), "event_types": ["slow"], "timeout": "500ms" }))
        .await;
    app.endpoint(json!({ "url": healthy.url(), "event_types": ["fast"] }))
        .await;

    // Healthy throughput alone, then with 40 hanging deliveries queued ahead of it.
    let rate = |started: Instant, n: usize| n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..100 {
        app.event(json!({ "event_type": "fast", "payload": {} }))
            .await;
    }
    healthy.wait_for(100, WAIT).await;
    let alone = rate(started, 100);

    for _ in 0..40 {
        app.event(json!({ "event_type": "slow", "payload": {} }))
            .await;
    }
    hanging.wait_for(2, WAIT).await;
    let started = Instant::now();
    for _ in 0..100 {
        app.event(json!({ "event_type": "fast", "payload": {} }))
            .await;
    }
    healthy.wait_for(200, WAIT).await;
    let beside = rate(started, 100);
    assert!(
        app.deliveries("state=pending").await.len() + app.deliveries("state=in_flight").await.len()
            > 0,
        "the hanging endpoint was still busy while the healthy one was served"
    );
    // Each attempt holds its place for the 500 ms timeout, so with a cap of 2 no 400 ms
    // window sees more than 2 requests arrive.
    hanging.wait_for(4, WAIT).await; // it keeps being tried, two at a time
    let arrivals: Vec<Instant> = hanging.received().iter().map(|r| r.at).collect();
    let most = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_millis(400))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 2,
        "{most} requests to the hanging endpoint within 400 ms: the cap did not hold"
    );
    // A figure, not an assertion (timed assertions flake on a loaded machine): the rate is
    // bounded by posting events one by one, and is the same beside a hanging endpoint.
    println!("healthy endpoint: {alone:.0}/s alone, {beside:.0}/s beside a hanging one");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_leave_room_for_first_attempts() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 4;
    config.retry_concurrency = 2;
    config.endpoint_concurrency = 4;
    config.retry_schedule = vec![Duration::from_millis(10); 50];
    let app = TestApp::spawn_with(config).await;
    // A storm: 30 deliveries that fail slowly and are retried at once, over and over.
    let failing = Receiver::start(|_, _| {
        let mut reply = Reply::hang(Duration::from_millis(100));
        reply.status = 500;
        reply
    })
    .await;
    let healthy = Receiver::ok().await;
    app.endpoint(json!({ "url": failing.url(), "event_types": ["storm"], "timeout": "1s" }))
        .await;
    app.endpoint(json!({ "url": healthy.url(), "event_types": ["new"] }))
        .await;
    for _ in 0..30 {
        app.event(json!({ "event_type": "storm", "payload": {} }))
            .await;
    }
    // Let the storm become retries.
    wait_until(WAIT, "the storm to be retrying", || async {
        (app.metrics.retries_scheduled.get() >= 30).then_some(())
    })
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        app.event(json!({ "event_type": "new", "payload": {} }))
            .await;
    }
    healthy.wait_for(20, WAIT).await;
    let took = started.elapsed();
    println!("20 new events delivered in {took:?} during a retry storm");
    assert!(
        took < Duration::from_secs(5),
        "first attempts starved: {took:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_endpoint_is_not_claimed_for_after_every_result() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 8;
    config.endpoint_concurrency = 1;
    // Long enough that the time-based second look happens at most once in the drain.
    config.poll_interval = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let slow = Receiver::start(|_, _| Reply::hang(Duration::from_millis(30))).await;
    app.endpoint(json!({ "url": slow.url(), "event_types": ["slow"] }))
        .await;
    for _ in 0..30 {
        app.event(json!({ "event_type": "slow", "payload": {} }))
            .await;
    }
    // From here on only results arrive: the one endpoint sends one at a time, and while its
    // place and the row waiting behind it are taken, a claim could only skip its rows.
    let claims = || {
        app.metrics
            .store_query_duration
            .with_label_values(&["claim_due"])
            .get_sample_count()
    };
    let found = || app.metrics.claim_batch.get_sample_count();
    let (claims_before, found_before) = (claims(), found());
    let started = Instant::now();
    app.wait_all_finished(30).await;
    // Poll ticks within the drain: the timer runs from before it started, so a drain of T
    // seconds can see floor(T) + 1 of them.
    let polls = started.elapsed().as_secs() + 1;
    let claims = claims() - claims_before;
    let found = found() - found_before;
    let empty = claims - found;
    println!("{claims} claims during the drain, {found} of them found rows");
    // One claim finds the endpoint busy; after that, only each poll interval (1 s) brings
    // another (measured: 1-2 in a drain of about a second). A claim after every recorded
    // result made 32, and one after every claim that found rows 5-6.
    assert!(
        empty <= 2 + polls,
        "{empty} empty claims beside {found} that found rows: the busy endpoint was claimed for after each result"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoints_outbox_rows_do_not_hold_up_others() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 8;
    config.endpoint_concurrency = 2;
    config.request_timeout = Duration::from_secs(30);
    config.retry_schedule = Vec::new();
    let app = TestApp::spawn_with(config).await;
    let hanging = Receiver::start(|_, _| Reply::hang(Duration::from_secs(60))).await;
    let healthy = Receiver::ok().await;
    app.endpoint(json!({ "url": hanging.url(), "event_types": ["slow"] }))
        .await;
    app.endpoint(json!({ "url": healthy.url(), "event_types": ["fast"] }))
        .await;

    // 300 rows for the hanging endpoint, then 10 for the healthy one, in one commit: the
    // hanging endpoint is at its cap after the first few, and its attempts last 30 s.
    let mut sql = String::from("BEGIN;\n");
    for (n, event_type) in [(300, "slow"), (10, "fast")] {
        for _ in 0..n {
            sql.push_str(&format!(
                "INSERT INTO hookd_outbox (event_type, payload) VALUES ('{event_type}', '{{}}');\n"
            ));
        }
    }
    sql.push_str("COMMIT;");
    db.exec(&sql).await;

    // Its rows wait in the outbox for a place at most a poll interval (20 ms), then are taken
    // along as pending deliveries: the healthy rows behind them never wait for its 30 s.
    let started = Instant::now();
    healthy.wait_for(10, Duration::from_secs(10)).await;
    println!("healthy rows delivered after {:?}", started.elapsed());
    assert_eq!(
        hanging.received().len(),
        2,
        "the hanging endpoint holds its cap of 2, no more"
    );
    let pending = app.deliveries("state=pending").await.len();
    assert!(
        pending >= 290,
        "its other rows wait as pending deliveries: {pending}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_backlog_in_the_outbox_does_not_hold_up_another_tenants_row() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 4;
    config.endpoint_concurrency = 4;
    let app = TestApp::spawn_with(config).await;
    // Tenant a's endpoint takes 100 ms a delivery: four at a time, its 1,000 rows take 25 s.
    let slow = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(100))).await;
    let fast = Receiver::ok().await;
    app.endpoint(json!({ "url": slow.url(), "event_types": ["*"], "tenant_id": "a" }))
        .await;
    app.endpoint(json!({ "url": fast.url(), "event_types": ["*"], "tenant_id": "b" }))
        .await;

    let mut sql = String::from("BEGIN;\n");
    for _ in 0..1000 {
        sql.push_str(
            "INSERT INTO hookd_outbox (event_type, payload, tenant_id) VALUES ('x', '{}', 'a');\n",
        );
    }
    sql.push_str("COMMIT;");
    db.exec(&sql).await;
    slow.wait_for(8, Duration::from_secs(10)).await;

    // One row of tenant b, committed behind a's backlog while a saturates the pool.
    let started = Instant::now();
    db.exec("INSERT INTO hookd_outbox (event_type, payload, tenant_id) VALUES ('x', '{}', 'b')")
        .await;
    fast.wait_for(1, Duration::from_secs(10)).await;
    let took = started.elapsed();
    println!(
        "b's row delivered after {took:?}, with {} of a's delivered",
        slow.count()
    );
    assert!(took < Duration::from_secs(2), "b's row waited {took:?}");
    assert!(slow.count() < 500, "a's backlog was not drained first");
    app.stop().await;
}

/// How many times this test's runtime (hookd's, the receiver's) has gone to sleep, all
/// workers together: other tests run in other runtimes of the same process.
fn runtime_parks() -> u64 {
    let metrics = tokio::runtime::Handle::current().metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_park_count(w))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_waits_without_spinning() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.concurrency = 2;
    config.request_timeout = Duration::from_secs(30);
    config.retry_schedule = Vec::new();
    config.poll_interval = Duration::from_millis(200);
    let app = TestApp::spawn_with(config).await;
    let hanging = Receiver::start(|_, _| Reply::hang(Duration::from_secs(60))).await;
    app.endpoint(json!({ "url": hanging.url() })).await;
    let rows = "INSERT INTO hookd_outbox (event_type, payload) VALUES ('x', '{}');\n".repeat(10);
    db.exec(&rows).await;
    hanging.wait_for(2, WAIT).await;

    // Both places are taken for 30 s and eight rows wait in the outbox: the dispatcher has
    // nothing to do until a place frees, and must sleep meanwhile, past its poll interval,
    // instead of looping on an outbox read it cannot start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (parks, wall) = (runtime_parks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let woke = runtime_parks() - parks;
    println!(
        "the runtime slept {woke} times in {:?} with a full pool",
        wall.elapsed()
    );
    // Measured: about 70 (the poll interval, the rescue and gauge jobs, this sleep); a loop
    // woken every millisecond (the timer's resolution) to find it still cannot read the
    // outbox slept about 3,500 times.
    assert!(
        woke < 400,
        "woke {woke} times in two seconds with nothing to do"
    );
    app.stop().await;
}
