//! An endpoint's rate limit (`rate_limit`, deliveries per second): the budget arithmetic a
//! claim runs against the state kept in the endpoint's row. Pure.
//!
//! The limit is a GCRA (generic cell rate algorithm, a token bucket kept as one number):
//! the row holds `rate_tat`, the theoretical arrival time (database clock, ms) of the next
//! delivery were the endpoint sent exactly at its rate. Each delivery claimed moves it on
//! by one interval (`1000 / rate` ms, from now if it lies in the past); a claim may take a
//! delivery while that time is at most [`BURST`] intervals ahead of now, so an endpoint
//! idle for a second or more may get one second's worth at once, and never more. Rows over
//! the budget are not read: they stay pending in the database, and are not attempts.

use serde::{Deserialize, Serialize};

/// Deliveries per second, a finite positive number (fractions allowed: 0.5 is one every
/// two seconds).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct RateLimit(f64);

/// Seconds' worth of deliveries an idle endpoint may get at once.
pub const BURST_SECONDS: f64 = 1.0;

// Finite by construction, so equality is an equivalence.
impl Eq for RateLimit {}

impl RateLimit {
    /// `None` unless `per_second` is a finite number above 0.
    pub fn new(per_second: f64) -> Option<RateLimit> {
        (per_second.is_finite() && per_second > 0.0).then_some(RateLimit(per_second))
    }

    pub fn per_second(self) -> f64 {
        self.0
    }

    /// Milliseconds between two deliveries at this rate.
    pub fn interval_ms(self) -> f64 {
        1000.0 / self.0
    }

    /// Deliveries an idle endpoint may get at once: [`BURST_SECONDS`] worth, at least one.
    pub fn burst(self) -> u32 {
        (self.0 * BURST_SECONDS).floor().clamp(1.0, u32::MAX as f64) as u32
    }

    /// How many deliveries may start now, the endpoint's theoretical arrival time being
    /// `ahead_ms` from now (`None`: never sent under a limit; negative: in the past).
    pub fn allowance(self, ahead_ms: Option<f64>) -> u32 {
        let ahead = ahead_ms.unwrap_or(0.0).max(0.0);
        // The k-th delivery from now conforms while ahead + (k - 1) * T <= (burst - 1) * T.
        let k = (self.burst() as f64 - ahead / self.interval_ms()).floor();
        k.clamp(0.0, u32::MAX as f64) as u32
    }

    /// The theoretical arrival time after `taken` deliveries claimed at `now_ms`, the one
    /// before being `tat_ms` (`None`: never sent under a limit).
    pub fn advance(self, tat_ms: Option<f64>, now_ms: f64, taken: u32) -> f64 {
        tat_ms.unwrap_or(now_ms).max(now_ms) + taken as f64 * self.interval_ms()
    }

    /// Milliseconds from now until one more delivery may start (≤ 0: now), the theoretical
    /// arrival time being `ahead_ms` from now.
    pub fn wait_ms(self, ahead_ms: Option<f64>) -> f64 {
        let ahead = ahead_ms.unwrap_or(0.0).max(0.0);
        ahead - (self.burst() as f64 - 1.0) * self.interval_ms()
    }
}

impl TryFrom<f64> for RateLimit {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        RateLimit::new(v)
            .ok_or_else(|| "a rate limit is a number of deliveries per second above 0".to_string())
    }
}

impl From<RateLimit> for f64 {
    fn from(r: RateLimit) -> f64 {
        r.0
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// One rate-limited endpoint as the idle wait sees it: its limit, its theoretical arrival
/// time from now, and its earliest pending rows' due times from now (first attempts,
/// retries; `None`: none pending).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LimitedNext {
    pub rate: RateLimit,
    pub ahead_ms: Option<f64>,
    pub first_due_ms: Option<i64>,
    pub retry_due_ms: Option<i64>,
}

/// How soon to look again at a limited endpoint whose budget allows a delivery now and
/// which has rows due, after a claim that took none of them: its budget came while the
/// claim ran (or it is at its cap of attempts in flight). Soon, but not at once: a claim
/// loop at its cap would spin, and the budget keeps a second's worth meanwhile.
pub(crate) const RECHECK_MS: i64 = 10;

/// Milliseconds until a claim may find something (≤ 0: now), from `due_ms`, the earliest
/// due row of any endpoint, and the rate-limited endpoints: a limited endpoint's row counts
/// as due when both it is due and the budget allows one more (then in [`RECHECK_MS`] at
/// the earliest). While rows are overdue (`due_ms` ≤ 0) and a limited endpoint waits for
/// its budget, that wait is the answer: the overdue rows may be its own, which a claim
/// will not take before then.
pub(crate) fn next_due(due_ms: Option<i64>, limited: &[LimitedNext]) -> Option<i64> {
    let budget = limited
        .iter()
        .filter_map(|l| {
            let due = match (l.first_due_ms, l.retry_due_ms) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            };
            Some(
                due.max(l.rate.wait_ms(l.ahead_ms).ceil() as i64)
                    .max(RECHECK_MS),
            )
        })
        .min();
    match (due_ms, budget) {
        (Some(due), Some(b)) if due <= 0 && b > 0 => Some(b),
        (Some(due), Some(b)) => Some(due.min(b)),
        (due, b) => due.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: f64) -> RateLimit {
        RateLimit::new(v).unwrap()
    }

    #[test]
    fn accepted_limits() {
        for (v, ok) in [
            (20.0, true),
            (0.5, true),
            (1e9, true),
            (0.0, false),
            (-1.0, false),
            (f64::NAN, false),
            (f64::INFINITY, false),
            (-0.0, false),
        ] {
            assert_eq!(RateLimit::new(v).is_some(), ok, "{v}");
        }
        assert!(serde_json::from_str::<RateLimit>("0").is_err());
        assert_eq!(serde_json::from_str::<RateLimit>("2.5").unwrap(), r(2.5));
        assert_eq!(serde_json::to_string(&r(20.0)).unwrap(), "20.0");
    }

    #[test]
    fn bursts_and_intervals() {
        // (rate, burst, interval ms)
        for (rate, burst, interval) in [
            (20.0, 20, 50.0),
            (0.5, 1, 2000.0),
            (1.0, 1, 1000.0),
            (2.5, 2, 400.0),
            (1000.0, 1000, 1.0),
        ] {
            assert_eq!(r(rate).burst(), burst, "{rate}");
            assert_eq!(r(rate).interval_ms(), interval, "{rate}");
        }
    }

    #[test]
    fn allowance_table() {
        // (what, rate, tat ahead of now in ms, deliveries allowed now)
        let cases = [
            ("never sent: a full burst", 20.0, None, 20),
            (
                "idle long ago: a full burst, no more",
                20.0,
                Some(-60_000.0),
                20,
            ),
            ("tat now: a full burst", 20.0, Some(0.0), 20),
            ("one interval ahead: one fewer", 20.0, Some(50.0), 19),
            (
                "part of an interval ahead rounds down",
                20.0,
                Some(51.0),
                18,
            ),
            ("a burst's worth ahead: none", 20.0, Some(1000.0), 0),
            ("one interval short of a burst: one", 20.0, Some(950.0), 1),
            ("far ahead: none", 20.0, Some(10_000.0), 0),
            ("slow limit, idle: one", 0.5, None, 1),
            ("slow limit, just sent: none", 0.5, Some(2000.0), 0),
            ("slow limit, due again: one", 0.5, Some(0.0), 1),
        ];
        for (what, rate, ahead, want) in cases {
            assert_eq!(r(rate).allowance(ahead), want, "{what}");
        }
    }

    #[test]
    fn advancing_takes_the_later_of_tat_and_now() {
        // (what, rate, tat, now, taken, new tat)
        let cases = [
            ("never sent", 20.0, None, 1000.0, 20, 2000.0),
            (
                "tat in the past: from now",
                20.0,
                Some(10.0),
                1000.0,
                2,
                1100.0,
            ),
            ("tat ahead: from it", 20.0, Some(1500.0), 1000.0, 1, 1550.0),
            (
                "nothing taken: tat at least now",
                20.0,
                Some(10.0),
                1000.0,
                0,
                1000.0,
            ),
        ];
        for (what, rate, tat, now, taken, want) in cases {
            assert_eq!(r(rate).advance(tat, now, taken), want, "{what}");
        }
    }

    /// Claims every `every` ms for `ms`, each taking what the budget allows (the backlog
    /// never runs dry): how many went.
    fn run(rate: f64, every: f64, ms: f64) -> u32 {
        let limit = r(rate);
        let (mut tat, mut now, mut sent) = (None, 0.0, 0);
        while now <= ms {
            let n = limit.allowance(tat.map(|t: f64| t - now));
            tat = Some(limit.advance(tat, now, n));
            sent += n;
            now += every;
        }
        sent
    }

    #[test]
    fn a_backlog_goes_at_the_rate_plus_one_burst() {
        // (rate, claim every ms, over ms, deliveries): the burst, then the rate, however
        // often the claims come.
        for (rate, every, ms, want) in [
            (20.0, 1.0, 10_000.0, 20 + 200),
            (20.0, 7.0, 10_000.0, 20 + 200),
            (20.0, 250.0, 10_000.0, 20 + 200),
            (20.0, 1000.0, 10_000.0, 20 + 200),
            (0.5, 100.0, 10_000.0, 1 + 5),
        ] {
            let got = run(rate, every, ms);
            assert!(
                got.abs_diff(want) <= 1,
                "{rate}/s claimed every {every} ms: {got}, want {want}"
            );
        }
    }

    #[test]
    fn waits_until_the_budget_allows_one() {
        // (rate, tat ahead, wait)
        for (rate, ahead, want) in [
            (20.0, None, -950.0),
            (20.0, Some(1000.0), 50.0),
            (20.0, Some(950.0), 0.0),
            (0.5, Some(2000.0), 2000.0),
        ] {
            assert_eq!(r(rate).wait_ms(ahead), want, "{rate} {ahead:?}");
        }
    }

    #[test]
    fn next_due_table() {
        let l = |ahead: f64, first: Option<i64>, retry: Option<i64>| LimitedNext {
            rate: r(20.0),
            ahead_ms: Some(ahead),
            first_due_ms: first,
            retry_due_ms: retry,
        };
        // (what, next due row of any endpoint, limited endpoints, answer)
        let cases = [
            ("nothing limited", Some(300), vec![], Some(300)),
            ("nothing pending", None, vec![], None),
            (
                "overdue rows, a limited endpoint waiting for its budget: its wait",
                Some(-5_000),
                vec![l(1000.0, Some(-5_000), None)],
                Some(50),
            ),
            (
                "a limited endpoint with budget and overdue rows: soon",
                Some(-5_000),
                vec![l(0.0, Some(-5_000), None)],
                Some(RECHECK_MS),
            ),
            (
                "its budget due in less than the recheck: the recheck",
                Some(-5_000),
                vec![l(955.0, Some(-5_000), None)],
                Some(RECHECK_MS),
            ),
            (
                "a limited endpoint's rows due later than its budget: their due time",
                Some(400),
                vec![l(1000.0, None, Some(400))],
                Some(400),
            ),
            (
                "a limited endpoint with nothing pending counts for nothing",
                Some(300),
                vec![l(5000.0, None, None)],
                Some(300),
            ),
            (
                "the earliest of several",
                Some(-1),
                vec![l(1100.0, Some(-9), None), l(1020.0, None, Some(-3))],
                Some(70),
            ),
        ];
        for (what, due, limited, want) in cases {
            assert_eq!(next_due(due, &limited), want, "{what}");
        }
    }
}
