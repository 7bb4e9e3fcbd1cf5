//! The fault-injection suite: one module per scenario, linked into one test binary.
//! `cargo test -p hookd-fault-tests --test it kill9::` runs one scenario. The tests of this
//! binary run in parallel threads, but each scenario holds the suite's "one heavy scenario at
//! a time" lock ([`hookd_fault_tests::exclusive`]), so scenarios never overlap; under
//! cargo-nextest, which runs each test in a process of its own, the `fault-scenarios` test
//! group of `.config/nextest.toml` does the same.

mod architecture;
mod chaos;
mod clock;
mod crash_recovery;
mod kill9;
mod multi_instance;
mod ordered_instances;
mod pg_connections;
mod receivers;
mod sigterm;
mod sqlite_lock;
mod task_failure;
mod wal_wakeup;
