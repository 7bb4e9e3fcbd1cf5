//! Supervision of the tasks hookd cannot deliver without.
//!
//! The dispatcher, the recorder, the resend job worker, the wake-up relay, the maintenance
//! jobs, the HTTP server and the store's one write connection (SQLite) each run on their
//! own. Any of them ending while hookd runs means delivery has stopped, or is about to:
//! with the recorder gone, finished attempts are never recorded and are sent again
//! forever. The [`Supervisor`] sees each of them end, and the first that ends
//! unexpectedly (a panic at any time, an error, or a return before shutdown) is a failure:
//! `/readyz` answers 503 with the reason at once, an error is logged,
//! `hookd_task_failures_total{task}` counts it, and `run_until_stopped` shuts the rest
//! down within a few seconds and returns the error, so that `hookd serve` exits non-zero
//! and systemd, Docker or Kubernetes restarts it. A restart is safe: the state is in the
//! database, and leases left behind expire.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::daemon::health::Health;
use crate::daemon::metrics::Metrics;
pub use crate::daemon::task::Task;

/// An essential task that ended unexpectedly, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: Task,
    /// `panicked: ...`, the error it returned, or that it returned.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} stopped: {}", self.task.describe(), self.reason)
    }
}

/// How a task's output tells an error from an ordinary end.
pub trait Ending {
    /// The error it ended with, if any.
    fn error(&self) -> Option<String>;
}

impl Ending for () {
    fn error(&self) -> Option<String> {
        None
    }
}

impl<E: fmt::Display> Ending for Result<(), E> {
    fn error(&self) -> Option<String> {
        self.as_ref().err().map(|e| format!("{e:#}"))
    }
}

/// Why a supervised piece of work ended, if that is a failure: a panic always; an error
/// always; an ordinary end only for a task that must run until `stopping` (the shutdown
/// began).
fn failure_of(
    ended: &Result<impl Ending, Box<dyn Any + Send>>,
    must_run: bool,
    stopping: bool,
) -> Option<String> {
    match ended {
        Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
        Ok(output) => match output.error() {
            Some(error) => Some(error),
            None if must_run && !stopping => Some("it returned while hookd was running".into()),
            None => None,
        },
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

/// Watches the essential tasks; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Cancelled when hookd shuts down (a signal, or a failure): tasks that end after it
    /// ended as they should.
    stop: CancellationToken,
    /// Cancelled at the first failure.
    failed: CancellationToken,
    first: OnceLock<Failure>,
    /// The pieces of work under [`Supervisor::guard`] on their way.
    pieces: TaskTracker,
    health: Arc<Health>,
    metrics: Metrics,
    #[cfg(feature = "fault-injection")]
    fault: Option<crate::daemon::fault::Fault>,
}

impl Supervisor {
    pub fn new(stop: CancellationToken, health: Arc<Health>, metrics: Metrics) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                stop,
                failed: CancellationToken::new(),
                first: OnceLock::new(),
                pieces: TaskTracker::new(),
                health,
                metrics,
                #[cfg(feature = "fault-injection")]
                fault: None,
            }),
        }
    }

    /// Makes `fault`'s task fail when it is tripped. Before the supervisor is cloned.
    #[cfg(feature = "fault-injection")]
    pub fn with_fault(mut self, fault: Option<crate::daemon::fault::Fault>) -> Supervisor {
        Arc::get_mut(&mut self.inner)
            .expect("a fault is set before the supervisor is shared")
            .fault = fault;
        self
    }

    /// Spawns `future` as `task`, which must run until the shutdown: its panic, its error,
    /// or its return before the shutdown is a failure. The handle yields what the future
    /// returns, or its panic, as `tokio::spawn`'s does.
    pub fn spawn<F>(&self, task: Task, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Ending + Send + 'static,
    {
        tokio::spawn(self.watch(task, true, future))
    }

    /// `future` as a piece of `task` that ends by itself (one run of a maintenance job, or
    /// the recorder, which ends once the dispatcher and its attempts have): only its panic
    /// or its error is a failure.
    pub fn guard<F>(
        &self,
        task: Task,
        future: F,
    ) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Ending + Send + 'static,
    {
        self.inner
            .pieces
            .track_future(self.watch(task, false, future))
    }

    /// Waits until every piece of work under [`Supervisor::guard`] has ended, those that
    /// start meanwhile included: after a failure that left them without their owner (the
    /// recorder of a dead dispatcher records what its attempts still bring).
    pub async fn pieces_ended(&self) {
        self.inner.pieces.close();
        self.inner.pieces.wait().await;
    }

    fn watch<F>(
        &self,
        task: Task,
        must_run: bool,
        future: F,
    ) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Ending + Send + 'static,
    {
        #[cfg(feature = "fault-injection")]
        let future = crate::daemon::fault::inject(self.inner.fault.as_ref(), task, future);
        let supervisor = self.clone();
        async move {
            // The task's own state unwinds before this sees the panic, as it would without.
            let ended = AssertUnwindSafe(future).catch_unwind().await;
            let stopping = supervisor.inner.stop.is_cancelled();
            if let Some(reason) = failure_of(&ended, must_run, stopping) {
                supervisor.fail(task, reason);
            }
            match ended {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// Records that `task` failed: counted and logged each time; the first failure also
    /// makes `/readyz` answer 503 with it, and ends [`Supervisor::failed`].
    pub fn fail(&self, task: Task, reason: String) {
        let failure = Failure { task, reason };
        self.inner
            .metrics
            .task_failures
            .with_label_values(&[task.as_str()])
            .inc();
        tracing::error!(
            task = task.as_str(),
            "{failure}: hookd stops and exits with an error, to be restarted"
        );
        if self.inner.first.set(failure.clone()).is_ok() {
            self.inner.health.fail(failure.to_string());
            self.inner.failed.cancel();
        }
    }

    /// Waits for the first failure.
    pub async fn failed(&self) -> Failure {
        self.inner.failed.cancelled().await;
        self.failure().expect("set before `failed` is cancelled")
    }

    /// The first failure, if there was one.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.first.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn supervisor() -> (Supervisor, CancellationToken, Arc<Health>, Metrics) {
        let (stop, health, metrics) = (
            CancellationToken::new(),
            Arc::new(Health::default()),
            Metrics::new(),
        );
        let supervisor = Supervisor::new(stop.clone(), health.clone(), metrics.clone());
        (supervisor, stop, health, metrics)
    }

    async fn panics(message: &'static str) {
        panic!("{message}")
    }

    fn failures(metrics: &Metrics, task: Task) -> u64 {
        metrics
            .task_failures
            .with_label_values(&[task.as_str()])
            .get()
    }

    #[test]
    fn which_endings_are_failures() {
        let panicked: Result<(), Box<dyn Any + Send>> = Err(Box::new("boom"));
        let panicked_owned: Result<(), Box<dyn Any + Send>> = Err(Box::new(String::from("bang")));
        let returned: Result<(), Box<dyn Any + Send>> = Ok(());
        let erred: Result<Result<(), String>, Box<dyn Any + Send>> = Ok(Err("no socket".into()));
        let returned_ok: Result<Result<(), String>, Box<dyn Any + Send>> = Ok(Ok(()));
        let returned_early = Some("it returned while hookd was running".to_string());
        // (what it says of an ending, must it run, is hookd stopping; what it should say)
        let cases: [(Option<String>, Option<String>); 12] = [
            (
                failure_of(&panicked, true, false),
                Some("panicked: boom".into()),
            ),
            (
                failure_of(&panicked, true, true),
                Some("panicked: boom".into()),
            ),
            (
                failure_of(&panicked, false, false),
                Some("panicked: boom".into()),
            ),
            (
                failure_of(&panicked_owned, false, true),
                Some("panicked: bang".into()),
            ),
            (failure_of(&returned, true, false), returned_early.clone()),
            (failure_of(&returned, true, true), None),
            (failure_of(&returned, false, false), None),
            (failure_of(&returned_ok, true, false), returned_early),
            (failure_of(&returned_ok, true, true), None),
            (failure_of(&erred, true, true), Some("no socket".into())),
            (failure_of(&erred, false, false), Some("no socket".into())),
            (failure_of(&returned_ok, false, false), None),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
    }

    #[tokio::test]
    async fn a_panic_fails_hookd_at_once_and_keeps_the_handle_a_panic() {
        let (supervisor, _stop, health, metrics) = supervisor();
        let handle = supervisor.spawn(Task::Recorder, panics("out of luck"));
        let failure = tokio::time::timeout(Duration::from_secs(5), supervisor.failed())
            .await
            .expect("a failure");
        assert_eq!(failure.task, Task::Recorder);
        assert_eq!(
            failure.to_string(),
            "the recorder stopped: panicked: out of luck"
        );
        assert_eq!(health.failure(), Some(failure.to_string().as_str()));
        assert_eq!(failures(&metrics, Task::Recorder), 1);
        assert!(handle.await.expect_err("panicked").is_panic());
    }

    #[tokio::test]
    async fn a_return_before_the_shutdown_is_a_failure_and_after_it_is_not() {
        let (supervisor, stop, health, metrics) = supervisor();
        supervisor
            .spawn(Task::ResendJobs, async {})
            .await
            .expect("returned");
        assert_eq!(
            supervisor.failure().map(|f| f.to_string()).as_deref(),
            Some("the resend job worker stopped: it returned while hookd was running")
        );
        assert_eq!(failures(&metrics, Task::ResendJobs), 1);

        // Only the first failure is the reason; every one is counted.
        stop.cancel();
        supervisor
            .spawn(Task::Dispatcher, async {})
            .await
            .expect("returned");
        let _ = supervisor
            .spawn(Task::HttpServer, async { Err::<(), _>("address in use") })
            .await;
        assert_eq!(failures(&metrics, Task::Dispatcher), 0);
        assert_eq!(failures(&metrics, Task::HttpServer), 1);
        assert!(health
            .failure()
            .is_some_and(|f| f.starts_with("the resend job worker stopped")));
    }

    #[tokio::test]
    async fn a_piece_of_work_may_end_but_not_panic() {
        let (supervisor, _stop, _health, metrics) = supervisor();
        supervisor.guard(Task::Maintenance, async {}).await;
        assert_eq!(supervisor.failure(), None);
        let run = tokio::spawn(supervisor.guard(Task::Maintenance, panics("bad row")));
        assert!(run.await.expect_err("panicked").is_panic());
        assert_eq!(
            supervisor.failure().map(|f| f.to_string()).as_deref(),
            Some("the maintenance jobs stopped: panicked: bad row")
        );
        assert_eq!(failures(&metrics, Task::Maintenance), 1);
    }

    #[test]
    fn labels_name_their_tasks() {
        for task in Task::ALL {
            assert_eq!(Task::from_label(task.as_str()), Some(task));
        }
        assert_eq!(Task::from_label("nothing"), None);
    }
}
