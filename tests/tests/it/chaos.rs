//! Many instances under chaos: four hookd instances on one PostgreSQL database, producers
//! committing at a steady rate, and every 5 s one instance, chosen at random, killed -9 and
//! restarted. Nothing is lost; an event is delivered twice only if it was in flight when an
//! instance died; an ordered endpoint's events arrive in outbox order; and everything is
//! finished within 30 s of the last kill.
//!
//! CI runs 30 s at 200 events/s. The long run (2 minutes, 100,000 events), whose result is
//! in docs/reliability.md: `scripts/chaos`, or
//! `HOOKD_CHAOS_SECONDS=120 HOOKD_CHAOS_EVENTS=100000 cargo test -p hookd-fault-tests --test it chaos:: -- --nocapture`
//! after `cargo build -p hookd`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use hookd_fault_tests::{
    audit, duplicates_outside, event_ids, event_number, exclusive, log_dir, report, say,
    standard_mix, wait_finished, wait_until, Backend, Expect, Options, Order, Probe, Producer,
    Receiver, Reply, TestDb, LONG,
};

const INSTANCES: usize = 4;
const KILL_EVERY: Duration = Duration::from_secs(5);
const CONCURRENCY: usize = 32;
/// Events per second for the ordered endpoint, beside the main stream.
const ORDERED_RATE: usize = 10;

/// `HOOKD_CHAOS_<name>`, else `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(format!("HOOKD_CHAOS_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift: which instance dies is random, and the seed is printed to replay it.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % sides as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_killed_at_random_lose_nothing_and_keep_order() {
    let _heavy = exclusive().await;
    let scenario = "chaos";
    let seconds = setting("SECONDS", 30);
    let events = setting("EVENTS", 200 * seconds) as usize;
    let ordered_events = ORDERED_RATE * seconds as usize;
    let seed = setting(
        "SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    say(&format!(
        "{scenario}: {INSTANCES} instances, {seconds} s, {events} events + {ordered_events} ordered, kill every {KILL_EVERY:?}, seed {seed} (HOOKD_CHAOS_SEED)"
    ));
    let mut dice = Dice(seed);
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let receiver =
        Receiver::per_event(|id, n| standard_mix(id, n).after(Duration::from_millis(20))).await;
    let order = Arc::new(Mutex::new(Order::new(ordered_events)));
    let seen = order.clone();
    let ordered_receiver = Receiver::per_event(move |id, request| {
        seen.lock().unwrap().request(event_number(id), request);
        Reply::ok()
    })
    .await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", &CONCURRENCY.to_string());
    let mut instances = Vec::with_capacity(INSTANCES);
    for i in 0..INSTANCES {
        instances.push(options.clone().start(&format!("i{i}"), &logs).await);
    }
    let api = instances[0].api();
    api.endpoint(json!({ "url": receiver.url(), "event_types": ["order.paid"] }))
        .await;
    let ordered = api
        .endpoint(
            json!({ "url": ordered_receiver.url(), "event_types": ["none.such"], "ordered": true }),
        )
        .await["id"]
        .as_str()
        .expect("endpoint id")
        .to_string();
    let probe = Probe::connect(&db).await;

    // Batches every 100 ms at the steady rate, each its own transaction.
    let per_batch = (events / (seconds as usize * 10)).max(1);
    let producer = Producer::start(
        &db,
        event_ids("chaos", events),
        per_batch,
        Duration::from_millis(100),
    );
    let ordered_producer = Producer::start_for(
        &db,
        event_ids("ord", ordered_events),
        1,
        Duration::from_millis(1000 / ORDERED_RATE as u64),
        Some(ordered.clone()),
    );

    let start = Instant::now();
    let mut in_flight_at_kills = HashSet::new();
    let mut kills = 0;
    let mut last_kill = start;
    while start.elapsed() + KILL_EVERY <= Duration::from_secs(seconds) {
        tokio::time::sleep_until((last_kill + KILL_EVERY).into()).await;
        let victim = dice.roll(INSTANCES);
        instances[victim].kill9().await;
        last_kill = Instant::now();
        kills += 1;
        let held = probe.in_flight_ids().await;
        say(&format!(
            "{scenario}: kill {kills} of i{victim} at {:.1} s: {} delivered, {} committed, {} in flight (all instances)",
            start.elapsed().as_secs_f64(),
            receiver.ok_count(),
            producer.committed(),
            held.len()
        ));
        in_flight_at_kills.extend(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        instances[victim].restart().await;
    }
    let produced = producer.finish().await;
    let produced_ordered = ordered_producer.finish().await;
    let total = produced.committed.len() + produced_ordered.committed.len();
    // Everything within 30 s of the last kill.
    let within = Duration::from_secs(30).saturating_sub(last_kill.elapsed());
    wait_finished(&probe, total, within.max(Duration::from_secs(1))).await;
    let finished_after_kill = last_kill.elapsed();
    wait_until(LONG, "every ordered event answered", || {
        let order = order.clone();
        async move {
            order
                .lock()
                .unwrap()
                .all_answered(ordered_events)
                .then_some(())
        }
    })
    .await;
    for instance in &mut instances {
        instance.assert_running();
    }

    let result = audit(&probe, &receiver, &produced.committed, Expect::default()).await;
    let outside = duplicates_outside(
        &result,
        &probe.deliveries().await,
        &probe.attempts().await,
        &in_flight_at_kills,
    );
    probe.close().await;
    let order = order.lock().unwrap();
    report(
        scenario,
        &result,
        &format!(
            "instances={INSTANCES} seconds={seconds} kills={kills} in_flight_at_kills={} dup_outside_kills={} ordered={} ordered_violations={} finished_after_last_kill_ms={}",
            in_flight_at_kills.len(),
            outside.len(),
            ordered_events,
            order.violations.len(),
            finished_after_kill.as_millis()
        ),
    );
    result.assert_sound();
    assert!(
        outside.is_empty(),
        "{result}: {} duplicated events were not in flight at any kill: {:?}",
        outside.len(),
        &outside[..outside.len().min(10)]
    );
    result.assert_duplicates_at_most(in_flight_at_kills.len(), "in flight at a kill");
    assert!(
        order.violations.is_empty(),
        "{} ordered events arrived before an earlier one was answered, e.g. (event, earliest unanswered): {:?}",
        order.violations.len(),
        &order.violations[..order.violations.len().min(10)]
    );
    let expected: Vec<usize> = (0..ordered_events).collect();
    assert_eq!(
        order.first_receipts, expected,
        "the ordered endpoint's first receipts follow outbox order"
    );
}
