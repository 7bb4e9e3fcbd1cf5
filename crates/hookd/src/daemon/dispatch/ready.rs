//! Claimed deliveries waiting for a place to run.
//!
//! A claim may bring more rows for one endpoint than its cap lets start at once. Handing the
//! surplus back would cost a write now and a claim later (measured: about 900 hand-backs per
//! 30,000 deliveries to one busy endpoint, and half the throughput); instead it waits here,
//! still leased, and starts as soon as one of that endpoint's attempts ends. The dispatcher
//! keeps at most `claim_batch` rows waiting, and one that has waited a quarter of its lease
//! goes back to the database, so a lease never runs out while its row waits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hookd_store::Claimed;

use super::isolation::{InFlight, Slot};

/// A claimed delivery and when it was claimed.
pub struct Waiting {
    pub claimed: Claimed,
    pub since: Instant,
}

/// Waiting rows by endpoint, each endpoint's in claim (due) order.
#[derive(Default)]
pub struct Ready {
    queues: HashMap<String, VecDeque<Waiting>>,
    /// Endpoints in the order they are served, round robin.
    order: VecDeque<String>,
    len: usize,
    retries: usize,
}

impl Ready {
    pub fn push(&mut self, claimed: Claimed, since: Instant) {
        self.len += 1;
        if claimed.attempt > 1 {
            self.retries += 1;
        }
        let queue = self
            .queues
            .entry(claimed.endpoint.id.clone())
            .or_insert_with_key(|id| {
                self.order.push_back(id.clone());
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

    /// Rows waiting for `endpoint_id`.
    pub fn waiting_for(&self, endpoint_id: &str) -> usize {
        self.queues.get(endpoint_id).map_or(0, VecDeque::len)
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

    /// Takes up to `max` rows that may start now, one endpoint at a time in turn, each with
    /// the place `in_flight` gives it; and every row that has waited longer than `max_wait`,
    /// to be handed back.
    pub fn take(
        &mut self,
        in_flight: &InFlight,
        max: usize,
        max_wait: Duration,
    ) -> (Vec<(Waiting, Slot)>, Vec<Claimed>) {
        let mut stale = Vec::new();
        for queue in self.queues.values_mut() {
            while queue.front().is_some_and(|w| w.since.elapsed() > max_wait) {
                stale.push(queue.pop_front().expect("front exists").claimed);
            }
        }
        let mut start = Vec::new();
        // Round robin: one row per endpoint per turn, until nothing more may start.
        let mut blocked = 0;
        while start.len() < max && blocked < self.order.len() {
            let id = self.order.pop_front().expect("order is not empty");
            let queue = self
                .queues
                .get_mut(&id)
                .expect("every ordered endpoint has a queue");
            let slot = queue.front().and_then(|w| in_flight.admit(&w.claimed));
            match slot {
                Some(slot) => {
                    start.push((queue.pop_front().expect("front exists"), slot));
                    blocked = 0;
                }
                None => blocked += 1,
            }
            if queue.is_empty() {
                self.queues.remove(&id);
                blocked = 0;
            } else {
                self.order.push_back(id);
            }
        }
        self.forget(start.iter().map(|(w, _)| &w.claimed));
        self.forget(stale.iter());
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
        self.order.retain(|id| self.queues.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::dispatch::isolation::tests::claimed_for as claimed;
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[test]
    fn starts_what_the_caps_allow_in_turn_and_keeps_the_rest() {
        let in_flight = InFlight::new(2, 1, Arc::new(Notify::new()));
        let mut ready = Ready::default();
        let now = Instant::now();
        for id in 1..=4 {
            ready.push(claimed(id, "a", 1), now);
        }
        ready.push(claimed(5, "b", 1), now);
        ready.push(claimed(6, "b", 2), now);
        ready.push(claimed(7, "b", 3), now);
        assert_eq!((ready.len(), ready.retries()), (7, 2));

        let (start, stale) = ready.take(&in_flight, 10, Duration::from_secs(60));
        let ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
        // a: its cap of 2, in order; b: one first attempt and one retry (retry cap 1).
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(ids.contains(&1) && ids.contains(&2) && ids.contains(&5) && ids.contains(&6));
        assert!(stale.is_empty());
        assert_eq!((ready.len(), ready.retries()), (3, 1));
        assert_eq!(ready.waiting_for("a"), 2);

        // A finished attempt of a lets the next of a start; the retry of b still waits.
        let (first, _running): (Vec<_>, Vec<_>) = start
            .into_iter()
            .partition(|(w, _)| w.claimed.delivery_id == 1);
        drop(first);
        let (start, _) = ready.take(&in_flight, 10, Duration::from_secs(60));
        let ids: Vec<i64> = start.iter().map(|(w, _)| w.claimed.delivery_id).collect();
        assert_eq!(ids, [3]);
    }

    #[test]
    fn takes_no_more_than_asked_and_hands_back_the_stale() {
        let in_flight = InFlight::new(10, 10, Arc::new(Notify::new()));
        let mut ready = Ready::default();
        let long_ago = Instant::now() - Duration::from_secs(120);
        ready.push(claimed(1, "a", 1), long_ago);
        ready.push(claimed(2, "a", 1), Instant::now());
        ready.push(claimed(3, "b", 1), Instant::now());
        assert_eq!(ready.oldest(), Some(long_ago));
        let (start, stale) = ready.take(&in_flight, 1, Duration::from_secs(60));
        assert_eq!(stale.iter().map(|c| c.delivery_id).collect::<Vec<_>>(), [1]);
        assert_eq!(start.len(), 1);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready.drain().len(), 1);
        assert_eq!(ready.len(), 0);
    }
}
