//! The event-type catalog: the event types a provider documents, each with an optional JSON
//! Schema, and [`PayloadCheck`], how an ingest asks whether a payload matches its type's
//! schema. The store keeps the catalog and runs the check; it knows nothing of JSON Schema
//! (the daemon compiles the schemas and implements the check).

/// One catalogued event type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventType {
    /// The event type, as events carry it in `event_type`.
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema, as JSON text: the payloads of events of this type must match it.
    pub schema: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Whether a payload may be delivered as far as its event type's schema goes. An ingest
/// given one ([`crate::IngestLimits::check`]) stores an event that fails it with the reason
/// as its `payload_error`, and its deliveries end `failed` with it, as a malformed payload's
/// do.
pub trait PayloadCheck: Send + Sync + std::fmt::Debug {
    /// Why `payload` (valid JSON within the limits) cannot be an event of `event_type`, or
    /// `None` when it can. Called for every incoming event: it must cost next to nothing
    /// for a type without a schema.
    fn check(&self, event_type: &str, payload: &str) -> Option<String>;
}

/// `(name, description, schema, created_at, updated_at)` as the statements return it.
pub(crate) type EventTypeRow = (String, Option<String>, Option<String>, i64, i64);

pub(crate) fn from_row(
    (name, description, schema, created_at, updated_at): EventTypeRow,
) -> EventType {
    EventType {
        name,
        description,
        schema,
        created_at,
        updated_at,
    }
}

/// `$1` after this name (`''` from the start), `$2` limit.
pub(crate) const LIST: &str = "SELECT name, description, schema, created_at, updated_at \
    FROM hookd_event_types WHERE name > $1 ORDER BY name LIMIT $2";

pub(crate) const GET: &str = "SELECT name, description, schema, created_at, updated_at \
    FROM hookd_event_types WHERE name = $1";

/// A name already there inserts nothing and returns no row.
pub(crate) const INSERT: &str = "INSERT INTO hookd_event_types \
    (name, description, schema, created_at, updated_at) \
    VALUES ($1, $2, $3, hookd_now_ms(), hookd_now_ms()) ON CONFLICT (name) DO NOTHING \
    RETURNING name, description, schema, created_at, updated_at";

pub(crate) const UPDATE: &str = "UPDATE hookd_event_types SET description = $2, schema = $3, \
    updated_at = hookd_now_ms() WHERE name = $1 \
    RETURNING name, description, schema, created_at, updated_at";

pub(crate) const DELETE: &str = "DELETE FROM hookd_event_types WHERE name = $1";

/// Runs [`LIST`] on `conn`: up to `limit` types after `after`.
pub(crate) async fn list<'a, DB, E>(
    conn: E,
    after: Option<&'a str>,
    limit: u32,
) -> crate::Result<Vec<EventType>>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'a, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'q> i64: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'r> EventTypeRow: sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<EventTypeRow> = sqlx::query_as::<DB, EventTypeRow>(LIST)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Runs [`INSERT`] or [`UPDATE`] (`statement`, in the store's dialect) of `t` on `conn`:
/// the type as stored, or `None` when nothing was written.
pub(crate) async fn write<'a, DB, E>(
    conn: E,
    statement: &'a str,
    t: &'a EventType,
) -> crate::Result<Option<EventType>>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'a, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'q> Option<&'q str>: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'r> EventTypeRow: sqlx::FromRow<'r, DB::Row>,
{
    let row: Option<EventTypeRow> = sqlx::query_as::<DB, EventTypeRow>(statement)
        .bind(t.name.as_str())
        .bind(t.description.as_deref())
        .bind(t.schema.as_deref())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(from_row))
}
