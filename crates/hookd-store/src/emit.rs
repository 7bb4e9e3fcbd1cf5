//! The writes of operational events ([`crate::operational`]), generic over sqlx's
//! [`Database`], always inside the transaction of the state change that causes them: the
//! event and the change commit together or not at all. Only state changes pay: a batch of
//! results with no final automatic failure, or a health write that changes nothing, runs
//! none of these statements.

use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use crate::model::{Completion, EndpointId};
use crate::operational::{self, Exhausted, Notice};
use crate::rows;
use crate::shared::{self, Dialect};
use crate::sql;
use crate::Result;

/// Marks an endpoint's failing period as told, unless it was told less than
/// [`operational::FAILING_NOTICE_INTERVAL_MS`] ago; returns its tenant when it marked.
const FAILING_NOTICE: &str = "UPDATE hookd_endpoints SET failing_noticed_at = hookd_now_ms() \
    WHERE id = $1 AND (failing_noticed_at IS NULL OR failing_noticed_at <= hookd_now_ms() - $2) \
    RETURNING tenant_id";

const ENDPOINT_TENANT: &str = "SELECT tenant_id FROM hookd_endpoints WHERE id = $1";

/// Deliveries of a batch that are `failed` now (a resend asked for meanwhile made the others
/// pending again).
const EXHAUSTED: &str = "SELECT id, event_id, event_type, endpoint_id, tenant_id, attempts, \
    last_status_code, last_error FROM hookd_deliveries WHERE state = 'failed' AND id IN ";

/// Rows per statement of the reads and inserts below.
const CHUNK: usize = 256;

/// `hookd.endpoint.failing` for an endpoint whose failing period just began, unless one was
/// told within the hour.
pub(crate) async fn failing<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    id: &EndpointId,
) -> Result<Option<Notice>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
{
    let marked: Option<(Option<String>,)> = sqlx::query_as::<DB, _>(&dialect(FAILING_NOTICE))
        .bind(id.as_str())
        .bind(operational::FAILING_NOTICE_INTERVAL_MS)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(marked.map(|(tenant_id,)| Notice::EndpointFailing {
        endpoint_id: id.to_string(),
        tenant_id,
    }))
}

/// The tenant of an endpoint (`None` also when there is no such endpoint).
pub(crate) async fn tenant_of<DB>(
    conn: &mut DB::Connection,
    id: &EndpointId,
) -> Result<Option<String>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
{
    let row: Option<(Option<String>,)> = sqlx::query_as::<DB, _>(ENDPOINT_TENANT)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.and_then(|(t,)| t))
}

/// `hookd.endpoint.disabled` of endpoint `id`.
pub(crate) async fn disabled<DB>(
    conn: &mut DB::Connection,
    id: &EndpointId,
    reason: &str,
) -> Result<Notice>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
{
    Ok(Notice::EndpointDisabled {
        endpoint_id: id.to_string(),
        tenant_id: tenant_of::<DB>(conn, id).await?,
        reason: reason.to_string(),
    })
}

type ExhaustedRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    i32,
    Option<i32>,
    Option<String>,
);

/// `hookd.delivery.exhausted` for each delivery of `batch` whose recorded result made it
/// give up, unless it was itself an operational event. No statement when no result may have.
pub(crate) async fn exhausted<DB>(
    conn: &mut DB::Connection,
    batch: &[Completion],
    recorded: &[bool],
) -> Result<Vec<Notice>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB>,
    for<'r> ExhaustedRow: FromRow<'r, DB::Row>,
{
    let ids: Vec<i64> = batch
        .iter()
        .zip(recorded)
        .filter(|(c, ok)| **ok && operational::may_exhaust(c))
        .map(|(c, _)| c.delivery_id)
        .collect();
    let mut notices = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let places: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
        let sql = format!("{EXHAUSTED}({})", places.join(", "));
        let mut q = sqlx::query_as::<DB, ExhaustedRow>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let (delivery_id, event_id, event_type, endpoint_id, tenant_id, attempts, code, error) =
                row;
            if operational::tells_exhaustion(&event_type) {
                notices.push(Notice::DeliveryExhausted(Exhausted {
                    delivery_id,
                    event_id,
                    event_type,
                    endpoint_id,
                    tenant_id,
                    attempts,
                    last_status_code: code,
                    last_error: error,
                }));
            }
        }
    }
    Ok(notices)
}

/// Writes `notices` into `hookd_outbox`, one row per subscribed tenant of each (none when
/// nobody subscribes), for the usual ingest to fan out.
pub(crate) async fn write<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    notices: &[Notice],
) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    for<'r> rows::TargetRow: FromRow<'r, DB::Row>,
{
    if notices.is_empty() {
        return Ok(());
    }
    let targets = shared::targets::<DB>(&mut *conn, dialect).await?;
    let now: i64 = sqlx::query_scalar::<DB, i64>(&dialect(sql::NOW))
        .fetch_one(&mut *conn)
        .await?;
    let rows = operational::outbox_rows(notices, &targets, now);
    for chunk in rows.chunks(CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = 4 * i;
                format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
            })
            .collect();
        let sql = format!(
            "INSERT INTO hookd_outbox (event_id, event_type, payload, tenant_id) VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query::<DB>(&sql);
        for r in chunk {
            insert = insert
                .bind(r.event_id.as_str())
                .bind(r.event_type)
                .bind(r.payload.as_str())
                .bind(r.tenant_id.as_deref());
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}
