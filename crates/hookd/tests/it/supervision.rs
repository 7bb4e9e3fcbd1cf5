//! A task that dies does not take delivery with it silently: `/readyz` says which and how at
//! once, `hookd_task_failures_total` counts it, and `run_until_stopped` returns the failure
//! within seconds, so that the process exits non-zero and is restarted. The failures are
//! injected through the `fault-injection` feature (src/daemon/fault.rs).

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use hookd::daemon::fault::Fault;
use hookd::daemon::supervisor::Task;
use hookd_testkit::{wait_until, Backend, Receiver, Reply, TestDb};
use support::*;

hookd_testkit::each_backend!(
    a_dispatcher_that_panics_stops_hookd_with_an_error,
    a_recorder_that_panics_stops_hookd_with_an_error,
);

async fn a_dispatcher_that_panics_stops_hookd_with_an_error(backend: Backend) {
    fails(
        backend,
        Task::Dispatcher,
        "the dispatcher stopped: panicked: injected fault: the dispatcher panics",
    )
    .await;
}

async fn a_recorder_that_panics_stops_hookd_with_an_error(backend: Backend) {
    fails(
        backend,
        Task::Recorder,
        "the recorder stopped: panicked: injected fault: the recorder panics",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_writer_whose_thread_ended_stops_hookd_with_an_error() {
    fails(
        Backend::Sqlite,
        Task::DatabaseWriter,
        "the database writer stopped: the SQLite write connection's thread ended",
    )
    .await;
}

/// hookd with an attempt in flight (to a receiver slower than the request timeout), when
/// `task` fails: it answers `/readyz` with `reason` while it shuts down, and stops with it.
async fn fails(backend: Backend, task: Task, reason: &str) {
    let db = TestDb::new(backend).await;
    let fault = Fault::new(task);
    let mut config = test_config(&db);
    config.fault = Some(fault.clone());
    let app = TestApp::spawn_with(config).await;
    let slow = Receiver::start(|_, _| Reply::hang(Duration::from_secs(3))).await;
    app.endpoint(json!({ "url": slow.url(), "retry_schedule": [] }))
        .await;
    wait_until(WAIT, "/readyz to answer 200", || async {
        app.readyz()
            .await
            .filter(|(status, _)| *status == StatusCode::OK)
    })
    .await;
    app.event(json!({ "event_type": "order.paid", "payload": {} }))
        .await;
    slow.wait_for(1, WAIT).await;

    fault.trip();
    let tripped = Instant::now();
    let (_, body) = wait_until(WAIT, &format!("/readyz to say {reason:?}"), || async {
        app.readyz().await.filter(|(status, body)| {
            *status == StatusCode::SERVICE_UNAVAILABLE && body["reason"] == reason
        })
    })
    .await;
    assert_eq!(body, json!({ "status": "not_ready", "reason": reason }));

    let metrics = app.metrics.clone();
    let stopped = app.stops_by_itself(Duration::from_secs(15)).await;
    let took = tripped.elapsed();
    let err = stopped.expect_err("hookd stops with an error");
    assert_eq!(err.to_string(), reason);
    assert!(
        took < Duration::from_secs(10),
        "stopped {took:?} after the fault"
    );
    let scrape = metrics.render();
    let series = format!("hookd_task_failures_total{{task=\"{}\"}} 1", task.as_str());
    assert!(scrape.contains(&series), "{series} in\n{scrape}");
}
