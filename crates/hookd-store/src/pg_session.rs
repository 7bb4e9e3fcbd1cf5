//! How hookd opens its PostgreSQL sessions, the primary's and the replica's.

use sqlx::postgres::PgConnectOptions;

use crate::Result;

/// hookd's sessions at `url`, with JIT compilation off: hookd's statements each touch a
/// few rows, but PostgreSQL estimates some of them from the size of a whole table, and
/// above `jit_above_cost` it compiles the plan first: tens of milliseconds for a statement
/// that runs in one.
pub(crate) fn options(url: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = url.parse()?;
    Ok(options.options([("jit", "off")]))
}
