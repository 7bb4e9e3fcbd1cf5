//! Request signatures. Pure: the caller supplies the time.
//!
//! - `standard`: [Standard Webhooks](https://www.standardwebhooks.com/):
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the
//!   secret is `whsec_<base64 key>`.
//! - `toss`: Toss Payments: `tosspayments-webhook-signature: <hex HMAC-SHA256(secret,
//!   "<body>:<transmission time>")>`, the secret's UTF-8 bytes as the key.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use hookd_store::SignatureScheme;

type HmacSha256 = Hmac<Sha256>;

const WHSEC: &str = "whsec_";
/// Standard Webhooks keys are 24 to 64 bytes; shorter keys are too weak to accept.
const MIN_KEY_BYTES: usize = 16;
const MAX_KEY_BYTES: usize = 128;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The key bytes of a `whsec_<base64>` secret (the prefix is optional).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(WHSEC).unwrap_or(secret);
    let key = BASE64
        .decode(encoded)
        .map_err(|_| "a standard secret must be whsec_ followed by base64".to_string())?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        return Err(format!(
            "a standard secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {}",
            key.len()
        ));
    }
    Ok(key)
}

/// `v1,<base64 signature>` for Standard Webhooks.
pub fn sign_standard(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = hmac(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", BASE64.encode(sig))
}

/// Hex signature for the Toss scheme.
pub fn sign_toss(secret: &str, body: &[u8], transmission_time: &str) -> String {
    hex::encode(hmac(
        secret.as_bytes(),
        &[body, b":", transmission_time.as_bytes()],
    ))
}

/// Checks a secret given for a scheme.
pub fn validate_secret(scheme: SignatureScheme, secret: &str) -> Result<(), String> {
    match scheme {
        SignatureScheme::Standard => standard_key(secret).map(|_| ()),
        SignatureScheme::Toss | SignatureScheme::None => {
            if secret.len() < MIN_KEY_BYTES {
                Err(format!(
                    "a secret must be at least {MIN_KEY_BYTES} characters"
                ))
            } else if secret.len() > 1024 || secret.chars().any(char::is_control) {
                Err("a secret must be printable and at most 1024 characters".into())
            } else {
                Ok(())
            }
        }
    }
}

/// A new random secret: `whsec_` + 32 random bytes in base64 (usable by every scheme).
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{WHSEC}{}", BASE64.encode(key))
}

/// The signature headers for one attempt.
///
/// `secrets` is the current secret, then any still in a rotation's grace period. Standard
/// Webhooks carries one signature per secret, space-separated, so a receiver holding
/// either key verifies; Toss has room for one, so only the current secret signs.
/// `unix_seconds` and `rfc3339` are the same instant: the time of sending.
pub fn headers(
    scheme: SignatureScheme,
    secrets: &[&str],
    msg_id: &str,
    body: &[u8],
    unix_seconds: i64,
    rfc3339: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    let current = secrets.first().ok_or("no secret to sign with")?;
    Ok(match scheme {
        SignatureScheme::Standard => {
            let signatures = secrets
                .iter()
                .map(|s| Ok(sign_standard(&standard_key(s)?, msg_id, unix_seconds, body)))
                .collect::<Result<Vec<_>, String>>()?;
            vec![
                ("webhook-timestamp", unix_seconds.to_string()),
                ("webhook-signature", signatures.join(" ")),
            ]
        }
        SignatureScheme::Toss => vec![
            (
                "tosspayments-webhook-transmission-time",
                rfc3339.to_string(),
            ),
            (
                "tosspayments-webhook-signature",
                sign_toss(current, body, rfc3339),
            ),
        ],
        SignatureScheme::None => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's test vectors.
    #[test]
    fn standard_webhooks_vectors() {
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let cases = [(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )];
        for (id, ts, body, want) in cases {
            assert_eq!(sign_standard(&key, id, ts, body.as_bytes()), want);
        }
        // The prefix is optional; the key is the same.
        assert_eq!(
            standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            key
        );
    }

    #[test]
    fn standard_headers_use_the_timestamp_given() {
        let h = headers(
            SignatureScheme::Standard,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            br#"{"test": 2432232314}"#,
            1614265330,
            "2021-02-25T15:02:10Z",
        )
        .unwrap();
        assert_eq!(
            h,
            vec![
                ("webhook-timestamp", "1614265330".to_string()),
                (
                    "webhook-signature",
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string()
                ),
            ]
        );
    }

    #[test]
    fn rotation_signs_with_both_secrets() {
        let (new, old) = (generate_secret(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let h = headers(
            SignatureScheme::Standard,
            &[&new, old],
            "msg_1",
            b"{}",
            1614265330,
            "",
        )
        .unwrap();
        let sigs: Vec<&str> = h[1].1.split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert_eq!(
            sigs[0],
            sign_standard(&standard_key(&new).unwrap(), "msg_1", 1614265330, b"{}")
        );
        assert_eq!(
            sigs[1],
            sign_standard(&standard_key(old).unwrap(), "msg_1", 1614265330, b"{}")
        );
        let toss = headers(
            SignatureScheme::Toss,
            &["new-toss-secret-123", "old-toss-secret-456"],
            "m",
            b"{}",
            0,
            "t",
        )
        .unwrap();
        assert_eq!(toss[1].1, sign_toss("new-toss-secret-123", b"{}", "t"));
        assert!(headers(SignatureScheme::Standard, &[], "m", b"{}", 0, "").is_err());
    }

    /// As seed 003's receiver computes it: createHmac('sha256', secret).update(`${body}:${time}`).digest('hex').
    #[test]
    fn toss_signature() {
        let cases = [
            (
                "test_sk_secret_key_0001",
                r#"{"eventType":"PAYMENT_STATUS_CHANGED"}"#,
                "2026-01-01T00:00:00Z",
            ),
            ("another-secret-value", "{}", "2026-11-22T07:00:00.123Z"),
        ];
        for (secret, body, time) in cases {
            let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{body}:{time}").as_bytes());
            let want = hex::encode(mac.finalize().into_bytes());
            assert_eq!(sign_toss(secret, body.as_bytes(), time), want);
            assert_eq!(want.len(), 64);
        }
        // A fixed vector, computed independently with Python's hmac module.
        assert_eq!(
            sign_toss("secret", b"{}", "2026-01-01T00:00:00Z"),
            "ec0add713df7365e6af2ff4e6b3a2e3ee721861f3409869042e5a84d9eade89c"
        );
    }

    #[test]
    fn secrets() {
        let generated = generate_secret();
        assert!(generated.starts_with("whsec_"));
        assert_eq!(standard_key(&generated).unwrap().len(), 32);
        assert_ne!(generated, generate_secret());
        for scheme in [
            SignatureScheme::Standard,
            SignatureScheme::Toss,
            SignatureScheme::None,
        ] {
            assert_eq!(validate_secret(scheme, &generated), Ok(()));
        }
        let table: &[(SignatureScheme, &str, bool)] = &[
            (
                SignatureScheme::Standard,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                true,
            ),
            (SignatureScheme::Standard, "whsec_not base64!", false),
            (SignatureScheme::Standard, "whsec_c2hvcnQ=", false),
            (SignatureScheme::Toss, "a-plain-toss-secret", true),
            (SignatureScheme::Toss, "short", false),
            (SignatureScheme::Toss, "bad\nsecret-bad-secret", false),
        ];
        for (scheme, secret, ok) in table {
            assert_eq!(
                validate_secret(*scheme, secret).is_ok(),
                *ok,
                "{scheme} {secret:?}"
            );
        }
    }
}
