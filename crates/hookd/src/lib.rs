//! hookd: a reliable outbound webhook dispatcher.
//!
//! Services hand hookd events (a row in `hookd_outbox`, or `POST /v1/events`); hookd
//! delivers each as a signed HTTP POST to every endpoint that wants it, retries failures on
//! a schedule kept in the database, lets an operator resend by hand, and exports
//! Prometheus metrics. The parts:
//!
//! - [`app`]: `Application::build(config)` and `run_until_stopped(shutdown)`.
//! - [`config`]: layered settings: defaults < TOML < `HOOKD_*` < flags.
//! - [`ingest`]: the outbox poller and the PostgreSQL LISTEN that wakes it.
//! - [`dispatch`]: the worker pool: claim with a lease, POST, record fenced by the lease.
//! - [`api`]: the admin REST API, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.
//! - [`dashboard`]: the web dashboard at `/`, built on the API.
//! - [`maintenance`]: periodic jobs: the lease rescuer, the backlog gauges, retention.
//! - [`resend_jobs`]: durable bulk resends, worked through in batches.
//! - [`supervisor`]: the essential tasks watched; one that dies stops hookd with an error.
//! - [`cli`], [`cli_client`]: the commands that drive a running hookd through its admin API.
//! - [`retry`], [`signing`], [`ssrf`]: pure rules: retry timing, signatures, address checks.
//! - [`sealing`]: endpoint secrets encrypted at rest (`HOOKD_SECRET_KEY`).
//! - [`metrics`], [`metered`], [`telemetry`]: Prometheus metrics (every database call
//!   timed and its errors counted), and logs.
//! - [`allocator`]: mimalloc, for Rust's allocations and SQLite's.
//!
//! State lives in the database ([`hookd_store`]); a process can be killed at any moment.

pub mod allocator;
pub mod api;
pub mod app;
pub mod cli;
pub mod cli_client;
pub mod config;
pub mod dashboard;
pub mod dispatch;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod ingest;
pub mod listen;
pub mod maintenance;
pub mod metered;
pub mod metrics;
pub mod resend_jobs;
pub mod retry;
pub mod sealing;
pub mod signing;
pub mod ssrf;
pub mod supervisor;
pub mod telemetry;

pub use app::Application;
pub use config::Config;
