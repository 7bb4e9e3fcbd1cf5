//! Verify the webhooks hookd sends, in a Rust receiver.
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
mod time;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use headers::{header_fn, HeaderFn, Headers};

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

type HmacSha256 = Hmac<Sha256>;

const WHSEC: &str = "whsec_";

/// Why a request was refused.
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
    /// The secret given to the verifier is not usable.
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

/// Verification settings: the timestamp tolerance and, for tests, a fixed "now".
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let verifier = hookd_verify::Verifier::new()
///     .tolerance(Duration::from_secs(60))
///     .now(UNIX_EPOCH + Duration::from_secs(1_614_265_330));
/// let headers = [
///     ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
///     ("webhook-timestamp", "1614265330"),
///     ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
/// ];
/// verifier
///     .verify_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &headers, br#"{"test": 2432232314}"#)
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    tolerance: Duration,
    now: Option<SystemTime>,
    check_toss_time: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            tolerance: Verifier::DEFAULT_TOLERANCE,
            now: None,
            check_toss_time: true,
        }
    }
}

impl Verifier {
    /// How far a signed time may be from now, either way, unless told otherwise.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

    /// Tolerance 5 minutes, the system clock, Toss transmission times checked.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// How far a signed time may be from now, in the past or in the future.
    pub fn tolerance(mut self, tolerance: Duration) -> Verifier {
        self.tolerance = tolerance;
        self
    }

    /// Uses `now` instead of the system clock (for tests and for replaying captured requests).
    pub fn now(mut self, now: SystemTime) -> Verifier {
        self.now = Some(now);
        self
    }

    /// Whether `verify_toss` checks the transmission time against the tolerance (default
    /// yes). Toss's own receivers only check the signature.
    pub fn check_toss_time(mut self, check: bool) -> Verifier {
        self.check_toss_time = check;
        self
    }

    /// Verifies a request signed with `scheme`.
    pub fn verify<H: Headers + ?Sized>(
        &self,
        scheme: Scheme,
        secret: &str,
        headers: &H,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        match scheme {
            Scheme::Standard => self.verify_standard(secret, headers, body),
            Scheme::Toss => self.verify_toss(secret, headers, body),
        }
    }

    /// Verifies a Standard Webhooks request: `secret` is `whsec_<base64 key>` (the prefix
    /// is optional), `body` the raw bytes received.
    pub fn verify_standard<H: Headers + ?Sized>(
        &self,
        secret: &str,
        headers: &H,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        let key = standard_key(secret)?;
        let id = required(headers, header::WEBHOOK_ID)?;
        let timestamp_text = required(headers, header::WEBHOOK_TIMESTAMP)?;
        let signatures = required(headers, header::WEBHOOK_SIGNATURE)?;

        let timestamp_text = timestamp_text.trim();
        let timestamp: i64 = timestamp_text
            .parse()
            .ok()
            .filter(|_| timestamp_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| VerifyError::MalformedHeader {
                header: header::WEBHOOK_TIMESTAMP,
                reason: format!("{timestamp_text:?} is not unix seconds"),
            })?;
        self.check_time(i128::from(timestamp) * 1_000_000_000)?;

        let expected = hmac(
            &key,
            &[id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body],
        );
        let mut entries = 0;
        let mut matched = false;
        for entry in signatures.split_whitespace() {
            let Some((version, signature)) = entry.split_once(',') else {
                continue;
            };
            entries += 1;
            if version != "v1" {
                continue;
            }
            if let Ok(given) = BASE64.decode(signature) {
                // Check every entry, so the time taken does not tell which one matched.
                matched |= bool::from(given.ct_eq(&expected));
            }
        }
        if entries == 0 {
            return Err(VerifyError::MalformedHeader {
                header: header::WEBHOOK_SIGNATURE,
                reason: "no <version>,<signature> entry".into(),
            });
        }
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }

    /// Verifies a Toss-style request: `secret` is used as is (its UTF-8 bytes are the key),
    /// `body` the raw bytes received.
    pub fn verify_toss<H: Headers + ?Sized>(
        &self,
        secret: &str,
        headers: &H,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        if secret.is_empty() {
            return Err(VerifyError::InvalidSecret("the secret is empty".into()));
        }
        let time = required(headers, header::TOSS_TRANSMISSION_TIME)?;
        let signature = required(headers, header::TOSS_SIGNATURE)?;
        if self.check_toss_time {
            let (secs, nanos) =
                time::parse_rfc3339(&time).map_err(|reason| VerifyError::MalformedHeader {
                    header: header::TOSS_TRANSMISSION_TIME,
                    reason,
                })?;
            self.check_time(i128::from(secs) * 1_000_000_000 + i128::from(nanos))?;
        }
        let given = hex::decode(signature.trim())
            .ok()
            .filter(|g| g.len() == 32)
            .ok_or_else(|| VerifyError::MalformedHeader {
                header: header::TOSS_SIGNATURE,
                reason: "not a hex HMAC-SHA256 (64 hex digits)".into(),
            })?;
        let expected = hmac(secret.as_bytes(), &[body, b":", time.as_bytes()]);
        if bool::from(given.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }

    /// Checks a signed instant (ns since the epoch) against now and the tolerance.
    fn check_time(&self, signed_ns: i128) -> Result<(), VerifyError> {
        let now = self.now.unwrap_or_else(SystemTime::now);
        let now_ns = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let tolerance = self.tolerance;
        let diff = now_ns - signed_ns;
        let limit = tolerance.as_nanos() as i128;
        let as_duration = |ns: i128| Duration::from_nanos(ns.min(u64::MAX as i128) as u64);
        if diff > limit {
            Err(VerifyError::TimestampTooOld {
                age: as_duration(diff),
                tolerance,
            })
        } else if -diff > limit {
            Err(VerifyError::TimestampInFuture {
                ahead: as_duration(-diff),
                tolerance,
            })
        } else {
            Ok(())
        }
    }
}

/// Verifies a Standard Webhooks request with the default [`Verifier`] (5 minutes'
/// tolerance, the system clock).
pub fn verify_standard<H: Headers + ?Sized>(
    secret: &str,
    headers: &H,
    body: &[u8],
) -> Result<(), VerifyError> {
    Verifier::default().verify_standard(secret, headers, body)
}

/// Verifies a Toss-style request with the default [`Verifier`] (transmission time checked
/// with 5 minutes' tolerance, the system clock).
pub fn verify_toss<H: Headers + ?Sized>(
    secret: &str,
    headers: &H,
    body: &[u8],
) -> Result<(), VerifyError> {
    Verifier::default().verify_toss(secret, headers, body)
}

/// The key bytes of a Standard Webhooks secret, `whsec_<base64>` (the prefix is optional).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix(WHSEC).unwrap_or(encoded);
    let key = BASE64.decode(encoded).map_err(|_| {
        VerifyError::InvalidSecret("a standard secret is whsec_ followed by base64".into())
    })?;
    if key.is_empty() {
        return Err(VerifyError::InvalidSecret("the key is empty".into()));
    }
    Ok(key)
}

/// The `webhook-signature` value (`v1,<base64>`) for a Standard Webhooks request: for
/// tests of a receiver.
pub fn sign_standard(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let key = standard_key(secret)?;
    let ts = timestamp.to_string();
    let mac = hmac(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    Ok(format!("v1,{}", BASE64.encode(mac)))
}

/// The `tosspayments-webhook-signature` value (hex) for a Toss-style request: for tests of
/// a receiver.
pub fn sign_toss(secret: &str, body: &[u8], transmission_time: &str) -> String {
    hex::encode(hmac(
        secret.as_bytes(),
        &[body, b":", transmission_time.as_bytes()],
    ))
}

fn required<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<std::borrow::Cow<'h, str>, VerifyError> {
    headers
        .header(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}
