//! Two hookd instances on one PostgreSQL database deliver an ordered endpoint's events in
//! outbox order.
//!
//! The producer commits 500 rows in small batches on one connection, so outbox order
//! (`seq`) is commit order is the order of the event numbers. Both instances wake on every
//! commit and ingest side by side. The receiver answers every request 200 at once and
//! checks, at the first request of each event, that every earlier event has already been
//! answered 200: hookd lets an ordered endpoint's next delivery go only once the one before
//! it has finished, so that holds for every event however the work is split between the
//! instances. A repeated request of an event already answered (at-least-once) is allowed
//! and is not a first receipt.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it ordered_instances::`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use hookd_fault_tests::{
    event_ids, event_number, exclusive, log_dir, say, wait_finished, wait_until, Backend, Options,
    Order, Probe, Producer, Receiver, Reply, TestDb, LONG,
};

const EVENTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_keep_an_ordered_endpoints_order() {
    let _heavy = exclusive().await;
    let logs = log_dir("ordered-instances");
    let db = TestDb::new(Backend::Postgres).await;
    let order = Arc::new(Mutex::new(Order::new(EVENTS)));
    let seen = order.clone();
    let receiver = Receiver::per_event(move |id, request| {
        seen.lock().unwrap().request(event_number(id), request);
        Reply::ok()
    })
    .await;
    let options = Options::new(&db.url);
    let mut a = options.clone().start("a", &logs).await;
    let mut b = options.start("b", &logs).await;
    let endpoint = a
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"], "ordered": true }))
        .await["id"]
        .as_str()
        .expect("endpoint id")
        .to_string();
    let probe = Probe::connect(&db).await;

    // Small batches in quick succession: both instances are woken by each commit, so they
    // often ingest at the same moment.
    let producer = Producer::start(&db, event_ids("ord", EVENTS), 5, Duration::from_millis(2));
    let produced = producer.finish().await;
    assert_eq!(produced.committed.len(), EVENTS);
    wait_until(LONG, "every event answered 200", || {
        let order = order.clone();
        async move {
            order
                .lock()
                .unwrap()
                .answered
                .iter()
                .all(|d| *d)
                .then_some(())
        }
    })
    .await;
    // The receiver counts an answer before hookd records it.
    wait_finished(&probe, EVENTS, LONG).await;
    let rows = probe.deliveries().await;
    let succeeded = rows
        .iter()
        .filter(|r| r.endpoint_id == endpoint && r.state == "succeeded")
        .count();
    assert_eq!(succeeded, EVENTS, "every delivery succeeded");
    a.assert_running();
    b.assert_running();
    probe.close().await;

    let order = order.lock().unwrap();
    say(&format!(
        "ordered-instances: {} first receipts, {} out of order, {} requests in all",
        order.first_receipts.len(),
        order.violations.len(),
        receiver.count()
    ));
    assert!(
        order.violations.is_empty(),
        "{} events arrived before an earlier one was answered, e.g. (event, earliest unanswered): {:?}",
        order.violations.len(),
        &order.violations[..order.violations.len().min(10)]
    );
    let expected: Vec<usize> = (0..EVENTS).collect();
    assert_eq!(
        order.first_receipts, expected,
        "first receipts follow outbox order"
    );
}
