//! What the store says when the database is not as it expects.

use super::*;

hookd_testkit::each_backend!(
    readiness_names_migrations_not_applied,
    a_stored_value_that_does_not_decode_names_its_column,
);

/// A database behind this build's migrations is not ready, and says how far behind.
async fn readiness_names_migrations_not_applied(backend: Backend) {
    let (db, store) = open(backend).await;
    let known = db
        .query_i64("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .await;
    db.exec(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
    let err = store
        .check_ready()
        .await
        .expect_err("a migration is missing");
    assert!(
        matches!(err, StoreError::NotMigrated { applied, known: k } if applied + 1 == k && k == known as u64),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err}");
}

/// A stored value that does not decode fails the read with the column it is in.
async fn a_stored_value_that_does_not_decode_names_its_column(backend: Backend) {
    let (db, store) = open_with_endpoint(backend).await;
    db.exec("UPDATE hookd_endpoints SET headers = 'not json' WHERE id = 'ep_1'")
        .await;
    let err = store
        .endpoint(&"ep_1".into())
        .await
        .expect_err("headers do not decode");
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "headers",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err}");
}
