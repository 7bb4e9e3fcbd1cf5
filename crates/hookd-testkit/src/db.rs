//! A fresh database per test.

use sqlx::Connection;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test. SQLite files live in a temporary directory removed
/// on drop; PostgreSQL databases are dropped on drop.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

/// The server PostgreSQL tests use: `HOOKD_TEST_PG_URL`, or the local one.
pub fn pg_admin_url() -> String {
    std::env::var("HOOKD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs `$body` with `$conn`, a new connection to `$db` of its backend's type, then closes it.
macro_rules! on_own_connection {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db.backend {
            Backend::Sqlite => {
                let mut $conn = sqlx::SqliteConnection::connect(&$db.url)
                    .await
                    .expect("connect");
                let out = $body;
                let _ = $conn.close().await;
                out
            }
            Backend::Postgres => {
                let mut $conn = sqlx::PgConnection::connect(&$db.url)
                    .await
                    .expect("connect");
                let out = $body;
                let _ = $conn.close().await;
                out
            }
        }
    };
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        let name = format!("hookd_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL tests need a server at {admin} (set HOOKD_TEST_PG_URL): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        TestDb {
            url: with_database(&admin, &name),
            backend: Backend::Postgres,
            _dir: None,
            pg_name: Some(name),
        }
    }

    /// Runs SQL on a connection of its own, the way a producer service would.
    pub async fn exec(&self, sql: &str) {
        on_own_connection!(self, |conn| {
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .expect("producer SQL");
        })
    }

    /// One integer read on a connection of its own (a count, say).
    pub async fn query_i64(&self, sql: &str) -> i64 {
        on_own_connection!(self, |conn| sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("query"))
    }

    /// The path of the SQLite file (SQLite only).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.url.trim_start_matches("sqlite://"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime; do the async work on a thread of its own.
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
