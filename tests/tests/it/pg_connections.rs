//! Scenario 2: PostgreSQL connections killed mid-load, several times, with
//! `pg_terminate_backend` on every backend of the test database (hookd's pool, its LISTEN
//! connection, the producer's). hookd survives without a restart of its own, reconnects,
//! and nothing is lost. (Restarting the server would disturb other tests on the machine.)
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it pg_connections::`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::{
    audit, duplicates_outside, event_ids, exclusive, log_dir, report, say, standard_mix,
    wait_delivered, wait_fault_point, wait_finished, Backend, Expect, Options, Probe, Producer,
    Receiver, Reply, TestDb, LONG,
};

const EVENTS: usize = 4000;
const TERMINATIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_lose_nothing() {
    let _heavy = exclusive().await;
    let scenario = "pg-terminate-backend";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let db_name = db.url.rsplit('/').next().unwrap().to_string();
    let receiver = Receiver::per_event(standard_mix).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", "64");
    let mut hookd = options.start("hookd", &logs).await;
    let pid = hookd.pid();
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;

    let producer = Producer::start(&db, event_ids("pg", EVENTS), 50, Duration::from_millis(100));
    let mut in_flight_at_faults = HashSet::new();
    let mut terminated_total = 0;
    let mut since = Instant::now();
    for k in 1..=TERMINATIONS {
        let mark = EVENTS * k / (TERMINATIONS + 1);
        wait_fault_point(&receiver, mark, since, Duration::from_secs(1)).await;
        in_flight_at_faults.extend(probe.in_flight_ids().await);
        let terminated = terminate_backends(&db.url, &db_name).await;
        terminated_total += terminated;
        say(&format!(
            "{scenario}: termination {k} at {} delivered, {} committed: {terminated} backends terminated",
            receiver.ok_count(),
            producer.committed()
        ));
        assert!(terminated > 0, "hookd had connections to terminate");
        since = Instant::now();
        hookd.assert_running();
    }
    let produced = producer.finish().await;
    wait_finished(&probe, produced.committed.len(), LONG).await;

    // The same process throughout, and ready: it reconnected by itself.
    hookd.assert_running();
    assert_eq!(hookd.pid(), pid, "never restarted");
    let (status, ready) = hookd
        .api()
        .call(reqwest::Method::GET, "/readyz", None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{ready}");

    let result = audit(&probe, &receiver, &produced.committed, Expect::default()).await;
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
            "terminations={TERMINATIONS} backends_terminated={terminated_total} producer_retries={} \
             hookd_restarts=0 dup_outside_faults={}",
            produced.retried_batches,
            outside.len()
        ),
    );
    // Losing a connection loses no attempt: a duplicate needs an expired lease (a `lost`
    // attempt) or an attempt that gave up.
    result.assert_sound();
    result.assert_duplicates_at_most(
        in_flight_at_faults.len() + result.rescued,
        "in flight at a termination, or rescued after a lease expired",
    );
    probe.close().await;
}

/// A database that stalls for longer than the lease under a live process: another session
/// holds `LOCK TABLE hookd_attempts IN EXCLUSIVE MODE` for 4.5 s (lease 3 s), so hookd's
/// recorder cannot write while its dispatcher goes on claiming and sending. When the lock
/// goes, the rescuer returns every expired lease. Nothing is lost; the duplicates should be
/// at most what one process may have in flight, `concurrency`. They are not: the results
/// queued for the recorder (up to 512 in the channel plus a 512 batch) hold no permit, so
/// the dispatcher had claimed and sent far more than `concurrency` that then go stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_stall_longer_than_the_lease_duplicates_at_most_concurrency() {
    const CONCURRENCY: usize = 32;
    let _heavy = exclusive().await;
    let scenario = "pg-recorder-stall";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::per_event(standard_mix).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", &CONCURRENCY.to_string());
    let mut hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let probe = Probe::connect(&db).await;
    let ids = event_ids("stall", 3000);
    db.exec(&insert_sql(Backend::Postgres, &ids, None)).await;
    wait_delivered(&receiver, 300, "300 deliveries before the stall").await;

    let mut locker = PgConnection::connect(&db.url)
        .await
        .expect("locker connects");
    sqlx::raw_sql("BEGIN; LOCK TABLE hookd_attempts IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock hookd_attempts");
    let before = receiver.ok_count();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let in_flight = probe.in_flight().await;
    let sent_meanwhile = receiver.ok_count() - before;
    sqlx::raw_sql("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let _ = locker.close().await;
    say(&format!(
        "{scenario}: during a 4.5 s stall of the recorder hookd sent {sent_meanwhile} deliveries; {in_flight} were in flight at its end"
    ));

    wait_finished(&probe, ids.len(), LONG).await;
    hookd.assert_running();
    let result = audit(&probe, &receiver, &ids, Expect::default()).await;
    report(
        scenario,
        &result,
        &format!("concurrency={CONCURRENCY} in_flight_at_stall_end={in_flight} sent_during_stall={sent_meanwhile}"),
    );
    result.assert_sound();
    result.assert_duplicates_at_most(CONCURRENCY, "what one process may have in flight");
    probe.close().await;
}

/// With polling slowed to 10 s, hookd notices a producer's commit only through LISTEN/NOTIFY.
/// After its LISTEN connection is terminated it must listen again by itself: a row
/// committed afterwards is still delivered in well under the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connection_comes_back_after_termination() {
    let _heavy = exclusive().await;
    let scenario = "pg-listen-reconnect";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let db_name = db.url.rsplit('/').next().unwrap().to_string();
    let receiver = Receiver::per_event(|_, _| Reply::ok()).await;
    let options = Options::new(&db.url).set("HOOKD_POLL_INTERVAL", "10s");
    let mut hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;
    let ids = event_ids("ln", 4);
    let mut latencies = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        if k > 0 {
            let terminated = terminate_backends(&db.url, &db_name).await;
            assert!(terminated > 0);
            // Let the LISTEN connection notice and come back (its backoff starts at 50 ms).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let committed = Instant::now();
        db.exec(&insert_sql(
            Backend::Postgres,
            std::slice::from_ref(id),
            None,
        ))
        .await;
        wait_delivered(&receiver, k + 1, &format!("{id} delivered")).await;
        latencies.push(committed.elapsed());
    }
    hookd.assert_running();
    say(&format!(
        "{scenario}: commit-to-delivery after 0..3 terminations: {latencies:?} (poll interval 10 s)"
    ));
    for (k, latency) in latencies.iter().enumerate() {
        assert!(
            *latency < Duration::from_secs(5),
            "after {k} terminations a commit took {latency:?} to be delivered: hookd waited for its poll, LISTEN did not come back"
        );
    }
}

/// Terminates every other backend connected to `db_name`; returns how many.
async fn terminate_backends(url: &str, db_name: &str) -> usize {
    let mut conn = PgConnection::connect(url).await.expect("admin connection");
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db_name)
    .fetch_all(&mut conn)
    .await
    .expect("pg_terminate_backend");
    let _ = conn.close().await;
    killed.iter().filter(|(ok,)| *ok).count()
}
