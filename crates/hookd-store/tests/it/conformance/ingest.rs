//! Events coming in, by the API and through the outbox: fan-out, dedupe, payloads that cannot be sent, arrival order.

use super::*;

hookd_testkit::each_backend!(
    fan_out_targets_and_dedupes,
    outbox_rows_are_ingested_once,
    bad_payloads_fail_with_a_reason,
    odd_outbox_rows_fail_alone,
    a_batch_of_events_keeps_arrival_order,
    a_group_of_events_answers_each_as_alone,
    the_producers_traceparent_reaches_every_claim,
);

async fn fan_out_targets_and_dedupes(backend: Backend) {
    let (_db, store) = open(backend).await;
    add_endpoint(&store, "ep_all", &["*"]).await;
    add_endpoint(&store, "ep_buy", &["purchase"]).await;
    add_endpoint(&store, "ep_pay", &["payment.*"]).await;

    let first = enqueue(&store, "e1", "purchase").await;
    assert_eq!(
        first,
        Enqueued {
            event_id: "e1".into(),
            deliveries: 2,
            created: true
        }
    );
    let again = enqueue(&store, "e1", "purchase").await;
    assert_eq!(
        again,
        Enqueued {
            created: false,
            ..first
        }
    );

    let pay = store
        .enqueue_event(&event(None, "payment.done"), &limits())
        .await
        .unwrap();
    assert!(pay.event_id.starts_with("evt_"));
    assert_eq!(pay.deliveries, 2);

    let mut targeted = event(Some("e3"), "purchase");
    targeted.endpoint_id = Some("ep_pay".into());
    assert_eq!(
        store
            .enqueue_event(&targeted, &limits())
            .await
            .unwrap()
            .deliveries,
        1
    );
    let d = store
        .deliveries(
            &DeliveryFilter {
                event_id: Some("e3".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(d[0].endpoint_id, "ep_pay");
    assert_eq!(d[0].state, DeliveryState::Pending);

    let none = enqueue(&store, "e4", "refund").await;
    assert_eq!(none.deliveries, 1, "only the * endpoint");
    let stored = store.event(&"e1".into()).await.unwrap().unwrap();
    assert_eq!(stored.payload, r#"{"orderId":"o-1","amount":9900}"#);
}

async fn outbox_rows_are_ingested_once(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["refund"]).await;
    db.exec(
        "INSERT INTO hookd_outbox (event_type, payload) VALUES ('purchase', '{\"orderId\":\"o-1\",\"amount\":9900}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('dup', 'refund', '{\"n\":1}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('dup', 'refund', '{\"n\":2}');
         INSERT INTO hookd_outbox (event_type, payload, endpoint_id) VALUES ('purchase', '{}', 'ep_2');",
    )
    .await;
    // Ingest in small batches: the cursor over the outbox must not skip or repeat rows.
    let mut consumed = 0;
    loop {
        let n = store.ingest_outbox(2, &limits()).await.unwrap();
        if n == 0 {
            break;
        }
        consumed += n;
    }
    assert_eq!(consumed, 4);
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 100)
        .await
        .unwrap();
    let per_endpoint = |ep: &str| all.iter().filter(|d| d.endpoint_id == ep).count();
    assert_eq!(per_endpoint("ep_1"), 2, "purchase + dup once");
    assert_eq!(per_endpoint("ep_2"), 2, "dup once + targeted");
    assert_eq!(
        store.event(&"dup".into()).await.unwrap().unwrap().payload,
        r#"{"n":1}"#
    );
    assert_eq!(store.ingest_outbox(10, &limits()).await.unwrap(), 0);
}

async fn bad_payloads_fail_with_a_reason(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('bad', 'purchase', '{oops');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('bad id', 'purchase', '{}');",
    )
    .await;
    assert_eq!(store.ingest_outbox(10, &limits()).await.unwrap(), 2);
    let by_event = |id: &str| {
        let store = store.clone();
        let id = id.to_string();
        async move {
            let f = DeliveryFilter {
                event_id: Some(id.into()),
                ..Default::default()
            };
            store.deliveries(&f, None, 1).await.unwrap().remove(0)
        }
    };
    let d = by_event("bad").await;
    assert_eq!(d.state, DeliveryState::Failed);
    assert!(d.last_error.unwrap().contains("not valid JSON"));
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    let d = all
        .iter()
        .find(|d| d.event_id.starts_with("evt_invalid_"))
        .unwrap()
        .clone();
    assert_eq!(d.state, DeliveryState::Failed);
    assert!(d.last_error.unwrap().contains("webhook-id"));
    assert!(store.claim(10, 60_000).await.unwrap().is_empty());
    // A resend makes it claimable, and the claim says why it can never be sent.
    store.resend(d.id).await.unwrap();
    let c = store.claim(10, 60_000).await.unwrap().remove(0);
    assert!(c.payload_error.unwrap().contains("webhook-id"));

    let big = NewEvent {
        payload: format!("{{\"x\":\"{}\"}}", "a".repeat(100)),
        ..event(Some("big"), "purchase")
    };
    store
        .enqueue_event(
            &big,
            &IngestLimits {
                max_payload_bytes: 64,
                ..IngestLimits::default()
            },
        )
        .await
        .unwrap();
    let d = store
        .deliveries(
            &DeliveryFilter {
                event_id: Some("big".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    assert_eq!(d[0].state, DeliveryState::Failed);
    assert!(d[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("over the limit"));
}

async fn odd_outbox_rows_fail_alone(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    let long = "x".repeat(6000);
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('{long}', 'x', '{{}}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('fine', 'x', '{{}}');"
    ))
    .await;
    if backend == Backend::Sqlite {
        // SQLite keeps whatever a producer binds: a BLOB, and text that is not UTF-8.
        db.exec(
            "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('blob', 'x', X'7b7d');
             INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('latin1', 'x', CAST(X'7bff7d' AS TEXT));",
        )
        .await;
    }
    while store.ingest_outbox(10, &limits()).await.unwrap() > 0 {}
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    let by_event = |id: &str| {
        all.iter()
            .find(|d| d.event_id == id)
            .unwrap_or_else(|| panic!("{id}: {all:?}"))
    };
    assert_eq!(by_event("fine").state, DeliveryState::Pending);
    let bad = all
        .iter()
        .find(|d| d.event_id.starts_with("evt_invalid_"))
        .expect("the long id, under a stand-in");
    assert_eq!(bad.state, DeliveryState::Failed);
    assert!(bad.last_error.as_deref().unwrap().contains("webhook-id"));
    if backend == Backend::Sqlite {
        assert_eq!(
            by_event("blob").state,
            DeliveryState::Pending,
            "a BLOB of JSON is JSON"
        );
        assert_eq!(
            store.event(&"blob".into()).await.unwrap().unwrap().payload,
            "{}"
        );
        assert_eq!(by_event("latin1").state, DeliveryState::Failed);
    }
}

/// Ingestion writes a batch in a few statements; deliveries still get ids in arrival
/// order (an ordered endpoint sends in id order), a repeated event id in the same batch is
/// one event, and an odd row fails alone.
async fn a_batch_of_events_keeps_arrival_order(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["order.*"]).await;
    let mut values = Vec::new();
    for i in 0..50 {
        let t = if i % 2 == 0 { "order.paid" } else { "refund" };
        values.push(format!("('e{i}', '{t}', '{{\"i\":{i}}}')"));
    }
    values.push("('e7', 'order.paid', '{\"again\":true}')".into());
    values.push("('e-bad', 'order.paid', 'not json')".into());
    let (ingested, all) = ingest_outbox_rows(&db, &store, &values).await;
    assert_eq!(ingested, 52);
    // 50 events to ep_1, the 25 order events to ep_2, the bad one to both.
    assert_eq!(all.len(), 50 + 25 + 2);
    let order: Vec<String> = all
        .iter()
        .filter(|d| d.endpoint_id == "ep_1" && d.event_id != "e-bad")
        .map(|d| d.event_id.to_string())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    assert_eq!(order, expected, "ids follow arrival order");
    assert_eq!(
        store.event(&"e7".into()).await.unwrap().unwrap().payload,
        "{\"i\":7}",
        "the first of a repeated id wins"
    );
    let bad: Vec<&Delivery> = all.iter().filter(|d| d.event_id == "e-bad").collect();
    assert!(bad.iter().all(|d| d.state == DeliveryState::Failed));
    assert!(all
        .iter()
        .filter(|d| d.event_id != "e-bad")
        .all(|d| d.state == DeliveryState::Pending));
}

/// The API's group commit: one transaction, and each event answered as if written alone
/// (a repeat within the group or of a known event creates nothing and reports the first
/// count).
async fn a_group_of_events_answers_each_as_alone(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&endpoint("ep_all", &["*"]))
        .await
        .unwrap();
    store
        .insert_endpoint(&endpoint("ep_buy", &["purchase"]))
        .await
        .unwrap();
    store
        .enqueue_event(&event(Some("known"), "purchase"), &limits())
        .await
        .unwrap();

    let mut targeted = event(Some("t"), "purchase");
    targeted.endpoint_id = Some("ep_buy".into());
    let group = [
        event(Some("a"), "purchase"),
        event(Some("b"), "refund"),
        event(Some("a"), "refund"),
        event(Some("known"), "refund"),
        targeted,
        event(None, "purchase"),
    ];
    let answers = store.enqueue_events(&group, &limits()).await.unwrap();
    let seen: Vec<(&str, u64, bool)> = answers
        .iter()
        .map(|a| (a.event_id.as_str(), a.deliveries, a.created))
        .collect();
    assert_eq!(
        seen[..5],
        [
            ("a", 2, true),
            ("b", 1, true),
            ("a", 2, false),
            ("known", 2, false),
            ("t", 1, true),
        ]
    );
    assert!(seen[5].0.starts_with("evt_"));
    assert_eq!((seen[5].1, seen[5].2), (2, true));
    assert_eq!(
        store.enqueue_events(&[], &limits()).await.unwrap(),
        Vec::<Enqueued>::new()
    );
}

/// The producer's `traceparent` travels with its event to every claim of its deliveries:
/// from the API, from an outbox row claimed later, and from one leased at the read; one that
/// could not be a header value is dropped, never a reason to fail the event.
async fn the_producers_traceparent_reaches_every_claim(backend: Backend) {
    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (db, store) = open_with_endpoint(backend).await;
    let mut api = event(Some("api"), "purchase");
    api.traceparent = Some(GIVEN.into());
    let mut odd = event(Some("odd"), "purchase");
    odd.traceparent = Some("bad value\n".into());
    for e in [&api, &odd] {
        store.enqueue_event(e, &limits()).await.expect("enqueue");
    }
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, traceparent) VALUES \
         ('claimed', 'purchase', '{{}}', '{GIVEN}'), ('plain', 'purchase', '{{}}', NULL)"
    ))
    .await;
    assert_eq!(store.ingest_outbox(10, &limits()).await.unwrap(), 2);
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, traceparent) VALUES \
         ('leased', 'purchase', '{{}}', '{GIVEN}')"
    ))
    .await;
    let leased = ingest_to_room(&store, 10, 10).await.claimed;
    let mut claimed = store.claim(10, 60_000).await.unwrap();
    claimed.extend(leased);
    let trace: std::collections::HashMap<&str, Option<&str>> = claimed
        .iter()
        .map(|c| (c.event_id.as_str(), c.traceparent.as_deref()))
        .collect();
    assert_eq!(trace.len(), 5, "{trace:?}");
    for id in ["api", "claimed", "leased"] {
        assert_eq!(trace[id], Some(GIVEN), "{id}");
    }
    assert_eq!(trace["odd"], None, "not a header value: dropped");
    assert_eq!(trace["plain"], None);
}
