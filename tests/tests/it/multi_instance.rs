//! Scenario 5: three hookd instances on one PostgreSQL database under load; one of them is
//! killed (-9) and restarted again and again. Nothing is lost, and no event is delivered
//! twice except those that were in flight when a process died.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it multi_instance::`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use hookd_fault_tests::{
    audit, duplicates_outside, event_ids, exclusive, log_dir, report, say, standard_mix,
    wait_fault_point, wait_finished, wait_some_in_flight, Backend, Expect, Options, Probe,
    Producer, Receiver, TestDb, LONG,
};

const EVENTS: usize = 5000;
const KILLS: usize = 4;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_repeatedly_lose_nothing() {
    run(false).await;
}

/// The same, held to "duplicated only if in flight when a process died, and at most
/// concurrency per kill": a result keeps its attempt's permit until it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_duplicates_only_what_the_dead_held() {
    run(true).await;
}

async fn run(strict: bool) {
    let _heavy = exclusive().await;
    let scenario = if strict {
        "multi-instance-strict"
    } else {
        "multi-instance"
    };
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    // Each answer takes 30 ms, so attempts are in flight when the kill comes.
    let receiver =
        Receiver::per_event(|id, n| standard_mix(id, n).after(Duration::from_millis(30))).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", &CONCURRENCY.to_string());
    let mut victim = options.clone().start("victim", &logs).await;
    let mut others = vec![
        options.clone().start("steady-a", &logs).await,
        options.start("steady-b", &logs).await,
    ];
    victim
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    let producer = Producer::start(&db, event_ids("mi", EVENTS), 50, Duration::from_millis(80));
    // Every row in flight right after a kill: a superset of the dead process's own rows
    // (the others' are in it too), and the only ones that may be sent twice.
    let mut in_flight_at_kills = HashSet::new();
    let mut max_held = 0;
    let mut since = Instant::now();
    for k in 1..=KILLS {
        let mark = EVENTS * k / (KILLS + 1);
        wait_fault_point(&receiver, mark, since, Duration::from_millis(1500)).await;
        wait_some_in_flight(&probe).await;
        victim.kill9().await;
        let held = probe.in_flight_ids().await;
        say(&format!(
            "{scenario}: kill {k} at {} delivered, {} committed: {} in flight (all instances)",
            receiver.ok_count(),
            producer.committed(),
            held.len()
        ));
        max_held = max_held.max(held.len());
        in_flight_at_kills.extend(held);
        for o in &mut others {
            o.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        victim.restart().await;
        since = Instant::now();
    }
    let produced = producer.finish().await;
    wait_finished(&probe, produced.committed.len(), LONG).await;
    victim.assert_running();
    for o in &mut others {
        o.assert_running();
    }

    let result = audit(&probe, &receiver, &produced.committed, Expect::default()).await;
    let outside = duplicates_outside(
        &result,
        &probe.deliveries().await,
        &probe.attempts().await,
        &in_flight_at_kills,
    );
    report(
        scenario,
        &result,
        &format!(
            "instances=3 kills={KILLS} in_flight_at_kills={} concurrency={CONCURRENCY} dup_outside_kills={}",
            in_flight_at_kills.len(),
            outside.len()
        ),
    );
    result.assert_sound();
    if strict {
        // Three live instances' permits, plus what the victim's previous incarnation left
        // leased when it was killed (rescued only once its lease expires).
        assert!(
            max_held <= 4 * CONCURRENCY,
            "{result}: {max_held} deliveries were in flight (claimed, unrecorded) at one kill, with 3 instances of concurrency {CONCURRENCY}"
        );
        assert!(
            outside.is_empty(),
            "{result}: {} duplicated events were not in flight at any kill: {:?}",
            outside.len(),
            &outside[..outside.len().min(10)]
        );
        result.assert_duplicates_at_most(
            CONCURRENCY * KILLS,
            &format!("concurrency {CONCURRENCY} x {KILLS} kills"),
        );
    } else {
        result.assert_duplicates_at_most(
            in_flight_at_kills.len() + result.rescued,
            "in flight at a kill, or rescued after a lease expired",
        );
    }
    probe.close().await;
}
