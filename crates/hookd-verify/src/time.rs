//! RFC 3339 timestamps, as Toss's `tosspayments-webhook-transmission-time` carries them.

/// Seconds and nanoseconds since the Unix epoch of an RFC 3339 date-time such as
/// `2026-01-01T00:00:00Z`, `2026-01-01T09:00:00.123+09:00` or `2026-01-01 00:00:00z`.
pub(crate) fn parse_rfc3339(text: &str) -> Result<(i64, u32), String> {
    let b = text.as_bytes();
    let bad = || format!("{text:?} is not an RFC 3339 date-time");
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let part = &b[range];
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
        } else {
            Err(bad())
        }
    };
    let sep = |i: usize, allowed: &[u8]| -> Result<(), String> {
        if allowed.contains(&b[i]) {
            Ok(())
        } else {
            Err(bad())
        }
    };
    let year = num(0..4)?;
    sep(4, b"-")?;
    let month = num(5..7)?;
    sep(7, b"-")?;
    let day = num(8..10)?;
    sep(10, b"Tt ")?;
    let hour = num(11..13)?;
    sep(13, b":")?;
    let minute = num(14..16)?;
    sep(16, b":")?;
    let second = num(17..19)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }

    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return Err(bad());
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_secs;
    Ok((secs, nanos))
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        let ok = [
            ("1970-01-01T00:00:00Z", (0, 0)),
            ("2021-02-25T15:02:10Z", (1_614_265_330, 0)),
            ("2021-02-25T15:02:10.123Z", (1_614_265_330, 123_000_000)),
            ("2021-02-26T00:02:10+09:00", (1_614_265_330, 0)),
            ("2021-02-25t10:02:10.5-05:00", (1_614_265_330, 500_000_000)),
            (
                "2021-02-25 15:02:10.1234567891z",
                (1_614_265_330, 123_456_789),
            ),
            ("2024-02-29T00:00:00Z", (1_709_164_800, 0)),
            ("1969-12-31T23:59:59Z", (-1, 0)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_rfc3339(text), Ok(want), "{text}");
        }
        for text in [
            "",
            "1614265330",
            "2021-02-25T15:02:10",
            "2021-02-25T15:02:10.Z",
            "2021-02-30T15:02:10Z",
            "2023-02-29T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-02-25T24:00:00Z",
            "2021-02-25T15:02:10+0900",
            "2021-02-25T15:02:10Z ",
            "2021/02/25T15:02:10Z",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text:?} accepted");
        }
    }
}
