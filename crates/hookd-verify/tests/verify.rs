//! The Standard Webhooks test vectors, a Toss vector, and every way a request is refused.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use hookd_verify::{
    header_fn, sign_standard, sign_toss, verify_standard, verify_toss, Scheme, Verifier,
    VerifyError,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1614265330;
const BODY: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// A verifier whose clock reads `TIMESTAMP + offset` seconds.
fn at(offset: i64) -> Verifier {
    Verifier::new().now(UNIX_EPOCH + Duration::from_secs((TIMESTAMP + offset) as u64))
}

fn standard_headers(signature: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", MSG_ID.to_string()),
        ("webhook-timestamp", TIMESTAMP.to_string()),
        ("webhook-signature", signature.to_string()),
    ]
}

/// The Standard Webhooks test vectors: the specification's (also the Python library's
/// `test_sign_function`) and the Rust library's `test_sign`. Each is signed, then verified
/// at its own time, with and without the `whsec_` prefix.
#[test]
fn standard_webhooks_vectors() {
    let vectors = [
        (SECRET, MSG_ID, TIMESTAMP, BODY, SIGNATURE),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            &br#"{"email":"test@example.com","username":"test_user"}"#[..],
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];
    for (secret, id, timestamp, body, signature) in vectors {
        assert_eq!(
            sign_standard(secret, id, timestamp, body).unwrap(),
            signature,
            "{id}"
        );
        let headers = [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature.to_string()),
        ];
        let verifier = Verifier::new().now(UNIX_EPOCH + Duration::from_secs(timestamp as u64));
        verifier.verify_standard(secret, &headers, body).unwrap();
        let bare = secret.strip_prefix("whsec_").unwrap();
        verifier.verify_standard(bare, &headers, body).unwrap();
    }
    // The libraries' refusals: a signature one character off, and one of another message.
    for wrong in [
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
    ] {
        assert_eq!(
            at(0).verify_standard(SECRET, &standard_headers(wrong), BODY),
            Err(VerifyError::NoMatchingSignature),
            "{wrong}"
        );
    }
}

#[test]
fn headers_are_read_from_any_container_in_any_case() {
    let mixed = [
        ("Webhook-Id", MSG_ID),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("Webhook-Signature", SIGNATURE),
    ];
    at(0).verify_standard(SECRET, &mixed, BODY).unwrap();
    let map: HashMap<String, String> = standard_headers(SIGNATURE)
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect();
    at(0).verify_standard(SECRET, &map, BODY).unwrap();
    let lookup = header_fn(|name| map.get(&name.to_uppercase()).cloned());
    at(0)
        .verify(Scheme::Standard, SECRET, &lookup, BODY)
        .unwrap();
}

#[test]
fn standard_accepts_any_matching_entry_and_ignores_other_versions() {
    let several = format!("v1a,abcdef v1,bm90IHRoZSByaWdodCBvbmU= {SIGNATURE} v2,xyz");
    at(0)
        .verify_standard(SECRET, &standard_headers(&several), BODY)
        .unwrap();
    // The right bytes under another version label do not count.
    let other_version = SIGNATURE.replacen("v1,", "v2,", 1);
    assert_eq!(
        at(0).verify_standard(SECRET, &standard_headers(&other_version), BODY),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn standard_timestamps_within_the_tolerance_both_ways() {
    let headers = standard_headers(SIGNATURE);
    at(300).verify_standard(SECRET, &headers, BODY).unwrap();
    at(-300).verify_standard(SECRET, &headers, BODY).unwrap();
    at(3600)
        .tolerance(Duration::from_secs(3600))
        .verify_standard(SECRET, &headers, BODY)
        .unwrap();
}

#[test]
fn rejects_a_tampered_body() {
    let tampered = br#"{"test": 2432232315}"#;
    assert_eq!(
        at(0).verify_standard(SECRET, &standard_headers(SIGNATURE), tampered),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn rejects_a_tampered_id() {
    let mut headers = standard_headers(SIGNATURE);
    headers[0].1 = "msg_another".into();
    assert_eq!(
        at(0).verify_standard(SECRET, &headers, BODY),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn rejects_the_wrong_key() {
    let other = "whsec_dGhpcyBpcyBhbm90aGVyIGtleSBlbnRpcmVseQ==";
    assert_eq!(
        at(0).verify_standard(other, &standard_headers(SIGNATURE), BODY),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn rejects_a_stale_timestamp() {
    let err = at(301)
        .verify_standard(SECRET, &standard_headers(SIGNATURE), BODY)
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::TimestampTooOld {
            age: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        }
    );
    assert_eq!(
        err.to_string(),
        "timestamp too old: sent 301s ago, tolerance is 300s"
    );
    // With the system clock, the 2021 vector is long stale.
    assert!(matches!(
        verify_standard(SECRET, &standard_headers(SIGNATURE), BODY),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

#[test]
fn rejects_a_timestamp_in_the_future() {
    assert_eq!(
        at(-301).verify_standard(SECRET, &standard_headers(SIGNATURE), BODY),
        Err(VerifyError::TimestampInFuture {
            ahead: Duration::from_secs(301),
            tolerance: Duration::from_secs(300)
        })
    );
}

#[test]
fn rejects_missing_headers() {
    for (i, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .enumerate()
    {
        let mut headers = standard_headers(SIGNATURE);
        headers.remove(i);
        assert_eq!(
            at(0).verify_standard(SECRET, &headers, BODY),
            Err(VerifyError::MissingHeader(name))
        );
        // An empty value counts as missing.
        let mut headers = standard_headers(SIGNATURE);
        headers[i].1.clear();
        assert_eq!(
            at(0).verify_standard(SECRET, &headers, BODY),
            Err(VerifyError::MissingHeader(name))
        );
    }
}

#[test]
fn rejects_malformed_headers() {
    let mut headers = standard_headers(SIGNATURE);
    headers[1].1 = "2021-02-25T15:02:10Z".into();
    assert!(matches!(
        at(0).verify_standard(SECRET, &headers, BODY),
        Err(VerifyError::MalformedHeader {
            header: "webhook-timestamp",
            ..
        })
    ));
    assert!(matches!(
        at(0).verify_standard(SECRET, &standard_headers("g0hM9SsE+OTPJTGt"), BODY),
        Err(VerifyError::MalformedHeader {
            header: "webhook-signature",
            ..
        })
    ));
}

#[test]
fn rejects_invalid_secrets() {
    for secret in ["whsec_not base64!", "whsec_", ""] {
        assert!(
            matches!(
                at(0).verify_standard(secret, &standard_headers(SIGNATURE), BODY),
                Err(VerifyError::InvalidSecret(_))
            ),
            "{secret:?}"
        );
    }
    assert!(matches!(
        verify_toss("", &[("a", "b")], BODY),
        Err(VerifyError::InvalidSecret(_))
    ));
}

const TOSS_SECRET: &str = "secret";
const TOSS_TIME: &str = "2026-01-01T00:00:00Z";
/// 2026-01-01T00:00:00Z in unix seconds.
const TOSS_UNIX: u64 = 1_767_225_600;
/// hex HMAC-SHA256("secret", "{}:2026-01-01T00:00:00Z"), computed with Python's hmac module.
const TOSS_SIGNATURE: &str = "ec0add713df7365e6af2ff4e6b3a2e3ee721861f3409869042e5a84d9eade89c";

fn toss_at(offset: i64) -> Verifier {
    Verifier::new().now(UNIX_EPOCH + Duration::from_secs((TOSS_UNIX as i64 + offset) as u64))
}

fn toss_headers(signature: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "tosspayments-webhook-transmission-time",
            TOSS_TIME.to_string(),
        ),
        ("tosspayments-webhook-signature", signature.to_string()),
    ]
}

#[test]
fn toss_vector() {
    assert_eq!(sign_toss(TOSS_SECRET, b"{}", TOSS_TIME), TOSS_SIGNATURE);
    toss_at(0)
        .verify_toss(TOSS_SECRET, &toss_headers(TOSS_SIGNATURE), b"{}")
        .unwrap();
    toss_at(0)
        .verify(
            Scheme::Toss,
            TOSS_SECRET,
            &toss_headers(&TOSS_SIGNATURE.to_uppercase()),
            b"{}",
        )
        .unwrap();
    // hookd sends milliseconds; other offsets are fine too.
    let time = "2026-01-01T09:00:00.250+09:00";
    let headers = [
        ("tosspayments-webhook-transmission-time", time.to_string()),
        (
            "tosspayments-webhook-signature",
            sign_toss(TOSS_SECRET, b"{}", time),
        ),
    ];
    toss_at(0)
        .verify_toss(TOSS_SECRET, &headers, b"{}")
        .unwrap();
}

#[test]
fn toss_rejections() {
    let headers = toss_headers(TOSS_SIGNATURE);
    assert_eq!(
        toss_at(0).verify_toss(TOSS_SECRET, &headers, b"{ }"),
        Err(VerifyError::NoMatchingSignature),
        "tampered body"
    );
    assert_eq!(
        toss_at(0).verify_toss("another-secret", &headers, b"{}"),
        Err(VerifyError::NoMatchingSignature),
        "wrong key"
    );
    assert!(matches!(
        toss_at(301).verify_toss(TOSS_SECRET, &headers, b"{}"),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    assert!(matches!(
        toss_at(-301).verify_toss(TOSS_SECRET, &headers, b"{}"),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    // Unless the transmission time is not checked.
    toss_at(86_400)
        .check_toss_time(false)
        .verify_toss(TOSS_SECRET, &headers, b"{}")
        .unwrap();
    assert_eq!(
        toss_at(0).verify_toss(TOSS_SECRET, &headers[..1], b"{}"),
        Err(VerifyError::MissingHeader("tosspayments-webhook-signature"))
    );
    assert_eq!(
        toss_at(0).verify_toss(TOSS_SECRET, &headers[1..], b"{}"),
        Err(VerifyError::MissingHeader(
            "tosspayments-webhook-transmission-time"
        ))
    );
    assert!(matches!(
        toss_at(0).verify_toss(TOSS_SECRET, &toss_headers("v1:abc"), b"{}"),
        Err(VerifyError::MalformedHeader {
            header: "tosspayments-webhook-signature",
            ..
        })
    ));
    let mut bad_time = toss_headers(TOSS_SIGNATURE);
    bad_time[0].1 = "yesterday".into();
    assert!(matches!(
        toss_at(0).verify_toss(TOSS_SECRET, &bad_time, b"{}"),
        Err(VerifyError::MalformedHeader {
            header: "tosspayments-webhook-transmission-time",
            ..
        })
    ));
}

#[test]
fn schemes_parse() {
    assert_eq!("standard".parse::<Scheme>(), Ok(Scheme::Standard));
    assert_eq!("TOSS".parse::<Scheme>(), Ok(Scheme::Toss));
    assert!("none".parse::<Scheme>().is_err());
    assert_eq!(Scheme::Toss.to_string(), "toss");
}
