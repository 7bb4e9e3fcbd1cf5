//! The `history` scenario: delivery with a long history in the tables.
//!
//! Besides the measured endpoint, an ordered endpoint (sending to the receiver's `/sink`)
//! has `preload` finished deliveries, a head delivery waiting a day for its retry and `held`
//! deliveries behind it; it subscribes to the measured events too, so each of them is also
//! held for it. hookd runs its rescue job (which lets stranded held deliveries go) every
//! second. Measured: that job's duration (`hookd_maintenance_job_duration_seconds{job="rescue"}`,
//! or the store call `promote_stranded` from a hookd without that metric), throughput
//! against the same run on empty tables, and, while a bulk resend of the whole history
//! runs, the longest pause between two deliveries to the measured endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::db::{self, Commits, Conn, Insert, Kind, Preload};
use crate::hookd::Hookd;
use crate::receiver::Receiver;

/// The event type of the preloaded history, which the bulk resend selects.
pub const HISTORY_TYPE: &str = "bench.history";
/// hookd runs the rescue job every second (the scheduler's resolution).
pub const RESCUE_EVERY_SECOND: (&str, &str) = ("HOOKD_RESCUE_SCHEDULE", "* * * * * *");

const JOB: (&str, &str) = ("hookd_maintenance_job_duration_seconds", "job=\"rescue\"");
const STORE_CALL: (&str, &str) = (
    "hookd_store_query_duration_seconds",
    "operation=\"promote_stranded\"",
);

/// What the history scenario measured besides throughput.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryFigures {
    /// Held deliveries of the ordered endpoint before the measured events.
    pub held: u64,
    /// The rescue job's runs after hookd started on the loaded tables, before the events.
    pub promote_idle: Option<JobTimes>,
    /// Its runs while the measured events were delivered.
    pub promote_busy: Option<JobTimes>,
    pub resend: Option<ResendFigures>,
    pub resend_error: Option<String>,
}

/// Durations of the runs of the rescue job in a window, from its histogram.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobTimes {
    /// The histogram read.
    pub series: String,
    pub runs: u64,
    pub mean_ms: f64,
    /// The smallest bucket bound every run stayed within; `None` above the largest,
    /// `largest_bound_ms`.
    pub max_ms_at_most: Option<f64>,
    pub largest_bound_ms: f64,
}

impl JobTimes {
    /// The longest run, as far as the buckets tell: `<= 50 ms`, `> 5000 ms`.
    pub fn max_label(&self) -> String {
        // Bounds below 1 ms (0.5) keep their fraction.
        let ms = |v: f64| format!("{}", (v * 1000.0).round() / 1000.0);
        match self.max_ms_at_most {
            Some(v) => format!("<= {} ms", ms(v)),
            None => format!("> {} ms", ms(self.largest_bound_ms)),
        }
    }
}

/// The bulk resend of the history while events to the measured endpoint flow.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResendFigures {
    /// Deliveries the job matched.
    pub matched: i64,
    /// How long `POST /v1/deliveries/resend` took to answer.
    pub create_ms: f64,
    /// Resent by the job by the end of the window, and received by the sink.
    pub resent: i64,
    pub sink_received: u64,
    /// Events to the measured endpoint during the window (`POST /v1/events`), and their rate.
    pub events: usize,
    pub rate: f64,
    pub secs: f64,
    /// The longest time between two consecutive deliveries to the measured endpoint, and
    /// when it began, in seconds after the bulk resend was asked for.
    pub max_gap_ms: f64,
    pub max_gap_at_s: f64,
    /// When the resend was asked for, in milliseconds since the Unix epoch: to find the
    /// longest gap in the database's log.
    pub asked_at_unix_ms: u64,
    /// The same before the bulk resend was asked for (the phase's first `control`): the
    /// reference.
    pub max_gap_before_ms: f64,
    /// 202-to-receipt latency of those events.
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Loads the ordered endpoint's history (hookd stopped): `preload` finished deliveries,
/// then a head that waits a day for its retry and `held` deliveries behind it.
pub async fn load(
    conn: &mut Conn,
    kind: Kind,
    ordered: &str,
    preload: u64,
    held: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    if preload > 0 {
        db::preload(
            conn,
            kind,
            Preload::Finished,
            "",
            &[ordered.to_string()],
            preload,
            payload_bytes,
            HISTORY_TYPE,
        )
        .await
        .context("preloading finished deliveries")?;
    }
    let (series, now) = match kind {
        Kind::Sqlite => (
            format!(
                "WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s WHERE g < {held}) "
            ),
            "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        ),
        Kind::Postgres => (
            format!("WITH s(g) AS (SELECT generate_series(0, {held})) "),
            "hookd_now_ms()",
        ),
    };
    // g = 0 is the head: pending, one attempt made, retried in a day. The rest are held.
    let begin = match kind {
        Kind::Sqlite => "BEGIN IMMEDIATE;",
        Kind::Postgres => "BEGIN;",
    };
    conn.execute(&format!(
        "{begin}
         {series} INSERT INTO hookd_events (event_id, event_type, payload, created_at)
         SELECT 'held-' || g, 'bench.held', '{{}}', {now} FROM s;
         {series} INSERT INTO hookd_deliveries (event_id, endpoint_id, event_type, state, attempts,
             auto_attempts, next_attempt_at, held, created_at, updated_at)
         SELECT 'held-' || g, '{ordered}', 'bench.held', 'pending',
             CASE WHEN g = 0 THEN 1 ELSE 0 END, CASE WHEN g = 0 THEN 1 ELSE 0 END,
             CASE WHEN g = 0 THEN {now} + 86400000 END, g > 0, {now}, {now} FROM s ORDER BY g;
         COMMIT;"
    ))
    .await
    .context("loading the held deliveries")?;
    Ok(())
}

/// Scrapes `hookd` until the rescue job has run `runs` times, or `limit` passed.
pub async fn wait_for_rescues(
    hookd: &Hookd,
    http: &reqwest::Client,
    runs: u64,
    limit: Duration,
) -> BTreeMap<String, f64> {
    let until = Instant::now() + limit;
    loop {
        let scrape = hookd.metrics(http).await;
        let done = job_times(&BTreeMap::new(), &scrape).is_some_and(|t| t.runs >= runs);
        if done || Instant::now() >= until {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rescue job's runs between two scrapes: its own histogram, or the store call's.
pub fn job_times(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Option<JobTimes> {
    let key = |(name, label): (&str, &str), part: &str| format!("{name}_{part}{{{label}}}");
    let series = if after.contains_key(&key(JOB, "count")) {
        JOB
    } else {
        STORE_CALL
    };
    histogram_times(series, before, after)
}

/// The observations of histogram `(name, label)` between two scrapes: how many, their mean,
/// and the smallest bucket bound they all stayed within.
pub fn histogram_times(
    (name, label): (&str, &str),
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Option<JobTimes> {
    let key = |(name, label): (&str, &str), part: &str| format!("{name}_{part}{{{label}}}");
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let runs = delta(&key((name, label), "count"));
    if runs < 1.0 {
        return None;
    }
    let sum = delta(&key((name, label), "sum"));
    let prefix = format!("{name}_bucket{{{label},le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .keys()
        .filter_map(|k| {
            let le: f64 = k.strip_prefix(&prefix)?.strip_suffix("\"}")?.parse().ok()?;
            Some((le, delta(k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max_ms_at_most = buckets
        .iter()
        .find(|(le, n)| le.is_finite() && *n >= runs)
        .map(|(le, _)| le * 1000.0);
    let largest_bound_ms = buckets
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max)
        * 1000.0;
    Some(JobTimes {
        series: format!("{name}{{{label}}}"),
        runs: runs as u64,
        mean_ms: sum * 1000.0 / runs,
        max_ms_at_most,
        largest_bound_ms,
    })
}

/// What the bulk resend phase needs.
pub struct ResendPhase<'a> {
    pub hookd: &'a Hookd,
    pub http: &'a reqwest::Client,
    pub receiver: &'a Receiver,
    pub commits: Arc<Commits>,
    pub base: Instant,
    pub prefix: &'a str,
    /// Events `from..from + events` go to the measured endpoint, at `rate`/s.
    pub from: usize,
    pub events: usize,
    pub rate: f64,
    /// How long the events flow before the bulk resend is asked for (at most half the
    /// phase): the reference window.
    pub control: Duration,
    pub payload_bytes: usize,
    pub timeout: Duration,
}

/// Sends events to the measured endpoint through the API at a steady rate, starts a bulk
/// resend of the history `control` in, and measures the longest pause between two of
/// their deliveries, before the resend (the reference) and after it.
pub async fn resend_phase(p: ResendPhase<'_>, target: db::Target) -> anyhow::Result<ResendFigures> {
    let end = p.from + p.events;
    let sink_before = p
        .receiver
        .state
        .sink
        .load(std::sync::atomic::Ordering::Relaxed);
    let producing = {
        let (api, prefix, commits) = (
            p.hookd.base_url.clone(),
            p.prefix.to_string(),
            p.commits.clone(),
        );
        let (from, rate, size, base) = (p.from, p.rate, p.payload_bytes, p.base);
        tokio::spawn(async move {
            db::produce(
                &target,
                &api,
                &prefix,
                from,
                end,
                size,
                Insert::Api(rate),
                16,
                base,
                commits,
            )
            .await
        })
    };
    let started = Instant::now();
    tokio::time::sleep(
        p.control
            .min(Duration::from_secs_f64(p.events as f64 / p.rate / 2.0)),
    )
    .await;
    let asked = Instant::now();
    let asked_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let asked_ns = asked.duration_since(p.base).as_nanos() as u64;
    let response = p
        .http
        .post(format!("{}/v1/deliveries/resend", p.hookd.base_url))
        .timeout(Duration::from_secs(120))
        .json(&serde_json::json!({ "event_type": HISTORY_TYPE }))
        .send()
        .await
        .context("POST /v1/deliveries/resend")?;
    let create_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.as_u16() != 202 {
        bail!("POST /v1/deliveries/resend answered {status}: {body}");
    }
    let job_id = body["job_id"].as_str().unwrap_or_default().to_string();
    tokio::time::timeout(p.timeout, producing)
        .await
        .context("the producers did not finish in time")?
        .context("the producers panicked")??;
    let deadline = Instant::now() + p.timeout;
    while p.receiver.state.delivered() < end as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let job: serde_json::Value = p
        .http
        .get(format!("{}/v1/resend-jobs/{job_id}", p.hookd.base_url))
        .send()
        .await
        .context("GET /v1/resend-jobs/{id}")?
        .json()
        .await
        .unwrap_or_default();

    let mut receipts: Vec<(usize, u64)> = p
        .receiver
        .state
        .receipts()
        .filter(|(i, _)| (p.from..end).contains(i))
        .collect();
    if receipts.len() < p.events {
        bail!(
            "{} of {} events delivered during the bulk resend",
            receipts.len(),
            p.events
        );
    }
    receipts.sort_by_key(|(_, t)| *t);
    let gaps = || receipts.windows(2).map(|w| (w[0].1, w[1].1 - w[0].1));
    let (gap_at, max_gap_ns) = gaps().max_by_key(|(_, gap)| *gap).unwrap_or((asked_ns, 0));
    let max_gap_before_ns = gaps()
        .filter(|(at, gap)| at + gap <= asked_ns)
        .map(|(_, gap)| gap)
        .max()
        .unwrap_or(0);
    let mut latencies: Vec<u64> = receipts
        .iter()
        .filter_map(|(i, t)| {
            let c = p.commits.at[*i].load(std::sync::atomic::Ordering::Acquire);
            (c != 0).then(|| t.saturating_sub(c - 1))
        })
        .collect();
    latencies.sort_unstable();
    let p99 = latencies
        .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0);
    Ok(ResendFigures {
        matched: body["matched"].as_i64().unwrap_or(0),
        create_ms,
        resent: job["resent"].as_i64().unwrap_or(0),
        sink_received: p
            .receiver
            .state
            .sink
            .load(std::sync::atomic::Ordering::Relaxed)
            - sink_before,
        events: p.events,
        rate: p.rate,
        secs,
        max_gap_ms: max_gap_ns as f64 / 1e6,
        max_gap_at_s: (gap_at as f64 - asked_ns as f64) / 1e9,
        asked_at_unix_ms,
        max_gap_before_ms: max_gap_before_ns as f64 / 1e6,
        p99_ms: p99 as f64 / 1e6,
        max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_times_come_from_the_histogram_in_a_window() {
        let scrape = |count: f64, sum: f64, buckets: &[(&str, f64)]| {
            let mut m = BTreeMap::new();
            m.insert(format!("{}_count{{{}}}", JOB.0, JOB.1), count);
            m.insert(format!("{}_sum{{{}}}", JOB.0, JOB.1), sum);
            for (le, n) in buckets {
                m.insert(format!("{}_bucket{{{},le=\"{le}\"}}", JOB.0, JOB.1), *n);
            }
            m
        };
        let before = scrape(2.0, 0.004, &[("0.005", 2.0), ("0.05", 2.0), ("+Inf", 2.0)]);
        let after = scrape(5.0, 0.064, &[("0.005", 2.0), ("0.05", 5.0), ("+Inf", 5.0)]);
        let t = job_times(&before, &after).unwrap();
        assert_eq!((t.runs, t.max_ms_at_most), (3, Some(50.0)));
        assert!((t.mean_ms - 20.0).abs() < 1e-9);
        assert!(job_times(&after, &after).is_none(), "no run in the window");
        // A hookd without the job's metric: the store call's.
        let mut old = BTreeMap::new();
        old.insert(format!("{}_count{{{}}}", STORE_CALL.0, STORE_CALL.1), 1.0);
        old.insert(format!("{}_sum{{{}}}", STORE_CALL.0, STORE_CALL.1), 400.0);
        old.insert(
            format!("{}_bucket{{{},le=\"5\"}}", STORE_CALL.0, STORE_CALL.1),
            0.0,
        );
        old.insert(
            format!("{}_bucket{{{},le=\"+Inf\"}}", STORE_CALL.0, STORE_CALL.1),
            1.0,
        );
        let t = job_times(&BTreeMap::new(), &old).unwrap();
        assert_eq!((t.runs, t.max_ms_at_most), (1, None));
        assert_eq!(t.max_label(), "> 5000 ms");
        let fast = JobTimes {
            max_ms_at_most: Some(0.5),
            ..t.clone()
        };
        assert_eq!(fast.max_label(), "<= 0.5 ms");
        assert!(t.series.contains("promote_stranded"));
    }
}
