//! When the recorder writes, decided without I/O: how long a batch of attempt results waits
//! for more ([`Batching`]), and whom a written batch wakes ([`wake_after`]).

use std::time::{Duration, Instant};

use hookd_store::{Completion, Next};

/// Results written per transaction, at most.
pub const MAX_BATCH: usize = 512;

/// How long a small batch may wait for more results when the last write took at least as
/// long (the database is the bottleneck). On SQLite at saturation that halves the result
/// transactions (docs/benchmarks.md): each costs a `BEGIN`, a `COMMIT` and a
/// few hand-offs whatever its size. A database that answers fast never makes a result wait.
const LINGER: Duration = Duration::from_millis(4);
/// A batch this large (or half the pool, when that is smaller) is written at once.
const FULL_BATCH: usize = 256;

/// The batching rule and what it remembers: how long the last write took.
pub struct Batching {
    full: usize,
    last_write: Duration,
}

impl Batching {
    /// For a pool of `concurrency` attempts.
    pub fn new(concurrency: usize) -> Batching {
        Batching {
            full: FULL_BATCH.min(concurrency / 2).max(1),
            last_write: Duration::ZERO,
        }
    }

    /// Whether the results `received` so far, the first of them at `first_at`, wait for
    /// more: `Some((until, at most how many more))`, or `None` to write them now. They wait
    /// (up to [`LINGER`] in all) when the last write took at least that long and the batch is
    /// smaller than full; never when one of them is a result of an ordered endpoint, whose
    /// next delivery waits for it.
    pub fn wait_for_more<'a>(
        &self,
        received: impl ExactSizeIterator<Item = &'a Completion>,
        first_at: Instant,
    ) -> Option<(Instant, usize)> {
        let n = received.len();
        let mut received = received;
        let waits = self.last_write >= LINGER && n < self.full && !received.any(|c| c.ordered);
        waits.then(|| (first_at + LINGER, MAX_BATCH - n))
    }

    /// The last write took this long.
    pub fn written(&mut self, took: Duration) {
        self.last_write = took;
    }
}

/// Whom a written batch wakes in the dispatcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Something may be due that the dispatcher's last empty claim did not see.
    NewWork,
    /// Permits are free again: rows waiting may start, and a claim may find room.
    Room,
}

/// [`Wake::NewWork`] when recording `batch` may make a delivery due before the dispatcher
/// looks again (within `soon`, its poll interval): a retry due sooner, or the next delivery
/// of an ordered endpoint, which a final result lets go. Anything else only frees permits;
/// treating it as new work would make the dispatcher claim after every batch, and when the
/// endpoints with due rows are all at their caps, each such claim reads every due row only
/// to skip them all (35 ms per claim on PostgreSQL with 300,000 rows due to one busy
/// endpoint).
pub fn wake_after(batch: &[Completion], soon: Duration) -> Wake {
    let due = batch.iter().any(|c| match c.next {
        Next::RetryIn(ms) => Duration::from_millis(ms) < soon,
        Next::Succeeded | Next::Failed => c.ordered,
    });
    if due {
        Wake::NewWork
    } else {
        Wake::Room
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hookd_store::{AttemptRecord, Outcome, Trigger};

    /// A recorded attempt of endpoint `ep`.
    pub(crate) fn completion(next: Next, ordered: bool) -> Completion {
        Completion {
            delivery_id: 1,
            lease_token: "lease".into(),
            endpoint_id: "ep".into(),
            ordered,
            record: AttemptRecord {
                attempt: 1,
                trigger: Trigger::Auto,
                started_at: 0,
                duration_ms: 1,
                status_code: Some(200),
                outcome: Outcome::Success,
                error: None,
                response_body: None,
            },
            next,
        }
    }

    #[test]
    fn a_small_batch_waits_only_after_a_slow_write() {
        let received = |n: usize, ordered: bool| -> Vec<Completion> {
            (0..n)
                .map(|i| completion(Next::Succeeded, ordered && i == 0))
                .collect()
        };
        let slow = LINGER;
        let fast = LINGER - Duration::from_micros(1);
        let cases = [
            // (pool, results, ordered among them, last write, waits for at most)
            (512, 1, false, slow, Some(511)),
            (512, 255, false, slow, Some(257)),
            (512, 256, false, slow, None),
            (512, 1, false, fast, None),
            (512, 1, false, Duration::ZERO, None),
            (512, 1, true, slow, None),
            // Full at half the pool.
            (16, 7, false, slow * 10, Some(505)),
            (16, 8, false, slow * 10, None),
            (10_000, 255, false, slow, Some(257)),
            (10_000, 256, false, slow, None),
            // A pool of one writes each result at once.
            (1, 1, false, slow, None),
        ];
        let first_at = Instant::now();
        for (pool, n, ordered, last_write, waits) in cases {
            let mut batching = Batching::new(pool);
            batching.written(last_write);
            assert_eq!(
                batching.wait_for_more(received(n, ordered).iter(), first_at),
                waits.map(|more| (first_at + LINGER, more)),
                "pool {pool}, {n} results, ordered: {ordered}, last write {last_write:?}"
            );
        }
    }

    #[test]
    fn which_batches_wake_for_new_work() {
        let soon = Duration::from_millis(100);
        let cases = [
            (Next::Succeeded, false, Wake::Room),
            (Next::Failed, false, Wake::Room),
            (Next::RetryIn(60_000), false, Wake::Room),
            (Next::RetryIn(100), false, Wake::Room),
            (Next::RetryIn(99), false, Wake::NewWork),
            (Next::RetryIn(0), false, Wake::NewWork),
            // A final result of an ordered endpoint lets its next delivery go.
            (Next::Succeeded, true, Wake::NewWork),
            (Next::Failed, true, Wake::NewWork),
            (Next::RetryIn(60_000), true, Wake::Room),
        ];
        for (next, ordered, wake) in cases {
            let batch = [
                completion(Next::Succeeded, false),
                completion(next, ordered),
            ];
            assert_eq!(
                wake_after(&batch, soon),
                wake,
                "{next:?}, ordered: {ordered}"
            );
        }
        assert_eq!(wake_after(&[], soon), Wake::Room);
    }
}
