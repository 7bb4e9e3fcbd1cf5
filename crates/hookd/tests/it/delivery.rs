//! The dispatch path end to end, on SQLite and PostgreSQL: producer rows in, signed POSTs
//! out to real receivers on 127.0.0.1, retries on a millisecond ladder, manual resends.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use hookd_testkit::{wait_until, Backend, Received, Receiver, Reply, TestDb};
use support::*;

hookd_testkit::each_backend!(
    outbox_rows_arrive_once_signed,
    fan_out_targeting_and_dedupe,
    retries_follow_the_schedule,
    always_failing_ends_failed_then_manual_resend,
    hanging_receiver_is_a_timeout,
    empty_schedule_means_manual_resend_only,
    expired_lease_is_rescued_and_delivered,
    bad_payload_rows_fail_and_the_daemon_goes_on,
    api_events_go_to_the_pool_without_a_claim,
);

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOSS_SECRET: &str = "toss-test-secret-key-0001";

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies a Standard Webhooks request the way the specification says a receiver must,
/// written out here rather than through `hookd_verify`, which hookd signs with.
fn verify_standard(r: &Received) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - ts.parse::<i64>().unwrap()).abs() < 300,
        "timestamp {ts} is the time of sending"
    );
    let key = BASE64.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let expected = format!(
        "v1,{}",
        BASE64.encode(hmac_sha256(
            &key,
            format!("{id}.{ts}.{}", r.body_str()).as_bytes()
        ))
    );
    let given = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        given.split(' ').any(|s| s == expected),
        "{given} != {expected}"
    );
}

/// Verifies a Toss request as seed 003's receiver does.
fn verify_toss(r: &Received) {
    let time = r
        .header("tosspayments-webhook-transmission-time")
        .expect("transmission time");
    chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    assert!(time.ends_with('Z'), "UTC: {time}");
    let expected = hex::encode(hmac_sha256(
        TOSS_SECRET.as_bytes(),
        format!("{}:{time}", r.body_str()).as_bytes(),
    ));
    assert_eq!(
        r.header("tosspayments-webhook-signature"),
        Some(expected.as_str())
    );
    assert!(r.header("webhook-signature").is_none());
}

async fn outbox_rows_arrive_once_signed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let standard = Receiver::ok().await;
    let toss = Receiver::ok().await;
    let plain = Receiver::ok().await;
    let ep_standard = app
        .endpoint(json!({ "url": standard.url(), "secret": SECRET, "bearer_token": "tok-123" }))
        .await;
    app.endpoint(json!({ "url": toss.url(), "signature_scheme": "toss", "secret": TOSS_SECRET }))
        .await;
    app.endpoint(json!({ "url": plain.url(), "signature_scheme": "none" }))
        .await;
    assert_eq!(ep_standard["secret"], SECRET);

    // 200 rows in one producer transaction, inserted with the contract's plain SQL.
    let mut sql = String::from("BEGIN;\n");
    for i in 0..200 {
        sql.push_str(&format!(
            "INSERT INTO hookd_outbox (event_type, payload) VALUES ('purchase', '{{\"orderId\":\"o-{i}\",\"amount\":{}}}');\n",
            9900 + i
        ));
    }
    sql.push_str("COMMIT;");
    db.exec(&sql).await;

    for (receiver, verify) in [
        (&standard, verify_standard as fn(&Received)),
        (&toss, verify_toss),
        (&plain, |_: &Received| {}),
    ] {
        let got = receiver.wait_for(200, WAIT).await;
        let mut by_id: HashMap<String, &Received> = HashMap::new();
        for r in &got {
            assert!(
                by_id
                    .insert(r.header("webhook-id").unwrap().to_string(), r)
                    .is_none(),
                "delivered twice"
            );
            verify(r);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(r.header("user-agent").unwrap().starts_with("hookd/"));
        }
        let mut bodies: Vec<String> = got.iter().map(|r| r.body_str().to_string()).collect();
        bodies.sort();
        let mut want: Vec<String> = (0..200)
            .map(|i| format!("{{\"orderId\":\"o-{i}\",\"amount\":{}}}", 9900 + i))
            .collect();
        want.sort();
        assert_eq!(bodies, want, "bodies are the payloads, byte for byte");
    }
    assert!(standard
        .received()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer tok-123")));
    assert!(toss
        .received()
        .iter()
        .all(|r| r.header("authorization").is_none()));
    assert!(plain
        .received()
        .iter()
        .all(|r| r.header("webhook-signature").is_none()
            && r.header("tosspayments-webhook-signature").is_none()));

    let all = app.wait_all_finished(600).await;
    assert!(all
        .iter()
        .all(|d| d["state"] == "succeeded" && d["attempts"] == 1));
    // Nothing more arrives after everything succeeded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(standard.count() + toss.count() + plain.count(), 600);
    app.stop().await;
}

async fn fan_out_targeting_and_dedupe(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (all, buys, pays) = (
        Receiver::ok().await,
        Receiver::ok().await,
        Receiver::ok().await,
    );
    app.endpoint(json!({ "url": all.url(), "event_types": ["*"] }))
        .await;
    let buys_ep = app
        .endpoint(json!({ "url": buys.url(), "event_types": ["purchase", "refund"] }))
        .await;
    app.endpoint(json!({ "url": pays.url(), "event_types": ["payment.*"] }))
        .await;

    let first = app
        .event(json!({ "event_type": "purchase", "event_id": "evt-1", "payload": {"n": 1} }))
        .await;
    assert_eq!(first, json!({ "event_id": "evt-1", "deliveries": 2 }));
    let (status, again) = app
        .post(
            "/v1/events",
            json!({ "event_type": "purchase", "event_id": "evt-1", "payload": {"n": 2} }),
        )
        .await;
    assert_eq!(
        (status, again),
        (StatusCode::OK, first),
        "a repeated event_id creates nothing"
    );
    app.event(
        json!({ "event_type": "payment.succeeded", "event_id": "evt-2", "payload": {"n": 3} }),
    )
    .await;
    let targeted = app
        .event(json!({ "event_type": "payment.refunded", "event_id": "evt-3", "payload": {}, "endpoint_id": buys_ep["id"] }))
        .await;
    assert_eq!(targeted["deliveries"], 1);
    // The same dedupe through the outbox: one row with a known id, two rows with a new one.
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('evt-1', 'purchase', '{}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('evt-4', 'refund', '{\"n\":4}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('evt-4', 'refund', '{\"n\":5}');",
    )
    .await;

    let ids = |r: &Receiver| {
        let mut v: Vec<String> = r
            .received()
            .iter()
            .map(|x| x.header("webhook-id").unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    app.wait_all_finished(7).await;
    assert_eq!(ids(&all), ["evt-1", "evt-2", "evt-4"]);
    assert_eq!(ids(&buys), ["evt-1", "evt-3", "evt-4"]);
    assert_eq!(ids(&pays), ["evt-2"]);
    assert_eq!(
        buys.received()
            .iter()
            .find(|r| r.header("webhook-id") == Some("evt-4"))
            .unwrap()
            .body_str(),
        "{\"n\":4}"
    );
    app.stop().await;
}

async fn retries_follow_the_schedule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::start(|n, _| {
        if n < 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    app.endpoint(json!({ "url": receiver.url(), "retry_schedule": ["150ms", "300ms", "1h"] }))
        .await;
    app.event(json!({ "event_type": "purchase", "event_id": "e-retry", "payload": {"a": 1} }))
        .await;

    let got = receiver.wait_for(3, WAIT).await;
    let d = app.deliveries("event_id=e-retry").await.remove(0);
    let d = app.wait_for_state(id(&d), "succeeded").await;
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status_code"], 200);
    let log = d["attempt_log"].as_array().unwrap();
    let summary: Vec<(i64, &str, &str, Option<i64>)> = log
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["trigger"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
                a["status_code"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "auto", "http_error", Some(500)),
            (2, "auto", "http_error", Some(500)),
            (3, "auto", "success", Some(200))
        ]
    );
    assert_eq!(log[0]["error"], "HTTP 500 Internal Server Error");
    assert!(log[0]["started_at"].as_str().unwrap().ends_with('Z'));
    // Spaced by at least the schedule, counted from the end of the failed attempt.
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(150),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(300),
        "{:?}",
        got[2].at - got[1].at
    );
    // Every attempt carries the same webhook-id and a fresh signature.
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == Some("e-retry")));
    app.stop().await;
}

async fn always_failing_ends_failed_then_manual_resend(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver =
        Receiver::start(|_, _| Reply::status(503).with_body("down for maintenance")).await;
    // No retry_schedule on the endpoint: the global one (50ms, 100ms) applies.
    app.endpoint(json!({ "url": receiver.url() })).await;
    app.event(json!({ "event_type": "refund", "event_id": "e-fail", "payload": {} }))
        .await;

    let d = app.deliveries("event_id=e-fail").await.remove(0);
    let d = app.wait_for_state(id(&d), "failed").await;
    assert_eq!(d["attempts"], 3, "schedule + 1 attempts");
    assert_eq!(d["next_attempt_at"], Value::Null);
    assert_eq!(d["attempt_log"][2]["response_body"], "down for maintenance");
    assert_eq!(receiver.count(), 3);

    receiver.set_script(|_, _| Reply::ok());
    let (status, resent) = app
        .post(&format!("/v1/deliveries/{}/resend", id(&d)), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resent}");
    let d = app.wait_for_state(id(&d), "succeeded").await;
    assert_eq!(d["attempts"], 4);
    let last = &d["attempt_log"][3];
    assert_eq!(
        (
            last["attempt"].as_i64(),
            last["trigger"].as_str(),
            last["outcome"].as_str()
        ),
        (Some(4), Some("manual"), Some("success"))
    );
    let got = receiver.wait_for(4, WAIT).await;
    assert_eq!(
        got[3].header("webhook-id"),
        Some("e-fail"),
        "the same id on a resend"
    );

    // A resend of a succeeded delivery is one more attempt, and then nothing.
    app.post(&format!("/v1/deliveries/{}/resend", id(&d)), json!({}))
        .await;
    let d = wait_until(WAIT, "the fifth attempt", || async {
        let (_, d) = app.get(&format!("/v1/deliveries/{}", id(&d))).await;
        (d["attempts"] == 5 && d["state"] == "succeeded").then_some(d)
    })
    .await;
    assert_eq!(d["attempt_log"][4]["trigger"], "manual");
    app.stop().await;
}

async fn hanging_receiver_is_a_timeout(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::start(|_, _| Reply::hang(Duration::from_secs(5))).await;
    app.endpoint(json!({ "url": receiver.url(), "timeout": "300ms", "retry_schedule": [] }))
        .await;
    app.event(json!({ "event_type": "x", "event_id": "e-hang", "payload": {} }))
        .await;
    let d = app.deliveries("event_id=e-hang").await.remove(0);
    let d = app.wait_for_state(id(&d), "failed").await;
    let attempt = &d["attempt_log"][0];
    assert_eq!(attempt["outcome"], "timeout");
    assert_eq!(attempt["status_code"], Value::Null);
    let ms = attempt["duration_ms"].as_i64().unwrap();
    assert!((300..2000).contains(&ms), "cut at the timeout: {ms} ms");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 300ms"),
        "{}",
        d["last_error"]
    );
    app.stop().await;
}

async fn empty_schedule_means_manual_resend_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db);
    config.retry_schedule = Vec::new(); // HOOKD_RETRY_SCHEDULE= (nachocode's policy)
    let app = TestApp::spawn_with(config).await;
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    app.event(json!({ "event_type": "purchase", "event_id": "e-once", "payload": {} }))
        .await;
    let d = app.deliveries("event_id=e-once").await.remove(0);
    let d = app.wait_for_state(id(&d), "failed").await;
    assert_eq!(d["attempts"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1, "no automatic retry");

    let (status, body) = app
        .post("/v1/deliveries/resend", json!({ "state": "failed" }))
        .await;
    assert_eq!(
        (status, &body["matched"]),
        (StatusCode::ACCEPTED, &json!(1))
    );
    let job = body["job_id"].as_str().unwrap();
    wait_until(WAIT, "the resend job to finish", || async {
        let (_, j) = app.get(&format!("/v1/resend-jobs/{job}")).await;
        (j["state"] == "done").then_some(j)
    })
    .await;
    let d = app.wait_for_state(id(&d), "succeeded").await;
    assert_eq!(d["attempt_log"][1]["trigger"], "manual");
    app.stop().await;
}

async fn expired_lease_is_rescued_and_delivered(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A worker claims a delivery and dies: claim straight from the store, before the
    // daemon runs, with a short lease, and never complete it.
    let store = hookd_store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let receiver = Receiver::ok().await;
    let mut ep = hookd_store::Endpoint {
        id: "ep_lost".into(),
        url: receiver.url(),
        event_types: vec!["*".into()],
        secret: SECRET.into(),
        enabled: true,
        ..Default::default()
    };
    ep = store.insert_endpoint(&ep).await.unwrap();
    let event = hookd_store::NewEvent {
        event_id: Some("e-lost".into()),
        event_type: "x".into(),
        payload: "{}".into(),
        endpoint_id: None,
        tenant_id: None,
        traceparent: None,
    };
    store
        .enqueue_event(&event, &Default::default())
        .await
        .unwrap();
    let dead = store.claim(1, 300).await.unwrap().remove(0);
    assert_eq!(*dead.endpoint, ep);

    let app = TestApp::spawn(&db).await;
    let d = app.wait_for_state(dead.delivery_id, "succeeded").await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0]["outcome"].as_str(), log[1]["outcome"].as_str()),
        (Some("lost"), Some("success"))
    );
    assert_eq!(receiver.count(), 1);
    assert_eq!(app.metrics.lease_rescues.get(), 1);

    // The dead worker comes back and reports: its write is fenced off.
    let stale = hookd_store::Completion {
        delivery_id: dead.delivery_id,
        lease_token: dead.lease_token.clone(),
        endpoint_id: dead.endpoint.id.clone(),
        ordered: false,
        record: hookd_store::AttemptRecord {
            attempt: dead.attempt,
            trigger: dead.trigger,
            started_at: 0,
            duration_ms: 1,
            status_code: Some(500),
            outcome: hookd_store::Outcome::HttpError,
            error: None,
            response_body: None,
        },
        next: hookd_store::Next::Failed,
    };
    assert_eq!(store.complete(&[stale]).await.unwrap(), vec![false]);
    let (_, d) = app
        .get(&format!("/v1/deliveries/{}", dead.delivery_id))
        .await;
    assert_eq!(d["state"], "succeeded");
    app.stop().await;
}

async fn bad_payload_rows_fail_and_the_daemon_goes_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url() })).await;
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e-bad', 'purchase', 'not json at all');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e-good', 'purchase', '{\"ok\":true}');",
    )
    .await;
    let all = app.wait_all_finished(2).await;
    let bad = all.iter().find(|d| d["event_id"] == "e-bad").unwrap();
    assert_eq!(bad["state"], "failed");
    assert!(
        bad["last_error"]
            .as_str()
            .unwrap()
            .contains("payload is not valid JSON"),
        "{bad}"
    );
    assert_eq!(bad["attempts"], 0);
    let good = all.iter().find(|d| d["event_id"] == "e-good").unwrap();
    assert_eq!(good["state"], "succeeded");
    assert_eq!(receiver.count(), 1);
    let (_, detail) = app.get(&format!("/v1/deliveries/{}", id(bad))).await;
    assert_eq!(detail["payload"], "not json at all", "shown as text");

    // A resend by hand cannot send it either: it fails again, with the reason, unsent.
    let (status, _) = app
        .post(&format!("/v1/deliveries/{}/resend", id(bad)), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again = wait_until(WAIT, "the resent bad delivery to fail again", || async {
        let (_, d) = app.get(&format!("/v1/deliveries/{}", id(bad))).await;
        (d["state"] == "failed" && d["finished_at"] != bad["finished_at"]).then_some(d)
    })
    .await;
    assert_eq!(again["attempts"], 0);
    assert!(again["last_error"]
        .as_str()
        .unwrap()
        .contains("payload is not valid JSON"));
    assert_eq!(receiver.count(), 1, "nothing was sent");
    app.stop().await;
}

/// On SQLite `POST /v1/events` leases the deliveries it creates to the dispatcher while
/// the pool has room: none of them costs a claim. On PostgreSQL claims take them.
async fn api_events_go_to_the_pool_without_a_claim(backend: Backend) {
    let leases = backend == Backend::Sqlite;
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let receiver = Receiver::ok().await;
    app.endpoint(standard_endpoint(&receiver.url())).await;
    // The first event shows the dispatcher at work (it has published its room once).
    app.event(json!({ "event_type": "purchase", "payload": {"n": 0} }))
        .await;
    receiver.wait_for(1, WAIT).await;
    let leased = app.metrics.ingest_leased.get();
    let claims = app.metrics.claim_batch.get_sample_count();

    for n in 1..=20 {
        app.event(json!({ "event_type": "purchase", "payload": {"n": n} }))
            .await;
    }
    receiver.wait_for(21, WAIT).await;
    app.wait_all_finished(21).await;
    let (leased, claims) = (
        app.metrics.ingest_leased.get() - leased,
        app.metrics.claim_batch.get_sample_count() - claims,
    );
    if leases {
        assert_eq!(leased, 20, "every API event was leased as it was written");
        assert_eq!(claims, 0, "no claim found work");
    } else {
        assert_eq!(leased, 0, "claims take API events on PostgreSQL");
        assert!(claims > 0);
    }
    app.stop().await;
}
