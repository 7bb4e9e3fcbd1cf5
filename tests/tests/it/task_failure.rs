//! Scenario 8: an essential task dies mid-load (the recorder panics, injected through the
//! daemon's `fault-injection` feature and tripped by `SIGUSR1`), on SQLite and PostgreSQL.
//! hookd answers `/readyz` with 503 and the reason while it shuts down, exits non-zero
//! within seconds, and, restarted as systemd, Docker or Kubernetes would, loses nothing:
//! the attempts whose results died with the recorder are rescued when their leases expire
//! and sent again.
//!
//! The daemon must be built with the feature (`cargo test --workspace` builds it so):
//! `cargo build -p hookd --features fault-injection && cargo test -p hookd-fault-tests --test it task_failure::`

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use hookd_fault_tests::producer::EVENT_TYPE;
use hookd_fault_tests::{
    audit, backend_name, event_ids, exclusive, hookd_bin, log_dir, report, standard_mix,
    wait_delivered, wait_finished, wait_until, Backend, Expect, Options, Probe, Producer, Receiver,
    TestDb, LONG,
};
use hookd_testkit::Reply;

hookd_testkit::each_backend!(a_recorder_that_panics_mid_load_stops_hookd_and_loses_nothing);

const EVENTS: usize = 600;
const REASON: &str = "the recorder stopped: panicked: injected fault: the recorder panics";

async fn a_recorder_that_panics_mid_load_stops_hookd_and_loses_nothing(backend: Backend) {
    let _heavy = exclusive().await;
    let scenario = format!("task-failure-{}", backend_name(backend));
    let logs = log_dir(&scenario);
    let db = TestDb::new(backend).await;
    let receiver =
        Receiver::per_event(|id, n| standard_mix(id, n).after(Duration::from_millis(20))).await;
    // Never answers: its attempt is in flight when the fault comes (for up to 3 s, the
    // endpoint's timeout), and the shutdown waits for it while answering /readyz.
    let slow = Receiver::start(|_, _| Reply::hang(Duration::from_secs(30))).await;
    let options = Options::new(&db.url)
        .set("HOOKD_CONCURRENCY", "64")
        .set("HOOKD_LEASE_DURATION", "6s")
        .set("HOOKD_TEST_FAULT", "recorder");
    let mut hookd = options.start("hookd", &logs).await;
    assert!(
        hookd.log_tail(50).contains("fault injection armed"),
        "{} was built without the feature fault-injection: run `cargo build -p hookd --features fault-injection`",
        hookd_bin().display()
    );
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": [EVENT_TYPE] }))
        .await;
    hookd
        .api().endpoint(json!({ "url": slow.url(), "event_types": ["slow"], "timeout": "3s", "retry_schedule": [] }))
        .await;
    let probe = Probe::connect(&db).await;

    let producer = Producer::start(&db, event_ids("tf", EVENTS), 25, Duration::from_millis(50));
    wait_delivered(&receiver, EVENTS / 4, "a quarter delivered").await;
    let (status, body) = hookd
        .api()
        .call(
            reqwest::Method::POST,
            "/v1/events",
            Some(json!({ "event_type": "slow", "payload": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    slow.wait_for(1, LONG).await;

    hookd.signal("USR1");
    let tripped = Instant::now();
    wait_until(Duration::from_secs(10), "/readyz to say why", || async {
        hookd.api().readyz().await.filter(|(status, body)| {
            *status == StatusCode::SERVICE_UNAVAILABLE && body["reason"] == REASON
        })
    })
    .await;
    let exit = hookd.wait_exit(Duration::from_secs(20)).await;
    let took = tripped.elapsed();
    let log = hookd.log_tail(50);
    assert_eq!(exit.code(), Some(1), "exits with an error:\n{log}");
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after the fault:\n{log}"
    );
    assert!(log.contains(REASON), "the log says why:\n{log}");
    let unrecorded = probe.in_flight().await;
    assert!(
        unrecorded >= 1,
        "the slow attempt's result died with the recorder: its delivery is still in flight"
    );

    hookd.restart().await;
    let produced = producer.finish().await;
    wait_finished(&probe, produced.committed.len(), LONG).await;
    hookd.assert_running();
    let result = audit(&probe, &receiver, &produced.committed, Expect::default()).await;
    report(
        &scenario,
        &result,
        &format!(
            "exit_after_ms={} in_flight_at_exit={unrecorded}",
            took.as_millis()
        ),
    );
    result.assert_sound();
    assert!(
        result.rescued as i64 >= unrecorded,
        "{result}: every delivery left in flight was rescued ({} of {unrecorded})",
        result.rescued
    );
    let exit = hookd.terminate(Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0), "a graceful stop still exits 0");
    probe.close().await;
}
