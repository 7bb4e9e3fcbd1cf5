//! What `hookd listen` prints for each request: the readable form for people (headers that
//! matter in order, secrets masked, the JSON body pretty-printed, the verdict and the answer
//! in colour on a terminal) or one JSON line with `--json`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Local;

use super::{Record, Shared};
use crate::duration;

/// How much of a body is printed in the readable output.
const PRINT_BODY: usize = 16 * 1024;

/// Writes one request to stdout: a JSON line, or the readable form.
pub fn print(shared: &Shared, record: &Record, since_previous: Option<Duration>) {
    let text = if shared.args.json {
        let mut line = serde_json::to_string(record).expect("a record serializes");
        line.push('\n');
        line
    } else {
        readable(record, since_previous, shared.colour)
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`hookd listen | head`) must not take the receiver down.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

struct Paint(bool);

impl Paint {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
}

/// Whether a header is shown in the readable form (all are in `--json`).
fn shown(name: &str) -> bool {
    name.starts_with("webhook-")
        || name.starts_with("tosspayments-")
        || matches!(name, "content-type" | "user-agent" | "authorization")
}

pub fn readable(r: &Record, since_previous: Option<Duration>, colour: bool) -> String {
    let p = Paint(colour);
    let mut s = String::new();
    let local = chrono::DateTime::parse_from_rfc3339(&r.received_at)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|_| r.received_at.clone());
    let since = match since_previous {
        Some(d) => format!("+{} since previous", short_duration(d)),
        None => "first request".to_string(),
    };
    let target = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let _ = writeln!(
        s,
        "{} {}  {} {}  {}",
        p.dim(&format!("#{}", r.seq)),
        local,
        p.bold(&r.method),
        p.bold(&target),
        p.dim(&format!("({since})"))
    );
    // The protocol's headers in their natural order, then the rest alphabetically.
    let order = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "tosspayments-webhook-transmission-time",
        "tosspayments-webhook-signature",
    ];
    let mut names: Vec<&String> = r.headers.keys().filter(|n| shown(n)).collect();
    names.sort_by_key(|n| {
        (
            order.iter().position(|o| o == n).unwrap_or(order.len()),
            n.as_str(),
        )
    });
    for name in names {
        let value = &r.headers[name];
        let value = if name == "authorization" {
            mask(value)
        } else {
            value.clone()
        };
        let _ = writeln!(s, "  {} {}", p.cyan(&format!("{name}:")), value);
    }
    let verdict = match r.verdict.result {
        "valid" => p.green(&format!("valid ({})", r.verdict.scheme.unwrap_or_default())),
        "invalid" => p.red(&format!(
            "INVALID ({}): {}",
            r.verdict.scheme.unwrap_or_default(),
            r.verdict.reason.as_deref().unwrap_or_default()
        )),
        _ => p.yellow("not checked (no --secret)"),
    };
    let _ = writeln!(s, "  {} {verdict}", p.bold("signature:"));
    let body = match &r.json {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| r.body.clone()),
        None if r.body.is_empty() => p.dim("(empty body)"),
        None => r.body.clone(),
    };
    let body = if body.len() > PRINT_BODY {
        let mut end = PRINT_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}\n{}",
            &body[..end],
            p.dim(&format!("... ({} bytes in all)", r.body.len()))
        )
    } else {
        body
    };
    for line in body.lines() {
        let _ = writeln!(s, "  {line}");
    }
    let status = status_text(r.answer.status);
    let status = match r.answer.status {
        200..=299 => p.green(&status),
        300..=499 => p.yellow(&status),
        _ => p.red(&status),
    };
    let delay = if r.answer.delay_ms > 0 {
        format!(" after {}ms", r.answer.delay_ms)
    } else {
        String::new()
    };
    let how = match (&r.answer.forward, r.answer.because) {
        (Some(f), _) => match (&f.status, &f.error) {
            (Some(_), _) => format!(" from {} in {}ms", f.url, f.duration_ms),
            (None, Some(e)) => format!(": forwarding to {} failed: {e}", f.url),
            _ => String::new(),
        },
        (None, "fail_rate") => " (--fail-rate)".to_string(),
        _ => String::new(),
    };
    let _ = writeln!(s, "  {} {status}{how}{delay}", p.bold("answer:"));
    if let Some(body) = r.answer.forward.as_ref().and_then(|f| f.body.as_ref()) {
        let excerpt: String = body.chars().take(500).collect();
        for line in excerpt.lines() {
            let _ = writeln!(s, "    {}", p.dim(line));
        }
    }
    s.push('\n');
    s
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|c| c.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// `Bearer abcd...` with the rest hidden.
fn mask(value: &str) -> String {
    let (scheme, token) = value.split_once(' ').unwrap_or(("", value));
    let shown: String = token.chars().take(4).collect();
    let hidden = if token.chars().count() > 4 { "…" } else { "" };
    if scheme.is_empty() {
        format!("{shown}{hidden}")
    } else {
        format!("{scheme} {shown}{hidden}")
    }
}

pub fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        duration::format_duration(Duration::from_secs(d.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{Answer, Verdict};

    fn record() -> Record {
        Record {
            seq: 2,
            received_at: "2026-01-01T00:00:00.000Z".into(),
            method: "POST".into(),
            path: "/hook".into(),
            query: None,
            headers: [
                ("webhook-id", "evt_1"),
                ("webhook-signature", "v1,abc"),
                ("webhook-timestamp", "1767225600"),
                ("authorization", "Bearer sekret-token"),
                ("accept", "*/*"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            body: r#"{"a":1}"#.into(),
            json: Some(serde_json::json!({"a": 1})),
            verdict: Verdict {
                result: "invalid",
                scheme: Some("standard"),
                reason: Some("no matching signature".into()),
            },
            since_previous_ms: Some(1500),
            answer: Answer {
                status: 500,
                because: "fail_rate",
                delay_ms: 0,
                forward: None,
            },
        }
    }

    #[test]
    fn readable_output_without_colour() {
        let text = readable(&record(), Some(Duration::from_millis(1500)), false);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("POST /hook"), "{text}");
        assert!(text.contains("(+1.500s since previous)"), "{text}");
        let id = text.find("webhook-id:").unwrap();
        let ts = text.find("webhook-timestamp:").unwrap();
        let sig = text.find("webhook-signature:").unwrap();
        assert!(id < ts && ts < sig, "{text}");
        assert!(text.contains("authorization: Bearer sekr…"), "{text}");
        assert!(!text.contains("sekret-token"), "{text}");
        assert!(!text.contains("accept:"), "{text}");
        assert!(
            text.contains("signature: INVALID (standard): no matching signature"),
            "{text}"
        );
        assert!(text.contains("  {\n    \"a\": 1\n  }\n"), "{text}");
        assert!(
            text.contains("answer: 500 Internal Server Error (--fail-rate)"),
            "{text}"
        );
        let coloured = readable(&record(), None, true);
        assert!(coloured.contains("\x1b[31m"), "{coloured}");
        assert!(coloured.contains("first request"), "{coloured}");
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(short_duration(Duration::from_secs(90)), "1m 30s");
    }
}
