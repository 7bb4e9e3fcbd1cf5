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

/// The earliest and latest instants accepted: the years RFC 3339 can write, 0001 to 9999.
const EARLIEST_MS: i64 = -62_135_596_800_000; // 0001-01-01T00:00:00Z
const LATEST_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// `2026-11-22T07:00:00Z`, or a duration meaning that long before `now_ms` (`90m`). The
/// result lies in the years 0001 to 9999: a duration ago that reaches past year 1 (or past
/// 64 bits) is refused rather than wrapped around into some other time.
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    let ms = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.timestamp_millis()
    } else {
        match humantime::parse_duration(text) {
            Ok(ago) => i64::try_from(ago.as_millis())
                .ok()
                .and_then(|ago| now_ms.checked_sub(ago))
                .ok_or_else(|| out_of_range(text))?,
            Err(_) => {
                return Err(format!(
                    "{text:?} is neither an RFC 3339 time (2026-11-22T07:00:00Z) nor a duration ago (1h)"
                ))
            }
        }
    };
    if (EARLIEST_MS..=LATEST_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(out_of_range(text))
    }
}

fn out_of_range(text: &str) -> String {
    format!("{text:?} is out of range: a time must lie between the years 0001 and 9999")
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

    #[test]
    fn instants_out_of_range() {
        let now = 1_614_265_330_123;
        let cases: &[(&str, Option<i64>)] = &[
            ("0001-01-01T00:00:00Z", Some(EARLIEST_MS)),
            ("9999-12-31T23:59:59.999Z", Some(LATEST_MS)),
            ("0001-01-01T00:00:00+00:01", None), // year 0
            ("9999-12-31T23:59:59-00:01", None), // year 10000
            ("99999-01-01T00:00:00Z", None),
            ("1000years", Some(now - 31_557_600_000_000)),
            ("3000years", None),
            ("300000000years", None),
            ("9223372036854775807ms", None),
            ("9223372036854775808ms", None),
            ("18446744073709551615s", None),
        ];
        for (text, expected) in cases {
            match (parse_instant(text, now), expected) {
                (Ok(ms), Some(want)) => assert_eq!(ms, *want, "{text}"),
                (Err(e), None) => assert!(
                    e.contains("out of range") || e.contains("neither"),
                    "{text}: {e}"
                ),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(rfc3339(EARLIEST_MS), "0001-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(LATEST_MS), "9999-12-31T23:59:59.999Z");
    }
}
