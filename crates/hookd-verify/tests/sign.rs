//! The headers hookd signs a delivery with, secret rotation, and the secrets it accepts.

use hookd_verify::{
    sign_standard, sign_toss, signature_headers, validate_secret, Scheme, Verifier, VerifyError,
};
use std::time::{Duration, UNIX_EPOCH};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[test]
fn standard_headers_carry_the_timestamp_given() {
    let headers = signature_headers(
        Scheme::Standard,
        &[SECRET],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        br#"{"test": 2432232314}"#,
        1614265330,
        "2021-02-25T15:02:10Z",
    )
    .unwrap();
    assert_eq!(
        headers,
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
fn toss_headers_carry_the_transmission_time_given() {
    let time = "2026-01-01T00:00:00.000Z";
    let headers =
        signature_headers(Scheme::Toss, &["secret"], "m", b"{}", 1_767_225_600, time).unwrap();
    assert_eq!(
        headers,
        vec![
            ("tosspayments-webhook-transmission-time", time.to_string()),
            (
                "tosspayments-webhook-signature",
                sign_toss("secret", b"{}", time)
            ),
        ]
    );
}

/// During a rotation `standard` carries a signature per secret, and a receiver holding
/// either verifies; `toss` has room for one, the current secret's.
#[test]
fn rotation_signs_with_every_secret() {
    let headers = signature_headers(
        Scheme::Standard,
        &[OTHER, SECRET],
        "msg_1",
        b"{}",
        1614265330,
        "",
    )
    .unwrap();
    let signatures: Vec<&str> = headers[1].1.split(' ').collect();
    assert_eq!(
        signatures,
        [
            sign_standard(OTHER, "msg_1", 1614265330, b"{}").unwrap(),
            sign_standard(SECRET, "msg_1", 1614265330, b"{}").unwrap(),
        ]
    );
    let mut request: Vec<(&str, String)> = headers;
    request.push(("webhook-id", "msg_1".into()));
    let verifier = Verifier::new().now(UNIX_EPOCH + Duration::from_secs(1614265330));
    for secret in [OTHER, SECRET] {
        verifier.verify_standard(secret, &request, b"{}").unwrap();
    }

    let toss = signature_headers(
        Scheme::Toss,
        &["new-toss-secret-123", "old-toss-secret-456"],
        "m",
        b"{}",
        0,
        "t",
    )
    .unwrap();
    assert_eq!(toss[1].1, sign_toss("new-toss-secret-123", b"{}", "t"));

    assert!(matches!(
        signature_headers(Scheme::Standard, &[], "m", b"{}", 0, ""),
        Err(VerifyError::InvalidSecret(_))
    ));
    assert!(matches!(
        signature_headers(
            Scheme::Standard,
            &[SECRET, "whsec_not base64!"],
            "m",
            b"{}",
            0,
            ""
        ),
        Err(VerifyError::InvalidSecret(_))
    ));
}

/// As a Toss receiver computes it: createHmac('sha256', secret).update(`${body}:${time}`)
/// .digest('hex'); checked against Python's hmac module.
#[test]
fn toss_signatures() {
    let cases = [
        (
            "test_sk_secret_key_0001",
            r#"{"eventType":"PAYMENT_STATUS_CHANGED"}"#,
            "2026-01-01T00:00:00Z",
            "7e1becadf54a89c949fb5aa25d9cdd80533f8997ef7c02f4cebf179053f3a8c0",
        ),
        (
            "secret",
            "{}",
            "2026-01-01T00:00:00Z",
            "ec0add713df7365e6af2ff4e6b3a2e3ee721861f3409869042e5a84d9eade89c",
        ),
    ];
    for (secret, body, time, want) in cases {
        assert_eq!(sign_toss(secret, body.as_bytes(), time), want, "{secret}");
    }
}

#[test]
fn secrets_hookd_accepts() {
    let table: &[(Scheme, &str, bool)] = &[
        (Scheme::Standard, SECRET, true),
        (Scheme::Standard, OTHER, true),
        (Scheme::Standard, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true),
        (Scheme::Standard, "whsec_not base64!", false),
        // 5 bytes: too short a key.
        (Scheme::Standard, "whsec_c2hvcnQ=", false),
        // What a receiver trims, hookd refuses to store.
        (
            Scheme::Standard,
            " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            false,
        ),
        (Scheme::Toss, "a-plain-toss-secret", true),
        (Scheme::Toss, SECRET, true),
        (Scheme::Toss, "short", false),
        (Scheme::Toss, "bad\nsecret-bad-secret", false),
    ];
    for (scheme, secret, ok) in table {
        assert_eq!(
            validate_secret(*scheme, secret).is_ok(),
            *ok,
            "{scheme} {secret:?}"
        );
    }
    assert_eq!(
        validate_secret(Scheme::Standard, "whsec_c2hvcnQ="),
        Err(VerifyError::InvalidSecret(
            "a standard secret's key must be 16 to 128 bytes, not 5".into()
        ))
    );
    let long = "x".repeat(1025);
    assert!(validate_secret(Scheme::Toss, &long).is_err());
    assert!(validate_secret(Scheme::Toss, &long[..1024]).is_ok());
}
