//! An ingest that leases the deliveries it creates to its caller, and leaves in the outbox what it has no room for.

use super::*;

hookd_testkit::each_backend!(
    an_ingest_leases_what_it_has_room_for,
    a_large_ingest_hands_out_the_id_of_each_new_delivery,
    an_ingest_leaves_rows_for_busy_endpoints_in_the_outbox,
    a_group_of_events_leases_what_there_is_room_for_and_stores_the_rest,
);

async fn outbox_len(db: &TestDb) -> i64 {
    db.query_i64("SELECT COUNT(*) FROM hookd_outbox").await
}

async fn an_ingest_leases_what_it_has_room_for(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["refund"]).await;
    // e1 is already stored: its outbox row is a duplicate and creates nothing.
    enqueue(&store, "e1", "purchase").await;
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e1', 'purchase', '{}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e2', 'purchase', '{\"n\":2}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e3', 'refund', '{\"n\":3}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e4', 'purchase', '{\"n\":4}');
         INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('e5', 'purchase', '{\"n\":5}');",
    )
    .await;

    // Room for 3: e2 (1 delivery) and e3 (fanned out to 2) fill it; e4 and e5 stay queued.
    let first = store
        .ingest_leasing(500, &limits(), Some(lease(3, &[], Consume::ToRoom, 60_000)))
        .await
        .unwrap();
    assert_eq!(
        (
            first.rows,
            first.claimed.len(),
            first.due,
            first.more,
            first.blocked
        ),
        (3, 3, false, true, false)
    );
    assert_eq!(outbox_len(&db).await, 2);
    let leased: Vec<(&str, &str)> = first
        .claimed
        .iter()
        .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
        .collect();
    assert_eq!(leased, [("e2", "ep_1"), ("e3", "ep_1"), ("e3", "ep_2")]);
    for c in &first.claimed {
        assert_eq!(
            (c.attempt, c.trigger, c.auto_attempts),
            (1, Trigger::Auto, 1)
        );
        assert_eq!(c.payload_error, None);
        assert_eq!(
            c.endpoint.url,
            format!("http://127.0.0.1:9/{}", c.endpoint.id)
        );
        let d = store.delivery(c.delivery_id).await.unwrap().unwrap();
        assert_eq!((d.state, d.attempts), (DeliveryState::InFlight, 1));
        // The id handed out is the row of that event and endpoint.
        assert_eq!(
            (d.event_id.as_str(), d.endpoint_id.as_str()),
            (c.event_id.as_str(), c.endpoint.id.as_str())
        );
    }
    assert_eq!(first.claimed[1].payload, r#"{"n":3}"#);
    assert_eq!(
        store.claim(10, 60_000).await.unwrap().len(),
        1,
        "only e1's delivery, enqueued before, is left to claim"
    );

    // A leased delivery is fenced like a claimed one.
    let c = &first.claimed[0];
    let mut stale = succeeded(c);
    stale.lease_token = "not-the-lease".into();
    assert_eq!(store.complete(&[stale]).await.unwrap(), vec![false]);
    assert_eq!(store.complete(&[succeeded(c)]).await.unwrap(), vec![true]);
    let log = store.attempts(c.delivery_id).await.unwrap();
    assert_eq!((log.len(), log[0].attempt), (1, 1));

    // And its lease expires like a claimed one's.
    let lost = store
        .ingest_leasing(500, &limits(), Some(lease(1, &[], Consume::ToRoom, 1)))
        .await
        .unwrap();
    assert_eq!((lost.rows, lost.claimed.len(), lost.more), (1, 1, true));
    wait_until(Duration::from_secs(5), "the lease to be rescued", || {
        let store = store.clone();
        async move { (store.rescue_expired().await.unwrap() == 1).then_some(()) }
    })
    .await;
    let d = store
        .delivery(lost.claimed[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));

    // More room than rows: everything, and the outbox is empty.
    let rest = ingest_to_room(&store, 500, 10).await;
    assert_eq!((rest.rows, rest.claimed.len(), rest.more), (1, 1, false));
    assert_eq!(outbox_len(&db).await, 0);
    let empty = ingest_to_room(&store, 500, 10).await;
    assert_eq!((empty.rows, empty.claimed.len(), empty.more), (0, 0, false));
}

/// More events and deliveries than one statement writes, some already stored: every new
/// delivery is leased once, under the id of its own row.
async fn a_large_ingest_hands_out_the_id_of_each_new_delivery(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_2", &["purchase"]).await;
    let stored = ["e10", "e511", "e512", "e699"];
    for id in stored {
        store
            .enqueue_event(&event(Some(id), "purchase"), &limits())
            .await
            .unwrap();
    }
    let values: Vec<String> = (0..700)
        .map(|i| format!("('e{i}', 'purchase', '{{\"n\":{i}}}')"))
        .collect();
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES {}",
        values.join(", ")
    ))
    .await;
    let ingested = ingest_to_room(&store, 1000, 5000).await;
    assert_eq!(ingested.rows, 700);
    assert_eq!(ingested.claimed.len(), 2 * (700 - stored.len()));
    let mut ids = HashSet::new();
    let mut pairs = HashSet::new();
    for c in &ingested.claimed {
        assert!(
            ids.insert(c.delivery_id),
            "id {} handed out twice",
            c.delivery_id
        );
        assert!(pairs.insert((c.event_id.clone(), c.endpoint.id.clone())));
        assert!(
            !stored.contains(&c.event_id.as_str()),
            "{} was stored",
            c.event_id
        );
        let n = c.event_id.trim_start_matches('e');
        assert_eq!(c.payload, format!("{{\"n\":{n}}}"));
        let d = store.delivery(c.delivery_id).await.unwrap().unwrap();
        assert_eq!(
            (d.event_id.as_str(), d.endpoint_id.as_str(), d.state),
            (
                c.event_id.as_str(),
                c.endpoint.id.as_str(),
                DeliveryState::InFlight
            )
        );
    }
    // The stored events kept their own deliveries, pending, and gained none.
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'pending'")
            .await,
        2 * stored.len() as i64
    );
    assert_eq!(outbox_len(&db).await, 0);
}

async fn an_ingest_leaves_rows_for_busy_endpoints_in_the_outbox(backend: Backend) {
    let (db, store) = open(backend).await;
    for id in ["ep_a", "ep_b"] {
        store.insert_endpoint(&endpoint(id, &["*"])).await.unwrap();
    }
    let mut off = endpoint("ep_off", &["*"]);
    off.enabled = false;
    store.insert_endpoint(&off).await.unwrap();
    let row = |id: &str, ep: &str, payload: &str| {
        format!(
            "INSERT INTO hookd_outbox (event_id, event_type, payload, endpoint_id) \
             VALUES ('{id}', 'purchase', '{payload}', '{ep}');"
        )
    };
    db.exec(
        &[
            row("a1", "ep_a", "{}"),
            row("a2", "ep_a", "{}"),
            row("off", "ep_off", "{}"),
            row("bad", "ep_b", "{oops"),
            row("b1", "ep_b", "{}"),
            row("a3", "ep_a", "{}"),
        ]
        .concat(),
    )
    .await;
    let busy = vec![EndpointId::from("ep_a")];

    // ep_a is busy: its rows before b1 become pending (so b1 can go), a3 waits in the outbox.
    let first = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &busy, Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(
        (first.rows, first.due, first.more, first.blocked),
        (5, true, true, true)
    );
    let leased: Vec<&str> = first.claimed.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(leased, ["b1"]);
    assert_eq!(outbox_len(&db).await, 1);
    let state = |event_id: &'static str| {
        let store = store.clone();
        async move {
            let f = DeliveryFilter {
                event_id: Some(event_id.into()),
                ..Default::default()
            };
            let d = store.deliveries(&f, None, 10).await.unwrap();
            assert_eq!(d.len(), 1, "{event_id}: {d:?}");
            (d[0].state, d[0].attempts, d[0].next_attempt_at.is_some())
        }
    };
    assert_eq!(state("a1").await, (DeliveryState::Pending, 0, true));
    assert_eq!(
        state("off").await,
        (DeliveryState::Pending, 0, false),
        "parked"
    );
    assert_eq!(state("bad").await, (DeliveryState::Failed, 0, false));
    assert_eq!(state("b1").await, (DeliveryState::InFlight, 1, true));

    // Nothing but ep_a's row left: it stays.
    let blocked = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &busy, Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            blocked.rows,
            blocked.claimed.len(),
            blocked.due,
            blocked.blocked
        ),
        (0, 0, false, true)
    );
    assert_eq!(outbox_len(&db).await, 1);

    // Not waiting for busy endpoints: it becomes a pending delivery, for a claim.
    let taken = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &busy, Consume::ToRoomPastBusy, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(
        (taken.rows, taken.claimed.len(), taken.due, taken.blocked),
        (1, 0, true, false)
    );
    assert_eq!(outbox_len(&db).await, 0);
    let claimed: Vec<String> = store
        .claim(10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event_id.into())
        .collect();
    assert_eq!(claimed, ["a1", "a2", "a3"]);
}

/// The API's group commit: every event is stored whatever the room; the deliveries due now
/// are leased up to the room, skipping busy and rate-limited endpoints; a repeated event
/// leases nothing.
async fn a_group_of_events_leases_what_there_is_room_for_and_stores_the_rest(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    add_endpoint(&store, "ep_busy", &["refund"]).await;
    store
        .insert_endpoint(&Endpoint {
            rate_limit: RateLimit::new(5.0),
            ..endpoint("ep_limited", &["refund"])
        })
        .await
        .unwrap();
    enqueue(&store, "e0", "purchase").await;
    let group: Vec<NewEvent> = ["e0", "e1", "e2", "e3", "e4"]
        .iter()
        .map(|id| event(Some(id), if *id == "e2" { "refund" } else { "purchase" }))
        .collect();
    let busy = [EndpointId::from("ep_busy")];
    // Room for 2: e1 and e2 to ep_1; e2 to the busy and the limited endpoint, e3 and e4
    // stay pending for a claim.
    let (enqueued, ingested) = store
        .enqueue_events_leasing(
            &group,
            &limits(),
            Some(lease(2, &busy, Consume::ToRoomPastBusy, 60_000)),
        )
        .await
        .unwrap();
    let answers: Vec<(&str, bool, u64)> = enqueued
        .iter()
        .map(|e| (e.event_id.as_str(), e.created, e.deliveries))
        .collect();
    assert_eq!(
        answers,
        [
            ("e0", false, 1),
            ("e1", true, 1),
            ("e2", true, 3),
            ("e3", true, 1),
            ("e4", true, 1)
        ]
    );
    let leased: Vec<(&str, &str)> = ingested
        .claimed
        .iter()
        .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
        .collect();
    assert_eq!(leased, [("e1", "ep_1"), ("e2", "ep_1")]);
    assert!(ingested.due, "deliveries due now were left for a claim");
    for c in &ingested.claimed {
        let d = store.delivery(c.delivery_id).await.unwrap().unwrap();
        assert_eq!((d.state, d.attempts), (DeliveryState::InFlight, 1));
        assert_eq!(c.attempt, 1);
    }
    // A leased delivery is fenced like a claimed one, and completes like one.
    let mut stale = succeeded(&ingested.claimed[0]);
    stale.lease_token = "not-the-lease".into();
    assert_eq!(store.complete(&[stale]).await.unwrap(), vec![false]);
    let done = succeeded(&ingested.claimed[0]);
    assert_eq!(store.complete(&[done]).await.unwrap(), vec![true]);
    // Left for claims: e0 (stored before), e3 and e4 to ep_1, and e2 to the busy endpoint;
    // the limited endpoint's within its budget.
    let mut claimed: Vec<(String, String)> = store
        .claim(50, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.event_id.to_string(), c.endpoint.id.to_string()))
        .collect();
    claimed.sort();
    let mut expected: Vec<(String, String)> = [
        ("e0", "ep_1"),
        ("e2", "ep_busy"),
        ("e2", "ep_limited"),
        ("e3", "ep_1"),
        ("e4", "ep_1"),
    ]
    .iter()
    .map(|(e, p)| (e.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(claimed, expected);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM hookd_deliveries").await,
        7
    );

    // Without a lease: stored, nothing leased, due for a claim.
    let (_, ingested) = store
        .enqueue_events_leasing(&[event(Some("e5"), "purchase")], &limits(), None)
        .await
        .unwrap();
    assert!(ingested.claimed.is_empty());
    assert!(ingested.due);
    // Everything leased: nothing due for a claim.
    let (_, ingested) = store
        .enqueue_events_leasing(
            &[event(Some("e6"), "purchase")],
            &limits(),
            Some(lease(4, &[], Consume::ToRoomPastBusy, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(ingested.claimed.len(), 1);
    assert!(!ingested.due);
}
