//! Signing as the daemon needs it. The signatures, the header names and what makes a
//! secret acceptable are [`hookd_verify`]'s, the code receivers verify with; this maps the
//! store's scheme (which also has `none`) onto it and makes new secrets.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hookd_verify::{Scheme, VerifyError};
use rand::RngCore;

use hookd_store::SignatureScheme;

/// The scheme that signs, or `None` for an endpoint that is sent unsigned.
fn scheme(scheme: SignatureScheme) -> Option<Scheme> {
    match scheme {
        SignatureScheme::Standard => Some(Scheme::Standard),
        SignatureScheme::Toss => Some(Scheme::Toss),
        SignatureScheme::None => None,
    }
}

/// The reason alone: the API puts it after `secret: `.
fn reason(e: VerifyError) -> String {
    match e {
        VerifyError::InvalidSecret(reason) => reason,
        other => other.to_string(),
    }
}

/// The key bytes of a `standard` secret hookd accepts (see [`validate_secret`]).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    hookd_verify::validate_secret(Scheme::Standard, secret).map_err(reason)?;
    hookd_verify::standard_key(secret).map_err(reason)
}

/// Checks a secret given for a scheme. An unsigned endpoint still keeps a secret (it may
/// be switched to a scheme later): it must pass the plain-secret rule of `toss`.
pub fn validate_secret(signature_scheme: SignatureScheme, secret: &str) -> Result<(), String> {
    let rule = scheme(signature_scheme).unwrap_or(Scheme::Toss);
    hookd_verify::validate_secret(rule, secret).map_err(reason)
}

/// A new random secret: `whsec_` + 32 random bytes in base64 (usable by every scheme).
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("whsec_{}", BASE64.encode(key))
}

/// The signature headers for one attempt: [`hookd_verify::signature_headers`], and none
/// for an unsigned endpoint.
pub fn headers(
    signature_scheme: SignatureScheme,
    secrets: &[&str],
    msg_id: &str,
    body: &[u8],
    unix_seconds: i64,
    rfc3339: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    match scheme(signature_scheme) {
        Some(scheme) => {
            hookd_verify::signature_headers(scheme, secrets, msg_id, body, unix_seconds, rfc3339)
                .map_err(reason)
        }
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn schemes_map_onto_the_shared_signing() {
        let standard = headers(SignatureScheme::Standard, &[SECRET], "m", b"{}", 1, "t");
        assert_eq!(
            standard,
            Ok(
                hookd_verify::signature_headers(Scheme::Standard, &[SECRET], "m", b"{}", 1, "t")
                    .unwrap()
            )
        );
        let toss = headers(SignatureScheme::Toss, &[SECRET], "m", b"{}", 1, "t").unwrap();
        assert_eq!(toss[1].1, hookd_verify::sign_toss(SECRET, b"{}", "t"));
        assert_eq!(
            headers(SignatureScheme::None, &[SECRET], "m", b"{}", 1, "t"),
            Ok(Vec::new())
        );
        assert_eq!(
            headers(SignatureScheme::Standard, &[], "m", b"{}", 1, "t"),
            Err("no secret to sign with".to_string())
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
        // An unsigned endpoint's secret follows the plain-secret rule; the reason comes
        // alone, for the API's `secret: <reason>`.
        assert_eq!(
            validate_secret(SignatureScheme::None, "short"),
            Err("a secret must be at least 16 characters".to_string())
        );
        assert_eq!(
            standard_key("whsec_c2hvcnQ="),
            Err("a standard secret's key must be 16 to 128 bytes, not 5".to_string())
        );
    }
}
