//! Times in the API: RFC 3339 out; RFC 3339 or "this long ago" (`1h`) in.

use chrono::{DateTime, SecondsFormat, Utc};

/// ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// `2026-11-22T07:00:00Z`, or a duration meaning that long before `now_ms` (`90m`).
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(now_ms - ago.as_millis() as i64),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-11-22T07:00:00Z) nor a duration ago (1h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(
            parse_instant("2021-02-25T15:02:10.123Z", 0),
            Ok(1_614_265_330_123)
        );
        assert_eq!(
            parse_instant("2021-02-25T16:02:10.123+01:00", 0),
            Ok(1_614_265_330_123)
        );
        assert_eq!(parse_instant("1h", 10_000_000), Ok(10_000_000 - 3_600_000));
        assert!(parse_instant("yesterday", 0).is_err());
    }
}
