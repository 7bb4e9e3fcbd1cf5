//! Commands that manage a running hookd through its admin API, for people at a terminal:
//!
//! - [`endpoints`]: `hookd endpoints list|add|show|disable|enable|rotate-secret|delete`.
//! - [`deliveries`]: `hookd deliveries list|show`.
//! - [`resend`]: `hookd resend ID` and the bulk `hookd resend --state failed ...`.
//! - [`send_test`]: `hookd send-test`: a sample event to one endpoint, and how it went.
//! - [`tenants`]: `hookd tenants token create|revoke`: tenants' portal tokens.
//!
//! Each prints a table for people, or with `--json` the API's JSON as is for scripts. They
//! find the API the same way: `--url` and
//! `--token`, else the daemon's own settings (`--config` file, `HOOKD_LISTEN`,
//! `HOOKD_ADMIN_TOKEN`). Exit codes: 0 done, 1 the API refused or could not be reached,
//! 2 bad flags or configuration, 130 interrupted.
//!
//! The plumbing they share: [`client`] (the HTTP calls, errors, paging) and [`output`]
//! (tables and formatting).

pub mod client;
pub mod deliveries;
pub mod endpoints;
pub mod output;
pub mod resend;
pub mod send_test;
pub mod tenants;

pub use client::ClientArgs;
