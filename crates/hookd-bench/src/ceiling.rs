//! The ceiling: the same receiver driven by a plain keep-alive HTTP client loop with no
//! database, at hookd's default concurrency, signing each request as hookd does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::receiver::{self, Expect, Receiver};

pub struct Ceiling {
    pub requests: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub invalid_signatures: u64,
    pub client_cpu_secs: f64,
}

/// Sends `n` signed POSTs with `concurrency` tasks sharing one keep-alive client.
pub async fn run(
    n: usize,
    concurrency: usize,
    payload_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Ceiling> {
    let key: Vec<u8> = (0..32u8).collect();
    let base = Instant::now();
    let receiver = Receiver::start(
        base,
        Expect {
            prefix: "c-".into(),
            events: n,
            keys: vec![key.clone()],
            fail_permille: 0,
            max_failures: 0,
        },
    )
    .await?;
    // Configured like hookd's sender (dispatch/attempt.rs).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("hookd-bench-ceiling")
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = receiver.url(0);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = crate::hookd::cpu_secs("self").unwrap_or(0.0);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, key) = (client.clone(), url.clone(), next.clone(), key.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let id = format!("c-{i}");
                let body = crate::db::payload(i, payload_bytes);
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    .to_string();
                let signature = format!("v1,{}", receiver::sign(&key, &id, &ts, body.as_bytes()));
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .context("ceiling request")?;
                let _ = response.bytes().await;
            }
        });
    }
    let all = async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(r) => r?,
        Err(_) => bail!("the ceiling run did not finish within {timeout:?}"),
    }
    let secs = started.elapsed().as_secs_f64();
    let state = &receiver.state;
    if state.delivered() != n as u64 {
        bail!("the ceiling run delivered {} of {n}", state.delivered());
    }
    Ok(Ceiling {
        requests: n as u64,
        secs,
        per_sec: n as f64 / secs,
        invalid_signatures: state.invalid_signatures.load(Ordering::Relaxed),
        client_cpu_secs: crate::hookd::cpu_secs("self").unwrap_or(0.0) - cpu_before,
    })
}
