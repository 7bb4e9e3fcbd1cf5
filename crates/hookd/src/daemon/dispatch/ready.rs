//! Claimed deliveries waiting for a place to run.
//!
//! A claim may bring more rows for one endpoint than its cap lets start at once. Handing the
//! surplus back would cost a write now and a claim later (measured: about 900 hand-backs per
//! 30,000 deliveries to one busy endpoint, and half the throughput); instead it waits here,
//! still leased, and starts as soon as one of that endpoint's attempts ends. The dispatcher
//! keeps at most `claim_batch` rows waiting, and one that has waited a quarter of its lease
//! goes back to the database, so a lease never runs out while its row waits.
//!
//! Free places go round the tenants with rows waiting, one place per tenant per turn, and
//! within a tenant round its endpoints, one per turn: when places are few, each tenant gets
//! its share of them, however many endpoints another tenant has rows for. The places follow
//! what the claims brought (themselves shared between tenants); there is no share per
//! tenant beside them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hookd_store::{Claimed, EndpointId};

/// A claimed delivery and when it was claimed.
pub struct Waiting {
    pub claimed: Claimed,
    pub since: Instant,
}

/// Waiting rows by endpoint, each endpoint's in claim (due) order.
#[derive(Default)]
pub struct Ready {
    queues: HashMap<EndpointId, VecDeque<Waiting>>,
    /// Tenants in the order they are served, round robin, each with its endpoints in the
    /// order they are served (`None`: the provider-wide tenant).
    order: VecDeque<(Option<String>, VecDeque<EndpointId>)>,
    len: usize,
    retries: usize,
}

impl Ready {
    pub fn push(&mut self, claimed: Claimed, since: Instant) {
        self.len += 1;
        if claimed.attempt > 1 {
            self.retries += 1;
        }
        let tenant = claimed.endpoint.tenant_id.as_ref().map(|t| t.to_string());
        let queue = self
            .queues
            .entry(claimed.endpoint.id.clone())
            .or_insert_with_key(|id| {
                match self.order.iter_mut().find(|(t, _)| *t == tenant) {
                    Some((_, endpoints)) => endpoints.push_back(id.clone()),
                    None => self.order.push_back((tenant, VecDeque::from([id.clone()]))),
                }
                VecDeque::new()
            });
        queue.push_back(Waiting { claimed, since });
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Retries among the waiting rows.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// When the longest-waiting row was claimed.
    pub fn oldest(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|w| w.since))
            .min()
    }

    /// Endpoints with rows waiting, and how many.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, usize)> {
        self.queues.iter().map(|(id, q)| (id.as_str(), q.len()))
    }

    /// Takes up to `max` rows that may start at `now`, one tenant at a time in turn and
    /// one endpoint of it at a time in turn, each with the place `admit` gives it (`None`:
    /// its endpoint, or the retries, are at their cap); and every row that has waited
    /// longer than `max_wait`, to be handed back.
    pub fn take<S>(
        &mut self,
        max: usize,
        now: Instant,
        max_wait: Duration,
        mut admit: impl FnMut(&Claimed) -> Option<S>,
    ) -> (Vec<(Waiting, S)>, Vec<Claimed>) {
        let mut stale = Vec::new();
        for queue in self.queues.values_mut() {
            while queue
                .front()
                .is_some_and(|w| now.saturating_duration_since(w.since) > max_wait)
            {
                stale.push(queue.pop_front().expect("front exists").claimed);
            }
        }
        self.forget(stale.iter());
        let mut start = Vec::new();
        // Round robin: one row per tenant per turn, from its next endpoint that may start
        // one, until nothing more may start.
        let mut blocked = 0;
        while start.len() < max && blocked < self.order.len() {
            let (tenant, mut endpoints) = self.order.pop_front().expect("order is not empty");
            let mut started = false;
            for _ in 0..endpoints.len() {
                let id = endpoints.pop_front().expect("endpoints are not empty");
                let queue = self
                    .queues
                    .get_mut(&id)
                    .expect("every ordered endpoint has a queue");
                if let Some(slot) = queue.front().and_then(|w| admit(&w.claimed)) {
                    start.push((queue.pop_front().expect("front exists"), slot));
                    started = true;
                }
                if queue.is_empty() {
                    self.queues.remove(&id);
                } else {
                    endpoints.push_back(id);
                }
                if started {
                    break;
                }
            }
            blocked = if started { 0 } else { blocked + 1 };
            if !endpoints.is_empty() {
                self.order.push_back((tenant, endpoints));
            }
        }
        self.forget(start.iter().map(|(w, _)| &w.claimed));
        (start, stale)
    }

    /// Empties the queue (at shutdown).
    pub fn drain(&mut self) -> Vec<Claimed> {
        self.order.clear();
        let all: Vec<Claimed> = self
            .queues
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|w| w.claimed))
            .collect();
        self.len = 0;
        self.retries = 0;
        all
    }

    fn forget<'a>(&mut self, gone: impl Iterator<Item = &'a Claimed>) {
        for c in gone {
            self.len -= 1;
            if c.attempt > 1 {
                self.retries -= 1;
            }
        }
        let queues = &mut self.queues;
        queues.retain(|_, q| !q.is_empty());
        for (_, endpoints) in self.order.iter_mut() {
            endpoints.retain(|id| queues.contains_key(id));
        }
        self.order.retain(|(_, endpoints)| !endpoints.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::dispatch::isolation::tests::claimed_for as claimed;
    use crate::daemon::dispatch::isolation::InFlight;
    use std::collections::HashMap;
    use std::sync::Arc;
    use tokio::sync::Notify;

    const MAX_WAIT: Duration = Duration::from_secs(60);

    #[test]
    fn starts_in_turn_what_the_caps_allow() {
        type Row = (i64, &'static str, i32);
        // (rows waiting, in order; places per endpoint; places for retries; at most; the
        // rows started, in order; the rows still waiting)
        type Case = (&'static [Row], usize, usize, usize, &'static [i64], usize);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (&[], 2, 2, 10, &[], 0),
            // One row per endpoint per turn, each endpoint's in its order.
            (&[(1, "a", 1), (2, "a", 1), (3, "b", 1), (4, "b", 1)], 9, 9, 10, &[1, 3, 2, 4], 0),
            (&[(1, "a", 1), (2, "a", 1), (3, "a", 1), (4, "b", 1)], 9, 9, 10, &[1, 4, 2, 3], 0),
            // No more than asked.
            (&[(1, "a", 1), (2, "a", 1), (3, "b", 1), (4, "b", 1)], 9, 9, 3, &[1, 3, 2], 1),
            (&[(1, "a", 1)], 9, 9, 0, &[], 1),
            // An endpoint at its cap waits; the others go on.
            (&[(1, "a", 1), (2, "a", 1), (3, "b", 1), (4, "b", 1)], 1, 9, 10, &[1, 3], 2),
            (&[(1, "a", 1), (2, "a", 1), (3, "a", 1), (4, "b", 1), (5, "b", 1)], 2, 9, 10,
                &[1, 4, 2, 5], 1),
            // Retries at their cap wait, and so does what queues behind them.
            (&[(1, "a", 2), (2, "a", 1), (3, "b", 1), (4, "c", 3)], 9, 0, 10, &[3], 3),
            (&[(1, "a", 2), (2, "a", 1), (3, "b", 2), (4, "c", 1)], 9, 1, 10, &[1, 4, 2], 1),
        ];
        let now = Instant::now();
        for (rows, per_endpoint, retries, max, started, left) in cases {
            let mut ready = Ready::default();
            for (id, endpoint, attempt) in *rows {
                ready.push(claimed(*id, endpoint, *attempt), now);
            }
            let mut running: HashMap<EndpointId, usize> = HashMap::new();
            let mut retries_running = 0;
            let admit = |c: &Claimed| {
                let n = running.entry(c.endpoint.id.clone()).or_default();
                let retry = c.attempt > 1;
                if *n >= *per_endpoint || (retry && retries_running >= *retries) {
                    return None;
                }
                *n += 1;
                retries_running += usize::from(retry);
                Some(())
            };
            let (start, stale) = ready.take(*max, now, MAX_WAIT, admit);
            let ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
            assert_eq!(
                ids, *started,
                "{rows:?}, caps {per_endpoint}/{retries}, max {max}"
            );
            assert!(stale.is_empty());
            assert_eq!(ready.len(), *left, "{rows:?}");
            assert_eq!(ready.drain().len(), *left);
        }
    }

    #[test]
    fn places_go_round_the_tenants_then_their_endpoints() {
        // (tenant, endpoint) per row id 1, 2, ...: tenant a with rows for four endpoints,
        // b with two rows for one, the provider-wide tenant (None) with one.
        let rows: &[(Option<&str>, &str)] = &[
            (Some("a"), "a1"),
            (Some("a"), "a2"),
            (Some("a"), "a3"),
            (Some("a"), "a4"),
            (Some("a"), "a1"),
            (Some("a"), "a1"),
            (Some("b"), "b0"),
            (Some("b"), "b0"),
            (None, "p0"),
        ];
        // (what, rows (by count from the first), places per endpoint, at most, started)
        type Case = (&'static str, usize, usize, usize, &'static [i64]);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("two places: one per tenant", 8, 9, 2, &[1, 7]),
            ("four places: two per tenant", 8, 9, 4, &[1, 7, 2, 8]),
            ("b runs out; a's endpoints in turn", 8, 9, 10, &[1, 7, 2, 8, 3, 4, 5, 6]),
            ("the provider-wide tenant is a tenant like another", 9, 9, 3, &[1, 7, 9]),
            ("an endpoint at its cap passes its tenant's turn to the next", 8, 1, 10,
                &[1, 7, 2, 3, 4]),
        ];
        let now = Instant::now();
        for (what, n, per_endpoint, max, started) in cases {
            let mut ready = Ready::default();
            for (i, (tenant, endpoint)) in rows.iter().take(*n).enumerate() {
                let mut c = claimed(i as i64 + 1, endpoint, 1);
                c.endpoint = Arc::new(hookd_store::Endpoint {
                    tenant_id: tenant.map(|t| hookd_store::TenantId::parse(t).unwrap()),
                    ..(*c.endpoint).clone()
                });
                ready.push(c, now);
            }
            let mut running: HashMap<EndpointId, usize> = HashMap::new();
            let admit = |c: &Claimed| {
                let r = running.entry(c.endpoint.id.clone()).or_default();
                (*r < *per_endpoint).then(|| *r += 1)
            };
            let (start, _) = ready.take(*max, now, MAX_WAIT, admit);
            let ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
            assert_eq!(ids, *started, "{what}");
            assert_eq!(ready.len(), n - started.len(), "{what}");
            assert_eq!(ready.drain().len(), n - started.len(), "{what}");
        }
    }

    #[test]
    fn counts_what_waits_and_hands_back_the_stale() {
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(120);
        let mut ready = Ready::default();
        assert_eq!((ready.len(), ready.retries(), ready.oldest()), (0, 0, None));
        ready.push(claimed(1, "a", 1), long_ago);
        ready.push(claimed(2, "a", 2), now - MAX_WAIT);
        ready.push(claimed(3, "b", 3), now);
        assert_eq!((ready.len(), ready.retries()), (3, 2));
        assert_eq!(ready.oldest(), Some(long_ago));
        let mut endpoints: Vec<(&str, usize)> = ready.endpoints().collect();
        endpoints.sort();
        assert_eq!(endpoints, [("a", 2), ("b", 1)]);

        // Only what waited longer than `max_wait` goes back, started or not.
        let (start, stale) = ready.take(0, now, MAX_WAIT, |_| Some(()));
        assert!(start.is_empty());
        assert_eq!(stale.iter().map(|c| c.delivery_id).collect::<Vec<_>>(), [1]);
        assert_eq!((ready.len(), ready.retries()), (2, 2));
        assert_eq!(ready.oldest(), Some(now - MAX_WAIT));

        let (start, stale) = ready.take(1, now + Duration::from_millis(1), MAX_WAIT, |_| Some(()));
        assert_eq!(stale.iter().map(|c| c.delivery_id).collect::<Vec<_>>(), [2]);
        assert_eq!(start.len(), 1);
        assert_eq!((ready.len(), ready.retries(), ready.oldest()), (0, 0, None));
    }

    #[test]
    fn a_finished_attempt_lets_the_next_of_its_endpoint_start() {
        let in_flight = InFlight::new(2, 1, Arc::new(Notify::new()));
        let mut ready = Ready::default();
        let now = Instant::now();
        for id in 1..=4 {
            ready.push(claimed(id, "a", 1), now);
        }
        ready.push(claimed(5, "b", 1), now);
        ready.push(claimed(6, "b", 2), now);
        ready.push(claimed(7, "b", 3), now);

        let (start, _) = ready.take(10, now, MAX_WAIT, |c| in_flight.admit(c));
        let mut ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
        ids.sort();
        // a: its cap of 2; b: one first attempt and one retry (retry cap 1).
        assert_eq!(ids, [1, 2, 5, 6]);
        assert_eq!((ready.len(), ready.retries()), (3, 1));

        // A finished attempt of a lets the next of a start; the retry of b still waits.
        let (first, _running): (Vec<_>, Vec<_>) = start
            .into_iter()
            .partition(|(w, _)| w.claimed.delivery_id == 1);
        drop(first);
        let (start, _) = ready.take(10, now, MAX_WAIT, |c| in_flight.admit(c));
        let ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
        assert_eq!(ids, [3]);
    }
}
