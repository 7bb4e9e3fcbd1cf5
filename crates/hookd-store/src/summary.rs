//! Endpoint summaries: per endpoint, how its recent deliveries went and what is waiting now
//! ([`Store::endpoint_summaries`](crate::Store::endpoint_summaries)), for the dashboard's
//! overview and `GET /v1/endpoints/summary`.
//!
//! Three reads, none of which grows with the history:
//!
//! 1. the window's start on the database clock, and the id of the first delivery created
//!    since then: one seek in the index on `created_at` (whose entries end with the id);
//! 2. per endpoint of the page, its deliveries of the window: a range of the index on
//!    `(endpoint_id, id)` from that id on;
//! 3. per endpoint of the page, its unfinished deliveries: the partial index of unfinished
//!    rows, whose size is the backlog.
//!
//! Ids and creation times rise together, so "created since" is "id from the first one
//! created since" with `created_at` checked on each row. On PostgreSQL a transaction's
//! rows take `created_at` from its start and their ids as they are inserted: a delivery
//! inserted at the window's very start by a transaction that began after the first one may
//! hold a smaller id and is then left out. A figure over hours does not notice.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::{Endpoint, Result};

/// `$1`: the window in ms. The window's start, and the id of the first delivery created
/// at or after it (`NULL`: none).
#[doc(hidden)]
pub const WINDOW_START: &str = "SELECT s.since, \
    (SELECT MIN(d.id) FROM hookd_deliveries d WHERE d.created_at = \
     (SELECT c.created_at FROM hookd_deliveries c WHERE c.created_at >= s.since \
      ORDER BY c.created_at LIMIT 1)) \
    FROM (SELECT hookd_now_ms() - $1 AS since) s";

/// `$1`..`$2`: the first and last endpoint id of the page; `$3`: the first delivery id of
/// the window; `$4`: its start; `$5`: the scope's tenant (NULL: every endpoint), so that a
/// tenant's page does not count the other tenants' endpoints between its first and last. Per live endpoint: deliveries created in the window,
/// succeeded, failed, and pending after a failed attempt. Endpoints first (`CROSS JOIN`
/// keeps SQLite to that order), each read through its own range of deliveries from the
/// first id on. `+d.created_at` keeps the index on `created_at` out of it: with statistics,
/// SQLite would otherwise read the whole window through that index once per endpoint.
#[doc(hidden)]
pub const WINDOW_COUNTS: &str = "SELECT e.id, COUNT(*), \
    SUM(CASE WHEN d.state = 'succeeded' THEN 1 ELSE 0 END), \
    SUM(CASE WHEN d.state = 'failed' THEN 1 ELSE 0 END), \
    SUM(CASE WHEN d.state = 'pending' AND d.attempts > 0 THEN 1 ELSE 0 END) \
    FROM hookd_endpoints e CROSS JOIN hookd_deliveries d \
    WHERE e.id >= $1 AND e.id <= $2 AND e.deleted_at IS NULL \
    AND ($5 IS NULL OR e.tenant_id = $5) \
    AND d.endpoint_id = e.id AND d.id >= $3 AND +d.created_at >= $4 \
    GROUP BY e.id";

/// `$1`..`$2`: the page's first and last endpoint id; `$3`: the scope's tenant (NULL:
/// every endpoint). Per live endpoint: its deliveries
/// pending or in flight now, whatever their age (`held IS NOT NULL` spells out the partial
/// index's predicate, see migration 0007).
#[doc(hidden)]
pub const UNFINISHED: &str = "SELECT e.id, \
    (SELECT COUNT(*) FROM hookd_deliveries d WHERE d.endpoint_id = e.id \
     AND d.state IN ('pending', 'in_flight') AND d.held IS NOT NULL) \
    FROM hookd_endpoints e WHERE e.id >= $1 AND e.id <= $2 AND e.deleted_at IS NULL \
    AND ($3 IS NULL OR e.tenant_id = $3)";

/// One endpoint's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSummary {
    pub endpoint: Endpoint,
    /// Deliveries created in the window, by their state now.
    pub deliveries: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Of the window's deliveries, those pending after at least one attempt: waiting for a
    /// retry, or parked.
    pub retrying: u64,
    /// Deliveries pending (due, waiting, parked or held) or in flight now, whatever their
    /// age.
    pub pending: u64,
}

impl EndpointSummary {
    /// Succeeded of those finished, `None` when none finished.
    pub fn success_rate(&self) -> Option<f64> {
        let finished = self.succeeded + self.failed;
        (finished > 0).then(|| self.succeeded as f64 / finished as f64)
    }
}

/// A page of endpoint summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Summaries {
    /// The window's start (ms, database clock): deliveries created at or after it count.
    pub since_ms: i64,
    /// In the order of the endpoints given.
    pub endpoints: Vec<EndpointSummary>,
}

/// The figures of `endpoints` (a page of live endpoints, ordered by id) over the last
/// `window_ms`, read with `pool` in the backend's dialect (`sql`).
pub(crate) async fn summarize<DB>(
    pool: &sqlx::Pool<DB>,
    sql: fn(&'static str) -> Cow<'static, str>,
    endpoints: Vec<Endpoint>,
    window_ms: i64,
    tenant: Option<String>,
) -> Result<Summaries>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    String: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    Option<String>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let (since_ms, first_id): (i64, Option<i64>) = sqlx::query_as(&sql(WINDOW_START))
        .bind(window_ms)
        .fetch_one(pool)
        .await?;
    let (Some(low), Some(high)) = (endpoints.first(), endpoints.last()) else {
        return Ok(Summaries {
            since_ms,
            endpoints: Vec::new(),
        });
    };
    let (low, high) = (low.id.to_string(), high.id.to_string());
    let mut window: HashMap<String, [i64; 4]> = HashMap::new();
    if let Some(first_id) = first_id {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&sql(WINDOW_COUNTS))
            .bind(low.clone())
            .bind(high.clone())
            .bind(first_id)
            .bind(since_ms)
            .bind(tenant.clone())
            .fetch_all(pool)
            .await?;
        window.extend(
            rows.into_iter()
                .map(|(id, n, ok, failed, retrying)| (id, [n, ok, failed, retrying])),
        );
    }
    let unfinished: HashMap<String, i64> = sqlx::query_as(&sql(UNFINISHED))
        .bind(low)
        .bind(high)
        .bind(tenant)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let count = |n: i64| n.max(0) as u64;
    let endpoints = endpoints
        .into_iter()
        .map(|endpoint| {
            let [deliveries, succeeded, failed, retrying] = window
                .get(endpoint.id.as_str())
                .copied()
                .unwrap_or_default();
            let pending = unfinished
                .get(endpoint.id.as_str())
                .copied()
                .unwrap_or_default();
            EndpointSummary {
                deliveries: count(deliveries),
                succeeded: count(succeeded),
                failed: count(failed),
                retrying: count(retrying),
                pending: count(pending),
                endpoint,
            }
        })
        .collect();
    Ok(Summaries {
        since_ms,
        endpoints,
    })
}
