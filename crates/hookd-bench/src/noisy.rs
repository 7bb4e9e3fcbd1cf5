//! The `noisy-neighbour` scenario: does one tenant's backlog hold up another's fresh events?
//!
//! Tenant A has `--backlog`-sized due deliveries (default 50,000) over 20 endpoints,
//! bulk-loaded before hookd starts; every endpoint answers 200 after 30 ms. Run once with A
//! alone (its drain rate: deliveries over the time from hookd's start to A's last receipt),
//! then again with B: 20 events inserted into the outbox one at a time, 100 ms apart,
//! starting 0.5 s after hookd's start, each addressed to B's endpoint. Reported: the p99
//! (and p50, max) of B's commit-to-receipt and A's drain rate against the run alone. Three
//! variants: A and B two tenants, A and B two endpoints of one tenant, and two tenants with
//! A's backlog still in the outbox (rows addressed to its endpoints, not yet ingested).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::db::{self, BenchDb, Conn, Kind, Preload};
use crate::hookd::Hookd;
use crate::run::Ctx;

const A_ENDPOINTS: usize = 20;
/// A backlog of at least one delivery per endpoint.
pub const MIN_BACKLOG: usize = A_ENDPOINTS;
const B_EVENTS: usize = 20;
const ANSWER_AFTER: Duration = Duration::from_millis(30);
const B_START: Duration = Duration::from_millis(500);
const B_EVERY: Duration = Duration::from_millis(100);

/// Whether A and B are two tenants or two endpoints of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    TwoTenants,
    OneTenant,
    /// Two tenants, A's backlog in the outbox.
    Outbox,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::TwoTenants => "two tenants",
            Variant::OneTenant => "two endpoints of one tenant",
            Variant::Outbox => "two tenants, A in the outbox",
        }
    }
}

/// One variant's figures on one database.
#[derive(Debug, Clone, Serialize)]
pub struct NoisyReport {
    pub db: String,
    pub variant: Variant,
    pub backlog: usize,
    /// A's deliveries per second alone, and with B's events.
    pub a_alone_per_sec: f64,
    pub a_with_b_per_sec: f64,
    /// B's commit-to-receipt, ms.
    pub b_p50_ms: f64,
    pub b_p99_ms: f64,
    pub b_max_ms: f64,
    pub b_received: usize,
    pub error: Option<String>,
}

impl NoisyReport {
    pub fn drain_ratio(&self) -> f64 {
        if self.a_alone_per_sec > 0.0 {
            self.a_with_b_per_sec / self.a_alone_per_sec
        } else {
            0.0
        }
    }

    pub fn meets_target(&self) -> bool {
        self.error.is_none()
            && self.b_received == B_EVENTS
            && self.b_p99_ms < 1000.0
            && self.drain_ratio() >= 0.8
    }
}

/// What the receiver saw: A's deliveries and the time of its last, B's receipts by index.
struct Seen {
    base: Instant,
    a: AtomicU64,
    a_last_ns: AtomicU64,
    b_ns: Vec<AtomicU64>,
}

async fn answer(seen: &Seen, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let is_b = req.uri().path() == "/b";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let at = seen.base.elapsed().as_nanos() as u64;
    if is_b {
        let i = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["i"].as_u64())
            .unwrap_or(u64::MAX) as usize;
        if let Some(slot) = seen.b_ns.get(i) {
            let _ = slot.compare_exchange(0, at, Ordering::AcqRel, Ordering::Relaxed);
        }
    } else {
        seen.a.fetch_add(1, Ordering::AcqRel);
        seen.a_last_ns.fetch_max(at, Ordering::AcqRel);
    }
    tokio::time::sleep(ANSWER_AFTER).await;
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

async fn receiver(seen: Arc<Seen>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(&seen, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, accept))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One run: A's backlog, and B's events when `with_b`. Returns A's drain rate and B's
/// commit-to-receipt times (ms).
async fn once(
    ctx: &Ctx,
    spec: &str,
    variant: Variant,
    backlog: usize,
    with_b: bool,
    timeout: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let db = BenchDb::create(spec, false).await?;
    let result = measure(ctx, &db, variant, backlog, with_b, timeout).await;
    db.drop_database().await;
    result
}

async fn measure(
    ctx: &Ctx,
    db: &BenchDb,
    variant: Variant,
    backlog: usize,
    with_b: bool,
    timeout: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let base = Instant::now();
    let seen = Arc::new(Seen {
        base,
        a: AtomicU64::new(0),
        a_last_ns: AtomicU64::new(0),
        b_ns: (0..B_EVENTS).map(|_| AtomicU64::new(0)).collect(),
    });
    let (addr, accept) = receiver(seen.clone()).await?;
    let log = db.dir.path().join("hookd.log");
    let hookd = Hookd::start(&ctx.hookd_bin, &db.url, log.clone(), &ctx.http, &[]).await?;
    let (tenant_a, tenant_b) = match variant {
        Variant::TwoTenants | Variant::Outbox => ("tenant-a", "tenant-b"),
        Variant::OneTenant => ("tenant-a", "tenant-a"),
    };
    let mut a_ids = Vec::new();
    for k in 0..A_ENDPOINTS {
        let body = serde_json::json!({
            "url": format!("http://{addr}/a/{k}"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        });
        a_ids.push(hookd.register(&ctx.http, body).await?);
    }
    let body = serde_json::json!({
        "url": format!("http://{addr}/b"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    let b_id = hookd.register(&ctx.http, body).await?;
    hookd.stop().await;

    // A's backlog, due now, by bulk SQL with hookd stopped.
    let mut conn = db.connect().await?;
    let per_endpoint = (backlog / A_ENDPOINTS).max(1);
    if variant == Variant::Outbox {
        preload_outbox(&mut conn, db.kind, &a_ids, per_endpoint, tenant_a).await?;
    } else {
        db::preload(
            &mut conn,
            db.kind,
            Preload::PendingDue,
            "a-",
            &a_ids,
            per_endpoint as u64,
            200,
            db::EVENT_TYPE,
        )
        .await
        .context("preloading A's backlog")?;
    }
    // Tenants set in the table (as the outbox and the store know them), whichever API
    // version the hookd under test speaks.
    conn.execute(&format!(
        "UPDATE hookd_endpoints SET tenant_id = CASE WHEN id = '{b_id}' THEN '{tenant_b}' \
         ELSE '{tenant_a}' END; \
         UPDATE hookd_events SET tenant_id = '{tenant_a}'; \
         UPDATE hookd_deliveries SET tenant_id = '{tenant_a}';"
    ))
    .await?;
    if db.kind == Kind::Postgres {
        for table in ["hookd_events", "hookd_deliveries", "hookd_outbox"] {
            conn.execute(&format!("VACUUM ANALYZE {table}")).await?;
        }
    }
    let a_total = (per_endpoint * A_ENDPOINTS) as u64;

    let started = base.elapsed().as_nanos() as u64;
    let mut hookd = Hookd::start(&ctx.hookd_bin, &db.url, log, &ctx.http, &[]).await?;
    let started_at = Instant::now();
    let mut commits = vec![0u64; B_EVENTS];
    let producing = with_b.then(|| {
        let target = db.target();
        let (b_id, tenant_b) = (b_id.clone(), tenant_b.to_string());
        tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let mut at = Vec::new();
            for i in 0..B_EVENTS {
                tokio::time::sleep_until((started_at + B_START + B_EVERY * i as u32).into()).await;
                insert_b(&mut conn, i, &b_id, &tenant_b).await?;
                at.push(base.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(at)
        })
    });
    let deadline = Instant::now() + timeout;
    loop {
        let b_done = !with_b || seen.b_ns.iter().all(|s| s.load(Ordering::Acquire) > 0);
        if seen.a.load(Ordering::Acquire) >= a_total && b_done {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        if !hookd.alive() {
            bail!("hookd died; its log:\n{}", hookd.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(p) = producing {
        commits = p.await.context("B's producer panicked")??;
    }
    hookd.stop().await;
    accept.abort();
    let a_seen = seen.a.load(Ordering::Acquire);
    if a_seen < a_total {
        bail!("A: {a_seen} of {a_total} received within {timeout:?}");
    }
    let a_secs = seen
        .a_last_ns
        .load(Ordering::Acquire)
        .saturating_sub(started) as f64
        / 1e9;
    let b_ms: Vec<f64> = commits
        .iter()
        .zip(&seen.b_ns)
        .filter_map(|(c, r)| {
            let r = r.load(Ordering::Acquire);
            (r > 0).then(|| r.saturating_sub(*c) as f64 / 1e6)
        })
        .collect();
    Ok((a_total as f64 / a_secs.max(1e-9), b_ms))
}

/// A's backlog as outbox rows of tenant `tenant`, addressed to its endpoints in turn, by
/// bulk SQL with hookd stopped.
async fn preload_outbox(
    conn: &mut Conn,
    kind: Kind,
    a_ids: &[String],
    per_endpoint: usize,
    tenant: &str,
) -> anyhow::Result<()> {
    let n = per_endpoint * a_ids.len();
    let series = match kind {
        Kind::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             SELECT i FROM s",
            n - 1
        ),
        Kind::Postgres => format!("SELECT i FROM generate_series(0, {}) AS i", n - 1),
    };
    let endpoint = match kind {
        Kind::Sqlite => format!(
            "json_extract('[{}]', '$[' || (i % {}) || ']')",
            a_ids
                .iter()
                .map(|id| format!("\"{id}\""))
                .collect::<Vec<_>>()
                .join(","),
            a_ids.len()
        ),
        Kind::Postgres => format!(
            "(ARRAY[{}])[i % {} + 1]",
            a_ids
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(","),
            a_ids.len()
        ),
    };
    let body = db::payload(0, 200);
    conn.execute(&format!(
        "INSERT INTO hookd_outbox (event_id, event_type, payload, endpoint_id, tenant_id) \
         SELECT 'a-' || i, '{}', '{body}', {endpoint}, '{tenant}' FROM ({series}) s",
        db::EVENT_TYPE
    ))
    .await
    .context("filling the outbox with A's backlog")?;
    Ok(())
}

async fn insert_b(conn: &mut Conn, i: usize, endpoint: &str, tenant: &str) -> anyhow::Result<()> {
    let sql = "INSERT INTO hookd_outbox (event_id, event_type, payload, endpoint_id, tenant_id) \
               VALUES ($1, $2, $3, $4, $5)";
    let (id, body) = (format!("b-{i}"), db::payload(i, 200));
    match conn {
        Conn::Sqlite(c) => {
            sqlx::query(sql)
                .bind(id)
                .bind(db::EVENT_TYPE)
                .bind(body)
                .bind(endpoint)
                .bind(tenant)
                .execute(c)
                .await?;
        }
        Conn::Pg(c) => {
            sqlx::query(sql)
                .bind(id)
                .bind(db::EVENT_TYPE)
                .bind(body)
                .bind(endpoint)
                .bind(tenant)
                .execute(c)
                .await?;
        }
    }
    Ok(())
}

/// Both runs of one variant on one database.
pub async fn run(
    ctx: &Ctx,
    spec: &str,
    variant: Variant,
    backlog: usize,
    timeout: Duration,
) -> NoisyReport {
    let mut report = NoisyReport {
        db: if spec == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        }
        .into(),
        variant,
        backlog,
        a_alone_per_sec: 0.0,
        a_with_b_per_sec: 0.0,
        b_p50_ms: 0.0,
        b_p99_ms: 0.0,
        b_max_ms: 0.0,
        b_received: 0,
        error: None,
    };
    eprintln!(
        "noisy-neighbour {} ({}): A alone",
        report.db,
        variant.label()
    );
    match once(ctx, spec, variant, backlog, false, timeout).await {
        Ok((rate, _)) => report.a_alone_per_sec = rate,
        Err(e) => {
            report.error = Some(format!("A alone: {e:#}"));
            return report;
        }
    }
    eprintln!(
        "noisy-neighbour {} ({}): A and B",
        report.db,
        variant.label()
    );
    match once(ctx, spec, variant, backlog, true, timeout).await {
        Ok((rate, mut b)) => {
            report.a_with_b_per_sec = rate;
            b.sort_by(f64::total_cmp);
            report.b_received = b.len();
            report.b_p50_ms = percentile(&b, 50.0);
            report.b_p99_ms = percentile(&b, 99.0);
            report.b_max_ms = b.last().copied().unwrap_or(0.0);
        }
        Err(e) => report.error = Some(format!("A and B: {e:#}")),
    }
    eprintln!(
        "      A alone {:.0}/s, with B {:.0}/s ({:.0}%); B p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of {B_EVENTS})",
        report.a_alone_per_sec,
        report.a_with_b_per_sec,
        100.0 * report.drain_ratio(),
        report.b_p50_ms,
        report.b_p99_ms,
        report.b_max_ms,
        report.b_received
    );
    report
}

/// The scenario's table.
pub fn print(reports: &[NoisyReport]) {
    if reports.is_empty() {
        return;
    }
    println!("\nnoisy neighbour: A's backlog over {A_ENDPOINTS} endpoints (30 ms answers), {B_EVENTS} single-row events of B while it drains");
    println!(
        "{:<9} {:<28} {:>8} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9}  target",
        "db",
        "A and B are",
        "backlog",
        "A alone/s",
        "A w. B/s",
        "ratio",
        "B p50 ms",
        "B p99 ms",
        "B max ms"
    );
    for r in reports {
        println!(
            "{:<9} {:<28} {:>8} {:>10.0} {:>10.0} {:>5.0}% {:>9.0} {:>9.0} {:>9.0}  {}",
            r.db,
            r.variant.label(),
            r.backlog,
            r.a_alone_per_sec,
            r.a_with_b_per_sec,
            100.0 * r.drain_ratio(),
            r.b_p50_ms,
            r.b_p99_ms,
            r.b_max_ms,
            match (&r.error, r.meets_target()) {
                (Some(e), _) => format!("ERROR: {e}"),
                (None, true) => "met (p99 < 1 s, ratio >= 80%)".into(),
                (None, false) => "NOT met (p99 < 1 s, ratio >= 80%)".into(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_targets() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 99.0), 20.0);
        let mut r = NoisyReport {
            db: "sqlite".into(),
            variant: Variant::TwoTenants,
            backlog: 100,
            a_alone_per_sec: 100.0,
            a_with_b_per_sec: 80.0,
            b_p50_ms: 10.0,
            b_p99_ms: 999.0,
            b_max_ms: 999.0,
            b_received: B_EVENTS,
            error: None,
        };
        assert!(r.meets_target());
        r.a_with_b_per_sec = 79.0;
        assert!(!r.meets_target());
        r.a_with_b_per_sec = 80.0;
        r.b_p99_ms = 1000.0;
        assert!(!r.meets_target());
    }
}
