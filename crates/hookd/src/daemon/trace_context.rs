//! W3C trace context (`traceparent`), read from what a producer gave and written on every
//! attempt. Pure: the ids come in as arguments.
//!
//! A `traceparent` is `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`, lower
//! case, neither id all zeros. An attempt of an event whose producer gave one continues that
//! trace: same trace id and flags, the attempt's own span id. A missing or malformed one (W3C
//! says to ignore it rather than fail) starts a new trace at the attempt.

use std::fmt;

/// The part of a `traceparent` an attempt continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value: version `00` exactly, or a later version's first
    /// four fields (W3C: a newer version may append fields after a `-`).
    pub fn parse(text: &str) -> Option<TraceParent> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let extra = parts.next();
        let version = hex_bytes::<1>(version)?[0];
        if version == 0xff || (version == 0 && extra.is_some()) {
            return None;
        }
        let trace_id = hex_bytes::<16>(trace)?;
        let span_id = hex_bytes::<8>(span)?;
        let flags = hex_bytes::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The context of an attempt whose span is `span_id`: the producer's trace when it gave
    /// a valid one, else a new trace `new_trace_id`, sampled.
    pub fn for_attempt(
        producer: Option<&str>,
        new_trace_id: [u8; 16],
        span_id: [u8; 8],
    ) -> TraceParent {
        match producer.and_then(TraceParent::parse) {
            Some(parent) => TraceParent { span_id, ..parent },
            None => TraceParent {
                trace_id: new_trace_id,
                span_id,
                flags: 1,
            },
        }
    }
}

/// The header value, version `00`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("the W3C example", GIVEN, true),
            (
                "padded",
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                true,
            ),
            (
                "not sampled",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            (
                "a later version with more fields",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
                true,
            ),
            (
                "version 00 with more fields",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                false,
            ),
            (
                "version ff",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "upper case",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                false,
            ),
            (
                "zero trace id",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "zero span id",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            (
                "short trace id",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                false,
            ),
            (
                "not hex",
                "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
                false,
            ),
            (
                "missing flags",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                false,
            ),
            ("empty", "", false),
            (
                "a multi-byte character",
                "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
                false,
            ),
        ];
        for (name, text, valid) in cases {
            assert_eq!(TraceParent::parse(text).is_some(), *valid, "{name}");
        }
    }

    #[test]
    fn round_trip() {
        let parsed = TraceParent::parse(GIVEN).expect("valid");
        assert_eq!(parsed.to_string(), GIVEN);
        assert_eq!(parsed.flags, 1);
    }

    #[test]
    fn attempts_continue_the_producers_trace_or_start_one() {
        let new_trace = [7u8; 16];
        let span = [9u8; 8];
        let given = TraceParent::parse(GIVEN).expect("valid");
        let cases: &[(&str, Option<&str>, [u8; 16], u8)] = &[
            ("the producer's trace", Some(GIVEN), given.trace_id, 1),
            (
                "not sampled stays not sampled",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
                given.trace_id,
                0,
            ),
            ("malformed: a new trace", Some("garbage"), new_trace, 1),
            ("none: a new trace", None, new_trace, 1),
        ];
        for (name, producer, trace_id, flags) in cases {
            let attempt = TraceParent::for_attempt(*producer, new_trace, span);
            assert_eq!(attempt.trace_id, *trace_id, "{name}");
            assert_eq!(attempt.span_id, span, "{name}: the attempt's own span");
            assert_eq!(attempt.flags, *flags, "{name}");
        }
    }
}
