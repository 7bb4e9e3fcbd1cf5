//! The `hookd` binary as an operator runs it: flags, environment, signals, exit codes.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use hookd_testkit::{wait_until, Receiver, Reply, TestDb};

use crate::support;

const HOOKD: &str = env!("CARGO_BIN_EXE_hookd");

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
    ] {
        let out = Command::new(HOOKD).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: hookd"), "{text}");
    }
    let out = Command::new(HOOKD)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--database-url",
        "--listen",
        "--admin-token",
        "--retry-schedule",
        "--request-timeout",
        "--allow-private-targets",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

/// `hookd`, `hookd deliveries` or `hookd endpoints` alone asks what there is: the help on
/// stdout and exit 0, as with `--help`, not a usage error.
#[test]
fn a_command_without_its_subcommand_prints_its_help() {
    for (args, usage, commands) in [
        (
            vec![],
            "Usage: hookd [OPTIONS] <COMMAND>",
            vec!["serve", "deliveries"],
        ),
        (
            vec!["deliveries"],
            "Usage: hookd deliveries [OPTIONS] <COMMAND>",
            vec!["list", "show"],
        ),
        (
            vec!["endpoints"],
            "Usage: hookd endpoints [OPTIONS] <COMMAND>",
            vec!["list", "add", "rotate-secret"],
        ),
    ] {
        let out = Command::new(HOOKD).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        assert!(text.contains(usage), "{args:?}: {text}");
        for command in commands {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(command)),
                "{args:?} lacks {command}: {text}"
            );
        }
        assert!(!text.contains('\x1b'), "no colour into a pipe: {text:?}");
    }
}

#[test]
fn migrate_creates_the_schema() {
    let db = TestDb::sqlite();
    let out = Command::new(HOOKD)
        .args(["migrate", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from sqlite_master where name='hookd_outbox'\").fetchone()[0])"])
        .arg(db.sqlite_path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn bad_configuration_exits_2_with_the_reason() {
    let out = Command::new(HOOKD)
        .args(["serve"])
        .env("HOOKD_REQUEST_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOOKD_REQUEST_TIMEOUT"), "{err}");
}

#[test]
fn refuses_a_public_listen_address_without_a_token() {
    let db = TestDb::sqlite();
    let out = Command::new(HOOKD)
        .args(["serve", "--listen", "0.0.0.0:0", "--database-url", &db.url])
        .env_remove("HOOKD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOOKD_ADMIN_TOKEN"));
}

/// Starts `hookd serve` on SQLite, delivers an outbox row, then SIGTERM while an attempt is
/// in flight: the attempt finishes, its result is recorded, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_and_stops_gracefully_on_sigterm() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookd.toml");
    std::fs::write(
        &config,
        "retry_schedule = []\nrequest_timeout = \"5s\"\npoll_interval = \"50ms\"\n",
    )
    .unwrap();
    let mut hookd = support::serve(&db)
        .args(["--config", config.to_str().unwrap()])
        .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
        .start()
        .await;

    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            Reply::ok()
        } else {
            Reply::hang(Duration::from_millis(1500))
        }
    })
    .await;
    let ep = hookd.api().endpoint(json!({ "url": receiver.url() })).await;
    assert!(ep["id"].is_string(), "{ep}");
    db.exec("INSERT INTO hookd_outbox (event_type, payload) VALUES ('purchase', '{\"orderId\":\"o-1\",\"amount\":9900}');").await;
    receiver.wait_for(1, Duration::from_secs(10)).await;

    // Second event: the receiver takes 1.5 s; stop hookd while it waits.
    db.exec("INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('slow', 'purchase', '{}');").await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let exit = hookd.terminate(support::WAIT).await;
    assert_eq!(exit.code(), Some(0), "graceful exit");

    let store = hookd_store::connect(&db.url).await.unwrap();
    let slow = store
        .deliveries(
            &hookd_store::DeliveryFilter {
                event_id: Some("slow".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        slow.state,
        hookd_store::DeliveryState::Succeeded,
        "the in-flight attempt finished and was recorded"
    );
    assert_eq!(store.attempts(slow.id).await.unwrap().len(), 1);
}

/// Runs a traced workload (RUST_LOG=trace, JSON logs) with every kind of secret in play,
/// then searches every log line for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    const ADMIN: &str = "admin-token-8c1f0e7d";
    const BEARER: &str = "bearer-token-5e2a9b44";
    const STANDARD_KEY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOSS: &str = "toss-secret-0f3c2a1b9d";
    let db = TestDb::sqlite();
    let mut hookd = support::serve(&db)
        .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
        .env("HOOKD_ADMIN_TOKEN", ADMIN)
        .env("HOOKD_RETRY_SCHEDULE", "100ms")
        .env("HOOKD_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .start()
        .await;
    let (base, http) = (&hookd.api().base, &hookd.api().http);
    // Each delivery fails once, then succeeds: retries are logged too.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let receiver = Receiver::start(move |_, r| {
        let key = (
            r.header("webhook-id").unwrap_or("").to_string(),
            r.header("webhook-signature").is_some(),
        );
        if seen.lock().unwrap().insert(key) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    for body in [
        json!({ "url": receiver.url(), "bearer_token": BEARER, "secret": format!("whsec_{STANDARD_KEY}") }),
        json!({ "url": receiver.url(), "signature_scheme": "toss", "secret": TOSS }),
    ] {
        let resp = http
            .post(format!("{base}/v1/endpoints"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let resp = http
        .get(format!("{base}/v1/endpoints"))
        .header("authorization", "Bearer wrong-token-guess")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    for i in 0..3 {
        let resp = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({ "event_type": "purchase", "payload": { "i": i } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    // 3 events x 2 endpoints, each failing once then succeeding.
    let got = receiver.wait_for(12, Duration::from_secs(20)).await;
    let mut signatures: Vec<String> = Vec::new();
    for r in &got {
        for h in ["webhook-signature", "tosspayments-webhook-signature"] {
            if let Some(sig) = r.header(h) {
                signatures.push(sig.trim_start_matches("v1,").to_string());
            }
        }
    }
    assert_eq!(signatures.len(), 12);
    assert!(hookd.terminate(support::WAIT).await.success());

    let text = hookd.stderr();
    assert!(
        text.lines().count() > 50,
        "a traced run logs a lot: {} lines",
        text.lines().count()
    );
    assert!(text.contains("attempt"), "attempt spans are logged");
    let mut secrets = vec![
        ADMIN.to_string(),
        BEARER.to_string(),
        STANDARD_KEY.to_string(),
        TOSS.to_string(),
    ];
    secrets.extend(signatures);
    for (n, line) in text.lines().enumerate() {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "log line {n} contains a secret ({secret}):\n{line}"
            );
        }
    }
}

/// Text logs written to a file (or a pipe, a journal) carry no colour escape codes, and a
/// failed attempt says what comes next in words: `next=retry in 1m`, not `RetryIn(60000)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_in_a_file_are_plain_words() {
    let db = TestDb::sqlite();
    let mut hookd = support::serve(&db)
        .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
        .env("HOOKD_RETRY_SCHEDULE", "1m")
        .env("HOOKD_LOG_FORMAT", "text")
        .env_remove("NO_COLOR")
        .start()
        .await;
    let receiver = Receiver::start(|_, _| Reply::status(500)).await;
    hookd.api().endpoint(json!({ "url": receiver.url() })).await;
    let (status, body) = hookd
        .api()
        .post(
            "/v1/events",
            json!({ "event_type": "purchase", "payload": {} }),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let line = wait_until(
        Duration::from_secs(20),
        "the failed attempt's log line",
        || {
            let text = hookd.stderr();
            let line = text
                .lines()
                .find(|l| l.contains("attempt failed"))
                .map(str::to_string);
            async move { line }
        },
    )
    .await;
    assert!(hookd.terminate(support::WAIT).await.success());
    assert!(line.contains("next=retry in 1m"), "{line}");
    assert!(!line.contains("RetryIn"), "{line}");
    let text = hookd.stderr();
    assert!(text.contains("hookd is serving"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file:\n{text}"
    );
}

/// An endpoint whose secrets the key does not open is logged once, as an error, however
/// many of its attempts fail and however often the gauge is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_endpoint_is_logged_once() {
    const KEY_A: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    const KEY_B: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let db = TestDb::sqlite();
    let sealed_with_a = hookd::daemon::app::connect_sealed(&db.url, Some(KEY_A))
        .await
        .unwrap();
    sealed_with_a.migrate().await.unwrap();
    sealed_with_a
        .insert_endpoint(&hookd_store::Endpoint {
            id: "ep_sealed_with_a".into(),
            url: "http://127.0.0.1:9/hook".into(),
            event_types: vec!["*".into()],
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            bearer_token: Some("tok-sealed".into()),
            enabled: true,
            ..Default::default()
        })
        .await
        .unwrap();

    let mut hookd = support::serve(&db)
        .env("HOOKD_SECRET_KEY", KEY_B)
        .env("HOOKD_RETRY_SCHEDULE", "50ms,50ms,50ms")
        .env("HOOKD_GAUGE_SCHEDULE", "* * * * * *")
        .env("HOOKD_LOG_FORMAT", "json")
        .env("HOOKD_LOG_LEVEL", "info")
        .start()
        .await;
    let (base, http) = (hookd.api().base.clone(), hookd.api().http.clone());
    for i in 0..3 {
        let resp = http
            .post(format!("{base}/v1/events"))
            .json(&json!({ "event_type": "x", "payload": { "i": i } }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    // Every attempt of every delivery made (4 each), and the gauge refreshed 3 times.
    hookd_testkit::wait_until(support::WAIT, "12 failed attempts, 3 refreshes", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let page: Value = http
                .get(format!("{base}/v1/deliveries?state=failed"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let failed = page["data"].as_array()?.len();
            let metrics = http.get(format!("{base}/metrics")).send().await.ok()?;
            let metrics = metrics.text().await.ok()?;
            let refreshes: f64 = metrics
                .lines()
                .find(|l| {
                    l.starts_with("hookd_store_query_duration_seconds_count")
                        && l.contains("operation=\"unreadable_endpoints\"")
                })?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()?;
            let gauge = metrics.lines().any(|l| l == "hookd_endpoints_unreadable 1");
            (failed == 3 && refreshes >= 4.0 && gauge).then_some(())
        }
    })
    .await;
    assert!(hookd.terminate(support::WAIT).await.success());

    let text = hookd.stderr();
    let reports: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("endpoint unreadable"))
        .collect();
    assert_eq!(reports.len(), 1, "{text}");
    let report: Value = serde_json::from_str(reports[0]).unwrap();
    assert_eq!(report["level"], "ERROR", "{report}");
    assert_eq!(report["endpoint_id"], "ep_sealed_with_a", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("HOOKD_SECRET_KEY"),
        "{report}"
    );
    assert!(
        !text.contains("tok-sealed"),
        "the token never reaches the log"
    );
}
