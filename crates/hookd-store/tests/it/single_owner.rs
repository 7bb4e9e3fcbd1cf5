//! One process serves a SQLite file: a second instance on the same file is refused, with
//! the file's name, until the first one's lock is gone.

use hookd_store::{connect, StoreError};
use hookd_testkit::{Backend, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_a_sqlite_file_is_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let first = connect(&db.url).await.unwrap();
    first.migrate().await.unwrap();
    let second = connect(&db.url).await.unwrap();

    let held = first.start_instance().await.unwrap();
    assert!(held.holds_lock());
    let refused = second.start_instance().await.unwrap_err();
    let path = db.url.trim_start_matches("sqlite://").to_string();
    match &refused {
        StoreError::Locked { path: named } => assert!(
            path.ends_with(named.trim_start_matches('/')) || named.ends_with(&path),
            "names {named}, not {path}"
        ),
        other => panic!("not a lock error: {other:?}"),
    }
    let message = refused.to_string();
    assert!(
        message.contains("in use by another hookd process"),
        "{message}"
    );

    drop(held); // the first process ends: its lock goes with it
    let taken = second.start_instance().await.unwrap();
    assert!(taken.holds_lock());
}

/// PostgreSQL is shared: instances start side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_start_side_by_side() {
    let db = TestDb::new(Backend::Postgres).await;
    let first = connect(&db.url).await.unwrap();
    first.migrate().await.unwrap();
    let second = connect(&db.url).await.unwrap();
    let a = first.start_instance().await.unwrap();
    let b = second.start_instance().await.unwrap();
    assert!(!a.holds_lock() && !b.holds_lock());
}
