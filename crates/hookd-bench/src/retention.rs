//! The `retention` scenario (PostgreSQL): a day of finished history past the retention
//! period is in the tables when hookd starts, with retention running every second, while
//! the measured events are delivered.
//!
//! Two loads of the same rows (`rows` finished deliveries, one attempt each, 31 days old):
//! - `partition`: in the day's own partitions (`hookd_deliveries_pYYYYMMDD`,
//!   `hookd_attempts_pYYYYMMDD`), where hookd files a day's finished deliveries. Retention
//!   drops them whole.
//! - `rows`: in the partitions of the tables from before the partitions
//!   (`hookd_deliveries_before`), with one delivery that finished just now so that they are
//!   not dropped whole either. Retention deletes them row by row, `retention_batch` (1000)
//!   deliveries and their attempts per transaction, as it deleted every row before the
//!   partitions.
//!
//! Measured: the time from hookd's start until the rows are gone, the retention job's runs
//! (`hookd_maintenance_job_duration_seconds{job="retention"}`), and the throughput of the
//! run meanwhile against the same run with no history. The day's events are 1,000 (each
//! delivery names one of them): events are deleted row by row in either layout, and the
//! scenario measures the deliveries and attempts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::db::{Conn, Target};
use crate::history::{self, JobTimes};

/// hookd runs retention every second (the scheduler's resolution).
pub const RETENTION_EVERY_SECOND: (&str, &str) = ("HOOKD_RETENTION_SCHEDULE", "* * * * * *");
const JOB: (&str, &str) = (
    "hookd_maintenance_job_duration_seconds",
    "job=\"retention\"",
);
const DELETED: &str = "hookd_retention_deleted_total{table=\"deliveries\"}";
/// The ids of one day (`hookd_day_first_id` in hookd's migrations).
const DAY_IDS: i64 = 1 << 32;
const DAY_MS: i64 = 86_400_000;
/// How old the loaded day is: past the default retention period of 30 days.
const DAYS_OLD: i64 = 31;

/// Where the loaded day's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The day's own partitions: dropped whole.
    Partition,
    /// The tables from before the partitions: deleted row by row.
    Rows,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Partition => "a day's partition",
            Layout::Rows => "row by row",
        }
    }
}

/// What the retention scenario loads.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    pub rows: u64,
    pub layout: Layout,
}

/// What it measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionFigures {
    pub rows: u64,
    pub layout: String,
    pub load_secs: f64,
    /// From hookd's start until the rows were gone; `None` if they were not within the wait.
    pub gone_after_secs: Option<f64>,
    /// Deliveries hookd counted as deleted by then (an estimate for a dropped partition
    /// of a million rows or more).
    pub deleted: f64,
    /// The retention job's runs from hookd's start until then.
    pub jobs: Option<JobTimes>,
    /// The longest pause between two deliveries from hookd's start until the rows were
    /// gone (or the run ended), and over the whole run.
    pub pause_meanwhile_ms: f64,
    pub pause_in_run_ms: f64,
    /// Whether the measured run ended before the rows were gone: its throughput is all
    /// "meanwhile".
    pub run_ended_first: bool,
}

/// The partition names and id range of `load`'s rows: `(deliveries, attempts, first id,
/// bound clause)`.
fn tables(layout: Layout, day: i64, suffix: &str, today: i64) -> (String, String, i64, String) {
    match layout {
        Layout::Partition => (
            format!("hookd_deliveries_p{suffix}"),
            format!("hookd_attempts_p{suffix}"),
            day * DAY_IDS,
            format!("FROM ({}) TO ({})", day * DAY_IDS, (day + 1) * DAY_IDS),
        ),
        Layout::Rows => (
            "hookd_deliveries_before".into(),
            "hookd_attempts_before".into(),
            1,
            format!("FROM (MINVALUE) TO ({})", today * DAY_IDS),
        ),
    }
}

/// Loads the day (hookd stopped), its tables filled before they are attached (each index
/// built once, not row by row), then `VACUUM ANALYZE`d as autovacuum would have by then.
/// Returns the table of the loaded deliveries.
pub async fn load(conn: &mut Conn, endpoint: &str, load: Load) -> anyhow::Result<String> {
    let today = conn.scalar_i64("SELECT hookd_now_ms() / 86400000").await?;
    let day = today - DAYS_OLD;
    let suffix = conn
        .scalar_i64(&format!(
            "SELECT to_char(to_timestamp({day} * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD')::BIGINT"
        ))
        .await?;
    let (deliveries, attempts, first, bounds) =
        tables(load.layout, day, &suffix.to_string(), today);
    let (n, day_ms) = (load.rows as i64, day * DAY_MS);
    let last = first + n;
    // A new database's tables from before the partitions are empty, and in the way of a
    // day below today's: they go, and `rows` puts them back filled.
    conn.execute(&format!(
        "DROP TABLE hookd_deliveries_before; DROP TABLE hookd_attempts_before;
         CREATE TABLE {deliveries} (LIKE hookd_deliveries_finished INCLUDING DEFAULTS,
             CHECK (state IN ('succeeded', 'failed') AND id >= {first} AND id < {last} + 1));
         INSERT INTO {deliveries} (id, event_id, endpoint_id, event_type, state, attempts,
             auto_attempts, last_status_code, created_at, updated_at, finished_at)
         SELECT {first} + g, 'bench-retained-' || (g % 1000), '{endpoint}', 'bench.retained',
             'succeeded', 1, 1, 200, t, t, t
         FROM (SELECT g, {day_ms} + g * {DAY_MS} / {n} AS t FROM generate_series(0::BIGINT, {n} - 1) g) s;
         ALTER TABLE hookd_deliveries_finished ATTACH PARTITION {deliveries} FOR VALUES {bounds};
         CREATE TABLE {attempts} (LIKE hookd_attempts INCLUDING DEFAULTS,
             CHECK (delivery_id >= {first} AND delivery_id < {last} + 1));
         INSERT INTO {attempts} (id, delivery_id, attempt, trigger, started_at, duration_ms,
             status_code, outcome, response_body)
         SELECT g + 1, {first} + g, 1, 'auto', {day_ms} + g * {DAY_MS} / {n}, 12, 200, 'success', 'ok'
         FROM generate_series(0::BIGINT, {n} - 1) g;
         ALTER TABLE hookd_attempts ATTACH PARTITION {attempts} FOR VALUES {bounds};
         INSERT INTO hookd_events (event_id, event_type, payload, created_at)
         SELECT 'bench-retained-' || g, 'bench.retained', '{{}}', {day_ms}
         FROM generate_series(0, 999) g;"
    ))
    .await
    .context("loading a day of history")?;
    if load.layout == Layout::Rows {
        // One that finished just now: the table is not dropped whole.
        conn.execute(&format!(
            "INSERT INTO hookd_deliveries (id, event_id, endpoint_id, event_type, state, attempts,
                 auto_attempts, created_at, updated_at, finished_at)
             VALUES ({last}, 'bench-retained-0', '{endpoint}', 'bench.retained', 'succeeded', 1, 1,
                 hookd_now_ms(), hookd_now_ms(), hookd_now_ms())"
        ))
        .await?;
    }
    for table in [deliveries.as_str(), attempts.as_str(), "hookd_events"] {
        conn.execute(&format!("VACUUM ANALYZE {table}")).await?;
    }
    Ok(deliveries)
}

/// Whether the loaded rows are gone: the day's partition `table`, or (row by row) every
/// delivery, by hookd's count.
async fn gone(conn: &mut Conn, table: &str, load: Load, scrape: &BTreeMap<String, f64>) -> bool {
    match load.layout {
        Layout::Partition => conn
            .scalar_i64(&format!(
                "SELECT COUNT(*) FROM pg_class WHERE relname = '{table}'"
            ))
            .await
            .is_ok_and(|n| n == 0),
        Layout::Rows => scrape.get(DELETED).copied().unwrap_or(0.0) >= load.rows as f64,
    }
}

/// What [`watch`] watches.
pub struct Watch {
    /// hookd's `/metrics`.
    pub metrics_url: String,
    pub http: reqwest::Client,
    pub db: Target,
    pub load: Load,
    /// The loaded deliveries' table.
    pub table: String,
    /// hookd's start on the loaded tables.
    pub started: Instant,
    pub load_secs: f64,
    pub limit: Duration,
}

/// Watches, from hookd's start and beside the measured run, until the loaded rows are gone
/// (every 100 ms) or `limit` has passed.
pub fn watch(w: Watch) -> tokio::task::JoinHandle<RetentionFigures> {
    tokio::spawn(async move {
        let mut figures = RetentionFigures {
            rows: w.load.rows,
            layout: w.load.layout.label().into(),
            load_secs: w.load_secs,
            ..RetentionFigures::default()
        };
        let Ok(mut conn) = w.db.connect().await else {
            return figures;
        };
        let until = w.started + w.limit;
        loop {
            let scrape = scrape(&w.http, &w.metrics_url).await;
            let done = gone(&mut conn, &w.table, w.load, &scrape).await;
            if done {
                figures.gone_after_secs = Some(w.started.elapsed().as_secs_f64());
            }
            if done || Instant::now() >= until {
                // The run that dropped the rows is counted as it ends, a moment after.
                let mut scrape = scrape;
                for _ in 0..20 {
                    figures.jobs = history::histogram_times(JOB, &BTreeMap::new(), &scrape);
                    if figures.jobs.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    scrape = self::scrape(&w.http, &w.metrics_url).await;
                }
                figures.deleted = scrape.get(DELETED).copied().unwrap_or(0.0);
                return figures;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn scrape(http: &reqwest::Client, url: &str) -> BTreeMap<String, f64> {
    let Ok(response) = http.get(url).send().await else {
        return BTreeMap::new();
    };
    crate::hookd::parse_metrics(&response.text().await.unwrap_or_default())
}

/// The longest pause between two receipts (ns since the run's base, sorted) that ends in
/// `[from, to]`, in ms.
pub fn longest_pause_ms(receipts: &[u64], from: u64, to: u64) -> f64 {
    receipts
        .windows(2)
        .filter(|w| (from..=to).contains(&w[1]))
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0) as f64
        / 1e6
}

/// One line on the figures, printed as the run ends.
pub fn line(f: &RetentionFigures) -> String {
    let jobs = match &f.jobs {
        Some(t) => format!(
            "{} runs, mean {:.1} ms, max {}",
            t.runs,
            t.mean_ms,
            t.max_label()
        ),
        None => "no run".into(),
    };
    match f.gone_after_secs {
        Some(s) => format!(
            "retention of {} rows ({}): gone {s:.1} s after hookd started ({:.0} deleted by its count); retention job: {jobs}",
            f.rows, f.layout, f.deleted
        ),
        None => format!(
            "retention of {} rows ({}): not gone by the end of the wait ({:.0} deleted); retention job: {jobs}",
            f.rows, f.layout, f.deleted
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::longest_pause_ms;

    #[test]
    fn longest_pause_ends_in_the_window() {
        const MS: u64 = 1_000_000;
        let receipts = [0, 10 * MS, 12 * MS, 40 * MS, 41 * MS];
        for (from, to, want) in [
            (0, u64::MAX, 28.0), // 12 -> 40
            (0, 20 * MS, 10.0),  // pauses ending by 20 ms: 0 -> 10, 10 -> 12
            (11 * MS, 20 * MS, 2.0),
            (41 * MS, u64::MAX, 1.0),
            (42 * MS, u64::MAX, 0.0),
        ] {
            assert_eq!(longest_pause_ms(&receipts, from, to), want, "{from}..{to}");
        }
        assert_eq!(longest_pause_ms(&[], 0, u64::MAX), 0.0);
    }
}
