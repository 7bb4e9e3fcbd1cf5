//! hookd-store's integration tests, linked into one test binary.
//! `cargo test -p hookd-store --test it conformance::` runs the conformance suite on both
//! databases; `... --test it ::sqlite::` (or `::postgres::`) runs it on one.

mod conformance;
mod query_plans;
mod summary;
