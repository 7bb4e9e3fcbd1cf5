//! Scenario 3: the SQLite file locked by another writer for a while (`BEGIN IMMEDIATE`
//! held 2.5 s, with rows of its own, then committed), several times mid-load. hookd waits
//! (busy timeout) and goes on; nothing is lost, the locker's rows included.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it sqlite_lock::`

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::{
    audit, duplicates_outside, event_ids, exclusive, log_dir, report, say, standard_mix,
    wait_fault_point, wait_finished, Backend, Expect, Options, Probe, Producer, Receiver, TestDb,
    LONG,
};

const EVENTS: usize = 4000;
const LOCKS: usize = 3;
const HOLD: Duration = Duration::from_millis(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_file_loses_nothing() {
    let _heavy = exclusive().await;
    let scenario = "sqlite-lock";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::per_event(standard_mix).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", "64");
    let mut hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    let producer = Producer::start(&db, event_ids("lk", EVENTS), 50, Duration::from_millis(100));
    let mut locker_ids = Vec::new();
    let mut in_flight_at_faults = HashSet::new();
    let mut since = Instant::now();
    for k in 1..=LOCKS {
        let mark = EVENTS * k / (LOCKS + 1);
        wait_fault_point(&receiver, mark, since, Duration::from_secs(1)).await;
        let mut locker = SqliteConnection::connect_with(
            &SqliteConnectOptions::from_str(&db.url)
                .unwrap()
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("locker connects");
        locker
            .execute("BEGIN IMMEDIATE")
            .await
            .expect("take the write lock");
        let locked_at = Instant::now();
        let before = receiver.ok_count();
        in_flight_at_faults.extend(probe.in_flight_ids().await);
        // The locker is a producer too: its rows commit with the lock's release.
        let ids = event_ids(&format!("locker{k}"), 10);
        let sql = insert_sql(Backend::Sqlite, &ids, None);
        let inner = sql
            .trim_start_matches("BEGIN IMMEDIATE;")
            .trim_end_matches("COMMIT;");
        locker.execute(inner).await.expect("insert under the lock");
        tokio::time::sleep(HOLD.saturating_sub(locked_at.elapsed())).await;
        in_flight_at_faults.extend(probe.in_flight_ids().await);
        let during = receiver.ok_count() - before;
        locker.execute("COMMIT").await.expect("release the lock");
        let _ = locker.close().await;
        locker_ids.extend(ids);
        say(&format!(
            "{scenario}: lock {k} held {:?} at {before} delivered: {during} answered 2xx meanwhile",
            locked_at.elapsed()
        ));
        hookd.assert_running();
        since = Instant::now();
    }
    let mut committed = producer.finish().await.committed;
    committed.extend(locker_ids);
    wait_finished(&probe, committed.len(), LONG).await;
    hookd.assert_running();

    let result = audit(&probe, &receiver, &committed, Expect::default()).await;
    let outside = duplicates_outside(
        &result,
        &probe.deliveries().await,
        &probe.attempts().await,
        &in_flight_at_faults,
    );
    report(
        scenario,
        &result,
        &format!(
            "locks={LOCKS} hold={HOLD:?} in_flight_during_locks={} dup_outside_locks={}",
            in_flight_at_faults.len(),
            outside.len()
        ),
    );
    result.assert_sound();
    result.assert_duplicates_at_most(
        in_flight_at_faults.len() + result.rescued,
        "in flight during a lock, or rescued after a lease expired",
    );
    probe.close().await;
}
