//! A test seam, compiled only with the cargo feature `fault-injection` (which only hookd's
//! own tests and the fault suite turn on): one essential task fails on demand, so that
//! tests can watch the [`Supervisor`](crate::daemon::supervisor::Supervisor) deal with it.
//!
//! A [`Fault`] names a task and waits to be tripped: the task then panics, or, for the
//! database writer, the store's write connection's thread ends. In `hookd serve` it comes
//! from `HOOKD_TEST_FAULT=<task>` (a `task` label of `hookd_task_failures_total`) and is
//! tripped by `SIGUSR1`; tests in the process set [`Config::fault`](crate::Config) and call
//! [`Fault::trip`].

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use hookd_store::Store;

use crate::daemon::task::Task;

/// The variable `hookd serve` reads a fault from.
pub const ENV: &str = "HOOKD_TEST_FAULT";

#[derive(Debug, Clone)]
pub struct Fault {
    pub task: Task,
    trip: CancellationToken,
}

impl Fault {
    /// A fault of `task`, armed, not yet tripped.
    pub fn new(task: Task) -> Fault {
        Fault {
            task,
            trip: CancellationToken::new(),
        }
    }

    /// The fault `HOOKD_TEST_FAULT` names, if it is set.
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(ENV) {
            Ok(label) if !label.is_empty() => Task::from_label(&label)
                .map(|task| Some(Fault::new(task)))
                .ok_or_else(|| {
                    let labels: Vec<_> = Task::ALL.iter().map(|t| t.as_str()).collect();
                    format!(
                        "{ENV}={label:?} names no task: one of {}",
                        labels.join(", ")
                    )
                }),
            _ => Ok(None),
        }
    }

    /// Makes the task fail now.
    pub fn trip(&self) {
        tracing::warn!(task = self.task.as_str(), "injected fault tripped");
        self.trip.cancel();
    }

    /// Trips the fault at the process's first `SIGUSR1`.
    #[cfg(unix)]
    pub async fn trip_on_sigusr1(self) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
        usr1.recv().await;
        self.trip();
    }
}

/// `future`, made to panic once `fault` is tripped if it is `task`'s.
pub(crate) fn inject<F: Future>(
    fault: Option<&Fault>,
    task: Task,
    future: F,
) -> impl Future<Output = F::Output> {
    let trip = fault
        .filter(|f| f.task == task && task != Task::DatabaseWriter)
        .map(|f| f.trip.clone());
    async move {
        let Some(trip) = trip else {
            return future.await;
        };
        tokio::select! {
            biased;
            _ = trip.cancelled() => panic!("injected fault: {} panics", task.describe()),
            output = future => output,
        }
    }
}

/// Once a fault of the database writer is tripped, ends the store's write connection's
/// thread (and lets the store find out by itself).
pub(crate) fn end_writer_when_tripped(fault: Option<&Fault>, store: Arc<dyn Store>) {
    let Some(fault) = fault.filter(|f| f.task == Task::DatabaseWriter).cloned() else {
        return;
    };
    tokio::spawn(async move {
        fault.trip.cancelled().await;
        if !store.end_writer_thread().await {
            tracing::warn!("injected fault: this store has no write connection of its own");
        }
    });
}
