//! Sign and verify the webhooks hookd sends. hookd signs with this crate, so a Rust
//! receiver that verifies with it checks exactly what was signed.
//!
//! hookd signs each delivery with one of two schemes, chosen per endpoint:
//!
//! - `standard`, [Standard Webhooks](https://www.standardwebhooks.com/): headers
//!   `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64>`
//!   (possibly several space-separated entries), the HMAC-SHA256 of
//!   `"<webhook-id>.<webhook-timestamp>.<body>"` keyed with the base64 part of the
//!   `whsec_...` secret.
//! - `toss`, Toss Payments style: headers `tosspayments-webhook-transmission-time` (RFC 3339)
//!   and `tosspayments-webhook-signature: <hex>`, the HMAC-SHA256 of
//!   `"<body>:<transmission time>"` keyed with the secret's UTF-8 bytes.
//!
//! The parts:
//!
//! - `sign`: the signatures ([`sign_standard`], [`sign_toss`]), the headers hookd sends
//!   ([`signature_headers`]), the secrets it accepts ([`validate_secret`]).
//! - `verify`: [`Verifier`], and [`verify_standard`] / [`verify_toss`] with its defaults.
//! - `headers`: [`Headers`], reading request headers from whatever holds them.
//! - `time`: RFC 3339 parsing for Toss's transmission time.
//!
//! Verify against the raw body bytes exactly as received, before parsing the JSON:
//!
//! ```
//! use hookd_verify::{verify_standard, VerifyError};
//!
//! # let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
//! # let body = br#"{"test": 2432232314}"#;
//! # let now = std::time::SystemTime::now()
//! #     .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
//! # let timestamp = now.to_string();
//! # let signature = hookd_verify::sign_standard(secret, "msg_1", now, body).unwrap();
//! let headers = [
//!     ("webhook-id", "msg_1"),
//!     ("webhook-timestamp", timestamp.as_str()),
//!     ("webhook-signature", signature.as_str()),
//! ];
//! match verify_standard(secret, &headers, body) {
//!     Ok(()) => { /* answer 2xx now, do the work later; dedupe on webhook-id */ }
//!     Err(VerifyError::NoMatchingSignature) => { /* answer 401 */ }
//!     Err(e) => panic!("{e}"),
//! }
//! ```
//!
//! Timestamps are checked against a tolerance (5 minutes by default, in both directions)
//! to refuse replays; [`Verifier`] changes it, and fixes "now" for tests. Signatures are
//! compared in constant time. Headers come from anything that implements [`Headers`]:
//! lists of pairs, maps, a closure ([`header_fn`]), or `http::HeaderMap` with the `http`
//! feature.

mod headers;
mod sign;
mod time;
mod verify;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use headers::{header_fn, HeaderFn, Headers};
pub use sign::{
    sign_standard, sign_toss, signature_headers, standard_key, validate_secret, MAX_KEY_BYTES,
    MAX_SECRET_BYTES, MIN_SECRET_BYTES,
};
pub use verify::{verify_standard, verify_toss, Verifier};

/// The header names hookd uses, in lower case.
pub mod header {
    /// The event id: the same on every retry; dedupe on it.
    pub const WEBHOOK_ID: &str = "webhook-id";
    /// `standard`: unix seconds at send time.
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    /// `standard`: `v1,<base64>` entries separated by spaces.
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
    /// `toss`: RFC 3339 time of sending.
    pub const TOSS_TRANSMISSION_TIME: &str = "tosspayments-webhook-transmission-time";
    /// `toss`: hex HMAC-SHA256.
    pub const TOSS_SIGNATURE: &str = "tosspayments-webhook-signature";
}

/// Why a request was refused, or a secret cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but cannot be read (not a number, not a date, no `v1,` entry...).
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: String,
    },
    /// The signed time is further in the past than the tolerance: a replay, or a very late
    /// delivery.
    #[error("timestamp too old: sent {}s ago, tolerance is {}s", age.as_secs(), tolerance.as_secs())]
    TimestampTooOld { age: Duration, tolerance: Duration },
    /// The signed time is further in the future than the tolerance (a clock is wrong).
    #[error("timestamp too far in the future: {}s ahead, tolerance is {}s", ahead.as_secs(), tolerance.as_secs())]
    TimestampInFuture {
        ahead: Duration,
        tolerance: Duration,
    },
    /// No signature matches the body and the key: tampered, or signed with another secret.
    #[error("no matching signature")]
    NoMatchingSignature,
    /// The secret given is not usable.
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
}

/// A signature scheme, as named in an endpoint's `signature_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Standard Webhooks.
    Standard,
    /// Toss Payments style.
    Toss,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Toss => "toss",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Scheme, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(Scheme::Standard),
            "toss" => Ok(Scheme::Toss),
            other => Err(format!(
                "unknown signature scheme {other:?} (expected standard or toss)"
            )),
        }
    }
}
