//! Isolation between endpoints and between first attempts and retries, inside one
//! process: an endpoint may hold at most `per_endpoint` attempts in flight (one that hangs
//! for the whole timeout cannot take the pool), and retries may hold at most `retries`
//! (a storm of retries cannot starve new events).
//!
//! The claim skips endpoints that already have enough running and waiting
//! (`planner::busy_endpoints`); what a claim brings beyond an endpoint's cap waits in
//! `ready.rs` for a place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use hookd_store::{Claimed, EndpointId};

/// Counts of attempts in flight; a [`Slot`] is held by each running attempt.
#[derive(Clone)]
pub struct InFlight {
    inner: Arc<Mutex<Counts>>,
    per_endpoint: usize,
    retries: usize,
}

struct Counts {
    endpoints: HashMap<EndpointId, usize>,
    retries: usize,
    /// Told whenever a place frees, so that a waiting row can start at once.
    freed: Arc<Notify>,
}

/// One running attempt; dropping it frees its place.
pub struct Slot {
    inner: Arc<Mutex<Counts>>,
    endpoint_id: EndpointId,
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
        counts.freed.notify_one();
    }
}

impl InFlight {
    /// `freed` is notified whenever an attempt ends.
    pub fn new(per_endpoint: usize, retries: usize, freed: Arc<Notify>) -> InFlight {
        InFlight {
            inner: Arc::new(Mutex::new(Counts {
                endpoints: HashMap::new(),
                retries: 0,
                freed,
            })),
            per_endpoint: per_endpoint.max(1),
            retries,
        }
    }

    /// Attempts one endpoint may have in flight.
    pub fn per_endpoint(&self) -> usize {
        self.per_endpoint
    }

    /// Calls `f` with the attempts in flight per endpoint (endpoints with none left out).
    pub fn running<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (&str, usize)>) -> R) -> R {
        let counts = self.inner.lock().expect("counts lock");
        f(&mut counts.endpoints.iter().map(|(id, n)| (id.as_str(), *n)))
    }

    /// How many more retries may start now.
    pub fn retry_room(&self) -> usize {
        self.retries
            .saturating_sub(self.inner.lock().expect("counts lock").retries)
    }

    /// A place for this attempt, or `None` when its endpoint is at its cap, or it is a
    /// retry and the retries are at theirs.
    pub fn admit(&self, c: &Claimed) -> Option<Slot> {
        let mut counts = self.inner.lock().expect("counts lock");
        let retry = c.attempt > 1;
        if retry && counts.retries >= self.retries {
            return None;
        }
        let n = counts.endpoints.entry(c.endpoint.id.clone()).or_default();
        if *n >= self.per_endpoint {
            return None;
        }
        *n += 1;
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
pub(crate) mod tests {
    use super::*;
    use hookd_store::{Endpoint, Trigger};

    fn claimed(endpoint: &str, attempt: i32) -> Claimed {
        claimed_for(1, endpoint, attempt)
    }

    /// A claimed delivery of `endpoint`, for tests of the dispatcher's bookkeeping.
    pub(crate) fn claimed_for(id: i64, endpoint: &str, attempt: i32) -> Claimed {
        Claimed {
            delivery_id: id,
            lease_token: "t".into(),
            event_id: "e".into(),
            event_type: "x".into(),
            attempt,
            trigger: Trigger::Auto,
            auto_attempts: attempt,
            manual_only: false,
            payload: "{}".into(),
            payload_error: None,
            traceparent: None,
            endpoint: Arc::new(Endpoint {
                id: endpoint.into(),
                ..Endpoint::default()
            }),
        }
    }

    #[test]
    fn caps_each_endpoint_and_the_retries() {
        let freed = Arc::new(Notify::new());
        let f = InFlight::new(2, 3, freed.clone());
        let a1 = f.admit(&claimed("a", 1)).unwrap();
        let _a2 = f.admit(&claimed("a", 2)).unwrap();
        assert!(f.admit(&claimed("a", 1)).is_none(), "a is at its cap");
        let _b = f.admit(&claimed("b", 3)).unwrap();
        assert_eq!(f.retry_room(), 1, "two retries in flight of three allowed");
        let _c = f.admit(&claimed("c", 2)).unwrap();
        assert!(
            f.admit(&claimed("d", 2)).is_none(),
            "the retries are at their cap"
        );
        assert!(
            f.admit(&claimed("d", 1)).is_some(),
            "a first attempt still goes"
        );

        let running = |f: &InFlight| {
            let mut running: Vec<(String, usize)> =
                f.running(|r| r.map(|(id, n)| (id.to_string(), n)).collect());
            running.sort();
            running
        };
        let counts = |c: &[(&str, usize)]| -> Vec<(String, usize)> {
            c.iter().map(|(id, n)| (id.to_string(), *n)).collect()
        };
        // (d's attempt ended at once.)
        assert_eq!(running(&f), counts(&[("a", 2), ("b", 1), ("c", 1)]));
        drop(a1);
        assert_eq!(running(&f), counts(&[("a", 1), ("b", 1), ("c", 1)]));
        assert!(f.admit(&claimed("a", 1)).is_some());
        // Every place freed was announced.
        assert!(futures_now(freed.notified()));
    }

    /// Whether a future is ready at once.
    fn futures_now(f: impl std::future::Future) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        std::pin::pin!(f).poll(&mut cx).is_ready()
    }
}
