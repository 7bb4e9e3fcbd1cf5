//! A share of the outbox for every tenant. An outbox read takes rows in `seq` order; when
//! one tenant's producer has committed a backlog, another tenant's fresh row would wait
//! behind all of it, however fairly the deliveries are claimed once they exist. So a read
//! that fills its window (a backlog) also takes, beyond the last row it read, the first
//! [`ROWS_PER_TENANT`] rows of each of up to [`TENANTS_PER_READ`] tenants (and of the
//! provider-wide tenant), found by a skip scan of `hookd_outbox_tenant (tenant_id, seq)`,
//! going round the tenants from one read to the next.
//!
//! Each tenant's rows are still taken in `seq` order (all its rows up to the cut, then the
//! first ones after it), so fan-out sees them in order. Rows bound for an [ordered
//! endpoint](crate::Endpoint::ordered) are left to the in-order read: their deliveries must
//! be created in outbox order, which the read in `seq` order keeps across instances.

use std::sync::Mutex;

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::shared::Dialect;
use crate::Result;

/// Tenants whose rows one read takes beyond its cut.
pub const TENANTS_PER_READ: i64 = 32;
/// Rows of each such tenant taken beyond the cut.
pub const ROWS_PER_TENANT: i64 = 16;

/// Up to `$2` tenants with outbox rows, in order, after `$1` (NULL: from the first).
const TENANTS: &str = "WITH RECURSIVE t(tenant_id, n) AS ( \
    SELECT (SELECT tenant_id FROM hookd_outbox WHERE tenant_id > COALESCE(CAST($1 AS TEXT), '') \
        ORDER BY tenant_id LIMIT 1), 1 \
    UNION ALL \
    SELECT (SELECT o.tenant_id FROM hookd_outbox o WHERE o.tenant_id > t.tenant_id \
        ORDER BY o.tenant_id LIMIT 1), t.n + 1 \
    FROM t WHERE t.tenant_id IS NOT NULL AND t.n < $2) \
    SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL";

/// Where the next read's round of tenants starts.
#[derive(Default)]
pub struct Cursor(Mutex<Option<String>>);

/// The `seq` of the rows beyond `cut` to take with a full read: the provider-wide
/// tenant's first, and each of the next tenants' first, after `cursor`. None when the
/// outbox holds no tenant's rows (a deployment without tenants pays one index probe).
pub(crate) async fn beyond<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    cut: i64,
    cursor: &Cursor,
) -> Result<Vec<i64>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<String>: Type<DB> + Encode<'q, DB>,
    for<'q> String: Type<DB> + Encode<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let start = cursor.0.lock().expect("cursor lock").clone();
    let mut tenants: Vec<String> = sqlx::query_as::<DB, (String,)>(&dialect(TENANTS))
        .bind(start.clone())
        .bind(TENANTS_PER_READ)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(t,)| t)
        .collect();
    if (tenants.len() as i64) < TENANTS_PER_READ && start.is_some() {
        // Round again from the first tenant, up to the one the round began after.
        let more: Vec<(String,)> = sqlx::query_as::<DB, (String,)>(&dialect(TENANTS))
            .bind(None::<String>)
            .bind(TENANTS_PER_READ - tenants.len() as i64)
            .fetch_all(&mut *conn)
            .await?;
        for (t,) in more {
            if Some(&t) > start.as_ref() || tenants.contains(&t) {
                break;
            }
            tenants.push(t);
        }
    }
    *cursor.0.lock().expect("cursor lock") = tenants.last().cloned();
    if tenants.is_empty() {
        // Every row is the provider-wide tenant's: the read in order is already fair.
        return Ok(Vec::new());
    }
    let statement = statement(tenants.len());
    let mut query = sqlx::query_as::<DB, (i64,)>(&statement)
        .bind(cut)
        .bind(ROWS_PER_TENANT);
    for t in tenants {
        query = query.bind(t);
    }
    Ok(query
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(seq,)| seq)
        .collect())
}

/// The rows taken beyond the cut: all but those bound for an ordered endpoint, which wait
/// for the read in `seq` order.
pub(crate) fn unordered(
    rows: Vec<crate::rows::OutboxRow>,
    targets: &[crate::matching::Target],
) -> Vec<crate::rows::OutboxRow> {
    rows.into_iter()
        .filter(|r| {
            !crate::matching::reaches_ordered(
                [(
                    r.event_type.as_str(),
                    r.endpoint_id.as_deref(),
                    r.tenant_id.as_deref(),
                )],
                targets,
            )
        })
        .collect()
}

/// `$1`: the cut, `$2`: rows per tenant, `$3..`: `tenants` tenants.
fn statement(tenants: usize) -> String {
    let arm = |condition: String, n: usize| {
        format!(
            "SELECT seq FROM (SELECT seq FROM hookd_outbox WHERE {condition} AND seq > $1 \
             ORDER BY seq LIMIT $2) a{n}"
        )
    };
    let mut arms = vec![arm("tenant_id IS NULL".into(), 0)];
    for i in 0..tenants {
        arms.push(arm(format!("tenant_id = ${}", i + 3), i + 1));
    }
    arms.join(" UNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_arm_per_tenant_and_the_provider_wide_one() {
        let s = statement(2);
        assert_eq!(s.matches("UNION ALL").count(), 2);
        assert!(s.contains("tenant_id IS NULL"));
        assert!(s.contains("tenant_id = $3") && s.contains("tenant_id = $4"));
        assert!(!s.contains("$5"));
        assert_eq!(statement(0).matches("SELECT seq FROM (").count(), 1);
    }
}
