//! When a failed delivery is tried again. Pure: the schedule is data, the clock is the
//! database's.

use std::time::Duration;

use hookd_store::{Claimed, Next, Outcome};

use crate::duration::format_duration;

/// The default ladder: 1m, 5m, 10m, 30m, 1h, 2h, 4h: 7 retries, 8 attempts in all, the last
/// about 7h46m after the first.
pub const DEFAULT_SCHEDULE: &str = "1m,5m,10m,30m,1h,2h,4h";

/// Where a delivery goes after an attempt, in words for the log: `succeeded`, `retry in
/// 1m`, `failed, no more retries`.
pub fn describe_next(next: Next) -> String {
    match next {
        Next::Succeeded => "succeeded".to_string(),
        Next::RetryIn(ms) => format!("retry in {}", format_duration(Duration::from_millis(ms))),
        Next::Failed => "failed, no more retries".to_string(),
    }
}

/// The delay before the next automatic attempt after a failure, or `None` when the delivery
/// has failed for good.
///
/// `auto_attempts` counts the automatic attempts made so far, the failed one included when
/// it was automatic: after the first attempt fails, the first entry of the schedule applies.
/// A manual attempt never advances the schedule; a manual attempt on a finished delivery
/// (`manual_only`) is a one-off whose failure is final.
pub fn delay_after_failure(
    schedule: &[Duration],
    auto_attempts: u32,
    manual_only: bool,
) -> Option<Duration> {
    if manual_only {
        return None;
    }
    let step = auto_attempts.max(1) as usize;
    schedule.get(step - 1).copied()
}

/// Where a claimed delivery goes after an attempt with this outcome.
pub fn next_state(claimed: &Claimed, outcome: Outcome, schedule: &[Duration]) -> Next {
    if outcome == Outcome::Success {
        return Next::Succeeded;
    }
    match delay_after_failure(
        schedule,
        claimed.auto_attempts.max(0) as u32,
        claimed.manual_only,
    ) {
        Some(delay) => Next::RetryIn(delay.as_millis() as u64),
        None => Next::Failed,
    }
}

/// `HOOKD_RETRY_JITTER`: a fraction from 0 to 1.
pub fn parse_jitter(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1 (e.g. 0.1)")),
    }
}

/// Spreads a retry's delay uniformly within ± `jitter` of it: `draw` is uniform in [0, 1)
/// (random in the daemon, fixed in tests). Other outcomes, and a jitter of 0, unchanged.
pub fn with_jitter(next: Next, jitter: f64, draw: f64) -> Next {
    match next {
        Next::RetryIn(ms) if jitter > 0.0 => {
            let factor = 1.0 + jitter * (2.0 * draw - 1.0);
            Next::RetryIn((ms as f64 * factor).round().max(0.0) as u64)
        }
        next => next,
    }
}

/// The most a receiver's `Retry-After` may push a retry back.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A retry is never sooner than the receiver asked for with `Retry-After` (on 429 or 503),
/// up to [`MAX_RETRY_AFTER`]; a final failure stays final.
pub fn honour_retry_after(next: Next, retry_after: Option<Duration>) -> Next {
    match (next, retry_after) {
        (Next::RetryIn(ms), Some(asked)) => {
            Next::RetryIn(ms.max(asked.min(MAX_RETRY_AFTER).as_millis() as u64))
        }
        (next, _) => next,
    }
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::parse_schedule;

    fn s(text: &str) -> Vec<Duration> {
        parse_schedule(text).unwrap()
    }

    #[test]
    fn parses_the_default_ladder() {
        assert_eq!(
            s(DEFAULT_SCHEDULE),
            [60, 300, 600, 1800, 3600, 7200, 14400].map(Duration::from_secs)
        );
    }

    #[test]
    fn jitter_spreads_a_retry_within_its_fraction() {
        let cases: &[(Next, f64, f64, Next)] = &[
            // No jitter: the ladder exactly, whatever the draw.
            (Next::RetryIn(60_000), 0.0, 0.99, Next::RetryIn(60_000)),
            // The draw spans [-jitter, +jitter): 0 is the low end, 0.5 the step itself.
            (Next::RetryIn(60_000), 0.1, 0.0, Next::RetryIn(54_000)),
            (Next::RetryIn(60_000), 0.1, 0.5, Next::RetryIn(60_000)),
            (Next::RetryIn(60_000), 0.1, 0.75, Next::RetryIn(63_000)),
            (Next::RetryIn(60_000), 1.0, 0.0, Next::RetryIn(0)),
            // Only retries move.
            (Next::Succeeded, 0.5, 0.0, Next::Succeeded),
            (Next::Failed, 0.5, 0.0, Next::Failed),
        ];
        for &(next, jitter, draw, want) in cases {
            assert_eq!(
                with_jitter(next, jitter, draw),
                want,
                "{next:?} {jitter} {draw}"
            );
        }
    }

    #[test]
    fn jitter_is_a_fraction() {
        assert_eq!(parse_jitter("0"), Ok(0.0));
        assert_eq!(parse_jitter("0.1"), Ok(0.1));
        assert_eq!(parse_jitter("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "10%", "", "NaN"] {
            assert!(parse_jitter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn describes_the_next_step_in_words() {
        let cases: &[(Next, &str)] = &[
            (Next::Succeeded, "succeeded"),
            (Next::RetryIn(60_000), "retry in 1m"),
            (Next::RetryIn(90_500), "retry in 1m 30s 500ms"),
            (Next::RetryIn(0), "retry in 0s"),
            (Next::Failed, "failed, no more retries"),
        ];
        for &(next, want) in cases {
            assert_eq!(describe_next(next), want, "{next:?}");
        }
    }

    #[test]
    fn ladder_table() {
        let ladder = s(DEFAULT_SCHEDULE);
        // (automatic attempts made, manual_only) -> delay
        let cases: &[(u32, bool, Option<u64>)] = &[
            (0, false, Some(60)),
            (1, false, Some(60)),
            (2, false, Some(300)),
            (3, false, Some(600)),
            (4, false, Some(1800)),
            (5, false, Some(3600)),
            (6, false, Some(7200)),
            (7, false, Some(14400)),
            (8, false, None),
            (9, false, None),
            (1, true, None),
        ];
        for &(attempts, manual_only, want) in cases {
            assert_eq!(
                delay_after_failure(&ladder, attempts, manual_only),
                want.map(Duration::from_secs),
                "after {attempts} automatic attempts, manual_only={manual_only}"
            );
        }
        // Eight attempts in all: the first plus seven retries.
        let attempts = (1..)
            .take_while(|&n| delay_after_failure(&ladder, n, false).is_some())
            .count()
            + 1;
        assert_eq!(attempts, 8);
    }

    #[test]
    fn retry_after_table() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "past dates: now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let cases: &[(Next, Option<u64>, Next)] = &[
            (Next::RetryIn(60_000), Some(120), Next::RetryIn(120_000)),
            (Next::RetryIn(60_000), Some(5), Next::RetryIn(60_000)),
            (
                Next::RetryIn(60_000),
                Some(86_400),
                Next::RetryIn(3_600_000),
            ),
            (Next::RetryIn(60_000), None, Next::RetryIn(60_000)),
            (Next::Failed, Some(120), Next::Failed),
            (Next::Succeeded, Some(120), Next::Succeeded),
        ];
        for &(next, asked, want) in cases {
            assert_eq!(
                honour_retry_after(next, asked.map(Duration::from_secs)),
                want,
                "{next:?} {asked:?}"
            );
        }
    }

    #[test]
    fn empty_schedule_never_retries() {
        assert_eq!(delay_after_failure(&[], 1, false), None);
        assert_eq!(delay_after_failure(&[], 0, false), None);
    }
}
