//! Scenario 1: `kill -9` of hookd mid-load, restarted, several times; on SQLite and on
//! PostgreSQL. Nothing committed is lost; the only duplicates are deliveries that were in
//! flight (claimed, result not yet recorded) when the process died.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it kill9::`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::{
    audit, backend_name, duplicates_outside, event_ids, exclusive, log_dir, report, say,
    standard_mix, wait_fault_point, wait_finished, wait_some_in_flight, Backend, Expect, Options,
    Probe, Producer, Receiver, TestDb, LONG,
};

hookd_testkit::each_backend!(kill9_mid_load_loses_nothing);

const EVENTS: usize = 4000;
const KILLS: usize = 3;
const CONCURRENCY: usize = 64;
/// Committed in one burst at the start: the first kill comes while hookd works through it.
const BACKLOG: usize = 1500;

async fn kill9_mid_load_loses_nothing(backend: Backend) {
    run(backend, false).await;
}

/// The same scenario held to the tighter bound "duplicates ≤ concurrency × kills, all of
/// them in flight at a kill". It holds because an attempt keeps its concurrency permit
/// until its result is recorded: a process never has more than `concurrency` attempts sent
/// and unrecorded. What the probe counts as in flight at a kill also takes in rows claimed
/// and not yet started, so that count is an upper bound of what may be sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill9_duplicates_within_concurrency_times_kills() {
    run(Backend::Postgres, true).await;
}

async fn run(backend: Backend, strict: bool) {
    let _heavy = exclusive().await;
    let scenario = format!(
        "kill9-{}{}",
        backend_name(backend),
        if strict { "-strict" } else { "" }
    );
    let logs = log_dir(&scenario);
    let db = TestDb::new(backend).await;
    // Each answer takes 30 ms, so attempts are in flight when the kill comes.
    let receiver =
        Receiver::per_event(|id, n| standard_mix(id, n).after(Duration::from_millis(30))).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", &CONCURRENCY.to_string());
    let mut hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    // A burst first (a backlog, as after an outage), then a steady stream: the producer keeps
    // committing while hookd is killed and restarted.
    let ids = event_ids("k9", EVENTS);
    db.exec(&insert_sql(backend, &ids[..BACKLOG], None)).await;
    let producer = Producer::start(&db, ids[BACKLOG..].to_vec(), 50, Duration::from_millis(100));
    let mut held_by_the_dead = HashSet::new();
    // The most in flight for the process just killed: rows still leased by the process
    // killed before it (not rescued yet) are not counted.
    let mut max_held = 0;
    let mut previous = HashSet::new();
    let mut since = Instant::now();
    for k in 1..=KILLS {
        let mark = EVENTS * k / (KILLS + 1);
        wait_fault_point(&receiver, mark, since, Duration::from_secs(2)).await;
        wait_some_in_flight(&probe).await;
        hookd.kill9().await;
        // Right after the kill every in-flight row is a dead process's (one instance),
        // and none of their leases (3 s) has expired yet: these, and only these, may be
        // sent twice.
        let held = probe.in_flight_ids().await;
        max_held = max_held.max(held.difference(&previous).count());
        previous = held.clone();
        say(&format!(
            "{scenario}: kill {k} at {} delivered, {} committed: {} in flight",
            receiver.ok_count(),
            producer.committed(),
            held.len()
        ));
        held_by_the_dead.extend(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        hookd.restart().await;
        since = Instant::now();
    }
    let mut produced = producer.finish().await;
    produced.committed.extend(ids[..BACKLOG].iter().cloned());
    wait_finished(&probe, produced.committed.len(), LONG).await;
    hookd.assert_running();

    let result = audit(&probe, &receiver, &produced.committed, Expect::default()).await;
    let outside = duplicates_outside(
        &result,
        &probe.deliveries().await,
        &probe.attempts().await,
        &held_by_the_dead,
    );
    report(
        &scenario,
        &result,
        &format!(
            "kills={KILLS} in_flight_at_kills={} max_in_flight_of_one_process={max_held} concurrency={CONCURRENCY} \
             dup_outside_kills={} producer_retries={}",
            held_by_the_dead.len(),
            outside.len(),
            produced.retried_batches
        ),
    );
    result.assert_sound();
    if strict {
        // No more in flight than `concurrency`, only what was in flight at a kill
        // duplicated, and no more than concurrency x kills.
        assert!(
            max_held <= CONCURRENCY,
            "{result}: the killed process had {max_held} deliveries in flight (claimed, unrecorded), with concurrency {CONCURRENCY}"
        );
        assert!(
            outside.is_empty(),
            "{result}: {} duplicated events were not in flight at any kill (leases lost by a live process): {:?}",
            outside.len(),
            &outside[..outside.len().min(10)]
        );
        result.assert_duplicates_at_most(
            CONCURRENCY * KILLS,
            &format!("concurrency {CONCURRENCY} x {KILLS} kills; {max_held} deliveries were in flight at one kill"),
        );
    } else {
        result.assert_duplicates_at_most(
            held_by_the_dead.len() + result.rescued,
            "in flight at a kill, or rescued after a lease expired",
        );
    }
    probe.close().await;
}
