//! hookd's integration tests: one module per area, linked into one test binary (each test
//! binary links the whole daemon, so one link instead of one per file).
//! `cargo test -p hookd --test it api::` runs one module.

mod api;
mod browser;
mod catalog;
mod cli;
mod cli_client;
mod delivery;
mod egress;
mod endpoint_versions;
mod isolation;
mod listen;
mod observability;
mod operational;
mod operator;
mod rate_limit;
mod replica;
mod resend_job;
mod security;
mod shared_postgres;
mod summary;
mod supervision;
mod support;
mod tenants;
mod trace_export;
