//! Migrating forward: a database built at the schema before tenants (migrations up to 0008),
//! holding endpoints, outbox rows, events and deliveries in every state, opened by the
//! current store, which applies the rest. Its data is intact, all of it the provider-wide
//! tenant's, and the work it held is delivered, fair claims included.

use std::borrow::Cow;

use sqlx::migrate::Migrator;
use sqlx::Connection;

use super::*;

hookd_testkit::each_backend!(an_old_database_migrates_forward_and_its_work_is_delivered,);

/// The last migration of the schema before tenants.
const BEFORE_TENANTS: i64 = 8;

static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// `all`'s migrations up to `BEFORE_TENANTS`.
fn before_tenants(all: &Migrator) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version <= BEFORE_TENANTS)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: all.locking,
        no_tx: all.no_tx,
    }
}

/// Builds the database at the schema before tenants.
async fn build_old_schema(db: &TestDb) {
    match db.backend {
        Backend::Sqlite => {
            let options =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
                    .unwrap()
                    .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            before_tenants(&SQLITE).run_direct(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            before_tenants(&POSTGRES)
                .run_direct(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Old rows, with the old columns only: two endpoints; a finished delivery with its attempt;
/// a backlog of 30 due first attempts to `ep_old`; one leased (its lease run out); one
/// retry due to `ep_old2`; one outbox row not yet ingested.
async fn insert_old_rows(db: &TestDb) {
    let now = now_ms();
    let earlier = now - 60_000;
    let mut sql = String::new();
    for id in ["ep_old", "ep_old2"] {
        sql.push_str(&format!(
            "INSERT INTO hookd_endpoints (id, url, event_types, signature_scheme, secret, \
             created_at, updated_at) VALUES ('{id}', 'http://127.0.0.1:9/{id}', '[\"*\"]', \
             'standard', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', {earlier}, {earlier});\n"
        ));
    }
    let mut event = |id: &str, endpoint: &str, state: &str, rest: &str, values: &str| {
        sql.push_str(&format!(
            "INSERT INTO hookd_events (event_id, event_type, payload, created_at) \
             VALUES ('{id}', 'purchase', '{{\"id\":\"{id}\"}}', {earlier});\n\
             INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, created_at, \
             updated_at{rest}) VALUES ('{id}', '{endpoint}', 'purchase', '{state}', {earlier}, \
             {earlier}{values});\n"
        ));
    };
    event(
        "old_done",
        "ep_old",
        "succeeded",
        ", attempts, auto_attempts, finished_at, last_status_code",
        &format!(", 1, 1, {earlier}, 200"),
    );
    for i in 0..30 {
        event(
            &format!("old_pending{i}"),
            "ep_old",
            "pending",
            ", next_attempt_at",
            &format!(", {}", earlier + i),
        );
    }
    event(
        "old_leased",
        "ep_old",
        "in_flight",
        ", attempts, auto_attempts, lease_token, lease_expires_at",
        &format!(", 1, 1, 'old-lease', {}", now - 1000),
    );
    event(
        "old_retry",
        "ep_old2",
        "pending",
        ", attempts, auto_attempts, next_attempt_at, last_status_code",
        &format!(", 1, 1, {}, 503", now - 1000),
    );
    sql.push_str(&format!(
        "INSERT INTO hookd_attempts (delivery_id, attempt, trigger, started_at, duration_ms, \
         status_code, outcome, response_body) SELECT id, 1, 'auto', {earlier}, 5, 200, \
         'success', 'ok' FROM hookd_deliveries WHERE event_id = 'old_done';\n\
         INSERT INTO hookd_outbox (event_id, event_type, payload) \
         VALUES ('old_outbox', 'purchase', '{{\"id\":\"old_outbox\"}}');\n"
    ));
    db.exec(&sql).await;
}

async fn an_old_database_migrates_forward_and_its_work_is_delivered(backend: Backend) {
    let db = TestDb::new(backend).await;
    build_old_schema(&db).await;
    insert_old_rows(&db).await;

    let store = connect(&db.url).await.unwrap();
    assert!(
        store.check_ready().await.is_err(),
        "an old database is not ready before it migrates"
    );
    store.migrate().await.expect("migrate forward");
    store.check_ready().await.expect("ready after migrating");

    // Intact, and every row the provider-wide tenant's.
    let old = store
        .endpoint(&"ep_old".into())
        .await
        .unwrap()
        .expect("ep_old");
    assert_eq!(old.url, "http://127.0.0.1:9/ep_old");
    assert_eq!(old.event_types, vec!["*".to_string()]);
    assert!(old.enabled && old.tenant_id.is_none() && !old.ordered);
    for table in [
        "hookd_endpoints",
        "hookd_events",
        "hookd_deliveries",
        "hookd_outbox",
    ] {
        assert_eq!(
            db.query_i64(&format!(
                "SELECT COUNT(*) FROM {table} WHERE tenant_id IS NOT NULL"
            ))
            .await,
            0,
            "{table}"
        );
    }
    let all = store
        .deliveries(&DeliveryFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 33);
    let done = all.iter().find(|d| d.event_id == "old_done").unwrap();
    assert_eq!(done.state, DeliveryState::Succeeded);
    assert!(done.tenant_id.is_none());
    let attempts = store.attempts(done.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
    let event = store
        .event(&"old_pending0".into())
        .await
        .unwrap()
        .expect("event");
    assert!(event.tenant_id.is_none());

    // A tenant arrives after the migration, with one fresh event behind ep_old's backlog.
    store
        .insert_endpoint(&Endpoint {
            tenant_id: Some(TenantId::parse("t").unwrap()),
            ..endpoint("ep_t", &["*"])
        })
        .await
        .unwrap();
    store
        .enqueue_event(
            &NewEvent {
                tenant_id: Some("t".into()),
                ..super::event(Some("fresh_t"), "purchase")
            },
            &limits(),
        )
        .await
        .unwrap();
    // The old outbox row goes to the provider-wide endpoints only; the run-out lease is
    // rescued.
    assert_eq!(store.ingest_outbox(100, &limits()).await.unwrap(), 1);
    assert_eq!(store.rescue_expired().await.unwrap(), 1);

    // A fair claim: the tenant's fresh event is in the first two places.
    let first = store.claim(2, 60_000).await.unwrap();
    assert!(
        first.iter().any(|c| c.event_id == "fresh_t"),
        "{:?}",
        first.iter().map(|c| &c.event_id).collect::<Vec<_>>()
    );
    // Then everything else that was waiting, once each.
    let mut claimed: Vec<String> = first.iter().map(|c| c.event_id.to_string()).collect();
    loop {
        let more = store.claim(7, 60_000).await.unwrap();
        if more.is_empty() {
            break;
        }
        store
            .complete(&more.iter().map(succeeded).collect::<Vec<_>>())
            .await
            .unwrap();
        claimed.extend(more.into_iter().map(|c| c.event_id.to_string()));
    }
    let mut want: Vec<String> = (0..30).map(|i| format!("old_pending{i}")).collect();
    want.extend(
        [
            "old_leased",
            "old_retry",
            "old_outbox",
            "old_outbox",
            "fresh_t",
        ]
        .map(String::from),
    );
    want.sort();
    claimed.sort();
    assert_eq!(claimed, want);
    let outbox_to: Vec<String> = store
        .deliveries(&DeliveryFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.event_id == "old_outbox")
        .map(|d| d.endpoint_id.to_string())
        .collect();
    assert_eq!(outbox_to.len(), 2, "{outbox_to:?}");
    assert!(!outbox_to.contains(&"ep_t".to_string()));
}
