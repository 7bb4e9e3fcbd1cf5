//! Durations as people write them in flags and configuration (`250ms`, `10s`, `1m`, `2h`)
//! and as hookd prints them back. Shared by every program: the daemon, the CLI, `listen`.

use std::time::Duration;

/// Parses `"1m,5m,10m"` (an empty or blank string is an empty schedule: no retry).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(parse_duration).collect()
}

/// Parses one duration such as `10s`, `1m`, `2h`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (write it like 250ms, 10s, 1m, 2h)"))
}

/// Formats a duration the way it is written in configuration: `1m`, `1s 500ms`. Whole
/// milliseconds: nothing finer is ever configured, and a jittered backoff's nanoseconds
/// would only be noise.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Vec<Duration> {
        parse_schedule(text).unwrap()
    }

    #[test]
    fn parses_schedules() {
        assert_eq!(s(""), Vec::<Duration>::new());
        assert_eq!(s("  "), Vec::<Duration>::new());
        assert_eq!(
            s("250ms, 1s"),
            [Duration::from_millis(250), Duration::from_secs(1)]
        );
        assert!(parse_schedule("1m,,5m").is_err());
        assert!(parse_schedule("soon")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(parse_schedule("5").is_err(), "a unit is required");
    }

    #[test]
    fn formats_as_written() {
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(
            parse_duration(&format_duration(Duration::from_millis(1500)))
                .unwrap()
                .as_millis(),
            1500
        );
        assert_eq!(
            format_duration(Duration::from_nanos(1_234_567_891)),
            "1s 234ms"
        );
    }
}
