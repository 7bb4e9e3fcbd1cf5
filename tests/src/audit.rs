//! The audit that ends every scenario: hookd's tables against what the receiver saw
//! against what the producer committed.
//!
//! - **delivered**: committed, and the receiver answered it 2xx at least once.
//! - **failed**: committed, never answered 2xx, and its delivery is `failed` after the full
//!   schedule (`attempts` = schedule + 1).
//! - **lost**: committed and neither (no delivery, still unfinished, `succeeded` without a
//!   2xx at the receiver, or `failed` before its schedule ran out). Must be 0.
//! - **duplicated**: 2xx answers beyond the first, summed over events.
//! - **unexpected**: ids the receiver saw that were never committed (or requests without a
//!   `webhook-id`). Must be 0.
//! - **unexplained**: duplicates not covered by an attempt whose result hookd could not
//!   know: a `lost` attempt (its lease expired: the process died or could not record), a
//!   `timeout` or `network_error` (the receiver may have answered 2xx after hookd gave up),
//!   or (graceful shutdown only) an attempt released unrecorded. Must be 0.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::probe::{AttemptRow, DeliveryRow, Probe};
use hookd_testkit::{Received, Receiver};

/// The numbers of one audit.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub committed: usize,
    pub delivered: usize,
    pub failed: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    pub unexplained: usize,
    /// Attempts logged as `lost` (rescued after a lease expired).
    pub rescued: usize,
    /// Requests the receiver got in all.
    pub requests: usize,
    /// Event ids answered 2xx more than once.
    pub duplicate_ids: Vec<String>,
    /// Examples of lost events, with the reason.
    pub lost_examples: Vec<String>,
    pub unexpected_examples: Vec<String>,
    pub unexplained_examples: Vec<String>,
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit: committed={} delivered={} failed={} lost={} duplicated={} unexpected={}",
            self.committed,
            self.delivered,
            self.failed,
            self.lost,
            self.duplicated,
            self.unexpected
        )
    }
}

impl Audit {
    /// The at-least-once guarantee: nothing lost, nothing unexpected, every committed event
    /// delivered or failed after its schedule, and every duplicate explained by an attempt
    /// whose outcome hookd could not know (a `lost` attempt: its lease expired; or a
    /// timeout / network error: the receiver may have answered after hookd gave up).
    pub fn assert_sound(&self) {
        assert_eq!(
            self.lost, 0,
            "{self}\nlost events (first ones): {:?}",
            self.lost_examples
        );
        assert_eq!(
            self.unexpected, 0,
            "{self}\nunexpected ids: {:?}",
            self.unexpected_examples
        );
        assert_eq!(
            self.unexplained, 0,
            "{self}\nduplicates no unknowable attempt explains: {:?}",
            self.unexplained_examples
        );
        assert_eq!(
            self.committed,
            self.delivered + self.failed,
            "{self}: every committed event is delivered or failed"
        );
    }

    /// Panics if there were more than `bound` duplicates (`why` names the bound).
    pub fn assert_duplicates_at_most(&self, bound: usize, why: &str) {
        assert!(
            self.duplicated <= bound,
            "{self}\n{} duplicates exceed the bound of {bound} ({why})",
            self.duplicated
        );
    }
}

/// What the audit may accept.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Attempts of a delivery that ends `failed` after its schedule.
    pub full_schedule: i64,
    /// A graceful shutdown released attempts whose answer nobody recorded.
    pub released_allowed: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            full_schedule: crate::FULL_SCHEDULE,
            released_allowed: false,
        }
    }
}

/// Waits until every committed event has its delivery and all of them are finished (the
/// outbox empty, nothing pending or in flight).
pub async fn wait_finished(probe: &Probe, committed: usize, timeout: Duration) {
    let start = Instant::now();
    loop {
        let p = probe.progress().await;
        if p.outbox == 0 && p.unfinished() == 0 && p.deliveries as usize >= committed {
            return say(&format!(
                "all {committed} deliveries finished {:.1} s after the wait began",
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {committed} deliveries to finish: {p:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 2xx answers given to these requests.
fn oks(requests: &[Received]) -> usize {
    requests.iter().filter(|r| r.got_2xx()).count()
}

/// Audits `committed` ids against the database and the receiver.
pub async fn audit(
    probe: &Probe,
    receiver: &Receiver,
    committed: &[String],
    expect: Expect,
) -> Audit {
    let deliveries = probe.deliveries().await;
    let attempts = probe.attempts().await;
    let seen = receiver.by_id();
    let committed_set: HashSet<&str> = committed.iter().map(String::as_str).collect();

    let mut by_event: HashMap<&str, Vec<&DeliveryRow>> = HashMap::new();
    for d in &deliveries {
        by_event.entry(d.event_id.as_str()).or_default().push(d);
    }
    let mut log: HashMap<&str, Vec<&AttemptRow>> = HashMap::new();
    for a in &attempts {
        log.entry(a.event_id.as_str()).or_default().push(a);
    }

    let mut a = Audit {
        committed: committed_set.len(),
        requests: receiver.count(),
        rescued: attempts.iter().filter(|a| a.outcome == "lost").count(),
        ..Audit::default()
    };
    let lost = |a: &mut Audit, why: String| {
        a.lost += 1;
        if a.lost_examples.len() < 10 {
            a.lost_examples.push(why);
        }
    };
    for id in &committed_set {
        let ok = seen.get(*id).map(|s| oks(s)).unwrap_or(0);
        let ds = by_event.get(id).cloned().unwrap_or_default();
        if ds.len() > 1 {
            lost(
                &mut a,
                format!("{id}: {} deliveries for one endpoint", ds.len()),
            );
            continue;
        }
        let Some(d) = ds.first() else {
            lost(&mut a, format!("{id}: no delivery"));
            continue;
        };
        match d.state.as_str() {
            _ if ok > 0 && (d.state == "succeeded" || d.state == "failed") => a.delivered += 1,
            "succeeded" => lost(
                &mut a,
                format!("{id}: succeeded in the database but never answered 2xx"),
            ),
            "failed" if d.attempts >= expect.full_schedule => a.failed += 1,
            "failed" => lost(
                &mut a,
                format!(
                    "{id}: failed after {} of {} attempts ({:?})",
                    d.attempts, expect.full_schedule, d.last_error
                ),
            ),
            other => lost(&mut a, format!("{id}: still {other}")),
        }
    }

    for (id, s) in &seen {
        if !committed_set.contains(id.as_str()) {
            a.unexpected += 1;
            if a.unexpected_examples.len() < 10 {
                a.unexpected_examples.push(id.clone());
            }
        }
        if oks(s) > 1 {
            let extra = oks(s) - 1;
            a.duplicated += extra;
            a.duplicate_ids.push(id.clone());
            let unknowable = log
                .get(id.as_str())
                .map(|l| {
                    l.iter()
                        .filter(|x| {
                            matches!(x.outcome.as_str(), "lost" | "timeout" | "network_error")
                        })
                        .count()
                })
                .unwrap_or(0);
            // Requests that reached the receiver but are in no attempt record: released
            // by a graceful shutdown (allowed only then), or stale (also logged as lost).
            let recorded = log.get(id.as_str()).map(Vec::len).unwrap_or(0);
            let unrecorded = s.len().saturating_sub(recorded);
            let explained = unknowable
                + if expect.released_allowed {
                    unrecorded
                } else {
                    0
                };
            if extra > explained {
                a.unexplained += extra - explained;
                if a.unexplained_examples.len() < 10 {
                    let outcomes: Vec<&str> = log
                        .get(id.as_str())
                        .map(|l| l.iter().map(|x| x.outcome.as_str()).collect())
                        .unwrap_or_default();
                    a.unexplained_examples.push(format!(
                        "{id}: {} 2xx answers, {} requests, attempt log {outcomes:?}",
                        oks(s),
                        s.len()
                    ));
                }
            }
        }
    }
    a.unexpected += receiver.without_id();
    a.duplicate_ids.sort();
    a
}

/// Duplicated events that were not in flight at any fault (`held`: the deliveries
/// `in_flight` at the moments a fault struck) and had no attempt that timed out or failed
/// on the network: duplicates that only a *live* process losing its lease explains (its
/// results waited longer than the lease to be recorded, were dropped as stale, and the
/// rescued deliveries were sent again).
pub fn duplicates_outside(
    audit: &Audit,
    deliveries: &[crate::probe::DeliveryRow],
    attempts: &[AttemptRow],
    held: &HashSet<i64>,
) -> Vec<String> {
    let ids: HashMap<&str, i64> = deliveries
        .iter()
        .map(|d| (d.event_id.as_str(), d.id))
        .collect();
    let gave_up: HashSet<&str> = attempts
        .iter()
        .filter(|a| matches!(a.outcome.as_str(), "timeout" | "network_error"))
        .map(|a| a.event_id.as_str())
        .collect();
    audit
        .duplicate_ids
        .iter()
        .filter(|e| {
            let in_flight = ids.get(e.as_str()).is_some_and(|id| held.contains(id));
            !in_flight && !gave_up.contains(e.as_str())
        })
        .cloned()
        .collect()
}

/// Prints the audit line and a detail line where `cargo test` shows them even for a
/// passing test, and appends them to `target/<profile>/fault-logs/audits.txt`.
pub fn report(scenario: &str, audit: &Audit, detail: &str) {
    let text = format!(
        "{scenario}: {audit}\n{scenario}: detail: requests={} rescued_lost_attempts={} unexplained={} {detail}\n",
        audit.requests, audit.rescued, audit.unexplained
    );
    record(&text);
}

/// Shows `text` (see [`say`]) and appends it to `target/<profile>/fault-logs/audits.txt`.
pub fn record(text: &str) {
    say(text.trim_end());
    if let Some(dir) = crate::process::log_root() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("audits.txt"))
        {
            let _ = writeln!(f, "{}", text.trim_end());
        }
    }
}

/// Writes a line straight to stderr: the test harness captures `println!`/`eprintln!`
/// of passing tests, not the stream itself.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
