//! Test support for hookd, shared by every crate's tests:
//!
//! - [`TestDb`]: a fresh database per test: a SQLite file in a temporary directory, or a
//!   new PostgreSQL database (dropped afterwards) on the server named by
//!   `HOOKD_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`). PostgreSQL
//!   tests fail, never skip, when the server cannot be reached.
//! - [`Receiver`]: a real HTTP server on 127.0.0.1 that records every request, answers
//!   as a script says (a status, a delay to hang past a timeout, a body) and counts what an
//!   at-least-once audit needs.
//! - [`Spec`] and [`Process`]: the `hookd` binary as a child process: started with its
//!   arguments and environment, waited for until it answers, killed with SIGKILL, stopped
//!   with SIGTERM, restarted, its output kept; or run to its end ([`Spec::output`]).
//! - [`Api`]: a client of the admin API.
//! - [`wait_until`]: waits for a condition with a deadline instead of sleeping and hoping.

mod api;
mod db;
mod process;
mod receiver;

pub use api::{Answer, Api};
pub use db::{Backend, TestDb};
pub use process::{free_port, hookd_bin, profile_dir, Output, Process, Spec};
pub use receiver::{Received, Receiver, Reply};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Generates `mod sqlite` and `mod postgres`, each with one `#[tokio::test]` per case,
/// calling `case(Backend)`: one suite, run unchanged against both databases.
#[macro_export]
macro_rules! each_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::Backend::Postgres).await })*
        }
    };
}
