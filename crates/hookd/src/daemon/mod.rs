//! `hookd serve`: the daemon. Everything here runs inside one process whose state lives in
//! the database ([`hookd_store`]), so it can be killed at any moment.
//!
//! - [`app`]: `Application::build(config)` connects, migrates and binds;
//!   `run_until_stopped(shutdown)` runs the parts below until shutdown.
//! - [`config`]: layered settings: defaults < TOML < `HOOKD_*` < flags.
//! - [`dispatch`]: the worker pool: reads the outbox, claims with a lease, POSTs, records
//!   results fenced by the lease.
//! - [`wakeup`]: the PostgreSQL LISTEN that wakes the dispatcher when a row is committed.
//! - [`api`]: the admin REST API, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.
//! - [`dashboard`]: the web dashboard at `/`, built on the API.
//! - [`maintenance`]: periodic jobs: the lease rescuer, the backlog gauges, retention.
//! - [`resend_jobs`]: durable bulk resends, worked through in batches.
//! - [`catalog`]: the event-type catalog's JSON Schemas, compiled, held and refreshed; the
//!   payload check of the API and the outbox ingest.
//! - [`supervisor`]: watches the essential tasks ([`task`]); one that dies stops hookd with
//!   an error and marks [`health`] (what `/readyz` reports) failed.
//! - Pure rules: [`retry`] (when to try again), [`signing`] (signatures, made by
//!   [`hookd_verify`]), [`ssrf`] (which addresses may be called).
//! - [`trace_context`] (pure: the `traceparent` each attempt sends) and [`otlp`] (a span of
//!   every attempt exported over OTLP/HTTP, `HOOKD_OTLP_ENDPOINT`).
//! - [`sealing`]: endpoint secrets encrypted at rest (`HOOKD_SECRET_KEY`);
//!   [`tenant_tokens`]: tenant tokens, stored only as hashes.
//! - [`metrics`], [`metered`]: the Prometheus registry; every database call timed and its
//!   errors counted.
//! - [`backoff`], [`redact`]: retrying the database's passing faults; secrets kept out of
//!   messages.
//! - `fault`: a test seam (cargo feature `fault-injection`) that makes an essential task
//!   fail on demand.
//!
//! Dependencies run one way: `app` assembles the rest; `dispatch`, `api` and the jobs use
//! the rules, metrics and the store, never `app`.

pub mod api;
pub mod app;
pub mod backoff;
pub mod catalog;
pub mod config;
pub mod dashboard;
pub mod dispatch;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod maintenance;
pub mod metered;
pub mod metrics;
pub mod otlp;
pub mod redact;
pub mod resend_jobs;
pub mod retry;
pub mod sealing;
pub mod signing;
pub mod ssrf;
pub mod supervisor;
pub mod task;
pub mod tenant_tokens;
pub mod trace_context;
pub mod wakeup;

pub use app::Application;
pub use config::Config;
