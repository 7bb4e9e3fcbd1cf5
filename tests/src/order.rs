//! What a receiver of an ordered endpoint saw, checked as it arrives: hookd lets an ordered
//! endpoint's next delivery go only once the one before it has finished, so the first
//! request of each event must come after every earlier event was answered 200. A repeated
//! request of an event already answered (at-least-once) is not a first receipt.

/// The ordered endpoint's receipts, by event number.
#[derive(Default)]
pub struct Order {
    /// Per event number: answered 200 at least once.
    pub answered: Vec<bool>,
    /// Event numbers in the order of their first request.
    pub first_receipts: Vec<usize>,
    /// First requests that came while an earlier event was still unanswered:
    /// (event, the earliest event not answered yet).
    pub violations: Vec<(usize, usize)>,
}

impl Order {
    /// For events numbered `0..n`.
    pub fn new(n: usize) -> Order {
        Order {
            answered: vec![false; n],
            ..Order::default()
        }
    }

    /// A request for event `n`, the `request`-th for it; it is answered 200.
    pub fn request(&mut self, n: usize, request: u32) {
        if request == 1 {
            self.first_receipts.push(n);
            if let Some(missing) = self.answered[..n].iter().position(|done| !done) {
                self.violations.push((n, missing));
            }
        }
        self.answered[n] = true;
    }

    /// Whether every event up to `n` (exclusive) was answered.
    pub fn all_answered(&self, n: usize) -> bool {
        self.answered[..n].iter().all(|done| *done)
    }
}
