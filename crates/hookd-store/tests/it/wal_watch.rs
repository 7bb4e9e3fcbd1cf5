//! SQLite's wake source: another connection's commit wakes it at once.

use std::time::Duration;

use hookd_store::connect;
use hookd_testkit::{Backend, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_commit_wakes_the_sqlite_store() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let mut source = store
        .wake_source()
        .await
        .unwrap()
        .expect("a SQLite file has a wake source");
    assert!(source.outbox_only());

    let waiting = tokio::spawn(async move {
        source.wait().await.unwrap();
        source
    });
    db.exec("INSERT INTO hookd_outbox (event_id, event_type, payload) VALUES ('w1', 'a', '{}')")
        .await;
    let mut source = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("woken within 2 s of the commit")
        .unwrap();
    // A commit's writes may come as more than one wake-up, but they stop with the writes:
    // waiting does not feed itself.
    let mut again = 0;
    while tokio::time::timeout(Duration::from_millis(300), source.wait())
        .await
        .is_ok()
    {
        again += 1;
        assert!(again < 5, "woken again and again with nothing written");
    }
}
