//! The store conformance suite: every case runs unchanged against SQLite and PostgreSQL.
//!
//! One file per theme. A case is an `async fn(Backend)`; each file lists its cases in
//! `hookd_testkit::each_backend!`, which makes of every case one test in a `sqlite` and one
//! in a `postgres` module: `conformance::claim::sqlite::release_undoes_the_claim`. This
//! file holds the helpers the cases share.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hookd_store::*;
use hookd_testkit::{wait_until, Backend, TestDb};

mod catalog;
mod claim;
mod delivery_log;
mod endpoints;
mod errors;
mod fair;
mod ingest;
mod ingest_lease;
mod instances;
mod migrate_forward;
mod operational;
mod ordered;
mod rate_limit;
mod record;
mod resend;
mod retention;
mod sealing;
mod tenants;

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
    enqueue(&store, "e1", "purchase").await;
    (db, store)
}

fn endpoint(id: &str, types: &[&str]) -> Endpoint {
    Endpoint {
        id: id.into(),
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
        tenant_id: None,
        traceparent: None,
    }
}

fn limits() -> IngestLimits {
    IngestLimits::default()
}

pub(crate) fn completion(
    c: &Claimed,
    outcome: Outcome,
    status: Option<i32>,
    next: Next,
) -> Completion {
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

/// Inserts endpoint `id`, subscribed to `types`.
async fn add_endpoint(store: &Arc<dyn Store>, id: &str, types: &[&str]) -> Endpoint {
    store
        .insert_endpoint(&endpoint(id, types))
        .await
        .unwrap_or_else(|e| panic!("insert {id}: {e}"))
}

/// Inserts endpoint `id`, ordered, subscribed to every event type.
async fn add_ordered_endpoint(store: &Arc<dyn Store>, id: &str) -> Endpoint {
    store
        .insert_endpoint(&Endpoint {
            ordered: true,
            ..endpoint(id, &["*"])
        })
        .await
        .unwrap_or_else(|e| panic!("insert {id}: {e}"))
}

/// Stores event `id` of `event_type`, fanned out to the endpoints it matches.
async fn enqueue(store: &Arc<dyn Store>, id: &str, event_type: &str) -> Enqueued {
    store
        .enqueue_event(&event(Some(id), event_type), &limits())
        .await
        .unwrap_or_else(|e| panic!("enqueue {id}: {e}"))
}

/// Ingests up to `max_rows` outbox rows, leasing up to `room` deliveries (no endpoint
/// busy, the rows taken to the room's measure, a lease of a minute).
async fn ingest_to_room(store: &Arc<dyn Store>, max_rows: u32, room: u32) -> Ingested {
    store
        .ingest_leasing(
            max_rows,
            &limits(),
            Some(lease(room, &[], Consume::ToRoom, 60_000)),
        )
        .await
        .expect("ingest")
}

fn lease(max: u32, busy: &[EndpointId], consume: Consume, lease_ms: u64) -> IngestLease<'_> {
    IngestLease {
        max,
        exclude_endpoints: busy,
        consume,
        lease_ms,
    }
}
