//! Verification: [`Verifier`] checks a request's signature and signed time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::sign::{standard_key, standard_mac, toss_mac};
use crate::{header, time, Headers, Scheme, VerifyError};

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

        let expected = standard_mac(&key, &id, timestamp_text, body);
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
        let expected = toss_mac(secret, body, &time);
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

fn required<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<std::borrow::Cow<'h, str>, VerifyError> {
    headers
        .header(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}
