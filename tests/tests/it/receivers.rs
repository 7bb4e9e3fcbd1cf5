//! Scenario 4: receivers that misbehave, one endpoint per behaviour, all at once, each
//! with a retry schedule of one retry (`["100ms"]`, so 2 attempts). Every attempt's
//! recorded outcome is asserted through `GET /v1/deliveries/{id}`, and the raw servers
//! count what reached them, so no attempt is hidden (no silent client-side resend).
//!
//! | behaviour | recorded as |
//! |---|---|
//! | 500 with a body | `http_error` 500, the body kept |
//! | hangs past the endpoint's `timeout` (300ms) | `timeout`, after ~300 ms |
//! | reads the request, closes without answering | `network_error` |
//! | reads the request, resets (RST) | `network_error` |
//! | half a status line/headers, then closes | `network_error` |
//! | full `200` head, half the promised body, closes | `success`: the status decides |
//! | 500 with a 1 MiB body | `http_error`, only the first 4096 bytes kept |
//! | 200 with an endless chunked body | `success`, 4096 bytes kept, well within the timeout |
//! | 302 with `Location` | `http_error` 302, not followed: the target gets nothing |
//! | 200 head, then the body one byte per 200 ms past the timeout (1s) | `success` (the status arrived in time), the body cut at the deadline |
//! | the status line itself one byte per 200 ms | `timeout` |
//! | TLS with a self-signed certificate | `network_error` (certificate refused), no request sent |
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it receivers::`

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::raw::{Misbehaviour, RawServer, TlsServer};
use hookd_fault_tests::{
    event_ids, exclusive, log_dir, record, say, wait_finished, Backend, Options, Probe, TestDb,
    LONG,
};
use hookd_testkit::{Receiver, Reply};

const PER_BEHAVIOUR: usize = 10;
const MAX_RESPONSE_BYTES: usize = 4096;

/// What every attempt of one behaviour must look like.
struct Expected {
    state: &'static str,
    outcome: &'static str,
    status: Option<i64>,
    /// A piece of the recorded error, case-insensitive.
    error: Option<&'static str>,
    /// `duration_ms` within this range.
    duration_ms: (i64, i64),
}

fn failing(outcome: &'static str, status: Option<i64>, error: Option<&'static str>) -> Expected {
    Expected {
        state: "failed",
        outcome,
        status,
        error,
        duration_ms: (0, 5_000),
    }
}

/// One misbehaving receiver and how it must be recorded.
struct Case {
    name: &'static str,
    url: String,
    timeout: &'static str,
    expected: Expected,
    /// Requests that reached the server so far, where it can count them.
    requests: Box<dyn Fn() -> usize + Send + Sync>,
    /// Extra check of one attempt record.
    check: Option<fn(&Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_receivers_are_recorded_and_nothing_is_lost() {
    let _heavy = exclusive().await;
    let scenario = "receivers";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Sqlite).await;
    let hookd = Options::new(&db.url).start("hookd", &logs).await;
    let probe = Probe::connect(&db).await;

    let http_500 = Receiver::start(|_, _| Reply::status(500).with_body("receiver exploded")).await;
    let hang = Receiver::start(|_, _| Reply::hang(Duration::from_secs(3))).await;
    let huge = Receiver::start(|_, _| Reply::status(500).with_body("z".repeat(1 << 20))).await;
    let target = Receiver::ok().await;
    let target_url = target.url();
    let redirect =
        Receiver::start(move |_, _| Reply::status(302).with_header("location", &target_url)).await;
    let close = RawServer::start(Misbehaviour::Close).await;
    let reset = RawServer::start(Misbehaviour::Reset).await;
    let half_headers = RawServer::start(Misbehaviour::HalfHeaders).await;
    let half_body = RawServer::start(Misbehaviour::HalfBody).await;
    let endless = RawServer::start(Misbehaviour::EndlessBody).await;
    let trickle_body = RawServer::start(Misbehaviour::TrickleBody).await;
    let trickle_head = RawServer::start(Misbehaviour::TrickleHead).await;
    let tls = TlsServer::start().await;

    fn count_receiver(r: &Receiver) -> Box<dyn Fn() -> usize + Send + Sync> {
        let r = r.clone();
        Box::new(move || r.count())
    }
    fn count_raw(r: &std::sync::Arc<RawServer>) -> Box<dyn Fn() -> usize + Send + Sync> {
        let r = r.clone();
        Box::new(move || r.requests())
    }
    let (close, reset, half_headers, half_body, endless, trickle_body, trickle_head) = (
        std::sync::Arc::new(close),
        std::sync::Arc::new(reset),
        std::sync::Arc::new(half_headers),
        std::sync::Arc::new(half_body),
        std::sync::Arc::new(endless),
        std::sync::Arc::new(trickle_body),
        std::sync::Arc::new(trickle_head),
    );
    let tls = std::sync::Arc::new(tls);

    let cases = vec![
        Case {
            name: "http_500",
            url: http_500.url(),
            timeout: "1s",
            expected: failing("http_error", Some(500), Some("HTTP 500")),
            requests: count_receiver(&http_500),
            check: Some(|a| assert_eq!(a["response_body"], "receiver exploded", "{a}")),
        },
        Case {
            name: "hang_past_timeout",
            url: hang.url(),
            timeout: "300ms",
            expected: Expected {
                duration_ms: (290, 1_500),
                ..failing("timeout", None, Some("no answer within 300ms"))
            },
            requests: count_receiver(&hang),
            check: None,
        },
        Case {
            name: "close_without_answer",
            url: close.url(),
            timeout: "1s",
            expected: failing("network_error", None, None),
            requests: count_raw(&close),
            check: None,
        },
        Case {
            name: "reset_without_answer",
            url: reset.url(),
            timeout: "1s",
            expected: failing("network_error", None, None),
            requests: count_raw(&reset),
            check: None,
        },
        Case {
            name: "half_headers_then_close",
            url: half_headers.url(),
            timeout: "1s",
            expected: failing("network_error", None, None),
            requests: count_raw(&half_headers),
            check: None,
        },
        Case {
            name: "half_body_then_close",
            url: half_body.url(),
            timeout: "1s",
            expected: Expected {
                state: "succeeded",
                outcome: "success",
                status: Some(200),
                error: None,
                duration_ms: (0, 1_000),
            },
            requests: count_raw(&half_body),
            check: Some(|a| assert_eq!(a["response_body"], "0123456789", "{a}")),
        },
        Case {
            name: "huge_body_500",
            url: huge.url(),
            timeout: "2s",
            expected: Expected {
                duration_ms: (0, 2_000),
                ..failing("http_error", Some(500), Some("HTTP 500"))
            },
            requests: count_receiver(&huge),
            check: Some(|a| {
                let body = a["response_body"].as_str().expect("a body is kept");
                assert_eq!(body.len(), MAX_RESPONSE_BYTES, "only a prefix is kept");
            }),
        },
        Case {
            name: "endless_body_200",
            url: endless.url(),
            timeout: "1s",
            expected: Expected {
                state: "succeeded",
                outcome: "success",
                status: Some(200),
                error: None,
                duration_ms: (0, 999),
            },
            requests: count_raw(&endless),
            check: Some(|a| {
                let body = a["response_body"].as_str().expect("a body is kept");
                assert!(
                    body.len() <= MAX_RESPONSE_BYTES,
                    "{} bytes kept",
                    body.len()
                );
                assert!(body.starts_with("yyyy"), "{body:.40}");
            }),
        },
        Case {
            name: "redirect_302",
            url: redirect.url(),
            timeout: "1s",
            expected: failing("http_error", Some(302), Some("not followed")),
            requests: count_receiver(&redirect),
            check: None,
        },
        Case {
            name: "trickle_body_past_timeout",
            url: trickle_body.url(),
            timeout: "1s",
            expected: Expected {
                state: "succeeded",
                outcome: "success",
                status: Some(200),
                error: None,
                // The body is read until the whole-request deadline, then cut.
                duration_ms: (900, 2_000),
            },
            requests: count_raw(&trickle_body),
            check: Some(|a| {
                let body = a["response_body"].as_str().unwrap_or("");
                assert!(body.len() <= 10 && body.chars().all(|c| c == 'x'), "{body}");
            }),
        },
        Case {
            name: "trickle_head_past_timeout",
            url: trickle_head.url(),
            timeout: "300ms",
            expected: Expected {
                duration_ms: (290, 1_500),
                ..failing("timeout", None, Some("no answer within 300ms"))
            },
            requests: count_raw(&trickle_head),
            check: None,
        },
        Case {
            name: "tls_self_signed",
            url: tls.url(),
            timeout: "1s",
            expected: failing("network_error", None, Some("certificate")),
            requests: {
                let tls = tls.clone();
                Box::new(move || tls.requests())
            },
            check: None,
        },
    ];

    // One endpoint per behaviour; each gets its own events through the outbox.
    let mut endpoint_case = HashMap::new();
    let mut inserts = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let endpoint = hookd
            .api()
            .endpoint(json!({
                "url": case.url,
                "event_types": ["*"],
                "timeout": case.timeout,
                "retry_schedule": ["100ms"],
            }))
            .await;
        let id = endpoint["id"].as_str().expect("endpoint id").to_string();
        let ids = event_ids(&format!("rc{i:02}"), PER_BEHAVIOUR);
        inserts.push(insert_sql(Backend::Sqlite, &ids, Some(&id)));
        endpoint_case.insert(id, i);
    }
    for sql in &inserts {
        db.exec(sql).await;
    }
    let total = cases.len() * PER_BEHAVIOUR;
    wait_finished(&probe, total, LONG).await;

    let deliveries = probe.deliveries().await;
    assert_eq!(
        deliveries.len(),
        total,
        "one delivery per event, no fan-out"
    );
    let mut attempts_per_case = vec![0usize; cases.len()];
    let mut sample = vec![String::new(); cases.len()];
    let (mut delivered, mut failed) = (0, 0);
    for d in &deliveries {
        let case = &cases[endpoint_case[&d.endpoint_id]];
        let e = &case.expected;
        let detail = hookd
            .api()
            .get_ok(&format!("/v1/deliveries/{}", d.id))
            .await;
        let what = format!("{}: delivery {}: {detail}", case.name, d.id);
        assert_eq!(detail["state"], e.state, "{what}");
        let log = detail["attempt_log"].as_array().expect("attempt_log");
        let expected_attempts = if e.state == "succeeded" { 1 } else { 2 };
        assert_eq!(log.len(), expected_attempts, "{what}");
        assert_eq!(detail["attempts"], expected_attempts, "{what}");
        attempts_per_case[endpoint_case[&d.endpoint_id]] += log.len();
        sample[endpoint_case[&d.endpoint_id]] =
            format!("{} ms, error {}", log[0]["duration_ms"], log[0]["error"]);
        for a in log {
            assert_eq!(a["outcome"], e.outcome, "{what}");
            assert_eq!(a["status_code"].as_i64(), e.status, "{what}");
            if let Some(piece) = e.error {
                let error = a["error"].as_str().unwrap_or("").to_lowercase();
                assert!(error.contains(&piece.to_lowercase()), "{what}");
            }
            let ms = a["duration_ms"].as_i64().expect("duration_ms");
            assert!(
                (e.duration_ms.0..=e.duration_ms.1).contains(&ms),
                "{what}: duration {ms} ms outside {:?}",
                e.duration_ms
            );
            let body = a["response_body"].as_str().unwrap_or("");
            assert!(
                body.len() <= MAX_RESPONSE_BYTES,
                "{what}: body of {}",
                body.len()
            );
            if let Some(check) = case.check {
                check(a);
            }
        }
        if e.state == "succeeded" {
            delivered += 1;
        } else {
            failed += 1;
        }
    }

    // What reached each server is exactly what was recorded: no attempt hidden, no resend
    // by the HTTP client behind hookd's back. TLS: the handshake was refused, so nothing.
    for (i, case) in cases.iter().enumerate() {
        let reached = (case.requests)();
        if case.name == "tls_self_signed" {
            assert_eq!(reached, 0, "no request over an untrusted TLS connection");
        } else {
            assert_eq!(
                reached, attempts_per_case[i],
                "{}: requests vs attempts",
                case.name
            );
        }
        say(&format!(
            "{scenario}: {:<26} {} attempts recorded as {}{} ({})",
            case.name,
            attempts_per_case[i],
            case.expected.outcome,
            case.expected
                .status
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            sample[i]
        ));
    }
    assert_eq!(target.count(), 0, "the redirect was not followed");
    assert!(
        tls.refused() > 0 && tls.handshakes() == 0,
        "hookd refused the certificate"
    );

    let lost = total - delivered - failed;
    record(&format!(
        "{scenario}: audit: committed={total} delivered={delivered} failed={failed} lost={lost} duplicated=0 unexpected=0"
    ));
    assert_eq!(lost, 0);
    probe.close().await;
}
