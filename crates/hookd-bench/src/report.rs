//! The table for people, the JSON for machines, the machine description and the targets.

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::history::{HistoryFigures, JobTimes};
use crate::run::Outcome;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres_version: Option<String>,
    pub load_avg_at_start: String,
    pub load_avg_at_end: String,
    pub hookd_binary: String,
    /// `git rev-parse --short HEAD` of this workspace: the hookd measured when the binary
    /// is the workspace's own target/release/hookd.
    pub git_commit: Option<String>,
    /// Free text given with --label (e.g. which commit a --hookd binary was built from).
    pub label: Option<String>,
}

impl Machine {
    pub fn describe(hookd_binary: &str, label: Option<String>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(crate::hookd::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib: mem_kb / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            postgres_version: None,
            load_avg_at_start: load_avg(),
            load_avg_at_end: String::new(),
            hookd_binary: hookd_binary.to_string(),
            git_commit,
            label,
        }
    }
}

pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    pub requests: u64,
    pub concurrency: usize,
    pub secs: f64,
    pub requests_per_sec: f64,
    pub invalid_signatures: u64,
    pub client_and_receiver_cpu_secs: f64,
}

impl CeilingReport {
    pub fn new(c: &Ceiling, concurrency: usize) -> CeilingReport {
        CeilingReport {
            requests: c.requests,
            concurrency,
            secs: c.secs,
            requests_per_sec: c.per_sec,
            invalid_signatures: c.invalid_signatures,
            client_and_receiver_cpu_secs: c.client_cpu_secs,
        }
    }
}

/// Every ceiling measured in one invocation (around each run at saturation).
#[derive(Debug, Clone, Serialize)]
pub struct CeilingSummary {
    pub concurrency: usize,
    pub requests_each: u64,
    pub lowest_per_sec: f64,
    pub highest_per_sec: f64,
    pub measurements: Vec<CeilingReport>,
}

impl CeilingSummary {
    pub fn of(measurements: Vec<CeilingReport>) -> Option<CeilingSummary> {
        let first = measurements.first()?;
        let rates = measurements.iter().map(|c| c.requests_per_sec);
        Some(CeilingSummary {
            concurrency: first.concurrency,
            requests_each: first.requests,
            lowest_per_sec: rates.clone().fold(f64::INFINITY, f64::min),
            highest_per_sec: rates.fold(0.0, f64::max),
            measurements,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub smoke: bool,
    pub machine: Machine,
    pub ceiling: Option<CeilingSummary>,
    pub runs: Vec<Outcome>,
    pub targets: Vec<Target>,
}

/// A share (of the window, of a reference run) as a percentage, or "-" when not measured.
fn share(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.0}%", 100.0 * v))
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>w$}", w = widths[i]))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .map(|w| format!("{}:", "-".repeat(w + 1)))
            .collect::<Vec<_>>()
            .join("|")
    ));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

impl Report {
    /// The main table (Markdown, so that it can be pasted into docs/benchmarks.md).
    pub fn main_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.db.clone(),
                    r.instances.to_string(),
                    r.scenario.clone(),
                    r.insert.clone(),
                    format!("{}x{}", r.events, r.endpoints),
                    format!("{:.2}", r.secs),
                    format!("{:.0}", r.deliveries_per_sec),
                    format!("{:.0}", r.attempts_per_sec),
                    fmt_num(r.latency.p50_ms),
                    fmt_num(r.latency.p99_ms),
                    fmt_num(r.latency.max_ms),
                    r.accept
                        .map(|a| format!("{} / {}", fmt_num(a.p50_ms), fmt_num(a.p99_ms)))
                        .unwrap_or_else(|| "-".into()),
                    format!("{:.1}", r.peak_rss_mb),
                    format!("{:.2}", r.cpu_secs_per_10k),
                    r.fraction_of_ceiling
                        .map(|f| format!("{:.0}%", f * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    r.duplicates.to_string(),
                    r.invalid_signatures.to_string(),
                    if r.correctness_problems().is_empty() {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ]
            })
            .collect();
        table(
            &[
                "db",
                "inst",
                "scenario",
                "insert",
                "events x ep",
                "secs",
                "deliv/s",
                "attempts/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "accept p50/p99 ms",
                "RSS MB",
                "CPU s/10k",
                "of ceiling",
                "dups",
                "bad sig",
                "ok",
            ],
            &rows,
        )
    }

    /// Where the time went: hookd's own store timings, CPU split, database writes.
    pub fn diagnostics_table(&self) -> String {
        let op = |r: &Outcome, name: &str| {
            // `claim` was renamed `claim_due` when claims learnt to skip busy endpoints.
            let alias = if name == "claim" { "claim_due" } else { name };
            r.store_ops
                .get(name)
                .or_else(|| r.store_ops.get(alias))
                .map(|o| format!("{:.2}", o.avg_ms))
                .unwrap_or_else(|| "-".into())
        };
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let pg = r.pg_per_delivery;
                vec![
                    r.db.clone(),
                    r.instances.to_string(),
                    r.scenario.clone(),
                    r.insert.clone(),
                    format!("{:.2}", r.insert_secs),
                    format!("{:.1}", r.claim_batch_avg),
                    share(r.leased_share),
                    op(r, "claim"),
                    op(r, "complete"),
                    op(r, "ingest_outbox"),
                    r.store_ops
                        .get("release")
                        .map(|o| o.calls.to_string())
                        .unwrap_or_else(|| "0".into()),
                    format!("{:.1}", r.hookd_cpu_secs),
                    format!("{:.1}", r.bench_cpu_secs),
                    format!("{:.1}", r.other_cpu_secs),
                    r.pg_cpu
                        .map(|c| format!("{:.2}", c.hookd_sessions_per_10k))
                        .unwrap_or_else(|| "-".into()),
                    r.pg_cpu
                        .map(|c| format!("{:.1}", c.producer_sessions_secs + c.background_secs))
                        .unwrap_or_else(|| "-".into()),
                    format!(
                        "{:.0}%",
                        100.0 * r.machine_busy_secs
                            / (r.secs.max(1e-9) * self.machine.nproc as f64)
                    ),
                    format!("{:.0}%", 100.0 * r.steal_share(self.machine.nproc)),
                    format!("{:.0}", r.us_per_delivery(r.thread_cpu.runtime)),
                    if r.thread_cpu.sqlite_writer > 0.0 {
                        format!("{:.0}", r.us_per_delivery(r.thread_cpu.sqlite_writer))
                    } else {
                        "-".into()
                    },
                    share(r.writer_held_share),
                    share(r.writer_waiting_share),
                    pg.map(|p| format!("{:.2}", p.commits))
                        .unwrap_or_else(|| "-".into()),
                    pg.map(|p| format!("{:.2}", p.rollbacks))
                        .unwrap_or_else(|| "-".into()),
                    pg.map(|p| format!("{:.1}", p.rows_inserted + p.rows_updated + p.rows_deleted))
                        .unwrap_or_else(|| "-".into()),
                    pg.map(|p| format!("{:.0}", p.wal_bytes))
                        .unwrap_or_else(|| "-".into()),
                    pg.and_then(|p| p.statements)
                        .map(|s| format!("{s:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    r.answered_500.to_string(),
                    r.log_warnings.to_string(),
                ]
            })
            .collect();
        table(
            &[
                "db",
                "inst",
                "scenario",
                "insert",
                "insert s",
                "claim batch",
                "leased at ingest",
                "claim ms",
                "complete ms",
                "ingest ms",
                "release calls",
                "hookd CPU s",
                "bench CPU s",
                "other CPU s",
                "PG for hookd s/10k",
                "PG other s",
                "machine busy",
                "steal",
                "runtime µs/deliv",
                "writer µs/deliv",
                "writer held",
                "writer runq",
                "PG commits/deliv",
                "PG rollbacks/deliv",
                "PG rows/deliv",
                "WAL B/deliv",
                "PG statements/deliv",
                "500s",
                "warn lines",
            ],
            &rows,
        )
    }

    /// The history scenario: the rescue job's runs, throughput against the same run on
    /// empty tables, and the bulk resend phase.
    pub fn history_table(&self) -> Option<String> {
        let times = |t: &Option<JobTimes>| match t {
            Some(t) => vec![t.runs.to_string(), fmt_num(t.mean_ms), t.max_label()],
            None => vec!["0".into(), "-".into(), "-".into()],
        };
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .filter_map(|r| {
                let h = r.history.as_ref()?;
                let empty = self.history_reference(r);
                let mut row = vec![r.db.clone(), r.preload.to_string(), h.held.to_string()];
                row.extend(times(&h.promote_idle));
                row.extend(times(&h.promote_busy));
                row.push(format!("{:.0}", r.deliveries_per_sec));
                row.push(share(
                    empty
                        .filter(|e| !std::ptr::eq(*e, r))
                        .map(|e| r.deliveries_per_sec / e.deliveries_per_sec.max(1e-9)),
                ));
                match &h.resend {
                    Some(x) => row.extend([
                        x.matched.to_string(),
                        fmt_num(x.create_ms),
                        x.resent.to_string(),
                        format!("{} at {:.0}/s", x.events, x.rate),
                        fmt_num(x.max_gap_ms),
                        fmt_num(x.p99_ms),
                        fmt_num(x.max_ms),
                    ]),
                    None => row.extend((0..7).map(|_| "-".to_string())),
                }
                Some(row)
            })
            .collect();
        if rows.is_empty() {
            return None;
        }
        Some(table(
            &[
                "db",
                "finished",
                "held",
                "rescue runs idle",
                "mean ms",
                "max",
                "rescue runs loaded",
                "mean ms",
                "max",
                "deliv/s",
                "of empty",
                "resend matched",
                "POST ms",
                "resent",
                "other endpoint",
                "max gap ms",
                "p99 ms",
                "max ms",
            ],
            &rows,
        ))
    }

    /// The retention scenario: how long a day of history past retention took to go, the
    /// retention job's runs, throughput meanwhile against the run without it.
    pub fn retention_table(&self) -> Option<String> {
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .filter_map(|r| {
                let f = r.retention.as_ref()?;
                let empty = self.runs.iter().find(|e| {
                    e.db == r.db
                        && e.scenario == "retention"
                        && e.retention.is_none()
                        && e.error.is_none()
                });
                let mut row = vec![
                    r.db.clone(),
                    f.layout.clone(),
                    f.rows.to_string(),
                    format!("{:.1}", f.load_secs),
                    f.gone_after_secs
                        .map_or("not gone".into(), |s| format!("{s:.1}")),
                ];
                match &f.jobs {
                    Some(t) => row.extend([t.runs.to_string(), fmt_num(t.mean_ms), t.max_label()]),
                    None => row.extend(["0".into(), "-".into(), "-".into()]),
                }
                row.push(format!(
                    "{}{}",
                    fmt_num(f.pause_meanwhile_ms),
                    if f.run_ended_first {
                        " (run ended first)"
                    } else {
                        ""
                    }
                ));
                row.push(fmt_num(f.pause_in_run_ms));
                row.push(
                    empty
                        .and_then(|e| e.longest_pause_ms)
                        .map_or("-".into(), fmt_num),
                );
                row.push(format!("{:.0}", r.deliveries_per_sec));
                row.push(empty.map_or("-".into(), |e| format!("{:.0}", e.deliveries_per_sec)));
                row.push(share(
                    empty.map(|e| r.deliveries_per_sec / e.deliveries_per_sec.max(1e-9)),
                ));
                Some(row)
            })
            .collect();
        if rows.is_empty() {
            return None;
        }
        Some(table(
            &[
                "db",
                "the day is in",
                "rows",
                "load s",
                "gone after s",
                "retention runs",
                "mean ms",
                "max",
                "pause ms meanwhile",
                "pause ms in run",
                "pause ms without",
                "deliv/s in run",
                "deliv/s without",
                "of without",
            ],
            &rows,
        ))
    }

    /// The history run on empty tables of the same database.
    fn history_reference(&self, run: &Outcome) -> Option<&Outcome> {
        self.runs.iter().find(|r| {
            r.db == run.db
                && r.instances == run.instances
                && r.error.is_none()
                && r.history.as_ref().is_some_and(|h| h.held == 0)
                && r.preload == 0
        })
    }

    pub fn print(&self) {
        let m = &self.machine;
        println!();
        println!(
            "machine: {} x {}, {:.1} GiB, Linux {}, PostgreSQL {}; load average {} (start) / {} (end)",
            m.nproc,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.postgres_version.as_deref().unwrap_or("-"),
            m.load_avg_at_start,
            m.load_avg_at_end
        );
        println!(
            "hookd: {} (workspace at commit {}){}",
            m.hookd_binary,
            m.git_commit.as_deref().unwrap_or("?"),
            m.label
                .as_deref()
                .map(|l| format!("; {l}"))
                .unwrap_or_default()
        );
        if let Some(c) = &self.ceiling {
            println!(
                "ceiling (plain keep-alive HTTP client, {} tasks, no database, {} requests each): \
                 {:.0} to {:.0} requests/s in {} measurements; each run's \"of ceiling\" is against \
                 the higher of the two measured just before and just after it (after it only when the run \
                 bulk-loads rows first)",
                c.concurrency,
                c.requests_each,
                c.lowest_per_sec,
                c.highest_per_sec,
                c.measurements.len()
            );
        }
        println!();
        print!("{}", self.main_table());
        println!();
        print!("{}", self.diagnostics_table());
        if let Some(history) = self.history_table() {
            println!(
                "\nhistory: an ordered endpoint with `finished` deliveries and `held` ones behind a head that waits for its retry; \
                 the rescue job (which lets stranded held deliveries go) runs every second, its runs timed before the events (idle) and while they were delivered (loaded); \
                 \"of empty\": throughput against the run on empty tables; then events to another endpoint through the API while a bulk resend of the whole history runs"
            );
            println!();
            print!("{history}");
            for r in &self.runs {
                if let Some(e) = r.history.as_ref().and_then(|h| h.resend_error.as_ref()) {
                    println!("\n{} history: the bulk resend phase failed: {e}", r.db);
                }
            }
        }
        if let Some(retention) = self.retention_table() {
            println!(
                "\nretention: a day of finished deliveries (one attempt each) 31 days old in the tables as hookd starts, retention running every second; \
                 \"gone after\": from hookd's start; runs: the retention job's until then; pause: the longest between two deliveries, from hookd's start until the day was gone, over the whole run, and over the same run without the day; throughput of the run against the same run without the day"
            );
            println!();
            print!("{retention}");
        }
        for r in &self.runs {
            let problems = r.correctness_problems();
            if !problems.is_empty() {
                println!(
                    "\n{} {} {}: {}",
                    r.db,
                    r.scenario,
                    r.insert,
                    problems.join("; ")
                );
            }
            if !r.clean_exit && r.error.is_none() {
                println!(
                    "\nnote: {} {} {}: a hookd process did not exit 0 on SIGTERM",
                    r.db, r.scenario, r.insert
                );
            }
            if let Some(w) = &r.first_warning {
                println!(
                    "\nnote: {} {} {}: {} warning lines in hookd's log, first: {}",
                    r.db, r.scenario, r.insert, r.log_warnings, w
                );
            }
        }
        for r in self.runs.iter().filter(|r| r.scenario == "soak") {
            let series: Vec<String> = r
                .rss_samples
                .iter()
                .step_by(12)
                .map(|(t, mb)| format!("{:.0}s {mb:.1}", t))
                .collect();
            println!(
                "\n{} soak: resident MB of hookd, every minute: {}",
                r.db,
                series.join(", ")
            );
        }
        if !self.targets.is_empty() {
            println!("\ntargets:");
            for t in &self.targets {
                let verdict = match t.met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "not measured",
                };
                println!("  {:<62} {:<40} {verdict}", t.target, t.measured);
            }
        }
    }

    /// Compares the figures with the targets (never asserted: only printed).
    pub fn evaluate_targets(&mut self) {
        let find = |db: &str, scenario: &str, insert: Option<&str>| {
            self.runs.iter().find(|r| {
                r.db == db
                    && r.instances == 1
                    && r.scenario == scenario
                    && r.error.is_none()
                    && insert.is_none_or(|i| r.insert.starts_with(i))
            })
        };
        let mut targets = Vec::new();
        let mut push = |target: &str, measured: Option<(String, bool)>| {
            targets.push(Target {
                target: target.into(),
                measured: measured
                    .as_ref()
                    .map(|m| m.0.clone())
                    .unwrap_or_else(|| "-".into()),
                met: measured.map(|m| m.1),
            })
        };
        let sq = find("sqlite", "throughput", Some("batch"));
        push(
            "SQLite >= 10,000 deliveries/s",
            sq.map(|r| {
                (
                    format!("{:.0}/s", r.deliveries_per_sec),
                    r.deliveries_per_sec >= 10_000.0,
                )
            }),
        );
        push(
            "SQLite >= 50% of the plain-HTTP ceiling",
            sq.and_then(|r| r.fraction_of_ceiling)
                .map(|f| (format!("{:.0}%", f * 100.0), f >= 0.5)),
        );
        let pg = find("postgres", "throughput", Some("batch"));
        push(
            "PostgreSQL >= 5,000 deliveries/s, one hookd",
            pg.map(|r| {
                (
                    format!("{:.0}/s", r.deliveries_per_sec),
                    r.deliveries_per_sec >= 5_000.0,
                )
            }),
        );
        // (run, which percentile, limit in ms) -> the measured figure and the verdict.
        let under = |r: Option<&Outcome>, p99: bool, limit: f64| {
            r.map(|r| {
                let ms = if p99 {
                    r.latency.p99_ms
                } else {
                    r.latency.p50_ms
                };
                (format!("{ms:.1} ms"), ms < limit)
            })
        };
        let pl = find("postgres", "latency", None);
        push(
            "PostgreSQL latency at 1,000/s: p50 < 10 ms",
            under(pl, false, 10.0),
        );
        push(
            "PostgreSQL latency at 1,000/s: p99 < 50 ms",
            under(pl, true, 50.0),
        );
        for db in ["sqlite", "postgres"] {
            let api = find(db, "api-latency", None);
            push(
                &format!("{db}: API-ingested latency at 1,000/s: p50 < 10 ms"),
                under(api, false, 10.0),
            );
            push(
                &format!("{db}: API-ingested latency at 1,000/s: p99 < 50 ms"),
                under(api, true, 50.0),
            );
        }
        // The API path at concurrency 64 against the batched outbox and the ceiling.
        for (db, of_ceiling) in [("sqlite", 0.30), ("postgres", 0.18)] {
            let api = find(db, "api-throughput", Some("API c64"));
            let outbox = find(db, "throughput", Some("batch"));
            push(
                &format!("{db}: API path at concurrency 64 >= 70% of the batched outbox"),
                api.zip(outbox).map(|(a, o)| {
                    let ratio = a.deliveries_per_sec / o.deliveries_per_sec.max(1.0);
                    (
                        format!(
                            "{:.0}/s against {:.0}/s: {:.0}%",
                            a.deliveries_per_sec,
                            o.deliveries_per_sec,
                            ratio * 100.0
                        ),
                        ratio >= 0.70,
                    )
                }),
            );
            push(
                &format!(
                    "{db}: API path at concurrency 64 >= {:.0}% of the ceiling",
                    of_ceiling * 100.0
                ),
                api.and_then(|a| a.fraction_of_ceiling)
                    .map(|f| (format!("{:.0}%", f * 100.0), f >= of_ceiling)),
            );
        }
        push(
            "PostgreSQL: API accept latency p50 < 10 ms at concurrency 64",
            find("postgres", "api-throughput", Some("API c64"))
                .and_then(|a| a.accept)
                .map(|a| (format!("{:.2} ms", a.p50_ms), a.p50_ms < 10.0)),
        );
        push(
            "SQLite latency p99 < poll interval + 20 ms (120 ms)",
            under(find("sqlite", "latency", None), true, 120.0),
        );
        for db in ["sqlite", "postgres"] {
            let backlog = find(db, "backlog", None);
            push(
                &format!("{db}: peak RSS < 100 MB with a backlog of pending deliveries"),
                backlog.map(|r| {
                    (
                        format!("{:.1} MB, {} pending", r.peak_rss_mb, r.expected),
                        r.peak_rss_mb < 100.0,
                    )
                }),
            );
            let scale = find(db, "scale", None);
            push(
                &format!("{db}: peak RSS < 100 MB with a large table"),
                scale.map(|r| {
                    (
                        format!("{:.1} MB, {} rows preloaded", r.peak_rss_mb, r.preload),
                        r.peak_rss_mb < 100.0,
                    )
                }),
            );
            let empty = find(db, "throughput", Some("batch"));
            push(
                &format!("{db}: throughput with a large table within 15% of empty"),
                scale.zip(empty).map(|(s, e)| {
                    let ratio = s.deliveries_per_sec / e.deliveries_per_sec.max(1e-9);
                    (
                        format!("{:.0}% of empty ({} rows)", ratio * 100.0, s.preload),
                        ratio >= 0.85,
                    )
                }),
            );
        }
        for db in ["sqlite", "postgres"] {
            push(
                &format!("{db}: memory flat over a soak run"),
                find(db, "soak", None).and_then(|r| soak_flatness(&r.rss_samples)),
            );
        }
        for db in ["sqlite", "postgres"] {
            let loaded = self.runs.iter().find(|r| {
                r.db == db
                    && r.instances == 1
                    && r.error.is_none()
                    && r.history.as_ref().is_some_and(|h| h.held > 0)
            });
            let h = loaded.and_then(|r| r.history.as_ref());
            let runs: Vec<&JobTimes> = h
                .iter()
                .flat_map(|h| [&h.promote_idle, &h.promote_busy])
                .flatten()
                .collect();
            push(
                &format!("{db}: rescue (promote) job < 50 ms, long history + held"),
                loaded.filter(|_| !runs.is_empty()).map(|r| {
                    let max = runs
                        .iter()
                        .map(|t| t.max_ms_at_most.unwrap_or(f64::INFINITY))
                        .fold(0.0, f64::max);
                    let n: u64 = runs.iter().map(|t| t.runs).sum();
                    (
                        format!(
                            "max <= {max:.0} ms over {n} runs ({} + {} held)",
                            r.preload,
                            h.map_or(0, |h| h.held)
                        ),
                        max <= 50.0,
                    )
                }),
            );
            push(
                &format!("{db}: throughput, long history + held, >= 90% of empty"),
                loaded
                    .and_then(|r| Some((r, self.history_reference(r)?)))
                    .map(|(r, e)| {
                        let ratio = r.deliveries_per_sec / e.deliveries_per_sec.max(1e-9);
                        (format!("{:.0}% of empty", ratio * 100.0), ratio >= 0.9)
                    }),
            );
            push(
                &format!("{db}: bulk resend of the history: no pause > 100 ms elsewhere"),
                h.and_then(|h| h.resend.as_ref()).map(|x| {
                    (
                        format!("max gap {:.0} ms ({} rows)", x.max_gap_ms, x.matched),
                        x.max_gap_ms <= 100.0,
                    )
                }),
            );
        }
        self.targets = targets;
    }
}

/// Flat: the largest resident size in the last third of the run is at most 10% (and 2 MB)
/// above the largest in the first third (allocators and pools warm up first).
fn soak_flatness(samples: &[(f64, f64)]) -> Option<(String, bool)> {
    if samples.len() < 3 {
        return None;
    }
    let third = samples.len() / 3;
    let max = |s: &[(f64, f64)]| s.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
    let first = max(&samples[..third]);
    let last = max(&samples[samples.len() - third..]);
    let secs = samples.last().map(|(t, _)| *t).unwrap_or(0.0);
    Some((
        format!("{first:.1} MB -> {last:.1} MB over {secs:.0} s"),
        last <= first * 1.10 + 2.0,
    ))
}

/// One line on the history run's figures, printed as it ends.
pub fn history_line(h: &HistoryFigures) -> String {
    let times = |what: &str, t: &Option<JobTimes>| match t {
        Some(t) => format!(
            "{what}: {} runs, mean {:.1} ms, max {}",
            t.runs,
            t.mean_ms,
            t.max_label()
        ),
        None => format!("{what}: no run"),
    };
    let mut line = format!(
        "rescue job ({}) {}; {}",
        h.promote_idle
            .as_ref()
            .or(h.promote_busy.as_ref())
            .map_or("-", |t| t.series.as_str()),
        times("idle", &h.promote_idle),
        times("loaded", &h.promote_busy)
    );
    if let Some(x) = &h.resend {
        line.push_str(&format!(
            "; bulk resend of {} rows (POST {:.0} ms, {} resent in {:.0} s): {} events to another endpoint, longest gap {:.1} ms ({:+.1} s after the POST; before it {:.1} ms), p99 {:.1} ms, max {:.1} ms",
            x.matched,
            x.create_ms,
            x.resent,
            x.secs,
            x.events,
            x.max_gap_ms,
            x.max_gap_at_s,
            x.max_gap_before_ms,
            x.p99_ms,
            x.max_ms
        ));
    }
    if let Some(e) = &h.resend_error {
        line.push_str(&format!("; bulk resend phase failed: {e}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::soak_flatness;

    #[test]
    fn flatness_compares_the_last_third_with_the_first() {
        let flat: Vec<(f64, f64)> = (0..12)
            .map(|i| (i as f64 * 5.0, 30.0 + (i % 2) as f64))
            .collect();
        assert!(soak_flatness(&flat).unwrap().1);
        let growing: Vec<(f64, f64)> = (0..12)
            .map(|i| (i as f64 * 5.0, 30.0 + i as f64 * 2.0))
            .collect();
        assert!(!soak_flatness(&growing).unwrap().1);
        assert!(soak_flatness(&flat[..2]).is_none());
    }
}
