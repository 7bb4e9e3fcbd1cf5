//! SQLite: a producer's commit wakes hookd at once. With polling slowed to 5 s, a row
//! inserted into `hookd_outbox` by another connection is delivered in milliseconds,
//! through the watch of the write-ahead log; and the watch costs no CPU while idle (hookd's
//! own commits wake only the outbox read, which finds nothing and writes nothing).
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it wal_wakeup::`

use std::time::{Duration, Instant};

use serde_json::json;

use hookd_fault_tests::producer::insert_sql;
use hookd_fault_tests::{
    event_ids, exclusive, log_dir, say, wait_delivered, Backend, Options, Process, Receiver, Reply,
    TestDb,
};

/// CPU time (user + system) the process has used so far.
fn cpu_time(process: &Process) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid())).expect("stat");
    // Fields after the command name, which is in parentheses: utime and stime are the 14th
    // and 15th fields of the line, the 12th and 13th after it.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The CPU time the process uses over `span` of idleness.
async fn idle_cpu(process: &Process, span: Duration) -> Duration {
    let before = cpu_time(process);
    tokio::time::sleep(span).await;
    cpu_time(process) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_commit_wakes_hookd_at_once() {
    let _heavy = exclusive().await;
    let scenario = "sqlite-wal-wakeup";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::per_event(|_, _| Reply::ok()).await;
    let options = Options::new(&db.url)
        .set("HOOKD_POLL_INTERVAL", "5s")
        .set("HOOKD_RESCUE_SCHEDULE", "*/5 * * * * *");
    let mut hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "event_types": ["*"] }))
        .await;

    let span = Duration::from_secs(4);
    let idle_before = idle_cpu(&hookd, span).await;

    let ids = event_ids("wal", 20);
    let mut latencies = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        db.exec(&insert_sql(Backend::Sqlite, std::slice::from_ref(id), None))
            .await;
        let committed = Instant::now();
        wait_delivered(&receiver, k + 1, &format!("{id} delivered")).await;
        let arrived = receiver.received()[k].at;
        latencies.push(arrived.saturating_duration_since(committed));
    }
    let idle_after = idle_cpu(&hookd, span).await;
    hookd.assert_running();

    latencies.sort();
    let (p50, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    say(&format!(
        "{scenario}: commit-to-receipt p50 {p50:?} max {max:?} (poll interval 5 s); \
         CPU over {span:?} idle: {idle_before:?} before, {idle_after:?} after"
    ));
    assert!(
        max < Duration::from_secs(1),
        "a commit took {max:?} to be delivered: hookd waited for its poll"
    );
    // Idle means idle: a few ms of the maintenance jobs, no wake-up loop.
    for idle in [idle_before, idle_after] {
        assert!(
            idle < span / 20,
            "{idle:?} of CPU over {span:?} of idleness (before {idle_before:?}, after {idle_after:?})"
        );
    }
}
