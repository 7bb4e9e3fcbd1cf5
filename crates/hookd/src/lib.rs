//! hookd: a reliable outbound webhook dispatcher.
//!
//! Services hand hookd events (a row in `hookd_outbox`, or `POST /v1/events`); hookd
//! delivers each as a signed HTTP POST to every endpoint that wants it, retries failures on
//! a schedule kept in the database, lets an operator resend by hand, and exports
//! Prometheus metrics. One binary, three programs, a folder each:
//!
//! - [`daemon`]: `hookd serve` (and `hookd migrate`): the dispatcher, the admin API, the
//!   dashboard, the periodic jobs. Its own map is in its module docs.
//! - [`cli`]: `hookd endpoints|deliveries|resend|send-test`: commands that drive a running
//!   daemon through its admin API, for people at a terminal and for scripts.
//! - [`listen`]: `hookd listen`: a development receiver that prints and verifies what it
//!   is sent.
//!
//! Shared by all three: [`duration`] (durations as written in flags and configuration),
//! [`telemetry`] (logs) and [`allocator`] (mimalloc, for Rust's allocations and SQLite's).
//! `main.rs` parses the command line and hands each subcommand to its program.
//!
//! Dependencies run one way: the programs use the shared modules; `cli` and `listen` use
//! nothing of `daemon` but its configuration (to find the API); the daemon uses neither.
//! State lives in the database ([`hookd_store`]); a process can be killed at any moment.

pub mod allocator;
pub mod cli;
pub mod daemon;
pub mod duration;
pub mod listen;
pub mod telemetry;

pub use daemon::{Application, Config};
