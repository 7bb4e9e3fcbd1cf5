//! What can go wrong in the store, as variants a caller can match: no caller needs to read
//! an error's text to know what happened.

use std::time::Duration;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The database has fewer migrations applied than this build knows: `hookd migrate`
    /// (or `hookd serve`, at start) applies them.
    #[error("database migrations are not applied: {applied} of {known} applied")]
    NotMigrated { applied: u64, known: u64 },
    /// SQLite: one write has held the one write connection longer than any other write may
    /// wait for it, so the writes queued behind it are failing.
    #[error("one write has held the write connection for {} ms", held.as_millis())]
    WriterStuck { held: Duration },
    /// SQLite: the free write connection did not answer a ping in time.
    #[error("the write connection did not answer within {} ms", waited.as_millis())]
    WriterUnresponsive { waited: Duration },
    /// A part of the store that nothing in this process replaces has stopped (see
    /// [`Store::stopped`](crate::Store::stopped)): only a restart helps.
    #[error("cannot write: {0}")]
    Stopped(String),
    /// SQLite: another process serves this database file (it holds the lock beside it).
    #[error("the database file {path} is in use by another hookd process (it holds {path}.lock): one hookd serves a SQLite file")]
    Locked { path: String },
    /// The lock file beside a SQLite database could not be opened or locked.
    #[error("cannot lock the database file {path}: {reason}")]
    LockFailed { path: String, reason: String },
    /// SQLite: the watch of the write-ahead log that wakes hookd could not start or broke;
    /// hookd polls meanwhile.
    #[error("cannot watch the write-ahead log {0}")]
    Watch(String),
    /// A stored value that does not decode (a name no variant has, JSON that does not
    /// parse): written by something other than this version of hookd.
    #[error("stored {column} is not valid: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
    /// A record with this key already exists (an event type's name).
    #[error("{0} already exists")]
    Conflict(String),
    /// The database did not do what a statement promises: a row written in this call is
    /// not there when read back, a count does not add up. A bug, or a database changed
    /// behind hookd's back; never transient.
    #[error("the database is not as this store left it: {0}")]
    Inconsistent(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed (the database went away, is busy,
    /// or a connection broke), as opposed to a bug or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // Primary result code in the low byte: SQLITE_BUSY (5), SQLITE_LOCKED (6).
                    code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
                } else {
                    transient_sqlstate(&code)
                }
            }
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }
}

/// PostgreSQL error classes worth retrying: connection (08), serialization and deadlock
/// (40), insufficient resources (53), operator intervention such as an administrator's
/// termination or a restart (57), system errors (58). A constraint violation or a syntax
/// error is not.
fn transient_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
}
