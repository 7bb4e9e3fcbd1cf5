//! Scenario 7: hookd takes every due time and lease from the database's clock, not the
//! process's. Three instances share one PostgreSQL database: one with the real clock, one
//! whose process clock is an hour behind and one an hour ahead (libfaketime, `LD_PRELOAD`;
//! the monotonic clock stays real so timers do too). Every fifth event fails once and is
//! retried after 1 s.
//!
//! Were the process clock used, the instance ahead would claim retries an hour early (at
//! once), the one behind would write leases that have already expired (the others would
//! rescue them: `lost` attempts, duplicates), and due times would sit an hour off. The
//! test proves none of that happens: every event is delivered once, no lease is rescued,
//! every retry gap is ≥ 1 s and nowhere near an hour, and every due time read on the
//! database clock is within the 1 s schedule. That the fake clocks took effect is shown by
//! the attempt log itself: an attempt's `started_at` is the sending process's clock, so
//! the skewed instances' attempts carry timestamps an hour off.
//!
//! On SQLite the database clock *is* the process clock (`julianday('now')` runs inside
//! hookd), so this is a PostgreSQL test.
//!
//! Needs libfaketime (`apt-get install -y faketime`); without it the test says so and
//! passes, unless `HOOKD_FAULT_REQUIRE_FAKETIME=1`.
//!
//! Rerun: `cargo build -p hookd && cargo test -p hookd-fault-tests --test it clock::`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use hookd_fault_tests::{
    audit, event_ids, event_number, exclusive, log_dir, report, say, Backend, Expect, Options,
    Probe, Producer, Receiver, Reply, TestDb, LONG,
};

const EVENTS: usize = 1500;
const RETRY_MS: i64 = 1000;
const HOUR_MS: i64 = 3_600_000;
/// `HOOKD_LEASE_DURATION` of the suite.
const LEASE_MS: i64 = 3_000;

/// Every fifth event: 503 on the first request, then 200.
fn once_flaky(id: &str, request: u32) -> Reply {
    if event_number(id).is_multiple_of(5) && request == 1 {
        Reply::status(503)
    } else {
        Reply::ok()
    }
}

fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_process_clocks_change_no_due_time_or_lease() {
    let Some(lib) = libfaketime() else {
        let message = "clock: SKIPPED: libfaketime is not installed (apt-get install -y faketime)";
        if std::env::var("HOOKD_FAULT_REQUIRE_FAKETIME").is_ok_and(|v| v == "1") {
            panic!("{message}");
        }
        say(message);
        return;
    };
    let _heavy = exclusive().await;
    let scenario = "clock";
    let logs = log_dir(scenario);
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::per_event(once_flaky).await;
    let options = Options::new(&db.url).set("HOOKD_CONCURRENCY", "32");
    let mut instances = vec![
        options.clone().start("real-clock", &logs).await,
        options
            .clone()
            .faketime(&lib, "-1h")
            .start("behind-1h", &logs)
            .await,
        options.faketime(&lib, "+1h").start("ahead-1h", &logs).await,
    ];
    instances[0]
        .api()
        .endpoint(json!({
            "url": receiver.url(),
            "event_types": ["*"],
            "retry_schedule": ["1s", "1s", "1s"],
        }))
        .await;
    let probe = Probe::connect(&db).await;

    let producer = Producer::start(&db, event_ids("ck", EVENTS), 50, Duration::from_millis(50));
    // While it runs, read every pending due time against the database clock.
    let (mut earliest_due, mut latest_due) = (i64::MAX, i64::MIN);
    let (mut least_lease, mut most_lease) = (i64::MAX, i64::MIN);
    let start = Instant::now();
    let produced = loop {
        for (_, due) in probe.due_in_ms().await {
            earliest_due = earliest_due.min(due);
            latest_due = latest_due.max(due);
        }
        for left in probe.lease_left_ms().await {
            least_lease = least_lease.min(left);
            most_lease = most_lease.max(left);
        }
        let p = probe.progress().await;
        if producer.committed() == EVENTS && p.outbox == 0 && p.unfinished() == 0 {
            break producer.finish().await;
        }
        assert!(
            start.elapsed() < LONG,
            "not finished within {LONG:?}: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in &mut instances {
        i.assert_running();
    }

    let expect = Expect::default();
    let result = audit(&probe, &receiver, &produced.committed, expect).await;
    let attempts = probe.attempts().await;

    // Which instance made each attempt: its started_at is that process's clock.
    let (mut real, mut behind, mut ahead) = (0, 0, 0);
    for a in attempts.iter().filter(|a| a.outcome != "lost") {
        match a.started_at - a.delivery_created_at {
            skew if skew < -HOUR_MS / 2 => behind += 1,
            skew if skew > HOUR_MS / 2 => ahead += 1,
            _ => real += 1,
        }
    }
    // Retry gaps as the receiver measured them (monotonic clock).
    let seen = receiver.by_id();
    let mut gaps = Vec::new();
    let mut skewed_signatures = 0;
    for (id, s) in &seen {
        if event_number(id).is_multiple_of(5) {
            let mut at: Vec<Instant> = s.iter().map(|r| r.at).collect();
            at.sort();
            assert!(at.len() >= 2, "{id} was retried");
            gaps.push((at[1] - at[0]).as_millis() as i64);
        }
        skewed_signatures += s
            .iter()
            .filter(|r| r.timestamp().is_some_and(|t| (t - r.unix).abs() > 300))
            .count();
    }
    gaps.sort();
    let (min_gap, max_gap) = (gaps[0], gaps[gaps.len() - 1]);
    report(
        scenario,
        &result,
        &format!(
            "attempts_by_clock real={real} behind_1h={behind} ahead_1h={ahead} retry_gap_ms min={min_gap} max={max_gap} \
             due_in_ms min={earliest_due} max={latest_due} lease_left_ms min={least_lease} max={most_lease} \
             signatures_outside_5min={skewed_signatures}"
        ),
    );
    // Timeouts under load would be duplicates for reasons of their own; none from clocks.
    let gave_up = attempts
        .iter()
        .filter(|a| matches!(a.outcome.as_str(), "timeout" | "network_error"))
        .count();
    result.assert_sound();
    result.assert_duplicates_at_most(gave_up, "attempts that timed out or failed on the network");
    assert_eq!(
        result.failed, 0,
        "every event succeeds by its second attempt"
    );
    // Every lease, read on the database clock, runs 3 s from its claim: none was written
    // an hour off (already expired, or good for an hour). A second of slack above: the
    // probe's "now" is its transaction's start, and on a busy machine a claim can commit
    // between that and the probe's snapshot (seen: 3,064 ms left).
    assert!(
        most_lease <= LEASE_MS + 1_000 && least_lease > -30_000,
        "a lease with {least_lease}..{most_lease} ms left: not on the database clock"
    );
    // Had the instance an hour behind written leases on its own clock, every one of its
    // claims (about a third) would have been rescued. A few rescues can come from a
    // recorder slower than the lease on a loaded machine (see kill9's strict test).
    assert!(
        result.rescued < EVENTS / 20,
        "{} leases were rescued: leases are not on the database clock",
        result.rescued
    );
    assert!(
        behind > 0 && ahead > 0,
        "the skewed instances made attempts with skewed clocks (real={real} behind={behind} ahead={ahead}); \
         if both are 0, libfaketime had no effect on the binary"
    );
    assert!(
        min_gap >= RETRY_MS - 50,
        "a retry came {min_gap} ms after the failure: early"
    );
    assert!(
        max_gap < 30_000,
        "a retry came {max_gap} ms after the failure: late"
    );
    assert!(
        latest_due <= RETRY_MS + 100,
        "a due time {latest_due} ms ahead of the database clock: not from it"
    );
    assert!(
        earliest_due > -30_000,
        "a delivery overdue by {earliest_due} ms: its due time is not from the database clock"
    );
    probe.close().await;
}

/// Retries due a few milliseconds after their failures, with `poll_interval` at 5 s and
/// nothing else to do. Recording a failure wakes the dispatcher, whose claim finds nothing
/// yet; the retry falls due while that claim runs, and the next due time read after it is
/// already past. Taken for a row the claim could not have (an endpoint at its cap), it made
/// the dispatcher idle for the whole poll interval, so the retry went out 5 s late. Several
/// short steps make that window hard to miss. (SQLite, where no NOTIFY happens to wake the
/// dispatcher; on PostgreSQL a stray wake-up from the outbox NOTIFY sometimes hides it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_not_late_while_the_dispatcher_idles() {
    const LADDER: [&str; 25] = [
        "1ms", "2ms", "3ms", "4ms", "5ms", "1ms", "2ms", "3ms", "4ms", "5ms", "1ms", "2ms", "3ms",
        "4ms", "5ms", "1ms", "2ms", "3ms", "4ms", "5ms", "1ms", "2ms", "3ms", "4ms", "100ms",
    ];
    let _heavy = exclusive().await;
    let logs = log_dir("clock-idle-retry");
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::per_event(|_, request| {
        if request as usize <= LADDER.len() {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let options = Options::new(&db.url).set("HOOKD_POLL_INTERVAL", "5s");
    let hookd = options.start("hookd", &logs).await;
    hookd
        .api()
        .endpoint(json!({ "url": receiver.url(), "retry_schedule": LADDER }))
        .await;
    let id = "idle-00001".to_string();
    db.exec(&hookd_fault_tests::producer::insert_sql(
        Backend::Sqlite,
        std::slice::from_ref(&id),
        None,
    ))
    .await;
    hookd_fault_tests::wait_delivered(&receiver, 1, "the last retry").await;
    let arrivals = receiver.by_id()[&id].clone();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1].at - w[0].at).collect();
    say(&format!(
        "clock-idle-retry: retries due {LADDER:?} after their failures came after {gaps:?} (poll interval 5 s)"
    ));
    assert_eq!(gaps.len(), LADDER.len());
    let late = gaps.iter().max().expect("retries arrived");
    assert!(
        *late < Duration::from_millis(1500),
        "a retry came {late:?} after its failure, not a few ms (gaps {gaps:?})"
    );
}
