//! Scenario 10: back to work within seconds of a `kill -9`, with leases far longer than
//! that (90 s). About 1,000 deliveries are in flight when the process dies.
//!
//! - SQLite: the restarted process owns the file (its lock) and releases every lease in it
//!   at start: every event is delivered within 10 s of the restart. A second `hookd serve`
//!   on the same file is refused, naming the file.
//! - PostgreSQL, two instances: the survivor sees the dead one's heartbeat stop and takes
//!   its leases back: every event is delivered within 15 s of the kill, with no restart.
//!
//! Nothing is lost, and only what was in flight at the kill is sent twice.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it crash_recovery::`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::{
    audit, event_ids, exclusive, hookd_bin, log_dir, report, say, wait_finished, wait_until,
    Backend, Expect, Options, Probe, Receiver, Reply, TestDb,
};
use hookd_testkit::{free_port, Spec};

const EVENTS: usize = 1000;
/// A first request is answered after this long, so that the whole burst is in flight at
/// once; a repeated one at once.
const FIRST_ANSWER: Duration = Duration::from_secs(3);

fn options(db: &TestDb) -> Options {
    Options::new(&db.url)
        .set("HOOKD_CONCURRENCY", "2000")
        .set("HOOKD_ENDPOINT_CONCURRENCY", "2000")
        .set("HOOKD_CLAIM_BATCH", "1000")
        .set("HOOKD_LEASE_DURATION", "90s")
        .set("HOOKD_REQUEST_TIMEOUT", "10s")
}

async fn receiver() -> Receiver {
    Receiver::per_event(|_, n| {
        if n == 1 {
            Reply::ok().after(FIRST_ANSWER)
        } else {
            Reply::ok()
        }
    })
    .await
}

/// Waits until at least `n` deliveries are in flight; returns their ids.
async fn wait_in_flight(probe: &Probe, n: usize) -> HashSet<i64> {
    wait_until(
        Duration::from_secs(60),
        "the burst to be in flight",
        || async {
            let held = probe.in_flight_ids().await;
            (held.len() >= n).then_some(held)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_sends_the_dead_leases_at_once() {
    let _heavy = exclusive().await;
    let scenario = "crash-recovery-sqlite";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = receiver().await;
    let mut hookd = options(&db).start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    // A second process on the same file is refused, and says which file.
    let second = Spec::new(hookd_bin())
        .name("second")
        .arg("serve")
        .envs(options(&db).env)
        .env("HOOKD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .await;
    let file = db.url.trim_start_matches("sqlite://");
    second.assert_fails(1, "in use by another hookd process");
    assert!(second.stderr.contains(file), "{second:?}");

    let ids = event_ids("cr", EVENTS);
    db.exec(&insert_sql(Backend::Sqlite, &ids, None)).await;
    let held = wait_in_flight(&probe, EVENTS * 9 / 10).await;
    hookd.kill9().await;
    let held = held
        .union(&probe.in_flight_ids().await)
        .copied()
        .collect::<HashSet<_>>();
    say(&format!("{scenario}: killed with {} in flight", held.len()));

    let restarted = Instant::now();
    hookd.restart().await;
    wait_finished(&probe, EVENTS, Duration::from_secs(60)).await;
    let took = restarted.elapsed();
    hookd.assert_running();

    let result = audit(&probe, &receiver, &ids, Expect::default()).await;
    report(
        scenario,
        &result,
        &format!(
            "in_flight_at_kill={} all_delivered_after_restart_ms={}",
            held.len(),
            took.as_millis()
        ),
    );
    result.assert_sound();
    result.assert_duplicates_at_most(held.len(), "in flight at the kill");
    assert!(
        took < Duration::from_secs(10),
        "every event delivered {took:?} after the restart, not within 10 s"
    );
    probe.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survivor_takes_the_dead_leases_back() {
    let _heavy = exclusive().await;
    let scenario = "crash-recovery-postgres";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = receiver().await;
    let mut victim = options(&db).start("victim", &logs).await;
    let mut survivor = options(&db).start("survivor", &logs).await;
    victim
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    let ids = event_ids("cr", EVENTS);
    db.exec(&insert_sql(Backend::Postgres, &ids, None)).await;
    let held = wait_in_flight(&probe, EVENTS * 9 / 10).await;
    victim.kill9().await;
    let killed = Instant::now();
    let held = held
        .union(&probe.in_flight_ids().await)
        .copied()
        .collect::<HashSet<_>>();
    say(&format!(
        "{scenario}: killed with {} in flight (both instances)",
        held.len()
    ));

    wait_finished(&probe, EVENTS, Duration::from_secs(60)).await;
    let took = killed.elapsed();
    survivor.assert_running();

    let result = audit(&probe, &receiver, &ids, Expect::default()).await;
    report(
        scenario,
        &result,
        &format!(
            "in_flight_at_kill={} all_delivered_after_kill_ms={} taken_back={}",
            held.len(),
            took.as_millis(),
            result.rescued
        ),
    );
    result.assert_sound();
    result.assert_duplicates_at_most(held.len(), "in flight at the kill");
    assert!(
        took < Duration::from_secs(15),
        "every event delivered {took:?} after the kill, not within 15 s"
    );
    probe.close().await;
}
