//! Small helpers both stores call around the statements they run. Each store writes out
//! its `Store` methods in its own module (`sqlite`, `postgres`); what both do the same way,
//! beyond the SQL text (`sql`) and the rows (`rows`), is here. Pure: no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::rows::ClaimRow;
use crate::{Claimed, DeliveryFilter, DeliveryState, Endpoint, Release, Result, StoreError};

/// A fair claim's shares (see [`crate::fair`]) between the endpoints `due` lists
/// (`(endpoint, tenant, retry)`), less those excluded: `first` places of first attempts
/// (`(endpoint, rows)`), and retries (`(endpoint, rows ahead, rows after)`) of `ahead`
/// places before the first attempts and `after` places after them.
#[derive(Default)]
pub(crate) struct FairShares {
    pub first: Vec<(String, u32)>,
    pub retries: Vec<(String, u32, u32)>,
}

pub(crate) fn fair_shares(
    due: Vec<(String, Option<String>, bool)>,
    exclude: &[crate::EndpointId],
    first: u32,
    ahead: u32,
    after: u32,
) -> FairShares {
    let (firsts, retries): (Vec<_>, Vec<_>) = due
        .into_iter()
        .filter(|(endpoint, _, _)| !exclude.iter().any(|e| e.as_str() == endpoint))
        .partition(|(_, _, retry)| !retry);
    let list = |v: Vec<(String, Option<String>, bool)>| -> Vec<crate::fair::Due> {
        v.into_iter()
            .map(|(endpoint, tenant, _)| crate::fair::Due { tenant, endpoint })
            .collect()
    };
    let turn = crate::fair::next_turn();
    FairShares {
        first: crate::fair::shares(&list(firsts), first, turn),
        retries: crate::fair::retry_shares(&list(retries), ahead, after, turn),
    }
}

/// Ok when `applied` migrations (`_sqlx_migrations` rows that succeeded) are all that
/// `migrator` knows.
pub(crate) fn all_applied(applied: i64, migrator: &sqlx::migrate::Migrator) -> Result<()> {
    let known = migrator.iter().count() as u64;
    let applied = applied.max(0) as u64;
    if applied < known {
        return Err(StoreError::NotMigrated { applied, known });
    }
    Ok(())
}

/// The endpoint list's clause for `scope`, its tenant bound as `$3`: written out per scope
/// rather than `$3 IS NULL OR ...`, which a cached generic plan could not read through an
/// index. The `tenant_id IS NOT NULL` term lets SQLite use the partial index of tenants'
/// endpoints.
pub(crate) fn tenant_endpoints(scope: &crate::Scope) -> &'static str {
    match scope {
        crate::Scope::Admin => "",
        crate::Scope::Tenant(_) => "AND tenant_id IS NOT NULL AND tenant_id = $3",
    }
}

/// Appends the delivery-log filter as `AND ...` clauses with bound values.
pub(crate) fn push_filter<'a, DB>(q: &mut QueryBuilder<'a, DB>, f: &'a DeliveryFilter)
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(tenant) = &f.tenant_id {
        // Spelled out for SQLite: the tenant indexes are partial.
        q.push(" AND tenant_id IS NOT NULL AND tenant_id = ")
            .push_bind(tenant.as_str());
    }
    if let Some(state) = f.state {
        q.push(" AND state = ").push_bind(state.as_str());
        if matches!(state, DeliveryState::Succeeded | DeliveryState::Failed) {
            // The partial index of finished rows applies; SQLite only sees that when
            // its predicate is spelled out.
            q.push(" AND state IN ('succeeded', 'failed')");
        }
    }
    if let Some(endpoint_id) = &f.endpoint_id {
        q.push(" AND endpoint_id = ")
            .push_bind(endpoint_id.as_str());
    }
    if let Some(event_id) = &f.event_id {
        q.push(" AND event_id = ").push_bind(event_id.as_str());
    }
    if let Some(event_type) = &f.event_type {
        q.push(" AND event_type = ").push_bind(event_type.as_str());
    }
    if let Some(since) = f.since {
        q.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = f.until {
        q.push(" AND created_at < ").push_bind(until);
    }
}

/// The arguments of [`crate::sql::RELEASE`] after the lease: the state to return to, whether
/// it is due now, and the error it fails with.
pub(crate) fn release_args(how: &Release) -> (&'static str, bool, Option<&str>) {
    match how {
        Release::Now => ("pending", true, None),
        Release::Park => ("pending", false, None),
        Release::Fail(reason) => ("failed", false, Some(reason.as_str())),
    }
}

/// Claimed rows with their endpoints (read with the deleted ones: a claimed delivery of a
/// deleted endpoint must be failed, not dropped).
pub(crate) fn join_endpoints(
    rows: Vec<ClaimRow>,
    endpoints: &HashMap<crate::EndpointId, Arc<Endpoint>>,
) -> Result<Vec<Claimed>> {
    rows.into_iter()
        .map(|r| {
            let endpoint = endpoints
                .get(r.endpoint_id.as_str())
                .cloned()
                .ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "delivery {} names endpoint {}, which is not there",
                        r.id, r.endpoint_id
                    ))
                })?;
            r.into_claimed(endpoint)
        })
        .collect()
}

/// Where a step of a bulk resend reads its chunk: by id, newest first, from the job's
/// cursor down through windows of ids, never below the job's floor, so that however the
/// planner reads a window (the filter's index, the primary key) it reads a bounded number
/// of rows. Windows with no match are passed over, up to
/// [`crate::sql::RESEND_WINDOWS_PER_STEP`] of them per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResendWindows {
    /// Ids per window.
    pub size: i64,
    /// The job's lowest matching id.
    pub floor: i64,
}

impl ResendWindows {
    pub fn new(batch: u32, floor: i64) -> Self {
        ResendWindows {
            size: i64::from(batch.max(1)) * crate::sql::RESEND_WINDOW_BATCHES,
            floor,
        }
    }

    /// The lowest id of the window whose highest is `top`.
    pub fn low(&self, top: i64) -> i64 {
        (top - self.size + 1).max(self.floor)
    }

    /// The cursor after a window from `top` whose matches, newest first and at most
    /// `batch`, are `ids`: below the last one when the batch is full, else below the
    /// window. The job is done once the cursor is below its floor.
    pub fn next_cursor(&self, top: i64, ids: &[i64], batch: u32) -> i64 {
        match ids.last() {
            Some(last) if ids.len() >= batch as usize => last - 1,
            _ => self.low(top) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ResendWindows;

    #[test]
    fn resend_windows() {
        // 500 per batch: windows of 10,000 ids.
        let w = ResendWindows::new(500, 101);
        assert_eq!(w.size, 10_000);
        // (top, ids, next cursor)
        let cases: [(i64, &[i64], i64); 5] = [
            // A full batch: below its last id.
            (50_000, &[50_000, 49_000], 48_999),
            // Short of a batch: below the window.
            (50_000, &[45_000], 40_000),
            (50_000, &[], 40_000),
            // The last window stops at the floor.
            (5_000, &[4_000], 100),
            (101, &[], 100),
        ];
        for (top, ids, next) in cases {
            let batch = if ids.len() == 2 { 2 } else { 500 };
            assert_eq!(w.next_cursor(top, ids, batch), next, "{top} {ids:?}");
        }
        assert_eq!(
            ResendWindows::new(0, 0).size,
            20,
            "a batch of 0 counts as 1"
        );
    }
}
