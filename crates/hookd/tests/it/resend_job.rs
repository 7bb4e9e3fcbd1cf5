//! A bulk resend is a durable job: `hookd` killed with SIGKILL halfway through and started
//! again finishes it, and the job resends every delivery exactly once.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use hookd_store::{DeliveryFilter, DeliveryState, Outcome, Trigger};
use hookd_testkit::{wait_until, Process, Receiver, Reply, TestDb};

/// Five batches of the job (`resend_jobs::BATCH`). A job pauses while 1,000 of its resends
/// are due and not yet sent (with `HOOKD_CLAIM_BATCH` 250 below), so the kill, soon after
/// 1,000 were resent, leaves about 1,000 or more to resend.
const EVENTS: usize = 2500;

async fn start(db: &TestDb) -> Process {
    support::serve(db)
        .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
        .env("HOOKD_RETRY_SCHEDULE", "")
        .env("HOOKD_CONCURRENCY", "4")
        .env("HOOKD_CLAIM_BATCH", "250")
        .env("HOOKD_LEASE_DURATION", "3s")
        .env("HOOKD_REQUEST_TIMEOUT", "1s")
        .env("HOOKD_RESCUE_SCHEDULE", "* * * * * *")
        .env("HOOKD_POLL_INTERVAL", "20ms")
        .env("HOOKD_LOG_LEVEL", "warn")
        .start()
        .await
}

/// Waits until all `EVENTS` deliveries are in `state`.
async fn all_in(store: &dyn hookd_store::Store, state: DeliveryState, timeout: Duration) {
    let filter = DeliveryFilter {
        state: Some(state),
        ..Default::default()
    };
    wait_until(
        timeout,
        &format!("every delivery to be {state}"),
        || async {
            let n = store
                .deliveries(&filter, None, EVENTS as u32)
                .await
                .unwrap()
                .len();
            (n == EVENTS).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_resend_survives_a_kill_and_resends_each_delivery_once() {
    let db = TestDb::sqlite();

    // 2,500 deliveries that failed for good (no automatic retries).
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    let mut hookd = start(&db).await;
    let ep = hookd.api().endpoint(json!({ "url": receiver.url() })).await;
    assert!(ep["id"].is_string());
    for chunk in 0..(EVENTS / 500) {
        let rows: Vec<String> = (0..500)
            .map(|i| format!("('e-{}', 'x', '{{}}')", chunk * 500 + i))
            .collect();
        db.exec(&format!(
            "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES {};",
            rows.join(", ")
        ))
        .await;
    }
    receiver.wait_for(EVENTS, Duration::from_secs(120)).await;
    let store = hookd_store::connect(&db.url).await.unwrap();
    all_in(&*store, DeliveryState::Failed, Duration::from_secs(30)).await;

    // The receiver recovers, slowly enough that the job is still running when hookd dies.
    receiver.set_script(|_, _| Reply::hang(Duration::from_millis(2)));
    let (_, started) = hookd
        .api()
        .post("/v1/deliveries/resend", json!({ "state": "failed" }))
        .await;
    assert_eq!(started["matched"], EVENTS);
    let job = started["job_id"].as_str().unwrap().to_string();
    let progress = wait_until(Duration::from_secs(60), "the job to be partly done", || {
        let path = format!("/v1/resend-jobs/{job}");
        let api = hookd.api();
        async move {
            let (status, j) = api.get(&path).await;
            let resent = j["resent"].as_i64().filter(|_| status.is_success())?;
            (resent >= 1000).then_some(j)
        }
    })
    .await;
    hookd.kill9().await;
    assert_eq!(progress["state"], "running", "killed halfway: {progress}");
    let at_kill = store.resend_job(&job).await.unwrap().unwrap();
    assert!(at_kill.resent < EVENTS as i64, "{at_kill:?}");

    hookd.restart().await;
    let done = wait_until(
        Duration::from_secs(120),
        "the job to finish after the restart",
        || async {
            let j = store.resend_job(&job).await.unwrap().unwrap();
            j.done.then_some(j)
        },
    )
    .await;
    assert_eq!(
        (done.matched, done.resent),
        (EVENTS as i64, EVENTS as i64),
        "{done:?}"
    );
    all_in(&*store, DeliveryState::Succeeded, Duration::from_secs(60)).await;
    assert!(hookd.terminate(support::WAIT).await.success());

    // Exactly one manual attempt recorded per delivery. Attempts that were in flight when
    // hookd died show as `lost` and were made again: that is the dispatcher's at-least-once,
    // not the job resending twice.
    let all = store
        .deliveries(&DeliveryFilter::default(), None, EVENTS as u32)
        .await
        .unwrap();
    let mut per_delivery: HashMap<i64, usize> = HashMap::new();
    let mut lost = 0;
    for d in &all {
        for a in store.attempts(d.id).await.unwrap() {
            match (a.trigger, a.outcome) {
                (Trigger::Manual, Outcome::Lost) => lost += 1,
                (Trigger::Manual, _) => *per_delivery.entry(d.id).or_default() += 1,
                (Trigger::Auto, _) => {}
            }
        }
    }
    assert_eq!(per_delivery.len(), EVENTS);
    let twice: Vec<_> = per_delivery.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "deliveries with other than one manual attempt: {twice:?}"
    );
    println!("bulk resend: {EVENTS} resent once each; {lost} attempts in flight at the kill were lost and redone");
}
