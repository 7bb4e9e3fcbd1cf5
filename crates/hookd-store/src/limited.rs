//! Rate-limited endpoints in a claim: which of the endpoints with due work are limited, the
//! places each may take within its budget ([`crate::rate`]), and the statements that take
//! them and move the budget on. The split is pure; the stores run the statements.
//!
//! A claim lists the endpoints with due work as always (`sql::DUE_ENDPOINTS`, which also
//! reads each one's limit and budget). Unlimited endpoints are claimed as before, in the one
//! claim statement, unchanged. A limited endpoint whose budget allows nothing now is left
//! out of the shares; one whose budget allows some gets its fair share, cut to its budget,
//! and is claimed after the claim statement, in one transaction for the claim's limited
//! endpoints that locks their rows (on PostgreSQL `FOR NO KEY UPDATE SKIP LOCKED`: two
//! instances never spend one budget twice), reads each budget again, takes the oldest due
//! rows through the endpoint's own indexes, and moves the budget on by the rows taken. While a limited endpoint has due rows, the claim statement reads no rows
//! beyond the fair shares: the oldest due rows of any endpoint would be its backlog, read
//! and skipped on every claim.

use crate::common::{self, FairShares};
use crate::rate::{LimitedNext, RateLimit};

/// A row of `sql::DUE_ENDPOINTS`: endpoint, tenant, retry (`None`: a rate-limited
/// endpoint, listed whether it has rows due or not), rate limit, theoretical arrival time
/// from now (ms).
pub(crate) type DueRow = (
    String,
    Option<String>,
    Option<bool>,
    Option<f64>,
    Option<f64>,
);

/// A limited endpoint's part of a claim: up to `firsts` first attempts and `retries`
/// retries (its fair shares), `max` in all (no more than its budget allowed when listed;
/// the claim reads the budget again under the lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitedShare {
    pub endpoint: String,
    pub firsts: u32,
    pub retries: u32,
    pub max: u32,
}

/// A limited endpoint as the claim's transaction locked it: id, `rate_limit`, `rate_tat`,
/// and the database clock.
pub(crate) type Locked = (String, f64, Option<f64>, i64);

/// What a claim takes of one locked limited endpoint: its share, cut to its budget.
pub(crate) struct Take<'s> {
    pub share: &'s LimitedShare,
    /// Rows to take at most.
    pub max: u32,
    rate: RateLimit,
    tat: Option<f64>,
    now: f64,
}

impl Take<'_> {
    /// The endpoint's budget once `taken` rows were taken.
    pub fn tat_after(&self, taken: usize) -> f64 {
        self.rate.advance(self.tat, self.now, taken as u32)
    }
}

/// The takes of the locked endpoints that have a share and budget left now.
pub(crate) fn takes(locked: Vec<Locked>, shares: &[LimitedShare]) -> Vec<Take<'_>> {
    locked
        .into_iter()
        .filter_map(|(id, rate, tat, now)| {
            let rate = RateLimit::new(rate)?;
            let share = shares.iter().find(|l| l.endpoint == id)?;
            let now = now as f64;
            let max = share.max.min(rate.allowance(tat.map(|t| t - now)));
            (max > 0).then_some(Take {
                share,
                max,
                rate,
                tat,
                now,
            })
        })
        .collect()
}

/// A claim split between the claim statement and the limited endpoints.
#[derive(Default)]
pub(crate) struct ClaimSplit {
    /// The unlimited endpoints' fair shares.
    pub shares: FairShares,
    /// Whether the claim statement may also take the oldest due rows of any endpoint for
    /// the places the shares leave: only while no limited endpoint has rows due.
    pub rest: bool,
    pub limited: Vec<LimitedShare>,
    /// The endpoints the claim statement skips: the caller's, and every rate-limited one
    /// (rows of which may have become due since the list was read).
    pub exclude: Vec<crate::EndpointId>,
}

impl ClaimSplit {
    /// A claim that reads no list of endpoints: the oldest due rows of any endpoint but
    /// `exclude`.
    pub(crate) fn any(exclude: &[crate::EndpointId]) -> ClaimSplit {
        ClaimSplit {
            rest: true,
            exclude: exclude.to_vec(),
            ..Default::default()
        }
    }
}

/// Splits a claim of `first` first attempts and `ahead` + `after` retries between the
/// endpoints of `due` (none of `exclude`): limited endpoints without budget get nothing,
/// the others share as [`common::fair_shares`] says; the limited ones' shares go to
/// [`ClaimSplit::limited`], cut to their budget.
pub(crate) fn split(
    due: Vec<DueRow>,
    exclude: &[crate::EndpointId],
    first: u32,
    ahead: u32,
    after: u32,
) -> ClaimSplit {
    let mut budgets: Vec<(String, u32)> = Vec::new();
    let mut listed = Vec::with_capacity(due.len());
    let mut skip = exclude.to_vec();
    for (endpoint, tenant, retry, rate, rate_ahead) in due {
        let Some(retry) = retry else {
            skip.push(endpoint.into());
            continue;
        };
        match rate.and_then(RateLimit::new) {
            None => listed.push((endpoint, tenant, retry)),
            Some(rate) => {
                let allowed = rate.allowance(rate_ahead);
                if !budgets.iter().any(|(e, _)| *e == endpoint) {
                    budgets.push((endpoint.clone(), allowed));
                }
                if allowed > 0 {
                    listed.push((endpoint, tenant, retry));
                }
            }
        }
    }
    let mut shares = common::fair_shares(listed, exclude, first, ahead, after);
    let mut limited: Vec<LimitedShare> = Vec::new();
    let budget = |endpoint: &str| budgets.iter().find(|(e, _)| e == endpoint).map(|b| b.1);
    let mut add = |endpoint: &str, firsts: u32, retries: u32| match limited
        .iter_mut()
        .find(|l| l.endpoint == endpoint)
    {
        Some(l) => {
            l.firsts += firsts;
            l.retries += retries;
        }
        None => limited.push(LimitedShare {
            endpoint: endpoint.to_string(),
            firsts,
            retries,
            max: 0,
        }),
    };
    shares.first.retain(|(endpoint, rows)| {
        let unlimited = budget(endpoint).is_none();
        if !unlimited {
            add(endpoint, *rows, 0);
        }
        unlimited
    });
    shares.retries.retain(|(endpoint, a, b)| {
        let unlimited = budget(endpoint).is_none();
        if !unlimited {
            add(endpoint, 0, a + b);
        }
        unlimited
    });
    for l in &mut limited {
        l.max = (l.firsts + l.retries).min(budget(&l.endpoint).unwrap_or(0));
    }
    limited.retain(|l| l.max > 0);
    ClaimSplit {
        shares,
        rest: budgets.is_empty(),
        limited,
        exclude: skip,
    }
}

/// One limited endpoint's due rows to take, oldest due first: endpoint `$1`, up to `$2`
/// first attempts and `$3` retries, `$4` in all, each kind read from its index of pending
/// rows by endpoint (`lock`: PostgreSQL's `FOR UPDATE SKIP LOCKED`, or nothing).
pub(crate) fn limited_rows(lock: &str) -> String {
    let kind = |(kind, hint): (&str, &str), limit: &str| {
        format!(
            "SELECT id, next_attempt_at FROM hookd_deliveries {hint} WHERE endpoint_id = $1 \
             AND {kind} AND next_attempt_at <= hookd_now_ms() ORDER BY next_attempt_at \
             LIMIT {limit}{lock}"
        )
    };
    format!(
        "SELECT id FROM (SELECT id, next_attempt_at FROM ({}) f \
         UNION ALL SELECT id, next_attempt_at FROM ({}) r) x \
         ORDER BY next_attempt_at LIMIT $4",
        kind(crate::sql::FIRST_BY_ENDPOINT, "$2"),
        kind(crate::sql::RETRY_BY_ENDPOINT, "$3"),
    )
}

/// Moves a limited endpoint's budget on: `$2` its new theoretical arrival time.
pub(crate) const SET_RATE_TAT: &str = "UPDATE hookd_endpoints SET rate_tat = $2 WHERE id = $1";

/// The limited endpoints the idle wait looks at: limit, theoretical arrival time from now,
/// and the due times from now of the earliest pending first attempt and retry, each the
/// first entry of the endpoint in its index of pending rows by endpoint.
pub(crate) static LIMITED_NEXT_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let first = |(kind, hint): (&str, &str)| {
        format!(
            "(SELECT next_attempt_at FROM hookd_deliveries {hint} WHERE endpoint_id = e.id \
                 AND {kind} AND next_attempt_at IS NOT NULL ORDER BY next_attempt_at LIMIT 1) \
                 - hookd_now_ms()"
        )
    };
    format!(
        "SELECT e.rate_limit, e.rate_tat - hookd_now_ms(), {}, {} FROM hookd_endpoints e \
             WHERE e.rate_limit IS NOT NULL AND e.deleted_at IS NULL",
        first(crate::sql::FIRST_BY_ENDPOINT),
        first(crate::sql::RETRY_BY_ENDPOINT),
    )
});

/// A row of [`LIMITED_NEXT_DUE`].
pub(crate) type NextDueRow = (f64, Option<f64>, Option<i64>, Option<i64>);

/// Milliseconds until a claim may find something, from the earliest due row of any
/// endpoint and the rows of [`LIMITED_NEXT_DUE`] ([`crate::rate::next_due`]).
pub(crate) fn next_due(due_ms: Option<i64>, limited: Vec<NextDueRow>) -> Option<i64> {
    let limited: Vec<LimitedNext> = limited
        .into_iter()
        .filter_map(|(rate, ahead_ms, first_due_ms, retry_due_ms)| {
            Some(LimitedNext {
                rate: RateLimit::new(rate)?,
                ahead_ms,
                first_due_ms,
                retry_due_ms,
            })
        })
        .collect();
    crate::rate::next_due(due_ms, &limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_are_shares_cut_to_the_budget() {
        let share = |endpoint: &str, max: u32| LimitedShare {
            endpoint: endpoint.into(),
            firsts: max,
            retries: 0,
            max,
        };
        let shares = [share("a", 5), share("b", 50), share("c", 5), share("d", 5)];
        let now = 1_000_000;
        let locked: Vec<Locked> = vec![
            ("a".into(), 20.0, None, now), // idle: a second's burst
            ("b".into(), 20.0, None, now), // its share is more than that
            ("c".into(), 2.0, Some(now as f64 + 10_000.0), now), // 10 s in debt: nothing
            ("d".into(), 0.0, None, now),  // not a limit
            ("e".into(), 20.0, None, now), // no share in this claim
        ];
        let takes = takes(locked, &shares);
        let got: Vec<(&str, u32)> = takes
            .iter()
            .map(|t| (t.share.endpoint.as_str(), t.max))
            .collect();
        assert_eq!(got, [("a", 5), ("b", 20)]);
        assert!(
            takes[0].tat_after(5) > now as f64,
            "taking moves the budget on"
        );
    }

    fn row(endpoint: &str, tenant: &str, retry: bool, rate: Option<(f64, f64)>) -> DueRow {
        (
            endpoint.into(),
            Some(tenant.into()),
            Some(retry),
            rate.map(|r| r.0),
            rate.map(|r| r.1),
        )
    }

    #[test]
    fn limited_endpoints_get_their_share_cut_to_their_budget() {
        // 20/s: a full budget (tat in the past), 3 left (tat 850 ms ahead), none (1000 ms).
        let full = Some((20.0, -5000.0));
        let three = Some((20.0, 850.0));
        let none = Some((20.0, 1000.0));
        // (what, due, first places, ahead, after, unlimited firsts, limited, rest)
        type Case = (
            &'static str,
            Vec<DueRow>,
            (u32, u32, u32),
            Vec<(&'static str, u32)>,
            Vec<(&'static str, u32, u32, u32)>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing limited: shares as always, and the rest",
                vec![row("a", "t", false, None), row("b", "u", false, None)],
                (10, 0, 0),
                vec![("a", 5), ("b", 5)],
                vec![],
                true,
            ),
            (
                "a limited endpoint with a full budget keeps its share",
                vec![row("a", "t", false, None), row("b", "u", false, full)],
                (10, 0, 0),
                vec![("a", 5)],
                vec![("b", 5, 0, 5)],
                false,
            ),
            (
                "its share cut to its budget",
                vec![row("a", "t", false, None), row("b", "u", false, three)],
                (10, 0, 0),
                vec![("a", 5)],
                vec![("b", 5, 0, 3)],
                false,
            ),
            (
                "no budget: no share, the others get its places, and no rest",
                vec![row("a", "t", false, None), row("b", "u", false, none)],
                (10, 0, 0),
                vec![("a", 10)],
                vec![],
                false,
            ),
            (
                "first attempts and retries of one limited endpoint share one budget",
                vec![
                    row("a", "t", false, None),
                    row("b", "u", false, three),
                    row("b", "u", true, three),
                ],
                (10, 2, 4),
                vec![("a", 5)],
                vec![("b", 5, 6, 3)],
                false,
            ),
        ];
        for (what, due, (first, ahead, after), firsts, limited, rest) in cases {
            let s = split(due, &[], first, ahead, after);
            // Sorted: which tenant goes first turns with every claim.
            let mut got: Vec<(&str, u32)> = s
                .shares
                .first
                .iter()
                .map(|(e, n)| (e.as_str(), *n))
                .collect();
            got.sort();
            assert_eq!(got, firsts, "{what}");
            assert!(
                s.shares.retries.iter().all(|(e, _, _)| e != "b"),
                "{what}: no retry share for b in the claim statement"
            );
            let got: Vec<(&str, u32, u32, u32)> = s
                .limited
                .iter()
                .map(|l| (l.endpoint.as_str(), l.firsts, l.retries, l.max))
                .collect();
            assert_eq!(got, limited, "{what}");
            assert_eq!(s.rest, rest, "{what}");
        }
    }

    #[test]
    fn every_limited_endpoint_is_kept_out_of_the_rest() {
        let due = vec![
            row("a", "t", false, None),
            ("idle".to_string(), None, None, Some(20.0), None),
        ];
        let s = split(due, &["busy".into()], 10, 0, 0);
        let skipped: Vec<&str> = s.exclude.iter().map(|e| e.as_str()).collect();
        assert_eq!(skipped, ["busy", "idle"]);
        assert!(s.rest, "no limited endpoint has rows due");
        assert_eq!(s.shares.first, [("a".to_string(), 10)]);
    }

    #[test]
    fn an_excluded_limited_endpoint_gets_nothing() {
        let s = split(
            vec![row("b", "u", false, Some((20.0, -5000.0)))],
            &[crate::EndpointId::from("b".to_string())],
            10,
            0,
            0,
        );
        assert!(s.limited.is_empty() && s.shares.first.is_empty());
        assert!(!s.rest, "its backlog is not read past either");
    }
}
