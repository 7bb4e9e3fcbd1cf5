//! hookd-store's integration tests, linked into one test binary.
//! `cargo test -p hookd-store --test it conformance::` runs the conformance suite.

mod conformance;
mod query_plans;
mod summary;
