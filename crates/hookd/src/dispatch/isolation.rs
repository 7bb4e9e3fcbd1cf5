//! Isolation between endpoints and between first attempts and retries, inside one
//! process: an endpoint may hold at most `per_endpoint` attempts in flight (one that hangs
//! for the whole timeout cannot take the pool), and retries may hold at most `retries`
//! (a storm of retries cannot starve new events).
//!
//! The claim skips endpoints that are at their cap; a batch that still brings more for an
//! endpoint than it may take hands the surplus back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hookd_store::Claimed;

/// Counts of attempts in flight; a [`Slot`] is held by each running attempt.
#[derive(Clone)]
pub struct InFlight {
    inner: Arc<Mutex<Counts>>,
    per_endpoint: usize,
    retries: usize,
}

#[derive(Default)]
struct Counts {
    endpoints: HashMap<String, usize>,
    retries: usize,
}

/// One running attempt; dropping it frees its place.
pub struct Slot {
    inner: Arc<Mutex<Counts>>,
    endpoint_id: String,
    retry: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.inner.lock().expect("counts lock");
        if let Some(n) = counts.endpoints.get_mut(&self.endpoint_id) {
            *n -= 1;
            if *n == 0 {
                counts.endpoints.remove(&self.endpoint_id);
            }
        }
        if self.retry {
            counts.retries -= 1;
        }
    }
}

impl InFlight {
    pub fn new(per_endpoint: usize, retries: usize) -> InFlight {
        InFlight {
            inner: Arc::default(),
            per_endpoint: per_endpoint.max(1),
            retries,
        }
    }

    /// Endpoints at their cap: the next claim skips them.
    pub fn saturated_endpoints(&self) -> Vec<String> {
        let counts = self.inner.lock().expect("counts lock");
        counts
            .endpoints
            .iter()
            .filter(|(_, n)| **n >= self.per_endpoint)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many more retries may start now.
    pub fn retry_room(&self) -> usize {
        self.retries
            .saturating_sub(self.inner.lock().expect("counts lock").retries)
    }

    /// A place for this attempt, or `None` when its endpoint is at its cap.
    pub fn admit(&self, c: &Claimed) -> Option<Slot> {
        let mut counts = self.inner.lock().expect("counts lock");
        let n = counts.endpoints.entry(c.endpoint.id.clone()).or_default();
        if *n >= self.per_endpoint {
            return None;
        }
        *n += 1;
        let retry = c.attempt > 1;
        if retry {
            counts.retries += 1;
        }
        Some(Slot {
            inner: self.inner.clone(),
            endpoint_id: c.endpoint.id.clone(),
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookd_store::{Endpoint, Trigger};

    fn claimed(endpoint: &str, attempt: i32) -> Claimed {
        Claimed {
            delivery_id: 1,
            lease_token: "t".into(),
            event_id: "e".into(),
            event_type: "x".into(),
            attempt,
            trigger: Trigger::Auto,
            auto_attempts: attempt,
            manual_only: false,
            payload: "{}".into(),
            payload_error: None,
            endpoint: Endpoint {
                id: endpoint.into(),
                ..Endpoint::default()
            },
        }
    }

    #[test]
    fn caps_each_endpoint_and_the_retries() {
        let f = InFlight::new(2, 3);
        let a1 = f.admit(&claimed("a", 1)).unwrap();
        let _a2 = f.admit(&claimed("a", 2)).unwrap();
        assert!(f.admit(&claimed("a", 1)).is_none(), "a is at its cap");
        assert_eq!(f.saturated_endpoints(), ["a"]);
        let _b = f.admit(&claimed("b", 3)).unwrap();
        assert_eq!(f.retry_room(), 1, "two retries in flight of three allowed");
        drop(a1);
        assert!(f.saturated_endpoints().is_empty());
        assert!(f.admit(&claimed("a", 1)).is_some());
    }
}
