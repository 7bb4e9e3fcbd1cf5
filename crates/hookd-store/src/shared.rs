//! The Rust both stores run around their statements, generic over sqlx's [`Database`]: the
//! endpoint's bound values, endpoint lookups and pages, joining claimed rows with their
//! endpoints, what an ingest did, the endpoints fan-out chooses among, storing events and
//! their deliveries (around the inserts each store writes its own way: [`IngestWrites`]),
//! and the ordered endpoints a batch of results lets go. Each function takes the backend's
//! dialect (`sql`: SQLite's rewrite, or PostgreSQL's text as written) where its statement
//! is shared from `sql.rs`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::common;
use crate::ingest::{self, Incoming, Leasing, NewDelivery, PreparedEvent};
use crate::matching::Target;
use crate::rows::{self, ClaimRow, EndpointRow, ENDPOINT_COLUMNS};
use crate::sql;
use crate::{
    Claimed, Completion, Endpoint, EndpointId, IngestLimits, Ingested, Lease, Release, Result,
    Scope, Sealer, Store, Versioned,
};

/// A backend's text of a statement written in `sql.rs`.
pub(crate) type Dialect = fn(&'static str) -> Cow<'static, str>;

/// Binds the endpoint's values `$1` to `$16`, shared by [`sql::INSERT_ENDPOINT`] and
/// [`sql::UPDATE_ENDPOINT`] (each binds its own after them), its secrets sealed with
/// `sealer`.
pub(crate) fn bind_endpoint<'q, DB>(
    query: Query<'q, DB, DB::Arguments<'q>>,
    e: &'q Endpoint,
    sealer: Option<&dyn Sealer>,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    &'q str: Type<DB> + Encode<'q, DB>,
    String: Type<DB> + Encode<'q, DB>,
    i64: Type<DB> + Encode<'q, DB>,
    bool: Type<DB> + Encode<'q, DB>,
    Option<&'q str>: Encode<'q, DB>,
    Option<String>: Encode<'q, DB>,
    Option<i64>: Encode<'q, DB>,
{
    let (event_types, schedule, headers) = rows::endpoint_json(e);
    let seal = |value: &str| crate::seal(sealer, value, e.id.as_str());
    query
        .bind(e.id.as_str())
        .bind(e.url.as_str())
        .bind(e.description.as_deref())
        .bind(event_types)
        .bind(e.bearer_token.as_deref().map(seal))
        .bind(e.signature_scheme.as_str())
        .bind(seal(&e.secret))
        .bind(schedule)
        .bind(e.timeout_ms.map(|t| t as i64))
        .bind(headers)
        .bind(e.enabled)
        .bind(e.disabled_reason.as_deref())
        .bind(e.disabled_at)
        .bind(e.previous_secret.as_deref().map(seal))
        .bind(e.previous_secret_expires_at)
        .bind(e.ordered)
}

/// An endpoint, deleted or not.
pub(crate) async fn endpoint_any<'e, DB>(
    executor: impl Executor<'e, Database = DB>,
    sealer: Option<&dyn Sealer>,
    id: &EndpointId,
) -> Result<Option<Endpoint>>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'r> EndpointRow: FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM hookd_endpoints WHERE id = $1");
    sqlx::query_as::<DB, EndpointRow>(&sql)
        .bind(id.as_str())
        .fetch_optional(executor)
        .await?
        .map(|row| Ok(crate::open_endpoint(sealer, row.try_into()?)))
        .transpose()
}

/// Live endpoints visible in `scope`, ordered by id, after `after`.
pub(crate) async fn endpoints_in<DB>(
    pool: &Pool<DB>,
    sealer: Option<&dyn Sealer>,
    scope: &Scope,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Endpoint>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB>,
    for<'r> EndpointRow: FromRow<'r, DB::Row>,
{
    let live = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM hookd_endpoints \
         WHERE deleted_at IS NULL AND id > $1 {} ORDER BY id LIMIT $2",
        common::tenant_endpoints(scope)
    );
    let mut q = sqlx::query_as::<DB, EndpointRow>(&live)
        .bind(after.unwrap_or(""))
        .bind(limit as i64);
    if let Some(tenant) = scope.tenant() {
        q = q.bind(tenant.as_str());
    }
    q.fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| Ok(crate::open_endpoint(sealer, row.try_into()?)))
        .collect()
}

/// Endpoints by id, deleted ones included (a claimed delivery of a deleted endpoint
/// must be failed, not dropped).
pub(crate) async fn endpoints_by_id<'a, DB>(
    pool: &Pool<DB>,
    sealer: Option<&dyn Sealer>,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<EndpointId, Arc<Endpoint>>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'r> EndpointRow: FromRow<'r, DB::Row>,
{
    let ids: BTreeSet<&str> = ids.collect();
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let places: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM hookd_endpoints WHERE id IN ({})",
        places.join(", ")
    );
    let mut q = sqlx::query_as::<DB, EndpointRow>(&sql);
    for id in ids {
        q = q.bind(id);
    }
    for row in q.fetch_all(pool).await? {
        let e = crate::open_endpoint(sealer, row.try_into()?);
        found.insert(e.id.clone(), Arc::new(e));
    }
    Ok(found)
}

/// Joins claimed rows with their endpoints, read with `pool`. If that fails, the rows are
/// handed back to `store` (due now, the claim undone) before the error is returned: a claim
/// that cannot be completed must not leave leases to expire and charge a lost attempt.
pub(crate) async fn with_endpoints<S, DB>(
    store: &S,
    pool: &Pool<DB>,
    sealer: Option<&dyn Sealer>,
    rows: Vec<ClaimRow>,
) -> Result<Vec<Claimed>>
where
    S: Store + ?Sized,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'r> EndpointRow: FromRow<'r, DB::Row>,
{
    let leases: Vec<Lease> = rows.iter().map(ClaimRow::lease).collect();
    let endpoints =
        endpoints_by_id(pool, sealer, rows.iter().map(|r| r.endpoint_id.as_str())).await;
    let joined = endpoints.and_then(|endpoints| common::join_endpoints(rows, &endpoints));
    if joined.is_err() {
        if let Err(undo) = store.release(&leases, Release::Now).await {
            tracing::warn!(error = %undo, "cannot hand back a claim that failed");
        }
    }
    joined
}

/// What an ingest of `rows` outbox rows did, its leased deliveries joined with their
/// endpoints by `join` (the store's [`with_endpoints`]: handed back if that fails).
pub(crate) async fn ingested<Join>(
    rows: usize,
    more: bool,
    leasing: Option<Leasing<'_>>,
    join: impl FnOnce(Vec<ClaimRow>) -> Join,
) -> Result<Ingested>
where
    Join: std::future::Future<Output = Result<Vec<Claimed>>>,
{
    let (claimed, due, blocked) = match leasing {
        Some(l) if !l.rows.is_empty() => (join(l.rows).await?, l.due, l.blocked),
        Some(l) => (Vec::new(), l.due, l.blocked),
        // Not counted without a lease: due as far as anyone knows.
        None => (Vec::new(), rows > 0, false),
    };
    Ok(Ingested {
        rows: rows as u64,
        claimed,
        due,
        more,
        blocked,
    })
}

/// The endpoints fan-out chooses among, read inside the caller's transaction.
pub(crate) async fn targets<DB>(conn: &mut DB::Connection, dialect: Dialect) -> Result<Vec<Target>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> rows::TargetRow: FromRow<'r, DB::Row>,
{
    sqlx::query_as::<DB, rows::TargetRow>(&dialect(sql::TARGETS))
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(Target::try_from)
        .collect()
}

/// Which results of `batch` were recorded (`done`: the delivery ids written), and, inside
/// the caller's transaction, the next delivery of each ordered endpoint a final one of them
/// lets go.
pub(crate) async fn recorded<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    batch: &[Completion],
    done: &[i64],
) -> Result<Vec<bool>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
{
    let recorded = rows::recorded(batch, done);
    let promote = dialect(sql::PROMOTE_ENDPOINT_NEXT);
    for endpoint in rows::ordered_endpoints(batch, &recorded) {
        sqlx::query::<DB>(&promote)
            .bind(endpoint)
            .execute(&mut *conn)
            .await?;
    }
    Ok(recorded)
}

/// Why a conditional write of an endpoint changed no row, read inside the caller's
/// transaction: no such live endpoint, or it no longer has the version named.
pub(crate) async fn unwritten<DB, T>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    id: &EndpointId,
) -> Result<Versioned<T>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    bool: Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    (bool,): for<'r> FromRow<'r, DB::Row>,
{
    let live: bool = sqlx::query_scalar::<DB, bool>(&dialect(sql::ENDPOINT_LIVE))
        .bind(id.as_str())
        .fetch_one(conn)
        .await?;
    Ok(if live {
        Versioned::Changed
    } else {
        Versioned::NotFound
    })
}

/// The writes of an ingest each store makes in its own way (PostgreSQL: one statement of
/// JSON rows each; SQLite: chunks of bound `VALUES` rows), inside the caller's transaction.
#[async_trait::async_trait]
pub(crate) trait IngestWrites {
    type DB: Database;
    /// Run (`$1`: the endpoint) before an ordered endpoint's check for unfinished
    /// deliveries, to serialise its ingestion across instances; `None` where the store's
    /// one writer already does.
    const LOCK_ORDERED: Option<&'static str>;

    /// New events; returns the ids inserted.
    async fn insert_events(
        conn: &mut <Self::DB as Database>::Connection,
        rows: &[PreparedEvent<'_>],
    ) -> Result<Vec<String>>;

    /// New deliveries, in order.
    async fn insert_deliveries(
        conn: &mut <Self::DB as Database>::Connection,
        rows: &[NewDelivery<'_>],
    ) -> Result<()>;

    /// New deliveries created leased; returns each one's id, event and endpoint.
    async fn insert_leased_deliveries(
        conn: &mut <Self::DB as Database>::Connection,
        rows: &[NewDelivery<'_>],
    ) -> Result<Vec<(i64, String, String)>>;

    /// The deliveries each of `event_ids` has in the database.
    async fn count_deliveries(
        conn: &mut <Self::DB as Database>::Connection,
        event_ids: &[String],
    ) -> Result<Vec<(String, i64)>>;
}

/// The answers of a group of events [`store_events`] stored, in their order: the counts of
/// new events follow from what was written; only events stored before (a repeated
/// `event_id`) are counted in the database.
pub(crate) async fn enqueued<W: IngestWrites>(
    conn: &mut <W::DB as Database>::Connection,
    stored: Stored,
) -> Result<Vec<crate::Enqueued>> {
    let ids = stored.known_before();
    let Stored { events, mut counts } = stored;
    if !ids.is_empty() {
        let before = W::count_deliveries(conn, &ids).await?;
        counts.extend(before.into_iter().map(|(id, n)| (id, n as u64)));
    }
    Ok(rows::enqueued(events, &counts))
}

/// Stores events and their deliveries inside the caller's transaction, in three statements
/// whatever the number of events (plus, per ordered endpoint reached, its check for
/// unfinished deliveries and the store's lock, and one when some are leased). Returns, per
/// event, its id and whether it was new, and the number of deliveries of each new event; a
/// repeated id (in the database or earlier in `events`) creates nothing. With `leasing`,
/// the new deliveries due now are created leased while it has room.
pub(crate) async fn store_events<W: IngestWrites>(
    conn: &mut <W::DB as Database>::Connection,
    dialect: Dialect,
    targets: &[Target],
    events: &[Incoming<'_>],
    limits: &IngestLimits,
    mut leasing: Option<&mut Leasing<'_>>,
) -> Result<Stored>
where
    for<'c> &'c mut <W::DB as Database>::Connection: Executor<'c, Database = W::DB>,
    for<'q> <W::DB as Database>::Arguments<'q>: IntoArguments<'q, W::DB>,
    for<'q> &'q str: Type<W::DB> + Encode<'q, W::DB>,
    bool: Type<W::DB> + for<'r> sqlx::Decode<'r, W::DB>,
    (bool,): for<'r> FromRow<'r, <W::DB as Database>::Row>,
{
    let prepared = ingest::prepare(events, limits);
    let new_ids: HashSet<String> = if prepared.rows.is_empty() {
        HashSet::new()
    } else {
        W::insert_events(&mut *conn, &prepared.rows)
            .await?
            .into_iter()
            .collect()
    };
    let has_unfinished = dialect(sql::HAS_UNFINISHED);
    let mut busy = HashMap::new();
    for endpoint_id in ingest::ordered_endpoints(&prepared, &new_ids, targets) {
        if let Some(lock) = W::LOCK_ORDERED {
            sqlx::query::<W::DB>(lock)
                .bind(endpoint_id.as_str())
                .execute(&mut *conn)
                .await?;
        }
        let unfinished: bool = sqlx::query_scalar::<W::DB, bool>(&has_unfinished)
            .bind(endpoint_id.as_str())
            .fetch_one(&mut *conn)
            .await?;
        busy.insert(endpoint_id, unfinished);
    }
    let token = leasing.as_ref().map(|l| l.token.clone());
    let (deliveries, leased) = ingest::fan_out(
        &prepared,
        &new_ids,
        targets,
        busy,
        leasing.as_deref_mut(),
        token.as_deref(),
    );
    let mut counts: HashMap<String, u64> = new_ids.iter().map(|id| (id.clone(), 0)).collect();
    for d in &deliveries {
        *counts.entry(d.event_id.to_string()).or_default() += 1;
    }
    if leased > 0 {
        // Leased ones first: an ordered endpoint's leased delivery is its first in this
        // batch, the rest wait behind it, so ids keep arrival order.
        let (taken, rest): (Vec<_>, Vec<_>) = deliveries
            .into_iter()
            .partition(|d| d.lease_token.is_some());
        let created = W::insert_leased_deliveries(&mut *conn, &taken).await?;
        if !rest.is_empty() {
            W::insert_deliveries(&mut *conn, &rest).await?;
        }
        leasing
            .expect("deliveries are leased only with a lease")
            .add_created(created, &prepared)?;
    } else if !deliveries.is_empty() {
        W::insert_deliveries(&mut *conn, &deliveries).await?;
    }
    Ok(Stored {
        events: prepared.created(&new_ids),
        counts,
    })
}

/// What [`store_events`] stored.
pub(crate) struct Stored {
    /// Per event given, in order: its id, and whether this call created it.
    pub events: Vec<(String, bool)>,
    /// The deliveries of each event this call created (those of a known event are not
    /// here: they are in the database).
    pub counts: HashMap<String, u64>,
}

impl Stored {
    /// The events whose delivery counts are not known here: those stored before.
    pub fn known_before(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .events
            .iter()
            .filter(|(id, _)| !self.counts.contains_key(id))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
