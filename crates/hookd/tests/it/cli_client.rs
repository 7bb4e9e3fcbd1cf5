//! The API commands of the `hookd` binary (`endpoints`, `deliveries`, `resend`), run as an
//! operator runs them against a real `hookd serve` on SQLite.

use std::time::Duration;

use serde_json::{json, Value};

use hookd_testkit::{wait_until, Output, Process, Receiver, Reply, Spec, TestDb};

use crate::support;

const HOOKD: &str = env!("CARGO_BIN_EXE_hookd");
const WAIT: Duration = Duration::from_secs(30);

/// A `hookd serve` child process on its own SQLite file, killed on drop.
struct Daemon {
    base: String,
    db: TestDb,
    _process: Process,
}

impl Daemon {
    /// Private targets allowed, no automatic retry (a failed attempt is final).
    async fn start(extra_env: &[(&str, &str)]) -> Daemon {
        let db = TestDb::sqlite();
        let process = support::serve(&db)
            .env("HOOKD_ALLOW_PRIVATE_TARGETS", "true")
            .env("HOOKD_RETRY_SCHEDULE", "")
            .env("HOOKD_POLL_INTERVAL", "50ms")
            .envs(extra_env.iter().copied())
            .start()
            .await;
        Daemon {
            base: process.base(),
            db,
            _process: process,
        }
    }

    /// `hookd ARGS --url BASE` (`--api-url` for `endpoints add`, whose `--url` is the
    /// receiver's).
    async fn run(&self, args: &[&str]) -> Output {
        let flag = if args.starts_with(&["endpoints", "add"]) {
            "--api-url"
        } else {
            "--url"
        };
        let mut all: Vec<&str> = args.to_vec();
        all.extend([flag, &self.base]);
        hookd(&all, &[]).await
    }

    /// `run`, checked to succeed, its stdout parsed as JSON (`--json` added).
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.run(&all).await;
        run.assert_ok();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("hookd {args:?} --json printed no JSON ({e}): {run:?}"))
    }

    async fn post_event(&self, body: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/events", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
}

/// Runs the binary with a clean HOOKD_* environment plus `env`.
async fn hookd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Spec::new(HOOKD)
        .args(args.iter().copied())
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .await
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_from_add_to_delete() {
    let hookd = Daemon::start(&[]).await;
    let receiver = Receiver::ok().await;

    // add, for people: the id and the generated secret.
    let added = hookd
        .run(&[
            "endpoints",
            "add",
            "--url",
            &receiver.url(),
            "--event-type",
            "purchase",
        ])
        .await;
    added.assert_ok();
    assert!(
        added.stdout.contains("Registered endpoint ep_"),
        "{added:?}"
    );
    assert!(
        added.stdout.contains("secret:            whsec_"),
        "{added:?}"
    );

    // add --json with every flag: the API's endpoint, as is.
    let ep = hookd
        .json(&[
            "endpoints",
            "add",
            "--url",
            &receiver.url(),
            "--event-type",
            "payment.*",
            "--event-type",
            "refund",
            "--scheme",
            "toss",
            "--secret",
            "test_sk_secret_key_0001",
            "--bearer-token",
            "rcv-token-123",
            "--retry-schedule",
            "1s,5s",
            "--timeout",
            "5s",
            "--header",
            "X-Tenant=acme",
            "--description",
            "Payments",
            "--ordered",
            "--rate-limit",
            "2.5",
            "--disabled",
        ])
        .await;
    let id = str_of(&ep, "id").to_string();
    assert!(id.starts_with("ep_"), "{ep}");
    assert_eq!(ep["secret"], "test_sk_secret_key_0001");
    assert_eq!(ep["event_types"], json!(["payment.*", "refund"]));
    assert_eq!(ep["signature_scheme"], "toss");
    assert_eq!(ep["bearer_token"], "rcv-token-123");
    assert_eq!(ep["retry_schedule"], json!(["1s", "5s"]));
    assert_eq!(ep["timeout"], "5s");
    assert_eq!(ep["headers"], json!({"X-Tenant": "acme"}));
    assert_eq!(ep["description"], "Payments");
    assert_eq!(ep["ordered"], true);
    assert_eq!(ep["rate_limit"], 2.5);
    assert_eq!(ep["enabled"], false);
    let generated = hookd
        .json(&["endpoints", "add", "--url", &receiver.url()])
        .await;
    assert!(str_of(&generated, "secret").starts_with("whsec_"));
    assert_eq!(generated["event_types"], json!(["*"]));

    // list: a table for people, the API's page for scripts.
    let list = hookd.run(&["endpoints", "list"]).await;
    list.assert_ok();
    let header = list.stdout.lines().next().unwrap();
    for column in ["ID", "URL", "EVENT TYPES", "SCHEME", "STATUS", "ORDERED"] {
        assert!(header.contains(column), "{list:?}");
    }
    let row = list.stdout.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("payment.*, refund"), "{row}");
    assert!(row.contains("toss"), "{row}");
    assert!(row.contains("disabled"), "{row}");
    assert!(row.trim_end().ends_with("yes"), "{row}");
    let page = hookd.json(&["endpoints", "list"]).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");
    assert!(
        page["data"][1].get("secret").is_none(),
        "lists hold no secrets"
    );

    // show: every field, the secret included.
    let shown = hookd.run(&["endpoints", "show", &id]).await;
    shown.assert_ok();
    for text in [
        "test_sk_secret_key_0001",
        "1s, 5s",
        "X-Tenant: acme",
        "Payments",
    ] {
        assert!(shown.stdout.contains(text), "{text}: {shown:?}");
    }

    // enable, disable.
    let enabled = hookd.run(&["endpoints", "enable", &id]).await;
    enabled.assert_ok();
    assert!(enabled.stdout.contains(&format!("Endpoint {id} enabled")));
    assert_eq!(
        hookd.json(&["endpoints", "show", &id]).await["enabled"],
        true
    );
    let disabled = hookd.json(&["endpoints", "disable", &id]).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "disabled by an operator");
    let list = hookd.run(&["endpoints", "list"]).await;
    let row = list.stdout.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("disabled: disabled by an operator"), "{row}");

    // rotate-secret: a new secret, the old one signing for the grace; a second rotation
    // during the grace is refused with the API's message.
    let std_id = str_of(&generated, "id").to_string();
    let rotated = hookd
        .json(&["endpoints", "rotate-secret", &std_id, "--grace", "1h"])
        .await;
    assert_ne!(rotated["secret"], generated["secret"]);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    let again = hookd.run(&["endpoints", "rotate-secret", &std_id]).await;
    again.assert_fails(1, "a rotation is in progress");
    assert!(again.stderr.contains("409"), "{again:?}");
    let chosen = hookd
        .run(&[
            "endpoints",
            "rotate-secret",
            &id,
            "--grace",
            "0s",
            "--secret",
            "test_sk_secret_key_0002",
        ])
        .await;
    chosen.assert_ok();
    assert!(
        chosen.stdout.contains("test_sk_secret_key_0002"),
        "{chosen:?}"
    );
    assert!(chosen.stdout.contains("retired at once"), "{chosen:?}");

    // delete; then the id is unknown.
    let deleted = hookd.run(&["endpoints", "delete", &id]).await;
    deleted.assert_ok();
    assert!(deleted.stdout.contains(&format!("Deleted endpoint {id}")));
    hookd
        .run(&["endpoints", "show", &id])
        .await
        .assert_fails(1, "no endpoint with id");
    hookd
        .run(&["endpoints", "delete", &id])
        .await
        .assert_fails(1, "no endpoint with id");
    assert_eq!(
        hookd.json(&["endpoints", "list"]).await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The API refuses what the flags cannot check: exit 1 with its message.
    hookd
        .run(&["endpoints", "add", "--url", "ftp://example.com/x"])
        .await
        .assert_fails(1, "url must be http or https, not ftp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_resends() {
    let hookd = Daemon::start(&[]).await;
    let receiver = Receiver::start(|_, _| {
        Reply::status(500).with_body("upstream exploded\nsecond line of the body")
    })
    .await;
    let ep = hookd
        .json(&["endpoints", "add", "--url", &receiver.url()])
        .await;
    let ep_id = str_of(&ep, "id").to_string();
    for n in 1..=3 {
        hookd
            .post_event(json!({"event_type": "purchase", "event_id": format!("order-{n}"), "payload": {"orderId": n}}))
            .await;
    }

    // deliveries list --state failed --json: every delivery fails at once (no retries).
    let failed = wait_until(WAIT, "3 failed deliveries", || async {
        let page = hookd
            .json(&["deliveries", "list", "--state", "failed"])
            .await;
        let data = page["data"].as_array().unwrap().clone();
        (data.len() == 3).then_some(data)
    })
    .await;
    assert!(failed.iter().all(|d| d["endpoint_id"] == ep_id.as_str()));
    let first = failed.last().unwrap()["id"].as_i64().unwrap().to_string();

    // The table, and the filters and limit.
    let table = hookd.run(&["deliveries", "list"]).await;
    table.assert_ok();
    let header = table.stdout.lines().next().unwrap();
    for column in [
        "ID",
        "EVENT",
        "ENDPOINT",
        "TYPE",
        "STATE",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "LAST",
    ] {
        assert!(header.contains(column), "{table:?}");
    }
    assert_eq!(table.stdout.lines().count(), 4, "{table:?}");
    assert!(table.stdout.contains("HTTP 500 Internal Server Error"));
    let one = hookd
        .json(&["deliveries", "list", "--event", "order-2", "--since", "1h"])
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1, "{one}");
    let limited = hookd.json(&["deliveries", "list", "--limit", "2"]).await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 2);
    assert!(limited["next_cursor"].is_string(), "{limited}");
    let none = hookd
        .json(&["deliveries", "list", "--event-type", "refund"])
        .await;
    assert_eq!(none["data"], json!([]));
    let none = hookd
        .run(&["deliveries", "list", "--until", "2000-01-01T00:00:00Z"])
        .await;
    none.assert_ok();
    assert!(none.stdout.contains("No deliveries match."), "{none:?}");

    // deliveries show: the delivery, then its attempts with the body's first line.
    let shown = hookd.run(&["deliveries", "show", &first]).await;
    shown.assert_ok();
    for text in [
        "event:         order-1",
        r#"payload:       {"orderId":1}"#,
        "ATTEMPT",
        "RESPONSE",
        "http_error",
        "upstream exploded",
    ] {
        assert!(shown.stdout.contains(text), "{text}: {shown:?}");
    }
    assert!(!shown.stdout.contains("second line"), "{shown:?}");
    let detail = hookd.json(&["deliveries", "show", &first]).await;
    assert_eq!(detail["attempt_log"].as_array().unwrap().len(), 1);

    // resend ID: one manual attempt, now answered 200.
    receiver.set_script(|_, _| Reply::ok().with_body("thanks"));
    let resent = hookd.run(&["resend", &first]).await;
    resent.assert_ok();
    assert!(
        resent
            .stdout
            // pending, or already in flight or done: the dispatcher may be that quick.
            .contains(&format!("Delivery {first} resent: now")),
        "{resent:?}"
    );
    wait_until(WAIT, "the resent delivery to succeed", || async {
        let d = hookd.json(&["deliveries", "show", &first]).await;
        (d["state"] == "succeeded").then_some(())
    })
    .await;
    let log = hookd.json(&["deliveries", "show", &first]).await["attempt_log"].clone();
    assert_eq!(log[1]["trigger"], "manual", "{log}");

    // Bulk: resend --state failed starts the job and follows it to done.
    let bulk = hookd.run(&["resend", "--state", "failed"]).await;
    bulk.assert_ok();
    assert!(
        bulk.stdout
            .contains("done: 2 of 2 matched deliveries resent"),
        "{bulk:?}"
    );
    wait_until(WAIT, "every delivery to succeed", || async {
        let page = hookd.json(&["deliveries", "list"]).await;
        let data = page["data"].as_array().unwrap().clone();
        (data.len() == 3 && data.iter().all(|d| d["state"] == "succeeded")).then_some(())
    })
    .await;
    for d in hookd.json(&["deliveries", "list"]).await["data"]
        .as_array()
        .unwrap()
    {
        assert_eq!(d["attempts"], 2, "{d}");
    }

    // --json: the finished job as the API shows it; nothing left to match.
    let job = hookd.json(&["resend", "--state", "failed"]).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["matched"], 0);
    assert_eq!(job["filter"]["state"], "failed");
    // --no-wait --json: the API's answer to the start, as is; --job follows it.
    let started = hookd
        .json(&["resend", "--event", "order-3", "--no-wait"])
        .await;
    assert_eq!(started["matched"], 1, "{started}");
    let job_id = str_of(&started, "job_id");
    let followed = hookd.json(&["resend", "--job", job_id]).await;
    assert_eq!(followed["state"], "done");
    assert_eq!(followed["resent"], 1);

    // Unknown ids: exit 1 with the API's message.
    hookd
        .run(&["resend", "999"])
        .await
        .assert_fails(1, "no delivery with id \"999\"");
    hookd
        .run(&["deliveries", "show", "999"])
        .await
        .assert_fails(1, "no delivery");

    // Without --url the API is found through HOOKD_LISTEN, as `hookd serve` reads it.
    let listen = hookd.base.trim_start_matches("http://");
    let run = self::hookd(
        &["deliveries", "list", "--json"],
        &[("HOOKD_LISTEN", listen)],
    )
    .await;
    run.assert_ok();
    let page: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_sent() {
    let hookd = Daemon::start(&[("HOOKD_ADMIN_TOKEN", "sesame-0123456789")]).await;
    hookd
        .run(&["endpoints", "list", "--token", "wrong"])
        .await
        .assert_fails(1, "missing or wrong admin token");
    let missing = hookd.run(&["deliveries", "list"]).await;
    missing.assert_fails(1, "HTTP 401");
    assert!(missing.stderr.contains("--token"), "{missing:?}");
    hookd
        .run(&["endpoints", "list", "--token", "sesame-0123456789"])
        .await
        .assert_ok();
    // The token defaults to HOOKD_ADMIN_TOKEN, as `hookd serve` reads it.
    let run = hookd_with_base(
        &hookd,
        &["endpoints", "list"],
        &[("HOOKD_ADMIN_TOKEN", "sesame-0123456789")],
    )
    .await;
    run.assert_ok();
}

async fn hookd_with_base(daemon: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--url", &daemon.base]);
    hookd(&all, env).await
}

/// Ctrl-C while following a bulk resend stops following, says so, exits 130, and leaves
/// the job running. The job is held back on purpose: 2500 parked deliveries, a receiver
/// that hangs, one attempt at a time, so it stops at its due limit (a claim's worth, 1000)
/// of manual resends waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_following_not_the_job() {
    let hookd = Daemon::start(&[("HOOKD_CONCURRENCY", "1"), ("HOOKD_CLAIM_BATCH", "1000")]).await;
    let receiver = Receiver::start(|_, _| Reply::hang(Duration::from_secs(5))).await;
    let ep = hookd
        .json(&["endpoints", "add", "--url", &receiver.url(), "--disabled"])
        .await;
    let ep_id = str_of(&ep, "id").to_string();
    hookd
        .db
        .exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             INSERT INTO hookd_outbox (event_type, payload, endpoint_id) \
             SELECT 'bulk', '{{\"n\":' || i || '}}', '{ep_id}' FROM n;"
        ))
        .await;
    // Also the list following next_cursor across pages of 1000.
    wait_until(WAIT, "2500 parked deliveries", || async {
        let page = hookd
            .json(&[
                "deliveries",
                "list",
                "--endpoint",
                &ep_id,
                "--limit",
                "3000",
            ])
            .await;
        (page["data"].as_array().unwrap().len() == 2500).then_some(())
    })
    .await;

    let mut cli = Spec::new(HOOKD)
        .name("resend")
        .args(["resend", "--endpoint", &ep_id, "--url", &hookd.base])
        .start()
        .await;
    // The job runs (its resends reach the receiver) and then holds at the due limit.
    receiver.wait_for(1, WAIT).await;
    let job_resent = || async {
        let page = hookd
            .json(&[
                "deliveries",
                "list",
                "--endpoint",
                &ep_id,
                "--state",
                "pending",
                "--limit",
                "3000",
            ])
            .await;
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["next_attempt_at"].is_string())
            .count()
    };
    wait_until(WAIT, "the job to hold at the due limit", || async {
        (job_resent().await >= 999).then_some(())
    })
    .await;
    cli.signal("INT");
    let status = cli.wait_exit(WAIT).await;
    let stderr = cli.stderr();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("Stopped following resend job rsj_"),
        "{stderr}"
    );
    assert!(stderr.contains("the job keeps running"), "{stderr}");
    let job_id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("rsj_"))
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let job: Value = reqwest::get(format!("{}/v1/resend-jobs/{job_id}", hookd.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(job["matched"], 2500, "{job}");
}

#[tokio::test]
async fn an_unreachable_api_names_the_url() {
    let url = format!("http://127.0.0.1:{}", hookd_testkit::free_port());
    for args in [
        vec!["endpoints", "list"],
        vec!["deliveries", "list"],
        vec!["resend", "1"],
    ] {
        let mut all = args.clone();
        all.extend(["--url", &url]);
        let run = hookd(&all, &[]).await;
        run.assert_fails(1, &format!("cannot reach hookd at {url}"));
    }
}

#[tokio::test]
async fn bad_flags_exit_2() {
    for args in [
        vec!["endpoints", "add"],
        vec!["endpoints", "add", "--url", "http://x", "--scheme", "hmac"],
        vec!["endpoints", "add", "--url", "http://x", "--timeout", "soon"],
        vec![
            "endpoints",
            "add",
            "--url",
            "http://x",
            "--header",
            "X-Tenant",
        ],
        vec!["endpoints", "show"],
        vec!["endpoints", "rotate-secret", "ep_1", "--grace", "a while"],
        vec!["deliveries", "list", "--state", "lost"],
        vec!["deliveries", "list", "--since", "yesterday"],
        vec!["deliveries", "list", "--limit", "0"],
        vec!["deliveries", "list", "--url", "not a url"],
        vec!["resend"],
        vec!["resend", "1", "--state", "failed"],
        vec!["resend", "--all", "--state", "failed"],
    ] {
        let run = hookd(&args, &[]).await;
        assert_eq!(run.code(), Some(2), "{args:?}: {run:?}");
    }
}

#[test]
fn every_api_command_has_help() {
    for args in [
        vec!["endpoints", "--help"],
        vec!["endpoints", "list", "--help"],
        vec!["endpoints", "add", "--help"],
        vec!["endpoints", "show", "--help"],
        vec!["endpoints", "disable", "--help"],
        vec!["endpoints", "enable", "--help"],
        vec!["endpoints", "rotate-secret", "--help"],
        vec!["endpoints", "delete", "--help"],
        vec!["deliveries", "list", "--help"],
        vec!["deliveries", "show", "--help"],
        vec!["resend", "--help"],
        vec!["tenants", "token", "create", "--help"],
        vec!["tenants", "token", "revoke", "--help"],
    ] {
        let out = std::process::Command::new(HOOKD)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: hookd"), "{text}");
        if args.len() >= 3 || args[0] == "resend" {
            for flag in ["--token", "--json"] {
                assert!(text.contains(flag), "{args:?} lacks {flag}");
            }
            assert!(text.contains("--url") || text.contains("--api-url"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_local_api_whatever_the_proxy_variables_say() {
    let daemon = Daemon::start(&[]).await;
    let receiver = Receiver::ok().await;
    // A proxy that is not there: a command that used it would fail to connect.
    let dead = format!("http://127.0.0.1:{}", hookd_testkit::free_port());
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, dead.as_str()))
    .collect();
    let added = hookd(
        &[
            "endpoints",
            "add",
            "--url",
            &receiver.url(),
            "--api-url",
            &daemon.base,
            "--json",
        ],
        &env,
    )
    .await;
    added.assert_ok();
    let ep: Value = serde_json::from_str(&added.stdout).unwrap();
    hookd(&["endpoints", "list", "--url", &daemon.base], &env)
        .await
        .assert_ok();
    let sent = hookd(
        &[
            "send-test",
            "--endpoint",
            str_of(&ep, "id"),
            "--url",
            &daemon.base,
        ],
        &env,
    )
    .await;
    sent.assert_ok();
    assert!(sent.stdout.contains("succeeded: HTTP 200"), "{sent:?}");
}

/// `endpoints disable|enable|rotate-secret|delete` read the endpoint and send its ETag in
/// `If-Match`; a 412 (someone changed it in between) is reported as such, and nothing is
/// retried behind the operator's back. Against a stand-in API that always answers 412.
#[tokio::test]
async fn endpoint_changes_send_the_etag_they_read() {
    let api = Receiver::start(|_, r| {
        if r.method == "GET" {
            let body = json!({ "id": "ep_x", "url": "http://127.0.0.1:9/", "enabled": true });
            Reply::ok()
                .with_header("etag", "\"v7\"")
                .with_body(body.to_string())
        } else {
            let body = json!({ "error": { "code": "precondition_failed", "message": "changed" } });
            Reply::status(412)
                .with_header("etag", "\"v8\"")
                .with_body(body.to_string())
        }
    })
    .await;
    let base = api.base();

    let cases = [
        (
            vec!["endpoints", "disable", "ep_x"],
            "PATCH",
            "/v1/endpoints/ep_x",
        ),
        (
            vec!["endpoints", "enable", "ep_x"],
            "PATCH",
            "/v1/endpoints/ep_x",
        ),
        (
            vec!["endpoints", "rotate-secret", "ep_x"],
            "POST",
            "/v1/endpoints/ep_x/rotate-secret",
        ),
        (
            vec!["endpoints", "delete", "ep_x"],
            "DELETE",
            "/v1/endpoints/ep_x",
        ),
    ];
    for (args, method, path) in cases {
        let before = api.count();
        let mut all = args.clone();
        all.extend(["--url", &base]);
        let run = hookd(&all, &[]).await;
        run.assert_fails(
            1,
            "endpoint ep_x changed since it was read; run the command again",
        );
        let requests: Vec<(String, String, Option<String>)> = api.received()[before..]
            .iter()
            .map(|r| {
                let if_match = r.header("if-match").map(str::to_string);
                (r.method.clone(), r.path.clone(), if_match)
            })
            .collect();
        assert_eq!(
            requests,
            [
                ("GET".to_string(), "/v1/endpoints/ep_x".to_string(), None),
                (
                    method.to_string(),
                    path.to_string(),
                    Some("\"v7\"".to_string())
                ),
            ],
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_tokens_and_the_tenant_filters() {
    let daemon = Daemon::start(&[]).await;
    let mine = daemon
        .json(&[
            "endpoints",
            "add",
            "--url",
            "http://127.0.0.1:9/a",
            "--tenant",
            "merchant_42",
            "--disabled",
        ])
        .await;
    assert_eq!(mine["tenant_id"], "merchant_42");
    daemon
        .json(&[
            "endpoints",
            "add",
            "--url",
            "http://127.0.0.1:9/w",
            "--disabled",
        ])
        .await;
    let listed = daemon
        .json(&["endpoints", "list", "--tenant", "merchant_42"])
        .await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(e, "id"))
        .collect();
    assert_eq!(ids, [str_of(&mine, "id")]);
    daemon
        .post_event(json!({"event_type": "x", "payload": {}, "tenant_id": "merchant_42", "endpoint_id": mine["id"]}))
        .await;
    daemon
        .post_event(json!({"event_type": "x", "payload": {}}))
        .await;
    let log = daemon
        .json(&["deliveries", "list", "--tenant", "merchant_42"])
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["data"][0]["tenant_id"], "merchant_42");
    let job = daemon
        .json(&["resend", "--tenant", "merchant_42", "--no-wait"])
        .await;
    assert_eq!(job["matched"], 1, "{job}");

    // send-test to a tenant's endpoint sends an event of that tenant.
    let sent = daemon
        .run(&[
            "send-test",
            "--endpoint",
            str_of(&mine, "id"),
            "--wait",
            "1s",
        ])
        .await;
    assert!(sent.stdout.contains("sent to endpoint"), "{sent:?}");
    assert!(!sent.stderr.contains("another tenant"), "{sent:?}");
    let created = daemon
        .run(&[
            "tenants",
            "token",
            "create",
            "merchant_42",
            "--expires-in",
            "1h",
        ])
        .await;
    created.assert_ok();
    let token = created
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("hkt_"))
        .unwrap_or_else(|| panic!("no token in {created:?}"))
        .to_string();
    assert!(
        created
            .stdout
            .contains(&format!("{}/portal#token={token}", daemon.base)),
        "{created:?}"
    );
    // The token works as a bearer, confined to its tenant; revoked, it does not.
    let http = reqwest::Client::new();
    let page: Value = http
        .get(format!("{}/v1/endpoints", daemon.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    daemon
        .run(&["tenants", "token", "revoke", "merchant_42"])
        .await
        .assert_ok();
    let status = http
        .get(format!("{}/v1/endpoints", daemon.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    daemon
        .run(&["tenants", "token", "create", "not a tenant"])
        .await
        .assert_fails(1, "tenant_id");
}
