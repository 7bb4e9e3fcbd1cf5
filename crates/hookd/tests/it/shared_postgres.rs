//! Several hookd instances sharing one PostgreSQL database split the work without
//! delivering anything twice.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use hookd_testkit::{wait_until, Receiver, Reply, TestDb};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_each_event_once() {
    let db = TestDb::postgres().await;
    let mut config = test_config(&db);
    config.concurrency = 16;
    config.claim_batch = 16;
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    // A little latency per request, so both instances have work in flight at once.
    let receiver = Receiver::start(|_, _| Reply::hang(Duration::from_millis(2))).await;
    a.endpoint(json!({ "url": receiver.url() })).await;

    for chunk in 0..10 {
        let mut sql = String::from("BEGIN;\n");
        for i in 0..100 {
            let n = chunk * 100 + i;
            sql.push_str(&format!(
                "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e-{n}', 'purchase', '{{\"n\":{n}}}');\n"
            ));
        }
        sql.push_str("COMMIT;");
        db.exec(&sql).await;
    }

    let got = receiver.wait_for(1000, WAIT).await;
    wait_until(WAIT, "all 1000 deliveries recorded", || async {
        let done = a.deliveries("state=succeeded").await.len();
        (done == 1000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 1000, "every event arrived");
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(got.len(), 1000);

    let (sa, sb) = (
        a.metrics.attempts.with_label_values(&["success"]).get(),
        b.metrics.attempts.with_label_values(&["success"]).get(),
    );
    assert_eq!(sa + sb, 1000);
    assert!(sa > 0 && sb > 0, "both instances worked: {sa} + {sb}");
    a.stop().await;
    b.stop().await;
}
