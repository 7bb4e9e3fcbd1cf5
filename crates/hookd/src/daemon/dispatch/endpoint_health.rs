//! Which endpoints' health a recorded batch writes, decided without I/O. A failure is
//! written at once; a success only when the endpoint was failing or its last success was
//! written [`rewrite_success`] ago, so that a busy healthy endpoint costs a write every 30 s,
//! not one per batch.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hookd_store::{Completion, EndpointId, Outcome};

/// Endpoints whose last health write was a success, and when it was made.
pub struct EndpointHealth {
    healthy: HashMap<EndpointId, Instant>,
    rewrite_success: Duration,
}

/// A healthy endpoint's success is written again after this long at the latest (30 s, or a
/// quarter of `disable_after` when that is shorter), so that a failure written meanwhile by
/// another instance is cleared long before it could disable the endpoint.
fn rewrite_success(disable_after: Duration) -> Duration {
    let cap = Duration::from_secs(30);
    if disable_after.is_zero() {
        cap
    } else {
        cap.min(disable_after / 4)
    }
}

impl EndpointHealth {
    pub fn new(disable_after: Duration) -> EndpointHealth {
        EndpointHealth {
            healthy: HashMap::new(),
            rewrite_success: rewrite_success(disable_after),
        }
    }

    /// The health to write at `now` for the results of `batch` that were `recorded`: per
    /// endpoint with news, whether any of its attempts succeeded. Counted as written.
    pub fn news(
        &mut self,
        batch: &[Completion],
        recorded: &[bool],
        now: Instant,
    ) -> Vec<(EndpointId, bool)> {
        let mut any_success: BTreeMap<&EndpointId, bool> = BTreeMap::new();
        for (c, _) in batch.iter().zip(recorded).filter(|(_, ok)| **ok) {
            *any_success.entry(&c.endpoint_id).or_default() |= c.record.outcome == Outcome::Success;
        }
        let news: Vec<(EndpointId, bool)> = any_success
            .into_iter()
            .filter(|(id, ok)| {
                let fresh = self
                    .healthy
                    .get(*id)
                    .is_some_and(|at| now.duration_since(*at) < self.rewrite_success);
                !(*ok && fresh)
            })
            .map(|(id, ok)| (id.clone(), ok))
            .collect();
        for (id, ok) in &news {
            if *ok {
                self.healthy.insert(id.clone(), now);
            } else {
                self.healthy.remove(id);
            }
        }
        news
    }

    /// `news` could not be written: the next success of each of its endpoints is written.
    pub fn not_written(&mut self, news: &[(EndpointId, bool)]) {
        for (id, _) in news {
            self.healthy.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::dispatch::batching::tests::completion;
    use hookd_store::Next;

    fn result(endpoint: &str, outcome: Outcome) -> Completion {
        let mut c = completion(Next::Succeeded, false);
        c.endpoint_id = endpoint.into();
        c.record.outcome = outcome;
        c
    }

    #[test]
    fn the_success_rewrite_interval() {
        let cases = [
            (Duration::ZERO, 30),
            (Duration::from_secs(3600), 30),
            (Duration::from_secs(120), 30),
            (Duration::from_secs(60), 15),
        ];
        for (disable_after, secs) in cases {
            assert_eq!(
                rewrite_success(disable_after),
                Duration::from_secs(secs),
                "{disable_after:?}"
            );
        }
    }

    #[test]
    fn failures_at_once_successes_when_news() {
        use Outcome::{HttpError, Success, Timeout};
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // One endpoint's batches in turn, on one memory; disable_after 1 h: successes are
        // written again after 30 s.
        let mut health = EndpointHealth::new(s(3600));
        // (at, outcomes of a's results, which were recorded, news for a)
        type Step = (Duration, &'static [Outcome], &'static [bool], Option<bool>);
        let steps: &[Step] = &[
            (s(0), &[Success], &[true], Some(true)),
            (s(1), &[Success, Success], &[true, true], None),
            (s(29), &[Success], &[true], None),
            (s(30), &[Success], &[true], Some(true)),
            // Any success in the batch counts as one.
            (s(31), &[HttpError, Success], &[true, true], None),
            (s(32), &[HttpError, Timeout], &[true, true], Some(false)),
            (s(33), &[HttpError], &[true], Some(false)),
            // A success after a failure is news.
            (s(34), &[Success], &[true], Some(true)),
            // Results whose lease was lost say nothing.
            (s(35), &[HttpError], &[false], None),
            (s(36), &[HttpError, Success], &[true, false], Some(false)),
        ];
        for (at, outcomes, recorded, news) in steps {
            let batch: Vec<Completion> = outcomes.iter().map(|o| result("a", *o)).collect();
            let got = health.news(&batch, recorded, t0 + *at);
            let want: Vec<(EndpointId, bool)> = news.iter().map(|ok| ("a".into(), *ok)).collect();
            assert_eq!(got, want, "at {at:?}: {outcomes:?} recorded {recorded:?}");
        }
    }

    #[test]
    fn news_per_endpoint_and_rewritten_when_not_written() {
        let t0 = Instant::now();
        let mut health = EndpointHealth::new(Duration::ZERO);
        let batch = [
            result("b", Outcome::Success),
            result("a", Outcome::NetworkError),
            result("b", Outcome::Timeout),
            result("c", Outcome::Success),
        ];
        let news = health.news(&batch, &[true; 4], t0);
        assert_eq!(
            news,
            [("a".into(), false), ("b".into(), true), ("c".into(), true)]
        );
        assert!(health.news(&batch[3..], &[true], t0).is_empty());
        health.not_written(&news);
        assert_eq!(health.news(&batch[3..], &[true], t0), [("c".into(), true)]);
    }
}
