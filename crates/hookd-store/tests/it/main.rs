//! hookd-store's integration tests, linked into one test binary.
//! `cargo test -p hookd-store --test it conformance::` runs the conformance suite on both
//! databases; `... --test it ::sqlite::` (or `::postgres::`) runs it on one. `single_owner`
//! checks that one process serves a SQLite file; `history_partitions` PostgreSQL's history
//! in a partition per day.

mod conformance;
mod history_partitions;
mod query_plans;
mod single_owner;
mod summary;
mod wal_watch;
