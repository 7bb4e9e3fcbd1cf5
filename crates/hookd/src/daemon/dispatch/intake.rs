//! Deliveries leased outside the dispatcher's loop, by the API's group commit, and handed
//! to it: an event that comes through `POST /v1/events` then costs no claim, as one read
//! from the outbox does not.
//!
//! The dispatcher publishes its free room at every turn of its loop; a writer takes a
//! [`Grant`] of part of it, leases up to that many of the deliveries it creates in its own
//! transaction, and hands them over ([`Intake::hand`]). Granted places count as taken until
//! the dispatcher has them back, so claims and grants never promise the same place twice,
//! and the rows handed over never exceed the room: the channel is bounded by construction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookd_store::{Claimed, EndpointId, IngestLease};
use tokio::sync::mpsc;

/// The dispatcher's side of the handover, and the writers' (it is cloned into each).
#[derive(Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

struct Inner {
    /// Places free for rows leased elsewhere, as of the dispatcher's last turn, less the
    /// grants taken since.
    room: AtomicUsize,
    /// Places granted and not yet handed back (as rows, or unused).
    outstanding: AtomicUsize,
    /// Endpoints at their cap as of the dispatcher's last turn: not leased for.
    busy: Mutex<Arc<Vec<EndpointId>>>,
    handed: mpsc::UnboundedSender<Handed>,
    lease: Duration,
}

/// Rows leased by a writer, on their way to the dispatcher.
pub struct Handed {
    pub claimed: Vec<Claimed>,
    /// The places the writer's grant took: all come back with these rows.
    pub granted: usize,
    /// When the lease was taken, about: the rows' lease runs from then.
    pub leased_at: Instant,
}

/// Places a writer may lease for, taken from the dispatcher's room. Dropped without being
/// handed over (its write failed, or panicked), its places are no longer outstanding.
pub struct Grant {
    inner: Arc<Inner>,
    places: usize,
    busy: Arc<Vec<EndpointId>>,
    lease_ms: u64,
    started: Instant,
}

impl Grant {
    /// The lease to give the store's write.
    pub fn lease(&self) -> IngestLease<'_> {
        IngestLease {
            max: self.places as u32,
            exclude_endpoints: &self.busy,
            consume: hookd_store::Consume::ToRoomPastBusy,
            lease_ms: self.lease_ms,
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.inner
            .outstanding
            .fetch_sub(self.places, Ordering::AcqRel);
    }
}

impl Intake {
    /// A new handover for a dispatcher whose leases last `lease`, and the receiving end.
    pub fn new(lease: Duration) -> (Intake, mpsc::UnboundedReceiver<Handed>) {
        let (handed, rx) = mpsc::unbounded_channel();
        let intake = Intake {
            inner: Arc::new(Inner {
                room: AtomicUsize::new(0),
                outstanding: AtomicUsize::new(0),
                busy: Mutex::default(),
                handed,
                lease,
            }),
        };
        (intake, rx)
    }

    /// Up to `want` places of the dispatcher's room, or none: no room, or the dispatcher
    /// has stopped taking rows.
    pub fn grant(&self, want: usize) -> Option<Grant> {
        let inner = &self.inner;
        if want == 0 || inner.handed.is_closed() {
            return None;
        }
        let taken = inner
            .room
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |room| {
                (room > 0).then(|| room - room.min(want))
            })
            .map(|room| room.min(want))
            .unwrap_or(0);
        if taken == 0 {
            return None;
        }
        inner.outstanding.fetch_add(taken, Ordering::AcqRel);
        Some(Grant {
            inner: inner.clone(),
            places: taken,
            busy: inner.busy.lock().expect("never poisoned").clone(),
            lease_ms: inner.lease.as_millis() as u64,
            started: Instant::now(),
        })
    }

    /// Hands the rows leased under `grant` to the dispatcher, with the grant's unused
    /// places. A dispatcher that has stopped gives the rows back: the caller releases them.
    pub fn hand(&self, mut grant: Grant, claimed: Vec<Claimed>) -> Result<(), Vec<Claimed>> {
        let handed = Handed {
            claimed,
            granted: grant.places,
            leased_at: grant.started,
        };
        // From here the places come back with the rows, or not at all if they do not arrive.
        grant.places = 0;
        self.inner.handed.send(handed).map_err(|e| {
            self.inner
                .outstanding
                .fetch_sub(e.0.granted, Ordering::AcqRel);
            e.0.claimed
        })
    }

    /// Places granted and not yet back.
    pub(super) fn outstanding(&self) -> usize {
        self.inner.outstanding.load(Ordering::Acquire)
    }

    /// The dispatcher has `handed` back: its places are no longer outstanding.
    pub(super) fn received(&self, handed: &Handed) {
        self.inner
            .outstanding
            .fetch_sub(handed.granted, Ordering::AcqRel);
    }

    /// The dispatcher's turn: `room` places free for writers, `busy` endpoints at their cap.
    pub(super) fn publish(&self, room: usize, busy: &[EndpointId]) {
        self.inner.room.store(room, Ordering::Release);
        let mut current = self.inner.busy.lock().expect("never poisoned");
        if current.as_slice() != busy {
            *current = Arc::new(busy.to_vec());
        }
    }
}

/// The places writers may lease for: the free permits less the rows waiting for one and
/// the grants not yet back. A claim or an outbox read on its way is not counted: an idle
/// dispatcher's poll asks for the whole room, mostly to find nothing, and counting it would
/// leave writers none. What both take beyond the room waits in the ready queue for a place.
pub(super) fn room(free: usize, waiting: usize, outstanding: usize) -> usize {
    free.saturating_sub(waiting).saturating_sub(outstanding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_no_one_else_was_promised() {
        // (free, waiting, outstanding) -> room
        let cases = [
            ((64, 0, 0), 64),
            ((64, 10, 0), 54),
            ((64, 10, 50), 4),
            ((64, 10, 60), 0),
            ((0, 5, 0), 0),
            ((3, 0, 512), 0),
        ];
        for ((free, waiting, outstanding), want) in cases {
            assert_eq!(
                room(free, waiting, outstanding),
                want,
                "free {free}, waiting {waiting}, outstanding {outstanding}"
            );
        }
    }

    #[test]
    fn grants_share_the_published_room_and_count_until_handed_back() {
        let (intake, mut rx) = Intake::new(Duration::from_secs(30));
        assert!(intake.grant(5).is_none(), "no room before the first turn");
        intake.publish(8, &[EndpointId::from("busy")]);
        let a = intake.grant(5).expect("room for 5");
        assert_eq!(a.places, 5);
        assert_eq!(a.lease().exclude_endpoints, &[EndpointId::from("busy")]);
        let b = intake.grant(5).expect("the 3 left");
        assert_eq!(b.places, 3);
        assert!(intake.grant(1).is_none(), "the room is spent");
        assert_eq!(intake.outstanding(), 8);
        intake.publish(2, &[]);
        drop(intake.grant(2).expect("room for 2"));
        assert_eq!(
            intake.outstanding(),
            8,
            "a grant dropped unused gives its places back"
        );
        intake.hand(a, Vec::new()).expect("the dispatcher is there");
        let handed = rx.try_recv().expect("handed");
        assert_eq!(handed.granted, 5);
        intake.received(&handed);
        assert_eq!(intake.outstanding(), 3);
        drop(rx);
        assert!(
            intake.hand(b, Vec::new()).is_err(),
            "the dispatcher is gone"
        );
        assert_eq!(intake.outstanding(), 0);
        intake.publish(8, &[]);
        assert!(
            intake.grant(1).is_none(),
            "no grants once the dispatcher is gone"
        );
    }
}
