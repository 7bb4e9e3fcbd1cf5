//! Fair shares of a claim: how many first attempts each endpoint with due work gets, so that
//! one tenant's backlog (or one endpoint's) does not hold up another's fresh events. Pure.
//!
//! A claim first lists the endpoints that have first attempts due, and those that have
//! retries due (one index seek per such endpoint, not one per row), then [`shares`] splits
//! the claim's places for each kind: equally between tenants, then equally between the
//! endpoints of each tenant, the remainders and any tenant or endpoint beyond
//! [`MAX_ENDPOINTS`] taken in turn from `turn`, which advances with every claim (round
//! robin). A share an endpoint cannot fill is left to the oldest due rows of any endpoint.
//! Retries are claimed in two parts, some ahead of the first attempts and the rest after
//! them ([`retry_shares`]): each part is shared the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Endpoints one claim reads separately, at most: the claim statement has one arm (SQLite)
/// or one row of its list (PostgreSQL) per endpoint.
pub const MAX_ENDPOINTS: usize = 64;

/// An endpoint with first attempts due, and its tenant (`None`: the provider-wide one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub tenant: Option<String>,
    pub endpoint: String,
}

static TURN: AtomicU64 = AtomicU64::new(0);

/// The turn of the next claim in this process.
pub(crate) fn next_turn() -> u64 {
    TURN.fetch_add(1, Ordering::Relaxed)
}

/// Splits `places` between the tenants of `due`, then between each tenant's endpoints:
/// `(endpoint, rows)` with rows > 0, at most [`MAX_ENDPOINTS`] of them. Equal shares; the
/// remainder goes one each to the tenants (endpoints) next in turn from `turn`.
pub fn shares(due: &[Due], places: u32, turn: u64) -> Vec<(String, u32)> {
    let mut tenants: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
    for d in due {
        let endpoints = tenants.entry(d.tenant.as_deref()).or_default();
        if !endpoints.contains(&d.endpoint.as_str()) {
            endpoints.push(d.endpoint.as_str());
        }
    }
    let mut tenants: Vec<Vec<&str>> = tenants
        .into_values()
        .map(|mut e| {
            e.sort_unstable();
            e
        })
        .collect();
    if tenants.is_empty() || places == 0 {
        return Vec::new();
    }
    let first = (turn % tenants.len() as u64) as usize;
    tenants.rotate_left(first);
    let per_tenant = split(places, tenants.len().min(MAX_ENDPOINTS));
    // Endpoint places per tenant, bounded in all by MAX_ENDPOINTS.
    let mut out = Vec::new();
    let mut slots = MAX_ENDPOINTS;
    for (endpoints, share) in tenants.iter_mut().zip(per_tenant) {
        if share == 0 || slots == 0 {
            continue;
        }
        let first = (turn % endpoints.len() as u64) as usize;
        endpoints.rotate_left(first);
        let n = endpoints.len().min(slots).min(share as usize);
        for (endpoint, rows) in endpoints.iter().zip(split(share, n)) {
            if rows > 0 {
                out.push((endpoint.to_string(), rows));
                slots -= 1;
            }
        }
    }
    out
}

/// A claim's retry places shared as [`shares`] does: `(endpoint, ahead, after)`, the rows
/// of the endpoint's share taken ahead of the first attempts (the shares of `ahead` places)
/// and after them (the rest of its share of `ahead + after` places). Endpoints in the order
/// of the shares of all the places.
pub fn retry_shares(due: &[Due], ahead: u32, after: u32, turn: u64) -> Vec<(String, u32, u32)> {
    let first: BTreeMap<String, u32> = shares(due, ahead, turn).into_iter().collect();
    let mut out: Vec<(String, u32, u32)> = shares(due, ahead + after, turn)
        .into_iter()
        .map(|(endpoint, all)| {
            let ahead = first.get(&endpoint).copied().unwrap_or(0);
            (endpoint, ahead.min(all), all.saturating_sub(ahead))
        })
        .collect();
    // An endpoint with a share ahead but none of all the places (beyond MAX_ENDPOINTS
    // there): it keeps its share ahead.
    for (endpoint, rows) in first {
        if !out.iter().any(|(e, _, _)| *e == endpoint) && out.len() < MAX_ENDPOINTS {
            out.push((endpoint, rows, 0));
        }
    }
    out
}

/// `total` in `n` parts as equal as can be, the larger ones first.
fn split(total: u32, n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let n32 = n as u32;
    (0..n32)
        .map(|i| total / n32 + u32::from(i < total % n32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(list: &[(Option<&str>, &str)]) -> Vec<Due> {
        list.iter()
            .map(|(t, e)| Due {
                tenant: t.map(String::from),
                endpoint: e.to_string(),
            })
            .collect()
    }

    /// (what, places, turn, endpoints given rows, b's rows)
    type TenantCase = (&'static str, u32, u64, usize, Vec<(&'static str, u32)>);
    /// (what, due, places, turn, shares)
    type EndpointCase = (
        &'static str,
        Vec<(Option<&'static str>, &'static str)>,
        u32,
        u64,
        Vec<(&'static str, u32)>,
    );

    fn got(s: Vec<(String, u32)>) -> Vec<(&'static str, u32)> {
        s.into_iter()
            .map(|(e, n)| (&*Box::leak(e.into_boxed_str()), n))
            .collect()
    }

    #[test]
    fn shares_go_to_tenants_first_then_to_their_endpoints() {
        // A tenant with 20 busy endpoints and one with one endpoint.
        let mut list: Vec<(Option<&str>, String)> =
            (0..20).map(|i| (Some("a"), format!("a{i:02}"))).collect();
        list.push((Some("b"), "b0".into()));
        let list: Vec<(Option<&str>, &str)> = list.iter().map(|(t, e)| (*t, e.as_str())).collect();
        let d = due(&list);
        let cases: Vec<TenantCase> = vec![
            // (what, places, turn, how many endpoints get rows, rows of b0)
            ("b gets half of 40", 40, 0, 21, vec![("b0", 20)]),
            (
                "b gets half of 41, the odd one in its turn",
                41,
                1,
                21,
                vec![("b0", 21)],
            ),
            ("one place: tenants in turn (a)", 1, 0, 1, vec![]),
            ("one place: tenants in turn (b)", 1, 1, 1, vec![("b0", 1)]),
            ("nothing to share", 0, 0, 0, vec![]),
        ];
        for (what, places, turn, n, b) in cases {
            let s = got(shares(&d, places, turn));
            assert_eq!(s.len(), n, "{what}: {s:?}");
            assert_eq!(s.iter().map(|(_, n)| n).sum::<u32>(), places, "{what}");
            let b_rows: Vec<(&str, u32)> = s
                .iter()
                .filter(|(e, _)| e.starts_with('b'))
                .cloned()
                .collect();
            assert_eq!(b_rows, b, "{what}");
            let a_max = s
                .iter()
                .filter(|(e, _)| e.starts_with('a'))
                .map(|(_, n)| *n)
                .max();
            let a_min = s
                .iter()
                .filter(|(e, _)| e.starts_with('a'))
                .map(|(_, n)| *n)
                .min();
            if let (Some(max), Some(min)) = (a_max, a_min) {
                assert!(
                    max - min <= 1,
                    "{what}: a's endpoints equal within one: {s:?}"
                );
            }
        }
    }

    #[test]
    fn endpoints_of_one_tenant_share_equally() {
        let cases: Vec<EndpointCase> = vec![
            (
                "two endpoints of the provider-wide tenant",
                vec![(None, "x"), (None, "y")],
                10,
                0,
                vec![("x", 5), ("y", 5)],
            ),
            (
                "the odd place rotates",
                vec![(None, "x"), (None, "y")],
                3,
                1,
                vec![("y", 2), ("x", 1)],
            ),
            (
                "an endpoint listed twice counts once",
                vec![(Some("t"), "x"), (Some("t"), "x"), (Some("t"), "y")],
                4,
                0,
                vec![("x", 2), ("y", 2)],
            ),
            (
                "the provider-wide tenant is a tenant like another",
                vec![(None, "x"), (Some("t"), "y"), (Some("t"), "z")],
                4,
                0,
                vec![("x", 2), ("y", 1), ("z", 1)],
            ),
            ("nothing due", vec![], 10, 0, vec![]),
        ];
        for (what, list, places, turn, want) in cases {
            assert_eq!(got(shares(&due(&list), places, turn)), want, "{what}");
        }
    }

    #[test]
    fn retry_places_ahead_and_after_are_each_shared() {
        // (what, due, ahead, after, turn, shares)
        type Case = (
            &'static str,
            Vec<(Option<&'static str>, &'static str)>,
            u32,
            u32,
            u64,
            Vec<(&'static str, u32, u32)>,
        );
        let cases: Vec<Case> = vec![
            (
                "one place ahead per tenant, the rest after",
                vec![(Some("a"), "a1"), (Some("a"), "a2"), (Some("b"), "b0")],
                2,
                6,
                0,
                vec![("a1", 1, 1), ("a2", 0, 2), ("b0", 1, 3)],
            ),
            (
                "nothing ahead: every place after",
                vec![(Some("a"), "a1"), (Some("b"), "b0")],
                0,
                2,
                0,
                vec![("a1", 0, 1), ("b0", 0, 1)],
            ),
            (
                "nothing after",
                vec![(Some("a"), "a1"), (Some("b"), "b0")],
                2,
                0,
                1,
                vec![("b0", 1, 0), ("a1", 1, 0)],
            ),
            ("no retries due", vec![], 2, 6, 0, vec![]),
        ];
        for (what, list, ahead, after, turn, want) in cases {
            let got: Vec<(String, u32, u32)> = retry_shares(&due(&list), ahead, after, turn);
            let got: Vec<(&str, u32, u32)> =
                got.iter().map(|(e, a, b)| (e.as_str(), *a, *b)).collect();
            assert_eq!(got, want, "{what}");
            let (a, b): (u32, u32) = got.iter().fold((0, 0), |(x, y), (_, a, b)| (x + a, y + b));
            if !list.is_empty() {
                assert_eq!((a, b), (ahead, after), "{what}: every place shared");
            }
        }
    }

    #[test]
    fn at_most_max_endpoints_per_claim_and_every_one_in_turn() {
        let names: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
        let list: Vec<(Option<&str>, &str)> = names
            .iter()
            .map(|n| (Some(n.as_str()), n.as_str()))
            .collect();
        let d = due(&list);
        let mut seen = std::collections::BTreeSet::new();
        for turn in 0..200 {
            let s = shares(&d, 500, turn);
            assert!(s.len() <= MAX_ENDPOINTS, "turn {turn}: {}", s.len());
            assert_eq!(s.iter().map(|(_, n)| n).sum::<u32>(), 500);
            seen.extend(s.into_iter().map(|(e, _)| e));
        }
        assert_eq!(seen.len(), 200, "every tenant gets a turn");
    }
}
