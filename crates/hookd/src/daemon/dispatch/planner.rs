//! What the dispatcher does next, decided without I/O. The loop in `mod.rs` takes a
//! [`View`] of its state, asks [`Planner::plan`] which outbox read and which claim to start
//! and until when to sleep, does that I/O, and tells the planner how each ended
//! ([`Planner::claimed`], [`Planner::ingested`], ...). The time is always given, never read.
//!
//! The rules, each with a table test below:
//!
//! - **Room.** The places not yet asked for: free permits, at most `claim_batch` less the
//!   rows already waiting, less what a claim and an ingest on their way may bring.
//! - **Busy endpoints.** An endpoint with a full cap running and as many again waiting is
//!   skipped by claims and gets no leased rows from an ingest ([`busy_endpoints`]).
//! - **Retry room.** Retries may start in the places under `retry_concurrency` that neither
//!   a running nor a waiting retry holds.
//! - **One claim at a time**, none during the backoff after a failed one, and after one that
//!   found nothing only once another could find something ([`FoundNothing`]).
//! - **Outbox reads.** One at a time, when the outbox is due for a read: at once after a read
//!   that left rows or a producer's commit, after `poll_interval` otherwise, after the backoff
//!   after a failure. Rows left for busy endpoints are read again when one of those has
//!   room, or after `poll_interval`, when they are taken along ([`OutboxBlocked`]).
//! - **Sizes.** SQLite: an ingest leases up to the room, less a quarter (at least one
//!   place) kept for a claim when one may start; the claim asks for what is left.
//!   PostgreSQL (`read_whole_outbox`): an ingest reads a batch of outbox rows whatever the
//!   room and leases nothing; the claim asks for the whole room. A quarter of each claim
//!   (at least one row) goes to retries first ([`Claim`]).
//! - **A backlog in the outbox.** SQLite leaves rows in the outbox while there is no room
//!   for them; once rows have been left there for want of room for `poll_interval`, each
//!   read takes a whole batch of rows and leases nothing (as on PostgreSQL), even with no
//!   room, until a read finds the outbox empty: the backlog becomes pending deliveries,
//!   which claims share fairly between tenants, and a fresh row of another tenant behind
//!   it waits for a few batch reads, not for the backlog to be sent ([`OutboxBacklog`]).
//! - **Sleep.** Until the end of an empty claim's wait, else `poll_interval` from now (not
//!   before a failed claim's backoff ends); sooner for the outbox's next read when an ingest
//!   may start, and for the hand-back of the longest-waiting row. Any wake-up ends it sooner.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use hookd_store::{ClaimPlan, Consume, EndpointId, Ingested};

/// A database call that failed is tried again after this long at the most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What stays the same while the dispatcher runs.
#[derive(Clone, Copy)]
pub struct Settings {
    /// Rows one claim or ingest may bring, and rows that may wait for a place, at most.
    pub claim_batch: u32,
    pub poll_interval: Duration,
    /// A producer's commit makes the outbox due for a read at once, but never sooner than
    /// this after the previous read began: under a stream of single-row commits each read
    /// takes what came meanwhile, and the producers find the write lock free between reads
    /// (on SQLite a read per commit held it so often that the producers' commits waited in
    /// SQLite's busy handler, a third of the throughput).
    pub wake_gap: Duration,
    /// How long a claimed row may wait for a place before it is handed back.
    pub max_wait: Duration,
    /// PostgreSQL: each ingest reads every outbox row it can and leases none (see
    /// `Dispatcher::read_whole_outbox`).
    pub read_whole_outbox: bool,
    /// How long to wait after a failed claim or ingest.
    pub backoff: ExponentialBuilder,
}

/// The dispatcher as the planner needs to see it, taken once the waiting rows that could
/// start have started.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Rows claimed or ingested, waiting for a place.
    pub waiting: usize,
    /// Retries among them.
    pub waiting_retries: usize,
    /// When the longest-waiting one was claimed.
    pub oldest_waiting: Option<Instant>,
    /// Permits no attempt holds.
    pub free_permits: usize,
    /// Retries that may start, as far as the running ones go.
    pub retry_places: usize,
    /// Endpoints the next claim or ingest lease skips ([`busy_endpoints`]).
    pub busy: Vec<EndpointId>,
}

/// What to start now, and when to look again if nothing wakes the dispatcher first.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub ingest: Option<Ingest>,
    pub claim: Option<Claim>,
    pub wake_at: Instant,
}

/// An outbox read to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingest {
    /// New deliveries to lease, at most.
    pub want: u32,
    /// Endpoints that lease nothing.
    pub busy: Vec<EndpointId>,
    /// Which rows it consumes under its lease; `None`: every row it reads, none leased.
    pub lease: Option<Consume>,
}

/// A claim to start: up to `plan.max` rows, a quarter of them (at least one) retries first
/// within the retry room, then first attempts, then more retries for what is left. New
/// events are never starved by retries, nor retries by a steady stream of new events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub plan: ClaimPlan,
    /// Endpoints it skips.
    pub busy: Vec<EndpointId>,
}

impl Claim {
    fn new(want: u32, busy: Vec<EndpointId>, retry_room: u32) -> Claim {
        Claim {
            plan: ClaimPlan {
                max: want,
                retries_ahead: (want / 4).max(1),
                retries: retry_room,
                first_attempts: true,
            },
            busy,
        }
    }
}

/// Endpoints the next claim skips, from the attempts `running` and the rows `waiting` per
/// endpoint: those with `per_endpoint` running and as many again waiting (the waiting ones
/// start the moment a place frees, with no round trip). Sorted.
pub fn busy_endpoints<'r, 'w>(
    running: impl IntoIterator<Item = (&'r str, usize)>,
    waiting: impl IntoIterator<Item = (&'w str, usize)>,
    per_endpoint: usize,
) -> Vec<EndpointId> {
    let enough = 2 * per_endpoint.max(1);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, n) in running {
        *load.entry(id).or_default() += n;
    }
    for (id, n) in waiting {
        *load.entry(id).or_default() += n;
    }
    load.into_iter()
        .filter(|(_, n)| *n >= enough)
        .map(|(id, _)| EndpointId::from(id))
        .collect()
}

/// How long to wait after a claim found nothing, given the next due time the database
/// reported (`next_due_ms` from its clock, negative when overdue; `None`: nothing pending)
/// and how long before that report the claim began (`since_claim`): until that due time, at
/// most `poll_interval`.
///
/// A row overdue for longer than the claim has run was due when the claim looked and was
/// not taken: it belongs to an endpoint at its cap or is a retry beyond its share, and an
/// ending attempt or the recorder wakes the dispatcher for it. A row overdue for less fell
/// due while the claim ran, after it looked, typically a retry due milliseconds after its
/// failure: claiming again at once takes it, where waiting would send it a whole
/// `poll_interval` late. The database clock counts whole milliseconds, hence the margin.
pub fn idle_wait(
    next_due_ms: Option<i64>,
    since_claim: Duration,
    poll_interval: Duration,
) -> Duration {
    const MARGIN_MS: u128 = 2;
    match next_due_ms {
        None => poll_interval,
        Some(ms) if ms > 0 => Duration::from_millis(ms as u64).min(poll_interval),
        Some(ms) if u128::from(ms.unsigned_abs()) <= since_claim.as_millis() + MARGIN_MS => {
            Duration::ZERO
        }
        Some(_) => poll_interval,
    }
}

/// The dispatcher's decisions and what it remembers between them.
pub struct Planner {
    settings: Settings,
    claiming: Option<Claiming>,
    ingesting: Option<Ingesting>,
    found_nothing: Option<FoundNothing>,
    /// The backoff after a failed claim ends then.
    no_claim_before: Instant,
    claim_delays: ExponentialBackoff,
    /// When to read the outbox next: at once while it may hold rows, else at the next poll.
    read_outbox_at: Instant,
    /// When the last outbox read began.
    last_read: Option<Instant>,
    outbox_blocked: Option<OutboxBlocked>,
    outbox_backlog: Option<OutboxBacklog>,
    ingest_delays: ExponentialBackoff,
}

struct Claiming {
    claim: Claim,
    /// A wake-up arrived while it ran: it may have read the database before the new work
    /// was committed, so finding nothing does not mean there is nothing.
    woken: bool,
}

struct Ingesting {
    ingest: Ingest,
    started: Instant,
    /// A producer committed while it ran: it may have looked before the commit, so the
    /// outbox is read again at once after it.
    written: bool,
}

/// What the last claim that found nothing could not take, and when to look again anyway.
/// Claiming again is worth a statement only after new work (a wake-up), once one of the
/// endpoints it skipped has room again, once more retries may start, or at `until` (the
/// next due time, at most the poll interval). A claim that finds rows changes none of that:
/// it can only have taken rows of a skipped endpoint that had room. Without this memory,
/// each claim while the endpoints with due rows are all at their caps reads every due row
/// only to skip them all: with 300,000 rows due to one busy endpoint, 35 ms of PostgreSQL
/// per claim.
struct FoundNothing {
    skipped: Vec<EndpointId>,
    retry_room: u32,
    until: Instant,
}

impl FoundNothing {
    fn worth_claiming(&self, busy: &[EndpointId], retry_room: u32) -> bool {
        retry_room > self.retry_room || self.skipped.iter().any(|id| !busy.contains(id))
    }
}

/// A claim that found nothing with no wake-up meanwhile: the planner waits for new work
/// once [`Planner::idle_until`] knows until when.
#[must_use]
pub struct EmptyClaim {
    skipped: Vec<EndpointId>,
    retry_room: u32,
}

/// Outbox rows left for want of room, since `since`: after `poll_interval`, a backlog,
/// read whole (see the rules above).
struct OutboxBacklog {
    since: Instant,
}

/// Outbox rows left for endpoints at their cap. They are read again once one of those has
/// room, at a wake-up (new rows behind them may go, and take them along), or after
/// `poll_interval`, when they are taken anyway, as pending deliveries for a claim: rows
/// behind them never wait longer for a slow endpoint.
struct OutboxBlocked {
    skipped: Vec<EndpointId>,
    since: Instant,
}

impl Planner {
    pub fn new(settings: Settings, now: Instant) -> Planner {
        Planner {
            settings,
            claiming: None,
            ingesting: None,
            found_nothing: None,
            no_claim_before: now,
            claim_delays: settings.backoff.build(),
            read_outbox_at: now,
            last_read: None,
            outbox_blocked: None,
            outbox_backlog: None,
            ingest_delays: settings.backoff.build(),
        }
    }

    /// What to start now. A claim or an ingest in the plan counts as on its way until
    /// told how it ended.
    pub fn plan(&mut self, view: View, now: Instant) -> Plan {
        if self.found_nothing.as_ref().is_some_and(|f| now >= f.until) {
            self.found_nothing = None;
        }
        let mut room = self.room(&view);
        let busy = view.busy;
        let retry_room = view.retry_places.saturating_sub(view.waiting_retries) as u32;
        let claim_may_start = self.claim_may_start(&busy, retry_room, now);
        let whole = self.settings.read_whole_outbox
            || self
                .outbox_backlog
                .as_ref()
                .is_some_and(|b| now >= b.since + self.settings.poll_interval);
        // With no room, only a freed place makes an outbox read worth waking for, unless it
        // reads the whole outbox.
        let may_ingest = self.ingesting.is_none() && (room > 0 || whole);
        let ingest = match self.outbox_read(&busy, now) {
            Some(_) if may_ingest && whole => Some((0, None)),
            Some(consume) if may_ingest => self.ingest_size(room, claim_may_start, consume),
            _ => None,
        }
        .map(|(want, lease)| {
            room -= want;
            Ingest {
                want,
                busy: busy.clone(),
                lease,
            }
        });
        let claim = (claim_may_start && room > 0).then(|| Claim::new(room, busy, retry_room));

        if let Some(ingest) = &ingest {
            self.last_read = Some(now);
            self.ingesting = Some(Ingesting {
                ingest: ingest.clone(),
                started: now,
                written: false,
            });
        }
        if let Some(claim) = &claim {
            self.claiming = Some(Claiming {
                claim: claim.clone(),
                woken: false,
            });
        }
        let outbox_read_due = (may_ingest && ingest.is_none()).then_some(self.read_outbox_at);
        let wake_at = self.wake_at(outbox_read_due, view.oldest_waiting, now);
        Plan {
            ingest,
            claim,
            wake_at,
        }
    }

    /// The places not yet asked for: free permits, at most `claim_batch` less the rows
    /// waiting, less what a claim and an ingest on their way may bring.
    fn room(&self, view: &View) -> u32 {
        let asked = self.claiming.as_ref().map_or(0, |c| c.claim.plan.max) as usize
            + self.ingesting.as_ref().map_or(0, |i| i.ingest.want) as usize;
        (self.settings.claim_batch as usize)
            .saturating_sub(view.waiting)
            .min(view.free_permits)
            .saturating_sub(asked) as u32
    }

    /// One claim at a time, none in the backoff after a failed one, and after one that
    /// found nothing only once another may find something.
    fn claim_may_start(&self, busy: &[EndpointId], retry_room: u32, now: Instant) -> bool {
        self.claiming.is_none()
            && now >= self.no_claim_before
            && self
                .found_nothing
                .as_ref()
                .is_none_or(|f| f.worth_claiming(busy, retry_room))
    }

    /// Whether the outbox is due for a read, and which rows the read takes under its lease.
    fn outbox_read(&self, busy: &[EndpointId], now: Instant) -> Option<Consume> {
        let due = now >= self.read_outbox_at;
        match &self.outbox_blocked {
            None => due.then_some(Consume::ToRoom),
            // One of the endpoints it waited for has room.
            Some(b) if b.skipped.iter().any(|id| !busy.contains(id)) => Some(Consume::ToRoom),
            // Waited `poll_interval`: rows for busy endpoints are taken along.
            Some(b) if now >= b.since + self.settings.poll_interval => {
                due.then_some(Consume::ToRoomPastBusy)
            }
            Some(_) => due.then_some(Consume::ToRoom),
        }
    }

    /// How many deliveries an outbox read leases, and which rows it takes (`None`: all it
    /// reads, none leased); `None` when it is not worth a read.
    fn ingest_size(
        &self,
        room: u32,
        claim_may_start: bool,
        consume: Consume,
    ) -> Option<(u32, Option<Consume>)> {
        // A quarter (at least one place) stays for the claim when it may find due rows
        // (retries among them): new events must not starve what is already due.
        let want = if claim_may_start {
            room - (room / 4).max(1).min(room)
        } else {
            room
        };
        (want > 0).then_some((want, Some(consume)))
    }

    /// When to look again if nothing wakes the loop: `poll_interval` from now while a claim
    /// is on its way; the end of an empty claim's wait; else `poll_interval` from now, not
    /// before a claim's backoff ends; sooner for the outbox's next read (`outbox_read_due`,
    /// when an ingest may start) and for the hand-back of the row waiting since `oldest`.
    fn wake_at(
        &self,
        outbox_read_due: Option<Instant>,
        oldest: Option<Instant>,
        now: Instant,
    ) -> Instant {
        let poll = now + self.settings.poll_interval;
        let mut wake_at = match (&self.found_nothing, &self.claiming) {
            (_, Some(_)) => poll,
            (Some(f), None) => f.until,
            (None, None) => poll.max(self.no_claim_before),
        };
        if let Some(at) = outbox_read_due {
            wake_at = wake_at.min(at.max(now));
        }
        // A waiting row is handed back on time even if nothing else happens.
        if let Some(since) = oldest {
            wake_at = wake_at.min(since + self.settings.max_wait);
        }
        wake_at
    }

    /// The claim on its way brought rows. It changes nothing a past empty claim waits for:
    /// it can only have taken rows of a skipped endpoint that had room.
    pub fn claimed(&mut self) {
        self.claiming.take().expect("a claim was on its way");
        self.claim_delays = self.settings.backoff.build();
    }

    /// The claim on its way found nothing: `Some` unless a wake-up came meanwhile, and then
    /// the planner waits for new work until [`Planner::idle_until`] says.
    pub fn claimed_nothing(&mut self) -> Option<EmptyClaim> {
        let Claiming { claim, woken } = self.claiming.take().expect("a claim was on its way");
        self.claim_delays = self.settings.backoff.build();
        (!woken).then_some(EmptyClaim {
            skipped: claim.busy,
            retry_room: claim.plan.retries,
        })
    }

    /// After an empty claim: nothing worth claiming before `until` (the next due time, at
    /// most the poll interval) but new work or room for what it skipped.
    pub fn idle_until(&mut self, empty: EmptyClaim, until: Instant) {
        self.found_nothing = Some(FoundNothing {
            skipped: empty.skipped,
            retry_room: empty.retry_room,
            until,
        });
    }

    /// The claim on its way failed: returns how long until the next.
    pub fn claim_failed(&mut self, now: Instant) -> Duration {
        self.claiming.take().expect("a claim was on its way");
        let delay = self.claim_delays.next().unwrap_or(MAX_BACKOFF);
        self.no_claim_before = now + delay;
        delay
    }

    /// The outbox read on its way ended.
    pub fn ingested(&mut self, ingested: &Ingested, now: Instant) {
        let Ingesting {
            ingest,
            started,
            written,
        } = self.ingesting.take().expect("an ingest was on its way");
        if ingested.blocked {
            let since = self.outbox_blocked.take().map_or(started, |b| b.since);
            self.outbox_blocked = Some(OutboxBlocked {
                skipped: ingest.busy,
                since,
            });
        } else if ingest.lease != Some(Consume::ToRoomPastBusy) {
            self.outbox_blocked = None;
        }
        // Rows left for want of room (or a whole window read): a backlog once they have
        // waited `poll_interval`; an outbox read empty, none.
        self.outbox_backlog = if ingested.more && !ingested.blocked {
            Some(
                self.outbox_backlog
                    .take()
                    .unwrap_or(OutboxBacklog { since: started }),
            )
        } else {
            None
        };
        // (One that took rows for busy endpoints along keeps the mark: the next ones do too,
        // while those stay busy.)
        self.ingest_delays = self.settings.backoff.build();
        if ingested.due {
            // Deliveries it could not lease: a claim must take them.
            self.found_nothing = None;
        }
        // Rows left for busy endpoints are not worth reading at once.
        self.read_outbox_at = if written {
            self.after_gap(now)
        } else if ingested.more && !ingested.blocked {
            now
        } else {
            now + self.settings.poll_interval
        };
    }

    /// The outbox read on its way failed: returns how long until the next.
    pub fn ingest_failed(&mut self, now: Instant) -> Duration {
        self.ingesting.take().expect("an ingest was on its way");
        let delay = self.ingest_delays.next().unwrap_or(MAX_BACKOFF);
        self.read_outbox_at = now + delay;
        // The backoff holds even for rows waiting for a busy endpoint.
        self.outbox_blocked = None;
        self.outbox_backlog = None;
        // It may have committed before failing (the endpoints of what it leased are given
        // back to the database, due).
        self.found_nothing = None;
        delay
    }

    /// New work may be due (an API event, a resend, a NOTIFY, a recorded result).
    pub fn new_work(&mut self) {
        self.found_nothing = None;
        if let Some(claiming) = &mut self.claiming {
            claiming.woken = true;
        }
    }

    /// `now`, or the wake gap after the last outbox read began if that is later.
    fn after_gap(&self, now: Instant) -> Instant {
        self.last_read
            .map_or(now, |read| now.max(read + self.settings.wake_gap))
    }

    /// A producer committed outbox rows.
    pub fn outbox_written(&mut self, now: Instant) {
        self.read_outbox_at = self.read_outbox_at.min(self.after_gap(now));
        if let Some(ingesting) = &mut self.ingesting {
            ingesting.written = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_millis(100);
    const MAX_WAIT: Duration = Duration::from_secs(22);
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings(read_whole_outbox: bool) -> Settings {
        Settings {
            claim_batch: 512,
            poll_interval: POLL,
            wake_gap: Duration::from_millis(2),
            max_wait: MAX_WAIT,
            read_whole_outbox,
            // Without jitter: the same delays every time.
            backoff: ExponentialBuilder::default()
                .with_min_delay(FIRST_BACKOFF)
                .with_max_delay(MAX_BACKOFF)
                .without_max_times(),
        }
    }

    /// A pool with `free` places, nothing waiting, no endpoint busy, 384 retries allowed.
    fn free(free: usize) -> View {
        View {
            free_permits: free,
            retry_places: 384,
            ..View::default()
        }
    }

    /// `n` rows waiting, `free` places.
    fn waiting(n: usize, free: usize) -> View {
        View {
            waiting: n,
            ..self::free(free)
        }
    }

    fn busy(view: View, busy: &[&str]) -> View {
        View {
            busy: busy.iter().map(|s| EndpointId::from(*s)).collect(),
            ..view
        }
    }

    fn retries(view: View, retry_places: usize) -> View {
        View {
            retry_places,
            ..view
        }
    }

    /// What happened before the plan under test.
    #[derive(Clone, Debug)]
    enum Then {
        Planned(View),
        Claimed,
        /// Found nothing; the next delivery is due this long after.
        FoundNothing(Duration),
        ClaimFailed,
        /// The outbox read read every row there was.
        ReadAll,
        /// It left rows, for want of room.
        ReadSome,
        /// It left rows for busy endpoints.
        LeftForBusy,
        /// It created deliveries due that it did not lease.
        ReadDue,
        ReadFailed,
        NewWork,
        OutboxWritten,
    }
    use Then::*;

    /// What happened, at ms from the start.
    type History = Vec<(u64, Then)>;

    /// The plan at `at` ms of a planner that went through `history`, and the start.
    fn plan_after(whole: bool, history: &[(u64, Then)], view: View, at: u64) -> (Plan, Instant) {
        let t0 = Instant::now();
        let mut p = Planner::new(settings(whole), t0);
        for (at, then) in history {
            let now = t0 + ms(*at);
            let read = |more, blocked, due| hookd_store::Ingested {
                more,
                blocked,
                due,
                ..Default::default()
            };
            match then.clone() {
                Planned(view) => {
                    p.plan(view, now);
                }
                Claimed => p.claimed(),
                FoundNothing(next_due) => {
                    if let Some(empty) = p.claimed_nothing() {
                        p.idle_until(empty, now + next_due)
                    }
                }
                ClaimFailed => {
                    p.claim_failed(now);
                }
                ReadAll => p.ingested(&read(false, false, false), now),
                ReadSome => p.ingested(&read(true, false, false), now),
                LeftForBusy => p.ingested(&read(true, true, false), now),
                ReadDue => p.ingested(&read(false, false, true), now),
                ReadFailed => {
                    p.ingest_failed(now);
                }
                NewWork => p.new_work(),
                OutboxWritten => p.outbox_written(now),
            }
        }
        (p.plan(view, t0 + ms(at)), t0)
    }

    /// What a plan says: the ingest's want and lease, the claim's want, and the wake-up in
    /// ms from the start.
    type Says = (Option<(u32, Option<Consume>)>, Option<u32>, u64);

    const ROOM: Option<Consume> = Some(Consume::ToRoom);
    const PAST_BUSY: Option<Consume> = Some(Consume::ToRoomPastBusy);

    /// Each case: its name, the history, the view and the time (ms) of the plan, what it says.
    fn check(whole: bool, cases: Vec<(&str, History, View, u64, Says)>) {
        for (name, history, view, at, expected) in cases {
            let (plan, t0) = plan_after(whole, &history, view, at);
            let says = (
                plan.ingest.as_ref().map(|i| (i.want, i.lease)),
                plan.claim.as_ref().map(|c| c.plan.max),
                plan.wake_at.duration_since(t0).as_millis() as u64,
            );
            assert_eq!(says, expected, "{name}");
        }
    }

    /// `history` and then `more`.
    fn and(history: &History, more: &[(u64, Then)]) -> History {
        history.iter().chain(more).cloned().collect()
    }

    #[test]
    fn idle_wait_after_an_empty_claim() {
        let poll = Duration::from_secs(5);
        let cases: &[(&str, Option<i64>, u64, Duration)] = &[
            ("nothing pending", None, 3, poll),
            ("due later", Some(250), 3, ms(250)),
            ("due after the poll interval", Some(60_000), 3, poll),
            ("fell due while the claim ran", Some(-2), 3, Duration::ZERO),
            ("fell due at the claim's start", Some(-3), 3, Duration::ZERO),
            ("within the clock's margin", Some(-5), 3, Duration::ZERO),
            ("due at the report", Some(0), 0, Duration::ZERO),
            ("due before the claim looked", Some(-40), 3, poll),
            ("long overdue, a slow claim", Some(-90_000), 80, poll),
        ];
        for (name, next_due, since, wait) in cases {
            assert_eq!(idle_wait(*next_due, ms(*since), poll), *wait, "{name}");
        }
    }

    #[test]
    fn room_is_what_neither_the_rows_waiting_nor_the_calls_on_their_way_hold() {
        // A claim of 50 on its way; the ingest beside it ended.
        let claiming = vec![(0, Planned(free(200))), (1, ReadAll)];
        #[rustfmt::skip]
        let cases = vec![
            // A quarter of the room, at least one place, stays for the claim.
            ("an idle pool", vec![], free(512), 0, (Some((384, ROOM)), Some(128), 100)),
            ("two free places", vec![], free(2), 0, (Some((1, ROOM)), Some(1), 100)),
            // No ingest fits: the outbox read stays due, for when a place frees.
            ("one free place", vec![], free(1), 0, (None, Some(1), 0)),
            ("a full pool", vec![], free(0), 0, (None, None, 100)),
            ("at most claim_batch", vec![], free(1000), 0, (Some((384, ROOM)), Some(128), 100)),
            ("less the rows waiting", vec![], waiting(412, 512), 0,
                (Some((75, ROOM)), Some(25), 100)),
            ("rows waiting fill it", vec![], waiting(512, 512), 0, (None, None, 100)),
            ("fewer free places", vec![], waiting(12, 100), 0, (Some((75, ROOM)), Some(25), 100)),
            // The first plan's claim (128) and ingest (384) are on their way.
            ("less what is on its way", vec![(0, Planned(free(512)))], free(512), 1,
                (None, None, 101)),
            ("a claim on its way: an ingest takes the rest", claiming, free(512), 101,
                (Some((462, ROOM)), None, 201)),
        ];
        check(false, cases);
    }

    #[test]
    fn busy_endpoints_have_a_full_cap_running_and_another_waiting() {
        type Counts = &'static [(&'static str, usize)];
        #[rustfmt::skip]
        let cases: &[(Counts, Counts, usize, &[&str])] = &[
            // (running, waiting, cap, busy)
            (&[], &[], 2, &[]),
            (&[("a", 2)], &[], 2, &[]),
            (&[("a", 2)], &[("a", 1)], 2, &[]),
            (&[("a", 2)], &[("a", 2)], 2, &["a"]),
            // Waiting rows alone can make an endpoint busy (a claim brought more than its cap).
            (&[], &[("a", 4)], 2, &["a"]),
            (&[("a", 2), ("b", 1)], &[("b", 2), ("a", 2)], 2, &["a"]),
            (&[("a", 3), ("b", 1), ("c", 9)], &[("b", 3), ("a", 1)], 2, &["a", "b", "c"]),
            // A cap of zero counts as one.
            (&[("a", 1)], &[("a", 1)], 0, &["a"]),
            (&[("a", 1)], &[], 0, &[]),
        ];
        for (running, waiting, cap, busy) in cases {
            assert_eq!(
                busy_endpoints(running.iter().copied(), waiting.iter().copied(), *cap),
                *busy,
                "running {running:?}, waiting {waiting:?}, cap {cap}"
            );
        }
    }

    #[test]
    fn claims_and_ingests_skip_the_busy_endpoints_and_claims_keep_to_the_retry_room() {
        #[rustfmt::skip]
        let cases = [
            // (retry places, retries waiting, busy, retry room)
            (384, 0, vec![], 384),
            (384, 100, vec!["a"], 284),
            (10, 20, vec!["a", "b"], 0),
        ];
        for (retry_places, waiting_retries, busy, retry_room) in cases {
            let busy: Vec<EndpointId> = busy.iter().map(|s| EndpointId::from(*s)).collect();
            let view = View {
                waiting: waiting_retries,
                waiting_retries,
                retry_places,
                free_permits: 512,
                busy: busy.clone(),
                oldest_waiting: None,
            };
            let (plan, _) = plan_after(false, &[], view, 0);
            let claim = plan.claim.expect("a claim");
            assert_eq!((claim.busy, claim.plan.retries), (busy.clone(), retry_room));
            assert_eq!(plan.ingest.expect("an ingest").busy, busy);
        }
    }

    #[test]
    fn a_quarter_of_each_claim_goes_to_retries_first() {
        // (want, retry room, retries first); the store clamps them to the retry room.
        let cases = [
            (512, 384, 128),
            (100, 384, 25),
            (7, 384, 1),
            (1, 384, 1),
            (512, 0, 128),
        ];
        for (want, retry_room, ahead) in cases {
            let plan = Claim::new(want, vec![], retry_room).plan;
            let expected = ClaimPlan {
                max: want,
                retries_ahead: ahead,
                retries: retry_room,
                first_attempts: true,
            };
            assert_eq!(plan, expected, "{want} of which {retry_room} retries");
        }
    }

    #[test]
    fn one_claim_at_a_time_and_none_in_the_backoff_after_a_failed_one() {
        // The first plan starts an ingest of 6, which stays on its way, and a claim of 2.
        let started = vec![(0, Planned(free(8)))];
        #[rustfmt::skip]
        let cases = vec![
            ("a claim on its way", started.clone(), free(16), 5, (None, None, 105)),
            ("in the backoff", and(&started, &[(10, ClaimFailed)]), free(16), 59,
                (None, None, 159)),
            ("the backoff is over", and(&started, &[(10, ClaimFailed)]), free(16), 60,
                (None, Some(10), 160)),
            ("found rows: another at once", and(&started, &[(10, Claimed)]), free(16), 11,
                (None, Some(10), 111)),
            // (More on empty claims below.)
            ("found nothing", and(&started, &[(10, FoundNothing(ms(30)))]), free(16), 11,
                (None, None, 40)),
        ];
        check(false, cases);
    }

    #[test]
    fn the_backoff_grows_with_each_failure_and_ends_with_a_success() {
        let t0 = Instant::now();
        let mut p = Planner::new(settings(false), t0);
        let mut now = t0;
        // Fails the claim it starts; returns the backoff, and in how long the planner looks
        // again with no room for an outbox read.
        let fail = |p: &mut Planner, now: &mut Instant| {
            p.plan(free(8), *now).claim.expect("a claim");
            let delay = p.claim_failed(*now);
            let wake = p.plan(free(0), *now).wake_at - *now;
            *now += delay;
            (delay, wake)
        };
        assert_eq!(
            fail(&mut p, &mut now),
            (FIRST_BACKOFF, POLL),
            "the poll comes first"
        );
        let (second, _) = fail(&mut p, &mut now);
        assert!(second > FIRST_BACKOFF, "{second:?}");
        for _ in 0..20 {
            let (delay, wake) = fail(&mut p, &mut now);
            assert!(delay <= MAX_BACKOFF);
            assert_eq!(wake, delay.max(POLL), "the backoff ends before a claim");
        }
        assert_eq!(fail(&mut p, &mut now).0, MAX_BACKOFF);
        p.plan(free(8), now).claim.expect("a claim");
        p.claimed();
        assert_eq!(fail(&mut p, &mut now).0, FIRST_BACKOFF);
        assert!(fail(&mut p, &mut now).0 > FIRST_BACKOFF);
        p.plan(free(8), now).claim.expect("a claim");
        assert!(p.claimed_nothing().is_some());
        assert_eq!(fail(&mut p, &mut now).0, FIRST_BACKOFF);

        // The same for outbox reads, on a memory of their own.
        let t0 = Instant::now();
        let mut p = Planner::new(settings(false), t0);
        let mut now = t0;
        let fail = |p: &mut Planner, now: &mut Instant| {
            p.plan(free(8), *now).ingest.expect("an ingest");
            let delay = p.ingest_failed(*now);
            *now += delay;
            delay
        };
        assert_eq!(fail(&mut p, &mut now), FIRST_BACKOFF);
        assert!(fail(&mut p, &mut now) > FIRST_BACKOFF);
        p.plan(free(8), now).ingest.expect("an ingest");
        p.ingested(&Ingested::default(), now);
        now += POLL;
        assert_eq!(fail(&mut p, &mut now), FIRST_BACKOFF);
    }

    #[test]
    fn after_an_empty_claim_only_a_claim_that_can_find_something() {
        // A claim of 2 skipping a, with 2 retries allowed, found nothing at 10 ms; the next
        // delivery is due 60 ms later. The ingest beside it read the whole outbox: the next
        // read is at 100 ms.
        let a_busy = || retries(busy(free(8), &["a"]), 2);
        let empty = || {
            vec![
                (0, Planned(a_busy())),
                (0, ReadAll),
                (10, FoundNothing(ms(60))),
            ]
        };
        let read = |then: Then| {
            and(
                &empty(),
                &[(15, OutboxWritten), (15, Planned(a_busy())), (16, then)],
            )
        };
        #[rustfmt::skip]
        let cases = vec![
            ("nothing changed: the next due time", empty(), a_busy(), 20, (None, None, 70)),
            ("the next due time", empty(), a_busy(), 70, (None, Some(8), 100)),
            ("the skipped endpoint has room", empty(), retries(free(8), 2), 20,
                (None, Some(8), 100)),
            ("still busy, and another too", empty(), retries(busy(free(8), &["a", "b"]), 2), 20,
                (None, None, 70)),
            ("more retries may start", empty(), retries(a_busy(), 3), 20, (None, Some(8), 100)),
            ("fewer retries may start", empty(), retries(a_busy(), 1), 20, (None, None, 70)),
            ("new work", and(&empty(), &[(15, NewWork)]), a_busy(), 20, (None, Some(8), 100)),
            ("an ingest that left due rows for a claim", read(ReadDue), a_busy(), 20,
                (None, Some(8), 116)),
            ("an ingest that did not", read(ReadAll), a_busy(), 20, (None, None, 70)),
            ("an ingest that failed (and committed?)", read(ReadFailed), a_busy(), 20,
                (None, Some(8), 66)),
            // The claim may have read the database before the new work was committed.
            ("woken while it ran", vec![(0, Planned(a_busy())), (0, ReadAll), (5, NewWork),
                (10, FoundNothing(ms(60)))], a_busy(), 20, (None, Some(8), 100)),
        ];
        check(false, cases);
    }

    #[test]
    fn when_the_outbox_is_read() {
        // A first plan (an ingest of 6, a claim of 2), its claim ended; its read ends at 10 ms.
        let read = |then: Then| vec![(0, Planned(free(8))), (0, Claimed), (10, then)];
        #[rustfmt::skip]
        let cases = vec![
            ("at the start", vec![], free(8), 0, (Some((6, ROOM)), Some(2), 100)),
            ("one at a time", vec![(0, Planned(free(8)))], free(16), 1, (None, None, 101)),
            ("it left rows: at once", read(ReadSome), free(8), 11, (Some((6, ROOM)), Some(2), 111)),
            ("it read them all: at the next poll", read(ReadAll), free(8), 11,
                (None, Some(8), 110)),
            ("the next poll", read(ReadAll), free(8), 110, (Some((6, ROOM)), Some(2), 210)),
            ("a producer committed", and(&read(ReadAll), &[(20, OutboxWritten)]), free(8), 21,
                (Some((6, ROOM)), Some(2), 121)),
            // It may have looked before that commit.
            ("a producer committed while it read: at once",
                vec![(0, Planned(free(8))), (0, Claimed), (5, OutboxWritten), (10, ReadAll)],
                free(8), 11, (Some((6, ROOM)), Some(2), 111)),
            // Commits in a stream: one read per wake gap (2 ms) at most.
            ("a producer committed just after a read began: after the gap",
                vec![(0, Planned(free(8))), (0, Claimed), (1, ReadAll), (1, OutboxWritten)],
                free(8), 1, (None, Some(8), 2)),
            ("the gap is over",
                vec![(0, Planned(free(8))), (0, Claimed), (1, ReadAll), (1, OutboxWritten)],
                free(8), 2, (Some((6, ROOM)), Some(2), 102)),
            ("no room: not even when due", vec![], free(0), 0, (None, None, 100)),
            ("it failed: after the backoff", read(ReadFailed), free(8), 59, (None, Some(8), 60)),
            ("the backoff is over", read(ReadFailed), free(8), 60, (Some((6, ROOM)), Some(2), 160)),
        ];
        check(false, cases);
    }

    #[test]
    fn rows_left_for_busy_endpoints() {
        // A read at `at` left rows for a: they stay until a has room or `poll_interval` passed.
        let a_busy = || busy(free(8), &["a"]);
        let left = |at: u64| {
            vec![
                (at, OutboxWritten),
                (at, Planned(a_busy())),
                (at, Claimed),
                (at + 10, LeftForBusy),
            ]
        };
        // Another read at 20 ms, when a had room.
        let then = |then: Then| {
            and(
                &left(0),
                &[(20, Planned(free(8))), (20, Claimed), (30, then)],
            )
        };
        #[rustfmt::skip]
        let cases = vec![
            ("a still busy: at the next poll", left(0), a_busy(), 11, (None, Some(8), 110)),
            ("a has room: at once", left(0), free(8), 11, (Some((6, ROOM)), Some(2), 111)),
            ("a producer committed: new rows may go", and(&left(0), &[(20, OutboxWritten)]),
                a_busy(), 21, (Some((6, ROOM)), Some(2), 121)),
            ("after poll_interval: taken along", left(0), a_busy(), 110,
                (Some((6, PAST_BUSY)), Some(2), 210)),
            // Left again: the wait counts from the first read that left them.
            ("from the first read that left them",
                and(&and(&left(0), &left(50)), &[(120, OutboxWritten)]),
                a_busy(), 121, (Some((6, PAST_BUSY)), Some(2), 221)),
            ("taken along: still marked", and(&left(0), &[(110, Planned(a_busy())), (110, Claimed),
                (120, ReadSome)]), a_busy(), 121, (Some((6, PAST_BUSY)), Some(2), 221)),
            ("a read that left none: cleared", then(ReadSome), a_busy(), 110,
                (Some((6, ROOM)), Some(2), 210)),
            // The backoff holds even when a has room.
            ("a failed read: after the backoff", then(ReadFailed), free(8), 79,
                (None, Some(8), 80)),
            ("a failed read: cleared", then(ReadFailed), a_busy(), 100,
                (Some((6, ROOM)), Some(2), 200)),
        ];
        check(false, cases);
    }

    #[test]
    fn a_backlog_in_the_outbox_is_read_whole() {
        // A read at 0 leased its room and left rows; the pool is full from then on.
        let left = || {
            vec![
                (0, OutboxWritten),
                (0, Planned(free(8))),
                (0, Claimed),
                (10, ReadSome),
            ]
        };
        #[rustfmt::skip]
        let cases = vec![
            ("left for want of room: read when a place frees", left(), free(0), 11,
                (None, None, 111)),
            ("a place freed before poll_interval: leased", left(), free(8), 11,
                (Some((6, ROOM)), Some(2), 111)),
            ("after poll_interval: read whole, even with no room", left(), free(0), 100,
                (Some((0, None)), None, 200)),
            ("read whole with room: the claim takes the whole room", left(), free(8), 100,
                (Some((0, None)), Some(8), 200)),
            ("a whole batch read: the next at once",
                and(&left(), &[(100, Planned(free(0))), (105, ReadSome)]), free(0), 106,
                (Some((0, None)), None, 206)),
            ("the outbox read empty: leased again",
                and(&left(), &[(100, Planned(free(0))), (105, ReadAll), (110, OutboxWritten)]),
                free(8), 111, (Some((6, ROOM)), Some(2), 211)),
            ("a failed read: cleared",
                and(&left(), &[(100, Planned(free(0))), (105, ReadFailed)]), free(8), 160,
                (Some((6, ROOM)), Some(2), 260)),
        ];
        check(false, cases);
    }

    #[test]
    fn postgres_reads_the_whole_outbox_and_leases_nothing() {
        let read = |then: Then| vec![(0, Planned(free(0))), (5, then)];
        #[rustfmt::skip]
        let cases = vec![
            ("an idle pool: the whole room for the claim", vec![], free(512), 0,
                (Some((0, None)), Some(512), 100)),
            ("a full pool still reads the outbox", vec![], free(0), 0,
                (Some((0, None)), None, 100)),
            ("one read at a time", vec![(0, Planned(free(0)))], free(0), 1, (None, None, 101)),
            ("it left rows: at once", read(ReadSome), free(0), 6, (Some((0, None)), None, 106)),
            ("it read them all: at the next poll", read(ReadAll), free(0), 6, (None, None, 105)),
            ("a producer committed", and(&read(ReadAll), &[(7, OutboxWritten)]), free(0), 8,
                (Some((0, None)), None, 108)),
        ];
        check(true, cases);
    }

    #[test]
    fn sleeps_until_the_first_thing_due() {
        let t0 = Instant::now();
        let oldest = |since: Instant| View {
            oldest_waiting: Some(since),
            waiting: 1,
            ..free(0)
        };
        #[rustfmt::skip]
        let cases = [
            ("nothing: the poll", free(0), t0 + POLL),
            ("a row waiting since now", oldest(t0), t0 + POLL),
            ("a row to hand back first", oldest(t0 - MAX_WAIT + ms(30)), t0 + ms(30)),
            ("a row overdue: at once", oldest(t0 - MAX_WAIT - ms(30)), t0 - ms(30)),
        ];
        for (name, view, wake_at) in cases {
            let mut p = Planner::new(settings(false), t0);
            assert_eq!(p.plan(view, t0).wake_at, wake_at, "{name}");
        }
        // The other wake-ups are in the tables above: a claim's backoff, an empty claim's
        // wait, the outbox's next read.
    }
}
