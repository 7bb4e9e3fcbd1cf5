//! Instances: the leases of a process that died come back long before they expire, and
//! stay fenced against it.

use super::*;

hookd_testkit::each_backend!(
    a_dead_instances_leases_come_back_and_stay_fenced,
    a_live_instances_leases_stay_its_own,
);

/// Instance `a` claims with a long lease and dies (SQLite: its lock goes with it;
/// PostgreSQL: its heartbeat stops). Instance `b` starts on the same database and takes
/// the lease back well before it expires: at its start (SQLite) or once `a`'s heartbeat is
/// older than the timeout (PostgreSQL). `a`'s late result is dropped; `b`'s is recorded.
async fn a_dead_instances_leases_come_back_and_stay_fenced(backend: Backend) {
    let (db, a) = open_with_event(backend).await;
    let b = connect(&db.url).await.expect("connect b");

    let a_alive = a.start_instance().await.unwrap();
    assert_eq!(a_alive.released, 0);
    let lost = a.claim(1, 600_000).await.unwrap().remove(0);
    drop(a_alive);

    let started = b.start_instance().await.unwrap();
    if started.released == 0 {
        wait_until(Duration::from_secs(10), "b to take a's lease back", || {
            let b = b.clone();
            async move { (b.heartbeat(300).await.unwrap() == 1).then_some(()) }
        })
        .await;
    } else {
        assert_eq!(started.released, 1);
    }
    assert_eq!(b.heartbeat(300).await.unwrap(), 0, "taken back once");
    let d = one_delivery(&b).await;
    assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 1));
    let log = b.attempts(d.id).await.unwrap();
    assert_eq!((log[0].attempt, log[0].outcome), (1, Outcome::Lost));

    let fresh = b.claim(1, 600_000).await.unwrap().remove(0);
    assert_eq!(fresh.attempt, 2);
    assert_eq!(
        a.complete(&[succeeded(&lost)]).await.unwrap(),
        vec![false],
        "the dead instance's late result"
    );
    assert_eq!(b.complete(&[succeeded(&fresh)]).await.unwrap(), vec![true]);
    let log = b.attempts(d.id).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|a| (a.attempt, a.outcome))
            .collect::<Vec<_>>(),
        vec![(1, Outcome::Lost), (2, Outcome::Success)]
    );
    b.stop_instance().await.unwrap();
}

/// An instance that keeps its heartbeat keeps its leases, whoever else looks.
async fn a_live_instances_leases_stay_its_own(backend: Backend) {
    let (_db, a) = open_with_event(backend).await;
    let a_alive = a.start_instance().await.unwrap();
    let c = a.claim(1, 600_000).await.unwrap().remove(0);
    assert_eq!(a.heartbeat(60_000).await.unwrap(), 0);
    assert_eq!(a.rescue_expired().await.unwrap(), 0);
    assert_eq!(one_delivery(&a).await.state, DeliveryState::InFlight);
    assert_eq!(a.complete(&[succeeded(&c)]).await.unwrap(), vec![true]);
    a.stop_instance().await.unwrap();
    drop(a_alive);
}
