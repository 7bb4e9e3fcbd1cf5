//! `hookd send-test`: sends a sample event to one endpoint through the admin API and
//! reports how its delivery went.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::cli::client::{base_url, no_proxy_for_loopback};
use crate::cli::output::describe;
use crate::duration::{format_duration, parse_duration};
use crate::Config;

/// Send a sample `hookd.test` event to one endpoint and show how its delivery went.
#[derive(clap::Args, Debug, Clone)]
pub struct SendTestArgs {
    /// The endpoint's id
    #[arg(long, value_name = "ID")]
    pub endpoint: String,
    /// Base URL of hookd's admin API [default: http:// + HOOKD_LISTEN, i.e. http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Admin token [default: HOOKD_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// How long to wait for the delivery's outcome, e.g. 30s
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// `hookd send-test`: 0 when the delivery succeeded, 1 when it failed or is still pending
/// after `--wait`, 2 for a configuration error.
pub fn main(args: SendTestArgs, config_file: Option<&Path>) -> ExitCode {
    // The admin API's address and token default to the daemon's own settings (TOML file,
    // then HOOKD_* variables), so the command works unchanged next to `hookd serve`.
    let (url, token) = match (&args.url, &args.token) {
        (Some(url), Some(token)) => (url.clone(), Some(token.clone())),
        _ => match Config::load(config_file, Vec::new()) {
            Ok(config) => (
                args.url.clone().unwrap_or_else(|| base_url(config.listen)),
                args.token.clone().or(config.admin_token),
            ),
            Err(e) => {
                eprintln!("hookd: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let url = url.trim_end_matches('/').to_string();
    let token = token.filter(|t| !t.is_empty());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookd send-test: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(send_test(&url, token.as_deref(), &args.endpoint, args.wait)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hookd send-test: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The sample event's payload.
pub fn sample_payload() -> Value {
    json!({
        "message": "A test event sent by `hookd send-test`",
        "sent_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "sample": {
            "order_id": "order_test_0001",
            "amount": 9900,
            "currency": "KRW",
            "status": "DONE"
        }
    })
}

struct Api<'a> {
    http: reqwest::Client,
    base: &'a str,
    token: Option<&'a str>,
}

impl Api<'_> {
    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let request = match self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach hookd at {} ({e}); is `hookd serve` running? (--url)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            let hint = if status == 401 {
                " (set --token or HOOKD_ADMIN_TOKEN)"
            } else {
                ""
            };
            anyhow::bail!("hookd answered {status}: {message}{hint}");
        }
        Ok((status, body))
    }
}

async fn send_test(
    base: &str,
    token: Option<&str>,
    endpoint: &str,
    wait: Duration,
) -> anyhow::Result<bool> {
    let url = url::Url::parse(base).map_err(|e| anyhow::anyhow!("{base:?} is not a URL: {e}"))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let api = Api {
        http: no_proxy_for_loopback(http, &url).build()?,
        base,
        token,
    };
    // The event belongs to the endpoint's tenant: an event is delivered within its tenant.
    let mut show = url.clone();
    show.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base:?} cannot be a base URL"))?
        .pop_if_empty()
        .extend(["v1", "endpoints", endpoint]);
    let (_, target) = api.call(api.http.get(show)).await?;
    let mut event = json!({
        "event_type": "hookd.test",
        "payload": sample_payload(),
        "endpoint_id": endpoint,
    });
    if let Some(tenant) = target["tenant_id"].as_str() {
        event["tenant_id"] = json!(tenant);
    }
    let (_, accepted) = api
        .call(api.http.post(format!("{base}/v1/events")).json(&event))
        .await?;
    let event_id = accepted["event_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("unexpected answer from hookd: {accepted}"))?
        .to_string();
    println!("event {event_id} sent to endpoint {endpoint}");
    if accepted["deliveries"].as_u64() == Some(0) {
        println!("no delivery was created (is the endpoint disabled?)");
        return Ok(false);
    }

    let deadline = Instant::now() + wait;
    let list = format!("{base}/v1/deliveries");
    let mut seen_attempts = 0;
    loop {
        let (_, page) = api
            .call(
                api.http
                    .get(&list)
                    .query(&[("event_id", event_id.as_str())]),
            )
            .await?;
        let delivery = page["data"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["endpoint_id"] == endpoint))
            .cloned();
        if let Some(d) = delivery {
            let state = d["state"].as_str().unwrap_or("");
            let attempts = d["attempts"].as_u64().unwrap_or(0);
            if state == "pending" && attempts > seen_attempts && !d["last_error"].is_null() {
                // A failed attempt with a retry to come: say so while waiting.
                println!(
                    "attempt {attempts} failed: {}; next attempt at {}",
                    describe(&d),
                    d["next_attempt_at"].as_str().unwrap_or("?")
                );
                seen_attempts = attempts;
            }
            match state {
                "succeeded" => {
                    println!(
                        "delivery {} succeeded: {} (attempts: {attempts})",
                        d["id"],
                        describe(&d)
                    );
                    return Ok(true);
                }
                "failed" => {
                    println!(
                        "delivery {} failed: {} (attempts: {attempts}); see GET /v1/deliveries/{}",
                        d["id"],
                        describe(&d),
                        d["id"]
                    );
                    return Ok(false);
                }
                _ if Instant::now() >= deadline => {
                    println!(
                        "delivery {} still {state} after {} (attempts: {attempts}{})",
                        d["id"],
                        format_duration(wait),
                        match d["last_error"].as_str() {
                            Some(e) => format!(", last error: {e}"),
                            None => String::new(),
                        }
                    );
                    return Ok(false);
                }
                _ => {}
            }
        } else if Instant::now() >= deadline {
            println!("no delivery for event {event_id} appeared within the wait");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
