//! Group commit of `POST /v1/events`: requests that arrive while a commit is in progress
//! are written together in the next one, and each is answered once its own row is durable.
//!
//! No task of its own: the first request to find a commit slot free leads a group of every
//! request waiting by then (at most [`MAX_GROUP`]); the rest wait for its answer. The write
//! runs in a task of its own, so a leader whose client goes away cannot cancel the group
//! it took. A group whose transaction fails is written again one event at a time, so one
//! bad request fails alone.
//!
//! On SQLite a group leases, in its own transaction, the deliveries it creates that the
//! dispatcher has room for, and hands them over ([`Intake`]): those need no claim. The
//! dispatcher is woken only for the ones left due for a claim.

use std::sync::{Arc, Mutex};

use hookd_store::{Claimed, Enqueued, IngestLimits, NewEvent, Store, StoreError};
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::daemon::dispatch::{self, Grant, Intake};

/// The largest group one transaction writes: a commit's cost grows little with its rows
/// up to here (SQLite's one writer, PostgreSQL's WAL flush), and a failed group is
/// written again one by one.
pub const MAX_GROUP: usize = 256;

type Answer = Result<Enqueued, StoreError>;

struct Waiting {
    event: NewEvent,
    answer: oneshot::Sender<Answer>,
}

/// The API's writer of events.
#[derive(Clone)]
pub struct GroupCommit {
    store: Arc<dyn Store>,
    limits: IngestLimits,
    waiting: Arc<Mutex<Vec<Waiting>>>,
    /// A permit is held while a group is written; the next group gathers meanwhile.
    committing: Arc<Semaphore>,
    /// The dispatcher's handover, when leasing.
    intake: Option<Intake>,
    /// Wakes the dispatcher for deliveries due that were not leased.
    wake: Arc<Notify>,
}

impl GroupCommit {
    /// `in_flight`: groups written at once. SQLite has one writer, so 1; on PostgreSQL a
    /// commit mostly waits for its WAL flush, and a second group can be written meanwhile.
    /// `wake` is the dispatcher's.
    pub fn new(
        store: Arc<dyn Store>,
        limits: IngestLimits,
        in_flight: usize,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            limits,
            waiting: Arc::default(),
            committing: Arc::new(Semaphore::new(in_flight.max(1))),
            intake: None,
            wake,
        }
    }

    /// Leases new deliveries to the dispatcher behind `intake` (if any) as it writes them.
    pub fn leasing_to(mut self, intake: Option<Intake>) -> Self {
        self.intake = intake;
        self
    }

    /// Whether groups lease to the dispatcher on a store: on SQLite, where a claim saved is
    /// the one writer's time saved (`POST /v1/events` at 64 clients: 8,335 against 6,956
    /// deliveries/s, medians of three interleaved pairs). Not on PostgreSQL, where the
    /// lease's statements lengthen each group's hold of a commit slot while claims run
    /// beside it on connections of their own (4,030 against 4,598/s).
    pub fn leases_for(backend: &str) -> bool {
        backend != "postgres"
    }

    /// Groups in flight for a store: see [`GroupCommit::new`].
    pub fn in_flight_for(backend: &str) -> usize {
        if backend == "postgres" {
            2
        } else {
            1
        }
    }

    /// Stores `event` and its deliveries, in a transaction shared with the requests that
    /// wait alongside it; returns once that transaction has committed.
    pub async fn enqueue(&self, event: NewEvent) -> Answer {
        let (answer, mut answered) = oneshot::channel();
        self.waiting
            .lock()
            .expect("the waiting list is never poisoned")
            .push(Waiting { event, answer });
        loop {
            let turn = tokio::select! {
                biased;
                answer = &mut answered => return answer.unwrap_or_else(|_| Err(ended())),
                turn = self.committing.clone().acquire_owned() => turn.expect("never closed"),
            };
            // Another group may have taken this event (and answered it just now).
            if let Some(answer) = taken(&mut answered) {
                return answer;
            }
            let group = {
                let mut waiting = self.waiting.lock().expect("never poisoned");
                let n = waiting.len().min(MAX_GROUP);
                waiting.drain(..n).collect::<Vec<_>>()
            };
            if group.is_empty() {
                // A group still in flight took this event: its writer answers it.
                drop(turn);
                return answered.await.unwrap_or_else(|_| Err(ended()));
            }
            let this = self.clone();
            let written = tokio::spawn(async move {
                this.write(group).await;
                drop(turn);
            });
            // A panic in the write drops the group's senders: each waiter sees it below.
            let _ = written.await;
            if let Some(answer) = taken(&mut answered) {
                return answer;
            }
        }
    }
}

/// This request's answer, if its group has been written.
fn taken(answered: &mut oneshot::Receiver<Answer>) -> Option<Answer> {
    match answered.try_recv() {
        Ok(answer) => Some(answer),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => Some(Err(ended())),
    }
}

/// The answer of a request whose group's write panicked.
fn ended() -> StoreError {
    StoreError::Stopped("the event writer ended before answering".into())
}

impl GroupCommit {
    async fn write(&self, group: Vec<Waiting>) {
        let (store, limits) = (self.store.as_ref(), &self.limits);
        let (events, answers): (Vec<NewEvent>, Vec<_>) =
            group.into_iter().map(|w| (w.event, w.answer)).unzip();
        // A place per event: a fan-out's further deliveries are left to a claim.
        let grant = self.intake.as_ref().and_then(|i| i.grant(events.len()));
        let written = store
            .enqueue_events_leasing(&events, limits, grant.as_ref().map(|g| g.lease()))
            .await;
        // A failed write drops its grant, which gives its places back.
        let written = written.map(|(enqueued, ingested)| {
            if ingested.due {
                self.wake.notify_one();
            }
            self.hand_over(grant, ingested.claimed);
            enqueued
        });
        match written {
            Ok(enqueued) => {
                for (answer, enqueued) in answers.into_iter().zip(enqueued) {
                    let _ = answer.send(Ok(enqueued));
                }
            }
            Err(e) if events.len() == 1 => {
                let answer = answers.into_iter().next().expect("one");
                let _ = answer.send(Err(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "a group of API events failed: writing them one by one");
                for (event, answer) in events.iter().zip(answers) {
                    let enqueued = store.enqueue_event(event, limits).await;
                    if matches!(&enqueued, Ok(e) if e.created) {
                        self.wake.notify_one();
                    }
                    let _ = answer.send(enqueued);
                }
            }
        }
    }

    /// Hands what the write leased to the dispatcher (with the grant's unused places). Rows
    /// a stopped dispatcher no longer takes are handed back to the database, due at once.
    fn hand_over(&self, grant: Option<Grant>, claimed: Vec<Claimed>) {
        let (Some(intake), Some(grant)) = (&self.intake, grant) else {
            return;
        };
        if let Err(back) = intake.hand(grant, claimed) {
            if back.is_empty() {
                return;
            }
            let store = self.store.clone();
            tokio::spawn(async move { dispatch::release_now(store.as_ref(), &back).await });
        }
    }
}
