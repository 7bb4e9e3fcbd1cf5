//! `hookd-bench`: measures hookd end to end on one machine.
//!
//! A real `hookd serve` process (the release binary) runs against a fresh SQLite file or
//! PostgreSQL database; producers insert into `hookd_outbox` by raw SQL on their own
//! connections; an in-process receiver on 127.0.0.1 answers, verifies signatures and
//! timestamps each delivery. See docs/benchmarks.md.

mod ceiling;
mod db;
mod history;
mod hookd;
mod noisy;
mod receiver;
mod report;
mod retention;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::db::Insert;
use crate::report::{CeilingReport, Machine, Report};
use crate::run::{Ctx, Spec};

const LOCAL_PG: &str = "postgres://postgres@127.0.0.1:5432";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1 endpoint, saturation: batches of --batch rows, then single-row transactions.
    Throughput,
    /// --fanout endpoints, events / fanout events so the delivery count stays --events.
    Fanout,
    /// Single-row transactions paced at --rate events/s; commit-to-receipt latency.
    Latency,
    /// `POST /v1/events` paced at --rate events/s; 202-to-receipt latency.
    ApiLatency,
    /// `POST /v1/events` from closed-loop clients at each --api-concurrency, as fast as
    /// hookd answers: deliveries/s and accept latency, beside the outbox's throughput.
    ApiThroughput,
    /// Like throughput (batches), with --error-fraction of requests answered 500.
    Errors,
    /// --preload finished deliveries bulk-loaded first, then throughput (batches).
    Scale,
    /// --backlog due deliveries bulk-loaded before hookd starts (peak RSS under a backlog).
    Backlog,
    /// Single-row transactions paced at --soak-rate events/s for --soak-secs; hookd's
    /// resident memory sampled every 5 s (is it flat?).
    Soak,
    /// An ordered endpoint with --preload finished and --held held deliveries: the rescue
    /// job's duration and throughput (batches) against the same run on empty tables; then
    /// events through the API at --resend-rate for --resend-secs while a bulk resend of the
    /// whole history runs (the longest pause between two deliveries).
    History,
    /// Tenant A's --noisy-backlog due deliveries over 20 endpoints while 20 events of B
    /// arrive one at a time: B's commit-to-receipt p99 and A's drain rate against A alone;
    /// A and B as two tenants, as two endpoints of one tenant, then as two tenants with A's backlog in the outbox.
    NoisyNeighbour,
    /// PostgreSQL only: a day of finished history past the retention period (--retention-rows
    /// deliveries and their attempts) in the tables as hookd starts, retention running every
    /// second: once in the day's own partition (dropped whole), once in the tables from
    /// before the partitions (deleted row by row, --retention-rows-by-row): how long until
    /// it is gone, and throughput (batches) meanwhile against the same run without it.
    Retention,
    /// throughput, fanout, latency, api-latency, api-throughput, errors, scale.
    All,
}

/// End-to-end benchmark of hookd: a real hookd process, a real database, a local receiver.
#[derive(Debug, Parser)]
#[command(name = "hookd-bench", version, about)]
struct Cli {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// `sqlite` (a temporary file) or a PostgreSQL server URL such as
    /// postgres://postgres@127.0.0.1:5432 (a fresh database is created and dropped per run).
    /// Repeatable. Default: sqlite; with --smoke: sqlite and the local PostgreSQL.
    #[arg(long = "db", value_name = "sqlite|URL")]
    dbs: Vec<String>,
    /// Deliveries per run (events for 1 endpoint). Default 20000; 300 with --smoke.
    #[arg(long)]
    events: Option<usize>,
    /// Rows per producer transaction in batch mode.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Offered rate of the latency scenario, events/s.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Events of the latency scenario. Default 10000 (10 s at 1000/s); 300 with --smoke.
    #[arg(long)]
    latency_events: Option<usize>,
    /// Endpoints of the fanout scenario.
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// Fraction of requests the receiver answers 500 in the errors scenario (each delivery
    /// fails at most twice, so it succeeds within HOOKD_RETRY_SCHEDULE=100ms,200ms).
    #[arg(long, default_value_t = 0.10)]
    error_fraction: f64,
    /// Finished deliveries preloaded by the scale scenario. Default 1000000; 2000 with --smoke.
    #[arg(long)]
    preload: Option<u64>,
    /// Due deliveries preloaded by the backlog scenario. Default 1000000; 300 with --smoke.
    #[arg(long)]
    backlog: Option<usize>,
    /// Held deliveries of the history scenario's ordered endpoint. Default 2000; 20 with
    /// --smoke.
    #[arg(long)]
    held: Option<u64>,
    /// Length of the history scenario's bulk resend phase, seconds. Default 20; 3 with
    /// --smoke.
    #[arg(long)]
    resend_secs: Option<u64>,
    /// Seconds of that phase's events sent before the bulk resend is asked for: the
    /// reference for its longest gap (the same load and WAL traffic, no resend). Default
    /// 10; 1 with --smoke.
    #[arg(long)]
    resend_control_secs: Option<u64>,
    /// Rows of the retention scenario's day in its own partition. Default 10000000; 2000
    /// with --smoke.
    #[arg(long)]
    retention_rows: Option<u64>,
    /// Rows of the retention scenario's day deleted row by row. Default 1000000; 2000 with
    /// --smoke.
    #[arg(long)]
    retention_rows_by_row: Option<u64>,
    /// Events/s to the measured endpoint during the bulk resend phase (`POST /v1/events`).
    #[arg(long, default_value_t = 500.0)]
    resend_rate: f64,
    /// Offered rate of the soak scenario, events/s (200 with --smoke). Single-row commits
    /// on PostgreSQL wait for a WAL flush each: 16 producer sessions offer about 2,000/s on
    /// a 3 ms disk, so the default stays below that.
    #[arg(long, default_value_t = 1000.0)]
    soak_rate: f64,
    /// Length of the soak scenario, seconds. Default 600; 5 with --smoke.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// hookd processes on the same database (PostgreSQL runs only; SQLite always 1).
    /// Comma-separated to run each count: 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    instances: Vec<usize>,
    /// Closed-loop clients of the api-throughput scenario, comma-separated: one run each.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    api_concurrency: Vec<usize>,
    /// Producer connections. Default: 1 on SQLite; on PostgreSQL 2 for batches, 16 for
    /// single-row transactions.
    #[arg(long)]
    producers: Option<usize>,
    /// Size of each event's JSON payload, bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Concurrency of the plain-HTTP ceiling client. 128 gives it more requests/s here than
    /// 512 (hookd's default concurrency): the higher ceiling is the stricter reference.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Requests of each ceiling run. Default: max(--events, 20000).
    #[arg(long)]
    ceiling_requests: Option<usize>,
    /// Tenant A's due deliveries in the noisy-neighbour scenario. Default 50000; 2000 with
    /// --smoke.
    #[arg(long)]
    noisy_backlog: Option<usize>,
    /// Skip the plain-HTTP ceiling run.
    #[arg(long)]
    no_ceiling: bool,
    /// The hookd binary. Default: target/release/hookd, built when missing.
    #[arg(long, value_name = "PATH")]
    hookd: Option<PathBuf>,
    /// Run `cargo build --release -p hookd` first even when the binary exists.
    #[arg(long)]
    build: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// A short correctness run: every event received, every signature valid, every
    /// delivery recorded; exits non-zero otherwise. Never judges speed.
    #[arg(long)]
    smoke: bool,
    /// What-if experiment: hookd's PostgreSQL sessions commit with synchronous_commit = off
    /// (set on the benchmark database; the producers keep it on). Not hookd's default.
    #[arg(long)]
    pg_async_commit: bool,
    /// What-if experiment: give the SQLite file planner statistics (ANALYZE) before the
    /// measured hookd starts. hookd itself never runs ANALYZE.
    #[arg(long)]
    sqlite_stats: bool,
    /// Free text printed with the results and kept in the JSON (e.g. the commit a --hookd
    /// binary was built from).
    #[arg(long)]
    label: Option<String>,
    /// Longest wait for one run's deliveries, seconds. Default 600; 120 with --smoke.
    #[arg(long)]
    timeout_secs: Option<u64>,
}

impl Cli {
    fn databases(&self) -> Vec<String> {
        if !self.dbs.is_empty() {
            self.dbs.clone()
        } else if self.smoke {
            vec!["sqlite".to_string(), LOCAL_PG.to_string()]
        } else {
            vec!["sqlite".to_string()]
        }
    }

    fn plan(&self) -> Vec<Spec> {
        let smoke = self.smoke;
        let events = self
            .events
            .unwrap_or(if smoke { 300 } else { 20_000 })
            .max(1);
        let latency_events = self
            .latency_events
            .unwrap_or(if smoke { 300 } else { 10_000 })
            .max(1);
        let preload = self
            .preload
            .unwrap_or(if smoke { 2_000 } else { 1_000_000 });
        let backlog = self
            .backlog
            .unwrap_or(if smoke { 300 } else { 1_000_000 })
            .max(1);
        let timeout =
            Duration::from_secs(self.timeout_secs.unwrap_or(if smoke { 120 } else { 600 }));
        let soak_secs = self.soak_secs.unwrap_or(if smoke { 5 } else { 600 }).max(1);
        let held = self.held.unwrap_or(if smoke { 20 } else { 2_000 });
        let retention_rows = self
            .retention_rows
            .unwrap_or(if smoke { 2_000 } else { 10_000_000 });
        let retention_rows_by_row =
            self.retention_rows_by_row
                .unwrap_or(if smoke { 2_000 } else { 1_000_000 });
        let resend_rate = if smoke {
            200.0
        } else {
            self.resend_rate.max(1.0)
        };
        let resend_control =
            Duration::from_secs(
                self.resend_control_secs
                    .unwrap_or(if smoke { 1 } else { 10 }),
            );
        let resend_events = (resend_rate
            * (self.resend_secs.unwrap_or(if smoke { 3 } else { 20 }) as f64
                + resend_control.as_secs_f64())) as usize;
        let soak_rate = if smoke {
            200.0
        } else {
            self.soak_rate.max(1.0)
        };
        let fail_permille = (self.error_fraction.clamp(0.0, 1.0) * 1000.0).round() as u32;
        let batch = Insert::Batch(self.batch.max(1));

        let mut scenarios: Vec<Scenario> = Vec::new();
        for s in &self.scenario {
            let expanded: &[Scenario] = match s {
                Scenario::All => &[
                    Scenario::Throughput,
                    Scenario::Fanout,
                    Scenario::Latency,
                    Scenario::ApiLatency,
                    Scenario::ApiThroughput,
                    Scenario::Errors,
                    Scenario::Scale,
                ],
                one => std::slice::from_ref(one),
            };
            for s in expanded {
                if !scenarios.contains(s) {
                    scenarios.push(*s);
                }
            }
        }
        let dbs = self.databases();

        let mut plan = Vec::new();
        for db in &dbs {
            let sqlite = db == "sqlite";
            let counts: Vec<usize> = if sqlite {
                vec![1]
            } else {
                self.instances.iter().map(|n| (*n).clamp(1, 8)).collect()
            };
            for instances in counts {
                let spec = |scenario: &'static str, insert: Insert, events: usize| Spec {
                    db: db.clone(),
                    scenario,
                    insert,
                    events,
                    endpoints: 1,
                    fail_permille: 0,
                    preload: 0,
                    backlog: false,
                    instances,
                    producers: self.producers.unwrap_or(match (sqlite, insert) {
                        (true, _) => 1,
                        (false, Insert::Batch(_)) => 2,
                        // A commit waits for its WAL flush (about 3 ms on this disk): it
                        // takes many sessions to offer 1000+ single-row commits/s.
                        (false, _) => 16,
                    }),
                    payload_bytes: self.payload_bytes,
                    pg_async_commit: self.pg_async_commit,
                    sqlite_stats: self.sqlite_stats,
                    held: 0,
                    resend_events: 0,
                    resend_rate,
                    resend_control,
                    retention: None,
                    timeout,
                };
                for s in &scenarios {
                    match s {
                        Scenario::Throughput => {
                            plan.push(spec("throughput", batch, events));
                            plan.push(spec("throughput", Insert::Single, events));
                        }
                        Scenario::Fanout => {
                            let fanout = self.fanout.max(1);
                            plan.push(Spec {
                                endpoints: fanout,
                                ..spec("fanout", batch, (events / fanout).max(1))
                            });
                        }
                        Scenario::Latency => {
                            plan.push(spec(
                                "latency",
                                Insert::Paced(self.rate.max(1.0)),
                                latency_events,
                            ));
                        }
                        Scenario::ApiLatency => {
                            plan.push(Spec {
                                producers: self.producers.unwrap_or(16),
                                ..spec(
                                    "api-latency",
                                    Insert::Api(self.rate.max(1.0)),
                                    latency_events,
                                )
                            });
                        }
                        Scenario::ApiThroughput => {
                            for c in &self.api_concurrency {
                                let c = (*c).max(1);
                                plan.push(Spec {
                                    producers: c,
                                    ..spec("api-throughput", Insert::ApiLoop(c), events)
                                });
                            }
                        }
                        Scenario::Errors => plan.push(Spec {
                            fail_permille,
                            ..spec("errors", batch, events)
                        }),
                        Scenario::Scale => plan.push(Spec {
                            preload,
                            ..spec("scale", batch, events)
                        }),
                        Scenario::Backlog => plan.push(Spec {
                            backlog: true,
                            ..spec("backlog", batch, backlog)
                        }),
                        Scenario::Soak => plan.push(Spec {
                            timeout: timeout.max(Duration::from_secs(soak_secs + 120)),
                            ..spec(
                                "soak",
                                Insert::Paced(soak_rate),
                                (soak_rate * soak_secs as f64) as usize,
                            )
                        }),
                        Scenario::History => {
                            // The same run on empty tables first: the reference.
                            plan.push(spec("history", batch, events));
                            plan.push(Spec {
                                preload,
                                held,
                                resend_events,
                                ..spec("history", batch, events)
                            });
                        }
                        // Partitions are PostgreSQL's.
                        Scenario::Retention if sqlite => {}
                        Scenario::Retention => {
                            // The same run without the day first: the reference.
                            plan.push(spec("retention", batch, events));
                            for (rows, layout) in [
                                (retention_rows, retention::Layout::Partition),
                                (retention_rows_by_row, retention::Layout::Rows),
                            ] {
                                plan.push(Spec {
                                    retention: Some(retention::Load { rows, layout }),
                                    ..spec("retention", batch, events)
                                });
                            }
                        }
                        // Runs of its own shape: see `noisy`.
                        Scenario::NoisyNeighbour => {}
                        Scenario::All => unreachable!("expanded above"),
                    }
                }
            }
        }
        plan
    }
}

async fn postgres_version(url: &str) -> Option<String> {
    use sqlx::Connection;
    let connect = sqlx::PgConnection::connect(url);
    let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .ok()?
        .ok()?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(version)
}

async fn main_async(cli: Cli) -> anyhow::Result<bool> {
    let plan = cli.plan();
    let hookd_bin = hookd::binary(cli.hookd.as_deref(), cli.build)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let ctx = Ctx {
        hookd_bin: hookd_bin.clone(),
        http,
    };
    let mut machine = Machine::describe(&hookd_bin.display().to_string(), cli.label.clone());
    if let Some(pg) = plan.iter().find(|s| s.db != "sqlite") {
        machine.postgres_version = postgres_version(&pg.db).await;
    }

    // A shared machine's speed drifts (here by up to 2x within minutes), so the ceiling is
    // measured around each run at saturation, before and after it, and the run is compared
    // with the higher of the two. A run that loads rows first (a preload, a backlog) is
    // compared with the one after it only: the one before predates the load by minutes. A
    // ceiling that fails to measure leaves its runs uncompared; it does not end the bench.
    let ceiling_requests = cli
        .ceiling_requests
        .unwrap_or_else(|| cli.events.unwrap_or(20_000).max(20_000));
    let with_ceiling = !(cli.no_ceiling || cli.smoke);
    let measure_ceiling = || async {
        eprintln!(
            "ceiling: {ceiling_requests} requests, {} concurrent",
            cli.concurrency
        );
        match ceiling::run(
            ceiling_requests,
            cli.concurrency.max(1),
            cli.payload_bytes,
            Duration::from_secs(300),
        )
        .await
        {
            Ok(c) => Some(CeilingReport::new(&c, cli.concurrency)),
            Err(e) => {
                eprintln!("      the ceiling could not be measured: {e:#}");
                None
            }
        }
    };
    let mut ceilings: Vec<CeilingReport> = Vec::new();
    // The last ceiling measured, if no other run came between it and the next.
    let mut just_measured: Option<f64> = None;

    let mut runs = Vec::new();
    for (n, spec) in plan.iter().enumerate() {
        eprintln!(
            "[{}/{}] {} x{} {} {} ({} events x {} endpoints{})",
            n + 1,
            plan.len(),
            if spec.db == "sqlite" {
                "sqlite"
            } else {
                "postgres"
            },
            spec.instances,
            spec.scenario,
            spec.insert.label(),
            spec.events,
            spec.endpoints,
            if spec.preload > 0 {
                format!(", {} preloaded", spec.preload)
            } else {
                String::new()
            }
        );
        // Paced runs are not compared with the ceiling.
        let compared = with_ceiling && spec.insert.at_saturation();
        let loads_first = spec.preload > 0 || spec.backlog;
        if compared && !loads_first && just_measured.is_none() {
            if let Some(c) = measure_ceiling().await {
                just_measured = Some(c.requests_per_sec);
                ceilings.push(c);
            }
        }
        let mut outcome = run::run(&ctx, spec).await;
        let before = just_measured.filter(|_| !loads_first);
        just_measured = None;
        if compared {
            if let Some(c) = measure_ceiling().await {
                let after = c.requests_per_sec;
                let reference = before.map_or(after, |b| b.max(after));
                if outcome.error.is_none() {
                    outcome.ceiling_per_sec = Some(reference);
                    outcome.fraction_of_ceiling = Some(outcome.deliveries_per_sec / reference);
                }
                ceilings.push(c);
                just_measured = Some(after);
            }
        }
        eprintln!(
            "      {} of {} delivered in {:.2}s: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, RSS {:.1} MB, CPU {:.2} s/10k (per delivery: runtime {:.0} µs{}), steal {:.0}%{}",
            outcome.delivered,
            outcome.expected,
            outcome.secs,
            outcome.deliveries_per_sec,
            outcome.latency.p50_ms,
            outcome.latency.p99_ms,
            outcome.peak_rss_mb,
            outcome.cpu_secs_per_10k,
            outcome.us_per_delivery(outcome.thread_cpu.runtime),
            if outcome.thread_cpu.sqlite_writer > 0.0 {
                format!(
                    ", SQLite writer {:.0} µs",
                    outcome.us_per_delivery(outcome.thread_cpu.sqlite_writer)
                )
            } else {
                String::new()
            },
            100.0 * outcome.steal_share(machine.nproc),
            outcome
                .error
                .as_ref()
                .map(|e| format!("; ERROR: {e}"))
                .unwrap_or_default()
        );
        if let Some(h) = &outcome.history {
            eprintln!("      {}", report::history_line(h));
        }
        if let Some(r) = &outcome.retention {
            eprintln!("      {}", retention::line(r));
        }
        runs.push(outcome);
    }

    let mut noisy_reports = Vec::new();
    if cli.scenario.contains(&Scenario::NoisyNeighbour) {
        let backlog = cli
            .noisy_backlog
            .unwrap_or(if cli.smoke { 2_000 } else { 50_000 })
            .max(noisy::MIN_BACKLOG);
        let timeout = Duration::from_secs(cli.timeout_secs.unwrap_or(600));
        for db in cli.databases() {
            for variant in [
                noisy::Variant::TwoTenants,
                noisy::Variant::OneTenant,
                noisy::Variant::Outbox,
            ] {
                noisy_reports.push(noisy::run(&ctx, &db, variant, backlog, timeout).await);
            }
        }
    }

    machine.load_avg_at_end = report::load_avg();
    let ceiling = report::CeilingSummary::of(ceilings);
    let mut report = Report {
        tool: "hookd-bench",
        smoke: cli.smoke,
        machine,
        ceiling,
        runs,
        targets: Vec::new(),
    };
    if !cli.smoke {
        report.evaluate_targets();
    }
    report.print();
    noisy::print(&noisy_reports);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }

    let failed: Vec<String> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.correctness_problems()
                .into_iter()
                .map(move |p| format!("{} x{} {} {}: {p}", r.db, r.instances, r.scenario, r.insert))
        })
        .chain(noisy_reports.iter().filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{} noisy-neighbour ({}): {e}", r.db, r.variant.label()))
        }))
        .collect();
    if failed.is_empty() {
        println!(
            "\n{}: {} runs, every expected delivery received once or more, every signature valid, every delivery recorded",
            if cli.smoke { "smoke passed" } else { "correct" },
            report.runs.len()
        );
        Ok(true)
    } else {
        eprintln!("\nFAILED:");
        for f in &failed {
            eprintln!("  {f}");
        }
        Ok(false)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(main_async(cli));
    // Receivers' connection tasks may still be parked: don't wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_and_smoke_is_small() {
        let cli = Cli::parse_from(["hookd-bench", "--smoke"]);
        let plan = cli.plan();
        // 10 runs (throughput twice, api-throughput at 16, 64 and 256 clients) for each of
        // sqlite and the local PostgreSQL.
        assert_eq!(plan.len(), 20);
        assert!(plan.iter().all(|s| s.events * s.endpoints <= 300));
        let cli = Cli::parse_from([
            "hookd-bench",
            "--db",
            "sqlite",
            "--db",
            LOCAL_PG,
            "--instances",
            "1,2",
            "--scenario",
            "fanout,latency",
        ]);
        let plan = cli.plan();
        assert_eq!(plan.len(), 2 + 2 * 2);
        assert!(plan
            .iter()
            .filter(|s| s.db == "sqlite")
            .all(|s| s.instances == 1));
        assert_eq!(plan[0].endpoints, 10);
        assert_eq!(plan[0].events, 2_000);
    }
}
