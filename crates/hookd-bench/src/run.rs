//! One measured run: fresh database, receiver, hookd process(es), endpoints, optional
//! preload, producers, wait for every delivery, collect the figures, clean up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;

use crate::db::{self, BenchDb, Commits, Insert, Kind, PgCounters, Preload};
use crate::history::{self, HistoryFigures};
use crate::hookd::{self, Hookd};
use crate::receiver::{Expect, Receiver};
use crate::retention::{self, RetentionFigures};

/// Event ids of measured events: `e-{i}`.
const PREFIX: &str = "e-";
/// hookd runs with HOOKD_RETRY_SCHEDULE=100ms,200ms: three attempts. The receiver fails a
/// delivery at most twice, so the third attempt always succeeds.
const MAX_FAILURES: u8 = 2;

/// What one run does.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// `sqlite` or a PostgreSQL server URL.
    #[serde(skip)]
    pub db: String,
    pub scenario: &'static str,
    pub insert: Insert,
    pub events: usize,
    pub endpoints: usize,
    pub fail_permille: u32,
    /// Finished deliveries bulk-loaded before the run.
    pub preload: u64,
    /// The events are bulk-loaded as due deliveries before hookd starts (no producer).
    pub backlog: bool,
    pub instances: usize,
    pub producers: usize,
    pub payload_bytes: usize,
    /// What-if: hookd's PostgreSQL sessions commit with synchronous_commit = off.
    pub pg_async_commit: bool,
    /// What-if: the SQLite file has planner statistics (ANALYZE) before hookd starts.
    pub sqlite_stats: bool,
    /// History scenario: held deliveries of the ordered endpoint (besides `preload`
    /// finished ones), and the events sent (at `resend_rate`/s) while a bulk resend of
    /// the history runs afterwards (0: no bulk resend).
    pub held: u64,
    pub resend_events: usize,
    pub resend_rate: f64,
    /// How long those events flow before the bulk resend is asked for.
    #[serde(skip)]
    pub resend_control: Duration,
    /// Retention scenario: the day of history loaded before hookd starts (none: the
    /// reference run).
    pub retention: Option<retention::Load>,
    #[serde(skip)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreOp {
    pub calls: u64,
    pub avg_ms: f64,
    pub total_secs: f64,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub db: String,
    pub instances: usize,
    pub scenario: String,
    pub insert: String,
    pub events: usize,
    pub endpoints: usize,
    pub preload: u64,
    pub expected: u64,
    pub delivered: u64,
    pub complete: bool,
    /// Requests the receiver got (every attempt, 500s and duplicates included).
    pub attempts: u64,
    pub answered_500: u64,
    pub duplicates: u64,
    pub invalid_signatures: u64,
    pub unexpected: u64,
    /// `succeeded` deliveries of the measured events in the database after the run.
    pub recorded: Option<i64>,
    /// First insert (or hookd start, for a backlog) to last receipt.
    pub secs: f64,
    /// How long the producers took to commit everything.
    pub insert_secs: f64,
    pub deliveries_per_sec: f64,
    pub attempts_per_sec: f64,
    /// Commit of the outbox row to the first 2xx answer of the delivery.
    pub latency: Latency,
    /// Through the API: from sending `POST /v1/events` to hookd's answer.
    pub accept: Option<Latency>,
    /// Largest VmHWM among the hookd processes, and their sum.
    pub peak_rss_mb: f64,
    pub peak_rss_mb_total: f64,
    /// (seconds into the run, resident MB of the largest hookd), every 5 s.
    pub rss_samples: Vec<(f64, f64)>,
    /// utime+stime of the hookd processes during the measured window.
    pub hookd_cpu_secs: f64,
    pub cpu_secs_per_10k: f64,
    /// This process (receiver + producers) during the window.
    pub bench_cpu_secs: f64,
    /// Whole machine busy CPU seconds during the window (hookd, bench, the database and
    /// anything else running), and what is left after hookd and the bench.
    pub machine_busy_secs: f64,
    pub other_cpu_secs: f64,
    /// CPU seconds the hypervisor gave to other machines during the window (counted in
    /// `machine_busy_secs`): on a shared host, the noise behind a slow run.
    pub steal_secs: f64,
    /// hookd's CPU by kind of thread during the window. The writer's CPU per delivery is
    /// the figure steal disturbs least: it counts work, not waiting.
    pub thread_cpu: hookd::ThreadCpu,
    /// SQLite: the share of the window during which the one write connection was held by
    /// an operation (`hookd_store_writer_busy_seconds_total`). `None` on PostgreSQL and for
    /// a backlog run.
    pub writer_held_share: Option<f64>,
    /// SQLite: the share of the same window during which the writer connection's thread
    /// was ready to run but waited for a CPU; `None` also without `schedstat`.
    pub writer_waiting_share: Option<f64>,
    pub load_avg_1m: f64,
    pub claim_batch_avg: f64,
    /// The share of the attempts whose delivery the outbox read created already leased
    /// (`hookd_ingest_leased_total`), with no claim.
    pub leased_share: Option<f64>,
    pub store_ops: BTreeMap<String, StoreOp>,
    /// PostgreSQL: this database's commits, rows written and the cluster's WAL bytes, per
    /// delivery (producers' outbox inserts included).
    pub pg_per_delivery: Option<PgPerDelivery>,
    /// PostgreSQL: CPU of the server processes during the window.
    pub pg_cpu: Option<PgCpuReport>,
    pub log_warnings: u64,
    pub first_warning: Option<String>,
    /// Every hookd exited 0 on SIGTERM.
    pub clean_exit: bool,
    /// The plain-HTTP ceiling this run is compared with: the higher of the two measured
    /// just before and just after it.
    pub ceiling_per_sec: Option<f64>,
    pub fraction_of_ceiling: Option<f64>,
    /// Scale: disk bytes (tables and indexes: events, deliveries, attempts) per preloaded
    /// finished delivery.
    pub preload_bytes_per_delivery: Option<f64>,
    /// The history scenario's figures.
    pub history: Option<HistoryFigures>,
    /// The retention scenario's.
    pub retention: Option<RetentionFigures>,
    /// The retention scenario's runs: the longest pause between two deliveries.
    pub longest_pause_ms: Option<f64>,
    pub error: Option<String>,
}

impl Outcome {
    /// CPU of one kind of hookd thread per delivery, in µs.
    pub fn us_per_delivery(&self, secs: f64) -> f64 {
        secs * 1e6 / self.delivered.max(1) as f64
    }

    /// Stolen CPU as a share of what the machine's CPUs had during the run.
    pub fn steal_share(&self, nproc: usize) -> f64 {
        self.steal_secs / (self.secs.max(1e-9) * nproc.max(1) as f64)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCpuReport {
    /// The backends serving hookd's connections.
    pub hookd_sessions_secs: f64,
    /// The backends serving the producers (and the bench's own queries).
    pub producer_sessions_secs: f64,
    /// Autovacuum on this database and the cluster's background processes.
    pub background_secs: f64,
    pub hookd_sessions_per_10k: f64,
    pub producer_sessions_per_10k: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgPerDelivery {
    pub commits: f64,
    /// Transactions that ended without committing (hookd's empty outbox reads roll back).
    pub rollbacks: f64,
    pub rows_inserted: f64,
    pub rows_updated: f64,
    pub rows_deleted: f64,
    pub wal_bytes: f64,
    /// Statements per delivery (producers' included), with pg_stat_statements loaded.
    pub statements: Option<f64>,
    pub totals: PgCounters,
}

impl Outcome {
    /// What a smoke run asserts: correctness only.
    pub fn correctness_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(e) = &self.error {
            problems.push(format!("run failed: {e}"));
            return problems;
        }
        if self.delivered != self.expected {
            problems.push(format!(
                "received {} of {} expected deliveries",
                self.delivered, self.expected
            ));
        }
        if self.invalid_signatures > 0 {
            problems.push(format!("{} invalid signatures", self.invalid_signatures));
        }
        if self.unexpected > 0 {
            problems.push(format!("{} unexpected requests", self.unexpected));
        }
        if self.recorded != Some(self.expected as i64) {
            problems.push(format!(
                "database shows {:?} succeeded deliveries, expected {}",
                self.recorded, self.expected
            ));
        }
        if let Some(r) = &self.retention {
            if r.gone_after_secs.is_none() {
                problems.push(format!(
                    "retention left the loaded day ({}) in place: {:.0} of {} deleted",
                    r.layout, r.deleted, r.rows
                ));
            }
        }
        problems
    }
}

pub struct Ctx {
    pub hookd_bin: PathBuf,
    pub http: reqwest::Client,
}

fn secret() -> (String, Vec<u8>) {
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    (format!("whsec_{}", BASE64.encode(&key)), key)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// Runs `spec` on a fresh database, and always drops that database.
pub async fn run(ctx: &Ctx, spec: &Spec) -> Outcome {
    let db = match BenchDb::create(&spec.db, spec.pg_async_commit).await {
        Ok(db) => db,
        Err(e) => {
            return Outcome {
                error: Some(format!("{e:#}")),
                scenario: spec.scenario.into(),
                ..Outcome::default()
            }
        }
    };
    let mut outcome = Outcome {
        db: match db.kind {
            Kind::Sqlite => "sqlite".into(),
            Kind::Postgres => "postgres".into(),
        },
        instances: spec.instances,
        scenario: spec.scenario.into(),
        insert: {
            let mut label = if spec.backlog {
                "preloaded".to_string()
            } else {
                spec.insert.label()
            };
            if spec.pg_async_commit && db.kind == Kind::Postgres {
                label.push_str(" async");
            }
            if spec.sqlite_stats && db.kind == Kind::Sqlite {
                label.push_str(" +stats");
            }
            label
        },
        events: spec.events,
        endpoints: spec.endpoints,
        preload: spec.preload,
        expected: (spec.events * spec.endpoints) as u64,
        ..Outcome::default()
    };
    if let Err(e) = measure(ctx, spec, &db, &mut outcome).await {
        outcome.error = Some(format!("{e:#}"));
    }
    db.drop_database().await;
    outcome
}

async fn start_all(ctx: &Ctx, spec: &Spec, db: &BenchDb) -> anyhow::Result<Vec<Hookd>> {
    let mut hookds = Vec::new();
    let env: &[(&str, &str)] = match spec.scenario {
        "history" => &[history::RESCUE_EVERY_SECOND],
        "retention" => &[retention::RETENTION_EVERY_SECOND],
        _ => &[],
    };
    // One after the other: the first applies the migrations.
    for n in 0..spec.instances {
        let log = db.dir.path().join(format!("hookd-{n}.log"));
        hookds.push(Hookd::start(&ctx.hookd_bin, &db.url, log, &ctx.http, env).await?);
    }
    Ok(hookds)
}

async fn stop_all(hookds: Vec<Hookd>) -> bool {
    let mut clean = true;
    for h in hookds {
        clean &= h.stop().await;
    }
    clean
}

async fn measure(ctx: &Ctx, spec: &Spec, db: &BenchDb, out: &mut Outcome) -> anyhow::Result<()> {
    let base = Instant::now();
    let (secrets, keys): (Vec<String>, Vec<Vec<u8>>) =
        (0..spec.endpoints).map(|_| secret()).unzip();
    let is_history = spec.scenario == "history";
    let receiver = Receiver::start(
        base,
        Expect {
            prefix: PREFIX.into(),
            // The history scenario's bulk resend phase sends events after these.
            events: spec.events + spec.resend_events,
            keys,
            fail_permille: spec.fail_permille,
            max_failures: MAX_FAILURES,
        },
    )
    .await?;

    let mut hookds = start_all(ctx, spec, db).await?;
    let mut endpoint_ids = Vec::new();
    for (k, secret) in secrets.iter().enumerate() {
        endpoint_ids.push(
            hookds[0]
                .register_endpoint(&ctx.http, &receiver.url(k), secret)
                .await?,
        );
    }
    // The history scenario's ordered endpoint: it gets every event too, held.
    let ordered = if is_history {
        let body = serde_json::json!({ "url": receiver.sink_url(), "secret": secret().0, "ordered": true });
        Some(hookds[0].register(&ctx.http, body).await?)
    } else {
        None
    };

    let commits = Commits::new(spec.events + spec.resend_events);
    let mut stats_conn = db.connect().await?;
    let sqlite_stats = spec.sqlite_stats && db.kind == Kind::Sqlite;
    let mut retained = None;
    if spec.preload > 0 || spec.backlog || sqlite_stats || is_history || spec.retention.is_some() {
        // Bulk loads run with hookd stopped (a long SQLite write transaction would make
        // hookd's writer wait), then hookd starts again on the big tables.
        stop_all(std::mem::take(&mut hookds)).await;
        let started = Instant::now();
        if let Some(ordered) = &ordered {
            history::load(
                &mut stats_conn,
                db.kind,
                ordered,
                spec.preload,
                spec.held,
                spec.payload_bytes,
            )
            .await?;
        } else if spec.preload > 0 {
            db::preload(
                &mut stats_conn,
                db.kind,
                Preload::Finished,
                PREFIX,
                &endpoint_ids[..1],
                spec.preload,
                spec.payload_bytes,
                db::EVENT_TYPE,
            )
            .await
            .context("preloading finished deliveries")?;
        }
        if spec.backlog {
            db::preload(
                &mut stats_conn,
                db.kind,
                Preload::PendingDue,
                PREFIX,
                &endpoint_ids,
                spec.events as u64,
                spec.payload_bytes,
                db::EVENT_TYPE,
            )
            .await
            .context("preloading the backlog")?;
        }
        if sqlite_stats {
            db::sqlite_stats(&mut stats_conn).await?;
        }
        if let Some(load) = spec.retention {
            let table = retention::load(&mut stats_conn, &endpoint_ids[0], load).await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  loaded {} rows of a day past retention ({}) in {secs:.1}s",
                load.rows,
                load.layout.label()
            );
            retained = Some((load, table, secs));
        }
        if spec.preload > 0 {
            out.preload_bytes_per_delivery = db::table_bytes(&mut stats_conn, db.kind)
                .await
                .map(|b| b as f64 / spec.preload as f64);
        }
        if db.kind == Kind::Postgres && (spec.preload > 0 || spec.backlog) {
            // What autovacuum would have done by the time a table is this big; otherwise
            // it would run during the measurement. (Not for a table of a few rows, as the
            // history scenario's reference run starts with: statistics of an almost empty
            // table would mislead the planner, which the runs without a preload never see.)
            for table in ["hookd_events", "hookd_deliveries", "hookd_attempts"] {
                stats_conn
                    .execute(&format!("VACUUM ANALYZE {table}"))
                    .await?;
            }
        }
        eprintln!(
            "  preloaded {} finished{} in {:.1}s",
            spec.preload,
            if spec.backlog {
                format!(" + {} due deliveries", spec.events * spec.endpoints)
            } else if is_history {
                format!(" + {} held", spec.held)
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        if spec.backlog {
            let now = base.elapsed().as_nanos() as u64 + 1;
            for c in &commits.at {
                c.store(now, Ordering::Relaxed);
            }
            commits.first_start_ns.store(now, Ordering::Relaxed);
        }
        hookds = start_all(ctx, spec, db).await?;
    }
    let hookd_started = Instant::now();
    let retention_watch = retained.map(|(load, table, load_secs)| {
        retention::watch(retention::Watch {
            metrics_url: format!("{}/metrics", hookds[0].base_url),
            http: ctx.http.clone(),
            db: db.target(),
            load,
            table,
            started: hookd_started,
            load_secs,
            limit: spec.timeout,
        })
    });

    // History: the rescue job's first runs on the loaded tables, before any event.
    let mut figures = HistoryFigures {
        held: spec.held,
        ..HistoryFigures::default()
    };
    let mut rescues_before = BTreeMap::new();
    if is_history {
        rescues_before =
            history::wait_for_rescues(&hookds[0], &ctx.http, 3, Duration::from_secs(60)).await;
        figures.promote_idle = history::job_times(&BTreeMap::new(), &rescues_before);
    }

    let cpu_before: f64 = if spec.backlog {
        0.0 // started after the backlog was committed: everything it did counts
    } else {
        hookds.iter().map(|h| h.stats().cpu_secs).sum()
    };
    const WRITER_BUSY: &str = "hookd_store_writer_busy_seconds_total";
    let writer_busy = |scrapes: &[BTreeMap<String, f64>]| {
        scrapes
            .iter()
            .any(|m| m.contains_key(WRITER_BUSY))
            .then(|| hookd::metric_sum(scrapes, WRITER_BUSY))
    };
    let mut scrapes_before = Vec::new();
    if !spec.backlog {
        for h in &hookds {
            scrapes_before.push(h.metrics(&ctx.http).await);
        }
    }
    let writer_busy_before = writer_busy(&scrapes_before);
    // The window of the writer's shares: from these readings to the same ones after.
    let threads_before: Vec<_> = hookds
        .iter()
        .map(|h| {
            if spec.backlog {
                Default::default()
            } else {
                hookd::thread_cpu(h.pid)
            }
        })
        .collect();
    let window_start = Instant::now();
    let self_before = hookd::cpu_secs("self").unwrap_or(0.0);
    let machine_before = hookd::machine_jiffies().unwrap_or_default();
    let pg_before = stats_conn.pg_counters().await;
    let pg_cpu_before = stats_conn.pg_cpu().await;

    let producing = if spec.backlog {
        None
    } else {
        Some(tokio::spawn(produce_owned(
            db.target(),
            hookds[0].base_url.clone(),
            spec.clone(),
            base,
            commits.clone(),
        )))
    };

    // Wait for every expected delivery, the producers' failure, hookd's death or the timeout.
    let expected = (spec.events * spec.endpoints) as u64;
    let deadline = Instant::now() + spec.timeout;
    let mut insert_done_ns: Option<u64> = None;
    let mut producing = producing;
    let mut next_check = Instant::now();
    let sampling_since = Instant::now();
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(5);
            let mb = hookds
                .iter()
                .filter_map(|h| hookd::rss(&h.pid.to_string()))
                .max()
                .unwrap_or(0) as f64
                / 1_048_576.0;
            out.rss_samples
                .push((sampling_since.elapsed().as_secs_f64(), mb));
        }
        if receiver.state.delivered() >= expected {
            break;
        }
        if let Some(p) = &producing {
            if p.is_finished() {
                let p = producing.take().expect("checked");
                p.await.context("the producers panicked")??;
                insert_done_ns = Some(base.elapsed().as_nanos() as u64);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(200);
            for h in hookds.iter_mut() {
                if !h.alive() {
                    bail!(
                        "hookd (pid {}) died during the run; its log:\n{}",
                        h.pid,
                        h.log_tail()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(p) = producing.take() {
        let rest = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        tokio::time::timeout(rest, p)
            .await
            .context("the producers did not finish in time")?
            .context("the producers panicked")??;
        insert_done_ns.get_or_insert(base.elapsed().as_nanos() as u64);
    }
    let state = &receiver.state;
    out.delivered = state.delivered();
    out.complete = out.delivered >= expected;
    let start_ns = commits
        .first_start_ns
        .load(Ordering::Relaxed)
        .saturating_sub(1);
    let end_ns = if out.complete {
        state.last_ok_ns.load(Ordering::Acquire)
    } else {
        base.elapsed().as_nanos() as u64
    };
    out.secs = end_ns.saturating_sub(start_ns) as f64 / 1e9;
    out.insert_secs = insert_done_ns.unwrap_or(start_ns).saturating_sub(start_ns) as f64 / 1e9;

    // The window ends with the last receipt; a short pause shows late duplicates.
    let cpu_after: f64 = hookds.iter().map(|h| h.stats().cpu_secs).sum();
    for (h, before) in hookds.iter().zip(&threads_before) {
        out.thread_cpu
            .add(hookd::ThreadCpu::between(before, &hookd::thread_cpu(h.pid)));
    }
    let window = window_start.elapsed().as_secs_f64();
    let mut scrapes_after = Vec::new();
    if writer_busy_before.is_some() {
        for h in &hookds {
            scrapes_after.push(h.metrics(&ctx.http).await);
        }
    }
    let self_after = hookd::cpu_secs("self").unwrap_or(0.0);
    let machine_after = hookd::machine_jiffies().unwrap_or_default();
    if let (Some(before), Some(after)) = (&pg_cpu_before, stats_conn.pg_cpu().await) {
        let d = after.since(before);
        let per10k = |x: f64| x * 10_000.0 / out.delivered.max(1) as f64;
        out.pg_cpu = Some(PgCpuReport {
            hookd_sessions_secs: d.hookd_sessions,
            producer_sessions_secs: d.bench_sessions,
            background_secs: d.background,
            hookd_sessions_per_10k: per10k(d.hookd_sessions),
            producer_sessions_per_10k: per10k(d.bench_sessions),
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    out.attempts = state.requests.load(Ordering::Relaxed);
    out.answered_500 = state.answered_500.load(Ordering::Relaxed);
    out.duplicates = state.duplicates.load(Ordering::Relaxed);
    out.invalid_signatures = state.invalid_signatures.load(Ordering::Relaxed);
    out.unexpected = state.unexpected.load(Ordering::Relaxed);
    if out.secs > 0.0 {
        out.deliveries_per_sec = out.delivered as f64 / out.secs;
        out.attempts_per_sec = out.attempts as f64 / out.secs;
    }

    let mut latencies: Vec<u64> = state
        .receipts()
        .filter_map(|(i, t)| {
            let c = commits.at[i].load(Ordering::Acquire);
            (c != 0).then(|| t.saturating_sub(c - 1))
        })
        .collect();
    latencies.sort_unstable();
    out.latency = Latency {
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map(|l| *l as f64 / 1e6).unwrap_or(0.0),
    };

    let mut accepts = std::mem::take(&mut *commits.accept_ns.lock().expect("never poisoned"));
    if !accepts.is_empty() {
        accepts.sort_unstable();
        out.accept = Some(Latency {
            p50_ms: percentile(&accepts, 0.50),
            p90_ms: percentile(&accepts, 0.90),
            p99_ms: percentile(&accepts, 0.99),
            max_ms: accepts.last().map(|l| *l as f64 / 1e6).unwrap_or(0.0),
        });
    }

    let rss: Vec<f64> = hookds
        .iter()
        .map(|h| h.stats().peak_rss_bytes as f64 / (1024.0 * 1024.0))
        .collect();
    out.peak_rss_mb = rss.iter().cloned().fold(0.0, f64::max);
    out.peak_rss_mb_total = rss.iter().sum();
    out.hookd_cpu_secs = cpu_after - cpu_before;
    if out.delivered > 0 {
        out.cpu_secs_per_10k = out.hookd_cpu_secs * 10_000.0 / out.delivered as f64;
    }
    out.bench_cpu_secs = self_after - self_before;
    out.machine_busy_secs =
        hookd::jiffies_to_secs(machine_after.busy.saturating_sub(machine_before.busy));
    out.steal_secs =
        hookd::jiffies_to_secs(machine_after.steal.saturating_sub(machine_before.steal));
    out.other_cpu_secs =
        (out.machine_busy_secs - out.steal_secs - out.hookd_cpu_secs - out.bench_cpu_secs).max(0.0);
    out.load_avg_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);

    let mut scrapes = Vec::new();
    for h in &hookds {
        scrapes.push(h.metrics(&ctx.http).await);
    }
    if let (Some(before), Some(after)) = (writer_busy_before, writer_busy(&scrapes_after)) {
        out.writer_held_share = Some((after - before) / window.max(1e-9));
        out.writer_waiting_share = out
            .thread_cpu
            .sqlite_writer_waiting
            .map(|w| w / window.max(1e-9));
    }
    if out.attempts > 0 {
        let leased = hookd::metric_sum(&scrapes, "hookd_ingest_leased_total");
        out.leased_share = Some(leased / out.attempts as f64);
    }
    let count = hookd::metric_sum(&scrapes, "hookd_claim_batch_size_count");
    if count > 0.0 {
        out.claim_batch_avg = hookd::metric_sum(&scrapes, "hookd_claim_batch_size_sum") / count;
    }
    const OP_SUM: &str = "hookd_store_query_duration_seconds_sum{operation=\"";
    let ops: Vec<String> = scrapes
        .iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| Some(k.strip_prefix(OP_SUM)?.strip_suffix("\"}")?.to_string()))
        .collect();
    for op in ops {
        let total = hookd::metric_sum(&scrapes, &format!("{OP_SUM}{op}\"}}"));
        let calls = hookd::metric_sum(
            &scrapes,
            &format!("hookd_store_query_duration_seconds_count{{operation=\"{op}\"}}"),
        );
        out.store_ops.insert(
            op,
            StoreOp {
                calls: calls as u64,
                avg_ms: if calls > 0.0 {
                    total * 1000.0 / calls
                } else {
                    0.0
                },
                total_secs: total,
            },
        );
    }

    if is_history {
        figures.promote_busy = history::job_times(&rescues_before, &scrapes[0]);
    }

    if let Some(before) = pg_before {
        // PostgreSQL publishes a backend's counters within about a second of its commits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(after) = stats_conn.pg_counters().await {
            let d = after.since(&before);
            let per = |x: i64| x as f64 / out.delivered.max(1) as f64;
            out.pg_per_delivery = Some(PgPerDelivery {
                commits: per(d.commits),
                rollbacks: per(d.rollbacks),
                rows_inserted: per(d.inserted),
                rows_updated: per(d.updated),
                rows_deleted: per(d.deleted),
                wal_bytes: per(d.wal_bytes),
                statements: d.statements.map(per),
                totals: d,
            });
        }
    }

    let mut expected = expected;
    if is_history && spec.resend_events > 0 && out.complete {
        let phase = history::ResendPhase {
            hookd: &hookds[0],
            http: &ctx.http,
            receiver: &receiver,
            commits: commits.clone(),
            base,
            prefix: PREFIX,
            from: spec.events,
            events: spec.resend_events,
            rate: spec.resend_rate,
            control: spec.resend_control,
            payload_bytes: spec.payload_bytes,
            timeout: spec.timeout,
        };
        match history::resend_phase(phase, db.target()).await {
            Ok(r) => figures.resend = Some(r),
            Err(e) => figures.resend_error = Some(format!("{e:#}")),
        }
        // Correctness covers these events too.
        expected = receiver.state.expected();
        out.expected = expected;
        out.delivered = receiver.state.delivered();
    }
    if is_history {
        out.history = Some(figures);
    }
    let mut receipts: Vec<u64> = Vec::new();
    if spec.scenario == "retention" {
        receipts = receiver.state.receipts().map(|(_, t)| t).collect();
        receipts.sort_unstable();
        out.longest_pause_ms = Some(retention::longest_pause_ms(&receipts, 0, u64::MAX));
    }
    if let Some(watch) = retention_watch {
        let mut f = watch.await.context("the retention watch")?;
        let started_ns = hookd_started.duration_since(base).as_nanos() as u64;
        let last = receipts.last().copied().unwrap_or(started_ns);
        let gone_ns = f
            .gone_after_secs
            .map_or(u64::MAX, |s| started_ns + (s * 1e9) as u64);
        f.run_ended_first = last < gone_ns;
        f.pause_meanwhile_ms = retention::longest_pause_ms(&receipts, started_ns, gone_ns);
        f.pause_in_run_ms = retention::longest_pause_ms(&receipts, 0, u64::MAX);
        out.retention = Some(f);
    }

    // The results are written in batches just after the receipts: wait for them.
    let count_sql = format!(
        "SELECT COUNT(*) FROM hookd_deliveries WHERE state = 'succeeded' AND event_id LIKE '{PREFIX}%'"
    );
    let recorded_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = stats_conn.scalar_i64(&count_sql).await.ok();
        out.recorded = n;
        if n == Some(expected as i64) || Instant::now() >= recorded_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut warnings, mut first) = (0, None);
    for h in &hookds {
        let (w, f) = h.log_warnings();
        warnings += w;
        first = first.or(f);
    }
    out.log_warnings = warnings;
    out.first_warning = first;
    out.clean_exit = stop_all(hookds).await;
    Ok(())
}

async fn produce_owned(
    target: db::Target,
    api: String,
    spec: Spec,
    base: Instant,
    commits: std::sync::Arc<Commits>,
) -> anyhow::Result<()> {
    db::produce(
        &target,
        &api,
        PREFIX,
        0,
        spec.events,
        spec.payload_bytes,
        spec.insert,
        spec.producers,
        base,
        commits,
    )
    .await
}
