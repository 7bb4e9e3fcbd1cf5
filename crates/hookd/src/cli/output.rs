//! Tables and formatting for people: aligned columns without borders (easy to `grep` and
//! `awk`), colour only when stdout is a terminal and `NO_COLOR` is not set.

use chrono::{DateTime, Utc};
use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

/// A table with these column headers.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    // Ids stay whole on one line, to copy them; long free text is cut by the callers.
    t.set_content_arrangement(ContentArrangement::Disabled);
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        t.force_no_tty(); // comfy-table styles only when it thinks stdout is a terminal
    }
    t.set_header(
        headers
            .iter()
            .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
    );
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t
}

/// The table as text, without trailing spaces.
pub fn render(t: &Table) -> String {
    t.trim_fmt()
}

/// `key: value` lines with the values aligned; a multi-line value is indented to match.
pub fn details(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in rows {
        let label = format!("{key}:");
        let mut lines = value.lines();
        out.push_str(&format!(
            "{label:<width$}  {}\n",
            lines.next().unwrap_or("")
        ));
        for line in lines {
            out.push_str(&format!("{:<width$}  {line}\n", ""));
        }
    }
    out
}

/// A delivery's state, coloured on a terminal.
pub fn state_cell(state: &str) -> Cell {
    let colour = match state {
        "succeeded" => Some(Color::Green),
        "failed" => Some(Color::Red),
        "pending" => Some(Color::Yellow),
        "in_flight" => Some(Color::Cyan),
        _ => None,
    };
    let cell = Cell::new(state);
    match colour {
        Some(c) => cell.fg(c),
        None => cell,
    }
}

/// A string as is, `null` as `-`, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first non-empty line of `s`, cut to `max` characters with `…`.
pub fn first_line(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    cut(line, max)
}

/// `s` cut to `max` characters with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// An RFC 3339 time relative to now: `in 4m 59s`, `2h 5m ago`, `now`; `-` for `null`.
pub fn relative(v: &Value) -> String {
    let Some(text) = v.as_str() else {
        return "-".to_string();
    };
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => relative_to(t.with_timezone(&Utc), Utc::now()),
        Err(_) => text.to_string(),
    }
}

fn relative_to(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (t - now).num_milliseconds() as f64 / 1000.0;
    let whole = seconds.abs().round() as u64;
    if whole == 0 {
        "now".to_string()
    } else if seconds > 0.0 {
        format!("in {}", short_duration(whole))
    } else {
        format!("{} ago", short_duration(whole))
    }
}

/// The two largest units of a number of seconds: `4m 59s`, `2h 5m`, `3d 1h`.
pub fn short_duration(seconds: u64) -> String {
    let units = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3600, "h"),
        (seconds % 3600 / 60, "m"),
        (seconds % 60, "s"),
    ];
    let parts: Vec<String> = units
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

/// Milliseconds the way people read them: `6ms`, `1.25s`, `2m 3s`.
pub fn millis(v: &Value) -> String {
    match v.as_i64() {
        None => "-".to_string(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        Some(ms) => short_duration((ms / 1000) as u64),
    }
}

/// A time and how long ago (or until) it is: `2026-11-22T07:31:13.035Z (4m ago)`.
pub fn time_and_relative(v: &Value) -> String {
    match v.as_str() {
        Some(t) => format!("{t} ({})", relative(v)),
        None => "-".to_string(),
    }
}

/// `HTTP 200`, `HTTP 500 Internal Server Error`, or the error alone.
pub fn describe(delivery: &Value) -> String {
    let status = delivery["last_status_code"].as_i64();
    let error = delivery["last_error"].as_str();
    match (status, error) {
        (Some(s), None) => format!("HTTP {s}"),
        (Some(_), Some(e)) if e.starts_with("HTTP ") => e.to_string(),
        (Some(s), Some(e)) => format!("HTTP {s}: {e}"),
        (None, Some(e)) => e.to_string(),
        (None, None) => "no answer recorded".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(299), "4m 59s");
        assert_eq!(short_duration(3600), "1h");
        assert_eq!(short_duration(7500), "2h 5m");
        assert_eq!(short_duration(90_061), "1d 1h");
        assert_eq!(millis(&json!(6)), "6ms");
        assert_eq!(millis(&json!(1250)), "1.25s");
        assert_eq!(millis(&Value::Null), "-");
    }

    #[test]
    fn times_are_relative() {
        let now = Utc::now();
        assert_eq!(relative_to(now, now), "now");
        assert_eq!(
            relative_to(now + chrono::Duration::seconds(299), now),
            "in 4m 59s"
        );
        assert_eq!(
            relative_to(now - chrono::Duration::seconds(7200), now),
            "2h ago"
        );
        assert_eq!(relative(&Value::Null), "-");
    }

    #[test]
    fn lines_are_cut() {
        assert_eq!(
            first_line("\n  upstream exploded\nmore", 60),
            "upstream exploded"
        );
        assert_eq!(first_line("abcdef", 4), "abc…");
        assert_eq!(first_line("", 4), "");
    }

    #[test]
    fn details_align() {
        let text = details(&[("id", "1".into()), ("headers", "A: 1\nB: 2".into())]);
        assert_eq!(text, "id:       1\nheaders:  A: 1\n          B: 2\n");
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            describe(&json!({"last_status_code": 200, "last_error": null})),
            "HTTP 200"
        );
        assert_eq!(
            describe(&json!({"last_status_code": null, "last_error": "connection failed"})),
            "connection failed"
        );
    }
}
