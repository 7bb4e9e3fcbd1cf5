//! The event-type catalog: its records (a name is unique, an unknown one is not found), and
//! an ingest's payload check, which fails the events it refuses as a malformed payload is
//! failed, whichever way they came in.

use super::*;

hookd_testkit::each_backend!(
    event_types_are_created_listed_updated_and_deleted,
    a_taken_name_is_a_conflict,
    outbox_rows_failing_the_check_end_failed_with_the_reason,
    api_events_failing_the_check_end_failed_with_the_reason,
);

fn typed(name: &str, schema: Option<&str>) -> EventType {
    EventType {
        name: name.into(),
        description: Some(format!("{name} happened")),
        schema: schema.map(str::to_string),
        ..EventType::default()
    }
}

/// Refuses payloads of `order.paid` that lack `"ok"`; every other type passes.
#[derive(Debug)]
struct NeedsOk;

impl PayloadCheck for NeedsOk {
    fn check(&self, event_type: &str, payload: &str) -> Option<String> {
        (event_type == "order.paid" && !payload.contains("\"ok\""))
            .then(|| "payload does not match: at /ok: required".to_string())
    }
}

fn checking() -> IngestLimits {
    IngestLimits {
        check: Some(Arc::new(NeedsOk)),
        ..IngestLimits::default()
    }
}

async fn event_types_are_created_listed_updated_and_deleted(backend: Backend) {
    let (_db, store) = open(backend).await;
    assert!(store.event_types(None, 10).await.unwrap().is_empty());
    let schema = r#"{"type":"object","required":["id"]}"#;
    let created = store
        .insert_event_type(&typed("order.paid", Some(schema)))
        .await
        .unwrap();
    assert_eq!(created.name, "order.paid");
    assert_eq!(created.schema.as_deref(), Some(schema), "kept as given");
    assert!(created.created_at > 0 && created.updated_at == created.created_at);
    store
        .insert_event_type(&typed("order.created", None))
        .await
        .unwrap();
    store
        .insert_event_type(&typed("user.deleted", None))
        .await
        .unwrap();

    let names = |types: Vec<EventType>| types.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.event_types(None, 10).await.unwrap()),
        ["order.created", "order.paid", "user.deleted"]
    );
    assert_eq!(
        names(store.event_types(None, 2).await.unwrap()),
        ["order.created", "order.paid"]
    );
    assert_eq!(
        names(store.event_types(Some("order.paid"), 2).await.unwrap()),
        ["user.deleted"]
    );
    assert_eq!(
        store.event_type("order.paid").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.event_type("order.refunded").await.unwrap(), None);

    let updated = store
        .update_event_type(&EventType {
            description: None,
            schema: None,
            ..created.clone()
        })
        .await
        .unwrap()
        .expect("updated");
    assert_eq!((updated.description, updated.schema), (None, None));
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(
        store
            .update_event_type(&typed("order.refunded", None))
            .await
            .unwrap(),
        None,
        "an unknown type is not created by an update"
    );

    assert!(store.delete_event_type("order.paid").await.unwrap());
    assert!(!store.delete_event_type("order.paid").await.unwrap());
    assert_eq!(store.event_type("order.paid").await.unwrap(), None);
    assert_eq!(
        names(store.event_types(None, 10).await.unwrap()),
        ["order.created", "user.deleted"]
    );
}

async fn a_taken_name_is_a_conflict(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_event_type(&typed("order.paid", None))
        .await
        .unwrap();
    let err = store
        .insert_event_type(&typed("order.paid", Some("{}")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(!err.is_transient());
    let kept = store.event_type("order.paid").await.unwrap().unwrap();
    assert_eq!(kept.schema, None, "the first one stays as it was");
}

async fn outbox_rows_failing_the_check_end_failed_with_the_reason(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    db.exec(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES \
         ('bad', 'order.paid', '{\"amount\":1}'), \
         ('good', 'order.paid', '{\"ok\":true}'), \
         ('other', 'order.created', '{\"amount\":1}')",
    )
    .await;
    assert_eq!(store.ingest_outbox(100, &checking()).await.unwrap(), 3);
    let mut all = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    all.sort_by_key(|d| d.id);
    let got: Vec<_> = all
        .iter()
        .map(|d| (d.event_id.as_str(), d.state, d.last_error.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "bad",
                DeliveryState::Failed,
                Some("payload does not match: at /ok: required")
            ),
            ("good", DeliveryState::Pending, None),
            ("other", DeliveryState::Pending, None),
        ]
    );
    let bad = store.event(&"bad".into()).await.unwrap().unwrap();
    assert_eq!(
        bad.payload_error.as_deref(),
        Some("payload does not match: at /ok: required")
    );
    // Only the good ones are claimed.
    let claimed = store.claim(10, 60_000).await.unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["good", "other"]);
}

async fn api_events_failing_the_check_end_failed_with_the_reason(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    let events = [
        NewEvent {
            payload: "{\"amount\":1}".into(),
            ..event(Some("bad"), "order.paid")
        },
        NewEvent {
            payload: "{\"ok\":1}".into(),
            ..event(Some("good"), "order.paid")
        },
    ];
    let answers = store.enqueue_events(&events, &checking()).await.unwrap();
    assert_eq!(answers.len(), 2);
    let bad = store.event(&"bad".into()).await.unwrap().unwrap();
    assert!(bad.payload_error.unwrap().contains("at /ok"));
    let good = store.event(&"good".into()).await.unwrap().unwrap();
    assert_eq!(good.payload_error, None);
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id.as_str(), "good");
}
