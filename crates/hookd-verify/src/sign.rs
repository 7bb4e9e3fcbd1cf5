//! Signing: the one implementation of both schemes' signatures. hookd signs every delivery
//! with [`signature_headers`]; [`crate::Verifier`] checks a request with the same MACs.
//!
//! - `standard`: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the key being
//!   the base64 part of a `whsec_<base64>` secret.
//! - `toss`: `<hex HMAC-SHA256(secret, "<body>:<transmission time>")>`, the secret's UTF-8
//!   bytes as the key.
//!
//! Pure: the caller supplies the time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{header, Scheme, VerifyError};

const WHSEC: &str = "whsec_";

/// The shortest `standard` key (decoded bytes) and `toss` secret (characters) hookd signs
/// with. Standard Webhooks keys are 24 to 64 bytes; shorter ones are too weak to accept.
pub const MIN_SECRET_BYTES: usize = 16;
/// The longest `standard` key hookd signs with, in decoded bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// The longest `toss` secret hookd signs with, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;

/// The key bytes of a Standard Webhooks secret, `whsec_<base64>` (the prefix is optional,
/// surrounding white space ignored).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix(WHSEC).unwrap_or(encoded);
    let key = BASE64.decode(encoded).map_err(|_| {
        VerifyError::InvalidSecret("a standard secret must be whsec_ followed by base64".into())
    })?;
    if key.is_empty() {
        return Err(VerifyError::InvalidSecret("the key is empty".into()));
    }
    Ok(key)
}

/// Whether hookd accepts `secret` to sign with `scheme`: stricter than what a receiver
/// can verify with, so that every secret hookd holds is a strong one.
///
/// - `standard`: `whsec_<base64>` (nothing around it), a key of [`MIN_SECRET_BYTES`] to
///   [`MAX_KEY_BYTES`] bytes;
/// - `toss`: [`MIN_SECRET_BYTES`] to [`MAX_SECRET_BYTES`] bytes, no control characters.
pub fn validate_secret(scheme: Scheme, secret: &str) -> Result<(), VerifyError> {
    let invalid = |reason: String| Err(VerifyError::InvalidSecret(reason));
    match scheme {
        Scheme::Standard => {
            if secret.trim() != secret {
                return invalid("a standard secret must be whsec_ followed by base64".into());
            }
            let key = standard_key(secret)?;
            if !(MIN_SECRET_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
                return invalid(format!(
                    "a standard secret's key must be {MIN_SECRET_BYTES} to {MAX_KEY_BYTES} bytes, not {}",
                    key.len()
                ));
            }
            Ok(())
        }
        Scheme::Toss => {
            if secret.len() < MIN_SECRET_BYTES {
                invalid(format!(
                    "a secret must be at least {MIN_SECRET_BYTES} characters"
                ))
            } else if secret.len() > MAX_SECRET_BYTES || secret.chars().any(char::is_control) {
                invalid(format!(
                    "a secret must be printable and at most {MAX_SECRET_BYTES} characters"
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// The `webhook-signature` value (`v1,<base64>`) of a Standard Webhooks request.
pub fn sign_standard(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let key = standard_key(secret)?;
    let mac = standard_mac(&key, msg_id, &timestamp.to_string(), body);
    Ok(format!("v1,{}", BASE64.encode(mac)))
}

/// The `tosspayments-webhook-signature` value (hex) of a Toss-style request.
pub fn sign_toss(secret: &str, body: &[u8], transmission_time: &str) -> String {
    hex::encode(toss_mac(secret, body, transmission_time))
}

/// The signature headers of one request, as hookd sends them.
///
/// `secrets` is the current secret, then any still in a rotation's grace period. Standard
/// Webhooks carries one signature per secret, space-separated, so a receiver holding
/// either key verifies; Toss has room for one, so only the current secret signs.
/// `unix_seconds` and `rfc3339` are the same instant: the time of sending. `webhook-id` is
/// not among them: hookd sends it with every request, signed or not.
pub fn signature_headers(
    scheme: Scheme,
    secrets: &[&str],
    msg_id: &str,
    body: &[u8],
    unix_seconds: i64,
    rfc3339: &str,
) -> Result<Vec<(&'static str, String)>, VerifyError> {
    let current = secrets
        .first()
        .ok_or_else(|| VerifyError::InvalidSecret("no secret to sign with".into()))?;
    Ok(match scheme {
        Scheme::Standard => {
            let signatures = secrets
                .iter()
                .map(|s| sign_standard(s, msg_id, unix_seconds, body))
                .collect::<Result<Vec<_>, _>>()?;
            vec![
                (header::WEBHOOK_TIMESTAMP, unix_seconds.to_string()),
                (header::WEBHOOK_SIGNATURE, signatures.join(" ")),
            ]
        }
        Scheme::Toss => vec![
            (header::TOSS_TRANSMISSION_TIME, rfc3339.to_string()),
            (header::TOSS_SIGNATURE, sign_toss(current, body, rfc3339)),
        ],
    })
}

/// HMAC-SHA256 of `"<id>.<timestamp>.<body>"`; `timestamp` as the header carries it.
pub(crate) fn standard_mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    hmac(
        key,
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// HMAC-SHA256 of `"<body>:<transmission time>"` keyed with the secret's bytes.
pub(crate) fn toss_mac(secret: &str, body: &[u8], transmission_time: &str) -> Vec<u8> {
    hmac(
        secret.as_bytes(),
        &[body, b":", transmission_time.as_bytes()],
    )
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}
