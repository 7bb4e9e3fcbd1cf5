//! The store conformance suite: every case runs unchanged against SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hookd_store::*;
use hookd_testkit::{wait_until, Backend, TestDb};

hookd_testkit::each_backend!(
    endpoints_round_trip,
    fan_out_targets_and_dedupes,
    outbox_rows_are_ingested_once,
    bad_payloads_fail_with_a_reason,
    claim_leases_and_completion_is_fenced,
    retry_reschedules_and_final_failure,
    expired_leases_are_rescued,
    release_undoes_the_claim,
    resend_in_every_state,
    disable_parks_and_enable_resumes,
    delete_fails_pending,
    log_filters_and_pages,
    backlog_figures,
    concurrent_claims_never_overlap,
    retention_purges_only_old_finished,
    resend_jobs_work_in_batches_and_resume,
    a_bulk_resend_of_many_chunks_resends_each_match_once,
    ordered_endpoints_hold_the_next_delivery,
    the_safety_net_lets_one_go_per_idle_ordered_endpoint,
    endpoint_health_disables_the_failing,
    claims_by_kind_and_skip_busy_endpoints,
    a_claim_round_shares_between_retries_and_first_attempts,
    odd_outbox_rows_fail_alone,
    a_release_after_reenabling_is_due,
    a_batch_of_results_is_recorded_row_by_row,
    a_batch_of_events_keeps_arrival_order,
    batches_larger_than_one_statement_are_written_whole,
    results_wait_for_another_writer,
    an_ingest_leases_what_it_has_room_for,
    a_large_ingest_hands_out_the_id_of_each_new_delivery,
    an_ingest_leaves_rows_for_busy_endpoints_in_the_outbox,
    an_endpoint_that_cannot_be_unsealed_is_read_as_unreadable,
    endpoint_writes_compare_versions,
    concurrent_writes_from_one_version_apply_once,
    readiness_names_migrations_not_applied,
    a_stored_value_that_does_not_decode_names_its_column,
);

async fn open(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(backend).await;
    let store = connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.check_ready().await.expect("ready");
    (db, store)
}

/// A fresh store with `ep_1`, subscribed to every event type: most cases start here.
async fn open_with_endpoint(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open(backend).await;
    store
        .insert_endpoint(&endpoint("ep_1", &["*"]))
        .await
        .expect("insert ep_1");
    (db, store)
}

/// A store with endpoint `ep_1` and one pending delivery to it, of event `e1`.
async fn open_with_event(backend: Backend) -> (TestDb, Arc<dyn Store>) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
    (db, store)
}

fn endpoint(id: &str, types: &[&str]) -> Endpoint {
    Endpoint {
        id: id.to_string(),
        url: format!("http://127.0.0.1:9/{id}"),
        event_types: types.iter().map(|s| s.to_string()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        enabled: true,
        ..Endpoint::default()
    }
}

fn event(id: Option<&str>, event_type: &str) -> NewEvent {
    NewEvent {
        event_id: id.map(str::to_string),
        event_type: event_type.to_string(),
        payload: r#"{"orderId":"o-1","amount":9900}"#.to_string(),
        endpoint_id: None,
    }
}

fn limits() -> IngestLimits {
    IngestLimits::default()
}

fn completion(c: &Claimed, outcome: Outcome, status: Option<i32>, next: Next) -> Completion {
    Completion {
        delivery_id: c.delivery_id,
        lease_token: c.lease_token.clone(),
        endpoint_id: c.endpoint.id.clone(),
        ordered: c.endpoint.ordered,
        record: AttemptRecord {
            attempt: c.attempt,
            trigger: c.trigger,
            started_at: 1,
            duration_ms: 5,
            status_code: status,
            outcome,
            error: None,
            response_body: Some("ok".into()),
        },
        next,
    }
}

fn succeeded(c: &Claimed) -> Completion {
    completion(c, Outcome::Success, Some(200), Next::Succeeded)
}

/// Enqueues events `e{i}` of `event_type` for every `i` in `ids`.
async fn enqueue_numbered(store: &Arc<dyn Store>, ids: std::ops::Range<usize>, event_type: &str) {
    for i in ids {
        store
            .enqueue_event(&event(Some(&format!("e{i}")), event_type), &limits())
            .await
            .unwrap();
    }
}

/// Inserts outbox rows (`VALUES` tuples of event_id, event_type, payload) the way a
/// producer does, ingests them in one batch, and returns how many rows were ingested and
/// every delivery in id order.
async fn ingest_outbox_rows(
    db: &TestDb,
    store: &Arc<dyn Store>,
    values: &[String],
) -> (u64, Vec<Delivery>) {
    db.exec(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES {}",
        values.join(", ")
    ))
    .await;
    let ingested = store.ingest_outbox(5000, &limits()).await.unwrap();
    let mut all = store
        .deliveries(&DeliveryFilter::default(), None, 5000)
        .await
        .unwrap();
    all.sort_by_key(|d| d.id);
    (ingested, all)
}

async fn one_delivery(store: &Arc<dyn Store>) -> Delivery {
    let mut all = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

async fn endpoints_round_trip(backend: Backend) {
    let (_db, store) = open(backend).await;
    let mut ep = endpoint("ep_a", &["purchase", "payment.*"]);
    ep.retry_schedule_ms = Some(vec![10, 20]);
    ep.timeout_ms = Some(2500);
    ep.bearer_token = Some("tok".into());
    ep.headers.insert("x-team".into(), "billing".into());
    let stored = store.insert_endpoint(&ep).await.unwrap();
    assert!(
        stored.created_at > 1_600_000_000_000,
        "database clock in ms"
    );
    assert_eq!(
        Endpoint {
            created_at: 0,
            updated_at: 0,
            ..stored.clone()
        },
        Endpoint {
            version: 1, // a new endpoint's
            ..ep.clone()
        }
    );
    assert_eq!(store.endpoint("ep_a").await.unwrap().unwrap(), stored);
    assert!(store.endpoint("nope").await.unwrap().is_none());

    store
        .insert_endpoint(&endpoint("ep_b", &["*"]))
        .await
        .unwrap();
    let page1 = store.endpoints(None, 1).await.unwrap();
    let page2 = store.endpoints(Some(&page1[0].id), 10).await.unwrap();
    assert_eq!(
        [page1, page2]
            .concat()
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["ep_a", "ep_b"]
    );

    let mut changed = stored.clone();
    changed.url = "https://example.com/new".into();
    changed.retry_schedule_ms = Some(vec![]);
    let updated = store.update_endpoint(&changed).await.unwrap().unwrap();
    assert_eq!(updated.url, "https://example.com/new");
    assert_eq!(updated.retry_schedule_ms, Some(vec![]));
    assert!(store
        .update_endpoint(&endpoint("ghost", &["*"]))
        .await
        .unwrap()
        .is_none());

    assert!(store.delete_endpoint("ep_a").await.unwrap());
    assert!(!store.delete_endpoint("ep_a").await.unwrap());
    assert!(store.endpoint("ep_a").await.unwrap().is_none());
    assert_eq!(store.endpoints(None, 10).await.unwrap().len(), 1);
}

async fn fan_out_targets_and_dedupes(backend: Backend) {
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
        .insert_endpoint(&endpoint("ep_pay", &["payment.*"]))
        .await
        .unwrap();

    let first = store
        .enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
    assert_eq!(
        first,
        Enqueued {
            event_id: "e1".into(),
            deliveries: 2,
            created: true
        }
    );
    let again = store
        .enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
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

    let none = store
        .enqueue_event(&event(Some("e4"), "refund"), &limits())
        .await
        .unwrap();
    assert_eq!(none.deliveries, 1, "only the * endpoint");
    let stored = store.event("e1").await.unwrap().unwrap();
    assert_eq!(stored.payload, r#"{"orderId":"o-1","amount":9900}"#);
}

async fn outbox_rows_are_ingested_once(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["refund"]))
        .await
        .unwrap();
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
        store.event("dup").await.unwrap().unwrap().payload,
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
                event_id: Some(id),
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

async fn claim_leases_and_completion_is_fenced(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;

    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (1, Trigger::Auto, 1)
    );
    assert_eq!(c.payload, r#"{"orderId":"o-1","amount":9900}"#);
    assert_eq!(c.endpoint.id, "ep_1");
    assert_eq!(one_delivery(&store).await.state, DeliveryState::InFlight);
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "leased rows are not claimable"
    );

    let mut stale = succeeded(c);
    stale.lease_token = "not-the-lease".into();
    assert_eq!(store.complete(&[stale]).await.unwrap(), vec![false]);
    assert_eq!(store.complete(&[succeeded(c)]).await.unwrap(), vec![true]);
    assert_eq!(
        store.complete(&[succeeded(c)]).await.unwrap(),
        vec![false],
        "only once"
    );

    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Succeeded);
    assert_eq!(
        (d.attempts, d.last_status_code, d.next_attempt_at),
        (1, Some(200), None)
    );
    assert!(d.finished_at.is_some());
    let log = store.attempts(d.id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].attempt, log[0].outcome), (1, Outcome::Success));
    assert_eq!(log[0].response_body.as_deref(), Some("ok"));
}

async fn retry_reschedules_and_final_failure(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    let before = store.now_ms().await.unwrap();
    store
        .complete(&[completion(
            &c,
            Outcome::HttpError,
            Some(500),
            Next::RetryIn(60_000),
        )])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.last_status_code, Some(500));
    assert_eq!(d.last_error.as_deref(), Some("http_error"));
    let due = d.next_attempt_at.unwrap();
    assert!(
        due >= before + 60_000 && due < before + 70_000,
        "{due} vs {before}"
    );
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "not due yet"
    );
    let wait = store.next_due_in_ms().await.unwrap().unwrap();
    assert!(wait > 50_000 && wait <= 60_000, "{wait}");

    // A short retry becomes claimable once due.
    let c = {
        store.resend(d.id).await.unwrap(); // due now, manual
        store.claim(1, 60_000).await.unwrap().remove(0)
    };
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (2, Trigger::Manual, 1)
    );
    store
        .complete(&[completion(&c, Outcome::Timeout, None, Next::RetryIn(20))])
        .await
        .unwrap();
    let c = wait_until(Duration::from_secs(5), "the retry to come due", || {
        let store = store.clone();
        async move { store.claim(1, 60_000).await.unwrap().pop() }
    })
    .await;
    assert_eq!(
        (c.attempt, c.trigger, c.auto_attempts),
        (3, Trigger::Auto, 2)
    );
    store
        .complete(&[completion(&c, Outcome::NetworkError, None, Next::Failed)])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(
        (d.state, d.attempts, d.next_attempt_at),
        (DeliveryState::Failed, 3, None)
    );
    let log = store.attempts(d.id).await.unwrap();
    let summary: Vec<_> = log
        .iter()
        .map(|a| (a.attempt, a.trigger, a.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Trigger::Auto, Outcome::HttpError),
            (2, Trigger::Manual, Outcome::Timeout),
            (3, Trigger::Auto, Outcome::NetworkError)
        ]
    );
}

async fn expired_leases_are_rescued(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    let lost = store.claim(1, 1).await.unwrap().remove(0);
    wait_until(Duration::from_secs(5), "the lease to be rescued", || {
        let store = store.clone();
        async move { (store.rescue_expired().await.unwrap() == 1).then_some(()) }
    })
    .await;
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));
    let log = store.attempts(d.id).await.unwrap();
    assert_eq!((log[0].attempt, log[0].outcome), (1, Outcome::Lost));

    let fresh = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(fresh.attempt, 2);
    assert_eq!(
        store.complete(&[succeeded(&lost)]).await.unwrap(),
        vec![false],
        "stale worker"
    );
    assert_eq!(
        store.complete(&[succeeded(&fresh)]).await.unwrap(),
        vec![true]
    );
    assert_eq!(store.rescue_expired().await.unwrap(), 0);
}

async fn release_undoes_the_claim(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    let lease = |c: &Claimed| Lease {
        delivery_id: c.delivery_id,
        token: c.lease_token.clone(),
    };

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(store.release(&[lease(&c)], Release::Now).await.unwrap(), 1);
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
    assert_eq!(
        store.release(&[lease(&c)], Release::Now).await.unwrap(),
        0,
        "fenced"
    );

    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.auto_attempts),
        (1, 1),
        "the release undid the count"
    );
    // Parking is for an endpoint that is disabled (a worker finds it so after a claim).
    let ep = store.endpoint("ep_1").await.unwrap().unwrap();
    store
        .update_endpoint(&Endpoint {
            enabled: false,
            ..ep.clone()
        })
        .await
        .unwrap();
    store.release(&[lease(&c)], Release::Park).await.unwrap();
    assert_eq!(one_delivery(&store).await.next_attempt_at, None);
    assert!(store.claim(1, 60_000).await.unwrap().is_empty(), "parked");

    // A resend asked for while the claim is being parked still goes, at once.
    store.resend(d.id).await.unwrap();
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.resend(d.id).await.unwrap();
    store.release(&[lease(&c)], Release::Park).await.unwrap();
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(c.trigger, Trigger::Manual);
    store
        .release(&[lease(&c)], Release::Fail("endpoint deleted".into()))
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 0));
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
}

async fn resend_in_every_state(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    assert!(!store.resend(999_999).await.unwrap());

    // Succeeded -> one manual attempt whose failure is final.
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.complete(&[succeeded(&c)]).await.unwrap();
    let id = one_delivery(&store).await.id;
    assert!(store.resend(id).await.unwrap());
    let d = one_delivery(&store).await;
    assert_eq!((d.state, d.finished_at), (DeliveryState::Pending, None));
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.trigger, c.manual_only),
        (2, Trigger::Manual, true)
    );

    // In flight -> the running attempt finishes, then a manual one is due at once.
    assert!(store.resend(id).await.unwrap());
    assert_eq!(one_delivery(&store).await.state, DeliveryState::InFlight);
    store
        .complete(&[completion(&c, Outcome::HttpError, Some(503), Next::Failed)])
        .await
        .unwrap();
    let d = one_delivery(&store).await;
    assert_eq!(
        d.state,
        DeliveryState::Pending,
        "the requested resend is due"
    );
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!(
        (c.attempt, c.trigger, c.manual_only),
        (3, Trigger::Manual, true)
    );
    store
        .complete(&[completion(&c, Outcome::HttpError, Some(500), Next::Failed)])
        .await
        .unwrap();
    assert_eq!(one_delivery(&store).await.state, DeliveryState::Failed);

    // Failed -> bulk resend by filter, as a job.
    let job = store
        .create_resend_job(&DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((job.matched, job.resent, job.done), (1, 0, false));
    assert_eq!(store.step_resend_jobs(10, 100).await.unwrap(), 1);
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    assert_eq!((c.attempt, c.trigger), (4, Trigger::Manual));
    assert_eq!(store.attempts(id).await.unwrap().len(), 3);
}

async fn disable_parks_and_enable_resumes(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ep = store
        .insert_endpoint(&endpoint("ep_1", &["*"]))
        .await
        .unwrap();
    store
        .enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
    let off = Endpoint {
        enabled: false,
        disabled_reason: Some("operator".into()),
        ..ep.clone()
    };
    store.update_endpoint(&off).await.unwrap().unwrap();
    assert_eq!(one_delivery(&store).await.next_attempt_at, None);
    assert!(store.claim(10, 60_000).await.unwrap().is_empty());

    // Fan-out skips a disabled endpoint; targeting it creates a parked delivery.
    assert_eq!(
        store
            .enqueue_event(&event(Some("e2"), "x"), &limits())
            .await
            .unwrap()
            .deliveries,
        0
    );
    let targeted = NewEvent {
        endpoint_id: Some("ep_1".into()),
        ..event(Some("e3"), "x")
    };
    assert_eq!(
        store
            .enqueue_event(&targeted, &limits())
            .await
            .unwrap()
            .deliveries,
        1
    );
    assert!(store.claim(10, 60_000).await.unwrap().is_empty());

    store.update_endpoint(&ep).await.unwrap().unwrap();
    assert_eq!(store.claim(10, 60_000).await.unwrap().len(), 2);
}

async fn delete_fails_pending(backend: Backend) {
    let (_db, store) = open_with_event(backend).await;
    assert!(store.delete_endpoint("ep_1").await.unwrap());
    let d = one_delivery(&store).await;
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
    assert_eq!(store.attempts(d.id).await.unwrap().len(), 0);
    assert_eq!(
        store
            .enqueue_event(&event(Some("e2"), "x"), &limits())
            .await
            .unwrap()
            .deliveries,
        0
    );
}

async fn log_filters_and_pages(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["refund"]))
        .await
        .unwrap();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "purchase" } else { "refund" };
        store
            .enqueue_event(&event(Some(&format!("e{i}")), kind), &limits())
            .await
            .unwrap();
    }
    // 7 to ep_1, 3 refunds to ep_2.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .deliveries(&DeliveryFilter::default(), cursor, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|d| d.id);
        seen.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(seen.len(), 10);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seen:?}"
    );

    let count = |f: DeliveryFilter| {
        let store = store.clone();
        async move { store.deliveries(&f, None, 100).await.unwrap().len() }
    };
    assert_eq!(
        count(DeliveryFilter {
            endpoint_id: Some("ep_2".into()),
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(DeliveryFilter {
            event_type: Some("purchase".into()),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(DeliveryFilter {
            event_id: Some("e1".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(DeliveryFilter {
            state: Some(DeliveryState::Failed),
            ..Default::default()
        })
        .await,
        0
    );
    let now = store.now_ms().await.unwrap();
    assert_eq!(
        count(DeliveryFilter {
            until: Some(now + 1),
            ..Default::default()
        })
        .await,
        10
    );
    assert_eq!(
        count(DeliveryFilter {
            since: Some(now + 60_000),
            ..Default::default()
        })
        .await,
        0
    );
}

async fn backlog_figures(backend: Backend) {
    let (_db, store) = open(backend).await;
    assert_eq!(store.backlog().await.unwrap(), Backlog::default());
    store
        .insert_endpoint(&endpoint("ep_1", &["*"]))
        .await
        .unwrap();
    enqueue_numbered(&store, 0..3, "x").await;
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    let b = wait_until(Duration::from_secs(5), "the oldest due delivery to age", || {
        let store = store.clone();
        async move { Some(store.backlog().await.unwrap()).filter(|b| b.oldest_due_age_ms >= 20) }
    })
    .await;
    assert_eq!(b.unfinished, 3);
    store.complete(&[succeeded(&c)]).await.unwrap();
    assert_eq!(store.backlog().await.unwrap().unfinished, 2);

    // Rows still in the outbox are waiting too: counted, and their age is their insert's.
    let (db, store) = open(backend).await;
    db.exec("INSERT INTO hookd_outbox (event_type, payload) VALUES ('x', '{}'), ('x', '{}')")
        .await;
    let b = wait_until(Duration::from_secs(5), "the oldest outbox row to age", || {
        let store = store.clone();
        async move { Some(store.backlog().await.unwrap()).filter(|b| b.oldest_due_age_ms >= 20) }
    })
    .await;
    assert_eq!((b.unfinished, b.outbox), (2, 2));
    assert!(b.oldest_due_age_ms < 60_000, "{b:?}");
}

async fn concurrent_claims_never_overlap(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..200, "x").await;
    // Four claimers, each with its own connection pool, as four hookd processes would be.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let other = connect(&db.url).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = other.claim(7, 60_000).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.delivery_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "a delivery was claimed twice");
}

async fn retention_purges_only_old_finished(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..4, "x").await;
    let claimed = store.claim(3, 60_000).await.unwrap();
    store
        .complete(&[
            succeeded(&claimed[0]),
            succeeded(&claimed[1]),
            completion(&claimed[2], Outcome::HttpError, Some(500), Next::Failed),
        ])
        .await
        .unwrap();
    // Two finished deliveries and every event are a day old; one finished one is fresh,
    // one delivery is still pending.
    let old = [claimed[0].delivery_id, claimed[2].delivery_id];
    db.exec(&format!(
        "UPDATE hookd_deliveries SET finished_at = finished_at - 86400000 WHERE id IN ({}, {});
         UPDATE hookd_events SET created_at = created_at - 86400000;",
        old[0], old[1]
    ))
    .await;
    let cutoff = store.now_ms().await.unwrap() - 3_600_000;

    let first = store.purge_finished(cutoff, 1).await.unwrap();
    assert_eq!(
        first,
        Purged {
            deliveries: 1,
            events: 1
        },
        "bounded by the batch"
    );
    let second = store.purge_finished(cutoff, 1).await.unwrap();
    assert_eq!(
        second,
        Purged {
            deliveries: 1,
            events: 1
        }
    );
    assert_eq!(
        store.purge_finished(cutoff, 10).await.unwrap(),
        Purged::default()
    );

    let left = store
        .deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = left.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(
        left.len(),
        2,
        "the fresh finished one and the pending one stay: {left:?}"
    );
    assert!(!ids.contains(&old[0]) && !ids.contains(&old[1]));
    assert!(
        store.attempts(old[0]).await.unwrap().is_empty(),
        "attempts go with their delivery"
    );
    assert_eq!(
        store.attempts(claimed[1].delivery_id).await.unwrap().len(),
        1
    );
    assert!(store.event(&claimed[0].event_id).await.unwrap().is_none());
    assert!(store.event(&claimed[1].event_id).await.unwrap().is_some());
}

async fn resend_jobs_work_in_batches_and_resume(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..7, "x").await;
    let claimed = store.claim(7, 60_000).await.unwrap();
    let done: Vec<Completion> = claimed
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::Failed))
        .collect();
    store.complete(&done).await.unwrap();
    let failed = DeliveryFilter {
        state: Some(DeliveryState::Failed),
        ..Default::default()
    };
    let job = store.create_resend_job(&failed).await.unwrap();
    assert_eq!((job.matched, job.done), (7, false));
    // A delivery that fails after the job was created is not part of it.
    store
        .enqueue_event(&event(Some("late"), "x"), &limits())
        .await
        .unwrap();

    assert_eq!(store.step_resend_jobs(3, 100).await.unwrap(), 3);
    // Throttled while 3 manual resends are due and at most 3 may wait.
    assert_eq!(store.step_resend_jobs(3, 3).await.unwrap(), 0);
    let due: Vec<Claimed> = store.claim(10, 60_000).await.unwrap();
    assert_eq!(due.len(), 4, "3 resent + the late one");
    assert_eq!(
        due.iter().filter(|c| c.trigger == Trigger::Manual).count(),
        3
    );

    // A second store (a restarted process) continues the same job.
    let restarted = connect(&db.url).await.unwrap();
    assert_eq!(restarted.step_resend_jobs(3, 100).await.unwrap(), 3);
    assert_eq!(restarted.step_resend_jobs(3, 100).await.unwrap(), 1);
    assert_eq!(
        restarted.step_resend_jobs(3, 100).await.unwrap(),
        0,
        "nothing left"
    );
    let job = restarted.resend_job(&job.id).await.unwrap().unwrap();
    assert_eq!((job.matched, job.resent, job.done), (7, 7, true));
    assert!(job.finished_at.is_some());
    assert_eq!(job.filter, failed);
    let manual = store.claim(10, 60_000).await.unwrap();
    assert_eq!(manual.len(), 4);
    assert!(manual
        .iter()
        .all(|c| c.trigger == Trigger::Manual && c.event_id != "late"));
    // Every delivery was resent exactly once by the job.
    let mut ids: Vec<i64> = due
        .iter()
        .chain(&manual)
        .filter(|c| c.trigger == Trigger::Manual)
        .map(|c| c.delivery_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    assert!(store.resend_job("rsj_nope").await.unwrap().is_none());
    let empty = store
        .create_resend_job(&DeliveryFilter {
            event_id: Some("none".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((empty.matched, empty.done), (0, true));
}

/// A bulk resend by event type, and one by time range, over more rows than one chunk, with
/// rows that do not match in between and two processes stepping at once, and one whose two
/// matches are many windows apart: every match is resent exactly once, nothing else is
/// touched.
async fn a_bulk_resend_of_many_chunks_resends_each_match_once(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    // Between two `rare` events, 1,500 events, two in three of type `m`; each delivery
    // created one second after the one before.
    ingest_outbox_rows(&db, &store, &["('r0', 'rare', '{}')".to_string()]).await;
    let values: Vec<String> = (0..1500)
        .map(|i| {
            let t = if i % 3 == 0 { "n" } else { "m" };
            format!("('e{i}', '{t}', '{{\"i\":{i}}}')")
        })
        .collect();
    ingest_outbox_rows(&db, &store, &values).await;
    let (_, all) = ingest_outbox_rows(&db, &store, &["('r1', 'rare', '{}')".to_string()]).await;
    assert_eq!(all.len(), 1502);
    db.exec("UPDATE hookd_deliveries SET created_at = id * 1000")
        .await;
    let first_id = all[1].id;
    let other = connect(&db.url).await.unwrap();
    let run_to_the_end = |id: String| {
        let (store, other) = (store.clone(), other.clone());
        async move {
            loop {
                // Two processes step the same job at once.
                let (a, b) = tokio::join!(
                    store.step_resend_jobs(500, 100_000),
                    other.step_resend_jobs(500, 100_000)
                );
                a.unwrap();
                b.unwrap();
                let job = store.resend_job(&id).await.unwrap().unwrap();
                if job.done {
                    return job;
                }
            }
        }
    };
    let manual = |filter: &str| {
        format!("SELECT COUNT(*) FROM hookd_deliveries WHERE next_trigger = 'manual' AND {filter}")
    };

    let by_type = DeliveryFilter {
        event_type: Some("m".into()),
        ..Default::default()
    };
    let job = store.create_resend_job(&by_type).await.unwrap();
    assert_eq!((job.matched, job.done), (1000, false));
    let job = run_to_the_end(job.id).await;
    assert_eq!(job.resent, 1000, "each match resent once");
    assert_eq!(db.query_i64(&manual("event_type = 'm'")).await, 1000);
    assert_eq!(db.query_i64(&manual("event_type = 'n'")).await, 0);

    // The deliveries created in [since, until): 700 ids in the middle.
    db.exec("UPDATE hookd_deliveries SET next_trigger = 'auto'")
        .await;
    let (since, until) = ((first_id + 400) * 1000, (first_id + 1100) * 1000);
    let by_time = DeliveryFilter {
        since: Some(since),
        until: Some(until),
        ..Default::default()
    };
    let job = store.create_resend_job(&by_time).await.unwrap();
    assert_eq!(job.matched, 700);
    let job = run_to_the_end(job.id).await;
    assert_eq!(job.resent, 700);
    let inside = format!("created_at >= {since} AND created_at < {until}");
    let outside = format!("(created_at < {since} OR created_at >= {until})");
    assert_eq!(db.query_i64(&manual(&inside)).await, 700);
    assert_eq!(db.query_i64(&manual(&outside)).await, 0);

    // Batches of 2 read windows of 40 ids: the two matches are 37 windows apart.
    db.exec("UPDATE hookd_deliveries SET next_trigger = 'auto'")
        .await;
    let rare = DeliveryFilter {
        event_type: Some("rare".into()),
        ..Default::default()
    };
    let job = store.create_resend_job(&rare).await.unwrap();
    assert_eq!(job.matched, 2);
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 1);
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 1);
    let job = store.resend_job(&job.id).await.unwrap().unwrap();
    assert_eq!((job.resent, job.done), (2, true));
    assert_eq!(store.step_resend_jobs(2, 100).await.unwrap(), 0);
    assert_eq!(db.query_i64(&manual("TRUE")).await, 2);
}

/// The safety net lets the oldest held delivery go of each ordered endpoint that has
/// nothing else on its way, and only those.
async fn the_safety_net_lets_one_go_per_idle_ordered_endpoint(backend: Backend) {
    let (_db, store) = open(backend).await;
    for id in ["ep_a", "ep_b", "ep_c"] {
        store
            .insert_endpoint(&Endpoint {
                ordered: true,
                ..endpoint(id, &["*"])
            })
            .await
            .unwrap();
    }
    enqueue_numbered(&store, 0..3, "x").await;
    let heads = store.claim(10, 60_000).await.unwrap();
    assert_eq!(heads.len(), 3, "one head per endpoint");
    // ep_a's and ep_b's heads finish without promoting (as when the endpoint was unordered
    // when they were claimed); ep_c's is still in flight.
    let unpromoted: Vec<Completion> = heads
        .iter()
        .filter(|c| c.endpoint.id != "ep_c")
        .map(|c| Completion {
            ordered: false,
            ..succeeded(c)
        })
        .collect();
    store.complete(&unpromoted).await.unwrap();
    assert!(
        store.claim(10, 60_000).await.unwrap().is_empty(),
        "all held"
    );

    assert_eq!(store.promote_stranded().await.unwrap(), 2);
    assert_eq!(
        store.promote_stranded().await.unwrap(),
        0,
        "each has one on its way"
    );
    let mut next: Vec<(String, String)> = store
        .claim(10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.endpoint.id.clone(), c.event_id))
        .collect();
    next.sort();
    assert_eq!(
        next,
        [
            ("ep_a".to_string(), "e1".to_string()),
            ("ep_b".to_string(), "e1".to_string())
        ]
    );
}

async fn ordered_endpoints_hold_the_next_delivery(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&Endpoint {
            ordered: true,
            ..endpoint("ep_o", &["*"])
        })
        .await
        .unwrap();
    store
        .insert_endpoint(&endpoint("ep_u", &["*"]))
        .await
        .unwrap();
    enqueue_numbered(&store, 0..3, "x").await;
    let first = store.claim(10, 60_000).await.unwrap();
    let ordered: Vec<&Claimed> = first.iter().filter(|c| c.endpoint.id == "ep_o").collect();
    assert_eq!(first.len(), 4, "3 unordered + the ordered head");
    assert_eq!(ordered.len(), 1);
    assert_eq!(ordered[0].event_id, "e0");
    // The head fails and is retried: the next still waits.
    store
        .complete(&[completion(
            ordered[0],
            Outcome::HttpError,
            Some(500),
            Next::RetryIn(0),
        )])
        .await
        .unwrap();
    let again = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e0"]
    );
    store.complete(&[succeeded(&again[0])]).await.unwrap();
    let next = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e1"]
    );
    // A final failure lets the next go too.
    store
        .complete(&[completion(
            &next[0],
            Outcome::HttpError,
            Some(500),
            Next::Failed,
        )])
        .await
        .unwrap();
    let last = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        last.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e2"]
    );
    store.complete(&[succeeded(&last[0])]).await.unwrap();
    // A new event for an idle ordered endpoint goes at once.
    store
        .enqueue_event(&event(Some("e3"), "x"), &limits())
        .await
        .unwrap();
    let both = store.claim(10, 60_000).await.unwrap();
    assert_eq!(both.len(), 2);

    // A completion that does not promote (the endpoint was unordered when the delivery was
    // claimed) leaves the next one stranded: the safety net releases it.
    store
        .enqueue_event(&event(Some("e4"), "x"), &limits())
        .await
        .unwrap();
    let head = both.iter().find(|c| c.endpoint.id == "ep_o").unwrap();
    let mut unpromoted = succeeded(head);
    unpromoted.ordered = false;
    store.complete(&[unpromoted]).await.unwrap();
    let stranded = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        stranded.iter().filter(|c| c.endpoint.id == "ep_o").count(),
        0,
        "held"
    );
    assert_eq!(store.promote_stranded().await.unwrap(), 1);
    assert_eq!(store.promote_stranded().await.unwrap(), 0);
    let e4 = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        e4.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["e4"]
    );

    // Turning ordering off lets every held delivery go.
    enqueue_numbered(&store, 5..8, "x").await;
    let ep = store.endpoint("ep_o").await.unwrap().unwrap();
    store
        .update_endpoint(&Endpoint {
            ordered: false,
            ..ep
        })
        .await
        .unwrap();
    let released: Vec<String> = store
        .claim(20, 60_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.endpoint.id == "ep_o")
        .map(|c| c.event_id)
        .collect();
    assert_eq!(released, ["e5", "e6", "e7"]);
}

async fn endpoint_health_disables_the_failing(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["*"]))
        .await
        .unwrap();
    store
        .enqueue_event(&event(Some("e1"), "x"), &limits())
        .await
        .unwrap();
    let fail = |id: &str| vec![(id.to_string(), false)];
    assert!(store
        .record_endpoint_health(&fail("ep_1"), Some(60_000), "failing")
        .await
        .unwrap()
        .is_empty());
    let ep = store.endpoint("ep_1").await.unwrap().unwrap();
    assert!(ep.failing_since.is_some() && ep.enabled);
    // Editing an enabled endpoint does not restart its failing period.
    let edited = store
        .update_endpoint(&Endpoint {
            description: Some("edited".into()),
            ..ep.clone()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.failing_since, ep.failing_since);
    // A success ends the failing period.
    store
        .record_endpoint_health(&[("ep_1".into(), true)], Some(60_000), "failing")
        .await
        .unwrap();
    let ep = store.endpoint("ep_1").await.unwrap().unwrap();
    assert!(ep.failing_since.is_none() && ep.last_success_at.is_some());
    // Failing for longer than the threshold (0 ms here) disables it and parks its deliveries.
    store
        .record_endpoint_health(&fail("ep_1"), Some(60_000), "failing")
        .await
        .unwrap();
    let disabled = store
        .record_endpoint_health(&fail("ep_1"), Some(0), "failing for 0s")
        .await
        .unwrap();
    assert_eq!(disabled, ["ep_1"]);
    let ep = store.endpoint("ep_1").await.unwrap().unwrap();
    assert_eq!(
        (ep.enabled, ep.disabled_reason.as_deref()),
        (false, Some("failing for 0s"))
    );
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.endpoint.id.as_str())
            .collect::<Vec<_>>(),
        ["ep_2"]
    );
    assert!(
        store
            .record_endpoint_health(&fail("ep_1"), Some(0), "again")
            .await
            .unwrap()
            .is_empty(),
        "only once"
    );
    // disable_endpoint (410 Gone) parks too, once.
    assert!(store.disable_endpoint("ep_2", "gone").await.unwrap());
    assert!(!store.disable_endpoint("ep_2", "gone").await.unwrap());
    assert!(!store.disable_endpoint("nope", "gone").await.unwrap());
    // Enabling resumes the parked delivery, and clears the failing period.
    let ep = store.endpoint("ep_1").await.unwrap().unwrap();
    let back = store
        .update_endpoint(&Endpoint {
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            ..ep
        })
        .await
        .unwrap()
        .unwrap();
    assert!(back.failing_since.is_none());
    assert_eq!(store.claim(10, 60_000).await.unwrap().len(), 1);
}

async fn claims_by_kind_and_skip_busy_endpoints(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .insert_endpoint(&endpoint("ep_a", &["*"]))
        .await
        .unwrap();
    store
        .insert_endpoint(&endpoint("ep_b", &["*"]))
        .await
        .unwrap();
    store
        .enqueue_event(&event(Some("old"), "x"), &limits())
        .await
        .unwrap();
    // "old" fails once on both endpoints: two retries due now.
    let first = store
        .claim_due(ClaimPlan::first_attempts(10), &[], 60_000)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let retry_now: Vec<Completion> = first
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::RetryIn(0)))
        .collect();
    store.complete(&retry_now).await.unwrap();
    store
        .enqueue_event(&event(Some("new"), "x"), &limits())
        .await
        .unwrap();

    let fresh = store
        .claim_due(ClaimPlan::first_attempts(10), &["ep_a".to_string()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        fresh
            .iter()
            .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
            .collect::<Vec<_>>(),
        [("new", "ep_b")],
        "first attempts only, ep_a skipped"
    );
    let retries = store
        .claim_due(ClaimPlan::retries(10), &["ep_b".to_string()], 60_000)
        .await
        .unwrap();
    assert_eq!(
        retries
            .iter()
            .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("old", "ep_a", 2)]
    );
    // `claim` takes the rest, of both kinds.
    let rest = store.claim(10, 60_000).await.unwrap();
    let mut rest: Vec<_> = rest
        .iter()
        .map(|c| (c.event_id.as_str(), c.endpoint.id.as_str()))
        .collect();
    rest.sort();
    assert_eq!(rest, [("new", "ep_a"), ("old", "ep_b")]);
}

async fn a_claim_round_shares_between_retries_and_first_attempts(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    for i in 0..6 {
        store
            .enqueue_event(&event(Some(&format!("r{i}")), "x"), &limits())
            .await
            .unwrap();
    }
    let first = store.claim(10, 60_000).await.unwrap();
    let retry_now: Vec<Completion> = first
        .iter()
        .map(|c| completion(c, Outcome::HttpError, Some(500), Next::RetryIn(0)))
        .collect();
    store.complete(&retry_now).await.unwrap();
    for i in 0..6 {
        store
            .enqueue_event(&event(Some(&format!("n{i}")), "x"), &limits())
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let mut round = |claimed: Vec<Claimed>| {
        for c in &claimed {
            assert!(seen.insert(c.delivery_id), "{} claimed twice", c.event_id);
        }
        let retries = claimed.iter().filter(|c| c.attempt > 1).count();
        (retries, claimed.len() - retries)
    };
    let plan = |max, retries_ahead, retries| ClaimPlan {
        max,
        retries_ahead,
        retries,
        first_attempts: true,
    };

    // One retry ahead, then first attempts fill the round.
    let claimed = store.claim_due(plan(4, 1, 10), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (1, 3));
    // Two retries ahead, the three first attempts left, then retries up to four in all:
    // the ones after those ahead, not those again.
    let claimed = store.claim_due(plan(10, 2, 4), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (4, 3));
    // No room for retries: the last one waits.
    let claimed = store.claim_due(plan(10, 1, 0), &[], 60_000).await.unwrap();
    assert_eq!(round(claimed), (0, 0));
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(round(claimed), (1, 0));
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
        assert_eq!(store.event("blob").await.unwrap().unwrap().payload, "{}");
        assert_eq!(by_event("latin1").state, DeliveryState::Failed);
    }
}

async fn a_release_after_reenabling_is_due(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ep = store
        .insert_endpoint(&endpoint("ep_1", &["*"]))
        .await
        .unwrap();
    store
        .enqueue_event(&event(Some("e1"), "x"), &limits())
        .await
        .unwrap();
    // Claimed while the endpoint is disabled, enabled again before the worker parks it.
    store
        .update_endpoint(&Endpoint {
            enabled: false,
            ..ep.clone()
        })
        .await
        .unwrap();
    store.resend(one_delivery(&store).await.id).await.unwrap(); // due, manual
    let c = store.claim(1, 60_000).await.unwrap().remove(0);
    store.update_endpoint(&ep).await.unwrap();
    let lease = Lease {
        delivery_id: c.delivery_id,
        token: c.lease_token.clone(),
    };
    store.release(&[lease], Release::Park).await.unwrap();
    assert!(
        one_delivery(&store).await.next_attempt_at.is_some(),
        "parked on an enabled endpoint"
    );
    assert_eq!(store.claim(1, 60_000).await.unwrap().len(), 1);
}

/// One statement records a whole batch, yet each result stands alone: its own fence, its
/// own next state, its own attempt row; a stale or repeated one changes nothing.
async fn a_batch_of_results_is_recorded_row_by_row(backend: Backend) {
    let (_db, store) = open_with_endpoint(backend).await;
    enqueue_numbered(&store, 0..4, "purchase").await;
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let ok = succeeded(&claimed[0]);
    let mut retry = completion(
        &claimed[1],
        Outcome::HttpError,
        Some(503),
        Next::RetryIn(60_000),
    );
    retry.record.error = Some("HTTP 503 Service Unavailable".into());
    retry.record.response_body = Some("busy, it's \"quoted\" \u{e9}".into());
    let failed = completion(&claimed[2], Outcome::Timeout, None, Next::Failed);
    let mut stale = succeeded(&claimed[3]);
    stale.lease_token = "not-the-lease".into();
    let again = succeeded(&claimed[0]);
    let recorded = store
        .complete(&[ok, retry, failed, stale, again])
        .await
        .unwrap();
    assert_eq!(recorded, vec![true, true, true, false, false]);

    let by_id = |id: i64| {
        let store = store.clone();
        async move { store.delivery(id).await.unwrap().unwrap() }
    };
    let d = by_id(claimed[0].delivery_id).await;
    assert_eq!(
        (d.state, d.last_status_code),
        (DeliveryState::Succeeded, Some(200))
    );
    assert!(d.finished_at.is_some() && d.next_attempt_at.is_none());
    let d = by_id(claimed[1].delivery_id).await;
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(
        d.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    let due_in = d.next_attempt_at.unwrap() - store.now_ms().await.unwrap();
    assert!((50_000..=60_000).contains(&due_in), "due in {due_in} ms");
    let d = by_id(claimed[2].delivery_id).await;
    assert_eq!(
        (d.state, d.last_error.as_deref()),
        (DeliveryState::Failed, Some("timeout"))
    );
    assert_eq!(
        by_id(claimed[3].delivery_id).await.state,
        DeliveryState::InFlight
    );

    let log = store.attempts(claimed[0].delivery_id).await.unwrap();
    assert_eq!(log.len(), 1, "recorded once, not twice");
    let log = store.attempts(claimed[1].delivery_id).await.unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    assert_eq!(
        (
            a.attempt,
            a.trigger,
            a.started_at,
            a.duration_ms,
            a.status_code,
            a.outcome
        ),
        (1, Trigger::Auto, 1, 5, Some(503), Outcome::HttpError)
    );
    assert_eq!(
        a.response_body.as_deref(),
        Some("busy, it's \"quoted\" \u{e9}")
    );
    assert!(store
        .attempts(claimed[3].delivery_id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.complete(&[]).await.unwrap(), Vec::<bool>::new());
}

/// Ingestion writes a batch in a few statements; deliveries still get ids in arrival
/// order (an ordered endpoint sends in id order), a repeated event id in the same batch is
/// one event, and an odd row fails alone.
async fn a_batch_of_events_keeps_arrival_order(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["order.*"]))
        .await
        .unwrap();
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
        .map(|d| d.event_id.clone())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    assert_eq!(order, expected, "ids follow arrival order");
    assert_eq!(
        store.event("e7").await.unwrap().unwrap().payload,
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

/// A batch larger than one statement takes (SQLite writes at most 512 rows per statement)
/// is written whole and in order: 700 events to two endpoints, then 600 results at once,
/// one of them stale, recorded row by row.
async fn batches_larger_than_one_statement_are_written_whole(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["*"]))
        .await
        .unwrap();
    let mut values: Vec<String> = (0..700)
        .map(|i| format!("('e{i}', 'order.paid', '{{\"i\":{i}}}')"))
        .collect();
    values.push("('e3', 'order.paid', '{\"again\":true}')".into());
    let (ingested, all) = ingest_outbox_rows(&db, &store, &values).await;
    assert_eq!(ingested, 701);
    assert_eq!(all.len(), 1400, "700 events to each of two endpoints");
    for ep in ["ep_1", "ep_2"] {
        let order: Vec<String> = all
            .iter()
            .filter(|d| d.endpoint_id == ep)
            .map(|d| d.event_id.clone())
            .collect();
        let expected: Vec<String> = (0..700).map(|i| format!("e{i}")).collect();
        assert_eq!(order, expected, "{ep}: ids follow arrival order");
    }
    assert_eq!(
        store.event("e699").await.unwrap().unwrap().payload,
        "{\"i\":699}"
    );

    let claimed = store
        .claim_due(ClaimPlan::first_attempts(600), &[], 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 600);
    let mut batch: Vec<Completion> = claimed.iter().map(succeeded).collect();
    batch[550].lease_token = "not-the-lease".into();
    let recorded = store.complete(&batch).await.unwrap();
    let expected: Vec<bool> = (0..600).map(|i| i != 550).collect();
    assert_eq!(recorded, expected);
    let done = store
        .deliveries(
            &DeliveryFilter {
                state: Some(DeliveryState::Succeeded),
                ..Default::default()
            },
            None,
            2000,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 599);
    for c in [&claimed[0], &claimed[511], &claimed[512], &claimed[599]] {
        let attempts = store.attempts(c.delivery_id).await.unwrap();
        assert_eq!(attempts.len(), 1, "delivery {}", c.delivery_id);
        assert_eq!(attempts[0].outcome, Outcome::Success);
    }
    assert!(store
        .attempts(claimed[550].delivery_id)
        .await
        .unwrap()
        .is_empty());
    let stale = store
        .delivery(claimed[550].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stale.state,
        DeliveryState::InFlight,
        "its lease still holds"
    );
}

/// Another process holds the write lock (a producer's long transaction): a batch of results
/// waits for it, within the busy timeout, instead of failing, and is then recorded.
async fn results_wait_for_another_writer(backend: Backend) {
    use sqlx::Connection;
    let (db, store) = open_with_event(backend).await;
    let claimed = store.claim(10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);

    enum Locker {
        Sqlite(sqlx::SqliteConnection),
        Postgres(sqlx::PgConnection),
    }
    let locker = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Locker::Sqlite(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            // Conflicts with every row write, not with reads.
            sqlx::query("LOCK TABLE hookd_deliveries IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Locker::Postgres(conn)
        }
    };

    let writing = tokio::spawn({
        let store = store.clone();
        let done = succeeded(&claimed[0]);
        async move { store.complete(&[done]).await }
    });
    match backend {
        // SQLite shows no one who waits for a lock. Failing fast (SQLITE_BUSY) would end
        // the task within this time; waiting does not.
        Backend::Sqlite => tokio::time::sleep(Duration::from_millis(300)).await,
        // PostgreSQL does: wait until the batch's lock request queues behind the locker's.
        Backend::Postgres => {
            let watcher = sqlx::PgPool::connect(&db.url).await.unwrap();
            wait_until(
                Duration::from_secs(10),
                "a lock request on the deliveries",
                || {
                    let watcher = watcher.clone();
                    async move {
                        let waiting: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM pg_locks \
                         WHERE NOT granted AND relation = 'hookd_deliveries'::regclass",
                        )
                        .fetch_one(&watcher)
                        .await
                        .unwrap();
                        (waiting > 0).then_some(())
                    }
                },
            )
            .await;
            watcher.close().await;
        }
    }
    assert!(!writing.is_finished(), "the results wait for the lock");
    match locker {
        Locker::Sqlite(mut conn) => sqlx::query("COMMIT").execute(&mut conn).await.map(drop),
        Locker::Postgres(mut conn) => sqlx::query("COMMIT").execute(&mut conn).await.map(drop),
    }
    .unwrap();
    assert_eq!(writing.await.unwrap().unwrap(), vec![true]);
    assert_eq!(one_delivery(&store).await.state, DeliveryState::Succeeded);
}

fn lease(max: u32, busy: &[String], consume: Consume, lease_ms: u64) -> IngestLease<'_> {
    IngestLease {
        max,
        exclude_endpoints: busy,
        consume,
        lease_ms,
    }
}

async fn outbox_len(db: &TestDb) -> i64 {
    db.query_i64("SELECT COUNT(*) FROM hookd_outbox").await
}

async fn an_ingest_leases_what_it_has_room_for(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["refund"]))
        .await
        .unwrap();
    // e1 is already stored: its outbox row is a duplicate and creates nothing.
    store
        .enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
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
    let rest = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!((rest.rows, rest.claimed.len(), rest.more), (1, 1, false));
    assert_eq!(outbox_len(&db).await, 0);
    let empty = store
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!((empty.rows, empty.claimed.len(), empty.more), (0, 0, false));
}

/// More events and deliveries than one statement writes, some already stored: every new
/// delivery is leased once, under the id of its own row.
async fn a_large_ingest_hands_out_the_id_of_each_new_delivery(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    store
        .insert_endpoint(&endpoint("ep_2", &["purchase"]))
        .await
        .unwrap();
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
    let ingested = store
        .ingest_leasing(
            1000,
            &limits(),
            Some(lease(5000, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
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
    let busy = vec!["ep_a".to_string()];

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
        .map(|c| c.event_id)
        .collect();
    assert_eq!(claimed, ["a1", "a2", "a3"]);
}

/// A stand-in for the daemon's AES-GCM sealer: `sealed:<key>:<context>:<text reversed>`,
/// opened only with the same key and context.
struct KeySealer(&'static str);

impl Sealer for KeySealer {
    fn seal(&self, plaintext: &str, context: &str) -> String {
        let reversed: String = plaintext.chars().rev().collect();
        format!("sealed:{}:{context}:{reversed}", self.0)
    }

    fn open(&self, sealed: &str, context: &str) -> Result<String, String> {
        let prefix = format!("sealed:{}:{context}:", self.0);
        let reversed = sealed.strip_prefix(&prefix).ok_or("wrong key")?;
        Ok(reversed.chars().rev().collect())
    }
}

async fn sealed_with(db: &TestDb, key: Option<&'static str>) -> Arc<dyn Store> {
    let sealer = key.map(|k| Arc::new(KeySealer(k)) as Arc<dyn Sealer>);
    connect_sealed(&db.url, sealer).await.expect("connect")
}

/// The endpoints of `claimed`, each with whether it came back unreadable.
fn unreadable_marks(claimed: &[Claimed]) -> Vec<(String, bool)> {
    let mut marks: Vec<(String, bool)> = claimed
        .iter()
        .map(|c| (c.endpoint.id.clone(), c.endpoint.unreadable.is_some()))
        .collect();
    marks.sort();
    marks
}

async fn an_endpoint_that_cannot_be_unsealed_is_read_as_unreadable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = sealed_with(&db, Some("key-a")).await;
    a.migrate().await.unwrap();
    let mut sealed = endpoint("ep_a", &["*"]);
    sealed.bearer_token = Some("tok-a".into());
    a.insert_endpoint(&sealed).await.unwrap();
    let b = sealed_with(&db, Some("key-b")).await;
    b.insert_endpoint(&endpoint("ep_b", &["*"])).await.unwrap();
    // Written before sealing was turned on: plaintext, readable by every store.
    let keyless = sealed_with(&db, None).await;
    keyless
        .insert_endpoint(&endpoint("ep_c", &["*"]))
        .await
        .unwrap();

    // With key b, ep_a's secrets do not open: it reads as unreadable, blanked, and no
    // read of it fails.
    let e = b.endpoint("ep_a").await.unwrap().unwrap();
    let why = e.unreadable.clone().expect("unreadable with another key");
    assert!(why.contains("wrong key"), "{why}");
    assert_eq!(
        (
            e.secret.as_str(),
            e.bearer_token.as_deref(),
            e.previous_secret.as_deref()
        ),
        ("", Some(""), None)
    );
    let listed = b.endpoints(None, 10).await.unwrap();
    let marks: Vec<(&str, bool)> = listed
        .iter()
        .map(|e| (e.id.as_str(), e.unreadable.is_some()))
        .collect();
    assert_eq!(marks, [("ep_a", true), ("ep_b", false), ("ep_c", false)]);
    assert_eq!(listed[1].secret, sealed.secret, "ep_b opens with its key");
    assert_eq!(
        b.unreadable_endpoints().await.unwrap(),
        [("ep_a".to_string(), why.clone())]
    );
    // Without a key, every endpoint holding a sealed value.
    let without_key = keyless.unreadable_endpoints().await.unwrap();
    let ids: Vec<&str> = without_key.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["ep_a", "ep_b"]);
    assert!(
        without_key[0].1.contains("HOOKD_SECRET_KEY"),
        "{without_key:?}"
    );

    // A claim and a leasing ingest holding it succeed; only its deliveries carry the mark.
    b.enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
    let claimed = b.claim(10, 60_000).await.unwrap();
    let expected = [
        ("ep_a".to_string(), true),
        ("ep_b".to_string(), false),
        ("ep_c".to_string(), false),
    ];
    assert_eq!(unreadable_marks(&claimed), expected);
    db.exec("INSERT INTO hookd_outbox (event_type, payload) VALUES ('purchase', '{}')")
        .await;
    let ingested = b
        .ingest_leasing(
            500,
            &limits(),
            Some(lease(10, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(unreadable_marks(&ingested.claimed), expected);

    // An update of its other fields keeps the sealed values it could not read.
    let mut changed = e.clone();
    changed.description = Some("changed".into());
    let updated = b.update_endpoint(&changed).await.unwrap().unwrap();
    assert_eq!(updated.description.as_deref(), Some("changed"));
    assert_eq!(updated.unreadable, Some(why));
    let back = a.endpoint("ep_a").await.unwrap().unwrap();
    assert_eq!(back.unreadable, None);
    assert_eq!(
        (back.secret.as_str(), back.bearer_token.as_deref()),
        (sealed.secret.as_str(), Some("tok-a")),
        "intact under the key they were sealed with"
    );
    assert_eq!(back.description.as_deref(), Some("changed"));

    // Replacing every secret (no longer marked unreadable) seals them under key b.
    let mut replaced = updated;
    replaced.unreadable = None;
    replaced.secret = "whsec_MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=".into();
    replaced.bearer_token = None;
    let rekeyed = b.update_endpoint(&replaced).await.unwrap().unwrap();
    assert_eq!(rekeyed.unreadable, None);
    assert_eq!(rekeyed.secret, replaced.secret);
    assert_eq!(rekeyed.bearer_token, None);
    assert!(b.unreadable_endpoints().await.unwrap().is_empty());
    assert!(a
        .endpoint("ep_a")
        .await
        .unwrap()
        .unwrap()
        .unreadable
        .is_some());

    // Deleted endpoints are not counted.
    assert!(b.delete_endpoint("ep_b").await.unwrap());
    let ids: Vec<String> = keyless
        .unreadable_endpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["ep_a"]);
}

/// An endpoint's version counts the changes of its settings: every update, a disabling by
/// hookd and a delete add one; health figures do not. A write given a version happens only
/// while the endpoint still has it.
async fn endpoint_writes_compare_versions(backend: Backend) {
    let (_db, store) = open(backend).await;
    let stored = store
        .insert_endpoint(&endpoint("ep_v", &["*"]))
        .await
        .unwrap();
    assert_eq!(stored.version, 1);

    let mut changed = stored.clone();
    changed.description = Some("first".into());
    let Versioned::Done(v2) = store.update_endpoint_if(&changed, Some(1)).await.unwrap() else {
        panic!("version 1 is current");
    };
    assert_eq!((v2.version, v2.description.as_deref()), (2, Some("first")));

    // A second write from version 1 is refused and changes nothing.
    let mut stale = stored.clone();
    stale.url = "https://example.com/stale".into();
    assert_eq!(
        store.update_endpoint_if(&stale, Some(1)).await.unwrap(),
        Versioned::Changed
    );
    assert_eq!(
        store.delete_endpoint_if("ep_v", Some(1)).await.unwrap(),
        Versioned::Changed
    );
    let now = store.endpoint("ep_v").await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.url.as_str()),
        (2, "http://127.0.0.1:9/ep_v")
    );

    // Without a version: today's unconditional write, still counted.
    let Versioned::Done(v3) = store.update_endpoint_if(&stale, None).await.unwrap() else {
        panic!("no condition");
    };
    assert_eq!(
        (v3.version, v3.url.as_str()),
        (3, "https://example.com/stale")
    );
    assert_eq!(
        store.update_endpoint(&v3).await.unwrap().unwrap().version,
        4
    );

    // Health figures are not settings; hookd disabling the endpoint changes one.
    store
        .record_endpoint_health(&[("ep_v".into(), true)], None, "failing")
        .await
        .unwrap();
    store
        .record_endpoint_health(&[("ep_v".into(), false)], None, "failing")
        .await
        .unwrap();
    let now = store.endpoint("ep_v").await.unwrap().unwrap();
    assert!(now.failing_since.is_some());
    assert_eq!(now.version, 4);
    assert!(store.disable_endpoint("ep_v", "gone").await.unwrap());
    assert_eq!(store.endpoint("ep_v").await.unwrap().unwrap().version, 5);
    store
        .record_endpoint_health(&[("ep_v".into(), false)], Some(0), "failing too long")
        .await
        .unwrap();
    assert_eq!(
        store.endpoint("ep_v").await.unwrap().unwrap().version,
        5,
        "already disabled: nothing changed"
    );
    let mut enabled = store.endpoint("ep_v").await.unwrap().unwrap();
    enabled.enabled = true;
    enabled.disabled_reason = None;
    enabled.disabled_at = None;
    store.update_endpoint_if(&enabled, Some(5)).await.unwrap();
    let disabled = store
        .record_endpoint_health(&[("ep_v".into(), false)], Some(0), "failing too long")
        .await
        .unwrap();
    assert_eq!(disabled, ["ep_v"]);
    assert_eq!(store.endpoint("ep_v").await.unwrap().unwrap().version, 7);

    // Deleting from the current version; then nothing is left to write.
    assert_eq!(
        store.delete_endpoint_if("ep_v", Some(7)).await.unwrap(),
        Versioned::Done(())
    );
    assert_eq!(
        store.delete_endpoint_if("ep_v", Some(8)).await.unwrap(),
        Versioned::NotFound
    );
    assert_eq!(
        store.update_endpoint_if(&enabled, Some(8)).await.unwrap(),
        Versioned::NotFound
    );
    assert_eq!(
        store
            .update_endpoint_if(&endpoint("ghost", &["*"]), None)
            .await
            .unwrap(),
        Versioned::NotFound
    );
    assert!(!store.delete_endpoint("ep_v").await.unwrap());
}

/// Many writers from the same version at once: exactly one of them changes the endpoint.
async fn concurrent_writes_from_one_version_apply_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    let stored = store
        .insert_endpoint(&endpoint("ep_c", &["*"]))
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let mut mine = stored.clone();
        mine.description = Some(format!("writer {i}"));
        writers.spawn(async move {
            (
                i,
                store
                    .update_endpoint_if(&mine, Some(stored.version))
                    .await
                    .unwrap(),
            )
        });
    }
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move { store.delete_endpoint_if("ep_c", Some(1)).await.unwrap() })
    };
    let mut done = Vec::new();
    for (i, result) in writers.join_all().await {
        match result {
            Versioned::Done(e) => {
                assert_eq!(e.version, 2);
                done.push(format!("writer {i}"));
            }
            Versioned::Changed => {}
            Versioned::NotFound => panic!("writer {i}: the endpoint was there"),
        }
    }
    let deleted = deleter.await.unwrap();
    match deleted {
        Versioned::Done(()) => {
            assert!(
                done.is_empty(),
                "deleted and changed from one version: {done:?}"
            );
            assert!(store.endpoint("ep_c").await.unwrap().is_none());
        }
        Versioned::Changed => {
            assert_eq!(done.len(), 1, "exactly one writer: {done:?}");
            let now = store.endpoint("ep_c").await.unwrap().unwrap();
            assert_eq!(now.description.as_ref(), done.first());
            assert_eq!(now.version, 2);
        }
        Versioned::NotFound => panic!("the endpoint was there"),
    }
}

/// A database behind this build's migrations is not ready, and says how far behind.
async fn readiness_names_migrations_not_applied(backend: Backend) {
    let (db, store) = open(backend).await;
    let known = db
        .query_i64("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .await;
    db.exec(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
    let err = store
        .check_ready()
        .await
        .expect_err("a migration is missing");
    assert!(
        matches!(err, StoreError::NotMigrated { applied, known: k } if applied + 1 == k && k == known as u64),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err}");
}

/// A stored value that does not decode fails the read with the column it is in.
async fn a_stored_value_that_does_not_decode_names_its_column(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    db.exec("UPDATE hookd_endpoints SET headers = 'not json' WHERE id = 'ep_1'")
        .await;
    let err = store
        .endpoint("ep_1")
        .await
        .expect_err("headers do not decode");
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "headers",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err}");
}
